"""Per-key rate limits against a real Redis: many clients admitting at once (as many Lambdas would)
never pass a limit together, reservations settle to real usage, and a refused request never reaches
DeepSeek."""

from __future__ import annotations

import asyncio
import importlib.util
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from seekless.adapters.deepseek import DeepSeekClient
from seekless.adapters.limits import RedisRateLimiter
from seekless.chat import ChatService
from seekless.config import Settings
from seekless.contracts import ChatCompletionRequest
from seekless.errors import InvalidRequest, NotFound, RateLimited, ServiceUnavailable
from seekless.limits import LimitsByKeyId, Reservation
from seekless.models import ApiKeyRecord, KeyLimits, Principal
from seekless.telemetry import RecordingTelemetry
from seekless_local.emulator import EmulatorServer
from seekless_local.redis_server import RedisServer, free_port

pytestmark = pytest.mark.redis
NOW = 1_760_000_050.0  # ten seconds into a minute


@pytest.fixture
async def clients(redis_server: RedisServer, redis_url: str) -> AsyncIterator[list[Redis]]:
    if redis_server.kind == "fakeredis" and importlib.util.find_spec("lupa") is None:
        pytest.skip("the limiter runs a Lua script: fakeredis needs lupa (fakeredis[lua]) for it")
    # Five connections, like five Lambdas' clients: each runs its share of the concurrent requests.
    opened = [Redis.from_url(redis_url) for _ in range(5)]
    yield opened
    for client in opened:
        await client.aclose()


def key(**limits: int) -> Principal:
    return Principal(tenant_id="acme", key_id=f"key_{time.monotonic_ns()}", limits=KeyLimits(**limits))


async def admit_all(limiters: list[RedisRateLimiter], principal: Principal, n: int, tokens: int) -> list[Any]:
    async def one(i: int) -> Any:
        try:
            return await limiters[i % len(limiters)].admit(principal, tokens=tokens)
        except (RateLimited, InvalidRequest) as refused:
            return refused

    return await asyncio.gather(*(one(i) for i in range(n)))


async def test_fifty_concurrent_requests_against_ten_per_minute_admit_exactly_ten(clients: list[Redis]) -> None:
    limiters = [RedisRateLimiter(client, clock=lambda: NOW) for client in clients]
    outcomes = await admit_all(limiters, key(rpm=10), 50, tokens=100)
    admitted = [o for o in outcomes if isinstance(o, Reservation)]
    refused = [o for o in outcomes if isinstance(o, RateLimited)]
    assert len(admitted) == 10 and len(refused) == 40
    assert all(r.code == "rate_limit_requests" and 0 < r.retry_after <= 50 for r in refused)  # type: ignore[operator]
    assert refused[0].headers() == {"Retry-After": "50"}


async def test_concurrent_token_reservations_never_pass_the_tokens_per_minute(clients: list[Redis]) -> None:
    limiters = [RedisRateLimiter(client, clock=lambda: NOW) for client in clients]
    principal = key(tpm=1_000)
    outcomes = await admit_all(limiters, principal, 40, tokens=300)
    admitted = [o for o in outcomes if isinstance(o, Reservation)]
    assert len(admitted) == 3  # 3 x 300 fits 1,000; a fourth would not
    assert all(isinstance(o, RateLimited) and o.code == "rate_limit_tokens" for o in outcomes if o not in admitted)
    # Settled to what they used, the unused reservation comes back for the next requests.
    for reservation in admitted:
        await limiters[0].settle(reservation, used=50)
    assert len([o for o in await admit_all(limiters, principal, 10, tokens=300) if isinstance(o, Reservation)]) == 2


async def test_a_new_minute_admits_again(clients: list[Redis]) -> None:
    now = [NOW]
    limiter = RedisRateLimiter(clients[0], clock=lambda: now[0])
    principal = key(rpm=1)
    await limiter.admit(principal, tokens=1)
    with pytest.raises(RateLimited):
        await limiter.admit(principal, tokens=1)
    now[0] += 50
    assert await limiter.admit(principal, tokens=1) is not None


async def test_a_request_larger_than_the_tokens_per_minute_is_a_400_not_a_wait(clients: list[Redis]) -> None:
    with pytest.raises(InvalidRequest) as refused:
        await RedisRateLimiter(clients[0]).admit(key(tpm=100), tokens=101)
    assert refused.value.code == "request_exceeds_tpm" and refused.value.status == 400


async def test_a_key_without_limits_touches_nothing(clients: list[Redis]) -> None:
    assert await RedisRateLimiter(clients[0]).admit(key(), tokens=10**9) is None
    assert await clients[0].dbsize() == 0


@pytest.mark.parametrize(("policy", "admits"), [("open", True), ("closed", False)])
async def test_redis_down_follows_the_configured_policy_and_says_so(policy: Any, admits: bool) -> None:
    down = Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2)
    telemetry = RecordingTelemetry()
    limiter = RedisRateLimiter(down, on_error=policy, telemetry=telemetry)
    try:
        if admits:
            assert await limiter.admit(key(rpm=1), tokens=1) is None
        else:
            with pytest.raises(ServiceUnavailable):
                await limiter.admit(key(rpm=1), tokens=1)
    finally:
        await down.aclose()
    assert telemetry.counts.get("RateLimiterErrors") == 1
    decided, other = ("RateLimitFailedOpen", "RateLimitFailedClosed")[:: 1 if admits else -1]
    assert telemetry.counts.get(decided) == 1 and other not in telemetry.counts


async def test_over_the_limit_makes_no_upstream_call(clients: list[Redis], emulator: EmulatorServer) -> None:
    emulator.reset(settings=True)
    settings = Settings(deepseek_base_url=emulator.base_url, deepseek_api_key="sk-emulator-test", retry_attempts=1)
    model = DeepSeekClient.from_settings(settings, api_key=lambda _refresh: "sk-emulator-test")
    chat = ChatService(settings=settings, model=model, cache=None, sessions=None, limiter=RedisRateLimiter(clients[0]))
    principal = key(rpm=2)
    request = ChatCompletionRequest.model_validate(
        {"model": "deepseek-flash", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
    )
    try:
        for _ in range(2):
            await chat.complete(chat.prepare(request, principal, headers={}, deadline=time.monotonic() + 10))
        stream_request = request.model_copy(update={"stream": True})
        for prepared in (request, stream_request):
            with pytest.raises(RateLimited):
                call = chat.prepare(prepared, principal, headers={}, deadline=time.monotonic() + 10)
                await (chat.stream(call) if prepared.stream else chat.complete(call))
    finally:
        await model.aclose()
    assert emulator.stats()["calls"] == 2


class Keys:
    """Key records by id, as `DynamoKeyStore.get` answers them; counts reads to show the cache."""

    def __init__(self, **limits: KeyLimits) -> None:
        self.limits = limits
        self.reads = 0

    def get(self, key_id: str) -> ApiKeyRecord:
        self.reads += 1
        if key_id not in self.limits:
            raise NotFound(f"No API key with id '{key_id}'.")
        return ApiKeyRecord(key_id=key_id, tenant_id="acme", limits=self.limits[key_id])


async def test_a_job_principal_without_limits_gets_its_keys_limits_by_id(
    clients: list[Redis], emulator: EmulatorServer
) -> None:
    emulator.reset(settings=True)
    settings = Settings(deepseek_base_url=emulator.base_url, deepseek_api_key="sk-emulator-test", retry_attempts=1)
    model = DeepSeekClient.from_settings(settings, api_key=lambda _refresh: "sk-emulator-test")
    key_id = f"key_job_{time.monotonic_ns()}"
    keys = Keys(**{key_id: KeyLimits(rpm=1)})
    chat = ChatService(
        settings=settings,
        model=model,
        cache=None,
        sessions=None,
        limiter=RedisRateLimiter(clients[0]),
        limits_for=LimitsByKeyId(keys),
    )
    rebuilt = Principal(tenant_id="acme", key_id=key_id)  # as the worker and the generator build it
    request = ChatCompletionRequest.model_validate(
        {"model": "deepseek-flash", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
    )
    try:
        await chat.complete(chat.prepare(request, rebuilt, headers={}, deadline=time.monotonic() + 10))
        with pytest.raises(RateLimited):
            await chat.complete(chat.prepare(request, rebuilt, headers={}, deadline=time.monotonic() + 10))
    finally:
        await model.aclose()
    assert emulator.stats()["calls"] == 1 and keys.reads == 1  # the second lookup came from the cache
    assert LimitsByKeyId(keys)("key_gone") == KeyLimits()  # a deleted key's queued work runs unlimited
