"""KeyAdmin, the one place the admin API and `seekless keys --table` manage keys: what it refuses, how
it mints, how it pages."""

from __future__ import annotations

from dataclasses import replace

import pytest

from seekless.auth import hash_key
from seekless.errors import Conflict, InvalidRequest, NotFound
from seekless.keys import KeyAdmin
from seekless.models import UNLIMITED, ApiKeyRecord, KeyLimits


class FakeKeyStore:
    """Keys by id in memory; ``taken`` ids answer create with Conflict(key_exists), as a collision would."""

    def __init__(self) -> None:
        self.records: dict[str, ApiKeyRecord] = {}
        self.hashes: dict[str, str] = {}
        self.taken: set[str] = set()
        self.clock = 100

    def create(
        self, key_hash: str, *, tenant_id: str, key_id: str, name: str | None, limits: KeyLimits
    ) -> ApiKeyRecord:
        if key_id in self.taken or key_id in self.records:
            self.taken.discard(key_id)
            raise Conflict(f"An API key with id '{key_id}' already exists.", code="key_exists")
        self.clock += 1
        record = ApiKeyRecord(key_id=key_id, tenant_id=tenant_id, name=name, limits=limits, created_at=self.clock)
        self.records[key_id] = record
        self.hashes[key_id] = key_hash
        return record

    def get(self, key_id: str) -> ApiKeyRecord:
        if key_id not in self.records:
            raise NotFound(f"No API key with id '{key_id}'.", code="key_not_found")
        return self.records[key_id]

    def list_keys(self, tenant_id: str | None = None) -> list[ApiKeyRecord]:
        found = [r for r in self.records.values() if tenant_id is None or r.tenant_id == tenant_id]
        return sorted(found, key=lambda r: -(r.created_at or 0))

    def revoke(self, key_id: str) -> ApiKeyRecord:
        self.records[key_id] = replace(self.get(key_id), status="revoked")
        return self.records[key_id]

    def rotate(
        self, key_id: str, new_key_hash: str, *, new_key_id: str, grace_seconds: int = 0
    ) -> tuple[ApiKeyRecord, ApiKeyRecord]:
        old = self.get(key_id)
        new = self.create(new_key_hash, tenant_id=old.tenant_id, key_id=new_key_id, name=old.name, limits=old.limits)
        return self.revoke(key_id), new


@pytest.fixture
def store() -> FakeKeyStore:
    return FakeKeyStore()


@pytest.fixture
def admin(store: FakeKeyStore) -> KeyAdmin:
    return KeyAdmin(store)


def test_a_created_key_is_stored_by_hash_and_named_by_its_prefix(admin: KeyAdmin, store: FakeKeyStore) -> None:
    issued = admin.create("acme", name="ci", limits=KeyLimits(rpm=60))
    assert issued.key.startswith("sk-seekless-")
    assert store.hashes[issued.record.key_id] == hash_key(issued.key)
    assert issued.record.key_id == "key_" + hash_key(issued.key)[:12]
    shown = issued.to_api()
    assert shown["key"] == issued.key and shown["id"] == issued.record.key_id
    assert shown["limits"] == {"rpm": 60, "tpm": None, "daily_tokens": None, "monthly_tokens": None}


def test_a_minted_key_never_shows_in_its_repr(admin: KeyAdmin) -> None:
    issued = admin.create("acme")
    assert issued.key not in repr(issued)


def test_a_key_id_already_taken_is_minted_again(
    admin: KeyAdmin, store: FakeKeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = iter(["sk-seekless-first", "sk-seekless-second"])
    monkeypatch.setattr("seekless.keys.new_key", lambda: next(keys))
    store.taken.add("key_" + hash_key("sk-seekless-first")[:12])
    assert admin.create("acme").key == "sk-seekless-second"


@pytest.mark.parametrize("tenant", ["", "a#S#b", "acme/prod", " acme", "-acme", "x" * 65, "ünï"])
def test_a_tenant_that_could_meet_another_in_a_storage_key_is_refused(admin: KeyAdmin, tenant: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        admin.create(tenant)
    assert raised.value.param == "tenant" and raised.value.status == 400


@pytest.mark.parametrize("limit", ["rpm", "tpm", "daily_tokens", "monthly_tokens"])
@pytest.mark.parametrize("value", [0, -5])
def test_a_limit_must_be_positive(admin: KeyAdmin, store: FakeKeyStore, limit: str, value: int) -> None:
    with pytest.raises(InvalidRequest) as raised:
        admin.create("acme", limits=KeyLimits(**{limit: value}))
    assert raised.value.param == limit
    assert store.records == {}


def test_a_name_past_256_characters_is_refused(admin: KeyAdmin) -> None:
    with pytest.raises(InvalidRequest) as raised:
        admin.create("acme", name="n" * 257)
    assert raised.value.param == "name"


def test_pages_follow_one_another_newest_first(admin: KeyAdmin) -> None:
    ids = [admin.create("acme").record.key_id for _ in range(5)][::-1]
    admin.create("other")
    first = admin.list_keys("acme", limit=2)
    assert [r.key_id for r in first.items] == ids[:2] and first.has_more
    second = admin.list_keys("acme", limit=2, after=ids[1])
    assert [r.key_id for r in second.items] == ids[2:4] and second.has_more
    last = admin.list_keys("acme", limit=2, after=ids[3])
    assert [r.key_id for r in last.items] == ids[4:] and not last.has_more
    assert len(admin.list_keys().items) == 6


def test_a_page_after_an_unknown_key_is_a_404_naming_after(admin: KeyAdmin) -> None:
    admin.create("acme")
    with pytest.raises(NotFound) as raised:
        admin.list_keys("acme", after="key_000000000000")
    assert raised.value.param == "after"


def test_rotation_shows_the_new_key_once_and_the_old_record(admin: KeyAdmin) -> None:
    old = admin.create("acme", name="ci", limits=KeyLimits(tpm=10))
    rotated = admin.rotate(old.record.key_id)
    shown = rotated.to_api()
    assert shown["key"] != old.key and shown["name"] == "ci" and shown["limits"]["tpm"] == 10
    assert shown["previous"]["id"] == old.record.key_id and shown["previous"]["status"] == "revoked"
    assert "key" not in shown["previous"]


def test_a_record_shows_no_hash_and_no_key(admin: KeyAdmin, store: FakeKeyStore) -> None:
    issued = admin.create("acme")
    shown = admin.get(issued.record.key_id).to_api()
    assert set(shown) == {"id", "object", "tenant", "name", "status", "limits", "created_at", "expires_at"}
    assert store.hashes[issued.record.key_id] not in str(shown) and issued.key not in str(shown)
    assert issued.record.limits == UNLIMITED
