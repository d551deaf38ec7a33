"""DynamoDB throttling, stubbed where botocore sends: every DynamoDB client of this process (the ones the
functions and the in-process worker build for themselves included) goes through ``Endpoint._send``,
inside botocore's retry loop, so a throttled call is retried by boto3 exactly as on AWS."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import botocore.endpoint
from botocore.awsrequest import AWSPreparedRequest, AWSResponse

_THROTTLED = json.dumps(
    {
        "__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
        "message": "The level of configured provisioned throughput for the table was exceeded (stubbed).",
    }
).encode()


class _Body:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data


@dataclass(frozen=True)
class Sent:
    operation: str
    tables: frozenset[str]
    throttled: bool


def _operation(request: AWSPreparedRequest) -> str | None:
    target = request.headers.get("X-Amz-Target")
    if isinstance(target, bytes):
        target = target.decode()
    if not target or not target.startswith("DynamoDB_"):
        return None
    return str(target.split(".", 1)[1])


def _tables(value: Any) -> set[str]:
    """Every TableName in a request body, however deep (TransactItems nest them)."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "TableName" and isinstance(item, str):
                found.add(item)
            else:
                found |= _tables(item)
    elif isinstance(value, list):
        for item in value:
            found |= _tables(item)
    return found


class Throttle:
    """While a rule is set, matching DynamoDB calls answer ProvisionedThroughputExceededException (400)
    without being sent: the next ``times`` of them, or all of them (``times=None``) until ``stop()``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._operations: frozenset[str] = frozenset()
        self._table: str | None = None
        self._left: int | None = 0
        self.sent: list[Sent] = []  # every matching call while a rule was set, throttled or not

    def start(self, *, operations: set[str], table: str, times: int | None = None) -> None:
        with self._lock:
            self._operations, self._table, self._left = frozenset(operations), table, times
            self.sent.clear()

    def stop(self) -> None:
        with self._lock:
            self._operations, self._table, self._left = frozenset(), None, 0

    @property
    def throttled(self) -> int:
        return sum(1 for sent in self.sent if sent.throttled)

    def _answer(self, request: AWSPreparedRequest) -> AWSResponse | None:
        operation = _operation(request)
        if operation is None:
            return None
        with self._lock:
            if operation not in self._operations:
                return None
            tables = frozenset(_tables(json.loads(request.body or b"{}")))
            if self._table not in tables:
                return None
            throttle = self._left is None or self._left > 0
            if throttle and self._left is not None:
                self._left -= 1
            self.sent.append(Sent(operation, tables, throttle))
        if not throttle:
            return None
        headers = {"x-amzn-RequestId": "stubbed-throttle", "Content-Type": "application/x-amz-json-1.0"}
        return AWSResponse(request.url, 400, headers, _Body(_THROTTLED))


@contextmanager
def throttled_dynamodb() -> Iterator[Throttle]:
    throttle = Throttle()
    original = botocore.endpoint.Endpoint._send

    def send(endpoint: botocore.endpoint.Endpoint, request: AWSPreparedRequest) -> Any:
        answer = throttle._answer(request)
        return answer if answer is not None else original(endpoint, request)

    botocore.endpoint.Endpoint._send = send  # type: ignore[method-assign]
    try:
        yield throttle
    finally:
        botocore.endpoint.Endpoint._send = original  # type: ignore[method-assign]
