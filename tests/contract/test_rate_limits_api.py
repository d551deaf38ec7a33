"""Per-key limits through the running stack: over the requests-per-minute limit the OpenAI SDK gets a
429 with Retry-After and a WebSocket client an error frame, and DeepSeek is never called for them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import boto3
import openai
import pytest
from websockets.sync.client import connect

from seekless.adapters.dynamodb import DynamoKeyStore
from seekless.auth import hash_key
from seekless.models import KeyLimits
from seekless_local.stack import LocalStack
from tests.contract.conftest import make_client, upstream_calls
from tests.contract.ws_client import chat, request_id, until


@pytest.fixture
def limited_key(stack: LocalStack) -> Iterator[str]:
    """A fresh key (its own counters) allowed two requests per minute."""
    key = "sk-seekless-limited-" + uuid.uuid4().hex
    store = DynamoKeyStore(stack.tables["ApiKeysTable"], client=boto3.client("dynamodb", endpoint_url=stack.moto_url))
    store.put(hash_key(key), tenant_id="dev", key_id="key_" + uuid.uuid4().hex[:12], limits=KeyLimits(rpm=2))
    yield key


def test_the_third_request_in_a_minute_is_a_429_with_retry_after_and_no_upstream_call(
    stack: LocalStack, limited_key: str
) -> None:
    client = make_client(stack, limited_key)
    messages = [{"role": "user", "content": f"hi {uuid.uuid4().hex}"}]
    try:
        for _ in range(2):
            client.chat.completions.create(model="deepseek-flash", messages=messages, max_tokens=8)  # type: ignore[arg-type]
        calls = upstream_calls(stack)
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(model="deepseek-flash", messages=messages, max_tokens=8)  # type: ignore[arg-type]
    finally:
        client.close()
    assert upstream_calls(stack) == calls
    response = refused.value.response
    assert 1 <= int(response.headers["retry-after"]) <= 60
    assert response.json()["error"]["code"] == "rate_limit_requests"
    assert response.json()["error"]["type"] == "rate_limit_error"


def test_a_websocket_chat_over_the_limit_ends_with_an_error_frame(stack: LocalStack, limited_key: str) -> None:
    with connect(stack.ws_url, additional_headers={"Authorization": f"Bearer {limited_key}"}) as socket:
        for _ in range(2):
            rid = request_id("ok")
            chat(socket, rid)
            assert until(socket, rid)[-1]["type"] == "done"
        calls = upstream_calls(stack)
        rid = request_id("over")
        chat(socket, rid)
        frames = until(socket, rid)
    assert frames[-1]["type"] == "error" and frames[-1]["code"] == "rate_limit_requests", frames[-1]
    assert upstream_calls(stack) == calls


def test_a_spent_daily_budget_is_a_429_until_the_day_turns_and_makes_no_upstream_call(stack: LocalStack) -> None:
    key = "sk-seekless-budget-" + uuid.uuid4().hex
    store = DynamoKeyStore(stack.tables["ApiKeysTable"], client=boto3.client("dynamodb", endpoint_url=stack.moto_url))
    store.put(hash_key(key), tenant_id="dev", key_id="key_" + uuid.uuid4().hex[:12], limits=KeyLimits(daily_tokens=120))
    client = make_client(stack, key)
    messages = [{"role": "user", "content": "hi"}]
    try:
        # Reserves about 100 (prompt estimate + max_tokens 90), settles to the ~30 really used.
        client.chat.completions.create(model="deepseek-flash", messages=messages, max_tokens=90)  # type: ignore[arg-type]
        calls = upstream_calls(stack)
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(model="deepseek-flash", messages=messages, max_tokens=90)  # type: ignore[arg-type]
    finally:
        client.close()
    assert upstream_calls(stack) == calls
    assert refused.value.response.json()["error"]["code"] == "daily_budget_exhausted"
    assert 0 < int(refused.value.response.headers["retry-after"]) <= 86_400
