"""`seekless keys --table` straight against a keys table (moto in-process, as a deployed stack's table
with the operator's AWS credentials). Output is what an operator sees, captured. The same commands
through the admin API, and the local stack by default: test_keys_cli_api.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from seekless.adapters.dynamodb import DynamoKeyStore
from seekless.auth import Authenticator, hash_key
from seekless.errors import AuthenticationFailed
from seekless_local import keys_cli
from seekless_local.cli import main

from .conftest import TABLES

TABLE = ["--table", TABLES["ApiKeysTable"]]
T0 = 1_700_000_000.0
RECORD_FIELDS = {"id", "object", "tenant", "name", "status", "limits", "created_at", "expires_at"}


def authenticates(aws: Any, key: str, *, at: float | None = None) -> bool:
    """Whether a fresh Authenticator (no cache) accepts ``key``, with the store's clock at ``at``."""
    store = DynamoKeyStore(TABLES["ApiKeysTable"], client=aws, **({"clock": lambda: at} if at is not None else {}))
    try:
        Authenticator(store).authenticate(f"Bearer {key}")
    except AuthenticationFailed:
        return False
    return True


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    assert main([*argv, *TABLE, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_create_prints_the_key_once_and_the_table_holds_only_its_hash(
    aws: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "create", "--tenant", "acme", "--name", "ci", "--rpm", "60", "--tpm", "90000", *TABLE]) == 0
    captured = capsys.readouterr()
    keys = [line for line in captured.out.splitlines() if line.startswith("sk-seekless-")]
    assert len(keys) == 1
    (key,) = keys
    assert captured.out.count(key) == 1 and key not in captured.err
    assert "rpm=60 tpm=90000" in captured.out
    dump = json.dumps(aws.scan(TableName=TABLES["ApiKeysTable"])["Items"])
    assert key not in dump and key.removeprefix("sk-seekless-") not in dump
    assert hash_key(key) in dump
    principal = Authenticator(DynamoKeyStore(TABLES["ApiKeysTable"], client=aws)).authenticate(f"Bearer {key}")
    assert principal.tenant_id == "acme"
    assert (principal.limits.rpm, principal.limits.tpm, principal.limits.daily_tokens) == (60, 90000, None)


def test_create_json_is_one_object_with_the_key_its_id_tenant_and_limits(
    aws: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    created = run_json(
        capsys, "keys", "create", "--tenant", "acme", "--daily-tokens", "1000000", "--monthly-tokens", "20000000"
    )
    assert set(created) == {"key", *RECORD_FIELDS}
    assert created["key"].startswith("sk-seekless-")
    assert created["id"] == "key_" + hash_key(created["key"])[:12] and created["object"] == "api_key"
    assert created["tenant"] == "acme" and created["status"] == "active" and created["name"] is None
    assert created["limits"] == {"rpm": None, "tpm": None, "daily_tokens": 1000000, "monthly_tokens": 20000000}
    assert created["expires_at"] is None and isinstance(created["created_at"], int)


def test_a_limit_must_be_a_positive_whole_number(aws: Any, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["keys", "create", "--tenant", "acme", "--rpm", "0", *TABLE])
    assert exited.value.code == 2
    assert "--rpm: must be a positive whole number" in capsys.readouterr().err
    assert DynamoKeyStore(TABLES["ApiKeysTable"], client=aws).list_keys("acme") == []


def test_list_shows_a_tenants_keys_without_their_hashes(aws: Any, capsys: pytest.CaptureFixture[str]) -> None:
    first = run_json(capsys, "keys", "create", "--tenant", "acme", "--name", "first", "--rpm", "5")
    second = run_json(capsys, "keys", "create", "--tenant", "acme", "--name", "second")
    run_json(capsys, "keys", "create", "--tenant", "beta", "--name", "beta-key")
    assert main(["keys", "list", "--tenant", "acme", *TABLE]) == 0
    out = capsys.readouterr().out
    header, *rows = out.splitlines()
    assert header.split() == ["KEY", "ID", "TENANT", "NAME", "STATUS", "LIMITS", "CREATED"]
    assert sorted(row.split()[0] for row in rows) == sorted([first["id"], second["id"]])
    assert "rpm=5" in out and "unlimited" in out and "beta-key" not in out
    for created in (first, second):
        assert hash_key(created["key"]) not in out and created["key"] not in out


def test_list_json_is_a_list_object_of_key_records(aws: Any, capsys: pytest.CaptureFixture[str]) -> None:
    created = run_json(capsys, "keys", "create", "--tenant", "acme", "--tpm", "1000")
    listed = run_json(capsys, "keys", "list", "--tenant", "acme")
    assert listed["object"] == "list" and listed["has_more"] is False
    assert listed["first_id"] == listed["last_id"] == created["id"]
    (record,) = listed["data"]
    assert set(record) == RECORD_FIELDS
    assert record == {field: created[field] for field in RECORD_FIELDS}


def test_list_without_a_tenant_lists_every_tenants_keys(aws: Any, capsys: pytest.CaptureFixture[str]) -> None:
    created = run_json(capsys, "keys", "create", "--tenant", "acme")
    listed = run_json(capsys, "keys", "list")
    assert [(record["tenant"], record["id"]) for record in listed["data"]] == [
        ("acme", created["id"]),
        ("dev", "dev"),  # the aws fixture's keys
        ("other", "other"),
    ]


def test_revoke_stops_the_key_from_authenticating(aws: Any, capsys: pytest.CaptureFixture[str]) -> None:
    created = run_json(capsys, "keys", "create", "--tenant", "acme")
    assert authenticates(aws, created["key"])
    assert main(["keys", "revoke", created["id"], *TABLE]) == 0
    assert f"revoked {created['id']}" in capsys.readouterr().out
    assert not authenticates(aws, created["key"])
    listed = run_json(capsys, "keys", "list", "--tenant", "acme")
    assert [record["status"] for record in listed["data"]] == ["revoked"]


def test_revoke_of_an_unknown_key_id_exits_1_with_a_clear_message(aws: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "revoke", "key_000000000000", *TABLE]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "error: No API key with id 'key_000000000000'.\n"


def test_revoke_of_an_unknown_key_id_with_json_prints_an_error_object(
    aws: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "revoke", "key_000000000000", *TABLE, "--json"]) == 1
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["code"] == "key_not_found" and "key_000000000000" in error["message"]


def test_a_rotated_key_authenticates_and_the_old_one_stops_after_the_grace(
    aws: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    old = run_json(capsys, "keys", "create", "--tenant", "acme", "--name", "ci", "--rpm", "7")
    argv = ["keys", "rotate", old["id"], "--grace-seconds", "3600", *TABLE, "--json"]
    assert keys_cli.main(argv, clock=lambda: T0) == 0
    rotated = json.loads(capsys.readouterr().out)
    assert set(rotated) == {"key", "previous", *RECORD_FIELDS}
    assert rotated["id"] != old["id"] and rotated["key"] != old["key"]
    assert (rotated["tenant"], rotated["name"], rotated["limits"]) == ("acme", "ci", old["limits"])
    assert rotated["previous"]["id"] == old["id"]
    assert rotated["previous"]["status"] == "active" and rotated["previous"]["expires_at"] == int(T0) + 3600

    assert authenticates(aws, rotated["key"], at=T0 + 3600)
    assert authenticates(aws, old["key"], at=T0 + 3599)
    assert not authenticates(aws, old["key"], at=T0 + 3600)


def test_rotate_without_a_grace_period_revokes_the_old_key_at_once(
    aws: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    old = run_json(capsys, "keys", "create", "--tenant", "acme")
    assert main(["keys", "rotate", old["id"], *TABLE]) == 0
    out = capsys.readouterr().out
    (new_key,) = [line for line in out.splitlines() if line.startswith("sk-seekless-")]
    assert f"old key id {old['id']}: revoked now" in out
    assert f"new key id key_{hash_key(new_key)[:12]}" in out
    assert authenticates(aws, new_key)
    assert not authenticates(aws, old["key"])


def test_rotating_a_revoked_key_exits_1_and_mints_nothing(aws: Any, capsys: pytest.CaptureFixture[str]) -> None:
    old = run_json(capsys, "keys", "create", "--tenant", "acme")
    run_json(capsys, "keys", "revoke", old["id"])
    assert main(["keys", "rotate", old["id"], *TABLE]) == 1
    captured = capsys.readouterr()
    assert "sk-seekless-" not in captured.out
    assert f"API key '{old['id']}' is revoked" in captured.err
    assert len(run_json(capsys, "keys", "list", "--tenant", "acme")["data"]) == 1


def test_an_unknown_table_is_named_in_the_error(aws: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "list", "--table", "no-such-table"]) == 1
    assert "table 'no-such-table' was not found" in capsys.readouterr().err


def test_without_a_running_local_stack_it_says_how_to_start_one_or_name_a_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SEEKLESS_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("SEEKLESS_URL", raising=False)
    assert main(["keys", "list"]) == 1
    err = capsys.readouterr().err
    assert "no `seekless dev` is running" in err and str(tmp_path) in err
    assert "--url" in err and "--table" in err


def test_endpoint_url_without_a_table_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SEEKLESS_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("SEEKLESS_URL", raising=False)
    assert main(["keys", "list", "--endpoint-url", "http://127.0.0.1:1"]) == 1
    assert "--region and --endpoint-url need --table" in capsys.readouterr().err
