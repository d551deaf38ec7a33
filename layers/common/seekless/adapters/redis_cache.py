"""The response cache and the decision cache on Redis (ElastiCache Serverless in AWS, any Redis locally).

Fails open: a Redis error is a miss (get), a dropped write (put) or "go ahead" (acquire), logged as a
warning and counted, never a failed request. A miss costs two round trips: one script reads the answer
or takes the single-flight lease, another stores the answer and gives the lease back. An answer and
its lease share a hash tag (see ``seekless.caching.cache_key``), so the scripts run on a cluster-mode
endpoint such as ElastiCache Serverless. The decision cache (``RedisDecisionCache``) is one plain key per
verdict, so it needs neither scripts nor leases.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from seekless.contracts import ChatResult

if TYPE_CHECKING:
    from redis.asyncio import Redis

logger = logging.getLogger("seekless.cache")

# KEYS[1] = the answer, KEYS[2] = its single-flight lease (same hash tag, so one cluster slot).
# Return the answer if there is one; else take the lease if it is free. One round trip per miss.
_LOOKUP = """
local answer = redis.call('GET', KEYS[1])
if answer then return {1, answer} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {0, ARGV[1]} end
return {0, false}
"""

# Store the answer and give up our lease, only if we still hold it (a slow leader must not drop a
# successor's lease).
_STORE = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
if ARGV[3] ~= '' and redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisResponseCache:
    def __init__(
        self, redis: Redis, *, prefix: str = "seekless:cache:", on_error: Callable[[str], None] | None = None
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._on_error = on_error or (lambda operation: None)
        self._lookup = redis.register_script(_LOOKUP)
        self._store = redis.register_script(_STORE)
        self._release = redis.register_script(_RELEASE)

    def _keys(self, key: str) -> list[str]:
        return [self._prefix + key, self._prefix + "lease:" + key]

    def _failed(self, operation: str, error: Exception) -> None:
        logger.warning("cache %s failed, continuing without cache: %s", operation, type(error).__name__)
        self._on_error(operation)

    def _decode(self, raw: bytes | str) -> ChatResult | None:
        try:
            return ChatResult.from_cache(json.loads(raw))
        except (ValueError, KeyError, TypeError) as error:
            self._failed("decode", error)
            return None

    async def get(self, key: str) -> ChatResult | None:
        try:
            raw = await self._redis.get(self._prefix + key)
        except (RedisError, OSError) as error:
            self._failed("get", error)
            return None
        return None if raw is None else self._decode(raw)

    async def lookup(self, key: str, lease_seconds: float) -> tuple[ChatResult | None, str | None]:
        token = secrets.token_hex(8)
        try:
            found, value = await self._lookup(keys=self._keys(key), args=[token, _millis(lease_seconds)])
        except (RedisError, OSError) as error:
            self._failed("lookup", error)
            return None, token  # no coordination possible: compute it ourselves
        if found:
            return self._decode(value), None
        return None, token if value else None

    async def acquire(self, key: str, lease_seconds: float) -> str | None:
        token = secrets.token_hex(8)
        try:
            won = await self._redis.set(self._keys(key)[1], token, nx=True, px=_millis(lease_seconds))
        except (RedisError, OSError) as error:
            self._failed("acquire", error)
            return token
        return token if won else None

    async def put(self, key: str, result: ChatResult, ttl_seconds: int, *, lease: str | None = None) -> None:
        payload = json.dumps(result.to_cache(), separators=(",", ":"))
        try:
            await self._store(keys=self._keys(key), args=[payload, ttl_seconds, lease or ""])
        except (RedisError, OSError) as error:
            self._failed("put", error)

    async def release(self, key: str, token: str) -> None:
        try:
            await self._release(keys=[self._keys(key)[1]], args=[token])
        except (RedisError, OSError) as error:
            self._failed("release", error)

    async def leased(self, key: str) -> bool:
        try:
            return bool(await self._redis.exists(self._keys(key)[1]))
        except (RedisError, OSError):
            return False


class RedisDecisionCache:
    """Implements ``seekless.ports.DecisionCache``: one JSON value per key, with a TTL. Fails open like
    the response cache: a Redis error or an unreadable value is a miss, a failed write is dropped; each
    is logged and counted through ``on_error``."""

    def __init__(
        self, redis: Redis, *, prefix: str = "seekless:decision:", on_error: Callable[[str], None] | None = None
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._on_error = on_error or (lambda operation: None)

    def _failed(self, operation: str, error: Exception) -> None:
        logger.warning("decision cache %s failed, continuing without it: %s", operation, type(error).__name__)
        self._on_error(operation)

    async def get(self, key: str) -> dict[str, Any] | None:
        try:
            raw = await self._redis.get(self._prefix + key)
        except (RedisError, OSError) as error:
            self._failed("get", error)
            return None
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except ValueError as error:
            self._failed("decode", error)
            return None
        return value if isinstance(value, dict) else None

    async def put(self, key: str, value: dict[str, Any], ttl_seconds: int) -> None:
        try:
            await self._redis.set(self._prefix + key, json.dumps(value, separators=(",", ":")), ex=max(1, ttl_seconds))
        except (RedisError, OSError) as error:
            self._failed("put", error)


def _millis(seconds: float) -> int:
    return max(1, int(seconds * 1000))
