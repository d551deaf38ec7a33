"""Another tenant's resources, through the real REST handler: every kind is a 404 (never a 403 that
confirms it exists), nothing of it is read out of the stores, and nothing of it changes.

Tenant ``dev`` owns a session with a message, a job, a batch, a ruleset and a decision; tenant ``other``
tries every route on their ids. A spy on botocore records every AWS answer while ``other`` asks: none may carry any of
``dev``'s ids or content, so a route that fetched the item and then refused it would fail here too."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.client import BaseClient

from seekless.adapters.batches import DynamoBatchStore
from seekless.adapters.decisions import DynamoDecisionStore, DynamoRulesetStore
from seekless.adapters.dynamodb import DynamoSessionStore
from seekless.adapters.jobs import DynamoJobStore
from seekless.contracts import ChatCompletionRequest
from seekless.rules import DecisionResult, RulesetSpec
from seekless_local.events import load_event
from seekless_local.gateway import ExecutionEnvironments
from seekless_local.template import function_specs, load_handler

from .conftest import DEV_KEY, OTHER_KEY, TABLES

SECRETS = {
    "session_title": "dev-private-title-5b1",
    "message": "dev-private-message-77c",
    "job_prompt": "dev-private-job-prompt-a02",
    "batch_metadata": "dev-private-batch-meta-e93",
    "ruleset_description": "dev-private-ruleset-d41",
    "decision_reason": "dev-private-decision-reason-0c7",
}
Invoke = Callable[[str, str, str, dict[str, Any] | None], dict[str, Any]]


@pytest.fixture
def owned(aws: Any) -> dict[str, str]:
    """dev's resources, written straight to the tables."""
    sessions = DynamoSessionStore(TABLES["SessionsTable"], client=aws)
    session = sessions.create("dev", title=SECRETS["session_title"], metadata={}, session_id="sess_dev_1")
    sessions.append("dev", session.id, [{"role": "user", "content": SECRETS["message"]}])
    request = ChatCompletionRequest.model_validate(
        {"model": "deepseek-flash", "messages": [{"role": "user", "content": SECRETS["job_prompt"]}]}
    )
    jobs = DynamoJobStore(TABLES["JobsTable"], client=aws)
    job, _ = jobs.create("dev", key_id="dev", request=request, session_id=None)
    batch = DynamoBatchStore(TABLES["BatchesTable"], client=aws, jobs=jobs).reserve(
        "dev",
        "batch_dev_1",
        key_id="dev",
        input_key="batches/input/dev/batch_dev_1.jsonl",
        metadata={"note": SECRETS["batch_metadata"]},
        expires_in=3600,
    )
    ruleset = RulesetSpec.model_validate(
        {
            "id": "dev-ruleset-6f0",
            "description": SECRETS["ruleset_description"],
            "rules": [{"id": "always", "condition": "true", "outcome": "approve", "final": True}],
        }
    )
    DynamoRulesetStore(TABLES["RulesetsTable"], client=aws).publish("dev", ruleset, created_by="dev")
    decision = DecisionResult(
        id="dec_dev_1",
        ruleset_id=ruleset.id,
        ruleset_version=1,
        decision="approve",
        decided_by="rule:always",
        reasons=(SECRETS["decision_reason"],),
        rules_fired=(),
        rule_errors=(),
        score=0.0,
        input_hash="0" * 64,
    )
    DynamoDecisionStore(TABLES["DecisionsTable"], client=aws).put("dev", decision, created_by="dev")
    return {
        "session": session.id,
        "job": job.id,
        "batch": batch.id,
        "ruleset": ruleset.id,
        "decision": decision.id,
    }


@pytest.fixture
def invoke(app_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Invoke]:
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="seekless-isolation-jobs")
    monkeypatch.setenv("SEEKLESS_JOBS_BUCKET", "seekless-isolation-jobs")
    spec = function_specs()["RestApiFunction"]
    environments = ExecutionEnvironments(lambda: load_handler(spec), name=spec.logical_id, timeout=29, size=1)

    def call(key: str, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        event = load_event("rest/get_sessions")
        event.update(httpMethod=method, path=path, queryStringParameters=None, multiValueQueryStringParameters=None)
        event["pathParameters"] = {"proxy": path.removeprefix("/")}
        event["headers"] = {**event["headers"], "Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        event["multiValueHeaders"] = {name: [value] for name, value in event["headers"].items()}
        event["body"] = None if body is None else json.dumps(body)
        event["requestContext"] = {**event["requestContext"], "httpMethod": method, "path": "/prod" + path}
        return environments.invoke_sync(event)

    yield call
    environments.close()


@pytest.fixture
def aws_answers(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every AWS API answer (as JSON text) the process receives while the test runs."""
    answers: list[str] = []
    original = BaseClient._make_api_call

    def spy(self: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        result = original(self, operation, params)
        answers.append(f"{operation} {json.dumps(result, default=str)}")
        return result

    monkeypatch.setattr(BaseClient, "_make_api_call", spy)
    return answers


def attempts(ids: dict[str, str]) -> list[tuple[str, str, dict[str, Any] | None]]:
    chat = {"model": "deepseek-flash", "messages": [{"role": "user", "content": "hi"}]}
    return [
        ("GET", f"/v1/sessions/{ids['session']}", None),
        ("DELETE", f"/v1/sessions/{ids['session']}", None),
        ("POST", "/v1/chat/completions", {**chat, "session_id": ids["session"]}),
        ("GET", f"/v1/jobs/{ids['job']}", None),
        ("POST", f"/v1/jobs/{ids['job']}/cancel", None),
        ("GET", f"/v1/batches/{ids['batch']}", None),
        ("POST", f"/v1/batches/{ids['batch']}/cancel", None),
        ("GET", f"/v1/rulesets/{ids['ruleset']}", None),
        ("POST", "/v1/decisions", {"ruleset": ids["ruleset"], "input": {}}),
        ("POST", "/v1/decisions", {"ruleset": ids["ruleset"], "version": 1, "input": {}}),
        ("GET", f"/v1/decisions/{ids['decision']}", None),
    ]


def test_every_resource_of_another_tenant_is_a_404_and_nothing_of_it_is_read(
    owned: dict[str, str], invoke: Invoke, aws_answers: list[str]
) -> None:
    for method, path, body in attempts(owned):
        response = invoke(OTHER_KEY, method, path, body)
        error = json.loads(response["body"]).get("error")
        assert response["statusCode"] == 404, (method, path, response["body"])
        assert error["type"] == "invalid_request_error", (method, path, error)
    leaked = [answer for answer in aws_answers for marker in [*owned.values(), *SECRETS.values()] if marker in answer]
    assert leaked == []
    assert aws_answers, "the spy saw no AWS call: it is not measuring anything"


def test_the_listings_of_another_tenant_never_show_the_owners_items(
    owned: dict[str, str], invoke: Invoke, aws_answers: list[str]
) -> None:
    for path in ("/v1/sessions", "/v1/jobs", "/v1/batches", "/v1/usage", "/v1/rulesets", "/v1/decisions"):
        response = invoke(OTHER_KEY, "GET", path)
        assert response["statusCode"] == 200, (path, response["body"])
        assert json.loads(response["body"])["data"] == [], path
    leaked = [answer for answer in aws_answers for marker in [*owned.values(), *SECRETS.values()] if marker in answer]
    assert leaked == []


def test_the_owner_still_has_everything_afterwards(owned: dict[str, str], invoke: Invoke) -> None:
    for method, path, body in attempts(owned):
        invoke(OTHER_KEY, method, path, body)
    session = json.loads(invoke(DEV_KEY, "GET", f"/v1/sessions/{owned['session']}")["body"])
    assert session["title"] == SECRETS["session_title"]
    assert [m["content"] for m in session["messages"]["data"]] == [SECRETS["message"]]
    job = json.loads(invoke(DEV_KEY, "GET", f"/v1/jobs/{owned['job']}")["body"])
    assert job["status"] == "queued"
    batch = json.loads(invoke(DEV_KEY, "GET", f"/v1/batches/{owned['batch']}")["body"])
    assert batch["id"] == owned["batch"] and batch["status"] != "cancelled"
    ruleset = json.loads(invoke(DEV_KEY, "GET", f"/v1/rulesets/{owned['ruleset']}")["body"])
    assert (ruleset["version"], ruleset["description"]) == (1, SECRETS["ruleset_description"])
    decisions = json.loads(invoke(DEV_KEY, "GET", "/v1/decisions")["body"])["data"]
    assert [d["id"] for d in decisions] == [owned["decision"]]  # the other tenant's attempts decided nothing here
