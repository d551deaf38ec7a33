"""WebSocket adapters against real services: the request log and tickets on Redis, connections on
DynamoDB (moto), and the management API's 410 through botocore's Stubber (moto never raises it)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import boto3
import pytest
import redis as sync_redis
from botocore.stub import Stubber
from redis.asyncio import Redis

from seekless.adapters.apigw import ApiGatewayNotifier
from seekless.adapters.connections import DynamoConnectionStore
from seekless.adapters.tickets import RedisTicketStore
from seekless.adapters.ws_buffer import RedisRequestLog
from seekless.models import Principal


@pytest.fixture
async def log(redis_url: str) -> AsyncIterator[RedisRequestLog]:
    client = Redis.from_url(redis_url)
    yield RedisRequestLog(client, ttl_seconds=60)
    await client.aclose()


@pytest.fixture
def tickets(redis_url: str) -> Iterator[RedisTicketStore]:
    client = sync_redis.Redis.from_url(redis_url)
    yield RedisTicketStore(client, ttl_seconds=60)
    client.close()


async def test_frames_replay_after_a_seq_and_follow_the_new_connection(log: RedisRequestLog) -> None:
    assert await log.claim("dev", "r1", "c1")
    for seq in range(1, 6):
        target, cancelled = await log.push("dev", "r1", json.dumps({"seq": seq}).encode())
        assert (target, cancelled) == ("c1", False)
    replay = await log.resume("dev", "r1", "c2", after_seq=3)
    assert [json.loads(f)["seq"] for f in replay or []] == [4, 5]
    assert (await log.push("dev", "r1", b"{}"))[0] == "c2"


async def test_request_ids_are_single_use_and_tenant_scoped(log: RedisRequestLog) -> None:
    assert await log.claim("dev", "r1", "c1")
    assert not await log.claim("dev", "r1", "c9")
    assert await log.claim("other", "r1", "c2")  # another tenant's namespace
    assert await log.resume("intruder", "r1", "c3", 0) is None
    assert not await log.cancel("intruder", "r1")


async def test_cancel_is_seen_by_the_next_push(log: RedisRequestLog) -> None:
    await log.claim("dev", "r1", "c1")
    assert await log.cancel("dev", "r1")
    assert (await log.push("dev", "r1", b"{}"))[1] is True
    assert (await log.state("dev", "r1")) == ("c1", True)


async def test_request_keys_share_one_hash_tag(log: RedisRequestLog, redis_url: str) -> None:
    await log.claim("dev", "r1", "c1")
    await log.push("dev", "r1", b"{}")
    client = sync_redis.Redis.from_url(redis_url)
    try:
        keys = [k.decode() for k in client.keys("seekless:ws:*")]
    finally:
        client.close()
    assert len(keys) == 2 and {k[k.index("{") : k.index("}") + 1] for k in keys} == {"{dev:r1}"}


def test_a_ticket_works_once_and_is_stored_only_hashed(tickets: RedisTicketStore, redis_url: str) -> None:
    ticket = tickets.issue(Principal(tenant_id="dev", key_id="k1"))
    client = sync_redis.Redis.from_url(redis_url)
    try:
        stored = [(k, client.get(k)) for k in client.keys("*")]
    finally:
        client.close()
    assert stored and not any(ticket.encode() in k or ticket.encode() in (v or b"") for k, v in stored)
    assert tickets.redeem(ticket) == Principal(tenant_id="dev", key_id="k1")
    assert tickets.redeem(ticket) is None
    assert tickets.redeem("tkt_forged") is None and tickets.redeem("garbage") is None


def test_connections_round_trip_and_expire(aws: Any) -> None:
    now = [1_700_000_000.0]
    store = DynamoConnectionStore("seekless-connections", client=aws, clock=lambda: now[0])
    store.put("c1=", tenant_id="dev", key_id="k1")
    found = store.get("c1=")
    assert found is not None and (found.tenant_id, found.key_id) == ("dev", "k1")
    now[0] += 2 * 3600 + 1  # past API Gateway's two-hour cap: TTL may not have run yet
    assert store.get("c1=") is None
    store.delete("c1=")
    assert aws.get_item(TableName="seekless-connections", Key={"connection_id": {"S": "c1="}}).get("Item") is None


def test_post_to_a_gone_connection_reports_false() -> None:
    client = boto3.client(
        "apigatewaymanagementapi",
        endpoint_url="https://example.execute-api.us-east-1.amazonaws.com/prod",
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    with Stubber(client) as stub:
        stub.add_response("post_to_connection", {}, {"ConnectionId": "live=", "Data": b"{}"})
        stub.add_client_error("post_to_connection", service_error_code="GoneException", http_status_code=410)
        notifier = ApiGatewayNotifier("unused", client=client)
        assert notifier.post("live=", b"{}") is True
        assert notifier.post("gone=", b"{}") is False
        stub.assert_no_pending_responses()


async def test_a_request_redis_lost_is_claimed_again_for_the_connection_its_generator_names(
    log: RedisRequestLog, redis_url: str
) -> None:
    assert await log.claim("dev", "r1", "c1")
    assert await log.push("dev", "r1", b'{"seq": 1}', connection_id="c1") == ("c1", False)
    client = sync_redis.Redis.from_url(redis_url)
    try:
        client.flushdb()  # Redis restarted empty, mid-request
    finally:
        client.close()
    assert await log.push("dev", "r1", b'{"seq": 2}', connection_id="c1") == ("c1", False)
    assert await log.state("dev", "r1") == ("c1", False)
    assert await log.push("dev", "r2", b"{}") == (None, False)  # no connection named: nothing claimed
