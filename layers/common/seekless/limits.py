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

from dataclasses import dataclass
from typing import Any, Protocol

from seekless.errors import InvalidRequest, RateLimited
from seekless.models import Principal
from seekless.tokens import estimate_prompt_tokens


@dataclass(frozen=True, slots=True)
class Reservation:
    key_id: str
    window: int  # the minute (epoch seconds // 60) the tokens were reserved in
    tokens: int  # reserved; 0 when the key has no token limit


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
