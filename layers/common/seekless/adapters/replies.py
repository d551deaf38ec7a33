"""Replies to queued requests: a message on an SQS queue, or ``<prefix><job_id>.json`` in S3."""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from seekless.contracts import ReplyTo
from seekless.errors import ServiceUnavailable

# SQS carries at most 1 MiB; a larger reply says where to read the whole result instead.
SQS_REPLY_MAX_BYTES = 1_000_000


class AwsReplies:
    """Implements ``seekless.queued.ReplySink``."""

    def __init__(self, *, sqs_client: Any | None = None, s3_client: Any | None = None) -> None:
        self._sqs = sqs_client
        self._s3 = s3_client

    def send(self, reply_to: ReplyTo, job_id: str, body: dict[str, Any]) -> None:
        data = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
        try:
            if reply_to.queue_url is not None:
                if len(data.encode()) > SQS_REPLY_MAX_BYTES:
                    slim = {k: v for k, v in body.items() if k != "result"}
                    slim["result_omitted"] = f"Too large for SQS; read it with GET /v1/jobs/{job_id}."
                    data = json.dumps(slim, separators=(",", ":"))
                self._sqs_client().send_message(
                    QueueUrl=reply_to.queue_url,
                    MessageBody=data,
                    MessageAttributes={"job_id": {"DataType": "String", "StringValue": job_id}},
                )
                return
            assert reply_to.s3_prefix is not None
            bucket, _, prefix = reply_to.s3_prefix.removeprefix("s3://").partition("/")
            self._s3_client().put_object(
                Bucket=bucket, Key=f"{prefix}{job_id}.json", Body=data.encode(), ContentType="application/json"
            )
        except (ClientError, BotoCoreError) as error:
            raise ServiceUnavailable(f"The reply to {reply_to.describe()} could not be sent.") from error

    def _sqs_client(self) -> Any:
        if self._sqs is None:
            import boto3

            self._sqs = boto3.client("sqs")
        return self._sqs

    def _s3_client(self) -> Any:
        if self._s3 is None:
            import boto3

            self._s3 = boto3.client("s3")
        return self._s3
