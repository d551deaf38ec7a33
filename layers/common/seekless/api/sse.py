"""Render a chat stream as OpenAI ``chat.completion.chunk`` server-sent events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from seekless.chat import ChatStream
from seekless.contracts import StreamEnd
from seekless.errors import SeeklessError

DONE = b"data: [DONE]\n\n"


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


async def sse_events(stream: ChatStream, *, include_usage: bool) -> AsyncIterator[bytes]:
    def chunk(delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> bytes:
        choices = [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]
        body = {
            "id": stream.id,
            "object": "chat.completion.chunk",
            "created": stream.created,
            "model": stream.model,
            "choices": choices,
            **extra,
        }
        return _event(body)

    yield chunk({"role": "assistant", "content": ""})
    try:
        async for event in stream.events:
            if isinstance(event, StreamEnd):
                usage = event.usage.to_wire() if event.usage else None
                # DeepSeek puts usage on the last chunk; OpenAI clients asking include_usage expect an
                # extra chunk with no choices. Send both shapes: each client reads the one it knows.
                yield chunk({}, event.finish_reason, usage=usage)
                if include_usage and usage is not None:
                    yield _event(
                        {
                            "id": stream.id,
                            "object": "chat.completion.chunk",
                            "created": stream.created,
                            "model": stream.model,
                            "choices": [],
                            "usage": usage,
                        }
                    )
                yield DONE
                return
            delta: dict[str, Any] = {}
            if event.reasoning_content:
                delta["reasoning_content"] = event.reasoning_content
            if event.content:
                delta["content"] = event.content
            if event.tool_calls:
                delta["tool_calls"] = event.tool_calls
            yield chunk(delta)
    except SeeklessError as error:
        # Headers are gone: OpenAI's own mid-stream error is a data event carrying "error".
        yield _event(error.to_body())
