"""The REST app's edges, in process: validation and errors in OpenAI's schema, SSE framing, headers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

import httpx
import pytest
from fastapi import FastAPI, Header

from seekless.api import deps
from seekless.api.app import create_app
from seekless.audit import Auditor
from seekless.chat import ChatService
from seekless.config import Settings
from seekless.errors import AuthenticationFailed, UpstreamUnavailable
from seekless.models import Principal
from seekless.telemetry import RecordingTelemetry
from tests.fakes import FakeCache, FakeChatModel, FakeSessions, RecordingUsage

CHAT = {"model": "deepseek-flash", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture
def model() -> FakeChatModel:
    return FakeChatModel()


@pytest.fixture
def telemetry() -> RecordingTelemetry:
    return RecordingTelemetry()


@pytest.fixture
def usage() -> RecordingUsage:
    return RecordingUsage()


@pytest.fixture
def app(model: FakeChatModel, telemetry: RecordingTelemetry, usage: RecordingUsage) -> FastAPI:
    settings = Settings(max_body_bytes=4096)
    auditor = Auditor(usage=usage)
    app = create_app(settings=lambda: settings, telemetry=lambda: telemetry, auditor=lambda: auditor)
    service = ChatService(settings=settings, model=model, cache=FakeCache(), sessions=FakeSessions())

    def authenticate(authorization: Annotated[str | None, Header()] = None) -> Principal:
        if authorization != "Bearer good":
            raise AuthenticationFailed("Incorrect API key provided.")
        return Principal(tenant_id="dev", key_id="k")

    app.dependency_overrides[deps.authenticate] = authenticate
    app.dependency_overrides[deps.settings] = lambda: settings
    app.dependency_overrides[deps.chat_service] = lambda: service
    return app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://api", headers={"Authorization": "Bearer good"}
    ) as c:
        yield c


def assert_openai_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    return error


async def test_health_needs_no_key(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz", headers={"Authorization": ""})
    assert response.json() == {"status": "ok"}


async def test_missing_key_is_401(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/models", headers={"Authorization": "Bearer bad"})
    assert assert_openai_error(response, 401)["type"] == "authentication_error"


async def test_malformed_json_is_400(client: httpx.AsyncClient, model: FakeChatModel) -> None:
    response = await client.post(
        "/v1/chat/completions", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert assert_openai_error(response, 400)["code"] == "invalid_json"
    assert model.calls == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({**CHAT, "messages": []}, "messages"),
        ({"messages": CHAT["messages"]}, "model"),
        ({**CHAT, "messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
        ({**CHAT, "n": 2}, "n"),
        ({**CHAT, "temperature": 3}, "temperature"),
        ({**CHAT, "surprise": True}, "surprise"),
    ],
)
async def test_invalid_request_is_400_naming_the_param(
    client: httpx.AsyncClient, model: FakeChatModel, body: dict, param: str
) -> None:
    error = assert_openai_error(await client.post("/v1/chat/completions", json=body), 400)
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert model.calls == []


@pytest.mark.parametrize(
    ("method", "url", "options", "param"),
    [
        ("POST", "/v1/chat/completions", {"json": CHAT, "headers": {"X-Session-Id": "a b"}}, "header.x-session-id"),
        ("POST", "/v1/chat/completions", {"json": {**CHAT, "session_id": "s" * 129}}, "session_id"),
        ("GET", "/v1/sessions", {"params": {"after": "s" * 129}}, "query.after"),
        ("GET", "/v1/sessions/" + "s" * 129, {}, "path.session_id"),
        ("POST", "/v1/sessions", {"json": {"metadata": {"k" * 65: "v"}}}, "metadata.kkk"),
        ("POST", "/v1/sessions", {"json": {"metadata": {f"k{i}": "v" for i in range(17)}}}, "metadata"),
    ],
)
async def test_ids_cursors_and_metadata_over_their_limits_are_400(
    app: FastAPI, client: httpx.AsyncClient, model: FakeChatModel, method: str, url: str, options: dict, param: str
) -> None:
    app.dependency_overrides[deps.session_store] = FakeSessions
    error = assert_openai_error(await client.request(method, url, **options), 400)
    assert error["param"].startswith(param)
    assert model.calls == []


async def test_body_over_the_cap_is_413(client: httpx.AsyncClient, model: FakeChatModel) -> None:
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]}
    assert assert_openai_error(await client.post("/v1/chat/completions", json=big), 413)["code"] == "request_too_large"
    assert model.calls == []


async def test_unknown_route_is_404_in_openai_shape(client: httpx.AsyncClient) -> None:
    assert_openai_error(await client.get("/v1/nothing-here"), 404)


async def test_upstream_unavailable_is_503(client: httpx.AsyncClient, model: FakeChatModel) -> None:
    model.fail_with = UpstreamUnavailable("DeepSeek is unavailable.", retry_after=3)
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert assert_openai_error(response, 503)["type"] == "api_error"
    assert response.headers["retry-after"] == "3"


async def test_completion_carries_cache_header(client: httpx.AsyncClient) -> None:
    first = await client.post("/v1/chat/completions", json={**CHAT, "temperature": 0})
    second = await client.post("/v1/chat/completions", json={**CHAT, "temperature": 0})
    assert (first.headers["x-seekless-cache"], second.headers["x-seekless-cache"]) == ("miss", "hit")
    assert second.json()["choices"][0]["message"]["content"] == "echo: hello"
    assert first.json()["object"] == "chat.completion"


async def test_stream_is_sse_ending_in_done(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/chat/completions", json={**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line.removeprefix("data: ") for line in response.text.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    reasoning = "".join(c["choices"][0]["delta"].get("reasoning_content", "") for c in chunks if c["choices"])
    assert (text, reasoning) == ("echo: hello", "thinking...")
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == 10
    assert len({c["id"] for c in chunks}) == 1


async def test_mid_stream_failure_ends_with_an_error_event(client: httpx.AsyncClient, model: FakeChatModel) -> None:
    model.fail_with, model.fail_after_deltas = UpstreamUnavailable("connection reset"), 1
    response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    events = [line.removeprefix("data: ") for line in response.text.split("\n\n") if line]
    assert "[DONE]" not in events
    assert json.loads(events[-1])["error"]["code"] == "upstream_unavailable"


async def test_openapi_lists_the_routes(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert {"/v1/chat/completions", "/v1/models", "/v1/sessions", "/v1/sessions/{session_id}"} <= set(paths)


async def test_every_request_is_counted_with_its_outcome(
    client: httpx.AsyncClient, telemetry: RecordingTelemetry
) -> None:
    await client.get("/v1/models")
    await client.get("/v1/models", headers={"Authorization": "Bearer bad"})
    assert telemetry.counts == {"Requests": 2, "ClientErrors": 1}


async def test_openapi_references_all_resolve(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    refs: list[str] = []

    def collect(node: object) -> None:
        if isinstance(node, dict):
            refs.extend(v for k, v in node.items() if k == "$ref")
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(schema)
    names = set(schema["components"]["schemas"])
    assert refs and {ref.removeprefix("#/components/schemas/") for ref in refs} <= names
    body = schema["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/ChatCompletionRequest"}
