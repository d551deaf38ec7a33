"""The decisions service with in-memory ports: what it compiles and keeps, how it counts attempts and
tokens, and what it does with the decision cache. The whole path on moto, Redis and the emulator is in
tests/integration/test_decisions.py."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from seekless.chat import ChatService
from seekless.config import Settings
from seekless.decisions import DecisionService
from seekless.errors import InvalidRequest, RulesetInvalid
from seekless.models import Principal
from seekless.rules import RulesetSpec
from seekless.telemetry import RecordingTelemetry
from tests.fakes import FakeChatModel, FakeDecisionCache, FakeDecisions, FakeRulesets

ACME = Principal(tenant_id="acme", key_id="k1")
GLOBEX = Principal(tenant_id="globex", key_id="k2")
VERDICT = json.dumps({"decision": "deny", "confidence": 0.8, "reasons": ["too risky"]})


def spec(*rules: dict[str, Any], **fields: Any) -> RulesetSpec:
    rules = rules or ({"id": "big", "condition": "input.amount > 100", "outcome": "deny", "final": True},)
    return RulesetSpec.model_validate({"id": "r", "rules": list(rules), **fields})


class Harness:
    """One execution environment's service; ``rulesets`` shared with another makes a second environment."""

    def __init__(self, rulesets: FakeRulesets | None = None) -> None:
        self.model = FakeChatModel(reasoning=None)
        self.rulesets = rulesets or FakeRulesets()
        self.decisions = FakeDecisions()
        self.cache = FakeDecisionCache()
        self.telemetry = RecordingTelemetry()
        settings = Settings()
        self.service = DecisionService(
            rulesets=self.rulesets,
            decisions=self.decisions,
            chat=ChatService(settings=settings, model=self.model, cache=None, sessions=None),
            cache=self.cache,
            settings=settings,
            telemetry=self.telemetry,
        )

    async def decide(self, record: dict[str, Any], principal: Principal = ACME, **options: Any) -> Any:
        return await self.service.decide(principal, "r", record, deadline=time.monotonic() + 5, **options)


@pytest.fixture
def harness() -> Harness:
    return Harness()


def test_nothing_is_stored_when_a_rule_does_not_compile(harness: Harness) -> None:
    with pytest.raises(RulesetInvalid):
        harness.service.publish(ACME, spec({"id": "bad", "condition": "input.amount +", "outcome": "deny"}))
    with pytest.raises(InvalidRequest) as unknown:
        harness.service.publish(ACME, spec(model="gpt-4"))
    assert (unknown.value.code, unknown.value.param) == ("model_not_found", "model")
    assert harness.rulesets.versions == {}


async def test_a_version_is_read_and_compiled_once_per_environment_then_kept(harness: Harness) -> None:
    harness.service.publish(ACME, spec())
    harness.service.publish(
        ACME, spec({"id": "small", "condition": "input.amount < 5", "outcome": "approve", "final": True})
    )
    # The pushing environment compiled each version as it pushed it: deciding reads no version.
    assert (await harness.decide({"amount": 1})).decided_by == "rule:small"
    assert (await harness.decide({"amount": 500}, version=1)).decided_by == "rule:big"
    assert harness.rulesets.reads == 0
    # Another environment (a cold Lambda) reads and compiles a version the first time only.
    cold = Harness(rulesets=harness.rulesets)
    for _ in range(3):
        assert (await cold.decide({"amount": 500}, version=1)).decided_by == "rule:big"
    assert harness.rulesets.reads == 1


async def test_each_tenant_decides_with_its_own_ruleset_of_the_same_id(harness: Harness) -> None:
    harness.service.publish(ACME, spec())
    harness.service.publish(GLOBEX, spec({"id": "any", "condition": "true", "outcome": "approve", "final": True}))
    assert (await harness.decide({"amount": 500})).decision == "deny"
    assert (await harness.decide({"amount": 500}, GLOBEX)).decision == "approve"


async def test_rules_only_decisions_touch_neither_the_model_nor_the_cache(harness: Harness) -> None:
    harness.service.publish(ACME, spec())
    result = await harness.decide({"amount": 500})
    assert (result.decided_by, result.cache, result.model) == ("rule:big", None, None)
    assert harness.model.calls == [] and harness.cache.values == {}
    assert harness.decisions.items[("acme", result.id)] == result


async def test_every_attempt_is_counted_and_its_tokens_added(harness: Harness) -> None:
    harness.service.publish(ACME, spec())
    harness.model.contents = ["", "not json", VERDICT]
    result = await harness.decide({"amount": 50})
    assert (result.decision, result.decided_by, result.model.attempts) == ("deny", "model", 3)
    assert len(harness.model.calls) == 3 and harness.model.calls[0] == harness.model.calls[2]
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (30, 15)
    assert harness.telemetry.counts["DecisionVerdictRetries"] == 2


async def test_an_unreadable_cache_entry_is_a_miss_and_a_metric(harness: Harness) -> None:
    harness.service.publish(ACME, spec())
    harness.model.contents = [VERDICT, VERDICT]
    first = await harness.decide({"amount": 50})
    (key,) = harness.cache.values
    assert harness.cache.values[key]["id"] == first.id
    harness.cache.values[key] = {"id": first.id, "verdict": {"decision": "maybe"}}
    second = await harness.decide({"amount": 50})
    assert second.cache == "miss" and len(harness.model.calls) == 2
    assert harness.telemetry.counts["DecisionCacheErrors"] == 1
    hit = await harness.decide({"amount": 50})
    assert (hit.cache, hit.cached_from, len(harness.model.calls)) == ("hit", second.id, 2)


async def test_no_store_neither_reads_nor_fills_the_cache(harness: Harness) -> None:
    harness.service.publish(ACME, spec())
    harness.model.contents = [VERDICT]
    result = await harness.decide({"amount": 50}, headers={"Cache-Control": "no-store"})
    assert result.cache == "miss" and harness.cache.values == {}
