"""Usage counters in DynamoDB (moto, the table from template.yaml): concurrent requests never lose a
count, a tenant reads only its own partition, and a chat through the REST handler shows up in
GET /v1/usage."""

from __future__ import annotations

import json
import threading
from datetime import UTC, date, datetime
from typing import Any

from seekless.adapters.usage import DynamoUsageStore
from seekless.audit import AuditRecord
from seekless_local.events import load_event
from seekless_local.gateway import ExecutionEnvironments
from seekless_local.template import function_specs, load_handler

from .conftest import TABLES
from .test_session_store import AtomicCalls

DAY = date(2026, 11, 28)


def record(tenant: str = "acme", day: date = DAY, model: str = "deepseek-flash", **fields: Any) -> AuditRecord:
    started = datetime(day.year, day.month, day.day, 9, tzinfo=UTC).timestamp()
    return AuditRecord(route="job", request_id="r", started_at=started, tenant_id=tenant, model=model, **fields)


def test_twenty_concurrent_adds_are_all_counted(aws: Any) -> None:
    store = DynamoUsageStore(TABLES["UsageTable"], client=AtomicCalls(aws))
    barrier = threading.Barrier(20)

    def add() -> None:
        barrier.wait(timeout=10)
        store.add(record(prompt_tokens=10, completion_tokens=3, estimated_cost_usd=0.000123))

    threads = [threading.Thread(target=add) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    (day,) = store.days("acme", start=DAY, end=DAY)
    assert (day.requests, day.prompt_tokens, day.completion_tokens) == (20, 200, 60)
    assert day.estimated_cost_usd == 0.00246  # summed in micro-dollars: exact, where 20 * 0.000123 is not


def test_days_come_back_per_model_within_the_range_and_only_the_tenants_own(aws: Any) -> None:
    store = DynamoUsageStore(TABLES["UsageTable"], client=aws)
    store.add(record(day=date(2026, 10, 31)))  # before the range
    store.add(record(day=date(2026, 11, 1), cache="hit"))
    store.add(record(day=date(2026, 11, 30), model="deepseek-v4-pro", status=429, error_code="rate_limit_requests"))
    store.add(record(day=date(2026, 12, 1)))  # after it
    store.add(record(tenant="acme-other", day=date(2026, 11, 15)))  # a tenant whose id extends acme's
    found = store.days("acme", start=date(2026, 11, 1), end=date(2026, 11, 30))
    assert [(d.day.isoformat(), d.model, d.cache_hits, d.errors) for d in found] == [
        ("2026-11-01", "deepseek-flash", 1, 0),
        ("2026-11-30", "deepseek-v4-pro", 0, 1),
    ]
    only_flash = store.days("acme", start=date(2026, 11, 1), end=date(2026, 11, 30), model="deepseek-flash")
    assert [d.model for d in only_flash] == ["deepseek-flash"]


def test_counters_expire_after_the_retention(aws: Any) -> None:
    DynamoUsageStore(TABLES["UsageTable"], client=aws, retention_days=400).add(record())
    (item,) = aws.scan(TableName=TABLES["UsageTable"])["Items"]
    assert int(item["expires_at"]["N"]) == int(datetime(2028, 1, 2, tzinfo=UTC).timestamp())
    assert item["tenant_id"] == {"S": "acme"} and item["period"] == {"S": "d#2026-11-28#deepseek-flash"}


def test_a_chat_through_the_rest_handler_shows_in_the_tenants_usage(app_env: None, aws: Any) -> None:
    spec = function_specs()["RestApiFunction"]
    environments = ExecutionEnvironments(lambda: load_handler(spec), name=spec.logical_id, timeout=29, size=1)
    try:
        chat = environments.invoke_sync(load_event("rest/post_chat"))
        assert chat["statusCode"] == 200, chat["body"]
        usage_event = load_event("rest/get_usage")
        today = datetime.now(UTC).date().isoformat()
        usage_event["queryStringParameters"] = {"start_date": today, "end_date": today}
        usage_event["multiValueQueryStringParameters"] = {"start_date": [today], "end_date": [today]}
        response = environments.invoke_sync(usage_event)
    finally:
        environments.close()
    body = json.loads(response["body"])
    assert response["statusCode"] == 200, body
    answer = json.loads(chat["body"])
    (day,) = body["data"]
    assert (day["date"], day["model"], day["requests"]) == (today, answer["model"], 1)
    assert day["prompt_tokens"] == answer["usage"]["prompt_tokens"] > 0
    assert day["completion_tokens"] == answer["usage"]["completion_tokens"]
