"""Contract tier: the official ``openai`` SDK and plain httpx against the running local stack.

One ``LocalStack`` serves the whole package: moto in a child process, a redis-server on a free port,
the DeepSeek emulator, tables from template.yaml and the REST function behind the local API Gateway
proxy. Every test starts from a clean upstream (emulator counters, faults and knobs reset) and a clean
Redis (no cached answers, a closed circuit breaker), so tests can count upstream calls exactly.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import httpx
import httpx2  # the transport family the openai SDK is built on
import openai
import pytest
from websockets.sync.client import ClientConnection, connect

from seekless_local.stack import LocalStack
from tests.stacks import clean_upstream, emulated_stack

# Loopback sockets without Nagle: otherwise every small request/response pair can stall ~40 ms.
_NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
HTTP_TIMEOUT = 30.0


def _transport() -> httpx.HTTPTransport:
    return httpx.HTTPTransport(socket_options=_NODELAY)


@pytest.fixture(scope="package")
def stack() -> Iterator[LocalStack]:
    with emulated_stack() as running:
        yield running


@pytest.fixture(autouse=True)
def _clean_upstream(stack: LocalStack) -> Iterator[None]:
    with clean_upstream(stack):
        yield


@pytest.fixture
def ws(stack: LocalStack) -> Iterator[ClientConnection]:
    """A WebSocket connection with the dev key."""
    with connect(stack.ws_url, additional_headers={"Authorization": f"Bearer {stack.dev_api_key}"}) as socket:
        yield socket


@pytest.fixture
def base_url(stack: LocalStack) -> str:
    return stack.rest_url + "/v1"


def make_client(stack: LocalStack, api_key: str, **options: Any) -> openai.OpenAI:
    options.setdefault("max_retries", 0)
    return openai.OpenAI(
        base_url=stack.rest_url + "/v1",
        api_key=api_key,
        timeout=HTTP_TIMEOUT,
        http_client=openai.DefaultHttpxClient(transport=httpx2.HTTPTransport(socket_options=_NODELAY)),
        **options,
    )


@pytest.fixture
def client(stack: LocalStack) -> Iterator[openai.OpenAI]:
    sdk = make_client(stack, stack.dev_api_key)
    yield sdk
    sdk.close()


def make_http(stack: LocalStack, api_key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return httpx.Client(base_url=stack.rest_url, headers=headers, timeout=HTTP_TIMEOUT, transport=_transport())


@pytest.fixture
def http(stack: LocalStack) -> Iterator[httpx.Client]:
    """Plain httpx with the dev key."""
    with make_http(stack, stack.dev_api_key) as session:
        yield session


@pytest.fixture
def anonymous_http(stack: LocalStack) -> Iterator[httpx.Client]:
    with make_http(stack, None) as session:
        yield session


@pytest.fixture
def new_tenant_key(stack: LocalStack) -> Callable[[str], str]:
    """Seed an API key for a tenant of the caller's choosing and return the key."""
    from seekless.adapters.dynamodb import DynamoKeyStore
    from seekless.auth import hash_key

    def seed(tenant_id: str) -> str:
        key = f"sk-seekless-test-{uuid.uuid4().hex}"
        dynamodb = boto3.client("dynamodb", endpoint_url=stack.moto_url)
        DynamoKeyStore(stack.tables["ApiKeysTable"], client=dynamodb).put(
            hash_key(key), tenant_id=tenant_id, key_id=f"key-{uuid.uuid4().hex[:8]}"
        )
        return key

    return seed


@pytest.fixture
def other_http(stack: LocalStack, new_tenant_key: Callable[[str], str]) -> Iterator[httpx.Client]:
    """Plain httpx with a key of tenant "other"."""
    with make_http(stack, new_tenant_key("other")) as session:
        yield session


@pytest.fixture
def other_client(stack: LocalStack, new_tenant_key: Callable[[str], str]) -> Iterator[openai.OpenAI]:
    sdk = make_client(stack, new_tenant_key("other"))
    yield sdk
    sdk.close()


def unique_messages(text: str = "Say something") -> list[dict[str, Any]]:
    """A conversation no other test sends, so answers never come from another test's cache entry."""
    return [{"role": "user", "content": f"{text} ({uuid.uuid4().hex})"}]


def upstream_calls(stack: LocalStack) -> int:
    return int(stack.emulator.stats()["calls"])


def upstream_requests(stack: LocalStack) -> list[dict[str, Any]]:
    return list(stack.emulator.stats()["requests"])


def assert_openai_error_schema(body: Any) -> dict[str, Any]:
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert set(error) >= {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    return error
