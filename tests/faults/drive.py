"""Driving the stack as its users do, and telling what each request came to: an answer, a structured
error, something unhandled, or nothing at all."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from seekless_local.stack import LocalStack
from tests.contract.ws_client import TERMINAL

MODEL = "deepseek-flash"
HTTP_TIMEOUT = 30.0  # far past every deadline: a client that waits this long got no answer
_NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
SUCCEEDED, STRUCTURED, UNHANDLED, LOST = "succeeded", "structured", "unhandled", "lost"


@dataclass
class Outcome:
    kind: str  # SUCCEEDED | STRUCTURED | UNHANDLED | LOST
    status: int | None = None
    code: str | None = None
    cache: str | None = None
    content: str = ""
    elapsed: float = 0.0
    detail: str = ""


def http_client(stack: LocalStack) -> httpx.Client:
    return httpx.Client(
        base_url=stack.rest_url,
        headers={"Authorization": f"Bearer {stack.dev_api_key}"},
        timeout=HTTP_TIMEOUT,
        transport=httpx.HTTPTransport(socket_options=_NODELAY),
    )


def question(text: str = "Tell me something") -> str:
    """A prompt no other request sends, so no answer comes from another request's cache entry."""
    return f"{text} ({uuid.uuid4().hex})"


def chat_body(content: str, *, stream: bool = False, session_id: str | None = None, **extra: Any) -> dict[str, Any]:
    # temperature 0: cached by default, so "was a partial answer cached?" has an answer
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "temperature": 0,
        "max_tokens": 64,
        "stream": stream,
        **extra,
    }
    if session_id is not None:
        body["session_id"] = session_id
    return body


def openai_error(body: Any) -> dict[str, Any] | None:
    """The ``error`` object when ``body`` is in OpenAI's error schema."""
    if not isinstance(body, dict) or set(body) != {"error"} or not isinstance(body["error"], dict):
        return None
    error = body["error"]
    if not {"message", "type", "param", "code"} <= set(error):
        return None
    if not (isinstance(error["message"], str) and error["message"] and isinstance(error["type"], str)):
        return None
    return error


def _error_outcome(response: httpx.Response, raw: bytes, elapsed: float) -> Outcome:
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    error = openai_error(body)
    if error is None:
        return Outcome(
            UNHANDLED, response.status_code, elapsed=elapsed, detail=f"{response.status_code}: {raw[:200]!r}"
        )
    return Outcome(STRUCTURED, response.status_code, code=error["code"] or error["type"], elapsed=elapsed)


def rest_chat(http: httpx.Client, body: dict[str, Any], headers: dict[str, str] | None = None) -> Outcome:
    """POST /v1/chat/completions, streamed or not, and what it came to."""
    started = time.monotonic()
    try:
        if body.get("stream"):
            return _stream(http, body, headers or {}, started)
        response = http.post("/v1/chat/completions", json=body, headers=headers)
    except httpx.TimeoutException as error:
        return Outcome(LOST, elapsed=time.monotonic() - started, detail=f"no answer: {error!r}")
    except httpx.TransportError as error:
        return Outcome(UNHANDLED, elapsed=time.monotonic() - started, detail=f"dropped connection: {error!r}")
    elapsed = time.monotonic() - started
    cache = response.headers.get("x-seekless-cache")
    if response.status_code != 200:
        outcome = _error_outcome(response, response.content, elapsed)
        outcome.cache = cache
        return outcome
    try:
        content = response.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return Outcome(UNHANDLED, 200, elapsed=elapsed, detail=f"200 without an answer: {response.text[:200]}")
    if not content:
        return Outcome(UNHANDLED, 200, elapsed=elapsed, detail="200 with empty content")
    return Outcome(SUCCEEDED, 200, cache=cache, content=content, elapsed=elapsed)


def _stream(http: httpx.Client, body: dict[str, Any], headers: dict[str, str], started: float) -> Outcome:
    with http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response:
        cache = response.headers.get("x-seekless-cache")
        if response.status_code != 200:
            outcome = _error_outcome(response, response.read(), time.monotonic() - started)
            outcome.cache = cache
            return outcome
        content: list[str] = []
        finish = None
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line.removeprefix("data: ")
            elapsed = time.monotonic() - started
            if data == "[DONE]":
                if finish is None:
                    return Outcome(UNHANDLED, 200, elapsed=elapsed, detail="[DONE] without a finish_reason")
                return Outcome(SUCCEEDED, 200, cache=cache, content="".join(content), elapsed=elapsed)
            event = json.loads(data)
            if "error" in event:
                error = openai_error(event)
                if error is None:
                    return Outcome(UNHANDLED, 200, elapsed=elapsed, detail=f"malformed error event: {data[:200]}")
                return Outcome(STRUCTURED, 200, code=error["code"] or error["type"], cache=cache, elapsed=elapsed)
            for choice in event.get("choices") or []:
                content.append(choice.get("delta", {}).get("content") or "")
                finish = choice.get("finish_reason") or finish
    return Outcome(UNHANDLED, 200, elapsed=time.monotonic() - started, detail="stream ended without [DONE] or an error")


def new_session(http: httpx.Client) -> str:
    response = http.post("/v1/sessions", json={})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def session_turns(http: httpx.Client, session_id: str) -> list[dict[str, Any]]:
    """The session's messages, oldest first."""
    response = http.get(f"/v1/sessions/{session_id}")
    assert response.status_code == 200, response.text
    return list(response.json()["messages"]["data"])


# -- WebSocket ------------------------------------------------------------------------------------


@dataclass
class WsRequest:
    rid: str
    sent_at: float
    frames: list[dict[str, Any]] = field(default_factory=list)
    ended_at: float | None = None

    @property
    def terminals(self) -> list[dict[str, Any]]:
        return [f for f in self.frames if f.get("type") in TERMINAL]


class WsChats:
    """One WebSocket connection, many chats: frames sorted by request id as they arrive."""

    def __init__(self, stack: LocalStack) -> None:
        self._connection = connect(stack.ws_url, additional_headers={"Authorization": f"Bearer {stack.dev_api_key}"})
        self.socket: ClientConnection = self._connection
        self.requests: dict[str, WsRequest] = {}
        self.orphans: list[Any] = []  # frames of no request: API Gateway's errors, route errors with no id

    def __enter__(self) -> WsChats:
        self.socket = self._connection.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._connection.__exit__(*exc)

    def chat(self, content: str, *, session_id: str | None = None, **fields: Any) -> str:
        rid = f"fault-{uuid.uuid4().hex[:12]}"
        action: dict[str, Any] = {"action": "chat", "request_id": rid, "message": content, "temperature": 0}
        action.update({"max_tokens": 64, **fields})
        if session_id is not None:
            action["session_id"] = session_id
        self.requests[rid] = WsRequest(rid, time.monotonic())
        self.socket.send(json.dumps(action))
        return rid

    def _take(self, frame: Any) -> None:
        request = self.requests.get(frame.get("request_id")) if isinstance(frame, dict) else None
        if request is None:
            self.orphans.append(frame)
            return
        request.frames.append(frame)
        if frame.get("type") in TERMINAL and request.ended_at is None:
            request.ended_at = time.monotonic()

    def wait(self, rids: Iterable[str], timeout: float) -> None:
        """Receive until each of ``rids`` has a terminal frame, or ``timeout`` seconds pass."""
        waiting = set(rids)
        deadline = time.monotonic() + timeout
        while any(not self.requests[r].terminals for r in waiting):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                self._take(json.loads(self.socket.recv(timeout=left)))
            except TimeoutError:
                return
            except ConnectionClosed:
                return

    def settle(self) -> None:
        """Everything already posted to this connection: a ping's pong comes after it."""
        self.socket.send(json.dumps({"action": "ping"}))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            frame = json.loads(self.socket.recv(timeout=max(0.1, deadline - time.monotonic())))
            if isinstance(frame, dict) and frame.get("type") == "pong":
                return
            self._take(frame)
        raise AssertionError("no pong within 10 s")

    def doubled(self) -> list[str]:
        """Requests that got more than one terminal frame (call after ``settle``)."""
        return [rid for rid, request in self.requests.items() if len(request.terminals) > 1]

    def outcome(self, rid: str) -> Outcome:
        request = self.requests[rid]
        ends = request.terminals
        elapsed = (request.ended_at or time.monotonic()) - request.sent_at
        if len(ends) != 1:
            types = [f.get("type") for f in request.frames]
            return Outcome(
                UNHANDLED,
                elapsed=elapsed,
                detail=f"{rid}: {len(ends)} terminal frames; {types}; orphans {self.orphans[-3:]}",
            )
        end = ends[0]
        if end["type"] == "error":
            if not (end.get("code") and end.get("message")):
                return Outcome(UNHANDLED, elapsed=elapsed, detail=f"{rid}: error frame without code/message {end}")
            return Outcome(STRUCTURED, code=end["code"], elapsed=elapsed)
        content = "".join(f.get("content") or "" for f in request.frames if f.get("type") == "delta")
        if end.get("finish_reason") not in ("stop", "length") or not content:
            return Outcome(UNHANDLED, elapsed=elapsed, detail=f"{rid}: done without an answer {end}")
        return Outcome(SUCCEEDED, cache=end.get("cache"), content=content, elapsed=elapsed)
