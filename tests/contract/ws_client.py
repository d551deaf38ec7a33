"""A WebSocket chat client for the contract tests: the frames of one request, in order, by request id."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from websockets.sync.client import ClientConnection

TERMINAL = ("done", "error")


def request_id(prefix: str = "req") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def receive(socket: ClientConnection, timeout: float = 10.0) -> dict[str, Any]:
    return json.loads(socket.recv(timeout=timeout))


def until(
    socket: ClientConnection, rid: str, types: tuple[str, ...] = TERMINAL, timeout: float = 15.0
) -> list[dict[str, Any]]:
    """Frames of ``rid`` up to and including the first of ``types`` (by default its terminal frame)."""
    deadline = time.monotonic() + timeout
    frames: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        frame = receive(socket, timeout=max(0.1, deadline - time.monotonic()))
        if frame.get("request_id") == rid:
            frames.append(frame)
            if frame["type"] in types:
                return frames
    raise AssertionError(f"no {types} frame for {rid}; got {frames}")


def chat(socket: ClientConnection, rid: str, **fields: Any) -> None:
    socket.send(json.dumps({"action": "chat", "request_id": rid, "message": f"hello {rid}", **fields}))


def text_of(frames: list[dict[str, Any]], field: str = "content") -> str:
    return "".join(f.get(field, "") for f in frames if f["type"] == "delta")
