"""The response cache on Redis (ElastiCache Serverless in AWS, any Redis locally).

Fails open: a Redis error is a miss (get), a dropped write (put) or "go ahead" (acquire), logged as a
warning and counted, never a failed request. Each key is touched by single-key commands only, so the
cache works unchanged on a cluster-mode endpoint.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from seekless.contracts import ChatResult

if TYPE_CHECKING:
    from redis.asyncio import Redis

logger = logging.getLogger("seekless.cache")

# Release a single-flight lease only if we still hold it (a slow leader must not drop a successor's).
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
        self._release = redis.register_script(_RELEASE)

    def _failed(self, operation: str, error: Exception) -> None:
        logger.warning("cache %s failed, continuing without cache: %s", operation, type(error).__name__)
        self._on_error(operation)

    async def get(self, key: str) -> ChatResult | None:
        try:
            raw = await self._redis.get(self._prefix + key)
        except (RedisError, OSError) as error:
            self._failed("get", error)
            return None
        if raw is None:
            return None
        try:
            return ChatResult.from_cache(json.loads(raw))
        except (ValueError, KeyError, TypeError) as error:
            self._failed("decode", error)
            return None

    async def put(self, key: str, result: ChatResult, ttl_seconds: int) -> None:
        payload = json.dumps(result.to_cache(), separators=(",", ":"))
        try:
            await self._redis.set(self._prefix + key, payload, ex=ttl_seconds)
        except (RedisError, OSError) as error:
            self._failed("put", error)

    async def acquire(self, key: str, lease_seconds: float) -> str | None:
        token = secrets.token_hex(8)
        try:
            won = await self._redis.set(
                self._prefix + "lease:" + key, token, nx=True, px=max(1, int(lease_seconds * 1000))
            )
        except (RedisError, OSError) as error:
            self._failed("acquire", error)
            return token  # no coordination possible: compute it ourselves
        return token if won else None

    async def release(self, key: str, token: str) -> None:
        try:
            await self._release(keys=[self._prefix + "lease:" + key], args=[token])
        except (RedisError, OSError) as error:
            self._failed("release", error)

    async def leased(self, key: str) -> bool:
        try:
            return bool(await self._redis.exists(self._prefix + "lease:" + key))
        except (RedisError, OSError):
            return False
