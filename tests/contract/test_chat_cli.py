"""`seekless chat` against the running local stack: what a terminal user sees, compared with what a
plain WebSocket client receives for the same request (the emulator answers a conversation the same way
every time)."""

from __future__ import annotations

import io
import json
import os
import selectors
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection

from seekless_local import client_cli
from seekless_local.stack import LocalStack
from tests.contract.conftest import upstream_requests
from tests.contract.ws_client import request_id, text_of, until

ROOT = Path(__file__).resolve().parents[2]


def stack_options(stack: LocalStack, api_key: str | None = None) -> list[str]:
    return ["--url", stack.rest_url + "/v1", "--ws-url", stack.ws_url, "--api-key", api_key or stack.dev_api_key]


def chat(
    stack: LocalStack, capsys: pytest.CaptureFixture[str], *argv: str, api_key: str | None = None
) -> tuple[int, str, str]:
    code = client_cli.main(["chat", *argv, *stack_options(stack, api_key)])
    out, err = capsys.readouterr()
    return code, out, err


def raw_answer(ws: ClientConnection, **fields: Any) -> tuple[str, str]:
    """(content, reasoning) as a plain WebSocket client gets them for the same request."""
    rid = request_id("raw")
    ws.send(json.dumps({"action": "chat", "request_id": rid, **fields}))
    frames = until(ws, rid)
    assert frames[-1]["type"] == "done", frames[-1]
    return text_of(frames), text_of(frames, "reasoning_content")


def question() -> str:
    return f"Tell me about lighthouses ({uuid.uuid4().hex})"


def test_one_shot_streams_the_answer_to_stdout_and_the_reasoning_apart(
    stack: LocalStack, ws: ClientConnection, capsys: pytest.CaptureFixture[str]
) -> None:
    text = question()
    code, out, err = chat(stack, capsys, "-m", text)
    content, reasoning = raw_answer(ws, messages=[{"role": "user", "content": text}])
    assert code == 0 and content and reasoning
    assert out == content + "\n"
    assert err == f"[thinking]\n{reasoning}\n[/thinking]\n"


def test_a_model_that_does_not_think_shows_no_reasoning(stack: LocalStack, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = chat(stack, capsys, "-m", question(), "--model", "deepseek-chat")
    assert code == 0 and out.strip() and err == ""


def test_one_shot_json_prints_the_assembled_answer(
    stack: LocalStack, ws: ClientConnection, capsys: pytest.CaptureFixture[str]
) -> None:
    text = question()
    code, out, err = chat(stack, capsys, "-m", text, "--json", "--max-tokens", "200")
    answer = json.loads(out)
    content, reasoning = raw_answer(ws, messages=[{"role": "user", "content": text}], max_tokens=200)
    assert code == 0 and err == ""
    assert (answer["content"], answer["reasoning_content"], answer["finish_reason"]) == (content, reasoning, "stop")
    assert answer["usage"]["completion_tokens"] > 0
    assert upstream_requests(stack)[0]["body"]["max_tokens"] == 200


def test_piped_lines_are_one_conversation_the_client_keeps(
    stack: LocalStack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = question(), question()
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{first}\n{second}\n"))
    code, out, _ = chat(stack, capsys, "--system", "Be brief.")
    assert code == 0
    [one, two] = [request["body"]["messages"] for request in upstream_requests(stack)]
    assert [m["content"] for m in one] == ["Be brief.", first]
    assert [(m["role"], m["content"]) for m in two] == [
        ("system", "Be brief."),
        ("user", first),
        ("assistant", out.splitlines()[0]),
        ("user", second),
    ]
    assert len(out.splitlines()) == 2


def test_a_new_session_stores_every_turn_on_the_server(
    stack: LocalStack, http: httpx.Client, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = question(), question()
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{first}\n{second}\n"))
    code, out, err = chat(stack, capsys, "--new-session", "--no-reasoning")
    assert code == 0
    session_id = err.split()[1]
    stored = http.get(f"/v1/sessions/{session_id}").json()["messages"]["data"]
    answers = out.splitlines()
    assert [(m["role"], m["content"]) for m in stored] == [
        ("user", first),
        ("assistant", answers[0]),
        ("user", second),
        ("assistant", answers[1]),
    ]
    # The server holds the history: the second request sent only the new turn, yet upstream saw it all.
    assert len(upstream_requests(stack)[1]["body"]["messages"]) == 3


def test_an_unknown_model_prints_the_error_and_exits_1(stack: LocalStack, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = chat(stack, capsys, "-m", "hello", "--model", "deepseek-nonexistent")
    assert code == 1 and out == ""
    assert err.startswith("error: ") and "deepseek-nonexistent" in err
    assert upstream_requests(stack) == []


def test_a_wrong_key_is_refused_at_the_handshake(stack: LocalStack, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = chat(stack, capsys, "-m", "hello", api_key="sk-seekless-wrong")
    assert code == 1 and "refused the connection (HTTP 403)" in err


def read_until(stream: Any, wanted: bytes, timeout: float = 15.0) -> bytes:
    """What ``stream`` (a pipe) has given once it contains ``wanted``."""
    selector, seen = selectors.DefaultSelector(), b""
    selector.register(stream, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    try:
        while wanted not in seen:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {wanted!r} in {seen!r}"
            if selector.select(remaining):
                chunk = os.read(stream.fileno(), 65536)
                assert chunk, f"the stream ended without {wanted!r}: {seen!r}"
                seen += chunk
    finally:
        selector.close()
    return seen


def test_ctrl_c_cancels_the_answer_and_the_conversation_goes_on(stack: LocalStack, ws: ClientConnection) -> None:
    stack.emulator.configure(tps=20, tokens=400)  # twenty seconds of answer unless cancelled
    script = "import sys; from seekless_local.client_cli import main; sys.exit(main(sys.argv[1:]))"
    first, second = question(), question()
    with subprocess.Popen(
        [sys.executable, "-c", script, "chat", "--no-reasoning", *stack_options(stack)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    ) as process:
        try:
            assert process.stdin is not None and process.stdout is not None
            process.stdin.write(f"{first}\n".encode())
            process.stdin.flush()
            read_until(process.stdout, b" ")  # the answer is streaming
            started = time.monotonic()
            process.send_signal(signal.SIGINT)
            read_until(process.stderr, b"[cancelled]")
            assert time.monotonic() - started < 2.0
            stack.emulator.reset(settings=True)
            out, err = process.communicate(f"{second}\n".encode(), timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 0, err
    # The second turn went upstream alone: the cancelled one is not part of the conversation.
    [request] = upstream_requests(stack)
    assert request["body"]["messages"] == [{"role": "user", "content": second}]
    content, _ = raw_answer(ws, messages=[{"role": "user", "content": second}])
    assert out.decode().endswith(content + "\n")
