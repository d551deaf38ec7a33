"""Redis as the template's IAM-enabled cache user (CacheAppUser): the wired clients AUTH as that user,
and every adapter works within the user's access string (all commands but @dangerous).

A local Redis cannot check a SigV4 token, so the user here accepts any password: what this proves is
that the clients authenticate as the user through the credential provider, and that nothing the
adapters send is refused by the ACL the template gives the user.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from redis import Redis as SyncRedis

from seekless import wiring
from seekless.adapters.breaker import RedisCircuitBreaker
from seekless.adapters.limits import RedisRateLimiter
from seekless.adapters.redis_cache import RedisResponseCache
from seekless.adapters.tickets import RedisTicketStore
from seekless.adapters.ws_buffer import RedisRequestLog
from seekless.contracts import ChatResult
from seekless.models import KeyLimits, Principal
from seekless_local.redis_server import RedisServer
from seekless_local.template import load_template

pytestmark = pytest.mark.redis

USER = "seekless-test-app"


@pytest.fixture
def app_user(redis_server: RedisServer, redis_url: str) -> Iterator[str]:
    if redis_server.kind == "fakeredis":
        pytest.skip("ACL users need a real redis-server")
    access = load_template()["Resources"]["CacheAppUser"]["Properties"]["AccessString"].split()
    admin = SyncRedis.from_url(redis_url)
    admin.execute_command("ACL", "SETUSER", USER, "reset", *access, "nopass")
    try:
        yield USER
    finally:
        admin.execute_command("ACL", "DELUSER", USER)
        admin.close()


@pytest.fixture
async def as_app_user(app_user: str, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    for name, value in {
        "REDIS_URL": redis_url,
        "SEEKLESS_REDIS_IAM_USER": app_user,
        "SEEKLESS_REDIS_CACHE_NAME": "seekless-test",
        "AWS_ACCESS_KEY_ID": "AKIDTEST",
        "AWS_SECRET_ACCESS_KEY": "test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    wiring.reset_environment()
    yield wiring
    await wiring.aclose_environment()
    wiring.reset_environment()


async def test_wired_clients_authenticate_as_the_cache_user(as_app_user: Any) -> None:
    assert await as_app_user.redis().acl_whoami() == USER
    sync = as_app_user.redis_sync()
    try:
        assert sync.acl_whoami() == USER
    finally:
        sync.close()


async def test_every_adapter_works_within_the_cache_users_access_string(as_app_user: Any) -> None:
    client = as_app_user.redis()

    breaker = RedisCircuitBreaker(client, name="acl", failure_threshold=2)
    assert await breaker.allow()
    for _ in range(2):
        await breaker.record_failure()
    assert await breaker.state() == "open"  # the scripts ran (the breaker fails open on errors)

    cache = RedisResponseCache(client, on_error=lambda operation: pytest.fail(f"cache {operation} refused"))
    lease = await cache.acquire("k", lease_seconds=5)
    assert lease is not None
    await cache.put("k", ChatResult(id="c1", model="deepseek-flash", content="hi"), 60, lease=lease)
    cached = await cache.get("k")
    assert cached is not None and cached.content == "hi"

    limiter = RedisRateLimiter(client, on_error="closed")
    principal = Principal(tenant_id="t", key_id="k1", limits=KeyLimits(rpm=5, tpm=1000))
    reservation = await limiter.admit(principal, tokens=10)
    assert reservation is not None
    await limiter.settle(reservation, used=4)

    log = RedisRequestLog(client)
    assert await log.claim("t", "r1", "conn-1")
    assert await log.push("t", "r1", b'{"seq": 1}') == ("conn-1", False)
    assert await log.resume("t", "r1", "conn-2", after_seq=0) == [b'{"seq": 1}']
    assert await log.cancel("t", "r1")
    assert await log.state("t", "r1") == ("conn-2", True)

    sync = as_app_user.redis_sync()
    try:
        tickets = RedisTicketStore(sync)
        ticket = tickets.issue(principal)
        assert tickets.redeem(ticket) == Principal(tenant_id="t", key_id="k1")
    finally:
        sync.close()
