"""Per-request WebSocket state in Redis: every frame (for ``resume``), the connection frames go to,
and the cancel flag. Both keys of a request share a hash tag, so the scripts run on cluster-mode
ElastiCache; the tenant is part of the tag, so one tenant can never touch another's request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis.asyncio import Redis

# KEYS: meta hash, frames list. Claim a request id for a connection; refuse a duplicate.
_CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'conn', ARGV[1], 'cancel', '0')
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""

# Append one frame; answer where it should go and whether the client cancelled. A request Redis has lost
# (restarted empty, failed over) is claimed again for the connection the caller names (ARGV[3]), so the
# rest of the answer still reaches its client instead of going nowhere.
_PUSH = """
if ARGV[3] ~= '' and redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'conn', ARGV[3], 'cancel', '0')
end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return redis.call('HMGET', KEYS[1], 'conn', 'cancel')
"""

# Point a known request at a new connection and return its frames after a seq (seq N is index N-1).
_RESUME = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('HSET', KEYS[1], 'conn', ARGV[1])
return redis.call('LRANGE', KEYS[2], tonumber(ARGV[2]), -1)
"""

_CANCEL = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'cancel', '1')
return 1
"""


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


class RedisRequestLog:
    def __init__(self, redis: Redis, *, ttl_seconds: int = 900, prefix: str = "seekless:ws:") -> None:
        self._redis = redis
        self._ttl = ttl_seconds
        self._prefix = prefix
        self._claim = redis.register_script(_CLAIM)
        self._push = redis.register_script(_PUSH)
        self._resume = redis.register_script(_RESUME)
        self._cancel = redis.register_script(_CANCEL)

    def _keys(self, tenant_id: str, request_id: str) -> list[str]:
        tag = f"{self._prefix}{{{tenant_id}:{request_id}}}"
        return [tag + ":meta", tag + ":frames"]

    async def claim(self, tenant_id: str, request_id: str, connection_id: str) -> bool:
        return bool(await self._claim(keys=self._keys(tenant_id, request_id), args=[connection_id, self._ttl]))

    async def push(
        self, tenant_id: str, request_id: str, frame: bytes, *, connection_id: str | None = None
    ) -> tuple[str | None, bool]:
        args: list[bytes | int | str] = [frame, self._ttl, connection_id or ""]
        conn, cancel = await self._push(keys=self._keys(tenant_id, request_id), args=args)
        return _text(conn), _text(cancel) == "1"

    async def resume(self, tenant_id: str, request_id: str, connection_id: str, after_seq: int) -> list[bytes] | None:
        frames = await self._resume(keys=self._keys(tenant_id, request_id), args=[connection_id, after_seq])
        return None if frames is None else list(frames)

    async def cancel(self, tenant_id: str, request_id: str) -> bool:
        return bool(await self._cancel(keys=self._keys(tenant_id, request_id), args=[]))

    async def state(self, tenant_id: str, request_id: str) -> tuple[str | None, bool]:
        conn, cancel = await self._redis.hmget(self._keys(tenant_id, request_id)[0], ["conn", "cancel"])
        return _text(conn), _text(cancel) == "1"
