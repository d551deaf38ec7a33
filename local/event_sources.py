"""Lambda's SQS event source mapping, locally: what `sam local` cannot run.

For each SQS → function mapping of template.yaml (a function's ``Events`` entry of ``Type: SQS``, or an
``AWS::Lambda::EventSourceMapping`` on a queue), a poller thread does what the mapping does on AWS:
long-polls the queue (up to BatchSize messages, gathering for up to MaximumBatchingWindowInSeconds),
hands the function one event in Lambda's SQS shape, and deletes what succeeded:

- with ``FunctionResponseTypes: [ReportBatchItemFailures]``, every record not named in the
  response's ``batchItemFailures``; a response Lambda would reject (not an object, an
  ``itemIdentifier`` missing, empty or not in the batch) fails the whole batch;
- without it, the whole batch when the handler returns;
- nothing when the handler raises.

What is not deleted comes back after the queue's visibility timeout, and the queue's RedrivePolicy
moves it to the dead-letter queue after maxReceiveCount receives: moto applies the policy on
ReceiveMessage exactly as SQS does, so the pollers do not re-implement it (tests cover it).

The function runs on warm execution environments (``seekless_local.gateway.ExecutionEnvironments``),
as everywhere else locally. A handler that raises or cannot be imported is logged and the poller
carries on. Long polls are short (``wait_seconds``) so that stopping never waits on a receive for long.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from seekless_local.template import SqsEventSource

logger = logging.getLogger(__name__)

REGION = "us-east-1"
MAX_RECEIVE = 10  # SQS's ReceiveMessage limit per call
Invoke = Callable[[dict[str, Any]], Any]


class InvalidBatchResponse(ValueError):
    """The handler's partial-batch response is one Lambda rejects: the whole batch counts as failed."""


# ---------------------------------------------------------------- the event Lambda builds


def _message_attribute(value: Mapping[str, Any]) -> dict[str, Any]:
    # Lambda's lower-camel shape, with both list fields always present and binaries in base64.
    converted: dict[str, Any] = {}
    if "StringValue" in value:
        converted["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        converted["binaryValue"] = _b64(value["BinaryValue"])
    converted["stringListValues"] = list(value.get("StringListValues", []))
    converted["binaryListValues"] = [_b64(item) for item in value.get("BinaryListValues", [])]
    converted["dataType"] = value["DataType"]
    return converted


def _b64(value: bytes | str) -> str:
    return base64.b64encode(value).decode() if isinstance(value, bytes) else value


def sqs_record(message: Mapping[str, Any], *, queue_arn: str, region: str = REGION) -> dict[str, Any]:
    """One record of Lambda's SQS event, from one message as boto3's ReceiveMessage returns it."""
    record: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": dict(message.get("Attributes", {})),
        "messageAttributes": {
            name: _message_attribute(value) for name, value in message.get("MessageAttributes", {}).items()
        },
    }
    # Lambda sends the attributes' digest only when there are attributes (else the key is absent).
    if message.get("MD5OfMessageAttributes"):
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    record.update(
        {
            "md5OfBody": message["MD5OfBody"],
            "eventSource": "aws:sqs",
            "eventSourceARN": queue_arn,
            "awsRegion": region,
        }
    )
    return record


def sqs_event(messages: Iterable[Mapping[str, Any]], *, queue_arn: str, region: str = REGION) -> dict[str, Any]:
    return {"Records": [sqs_record(message, queue_arn=queue_arn, region=region) for message in messages]}


def failed_message_ids(response: Any, message_ids: Iterable[str]) -> set[str]:
    """The records a ReportBatchItemFailures response asks to keep; InvalidBatchResponse when Lambda
    would treat the response as a failure of the whole batch.

    As Lambda: no response, ``{}`` and an empty or null ``batchItemFailures`` are complete success.
    """
    if response is None:
        return set()
    if not isinstance(response, dict):
        raise InvalidBatchResponse(f"the response is a {type(response).__name__}, not an object")
    items = response.get("batchItemFailures")
    if items is None:
        return set()
    if not isinstance(items, list):
        raise InvalidBatchResponse("batchItemFailures is not a list")
    known = set(message_ids)
    failed: set[str] = set()
    for item in items:
        identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not isinstance(identifier, str) or not identifier:
            raise InvalidBatchResponse(f"batchItemFailures entry without an itemIdentifier: {item!r}")
        if identifier not in known:
            raise InvalidBatchResponse(f"itemIdentifier {identifier!r} is not a message of this batch")
        failed.add(identifier)
    return failed


# ---------------------------------------------------------------- one event source mapping


@dataclass
class BatchOutcome:
    """What one batch came to: the messages handed to the function and the ones deleted."""

    message_ids: list[str]
    deleted: list[str]
    error: str | None = None  # why the whole batch failed, when it did
    response: Any = None

    @property
    def kept(self) -> list[str]:
        return [message_id for message_id in self.message_ids if message_id not in set(self.deleted)]


@dataclass
class PollerStats:
    batches: int = 0
    records: int = 0
    deleted: int = 0
    failed_batches: int = 0
    outcomes: list[BatchOutcome] = field(default_factory=list)  # the latest few, newest last


class SqsPoller:
    """One SQS event source mapping: ``poll_once`` is a single receive → invoke → delete cycle, and
    ``start``/``stop`` (or ``with``) run it on a thread until stopped.

    ``invoke(event)`` runs the function (and raises when the handler raises). ``sqs`` is a boto3 SQS
    client aimed at the queue's endpoint; it is only used from one thread at a time.
    """

    KEEP_OUTCOMES = 20

    def __init__(
        self,
        source: SqsEventSource,
        *,
        queue_url: str,
        queue_arn: str,
        invoke: Invoke,
        sqs: Any,
        wait_seconds: int = 1,
        region: str = REGION,
    ) -> None:
        self.source = source
        self.queue_url = queue_url
        self.queue_arn = queue_arn
        self._invoke = invoke
        self._sqs = sqs
        self._wait_seconds = max(0, min(20, int(wait_seconds)))
        self._region = region
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.stats = PollerStats()

    @property
    def name(self) -> str:
        return self.source.event

    # ------------------------------------------------------------ one cycle

    def _receive(self, count: int, wait_seconds: int) -> list[dict[str, Any]]:
        response = self._sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=max(1, min(MAX_RECEIVE, count)),
            WaitTimeSeconds=wait_seconds,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        return list(response.get("Messages", []))

    def _gather(self, wait_seconds: int) -> list[dict[str, Any]]:
        """Up to BatchSize messages: the first receive waits ``wait_seconds``; more are gathered for at
        most MaximumBatchingWindowInSeconds (rounded up to whole seconds: SQS waits in seconds)."""
        batch_size = self.source.batch_size
        messages = self._receive(batch_size, wait_seconds)
        if not messages:
            return messages
        window_ends = time.monotonic() + self.source.batching_window_seconds
        while len(messages) < batch_size and not self._stopping.is_set():
            left = window_ends - time.monotonic()
            if left <= 0:
                break
            more = self._receive(batch_size - len(messages), max(1, min(20, int(left + 0.999))))
            messages.extend(more)
        return messages

    def poll_once(self, wait_seconds: int | None = None) -> BatchOutcome | None:
        """Receive one batch, invoke the function with it, delete what succeeded. None: nothing came."""
        messages = self._gather(self._wait_seconds if wait_seconds is None else wait_seconds)
        if not messages:
            return None
        if self._stopping.is_set():
            # Stopping between the receive and the invoke: hand the messages straight back rather than
            # leave them invisible for the whole visibility timeout.
            self._release(messages)
            return None
        ids = [message["MessageId"] for message in messages]
        event = sqs_event(messages, queue_arn=self.queue_arn, region=self._region)
        outcome = BatchOutcome(message_ids=ids, deleted=[])
        try:
            outcome.response = self._invoke(event)
        except Exception as error:  # the handler raised: Lambda deletes nothing and retries the batch
            outcome.error = f"{type(error).__name__}: {error}"
            logger.exception("%s failed on a batch of %d; the messages will be retried", self.name, len(ids))
        if outcome.error is None:
            failed: set[str] = set()
            if self.source.report_batch_item_failures:
                try:
                    failed = failed_message_ids(outcome.response, ids)
                except InvalidBatchResponse as error:
                    outcome.error = f"invalid batchItemFailures response: {error}"
                    logger.error("%s returned %s; the whole batch will be retried", self.name, outcome.error)
            if outcome.error is None:
                to_delete = [message for message in messages if message["MessageId"] not in failed]
                self._delete(to_delete)
                outcome.deleted = [message["MessageId"] for message in to_delete]
                if failed:
                    logger.warning("%s reported %d of %d records failed", self.name, len(failed), len(ids))
        self._record(outcome)
        return outcome

    def _delete(self, messages: list[dict[str, Any]]) -> None:
        for start in range(0, len(messages), MAX_RECEIVE):
            chunk = messages[start : start + MAX_RECEIVE]
            response = self._sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)],
            )
            for failure in response.get("Failed", []):
                logger.error("%s could not delete a message: %s", self.name, failure)

    def _release(self, messages: list[dict[str, Any]]) -> None:
        self._sqs.change_message_visibility_batch(
            QueueUrl=self.queue_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                for i, m in enumerate(messages)
            ],
        )

    def _record(self, outcome: BatchOutcome) -> None:
        with self._lock:
            stats = self.stats
            stats.batches += 1
            stats.records += len(outcome.message_ids)
            stats.deleted += len(outcome.deleted)
            stats.failed_batches += outcome.error is not None
            stats.outcomes = [*stats.outcomes, outcome][-self.KEEP_OUTCOMES :]

    # ------------------------------------------------------------ the thread

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.poll_once()
            except Exception:  # the queue is unreachable or a bug of ours: keep polling, slowly
                logger.exception("%s could not poll %s", self.name, self.queue_url)
                self._stopping.wait(1.0)

    def start(self) -> SqsPoller:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name=f"sqs-poller-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop receiving; a batch being handled is finished first (up to ``timeout``)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.warning("%s is still running a batch; leaving it behind", self.name)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> SqsPoller:
        return self.start()

    def __exit__(self, *exc: tuple[type[BaseException], BaseException, TracebackType] | None) -> None:
        self.stop()


# ---------------------------------------------------------------- every mapping of a template


class EventSources:
    """Every SQS event source mapping of a template, each on its poller thread, invoking its function
    on warm execution environments of its own (one per function, shared by its mappings).

    ``load(logical_id)`` returns a function's handler; ``timeouts`` gives each function's Timeout for
    its Lambda context. ``queue_urls`` and ``queue_arns`` are keyed by queue logical id.
    """

    def __init__(
        self,
        sources: Iterable[SqsEventSource],
        *,
        queue_urls: Mapping[str, str],
        queue_arns: Mapping[str, str],
        load: Callable[[str], Any],
        endpoint_url: str,
        timeouts: Mapping[str, int] | None = None,
        wait_seconds: int = 1,
        region: str = REGION,
    ) -> None:
        self.sources = [source for source in sources if source.enabled]
        self._queue_urls = queue_urls
        self._queue_arns = queue_arns
        self._load = load
        self._endpoint_url = endpoint_url
        self._timeouts = dict(timeouts or {})
        self._wait_seconds = wait_seconds
        self._region = region
        self._environments: dict[str, Any] = {}
        self.pollers: list[SqsPoller] = []

    def _environments_for(self, logical_id: str) -> Any:
        from seekless_local.gateway import ExecutionEnvironments

        if logical_id not in self._environments:
            self._environments[logical_id] = ExecutionEnvironments(
                lambda: self._load(logical_id),
                name=logical_id,
                timeout=float(self._timeouts.get(logical_id, 3)),
                size=1,  # one batch at a time per mapping, so one environment per function is enough
            )
        return self._environments[logical_id]

    def _client(self) -> Any:
        import boto3
        from botocore.config import Config

        # A read timeout well past the long poll, so a waiting receive is never cut short and retried.
        config = Config(read_timeout=self._wait_seconds + 30, retries={"max_attempts": 2})
        return boto3.client("sqs", endpoint_url=self._endpoint_url, region_name=self._region, config=config)

    def start(self) -> EventSources:
        try:
            for source in self.sources:
                environments = self._environments_for(source.function)
                poller = SqsPoller(
                    source,
                    queue_url=self._queue_urls[source.queue],
                    queue_arn=self._queue_arns[source.queue],
                    invoke=environments.invoke_sync,
                    sqs=self._client(),
                    wait_seconds=self._wait_seconds,
                    region=self._region,
                )
                self.pollers.append(poller.start())
        except BaseException:
            self.stop()
            raise
        return self

    def poller(self, function: str) -> SqsPoller:
        """The (first) poller feeding ``function``."""
        for poller in self.pollers:
            if poller.source.function == function:
                return poller
        raise KeyError(function)

    def stop(self, timeout: float = 30.0) -> None:
        for poller in self.pollers:
            poller._stopping.set()  # all at once: each then finishes its receive in parallel
        for poller in self.pollers:
            poller.stop(timeout)
        self.pollers = []
        environments, self._environments = list(self._environments.values()), {}
        for environment in environments:
            environment.close()

    def describe(self) -> list[str]:
        return [
            f"{source.function} ← {self._queue_urls[source.queue].rsplit('/', 1)[-1]} (BatchSize {source.batch_size})"
            for source in self.sources
        ]

    def __enter__(self) -> EventSources:
        return self.start()

    def __exit__(self, *exc: tuple[type[BaseException], BaseException, TracebackType] | None) -> None:
        self.stop()
