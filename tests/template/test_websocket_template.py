"""The WebSocket API in template.yaml: routes, authorizer, stage, functions, grants, connections table,
and the sample events under events/ws/ (docs/WEBSOCKET.md is the protocol)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from seekless_local.events import event_files, load_event
from seekless_local.template import function_specs
from tests.template.conftest import (
    DATA_KEY,
    DATA_KEY_USE,
    VPC_MANAGED_POLICY,
    as_list,
    cache_connect_grants,
    function_roles,
    grants,
    resource_key,
    resources,
    statements,
)

ROUTE_FUNCTIONS = {
    "$connect": "WsConnectFunction",
    "$disconnect": "WsDisconnectFunction",
    "$default": "WsMessageFunction",
    "chat": "WsMessageFunction",
    "cancel": "WsMessageFunction",
    "resume": "WsMessageFunction",
    "ping": "WsMessageFunction",
}
WS_FUNCTIONS = {
    "WsAuthorizerFunction": "functions/ws_authorizer/",
    "WsConnectFunction": "functions/ws_connect/",
    "WsDisconnectFunction": "functions/ws_disconnect/",
    "WsMessageFunction": "functions/ws_message/",
    "GeneratorFunction": "functions/generator/",
}
EXECUTE_API = "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${WebSocketApi}"
WS_ENDPOINT = {"Fn::Sub": "https://${WebSocketApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/${Stage}"}


def _getatt_arn(logical_id: str) -> dict[str, Any]:
    return {"Fn::GetAtt": [logical_id, "Arn"]}


def _connections(method: str) -> dict[str, str]:
    return {"Fn::Sub": f"{EXECUTE_API}/${{Stage}}/{method}/@connections/*"}


def _invoked_function(integration: dict[str, Any]) -> str:
    """The function an AWS_PROXY integration's invoke URI names."""
    uri = integration["Properties"]["IntegrationUri"]["Fn::Sub"]
    prefix = "arn:${AWS::Partition}:apigateway:${AWS::Region}:lambda:path/2015-03-31/functions/${"
    assert uri.startswith(prefix) and uri.endswith(".Arn}/invocations"), uri
    return uri.removeprefix(prefix).removesuffix(".Arn}/invocations")


def _routes(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        route["Properties"]["RouteKey"]: route for route in resources(template, "AWS::ApiGatewayV2::Route").values()
    }


def _integration_of(template: dict[str, Any], route: dict[str, Any]) -> dict[str, Any]:
    target = route["Properties"]["Target"]["Fn::Sub"]
    assert target.startswith("integrations/${") and target.endswith("}"), target
    return template["Resources"][target.removeprefix("integrations/${").removesuffix("}")]


def _permissions(template: dict[str, Any]) -> list[dict[str, Any]]:
    return [p["Properties"] for p in resources(template, "AWS::Lambda::Permission").values()]


# ---------------------------------------------------------------- API, stage, routes


def test_websocket_api_selects_routes_by_the_action_field(template: dict[str, Any]) -> None:
    (api,) = resources(template, "AWS::ApiGatewayV2::Api").values()
    assert api["Properties"]["ProtocolType"] == "WEBSOCKET"
    assert api["Properties"]["RouteSelectionExpression"] == "$request.body.action"


def test_routes_are_exactly_the_protocols_seven(template: dict[str, Any]) -> None:
    routes = _routes(template)
    assert set(routes) == set(ROUTE_FUNCTIONS)
    assert len(resources(template, "AWS::ApiGatewayV2::Route")) == len(ROUTE_FUNCTIONS)
    for route in routes.values():
        assert route["Properties"]["ApiId"] == {"Ref": "WebSocketApi"}


@pytest.mark.parametrize("route_key", sorted(ROUTE_FUNCTIONS))
def test_each_route_proxies_to_an_existing_function(template: dict[str, Any], route_key: str) -> None:
    integration = _integration_of(template, _routes(template)[route_key])
    assert integration["Type"] == "AWS::ApiGatewayV2::Integration"
    assert integration["Properties"]["IntegrationType"] == "AWS_PROXY"
    assert integration["Properties"]["ApiId"] == {"Ref": "WebSocketApi"}
    function = _invoked_function(integration)
    assert function == ROUTE_FUNCTIONS[route_key]
    assert template["Resources"][function]["Type"] == "AWS::Serverless::Function"


@pytest.mark.parametrize("route_key", sorted(ROUTE_FUNCTIONS))
def test_each_route_may_invoke_its_function_only_from_this_api_and_stage(
    template: dict[str, Any], route_key: str
) -> None:
    function = ROUTE_FUNCTIONS[route_key]
    source_arns = [
        p["SourceArn"]
        for p in _permissions(template)
        if p["FunctionName"] in (_getatt_arn(function), {"Ref": function})
    ]
    assert {"Fn::Sub": f"{EXECUTE_API}/${{Stage}}/{route_key}"} in source_arns
    for permission in _permissions(template):
        assert permission["Action"] == "lambda:InvokeFunction"
        assert permission["Principal"] == "apigateway.amazonaws.com"
        assert permission["SourceArn"]["Fn::Sub"].startswith(f"{EXECUTE_API}/")
        assert "*" not in permission["SourceArn"]["Fn::Sub"]


def test_only_connect_is_authorized_and_by_the_request_authorizer(template: dict[str, Any]) -> None:
    for route_key, route in _routes(template).items():
        props = route["Properties"]
        if route_key == "$connect":
            assert props["AuthorizationType"] == "CUSTOM"
            assert props["AuthorizerId"] == {"Ref": "WebSocketAuthorizer"}
        else:
            # API Gateway runs authorizers only at $connect; later messages carry its context.
            assert props.get("AuthorizationType", "NONE") == "NONE", route_key
            assert "AuthorizerId" not in props, route_key


def test_authorizer_sees_every_handshake_and_caches_nothing(template: dict[str, Any]) -> None:
    authorizer = template["Resources"]["WebSocketAuthorizer"]
    assert authorizer["Type"] == "AWS::ApiGatewayV2::Authorizer"
    props = authorizer["Properties"]
    assert props["AuthorizerType"] == "REQUEST"
    assert props["ApiId"] == {"Ref": "WebSocketApi"}
    uri = props["AuthorizerUri"]["Fn::Sub"]
    assert uri.endswith("/functions/${WsAuthorizerFunction.Arn}/invocations")
    # A declared identity source that is missing gets 401 without the function: a Bearer header and a
    # ?ticket= query string are alternatives, so neither may be declared.
    assert not props.get("IdentitySource")
    # Tickets are single-use: a cached allow would let one be replayed.
    assert not props.get("AuthorizerResultTtlInSeconds")
    (permission,) = [p for p in _permissions(template) if p["FunctionName"] == _getatt_arn("WsAuthorizerFunction")]
    assert permission["SourceArn"] == {"Fn::Sub": f"{EXECUTE_API}/authorizers/${{WebSocketAuthorizer}}"}


def test_stage_throttles_auto_deploys_and_keeps_prompts_out_of_logs(template: dict[str, Any]) -> None:
    (stage,) = resources(template, "AWS::ApiGatewayV2::Stage").values()
    props = stage["Properties"]
    assert props["ApiId"] == {"Ref": "WebSocketApi"}
    assert props["StageName"] == {"Ref": "Stage"}
    assert props["AutoDeploy"] is True
    settings = props["DefaultRouteSettings"]
    assert {"ThrottlingRateLimit", "ThrottlingBurstLimit"} <= set(settings)
    assert settings["DataTraceEnabled"] is False  # would log message bodies, i.e. prompts
    access_log = props["AccessLogSettings"]
    assert "DestinationArn" in access_log
    # The connect URL carries a browser's ticket; bodies carry prompts.
    for variable in ("querystring", "$context.body", "$input"):
        assert variable not in access_log["Format"].lower()
    # The first automatic deployment must already hold every route.
    assert set(as_list(stage.get("DependsOn", []))) >= {
        logical_id for logical_id in resources(template, "AWS::ApiGatewayV2::Route")
    }


def test_websocket_url_output_is_wss_on_the_stage(template: dict[str, Any]) -> None:
    outputs = template["Outputs"]
    assert outputs["WebSocketUrl"]["Value"] == {
        "Fn::Sub": "wss://${WebSocketApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/${Stage}"
    }
    assert outputs["ConnectionsTableName"]["Value"] == {"Ref": "ConnectionsTable"}


# ---------------------------------------------------------------- functions


def test_websocket_functions_use_their_own_folders_and_handlers(template: dict[str, Any]) -> None:
    for logical_id, code_uri in WS_FUNCTIONS.items():
        props = template["Resources"][logical_id]["Properties"]
        assert (props["CodeUri"], props["Handler"]) == (code_uri, "app.handler"), logical_id


def test_route_handlers_answer_quickly_and_the_generator_runs_long(template: dict[str, Any]) -> None:
    specs = function_specs(template)
    for logical_id in ("WsAuthorizerFunction", "WsConnectFunction", "WsDisconnectFunction", "WsMessageFunction"):
        timeout = specs[logical_id].timeout
        assert timeout is not None and timeout <= 10, logical_id
    assert specs["GeneratorFunction"].timeout == 900


def test_only_functions_that_reach_redis_run_in_the_vpc(template: dict[str, Any], transformed: dict[str, Any]) -> None:
    in_vpc = {
        logical_id
        for logical_id, function in resources(template, "AWS::Serverless::Function").items()
        if "VpcConfig" in function["Properties"]
    }
    assert in_vpc == {
        "RestApiFunction",
        "WsAuthorizerFunction",
        "WsMessageFunction",
        "GeneratorFunction",
        "JobSweeperFunction",  # it folds the usage counters kept in Redis
    }
    # $connect and $disconnect touch only DynamoDB: no ENIs and no VPC policy for them.
    for logical_id, role in function_roles(transformed).items():
        assert (VPC_MANAGED_POLICY in role["Properties"].get("ManagedPolicyArns", [])) == (logical_id in in_vpc)


def test_generator_is_never_retried(transformed: dict[str, Any]) -> None:
    configs = resources(transformed, "AWS::Lambda::EventInvokeConfig")
    (config,) = [
        c["Properties"] for c in configs.values() if c["Properties"]["FunctionName"] == {"Ref": "GeneratorFunction"}
    ]
    # A retried generation would stream the answer a second time.
    assert config["MaximumRetryAttempts"] == 0


# Every role also uses DataKey through its stores' services (only reads it, for the authorizer), and
# the four that reach Redis connect to the cache as its IAM user.
WS_GRANTS: dict[str, dict[str, Any]] = {
    "WsAuthorizerFunction": {
        resource_key(_getatt_arn("ApiKeysTable")): {"dynamodb:GetItem"},
        resource_key(DATA_KEY): {"kms:Decrypt"},
        **cache_connect_grants(),
    },
    "WsConnectFunction": {
        resource_key(_getatt_arn("ConnectionsTable")): {"dynamodb:PutItem"},
        resource_key(DATA_KEY): DATA_KEY_USE,
    },
    "WsDisconnectFunction": {
        resource_key(_getatt_arn("ConnectionsTable")): {"dynamodb:DeleteItem"},
        resource_key(DATA_KEY): DATA_KEY_USE,
    },
    "WsMessageFunction": {
        resource_key(_getatt_arn("ConnectionsTable")): {"dynamodb:GetItem", "dynamodb:DeleteItem"},
        resource_key(_getatt_arn("SessionsTable")): {"dynamodb:GetItem", "dynamodb:Query"},
        resource_key(_getatt_arn("JobsTable")): {
            "dynamodb:GetItem",
            "dynamodb:PutItem",
            "dynamodb:UpdateItem",
            "dynamodb:TransactWriteItems",
        },
        resource_key(_getatt_arn("JobsQueue")): {"sqs:SendMessage"},
        resource_key(_getatt_arn("GeneratorFunction")): {"lambda:InvokeFunction"},
        resource_key(_connections("POST")): {"execute-api:ManageConnections"},
        resource_key(_getatt_arn("UsageTable")): {"dynamodb:UpdateItem"},  # a refused chat frame's error
        resource_key(DATA_KEY): DATA_KEY_USE,
        **cache_connect_grants(),
    },
    "GeneratorFunction": {
        resource_key(_getatt_arn("SessionsTable")): {
            "dynamodb:GetItem",
            "dynamodb:PutItem",
            "dynamodb:UpdateItem",
            "dynamodb:DeleteItem",
            "dynamodb:Query",
            "dynamodb:BatchWriteItem",
            "dynamodb:TransactWriteItems",
            "dynamodb:ConditionCheckItem",
        },
        resource_key(_getatt_arn("ConnectionsTable")): {"dynamodb:GetItem", "dynamodb:DeleteItem"},
        resource_key({"Ref": "DeepSeekApiKeySecret"}): {"secretsmanager:GetSecretValue"},
        resource_key(_connections("POST")): {"execute-api:ManageConnections"},
        resource_key(_connections("GET")): {"execute-api:ManageConnections"},
        # the generation's key limits, and its daily/monthly token budget items
        resource_key(_getatt_arn("ApiKeysTable")): {"dynamodb:GetItem", "dynamodb:UpdateItem"},
        resource_key(_getatt_arn("UsageTable")): {"dynamodb:UpdateItem"},
        resource_key(DATA_KEY): DATA_KEY_USE,
        **cache_connect_grants(),
    },
}


@pytest.mark.parametrize("logical_id", sorted(WS_GRANTS))
def test_websocket_function_is_granted_exactly_what_it_needs(transformed: dict[str, Any], logical_id: str) -> None:
    assert grants(function_roles(transformed)[logical_id]) == WS_GRANTS[logical_id]


def test_manage_connections_is_scoped_to_this_api_and_stage(transformed: dict[str, Any]) -> None:
    seen = 0
    for logical_id, role in function_roles(transformed).items():
        for statement in statements(role):
            if "execute-api:ManageConnections" not in as_list(statement["Action"]):
                continue
            assert as_list(statement["Action"]) == ["execute-api:ManageConnections"], logical_id
            for resource in as_list(statement["Resource"]):
                seen += 1
                arn = resource["Fn::Sub"]
                # This API's id and this stage, never a wildcard API or stage.
                assert arn.startswith(f"{EXECUTE_API}/${{Stage}}/"), (logical_id, arn)
                method, _, path = arn.removeprefix(f"{EXECUTE_API}/${{Stage}}/").partition("/")
                assert method in {"POST", "GET", "DELETE"}, (logical_id, arn)
                assert path == "@connections/*", (logical_id, arn)
    assert seen > 0


def test_only_the_message_function_may_start_a_generation(transformed: dict[str, Any]) -> None:
    invokers = {}
    for logical_id, role in function_roles(transformed).items():
        for statement in statements(role):
            if any(action.startswith("lambda:") for action in as_list(statement["Action"])):
                assert as_list(statement["Action"]) == ["lambda:InvokeFunction"], logical_id
                invokers[logical_id] = as_list(statement["Resource"])
    assert invokers == {"WsMessageFunction": [_getatt_arn("GeneratorFunction")]}


def test_websocket_functions_get_their_tables_and_endpoints_from_the_template(template: dict[str, Any]) -> None:
    specs = function_specs(template)
    env = {logical_id: specs[logical_id].environment for logical_id in WS_FUNCTIONS}
    assert {"SEEKLESS_KEYS_TABLE", "REDIS_URL", "SEEKLESS_REDIS_CLUSTER"} <= set(env["WsAuthorizerFunction"])
    for logical_id in ("WsConnectFunction", "WsDisconnectFunction", "WsMessageFunction", "GeneratorFunction"):
        assert env[logical_id]["SEEKLESS_CONNECTIONS_TABLE"] == {"Ref": "ConnectionsTable"}, logical_id
    message = env["WsMessageFunction"]
    assert {
        "SEEKLESS_SESSIONS_TABLE",
        "REDIS_URL",
        "SEEKLESS_REDIS_CLUSTER",
        "SEEKLESS_GENERATOR_FUNCTION",
        "SEEKLESS_WS_ENDPOINT",
    } <= set(message)
    assert message["SEEKLESS_GENERATOR_FUNCTION"] == {"Ref": "GeneratorFunction"}
    generator = env["GeneratorFunction"]
    assert {
        "SEEKLESS_SESSIONS_TABLE",
        "REDIS_URL",
        "SEEKLESS_REDIS_CLUSTER",
        "SEEKLESS_DEEPSEEK_SECRET_NAME",
        "DEEPSEEK_BASE_URL",
        "SEEKLESS_MAX_TOKENS_CAP",
        "SEEKLESS_CACHE_TTL_SECONDS",
        "SEEKLESS_WS_ENDPOINT",
    } <= set(generator)
    # The management API endpoint is the stage's https URL (the wss one is for clients).
    assert message["SEEKLESS_WS_ENDPOINT"] == generator["SEEKLESS_WS_ENDPOINT"] == WS_ENDPOINT
    # The generator's deadline comes from the Lambda context (900 s less a margin), not the REST setting.
    assert "SEEKLESS_REQUEST_DEADLINE_SECONDS" not in generator
    assert "SEEKLESS_KEYS_TABLE" not in message
    # Long chats become jobs: the route needs the jobs table and queue.
    assert message["SEEKLESS_JOBS_QUEUE_URL"] == {"Ref": "JobsQueue"}


# ---------------------------------------------------------------- connections table


def test_connections_table_is_ephemeral_expiring_and_indexed_by_tenant(template: dict[str, Any]) -> None:
    table = template["Resources"]["ConnectionsTable"]
    props = table["Properties"]
    assert props["KeySchema"] == [{"AttributeName": "connection_id", "KeyType": "HASH"}]
    (index,) = props["GlobalSecondaryIndexes"]
    assert index["IndexName"] == "by_tenant"
    assert index["KeySchema"] == [
        {"AttributeName": "tenant_id", "KeyType": "HASH"},
        {"AttributeName": "connected_at", "KeyType": "RANGE"},
    ]
    # Readers filter expired items (TTL deletion is late), so expires_at must be in the index.
    assert index["Projection"]["ProjectionType"] == "ALL"
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert props["SSESpecification"]["SSEEnabled"] is True
    # Connections live at most 2 h: nothing worth restoring or keeping past the stack.
    assert "PointInTimeRecoverySpecification" not in props
    assert table["DeletionPolicy"] == table["UpdateReplacePolicy"] == "Delete"


# ---------------------------------------------------------------- events/ws


WS_SCENARIOS = {
    "connect",
    "disconnect",
    "authorizer_bearer",
    "authorizer_ticket",
    "authorizer_none",
    "chat",
    "chat_session",
    "cancel",
    "resume",
    "ping",
    "default_unknown_action",
    "default_not_json",
}
CONTEXT_KEYS = {
    "routeKey",
    "eventType",
    "connectionId",
    "domainName",
    "stage",
    "apiId",
    "requestId",
    "connectedAt",
    "requestTimeEpoch",
    "identity",
}
EVENT_TYPES = {"$connect": "CONNECT", "$disconnect": "DISCONNECT"}


def _check_context(context: dict[str, Any]) -> None:
    assert set(context) >= CONTEXT_KEYS
    assert context["routeKey"] in ROUTE_FUNCTIONS
    assert context["eventType"] == EVENT_TYPES.get(context["routeKey"], "MESSAGE")
    assert context["connectionId"].endswith("=")  # as real connection ids do
    assert context["domainName"] == f"{context['apiId']}.execute-api.us-east-1.amazonaws.com"
    assert isinstance(context["connectedAt"], int) and context["requestTimeEpoch"] >= context["connectedAt"]
    assert "sourceIp" in context["identity"]


def _check_headers(event: dict[str, Any]) -> None:
    assert {name: [value] for name, value in event["headers"].items()} == event["multiValueHeaders"]


@pytest.mark.parametrize("path", event_files("ws"), ids=lambda p: p.stem)
def test_ws_event_is_a_well_formed_websocket_event_of_its_kind(path: Path) -> None:
    event = load_event(path)
    context = event["requestContext"]
    _check_context(context)
    if path.stem.startswith("authorizer_"):
        # The REQUEST authorizer's input: no body, no isBase64Encoded, a methodArn for $connect.
        assert event["type"] == "REQUEST"
        assert context["routeKey"] == "$connect"
        arn = f"arn:aws:execute-api:us-east-1:123456789012:{context['apiId']}/{context['stage']}/$connect"
        assert event["methodArn"] == arn
        _check_headers(event)
        query = event["queryStringParameters"]
        multi = event["multiValueQueryStringParameters"]
        assert multi == (None if query is None else {name: [value] for name, value in query.items()})
        assert "Sec-WebSocket-Key" in event["headers"]
        return
    assert event["isBase64Encoded"] is False
    assert context["authorizer"]["tenant_id"] == "dev"  # the context $connect's authorizer returned
    if context["eventType"] == "CONNECT":
        _check_headers(event)
        assert {"Sec-WebSocket-Key", "Sec-WebSocket-Version", "Host"} <= set(event["headers"])
        assert "body" not in event
    elif context["eventType"] == "DISCONNECT":
        _check_headers(event)
        assert isinstance(context["disconnectStatusCode"], int)
        assert isinstance(context["disconnectReason"], str)
        assert "body" not in event
    else:
        assert isinstance(context["messageId"], str) and context["messageId"]
        assert isinstance(event["body"], str)
        try:
            action = json.loads(event["body"]).get("action")
        except json.JSONDecodeError:
            action = None
        # Route selection as API Gateway does it: a known action picks its route, else $default.
        expected_route = action if action in ROUTE_FUNCTIONS and not action.startswith("$") else "$default"
        assert context["routeKey"] == expected_route


def test_ws_events_cover_every_scenario_by_name() -> None:
    assert {path.stem for path in event_files("ws")} >= WS_SCENARIOS
    bearer = load_event("ws/authorizer_bearer")
    assert bearer["headers"]["Authorization"] == "Bearer sk-seekless-local-dev"
    assert bearer["queryStringParameters"] is None
    ticket = load_event("ws/authorizer_ticket")
    assert "Authorization" not in ticket["headers"]
    assert ticket["queryStringParameters"] == {"ticket": "tkt-example"}
    none = load_event("ws/authorizer_none")
    assert "Authorization" not in none["headers"] and none["queryStringParameters"] is None
    assert load_event("ws/connect")["requestContext"]["authorizer"] == {
        "tenant_id": "dev",
        "key_id": "dev",
        "principalId": "dev",
    }
    bodies = {name: load_event(f"ws/{name}")["body"] for name in ("chat", "chat_session", "resume", "ping")}
    assert json.loads(bodies["chat"]) == {"action": "chat", "request_id": "req-1", "message": "Hello"}
    assert json.loads(bodies["chat_session"])["session_id"] == "sess-example"
    assert json.loads(bodies["resume"])["after_seq"] == 3
    assert json.loads(bodies["ping"]) == {"action": "ping"}
    assert json.loads(load_event("ws/default_unknown_action")["body"]) == {"action": "dance"}
    assert load_event("ws/default_not_json")["body"] == "not json"
