"""Open-loop load against the local stack: a mix of REST chats (cache misses and hits), REST SSE
streams, WebSocket chats and session turns, stepped up in rate to find what this machine sustains.

Run alone with ``python -m bench.load [--quick] [--rates 4,8,16] [--mix miss=3,hit=3,stream=1,ws=2,session=1]``
(``make load``). Three processes share the machine:

- this one, the load generator: one asyncio loop, ``httpx.AsyncClient`` for REST and the direct calls,
  ``websockets`` for the WebSocket chats;
- the DeepSeek emulator, a child process (DeepSeek is elsewhere), with a realistic upstream latency:
  ``ttft_ms`` before the first token, then ``tps`` tokens per second;
- the local stack, a child process running ``seekless_local.stack.LocalStack`` as ``make dev`` does (the
  REST gateway, the WebSocket gateway and every function on warm execution-environment threads, one
  GIL), with its own moto and redis-server children, pointed at that emulator. In this process it would
  share the generator's GIL, and each would slow the other's clock.

**Open loop.** Arrivals follow a schedule drawn before the step starts (Poisson by default, or a fixed
rate), each started at its time whatever the earlier ones are doing, and every latency is measured from
the *scheduled* send time: a stall in the system under test shows up as latency of every request that
was due during it, instead of silently delaying the next sends (coordinated omission). The generator's
own lateness (start - scheduled) is reported, so that a generator that cannot keep up is seen.

**Baseline.** Each rate step runs the same schedule twice, back to back: first straight to the emulator
(each kind's upstream equivalent: a non-streamed or streamed POST of the body seekless would send, a
session turn with its whole history), then through the stack. Ratios compare the two at the same step.

**Tool: a small asyncio driver, not locust.** Locust is a fine tool for closed-loop user simulations,
but what this needs is the part it does not do: a locust user runs its tasks one after another, so a slow
response delays that user's next arrival, and its clock starts when the request is actually sent; open
loop there means spawning a greenlet per arrival and timing from our own schedule by hand, which is most
of this file anyway. It has no WebSocket client (the chat frames need one: time to first delta and to
``done``), and it would add gevent (monkey-patching sockets under httpx and asyncio), Flask and a dozen
more packages to the dev tools. The scheduling here is a few lines; the HTTP and WebSocket clients are
httpx and websockets, both dev dependencies already; the statistics are ``bench.common``'s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import itertools
import json
import math
import os
import random
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import REPO_ROOT, Row, Section, X, load_average, ms, percentile, print_sections, ratio, times

NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
MODEL = "deepseek-flash"  # thinking on by default: reasoning then content
MAX_TOKENS = 256
EMULATOR_KEY = "sk-emulator-load"
REQUEST_TIMEOUT = 30.0  # API Gateway's 29 s integration timeout, and a second more
PROMPTS = 64  # the cache-hit kind repeats these, picked by a Zipf law
ZIPF_S = 1.1
SESSION_TURNS = 4  # a session gets this many turns, then a new one is created
ENVIRONMENTS = 16  # execution environments per function in the stack (AWS scales them out; make dev has 4 / 8)


@dataclass(frozen=True)
class Upstream:
    """The emulator's latency: ``ttft_ms``, then ``tps`` tokens per second (``reasoning_tokens`` + ``tokens``)."""

    ttft_ms: float = 200.0
    tps: float = 80.0
    tokens: int = 24
    reasoning_tokens: int = 8

    @property
    def answer_ms(self) -> float:
        return self.ttft_ms + 1000 * (self.tokens + self.reasoning_tokens) / self.tps

    def config(self) -> dict[str, Any]:
        return {
            "ttft_ms": self.ttft_ms,
            "tps": self.tps,
            "tokens": self.tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "keepalive_ms": 0,
        }


#: kind → what it is, in the report.
KINDS: dict[str, str] = {
    "miss": "REST chat, cache miss",
    "hit": "REST chat, cache hit",
    "stream": "REST SSE stream",
    "ws": "WebSocket chat",
    "session": "session turn",
}
DEFAULT_MIX: dict[str, float] = {"miss": 3, "hit": 3, "stream": 1, "ws": 2, "session": 1}

#: measure → (kind, label). Each arrival of a kind yields the measures of that kind.
MEASURES: dict[str, tuple[str, str]] = {
    "miss": ("miss", "REST chat, cache miss"),
    "hit": ("hit", "REST chat, cache hit"),
    "stream.first": ("stream", "REST SSE stream, first text chunk"),
    "stream.done": ("stream", "REST SSE stream, `[DONE]`"),
    "ws.first": ("ws", "WebSocket chat, first `delta`"),
    "ws.done": ("ws", "WebSocket chat, `done`"),
    "session.turn": ("session", "session turn"),
    "session.create": ("session", "session create (`POST /v1/sessions`)"),
}
#: The direct equivalent of each measure (None: nothing upstream to compare with).
DIRECT_OF: dict[str, str | None] = {
    "miss": "miss",
    "hit": "hit",  # the same call to the emulator: what the cache saves
    "stream.first": "stream.first",
    "stream.done": "stream.done",
    "ws.first": "ws.first",
    "ws.done": "ws.done",
    "session.turn": "session.turn",
    "session.create": None,
}

#: Measures the knee ignores: the first chunk of a REST SSE stream comes with the last by design (Mangum
#: buffers a Lambda's whole response; token streaming goes over WebSocket), so it is the `[DONE]` figure.
UNBOUNDED = frozenset({"stream.first"})
# The bound of the knee: each measure's p99 at most this much above the direct call's p99 at the same step
# (the absolute p99 where there is no direct call), and no error.
P99_ADDED_BOUND_MS = 250.0


@dataclass(frozen=True)
class Plan:
    rates: tuple[float, ...]
    seconds: float  # per phase (direct, then seekless) of each step
    warmup: int  # concurrent calls of each kind before the ramp
    cost_calls: int = 8  # calls of each kind alone, for its CPU per request ...
    cost_repeats: int = 3  # ... in this many rounds (the median)


FULL = Plan(rates=(2.0, 4.0, 6.0, 8.0, 10.0), seconds=12.0, warmup=ENVIRONMENTS)
QUICK = Plan(rates=(2.0, 4.0), seconds=5.0, warmup=8, cost_repeats=1)


# -- the schedule (pure) ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Arrival:
    at: float  # seconds after the phase starts
    kind: str
    serial: int


def arrival_times(rate: float, seconds: float, rng: random.Random, *, poisson: bool = True) -> list[float]:
    """Send times in ``[0, seconds)``: a Poisson process of ``rate`` per second, or one every ``1 / rate``."""
    if rate <= 0 or seconds <= 0:
        raise ValueError("rate and seconds must be positive")
    if not poisson:
        return [index / rate for index in range(math.ceil(rate * seconds - 1e-9))]
    times_: list[float] = []
    at = rng.expovariate(rate)
    while at < seconds:
        times_.append(at)
        at += rng.expovariate(rate)
    return times_


def parse_mix(text: str) -> dict[str, float]:
    """``"miss=3,hit=3,ws=2"`` → weights per kind (kinds left out weigh 0)."""
    mix: dict[str, float] = {}
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in KINDS:
            raise ValueError(f"mix entries are kind=weight with kind one of {', '.join(KINDS)}: {part!r}")
        weight = float(value)
        if not weight >= 0 or math.isinf(weight):
            raise ValueError(f"weight of {name} must be a finite number >= 0")
        mix[name] = weight
    if not any(mix.values()):
        raise ValueError("the mix needs at least one kind with a positive weight")
    return mix


def schedule(
    rate: float, seconds: float, mix: Mapping[str, float], rng: random.Random, *, poisson: bool = True
) -> list[Arrival]:
    """One phase's arrivals: send times, and a kind drawn for each by the mix's weights."""
    kinds = [kind for kind, weight in mix.items() if weight > 0]
    weights = [mix[kind] for kind in kinds]
    at = arrival_times(rate, seconds, rng, poisson=poisson)
    drawn = rng.choices(kinds, weights, k=len(at))
    return [Arrival(when, kind, serial) for serial, (when, kind) in enumerate(zip(at, drawn, strict=True))]


class Zipf:
    """Picks ``0..n-1`` with probability proportional to ``1 / (rank + 1) ** s``: a few prompts are asked
    often, most rarely (the shape of real repeated questions)."""

    def __init__(self, n: int, s: float, rng: random.Random) -> None:
        if n < 1 or s < 0:
            raise ValueError("n must be >= 1 and s >= 0")
        self.weights = [1 / (rank + 1) ** s for rank in range(n)]
        self.cumulative = list(itertools.accumulate(self.weights))
        self.rng = rng

    def pick(self) -> int:
        return self.rng.choices(range(len(self.weights)), cum_weights=self.cumulative, k=1)[0]


# -- results and the knee (pure) -------------------------------------------------------------------


@dataclass
class Phase:
    """One phase of a step: every arrival's measures (ms after its scheduled time) or its error."""

    target: str  # "seekless" | "direct"
    rate: float
    seconds: float
    arrivals: int = 0
    due: list[float] = field(default_factory=list)  # each arrival's send time, s after the phase start
    done: list[float] = field(default_factory=list)  # each answer's end, s after the phase start
    samples: dict[str, list[float]] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)  # "kind: what" → count
    lags: list[float] = field(default_factory=list)  # ms the generator started each arrival late
    cache: Counter[str] = field(default_factory=Counter)  # "kind: x-seekless-cache" → count

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def offered(self) -> float:
        """Arrivals per second of this phase's schedule (a Poisson draw: near, not at, the step's rate)."""
        return self.arrivals / self.seconds

    @property
    def achieved(self) -> float:
        """Whole answers per second of schedule: the offered rate less the errors. A stack that falls
        behind still answers everything in the end; its p99 (from the scheduled sends) is what shows it."""
        return len(self.done) / self.seconds

    def p(self, measure: str, q: float) -> float | None:
        values = self.samples.get(measure)
        return percentile(values, q) if values else None


@dataclass
class Step:
    rate: float
    direct: Phase
    seekless: Phase
    cpu: dict[str, float] = field(default_factory=dict)  # process → CPU seconds per seekless arrival
    cores: dict[str, float] = field(default_factory=dict)  # process → cores busy over the seekless phase


def judge(step: Step, *, bound_ms: float = P99_ADDED_BOUND_MS) -> list[str]:
    """Why this step is past what the machine sustains ([] when it is within it)."""
    reasons: list[str] = []
    seekless, direct = step.seekless, step.direct
    if seekless.error_count:
        reasons.append(f"{seekless.error_count} errors")
    if direct.error_count:
        reasons.append(f"{direct.error_count} errors calling the emulator directly")
    for measure in MEASURES:
        if measure in UNBOUNDED:
            continue
        value = seekless.p(measure, 99)
        if value is None:
            continue
        baseline_name = DIRECT_OF[measure]
        baseline = direct.p(baseline_name, 99) if baseline_name else 0.0
        if baseline is None:
            continue
        if value - baseline > bound_ms:
            reasons.append(f"{measure} p99 +{value - baseline:.0f} ms")
    return reasons


def knee(steps: Sequence[Step], **bounds: float) -> Step | None:
    """The highest step at or below which every step is within the bound (the ramp is cut at the first
    one past it: a later step that passes again is luck, not capacity). None when the first step fails."""
    best: Step | None = None
    for step in sorted(steps, key=lambda s: s.rate):
        if judge(step, **bounds):
            break
        best = step
    return best


# -- process CPU (from /proc) ----------------------------------------------------------------------


def cpu_ticks(stat: str) -> int:
    """utime + stime (clock ticks) from the text of /proc/PID/stat (the command name may hold spaces)."""
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of the line, counted after the name


def _parent_pid(stat: str) -> int:
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def process_tree_cpu(pid: int) -> dict[int, float]:
    """CPU seconds so far of ``pid`` and each of its descendants (empty where there is no /proc)."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    stats: dict[int, str] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            stats[int(entry.name)] = (entry / "stat").read_text()
    children: dict[int, list[int]] = {}
    for child, text in stats.items():
        children.setdefault(_parent_pid(text), []).append(child)
    found: dict[int, float] = {}
    pending = [pid]
    while pending:
        current = pending.pop()
        if current in stats:
            found[current] = cpu_ticks(stats[current]) / tick
            pending.extend(children.get(current, []))
    return found


def _process_name(pid: int) -> str:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return str(pid)
    text = " ".join(part.decode(errors="replace") for part in command if part)
    if "moto_server" in text:
        return "moto"
    if "redis-server" in text:
        return "redis-server"
    if "emulator" in text:
        return "emulator"
    if "--serve-stack" in text:
        return "stack"
    return Path(command[0].decode(errors="replace")).name if command and command[0] else str(pid)


class CpuMeter:
    """CPU seconds of named processes (the stack with its children, the emulator, this generator)."""

    def __init__(self, roots: Mapping[str, int]) -> None:
        self.roots = dict(roots)

    def read(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for label, pid in self.roots.items():
            for child, seconds in process_tree_cpu(pid).items():
                name = label if child == pid else _process_name(child)
                totals[name] = totals.get(name, 0.0) + seconds
        return totals


# -- the processes ----------------------------------------------------------------------------------


@contextlib.contextmanager
def profiled_threads(path: str | None) -> Iterator[None]:
    """cProfile, in CPU time (``time.thread_time``), every thread started in the block and this one, into
    one pstats file (``--profile-stack``): start-up and warm-up included, so read per-call figures.

    Each thread gets its own profiler on its first profiling event (``threading.setprofile``).
    """
    if not path:
        yield
        return
    import cProfile
    import pstats
    import threading

    profiles: list[cProfile.Profile] = []

    def start(*_: Any) -> None:
        profiler = cProfile.Profile(time.thread_time)
        profiles.append(profiler)
        profiler.enable()  # replaces this hook for the thread

    threading.setprofile(start)
    start()
    try:
        yield
    finally:
        threading.setprofile(None)
        merged: pstats.Stats | None = None
        for profiler in profiles:
            profiler.disable()  # this thread's; the others ended with the stack
            with contextlib.suppress(TypeError):  # a thread that never ran Python code
                merged = pstats.Stats(profiler) if merged is None else merged.add(profiler)
        if merged is not None:
            merged.dump_stats(path)


def serve_stack(emulator_url: str, environments: int, profile: str | None = None) -> None:
    """The child: the local stack as ``make dev`` runs it (no worker, no SQS pollers: this mix uses
    neither), pointed at the emulator child; prints where it is as one JSON line, then runs until its
    standard input closes."""
    from seekless_local.stack import LocalStack, StackConfig

    config = StackConfig(
        rest_port=0,
        ws_port=0,
        deepseek_api_key=EMULATOR_KEY,
        deepseek_base_url=emulator_url,
        environments=environments,
        ws_environments=environments,
        worker=False,
        event_sources=False,
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.stdin.close())
    with profiled_threads(profile), LocalStack(config) as stack:
        assert stack.redis is not None
        where = {
            "rest_url": stack.rest_url,
            "ws_url": stack.ws_url,
            "api_key": stack.dev_api_key,
            "redis": stack.redis.kind,
        }
        print(json.dumps(where), flush=True)
        # Powertools writes EMF lines to stdout now and then: nobody reads this pipe any more.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        with contextlib.suppress(OSError, ValueError):
            sys.stdin.read()


@dataclass
class StackChild:
    process: subprocess.Popen[str]
    rest_url: str
    ws_url: str
    api_key: str
    redis: str
    log: Path


@contextlib.contextmanager
def stack_child(emulator_url: str, environments: int, profile: str | None = None) -> Iterator[StackChild]:
    descriptor, name = tempfile.mkstemp(prefix="seekless-load-stack-", suffix=".log")
    os.close(descriptor)
    log = Path(name)
    failed = True  # until the run ends well: then the child's log goes, else it stays to be read
    with open(log, "w") as errors:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.load",
                "--serve-stack",
                emulator_url,
                "--environments",
                str(environments),
                *(["--profile-stack", profile] if profile else []),
            ],
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"the stack child exited before it was up; its log: {log}\n{log.read_text()[-3000:]}")
        where = json.loads(line)
        yield StackChild(process, where["rest_url"], where["ws_url"], where["api_key"], where["redis"], log)
        failed = False
    finally:
        with contextlib.suppress(OSError):
            if process.stdin is not None:
                process.stdin.close()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if not failed:
            log.unlink(missing_ok=True)


# -- the driver --------------------------------------------------------------------------------------


class Failed(Exception):
    """An arrival that did not get a whole, well-formed answer; the message is the error's kind."""


def http_error(status: int, body: bytes) -> Failed:
    code = None
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        code = json.loads(body).get("error", {}).get("code")
    return Failed(f"HTTP {status}" + (f" {code}" if code else ""))


def classify(exc: BaseException) -> str:
    """What went wrong, in a word or three: status and error code, dropped connection, timeout."""
    import httpx
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    if isinstance(exc, Failed):
        return str(exc)
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.ConnectError | ConnectionRefusedError):
        return "connect refused"
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | ConnectionResetError):
        return "dropped connection"
    if isinstance(exc, InvalidStatus):
        return f"WebSocket handshake HTTP {exc.response.status_code}"
    if isinstance(exc, ConnectionClosed):
        code = exc.rcvd.code if exc.rcvd is not None else None
        return f"WebSocket closed ({code})" if code else "WebSocket dropped"
    return type(exc).__name__


def _text_chunk(line: str) -> bool:
    if not line.startswith("data:") or line.endswith("[DONE]"):
        return False
    with contextlib.suppress(ValueError, AttributeError, IndexError, TypeError):
        delta = json.loads(line[5:])["choices"][0].get("delta") or {}
        return bool(delta.get("content") or delta.get("reasoning_content"))
    return False


@dataclass
class _Session:
    id: str  # a session id (seekless) or a label (direct)
    turns: int = 0
    history: list[dict[str, str]] = field(default_factory=list)  # direct only: the conversation so far


class Driver:
    """Sends one arrival of any kind, to the stack (``seekless``) or straight to the emulator (``direct``)."""

    def __init__(self, stack: StackChild, emulator_url: str, seed: int) -> None:
        import httpx

        self.stack = stack
        self.nonce = secrets.token_hex(4)
        self.rng = random.Random(seed)
        self.zipf = Zipf(PROMPTS, ZIPF_S, self.rng)
        self.serial = itertools.count()
        limits = httpx.Limits(max_connections=2000, max_keepalive_connections=500)
        timeout = httpx.Timeout(REQUEST_TIMEOUT, connect=5.0)
        self.rest = httpx.AsyncClient(
            base_url=stack.rest_url,
            headers={"authorization": f"Bearer {stack.api_key}"},
            transport=httpx.AsyncHTTPTransport(socket_options=NODELAY, limits=limits),
            timeout=timeout,
        )
        self.direct = httpx.AsyncClient(
            base_url=emulator_url,
            headers={"authorization": f"Bearer {EMULATOR_KEY}"},
            transport=httpx.AsyncHTTPTransport(socket_options=NODELAY, limits=limits),
            timeout=timeout,
        )
        # The upstream user id seekless sends for the dev tenant (seekless.models.Principal).
        self.user_id = "t_" + hashlib.sha256(b"dev").hexdigest()[:40]
        self.idle_ws: deque[Any] = deque()
        self.sessions: dict[str, deque[_Session]] = {"seekless": deque(), "direct": deque()}

    async def close(self) -> None:
        while self.idle_ws:
            with contextlib.suppress(Exception):
                await self.idle_ws.popleft().close()
        await self.rest.aclose()
        await self.direct.aclose()

    # -- bodies ------------------------------------------------------------------------------------

    def unique(self, kind: str) -> str:
        return f"load {self.nonce} {kind} {next(self.serial)}: a question never asked before"

    def prompt(self, rank: int) -> str:
        return f"load {self.nonce} cached question {rank}: what is worth caching?"

    def body(self, text: str | list[dict[str, str]], **extra: Any) -> dict[str, Any]:
        messages = [{"role": "user", "content": text}] if isinstance(text, str) else text
        return {"model": MODEL, "messages": messages, "max_tokens": MAX_TOKENS, **extra}

    def upstream_body(self, messages: list[dict[str, str]], *, stream: bool) -> dict[str, Any]:
        """What seekless sends DeepSeek for such a chat (seekless.chat.ChatService.prepare)."""
        return {
            "model": MODEL,
            "messages": messages,
            "max_tokens": MAX_TOKENS,
            "thinking": {"type": "enabled"},
            "user_id": self.user_id,
            "stream": stream,
        }

    # -- one arrival ---------------------------------------------------------------------------------

    async def send(self, target: str, kind: str, phase: Phase) -> dict[str, float]:
        """Run one arrival; returns the loop time at which each of its measures completed."""
        found: dict[str, float]
        if target == "direct":
            found = await getattr(self, f"_direct_{kind}")()
        else:
            found = await getattr(self, f"_seekless_{kind}")(phase)
        return found

    async def _post(self, client: Any, body: dict[str, Any], expect: int = 200) -> tuple[Any, dict[str, Any]]:
        response = await client.post("/v1/chat/completions" if client is self.rest else "/chat/completions", json=body)
        if response.status_code != expect:
            raise http_error(response.status_code, response.content)
        answer = response.json()
        if not isinstance(answer, dict) or not answer.get("choices"):
            raise Failed("answer without choices")
        return response, answer

    async def _stream(self, client: Any, path: str, body: dict[str, Any]) -> dict[str, float]:
        loop = asyncio.get_running_loop()
        first: float | None = None
        async with client.stream("POST", path, json=body) as response:
            if response.status_code != 200:
                raise http_error(response.status_code, await response.aread())
            async for line in response.aiter_lines():
                if first is None and _text_chunk(line):
                    first = loop.time()
                elif line.strip() == "data: [DONE]":
                    done = loop.time()
                    if first is None:
                        raise Failed("stream without text")
                    return {"stream.first": first, "stream.done": done}
        raise Failed("stream ended before [DONE]")

    def _note_cache(self, phase: Phase, kind: str, response: Any) -> None:
        phase.cache[f"{kind}: {response.headers.get('x-seekless-cache', 'none')}"] += 1

    async def _seekless_miss(self, phase: Phase) -> dict[str, float]:
        response, _ = await self._post(self.rest, self.body(self.unique("miss"), temperature=0))
        self._note_cache(phase, "miss", response)
        return {"miss": asyncio.get_running_loop().time()}

    async def _seekless_hit(self, phase: Phase) -> dict[str, float]:
        response, _ = await self._post(self.rest, self.body(self.prompt(self.zipf.pick()), temperature=0))
        self._note_cache(phase, "hit", response)
        return {"hit": asyncio.get_running_loop().time()}

    async def _seekless_stream(self, phase: Phase) -> dict[str, float]:
        return await self._stream(self.rest, "/v1/chat/completions", self.body(self.unique("stream"), stream=True))

    async def _direct_miss(self) -> dict[str, float]:
        await self._post(self.direct, self.upstream_body([{"role": "user", "content": self.unique("d")}], stream=False))
        return {"miss": asyncio.get_running_loop().time()}

    async def _direct_hit(self) -> dict[str, float]:
        text = self.prompt(self.zipf.pick())
        await self._post(self.direct, self.upstream_body([{"role": "user", "content": text}], stream=False))
        return {"hit": asyncio.get_running_loop().time()}

    async def _direct_stream(self) -> dict[str, float]:
        body = self.upstream_body([{"role": "user", "content": self.unique("d")}], stream=True)
        return await self._stream(self.direct, "/chat/completions", body)

    async def _direct_ws(self) -> dict[str, float]:
        found = await self._direct_stream()
        return {"ws.first": found["stream.first"], "ws.done": found["stream.done"]}

    async def _seekless_ws(self, phase: Phase) -> dict[str, float]:
        from websockets.asyncio.client import connect

        loop = asyncio.get_running_loop()
        # A chat page keeps its connection: reuse an idle one, else open one (its handshake is billed).
        ws = self.idle_ws.popleft() if self.idle_ws else None
        if ws is None:
            ws = await connect(
                self.stack.ws_url,
                additional_headers={"Authorization": f"Bearer {self.stack.api_key}"},
                open_timeout=REQUEST_TIMEOUT,
                max_size=None,
            )
        request_id = f"load-{self.nonce}-{next(self.serial)}"
        message = {
            "action": "chat",
            "request_id": request_id,
            "message": self.unique("ws"),
            "model": MODEL,
            "max_tokens": MAX_TOKENS,
        }
        first: float | None = None
        seen: list[str] = []
        kept = False
        try:
            # Its own deadline, inside the arrival's: a chat that stalls says how far it got.
            async with asyncio.timeout(REQUEST_TIMEOUT - 1):
                await ws.send(json.dumps(message, separators=(",", ":")))
                while True:
                    frame = json.loads(await ws.recv())
                    if frame.get("request_id") != request_id:
                        continue
                    kind = frame.get("type")
                    seen.append(str(kind))
                    if kind == "delta" and first is None:
                        first = loop.time()
                    elif kind == "done":
                        done = loop.time()
                        phase.cache[f"ws: {frame.get('cache')}"] += 1
                        if first is None:
                            raise Failed("WebSocket done without a delta")
                        self.idle_ws.append(ws)
                        kept = True
                        return {"ws.first": first, "ws.done": done}
                    elif kind == "error":
                        raise Failed(f"WebSocket error frame {frame.get('code')}")
        except TimeoutError:
            got = f"{seen[0]} and {len(seen) - 1} more frames" if seen else "no frame"
            raise Failed(f"WebSocket timeout after {got}") from None
        finally:
            if not kept:
                # In an unknown state (a frame may still come): never hand it to another chat.
                with contextlib.suppress(Exception):
                    await ws.close()

    async def _seekless_session(self, phase: Phase) -> dict[str, float]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        found: dict[str, float] = {}
        pool = self.sessions["seekless"]
        session = pool.popleft() if pool else None
        if session is None:
            response = await self.rest.post("/v1/sessions", json={"title": "load"})
            if response.status_code != 201:
                raise http_error(response.status_code, response.content)
            session = _Session(response.json()["id"])
            found["session.create"] = loop.time()
        sent = loop.time()
        response, _ = await self._post(self.rest, self.body(self.unique("turn"), session_id=session.id))
        self._note_cache(phase, "session", response)
        # The turn is timed from its own send: after a create, moved back by the create's time.
        found["session.turn"] = loop.time() - (sent - started)
        session.turns += 1
        if session.turns < SESSION_TURNS:
            pool.append(session)
        return found

    async def _direct_session(self) -> dict[str, float]:
        pool = self.sessions["direct"]
        session = pool.popleft() if pool else _Session(f"direct-{next(self.serial)}")
        messages = [*session.history, {"role": "user", "content": self.unique("dturn")}]
        _, answer = await self._post(self.direct, self.upstream_body(messages, stream=False))
        content = answer["choices"][0].get("message", {}).get("content") or ""
        session.history = [*messages, {"role": "assistant", "content": content}]
        session.turns += 1
        if session.turns < SESSION_TURNS:
            pool.append(session)
        return {"session.turn": asyncio.get_running_loop().time()}


async def _fire(driver: Driver, target: str, arrival: Arrival, due: float, start: float, phase: Phase) -> None:
    loop = asyncio.get_running_loop()
    phase.lags.append((loop.time() - due) * 1000)
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT):
            found = await driver.send(target, arrival.kind, phase)
    except Exception as exc:
        phase.errors[f"{arrival.kind}: {classify(exc)}"] += 1
        return
    phase.done.append(max(found.values()) - start)
    for measure, at in found.items():
        phase.samples.setdefault(measure, []).append((at - due) * 1000)


async def run_phase(driver: Driver, target: str, arrivals: Sequence[Arrival], rate: float, seconds: float) -> Phase:
    """Start every arrival at its scheduled time (never waiting for earlier ones), then wait for all."""
    loop = asyncio.get_running_loop()
    phase = Phase(target=target, rate=rate, seconds=seconds, arrivals=len(arrivals))
    start = loop.time() + 0.05
    tasks: set[asyncio.Task[None]] = set()
    for arrival in arrivals:
        due = start + arrival.at
        phase.due.append(arrival.at)
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = loop.create_task(_fire(driver, target, arrival, due, start, phase))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    while tasks:
        await asyncio.gather(*list(tasks))
    return phase


async def warm_up(driver: Driver, concurrency: int) -> Counter[str]:
    """Every environment of every function warm, the cache-hit prompts cached, every kind sent once."""
    errors: Counter[str] = Counter()

    async def one(target: str, kind: str) -> None:
        try:
            await _bounded(driver.send(target, kind, scratch))
        except Exception as exc:
            errors[f"{target} {kind}: {classify(exc)}"] += 1

    scratch = Phase("warm-up", 0, 1)
    for start in range(0, PROMPTS, concurrency):  # cache every prompt of the hit kind once
        await asyncio.gather(
            *(
                _bounded(driver._post(driver.rest, driver.body(driver.prompt(rank), temperature=0)))
                for rank in range(start, min(start + concurrency, PROMPTS))
            ),
            return_exceptions=True,
        )
    for kind in KINDS:
        # Four at a time until every environment has run once (the stack hands each call to the environment
        # idle longest), then all at once: cold starts piled up together take far longer on two cores than
        # on Lambda, where each has its own, and would time out.
        for width in [*([min(4, concurrency)] * math.ceil(concurrency / 4)), concurrency]:
            await asyncio.gather(*(one("seekless", kind) for _ in range(width)))
        await asyncio.gather(*(one("direct", kind) for _ in range(concurrency)))  # its connections open
    driver.sessions["seekless"].clear()
    driver.sessions["direct"].clear()
    return errors


async def _bounded(call: Awaitable[Any]) -> Any:
    async with asyncio.timeout(REQUEST_TIMEOUT):
        return await call


async def cpu_cost(
    driver: Driver, meter: CpuMeter, kinds: Sequence[str], count: int, repeats: int = 1
) -> dict[str, dict[str, float]]:
    """CPU milliseconds per request of each kind alone, by process: ``count`` calls 4 at a time, the
    median of ``repeats`` rounds (kind by kind within each round: drift in a shared machine hits all)."""
    rounds: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds}
    scratch = Phase("cost", 0, 1)
    for _ in range(repeats):
        for kind in kinds:
            before = meter.read()
            for start in range(0, count, 4):
                await asyncio.gather(
                    *(_bounded(driver.send("seekless", kind, scratch)) for _ in range(min(4, count - start))),
                    return_exceptions=True,
                )
            await asyncio.sleep(0.1)  # the generator's last frames, the stores after the answer
            after = meter.read()
            rounds[kind].append({name: (after[name] - before.get(name, 0.0)) * 1000 / count for name in after})
    return {
        kind: {name: statistics.median(r.get(name, 0.0) for r in taken) for name in taken[-1]}
        for kind, taken in rounds.items()
    }


@dataclass
class Run:
    steps: list[Step]
    upstream: Upstream
    mix: dict[str, float]
    plan: Plan
    poisson: bool
    environments: int
    redis: str
    warmup_errors: Counter[str]
    seconds: float
    load_before: str
    stopped_early: bool
    bound_ms: float = P99_ADDED_BOUND_MS
    costs: dict[str, dict[str, float]] = field(default_factory=dict)


async def ramp(
    stack: StackChild,
    emulator: Any,
    *,
    plan: Plan,
    mix: Mapping[str, float],
    poisson: bool,
    seed: int,
    meter: CpuMeter,
    bound_ms: float,
    log: Callable[[str], None],
) -> tuple[list[Step], Counter[str], bool, dict[str, dict[str, float]]]:
    driver = Driver(stack, emulator.base_url, seed)
    rng = random.Random(seed + 1)
    steps: list[Step] = []
    stopped_early = False
    costs: dict[str, dict[str, float]] = {}
    try:
        warm_errors = await warm_up(driver, plan.warmup)
        log(f"  warmed up ({sum(warm_errors.values())} errors)")
        costs = await cpu_cost(
            driver, meter, [kind for kind in KINDS if mix.get(kind)], plan.cost_calls, plan.cost_repeats
        )
        log(
            "  CPU ms per request: "
            + "; ".join(f"{k} " + ", ".join(f"{n} {v:.1f}" for n, v in sorted(c.items())) for k, c in costs.items())
        )
        for rate in plan.rates:
            arrivals = schedule(rate, plan.seconds, mix, rng, poisson=poisson)
            direct = await run_phase(driver, "direct", arrivals, rate, plan.seconds)
            before = meter.read()
            seekless = await run_phase(driver, "seekless", arrivals, rate, plan.seconds)
            after = meter.read()
            wall = max([plan.seconds, *seekless.done])
            used = {name: after[name] - before.get(name, 0.0) for name in after}
            step = Step(
                rate,
                direct,
                seekless,
                cpu={name: value / max(1, seekless.arrivals) for name, value in used.items()},
                cores={name: value / wall for name, value in used.items()},
            )
            steps.append(step)
            reasons = judge(step, bound_ms=bound_ms)
            log(
                f"  {rate:g}/s: {seekless.arrivals} arrivals, achieved {seekless.achieved:.1f}/s, "
                f"{seekless.error_count} errors; " + ("; ".join(reasons) if reasons else "within the bound")
            )
            if reasons:  # past the knee: a higher rate would only queue more
                stopped_early = rate != plan.rates[-1]
                break
    finally:
        await driver.close()
    return steps, warm_errors, stopped_early, costs


def run(
    quick: bool = False,
    *,
    rates: Sequence[float] | None = None,
    seconds: float | None = None,
    mix: Mapping[str, float] | None = None,
    upstream: Upstream | None = None,
    poisson: bool = True,
    seed: int = 7,
    environments: int = ENVIRONMENTS,
    bound_ms: float = P99_ADDED_BOUND_MS,
    profile: str | None = None,
) -> list[Section]:
    from bench.rest_latency import ChildEmulator

    plan = QUICK if quick else FULL
    if rates:
        plan = dataclasses.replace(plan, rates=tuple(sorted(rates)))
    if seconds:
        plan = dataclasses.replace(plan, seconds=seconds)
    mix = dict(mix or DEFAULT_MIX)
    upstream = upstream or Upstream()
    load_before = load_average()
    started = time.monotonic()

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    with ChildEmulator() as emulator, stack_child(emulator.base_url, environments, profile) as stack:
        emulator.configure(**upstream.config())
        roots = {"stack": stack.process.pid, "generator": os.getpid()}
        if emulator._process is not None:
            roots["emulator"] = emulator._process.pid
        meter = CpuMeter(roots)
        log(f"load: stack up (Redis: {stack.redis}); ramp {', '.join(f'{r:g}' for r in plan.rates)}/s")
        steps, warm_errors, stopped, costs = asyncio.run(
            ramp(
                stack,
                emulator,
                plan=plan,
                mix=mix,
                poisson=poisson,
                seed=seed,
                meter=meter,
                bound_ms=bound_ms,
                log=log,
            )
        )
        redis_kind = stack.redis
    result = Run(
        steps=steps,
        upstream=upstream,
        mix=mix,
        plan=plan,
        poisson=poisson,
        environments=environments,
        redis=redis_kind,
        warmup_errors=warm_errors,
        seconds=time.monotonic() - started,
        load_before=load_before,
        stopped_early=stopped,
        bound_ms=bound_ms,
        costs=costs,
    )
    return [load_section(result)]


# -- the report ----------------------------------------------------------------------------------------


def _pair(phase: Phase, measure: str) -> str:
    p50, p99 = phase.p(measure, 50), phase.p(measure, 99)
    if p50 is None or p99 is None:
        return "-"
    return f"{ms(p50)} / {ms(p99)}"


def _errors(phase: Phase) -> str:
    if not phase.errors:
        return "0 errors"
    parts = ", ".join(f"{what} {count}" for what, count in phase.errors.most_common())
    return f"{phase.error_count} errors ({parts})"


def _worst_added(step: Step) -> str:
    worst: tuple[float, str] | None = None
    for measure in MEASURES:
        if measure in UNBOUNDED:
            continue
        value = step.seekless.p(measure, 99)
        baseline_name = DIRECT_OF[measure]
        baseline = step.direct.p(baseline_name, 99) if baseline_name else 0.0
        if value is None or baseline is None or not baseline_name:
            continue
        if worst is None or value - baseline > worst[0]:
            worst = (value - baseline, measure)
    if worst is None:
        return "no samples"
    return f"worst p99 {'+' if worst[0] >= 0 else '-'}{ms(abs(worst[0]))} ({worst[1]})"


def load_section(run: Run) -> Section:
    bound_ms = run.bound_ms
    best = knee(run.steps, bound_ms=bound_ms)
    bound_text = f"every p99 ≤ direct p99 + {bound_ms:g} ms, 0 errors"
    rows: list[Row] = []
    if best is not None:
        rows.append(
            Row(
                "sustained rate (the knee)",
                f"{best.rate:g} req/s ({best.seekless.achieved:.1f} answered/s)",
                f"{best.direct.achieved:.1f} answered/s at that step",
                f"{ratio(best.seekless.achieved, best.direct.achieved):.2f}{X}",
                bound_text,
                True,
            )
        )
    else:
        rows.append(Row("sustained rate (the knee)", "below the first step", "-", "-", bound_text, False))
    for step in run.steps:
        reasons = judge(step, bound_ms=bound_ms)
        rows.append(
            Row(
                f"step {step.rate:g} req/s ({step.seekless.offered:.1f}/s drawn): answered/s, errors, worst p99",
                f"{step.seekless.achieved:.1f}/s, {_errors(step.seekless)}, {_worst_added(step)}",
                f"{step.direct.achieved:.1f}/s, {_errors(step.direct)}",
                f"{ratio(step.seekless.achieved, step.direct.achieved):.2f}{X} answered/s",
                "within the bound" if not reasons else "past it: " + "; ".join(reasons),
                not reasons,
            )
        )
    shown = best or (run.steps[0] if run.steps else None)
    if shown is not None:
        rows += measure_rows(run, shown)
    rows += cost_rows(run)
    return Section(title="Load: open-loop mix", rows=rows, notes=notes(run, best), extra=details(run))


def measure_rows(run: Run, step: Step) -> list[Row]:
    rows = []
    for measure, (kind, label) in MEASURES.items():
        values = step.seekless.samples.get(measure)
        if run.mix.get(kind, 0) <= 0 or not values:
            continue
        seekless_p50, seekless_p99 = percentile(values, 50), percentile(values, 99)
        direct_name = DIRECT_OF[measure]
        direct_values = step.direct.samples.get(direct_name) if direct_name else None
        name = f"{label} at {step.rate:g} req/s, p50 / p99 (n={len(values)})"
        if not direct_values:
            rows.append(
                Row(
                    name,
                    _pair(step.seekless, measure),
                    "-",
                    "-",
                    f"p99 ≤ {run.bound_ms:g} ms",
                    seekless_p99 <= run.bound_ms,
                )
            )
            continue
        direct_p50, direct_p99 = percentile(direct_values, 50), percentile(direct_values, 99)
        added = seekless_p99 - direct_p99
        bounded = measure not in UNBOUNDED
        rows.append(
            Row(
                name,
                _pair(step.seekless, measure),
                _pair(step.direct, str(direct_name)),
                f"{times(ratio(seekless_p50, direct_p50))} / {times(ratio(seekless_p99, direct_p99))}"
                f" (p99 {'+' if added >= 0 else '-'}{ms(abs(added))})",
                f"p99 added ≤ {run.bound_ms:g} ms" if bounded else "- (Mangum buffers)",
                added <= run.bound_ms if bounded else None,
            )
        )
    return rows


def cost_rows(run: Run) -> list[Row]:
    """CPU per request of each kind alone, by process, and the ceiling the stack's share puts on the rate."""
    rows = []
    weights = {kind: run.mix.get(kind, 0) for kind in run.costs}
    total = sum(weights.values())
    mixed: dict[str, float] = {}
    for kind, cost in run.costs.items():
        for name, value in cost.items():
            mixed[name] = mixed.get(name, 0.0) + value * weights[kind] / total if total else 0.0
    for label, cost in [*((KINDS[kind], cost) for kind, cost in run.costs.items()), ("the mix (weighted)", mixed)]:
        stack = cost.get("stack", 0.0)
        others = ", ".join(f"{name} {value:.1f} ms" for name, value in sorted(cost.items()) if name != "stack")
        rows.append(
            Row(
                f"CPU per request, {label}",
                f"stack process {stack:.1f} ms ({others})",
                "-",
                f"≤ {1000 / stack:.0f} req/s on one core" if stack > 0 else "-",
            )
        )
    return rows


def notes(run: Run, best: Step | None) -> list[str]:
    up = run.upstream
    weights = sum(run.mix.values())
    mix = ", ".join(f"{KINDS[kind]} {weight / weights:.0%}" for kind, weight in run.mix.items() if weight > 0)
    arrivals = "Poisson" if run.poisson else "evenly spaced"
    lines = [
        f"Open loop: {arrivals} arrivals at each step's rate for {run.plan.seconds:g} s, the kind of each drawn "
        f"from the mix ({mix}); every latency is from the arrival's scheduled send time, so a stall is billed "
        "to every request due during it (no coordinated omission). Ramp "
        f"{', '.join(f'{r:g}' for r in run.plan.rates)} req/s, "
        + ("stopped at the first step past the bound." if run.stopped_early else "every step run.")
        + f" The run took {run.seconds:.0f} s; load average before it {run.load_before}.",
        f"Upstream: the DeepSeek emulator in a child process, {up.ttft_ms:g} ms to the first token, then "
        f"{up.reasoning_tokens} reasoning and {up.tokens} content tokens at {up.tps:g} tokens/s (a whole answer "
        f"in about {up.answer_ms:.0f} ms); model `{MODEL}`, `max_tokens` {MAX_TOKENS}.",
        "Each step runs the same schedule twice, back to back: first straight to the emulator (direct: each kind's "
        "upstream call, the body seekless would send, non-streamed for the REST chats and session turns, streamed "
        "for SSE and WebSocket; a session turn with its whole history), then through the stack. Ratios compare "
        "the same percentile of the two at the same step; a cache hit's baseline is the upstream call it saves.",
        "seekless: the local stack (`LocalStack`, as `make dev` runs it, without the job worker and SQS pollers) "
        f"in a child process, with {run.environments} execution environments per function (AWS scales them out; "
        "`make dev` has 4 for REST and 8 per WebSocket function), its own moto server and "
        f"{run.redis}; all functions and both gateways share that process's GIL on this 2-core machine with the "
        "generator and the emulator.",
        "Kinds: a REST chat at temperature 0 with a prompt never sent before (`x-seekless-cache: miss`); the same "
        f"with one of {PROMPTS} prompts picked by a Zipf law (s = {ZIPF_S:g}), all cached before the ramp "
        "(`hit`); a REST `stream: true` chat (Mangum buffers the whole SSE body, so its first chunk comes with "
        "the last); a WebSocket `chat` on a kept connection (opened on demand, then reused: a page keeps its "
        "socket), timed to the first `delta` and to `done`; a session turn on a session of the pool, "
        f"{SESSION_TURNS} turns each, `POST /v1/sessions` first when none is free (the create is timed from the "
        "arrival, the turn from its own send).",
        f"The knee: the highest step at or below which every step keeps each measure's p99 within {run.bound_ms:g} ms "
        "of the direct call's p99 at the same step (session create: the absolute p99; the REST SSE first chunk "
        "is left out: Mangum buffers a Lambda's response, token streaming is the WebSocket path's) with no error; "
        "the ramp stops at the first step past it. Answered/s counts whole answers over the schedule's length. "
        "Per-kind p99s come from few samples (the n of each row): read them as the tail, not as a precise 99th "
        "percentile.",
        "CPU per request: each kind alone after the warm-up, "
        f"{run.plan.cost_calls} calls 4 at a time, CPU seconds of each process (from /proc) over the calls, the "
        f"median of {run.plan.cost_repeats} round(s); "
        "the mix row weighs them by the mix. One core's worth of the stack process is its ceiling: every function "
        "and both gateways run in it under one GIL (on AWS each execution environment has its own CPU). "
        "`--profile-stack FILE` writes a cProfile (CPU time, every thread) of the stack process.",
    ]
    shown = best or (run.steps[-1] if run.steps else None)
    if shown is not None:
        lags = shown.seekless.lags
        lines.append(
            f"The generator started arrivals late by p99 {ms(percentile(lags, 99)) if lags else '-'} at the "
            f"{shown.rate:g} req/s step. CPU per request in that step's seekless phase: "
            + ", ".join(f"{name} {value * 1000:.1f} ms" for name, value in sorted(shown.cpu.items()))
            + "; cores busy: "
            + ", ".join(f"{name} {value:.2f}" for name, value in sorted(shown.cores.items()))
            + "."
        )
        cache = shown.seekless.cache
        if cache:
            lines.append(
                "Cache outcomes seen (x-seekless-cache, and the WebSocket `done` frame's `cache`): "
                + ", ".join(f"{what} {count}" for what, count in sorted(cache.items()))
                + "."
            )
    if run.warmup_errors:
        lines.append(
            "Warm-up errors: " + ", ".join(f"{what} {count}" for what, count in run.warmup_errors.items()) + "."
        )
    return lines


def details(run: Run) -> list[str]:
    lines = ["Per step, p50 / p99 in ms after the scheduled send (seekless | direct):"]
    for step in run.steps:
        lines.append(
            f"  {step.rate:g} req/s: seekless {step.seekless.arrivals} arrivals, {step.seekless.achieved:.1f}/s, "
            f"{_errors(step.seekless)}; direct {step.direct.achieved:.1f}/s, {_errors(step.direct)}; generator lag "
            f"p99 {percentile(step.seekless.lags, 99) if step.seekless.lags else 0:.1f} ms"
        )
        for measure in MEASURES:
            direct_name = DIRECT_OF[measure]
            count = len(step.seekless.samples.get(measure, []))
            direct = _pair(step.direct, direct_name) if direct_name else "-"
            lines.append(f"    {measure:15} n={count:4}  {_pair(step.seekless, measure):>22}  | {direct:>22}")
        lines.append("    cores: " + ", ".join(f"{name} {value:.2f}" for name, value in sorted(step.cores.items())))
    return [*lines, ""]


def _rates(text: str) -> list[float]:
    values = [float(part) for part in text.split(",") if part.strip()]
    if not values or any(not value > 0 for value in values):
        raise argparse.ArgumentTypeError("rates are positive numbers, comma-separated")
    return values


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Open-loop load on the local stack: a ramp to the knee.")
    parser.add_argument("--quick", action="store_true", help="two short steps (a smoke run; noisy numbers)")
    parser.add_argument("--rates", type=_rates, default=None, help="the ramp, req/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=None, help="length of each phase of a step")
    parser.add_argument("--mix", type=parse_mix, default=None, help="kind=weight,... of miss, hit, stream, ws, session")
    parser.add_argument("--fixed-rate", action="store_true", help="evenly spaced arrivals instead of Poisson")
    parser.add_argument("--ttft-ms", type=float, default=Upstream.ttft_ms, help="the emulator's time to first token")
    parser.add_argument("--tps", type=float, default=Upstream.tps, help="the emulator's tokens per second")
    parser.add_argument("--environments", type=int, default=ENVIRONMENTS, help="execution environments per function")
    parser.add_argument("--bound-ms", type=float, default=P99_ADDED_BOUND_MS, help="added p99 allowed at the knee")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--serve-stack", metavar="EMULATOR_URL", help=argparse.SUPPRESS)
    parser.add_argument("--profile-stack", metavar="FILE", help="cProfile every thread of the stack into FILE (pstats)")
    args = parser.parse_args(argv)
    if args.serve_stack:
        serve_stack(args.serve_stack, args.environments, args.profile_stack)
        return
    sections = run(
        args.quick,
        rates=args.rates,
        seconds=args.seconds,
        mix=args.mix,
        upstream=Upstream(ttft_ms=args.ttft_ms, tps=args.tps),
        poisson=not args.fixed_rate,
        seed=args.seed,
        environments=args.environments,
        bound_ms=args.bound_ms,
        profile=str(Path(args.profile_stack).resolve()) if args.profile_stack else None,
    )
    print_sections(sections)


if __name__ == "__main__":
    main()
