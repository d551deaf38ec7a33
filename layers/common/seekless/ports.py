"""Ports: the small Protocols the domain depends on. Adapters implement them; fakes need no inheritance."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

from seekless.contracts import ChatResult, StreamEvent


class ChatModel(Protocol):
    """An OpenAI-compatible chat endpoint (DeepSeek, or later the GPU worker's vLLM).

    ``body`` is the upstream request body, already normalised by the service (upstream model name,
    ``max_tokens`` capped, ``user_id`` set). ``deadline`` is an absolute ``time.monotonic()`` value that
    nothing (retries, keep-alives) may stretch. Errors are ``seekless.errors.SeeklessError`` subclasses.
    """

    async def complete(self, body: Mapping[str, Any], *, deadline: float) -> ChatResult: ...

    def stream(self, body: Mapping[str, Any], *, deadline: float) -> AsyncIterator[StreamEvent]: ...


class CircuitBreaker(Protocol):
    """Shared across every Lambda: state lives in Redis."""

    async def allow(self) -> bool: ...

    async def record_success(self) -> None: ...

    async def record_failure(self) -> None: ...
