"""The per-key limiter in Redis: one Lua script checks and reserves atomically, so any number of
Lambdas admitting at once cannot pass a limit together. Both counters of a key share a hash tag, as
ElastiCache Serverless (cluster mode) requires for a multi-key script."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from redis.exceptions import RedisError

from seekless.errors import ServiceUnavailable
from seekless.limits import Reservation, refused
from seekless.models import UNLIMITED, Principal
from seekless.telemetry import NullTelemetry, Telemetry

if TYPE_CHECKING:
    from redis.asyncio import Redis

logger = logging.getLogger("seekless.limits")
WINDOW_SECONDS = 60
# Counters outlive their minute a little, so a late settle still finds them; then they expire.
COUNTER_TTL = 2 * WINDOW_SECONDS

# KEYS: requests counter, tokens counter. ARGV: rpm, tpm (-1 = none), tokens, ttl.
# Returns {1} admitted, {0, "rpm"|"tpm"|"too_large"} refused. Nothing is written on a refusal.
ADMIT = """
local rpm = tonumber(ARGV[1])
local tpm = tonumber(ARGV[2])
local tokens = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
if tpm >= 0 and tokens > tpm then return {0, "too_large"} end
if rpm >= 0 and tonumber(redis.call("GET", KEYS[1]) or "0") + 1 > rpm then return {0, "rpm"} end
if tpm >= 0 and tonumber(redis.call("GET", KEYS[2]) or "0") + tokens > tpm then return {0, "tpm"} end
if rpm >= 0 then
  redis.call("INCR", KEYS[1])
  redis.call("EXPIRE", KEYS[1], ttl)
end
if tpm >= 0 then
  redis.call("INCRBY", KEYS[2], tokens)
  redis.call("EXPIRE", KEYS[2], ttl)
end
return {1}
"""


class RedisRateLimiter:
    """Implements ``seekless.limits.RateLimiter``."""

    def __init__(
        self,
        redis: Redis,
        *,
        on_error: Literal["open", "closed"] = "open",
        telemetry: Telemetry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._admit = redis.register_script(ADMIT)
        self._on_error = on_error
        self._telemetry = telemetry or NullTelemetry()
        self._clock = clock

    @staticmethod
    def _keys(key_id: str, window: int) -> list[str]:
        tag = "{rl:" + key_id + "}"
        return [f"{tag}:r:{window}", f"{tag}:t:{window}"]

    async def admit(self, principal: Principal, *, tokens: int) -> Reservation | None:
        limits = principal.limits or UNLIMITED
        if not limits.per_minute:
            return None
        now = self._clock()
        window = int(now // WINDOW_SECONDS)
        rpm = -1 if limits.rpm is None else limits.rpm
        tpm = -1 if limits.tpm is None else limits.tpm
        try:
            answer = await self._admit(keys=self._keys(principal.key_id, window), args=[rpm, tpm, tokens, COUNTER_TTL])
        except (RedisError, OSError) as error:
            self._telemetry.count("RateLimiterErrors")
            # Which way the policy went, so a dashboard tells "admitted unchecked" from "refused".
            self._telemetry.count("RateLimitFailedOpen" if self._on_error == "open" else "RateLimitFailedClosed")
            if self._on_error == "closed":
                raise ServiceUnavailable(
                    "Rate limits cannot be checked right now; retry shortly.", code="rate_limiter_unavailable"
                ) from error
            logger.warning("rate limiter unavailable; admitting (policy: open)")
            return None
        if int(answer[0]) == 1:
            return Reservation(key_id=principal.key_id, window=window, tokens=tokens if tpm >= 0 else 0)
        reason = answer[1].decode() if isinstance(answer[1], bytes) else str(answer[1])
        self._telemetry.count("RateLimited")
        retry_after = (window + 1) * WINDOW_SECONDS - now
        limit = rpm if reason == "rpm" else tpm
        raise refused(reason, limit=limit, retry_after=retry_after, tokens=tokens)

    async def settle(self, reservation: Reservation, *, used: int) -> None:
        """Give back what the request reserved but did not use (or add what it used beyond)."""
        if reservation.tokens == 0 or used == reservation.tokens:
            return
        key = self._keys(reservation.key_id, reservation.window)[1]
        try:
            # EXPIRE again: a generation that outlived the window's counter would otherwise re-create it
            # here without a TTL, and it would stay in Redis for good.
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.incrby(key, used - reservation.tokens)
                pipe.expire(key, COUNTER_TTL)
                await pipe.execute()
        except (RedisError, OSError):
            self._telemetry.count("RateLimiterErrors")
            logger.warning("could not settle a token reservation; the window keeps the reserved amount")
