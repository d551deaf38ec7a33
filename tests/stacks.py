"""The local stack as the contract and browser suites use it: emulated DeepSeek, and a clean upstream
(emulator counters, faults and knobs; cached answers, leases and the breaker in Redis) per test."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from seekless_local.stack import LocalStack, StackConfig


@contextmanager
def emulated_stack(**config: Any) -> Iterator[LocalStack]:
    with LocalStack(StackConfig(rest_port=0, ws_port=0, **config)) as running:
        assert running.emulator is not None, "these suites run against the DeepSeek emulator"
        yield running


@contextmanager
def clean_upstream(stack: LocalStack) -> Iterator[None]:
    stack.emulator.reset(settings=True)
    assert stack.redis is not None
    stack.redis.flush()
    yield
    stack.emulator.reset(settings=True)
