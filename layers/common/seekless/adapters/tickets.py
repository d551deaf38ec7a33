"""Single-use WebSocket tickets in Redis, for browsers (which cannot send headers at the handshake).

Only a hash of the ticket is stored, so a ticket never appears in a Redis key or value; GETDEL makes
it single-use even when two handshakes race with the same ticket.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from typing import TYPE_CHECKING

from seekless.models import Principal

if TYPE_CHECKING:
    from redis import Redis

PREFIX = "tkt_"


class RedisTicketStore:
    def __init__(self, redis: Redis, *, ttl_seconds: int = 60, prefix: str = "seekless:ticket:") -> None:
        self._redis = redis
        self.ttl_seconds = ttl_seconds
        self._prefix = prefix

    def _key(self, ticket: str) -> str:
        return self._prefix + hashlib.sha256(ticket.encode()).hexdigest()

    def issue(self, principal: Principal) -> str:
        ticket = PREFIX + secrets.token_urlsafe(24)
        value = json.dumps({"tenant_id": principal.tenant_id, "key_id": principal.key_id})
        self._redis.set(self._key(ticket), value, ex=self.ttl_seconds)
        return ticket

    def redeem(self, ticket: str) -> Principal | None:
        if not ticket.startswith(PREFIX):
            return None
        raw = self._redis.getdel(self._key(ticket))
        if raw is None:
            return None
        data = json.loads(raw)
        return Principal(tenant_id=data["tenant_id"], key_id=data["key_id"])
