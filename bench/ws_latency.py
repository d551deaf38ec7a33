"""The WebSocket path against the real local stack: added time to first token, and frames per response.

Run alone with ``python -m bench.ws_latency [--quick] [--hops N]``. Everything ``make dev`` runs is
started here (``seekless_local.stack.LocalStack`` on free ports): moto, Redis, the DeepSeek emulator
(in process, as the stack runs it), and the template-driven WebSocket gateway with its route functions
and the generator, each on its own warm execution environments. The client is a
``websockets.sync.client`` connection with the dev API key.

- Time to first token: from sending ``{"action": "chat", ...}`` to the first ``delta`` frame, against
  a direct streaming ``httpx`` POST of the same upstream body to the same emulator (time to the first
  SSE chunk carrying ``content`` or ``reasoning_content``). The emulator answers with no latency
  (``ttft_ms=0``, ``tps=0``), so the difference is what seekless adds.
- Frames per streamed response: a 64-token answer paced at 20 ms per token (``tps=50``, thinking off),
  counting the frames the client receives and the ``@connections`` POSTs the gateway serves.

``--hops N`` also prints, for N more requests, when each hop of the path began and ended (median
milliseconds after the client's send), by wrapping the stack's functions in this process only.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import os
import secrets
import socket
import statistics
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.common import Row, Section, X, interleave, ms, print_sections, ratio, summarize, times

NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
MODEL = "deepseek-flash"  # the WebSocket chat action's default model (thinking on)
PACED_MODEL = "deepseek-chat"  # the alias with thinking off: content deltas only
PACED_TOKENS = 64
PACED_TPS = 50.0  # one token every 20 ms
DEFAULT_MAX_TOKENS = 4096  # seekless.config.Settings.default_max_tokens: what the gateway sends upstream
RECV_TIMEOUT = 30.0

# Targets (issue 3, "Performance").
ADDED_TTFT_P50_MS = 5.0
POSTS_PER_RESPONSE = 15
FRAME_MAX_BYTES = 32 * 1024


@dataclass(frozen=True)
class Plan:
    rounds: int
    warmup: int
    streams: int


# The warm-up must exceed the gateway's execution environments per function (8): it hands each
# invocation to the idle environment that waited longest, so the first 8 calls of every function
# each meet a fresh environment (clients built on first use, as on a Lambda cold start).
FULL = Plan(rounds=200, warmup=24, streams=5)
QUICK = Plan(rounds=30, warmup=16, streams=2)


@dataclass
class Received:
    """One request's frames as the client got them: (seconds after the send, type, bytes, frame)."""

    request_id: str
    sent: float
    frames: list[tuple[float, str, int, dict[str, Any]]] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return bool(self.frames) and self.frames[-1][1] in ("done", "error")


class PostCounter:
    """Counts ``@connections`` POSTs at the local gateway (it keeps no counter of its own).

    Wraps the gateway's management handler on this one instance; if that ever changes shape, the
    count is simply unavailable (``None``) and the client's frame count stands alone.
    """

    def __init__(self, gateway: Any) -> None:
        self._lock = threading.Lock()
        self.sizes: list[int] = []
        original = getattr(gateway, "_management", None)
        self.available = callable(original)
        if not self.available:
            return

        @functools.wraps(original)
        async def counted(method: str, connection_id: str, body: bytes) -> Any:
            if method == "POST":
                with self._lock:
                    self.sizes.append(len(body))
            return await original(method, connection_id, body)

        gateway._management = counted

    def mark(self) -> int:
        with self._lock:
            return len(self.sizes)

    def since(self, mark: int) -> list[int] | None:
        if not self.available:
            return None
        with self._lock:
            return self.sizes[mark:]


class WsCases:
    """The calls compared: the WebSocket chat action and a direct streaming POST to the emulator."""

    def __init__(self, stack: Any, ws: Any, client: Any) -> None:
        from seekless_local.stack import DEV_TENANT

        self.stack = stack
        self.ws = ws
        self.client = client
        self.nonce = secrets.token_hex(4)
        self.url = stack.emulator.base_url + "/chat/completions"
        self.direct_headers = {"authorization": "Bearer sk-emulator-local", "content-type": "application/json"}
        # The gateway's upstream user id: a hash of the tenant (seekless.models.Principal.upstream_user_id).
        self.user_id = "t_" + hashlib.sha256(DEV_TENANT.encode()).hexdigest()[:40]
        self._serial = itertools.count()
        self.model = MODEL
        self.thinking = "enabled"

    def text(self, label: str) -> str:
        return f"bench {self.nonce} {label} {next(self._serial)}: a question never asked before"

    # -- WebSocket ---------------------------------------------------------------------------------

    def ws_message(self) -> tuple[str, str]:
        request_id = f"bench-{self.nonce}-{next(self._serial)}"
        message = {"action": "chat", "request_id": request_id, "message": self.text("ws"), "model": self.model}
        return request_id, json.dumps(message, separators=(",", ":"))

    def receive(self, received: Received, *, until: Callable[[Received], bool]) -> Received:
        while not until(received):
            raw = self.ws.recv(timeout=RECV_TIMEOUT)
            now = time.perf_counter()
            data = raw.encode() if isinstance(raw, str) else raw
            value = json.loads(data)
            if value.get("request_id") != received.request_id:
                raise RuntimeError(f"unexpected frame for another request: {data[:200]!r}")
            received.frames.append((now - received.sent, value.get("type", "?"), len(data), value))
            if value.get("type") == "error":
                raise RuntimeError(f"the WebSocket path answered an error frame: {value}")
        return received

    def ws_first_delta(self, index: int) -> Callable[[], Received]:
        request_id, message = self.ws_message()
        send = self.ws.send

        def call() -> Received:
            received = Received(request_id, time.perf_counter())
            send(message)
            return self.receive(received, until=lambda r: bool(r.frames) and r.frames[-1][1] in ("delta", "done"))

        return call

    def ws_whole(self, index: int) -> Callable[[], Received]:
        request_id, message = self.ws_message()
        send = self.ws.send

        def call() -> Received:
            received = Received(request_id, time.perf_counter())
            send(message)
            return self.receive(received, until=lambda r: r.finished)

        return call

    # -- direct ------------------------------------------------------------------------------------

    def direct_body(self) -> bytes:
        body = {
            "model": self.model if self.model == MODEL else "deepseek-flash",
            "messages": [{"role": "user", "content": self.text("direct")}],
            "thinking": {"type": self.thinking},
            "max_tokens": DEFAULT_MAX_TOKENS,
            "user_id": self.user_id,
            "stream": True,
        }
        return json.dumps(body, separators=(",", ":")).encode()

    def direct_first_chunk(self, index: int) -> Callable[[], Any]:
        request = self.client.build_request("POST", self.url, content=self.direct_body(), headers=self.direct_headers)
        send = self.client.send

        def call() -> Any:
            response = send(request, stream=True)
            lines = response.iter_lines()
            for line in lines:
                if _carries_text(line):
                    return response, lines
            return response, None

        return call

    def direct_whole(self, index: int) -> Callable[[], Any]:
        request = self.client.build_request("POST", self.url, content=self.direct_body(), headers=self.direct_headers)
        send = self.client.send

        def call() -> Any:
            response = send(request, stream=True)
            try:
                return response.status_code, sum(1 for line in response.iter_lines() if _carries_text(line))
            finally:
                response.close()

        return call

    # -- checks (after each timing) ----------------------------------------------------------------

    def check_first(self, name: str, result: Any) -> None:
        if name == "direct":
            response, lines = result
            try:
                if response.status_code != 200 or lines is None:
                    raise RuntimeError(f"direct stream answered {response.status_code} with no text")
                for _ in lines:  # read to the end, so the connection goes back to the pool
                    pass
            finally:
                response.close()
            return
        if result.frames[-1][1] != "delta":
            raise RuntimeError(f"the stream ended before any delta: {[f[1] for f in result.frames]}")
        self.receive(result, until=lambda r: r.finished)  # drain to done before the next round

    def check_whole(self, name: str, result: Any) -> None:
        if name == "direct":
            status, chunks = result
            if status != 200 or chunks != PACED_TOKENS:
                raise RuntimeError(f"direct paced stream: status {status}, {chunks} text chunks (want {PACED_TOKENS})")
            return
        kinds = [frame[1] for frame in result.frames]
        if kinds[0] != "start" or kinds[-1] != "done":
            raise RuntimeError(f"paced stream frames: {kinds}")
        deltas = [frame[3] for frame in result.frames if frame[1] == "delta"]
        if any(delta.get("reasoning_content") for delta in deltas):
            raise RuntimeError("thinking was meant to be off, but reasoning_content arrived")
        usage = result.frames[-1][3].get("usage") or {}
        if usage.get("completion_tokens") != PACED_TOKENS:
            raise RuntimeError(f"expected {PACED_TOKENS} completion tokens, usage says {usage}")


def _carries_text(line: str) -> bool:
    if not line.startswith("data:") or line.endswith("[DONE]"):
        return False
    try:
        choices = json.loads(line[5:]).get("choices") or []
    except ValueError:
        return False
    delta = choices[0].get("delta", {}) if choices else {}
    return bool(delta.get("content") or delta.get("reasoning_content"))


def gateway_nodelay(gateway: Any) -> bool | None:
    """Whether the gateway's accepted connections get TCP_NODELAY (asyncio sets it only on sockets created
    with ``IPPROTO_TCP``; accepted sockets inherit the listening socket's proto). None: cannot tell."""
    sockets = [getattr(gateway, name, None) for name in ("_ws_socket", "_http_socket")]
    if not all(isinstance(sock, socket.socket) for sock in sockets):
        return None
    return all(sock.proto == socket.IPPROTO_TCP for sock in sockets)


@contextlib.contextmanager
def tcp_gateway_sockets() -> Iterator[None]:
    """Diagnostic (``--nodelay-gateway``): bind the local servers' sockets with ``IPPROTO_TCP``."""
    import seekless_local.servers as servers
    import seekless_local.ws_gateway as ws_gateway

    original = servers.bind

    def bind(host: str, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.set_inheritable(True)
        return sock

    servers.bind = ws_gateway.bind = bind
    try:
        yield
    finally:
        servers.bind = ws_gateway.bind = original


@contextlib.contextmanager
def ws_stack() -> Iterator[tuple[Any, Any, Any, PostCounter]]:
    import httpx
    from websockets.sync.client import connect

    from seekless_local.stack import LocalStack, StackConfig

    with (
        LocalStack(StackConfig(rest_port=0, ws_port=0)) as stack,
        connect(stack.ws_url, additional_headers={"Authorization": "Bearer " + stack.dev_api_key}) as ws,
        httpx.Client(transport=httpx.HTTPTransport(socket_options=NODELAY), timeout=RECV_TIMEOUT) as client,
    ):
        if stack.emulator is None:
            raise RuntimeError("the WebSocket benchmark needs the DeepSeek emulator: unset DEEPSEEK_API_KEY")
        yield stack, ws, client, PostCounter(stack.ws_gateway)


# -- per-hop timestamps (--hops) ------------------------------------------------------------------

#: (where, attribute, label): the hops of one chat request, in the order they happen.
HOPS = (
    ("seekless_local.ws_gateway:WebSocketGateway", "_on_message", "gateway: message → $default/chat route"),
    ("seekless.ws.service:WsService", "handle", "route handler: WsService.handle"),
    ("seekless.chat:ChatService", "prepare", "ChatService.prepare (validation)"),
    ("seekless.adapters.invoker:LambdaInvoker", "invoke_async", "boto3 lambda.invoke (Event)"),
    ("seekless_local.ws_gateway:WebSocketGateway", "_lambda_invoke", "gateway: Invoke API (202)"),
    ("seekless.ws.generator:Generator", "run", "generator: Generator.run"),
    ("seekless.ws.generator:FrameEmitter", "emit", "generator: FrameEmitter.emit (Redis log + POST)"),
    ("seekless.adapters.apigw:ApiGatewayNotifier", "post", "boto3 post_to_connection"),
    ("seekless.chat:ChatService", "stream", "ChatService.stream (upstream until first event)"),
    ("seekless_local.emulator:EmulatorApp", "_chat", "emulator: /chat/completions"),
)


class HopRecorder:
    """Wraps the stack's functions (class attributes, in this process only) to timestamp each hop."""

    def __init__(self) -> None:
        self.events: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._restore: list[tuple[Any, str, Any]] = []

    def _mark(self, label: str) -> None:
        now = time.perf_counter()
        with self._lock:
            self.events.append((now, label))

    def install(self) -> None:
        import importlib
        import inspect

        for where, attribute, label in HOPS:
            module_name, _, class_name = where.partition(":")
            owner = getattr(importlib.import_module(module_name), class_name)
            original = owner.__dict__[attribute]
            if inspect.iscoroutinefunction(original):

                async def wrapped(
                    *args: Any, _o: Any = original, _l: str = label, _m: Any = self._mark, **kwargs: Any
                ) -> Any:
                    _m(_l + " >")
                    try:
                        return await _o(*args, **kwargs)
                    finally:
                        _m(_l + " <")
            else:

                def wrapped(
                    *args: Any, _o: Any = original, _l: str = label, _m: Any = self._mark, **kwargs: Any
                ) -> Any:
                    _m(_l + " >")
                    try:
                        return _o(*args, **kwargs)
                    finally:
                        _m(_l + " <")

            setattr(owner, attribute, functools.wraps(original)(wrapped))
            self._restore.append((owner, attribute, original))

    def uninstall(self) -> None:
        for owner, attribute, original in reversed(self._restore):
            setattr(owner, attribute, original)
        self._restore.clear()

    def take(self) -> list[tuple[float, str]]:
        with self._lock:
            events, self.events = self.events, []
        return events


def hop_lines(cases: WsCases, count: int) -> list[str]:
    """Median time of each hop's start (>) and end (<), in ms after the send, over ``count`` requests."""
    recorder = HopRecorder()
    recorder.install()
    timelines: list[dict[str, float]] = []
    try:
        for index in range(count):
            recorder.take()
            received = cases.ws_whole(index)()
            time.sleep(0.05)  # the generator's last POST returns after the client has its `done`
            events = recorder.take()
            timeline: dict[str, float] = {}
            seen: dict[str, int] = {}
            for at, label in events:
                seen[label] = seen.get(label, 0) + 1
                timeline[f"{label} #{seen[label]}"] = (at - received.sent) * 1000
            for at, kind, _, _ in received.frames:
                seen[kind] = seen.get(kind, 0) + 1
                timeline[f"client: {kind} frame received #{seen[kind]}"] = at * 1000
            timelines.append(timeline)
    finally:
        recorder.uninstall()
    keys = {key for timeline in timelines for key in timeline}
    medians = sorted(
        (statistics.median(t[key] for t in timelines if key in t), key)
        for key in keys
        if all(key in t for t in timelines)
    )
    lines = [f"Per-hop timeline of a chat request (median ms after the client's send, {count} requests):"]
    lines += [f"  {value:8.2f}  {key}" for value, key in medians]
    return [*lines, ""]


# -- the run ----------------------------------------------------------------------------------------


def run(quick: bool = False, *, hops: int = 0, nodelay_gateway: bool = False) -> list[Section]:
    plan = QUICK if quick else FULL
    started = time.monotonic()
    with (
        open(os.devnull, "w") as sink,
        contextlib.redirect_stdout(sink),  # Powertools' EMF lines (CloudWatch Logs on AWS)
        warnings.catch_warnings(),
        tcp_gateway_sockets() if nodelay_gateway else contextlib.nullcontext(),
        ws_stack() as (stack, ws, client, counter),
    ):
        warnings.filterwarnings("ignore", message="No application metrics to publish")
        cases = WsCases(stack, ws, client)

        stack.emulator.configure(ttft_ms=0, tps=0)
        first = interleave(
            {"direct": cases.direct_first_chunk, "websocket": cases.ws_first_delta},
            rounds=plan.rounds,
            warmup=plan.warmup,
            check=cases.check_first,
        )
        hop_report = hop_lines(cases, hops) if hops else []

        stack.emulator.configure(ttft_ms=0, tps=PACED_TPS, tokens=PACED_TOKENS)
        cases.model, cases.thinking = PACED_MODEL, "disabled"
        streams: list[Received] = []
        posts: list[list[int] | None] = []
        marks: dict[str, int] = {}

        def keep(name: str, result: Any) -> None:
            cases.check_whole(name, result)
            if name == "websocket":
                streams.append(result)
                posts.append(counter.since(marks["websocket"]))

        def whole_ws(index: int) -> Callable[[], Received]:
            call = cases.ws_whole(index)

            def counted() -> Received:
                marks["websocket"] = counter.mark()
                return call()

            return counted

        try:
            whole = interleave(
                {"direct": cases.direct_whole, "websocket": whole_ws},
                rounds=plan.streams,
                warmup=1,
                check=keep,
            )
        finally:
            stack.emulator.configure(ttft_ms=0, tps=0, tokens=24)
        redis_kind = stack.redis.kind if stack.redis is not None else "unknown"
        nodelay = gateway_nodelay(stack.ws_gateway)
    seconds = time.monotonic() - started
    timed = streams[-plan.streams :]
    timed_posts = posts[-plan.streams :]
    return [
        ttft_section(first, plan, redis_kind, seconds, hop_report, nodelay),
        frames_section(whole, timed, timed_posts, plan),
    ]


def ttft_section(
    samples: dict[str, list[float]],
    plan: Plan,
    redis_kind: str,
    seconds: float,
    hop_report: list[str],
    nodelay: bool | None,
) -> Section:
    direct, websocket = summarize(samples["direct"]), summarize(samples["websocket"])
    added_p50, added_p99 = websocket.p50 - direct.p50, websocket.p99 - direct.p99
    rows = [
        Row(
            "time to first token, p50",
            ms(websocket.p50),
            ms(direct.p50),
            f"+{ms(added_p50)} ({times(ratio(websocket.p50, direct.p50))})",
            f"added ≤ {ADDED_TTFT_P50_MS:g} ms",
            added_p50 <= ADDED_TTFT_P50_MS,
        ),
        Row(
            "time to first token, p99",
            ms(websocket.p99),
            ms(direct.p99),
            f"+{ms(added_p99)} ({times(ratio(websocket.p99, direct.p99))})",
        ),
    ]
    notes = [
        f"{plan.rounds} interleaved rounds (direct, websocket) after {plan.warmup} warm-up rounds (more than the "
        "gateway's 8 execution environments per function, so every environment is warm), concurrency 1, one "
        "WebSocket connection; every request sends a message never sent before. The emulator answers with no "
        "latency (`ttft_ms=0`, `tps=0`: the whole answer at once), so the difference is what the path adds.",
        'websocket: from `ws.send` of `{"action": "chat", ...}` (model `deepseek-flash`, thinking on by '
        "default) to the first `delta` frame, through the real local stack (`LocalStack`): the local gateway hop, "
        "the chat route's handler (validation, request id claimed in Redis), the asynchronous hand-off to the "
        "generator through the gateway's Lambda Invoke API (boto3, `InvocationType: Event`), the generator "
        "(`start` frame, upstream call over httpx, coalescer), the Redis request log written before every frame, "
        "and each frame's `post_to_connection` (boto3) back through the gateway's @connections API.",
        "direct: a streaming `httpx` POST of the same upstream body (`deepseek-flash`, thinking enabled, "
        "`max_tokens` 4096, the tenant's `user_id`, `stream: true`) to the same emulator on a kept-alive "
        "connection with TCP_NODELAY, timed to the first SSE chunk carrying `content` or `reasoning_content`.",
        "Excluded: AWS's network hops (client ↔ API Gateway, API Gateway ↔ Lambda, Lambda's async invoke queue, "
        "the @connections endpoint, TLS), cold starts, X-Ray and the EMF flush (disabled by environment). Included "
        "and unlike AWS: every function, the gateway, the emulator and the client share one Python process (one "
        f"GIL) on this machine, and Redis is a plain local {redis_kind}. The WebSocket benchmark took "
        f"{seconds:.0f} s; `--hops N` prints where the time goes.",
    ]
    if nodelay is False:
        notes.append(
            "The local gateway's listening sockets are not created with `IPPROTO_TCP` (`seekless_local.servers.bind`), "
            "so asyncio does not set TCP_NODELAY on the connections it accepts: after the `start` frame, the first "
            "`delta` waits in Nagle's buffer for the client's delayed ACK (tens of ms). `--nodelay-gateway` measures "
            "the same path with those sockets created as TCP (a patch in this process only)."
        )
    elif nodelay:
        notes.append("The local gateway's sockets are TCP sockets, so the connections it accepts have TCP_NODELAY.")
    return Section(title="WebSocket path: added time to first token", rows=rows, notes=notes, extra=hop_report)


def frames_section(
    samples: dict[str, list[float]], streams: Sequence[Received], posts: Sequence[list[int] | None], plan: Plan
) -> Section:
    frame_counts = [len(stream.frames) for stream in streams]
    delta_counts = [sum(1 for frame in stream.frames if frame[1] == "delta") for stream in streams]
    largest = max(frame[2] for stream in streams for frame in stream.frames)
    counted = [len(sizes) for sizes in posts if sizes is not None]
    largest_post = max((size for sizes in posts if sizes for size in sizes), default=None)
    worst = max(counted) if counted else max(frame_counts)
    direct, websocket = summarize(samples["direct"]), summarize(samples["websocket"])
    at_gateway = (
        f"{min(counted)}-{max(counted)} at the gateway"
        if counted and min(counted) != max(counted)
        else (f"{counted[0]} at the gateway" if counted else "not counted at the gateway")
    )
    rows = [
        Row(
            f"`post_to_connection` calls per response ({PACED_TOKENS} deltas {X} {1000 / PACED_TPS:g} ms), worst",
            f"{worst} ({at_gateway}; client got {min(frame_counts)}-{max(frame_counts)} frames)",
            f"{PACED_TOKENS} upstream deltas",
            f"{ratio(worst, PACED_TOKENS):.2f} per delta",
            f"≤ {POSTS_PER_RESPONSE}",
            worst <= POSTS_PER_RESPONSE,
        ),
        Row(
            "largest frame",
            f"{largest} B" + (f" (largest POST body {largest_post} B)" if largest_post is not None else ""),
            "-",
            "-",
            f"≤ {FRAME_MAX_BYTES // 1024} KB",
            largest <= FRAME_MAX_BYTES and (largest_post is None or largest_post <= FRAME_MAX_BYTES),
        ),
        Row(
            "wall time, send → `done`, p50",
            ms(websocket.p50),
            f"{ms(direct.p50)} (direct stream to `[DONE]`)",
            f"+{ms(websocket.p50 - direct.p50)}",
        ),
    ]
    notes = [
        f"{plan.streams} interleaved streams (direct, websocket) after 1 warm-up of each. The emulator paces "
        f"{PACED_TOKENS} content tokens at {PACED_TPS:g} tokens/s (`tps={PACED_TPS:g}, tokens={PACED_TOKENS}`), "
        "model `deepseek-chat` (thinking off): the direct stream is checked to carry exactly "
        f"{PACED_TOKENS} text chunks, and the WebSocket stream's `done` to report {PACED_TOKENS} completion tokens "
        "with no reasoning.",
        "Every frame the client receives is one `post_to_connection`; the gateway's @connections POSTs are counted "
        "too (by wrapping the local gateway's handler in this process: it keeps no counter). Frames per response: "
        f"`start`, the coalesced `delta`s ({min(delta_counts)}-{max(delta_counts)}), `done`. Sizes are the UTF-8 "
        "bytes of each frame.",
    ]
    return Section(title="WebSocket path: frames per streamed response", rows=rows, notes=notes)


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="The WebSocket path against the local stack.")
    parser.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run; noisier numbers)")
    parser.add_argument("--hops", type=int, default=0, metavar="N", help="also time each hop of N chat requests")
    parser.add_argument(
        "--nodelay-gateway",
        action="store_true",
        help="diagnostic: create the local gateway's sockets as TCP sockets, so accepted connections get TCP_NODELAY",
    )
    args = parser.parse_args(argv)
    print_sections(run(args.quick, hops=args.hops, nodelay_gateway=args.nodelay_gateway))


if __name__ == "__main__":
    main()
