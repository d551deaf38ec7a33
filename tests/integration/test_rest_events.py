"""Every sample event under events/rest/ through the real handler, as `sam local invoke -e` would run it:
REST v1 event -> Mangum -> FastAPI -> service -> moto DynamoDB, a real Redis, the emulator."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from seekless.adapters.decisions import DynamoRulesetStore
from seekless.adapters.dynamodb import DynamoSessionStore
from seekless.rules import RulesetSpec
from seekless_local.events import event_files, load_event
from seekless_local.gateway import ExecutionEnvironments, rest_event
from seekless_local.template import function_specs, load_handler

from .conftest import TABLES

EXPECTED_STATUS = {
    "delete_session": 200,
    "get_healthz": 200,
    "get_models": 200,
    "get_session": 200,
    "get_sessions": 200,
    "get_usage": 200,
    "post_chat": 200,
    "post_chat_bad_json": 400,
    "post_chat_empty_messages": 400,
    "post_chat_session": 200,
    "post_chat_stream": 200,
    "post_chat_unauthenticated": 401,
    "post_chat_unknown_model": 404,
    "post_decision": 200,
    "post_ruleset": 201,
    "post_sessions": 201,
}
Invoke = Callable[[dict[str, Any]], dict[str, Any]]
REST_EVENTS = sorted(p for p in event_files() if p.parent.name == "rest")


@pytest.fixture
def invoke(app_env: None) -> Iterator[Callable[[dict[str, Any]], dict[str, Any]]]:
    """The REST function in one warm execution environment, closed (clients and all) afterwards."""
    spec = function_specs()["RestApiFunction"]
    environments = ExecutionEnvironments(lambda: load_handler(spec), name=spec.logical_id, timeout=29, size=1)
    yield environments.invoke_sync
    environments.close()


def test_every_rest_event_has_an_expected_status() -> None:
    assert {p.stem for p in REST_EVENTS} == set(EXPECTED_STATUS)


@pytest.mark.parametrize("path", REST_EVENTS, ids=lambda p: p.stem)
def test_event_through_the_handler(path: Path, invoke: Invoke, aws: Any) -> None:
    DynamoSessionStore(TABLES["SessionsTable"], client=aws).create(
        "dev", title="example", metadata={}, session_id="sess-example"
    )
    # The ruleset post_decision decides with: the one post_ruleset pushes.
    spec = RulesetSpec.model_validate_json(load_event("rest/post_ruleset")["body"])
    DynamoRulesetStore(TABLES["RulesetsTable"], client=aws).publish("dev", spec, created_by="dev")
    response = invoke(load_event(path))
    assert response["statusCode"] == EXPECTED_STATUS[path.stem], response["body"]
    headers = {k.lower(): v for k, v in response.get("headers", {}).items()}
    if path.stem == "post_chat_stream":
        assert headers["content-type"].startswith("text/event-stream")
        assert response["body"].rstrip().endswith("data: [DONE]")
        return
    body = json.loads(response["body"])
    if response["statusCode"] >= 400:
        assert set(body["error"]) == {"message", "type", "param", "code"}
    expected = path.with_name(path.stem + "_output.json")
    if expected.exists():
        assert body == json.loads(expected.read_text())


def test_session_event_appends_the_turn(invoke: Invoke, aws: Any) -> None:
    store = DynamoSessionStore(TABLES["SessionsTable"], client=aws)
    store.create("dev", title=None, metadata={}, session_id="sess-example")
    assert invoke(load_event("rest/post_chat_session"))["statusCode"] == 200
    messages = store.messages("dev", "sess-example").items
    assert [m.role for m in messages] == ["user", "assistant"]


def test_chat_answer_is_cached_across_invocations(invoke: Invoke, emulator: Any) -> None:
    statuses = [invoke(load_event("rest/post_chat")) for _ in range(2)]
    caches = [{k.lower(): v for k, v in r["headers"].items()}["x-seekless-cache"] for r in statuses]
    assert caches == ["miss", "hit"]
    assert emulator.stats()["calls"] == 1


# Found by the fuzz tier (tests/fuzz): each was a 500.


def request(method: str, path: str, *, query: bytes = b"", body: bytes = b"") -> dict[str, Any]:
    """An event as the local gateway builds it from raw HTTP, with the dev key."""
    headers = [(b"authorization", b"Bearer sk-seekless-local-dev"), (b"content-type", b"application/json")]
    return rest_event(
        method=method, path=path, query=query, headers=headers, body=body, source_ip="203.0.113.1", stage="local"
    )


def test_a_body_that_is_not_utf8_is_refused_as_invalid_json(invoke: Invoke) -> None:
    response = invoke(request("POST", "/v1/chat/completions", body=b'{"model": \xff\xfe}'))
    assert response["statusCode"] == 400, response["body"]
    assert json.loads(response["body"])["error"]["code"] == "invalid_json"


def test_usage_up_to_the_calendars_first_day_is_answered(invoke: Invoke) -> None:
    response = invoke(request("GET", "/v1/usage", query=b"end_date=0001-01-01"))
    assert response["statusCode"] == 200, response["body"]
    body = json.loads(response["body"])
    assert (body["start_date"], body["end_date"], body["data"]) == ("0001-01-01", "0001-01-01", [])


def test_an_empty_metadata_key_is_refused_and_the_listing_still_answers(invoke: Invoke) -> None:
    refused = invoke(request("POST", "/v1/sessions", body=json.dumps({"metadata": {"": "x"}}).encode()))
    assert refused["statusCode"] == 400, refused["body"]
    assert json.loads(refused["body"])["error"]["param"].startswith("metadata")
    assert invoke(request("GET", "/v1/sessions"))["statusCode"] == 200
