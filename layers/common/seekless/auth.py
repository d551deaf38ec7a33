"""API key authentication: ``Authorization: Bearer <key>`` checked against hashed keys.

Keys are random and long, so a plain SHA-256 is the right hash (a slow password hash would only add
latency). Lookups are cached per execution environment for a short TTL: a revoked key stops working
within ``key_cache_seconds``.

The admin routes take one other credential, the admin key (``AdminAuthenticator``): a secret of its own,
never a tenant's key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

from seekless.errors import AuthenticationFailed, UnknownRoute
from seekless.models import Operator, Principal
from seekless.ports import KeyStore

KEY_PREFIX = "sk-seekless-"


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise AuthenticationFailed(
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.", code="missing_api_key"
        )
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed("The Authorization header must be 'Bearer <key>'.")
    return token.strip()


class Authenticator:
    def __init__(
        self, keys: KeyStore, *, cache_seconds: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._keys = keys
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    def authenticate(self, authorization: str | None) -> Principal:
        digest = hash_key(bearer_token(authorization))
        now = self._clock()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            principal = cached[1]
        else:
            record = self._keys.lookup(digest)
            principal = (
                Principal(tenant_id=record.tenant_id, key_id=record.key_id, limits=record.limits)
                if record is not None and record.status == "active"
                else None
            )
            if len(self._cache) > 10_000:
                self._cache.clear()
            # Unknown keys are remembered briefly: enough to blunt a flood, short enough that a
            # freshly created key works at once.
            ttl = self._cache_seconds if principal is not None else min(5.0, self._cache_seconds)
            self._cache[digest] = (now + ttl, principal)
        if principal is None:
            # Never echo the key: OpenAI prints a masked prefix, we print nothing of it.
            raise AuthenticationFailed("Incorrect API key provided.")
        return principal


class AdminAuthenticator:
    """Checks the admin key of the admin routes against the configured one.

    ``admin_key(refresh)`` returns the configured key, None when there is none (the admin routes then
    answer 404, as routes that do not exist), and reads it afresh from its source when ``refresh`` is
    true (the wiring: the environment locally, Secrets Manager through the Powertools cache on AWS).
    A key that does not match makes one fresh read, at most every ``refresh_seconds``: an operator who
    rotated the secret is let in at once, and a flood of wrong keys costs one read per interval.
    """

    def __init__(
        self,
        admin_key: Callable[[bool], str | None],
        *,
        refresh_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._admin_key = admin_key
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._refreshed_at: float | None = None

    def authenticate(self, authorization: str | None) -> Operator:
        expected = self._admin_key(False)
        if expected is None:
            raise UnknownRoute()
        presented = _digest(bearer_token(authorization))
        if hmac.compare_digest(presented, _digest(expected)):
            return Operator()
        now = self._clock()
        if self._refreshed_at is None or now - self._refreshed_at >= self._refresh_seconds:
            self._refreshed_at = now
            fresh = self._admin_key(True)
            if fresh is not None and hmac.compare_digest(presented, _digest(fresh)):
                return Operator()
        # The same words as for a wrong tenant key: nothing says this route is an admin one.
        raise AuthenticationFailed("Incorrect API key provided.")


def _digest(key: str) -> bytes:
    # Equal-length digests, so compare_digest takes the same time whatever was presented.
    return hashlib.sha256(key.encode()).digest()
