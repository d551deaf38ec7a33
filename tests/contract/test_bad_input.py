"""Requests the gateway must refuse: the right status and SDK exception, OpenAI's error schema, no
upstream call, and nothing written to a session the request named."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from seekless_local.stack import LocalStack
from tests.contract.conftest import assert_openai_error_schema, make_client, unique_messages, upstream_calls

MODEL = "deepseek-flash"
ONE_MIB = 1_048_576


@pytest.fixture
def session_id(http: httpx.Client) -> str:
    """A fresh dev-tenant session that every bad request names: it must stay empty."""
    response = http.post("/v1/sessions", json={"title": "must stay empty"})
    assert response.status_code == 201
    return str(response.json()["id"])


def assert_untouched(http: httpx.Client, stack: LocalStack, session_id: str) -> None:
    """No upstream call was made and the named session holds no messages."""
    assert upstream_calls(stack) == 0
    session = http.get(f"/v1/sessions/{session_id}")
    assert session.status_code == 200
    assert session.json()["message_count"] == 0
    assert session.json()["messages"]["data"] == []


def _post(client: openai.OpenAI, body: dict[str, Any]) -> Any:
    """Send a body exactly as given, through the SDK (so its exception mapping applies)."""
    return client.post("/chat/completions", body=body, cast_to=object)


# -- authentication ----------------------------------------------------------------------------------


def test_missing_api_key_is_401(anonymous_http: httpx.Client, stack: LocalStack) -> None:
    response = anonymous_http.post("/v1/chat/completions", json={"model": MODEL, "messages": unique_messages()})

    assert response.status_code == 401
    assert assert_openai_error_schema(response.json())["type"] == "authentication_error"
    assert upstream_calls(stack) == 0


def test_wrong_api_key_raises_authentication_error(stack: LocalStack) -> None:
    intruder = make_client(stack, "sk-seekless-not-a-real-key")
    try:
        with pytest.raises(openai.AuthenticationError) as caught:
            intruder.chat.completions.create(model=MODEL, messages=unique_messages())
    finally:
        intruder.close()

    error = assert_openai_error_schema(caught.value.response.json())
    assert "sk-seekless-not-a-real-key" not in error["message"]
    assert upstream_calls(stack) == 0


def test_non_bearer_authorization_is_401(anonymous_http: httpx.Client, stack: LocalStack) -> None:
    response = anonymous_http.get("/v1/models", headers={"Authorization": f"Basic {stack.dev_api_key}"})

    assert response.status_code == 401
    assert_openai_error_schema(response.json())


def test_models_need_a_key(anonymous_http: httpx.Client) -> None:
    response = anonymous_http.get("/v1/models")

    assert response.status_code == 401
    assert_openai_error_schema(response.json())


def test_sessions_need_a_key(anonymous_http: httpx.Client) -> None:
    response = anonymous_http.get("/v1/sessions")

    assert response.status_code == 401
    assert_openai_error_schema(response.json())


# -- not found ---------------------------------------------------------------------------------------


def test_unknown_model_is_not_found(
    client: openai.OpenAI, http: httpx.Client, stack: LocalStack, session_id: str
) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(
            model="deepseek-v9000", messages=unique_messages(), extra_body={"session_id": session_id}
        )

    error = assert_openai_error_schema(caught.value.response.json())
    assert error["param"] == "model"
    assert error["code"] == "model_not_found"
    assert_untouched(http, stack, session_id)


def test_unknown_session_is_not_found(client: openai.OpenAI, stack: LocalStack) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(
            model=MODEL, messages=unique_messages(), extra_body={"session_id": "sess_000000000000000000000000"}
        )

    assert_openai_error_schema(caught.value.response.json())
    assert upstream_calls(stack) == 0


def test_unknown_session_in_header_is_not_found(client: openai.OpenAI, stack: LocalStack) -> None:
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model=MODEL, messages=unique_messages(), extra_headers={"X-Session-Id": "sess_000000000000000000000000"}
        )

    assert upstream_calls(stack) == 0


def test_unknown_route_is_not_found(client: openai.OpenAI, http: httpx.Client) -> None:
    with pytest.raises(openai.NotFoundError):
        client.get("/no/such/route", cast_to=object)

    response = http.get("/v1/no/such/route")
    assert response.status_code == 404
    assert_openai_error_schema(response.json())


# -- invalid requests --------------------------------------------------------------------------------

INVALID_BODIES: dict[str, tuple[Callable[[], dict[str, Any]], str | None]] = {
    # name: (body without session_id, the parameter OpenAI would blame or None)
    "empty_messages": (lambda: {"model": MODEL, "messages": []}, "messages"),
    "missing_messages": (lambda: {"model": MODEL}, "messages"),
    "unknown_role": (lambda: {"model": MODEL, "messages": [{"role": "wizard", "content": "hi"}]}, None),
    "missing_model": (lambda: {"messages": unique_messages()}, "model"),
    "max_tokens_over_cap": (
        lambda: {"model": MODEL, "messages": unique_messages(), "max_tokens": 32_769},
        "max_tokens",
    ),
    "max_completion_tokens_over_cap": (
        lambda: {"model": MODEL, "messages": unique_messages(), "max_completion_tokens": 1_000_000},
        "max_tokens",
    ),
    "n_above_one": (lambda: {"model": MODEL, "messages": unique_messages(), "n": 2}, "n"),
    "unknown_field": (lambda: {"model": MODEL, "messages": unique_messages(), "frobnicate": True}, "frobnicate"),
    "temperature_out_of_range": (lambda: {"model": MODEL, "messages": unique_messages(), "temperature": 3}, None),
    "user_message_without_content": (lambda: {"model": MODEL, "messages": [{"role": "user"}]}, None),
    "json_mode_without_the_word_json": (
        lambda: {"model": MODEL, "messages": unique_messages(), "response_format": {"type": "json_object"}},
        "response_format",
    ),
}


@pytest.mark.parametrize("case", list(INVALID_BODIES))
def test_invalid_request_is_400_bad_request(
    client: openai.OpenAI, http: httpx.Client, stack: LocalStack, session_id: str, case: str
) -> None:
    make_body, param = INVALID_BODIES[case]

    with pytest.raises(openai.BadRequestError) as caught:
        _post(client, {**make_body(), "session_id": session_id})

    error = assert_openai_error_schema(caught.value.response.json())
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param
    assert_untouched(http, stack, session_id)


def test_invalid_streamed_request_is_400_not_a_stream(http: httpx.Client, stack: LocalStack, session_id: str) -> None:
    body = {"model": MODEL, "messages": [], "stream": True, "session_id": session_id}

    response = http.post("/v1/chat/completions", json=body)

    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")
    assert_openai_error_schema(response.json())
    assert_untouched(http, stack, session_id)


def test_malformed_json_is_400(http: httpx.Client, stack: LocalStack) -> None:
    response = http.post(
        "/v1/chat/completions",
        content=b'{"model": "deepseek-flash", "messages": [',
        headers={"Content-Type": "application/json"},
    )

    assert response.status_code == 400
    error = assert_openai_error_schema(response.json())
    assert error["type"] == "invalid_request_error"
    assert upstream_calls(stack) == 0


def test_json_that_is_not_an_object_is_400(http: httpx.Client, stack: LocalStack) -> None:
    response = http.post("/v1/chat/completions", content=b"[1, 2, 3]", headers={"Content-Type": "application/json"})

    assert response.status_code == 400
    assert_openai_error_schema(response.json())
    assert upstream_calls(stack) == 0


def _oversized_body(session_id: str) -> bytes:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x" * ONE_MIB}], "session_id": session_id}
    raw = json.dumps(body).encode()
    assert len(raw) > ONE_MIB
    return raw


def test_body_over_one_mib_is_413(http: httpx.Client, stack: LocalStack, session_id: str) -> None:
    response = http.post(
        "/v1/chat/completions", content=_oversized_body(session_id), headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 413
    assert_openai_error_schema(response.json())
    assert_untouched(http, stack, session_id)


def test_chunked_body_over_one_mib_is_413(http: httpx.Client, stack: LocalStack, session_id: str) -> None:
    raw = _oversized_body(session_id)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the size is only known once read
        for start in range(0, len(raw), 64 * 1024):
            yield raw[start : start + 64 * 1024]

    response = http.post("/v1/chat/completions", content=chunks(), headers={"Content-Type": "application/json"})

    assert response.status_code == 413
    assert_openai_error_schema(response.json())
    assert_untouched(http, stack, session_id)


def test_body_over_one_mib_raises_in_the_sdk(
    client: openai.OpenAI, http: httpx.Client, stack: LocalStack, session_id: str
) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "x" * ONE_MIB}],
            extra_body={"session_id": session_id},
        )

    assert caught.value.status_code == 413
    assert_openai_error_schema(caught.value.response.json())
    assert_untouched(http, stack, session_id)


def test_bad_session_message_cursor_is_400(http: httpx.Client, session_id: str) -> None:
    response = http.get(f"/v1/sessions/{session_id}", params={"after": "not-a-message-id"})

    assert response.status_code == 400
    assert_openai_error_schema(response.json())


def test_bad_session_page_size_is_400(http: httpx.Client) -> None:
    response = http.get("/v1/sessions", params={"limit": 0})

    assert response.status_code == 400
    assert_openai_error_schema(response.json())
