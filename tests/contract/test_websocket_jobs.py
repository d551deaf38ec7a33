"""WebSocket chats as jobs (docs/WEBSOCKET.md, "Long chats run as jobs") against a local stack with a
job worker: ``queued``, then the worker's start/delta/done on the same request, cancel, resume, and the
job record and session seen over REST."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from seekless_local.stack import LocalStack
from tests.contract import ws_client
from tests.contract.ws_client import TERMINAL, chat, text_of
from tests.stacks import emulated_stack

TIMEOUT = 30.0


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    """This module's own stack, with a worker on the jobs queue (overrides the package's stack)."""
    with emulated_stack(worker=True) as running:
        assert running.worker is not None
        yield running


def receive(socket: ClientConnection, timeout: float = TIMEOUT) -> dict[str, Any]:
    return ws_client.receive(socket, timeout)


def until(socket: ClientConnection, rid: str, types: tuple[str, ...], timeout: float = TIMEOUT) -> list[dict[str, Any]]:
    return ws_client.until(socket, rid, types, timeout)


def request_id() -> str:
    return ws_client.request_id("job")


def job_when(http: httpx.Client, job_id: str, status: str, timeout: float = TIMEOUT) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = http.get(f"/v1/jobs/{job_id}").json()
        if body.get("status") == status or time.monotonic() > deadline:
            assert body.get("status") == status, body
            return body
        time.sleep(0.1)


def test_a_job_chat_is_queued_then_streamed_by_the_worker(
    ws: ClientConnection, http: httpx.Client, stack: LocalStack
) -> None:
    stack.emulator.configure(tps=200, tokens=30)
    rid = request_id()
    chat(ws, rid, mode="job")
    frames = until(ws, rid, TERMINAL)
    assert frames[0]["type"] == "queued" and frames[0]["seq"] == 1 and frames[0]["job_id"].startswith("job_")
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
    assert frames[1]["type"] == "start" and [f["type"] for f in frames].count("done") == 1
    assert frames[-1]["type"] == "done" and frames[-1]["finish_reason"] == "stop"
    body = job_when(http, frames[0]["job_id"], "succeeded")
    assert body["result"]["choices"][0]["message"]["content"] == text_of(frames) != ""


def test_a_large_max_tokens_runs_as_a_job(ws: ClientConnection, stack: LocalStack) -> None:
    stack.emulator.configure(tps=200, tokens=10)
    rid = request_id()
    chat(ws, rid, max_tokens=16_384)
    frames = until(ws, rid, TERMINAL)
    assert frames[0]["type"] == "queued" and frames[-1]["type"] == "done"


def test_cancel_while_running_ends_the_stream_and_cancels_the_job(
    ws: ClientConnection, http: httpx.Client, stack: LocalStack
) -> None:
    stack.emulator.configure(tps=20, tokens=400)
    rid = request_id()
    chat(ws, rid, mode="job")
    started = until(ws, rid, ("delta",))
    job_id = started[0]["job_id"]
    ws.send(json.dumps({"action": "cancel", "request_id": rid}))
    frames = until(ws, rid, TERMINAL, timeout=5)
    assert frames[-1]["type"] == "done" and frames[-1]["finish_reason"] == "cancelled"
    seqs = [f["seq"] for f in started + frames]
    assert seqs == list(range(1, len(seqs) + 1))
    job_when(http, job_id, "cancelled", timeout=10)


def test_resume_after_a_dropped_connection(stack: LocalStack) -> None:
    stack.emulator.configure(tps=40, tokens=60)
    rid = request_id()
    headers = {"Authorization": f"Bearer {stack.dev_api_key}"}
    with connect(stack.ws_url, additional_headers=headers) as first:
        chat(first, rid, mode="job")
        assert receive(first)["type"] == "queued"
    with connect(stack.ws_url, additional_headers=headers) as second:
        second.send(json.dumps({"action": "resume", "request_id": rid, "after_seq": 1}))
        frames = until(second, rid, TERMINAL)
    by_seq = {f["seq"]: f for f in frames}  # a resumed client may see a frame twice
    assert sorted(by_seq) == list(range(2, max(by_seq) + 1))
    assert by_seq[2]["type"] == "start" and by_seq[max(by_seq)]["type"] == "done"
    assert [f["type"] for f in by_seq.values()].count("done") == 1


def test_a_job_naming_a_session_appends_once(ws: ClientConnection, http: httpx.Client, stack: LocalStack) -> None:
    stack.emulator.configure(tps=200, tokens=20)
    session_id = http.post("/v1/sessions", json={}).json()["id"]
    rid = request_id()
    chat(ws, rid, mode="job", session_id=session_id)
    frames = until(ws, rid, TERMINAL)
    job_when(http, frames[0]["job_id"], "succeeded")
    messages = http.get(f"/v1/sessions/{session_id}").json()["messages"]["data"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[0]["content"] == f"hello {rid}" and messages[1]["content"] == text_of(frames)
