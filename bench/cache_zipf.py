"""Exact-cache hit ratio on a Zipf workload: seekless's Redis cache against an exact LRU of the same size.

Run alone with ``python -m bench.cache_zipf [--quick]``. A fixed-seed trace of requests over 10,000
distinct prompts, drawn Zipf-distributed, runs through the real path that decides a hit:
``ChatService.prepare`` and ``complete`` with the real ``RedisResponseCache`` on a redis-server started
for the run, whose ``maxmemory`` holds about 1,000 answers and whose eviction policy is ElastiCache
Serverless's. The chat model answers at once and deterministically (a hit ratio is measured, not a
time). The baseline is the hit ratio an exact LRU of 1,000 entries achieves on the same trace,
simulated here; an infinite cache (every repeat a hit) is reported for context.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import random
import statistics
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.common import Row, Section, X, ms, parse_args, print_sections, ratio, summarize, times

if TYPE_CHECKING:
    from seekless.contracts import ChatResult, StreamEvent

PROMPTS = 10_000
CAPACITY = 1_000
EXPONENT = 1.0
SEED = 20_261_128
#: ElastiCache Serverless evicts "data that has a Time-To-Live set, using the LRU logic" once its data
#: storage maximum is reached (template.yaml caps it at 5 GB): that is Redis's volatile-lru.
POLICY = "volatile-lru"
#: Of the hit ratio an exact LRU of the same capacity achieves on the same trace (ours; the issue sets none).
TARGET_OF_LRU = 0.9
ANSWER_TOKENS = 128
REASONING_TOKENS = 32
SIZING_SAMPLE = 64  # answers whose MEMORY USAGE sizes the server, outside the trace
MODEL = "deepseek-flash"
TITLE = f"Response cache: exact-cache hit ratio on a Zipf workload ({CAPACITY:,} answers)"


@dataclass(frozen=True)
class Plan:
    warmup: int
    length: int


FULL = Plan(warmup=10_000, length=50_000)
QUICK = Plan(warmup=5_000, length=10_000)


# -- the workload and the baselines (pure) ----------------------------------------------------------


def zipf_trace(items: int, length: int, *, exponent: float, seed: int) -> list[int]:
    """``length`` draws from ``range(items)``, item ``k`` with probability proportional to ``1 / (k+1)**s``."""
    if items <= 0 or length < 0:
        raise ValueError("need at least one item and a length >= 0")
    cumulative = list(itertools.accumulate(1.0 / (rank + 1) ** exponent for rank in range(items)))
    return random.Random(seed).choices(range(items), cum_weights=cumulative, k=length)


def lru_hits(trace: Sequence[Hashable], capacity: int) -> list[bool]:
    """Whether each request hits an exact LRU cache of ``capacity`` entries that stores every miss."""
    if capacity <= 0:
        return [False] * len(trace)
    cache: OrderedDict[Hashable, None] = OrderedDict()
    hits = []
    for item in trace:
        hit = item in cache
        hits.append(hit)
        if hit:
            cache.move_to_end(item)
        else:
            cache[item] = None
            if len(cache) > capacity:
                cache.popitem(last=False)
    return hits


def repeat_hits(trace: Sequence[Hashable]) -> list[bool]:
    """An infinite cache: whether each request was seen before."""
    seen: set[Hashable] = set()
    hits = []
    for item in trace:
        hits.append(item in seen)
        seen.add(item)
    return hits


def hit_ratio(hits: Sequence[bool], start: int = 0) -> float:
    """The share of hits from ``start`` on (the requests after the warm-up)."""
    counted = hits[start:]
    if not counted:
        raise ValueError("no requests to count")
    return sum(counted) / len(counted)


# -- the measured path --------------------------------------------------------------------------------


class InstantModel:
    """A ``ChatModel`` that answers at once, the same text for the same messages (as the emulator does)."""

    async def complete(self, body: Mapping[str, Any], *, deadline: float) -> ChatResult:
        from seekless.contracts import ChatResult, Usage
        from seekless_local.emulator_text import pieces

        digest = hashlib.sha256(repr(body["messages"]).encode()).digest()
        return ChatResult(
            id="chatcmpl-" + digest[:12].hex(),
            model=str(body["model"]),
            content="".join(pieces(digest, ANSWER_TOKENS)),
            reasoning_content="".join(pieces(digest[8:], REASONING_TOKENS)),
            usage=Usage(prompt_tokens=16, completion_tokens=ANSWER_TOKENS + REASONING_TOKENS),
        )

    def stream(self, body: Mapping[str, Any], *, deadline: float) -> AsyncIterator[StreamEvent]:
        raise NotImplementedError("the benchmark sends non-streamed requests only")


def prompt(item: int) -> str:
    return f"zipf question {item}: what does the cache hold?"


@dataclass
class Replay:
    labels: list[str]  # hit | miss, per request of the trace
    hit_ms: list[float]
    miss_ms: list[float]
    per_answer: int  # bytes, MEMORY USAGE of one cached answer (mean of the sample)
    baseline: int  # bytes, used_memory of the server with no answer in it
    maxmemory: int
    resident: list[int]  # answers held, sampled during the counted part
    evicted: int
    expired: int
    cache_errors: int
    ttl_seconds: int


async def replay(trace: Sequence[int], plan: Plan, redis_url: str) -> Replay:
    """Send the trace through ChatService with the real Redis cache, sized to hold CAPACITY answers."""
    from redis.asyncio import Redis

    from seekless.adapters.redis_cache import RedisResponseCache
    from seekless.chat import ChatService
    from seekless.config import Settings
    from seekless.contracts import ChatCompletionRequest
    from seekless.models import Principal

    errors: list[str] = []
    client = Redis.from_url(redis_url)
    prefix = "seekless:cache:"
    cache = RedisResponseCache(client, prefix=prefix, on_error=errors.append)
    settings = Settings(redis_url=redis_url)
    service = ChatService(settings=settings, model=InstantModel(), cache=cache, sessions=None)
    principal = Principal(tenant_id="bench-zipf", key_id="bench-zipf")
    headers: dict[str, str] = {}

    async def ask(text: str) -> tuple[str, float]:
        body = {"model": MODEL, "temperature": 0, "max_tokens": 512, "messages": [{"role": "user", "content": text}]}
        started = time.perf_counter_ns()
        request = ChatCompletionRequest.model_validate(body)
        chat = service.prepare(request, principal, headers=headers, deadline=time.monotonic() + 25)
        answer = await service.complete(chat)
        return answer.cache, (time.perf_counter_ns() - started) / 1e6

    try:
        # Sizing: answers outside the trace load the scripts and open the connection, then go; the empty
        # server's memory (clients and scripts included) plus CAPACITY answers is the ceiling.
        for index in range(SIZING_SAMPLE):
            await ask(f"sizing answer {index}")
        keys = [key async for key in client.scan_iter(match=prefix + "{*")]
        per_answer = round(statistics.fmean([int(await client.memory_usage(key, samples=0) or 0) for key in keys]))
        await client.delete(*keys)
        baseline = int((await client.info("memory"))["used_memory"])
        maxmemory = baseline + CAPACITY * per_answer
        await client.config_set("maxmemory-policy", POLICY)
        await client.config_set("maxmemory", maxmemory)
        await client.config_resetstat()

        labels: list[str] = []
        hit_ms: list[float] = []
        miss_ms: list[float] = []
        resident: list[int] = []
        for index, item in enumerate(trace):
            label, elapsed = await ask(prompt(item))
            labels.append(label)
            if index >= plan.warmup:
                (hit_ms if label == "hit" else miss_ms).append(elapsed)
                if (index - plan.warmup) % 500 == 0:
                    resident.append(int(await client.dbsize()))
        stats = await client.info("stats")
        return Replay(
            labels=labels,
            hit_ms=hit_ms,
            miss_ms=miss_ms,
            per_answer=per_answer,
            baseline=baseline,
            maxmemory=maxmemory,
            resident=resident,
            evicted=int(stats["evicted_keys"]),
            expired=int(stats["expired_keys"]),
            cache_errors=len(errors),
            ttl_seconds=settings.cache_ttl_seconds,
        )
    finally:
        await client.aclose()


def run(quick: bool = False) -> list[Section]:
    from seekless_local.redis_server import RedisServer

    plan = QUICK if quick else FULL
    with RedisServer.choose(None) as redis:
        if redis.kind != "redis-server":
            # fakeredis never evicts: a hit ratio from it would be an infinite cache's.
            return [Section(title=TITLE, rows=[], notes=["Not measured: redis-server is not on PATH."])]
        trace = zipf_trace(PROMPTS, plan.warmup + plan.length, exponent=EXPONENT, seed=SEED)
        started = time.monotonic()
        result = asyncio.run(replay(trace, plan, redis.url))
        seconds = time.monotonic() - started
    return [zipf_section(trace, result, plan, seconds)]


def zipf_section(trace: Sequence[int], result: Replay, plan: Plan, seconds: float) -> Section:
    if result.cache_errors:
        raise RuntimeError(f"{result.cache_errors} cache operations failed: the hit ratio would be understated")
    seekless = hit_ratio([label == "hit" for label in result.labels], plan.warmup)
    lru = hit_ratio(lru_hits(trace, CAPACITY), plan.warmup)
    ideal = hit_ratio(repeat_hits(trace), plan.warmup)
    held = statistics.fmean(result.resident)
    lru_held = hit_ratio(lru_hits(trace, round(held)), plan.warmup)
    of_lru = ratio(seekless, lru)
    hit, miss = summarize(result.hit_ms), summarize(result.miss_ms)
    rows = [
        Row(
            f"hit ratio, exact cache (Redis, maxmemory ≈ {CAPACITY:,} answers)",
            f"{seekless:.1%}",
            f"{lru:.1%} (exact LRU of {CAPACITY:,})",
            times(of_lru),
            f"≥ {TARGET_OF_LRU:g}{X} of exact LRU (ours)",
            of_lru >= TARGET_OF_LRU,
        ),
        Row(
            "hit ratio against an infinite cache (every repeat a hit)",
            f"{seekless:.1%}",
            f"{ideal:.1%} (infinite)",
            times(ratio(seekless, ideal)),
        ),
        Row("service call, hit, p50", ms(hit.p50), f"{ms(miss.p50)} (miss)", times(ratio(hit.p50, miss.p50))),
        Row("service call, hit, p99", ms(hit.p99), f"{ms(miss.p99)} (miss)", times(ratio(hit.p99, miss.p99))),
    ]
    notes = [
        f"Trace: {plan.warmup:,} warm-up requests, then {plan.length:,} counted, each drawn from {PROMPTS:,} distinct "
        f"prompts with probability ∝ 1/rank^{EXPONENT:g} (Zipf, s = {EXPONENT:g}; `random.Random({SEED})`). Every "
        "request is a temperature-0 `deepseek-flash` chat of one user message (cacheable by default), one tenant, "
        f"concurrency 1; {seconds:.0f} s in all.",
        "seekless: `ChatService.prepare` and `complete` with the real `RedisResponseCache` (the lookup script, then "
        "the store script on a miss) on a redis-server started for the run; hit or miss as the service labels it "
        "(`x-seekless-cache`). The model answers at once, the same text for the same prompt "
        f"({ANSWER_TOKENS} content and {REASONING_TOKENS} reasoning words from the emulator's word list).",
        f"Sizing: the mean `MEMORY USAGE` of {SIZING_SAMPLE} cached answers outside the trace "
        f"({result.per_answer:,} B) {X} {CAPACITY:,} + the empty server's `used_memory` ({result.baseline:,} B, its "
        f"scripts loaded and the service's client connected) = `maxmemory` {result.maxmemory:,} B. `MEMORY USAGE` "
        "counts a key, its value and its entry in the main table, not its entry in the expires table nor the "
        f"tables' buckets, so the server holds about, not exactly, {CAPACITY:,}: "
        f"{held:,.0f} answers on average over the counted part (`DBSIZE` every 500 requests: "
        f"{min(result.resident):,}-{max(result.resident):,}), where an exact LRU of {round(held):,} would hit "
        f"{lru_held:.1%}. {result.evicted:,} keys evicted, {result.expired:,} expired (TTL "
        f"{result.ttl_seconds:,} s, longer than the run).",
        f"Eviction policy `{POLICY}`, as ElastiCache Serverless applies once the data storage maximum is reached "
        "(it evicts keys that have a TTL, by LRU): every answer is stored with `EX cache_ttl_seconds` and every "
        "single-flight lease with `PX`, so all of them may go. So may everything else seekless keeps there, all "
        "of it with a TTL (rate-limit counters, breaker state, stream buffers, tickets): under memory pressure "
        "a rate-limit counter can be evicted, and that minute's limit then fails open.",
        "Redis's LRU is approximate: it evicts the idlest of `maxmemory-samples` (5, the default) sampled keys, "
        "kept in a pool, on an idle clock of 1 s resolution, while this run turns the whole cache over within "
        "seconds. The gap to the exact LRU is that and the size's drift around "
        f"{CAPACITY:,} (the exact LRU at the size held, above, separates the two).",
        f"direct: the same trace through an exact LRU of {CAPACITY:,} entries (`OrderedDict`), counting the same "
        "requests; "
        "the infinite cache counts every request whose prompt came before, warm-up included. Latency rows time "
        "`prepare` + `complete` in this process (validation, key hash, one Redis round trip on a hit, two on a "
        "miss; no HTTP, no upstream wait): they show the cache's own cost, not a user's latency.",
    ]
    return Section(title=TITLE, rows=rows, notes=notes)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args("Exact-cache hit ratio on a Zipf workload (Redis against an exact LRU).", argv)
    print_sections(run(args.quick))


if __name__ == "__main__":
    main()
