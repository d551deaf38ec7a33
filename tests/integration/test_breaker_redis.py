"""The Redis circuit breaker against a real Redis: the state every Lambda shares."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from seekless.adapters.breaker import OPEN_METRIC, RedisCircuitBreaker
from seekless.telemetry import RecordingTelemetry
from seekless_local.redis_server import RedisServer, free_port

pytestmark = pytest.mark.redis

THRESHOLD = 3
COOLDOWN = 30.0


class Clock:
    """Time the breaker sees; tests move it instead of sleeping through cooldowns."""

    def __init__(self) -> None:
        self.now = 1_760_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
async def redis(redis_server: RedisServer, redis_url: str) -> AsyncIterator[Redis]:
    if redis_server.kind == "fakeredis" and importlib.util.find_spec("lupa") is None:
        pytest.skip("the breaker runs Lua scripts: fakeredis needs lupa (fakeredis[lua]) for them")
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def breaker(redis: Redis, clock: Clock, **kwargs: Any) -> RedisCircuitBreaker:
    kwargs.setdefault("failure_threshold", THRESHOLD)
    kwargs.setdefault("cooldown_seconds", COOLDOWN)
    return RedisCircuitBreaker(redis, clock=clock, **kwargs)


async def open_breaker(b: RedisCircuitBreaker) -> None:
    for _ in range(THRESHOLD):
        await b.record_failure()
    assert await b.state() == "open"


async def test_opens_after_exactly_n_consecutive_failures(redis: Redis, clock: Clock) -> None:
    b = breaker(redis, clock)
    for _ in range(THRESHOLD - 1):
        await b.record_failure()
    assert await b.state() == "closed"
    assert await b.allow()

    await b.record_failure()

    assert await b.state() == "open"
    assert not await b.allow()


async def test_a_success_in_between_resets_the_count(redis: Redis, clock: Clock) -> None:
    b = breaker(redis, clock)
    for _ in range(THRESHOLD - 1):
        await b.record_failure()
    await b.record_success()
    for _ in range(THRESHOLD - 1):
        await b.record_failure()

    assert await b.state() == "closed"
    await b.record_failure()
    assert await b.state() == "open"


async def test_refused_while_open_with_the_cooldown_left_as_a_hint(redis: Redis, clock: Clock) -> None:
    b = breaker(redis, clock)
    await open_breaker(b)

    clock.advance(COOLDOWN - 10)

    assert not await b.allow()
    assert b.cooldown_remaining == pytest.approx(10, abs=0.01)
    assert await b.state() == "open"


async def test_every_lambda_sees_the_same_breaker(redis: Redis, clock: Clock) -> None:
    first, second = breaker(redis, clock), breaker(redis, clock)
    await first.record_failure()
    await second.record_failure()
    await first.record_failure()

    assert not await second.allow()


async def test_exactly_one_half_open_probe_among_concurrent_callers(redis: Redis, clock: Clock) -> None:
    await open_breaker(breaker(redis, clock))
    clock.advance(COOLDOWN)
    lambdas = [breaker(redis, clock) for _ in range(20)]

    allowed = await asyncio.gather(*(b.allow() for b in lambdas))

    assert allowed.count(True) == 1
    assert await lambdas[0].state() == "half_open"


async def test_a_successful_probe_closes_the_breaker(redis: Redis, clock: Clock) -> None:
    b = breaker(redis, clock)
    await open_breaker(b)
    clock.advance(COOLDOWN)
    assert await b.allow()

    await b.record_success()

    assert await b.state() == "closed"
    assert all([await b.allow() for _ in range(5)])
    # Failures count from zero again.
    for _ in range(THRESHOLD - 1):
        await b.record_failure()
    assert await b.state() == "closed"


async def test_a_failed_probe_reopens_for_another_cooldown(redis: Redis, clock: Clock) -> None:
    b = breaker(redis, clock)
    await open_breaker(b)
    clock.advance(COOLDOWN)
    assert await b.allow()

    await b.record_failure()

    assert await b.state() == "open"
    clock.advance(COOLDOWN - 1)
    assert not await b.allow()
    clock.advance(1)
    assert await b.allow()


async def test_a_probe_that_never_reports_times_out(redis: Redis, clock: Clock) -> None:
    b = breaker(redis, clock, probe_timeout_seconds=5)
    await open_breaker(b)
    clock.advance(COOLDOWN)
    assert await b.allow()
    assert not await b.allow()

    clock.advance(5)

    assert await b.allow()
    assert not await b.allow()


async def test_a_late_success_while_open_does_not_close_it(redis: Redis, clock: Clock) -> None:
    b = breaker(redis, clock)
    await open_breaker(b)

    await b.record_success()

    assert await b.state() == "open"


async def test_all_keys_share_one_hash_tag(redis: Redis, clock: Clock) -> None:
    b = breaker(redis, clock)
    await b.record_failure()

    keys = [key.decode() async for key in redis.scan_iter()]

    assert keys and all(key.startswith("{seekless:breaker:deepseek}:") for key in keys)


async def test_redis_down_fails_open_and_warns_once(caplog: pytest.LogCaptureFixture, clock: Clock) -> None:
    caplog.set_level(logging.WARNING, logger="seekless.breaker")
    client = Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2, socket_timeout=0.2)
    try:
        b = breaker(client, clock)
        assert await b.allow()
        await b.record_failure()
        await b.record_success()
        assert await b.state() == "closed"
        assert await b.allow()
    finally:
        await client.aclose()

    warnings = [r for r in caplog.records if r.name == "seekless.breaker"]
    assert len(warnings) == 1


async def test_successes_on_a_healthy_breaker_write_nothing(redis: Redis, clock: Clock) -> None:
    b = breaker(redis, clock)
    assert await b.allow()
    await b.record_success()  # the first one may write: this instance knows nothing yet
    before = (await redis.info("commandstats")).get("cmdstat_evalsha", {}).get("calls", 0)
    for _ in range(5):
        assert await b.allow()
        await b.record_success()
    after = (await redis.info("commandstats")).get("cmdstat_evalsha", {}).get("calls", 0)
    assert after - before == 5  # one allow() each, no record_success() writes


async def test_another_lambdas_failures_are_forgotten_on_our_success(redis: Redis, clock: Clock) -> None:
    ours, theirs = breaker(redis, clock), breaker(redis, clock)
    assert await ours.allow()
    await ours.record_success()
    for _ in range(THRESHOLD - 1):
        await theirs.record_failure()
    assert await ours.allow()
    await ours.record_success()  # resets the shared count: failures must be consecutive
    await theirs.record_failure()
    assert await ours.state() == "closed"


async def test_opening_and_every_refusal_count_breaker_open_for_the_alarm(redis: Redis, clock: Clock) -> None:
    # template.yaml alarms on this metric: it must come while the breaker is open, and only then.
    telemetry = RecordingTelemetry()
    b = breaker(redis, clock, telemetry=telemetry)
    for _ in range(THRESHOLD - 1):
        await b.record_failure()
    assert await b.allow()
    assert OPEN_METRIC not in telemetry.counts
    await b.record_failure()  # opens
    assert telemetry.counts[OPEN_METRIC] == 1
    for _ in range(3):
        assert not await b.allow()
    assert telemetry.counts[OPEN_METRIC] == 4
    clock.advance(COOLDOWN)
    assert await b.allow()  # the half-open probe is not a refusal
    await b.record_failure()  # the probe failed: open again
    assert telemetry.counts[OPEN_METRIC] == 5


async def test_another_lambda_opening_the_breaker_is_counted_here_when_it_refuses(redis: Redis, clock: Clock) -> None:
    ours, theirs = RecordingTelemetry(), RecordingTelemetry()
    b, other = breaker(redis, clock, telemetry=ours), breaker(redis, clock, telemetry=theirs)
    await open_breaker(other)
    assert not await b.allow()
    assert (theirs.counts[OPEN_METRIC], ours.counts[OPEN_METRIC]) == (1, 1)
