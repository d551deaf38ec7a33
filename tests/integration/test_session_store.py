"""Conversations in DynamoDB (moto, tables from template.yaml): one item per message, tenant-scoped keys,
conditional appends, TTL filtered on read."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from seekless.adapters.dynamodb import DynamoSessionStore
from seekless.errors import NotFound

from .conftest import TABLES


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(aws: Any, clock: Clock) -> DynamoSessionStore:
    return DynamoSessionStore(TABLES["SessionsTable"], client=aws, clock=clock, ttl_days=1)


def turn(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}, {"role": "assistant", "content": "re: " + text}]


def test_created_session_reads_back_for_its_tenant_only(store: DynamoSessionStore) -> None:
    session = store.create("dev", title="plans", metadata={"app": "web"})
    assert store.get("dev", session.id) == session
    with pytest.raises(NotFound):
        store.get("other", session.id)


def test_each_message_is_its_own_item_in_order(store: DynamoSessionStore, aws: Any) -> None:
    session = store.create("dev", title=None, metadata={})
    store.append("dev", session.id, turn("one"))
    store.append("dev", session.id, turn("two"))
    messages = store.messages("dev", session.id).items
    assert [m.content for m in messages] == ["one", "re: one", "two", "re: two"]
    assert [m.seq for m in messages] == [0, 1, 2, 3]
    items = aws.scan(TableName=TABLES["SessionsTable"])["Items"]
    assert len(items) == 5  # the metadata item and four messages
    assert store.get("dev", session.id).message_count == 4


def test_messages_page_with_after(store: DynamoSessionStore) -> None:
    session = store.create("dev", title=None, metadata={})
    for i in range(5):
        store.append("dev", session.id, turn(str(i)))
    first = store.messages("dev", session.id, limit=4)
    assert first.has_more and [m.seq for m in first.items] == [0, 1, 2, 3]
    rest = store.messages("dev", session.id, limit=100, after=first.items[-1].seq)
    assert not rest.has_more and [m.seq for m in rest.items] == [4, 5, 6, 7, 8, 9]


def test_list_is_newest_first_and_pages(store: DynamoSessionStore, clock: Clock) -> None:
    ids = []
    for _ in range(5):
        clock.now += 10
        ids.append(store.create("dev", title=None, metadata={}).id)
    store.create("other", title=None, metadata={})
    first = store.list_sessions("dev", limit=3, after=None)
    assert [s.id for s in first.items] == ids[::-1][:3] and first.has_more
    second = store.list_sessions("dev", limit=3, after=first.items[-1].id)
    assert [s.id for s in second.items] == ids[::-1][3:] and not second.has_more


class AtomicCalls:
    """moto applies a transaction by copying and restoring table state, so two threads inside moto at
    once can undo each other's writes, which real DynamoDB never does. Making each single API call
    atomic restores DynamoDB's guarantee while leaving the race that matters (read, then conditional
    write) wide open."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return method(*args, **kwargs)

        return call


def test_concurrent_turns_both_land(aws: Any, clock: Clock) -> None:
    store = DynamoSessionStore(TABLES["SessionsTable"], client=AtomicCalls(aws), clock=clock, ttl_days=1)
    session = store.create("dev", title=None, metadata={})
    barrier = threading.Barrier(4)

    def write(n: int) -> None:
        barrier.wait(timeout=10)
        store.append("dev", session.id, turn(f"t{n}"))

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    messages = store.messages("dev", session.id).items
    assert len(messages) == 8 and [m.seq for m in messages] == list(range(8))
    # Each turn's two messages stay together: a user message is always followed by its reply.
    for user, reply in zip(messages[::2], messages[1::2], strict=True):
        assert reply.content == "re: " + (user.content or "")


def test_stale_append_is_retried_after_the_winner(store: DynamoSessionStore, aws: Any, clock: Clock) -> None:
    """Simulate losing the race: another writer moves the counter between our read and our write."""
    session = store.create("dev", title=None, metadata={})
    real = aws.transact_write_items
    raced = []

    def racing(**kwargs: Any) -> Any:
        if not raced:
            raced.append(True)
            DynamoSessionStore(TABLES["SessionsTable"], client=aws, clock=clock).append(
                "dev", session.id, turn("winner")
            )
        return real(**kwargs)

    aws.transact_write_items = racing
    store.append("dev", session.id, turn("loser"))
    assert [m.content for m in store.messages("dev", session.id).items] == [
        "winner",
        "re: winner",
        "loser",
        "re: loser",
    ]


def test_expired_session_reads_as_missing(store: DynamoSessionStore, clock: Clock) -> None:
    session = store.create("dev", title=None, metadata={})
    clock.now += 2 * 86_400  # past the one-day TTL; DynamoDB may not have deleted it yet
    with pytest.raises(NotFound):
        store.get("dev", session.id)
    assert store.list_sessions("dev", limit=10, after=None).items == []


def test_delete_removes_every_item(store: DynamoSessionStore, aws: Any) -> None:
    session = store.create("dev", title=None, metadata={})
    for i in range(20):
        store.append("dev", session.id, turn(str(i)))
    with pytest.raises(NotFound):
        store.delete("other", session.id)
    store.delete("dev", session.id)
    with pytest.raises(NotFound):
        store.get("dev", session.id)
    assert aws.scan(TableName=TABLES["SessionsTable"])["Count"] == 0


def test_tool_turns_keep_reasoning_for_the_next_request(store: DynamoSessionStore) -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
    session = store.create("dev", title=None, metadata={})
    store.append(
        "dev",
        session.id,
        [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": "", "tool_calls": [call], "reasoning_content": "need a tool"},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        ],
    )
    upstream = [m.to_upstream() for m in store.messages("dev", session.id).items]
    assert upstream[1]["reasoning_content"] == "need a tool" and upstream[1]["tool_calls"] == [call]
    assert upstream[2]["tool_call_id"] == "c1"
