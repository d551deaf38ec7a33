"""API keys in DynamoDB (moto, tables from template.yaml): created with their limits, listed by tenant
through the by_tenant index, found by id through the pointer item, revoked, and rotated with a grace
period that lookups honour (an injected clock, never a sleep)."""

from __future__ import annotations

from typing import Any

import pytest

from seekless.adapters.dynamodb import DynamoKeyStore
from seekless.auth import Authenticator, hash_key
from seekless.errors import AuthenticationFailed, Conflict, NotFound
from seekless.models import KeyLimits

from .conftest import TABLES

T0 = 1_700_000_000.0
LIMITS = KeyLimits(rpm=60, tpm=100_000, daily_tokens=2_000_000, monthly_tokens=50_000_000)


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(aws: Any, clock: Clock) -> DynamoKeyStore:
    return DynamoKeyStore(TABLES["ApiKeysTable"], client=aws, clock=clock)


def make(store: DynamoKeyStore, name: str, *, tenant: str = "acme", limits: KeyLimits = LIMITS) -> str:
    """Creates key ``name`` (hash = hash of the name, id = key_<name>); returns its hash."""
    store.create(hash_key(name), tenant_id=tenant, key_id=f"key_{name}", name=name, limits=limits)
    return hash_key(name)


def test_a_created_key_looks_up_by_hash_with_its_tenant_limits_and_name(store: DynamoKeyStore) -> None:
    record = store.create(hash_key("k1"), tenant_id="acme", key_id="key_k1", name="ci", limits=LIMITS)
    assert store.lookup(hash_key("k1")) == record
    assert (record.tenant_id, record.status, record.limits, record.name) == ("acme", "active", LIMITS, "ci")
    assert record.created_at == int(T0) and record.expires_at is None


def test_a_key_without_limits_is_unlimited(store: DynamoKeyStore) -> None:
    key_hash = make(store, "free", limits=KeyLimits())
    found = store.lookup(key_hash)
    assert found is not None and found.limits == KeyLimits() and not found.limits.per_minute


def test_a_partial_set_of_limits_round_trips(store: DynamoKeyStore) -> None:
    key_hash = make(store, "some", limits=KeyLimits(tpm=5000))
    found = store.lookup(key_hash)
    assert found is not None and found.limits == KeyLimits(tpm=5000)


def test_create_refuses_a_key_id_that_is_taken_and_writes_nothing(aws: Any, store: DynamoKeyStore) -> None:
    make(store, "k1")
    with pytest.raises(Conflict) as raised:
        store.create(hash_key("k2"), tenant_id="acme", key_id="key_k1")
    assert raised.value.code == "key_exists"
    assert store.lookup(hash_key("k2")) is None


def test_create_refuses_the_id_of_a_seeded_key(store: DynamoKeyStore) -> None:
    with pytest.raises(Conflict):
        store.create(hash_key("k1"), tenant_id="acme", key_id="dev")  # the aws fixture's put() seeds "dev"


def test_create_refuses_a_hash_that_is_taken(store: DynamoKeyStore) -> None:
    make(store, "k1")
    with pytest.raises(Conflict):
        store.create(hash_key("k1"), tenant_id="other", key_id="key_other")
    with pytest.raises(NotFound):
        store.get("key_other")
    found = store.lookup(hash_key("k1"))
    assert found is not None and found.tenant_id == "acme"


def test_a_key_id_pointer_is_never_a_key(aws: Any, store: DynamoKeyStore) -> None:
    make(store, "k1")
    assert store.lookup("kid#key_k1") is None


def test_a_tenants_keys_list_newest_first_and_no_one_elses(store: DynamoKeyStore, clock: Clock) -> None:
    for name, tenant in [("a1", "acme"), ("b1", "beta"), ("a2", "acme")]:
        make(store, name, tenant=tenant)
        clock.now += 10
    assert [record.key_id for record in store.list_keys("acme")] == ["key_a2", "key_a1"]
    assert [record.key_id for record in store.list_keys("beta")] == ["key_b1"]
    assert store.list_keys("nobody") == []


def test_listing_every_key_groups_them_by_tenant_and_skips_the_pointers(store: DynamoKeyStore, clock: Clock) -> None:
    for name, tenant in [("a1", "acme"), ("b1", "beta"), ("a2", "acme")]:
        make(store, name, tenant=tenant)
        clock.now += 10
    listed = [(record.tenant_id, record.key_id) for record in store.list_keys()]
    # The aws fixture's two keys (tenants dev and other) are in the table too.
    assert listed == [
        ("acme", "key_a2"),
        ("acme", "key_a1"),
        ("beta", "key_b1"),
        ("dev", "dev"),
        ("other", "other"),
    ]


def test_a_key_revoked_right_after_it_was_created_looks_up_as_revoked(store: DynamoKeyStore) -> None:
    key_hash = make(store, "k1")
    revoked = store.revoke("key_k1")
    assert revoked.status == "revoked"
    found = store.lookup(key_hash)
    assert found is not None and found.status == "revoked"
    assert [record.status for record in store.list_keys("acme")] == ["revoked"]


def test_revoking_a_revoked_key_changes_nothing(store: DynamoKeyStore) -> None:
    make(store, "k1")
    first = store.revoke("key_k1")
    assert store.revoke("key_k1") == first


def test_revoking_an_unknown_key_id_is_not_found(store: DynamoKeyStore) -> None:
    with pytest.raises(NotFound) as raised:
        store.revoke("key_nope")
    assert raised.value.code == "key_not_found" and "key_nope" in raised.value.message


def test_a_revoked_key_stops_authenticating_within_the_key_cache_time(store: DynamoKeyStore) -> None:
    make(store, "sk-seekless-k1")
    monotonic = Clock(100.0)
    authenticator = Authenticator(store, cache_seconds=60, clock=monotonic)
    assert authenticator.authenticate("Bearer sk-seekless-k1").limits == LIMITS
    store.revoke("key_sk-seekless-k1")
    monotonic.now += 59
    assert authenticator.authenticate("Bearer sk-seekless-k1").tenant_id == "acme"  # still cached
    monotonic.now += 2
    with pytest.raises(AuthenticationFailed):
        authenticator.authenticate("Bearer sk-seekless-k1")


def test_a_key_written_before_id_pointers_is_still_found_by_id(aws: Any, store: DynamoKeyStore) -> None:
    aws.put_item(
        TableName=TABLES["ApiKeysTable"],
        Item={
            "key_hash": {"S": hash_key("legacy")},
            "key_id": {"S": "key_legacy"},
            "tenant_id": {"S": "acme"},
            "status": {"S": "active"},
            "created_at": {"N": str(int(T0))},
        },
    )
    assert store.revoke("key_legacy").tenant_id == "acme"
    found = store.lookup(hash_key("legacy"))
    assert found is not None and found.status == "revoked"


def test_get_by_id_reads_through_the_pointer_and_never_scans(aws: Any, store: DynamoKeyStore) -> None:
    make(store, "k1")
    aws.put_item(
        TableName=TABLES["ApiKeysTable"],
        Item={"key_hash": {"S": hash_key("legacy")}, "key_id": {"S": "key_legacy"}, "tenant_id": {"S": "acme"}},
    )
    no_scans = DynamoKeyStore(TABLES["ApiKeysTable"], client=NoScans(aws))
    assert no_scans.get("key_k1").limits == LIMITS
    with pytest.raises(NotFound):
        no_scans.get("key_legacy")  # a request path (a job's limits) must not scan the table for it
    with pytest.raises(NotFound):
        no_scans.get("key_nope")


class NoScans:
    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def scan(self, **kwargs: Any) -> Any:
        raise AssertionError("scanned the keys table")


def test_rotation_without_grace_revokes_the_old_key_and_keeps_tenant_name_and_limits(store: DynamoKeyStore) -> None:
    old_hash = make(store, "old")
    old, new = store.rotate("key_old", hash_key("new"), new_key_id="key_new")
    assert old.key_id == "key_old" and old.status == "revoked"
    looked_up = store.lookup(old_hash)
    assert looked_up is not None and looked_up.status == "revoked"
    assert store.lookup(hash_key("new")) == new
    assert (new.key_id, new.tenant_id, new.name, new.limits, new.status) == ("key_new", "acme", "old", LIMITS, "active")


def test_during_the_grace_period_both_keys_work_and_after_it_only_the_new_one(
    store: DynamoKeyStore, clock: Clock
) -> None:
    old_hash = make(store, "old")
    old, new = store.rotate("key_old", hash_key("new"), new_key_id="key_new", grace_seconds=3600)
    assert old.status == "active" and old.expires_at == int(T0) + 3600
    clock.now = T0 + 3599
    still = store.lookup(old_hash)
    assert still is not None and still.status == "active"
    clock.now = T0 + 3600
    assert store.lookup(old_hash) is None
    assert store.lookup(hash_key("new")) == new
    statuses = {record.key_id: record.status for record in store.list_keys("acme")}
    assert statuses == {"key_old": "expired", "key_new": "active"}


def test_a_key_rotates_once(store: DynamoKeyStore) -> None:
    make(store, "old")
    store.rotate("key_old", hash_key("new"), new_key_id="key_new", grace_seconds=60)
    with pytest.raises(Conflict) as raised:
        store.rotate("key_old", hash_key("newer"), new_key_id="key_newer", grace_seconds=60)
    assert raised.value.code == "key_already_rotated" and "key_new" in raised.value.message
    assert store.lookup(hash_key("newer")) is None


def test_a_revoked_key_does_not_rotate(store: DynamoKeyStore) -> None:
    make(store, "old")
    store.revoke("key_old")
    with pytest.raises(Conflict) as raised:
        store.rotate("key_old", hash_key("new"), new_key_id="key_new")
    assert raised.value.code == "key_not_active"
    assert store.lookup(hash_key("new")) is None


def test_an_expired_key_does_not_rotate(store: DynamoKeyStore, clock: Clock) -> None:
    make(store, "old")
    store.rotate("key_old", hash_key("new"), new_key_id="key_new", grace_seconds=60)
    store.rotate("key_new", hash_key("newer"), new_key_id="key_newer", grace_seconds=60)
    clock.now += 61
    with pytest.raises(Conflict) as raised:
        store.rotate("key_new", hash_key("newest"), new_key_id="key_newest")
    assert raised.value.code == "key_not_active" and "expired" in raised.value.message


def test_rotating_an_unknown_key_id_is_not_found(store: DynamoKeyStore) -> None:
    with pytest.raises(NotFound):
        store.rotate("key_nope", hash_key("new"), new_key_id="key_new")
    assert store.lookup(hash_key("new")) is None


class RevokesBeforeCommitting:
    """A DynamoDB client that revokes the key under rotation just before the rotation's transaction
    runs: another operator's command landing between the read and the write."""

    def __init__(self, client: Any, store: DynamoKeyStore, key_id: str) -> None:
        self._client, self._store, self._key_id = client, store, key_id

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def transact_write_items(self, **kwargs: Any) -> Any:
        self._store.revoke(self._key_id)
        return self._client.transact_write_items(**kwargs)


def test_a_key_changed_during_its_rotation_is_not_rotated(aws: Any, store: DynamoKeyStore, clock: Clock) -> None:
    make(store, "old")
    racing = DynamoKeyStore(TABLES["ApiKeysTable"], client=RevokesBeforeCommitting(aws, store, "key_old"), clock=clock)
    with pytest.raises(Conflict) as raised:
        racing.rotate("key_old", hash_key("new"), new_key_id="key_new", grace_seconds=60)
    assert raised.value.code == "key_changed"
    assert store.lookup(hash_key("new")) is None
    with pytest.raises(NotFound):
        store.get("key_new")
    assert store.get("key_old").status == "revoked"
