"""The generation path over real sockets: the DeepSeek client against the emulator, the Redis cache and
breaker against a real Redis. What a request does when upstream or Redis misbehaves."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from seekless import wiring
from seekless.adapters.breaker import OPEN_METRIC, RedisCircuitBreaker
from seekless.adapters.deepseek import DeepSeekClient
from seekless.adapters.redis_cache import RedisResponseCache
from seekless.chat import ChatService
from seekless.config import Settings
from seekless.contracts import ChatCompletionRequest, StreamDelta
from seekless.errors import RateLimited, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from seekless.models import Principal
from seekless.telemetry import RecordingTelemetry
from seekless_local.emulator import EmulatorServer
from seekless_local.redis_server import free_port

DEV = Principal(tenant_id="dev", key_id="k")


@pytest.fixture
async def model(emulator_url: str) -> AsyncIterator[DeepSeekClient]:
    client = DeepSeekClient(
        base_url=emulator_url, api_key=lambda _refresh: "sk-emulator", retry_base_delay=0.01, retry_max_delay=0.05
    )
    yield client
    await client.aclose()


def make_service(model: Any, cache: Any, telemetry: RecordingTelemetry | None = None) -> ChatService:
    return ChatService(settings=Settings(), model=model, cache=cache, sessions=None, telemetry=telemetry)


def chat(service: ChatService, text: str = "hello", deadline: float = 10.0, **fields: Any) -> Any:
    body = {"model": "deepseek-flash", "messages": [{"role": "user", "content": text}], "temperature": 0, **fields}
    request = ChatCompletionRequest.model_validate(body)
    return service.prepare(request, DEV, headers={}, deadline=time.monotonic() + deadline)


async def test_identical_concurrent_misses_make_one_upstream_call(
    model: DeepSeekClient, redis: Redis, emulator: EmulatorServer
) -> None:
    emulator.configure(ttft_ms=200)
    service = make_service(model, RedisResponseCache(redis))
    answers = await asyncio.gather(*(service.complete(chat(service)) for _ in range(8)))
    assert emulator.stats()["calls"] == 1
    assert sorted(a.cache for a in answers) == ["hit"] * 7 + ["miss"]
    assert len({a.result.content for a in answers}) == 1


async def test_two_services_share_the_cache_like_two_lambdas(
    model: DeepSeekClient, redis_url: str, emulator: EmulatorServer
) -> None:
    clients = [Redis.from_url(redis_url) for _ in range(2)]
    try:
        first, second = (make_service(model, RedisResponseCache(c)) for c in clients)
        assert (await first.complete(chat(first))).cache == "miss"
        assert (await second.complete(chat(second))).cache == "hit"
        assert emulator.stats()["calls"] == 1
    finally:
        for client in clients:
            await client.aclose()


async def test_redis_down_is_a_miss_and_a_metric_never_a_failure(
    model: DeepSeekClient, emulator: EmulatorServer
) -> None:
    telemetry = RecordingTelemetry()
    dead = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2, socket_timeout=0.2)
    try:
        cache = RedisResponseCache(dead, on_error=lambda operation: telemetry.count("CacheErrors"))
        service = make_service(model, cache, telemetry)
        answers = [await service.complete(chat(service)) for _ in range(2)]
    finally:
        await dead.aclose()
    assert [a.cache for a in answers] == ["miss", "miss"]
    assert emulator.stats()["calls"] == 2
    assert telemetry.counts["CacheErrors"] >= 2


async def test_transient_503s_are_retried(model: DeepSeekClient, emulator: EmulatorServer) -> None:
    emulator.configure(fault="503", fault_count=2)
    answer = await make_service(model, None).complete(chat(make_service(model, None)))
    assert answer.result.content
    assert emulator.stats()["calls"] == 3


async def test_persistent_429_ends_as_rate_limited_with_retry_after(
    model: DeepSeekClient, emulator: EmulatorServer
) -> None:
    emulator.configure(fault="429", retry_after=0)
    service = make_service(model, None)
    with pytest.raises(RateLimited) as caught:
        await service.complete(chat(service))
    assert caught.value.status == 429
    assert emulator.stats()["calls"] == Settings().retry_attempts


async def test_insufficient_balance_is_never_retried(model: DeepSeekClient, emulator: EmulatorServer) -> None:
    emulator.configure(fault="402")
    service = make_service(model, None)
    with pytest.raises(UpstreamError) as caught:
        await service.complete(chat(service))
    assert caught.value.code == "upstream_insufficient_balance" and caught.value.status == 502
    assert emulator.stats()["calls"] == 1


async def test_endless_keep_alives_end_at_the_deadline(model: DeepSeekClient, emulator: EmulatorServer) -> None:
    emulator.configure(fault="keepalive_forever", keepalive_ms=50)
    service = make_service(model, None)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        await service.complete(chat(service, deadline=1.0))
    assert time.monotonic() - started < 1.0 * 1.5  # generous: the point is "never much later"


async def test_stream_reset_midway_is_an_error_and_nothing_is_cached(
    model: DeepSeekClient, redis: Redis, emulator: EmulatorServer
) -> None:
    emulator.configure(fault="reset")
    cache = RedisResponseCache(redis)
    service = make_service(model, cache)
    stream = await service.stream(chat(service, stream=True))
    received: list[Any] = []
    with pytest.raises(UpstreamError):
        async for event in stream.events:
            received.append(event)
    assert any(isinstance(e, StreamDelta) for e in received)
    prepared = chat(service, stream=True)
    assert await cache.get(prepared.cache_key) is None


async def test_breaker_opens_and_stops_calling_upstream(
    model: DeepSeekClient, redis: Redis, emulator: EmulatorServer
) -> None:
    breaker = RedisCircuitBreaker(redis, failure_threshold=3, cooldown_seconds=60)
    guarded = DeepSeekClient(
        base_url=emulator.base_url, api_key=lambda _refresh: "sk", breaker=breaker, retry_attempts=1
    )
    emulator.configure(fault="500")
    service = make_service(guarded, None)
    try:
        for _ in range(3):
            with pytest.raises(UpstreamUnavailable):
                await service.complete(chat(service))
        assert await breaker.state() == "open"
        calls_when_opened = emulator.stats()["calls"]
        for _ in range(10):
            with pytest.raises(UpstreamUnavailable) as caught:
                await service.complete(chat(service))
            assert caught.value.code == "circuit_open"
        assert emulator.stats()["calls"] == calls_when_opened == 3
    finally:
        await guarded.aclose()


async def test_the_wired_deepseek_breaker_reports_breaker_open_to_the_environments_telemetry(
    app_env: None, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    telemetry = RecordingTelemetry()
    monkeypatch.setattr(wiring, "telemetry", lambda: telemetry)
    monkeypatch.setenv("SEEKLESS_BREAKER_FAILURE_THRESHOLD", "2")
    monkeypatch.setenv("SEEKLESS_RETRY_ATTEMPTS", "1")
    emulator.configure(fault="500")
    service = make_service(wiring.chat_model(), None)
    try:
        for _ in range(3):
            with pytest.raises(UpstreamUnavailable):
                await service.complete(chat(service))
    finally:
        await wiring.aclose_environment()
    assert telemetry.counts[OPEN_METRIC] == 2  # opened by the second failure, refused the third call
