"""Daily and monthly token budgets per key, in DynamoDB (the keys table): what is left of each budget is
one item per key and period, reserved before the upstream call and settled to real usage after, like
the per-minute limits in Redis but durable (a day or a month is too long to trust a cache with).

Items: ``key_hash = "budget#<key_id>#d#<YYYY-MM-DD>"`` and ``"budget#<key_id>#m#<YYYY-MM>"`` (UTC), with
``remaining`` and ``expires_at`` (TTL). They carry no tenant_id, so no key lookup, listing or index sees
them. A reservation is one transaction over both periods, each update conditioned on enough being
left, so concurrent requests cannot overspend either budget; the first request of a period creates its
item from the key's limit (``if_not_exists``).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from seekless.adapters.dynamo_items import error_code, store_error
from seekless.errors import InvalidRequest, RateLimited, ServiceUnavailable
from seekless.limits import Reservation
from seekless.models import UNLIMITED, Principal

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

ATTEMPTS = 4


def _periods(now: float) -> dict[str, tuple[str, int, float]]:
    """period → (key suffix, TTL epoch, seconds until it ends)."""
    day = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    next_day = day + timedelta(days=1)
    month = day.replace(day=1)
    next_month = (month + timedelta(days=32)).replace(day=1)
    return {
        "daily": (f"d#{day:%Y-%m-%d}", int(next_day.timestamp()) + 2 * 86_400, next_day.timestamp() - now),
        "monthly": (f"m#{month:%Y-%m}", int(next_month.timestamp()) + 35 * 86_400, next_month.timestamp() - now),
    }


class DynamoBudgets:
    """Implements ``seekless.limits.RateLimiter`` for ``daily_tokens`` and ``monthly_tokens``."""

    def __init__(
        self, table_name: str, *, client: DynamoDBClient | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self._table = table_name
        self._given = client
        self._clock = clock

    @property
    def _client(self) -> DynamoDBClient:
        # Built on first use: every REST environment builds this limiter, few keys have a budget, and a
        # boto3 client costs tens of milliseconds of cold start.
        if self._given is None:
            import boto3

            self._given = boto3.client("dynamodb")
        return self._given

    @staticmethod
    def _key(key_id: str, suffix: str) -> dict[str, Any]:
        return {"key_hash": {"S": f"budget#{key_id}#{suffix}"}}

    async def admit(self, principal: Principal, *, tokens: int) -> Reservation | None:
        limits = principal.limits or UNLIMITED
        if limits.daily_tokens is None and limits.monthly_tokens is None:
            return None  # the common case: no thread hop, no call
        return await asyncio.to_thread(self.reserve, principal, tokens)

    async def settle(self, reservation: Reservation, *, used: int) -> None:
        await asyncio.to_thread(self.release, reservation, used)

    def reserve(self, principal: Principal, tokens: int) -> Reservation | None:
        limits = principal.limits or UNLIMITED
        declared = {"daily": limits.daily_tokens, "monthly": limits.monthly_tokens}
        budgets = {name: limit for name, limit in declared.items() if limit is not None}
        if not budgets:
            return None
        now = self._clock()
        periods = _periods(now)
        for name, limit in budgets.items():
            if tokens > limit:
                raise InvalidRequest(
                    f"This request may use up to {tokens} tokens, more than this API key's whole {name} budget "
                    f"({limit}). Lower max_tokens or shorten the messages.",
                    param="max_tokens",
                    code="request_exceeds_budget",
                )
        names = list(budgets)
        updates = [
            {
                "Update": {
                    "TableName": self._table,
                    "Key": self._key(principal.key_id, periods[name][0]),
                    "UpdateExpression": "SET remaining = if_not_exists(remaining, :limit) - :n, "
                    "expires_at = if_not_exists(expires_at, :ttl)",
                    "ConditionExpression": "attribute_not_exists(remaining) OR remaining >= :n",
                    "ExpressionAttributeValues": {
                        ":limit": {"N": str(budgets[name])},
                        ":n": {"N": str(tokens)},
                        ":ttl": {"N": str(periods[name][1])},
                    },
                }
            }
            for name in names
        ]
        for attempt in range(ATTEMPTS):
            try:
                self._client.transact_write_items(TransactItems=updates)  # type: ignore[arg-type]
            except BotoCoreError as error:
                raise ServiceUnavailable("The token budget cannot be checked right now; retry shortly.") from error
            except ClientError as error:
                if error_code(error) != "TransactionCanceledException":
                    raise store_error(error, "budget store") from error
                reasons = list(error.response.get("CancellationReasons") or [])
                for name, reason in zip(names, reasons, strict=False):
                    if reason.get("Code") == "ConditionalCheckFailed":
                        raise RateLimited(
                            f"This API key's {name} token budget ({budgets[name]}) is spent; it renews when the "
                            f"{'day' if name == 'daily' else 'month'} turns over (UTC).",
                            code=f"{name}_budget_exhausted",
                            retry_after=periods[name][2],
                        ) from error
                time.sleep(0.01 * (1 + secrets.randbelow(4)) * (attempt + 1))  # a concurrent reservation: again
                continue
            return Reservation(
                key_id=principal.key_id, window=int(now), tokens=tokens, scopes=tuple(periods[n][0] for n in names)
            )
        raise ServiceUnavailable("The token budget is busy; retry shortly.", code="budget_contention")

    def release(self, reservation: Reservation, used: int) -> None:
        """Give back what was reserved but not used (a period that has ended keeps its own item)."""
        delta = reservation.tokens - used
        if delta == 0:
            return
        for scope in reservation.scopes:
            try:
                self._client.update_item(
                    TableName=self._table,
                    Key=self._key(reservation.key_id, scope),
                    UpdateExpression="ADD remaining :d",
                    ConditionExpression="attribute_exists(remaining)",
                    ExpressionAttributeValues={":d": {"N": str(delta)}},
                )
            except ClientError as error:
                if error_code(error) != "ConditionalCheckFailedException":
                    raise store_error(error, "budget store") from error
