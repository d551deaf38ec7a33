"""Fuzz tier: schemathesis against the REST API's OpenAPI document, and a WebSocket frame fuzzer.

One ``LocalStack`` serves the package (the contract tier's: moto, a redis-server, the DeepSeek
emulator, the REST function behind the local API Gateway and the WebSocket API behind its gateway),
so requests and frames take the path they take on AWS: gateway event, Mangum or the route function.
The number of generated examples is bounded by ``SEEKLESS_FUZZ_EXAMPLES`` (``make test`` keeps the
default, ``make fuzz`` raises it), and every run is derandomized: CI sees the same inputs every time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest

from seekless_local.stack import LocalStack
from tests.stacks import emulated_stack

DEFAULT_EXAMPLES = 25


def fuzz_examples(default: int = DEFAULT_EXAMPLES) -> int:
    """How many examples each fuzzed operation (or frame family) gets in this run."""
    return max(1, int(os.environ.get("SEEKLESS_FUZZ_EXAMPLES", default)))


class ErrorRecords(logging.Handler):
    """ERROR records that carry an exception, from seekless's own loggers and the local gateways:
    an exception the code did not expect, whatever the client was answered."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.name.startswith("seekless") and record not in self.records:
            self.records.append(record)

    def describe(self) -> str:
        return "\n".join(f"{r.name}: {r.getMessage()}\n{self.format(r)}" for r in self.records)


@pytest.fixture(scope="package")
def stack() -> Iterator[LocalStack]:
    # No SQS pollers: nothing here uploads batches or queues requests, and they would only add load.
    with emulated_stack(event_sources=False) as running:
        yield running


@pytest.fixture(scope="package")
def server_errors() -> Iterator[ErrorRecords]:
    """Every unexpected exception logged while the package runs. On the root logger: seekless's loggers
    propagate to it (a handler on the "seekless" logger itself would sit where Powertools' Logger looks
    for its own, and break it)."""
    handler = ErrorRecords()
    root = logging.getLogger()
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)
