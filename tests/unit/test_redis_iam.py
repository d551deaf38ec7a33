"""The ElastiCache IAM token: AWS's presigned `connect` request, re-signed before it lapses, never logged.

The signature is checked against SigV4 computed here from its specification (canonical request, string
to sign, derived key), not by asking botocore again, so a token ElastiCache would refuse fails here.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import logging
from typing import Any
from urllib.parse import parse_qsl, quote

import pytest
from botocore.credentials import Credentials

from seekless.adapters.redis_iam import TOKEN_SECONDS, ElastiCacheIamCredentials

CREDENTIALS = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "session/token+value=")
SIGNED_AT = datetime.datetime(2026, 5, 4, 12, 30, 15, tzinfo=datetime.UTC)
EMPTY_PAYLOAD = hashlib.sha256(b"").hexdigest()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def signing_time(monkeypatch: pytest.MonkeyPatch) -> datetime.datetime:
    import botocore.auth

    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: SIGNED_AT.replace(tzinfo=None))
    return SIGNED_AT


def provider(clock: Clock | None = None, **kwargs: Any) -> ElastiCacheIamCredentials:
    return ElastiCacheIamCredentials(
        "seekless-prod-app",
        "seekless-prod",
        region="eu-west-1",
        credentials=CREDENTIALS,
        clock=clock or Clock(),
        **kwargs,
    )


def split(token: str) -> tuple[str, str, list[tuple[str, str]]]:
    host, _, rest = token.partition("/")
    path_and_query = "/" + rest
    path, _, query = path_and_query.partition("?")
    return host, path, parse_qsl(query, keep_blank_values=True)


def expected_signature(host: str, params: list[tuple[str, str]]) -> str:
    """SigV4 for a presigned GET, from AWS's specification."""
    unsigned = sorted((k, v) for k, v in params if k != "X-Amz-Signature")
    query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in unsigned)
    canonical = "\n".join(["GET", "/", query, f"host:{host}", "", "host", EMPTY_PAYLOAD])
    stamp = SIGNED_AT.strftime("%Y%m%dT%H%M%SZ")
    day = SIGNED_AT.strftime("%Y%m%d")
    scope = f"{day}/eu-west-1/elasticache/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + CREDENTIALS.secret_key).encode()
    for part in (day, "eu-west-1", "elasticache", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def test_the_token_is_the_presigned_connect_request_without_its_scheme(signing_time: datetime.datetime) -> None:
    user, token = provider().get_credentials()
    assert user == "seekless-prod-app"
    assert not token.startswith(("http://", "https://"))
    host, path, params = split(token)
    assert (host, path) == ("seekless-prod", "/")
    query = dict(params)
    assert query["Action"] == "connect"
    assert query["User"] == "seekless-prod-app"
    assert query["ResourceType"] == "ServerlessCache"
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert query["X-Amz-Credential"] == "AKIDEXAMPLE/20260504/eu-west-1/elasticache/aws4_request"
    assert query["X-Amz-Date"] == "20260504T123015Z"
    assert query["X-Amz-Expires"] == str(TOKEN_SECONDS) == "900"
    assert query["X-Amz-SignedHeaders"] == "host"
    assert query["X-Amz-Security-Token"] == CREDENTIALS.token
    assert query["X-Amz-Signature"] == expected_signature(host, params)


def test_a_provisioned_cache_is_signed_without_the_serverless_resource_type(signing_time: datetime.datetime) -> None:
    _, token = provider(serverless=False).get_credentials()
    host, _, params = split(token)
    assert "ResourceType" not in dict(params)
    assert dict(params)["X-Amz-Signature"] == expected_signature(host, params)


def test_the_cache_name_is_signed_in_lower_case_as_elasticache_stores_it(signing_time: datetime.datetime) -> None:
    token = ElastiCacheIamCredentials(
        "app", "Seekless-PROD", region="eu-west-1", credentials=CREDENTIALS, clock=Clock()
    ).get_credentials()[1]
    assert token.startswith("seekless-prod/?")


def test_a_token_is_reused_until_the_refresh_point_then_signed_again(monkeypatch: pytest.MonkeyPatch) -> None:
    import botocore.auth

    moments = iter([SIGNED_AT, SIGNED_AT + datetime.timedelta(minutes=10)])
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: next(moments).replace(tzinfo=None))
    clock = Clock()
    credentials = provider(clock)
    first = credentials.get_credentials()
    clock.now += 599
    assert credentials.get_credentials() == first  # still well inside its 15 minutes
    clock.now += 1
    second = credentials.get_credentials()
    assert second != first
    assert dict(split(second[1])[2])["X-Amz-Date"] == "20260504T124015Z"


def test_the_refresh_point_leaves_time_before_the_token_expires() -> None:
    with pytest.raises(ValueError, match="refresh_seconds"):
        provider(refresh_seconds=TOKEN_SECONDS)
    with pytest.raises(ValueError, match="user id and a cache name"):
        ElastiCacheIamCredentials("", "seekless-prod", region="eu-west-1", credentials=CREDENTIALS)


async def test_the_async_client_gets_the_same_token(signing_time: datetime.datetime) -> None:
    credentials = provider()
    assert await credentials.get_credentials_async() == credentials.get_credentials()


def test_credentials_are_read_at_each_signing_so_rotated_ones_are_used(signing_time: datetime.datetime) -> None:
    class Rotating(Credentials):
        def __init__(self) -> None:
            super().__init__("AKIDFIRST", "secret-one", None)
            self.frozen = 0

        def get_frozen_credentials(self) -> Any:
            self.frozen += 1
            return super().get_frozen_credentials()

    rotating = Rotating()
    clock = Clock()
    credentials = ElastiCacheIamCredentials(
        "app", "seekless-prod", region="eu-west-1", credentials=rotating, clock=clock
    )
    credentials.get_credentials()
    rotating.access_key = "AKIDSECOND"
    clock.now += 600
    token = credentials.get_credentials()[1]
    assert rotating.frozen == 2
    assert dict(split(token)[2])["X-Amz-Credential"].startswith("AKIDSECOND/")
    assert "X-Amz-Security-Token" not in dict(split(token)[2])  # no session token, none sent


def test_without_aws_credentials_connecting_fails_as_a_redis_error_so_callers_fail_open(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import botocore.session
    from redis.exceptions import RedisError

    class NoCredentials:
        def get_credentials(self) -> None:
            return None

        def get_config_variable(self, name: str) -> str:
            return "eu-west-1"

    monkeypatch.setattr(botocore.session, "get_session", NoCredentials)
    credentials = ElastiCacheIamCredentials("seekless-prod-app", "seekless-prod", clock=Clock())
    with pytest.raises(RedisError, match="could not sign"):
        credentials.get_credentials()


def test_nothing_secret_reaches_the_logs_or_the_repr(
    signing_time: datetime.datetime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    credentials = provider()
    _, token = credentials.get_credentials()
    signature = dict(split(token)[2])["X-Amz-Signature"]
    shown = repr(credentials) + str(credentials) + caplog.text
    for secret in (CREDENTIALS.secret_key, CREDENTIALS.token, signature, token):
        assert secret not in shown


# ---------------------------------------------------------------- wiring


@pytest.fixture
def iam_env(monkeypatch: pytest.MonkeyPatch) -> Any:
    from seekless import wiring

    monkeypatch.setenv("REDIS_URL", "rediss://seekless-prod-abc123.serverless.euw1.cache.amazonaws.com:6379")
    monkeypatch.setenv("SEEKLESS_REDIS_IAM_USER", "seekless-prod-app")
    monkeypatch.setenv("SEEKLESS_REDIS_CACHE_NAME", "seekless-prod")
    wiring.reset_environment()
    yield wiring
    wiring.reset_environment()


async def test_wired_clients_authenticate_as_the_templates_iam_user(iam_env: Any) -> None:
    async_client, sync_client = iam_env.redis(), iam_env.redis_sync()
    try:
        providers = [c.connection_pool.connection_kwargs["credential_provider"] for c in (async_client, sync_client)]
        assert providers[0] is providers[1]  # one token cache per environment
        assert isinstance(providers[0], ElastiCacheIamCredentials)
        assert (providers[0].user_id, providers[0].cache_name) == ("seekless-prod-app", "seekless-prod")
    finally:
        await async_client.aclose()
        sync_client.close()


async def test_without_an_iam_user_the_clients_send_no_auth(iam_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEEKLESS_REDIS_IAM_USER")
    iam_env.reset_environment()
    client = iam_env.redis()
    try:
        assert client.connection_pool.connection_kwargs.get("credential_provider") is None
    finally:
        await client.aclose()
