"""``FallbackChatModel``: an inference endpoint first, another when it cannot start a generation.

The worker's primary is the vLLM server in its own ECS task; the fallback is the DeepSeek API. The
primary is skipped for a call when it fails before producing anything: its circuit breaker is open
(``UpstreamUnavailable`` with code ``circuit_open``, raised before any request), it cannot be reached,
or it answers 5xx/timeout. A request the primary rejects as malformed (``InvalidRequest``: 400/422)
is the request's fault and is not retried elsewhere. Once the primary has streamed output, a failure
is the job's failure: switching model mid-answer would stitch two different texts together.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import aclosing
from typing import Any

from seekless.contracts import ChatResult, StreamEvent
from seekless.errors import InvalidRequest, SeeklessError
from seekless.ports import ChatModel

logger = logging.getLogger("seekless.worker.fallback")


def _falls_back(error: SeeklessError) -> bool:
    return not isinstance(error, InvalidRequest)


class FallbackChatModel:
    """Implements ``ChatModel``. ``primary_model`` renames the model for the primary (vLLM serves its
    own model id); ``on_fallback`` is told each time the fallback is used (a metric)."""

    def __init__(
        self,
        primary: ChatModel,
        fallback: ChatModel,
        *,
        primary_model: str | None = None,
        on_fallback: Callable[[SeeklessError], None] | None = None,
    ) -> None:
        self._primary = primary
        self._fallback = fallback
        self._primary_model = primary_model
        self._on_fallback = on_fallback

    def _primary_body(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        if self._primary_model is None:
            return body
        return {**body, "model": self._primary_model}

    def _note(self, error: SeeklessError) -> None:
        logger.warning("inference endpoint failed before any output (%s: %s); using the fallback", error.code, error)
        if self._on_fallback is not None:
            self._on_fallback(error)

    async def aclose(self) -> None:
        for model in (self._primary, self._fallback):
            close = getattr(model, "aclose", None)
            if close is not None:
                await close()

    async def complete(self, body: Mapping[str, Any], *, deadline: float) -> ChatResult:
        try:
            return await self._primary.complete(self._primary_body(body), deadline=deadline)
        except SeeklessError as error:
            if not _falls_back(error):
                raise
            self._note(error)
        return await self._fallback.complete(body, deadline=deadline)

    async def stream(self, body: Mapping[str, Any], *, deadline: float) -> AsyncIterator[StreamEvent]:
        primary = self._primary.stream(self._primary_body(body), deadline=deadline)
        async with aclosing(primary) as events:  # type: ignore[type-var]
            try:
                first = await anext(events)
            except StopAsyncIteration:
                first = None
            except SeeklessError as error:
                if not _falls_back(error):
                    raise
                self._note(error)
            else:
                if first is not None:
                    yield first
                async for event in events:
                    yield event
                return
        async with aclosing(self._fallback.stream(body, deadline=deadline)) as events:  # type: ignore[type-var]
            async for event in events:
                yield event
