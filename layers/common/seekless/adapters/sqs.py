"""The jobs queue on SQS: the producer side. The message body is the versioned ``GenerationJob`` JSON,
the same contract every producer (REST jobs, WebSocket chats, batch lines) and the worker share."""

from __future__ import annotations

from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from seekless.contracts import GenerationJob
from seekless.errors import ServiceUnavailable


class SqsClient(Protocol):
    """The one call the producer makes (boto3's SQS client; no stubs needed)."""

    def send_message(self, **kwargs: Any) -> Any: ...


class SqsJobQueue:
    def __init__(self, queue_url: str, *, client: SqsClient | None = None) -> None:
        self._queue_url = queue_url
        if client is None:
            import boto3

            client = boto3.client("sqs")
        self._client = client

    def enqueue(self, job: GenerationJob) -> None:
        try:
            self._client.send_message(
                QueueUrl=self._queue_url,
                MessageBody=job.model_dump_json(exclude_none=True),
                # Lets a consumer route or refuse a contract version without parsing the body.
                MessageAttributes={
                    "contract": {"DataType": "String", "StringValue": f"GenerationJob/v{job.version}"},
                },
            )
        except (ClientError, BotoCoreError) as error:
            raise ServiceUnavailable(
                "The jobs queue is unavailable; retry shortly.", code="queue_unavailable"
            ) from error
