"""The WebSocket sample events under events/ws/ through their handlers, as `sam local invoke -e`
would run them: moto for DynamoDB and the @connections management API, a real Redis.

The chat, cancel and resume events need a running generator and connection: the contract tests run
those end to end through the local WebSocket gateway."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest
from moto.apigatewaymanagementapi.models import apigatewaymanagementapi_backends
from moto.core import DEFAULT_ACCOUNT_ID

from seekless import wiring
from seekless.models import Principal
from seekless_local.events import load_event
from seekless_local.gateway import ExecutionEnvironments
from seekless_local.template import function_specs, load_handler

CONNECTION = "Abc123connId="
Invoke = Callable[[dict[str, Any]], Any]


@pytest.fixture
def ws_env(app_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEEKLESS_CONNECTIONS_TABLE", "seekless-connections")
    monkeypatch.setenv("SEEKLESS_WS_ENDPOINT", "https://abcdef1234.execute-api.us-east-1.amazonaws.com/prod")


@pytest.fixture
def function(ws_env: None) -> Iterator[Callable[[str], Invoke]]:
    started: list[ExecutionEnvironments] = []

    def environment(logical_id: str) -> Invoke:
        spec = function_specs()[logical_id]
        environments = ExecutionEnvironments(lambda: load_handler(spec), name=logical_id, timeout=10, size=1)
        started.append(environments)
        return environments.invoke_sync

    yield environment
    for environments in started:
        environments.close()


def posted(connection_id: str) -> list[dict[str, Any]]:
    # moto keys connections by the id as it appears in the URL path, i.e. percent-encoded.
    connections = apigatewaymanagementapi_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].connections
    data = connections[quote(connection_id, safe="")].data
    return [json.loads(line) for line in data.replace(b"}{", b"}\n{").splitlines() if line]


def test_connect_then_disconnect_keep_the_connections_table(function: Callable[[str], Invoke], aws: Any) -> None:
    assert function("WsConnectFunction")(load_event("ws/connect"))["statusCode"] == 200
    item = aws.get_item(TableName="seekless-connections", Key={"connection_id": {"S": CONNECTION}})["Item"]
    assert item["tenant_id"]["S"] == "dev"
    assert function("WsDisconnectFunction")(load_event("ws/disconnect"))["statusCode"] == 200
    assert "Item" not in aws.get_item(TableName="seekless-connections", Key={"connection_id": {"S": CONNECTION}})


def test_authorizer_allows_the_dev_key_with_the_tenant_in_context(function: Callable[[str], Invoke]) -> None:
    answer = function("WsAuthorizerFunction")(load_event("ws/authorizer_bearer"))
    statement = answer["policyDocument"]["Statement"][0]
    assert statement["Effect"] == "Allow" and answer["context"]["tenant_id"] == "dev"


def test_authorizer_redeems_a_ticket_once(function: Callable[[str], Invoke]) -> None:
    event = load_event("ws/authorizer_ticket")
    event["queryStringParameters"]["ticket"] = wiring.ticket_store().issue(Principal(tenant_id="dev", key_id="dev"))
    authorize = function("WsAuthorizerFunction")
    assert authorize(event)["policyDocument"]["Statement"][0]["Effect"] == "Allow"
    assert authorize(event)["policyDocument"]["Statement"][0]["Effect"] == "Deny"  # single use
    wiring.reset_environment()


def test_authorizer_without_credentials_is_unauthorized(function: Callable[[str], Invoke]) -> None:
    with pytest.raises(Exception, match=r"^Unauthorized$"):
        function("WsAuthorizerFunction")(load_event("ws/authorizer_none"))


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ("ws/ping", {"type": "pong", "request_id": None, "seq": 0}),
        ("ws/default_unknown_action", {"type": "error", "code": "unknown_action"}),
        ("ws/default_not_json", {"type": "error", "code": "invalid_json"}),
        ("ws/cancel", {"type": "error", "code": "unknown_request"}),
        ("ws/resume", {"type": "error", "code": "unknown_request"}),
    ],
)
def test_message_routes_answer_with_a_frame(function: Callable[[str], Invoke], event: str, expected: dict) -> None:
    assert function("WsMessageFunction")(load_event(event))["statusCode"] == 200
    (frame,) = posted(CONNECTION)
    assert {k: frame[k] for k in expected} == expected
