"""The decisions' stores on moto (tables from template.yaml), and the service with Redis gone: versions
stay unique under concurrent pushes, a decision comes back exactly as it was kept, expired ones are gone,
and the decision cache failing is a miss and a metric, never a failed decision."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from seekless.adapters.decisions import DynamoDecisionStore, DynamoRulesetStore
from seekless.adapters.deepseek import DeepSeekClient
from seekless.adapters.redis_cache import RedisDecisionCache
from seekless.chat import ChatService
from seekless.config import Settings
from seekless.contracts import Usage
from seekless.decisions import DecisionService, new_decision_id
from seekless.errors import NotFound
from seekless.models import Principal
from seekless.rules import (
    DecisionResult,
    FiredRule,
    ModelCall,
    ModelVerdict,
    RuleError,
    RulesetSpec,
    VerdictProblem,
)
from seekless.telemetry import RecordingTelemetry
from seekless_local.emulator import EmulatorServer
from seekless_local.redis_server import free_port

from .conftest import TABLES
from .test_decisions import REFUNDS, UNSETTLED
from .test_session_store import AtomicCalls

DEV = Principal(tenant_id="dev", key_id="k1")


def spec(**changes: Any) -> RulesetSpec:
    return RulesetSpec.model_validate({**REFUNDS, **changes})


def test_concurrent_pushes_of_one_id_each_get_a_version_of_their_own(aws: Any) -> None:
    store = DynamoRulesetStore(TABLES["RulesetsTable"], client=AtomicCalls(aws))
    barrier = threading.Barrier(6)
    versions: dict[int, int] = {}

    def push(n: int) -> None:
        barrier.wait(timeout=10)
        versions[n] = store.publish("dev", spec(description=f"pusher {n}"), created_by=f"key{n}").version

    threads = [threading.Thread(target=push, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(versions.values()) == [1, 2, 3, 4, 5, 6]
    assert store.latest_version("dev", "refunds") == 6
    for n, version in versions.items():  # each version holds what its own pusher sent
        stored = store.get("dev", "refunds", version)
        assert (stored.spec.description, stored.created_by) == (f"pusher {n}", f"key{n}")


def test_a_stored_version_is_never_written_again(aws: Any) -> None:
    store = DynamoRulesetStore(TABLES["RulesetsTable"], client=aws)
    store.publish("dev", spec(), created_by="k1")
    store.publish("dev", spec(description="second"), created_by="k1")
    assert store.get("dev", "refunds", 1).spec.description == REFUNDS["description"]
    items = aws.scan(TableName=TABLES["RulesetsTable"])["Items"]
    assert sorted(item["sk"]["S"] for item in items) == ["R#refunds", "V#refunds#00000001", "V#refunds#00000002"]


def test_ruleset_ids_that_extend_one_another_stay_apart(aws: Any) -> None:
    store = DynamoRulesetStore(TABLES["RulesetsTable"], client=aws)
    store.publish("dev", spec(id="a"), created_by="k1")
    store.publish("dev", spec(id="a-b"), created_by="k1")
    store.publish("dev", spec(id="a-b"), created_by="k1")
    assert (store.latest_version("dev", "a"), store.latest_version("dev", "a-b")) == (1, 2)
    assert [s.id for s in store.list_rulesets("dev", limit=10, after=None).items] == ["a", "a-b"]
    assert [s.id for s in store.list_rulesets("dev", limit=10, after="a").items] == ["a-b"]
    with pytest.raises(NotFound):
        store.latest_version("dev", "a-")
    with pytest.raises(NotFound):
        store.latest_version("devx", "a")


def decision(decision_id: str, created_at: int) -> DecisionResult:
    verdict = ModelVerdict(decision="review", confidence=0.73, reasons=["a large refund", "a new customer"])
    return DecisionResult(
        id=decision_id,
        ruleset_id="refunds",
        ruleset_version=4,
        decision="review",
        decided_by="policy",
        reasons=("the model approved, but rule 'x' denied", "a large refund"),
        rules_fired=(FiredRule(id="large", outcome="deny", weight=2.5, final=False),),
        rule_errors=(RuleError(id="odd", outcome="review", final=True, message="no such key: y"),),
        score=2.5,
        input_hash="ab" * 32,
        model=ModelCall(
            model="deepseek-chat",
            attempts=2,
            raw='{"decision": "review"}',
            verdict=verdict,
            problem=VerdictProblem("schema_mismatch", "confidence: Field required"),
        ),
        usage=Usage(prompt_tokens=700, completion_tokens=41, prompt_cache_hit_tokens=640, prompt_cache_miss_tokens=60),
        latency_ms=812,
        created_at=created_at,
        cache="miss",
        cached_from=None,
    )


def test_a_decision_comes_back_exactly_as_it_was_kept(aws: Any) -> None:
    now = time.time()
    store = DynamoDecisionStore(TABLES["DecisionsTable"], client=aws, clock=lambda: now)
    kept = decision(new_decision_id(now), int(now))
    store.put("dev", kept, created_by="k1")
    assert store.get("dev", kept.id) == kept
    assert store.get("dev", kept.id).to_api() == kept.to_api()
    (item,) = aws.scan(TableName=TABLES["DecisionsTable"])["Items"]
    assert item["created_by"] == {"S": "k1"} and item["input_hash"] == {"S": "ab" * 32}
    assert int(item["expires_at"]["N"]) == int(now) + 400 * 86_400
    with pytest.raises(NotFound):
        store.get("other", kept.id)


def test_expired_decisions_are_neither_read_nor_listed(aws: Any) -> None:
    now = [time.time()]
    store = DynamoDecisionStore(TABLES["DecisionsTable"], client=aws, retention_days=1, clock=lambda: now[0])
    old = decision(new_decision_id(now[0]), int(now[0]))
    store.put("dev", old, created_by="k1")
    now[0] += 86_400 + 1
    fresh = decision(new_decision_id(now[0]), int(now[0]))
    store.put("dev", fresh, created_by="k1")
    assert [d.id for d in store.list_decisions("dev", limit=10, after=None).items] == [fresh.id]
    with pytest.raises(NotFound):
        store.get("dev", old.id)


def test_decision_ids_sort_by_time() -> None:
    ids = [new_decision_id(1_790_000_000.0 + step / 1000) for step in range(0, 5000, 7)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


@pytest.fixture
async def model(emulator_url: str) -> AsyncIterator[DeepSeekClient]:
    client = DeepSeekClient(base_url=emulator_url, api_key=lambda _refresh: "sk-emulator")
    yield client
    await client.aclose()


async def test_redis_gone_is_a_cache_miss_and_a_metric_never_a_failed_decision(
    aws: Any, model: DeepSeekClient, emulator: EmulatorServer
) -> None:
    # No retries of its own: each failed call fails at once (redis-py's default backoff takes seconds).
    down = Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    telemetry = RecordingTelemetry()
    settings = Settings()
    service = DecisionService(
        rulesets=DynamoRulesetStore(TABLES["RulesetsTable"], client=aws),
        decisions=DynamoDecisionStore(TABLES["DecisionsTable"], client=aws),
        chat=ChatService(settings=settings, model=model, cache=None, sessions=None),
        cache=RedisDecisionCache(down, on_error=lambda operation: telemetry.count("DecisionCacheErrors")),
        settings=settings,
        telemetry=telemetry,
    )
    try:
        service.publish(DEV, spec())
        first = await service.decide(DEV, "refunds", UNSETTLED, deadline=time.monotonic() + 10)
        second = await service.decide(DEV, "refunds", UNSETTLED, deadline=time.monotonic() + 10)
    finally:
        await down.aclose()
    assert (first.decided_by, first.cache, second.cache) == ("model", "miss", "miss")
    assert emulator.stats()["calls"] == 2
    # Each decision: the lookup failed, then the write did.
    assert telemetry.counts["DecisionCacheErrors"] == 4 and telemetry.counts["DecisionCacheMiss"] == 2
