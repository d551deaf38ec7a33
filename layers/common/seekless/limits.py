"""Per-key rate limits: requests and tokens per minute, enforced before any upstream call.

A request reserves its worst case (the prompt estimate plus max_tokens) in the current minute's window
and is admitted only if the reservation fits; when the answer is in, the reservation is settled to the
real usage (a cache hit or a failed call settles to zero). So concurrent requests can never together
pass a limit: each one's reservation was counted before it went upstream. The window is a fixed
minute; ``Retry-After`` says when it turns over.

Redis unavailable: the policy is configured (``rate_limit_on_error``: ``open`` admits and counts
``RateLimiterErrors``; ``closed`` refuses with 503).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from seekless.errors import InvalidRequest, NotFound, RateLimited
from seekless.models import UNLIMITED, ApiKeyRecord, KeyLimits, Principal
from seekless.tokens import estimate_prompt_tokens


@dataclass(frozen=True, slots=True)
class Reservation:
    key_id: str
    window: int  # the minute (epoch seconds // 60) the tokens were reserved in
    tokens: int  # reserved; 0 when the key has no token limit
    scopes: tuple[str, ...] = ()  # the budget periods reserved in (daily/monthly budgets)


class RateLimiter(Protocol):
    async def admit(self, principal: Principal, *, tokens: int) -> Reservation | None:
        """Admit one request reserving ``tokens``, or raise RateLimited (None: the key is unlimited)."""
        ...

    async def settle(self, reservation: Reservation, *, used: int) -> None: ...


def reservation_tokens(body: dict[str, Any]) -> int:
    """The most a request can spend: its prompt (estimated) plus the completion it may produce."""
    return estimate_prompt_tokens(body.get("messages") or []) + int(body.get("max_tokens") or 0)


def refused(reason: str, *, limit: int, retry_after: float, tokens: int = 0) -> RateLimited | InvalidRequest:
    if reason == "rpm":
        return RateLimited(
            f"Rate limit reached: {limit} requests per minute for this API key. Retry after the window turns over.",
            code="rate_limit_requests",
            retry_after=retry_after,
        )
    if reason == "too_large":
        return InvalidRequest(
            f"This request may use up to {tokens} tokens (prompt estimate + max_tokens), more than this API key's "
            f"{limit} tokens per minute. Lower max_tokens or shorten the messages.",
            param="max_tokens",
            code="request_exceeds_tpm",
        )
    return RateLimited(
        f"Rate limit reached: {limit} tokens per minute for this API key (each request reserves its prompt "
        "estimate plus max_tokens until it finishes). Retry after the window turns over.",
        code="rate_limit_tokens",
        retry_after=retry_after,
    )


class KeyRecords(Protocol):
    def get(self, key_id: str) -> ApiKeyRecord: ...


class LimitsByKeyId:
    """A key's limits by its id, for principals rebuilt from a job (WebSocket generations, the worker),
    cached per execution environment like the authenticator's lookups: a changed limit applies within
    ``cache_seconds``. A key that no longer exists has no limits to apply (its requests were admitted
    while it did)."""

    def __init__(
        self, keys: KeyRecords, *, cache_seconds: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._keys = keys
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cache: dict[str, tuple[float, KeyLimits]] = {}

    def __call__(self, key_id: str) -> KeyLimits:
        now = self._clock()
        cached = self._cache.get(key_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            limits = self._keys.get(key_id).limits
        except NotFound:
            logging.getLogger("seekless.limits").warning("key %s not found; its job runs without limits", key_id)
            limits = UNLIMITED
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key_id] = (now + self._cache_seconds, limits)
        return limits
