"""The local WebSocket gateway plays API Gateway WebSocket for a template's routes.

A throwaway template and handler modules are written to tmp_path; the client is the `websockets`
library, and handlers talk back through boto3 (`apigatewaymanagementapi`, `lambda`) unchanged.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from seekless_local.template import (
    REPO_ROOT,
    function_specs,
    load_handler,
    load_template,
    websocket_api,
)
from seekless_local.ws_gateway import WebSocketGateway, WebSocketLimits

GOOD = {"Authorization": "Bearer good"}
MESSAGE_ROUTES = ("$default", "chat", "cancel", "ping")

AUTHORIZER = """
def handler(event, context):
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    ticket = (event.get("queryStringParameters") or {}).get("ticket")
    auth = headers.get("authorization")
    if auth == "Bearer boom":
        raise RuntimeError("the key store is down")
    if auth == "Bearer good" or ticket == "t1":
        effect, principal = "Allow", "tenant-a"
    elif auth or ticket:
        effect, principal = "Deny", "anonymous"
    else:
        raise Exception("Unauthorized")
    return {
        "principalId": principal,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": effect, "Resource": event["methodArn"]}],
        },
        "context": {"tenant_id": principal, "via": "ticket" if ticket else "header", "tier": 2, "admin": False},
    }
"""

LIFECYCLE = """
def handler(event, context):
    headers = event.get("headers") or {}
    if headers.get("X-Refuse"):
        return {"statusCode": 429, "body": "slow down"}
    return {"statusCode": 200}
"""

MESSAGE = """
import json
import os
import threading

import boto3

RELEASE = threading.Event()


def post(connection_id, data):
    client = boto3.client(
        "apigatewaymanagementapi",
        endpoint_url=os.environ["WS_MANAGEMENT_URL"],
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    try:
        client.post_to_connection(ConnectionId=connection_id, Data=json.dumps(data).encode())
    finally:
        client.close()


def handler(event, context):
    ctx = event["requestContext"]
    route, body = ctx["routeKey"], event["body"]
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):
        message = {}
    if not isinstance(message, dict):
        message = {}
    if message.get("explode"):
        raise RuntimeError("boom")
    if route == "chat" and message.get("wait"):
        post(ctx["connectionId"], {"route": route, "released": RELEASE.wait(10)})
        return {"statusCode": 200}
    if route == "cancel":
        RELEASE.set()
    post(
        ctx["connectionId"],
        {
            "route": route,
            "body": body if len(body) < 1000 else None,
            "size": len(body),
            "eventType": ctx["eventType"],
            "connectionId": ctx["connectionId"],
            "messageId": ctx["messageId"],
            "domainName": ctx["domainName"],
            "stage": ctx["stage"],
            "authorizer": ctx.get("authorizer"),
        },
    )
    return {"statusCode": 200, "body": "route responses are not sent"}
"""

GENERATOR = """
import json
import os

import boto3


def handler(event, context):
    client = boto3.client(
        "apigatewaymanagementapi",
        endpoint_url=os.environ["WS_MANAGEMENT_URL"],
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    try:
        data = {"generated": event["text"], "function": context.function_name}
        client.post_to_connection(ConnectionId=event["connection_id"], Data=json.dumps(data).encode())
    finally:
        client.close()
    return {"echo": event["text"]}
"""


def _uri(function: str) -> str:
    return (
        "!Sub arn:${AWS::Partition}:apigateway:${AWS::Region}:lambda:path/2015-03-31/functions/"
        f"${{{function}.Arn}}/invocations"
    )


def _template_text() -> str:
    routes = [
        ("$connect", "ConnectRoute", "ConnectIntegration"),
        ("$disconnect", "DisconnectRoute", "DisconnectIntegration"),
        *((key, f"Route{i}", "MessageIntegration") for i, key in enumerate(MESSAGE_ROUTES)),
    ]
    route_yaml = ""
    for key, name, integration in routes:
        auth = "      AuthorizationType: CUSTOM\n      AuthorizerId: !Ref WebSocketAuthorizer\n"
        # Two spellings of the target, as templates write it.
        target = (
            f"!Sub integrations/${{{integration}}}"
            if key != "$disconnect"
            else f"!Join [/, [integrations, !Ref {integration}]]"
        )
        route_yaml += (
            f"  {name}:\n    Type: AWS::ApiGatewayV2::Route\n    Properties:\n"
            f"      ApiId: !Ref WebSocketApi\n      RouteKey: {key}\n"
            f"{auth if key == '$connect' else ''}      Target: {target}\n"
        )
    integrations = ""
    for name, function in (
        ("ConnectIntegration", "WsConnectFunction"),
        ("MessageIntegration", "WsMessageFunction"),
    ):
        integrations += (
            f"  {name}:\n    Type: AWS::ApiGatewayV2::Integration\n    Properties:\n"
            f"      ApiId: !Ref WebSocketApi\n      IntegrationType: AWS_PROXY\n"
            f"      IntegrationUri: {_uri(function)}\n"
        )
    functions = ""
    for name, module in (
        ("WsAuthorizerFunction", "authorizer"),
        ("WsConnectFunction", "lifecycle"),
        ("WsDisconnectFunction", "lifecycle"),
        ("WsMessageFunction", "message"),
        ("GeneratorFunction", "generator"),
    ):
        functions += (
            f"  {name}:\n    Type: AWS::Serverless::Function\n    Properties:\n      Handler: {module}.handler\n"
        )
    return (
        textwrap.dedent(
            f"""\
            AWSTemplateFormatVersion: "2010-09-09"
            Transform: AWS::Serverless-2016-10-31
            Globals:
              Function:
                Runtime: python3.12
                CodeUri: functions/ws/
                Timeout: 10
            Resources:
              WebSocketApi:
                Type: AWS::ApiGatewayV2::Api
                Properties:
                  Name: test-ws
                  ProtocolType: WEBSOCKET
                  RouteSelectionExpression: $request.body.action
              WebSocketAuthorizer:
                Type: AWS::ApiGatewayV2::Authorizer
                Properties:
                  ApiId: !Ref WebSocketApi
                  AuthorizerType: REQUEST
                  Name: ws-authorizer
                  AuthorizerUri: {_uri("WsAuthorizerFunction")}
              DisconnectIntegration:
                Type: AWS::ApiGatewayV2::Integration
                Properties:
                  ApiId: !Ref WebSocketApi
                  IntegrationType: AWS_PROXY
                  IntegrationUri: !Join
                    - ""
                    - - "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/"
                      - !GetAtt WsDisconnectFunction.Arn
                      - /invocations
            """
        )
        + route_yaml
        + integrations
        + functions
    )


class Recorder:
    """Every invocation's event, by function, for tests to wait on."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def wrap(self, logical_id: str, handler: Callable[..., Any]) -> Callable[..., Any]:
        def recorded(event: dict[str, Any], context: Any) -> Any:
            with self._changed:
                self.calls.append((logical_id, copy.deepcopy(event)))
                self._changed.notify_all()
            return handler(event, context)

        return recorded

    def events(self, logical_id: str) -> list[dict[str, Any]]:
        with self._changed:
            return [event for lid, event in self.calls if lid == logical_id]

    def wait_for(self, logical_id: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> Any:
        def find() -> dict[str, Any] | None:
            return next((e for lid, e in self.calls if lid == logical_id and predicate(e)), None)

        with self._changed:
            found = self._changed.wait_for(find, timeout)
        assert found, f"no matching {logical_id} invocation within {timeout}s"
        return found


@pytest.fixture
def template_path(tmp_path: Path) -> Path:
    folder = tmp_path / "functions" / "ws"
    folder.mkdir(parents=True)
    for module, source in (
        ("authorizer", AUTHORIZER),
        ("lifecycle", LIFECYCLE),
        ("message", MESSAGE),
        ("generator", GENERATOR),
    ):
        (folder / f"{module}.py").write_text(source, encoding="utf-8")
    path = tmp_path / "template.yaml"
    path.write_text(_template_text(), encoding="utf-8")
    return path


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def make_gateway(
    template_path: Path, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., WebSocketGateway]]:
    started: list[WebSocketGateway] = []
    template = load_template(template_path)
    specs = function_specs(template, base_dir=template_path.parent)

    def load(logical_id: str) -> Callable[..., Any]:
        return recorder.wrap(logical_id, load_handler(specs[logical_id], fresh=True))

    def make(**kwargs: Any) -> WebSocketGateway:
        gateway = WebSocketGateway(template, load, port=0, **kwargs).start()
        started.append(gateway)
        monkeypatch.setenv("WS_MANAGEMENT_URL", gateway.management_url)
        return gateway

    yield make
    for gateway in started:
        gateway.stop()


@pytest.fixture
def gateway(make_gateway: Callable[..., WebSocketGateway]) -> WebSocketGateway:
    return make_gateway(function_names={"GeneratorFunction": "seekless-generator"})


@contextlib.contextmanager
def management(gateway: WebSocketGateway) -> Iterator[Any]:
    client = boto3.client(
        "apigatewaymanagementapi",
        endpoint_url=gateway.management_url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    with contextlib.closing(client):
        yield client


def receive(ws: ClientConnection) -> dict[str, Any]:
    return json.loads(ws.recv(timeout=10))


def connection_id(ws: ClientConnection) -> str:
    ws.send(json.dumps({"action": "ping"}))
    return str(receive(ws)["connectionId"])


def refused_status(url: str, headers: dict[str, str] | None = None) -> int:
    with pytest.raises(InvalidStatus) as refused:
        connect(url, additional_headers=headers, open_timeout=10).close()
    return refused.value.response.status_code


def closed_code(ws: ClientConnection) -> int:
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


# ------------------------------------------------------------------ the template


def test_routes_resolve_through_integrations_to_functions(template_path: Path) -> None:
    api = websocket_api(load_template(template_path))

    assert api.logical_id == "WebSocketApi"
    assert api.route_selection_expression == "$request.body.action"
    assert api.routes == {
        "$connect": "WsConnectFunction",
        "$disconnect": "WsDisconnectFunction",
        **dict.fromkeys(MESSAGE_ROUTES, "WsMessageFunction"),
    }
    assert api.authorizer is not None and api.authorizer.function == "WsAuthorizerFunction"
    assert api.functions["GeneratorFunction"] == 10


def test_the_real_template_websocket_api_resolves() -> None:
    template = load_template(REPO_ROOT / "template.yaml")
    resources = template.get("Resources", {}).values()
    if not any(r.get("Type") == "AWS::ApiGatewayV2::Api" for r in resources):
        pytest.skip("template.yaml has no WebSocket API yet")
    api = websocket_api(template)
    assert {"$connect", "$disconnect", "$default", "chat", "cancel", "resume", "ping"} <= set(api.routes)
    assert api.authorizer is not None


# ------------------------------------------------------------------ the handshake


def test_no_credentials_is_refused_with_401(gateway: WebSocketGateway) -> None:
    assert refused_status(gateway.url) == 401


def test_wrong_credentials_are_refused_with_403(gateway: WebSocketGateway) -> None:
    assert refused_status(gateway.url, {"Authorization": "Bearer bad"}) == 403
    assert refused_status(f"{gateway.url}/?ticket=used-up") == 403


def test_a_failing_authorizer_is_refused_with_500(gateway: WebSocketGateway) -> None:
    assert refused_status(gateway.url, {"Authorization": "Bearer boom"}) == 500


def test_a_non_2xx_connect_answer_refuses_the_connection(gateway: WebSocketGateway, recorder: Recorder) -> None:
    assert refused_status(gateway.url, {**GOOD, "X-Refuse": "1"}) == 429
    assert recorder.events("WsDisconnectFunction") == []


def test_authorizer_event_is_a_websocket_request_authorizer_event(
    gateway: WebSocketGateway, recorder: Recorder
) -> None:
    with connect(f"{gateway.url}/?ticket=t1", open_timeout=10):
        pass
    (event,) = recorder.events("WsAuthorizerFunction")
    assert event["type"] == "REQUEST"
    assert event["methodArn"] == "arn:aws:execute-api:us-east-1:000000000000:local/local/$connect"
    assert event["queryStringParameters"] == {"ticket": "t1"}
    assert event["multiValueQueryStringParameters"] == {"ticket": ["t1"]}
    assert event["requestContext"]["routeKey"] == "$connect"
    assert event["requestContext"]["eventType"] == "CONNECT"
    assert event["requestContext"]["connectionId"].endswith("=")


def test_authorizer_context_reaches_connect_and_message_events(gateway: WebSocketGateway, recorder: Recorder) -> None:
    expected = {"tenant_id": "tenant-a", "via": "header", "tier": "2", "admin": "false", "principalId": "tenant-a"}
    with connect(gateway.url, additional_headers=GOOD, open_timeout=10) as ws:
        ws.send(json.dumps({"action": "ping"}))
        echo = receive(ws)

    (connect_event,) = recorder.events("WsConnectFunction")
    context = connect_event["requestContext"]
    assert context["eventType"] == "CONNECT" and context["routeKey"] == "$connect"
    assert connect_event["headers"]["Authorization"] == "Bearer good"
    assert context["authorizer"].items() >= expected.items()
    assert isinstance(context["authorizer"]["integrationLatency"], int)
    assert echo["authorizer"].items() >= expected.items()
    assert echo["connectionId"] == context["connectionId"]
    assert echo["eventType"] == "MESSAGE" and echo["messageId"].endswith("=")
    assert echo["domainName"] == f"127.0.0.1:{gateway.port}" and echo["stage"] == "local"


# ------------------------------------------------------------------ messages


def test_messages_are_routed_by_action_else_to_default(gateway: WebSocketGateway) -> None:
    with connect(gateway.url, additional_headers=GOOD, open_timeout=10) as ws:
        for text, route in (
            (json.dumps({"action": "ping"}), "ping"),
            ("not json", "$default"),
            (json.dumps({"action": "nope"}), "$default"),
            (json.dumps({"message": "no action"}), "$default"),
        ):
            ws.send(text)
            echo = receive(ws)
            assert (echo["route"], echo["body"]) == (route, text)


def test_a_message_nested_too_deep_to_parse_goes_to_default(gateway: WebSocketGateway) -> None:
    deep = "[" * 5000 + "]" * 5000  # past json.loads's recursion limit: was dropped, unanswered
    with connect(gateway.url, additional_headers=GOOD, open_timeout=10) as ws:
        ws.send(deep)
        echo = receive(ws)
    assert (echo["route"], echo["size"]) == ("$default", len(deep))


def test_message_routes_on_one_connection_run_concurrently(gateway: WebSocketGateway) -> None:
    with connect(gateway.url, additional_headers=GOOD, open_timeout=10) as ws:
        ws.send(json.dumps({"action": "chat", "wait": True}))
        ws.send(json.dumps({"action": "cancel"}))
        # The cancel runs while the chat is still waiting for it, and releases it: were the routes
        # of a connection run one at a time, the chat would give up waiting (released False).
        answers = sorted((receive(ws), receive(ws)), key=lambda answer: answer["route"])
        assert answers[0]["route"] == "cancel"
        assert answers[1] == {"route": "chat", "released": True}


def test_a_failing_route_gets_api_gateways_error_message(gateway: WebSocketGateway) -> None:
    with connect(gateway.url, additional_headers=GOOD, open_timeout=10) as ws:
        ws.send(json.dumps({"action": "chat", "explode": True}))
        error = receive(ws)
        assert error["message"] == "Internal server error"
        assert set(error) == {"message", "connectionId", "requestId"}


# ------------------------------------------------------------------ @connections


def test_post_to_a_closed_connection_raises_gone(gateway: WebSocketGateway, recorder: Recorder) -> None:
    with connect(gateway.url, additional_headers=GOOD, open_timeout=10) as ws:
        gone = connection_id(ws)
    recorder.wait_for("WsDisconnectFunction", lambda e: e["requestContext"]["connectionId"] == gone)

    with management(gateway) as client:
        with pytest.raises(client.exceptions.GoneException):
            client.post_to_connection(ConnectionId=gone, Data=b"hello")
        with pytest.raises(client.exceptions.GoneException):
            client.get_connection(ConnectionId=gone)


def test_post_to_connection_sends_one_text_message(gateway: WebSocketGateway) -> None:
    with connect(gateway.url, additional_headers=GOOD, open_timeout=10) as ws:
        target = connection_id(ws)
        with management(gateway) as client:
            client.post_to_connection(ConnectionId=target, Data=b'{"type": "pong"}')
            assert ws.recv(timeout=10) == '{"type": "pong"}'
            with pytest.raises(client.exceptions.PayloadTooLargeException):
                client.post_to_connection(ConnectionId=target, Data=b"x" * (128 * 1024 + 1))


def test_get_connection_describes_it(gateway: WebSocketGateway) -> None:
    with connect(gateway.url, additional_headers={**GOOD, "User-Agent": "chat-page/1"}, open_timeout=10) as ws:
        target = connection_id(ws)
        with management(gateway) as client:
            info = client.get_connection(ConnectionId=target)
    assert info["Identity"] == {"SourceIp": "127.0.0.1", "UserAgent": "chat-page/1"}
    assert info["ConnectedAt"] <= info["LastActiveAt"]


def test_delete_connection_closes_the_client(gateway: WebSocketGateway, recorder: Recorder) -> None:
    with connect(gateway.url, additional_headers=GOOD, open_timeout=10) as ws:
        target = connection_id(ws)
        with management(gateway) as client:
            client.delete_connection(ConnectionId=target)
            assert closed_code(ws) == 1000
            with pytest.raises(client.exceptions.GoneException):
                client.delete_connection(ConnectionId=target)
    event = recorder.wait_for("WsDisconnectFunction", lambda e: e["requestContext"]["connectionId"] == target)
    assert event["requestContext"]["disconnectStatusCode"] == 1000


# ------------------------------------------------------------------ Lambda Invoke


def test_lambda_invoke_event_answers_202_and_runs_the_function(gateway: WebSocketGateway) -> None:
    client = boto3.client(
        "lambda",
        endpoint_url=gateway.lambda_url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    with contextlib.closing(client), connect(gateway.url, additional_headers=GOOD, open_timeout=10) as ws:
        target = connection_id(ws)
        for name in (
            "seekless-generator",
            "GeneratorFunction",
            "arn:aws:lambda:us-east-1:000000000000:function:seekless-generator",
        ):
            payload = json.dumps({"connection_id": target, "text": name}).encode()
            answer = client.invoke(FunctionName=name, InvocationType="Event", Payload=payload)
            assert answer["StatusCode"] == 202
            assert receive(ws) == {"generated": name, "function": "seekless-generator"}

        answer = client.invoke(
            FunctionName="seekless-generator", Payload=json.dumps({"connection_id": target, "text": "s"})
        )
        assert answer["StatusCode"] == 200 and answer["ExecutedVersion"] == "$LATEST"
        assert json.loads(answer["Payload"].read()) == {"echo": "s"}
        assert receive(ws)["generated"] == "s"

        with pytest.raises(client.exceptions.ResourceNotFoundException):
            client.invoke(FunctionName="NoSuchFunction", InvocationType="Event", Payload=b"{}")


# ------------------------------------------------------------------ limits


def test_a_message_over_128_kb_closes_with_1009(gateway: WebSocketGateway, recorder: Recorder) -> None:
    with connect(gateway.url, additional_headers=GOOD, open_timeout=10) as ws:
        ws.send(iter(["x" * 30_000] * 4))  # 120 KB in frames under 32 KB: accepted
        assert receive(ws)["size"] == 120_000
        target = connection_id(ws)
        with contextlib.suppress(ConnectionClosed):
            ws.send(iter(["x" * 30_000] * 5))  # 150 KB
        assert closed_code(ws) == 1009
    event = recorder.wait_for("WsDisconnectFunction", lambda e: e["requestContext"]["connectionId"] == target)
    assert event["requestContext"]["disconnectStatusCode"] == 1009


def test_a_frame_over_32_kb_closes_with_1009(gateway: WebSocketGateway) -> None:
    with connect(gateway.url, additional_headers=GOOD, open_timeout=10) as ws:
        with contextlib.suppress(ConnectionClosed):
            ws.send("x" * (32 * 1024 + 1))
        assert closed_code(ws) == 1009


def test_an_idle_connection_is_closed_going_away(
    make_gateway: Callable[..., WebSocketGateway], recorder: Recorder
) -> None:
    gateway = make_gateway(limits=WebSocketLimits(idle_timeout=0.3))
    with connect(gateway.url, additional_headers=GOOD, open_timeout=10) as ws:
        assert closed_code(ws) == 1001
    event = recorder.wait_for("WsDisconnectFunction", lambda e: True)
    assert event["requestContext"]["disconnectStatusCode"] == 1001
    assert event["requestContext"]["disconnectReason"] == "Going away"


def test_a_connection_ends_at_its_maximum_duration(make_gateway: Callable[..., WebSocketGateway]) -> None:
    gateway = make_gateway(limits=WebSocketLimits(idle_timeout=60, max_connection_seconds=0.5))
    with connect(gateway.url, additional_headers=GOOD, open_timeout=10) as ws:
        assert closed_code(ws) == 1001


# ------------------------------------------------------------------ $disconnect


def test_disconnect_runs_when_the_client_closes(gateway: WebSocketGateway, recorder: Recorder) -> None:
    with connect(gateway.url, additional_headers=GOOD, open_timeout=10) as ws:
        target = connection_id(ws)
        ws.close(1000, "bye")
    event = recorder.wait_for("WsDisconnectFunction", lambda e: e["requestContext"]["connectionId"] == target)
    context = event["requestContext"]
    assert context["eventType"] == "DISCONNECT" and context["routeKey"] == "$disconnect"
    assert (context["disconnectStatusCode"], context["disconnectReason"]) == (1000, "bye")
    assert context["authorizer"]["tenant_id"] == "tenant-a"


def test_stopping_the_gateway_closes_connections_and_runs_disconnect(
    gateway: WebSocketGateway, recorder: Recorder
) -> None:
    with connect(gateway.url, additional_headers=GOOD, open_timeout=10) as ws:
        target = connection_id(ws)
        gateway.stop()
        assert closed_code(ws) == 1001
    (event,) = recorder.events("WsDisconnectFunction")
    assert event["requestContext"]["connectionId"] == target
    assert event["requestContext"]["disconnectStatusCode"] == 1001


# ------------------------------------------------------------------ logs


def test_connect_urls_are_never_logged_with_their_query_string(
    gateway: WebSocketGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with connect(f"{gateway.url}/chat?ticket=t1", open_timeout=10) as ws:
        connection_id(ws)
    gateway.stop()

    server_side = [r for r in caplog.records if not r.name.startswith("websockets.client")]
    text = "\n".join(r.getMessage() for r in server_side)
    assert "/chat?<redacted>" in text  # websockets' debug request line, cut
    assert "ticket=t1" not in text
