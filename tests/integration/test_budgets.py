"""Daily and monthly token budgets in DynamoDB (moto, tables from template.yaml): concurrent
reservations never overspend, settling gives back what was not used, a new day renews the daily one,
and ChatService refuses over budget before any upstream call."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from seekless.adapters.budgets import DynamoBudgets
from seekless.errors import InvalidRequest, RateLimited
from seekless.limits import Reservation
from seekless.models import KeyLimits, Principal

from .conftest import TABLES
from .test_session_store import AtomicCalls

NOON = 1_795_867_200.0  # 2026-11-28 12:00 UTC


def key(**limits: int) -> Principal:
    return Principal(tenant_id="acme", key_id=f"key_{time.monotonic_ns()}", limits=KeyLimits(**limits))


def test_twenty_concurrent_reservations_never_overspend_a_daily_budget(aws: Any) -> None:
    budgets = DynamoBudgets(TABLES["ApiKeysTable"], client=AtomicCalls(aws), clock=lambda: NOON)
    principal = key(daily_tokens=1_000)
    barrier = threading.Barrier(20)
    outcomes: list[Any] = []

    def reserve() -> None:
        barrier.wait(timeout=10)
        try:
            outcomes.append(budgets.reserve(principal, 300))
        except RateLimited as refused:
            outcomes.append(refused)

    threads = [threading.Thread(target=reserve) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    admitted = [o for o in outcomes if isinstance(o, Reservation)]
    refused = [o for o in outcomes if isinstance(o, RateLimited)]
    assert len(admitted) == 3 and len(refused) == 17
    assert refused[0].code == "daily_budget_exhausted" and refused[0].headers() == {"Retry-After": "43200"}


def test_settling_gives_back_the_unused_part_and_a_new_day_starts_full(aws: Any) -> None:
    now = [NOON]
    budgets = DynamoBudgets(TABLES["ApiKeysTable"], client=aws, clock=lambda: now[0])
    principal = key(daily_tokens=1_000, monthly_tokens=1_500)
    first = budgets.reserve(principal, 600)
    assert first is not None
    with pytest.raises(RateLimited):
        budgets.reserve(principal, 600)
    budgets.release(first, 100)  # used 100 of the 600 reserved: 900 left today, 1,400 this month
    assert budgets.reserve(principal, 600) is not None
    now[0] += 86_400  # tomorrow: the daily budget is whole again, the month remembers the 700 spent
    with pytest.raises(RateLimited) as refused:
        budgets.reserve(principal, 900)
    assert refused.value.code == "monthly_budget_exhausted"
    assert budgets.reserve(principal, 800) is not None


def test_a_request_bigger_than_the_whole_budget_is_a_400(aws: Any) -> None:
    with pytest.raises(InvalidRequest) as refused:
        DynamoBudgets(TABLES["ApiKeysTable"], client=aws).reserve(key(monthly_tokens=100), 101)
    assert refused.value.code == "request_exceeds_budget"


def test_budget_items_are_invisible_to_key_lookups(aws: Any) -> None:
    from seekless.adapters.dynamodb import DynamoKeyStore

    DynamoBudgets(TABLES["ApiKeysTable"], client=aws).reserve(key(daily_tokens=10), 5)
    store = DynamoKeyStore(TABLES["ApiKeysTable"], client=aws)
    assert all(not record.key_id.startswith("budget") for record in store.list_keys())
    items = aws.scan(TableName=TABLES["ApiKeysTable"])["Items"]
    (budget,) = [i for i in items if i["key_hash"]["S"].startswith("budget#")]
    assert store.lookup(budget["key_hash"]["S"]) is None
