"""Usage counters: counted in a real Redis on the request path, folded into the usage table (moto, the
table from template.yaml) by the sweeper, exactly once, and read back by a tenant, its own only,
whether or not a minute has been folded yet."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from seekless.adapters.usage import PENDING, WINDOW_SECONDS, DynamoUsageStore, UsageFolder, UsageLedger
from seekless.audit import AuditRecord, UsageDay
from seekless.telemetry import RecordingTelemetry
from seekless_local.events import load_event
from seekless_local.gateway import ExecutionEnvironments
from seekless_local.template import function_specs, load_handler

from .conftest import TABLES

DAY = date(2026, 11, 28)
NOON = datetime(2026, 11, 28, 12, tzinfo=UTC).timestamp()
MINUTE = int(NOON // WINDOW_SECONDS)


def record(tenant: str = "acme", day: date = DAY, model: str = "deepseek-flash", **fields: Any) -> AuditRecord:
    started = datetime(day.year, day.month, day.day, 9, tzinfo=UTC).timestamp()
    return AuditRecord(route="job", request_id="r", started_at=started, tenant_id=tenant, model=model, **fields)


class Clock:
    def __init__(self, now: float = NOON) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sync_redis(redis_url: str) -> SyncRedis:
    return SyncRedis.from_url(redis_url)


class Usage:
    """A ledger and a folder over one table and one Redis, on one clock."""

    def __init__(self, aws: Any, redis: Redis, sync_redis: SyncRedis, *, client: Any = None) -> None:
        self.clock = Clock()
        self.telemetry = RecordingTelemetry()
        self.table = DynamoUsageStore(TABLES["UsageTable"], client=client or aws)
        self.ledger = UsageLedger(self.table, redis, telemetry=self.telemetry, clock=self.clock)
        self.folder = UsageFolder(self.table, sync_redis, clock=self.clock)
        self.aws = aws
        self.redis = sync_redis

    def items(self) -> list[dict[str, Any]]:
        return self.aws.scan(TableName=TABLES["UsageTable"])["Items"]

    async def days(self, tenant: str = "acme", **query: Any) -> list[UsageDay]:
        return await self.ledger.days(tenant, start=query.pop("start", DAY), end=query.pop("end", DAY), **query)


@pytest.fixture
def usage(aws: Any, redis: Redis, sync_redis: SyncRedis) -> Usage:
    return Usage(aws, redis, sync_redis)


async def test_a_count_goes_to_redis_and_is_read_back_before_any_fold(usage: Usage) -> None:
    await usage.ledger.add(record(prompt_tokens=10, completion_tokens=3, cache="hit", estimated_cost_usd=0.000123))
    assert usage.items() == []  # nothing written to the table on the request path
    (day,) = await usage.days()
    assert (day.requests, day.cache_hits, day.prompt_tokens, day.completion_tokens) == (1, 1, 10, 3)
    assert day.estimated_cost_usd == 0.000123


async def test_twenty_concurrent_counts_are_all_counted_and_folded_exactly(usage: Usage) -> None:
    await asyncio.gather(
        *(
            usage.ledger.add(record(prompt_tokens=10, completion_tokens=3, estimated_cost_usd=0.000123))
            for _ in range(20)
        )
    )
    before = await usage.days()
    usage.clock.now += 2 * WINDOW_SECONDS
    report = usage.folder.fold()
    assert (report.minutes, report.items, report.skipped, report.failed) == (1, 1, 0, 0)
    (item,) = usage.items()
    assert (item["requests"], item["prompt_tokens"], item["folded_through"]) == (
        {"N": "20"},
        {"N": "200"},
        {"N": str(MINUTE)},
    )
    assert usage.redis.keys("{usage}*") == []  # the minute is gone from Redis once folded
    after = await usage.days()
    assert before == after
    (day,) = after
    assert (day.requests, day.prompt_tokens, day.completion_tokens) == (20, 200, 60)
    assert day.estimated_cost_usd == 0.00246  # summed in micro-dollars: exact, where 20 * 0.000123 is not


async def test_the_current_and_the_last_minute_are_not_folded_yet(usage: Usage) -> None:
    await usage.ledger.add(record())
    usage.clock.now += WINDOW_SECONDS  # the next minute has begun: a late writer might still add to the first
    assert usage.folder.fold().minutes == 0
    usage.clock.now += WINDOW_SECONDS
    assert usage.folder.fold().minutes == 1


async def test_a_fold_that_died_before_forgetting_the_minute_does_not_count_it_twice(usage: Usage) -> None:
    await usage.ledger.add(record(prompt_tokens=7))
    await usage.ledger.add(record(model="deepseek-v4-pro", prompt_tokens=5))
    saved = {key: usage.redis.dump(key) for key in usage.redis.keys("{usage}*")}
    usage.clock.now += 2 * WINDOW_SECONDS
    assert usage.folder.fold().items == 2
    for key, value in saved.items():  # as if the sweeper had died between the table and Redis
        usage.redis.restore(key, 0, value, replace=True)
    assert sorted((d.model, d.requests, d.prompt_tokens) for d in await usage.days()) == [
        ("deepseek-flash", 1, 7),
        ("deepseek-v4-pro", 1, 5),
    ]  # the reader skips what the items say they already hold
    report = usage.folder.fold()
    assert (report.minutes, report.items, report.skipped) == (1, 0, 2)
    assert sorted(int(item["requests"]["N"]) for item in usage.items()) == [1, 1]


async def test_minutes_fold_oldest_first_and_a_failed_one_holds_back_the_tenants_later_ones(
    aws: Any, redis: Redis, sync_redis: SyncRedis
) -> None:
    failing = FailingUpdates(aws, failures=1)
    usage = Usage(aws, redis, sync_redis, client=failing)
    await usage.ledger.add(record(prompt_tokens=1))
    usage.clock.now += WINDOW_SECONDS
    await usage.ledger.add(record(prompt_tokens=2))
    await usage.ledger.add(record(tenant="other", prompt_tokens=4))
    usage.clock.now += 2 * WINDOW_SECONDS
    report = usage.folder.fold()
    # acme's first minute failed, so its second waits (folding it first would make the first look done);
    # the other tenant is not held back.
    assert (report.minutes, report.failed) == (1, 2)
    assert [(d.requests, d.prompt_tokens) for d in await usage.days()] == [(2, 3)]
    report = usage.folder.fold()
    assert (report.minutes, report.failed) == (2, 0)
    assert [(d.requests, d.prompt_tokens) for d in await usage.days()] == [(2, 3)]
    assert [(d.requests, d.prompt_tokens) for d in await usage.days("other")] == [(1, 4)]
    assert sync_redis.zcard(PENDING) == 0


async def test_redis_down_counts_straight_into_the_table_and_says_so(aws: Any, sync_redis: SyncRedis) -> None:
    unreachable = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    usage = Usage(aws, unreachable, sync_redis)
    await usage.ledger.add(record(prompt_tokens=3))
    (item,) = usage.items()
    assert (item["requests"], item["prompt_tokens"]) == ({"N": "1"}, {"N": "3"})
    assert "folded_through" not in item
    assert [(d.requests, d.prompt_tokens) for d in await usage.days()] == [(1, 3)]  # the table alone
    assert usage.telemetry.counts["UsageCounterErrors"] == 2  # the write and the read
    await unreachable.aclose()


async def test_days_come_back_per_model_within_the_range_and_only_the_tenants_own(usage: Usage) -> None:
    for r in (
        record(day=date(2026, 10, 31)),  # before the range
        record(day=date(2026, 11, 1), cache="hit"),
        record(day=date(2026, 11, 30), model="deepseek-v4-pro", status=429, error_code="rate_limit_requests"),
        record(day=date(2026, 12, 1)),  # after it
        record(tenant="acme-other", day=date(2026, 11, 15)),  # a tenant whose id extends acme's
        record(tenant="acme:x", day=date(2026, 11, 16)),  # ... and one with the key separator in it
    ):
        await usage.ledger.add(r)
    november = {"start": date(2026, 11, 1), "end": date(2026, 11, 30)}
    for folded in (False, True):
        found = await usage.days(**november)
        assert [(d.day.isoformat(), d.model, d.cache_hits, d.errors) for d in found] == [
            ("2026-11-01", "deepseek-flash", 1, 0),
            ("2026-11-30", "deepseek-v4-pro", 0, 1),
        ], f"folded={folded}"
        only_flash = await usage.days(**november, model="deepseek-flash")
        assert [d.model for d in only_flash] == ["deepseek-flash"]
        usage.clock.now += 2 * WINDOW_SECONDS
        usage.folder.fold()
    assert [d.day for d in await usage.days("acme:x", **november)] == [date(2026, 11, 16)]


def test_counters_expire_after_the_retention(aws: Any) -> None:
    DynamoUsageStore(TABLES["UsageTable"], client=aws, retention_days=400).add(record())
    (item,) = aws.scan(TableName=TABLES["UsageTable"])["Items"]
    assert int(item["expires_at"]["N"]) == int(datetime(2028, 1, 2, tzinfo=UTC).timestamp())
    assert item["tenant_id"] == {"S": "acme"} and item["period"] == {"S": "d#2026-11-28#deepseek-flash"}


def test_a_chat_through_the_rest_handler_shows_in_usage_and_the_sweeper_folds_closed_minutes(
    app_env: None, aws: Any, redis_url: str
) -> None:
    spec = function_specs()["RestApiFunction"]
    environments = ExecutionEnvironments(lambda: load_handler(spec), name=spec.logical_id, timeout=29, size=1)
    sweeper = function_specs()["JobSweeperFunction"]
    swept = ExecutionEnvironments(lambda: load_handler(sweeper), name=sweeper.logical_id, timeout=60, size=1)
    today = datetime.now(UTC).date().isoformat()
    usage_event = load_event("rest/get_usage")
    usage_event["queryStringParameters"] = {"start_date": today, "end_date": today}
    usage_event["multiValueQueryStringParameters"] = {"start_date": [today], "end_date": [today]}
    try:
        chat = environments.invoke_sync(load_event("rest/post_chat"))
        assert chat["statusCode"] == 200, chat["body"]
        answer = json.loads(chat["body"])
        assert aws.scan(TableName=TABLES["UsageTable"])["Items"] == []  # counted in Redis, not the table
        # One more request of the same tenant and model, counted five minutes ago: a closed minute.
        asyncio.run(_count_minutes_ago(redis_url, aws, tenant="dev", model=answer["model"], minutes=5))
        before = json.loads(environments.invoke_sync(usage_event)["body"])
        assert swept.invoke_sync(load_event("schedule/job_sweeper"))["usage_minutes_folded"] == 1
        (item,) = aws.scan(TableName=TABLES["UsageTable"])["Items"]
        assert item["requests"] == {"N": "1"} and item["prompt_tokens"] == {"N": "11"}
        after = json.loads(environments.invoke_sync(usage_event)["body"])
    finally:
        swept.close()
        environments.close()
    assert before == after  # the fold moved a count, it did not add one
    (day,) = after["data"]
    assert (day["date"], day["model"], day["requests"]) == (today, answer["model"], 2)
    assert day["prompt_tokens"] == answer["usage"]["prompt_tokens"] + 11
    assert day["completion_tokens"] == answer["usage"]["completion_tokens"]


async def _count_minutes_ago(redis_url: str, aws: Any, *, tenant: str, model: str, minutes: int) -> None:
    client = Redis.from_url(redis_url)
    try:
        ledger = UsageLedger(
            DynamoUsageStore(TABLES["UsageTable"], client=aws),
            client,
            clock=lambda: datetime.now(UTC).timestamp() - minutes * WINDOW_SECONDS,
        )
        started = datetime.now(UTC).timestamp()
        await ledger.add(
            AuditRecord(
                route="job", request_id="r", started_at=started, tenant_id=tenant, model=model, prompt_tokens=11
            )
        )
    finally:
        await client.aclose()


class FailingUpdates:
    """The DynamoDB client, whose first ``failures`` UpdateItems fail as a throttled table would."""

    def __init__(self, client: Any, *, failures: int) -> None:
        self._client = client
        self._failures = failures

    def update_item(self, **request: Any) -> Any:
        if self._failures > 0:
            self._failures -= 1
            error = {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "throttled"}}
            raise ClientError(error, "UpdateItem")  # type: ignore[arg-type]
        return self._client.update_item(**request)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)
