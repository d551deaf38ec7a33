"""`seekless keys` through a REST API's admin routes: the running local stack by default (found through
its state file, with its dev admin key), any stack given `--url` and the admin key. Against a real
local stack over its sockets, and an httpx transport where only the client's paging is at stake."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from seekless.auth import hash_key
from seekless_local import keys_cli
from seekless_local.cli import main
from seekless_local.redis_server import RedisServer, free_port
from seekless_local.stack import DEFAULT_DEV_ADMIN_KEY, REGION, LocalStack
from tests.stacks import emulated_stack


@pytest.fixture(scope="module")
def stack(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    state_dir = tmp_path_factory.mktemp("state")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SEEKLESS_STATE_DIR", str(state_dir))
        with emulated_stack(
            redis_url=redis_server.url, event_sources=False, state_file=state_dir / "local-stack.json"
        ) as running:
            yield running


@pytest.fixture(autouse=True)
def no_target_from_the_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SEEKLESS_URL", "SEEKLESS_ADMIN_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def tenant() -> str:
    """A tenant of this test's own: the stack (and its keys table) lives as long as the module."""
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As on an operator's machine with no `seekless dev` running: no state file to fall back on."""
    monkeypatch.setenv("SEEKLESS_STATE_DIR", str(tmp_path))


def run(capsys: pytest.CaptureFixture[str], *argv: str, code: int = 0) -> str:
    assert main(list(argv)) == code, capsys.readouterr()
    captured = capsys.readouterr()
    assert DEFAULT_DEV_ADMIN_KEY not in captured.out + captured.err  # never the admin key
    return captured.out if code == 0 else captured.out + captured.err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    return json.loads(run(capsys, *argv, "--json"))


def works(stack: LocalStack, key: str) -> bool:
    response = httpx.get(f"{stack.rest_url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    return response.status_code == 200


def table_options(stack: LocalStack) -> list[str]:
    return ["--table", stack.tables["ApiKeysTable"], "--endpoint-url", stack.moto_url, "--region", REGION]


# ---------------------------------------------------------------- the local stack by default


def test_by_default_it_manages_the_running_stacks_keys_through_its_admin_api(
    stack: LocalStack, tenant: str, capsys: pytest.CaptureFixture[str]
) -> None:
    created = run_json(capsys, "keys", "create", "--tenant", tenant, "--rpm", "60")
    assert created["id"] == "key_" + hash_key(created["key"])[:12]
    assert works(stack, created["key"])
    listed = run_json(capsys, "keys", "list", "--tenant", tenant)
    assert [record["id"] for record in listed["data"]] == [created["id"]]
    # The admin API answered, not the table: it refuses another admin key.
    refused = run(capsys, "keys", "list", "--admin-key", "not-the-admin-key", code=1)
    assert refused == "error: Incorrect API key provided.\n"


def test_the_output_is_the_same_through_the_api_and_the_table(
    stack: LocalStack, tenant: str, capsys: pytest.CaptureFixture[str]
) -> None:
    table = table_options(stack)
    run(capsys, "keys", "create", "--tenant", tenant, "--name", "ci", "--tpm", "1000")
    run(capsys, "keys", "create", "--tenant", tenant, *table)
    for listing in (["keys", "list", "--tenant", tenant], ["keys", "list", "--tenant", tenant, "--json"]):
        through_api = run(capsys, *listing)
        assert through_api == run(capsys, *listing, *table)
        assert through_api.count(tenant) == 2
    key_id = run_json(capsys, "keys", "list", "--tenant", tenant)["data"][0]["id"]
    revoked = run(capsys, "keys", "revoke", key_id)
    assert revoked == run(capsys, "keys", "revoke", key_id, *table)  # revoking twice changes nothing
    assert run(capsys, "keys", "revoke", key_id, "--json") == run(capsys, "keys", "revoke", key_id, "--json", *table)
    unknown = ["keys", "revoke", "key_000000000000"]
    assert run(capsys, *unknown, code=1) == run(capsys, *unknown, *table, code=1)
    assert run(capsys, *unknown, "--json", code=1) == run(capsys, *unknown, "--json", *table, code=1)


def test_rotate_prints_the_new_key_once_and_when_the_old_one_ends(
    stack: LocalStack, tenant: str, capsys: pytest.CaptureFixture[str]
) -> None:
    old = run_json(capsys, "keys", "create", "--tenant", tenant)
    out = run(capsys, "keys", "rotate", old["id"], "--grace-seconds", "3600")
    (new_key,) = [line for line in out.splitlines() if line.startswith("sk-seekless-")]
    assert out.count(new_key) == 1
    assert f"new key id key_{hash_key(new_key)[:12]}" in out
    assert f"old key id {old['id']}: keeps working until " in out and "(3600 s)" in out
    assert works(stack, new_key) and works(stack, old["key"])


def test_the_local_stacks_url_needs_no_admin_key(stack: LocalStack, capsys: pytest.CaptureFixture[str]) -> None:
    listed = run_json(capsys, "keys", "list", "--tenant", "dev", "--url", f"{stack.rest_url}/v1")
    assert [record["id"] for record in listed["data"]] == ["dev"]


# ---------------------------------------------------------------- any stack, given --url and the admin key


@pytest.mark.usefixtures("elsewhere")
def test_a_stack_is_reached_with_its_url_and_admin_key(
    stack: LocalStack, tenant: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"{stack.rest_url}/v1"
    created = run_json(capsys, "keys", "create", "--tenant", tenant, "--url", url, "--admin-key", DEFAULT_DEV_ADMIN_KEY)
    assert works(stack, created["key"])
    monkeypatch.setenv("SEEKLESS_URL", url)
    monkeypatch.setenv("SEEKLESS_ADMIN_KEY", DEFAULT_DEV_ADMIN_KEY)
    listed = run_json(capsys, "keys", "list", "--tenant", tenant)
    assert [record["id"] for record in listed["data"]] == [created["id"]]


@pytest.mark.usefixtures("elsewhere")
def test_a_wrong_admin_key_is_one_error_line_or_one_error_object(
    stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    target = ["--url", f"{stack.rest_url}/v1", "--admin-key", "sk-seekless-local-dev"]  # a tenant's key
    assert run(capsys, "keys", "create", "--tenant", "acme", *target, code=1) == "error: Incorrect API key provided.\n"
    error = json.loads(run(capsys, "keys", "list", *target, "--json", code=1))["error"]
    assert error["type"] == "authentication_error" and error["code"] == "invalid_api_key"


@pytest.mark.usefixtures("elsewhere")
def test_a_url_without_an_admin_key_says_where_to_find_one(
    stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    err = run(capsys, "keys", "list", "--url", f"{stack.rest_url}/v1", code=1)
    assert "SEEKLESS_ADMIN_KEY" in err and "aws secretsmanager get-secret-value" in err


@pytest.mark.usefixtures("elsewhere")
def test_an_unreachable_api_is_a_connection_error(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    error = json.loads(run(capsys, "keys", "list", "--url", url, "--admin-key", "k", "--json", code=1))["error"]
    assert error["type"] == "connection_error" and url in error["message"]


def test_url_and_table_together_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    err = run(capsys, "keys", "list", "--url", "http://127.0.0.1:1/v1", "--table", "seekless-keys", code=1)
    assert "--url and --table" in err


def test_list_follows_every_page_of_the_admin_api(capsys: pytest.CaptureFixture[str]) -> None:
    records = [
        {
            "id": f"key_{n:012d}",
            "object": "api_key",
            "tenant": "acme",
            "name": None,
            "status": "active",
            "limits": {"rpm": None, "tpm": None, "daily_tokens": None, "monthly_tokens": None},
            "created_at": 1_700_000_000 - n,
            "expires_at": None,
        }
        for n in range(3)
    ]
    seen: list[httpx.Request] = []

    def admin_api(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        start = 2 if request.url.params.get("after") == records[1]["id"] else 0
        page = records[start : start + 2]
        body = {"object": "list", "data": page, "has_more": start == 0, "first_id": page[0]["id"]}
        return httpx.Response(200, json={**body, "last_id": page[-1]["id"]})

    argv = ["keys", "list", "--tenant", "acme", "--url", "http://api/v1", "--admin-key", "k", "--json"]
    assert keys_cli.main(argv, transport=httpx.MockTransport(admin_api)) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["data"] == records and listed["has_more"] is False
    assert [dict(request.url.params) for request in seen] == [
        {"limit": "100", "tenant": "acme"},
        {"limit": "100", "tenant": "acme", "after": records[1]["id"]},
    ]
    assert {request.headers["authorization"] for request in seen} == {"Bearer k"}
    assert {request.url.path for request in seen} == {"/v1/admin/keys"}
