"""Secrets stay secret: after a full run of chat, stream (REST and WebSocket), job and batch through the
running local stack, a canary DeepSeek key, a canary API key and the WebSocket ticket appear in no log
line (every logger at DEBUG, and everything any thread wrote to stdout/stderr), no Redis key or value,
and no item of any table."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest
import redis
from websockets.sync.client import connect

from seekless.adapters.dynamodb import DynamoKeyStore
from seekless.auth import hash_key
from seekless_local import client_cli
from seekless_local.stack import LocalStack
from tests.contract.ws_client import chat, request_id, until
from tests.e2e.conftest import CANARY_DEEPSEEK_KEY
from tests.waiting import wait_for

CANARY_API_KEY = "sk-seekless-canary-api-key-9d2c47e1b8a0"
CLIENT_LOGGERS = ("websockets.client",)
CHAT = {"model": "deepseek-flash", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 32}


class Everything(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(CLIENT_LOGGERS):
            return  # this test's own WebSocket client, which must know its ticket
        # The message, its arguments and every extra field (Powertools puts structured data there).
        self.lines.append(f"{record.getMessage()} {record.__dict__!r}")


@pytest.fixture
def all_logs() -> Iterator[Everything]:
    handler = Everything()
    watched = [logging.getLogger(), logging.getLogger("seekless")]
    levels = [logger.level for logger in watched]
    for logger in watched:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    yield handler
    for logger, level in zip(watched, levels, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)


def full_run(stack: LocalStack, tmp_path: Path) -> str:
    """Chat, stream, WebSocket stream, job and batch under the canary key; returns the ticket used."""
    DynamoKeyStore(stack.tables["ApiKeysTable"], client=boto3.client("dynamodb", endpoint_url=stack.moto_url)).put(
        hash_key(CANARY_API_KEY), tenant_id="canary", key_id="canary"
    )
    auth = {"Authorization": f"Bearer {CANARY_API_KEY}"}
    with httpx.Client(base_url=stack.rest_url, headers=auth, timeout=30) as http:
        assert http.post("/v1/chat/completions", json=CHAT).status_code == 200
        streamed = http.post("/v1/chat/completions", json={**CHAT, "stream": True})
        assert streamed.text.endswith("data: [DONE]\n\n")
        ticket = http.post("/v1/ws-tickets").json()["ticket"]
        with connect(f"{stack.ws_url}/?ticket={ticket}") as socket:
            rid = request_id()
            chat(socket, rid)
            assert until(socket, rid)[-1]["type"] == "done"
        job = http.post("/v1/jobs", json=CHAT).json()
        finished = wait_for(
            lambda: (j := http.get(f"/v1/jobs/{job['id']}").json())["status"] in ("succeeded", "failed") and j,
            timeout=60,
            what="the job to finish",
        )
        assert finished["status"] == "succeeded", finished
    lines = [
        json.dumps({"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions", "body": CHAT})
        for i in range(3)
    ]
    source = tmp_path / "canary.jsonl"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    options = ["--url", stack.rest_url + "/v1", "--ws-url", stack.ws_url, "--api-key", CANARY_API_KEY]
    assert client_cli.main(["batch", "submit", str(source), "--wait", "--poll", "0.3", "--json", *options]) == 0
    return ticket


def redis_contents(url: str) -> list[str]:
    client = redis.Redis.from_url(url)
    found: list[str] = []
    try:
        for key in client.scan_iter(count=1000):
            found.append(repr(key))
            kind = client.type(key)
            if kind == b"string":
                found.append(repr(client.get(key)))
            elif kind == b"hash":
                found.append(repr(client.hgetall(key)))
            elif kind == b"list":
                found.append(repr(client.lrange(key, 0, -1)))
            elif kind == b"zset":
                found.append(repr(client.zrange(key, 0, -1, withscores=True)))
            elif kind == b"set":
                found.append(repr(client.smembers(key)))
            elif kind == b"stream":
                found.append(repr(client.xrange(key)))
    finally:
        client.close()
    return found


def table_items(stack: LocalStack) -> list[str]:
    dynamodb = boto3.client("dynamodb", endpoint_url=stack.moto_url)
    items: list[str] = []
    for table in stack.tables.values():
        for page in dynamodb.get_paginator("scan").paginate(TableName=table):
            items += [json.dumps(item) for item in page["Items"]]
    return items


def test_no_secret_reaches_a_log_line_a_redis_key_or_a_table_item(
    stack: LocalStack, tmp_path: Path, all_logs: Everything, capfd: pytest.CaptureFixture[str]
) -> None:
    ticket = full_run(stack, tmp_path)
    out, err = capfd.readouterr()
    assert stack.redis is not None
    places: dict[str, list[str]] = {
        "log records": all_logs.lines,
        "stdout/stderr": [text for text in (out, err) if text],
        "redis": redis_contents(stack.redis.url),
        "tables": table_items(stack),
    }
    assert all(places.values()), {name: len(found) for name, found in places.items()}  # each place was looked at
    assert any("audit" in line for line in all_logs.lines)  # the DEBUG capture saw the request path's logs
    secrets = {"DeepSeek key": CANARY_DEEPSEEK_KEY, "API key": CANARY_API_KEY, "ticket": ticket}
    leaks = [
        (secret, place)
        for secret, value in secrets.items()
        for place, texts in places.items()
        if any(value in text for text in texts)
    ]
    assert leaks == []
    # The run really used them: the emulator was called, the key hash is stored (never the key).
    assert stack.emulator is not None and stack.emulator.stats()["calls"] >= 7
    assert any(hash_key(CANARY_API_KEY) in item for item in places["tables"])
