"""The DeepSeek emulator over a real socket: the contract it reproduces and the faults it injects."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from seekless_local.emulator import MODELS, EmulatorServer

AUTH = {"Authorization": "Bearer sk-test"}
HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer() as emulator:
        yield emulator


@pytest.fixture
def emulator(server: EmulatorServer) -> EmulatorServer:
    server.reset(settings=True)
    return server


@pytest.fixture
def client(emulator: EmulatorServer) -> Iterator[httpx.Client]:
    transport = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    with httpx.Client(base_url=emulator.base_url, headers=AUTH, timeout=10, transport=transport) as http:
        yield http


def chat(client: httpx.Client, headers: dict[str, str] | None = None, **body: Any) -> httpx.Response:
    payload = {"model": "deepseek-flash", "messages": HELLO, **body}
    return client.post("/chat/completions", json=payload, headers=headers or {})


def sse(response: httpx.Response) -> tuple[list[str], list[str]]:
    """(comment lines, data payloads) of a streamed response, in order."""
    comments, data = [], []
    for line in response.iter_lines():
        if line.startswith(":"):
            comments.append(line)
        elif line.startswith("data: "):
            data.append(line[len("data: ") :])
    return comments, data


def stream(client: httpx.Client, headers: dict[str, str] | None = None, **body: Any) -> tuple[list[str], list[str]]:
    payload = {"model": "deepseek-flash", "messages": HELLO, "stream": True, **body}
    with client.stream("POST", "/chat/completions", json=payload, headers=headers or {}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return sse(response)


def chunks(data: list[str]) -> list[dict[str, Any]]:
    assert data[-1] == "[DONE]"
    return [json.loads(item) for item in data[:-1]]


def content_of(response: httpx.Response) -> str:
    return response.json()["choices"][0]["message"]["content"]


def assert_deepseek_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    return error


# ---- routes and auth ----


def test_models_lists_flash_and_v4_pro(client: httpx.Client) -> None:
    for path in ("/models", "/v1/models"):
        listing = client.get(path).json()
        assert listing["object"] == "list"
        assert [model["id"] for model in listing["data"]] == list(MODELS) == ["deepseek-flash", "deepseek-v4-pro"]


def test_v1_prefixed_chat_route_answers_like_the_bare_one(client: httpx.Client) -> None:
    payload = {"model": "deepseek-flash", "messages": HELLO}
    bare = client.post("/chat/completions", json=payload)
    prefixed = client.post("/v1/chat/completions", json=payload)
    assert content_of(bare) == content_of(prefixed)


@pytest.mark.parametrize("authorization", [None, "Bearer", "Basic abc", "Bearer sk-emulator-bad"])
def test_missing_or_bad_key_is_401(emulator: EmulatorServer, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    with httpx.Client(base_url=emulator.base_url, headers=headers, timeout=10) as anonymous:
        response = anonymous.post("/chat/completions", json={"model": "deepseek-flash", "messages": HELLO})
        assert assert_deepseek_error(response, 401)["type"] == "authentication_error"
        assert_deepseek_error(anonymous.get("/models"), 401)


# ---- answers ----


def test_same_request_gives_same_answer(client: httpx.Client) -> None:
    first, second = chat(client).json(), chat(client).json()
    assert first["choices"][0]["message"] == second["choices"][0]["message"]


def test_different_requests_give_different_answers(client: httpx.Client) -> None:
    base = content_of(chat(client))
    assert content_of(chat(client, messages=[{"role": "user", "content": "something else"}])) != base
    assert content_of(chat(client, model="deepseek-v4-pro")) != base


def test_stream_and_non_stream_give_the_same_text(client: httpx.Client) -> None:
    streamed = chunks(stream(client)[1])
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in streamed)
    reasoning = "".join(c["choices"][0]["delta"].get("reasoning_content") or "" for c in streamed)
    message = chat(client).json()["choices"][0]["message"]
    assert (text, reasoning) == (message["content"], message["reasoning_content"])


def test_non_stream_answer_has_openai_shape_and_usage(client: httpx.Client) -> None:
    body = chat(client).json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "deepseek-flash"
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert len(choice["message"]["content"].split()) == 24
    assert len(choice["message"]["reasoning_content"].split()) == 8
    usage = body["usage"]
    assert usage["completion_tokens"] == 32
    assert usage["completion_tokens_details"] == {"reasoning_tokens": 8}
    assert usage["total_tokens"] == usage["prompt_tokens"] + 32
    assert usage["prompt_cache_hit_tokens"] + usage["prompt_cache_miss_tokens"] == usage["prompt_tokens"]


def test_tokens_header_and_global_setting_set_the_answer_length(client: httpx.Client, emulator: EmulatorServer) -> None:
    assert len(content_of(chat(client, {"x-emulator-tokens": "5"})).split()) == 5
    emulator.configure(tokens=3, reasoning_tokens=2)
    message = chat(client).json()["choices"][0]["message"]
    assert (len(message["content"].split()), len(message["reasoning_content"].split())) == (3, 2)


def test_max_tokens_cuts_the_answer_with_length(client: httpx.Client) -> None:
    body = chat(client, max_tokens=10).json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 10  # 8 reasoning + 2 content: max_tokens covers both
    assert len(body["choices"][0]["message"]["content"].split()) == 2


def test_thinking_disabled_gives_no_reasoning(client: httpx.Client) -> None:
    body = chat(client, thinking={"type": "disabled"}).json()
    assert "reasoning_content" not in body["choices"][0]["message"]
    assert body["usage"]["completion_tokens_details"] == {"reasoning_tokens": 0}
    deltas = [c["choices"][0]["delta"] for c in chunks(stream(client, thinking={"type": "disabled"})[1])]
    assert not any(delta.get("reasoning_content") for delta in deltas)


def test_json_mode_answers_with_a_json_object(client: httpx.Client) -> None:
    messages = [{"role": "user", "content": "Reply in JSON please"}]
    body = chat(client, messages=messages, response_format={"type": "json_object"}).json()
    assert isinstance(json.loads(body["choices"][0]["message"]["content"]), dict)


def test_tool_call_header_answers_with_one_tool_call(client: httpx.Client) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    headers = {"x-emulator-tool-call": "get_weather"}
    choice = chat(client, headers, tools=tools).json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function"
    assert call["function"] == {"name": "get_weather", "arguments": "{}"}

    streamed = chunks(stream(client, headers, tools=tools)[1])
    calls = [tc for c in streamed for tc in c["choices"][0]["delta"].get("tool_calls") or []]
    assert calls[0]["function"]["name"] == "get_weather"
    assert "".join(tc["function"]["arguments"] for tc in calls) == "{}"
    assert streamed[-1]["choices"][0]["finish_reason"] == "tool_calls"


# ---- streaming shape ----


def test_stream_starts_with_role_and_ends_with_done(client: httpx.Client) -> None:
    parsed = chunks(stream(client)[1])
    assert all(c["object"] == "chat.completion.chunk" for c in parsed)
    assert parsed[0]["choices"][0]["delta"]["role"] == "assistant"
    assert len({c["id"] for c in parsed}) == 1


def test_stream_sends_reasoning_before_content(client: httpx.Client) -> None:
    deltas = [c["choices"][0]["delta"] for c in chunks(stream(client)[1])]
    kinds = [
        "reasoning" if d.get("reasoning_content") else "content"
        for d in deltas
        if d.get("reasoning_content") or d.get("content")
    ]
    assert kinds == ["reasoning"] * 8 + ["content"] * 24


def test_stream_usage_rides_on_the_last_chunk(client: httpx.Client) -> None:
    parsed = chunks(stream(client, stream_options={"include_usage": True})[1])
    last = parsed[-1]
    assert last["choices"][0]["finish_reason"] == "stop"
    assert last["usage"]["completion_tokens"] == 32
    assert all(c.get("usage") is None for c in parsed[:-1])


def test_separate_usage_mode_adds_an_empty_choices_chunk(client: httpx.Client, emulator: EmulatorServer) -> None:
    emulator.configure(usage_mode="separate")
    parsed = chunks(stream(client, stream_options={"include_usage": True})[1])
    assert parsed[-1]["choices"] == []
    assert parsed[-1]["usage"]["completion_tokens"] == 32
    assert parsed[-2]["choices"][0]["finish_reason"] == "stop"
    assert "usage" not in parsed[-2]
    without = chunks(stream(client)[1])
    assert all("usage" not in c for c in without)


def test_stream_sends_keepalive_comments_before_the_first_token(client: httpx.Client) -> None:
    payload = {"model": "deepseek-flash", "messages": HELLO, "stream": True}
    headers = {"x-emulator-ttft-ms": "300", "x-emulator-keepalive-ms": "50"}
    with client.stream("POST", "/chat/completions", json=payload, headers=headers) as response:
        lines = [line for line in response.iter_lines() if line]
    first_data = next(i for i, line in enumerate(lines) if line.startswith("data: "))
    assert first_data >= 1
    assert set(lines[:first_data]) == {": keep-alive"}
    assert not any(line.startswith(":") for line in lines[first_data:])
    assert lines[-1] == "data: [DONE]"


def test_non_stream_blank_line_keepalives_still_parse_as_json(client: httpx.Client, emulator: EmulatorServer) -> None:
    emulator.configure(ttft_ms=300, keepalive_ms=50)
    response = chat(client)
    assert response.status_code == 200
    assert response.text.startswith("\n")
    assert response.json()["choices"][0]["message"]["content"]


def test_tps_paces_the_tokens(client: httpx.Client) -> None:
    headers = {"x-emulator-tps": "50", "x-emulator-tokens": "6"}
    started = time.monotonic()
    stream(client, headers, thinking={"type": "disabled"})
    assert time.monotonic() - started >= 5 / 50 * 0.9  # 6 tokens: 5 gaps of 20 ms


# ---- validation ----


@pytest.mark.parametrize("model", ["deepseek-chat", "deepseek-reasoner", "gpt-4o"])
def test_unknown_or_retired_model_is_400(client: httpx.Client, model: str) -> None:
    error = assert_deepseek_error(chat(client, model=model), 400)
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize("body", [{"model": "deepseek-flash"}, {"model": "deepseek-flash", "messages": []}])
def test_missing_or_empty_messages_is_400(client: httpx.Client, body: dict[str, Any]) -> None:
    assert_deepseek_error(client.post("/chat/completions", json=body), 400)


def test_malformed_json_is_400(client: httpx.Client) -> None:
    response = client.post(
        "/chat/completions",
        content=b'{"model": "deepseek-flash", "messages": [',
        headers={"content-type": "application/json"},
    )
    assert_deepseek_error(response, 400)


def test_wrongly_typed_body_is_422(client: httpx.Client) -> None:
    assert_deepseek_error(chat(client, messages="hello"), 422)
    assert_deepseek_error(client.post("/chat/completions", json=["not", "an", "object"]), 422)


def test_json_mode_without_the_word_json_is_400(client: httpx.Client) -> None:
    error = assert_deepseek_error(chat(client, response_format={"type": "json_object"}), 400)
    assert "json" in error["message"]


def test_tool_call_turn_without_reasoning_content_is_400_when_thinking(client: httpx.Client) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    assert_deepseek_error(chat(client, messages=messages), 400)
    assert chat(client, messages=messages, thinking={"type": "disabled"}).status_code == 200
    messages[1]["reasoning_content"] = "I should call f"
    assert chat(client, messages=messages).status_code == 200


@pytest.mark.parametrize(
    "extra",
    [{"thinking": {"type": "sometimes"}}, {"reasoning_effort": "extreme"}, {"max_tokens": 0}],
)
def test_bad_thinking_effort_or_max_tokens_is_400(client: httpx.Client, extra: dict[str, Any]) -> None:
    assert_deepseek_error(chat(client, **extra), 400)


@pytest.mark.parametrize("effort", ["low", "medium", "high", "max"])
def test_reasoning_effort_levels_are_accepted(client: httpx.Client, effort: str) -> None:
    assert chat(client, reasoning_effort=effort).status_code == 200


# ---- prefix cache ----


def test_prefix_cache_hit_tokens_grow_as_a_conversation_is_extended(client: httpx.Client) -> None:
    system = {"role": "system", "content": "You are a careful assistant. " * 40}  # ~1160 chars
    conversation: list[dict[str, Any]] = [system]
    hits = []
    for turn in range(3):
        conversation.append({"role": "user", "content": f"question {turn}: " + "tell me more " * 30})
        usage = chat(client, messages=conversation).json()["usage"]
        assert usage["prompt_cache_hit_tokens"] % 64 == 0
        assert usage["prompt_cache_hit_tokens"] + usage["prompt_cache_miss_tokens"] == usage["prompt_tokens"]
        hits.append(usage["prompt_cache_hit_tokens"])
        conversation.append({"role": "assistant", "content": "answer " * 50})
    assert hits[0] == 0
    assert 0 < hits[1] < hits[2]


def test_reset_empties_the_prefix_cache(client: httpx.Client, emulator: EmulatorServer) -> None:
    messages = [{"role": "user", "content": "long prompt " * 100}]
    chat(client, messages=messages)
    assert chat(client, messages=messages).json()["usage"]["prompt_cache_hit_tokens"] > 0
    emulator.reset()
    assert chat(client, messages=messages).json()["usage"]["prompt_cache_hit_tokens"] == 0


# ---- faults ----


@pytest.mark.parametrize(
    ("fault", "status", "error_type"),
    [
        ("400", 400, "invalid_request_error"),
        ("401", 401, "authentication_error"),
        ("402", 402, "unknown_error"),
        ("429", 429, "rate_limit_error"),
        ("500", 500, "api_error"),
        ("503", 503, "api_error"),
    ],
)
def test_status_faults_answer_in_deepseeks_error_shape(
    client: httpx.Client, fault: str, status: int, error_type: str
) -> None:
    for streaming in (False, True):
        response = chat(client, {"x-emulator-fault": fault}, stream=streaming)
        assert assert_deepseek_error(response, status)["type"] == error_type


def test_429_carries_retry_after(client: httpx.Client, emulator: EmulatorServer) -> None:
    assert chat(client, {"x-emulator-fault": "429"}).headers["retry-after"] == "1"
    emulator.configure(retry_after=7)
    assert chat(client, {"x-emulator-fault": "429"}).headers["retry-after"] == "7"


def test_reset_fault_drops_a_stream_mid_way(client: httpx.Client) -> None:
    payload = {"model": "deepseek-flash", "messages": HELLO, "stream": True}
    received: list[str] = []
    with (
        pytest.raises(httpx.RemoteProtocolError),
        client.stream("POST", "/chat/completions", json=payload, headers={"x-emulator-fault": "reset"}) as response,
    ):
        assert response.status_code == 200
        received.extend(line for line in response.iter_lines() if line)
    assert "data: [DONE]" not in received


def test_reset_fault_drops_a_non_stream_body_mid_way(client: httpx.Client) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        chat(client, {"x-emulator-fault": "reset"})


def test_reset_fault_drops_a_paced_stream_too(client: httpx.Client) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        stream(client, {"x-emulator-fault": "reset", "x-emulator-ttft-ms": "20", "x-emulator-tps": "1000"})


def test_malformed_fault_sends_one_invalid_json_chunk(client: httpx.Client) -> None:
    _, data = stream(client, {"x-emulator-fault": "malformed"})
    assert data[-1] == "[DONE]"
    broken = []
    for item in data[:-1]:
        try:
            json.loads(item)
        except ValueError:
            broken.append(item)
    assert len(broken) == 1


def test_malformed_fault_gives_a_non_stream_body_that_is_not_json(client: httpx.Client) -> None:
    response = chat(client, {"x-emulator-fault": "malformed"})
    assert response.status_code == 200
    with pytest.raises(ValueError):
        response.json()


def test_blank_fault_returns_empty_content(client: httpx.Client) -> None:
    messages = [{"role": "user", "content": "answer in json"}]
    body = chat(client, {"x-emulator-fault": "blank"}, messages=messages, response_format={"type": "json_object"})
    assert body.json()["choices"][0]["message"]["content"] == ""
    deltas = [c["choices"][0]["delta"] for c in chunks(stream(client, {"x-emulator-fault": "blank"})[1])]
    assert "".join(d.get("content") or "" for d in deltas) == ""


def test_invalid_json_fault_answers_prose_in_json_mode_streamed_or_not(client: httpx.Client) -> None:
    messages = [{"role": "user", "content": "answer in json"}]
    json_mode = {"response_format": {"type": "json_object"}}
    body = chat(client, {"x-emulator-fault": "invalid_json"}, messages=messages, **json_mode)
    assert body.status_code == 200
    content = content_of(body)
    assert content.startswith("Certainly!")
    with pytest.raises(ValueError):
        json.loads(content)
    deltas = [c["choices"][0]["delta"] for c in chunks(stream(client, {"x-emulator-fault": "invalid_json"})[1])]
    assert "".join(d.get("content") or "" for d in deltas).startswith("Certainly!")


def test_content_faults_follow_the_fault_plan_one_call_at_a_time(
    client: httpx.Client, emulator: EmulatorServer
) -> None:
    messages = [{"role": "user", "content": "answer in json"}]
    json_mode = {"response_format": {"type": "json_object"}}
    emulator.configure(fault="blank", fault_count=1)
    assert content_of(chat(client, messages=messages, **json_mode)) == ""
    assert json.loads(content_of(chat(client, messages=messages, **json_mode)))
    emulator.configure(fault="invalid_json", fault_count=2)
    answers = [content_of(chat(client, messages=messages, **json_mode)) for _ in range(3)]
    assert [a.startswith("Certainly!") for a in answers] == [True, True, False]
    assert emulator.stats()["by_fault"] == {"blank": 1, "invalid_json": 2}


def test_json_mode_asked_for_a_verdict_answers_one_deterministically(client: httpx.Client) -> None:
    from seekless.rules import VERDICT_SYSTEM_PROMPT, ModelVerdict

    messages = [
        {"role": "system", "content": VERDICT_SYSTEM_PROMPT},
        {"role": "user", "content": 'Decide on this record, as json: {"amount": 150}'},
    ]
    first = content_of(chat(client, messages=messages, response_format={"type": "json_object"}))
    verdict = ModelVerdict.model_validate_json(first)
    assert verdict.decision in ("approve", "review", "deny") and 0.5 <= verdict.confidence < 1
    assert content_of(chat(client, messages=messages, response_format={"type": "json_object"})) == first
    other = [{"role": "user", "content": "answer in json"}]
    assert set(json.loads(content_of(chat(client, messages=other, response_format={"type": "json_object"})))) == {
        "answer"
    }


def test_hang_is_bounded_by_the_client_timeout(client: httpx.Client, emulator: EmulatorServer) -> None:
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        client.post(
            "/chat/completions",
            json={"model": "deepseek-flash", "messages": HELLO},
            headers={"x-emulator-fault": "hang"},
            timeout=httpx.Timeout(10, read=0.3),
        )
    assert time.monotonic() - started < 5
    assert emulator.stats()["by_fault"] == {"hang": 1}


def test_keepalive_forever_stream_sends_comments_and_never_a_token(client: httpx.Client) -> None:
    payload = {"model": "deepseek-flash", "messages": HELLO, "stream": True}
    headers = {"x-emulator-fault": "keepalive_forever", "x-emulator-keepalive-ms": "20"}
    seen: list[str] = []
    with client.stream("POST", "/chat/completions", json=payload, headers=headers) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line:
                seen.append(line)
            if len(seen) == 3:
                break
    assert seen == [": keep-alive"] * 3


def test_keepalive_forever_non_stream_sends_blank_lines(client: httpx.Client) -> None:
    payload = {"model": "deepseek-flash", "messages": HELLO}
    headers = {"x-emulator-fault": "keepalive_forever", "x-emulator-keepalive-ms": "20"}
    received = b""
    with client.stream("POST", "/chat/completions", json=payload, headers=headers) as response:
        assert response.status_code == 200
        for piece in response.iter_raw():
            received += piece
            if received.count(b"\n") >= 3:
                break
    assert received.strip() == b""


def test_unknown_fault_header_is_400(client: httpx.Client) -> None:
    assert_deepseek_error(chat(client, {"x-emulator-fault": "gremlins"}), 400)


def test_fault_count_fails_the_next_calls_then_recovers(client: httpx.Client, emulator: EmulatorServer) -> None:
    emulator.configure(fault="503", fault_count=2)
    assert [chat(client).status_code for _ in range(4)] == [503, 503, 200, 200]


def test_global_fault_without_count_or_rate_fails_every_call(client: httpx.Client, emulator: EmulatorServer) -> None:
    emulator.configure(fault="402")
    assert [chat(client).status_code for _ in range(3)] == [402, 402, 402]


def test_fault_rate_is_a_seeded_probability(client: httpx.Client, emulator: EmulatorServer) -> None:
    emulator.configure(fault="500", fault_rate=0.5, seed=1)
    first = [chat(client).status_code for _ in range(30)]
    emulator.configure(fault="500", fault_rate=0.5, seed=1)
    second = [chat(client).status_code for _ in range(30)]
    assert first == second
    assert set(first) == {200, 500}


def test_fault_rate_with_count_stops_after_count_faults(client: httpx.Client, emulator: EmulatorServer) -> None:
    emulator.configure(fault="429", fault_rate=0.5, fault_count=3, seed=2)
    statuses = [chat(client).status_code for _ in range(40)]
    assert statuses.count(429) == 3


# ---- stats and control ----


def test_stats_count_every_call_including_faulted_and_rejected(client: httpx.Client, emulator: EmulatorServer) -> None:
    chat(client)
    chat(client, {"x-emulator-fault": "500"})
    chat(client, {"x-emulator-fault": "blank"})
    chat(client, model="nope")
    client.post("/chat/completions", json={"model": "deepseek-flash", "messages": HELLO}, headers={"Authorization": ""})
    stats = emulator.stats()
    assert stats["calls"] == 5
    assert stats["by_fault"] == {"500": 1, "blank": 1}


def test_stats_keep_the_last_100_requests_without_authorization(client: httpx.Client, emulator: EmulatorServer) -> None:
    for index in range(105):
        chat(client, {"x-trace": str(index)})
    requests = emulator.stats()["requests"]
    assert len(requests) == 100
    assert requests[-1]["headers"]["x-trace"] == "104"
    assert requests[0]["headers"]["x-trace"] == "5"
    assert requests[-1]["body"]["messages"] == HELLO
    assert all("authorization" not in r["headers"] for r in requests)


def test_control_endpoints_configure_report_and_reset_over_http(client: httpx.Client) -> None:
    config = client.post("/_emulator/config", json={"tokens": 4, "fault": "500", "fault_count": 1}).json()
    assert (config["tokens"], config["fault"], config["fault_count"]) == (4, "500", 1)
    assert chat(client).status_code == 500
    assert len(content_of(chat(client)).split()) == 4
    stats = client.get("/_emulator/stats").json()
    assert (stats["calls"], stats["by_fault"]) == (2, {"500": 1})
    client.post("/_emulator/config", json={"fault": "503"})
    assert client.post("/_emulator/reset").status_code == 200
    stats = client.get("/_emulator/stats").json()
    assert (stats["calls"], stats["by_fault"], stats["requests"], stats["config"]["fault"]) == (0, {}, [], None)
    assert chat(client).status_code == 200


def test_config_rejects_unknown_keys_and_values(client: httpx.Client, emulator: EmulatorServer) -> None:
    assert client.post("/_emulator/config", json={"colour": "blue"}).status_code == 400
    assert client.post("/_emulator/config", json={"fault": "gremlins"}).status_code == 400
    assert client.post("/_emulator/config", json={"tps": -1}).status_code == 400
    with pytest.raises(ValueError):
        emulator.configure(usage_mode="sometimes")


# ---- serving ----


def test_server_serves_a_given_port(emulator: EmulatorServer) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with EmulatorServer(port=port, tokens=2) as other, httpx.Client(base_url=other.base_url, headers=AUTH) as http:
        assert other.base_url == f"http://127.0.0.1:{port}"
        assert len(content_of(chat(http)).split()) == 2


def test_command_line_prints_its_url_and_serves() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "seekless_local.emulator", "--port", "0", "--tokens", "3"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as process:
        try:
            assert process.stdout is not None
            first_line = process.stdout.readline()  # printed once the socket listens
            url = first_line.split(" on ", 1)[1].split()[0]
            with httpx.Client(base_url=url, headers=AUTH, timeout=20) as http:
                response = chat(http)
            assert len(content_of(response).split()) == 3
        finally:
            process.send_signal(signal.SIGINT)
            process.communicate(timeout=20)
