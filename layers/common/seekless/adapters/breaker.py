"""A circuit breaker whose state lives in Redis, so every Lambda execution environment shares it.

States: ``closed`` (calls allowed; consecutive failures counted), ``open`` (calls refused until the
cooldown passes), ``half_open`` (exactly one caller holds a probe; everyone else is refused until the
probe reports, or until the probe times out and another caller gets one). Each transition is one Lua
script over one hash, so concurrent Lambdas never race. The key carries a hash tag: ElastiCache
Serverless runs in cluster mode and a script's keys must live in one slot.

Every refused call and every opening counts ``BreakerOpen`` through the ``Telemetry`` port (when one
is given), the metric the template's alarm watches: a breaker that stays open keeps refusing, so the
count keeps coming for as long as callers keep arriving.

Redis trouble never takes the service down: every call fails open (allow) and a warning is logged
once per instance, which is once per execution environment with the cached wiring. After a Redis
error the breaker stays out of Redis's way for a few seconds, so an outage costs one timeout per
environment every few seconds instead of one per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from redis.exceptions import RedisError

from seekless.telemetry import NullTelemetry, Telemetry

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

logger = logging.getLogger("seekless.breaker")

BreakerState = Literal["closed", "open", "half_open"]

# KEYS[1] = state hash. Times are integer milliseconds from the caller's clock (ARGV), so every
# Lambda uses its own (NTP-synchronised) clock and tests can inject one. Hash fields:
#   state, failures, open_until, probe_until
_ALLOW = """
local key = KEYS[1]
local now = tonumber(ARGV[1])
local probe_ms = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local state = redis.call('HGET', key, 'state')
if not state or state == 'closed' then
  -- third field: whether a success must be reported (there are failures to forget)
  return {1, 0, tonumber(redis.call('HGET', key, 'failures') or '0') > 0 and 1 or 0}
end
if state == 'open' then
  local open_until = tonumber(redis.call('HGET', key, 'open_until') or '0')
  if now < open_until then
    return {0, open_until - now, 0}
  end
  redis.call('HSET', key, 'state', 'half_open', 'probe_until', now + probe_ms)
  redis.call('PEXPIRE', key, ttl)
  return {1, 0, 1}
end
local probe_until = tonumber(redis.call('HGET', key, 'probe_until') or '0')
if now < probe_until then
  return {0, probe_until - now, 0}
end
-- the last probe never reported: hand out another one
redis.call('HSET', key, 'probe_until', now + probe_ms)
redis.call('PEXPIRE', key, ttl)
return {1, 0, 1}
"""

_FAILURE = """
local key = KEYS[1]
local now = tonumber(ARGV[1])
local threshold = tonumber(ARGV[2])
local cooldown_ms = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local state = redis.call('HGET', key, 'state')
if state == 'open' then
  return 0
end
if state == 'half_open' then
  redis.call('HSET', key, 'state', 'open', 'open_until', now + cooldown_ms, 'failures', 0)
  redis.call('HDEL', key, 'probe_until')
  redis.call('PEXPIRE', key, ttl)
  return 1
end
local failures = redis.call('HINCRBY', key, 'failures', 1)
if failures >= threshold then
  redis.call('HSET', key, 'state', 'open', 'open_until', now + cooldown_ms, 'failures', 0)
  redis.call('PEXPIRE', key, ttl)
  return 1
end
redis.call('HSET', key, 'state', 'closed')
redis.call('PEXPIRE', key, ttl)
return 0
"""

# A success while open is a call that started before the breaker opened: only the probe closes it.
_SUCCESS = """
local key = KEYS[1]
local state = redis.call('HGET', key, 'state')
if state == 'open' then
  return 0
end
local failures = tonumber(redis.call('HGET', key, 'failures') or '0')
if state == 'half_open' or failures ~= 0 then
  redis.call('DEL', key)
  return 1
end
return 0
"""

_REDIS_BACKOFF_SECONDS = 5.0
_KEY_TTL_MS = 24 * 3600 * 1000  # idle breakers disappear; any state older than this is stale anyway
OPEN_METRIC = "BreakerOpen"


class RedisCircuitBreaker:
    """The ``CircuitBreaker`` port over Redis. See the module docstring for the states."""

    def __init__(
        self,
        redis: Redis | RedisCluster,
        *,
        name: str = "deepseek",
        failure_threshold: int = 5,
        cooldown_seconds: float = 30.0,
        probe_timeout_seconds: float | None = None,
        clock: Callable[[], float] = time.time,
        redis_timeout_seconds: float = 0.5,
        telemetry: Telemetry | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self._redis = redis
        self.name = name
        self.key = f"{{seekless:breaker:{name}}}:state"
        self._threshold = failure_threshold
        self._cooldown_ms = max(1, round(cooldown_seconds * 1000))
        # A probe that never reports (its caller crashed, or got a 4xx that says nothing about health)
        # must not wedge the breaker: after this long another caller may probe.
        probe = cooldown_seconds if probe_timeout_seconds is None else probe_timeout_seconds
        self._probe_ms = max(1, round(probe * 1000))
        self._clock = clock
        self._timeout = redis_timeout_seconds
        self._allow = redis.register_script(_ALLOW)
        self._failure = redis.register_script(_FAILURE)
        self._success = redis.register_script(_SUCCESS)
        self._telemetry = telemetry or NullTelemetry()
        self._warned = False
        self._skip_redis_until = 0.0  # time.monotonic(); set after a Redis error
        #: Seconds until a refused caller may expect another chance, as seen by the last refused
        #: ``allow()``; the DeepSeek client turns it into ``Retry-After``.
        self.cooldown_remaining: float | None = None
        # A healthy breaker needs no write on success: the hot path costs one round trip, not two.
        # Set whenever Redis says there is something to forget, or this instance saw a failure.
        self._success_pending = True

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def allow(self) -> bool:
        result = await self._run(self._allow, self._now_ms(), self._probe_ms, _KEY_TTL_MS)
        if result is None:
            return True
        allowed, wait_ms, pending = (int(part) for part in result)
        if allowed:
            self._success_pending = self._success_pending or bool(pending)
            return True
        self.cooldown_remaining = max(0.0, wait_ms / 1000)
        self._telemetry.count(OPEN_METRIC)
        return False

    async def record_success(self) -> None:
        if not self._success_pending:
            return
        self._success_pending = False
        await self._run(self._success)

    async def record_failure(self) -> None:
        self._success_pending = True
        opened = await self._run(self._failure, self._now_ms(), self._threshold, self._cooldown_ms, _KEY_TTL_MS)
        if opened is not None and int(opened) == 1:
            self._telemetry.count(OPEN_METRIC)

    async def state(self) -> BreakerState:
        """The stored state, for metrics and tests. ``closed`` when Redis cannot be read (fail open)."""
        if time.monotonic() < self._skip_redis_until:
            return "closed"
        try:
            async with asyncio.timeout(self._timeout):
                raw = await self._redis.hget(self.key, "state")
        except (RedisError, OSError, TimeoutError) as exc:
            self._warn(exc)
            return "closed"
        value = raw.decode() if isinstance(raw, bytes) else raw
        if value == "open":
            return "open"
        if value == "half_open":
            return "half_open"
        return "closed"

    async def _run(self, script: Any, *args: int) -> Any:
        if time.monotonic() < self._skip_redis_until:
            return None
        try:
            async with asyncio.timeout(self._timeout):
                return await script(keys=[self.key], args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            self._warn(exc)
            return None

    def _warn(self, exc: BaseException) -> None:
        self._skip_redis_until = time.monotonic() + _REDIS_BACKOFF_SECONDS
        if not self._warned:
            self._warned = True
            logger.warning("circuit breaker %r cannot reach Redis (%s); failing open", self.name, type(exc).__name__)


if TYPE_CHECKING:
    from seekless.ports import CircuitBreaker

    def _implements_port(breaker: RedisCircuitBreaker) -> CircuitBreaker:
        return breaker
