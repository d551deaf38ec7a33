"""/v1/admin/keys through the app as the REST function runs it (moto DynamoDB from template.yaml,
Redis, the emulator): what an operator holding the admin key can do, and what nobody else learns."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import boto3
import httpx
import pytest
from aws_lambda_powertools.utilities import parameters

from seekless.api.app import create_app
from seekless.auth import hash_key

from .conftest import DEV_KEY

ADMIN_KEY = "test-admin-key-0123456789abcdefghijklmnopqrstuv"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
RECORD_FIELDS = {"id", "object", "tenant", "name", "status", "limits", "created_at", "expires_at"}


@pytest.fixture
def admin_env(app_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEEKLESS_ADMIN_API_KEY", ADMIN_KEY)


@pytest.fixture
async def api(app_env: None) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app()), base_url="http://api") as client:
        yield client


def assert_openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


async def create(api: httpx.AsyncClient, tenant: str = "acme", **fields: Any) -> dict[str, Any]:
    response = await api.post("/v1/admin/keys", json={"tenant": tenant, **fields}, headers=ADMIN)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def models_status(api: httpx.AsyncClient, key: str) -> int:
    return (await api.get("/v1/models", headers={"Authorization": f"Bearer {key}"})).status_code


# ---------------------------------------------------------------- what the admin key can do


@pytest.mark.usefixtures("admin_env")
async def test_a_created_key_is_shown_once_and_works_at_once(api: httpx.AsyncClient) -> None:
    created = await create(api, name="ci", rpm=60, tpm=90000, daily_tokens=2_000_000)
    assert set(created) == {"key", *RECORD_FIELDS}
    assert created["key"].startswith("sk-seekless-") and created["id"] == "key_" + hash_key(created["key"])[:12]
    assert (created["object"], created["tenant"], created["name"], created["status"]) == (
        "api_key",
        "acme",
        "ci",
        "active",
    )
    assert created["limits"] == {"rpm": 60, "tpm": 90000, "daily_tokens": 2_000_000, "monthly_tokens": None}
    assert await models_status(api, created["key"]) == 200

    fetched = await api.get(f"/v1/admin/keys/{created['id']}", headers=ADMIN)
    assert fetched.status_code == 200
    assert fetched.json() == {field: created[field] for field in RECORD_FIELDS}
    assert created["key"] not in fetched.text and hash_key(created["key"]) not in fetched.text


@pytest.mark.usefixtures("admin_env")
async def test_a_tenants_keys_list_newest_first_in_pages_with_neither_keys_nor_hashes(
    api: httpx.AsyncClient,
) -> None:
    made = [await create(api, name=f"k{n}") for n in range(3)]
    await create(api, tenant="beta")
    first = await api.get("/v1/admin/keys", params={"tenant": "acme", "limit": 2}, headers=ADMIN)
    assert first.status_code == 200
    page = first.json()
    assert page["object"] == "list" and page["has_more"] is True
    assert {record["id"] for record in page["data"]} <= {m["id"] for m in made}
    second = (
        await api.get("/v1/admin/keys", params={"tenant": "acme", "limit": 2, "after": page["last_id"]}, headers=ADMIN)
    ).json()
    assert second["has_more"] is False
    listed = page["data"] + second["data"]
    assert sorted(record["id"] for record in listed) == sorted(m["id"] for m in made)
    assert [record["created_at"] for record in listed] == sorted((r["created_at"] for r in listed), reverse=True)
    assert all(set(record) == RECORD_FIELDS for record in listed)
    for text in (first.text, str(second)):
        for key in made:
            assert key["key"] not in text and hash_key(key["key"]) not in text


@pytest.mark.usefixtures("admin_env")
async def test_every_tenants_keys_list_without_a_tenant(api: httpx.AsyncClient) -> None:
    created = await create(api, tenant="beta")
    listed = (await api.get("/v1/admin/keys", params={"limit": 100}, headers=ADMIN)).json()
    expected = {("beta", created["id"]), ("dev", "dev"), ("other", "other")}  # with the aws fixture's keys
    assert {(r["tenant"], r["id"]) for r in listed["data"]} == expected


@pytest.mark.usefixtures("admin_env")
async def test_a_revoked_key_stops_working(api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each environment caches a key for SEEKLESS_KEY_CACHE_SECONDS; 0 shows the revocation itself.
    monkeypatch.setenv("SEEKLESS_KEY_CACHE_SECONDS", "0")
    created = await create(api)
    assert await models_status(api, created["key"]) == 200
    revoked = await api.post(f"/v1/admin/keys/{created['id']}/revoke", headers=ADMIN)
    assert revoked.status_code == 200
    assert revoked.json()["status"] == "revoked" and "key" not in revoked.json()
    assert await models_status(api, created["key"]) == 401
    listed = (await api.get("/v1/admin/keys", params={"tenant": "acme"}, headers=ADMIN)).json()
    assert [r["status"] for r in listed["data"]] == ["revoked"]


@pytest.mark.usefixtures("admin_env")
async def test_a_revoked_key_still_works_where_it_is_cached(api: httpx.AsyncClient) -> None:
    created = await create(api)
    assert await models_status(api, created["key"]) == 200  # cached for 60 s in this environment
    await api.post(f"/v1/admin/keys/{created['id']}/revoke", headers=ADMIN)
    assert await models_status(api, created["key"]) == 200


@pytest.mark.usefixtures("admin_env")
async def test_rotation_with_grace_keeps_the_old_key_working_until_it_expires(
    api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEEKLESS_KEY_CACHE_SECONDS", "0")
    old = await create(api, name="ci", rpm=7)
    response = await api.post(f"/v1/admin/keys/{old['id']}/rotate", json={"grace_seconds": 3600}, headers=ADMIN)
    assert response.status_code == 200, response.text
    rotated = response.json()
    assert set(rotated) == {"key", "previous", *RECORD_FIELDS}
    assert rotated["key"] != old["key"] and (rotated["name"], rotated["limits"]) == ("ci", old["limits"])
    previous = rotated["previous"]
    assert previous["id"] == old["id"] and previous["status"] == "active"
    assert 3590 <= previous["expires_at"] - rotated["created_at"] <= 3600
    assert await models_status(api, rotated["key"]) == 200
    assert await models_status(api, old["key"]) == 200


@pytest.mark.usefixtures("admin_env")
async def test_rotation_without_a_body_revokes_the_old_key_at_once(
    api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEEKLESS_KEY_CACHE_SECONDS", "0")
    old = await create(api)
    rotated = (await api.post(f"/v1/admin/keys/{old['id']}/rotate", headers=ADMIN)).json()
    assert rotated["previous"]["status"] == "revoked"
    assert await models_status(api, rotated["key"]) == 200
    assert await models_status(api, old["key"]) == 401


@pytest.mark.usefixtures("admin_env")
async def test_rotating_a_revoked_key_is_a_409_and_mints_nothing(api: httpx.AsyncClient) -> None:
    old = await create(api)
    await api.post(f"/v1/admin/keys/{old['id']}/revoke", headers=ADMIN)
    response = await api.post(f"/v1/admin/keys/{old['id']}/rotate", headers=ADMIN)
    assert assert_openai_error(response, 409)["code"] == "key_not_active"
    assert len((await api.get("/v1/admin/keys", params={"tenant": "acme"}, headers=ADMIN)).json()["data"]) == 1


@pytest.mark.usefixtures("admin_env")
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/admin/keys/key_000000000000"),
        ("POST", "/v1/admin/keys/key_000000000000/revoke"),
        ("POST", "/v1/admin/keys/key_000000000000/rotate"),
    ],
)
async def test_an_unknown_key_id_is_a_404(api: httpx.AsyncClient, method: str, path: str) -> None:
    error = assert_openai_error(await api.request(method, path, headers=ADMIN), 404)
    assert error["code"] == "key_not_found" and "key_000000000000" in error["message"]


@pytest.mark.usefixtures("admin_env")
@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"name": "no tenant"}, "tenant"),
        ({"tenant": "a#S#b"}, "tenant"),
        ({"tenant": "acme", "rpm": 0}, "rpm"),
        ({"tenant": "acme", "tpm": "60"}, "tpm"),
        ({"tenant": "acme", "daily_tokens": 1.5}, "daily_tokens"),
        ({"tenant": "acme", "monthly_tokens": True}, "monthly_tokens"),
        ({"tenant": "acme", "surprise": 1}, "surprise"),
    ],
)
async def test_a_bad_create_body_is_a_400_naming_the_param(
    api: httpx.AsyncClient, body: dict[str, Any], param: str
) -> None:
    error = assert_openai_error(await api.post("/v1/admin/keys", json=body, headers=ADMIN), 400)
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert (await api.get("/v1/admin/keys", params={"tenant": "acme"}, headers=ADMIN)).json()["data"] == []


@pytest.mark.usefixtures("admin_env")
async def test_bad_json_a_negative_grace_and_a_zero_limit_are_400s(api: httpx.AsyncClient) -> None:
    bad_json = await api.post("/v1/admin/keys", content=b"{nope", headers=ADMIN)
    assert assert_openai_error(bad_json, 400)["code"] == "invalid_json"
    old = await create(api)
    negative = await api.post(f"/v1/admin/keys/{old['id']}/rotate", json={"grace_seconds": -1}, headers=ADMIN)
    assert assert_openai_error(negative, 400)["param"] == "grace_seconds"
    zero = await api.get("/v1/admin/keys", params={"limit": 0}, headers=ADMIN)
    assert assert_openai_error(zero, 400)["param"] == "query.limit"


@pytest.mark.usefixtures("admin_env")
async def test_a_new_key_never_reaches_the_logs(api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    created = await create(api)
    rotated = (await api.post(f"/v1/admin/keys/{created['id']}/rotate", headers=ADMIN)).json()
    logged = caplog.text
    assert created["id"] in logged and rotated["id"] in logged  # the operator's actions are on record...
    for key in (created["key"], rotated["key"], ADMIN_KEY):
        assert key not in logged  # ...never a key
        assert key.removeprefix("sk-seekless-") not in logged


# ---------------------------------------------------------------- what nobody else learns


@pytest.mark.usefixtures("admin_env")
@pytest.mark.parametrize("authorization", [None, "Bearer wrong-admin-key", f"Bearer {DEV_KEY}"])
async def test_anything_but_the_admin_key_is_a_401_like_a_wrong_api_key(
    api: httpx.AsyncClient, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = await api.post("/v1/admin/keys", json={"tenant": "acme"}, headers=headers)
    error = assert_openai_error(response, 401)
    assert error["type"] == "authentication_error"
    if authorization:
        wrong_tenant_key = await api.get("/v1/models", headers={"Authorization": "Bearer sk-seekless-nobody"})
        assert response.json() == wrong_tenant_key.json()
    assert (await api.get("/v1/admin/keys", params={"tenant": "acme"}, headers=ADMIN)).json()["data"] == []


@pytest.mark.usefixtures("admin_env")
async def test_the_admin_key_is_not_a_tenants_key(api: httpx.AsyncClient) -> None:
    assert await models_status(api, ADMIN_KEY) == 401


@pytest.mark.usefixtures("admin_env")
async def test_a_body_is_not_read_before_the_admin_key_is_checked(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/admin/keys", content=b"{nope", headers={"Authorization": f"Bearer {DEV_KEY}"})
    assert_openai_error(response, 401)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/admin/keys", b'{"tenant": "acme"}'),
        ("POST", "/v1/admin/keys", b"{nope"),
        ("GET", "/v1/admin/keys", None),
        ("GET", "/v1/admin/keys/dev", None),
        ("POST", "/v1/admin/keys/dev/revoke", None),
        ("POST", "/v1/admin/keys/dev/rotate", None),
    ],
)
async def test_without_an_admin_key_configured_the_routes_answer_as_unknown_ones(
    api: httpx.AsyncClient, method: str, path: str, body: bytes | None
) -> None:
    unknown = await api.get("/v1/no-such-route", headers={"Authorization": f"Bearer {DEV_KEY}"})
    for authorization in (f"Bearer {DEV_KEY}", f"Bearer {ADMIN_KEY}"):
        response = await api.request(method, path, content=body, headers={"Authorization": authorization})
        assert response.status_code == 404
        assert response.json() == unknown.json()


@pytest.mark.usefixtures("admin_env")
async def test_the_admin_routes_are_not_in_the_openapi_document(api: httpx.AsyncClient) -> None:
    paths = (await api.get("/openapi.json")).json()["paths"]
    assert "/v1/models" in paths
    assert not [path for path in paths if "admin" in path]


# ---------------------------------------------------------------- the admin key in Secrets Manager


@pytest.fixture
def admin_secret(app_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The admin key as the template keeps it: a secret, read through the Powertools cache."""
    client = boto3.client("secretsmanager", region_name="us-east-1")
    arn = client.create_secret(Name="seekless-admin-test", SecretString=ADMIN_KEY)["ARN"]
    monkeypatch.setenv("SEEKLESS_ADMIN_KEY_SECRET_NAME", arn)
    parameters.clear_caches()  # the cache is process-wide; another test's values must not leak in
    yield lambda value: client.put_secret_value(SecretId=arn, SecretString=value)
    parameters.clear_caches()


async def test_the_admin_key_is_read_from_its_secret_and_a_rotated_one_is_taken_at_once(
    api: httpx.AsyncClient, admin_secret: Any
) -> None:
    assert (await api.get("/v1/admin/keys", headers=ADMIN)).status_code == 200
    admin_secret("the-rotated-admin-key-0123456789abcdefghijklmn")
    rotated = {"Authorization": "Bearer the-rotated-admin-key-0123456789abcdefghijklmn"}
    assert (await api.get("/v1/admin/keys", headers=rotated)).status_code == 200
    assert_openai_error(await api.get("/v1/admin/keys", headers=ADMIN), 401)


async def test_an_unreadable_admin_secret_is_a_503(
    api: httpx.AsyncClient, admin_secret: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEEKLESS_ADMIN_KEY_SECRET_NAME", "no-such-secret")
    error = assert_openai_error(await api.get("/v1/admin/keys", headers=ADMIN), 503)
    assert ADMIN_KEY not in error["message"]
