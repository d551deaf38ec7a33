"""Per-tenant daily usage: counted in Redis on the request path, folded into DynamoDB every minute.

The record of truth is the usage table: one item per tenant, UTC day and model, ``tenant_id``
(partition) and ``period = "d#<YYYY-MM-DD>#<model>"`` (sort), so a tenant's range of days is one Query
on its own partition and no other tenant's items can come back. Cost is kept in micro-dollars as an
integer so additions stay exact.

Writing that item on every answer cost a DynamoDB round trip before the answer left (Mangum returns
when the app does). So a finished request adds its counts to a Redis hash instead, one script call
(``RedisUsageCounter``): the hash of its minute and tenant, ``{usage}:w:<minute>:<tenant>``, fields
``<day>|<model>|<counter>``, and notes that pair in a pending index. Every minute the job sweeper folds
each closed minute into the table (``UsageFolder``), oldest first, with one conditional UpdateItem per
item that ``ADD``s the counts and sets ``folded_through`` to that minute; an item that already went
past it is not added to twice, so a sweeper that dies between the table and Redis, or two sweepers at
once, count each minute exactly once. ``GET /v1/usage`` (``UsageLedger.days``) adds the pending
minutes an item has not folded yet, so a tenant sees a request as soon as it is answered.

All usage keys share the ``{usage}`` hash tag: in cluster mode (ElastiCache Serverless) they live in
one slot, so each script is atomic. They carry no TTL, so ``volatile-lru`` never evicts them; only a
fold deletes them. Redis down on the request path: the count goes straight to the table, as before
(slower, never lost), and ``UsageCounterErrors`` says so.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError
from redis.exceptions import RedisError

from seekless.adapters.dynamo_items import error_code, from_item, store_error
from seekless.audit import AuditRecord, UsageDay
from seekless.telemetry import NullTelemetry, Telemetry

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from redis import Redis as SyncRedis
    from redis.asyncio import Redis

logger = logging.getLogger("seekless.usage")

COUNTERS = (
    "requests",
    "errors",
    "cache_hits",
    "prompt_tokens",
    "completion_tokens",
    "prompt_cache_hit_tokens",
    "cost_micro_usd",
)
WINDOW_SECONDS = 60
Counts = dict[str, int]


def counts_of(record: AuditRecord) -> Counts:
    return {
        "requests": 1,
        "errors": 1 if record.status >= 400 or record.error_code else 0,
        "cache_hits": 1 if record.cache == "hit" else 0,
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "prompt_cache_hit_tokens": record.prompt_cache_hit_tokens,
        "cost_micro_usd": round(record.estimated_cost_usd * 1_000_000),
    }


def _period(day: date, model: str = "") -> str:
    return f"d#{day.isoformat()}#{model}"


def _usage_day(day: date, model: str, counts: Counts) -> UsageDay:
    values = {name: counts.get(name, 0) for name in COUNTERS}
    cost = values.pop("cost_micro_usd") / 1_000_000
    return UsageDay(day=day, model=model, estimated_cost_usd=cost, **values)


@dataclass(frozen=True, slots=True)
class FoldedDay:
    """One usage item as the table holds it, and the last minute folded into it (-1: none)."""

    day: date
    model: str
    counts: Counts
    folded_through: int = -1


class DynamoUsageStore:
    """The usage table: direct adds (Redis down or not configured), folds, and reads."""

    def __init__(
        self,
        table_name: str,
        *,
        retention_days: int = 400,
        client: DynamoDBClient | None = None,
    ) -> None:
        self._table = table_name
        self._retention = timedelta(days=retention_days)
        self._given = client

    @property
    def _client(self) -> DynamoDBClient:
        if self._given is None:  # built on first use, as the budgets' client: no cold-start cost up front
            import boto3

            self._given = boto3.client("dynamodb")
        return self._given

    def add(self, record: AuditRecord) -> None:
        if record.tenant_id is None or record.model is None:
            return
        try:
            self._update(record.tenant_id, record.day, record.model, counts_of(record))
        except ClientError as error:
            raise store_error(error, "usage store") from error

    def fold(self, tenant_id: str, day: date, model: str, counts: Counts, *, window: int) -> bool:
        """Add one minute's counts unless this item already holds that minute; False when it did."""
        try:
            self._update(tenant_id, day, model, counts, window=window)
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return False
            raise store_error(error, "usage store") from error
        return True

    def _update(self, tenant_id: str, day: date, model: str, counts: Counts, *, window: int | None = None) -> None:
        expires = datetime(day.year, day.month, day.day, tzinfo=UTC) + self._retention
        values: dict[str, Any] = {f":{name}": {"N": str(value)} for name, value in counts.items()}
        values[":ttl"] = {"N": str(int(expires.timestamp()))}
        update = "ADD " + ", ".join(f"{name} :{name}" for name in counts)
        update += " SET expires_at = if_not_exists(expires_at, :ttl)"
        condition: dict[str, str] = {}
        if window is not None:
            update += ", folded_through = :window"
            values[":window"] = {"N": str(window)}
            condition["ConditionExpression"] = "attribute_not_exists(folded_through) OR folded_through < :window"
        self._client.update_item(
            TableName=self._table,
            Key={"tenant_id": {"S": tenant_id}, "period": {"S": _period(day, model)}},
            UpdateExpression=update,
            ExpressionAttributeValues=values,
            **condition,  # type: ignore[arg-type]
        )

    def folded(self, tenant_id: str, *, start: date, end: date, model: str | None = None) -> list[FoldedDay]:
        """The tenant's items from ``start`` to ``end`` (both included), oldest day first."""
        query: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "tenant_id = :t AND period BETWEEN :from AND :to",
            "ExpressionAttributeValues": {
                ":t": {"S": tenant_id},
                ":from": {"S": _period(start)},
                ":to": {"S": _period(end) + "\U0010ffff"},  # every model of the last day
            },
        }
        found: list[FoldedDay] = []
        try:
            for page in self._client.get_paginator("query").paginate(**query):
                for item in page.get("Items", []):
                    data = from_item(item)
                    _, day, item_model = str(data["period"]).split("#", 2)
                    if model is not None and item_model != model:
                        continue
                    counts = {name: int(data.get(name, 0)) for name in COUNTERS}
                    through = int(data.get("folded_through", -1))
                    found.append(FoldedDay(date.fromisoformat(day), item_model, counts, through))
        except ClientError as error:
            raise store_error(error, "usage store") from error
        return found


# -- Redis: the request path's counters and the sweeper's fold -------------------------------------------

_TAG = "{usage}"
PENDING = f"{_TAG}:pending"  # sorted set: "<minute>:<tenant>" scored by the minute


def _hash_key(window: int, tenant_id: str) -> str:
    return f"{_TAG}:w:{window}:{tenant_id}"


def _tenant_key(tenant_id: str) -> str:
    return f"{_TAG}:t:{tenant_id}"  # set of the tenant's pending minutes, for GET /v1/usage


def _field(day: date, model: str, counter: str) -> str:
    return f"{day.isoformat()}|{model}|{counter}"


def _parse_field(field: str) -> tuple[date, str, str]:
    """``<day>|<model>|<counter>``: the day has a fixed width and counters no bar, so any model name
    reads back whole."""
    model, counter = field[11:].rsplit("|", 1)
    return date.fromisoformat(field[:10]), model, counter


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# KEYS: the minute's hash, the pending index, the tenant's pending set. ARGV: minute, index member,
# then field/amount pairs. One atomic call: a fold sees all of a request's counts or none.
COUNT = """
for i = 3, #ARGV, 2 do
  redis.call("HINCRBY", KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call("ZADD", KEYS[2], ARGV[1], ARGV[2])
redis.call("SADD", KEYS[3], ARGV[1])
return 1
"""

# KEYS: the minute's hash, the pending index, the tenant's pending set. ARGV: minute, index member.
FORGET = """
redis.call("DEL", KEYS[1])
redis.call("ZREM", KEYS[2], ARGV[2])
redis.call("SREM", KEYS[3], ARGV[1])
return 1
"""


def _grouped(raw: dict[Any, Any]) -> dict[tuple[date, str], Counts]:
    groups: dict[tuple[date, str], Counts] = defaultdict(dict)
    for field, amount in raw.items():
        day, model, counter = _parse_field(_text(field))
        if counter in COUNTERS:
            groups[(day, model)][counter] = int(amount)
    return groups


class UsageLedger:
    """Implements ``seekless.audit.UsageStore``: counts go to Redis when there is one, reads add the
    pending minutes to the table's items."""

    def __init__(
        self,
        table: DynamoUsageStore,
        redis: Redis | None = None,
        *,
        telemetry: Telemetry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._table = table
        self._redis = redis
        self._count = None if redis is None else redis.register_script(COUNT)
        self._telemetry = telemetry or NullTelemetry()
        self._clock = clock

    async def add(self, record: AuditRecord) -> None:
        tenant, model = record.tenant_id, record.model
        if tenant is None or model is None:
            return
        if self._count is not None:
            window = int(self._clock() // WINDOW_SECONDS)
            pairs: list[str | int] = []
            for name, amount in counts_of(record).items():
                if amount:
                    pairs += [_field(record.day, model, name), amount]
            try:
                await self._count(
                    keys=[_hash_key(window, tenant), PENDING, _tenant_key(tenant)],
                    args=[window, f"{window}:{tenant}", *pairs],
                )
                return
            except (RedisError, OSError):
                self._telemetry.count("UsageCounterErrors")
                logger.warning("usage counters unavailable; writing request %s to the table", record.request_id)
        await asyncio.to_thread(self._table.add, record)

    async def days(self, tenant_id: str, *, start: date, end: date, model: str | None = None) -> list[UsageDay]:
        # Redis first, then the table: a minute folded in between is then skipped (its item says so),
        # where the other order could miss it.
        pending = await self._pending(tenant_id)
        items = await asyncio.to_thread(self._table.folded, tenant_id, start=start, end=end, model=model)
        found = {(item.day, item.model): item for item in items}
        for window, (day, item_model), counts in pending:
            if not start <= day <= end or (model is not None and item_model != model):
                continue
            item = found.get((day, item_model), FoldedDay(day, item_model, {}))
            if window <= item.folded_through:
                continue
            total = {name: item.counts.get(name, 0) + counts.get(name, 0) for name in COUNTERS}
            found[(day, item_model)] = replace(item, counts=total)
        return [_usage_day(item.day, item.model, item.counts) for _, item in sorted(found.items())]

    async def _pending(self, tenant_id: str) -> list[tuple[int, tuple[date, str], Counts]]:
        if self._redis is None:
            return []
        try:
            windows = sorted(int(_text(w)) for w in await self._redis.smembers(_tenant_key(tenant_id)))
            async with self._redis.pipeline(transaction=False) as pipe:  # every minute in one round trip
                for window in windows:
                    pipe.hgetall(_hash_key(window, tenant_id))
                hashes = await pipe.execute()
            found = []
            for window, raw in zip(windows, hashes, strict=True):
                found += [(window, group, counts) for group, counts in _grouped(raw).items()]
        except (RedisError, OSError):
            self._telemetry.count("UsageCounterErrors")
            logger.warning("usage counters unavailable; GET /v1/usage shows folded minutes only")
            return []
        return found


@dataclass(frozen=True, slots=True)
class FoldReport:
    minutes: int = 0  # tenant-minutes folded and removed from Redis
    items: int = 0  # UpdateItems that added counts
    skipped: int = 0  # items that already held their minute (a fold that died half way, or a second sweeper)
    failed: int = 0  # tenant-minutes left for the next run after a table error


class UsageFolder:
    """The sweeper's half: every closed minute's counters into the table, oldest first."""

    def __init__(
        self,
        table: DynamoUsageStore,
        redis: SyncRedis,
        *,
        clock: Callable[[], float] = time.time,
        settle_windows: int = 1,
    ) -> None:
        self._table = table
        self._redis = redis
        self._forget = redis.register_script(FORGET)
        self._clock = clock
        # A minute is folded once this many later minutes have begun: a writer that read its clock just
        # before the minute turned has long finished by then (and Lambdas' clocks agree to milliseconds).
        self._settle = settle_windows

    def fold(self, *, limit: int = 2000) -> FoldReport:
        newest = int(self._clock() // WINDOW_SECONDS) - self._settle - 1
        members = self._redis.zrangebyscore(PENDING, "-inf", newest, start=0, num=limit)
        minutes = items = skipped = failed = 0
        stuck: set[str] = set()  # a tenant whose older minute failed: its later ones must wait for it
        for member in self._entries(members):
            window, tenant = member
            if tenant in stuck:
                failed += 1
                continue
            key = _hash_key(window, tenant)
            try:
                for (day, model), counts in _grouped(self._redis.hgetall(key)).items():
                    if self._table.fold(tenant, day, model, counts, window=window):
                        items += 1
                    else:
                        skipped += 1
            except Exception:
                logger.warning(
                    "could not fold usage minute %d of tenant %s; next run retries", window, tenant, exc_info=True
                )
                stuck.add(tenant)
                failed += 1
                continue
            self._forget(keys=[key, PENDING, _tenant_key(tenant)], args=[window, f"{window}:{tenant}"])
            minutes += 1
        return FoldReport(minutes=minutes, items=items, skipped=skipped, failed=failed)

    @staticmethod
    def _entries(members: Iterable[Any]) -> list[tuple[int, str]]:
        entries = []
        for member in members:
            window, tenant = _text(member).split(":", 1)
            entries.append((int(window), tenant))
        return sorted(entries)  # oldest first, as ZRANGEBYSCORE gives them; sorted again for a tie's order
