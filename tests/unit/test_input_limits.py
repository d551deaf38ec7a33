"""Input limits: each one refuses just past its limit, names the parameter and states the limit, and
lets a request exactly at the limit through."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from seekless.config import ModelSpec, Settings
from seekless.contracts import ChatCompletionRequest, RequestMessage
from seekless.errors import InvalidRequest
from seekless.input_limits import check_context, check_request, tools_json
from seekless.ws.frames import FrameError, parse_action

SETTINGS = Settings(max_messages=3, max_message_chars=10, max_tools=2, max_tools_bytes=300, max_user_chars=8)
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


def request(**fields: Any) -> ChatCompletionRequest:
    body: dict[str, Any] = {"model": "deepseek-flash", "messages": [{"role": "user", "content": "hello"}]}
    return ChatCompletionRequest.model_validate({**body, **fields})


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def tool_of_bytes(size: int) -> dict[str, Any]:
    """A tool whose tools array is ``size`` bytes of JSON."""
    bare = len(tools_json([{**TOOL, "description": ""}]))
    return {**TOOL, "description": "d" * (size - bare)}


# name: (fields at the limit, fields one past it, param, code, the limit the message states)
LIMITS: dict[str, tuple[dict[str, Any], dict[str, Any], str, str, int]] = {
    "messages": ({"messages": [user("a")] * 3}, {"messages": [user("a")] * 4}, "messages", "array_above_max_length", 3),
    "message_chars": (
        {"messages": [user("a"), user("x" * 10)]},
        {"messages": [user("a"), user("x" * 11)]},
        "messages.1.content",
        "string_above_max_length",
        10,
    ),
    "message_chars_in_text_parts": (
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "x" * 5}] * 2}]},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "x" * 5}] * 3}]},
        "messages.0.content",
        "string_above_max_length",
        10,
    ),
    "tools": ({"tools": [TOOL] * 2}, {"tools": [TOOL] * 3}, "tools", "array_above_max_length", 2),
    "tools_bytes": ({"tools": [tool_of_bytes(300)]}, {"tools": [tool_of_bytes(301)]}, "tools", "tools_too_large", 300),
    "stop": ({"stop": ["a", "b", "c", "d"]}, {"stop": ["a", "b", "c", "d", "e"]}, "stop", "array_above_max_length", 4),
    "user": ({"user": "u" * 8}, {"user": "u" * 9}, "user", "string_above_max_length", 8),
}


@pytest.mark.parametrize("name", list(LIMITS))
def test_a_request_at_the_limit_passes_and_one_past_it_is_refused(name: str) -> None:
    at_limit, over, param, code, limit = LIMITS[name]
    check_request(request(**at_limit), SETTINGS)

    with pytest.raises(InvalidRequest) as caught:
        check_request(request(**over), SETTINGS)

    error = caught.value
    assert (error.status, error.param, error.code) == (400, param, code)
    assert f"maximum length {limit}," in error.message or f"limit of {limit}." in error.message


def test_a_single_stop_string_is_one_sequence() -> None:
    check_request(request(stop="x" * 100), Settings(max_stop_sequences=1))


def test_the_default_limits_are_openais() -> None:
    defaults = Settings()
    assert (defaults.max_tools, defaults.max_stop_sequences) == (128, 4)
    assert defaults.max_message_chars < defaults.max_body_bytes


SMALL = ModelSpec(upstream="small", context_tokens=1_000)


def body(text: str, max_tokens: int, **extra: Any) -> dict[str, Any]:
    return {"messages": [user(text)], "max_tokens": max_tokens, **extra}


def test_a_prompt_and_max_tokens_that_fit_the_context_pass() -> None:
    check_context(body("x" * 2_000, 496), SMALL)  # 4 + 500 estimated prompt tokens, 496 to answer


def test_a_prompt_and_max_tokens_past_the_context_are_context_length_exceeded() -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_context(body("x" * 2_000, 497), SMALL)

    error = caught.value
    assert (error.status, error.param, error.code) == (400, "messages", "context_length_exceeded")
    assert "1000 tokens" in error.message and "1001" in error.message


def test_tools_count_towards_the_context() -> None:
    tools = [{**TOOL, "description": "d" * 400}]
    check_context(body("x" * 2_000, 450), SMALL)  # 954 of 1000
    with pytest.raises(InvalidRequest):
        check_context(body("x" * 2_000, 450, tools=tools), SMALL)  # the tools add about 120


@pytest.mark.parametrize("session_id", ["", "x" * 129, "a#b", "has space", "é"])
def test_a_malformed_session_id_is_refused_wherever_it_is_named(session_id: str) -> None:
    with pytest.raises(ValidationError) as in_request:
        request(session_id=session_id)
    assert in_request.value.errors()[0]["loc"] == ("session_id",)

    queued = {"tenant_id": "dev", "request": request().model_dump(), "reply_to": {"queue_url": "https://q"}}
    with pytest.raises(ValidationError):
        RequestMessage.model_validate({**queued, "session_id": session_id})

    frame = {"action": "chat", "request_id": "r1", "message": "hi", "session_id": session_id}
    with pytest.raises(FrameError) as in_frame:
        parse_action(json.dumps(frame))
    assert in_frame.value.frame()["param"] == "session_id"


@pytest.mark.parametrize("session_id", ["sess_0123456789abcdef01234567", "sess-example", "a.b:c_d-e", "x" * 128])
def test_session_ids_seekless_mints_or_seeds_are_accepted(session_id: str) -> None:
    assert request(session_id=session_id).session_id == session_id
