"""`seekless chat` and `seekless batch`: the client commands, against the local stack by default or a
deployed one given `--url`, `--ws-url` and `--api-key`. docs/CLI.md is the user's guide.

REST goes through one httpx client; tests inject its transport through ``main(argv, transport=...)``.
Presigned S3 URLs go through the same client without the API key: S3 refuses a request that carries
a second kind of authentication. Chat speaks docs/WEBSOCKET.md; how a stream of frames becomes what
the user sees (``Answer``, ``Conversation``) is kept free of I/O so the unit tests can drive it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

import httpx

from seekless_local.stack import DEFAULT_DEV_API_KEY

DEFAULT_URL = "http://127.0.0.1:3000/v1"
DEFAULT_WS_URL = "ws://127.0.0.1:3001"
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})
INTERRUPTED = 130  # what a shell reports for a command stopped by Ctrl-C

Run = Callable[[argparse.Namespace], int]


class ApiError(Exception):
    """An error in OpenAI's schema: the API's own, or one the client makes up when it cannot reach it."""

    def __init__(self, message: str, *, type: str = "client_error", code: str | None = None) -> None:
        super().__init__(message)
        self.error: dict[str, Any] = {"message": message, "type": type, "param": None, "code": code}

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        try:
            body = response.json()["error"]
            message = body["message"]
        except (ValueError, KeyError, TypeError):
            return cls(f"HTTP {response.status_code}: {response.text[:300]}", type="http_error")
        error = cls(str(message))
        error.error = body
        return error


# -- commands and options ---------------------------------------------------------------------------


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `chat` and `batch` to the `seekless` parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", metavar="URL", help=f"REST base URL (default SEEKLESS_URL, else {DEFAULT_URL})")
    common.add_argument(
        "--ws-url", metavar="URL", help=f"WebSocket URL (default SEEKLESS_WS_URL, else {DEFAULT_WS_URL})"
    )
    common.add_argument(
        "--api-key", metavar="KEY", help="API key (default SEEKLESS_API_KEY, else the local stack's dev key)"
    )
    common.add_argument("--json", action="store_true", help="print machine-readable JSON")
    common.add_argument(
        "--timeout", type=float, default=60.0, metavar="SECONDS", help="seconds to wait for the server (60)"
    )

    chat = commands.add_parser("chat", parents=[common], help="chat in the terminal, streamed over WebSocket")
    chat.add_argument("-m", "--message", metavar="TEXT", help="send this one message, print the answer and exit")
    chat.add_argument("--model", default="deepseek-flash", metavar="NAME", help="the model (deepseek-flash)")
    chat.add_argument("--system", metavar="TEXT", help="a system prompt for a new conversation")
    chat.add_argument("--max-tokens", type=int, metavar="N", help="the most tokens of an answer, reasoning included")
    chat.add_argument("--no-reasoning", action="store_true", help="hide the model's reasoning")
    sessions = chat.add_mutually_exclusive_group()
    sessions.add_argument("--session", metavar="ID", help="continue a stored conversation")
    sessions.add_argument("--new-session", action="store_true", help="store this conversation as a new session")
    chat.set_defaults(run=_command(_chat), transport=None)

    batch = commands.add_parser("batch", help="batch files of chat requests").add_subparsers(
        dest="batch_command", required=True
    )
    submit = batch.add_parser("submit", parents=[common], help="upload a JSONL file of requests")
    submit.add_argument("file", type=Path, metavar="FILE", help="JSONL, one chat completion request per line")
    submit.add_argument("--wait", action="store_true", help="show progress until the batch ends, then download")
    submit.add_argument("--out", type=Path, metavar="DIR", help="where --wait puts the files (default: by FILE)")
    submit.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE", help="a label (repeatable)")
    submit.add_argument("--poll", type=float, default=2.0, metavar="SECONDS", help="status poll interval (2)")
    submit.set_defaults(run=_command(_batch_submit), transport=None)
    status = batch.add_parser("status", parents=[common], help="show a batch")
    status.add_argument("id")
    status.set_defaults(run=_command(_batch_status), transport=None)
    listing = batch.add_parser("list", parents=[common], help="list batches, newest first")
    listing.add_argument("--limit", type=int, default=20, metavar="N", help="batches per page (20)")
    listing.add_argument("--after", metavar="ID", help="the page after this batch id")
    listing.set_defaults(run=_command(_batch_list), transport=None)
    cancel = batch.add_parser("cancel", parents=[common], help="cancel a batch")
    cancel.add_argument("id")
    cancel.set_defaults(run=_command(_batch_cancel), transport=None)
    download = batch.add_parser("download", parents=[common], help="download an ended batch's files")
    download.add_argument("id")
    download.add_argument("--out", type=Path, metavar="DIR", help="target folder (default: the current one)")
    download.set_defaults(run=_command(_batch_download), transport=None)


def main(argv: list[str] | None = None, *, transport: httpx.BaseTransport | None = None) -> int:
    """`chat` and `batch` on their own parser; ``transport`` replaces the network for REST calls."""
    parser = argparse.ArgumentParser(prog="seekless")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    args.transport = transport
    return int(args.run(args))


def _command(run: Run) -> Run:
    """Every failure ends as a message (or, with --json, an error object) and an exit code, not a traceback."""

    def guarded(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except ApiError as error:
            _print_error(error, as_json=args.json)
            return 1
        except KeyboardInterrupt:
            print(file=sys.stderr)
            return INTERRUPTED

    return guarded


def _print_error(error: ApiError, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"error": error.error}))
    else:
        print(f"error: {error.error.get('message')}", file=sys.stderr)


def _option(value: str | None, variable: str, default: str) -> str:
    return value or os.environ.get(variable) or default


def _rest(args: argparse.Namespace) -> Rest:
    return Rest(
        _option(args.url, "SEEKLESS_URL", DEFAULT_URL),
        _option(args.api_key, "SEEKLESS_API_KEY", DEFAULT_DEV_API_KEY),
        timeout=args.timeout,
        transport=args.transport,
    )


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


# -- REST -------------------------------------------------------------------------------------------


class Rest:
    """The REST API (JSON in and out, errors raised as ``ApiError``) and presigned S3 URLs."""

    def __init__(self, url: str, api_key: str, *, timeout: float, transport: httpx.BaseTransport | None = None) -> None:
        self._url = url.rstrip("/")
        self._auth = {"Authorization": f"Bearer {api_key}"}
        self._http = httpx.Client(timeout=timeout, transport=transport)

    def __enter__(self) -> Rest:
        return self

    def __exit__(self, *_: object) -> None:
        self._http.close()

    def call(self, method: str, path: str, **options: Any) -> dict[str, Any]:
        with self._reaching(self._url):
            response = self._http.request(method, self._url + path, headers=self._auth, **options)
        if response.is_error:
            raise ApiError.from_response(response)
        body: dict[str, Any] = response.json()
        return body

    def upload(self, url: str, path: Path, *, method: str = "PUT", headers: dict[str, str] | None = None) -> None:
        # httpx streams an open file in chunks and sends its Content-Length (S3 refuses chunked uploads).
        with path.open("rb") as body, self._reaching("the upload URL"):
            response = self._http.request(method, url, content=body, headers=headers)
        if response.is_error:
            raise ApiError(f"the upload was refused: HTTP {response.status_code} {response.text[:300]}")

    def download(self, url: str, target: Path) -> None:
        """Stream to ``target`` through a ``.part`` file, so a download cut short never looks complete."""
        partial = target.with_name(target.name + ".part")
        try:
            with self._reaching("the download URL"), self._http.stream("GET", url) as response:
                if response.is_error:
                    raise ApiError(f"the download was refused: HTTP {response.status_code}")
                with partial.open("wb") as file:
                    for chunk in response.iter_bytes():
                        file.write(chunk)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(target)

    @staticmethod
    @contextlib.contextmanager
    def _reaching(where: str) -> Iterator[None]:
        try:
            yield
        except httpx.HTTPError as error:
            raise ApiError(f"cannot reach {where}: {error}", type="connection_error") from error


# -- batch ------------------------------------------------------------------------------------------


def _batch_submit(args: argparse.Namespace) -> int:
    source: Path = args.file
    if not source.is_file():
        raise ApiError(f"{source}: no such file")
    metadata = dict(_key_value(item) for item in args.metadata)
    with _rest(args) as rest:
        upload = rest.call(
            "POST", "/batches/uploads", json={"filename": source.name, **({"metadata": metadata} if metadata else {})}
        )
        rest.upload(
            upload["upload_url"],
            source,
            method=upload.get("upload_method", "PUT"),
            headers=upload.get("upload_headers"),
        )
        batch_id = upload["id"]
        if not args.wait:
            batch = rest.call("GET", f"/batches/{batch_id}")
            if args.json:
                _print_json(batch)
            else:
                print(f"{batch_id} uploaded ({batch['status']}); follow it with: seekless batch status {batch_id}")
            return 0
        try:
            batch = _wait(rest, batch_id, poll=args.poll)
        except KeyboardInterrupt:
            print(
                f"stopped waiting; {batch_id} carries on. Follow it with `seekless batch status {batch_id}` "
                f"and fetch its files with `seekless batch download {batch_id}`.",
                file=sys.stderr,
            )
            return INTERRUPTED
        files = _download(rest, batch, args.out or source.parent, prefix=f"{source.stem}.")
    return _report_end(batch, files, as_json=args.json)


def _batch_status(args: argparse.Namespace) -> int:
    with _rest(args) as rest:
        batch = rest.call("GET", f"/batches/{args.id}")
    if args.json:
        _print_json(batch)
    else:
        print(_describe(batch))
        for line in _batch_errors(batch):
            print(line)
    return 0


def _batch_list(args: argparse.Namespace) -> int:
    params = {"limit": args.limit, **({"after": args.after} if args.after else {})}
    with _rest(args) as rest:
        page = rest.call("GET", "/batches", params=params)
    if args.json:
        _print_json(page)
        return 0
    for batch in page["data"]:
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(batch["created_at"]))
        print(f"{_describe(batch)}  created {created}")
    if page.get("has_more"):
        print(f"more: seekless batch list --after {page['last_id']}")
    return 0


def _batch_cancel(args: argparse.Namespace) -> int:
    with _rest(args) as rest:
        batch = rest.call("POST", f"/batches/{args.id}/cancel")
    if args.json:
        _print_json(batch)
    else:
        print(_describe(batch))
    return 0


def _batch_download(args: argparse.Namespace) -> int:
    with _rest(args) as rest:
        batch = rest.call("GET", f"/batches/{args.id}")
        if not (batch.get("output_url") or batch.get("error_url")):
            raise ApiError(f"{args.id} is {batch['status']}: it has no files to download yet")
        files = _download(rest, batch, args.out or Path.cwd(), prefix="")
    if args.json:
        _print_json({**batch, "downloads": files})
    else:
        for kind, path in files.items():
            print(f"{kind}: {path}")
    return 0


def _key_value(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ApiError(f"--metadata wants KEY=VALUE, not {item!r}")
    return key, value


def _wait(rest: Rest, batch_id: str, *, poll: float) -> dict[str, Any]:
    progress = Progress(sys.stderr)
    try:
        while True:
            batch = rest.call("GET", f"/batches/{batch_id}")
            progress.update(batch)
            if batch["status"] in TERMINAL_STATUSES:
                return batch
            time.sleep(poll)
    finally:
        progress.close()


def _download(rest: Rest, batch: dict[str, Any], folder: Path, *, prefix: str) -> dict[str, str]:
    """The batch's files that exist, as ``<prefix><batch id>.output.jsonl`` / ``.errors.jsonl``."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for kind, url_field in (("output", "output_url"), ("errors", "error_url")):
        if url := batch.get(url_field):
            target = folder / f"{prefix}{batch['id']}.{kind}.jsonl"
            rest.download(url, target)
            files[kind] = str(target)
    return files


def _report_end(batch: dict[str, Any], files: dict[str, str], *, as_json: bool) -> int:
    if as_json:
        _print_json({**batch, "downloads": files})
    else:
        print(_describe(batch))
        for line in _batch_errors(batch):
            print(line)
        for kind, path in files.items():
            print(f"{kind}: {path}")
    return 0 if batch["status"] == "completed" else 1


def _counts(batch: dict[str, Any]) -> tuple[int, int, int]:
    counts = batch.get("request_counts") or {}
    return int(counts.get("total") or 0), int(counts.get("completed") or 0), int(counts.get("failed") or 0)


def _describe(batch: dict[str, Any]) -> str:
    total, completed, failed = _counts(batch)
    requests = f"{completed} of {total} requests completed, {failed} failed" if total else "requests not counted yet"
    return f"{batch['id']}  {batch['status']}  {requests}"


def _batch_errors(batch: dict[str, Any], most: int = 10) -> list[str]:
    """The file's validation errors (why a batch failed before running), the first few of them."""
    errors = (batch.get("errors") or {}).get("data") or []
    lines = [f"  line {e.get('line')}: {e.get('code')}: {e.get('message')}" for e in errors[:most]]
    if len(errors) > most:
        lines.append(f"  ... and {len(errors) - most} more")
    return lines


class Progress:
    """A bar redrawn in place on a terminal; elsewhere (logs, CI) a line when the status changes, or when
    the counts do and ``every`` seconds have passed, so a long batch does not flood the log."""

    WIDTH = 30

    def __init__(self, stream: TextIO, *, every: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._stream, self._every, self._clock = stream, every, clock
        self._tty = stream.isatty()
        self._last_status = self._last_line = ""
        self._last_at = -every
        self._drawn = 0

    def update(self, batch: dict[str, Any]) -> None:
        line = self.line(batch)
        if self._tty:
            self._stream.write("\r" + line.ljust(self._drawn))
            self._drawn = len(line)
        elif line != self._last_line and (
            batch["status"] != self._last_status or self._clock() - self._last_at >= self._every
        ):
            self._stream.write(line + "\n")
            self._last_status, self._last_line, self._last_at = batch["status"], line, self._clock()
        self._stream.flush()

    def close(self) -> None:
        if self._drawn:
            self._stream.write("\n")
            self._drawn = 0

    @classmethod
    def line(cls, batch: dict[str, Any]) -> str:
        total, completed, failed = _counts(batch)
        if not total:
            return f"{batch['id']} {batch['status']}"
        ended = completed + failed
        filled = cls.WIDTH * ended // total
        bar = "#" * filled + "-" * (cls.WIDTH - filled)
        return f"{batch['id']} {batch['status']:<11} [{bar}] {ended}/{total}" + (
            f" ({failed} failed)" if failed else ""
        )


# -- chat -------------------------------------------------------------------------------------------

Piece = tuple[Literal["reasoning_content", "content"], str]


@dataclass
class Answer:
    """The frames of one request folded into the answer. Frames of other requests, and frames replayed
    twice after a resume (a ``seq`` already seen), change nothing."""

    request_id: str
    content: str = ""
    reasoning_content: str = ""
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    session_id: str | None = None
    job_id: str | None = None
    seq: int = 0

    @property
    def ended(self) -> bool:
        return self.finish_reason is not None or self.error is not None

    @property
    def exit_code(self) -> int:
        return 1 if self.error else 0

    def apply(self, frame: dict[str, Any]) -> list[Piece]:
        """Take in one frame; return the text it adds, reasoning and answer apart."""
        if frame.get("request_id") != self.request_id:
            return []
        seq = int(frame.get("seq") or 0)
        if seq and seq <= self.seq:
            return []
        self.seq = max(self.seq, seq)
        kind = frame.get("type")
        pieces: list[Piece] = []
        if kind == "start":
            self.session_id = frame.get("session_id")
        elif kind == "queued":
            self.job_id = frame.get("job_id")
        elif kind == "delta":
            if reasoning := frame.get("reasoning_content"):
                self.reasoning_content += reasoning
                pieces.append(("reasoning_content", reasoning))
            if content := frame.get("content"):
                self.content += content
                pieces.append(("content", content))
        elif kind == "done":
            self.finish_reason = frame.get("finish_reason") or "stop"
            self.usage = frame.get("usage")
        elif kind == "error":
            self.error = {"message": frame.get("message") or "unknown error", "code": frame.get("code")}
        return pieces

    def result(self) -> dict[str, Any]:
        """What ``--json`` prints: the assembled answer, or the error."""
        if self.error:
            return {"error": self.error}
        return {
            "content": self.content,
            "reasoning_content": self.reasoning_content,
            "usage": self.usage,
            "finish_reason": self.finish_reason,
            "session_id": self.session_id,
        }


@dataclass
class Conversation:
    """What each ``chat`` action carries. Without a session the client holds the history and sends it
    all; with one the server holds it (it stores each finished turn), so only the new turn is sent."""

    model: str
    system: str | None = None
    session_id: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    def action(self, text: str) -> dict[str, Any]:
        opening = [{"role": "system", "content": self.system}] if self.system and not self.history else []
        turn = [*opening, {"role": "user", "content": text}]
        action: dict[str, Any] = {
            "action": "chat",
            "request_id": f"cli-{uuid.uuid4().hex}",
            "model": self.model,
            "messages": turn if self.session_id else [*self.history, *turn],
            **self.options,
        }
        if self.session_id:
            action["session_id"] = self.session_id
        return action

    def record(self, sent: dict[str, Any], answer: Answer) -> None:
        # An error or a cancelled answer is not kept, as the server keeps nothing of it in a session.
        if answer.error or answer.finish_reason in (None, "cancelled"):
            return
        prior = self.history if self.session_id else []
        self.history = [*prior, *sent["messages"], {"role": "assistant", "content": answer.content}]


class Renderer:
    """The answer goes to stdout as it streams; the reasoning goes to stderr, dimmed on a terminal and
    bracketed by ``[thinking]`` elsewhere, so `seekless chat -m ... > file` keeps only the answer."""

    DIM, RESET = "\x1b[2m", "\x1b[0m"

    def __init__(self, out: TextIO, err: TextIO, *, reasoning: bool = True) -> None:
        self._out, self._err, self._reasoning = out, err, reasoning
        self._dim = err.isatty()
        self._thinking = False

    def show(self, piece: Piece) -> None:
        kind, text = piece
        if kind == "reasoning_content":
            if not self._reasoning:
                return
            if not self._thinking:
                self._err.write(self.DIM if self._dim else "[thinking]\n")
                self._thinking = True
            self._err.write(text)
            self._err.flush()
        else:
            self._end_thinking()
            self._out.write(text)
            self._out.flush()

    def finish(self, answer: Answer) -> None:
        self._end_thinking()
        if answer.content and not answer.content.endswith("\n"):
            self._out.write("\n")
        self._out.flush()
        if answer.error:
            self._err.write(f"error: {answer.error['message']} ({answer.error['code']})\n")
        elif answer.finish_reason not in ("stop", None):
            self._err.write(f"[{answer.finish_reason}]\n")
        self._err.flush()

    def _end_thinking(self) -> None:
        if self._thinking:
            self._err.write(self.RESET + "\n" if self._dim else "\n[/thinking]\n")
            self._thinking = False


class ChatLink:
    """One WebSocket connection, opened on first use and reopened when API Gateway has closed it (after
    10 idle minutes, or 2 hours in all)."""

    def __init__(self, url: str, api_key: str, *, timeout: float) -> None:
        self._url, self._api_key, self._timeout = url, api_key, timeout
        self._socket: Any = None
        self._open = contextlib.ExitStack()

    def close(self) -> None:
        self._socket = None
        self._open.close()

    def reopen(self) -> None:
        from websockets.exceptions import InvalidStatus
        from websockets.sync.client import connect

        self.close()
        try:
            # Entered as a context manager: websockets 17.1 deprecates holding a bare connect().
            self._socket = self._open.enter_context(
                connect(
                    self._url,
                    additional_headers={"Authorization": f"Bearer {self._api_key}"},
                    open_timeout=self._timeout,
                )
            )
        except InvalidStatus as error:
            code = error.response.status_code
            raise ApiError(
                f"{self._url} refused the connection (HTTP {code}): check --api-key", type="authentication_error"
            ) from error
        except (OSError, TimeoutError) as error:
            raise ApiError(f"cannot reach {self._url}: {error}", type="connection_error") from error

    def send(self, message: dict[str, Any]) -> None:
        from websockets.exceptions import ConnectionClosed

        if self._socket is None:
            self.reopen()
        try:
            self._socket.send(json.dumps(message))
        except ConnectionClosed:
            self.reopen()
            self._socket.send(json.dumps(message))

    def receive(self, timeout: float) -> dict[str, Any] | None:
        """The next frame, or None when none came within ``timeout``. Raises ConnectionClosed."""
        try:
            frame: dict[str, Any] = json.loads(self._socket.recv(timeout=timeout))
        except TimeoutError:
            return None
        return frame


@contextlib.contextmanager
def _ctrl_c_sets(flag: threading.Event) -> Iterator[None]:
    """While an answer streams, Ctrl-C asks the server to cancel it instead of killing the client; a
    second Ctrl-C quits. Python lets only the main thread install signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        if flag.is_set():
            raise KeyboardInterrupt
        flag.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _stream(link: ChatLink, action: dict[str, Any], show: Callable[[Piece], None], *, timeout: float) -> Answer:
    """Send one chat action and take its frames until the terminal one."""
    from websockets.exceptions import ConnectionClosed

    answer = Answer(action["request_id"])
    cancel = threading.Event()
    cancelled, drops = False, 0
    link.send(action)
    deadline = time.monotonic() + timeout
    with _ctrl_c_sets(cancel):
        while not answer.ended:
            if cancel.is_set() and not cancelled:
                link.send({"action": "cancel", "request_id": answer.request_id})
                cancelled = True
            try:
                # A short wait, so that a Ctrl-C is acted on at once.
                frame = link.receive(timeout=0.2)
            except ConnectionClosed:
                drops += 1
                if drops > 3:
                    raise ApiError("the WebSocket connection keeps closing", type="connection_error") from None
                link.reopen()
                link.send({"action": "resume", "request_id": answer.request_id, "after_seq": answer.seq})
                continue
            if frame is None:
                # A job waits in the GPU worker's queue for as long as it takes; Ctrl-C still cancels it.
                if answer.job_id is None and time.monotonic() > deadline:
                    raise ApiError(f"no answer within {timeout:g} s", type="timeout")
                continue
            deadline = time.monotonic() + timeout
            for piece in answer.apply(frame):
                show(piece)
    return answer


def _chat(args: argparse.Namespace) -> int:
    if args.session and args.system:
        raise ApiError("--system starts a conversation; a stored session already has its opening")
    session_id = args.session
    if args.new_session:
        with _rest(args) as rest:
            session_id = rest.call("POST", "/sessions", json={})["id"]
        print(f"session {session_id} (continue it with --session {session_id})", file=sys.stderr)
    options = {"max_tokens": args.max_tokens} if args.max_tokens else {}
    conversation = Conversation(args.model, system=args.system, session_id=session_id, options=options)
    link = ChatLink(
        _option(args.ws_url, "SEEKLESS_WS_URL", DEFAULT_WS_URL),
        _option(args.api_key, "SEEKLESS_API_KEY", DEFAULT_DEV_API_KEY),
        timeout=args.timeout,
    )
    renderer = Renderer(sys.stdout, sys.stderr, reasoning=not args.no_reasoning)
    try:
        if args.message is not None:
            answer = _turn(link, conversation, args.message, renderer, args)
            if args.json:
                _print_json(answer.result())
            return INTERRUPTED if answer.finish_reason == "cancelled" else answer.exit_code
        return _repl(link, conversation, renderer, args)
    finally:
        link.close()


def _turn(
    link: ChatLink, conversation: Conversation, text: str, renderer: Renderer, args: argparse.Namespace
) -> Answer:
    action = conversation.action(text)
    answer = _stream(link, action, (lambda _: None) if args.json else renderer.show, timeout=args.timeout)
    if not args.json:
        renderer.finish(answer)
    conversation.record(action, answer)
    return answer


def _repl(link: ChatLink, conversation: Conversation, renderer: Renderer, args: argparse.Namespace) -> int:
    """One line, one turn, until end of input. A turn that fails says so and the next line is read;
    the exit code says whether any turn failed."""
    prompt = "> " if sys.stdin.isatty() else ""
    if prompt:
        with contextlib.suppress(ImportError):  # not on every platform
            import readline  # noqa: F401  (importing it gives input() line editing and history)
    failed = False
    while True:
        try:
            line = input(prompt)
        except EOFError:
            if prompt:
                print()
            return 1 if failed else 0
        except KeyboardInterrupt:
            print()
            continue
        if not line.strip():
            continue
        try:
            answer = _turn(link, conversation, line, renderer, args)
        except ApiError as error:
            _print_error(error, as_json=args.json)
            failed = True
            continue
        failed = failed or answer.error is not None
        if args.json:
            print(json.dumps(answer.result()))


if __name__ == "__main__":
    sys.exit(main())
