"""The jobs queue on SQS: the producer side (``SqsJobQueue``) and the worker's side (``SqsJobMessages``).
The message body is the versioned ``GenerationJob`` JSON,
the same contract every producer (REST jobs, WebSocket chats, batch lines) and the worker share."""

from __future__ import annotations

import logging
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from seekless.contracts import GenerationJob
from seekless.errors import ServiceUnavailable
from seekless.ports import QueueMessage

logger = logging.getLogger("seekless.sqs")


class SqsClient(Protocol):
    """The one call the producer makes (boto3's SQS client; no stubs needed)."""

    def send_message(self, **kwargs: Any) -> Any: ...

    def send_message_batch(self, **kwargs: Any) -> Any: ...


def _attributes(job: GenerationJob) -> dict[str, Any]:
    # Lets a consumer route or refuse a contract version without parsing the body.
    return {"contract": {"DataType": "String", "StringValue": f"GenerationJob/v{job.version}"}}


def _message(job: GenerationJob) -> dict[str, Any]:
    return {"MessageBody": job.model_dump_json(exclude_none=True), "MessageAttributes": _attributes(job)}


def _queue_unavailable() -> ServiceUnavailable:
    return ServiceUnavailable("The jobs queue is unavailable; retry shortly.", code="queue_unavailable")


class SqsJobQueue:
    def __init__(self, queue_url: str, *, client: SqsClient | None = None) -> None:
        self._queue_url = queue_url
        if client is None:
            import boto3

            client = boto3.client("sqs")
        self._client = client

    def enqueue(self, job: GenerationJob) -> None:
        try:
            self._client.send_message(QueueUrl=self._queue_url, **_message(job))
        except (ClientError, BotoCoreError) as error:
            raise _queue_unavailable() from error

    def enqueue_many(self, jobs: list[GenerationJob]) -> None:
        """SendMessageBatch in tens; entries SQS refuses are sent again (three rounds), then it raises."""
        for start in range(0, len(jobs), 10):
            pending = {str(i): job for i, job in enumerate(jobs[start : start + 10])}
            for _ in range(3):
                entries = [{"Id": i, **_message(job)} for i, job in pending.items()]
                try:
                    answer = self._client.send_message_batch(QueueUrl=self._queue_url, Entries=entries)
                except (ClientError, BotoCoreError) as error:
                    raise _queue_unavailable() from error
                pending = {f["Id"]: pending[f["Id"]] for f in answer.get("Failed") or []}
                if not pending:
                    break
            if pending:
                raise ServiceUnavailable("The jobs queue refused some messages; retry.", code="queue_unavailable")


class SqsConsumerClient(Protocol):
    """The calls the worker makes (boto3's SQS client)."""

    def receive_message(self, **kwargs: Any) -> Any: ...

    def send_message(self, **kwargs: Any) -> Any: ...

    def change_message_visibility(self, **kwargs: Any) -> Any: ...

    def delete_message(self, **kwargs: Any) -> Any: ...


class SqsJobMessages:
    """Implements ``seekless.ports.JobMessages``. Receive errors propagate (the worker backs off);
    the per-message calls answer False instead, since a stale receipt is an expected outcome."""

    def __init__(self, queue_url: str, *, client: SqsConsumerClient | None = None) -> None:
        self._queue_url = queue_url
        if client is None:
            import boto3

            client = boto3.client("sqs")
        self._client = client

    def receive(self, *, max_messages: int, wait_seconds: int, visibility_seconds: int) -> list[QueueMessage]:
        answer = self._client.receive_message(
            QueueUrl=self._queue_url,
            MaxNumberOfMessages=max(1, min(10, max_messages)),
            WaitTimeSeconds=max(0, min(20, wait_seconds)),
            VisibilityTimeout=visibility_seconds,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        return [
            QueueMessage(
                id=raw["MessageId"],
                receipt=raw["ReceiptHandle"],
                body=raw.get("Body", ""),
                receive_count=int(raw.get("Attributes", {}).get("ApproximateReceiveCount", "1")),
            )
            for raw in answer.get("Messages", [])
        ]

    def _call(self, what: str, call: Any, **kwargs: Any) -> bool:
        try:
            call(QueueUrl=self._queue_url, **kwargs)
        except (ClientError, BotoCoreError) as error:
            logger.warning("SQS %s failed: %s", what, error)
            return False
        return True

    def extend(self, message: QueueMessage, seconds: int) -> bool:
        return self._call(
            "extend",
            self._client.change_message_visibility,
            ReceiptHandle=message.receipt,
            VisibilityTimeout=seconds,
        )

    def release(self, message: QueueMessage) -> bool:
        return self.extend(message, 0)

    def delete(self, message: QueueMessage) -> bool:
        return self._call("delete", self._client.delete_message, ReceiptHandle=message.receipt)

    def send_later(self, job: GenerationJob, delay_seconds: int) -> str:
        """Raises ServiceUnavailable when SQS refuses: the worker must know its copy was not sent."""
        try:
            answer = self._client.send_message(QueueUrl=self._queue_url, DelaySeconds=delay_seconds, **_message(job))
        except (ClientError, BotoCoreError) as error:
            raise _queue_unavailable() from error
        return str(answer["MessageId"])
