"""`seekless batch` against an httpx.MockTransport, and `seekless chat`'s frame handling against a
scripted WebSocket link: what the user sees, the files they get, and the exit codes."""

from __future__ import annotations

import io
import json
import signal
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosedError

from seekless_local import client_cli
from seekless_local.client_cli import Answer, ApiError, Conversation, Progress, Renderer

URL = "http://api.test/v1"
KEY = "sk-test-key"
UPLOAD_URL = "https://bucket.s3.test/batches/input/dev/batch_1.jsonl?X-Amz-Signature=abc"
OUTPUT = b'{"custom_id": "a", "response": {}}\n{"custom_id": "b", "response": {}}\n'
ERRORS = b'{"custom_id": "c", "error": {"message": "bad"}}\n'


@pytest.fixture(autouse=True)
def _no_client_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SEEKLESS_URL", "SEEKLESS_WS_URL", "SEEKLESS_API_KEY"):
        monkeypatch.delenv(name, raising=False)


# -- a batch API ------------------------------------------------------------------------------------


def batch(status: str, *, total: int = 3, completed: int = 0, failed: int = 0, **fields: Any) -> dict[str, Any]:
    ended = status in client_cli.TERMINAL_STATUSES
    return {
        "id": "batch_1",
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "input_file_id": "batches/input/dev/batch_1.jsonl",
        "completion_window": "24h",
        "status": status,
        "output_file_id": "batches/output/dev/batch_1.jsonl" if ended else None,
        "error_file_id": None,
        "created_at": 1_760_000_000,
        "request_counts": {"total": total, "completed": completed, "failed": failed},
        "metadata": {},
        "errors": None,
        "output_url": "https://bucket.s3.test/output?sig=1" if ended and status == "completed" else None,
        "error_url": "https://bucket.s3.test/errors?sig=2" if ended and failed else None,
        **fields,
    }


def api_error(status: int, message: str, code: str | None = None) -> httpx.Response:
    return httpx.Response(
        status, json={"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
    )


class BatchApi:
    """The batch routes as the spec has them: GET answers walk through ``states``, then stay on the last."""

    def __init__(self, *states: dict[str, Any], chunks: tuple[bytes, ...] = (OUTPUT,)) -> None:
        self.states = deque(states)
        self.chunks = chunks
        self.requests: list[httpx.Request] = []
        self.uploaded = b""
        self.upload_buffered: bool | None = None
        self.on_get: Callable[[int], None] = lambda _: None
        self.on_chunk: Callable[[int], None] = lambda _: None

    def transport(self) -> httpx.MockTransport:
        api = self

        class Transport(httpx.MockTransport):
            def handle_request(self, request: httpx.Request) -> httpx.Response:
                if request.method == "PUT":  # before MockTransport reads the body into memory
                    api.upload_buffered = isinstance(request.stream, httpx.ByteStream)
                return super().handle_request(request)

        return Transport(self)

    def sent(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method and r.url.path == path]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        route = (request.method, request.url.host, request.url.path)
        if request.url.host == "bucket.s3.test":
            return self._s3(request)
        assert request.headers["authorization"] == f"Bearer {KEY}", route
        if route == ("POST", "api.test", "/v1/batches/uploads"):
            return httpx.Response(
                201,
                json={
                    "id": "batch_1",
                    "object": "batch.upload",
                    "status": "awaiting_upload",
                    "upload_url": UPLOAD_URL,
                    "upload_method": "PUT",
                    "upload_headers": {"Content-Type": "application/jsonl"},
                    "input_file_id": "batches/input/dev/batch_1.jsonl",
                    "expires_at": 1_760_003_600,
                },
            )
        if route == ("GET", "api.test", "/v1/batches/batch_1"):
            self.on_get(len(self.sent("GET", "/v1/batches/batch_1")))
            return httpx.Response(200, json=self.states.popleft() if len(self.states) > 1 else self.states[0])
        if route == ("GET", "api.test", "/v1/batches"):
            return httpx.Response(
                200,
                json={"object": "list", "data": list(self.states), "first_id": "batch_1", "last_id": "batch_1",
                      "has_more": True},
            )  # fmt: skip
        if route == ("POST", "api.test", "/v1/batches/batch_1/cancel"):
            return httpx.Response(200, json=batch("cancelling"))
        return api_error(404, f"Unknown batch route {route}", "not_found")

    def _s3(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            self.uploaded = request.read()
            return httpx.Response(200)
        if request.url.path == "/errors":
            return httpx.Response(200, content=ERRORS)

        def body() -> Iterator[bytes]:
            for number, chunk in enumerate(self.chunks):
                self.on_chunk(number)
                yield chunk

        return httpx.Response(200, content=body())


def run(api: BatchApi, *argv: str) -> int:
    return client_cli.main([*argv, "--url", URL, "--api-key", KEY], transport=api.transport())


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "questions.jsonl"
    path.write_bytes(b'{"custom_id": "a"}\n{"custom_id": "b"}\n{"custom_id": "c"}\n')
    return path


# -- batch submit ----------------------------------------------------------------------------------


def test_submit_wait_follows_the_batch_to_the_end_and_downloads_its_files_beside_the_input(
    source: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api = BatchApi(
        batch("validating", total=0),
        batch("in_progress", completed=1),
        batch("completed", completed=2, failed=1),
    )
    assert run(api, "batch", "submit", str(source), "--wait", "--poll", "0") == 0

    assert api.uploaded == source.read_bytes()
    output = source.parent / "questions.batch_1.output.jsonl"
    errors = source.parent / "questions.batch_1.errors.jsonl"
    assert output.read_bytes() == OUTPUT and errors.read_bytes() == ERRORS
    captured = capsys.readouterr()
    progress = captured.err.splitlines()
    assert [line.split()[1] for line in progress] == ["validating", "in_progress", "completed"]
    assert "1/3" in progress[1] and "3/3 (1 failed)" in progress[2]
    assert "2 of 3 requests completed, 1 failed" in captured.out
    assert f"output: {output}" in captured.out and f"errors: {errors}" in captured.out


def test_the_upload_streams_the_file_to_the_presigned_url_with_exactly_its_headers(source: Path) -> None:
    api = BatchApi(batch("validating", total=0))
    assert run(api, "batch", "submit", str(source), "--metadata", "team=search", "--metadata", "run=7") == 0

    [create] = api.sent("POST", "/v1/batches/uploads")
    assert json.loads(create.content) == {"filename": "questions.jsonl", "metadata": {"team": "search", "run": "7"}}
    [put] = [r for r in api.requests if r.method == "PUT"]
    assert str(put.url) == UPLOAD_URL
    assert put.headers["content-type"] == "application/jsonl"
    assert "authorization" not in put.headers  # S3 refuses a second kind of authentication
    # A length S3 can check, from the file on disk rather than from a copy of it in memory.
    assert put.headers["content-length"] == str(source.stat().st_size)
    assert "transfer-encoding" not in put.headers
    assert api.upload_buffered is False


def test_submit_without_wait_prints_the_id_and_how_to_follow_it(
    source: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api = BatchApi(batch("validating", total=0))
    assert run(api, "batch", "submit", str(source)) == 0
    out = capsys.readouterr().out
    assert "batch_1 uploaded (validating)" in out and "seekless batch status batch_1" in out
    assert not list(source.parent.glob("*.output.jsonl"))


def test_out_puts_the_files_in_that_folder_creating_it(source: Path, tmp_path: Path) -> None:
    api = BatchApi(batch("completed", completed=3))
    out = tmp_path / "results" / "today"
    assert run(api, "batch", "submit", str(source), "--wait", "--poll", "0", "--out", str(out)) == 0
    assert (out / "questions.batch_1.output.jsonl").read_bytes() == OUTPUT
    assert not (source.parent / "questions.batch_1.output.jsonl").exists()


def test_a_download_is_written_through_a_part_file_as_it_arrives(source: Path) -> None:
    api = BatchApi(batch("completed", completed=3), chunks=(b"first\n", b"second\n"))
    target = source.parent / "questions.batch_1.output.jsonl"
    partial = target.with_name(target.name + ".part")
    seen: list[tuple[bool, bool]] = []
    api.on_chunk = lambda number: seen.append((target.exists(), partial.exists())) if number else None
    assert run(api, "batch", "submit", str(source), "--wait", "--poll", "0") == 0
    assert seen == [(False, True)]  # mid-download: only the part file
    assert target.read_bytes() == b"first\nsecond\n" and not partial.exists()


def test_json_prints_the_final_batch_and_the_downloaded_paths(source: Path, capsys: pytest.CaptureFixture[str]) -> None:
    final = batch("completed", completed=2, failed=1)
    api = BatchApi(batch("in_progress"), final)
    assert run(api, "batch", "submit", str(source), "--wait", "--poll", "0", "--json") == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == {
        **final,
        "downloads": {
            "output": str(source.parent / "questions.batch_1.output.jsonl"),
            "errors": str(source.parent / "questions.batch_1.errors.jsonl"),
        },
    }


@pytest.mark.parametrize("status", ["failed", "cancelled"])
def test_a_batch_that_ends_failed_or_cancelled_exits_1(
    status: str, source: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    errors = {"object": "list", "data": [{"code": "invalid_json", "message": "not JSON", "line": 2}]}
    api = BatchApi(batch(status, total=0, errors=errors if status == "failed" else None))
    assert run(api, "batch", "submit", str(source), "--wait", "--poll", "0") == 1
    out = capsys.readouterr().out
    assert f"batch_1  {status}" in out
    assert ("line 2: invalid_json: not JSON" in out) == (status == "failed")


def test_ctrl_c_while_waiting_stops_waiting_but_leaves_the_batch_running(
    source: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api = BatchApi(batch("in_progress"))

    def interrupt(earlier_gets: int) -> None:
        if earlier_gets == 2:
            raise KeyboardInterrupt

    api.on_get = interrupt
    assert run(api, "batch", "submit", str(source), "--wait", "--poll", "0") == client_cli.INTERRUPTED
    assert not api.sent("POST", "/v1/batches/batch_1/cancel")
    err = capsys.readouterr().err
    assert "seekless batch status batch_1" in err and "seekless batch download batch_1" in err


def test_an_api_error_prints_its_message_and_exits_1(source: Path, capsys: pytest.CaptureFixture[str]) -> None:
    transport = httpx.MockTransport(lambda request: api_error(400, "The file is over 100 MB.", "file_too_large"))
    assert client_cli.main(["batch", "submit", str(source), "--url", URL], transport=transport) == 1
    assert capsys.readouterr().err == "error: The file is over 100 MB.\n"


def test_with_json_an_api_error_prints_the_error_object(source: Path, capsys: pytest.CaptureFixture[str]) -> None:
    transport = httpx.MockTransport(lambda request: api_error(401, "Incorrect API key provided.", "invalid_api_key"))
    assert client_cli.main(["batch", "status", "batch_1", "--json"], transport=transport) == 1
    assert json.loads(capsys.readouterr().out) == {
        "error": {
            "message": "Incorrect API key provided.",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }


def test_an_unreachable_api_is_an_error_not_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    assert client_cli.main(["batch", "list"], transport=httpx.MockTransport(refuse)) == 1
    assert capsys.readouterr().err.startswith("error: cannot reach http://127.0.0.1:3000/v1: connection refused")


def test_a_missing_file_or_bad_metadata_is_refused_before_any_request(
    source: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api = BatchApi(batch("validating"))
    assert run(api, "batch", "submit", str(source.with_name("absent.jsonl"))) == 1
    assert run(api, "batch", "submit", str(source), "--metadata", "no-equals-sign") == 1
    assert api.requests == []
    err = capsys.readouterr().err
    assert "absent.jsonl: no such file" in err and "--metadata wants KEY=VALUE" in err


def test_the_url_and_key_come_from_the_environment_else_the_local_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=batch("in_progress"))

    assert client_cli.main(["batch", "status", "batch_1"], transport=httpx.MockTransport(record)) == 0
    monkeypatch.setenv("SEEKLESS_URL", "https://abc.execute-api.test/prod/v1/")
    monkeypatch.setenv("SEEKLESS_API_KEY", "sk-deployed")
    assert client_cli.main(["batch", "status", "batch_1"], transport=httpx.MockTransport(record)) == 0
    assert [(str(r.url), r.headers["authorization"]) for r in seen] == [
        ("http://127.0.0.1:3000/v1/batches/batch_1", "Bearer sk-seekless-local-dev"),
        ("https://abc.execute-api.test/prod/v1/batches/batch_1", "Bearer sk-deployed"),
    ]


# -- status, list, cancel, download ----------------------------------------------------------------


def test_status_shows_the_counts(capsys: pytest.CaptureFixture[str]) -> None:
    api = BatchApi(batch("in_progress", total=10, completed=4, failed=1))
    assert run(api, "batch", "status", "batch_1") == 0
    assert capsys.readouterr().out == "batch_1  in_progress  4 of 10 requests completed, 1 failed\n"
    assert run(api, "batch", "status", "batch_1", "--json") == 0
    assert json.loads(capsys.readouterr().out)["request_counts"] == {"total": 10, "completed": 4, "failed": 1}


def test_list_pages_with_limit_and_after(capsys: pytest.CaptureFixture[str]) -> None:
    api = BatchApi(batch("completed", completed=3))
    assert run(api, "batch", "list", "--limit", "5", "--after", "batch_0") == 0
    [request] = api.sent("GET", "/v1/batches")
    assert dict(request.url.params) == {"limit": "5", "after": "batch_0"}
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("batch_1  completed  3 of 3 requests completed") and "created" in out[0]
    assert out[1] == "more: seekless batch list --after batch_1"
    assert run(api, "batch", "list", "--json") == 0
    assert json.loads(capsys.readouterr().out)["has_more"] is True


def test_cancel_asks_the_api_and_shows_the_new_status(capsys: pytest.CaptureFixture[str]) -> None:
    api = BatchApi(batch("in_progress"))
    assert run(api, "batch", "cancel", "batch_1") == 0
    assert len(api.sent("POST", "/v1/batches/batch_1/cancel")) == 1
    assert capsys.readouterr().out.startswith("batch_1  cancelling")


def test_download_names_the_files_by_batch_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    api = BatchApi(batch("completed", completed=2, failed=1))
    assert run(api, "batch", "download", "batch_1", "--out", str(tmp_path), "--json") == 0
    assert (tmp_path / "batch_1.output.jsonl").read_bytes() == OUTPUT
    assert (tmp_path / "batch_1.errors.jsonl").read_bytes() == ERRORS
    assert json.loads(capsys.readouterr().out)["downloads"]["output"] == str(tmp_path / "batch_1.output.jsonl")


def test_download_of_a_running_batch_says_there_is_nothing_yet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api = BatchApi(batch("in_progress"))
    assert run(api, "batch", "download", "batch_1", "--out", str(tmp_path)) == 1
    assert "batch_1 is in_progress" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# -- the progress bar -------------------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_bar_is_redrawn_in_place() -> None:
    screen = Terminal()
    progress = Progress(screen)
    progress.update(batch("in_progress", total=4, completed=1))
    progress.update(batch("in_progress", total=4, completed=3, failed=1))
    progress.close()
    first, second = screen.getvalue().removesuffix("\n").split("\r")[1:]
    assert first.startswith("batch_1 in_progress") and "1/4" in first and "#" * 7 + "-" in first
    assert second.rstrip().endswith("[" + "#" * 30 + "] 4/4 (1 failed)")


def test_in_a_log_a_line_per_change_at_most_every_few_seconds_but_every_status() -> None:
    log, now = io.StringIO(), [0.0]
    progress = Progress(log, every=5.0, clock=lambda: now[0])
    for at, completed, status in [(0, 0, "in_progress"), (1, 1, "in_progress"), (6, 2, "in_progress")]:
        now[0] = at
        progress.update(batch(status, total=10, completed=completed))
    now[0] = 7
    progress.update(batch("completed", total=10, completed=10))
    progress.update(batch("completed", total=10, completed=10))
    assert [line.split("] ")[1] for line in log.getvalue().splitlines()] == ["0/10", "2/10", "10/10"]


# -- chat: frames into an answer --------------------------------------------------------------------


def frames(rid: str, *bodies: dict[str, Any], first_seq: int = 1) -> list[dict[str, Any]]:
    return [{"request_id": rid, "seq": first_seq + n, **body} for n, body in enumerate(bodies)]


THINKING_ANSWER = (
    {"type": "start", "model": "deepseek-flash", "session_id": None},
    {"type": "delta", "reasoning_content": "Let me "},
    {"type": "delta", "reasoning_content": "think."},
    {"type": "delta", "content": "Hello"},
    {"type": "delta", "content": " there."},
    {"type": "done", "finish_reason": "stop", "usage": {"completion_tokens": 5}, "cache": "miss"},
)


def test_deltas_assemble_into_the_answer_with_reasoning_kept_apart() -> None:
    answer = Answer("r1")
    pieces = [piece for frame in frames("r1", *THINKING_ANSWER) for piece in answer.apply(frame)]
    assert pieces == [
        ("reasoning_content", "Let me "),
        ("reasoning_content", "think."),
        ("content", "Hello"),
        ("content", " there."),
    ]
    assert answer.ended and answer.exit_code == 0
    assert answer.result() == {
        "content": "Hello there.",
        "reasoning_content": "Let me think.",
        "usage": {"completion_tokens": 5},
        "finish_reason": "stop",
        "session_id": None,
    }


def test_frames_seen_before_and_frames_of_other_requests_change_nothing() -> None:
    answer = Answer("r1")
    stream = frames("r1", *THINKING_ANSWER[:4])
    for frame in [*stream, *stream[2:], *frames("r2", {"type": "delta", "content": "not mine"})]:
        answer.apply(frame)
    assert (answer.content, answer.reasoning_content, answer.ended) == ("Hello", "Let me think.", False)


def test_an_error_frame_ends_the_answer_with_a_non_zero_exit() -> None:
    answer = Answer("r1")
    # Bad input is refused before the request has a stream: seq 0.
    answer.apply({"type": "error", "request_id": "r1", "seq": 0, "code": "model_not_found", "message": "No model x"})
    assert answer.ended and answer.exit_code == 1
    assert answer.result() == {"error": {"message": "No model x", "code": "model_not_found"}}


def test_without_a_session_each_turn_sends_the_whole_conversation_system_first() -> None:
    conversation = Conversation("deepseek-flash", system="Be brief.", options={"max_tokens": 50})
    first = conversation.action("Hi")
    assert first["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert first["max_tokens"] == 50 and first["model"] == "deepseek-flash" and "session_id" not in first
    answer = Answer(first["request_id"], content="Hello.", finish_reason="stop")
    conversation.record(first, answer)
    second = conversation.action("Again")
    assert [m["content"] for m in second["messages"]] == ["Be brief.", "Hi", "Hello.", "Again"]
    assert second["request_id"] != first["request_id"]


def test_with_a_session_only_the_new_turn_is_sent() -> None:
    conversation = Conversation("deepseek-flash", system="Be brief.", session_id="sess_1")
    first = conversation.action("Hi")
    assert first["session_id"] == "sess_1" and len(first["messages"]) == 2
    conversation.record(first, Answer(first["request_id"], content="Hello.", finish_reason="stop"))
    assert conversation.action("Again")["messages"] == [{"role": "user", "content": "Again"}]


@pytest.mark.parametrize(
    "ending", [{"finish_reason": "cancelled"}, {"error": {"message": "upstream down", "code": "upstream_error"}}]
)
def test_a_cancelled_or_failed_turn_is_not_kept(ending: dict[str, Any]) -> None:
    conversation = Conversation("deepseek-flash")
    sent = conversation.action("Hi")
    conversation.record(sent, Answer(sent["request_id"], content="Hel", **ending))
    assert conversation.action("Hi again")["messages"] == [{"role": "user", "content": "Hi again"}]


# -- chat: what the terminal shows ------------------------------------------------------------------


def render(*, err: io.StringIO, reasoning: bool = True) -> tuple[str, str]:
    out = io.StringIO()
    renderer, answer = Renderer(out, err, reasoning=reasoning), Answer("r1")
    for frame in frames("r1", *THINKING_ANSWER):
        for piece in answer.apply(frame):
            renderer.show(piece)
    renderer.finish(answer)
    return out.getvalue(), err.getvalue()


def test_the_answer_goes_to_stdout_and_the_reasoning_to_stderr_in_a_thinking_block() -> None:
    assert render(err=io.StringIO()) == ("Hello there.\n", "[thinking]\nLet me think.\n[/thinking]\n")


def test_on_a_terminal_the_reasoning_is_dimmed() -> None:
    assert render(err=Terminal())[1] == "\x1b[2mLet me think.\x1b[0m\n"


def test_no_reasoning_hides_it() -> None:
    assert render(err=io.StringIO(), reasoning=False) == ("Hello there.\n", "")


def test_an_error_and_an_unusual_finish_are_said_on_stderr() -> None:
    err = io.StringIO()
    renderer = Renderer(io.StringIO(), err)
    renderer.finish(Answer("r1", error={"message": "No model x", "code": "model_not_found"}))
    renderer.finish(Answer("r2", content="cut", finish_reason="length"))
    assert err.getvalue() == "error: No model x (model_not_found)\n[length]\n"


# -- chat: the stream over a scripted link ----------------------------------------------------------

Step = dict[str, Any] | Callable[[], None] | None


class ScriptedLink:
    """Stands in for ``ChatLink``: a chat action is answered by ``reply(action)``, a list of frames, or of
    callables that do something (raise, signal) when their turn comes, or None for a quiet moment."""

    def __init__(self, reply: Callable[[dict[str, Any]], list[Step]]) -> None:
        self.reply = reply
        self.sent: list[dict[str, Any]] = []
        self.steps: deque[Step] = deque()
        self.reopened = 0
        self.closed = False

    def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)
        if message["action"] in ("chat", "cancel", "resume"):
            self.steps.extend(self.reply(message))

    def receive(self, timeout: float) -> dict[str, Any] | None:
        step = self.steps.popleft() if self.steps else None
        if callable(step):
            step()
            return None
        return step

    def reopen(self) -> None:
        self.reopened += 1

    def close(self) -> None:
        self.closed = True


def answering(*bodies: dict[str, Any]) -> Callable[[dict[str, Any]], list[Step]]:
    return lambda action: list(frames(action["request_id"], *bodies)) if action["action"] == "chat" else []


def test_ctrl_c_during_an_answer_sends_cancel_and_the_answer_ends_cancelled() -> None:
    def reply(action: dict[str, Any]) -> list[Step]:
        rid = action["request_id"]
        if action["action"] == "cancel":
            return frames(rid, {"type": "done", "finish_reason": "cancelled", "usage": None}, first_seq=3)
        return [*frames(rid, THINKING_ANSWER[0], THINKING_ANSWER[3]), lambda: signal.raise_signal(signal.SIGINT)]

    link = ScriptedLink(reply)
    answer = client_cli._stream(link, {"action": "chat", "request_id": "r1"}, lambda piece: None, timeout=5)  # type: ignore[arg-type]
    assert [m["action"] for m in link.sent] == ["chat", "cancel"]
    assert (answer.content, answer.finish_reason) == ("Hello", "cancelled")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C means quit again


def test_a_dropped_connection_is_reopened_and_the_request_resumed_after_the_last_seq() -> None:
    def drop() -> None:
        raise ConnectionClosedError(None, None)

    def reply(action: dict[str, Any]) -> list[Step]:
        stream = frames(action["request_id"], *THINKING_ANSWER)
        if action["action"] == "resume":
            return stream[action["after_seq"] - 1 :]  # one replayed twice, as the protocol allows
        return [*stream[:3], drop]

    link = ScriptedLink(reply)
    shown: list[Any] = []
    answer = client_cli._stream(link, {"action": "chat", "request_id": "r1"}, shown.append, timeout=5)  # type: ignore[arg-type]
    assert link.reopened == 1 and link.sent[1] == {"action": "resume", "request_id": "r1", "after_seq": 3}
    assert answer.content == "Hello there." and answer.reasoning_content == "Let me think."
    assert [text for _, text in shown] == ["Let me ", "think.", "Hello", " there."]


def test_silence_past_the_timeout_is_an_error() -> None:
    link = ScriptedLink(lambda action: [])
    with pytest.raises(ApiError, match="no answer within 0 s"):
        client_cli._stream(link, {"action": "chat", "request_id": "r1"}, lambda piece: None, timeout=0)  # type: ignore[arg-type]


def test_a_queued_job_may_wait_past_the_timeout() -> None:
    def reply(action: dict[str, Any]) -> list[Step]:
        rid = action["request_id"]
        return [
            *frames(rid, {"type": "queued", "job_id": "job_1"}),
            None,
            None,
            *frames(rid, *THINKING_ANSWER, first_seq=2),
        ]

    link = ScriptedLink(reply)
    answer = client_cli._stream(link, {"action": "chat", "request_id": "r1"}, lambda piece: None, timeout=0)  # type: ignore[arg-type]
    assert answer.job_id == "job_1" and answer.content == "Hello there."


# -- chat: the command ------------------------------------------------------------------------------


@pytest.fixture
def link(monkeypatch: pytest.MonkeyPatch) -> Callable[..., ScriptedLink]:
    """Install a scripted link in place of the WebSocket one; returns a setter for its replies."""

    def install(reply: Callable[[dict[str, Any]], list[Step]]) -> ScriptedLink:
        scripted = ScriptedLink(reply)
        monkeypatch.setattr(client_cli, "ChatLink", lambda *args, **kwargs: scripted)
        return scripted

    return install


def test_one_shot_streams_the_answer_to_stdout_and_exits_0(
    link: Callable[..., ScriptedLink], capsys: pytest.CaptureFixture[str]
) -> None:
    scripted = link(answering(*THINKING_ANSWER))
    assert client_cli.main(["chat", "-m", "Hi", "--model", "deepseek-v4-pro", "--max-tokens", "64"]) == 0
    assert capsys.readouterr() == ("Hello there.\n", "[thinking]\nLet me think.\n[/thinking]\n")
    [action] = scripted.sent
    assert action["model"] == "deepseek-v4-pro" and action["max_tokens"] == 64
    assert action["messages"] == [{"role": "user", "content": "Hi"}] and scripted.closed


def test_one_shot_json_prints_the_assembled_answer(
    link: Callable[..., ScriptedLink], capsys: pytest.CaptureFixture[str]
) -> None:
    link(answering(*THINKING_ANSWER))
    assert client_cli.main(["chat", "-m", "Hi", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["content"], printed["reasoning_content"], printed["finish_reason"]) == (
        "Hello there.",
        "Let me think.",
        "stop",
    )


def test_one_shot_error_frame_prints_the_message_and_exits_1(
    link: Callable[..., ScriptedLink], capsys: pytest.CaptureFixture[str]
) -> None:
    link(answering({"type": "error", "code": "model_not_found", "message": "The model 'x' does not exist."}))
    assert client_cli.main(["chat", "-m", "Hi", "--model", "x"]) == 1
    assert capsys.readouterr() == ("", "error: The model 'x' does not exist. (model_not_found)\n")


def test_piped_lines_are_turns_of_one_conversation(
    link: Callable[..., ScriptedLink], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("Hi\n\nAgain\n"))
    scripted = link(answering(*THINKING_ANSWER))
    assert client_cli.main(["chat", "--no-reasoning", "--system", "Be brief."]) == 0
    _, second = scripted.sent
    assert [m["content"] for m in second["messages"]] == ["Be brief.", "Hi", "Hello there.", "Again"]
    assert capsys.readouterr() == ("Hello there.\nHello there.\n", "")


def test_system_with_an_existing_session_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert client_cli.main(["chat", "--session", "sess_1", "--system", "Be brief.", "-m", "Hi"]) == 1
    assert "--system" in capsys.readouterr().err


def test_new_session_creates_one_and_each_turn_names_it(
    link: Callable[..., ScriptedLink], capsys: pytest.CaptureFixture[str]
) -> None:
    created: list[httpx.Request] = []

    def sessions(request: httpx.Request) -> httpx.Response:
        created.append(request)
        return httpx.Response(201, json={"id": "sess_9", "object": "session"})

    scripted = link(answering(*THINKING_ANSWER))
    argv = ["chat", "--new-session", "-m", "Hi", "--url", URL, "--api-key", KEY]
    assert client_cli.main(argv, transport=httpx.MockTransport(sessions)) == 0
    assert [(r.method, str(r.url)) for r in created] == [("POST", f"{URL}/sessions")]
    assert scripted.sent[0]["session_id"] == "sess_9"
    assert "--session sess_9" in capsys.readouterr().err


def test_a_failed_turn_does_not_end_a_piped_session_but_sets_the_exit_code(
    link: Callable[..., ScriptedLink], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("first\nsecond\n"))
    failure = {"type": "error", "code": "upstream_unavailable", "message": "DeepSeek is unavailable."}

    def reply(action: dict[str, Any]) -> list[Step]:
        first = action["messages"][-1]["content"] == "first"
        return list(frames(action["request_id"], *([failure] if first else THINKING_ANSWER)))

    link(reply)
    assert client_cli.main(["chat", "--json"]) == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0] == {"error": {"message": "DeepSeek is unavailable.", "code": "upstream_unavailable"}}
    assert lines[1]["content"] == "Hello there."
