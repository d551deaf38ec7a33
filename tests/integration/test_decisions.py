"""Hybrid decisions through the real REST handler (API Gateway event, Mangum, FastAPI), on moto tables built
from template.yaml, a real Redis and the DeepSeek emulator over a real socket, whose call counter says
exactly how many times DeepSeek was asked."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from seekless.adapters.dynamodb import DynamoKeyStore
from seekless.auth import hash_key
from seekless.models import KeyLimits
from seekless.rules import RulesetSpec, compile_ruleset, evaluate, verdict_messages
from seekless_local.emulator import EmulatorServer
from seekless_local.events import load_event
from seekless_local.gateway import ExecutionEnvironments
from seekless_local.template import function_specs, load_handler

from .conftest import DEV_KEY, OTHER_KEY, TABLES

pytestmark = pytest.mark.redis

REFUNDS: dict[str, Any] = {
    "id": "refunds",
    "description": "Refund requests of a web shop.",
    "input_schema": {
        "type": "object",
        "required": ["amount", "country"],
        "properties": {
            "amount": {"type": "number", "minimum": 0},
            "country": {"type": "string", "pattern": "^[A-Z]{2}$"},
            "customer_years": {"type": "integer", "minimum": 0},
        },
    },
    "rules": [
        {
            "id": "embargo",
            "description": "The customer is in an embargoed country.",
            "condition": 'input.country in ["KP", "IR"]',
            "outcome": "deny",
            "weight": 100,
            "final": True,
        },
        {
            "id": "small",
            "description": "A small refund.",
            "condition": "input.amount < 20",
            "outcome": "approve",
            "final": True,
        },
        {"id": "large", "description": "A large refund.", "condition": "input.amount > 1000", "outcome": "review"},
    ],
}
# No rule fires on this one: DeepSeek is asked.
UNSETTLED = {"amount": 150, "country": "DE", "customer_years": 3}


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]  # names in lower case

    @property
    def error(self) -> dict[str, Any]:
        return dict(self.body["error"])


class Api:
    """The REST function as API Gateway invokes it, one execution environment."""

    def __init__(self, environments: ExecutionEnvironments) -> None:
        self._environments = environments

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        key: str = DEV_KEY,
        query: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        event = load_event("rest/get_sessions")
        event.update(httpMethod=method, path=path)
        event["queryStringParameters"] = query
        event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()} if query else None
        event["pathParameters"] = {"proxy": path.removeprefix("/")}
        event["headers"] = {
            **event["headers"],
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
            **(headers or {}),
        }
        event["multiValueHeaders"] = {name: [value] for name, value in event["headers"].items()}
        event["body"] = None if body is None else json.dumps(body)
        event["requestContext"] = {**event["requestContext"], "httpMethod": method, "path": "/prod" + path}
        response = self._environments.invoke_sync(event)
        headers = {name.lower(): value for name, value in (response.get("headers") or {}).items()}
        return Answer(response["statusCode"], json.loads(response["body"]), headers)

    def push(self, ruleset: dict[str, Any], *, key: str = DEV_KEY) -> Answer:
        return self.call("POST", "/v1/rulesets", ruleset, key=key)

    def decide(self, record: dict[str, Any], ruleset: Any = "refunds", *, key: str = DEV_KEY, **extra: Any) -> Answer:
        headers = extra.pop("headers", None)
        return self.call(
            "POST", "/v1/decisions", {"ruleset": ruleset, "input": record, **extra}, key=key, headers=headers
        )


@pytest.fixture
def api(app_env: None) -> Iterator[Api]:
    spec = function_specs()["RestApiFunction"]
    environments = ExecutionEnvironments(lambda: load_handler(spec), name=spec.logical_id, timeout=29, size=1)
    yield Api(environments)
    environments.close()


@pytest.fixture
def refunds(api: Api) -> dict[str, Any]:
    pushed = api.push(REFUNDS)
    assert pushed.status == 201, pushed.body
    return pushed.body


def calls(emulator: EmulatorServer) -> int:
    return int(emulator.stats()["calls"])


# -- rulesets ------------------------------------------------------------------------------------------


def test_pushing_an_id_again_makes_its_next_version_and_each_version_stays_readable(api: Api) -> None:
    first = api.push(REFUNDS)
    changed = copy.deepcopy(REFUNDS)
    changed["rules"][2]["condition"] = "input.amount > 500"
    second = api.push(changed)
    assert (first.status, second.status) == (201, 201)
    assert (first.body["object"], first.body["version"], second.body["version"]) == ("ruleset", 1, 2)
    assert second.body["created_by"] == "dev" and second.body["rule_count"] == 3
    latest = api.call("GET", "/v1/rulesets/refunds")
    assert latest.status == 200 and latest.body == second.body
    assert latest.body["rules"][2]["condition"] == "input.amount > 500"
    old = api.call("GET", "/v1/rulesets/refunds", query={"version": "1"})
    assert old.body == first.body and old.body["rules"][2]["condition"] == "input.amount > 1000"
    assert api.call("GET", "/v1/rulesets/refunds", query={"version": "3"}).status == 404


def test_a_rule_that_does_not_compile_is_refused_naming_the_rule_and_where(api: Api) -> None:
    broken = copy.deepcopy(REFUNDS)
    broken["rules"][1]["condition"] = 'input.amount < 20 &&\n  input.country.lowerAscii() == "de"'
    answer = api.push(broken)
    assert answer.status == 400
    error = answer.error
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error",
        "ruleset_invalid",
        "rules[1].condition",
    )
    assert "rule 'small' (line 2, column" in error["message"] and "lowerAscii" in error["message"]
    (problem,) = error["details"]
    assert (problem["rule"], problem["field"], problem["line"]) == ("small", "condition", 2)
    assert problem["column"] > 1
    assert api.call("GET", "/v1/rulesets/refunds").status == 404  # nothing was stored


def test_the_tenants_rulesets_list_their_latest_versions_by_id_in_pages(api: Api) -> None:
    for ruleset_id in ("b-rules", "a-rules", "c-rules"):
        assert api.push({**REFUNDS, "id": ruleset_id}).status == 201
    assert api.push({**REFUNDS, "id": "a-rules", "description": "second"}).status == 201
    first = api.call("GET", "/v1/rulesets", query={"limit": "2"})
    assert [(r["id"], r["version"]) for r in first.body["data"]] == [("a-rules", 2), ("b-rules", 1)]
    assert first.body["has_more"] is True and "rules" not in first.body["data"][0]
    rest = api.call("GET", "/v1/rulesets", query={"limit": "2", "after": first.body["last_id"]})
    assert [r["id"] for r in rest.body["data"]] == ["c-rules"] and rest.body["has_more"] is False


# -- decisions -----------------------------------------------------------------------------------------


def test_a_final_rule_decides_without_any_upstream_call(
    api: Api, refunds: dict[str, Any], emulator: EmulatorServer
) -> None:
    denied = api.decide({"amount": 5, "country": "KP"})
    approved = api.decide({"amount": 5, "country": "DE"})
    assert calls(emulator) == 0
    assert (denied.status, denied.body["decision"], denied.body["decided_by"]) == (200, "deny", "rule:embargo")
    assert denied.body["reasons"] == ["The customer is in an embargoed country."]
    assert (approved.body["decision"], approved.body["decided_by"]) == ("approve", "rule:small")
    for answer in (denied, approved):
        assert answer.body["model"] is None and answer.body["cache"] is None
        assert answer.body["usage"]["total_tokens"] == 0
        assert answer.body["ruleset"] == {"id": "refunds", "version": 1}


def test_a_record_that_does_not_fit_the_input_schema_is_a_400_naming_the_path(
    api: Api, refunds: dict[str, Any], emulator: EmulatorServer
) -> None:
    answer = api.decide({"amount": 150, "country": "Germany"})
    assert answer.status == 400
    assert (answer.error["code"], answer.error["param"]) == ("input_schema_mismatch", "input.country")
    assert answer.error["message"].startswith("input.country: ")
    missing = api.decide({"amount": 150})
    assert missing.status == 400 and missing.error["code"] == "input_schema_mismatch"
    assert calls(emulator) == 0
    assert api.call("GET", "/v1/decisions").body["data"] == []  # nothing decided, nothing kept


def test_an_unknown_ruleset_or_version_is_a_404(api: Api, refunds: dict[str, Any]) -> None:
    unknown = api.decide(UNSETTLED, ruleset="nope")
    assert (unknown.status, unknown.error["code"]) == (404, "ruleset_not_found")
    assert api.decide(UNSETTLED, version=2).status == 404


def test_deepseek_decides_what_no_rule_settles_in_json_mode_with_the_rules_that_fired(
    api: Api, refunds: dict[str, Any], emulator: EmulatorServer
) -> None:
    record = {"amount": 1500, "country": "DE"}  # "large" (not final) fires
    answer = api.decide(record)
    assert answer.status == 200, answer.body
    assert calls(emulator) == 1
    model = answer.body["model"]
    verdict = json.loads(model["raw"])
    assert model["verdict"] == verdict and model["attempts"] == 1 and model["problem"] is None
    assert model["model"] == "deepseek-chat"
    assert (answer.body["decision"], answer.body["decided_by"]) == (verdict["decision"], "model")
    assert answer.body["reasons"] == verdict["reasons"]
    assert answer.body["rules_fired"] == [{"id": "large", "outcome": "review", "weight": 1.0, "final": False}]
    assert answer.body["usage"]["prompt_tokens"] > 0 and answer.body["usage"]["completion_tokens"] > 0
    assert answer.body["cache"] == "miss"
    (sent,) = emulator.stats()["requests"]
    body = sent["body"]
    assert body["response_format"] == {"type": "json_object"} and body["temperature"] == 0
    assert body["thinking"] == {"type": "disabled"}  # deepseek-chat: flash with thinking off
    facts = json.loads(body["messages"][1]["content"].split("\n", 1)[1])
    assert facts["input"] == record and [rule["id"] for rule in facts["rules_fired"]] == ["large"]


def test_a_blank_answer_is_asked_again_and_the_second_decides(
    api: Api, refunds: dict[str, Any], emulator: EmulatorServer
) -> None:
    emulator.configure(fault="blank", fault_count=1)
    answer = api.decide(UNSETTLED)
    assert answer.status == 200, answer.body
    assert calls(emulator) == 2
    assert answer.body["decided_by"] == "model" and answer.body["model"]["attempts"] == 2
    assert answer.body["model"]["verdict"] == json.loads(answer.body["model"]["raw"])


def test_an_answer_that_stays_invalid_goes_to_review_with_the_reason_and_is_never_cached(
    api: Api, refunds: dict[str, Any], emulator: EmulatorServer
) -> None:
    emulator.configure(fault="invalid_json")
    answer = api.decide(UNSETTLED)
    assert answer.status == 200, answer.body
    assert calls(emulator) == 3
    body = answer.body
    assert (body["decision"], body["decided_by"], body["cache"]) == ("review", "policy", "miss")
    assert body["reasons"][0].startswith("the model's answer stayed invalid after retries (invalid json:")
    assert body["model"]["attempts"] == 3 and body["model"]["verdict"] is None
    assert body["model"]["problem"]["kind"] == "invalid_json" and body["model"]["raw"].startswith("Certainly!")
    # Asked again once DeepSeek behaves: neither the decision cache nor the response cache replays it.
    emulator.configure(fault=None)
    again = api.decide(UNSETTLED)
    assert calls(emulator) == 4
    assert (again.body["decided_by"], again.body["cache"], again.body["model"]["attempts"]) == ("model", "miss", 1)


def test_an_identical_record_is_answered_from_the_cache_as_a_new_decision(
    api: Api, refunds: dict[str, Any], emulator: EmulatorServer
) -> None:
    first = api.decide(UNSETTLED)
    # The same record, keys in another order: the same canonical JSON, so the same input hash.
    second = api.decide(dict(reversed(list(UNSETTLED.items()))))
    assert calls(emulator) == 1
    assert second.status == 200 and second.body["cache"] == "hit"
    assert second.body["cached_from"] == first.body["id"] != second.body["id"]
    assert second.body["usage"]["total_tokens"] == 0 and second.body["model"]["attempts"] == 0
    for field in ("decision", "decided_by", "reasons", "input_hash", "ruleset"):
        assert second.body[field] == first.body[field], field
    assert second.body["model"]["verdict"] == first.body["model"]["verdict"]
    assert api.call("GET", f"/v1/decisions/{second.body['id']}").body == second.body
    # Cache-Control: no-cache asks DeepSeek again.
    fresh = api.decide(UNSETTLED, headers={"Cache-Control": "no-cache"})
    assert (fresh.body["cache"], calls(emulator)) == ("miss", 2)


def test_a_new_ruleset_version_is_not_answered_from_the_old_versions_cache(
    api: Api, refunds: dict[str, Any], emulator: EmulatorServer
) -> None:
    api.decide(UNSETTLED)
    assert api.push({**REFUNDS, "description": "Refund requests, reviewed."}).body["version"] == 2
    answer = api.decide(UNSETTLED)
    assert answer.body["ruleset"] == {"id": "refunds", "version": 2}
    assert (answer.body["cache"], calls(emulator)) == ("miss", 2)
    pinned = api.decide(UNSETTLED, version=1)
    assert (pinned.body["cache"], pinned.body["ruleset"]["version"], calls(emulator)) == ("hit", 1, 2)


def test_a_decision_reads_back_by_id_as_it_was_answered_raw_verdict_included(api: Api, refunds: dict[str, Any]) -> None:
    made = api.decide({"amount": 1500, "country": "DE"})
    read = api.call("GET", f"/v1/decisions/{made.body['id']}")
    assert read.status == 200 and read.body == made.body
    assert read.body["model"]["raw"] and read.body["input_hash"] == made.body["input_hash"]
    assert made.body["id"].startswith("dec_")
    assert api.call("GET", "/v1/decisions/dec_nope").status == 404


def test_decisions_list_newest_first_in_pages(api: Api, refunds: dict[str, Any]) -> None:
    made = [api.decide({"amount": 5, "country": country}).body["id"] for country in ("DE", "FR", "KP")]
    first = api.call("GET", "/v1/decisions", query={"limit": "2"})
    assert [d["id"] for d in first.body["data"]] == made[::-1][:2] and first.body["has_more"] is True
    rest = api.call("GET", "/v1/decisions", query={"limit": "2", "after": first.body["last_id"]})
    assert [d["id"] for d in rest.body["data"]] == made[:1] and rest.body["has_more"] is False


def test_another_tenant_sees_none_of_the_rulesets_or_decisions(api: Api, refunds: dict[str, Any]) -> None:
    made = api.decide({"amount": 5, "country": "DE"}).body
    for method, path, body in (
        ("GET", "/v1/rulesets/refunds", None),
        ("GET", f"/v1/decisions/{made['id']}", None),
        ("POST", "/v1/decisions", {"ruleset": "refunds", "input": {"amount": 5, "country": "DE"}}),
    ):
        answer = api.call(method, path, body, key=OTHER_KEY)
        assert answer.status == 404, (method, path, answer.body)
    assert api.call("GET", "/v1/rulesets", key=OTHER_KEY).body["data"] == []
    assert api.call("GET", "/v1/decisions", key=OTHER_KEY).body["data"] == []
    # The other tenant's own "refunds" is its version 1, apart from dev's.
    assert api.push(REFUNDS, key=OTHER_KEY).body["version"] == 1


def test_a_keys_requests_per_minute_hold_for_model_decisions_only(
    api: Api, refunds: dict[str, Any], emulator: EmulatorServer, aws: Any
) -> None:
    limited = "sk-seekless-limited-" + "3" * 30
    DynamoKeyStore(TABLES["ApiKeysTable"], client=aws).put(
        hash_key(limited), tenant_id="dev", key_id="limited", limits=KeyLimits(rpm=1)
    )
    assert api.decide(UNSETTLED, key=limited).status == 200
    refused = api.decide({"amount": 151, "country": "DE"}, key=limited)
    assert refused.status == 429
    assert (refused.error["type"], refused.error["code"]) == ("rate_limit_error", "rate_limit_requests")
    assert int(refused.headers["retry-after"]) >= 1
    assert calls(emulator) == 1  # the refused decision never reached DeepSeek
    # Rules-only decisions make no model call, so the model's limits do not hold them back.
    assert api.decide({"amount": 5, "country": "DE"}, key=limited).status == 200


def test_a_retry_never_gets_a_cached_answer(api: Api, refunds: dict[str, Any], emulator: EmulatorServer) -> None:
    """The response cache holds an invalid answer to the very request a decision sends (here put there by
    a chat completion the tenant made itself): the first attempt may read it, the retry goes upstream."""
    compiled = compile_ruleset(RulesetSpec.model_validate(REFUNDS), version=1)
    messages = verdict_messages(compiled, evaluate(compiled, UNSETTLED), UNSETTLED)
    emulator.configure(fault="invalid_json", fault_count=1)
    chat = {
        "model": "deepseek-chat",
        "messages": messages,
        "temperature": 0,
        "response_format": {"type": "json_object"},
    }
    cached = api.call("POST", "/v1/chat/completions", chat)
    assert cached.status == 200 and cached.body["choices"][0]["message"]["content"].startswith("Certainly!")
    answer = api.decide(UNSETTLED)
    assert calls(emulator) == 2  # the chat, then the decision's retry
    assert (answer.body["decided_by"], answer.body["model"]["attempts"]) == ("model", 2)
