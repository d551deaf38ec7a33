"""Added latency of the REST path, in process: API Gateway REST v1 event → Mangum → FastAPI → cache → httpx.

Run alone with ``python -m bench.rest_latency [--quick] [--profile]``. The pieces are started here
rather than through the local gateway, whose extra HTTP hop the real Lambda path does not have:

- the DeepSeek emulator (a uvicorn thread in this process) with no latency, so it never sleeps;
- a Redis (redis-server on a free port when on PATH, else fakeredis) and moto for DynamoDB, each a
  child process;
- the REST function's handler, imported from its file as Lambda imports it, called as
  ``handler(event, context)`` on this thread with one event loop, as one warm execution environment.

Against the same emulator, the baseline is a bare ``httpx.Client`` POST of the same chat body on a
kept-alive connection. Everything runs at concurrency 1, interleaved round by round after a warm-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import io
import itertools
import json
import os
import pstats
import secrets
import socket
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.common import (
    TABLE_NAMES,
    Prepare,
    Row,
    Section,
    Summary,
    X,
    environment,
    handler_environment,
    interleave,
    ms,
    print_sections,
    ratio,
    summarize,
    times,
)

if TYPE_CHECKING:
    from seekless.models import KeyLimits

API_KEY = "sk-seekless-bench-" + "0" * 32
PATH = "/v1/chat/completions"
MODEL = "deepseek-flash"
SLOW_TTFT_MS = 60.0
NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]

# Targets (issue 2, "Performance").
ADDED_P50_MS = 2.0
ADDED_P99_MS = 5.0
HIT_P50_MS = 1.5
HIT_SPEEDUP = 20.0


@dataclass(frozen=True)
class Plan:
    rounds: int
    warmup: int
    slow_rounds: int
    slow_warmup: int


FULL = Plan(rounds=1500, warmup=150, slow_rounds=40, slow_warmup=5)
QUICK = Plan(rounds=150, warmup=30, slow_rounds=10, slow_warmup=2)


@dataclass
class Stack:
    handler: Callable[[dict[str, Any], Any], dict[str, Any]]
    emulator: Any
    redis_url: str
    redis_kind: str
    loop: asyncio.AbstractEventLoop


class ChildEmulator:
    """The emulator in a child process (``python -m seekless_local.emulator``), as DeepSeek is elsewhere.

    In process, its uvicorn thread would share the GIL with the code being measured, and the handler
    would wait for the emulator's leftover work on every socket call.
    """

    def __init__(self) -> None:
        from seekless_local.redis_server import free_port

        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ChildEmulator:
        from seekless_local.redis_server import wait_for_port

        self._process = subprocess.Popen(
            [sys.executable, "-m", "seekless_local.emulator", "--port", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        from seekless_local.redis_server import stop_process

        if self._process is not None:
            stop_process(self._process)
            self._process = None

    def configure(self, **settings: Any) -> None:
        import httpx

        httpx.post(self.base_url + "/_emulator/config", json=settings, timeout=10).raise_for_status()


@contextlib.contextmanager
def rest_stack(*, emulator_in_process: bool = False, keys: Mapping[str, KeyLimits] | None = None) -> Iterator[Stack]:
    """Emulator, Redis, moto, tables, a seeded API key, and the REST handler loaded as on Lambda.

    ``keys`` seeds more API keys (the key → its ``KeyLimits``); ``API_KEY`` is always there, unlimited.
    """
    import boto3

    from seekless import wiring
    from seekless.adapters.dynamodb import DynamoKeyStore
    from seekless.auth import hash_key
    from seekless_local import template as cfn
    from seekless_local.emulator import EmulatorServer
    from seekless_local.redis_server import RedisServer
    from seekless_local.stack import MotoServer

    emulator_server: Any = EmulatorServer() if emulator_in_process else ChildEmulator()
    with emulator_server as emulator, RedisServer.choose(None) as redis, MotoServer() as moto:
        env = handler_environment(moto_url=moto.url, redis_url=redis.url, deepseek_url=emulator.base_url)
        with environment(env):
            dynamodb = boto3.client("dynamodb", endpoint_url=moto.url)
            cfn.create_tables(dynamodb, names=TABLE_NAMES)
            store = DynamoKeyStore(TABLE_NAMES["ApiKeysTable"], client=dynamodb)
            store.put(hash_key(API_KEY), tenant_id="bench", key_id="bench")
            for key, limits in (keys or {}).items():
                store.put(hash_key(key), tenant_id="bench", key_id="bench-" + hash_key(key)[:8], limits=limits)
            # One execution environment: this thread, one event loop for its whole life (Mangum runs
            # each invocation on the thread's current loop; the async clients are bound to it).
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            wiring.reset_environment()
            try:
                handler = cfn.load_handler(cfn.function_specs()["RestApiFunction"])
                yield Stack(handler=handler, emulator=emulator, redis_url=redis.url, redis_kind=redis.kind, loop=loop)
            finally:
                with contextlib.suppress(Exception):
                    wiring.close_environment()
                wiring.reset_environment()
                asyncio.set_event_loop(None)
                loop.close()


def chat_body(content: str) -> dict[str, Any]:
    # temperature 0: deterministic, so cacheable by default (see seekless.caching.cache_mode).
    return {"model": MODEL, "temperature": 0, "max_tokens": 64, "messages": [{"role": "user", "content": content}]}


def make_event(
    body: dict[str, Any], *, extra_headers: Sequence[tuple[bytes, bytes]] = (), api_key: str = API_KEY
) -> dict[str, Any]:
    from seekless_local.gateway import rest_event

    headers = [
        (b"host", b"abc123defg.execute-api.us-east-1.amazonaws.com"),
        (b"authorization", f"Bearer {api_key}".encode()),
        (b"content-type", b"application/json"),
        (b"accept", b"application/json"),
        *extra_headers,
    ]
    raw = json.dumps(body, separators=(",", ":")).encode()
    return rest_event(
        method="POST", path=PATH, query=b"", headers=headers, body=raw, source_ip="203.0.113.10", stage="prod"
    )


def make_context() -> Any:
    from seekless_local.gateway import LocalContext

    return LocalContext(
        function_name="RestApiFunction",
        timeout_seconds=29,
        aws_request_id=str(uuid.uuid4()),
        log_group_name="/aws/lambda/RestApiFunction",
        _started=time.monotonic(),
    )


def response_header(response: dict[str, Any], name: str) -> str | None:
    for key, value in (response.get("headers") or {}).items():
        if key.lower() == name:
            return str(value)
    for key, values in (response.get("multiValueHeaders") or {}).items():
        if key.lower() == name and values:
            return str(values[-1])
    return None


class Cases:
    """The calls being compared, each prepared (event, context, body) outside the timing."""

    def __init__(self, stack: Stack, client: Any) -> None:
        self.stack = stack
        self.client = client
        self.nonce = secrets.token_hex(4)  # a fresh Redis each run, but never trust that
        self.hit_body = chat_body(f"bench {self.nonce}: the cached question")
        self.direct_headers = {"authorization": "Bearer sk-emulator-bench", "content-type": "application/json"}
        self.url = stack.emulator.base_url + "/chat/completions"
        self._serial = itertools.count()

    def unique(self, label: str, index: int) -> dict[str, Any]:
        # A serial number, not the round's index: rounds restart at 0 in every phase.
        return chat_body(f"bench {self.nonce} {label} {next(self._serial)}: a question never asked before")

    def invoke(self, event: dict[str, Any]) -> Callable[[], dict[str, Any]]:
        context = make_context()
        handler = self.stack.handler
        return lambda: handler(event, context)

    def direct(self, index: int) -> Callable[[], Any]:
        content = json.dumps(self.unique("direct", index), separators=(",", ":")).encode()
        post, url, headers = self.client.post, self.url, self.direct_headers
        return lambda: post(url, content=content, headers=headers)

    def miss(self, index: int) -> Callable[[], dict[str, Any]]:
        return self.invoke(make_event(self.unique("miss", index)))

    def miss_as(self, api_key: str) -> Prepare:
        """Cache misses sent with another API key (one seeded by ``rest_stack(keys=...)``)."""
        return lambda index: self.invoke(make_event(self.unique("miss", index), api_key=api_key))

    def hit(self, index: int) -> Callable[[], dict[str, Any]]:
        return self.invoke(make_event(self.hit_body))

    def bypass(self, index: int) -> Callable[[], dict[str, Any]]:
        return self.invoke(make_event(self.unique("bypass", index), extra_headers=[(b"cache-control", b"no-store")]))

    def check(self, name: str, result: Any) -> None:
        if name == "direct":
            if result.status_code != 200:
                raise RuntimeError(f"direct call answered {result.status_code}: {result.text[:200]}")
            return
        status = result.get("statusCode")
        cache = response_header(result, "x-seekless-cache")
        if status != 200:
            raise RuntimeError(f"{name}: the handler answered {status}: {str(result.get('body'))[:300]}")
        if cache != name:
            raise RuntimeError(f"{name}: expected x-seekless-cache: {name}, got {cache}")


def redis_commands(url: str) -> dict[str, int]:
    """Redis's own count of commands served, by command (INFO commandstats)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


def commands_per_call(stack: Stack, prepare: Callable[[int], Callable[[], Any]], calls: int = 20) -> str:
    before = redis_commands(stack.redis_url)
    for index in range(calls):
        prepare(10_000_000 + index)()
    after = redis_commands(stack.redis_url)
    delta = {name: (after.get(name, 0) - before.get(name, 0)) / calls for name in after}
    delta.pop("info", None)
    parts = [f"{name} {count:g}" for name, count in sorted(delta.items()) if count]
    return f"{sum(delta.values()):g} ({', '.join(parts)})" if parts else "0"


def profile_misses(cases: Cases, count: int) -> list[str]:
    profiler = cProfile.Profile()
    calls = [cases.miss(20_000_000 + index) for index in range(count)]
    profiler.enable()
    for call in calls:
        call()
    profiler.disable()
    lines = []
    for sort in ("cumulative", "tottime"):
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats(sort).print_stats(12 if sort == "cumulative" else 15)
        text = out.getvalue()
        body = text[text.index("ncalls") :] if "ncalls" in text else text
        lines += [f"cProfile over {count} cache misses, sorted by {sort}:", body.rstrip(), ""]
    return lines


def run(quick: bool = False, *, profile: int = 0, emulator_in_process: bool = False) -> list[Section]:
    import httpx

    plan = QUICK if quick else FULL
    # Powertools prints EMF metrics to stdout (even when disabled, once 100 values have piled up):
    # keep them out of the tables. On Lambda that write goes to CloudWatch Logs.
    with (
        open(os.devnull, "w") as sink,
        contextlib.redirect_stdout(sink),
        warnings.catch_warnings(),
        rest_stack(emulator_in_process=emulator_in_process) as stack,
        httpx.Client(transport=httpx.HTTPTransport(socket_options=NODELAY)) as client,
    ):
        warnings.filterwarnings("ignore", message="No application metrics to publish")
        cases = Cases(stack, client)
        stack.emulator.configure(ttft_ms=0, tps=0)
        # Prime: the first call builds the per-environment clients and looks the API key up in
        # DynamoDB; later calls reuse both (as a warm Lambda does). The hit body gets cached here.
        cases.check("miss", cases.invoke(make_event(cases.hit_body))())
        fast = interleave(
            {"direct": cases.direct, "miss": cases.miss, "hit": cases.hit, "bypass": cases.bypass},
            rounds=plan.rounds,
            warmup=plan.warmup,
            check=cases.check,
        )
        redis_per_miss = commands_per_call(stack, cases.miss)
        redis_per_hit = commands_per_call(stack, cases.hit)
        profile_lines = profile_misses(cases, profile) if profile else []
        stack.emulator.configure(ttft_ms=SLOW_TTFT_MS)
        try:
            slow = interleave(
                {"direct": cases.direct, "miss": cases.miss, "hit": cases.hit},
                rounds=plan.slow_rounds,
                warmup=plan.slow_warmup,
                check=cases.check,
            )
        finally:
            stack.emulator.configure(ttft_ms=0)
        redis_kind = stack.redis_kind
    return [
        latency_section(fast, plan, redis_kind, redis_per_miss, redis_per_hit, profile_lines),
        speedup_section(slow, plan),
    ]


def _added(seekless: Summary, direct: Summary) -> tuple[float, float]:
    return seekless.p50 - direct.p50, seekless.p99 - direct.p99


def latency_section(
    samples: dict[str, list[float]],
    plan: Plan,
    redis_kind: str,
    redis_per_miss: str,
    redis_per_hit: str,
    profile_lines: list[str],
) -> Section:
    direct = summarize(samples["direct"])
    miss, hit, bypass = (summarize(samples[name]) for name in ("miss", "hit", "bypass"))
    miss_p50, miss_p99 = _added(miss, direct)
    bypass_p50, bypass_p99 = _added(bypass, direct)

    def rel(value: float, base: float, added: float) -> str:
        return (
            f"+{ms(added)} ({times(ratio(value, base))})"
            if added >= 0
            else f"{ms(added)} ({times(ratio(value, base))})"
        )

    rows = [
        Row(
            "cache miss, p50",
            ms(miss.p50),
            ms(direct.p50),
            rel(miss.p50, direct.p50, miss_p50),
            f"added ≤ {ADDED_P50_MS:g} ms",
            miss_p50 <= ADDED_P50_MS,
        ),
        Row(
            "cache miss, p99",
            ms(miss.p99),
            ms(direct.p99),
            rel(miss.p99, direct.p99, miss_p99),
            f"added ≤ {ADDED_P99_MS:g} ms",
            miss_p99 <= ADDED_P99_MS,
        ),
        Row(
            "cache bypass (`Cache-Control: no-store`), p50",
            ms(bypass.p50),
            ms(direct.p50),
            rel(bypass.p50, direct.p50, bypass_p50),
        ),
        Row("cache bypass, p99", ms(bypass.p99), ms(direct.p99), rel(bypass.p99, direct.p99, bypass_p99)),
        Row(
            "cache hit, p50",
            ms(hit.p50),
            ms(direct.p50),
            times(ratio(hit.p50, direct.p50)),
            f"≤ {HIT_P50_MS:g} ms",
            hit.p50 <= HIT_P50_MS,
        ),
        Row("cache hit, p99", ms(hit.p99), ms(direct.p99), times(ratio(hit.p99, direct.p99))),
    ]
    notes = [
        f"{plan.rounds} interleaved rounds (direct, miss, hit, bypass) after {plan.warmup} warm-up rounds, "
        "concurrency 1; ratio / added compares each percentile with the same percentile of the direct call.",
        "seekless: `handler(event, context)` of the REST function, called in process with an API Gateway REST v1 "
        "event: Powertools decorators → Mangum → FastAPI (auth, validation) → Redis cache lookup and single-flight "
        "lease → httpx → the emulator → cache store and lease release → the response. The event and the context are "
        "built outside the timing (API Gateway and the Lambda runtime build them).",
        "direct: a bare `httpx.Client` POST of the same chat body (a new message each call) to the same emulator on "
        "a kept-alive connection with TCP_NODELAY, reading the body but not parsing it.",
        "Every miss and bypass sends a message never sent before; every hit repeats one cached temperature-0 body. "
        f"Redis commands per call: miss {redis_per_miss}; hit {redis_per_hit} (the commands inside scripts "
        "counted one by one). Included: the tenant's usage counters, one script call per request (the HINCRBYs, "
        "ZADD and SADD above); the sweeper folds them into DynamoDB off the request path.",
        "Excluded: API Gateway and the Lambda runtime (their network hops and marshalling), TLS to DeepSeek and to "
        "ElastiCache, the DynamoDB key lookup (cached per execution environment after the first call, as in "
        "production; the prime call pays it), X-Ray tracing and the EMF metrics flush (both disabled by environment), "
        f"cold starts. Redis here is a plain local {redis_kind}, not ElastiCache Serverless in cluster mode; the "
        "emulator runs in a child process (in process, its thread would share the GIL with the handler: "
        "`--emulator-in-process` shows the difference) and answers with no delay.",
    ]
    return Section(title="REST path: added latency, cache miss and hit", rows=rows, notes=notes, extra=profile_lines)


def speedup_section(samples: dict[str, list[float]], plan: Plan) -> Section:
    direct, miss, hit = (summarize(samples[name]) for name in ("direct", "miss", "hit"))
    speedup = ratio(miss.p50, hit.p50)
    rows = [
        Row(
            f"cache hit vs miss, upstream TTFT {SLOW_TTFT_MS:g} ms, p50",
            ms(hit.p50),
            f"{ms(miss.p50)} (miss)",
            f"{times(speedup)} faster",
            f"≥ {HIT_SPEEDUP:g}{X} faster",
            speedup >= HIT_SPEEDUP,
        ),
        Row(
            f"cache miss, upstream TTFT {SLOW_TTFT_MS:g} ms, p50",
            ms(miss.p50),
            ms(direct.p50),
            f"+{ms(miss.p50 - direct.p50)}",
        ),
        Row(
            f"cache miss, upstream TTFT {SLOW_TTFT_MS:g} ms, p99",
            ms(miss.p99),
            ms(direct.p99),
            f"+{ms(miss.p99 - direct.p99)}",
        ),
    ]
    notes = [
        f"The emulator waits {SLOW_TTFT_MS:g} ms before answering (sending the status line and headers first, as "
        f"DeepSeek does); {plan.slow_rounds} interleaved rounds (direct, miss, hit) after {plan.slow_warmup} warm-up "
        "rounds. The baseline of the first row is the miss through the same path; the other rows compare with the "
        "direct call to the same slow emulator.",
        "A real DeepSeek answer takes far longer than 60 ms (seconds for a long answer), so the real speed-up of a "
        "hit is larger; the 60 ms upstream is the issue's yardstick.",
    ]
    return Section(title="REST path: cache hit against a 60 ms upstream", rows=rows, notes=notes)


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Added latency of the REST path (in process).")
    parser.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run; noisier numbers)")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="also cProfile N cache misses")
    parser.add_argument(
        "--emulator-in-process", action="store_true", help="run the emulator as a thread of this process"
    )
    args = parser.parse_args(argv)
    print_sections(run(args.quick, profile=args.profile, emulator_in_process=args.emulator_in_process))


if __name__ == "__main__":
    main()
