"""Input limits on a chat request, whichever way it came (REST, a WebSocket frame, a job, a batch line, a
queued request). ChatService.prepare applies them, so a request over any limit is refused before
anything goes upstream or onto a queue.

Each refusal is an InvalidRequest that names the parameter and the limit, with OpenAI's code where
OpenAI has one for the same mistake.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from seekless.config import ModelSpec, Settings
from seekless.contracts import ChatCompletionRequest
from seekless.errors import InvalidRequest
from seekless.tokens import estimate_prompt_tokens, estimate_text_tokens


def check_request(request: ChatCompletionRequest, settings: Settings) -> None:
    """The limits a request can break on its own, checked before its session history is read."""
    _array(len(request.messages), settings.max_messages, "messages")
    for index, message in enumerate(request.messages):
        _string(len(message.text()), settings.max_message_chars, f"messages.{index}.content")
    if request.tools:
        _array(len(request.tools), settings.max_tools, "tools")
        size = len(tools_json(request.tools).encode())
        if size > settings.max_tools_bytes:
            raise InvalidRequest(
                f"Invalid 'tools': the definitions are {size} bytes as JSON, over the limit of "
                f"{settings.max_tools_bytes}.",
                param="tools",
                code="tools_too_large",
            )
    if isinstance(request.stop, list):
        _array(len(request.stop), settings.max_stop_sequences, "stop")
    if request.user is not None:
        _string(len(request.user), settings.max_user_chars, "user")


def check_context(body: Mapping[str, Any], spec: ModelSpec) -> None:
    """The upstream body, session history included, must fit the model's context window with its
    max_tokens. The prompt is an estimate (no tokenizer ships in the layer); DeepSeek still enforces
    the exact count, this only keeps requests that cannot fit from costing an upstream call."""
    max_tokens = int(body.get("max_tokens") or 0)
    prompt = estimate_prompt_tokens(body.get("messages") or [])
    if body.get("tools"):
        prompt += estimate_text_tokens(tools_json(body["tools"]))
    if prompt + max_tokens > spec.context_tokens:
        raise InvalidRequest(
            f"This model's maximum context length is {spec.context_tokens} tokens. However, you requested about "
            f"{prompt + max_tokens} tokens ({prompt} estimated in the messages, {max_tokens} for the completion). "
            "Please reduce the length of the messages or max_tokens.",
            param="messages",
            code="context_length_exceeded",
        )


def tools_json(tools: Sequence[dict[str, Any]]) -> str:
    return json.dumps(tools, separators=(",", ":"), ensure_ascii=False)


def _array(length: int, limit: int, param: str) -> None:
    if length > limit:
        raise InvalidRequest(
            f"Invalid '{param}': array too long. Expected an array with maximum length {limit}, "
            f"but got an array with length {length} instead.",
            param=param,
            code="array_above_max_length",
        )


def _string(length: int, limit: int, param: str) -> None:
    if length > limit:
        raise InvalidRequest(
            f"Invalid '{param}': string too long. Expected a string with maximum length {limit}, "
            f"but got a string with length {length} instead.",
            param=param,
            code="string_above_max_length",
        )
