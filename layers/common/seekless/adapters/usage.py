"""Per-tenant daily usage counters in DynamoDB (the usage table), read by GET /v1/usage.

One item per tenant, UTC day and model: ``tenant_id`` (partition) and ``period = "d#<YYYY-MM-DD>#<model>"``
(sort), so a tenant's range of days is one Query on its own partition and no other tenant's items can
come back. Each finished request adds to its item with one UpdateItem (``ADD`` is atomic: concurrent
requests never lose a count). Cost is kept in micro-dollars as an integer so additions stay exact.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from seekless.adapters.dynamo_items import from_item, store_error
from seekless.audit import AuditRecord, UsageDay

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

_COUNTERS = (
    "requests",
    "errors",
    "cache_hits",
    "prompt_tokens",
    "completion_tokens",
    "prompt_cache_hit_tokens",
    "cost_micro_usd",
)


def _period(day: date, model: str = "") -> str:
    return f"d#{day.isoformat()}#{model}"


class DynamoUsageStore:
    """Implements ``seekless.audit.UsageStore``."""

    def __init__(
        self,
        table_name: str,
        *,
        retention_days: int = 400,
        client: DynamoDBClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._table = table_name
        self._retention = timedelta(days=retention_days)
        self._given = client
        self._clock = clock

    @property
    def _client(self) -> DynamoDBClient:
        if self._given is None:  # built on first use, as the budgets' client: no cold-start cost up front
            import boto3

            self._given = boto3.client("dynamodb")
        return self._given

    def add(self, record: AuditRecord) -> None:
        if record.tenant_id is None or record.model is None:
            return
        day = record.day
        expires = datetime(day.year, day.month, day.day, tzinfo=UTC) + self._retention
        counts = {
            "requests": 1,
            "errors": 1 if record.status >= 400 or record.error_code else 0,
            "cache_hits": 1 if record.cache == "hit" else 0,
            "prompt_tokens": record.prompt_tokens,
            "completion_tokens": record.completion_tokens,
            "prompt_cache_hit_tokens": record.prompt_cache_hit_tokens,
            "cost_micro_usd": round(record.estimated_cost_usd * 1_000_000),
        }
        values: dict[str, Any] = {f":{name}": {"N": str(value)} for name, value in counts.items()}
        values[":ttl"] = {"N": str(int(expires.timestamp()))}
        try:
            self._client.update_item(
                TableName=self._table,
                Key={"tenant_id": {"S": record.tenant_id}, "period": {"S": _period(day, record.model)}},
                UpdateExpression="ADD "
                + ", ".join(f"{name} :{name}" for name in counts)
                + " SET expires_at = if_not_exists(expires_at, :ttl)",
                ExpressionAttributeValues=values,
            )
        except ClientError as error:
            raise store_error(error, "usage store") from error

    def days(self, tenant_id: str, *, start: date, end: date, model: str | None = None) -> list[UsageDay]:
        """The tenant's usage from ``start`` to ``end`` (both included), oldest day first."""
        query: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "tenant_id = :t AND period BETWEEN :from AND :to",
            "ExpressionAttributeValues": {
                ":t": {"S": tenant_id},
                ":from": {"S": _period(start)},
                ":to": {"S": _period(end) + "\U0010ffff"},  # every model of the last day
            },
        }
        found: list[UsageDay] = []
        try:
            for page in self._client.get_paginator("query").paginate(**query):
                for item in page.get("Items", []):
                    data = from_item(item)
                    _, day, item_model = str(data["period"]).split("#", 2)
                    if model is not None and item_model != model:
                        continue
                    counts = {name: int(data.get(name, 0)) for name in _COUNTERS}
                    cost = counts.pop("cost_micro_usd") / 1_000_000
                    found.append(
                        UsageDay(day=date.fromisoformat(day), model=item_model, estimated_cost_usd=cost, **counts)
                    )
        except ClientError as error:
            raise store_error(error, "usage store") from error
        return found
