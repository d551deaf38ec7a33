"""The WebSocket chat protocol (docs/WEBSOCKET.md) against the running local stack, with the
`websockets` client: what a chat frontend sees."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from seekless_local.stack import LocalStack
from tests.contract.conftest import upstream_calls
from tests.contract.ws_client import TERMINAL, chat, receive, request_id, text_of, until


def until_terminal(socket: ClientConnection, rid: str, timeout: float = 15.0) -> list[dict[str, Any]]:
    return until(socket, rid, TERMINAL, timeout)


def test_a_chat_streams_start_deltas_and_one_done_in_seq_order(ws: ClientConnection, stack: LocalStack) -> None:
    rid = request_id()
    chat(ws, rid)
    frames = until_terminal(ws, rid)
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
    assert frames[0]["type"] == "start" and frames[-1]["type"] == "done"
    assert [f["type"] for f in frames].count("done") == 1
    assert frames[-1]["finish_reason"] == "stop" and frames[-1]["usage"]["completion_tokens"] > 0
    assert text_of(frames) and text_of(frames, "reasoning_content")  # kept apart
    assert upstream_calls(stack) == 1


def test_the_websocket_answer_matches_rest(ws: ClientConnection, stack: LocalStack, http: httpx.Client) -> None:
    rid = request_id()
    body = {
        "model": "deepseek-chat",
        "messages": [{"role": "user", "content": f"same question {rid}"}],
        "max_tokens": 40,
    }
    ws.send(json.dumps({"action": "chat", "request_id": rid, **body}))
    frames = until_terminal(ws, rid)
    rest = http.post("/v1/chat/completions", json=body).json()
    assert text_of(frames) == rest["choices"][0]["message"]["content"]


def test_cached_answer_replays_as_a_stream(ws: ClientConnection, stack: LocalStack) -> None:
    question = f"cache me {uuid.uuid4().hex}"
    first, second = request_id(), request_id()
    chat(ws, first, message=question, temperature=0)
    cold = until_terminal(ws, first)
    chat(ws, second, message=question, temperature=0)
    warm = until_terminal(ws, second)
    assert (cold[-1]["cache"], warm[-1]["cache"]) == ("miss", "hit")
    assert text_of(warm) == text_of(cold) and upstream_calls(stack) == 1


def test_a_session_continued_over_websocket_shows_in_rest(ws: ClientConnection, http: httpx.Client) -> None:
    session_id = http.post("/v1/sessions", json={}).json()["id"]
    rid = request_id()
    chat(ws, rid, session_id=session_id)
    frames = until_terminal(ws, rid)
    messages = http.get(f"/v1/sessions/{session_id}").json()["messages"]["data"]
    assert [(m["role"], m["content"]) for m in messages] == [("user", f"hello {rid}"), ("assistant", text_of(frames))]


def test_cancel_stops_within_a_second_with_done_cancelled(ws: ClientConnection, stack: LocalStack) -> None:
    stack.emulator.configure(tps=20, tokens=200)
    rid = request_id()
    chat(ws, rid)
    assert receive(ws)["type"] == "start"
    assert receive(ws)["type"] == "delta"
    sent = time.monotonic()
    ws.send(json.dumps({"action": "cancel", "request_id": rid}))
    frames = until_terminal(ws, rid)
    assert time.monotonic() - sent < 1.0
    assert frames[-1]["type"] == "done" and frames[-1]["finish_reason"] == "cancelled"


def test_resume_after_a_dropped_connection_replays_then_continues(stack: LocalStack) -> None:
    stack.emulator.configure(tps=50, tokens=60)
    rid = request_id()
    headers = {"Authorization": f"Bearer {stack.dev_api_key}"}
    with connect(stack.ws_url, additional_headers=headers) as first:
        chat(first, rid)
        seen = [receive(first), receive(first), receive(first)]  # start and two deltas
    with connect(stack.ws_url, additional_headers=headers) as second:
        second.send(json.dumps({"action": "resume", "request_id": rid, "after_seq": seen[-1]["seq"]}))
        rest = until_terminal(second, rid)
    frames = {f["seq"]: f for f in seen + rest}  # a resumed client ignores seqs it has seen
    assert sorted(frames) == list(range(1, max(frames) + 1))
    assert frames[max(frames)]["type"] == "done" and frames[max(frames)]["finish_reason"] == "stop"
    assert len(text_of(list(frames.values())).split()) >= 50


def test_ping_answers_pong(ws: ClientConnection) -> None:
    ws.send(json.dumps({"action": "ping"}))
    assert receive(ws) == {"type": "pong", "request_id": None, "seq": 0}


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("not json at all", "invalid_json"),
        (json.dumps({"action": "dance"}), "unknown_action"),
        (json.dumps({"action": "chat", "message": "no request id"}), "invalid_request"),
        (json.dumps({"action": "chat", "request_id": "r1"}), "invalid_request"),
        (json.dumps({"action": "chat", "request_id": "r1", "message": "x", "model": "gpt-9"}), "model_not_found"),
        (json.dumps({"action": "chat", "request_id": "r1", "message": "x", "max_tokens": 10**7}), "invalid_value"),
        (
            json.dumps({"action": "chat", "request_id": "r1", "message": "x", "session_id": "sess_nope"}),
            "session_not_found",
        ),
        (json.dumps({"action": "cancel", "request_id": "never-started"}), "unknown_request"),
        (json.dumps({"action": "resume", "request_id": "never-started", "after_seq": 0}), "unknown_request"),
    ],
)
def test_bad_input_gets_an_error_frame_and_the_connection_stays_open(
    ws: ClientConnection, stack: LocalStack, message: str, code: str
) -> None:
    ws.send(message)
    frame = receive(ws)
    assert frame["type"] == "error" and frame["code"] == code and frame["message"]
    ws.send(json.dumps({"action": "ping"}))
    assert receive(ws)["type"] == "pong"
    assert upstream_calls(stack) == 0


@pytest.mark.parametrize(("headers", "status"), [({}, 401), ({"Authorization": "Bearer sk-wrong"}, 403)])
def test_the_handshake_refuses_missing_or_wrong_credentials(stack: LocalStack, headers: dict, status: int) -> None:
    with pytest.raises(InvalidStatus) as refused, connect(stack.ws_url, additional_headers=headers):
        pass
    assert refused.value.response.status_code == status


def test_a_browser_ticket_connects_once(stack: LocalStack, http: httpx.Client) -> None:
    ticket = http.post("/v1/ws-tickets").json()["ticket"]
    with connect(f"{stack.ws_url}/?ticket={ticket}") as socket:
        socket.send(json.dumps({"action": "ping"}))
        assert receive(socket)["type"] == "pong"
    with pytest.raises(InvalidStatus) as refused, connect(f"{stack.ws_url}/?ticket={ticket}"):
        pass
    assert refused.value.response.status_code == 403


def test_another_tenant_cannot_cancel_or_resume(ws: ClientConnection, stack: LocalStack, new_tenant_key: Any) -> None:
    stack.emulator.configure(tps=20, tokens=40)
    rid = request_id()
    chat(ws, rid)
    with connect(stack.ws_url, additional_headers={"Authorization": f"Bearer {new_tenant_key('other')}"}) as other:
        other.send(json.dumps({"action": "cancel", "request_id": rid}))
        assert receive(other)["code"] == "unknown_request"
        other.send(json.dumps({"action": "resume", "request_id": rid, "after_seq": 0}))
        assert receive(other)["code"] == "unknown_request"
    assert until_terminal(ws, rid)[-1]["finish_reason"] == "stop"
