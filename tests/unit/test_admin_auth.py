"""The admin key check: only the configured admin key passes, a rotated secret is picked up at once,
and a flood of wrong keys costs at most one fresh read of the secret per interval."""

from __future__ import annotations

import pytest

from seekless.auth import AdminAuthenticator
from seekless.errors import AuthenticationFailed, UnknownRoute
from seekless.models import Operator

ADMIN_KEY = "admin-key-of-forty-eight-characters-0123456789ab"


class Secret:
    """The configured admin key as the wiring reads it, counting reads (``fresh`` = past the cache)."""

    def __init__(self, value: str | None) -> None:
        self.value = value  # what the source holds now
        self.cached = value  # what a cached read returns
        self.fresh_reads = 0

    def __call__(self, refresh: bool) -> str | None:
        if refresh:
            self.fresh_reads += 1
            self.cached = self.value
        return self.cached


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def secret() -> Secret:
    return Secret(ADMIN_KEY)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def admin(secret: Secret, clock: Clock) -> AdminAuthenticator:
    return AdminAuthenticator(secret, refresh_seconds=5.0, clock=clock)


def refused(admin: AdminAuthenticator, authorization: str | None) -> AuthenticationFailed:
    with pytest.raises(AuthenticationFailed) as raised:
        admin.authenticate(authorization)
    return raised.value


def test_the_admin_key_passes_without_reading_the_secret_afresh(admin: AdminAuthenticator, secret: Secret) -> None:
    assert admin.authenticate(f"Bearer {ADMIN_KEY}") == Operator()
    assert secret.fresh_reads == 0


@pytest.mark.parametrize(
    "authorization",
    [None, "", f"Basic {ADMIN_KEY}", "Bearer ", "Bearer sk-seekless-local-dev", f"Bearer {ADMIN_KEY}x"],
)
def test_anything_but_the_admin_key_is_a_401(admin: AdminAuthenticator, authorization: str | None) -> None:
    error = refused(admin, authorization)
    assert error.status == 401 and error.type == "authentication_error"


def test_a_wrong_key_says_nothing_of_admin_routes(admin: AdminAuthenticator) -> None:
    error = refused(admin, "Bearer sk-seekless-a-tenant-key")
    assert error.to_body()["error"] == {
        "message": "Incorrect API key provided.",
        "type": "authentication_error",
        "param": None,
        "code": "invalid_api_key",
    }


def test_without_a_configured_admin_key_the_routes_do_not_exist() -> None:
    admin = AdminAuthenticator(Secret(None))
    with pytest.raises(UnknownRoute) as raised:
        admin.authenticate(f"Bearer {ADMIN_KEY}")
    assert raised.value.status == 404
    assert raised.value.to_body()["error"] == {
        "message": "Unknown request URL.",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }


def test_a_rotated_secret_is_read_afresh_once_and_the_new_key_passes(admin: AdminAuthenticator, secret: Secret) -> None:
    admin.authenticate(f"Bearer {ADMIN_KEY}")
    secret.value = "the-rotated-admin-key"
    assert admin.authenticate("Bearer the-rotated-admin-key") == Operator()
    assert secret.fresh_reads == 1
    assert admin.authenticate("Bearer the-rotated-admin-key") == Operator()
    assert secret.fresh_reads == 1  # now it matches the cached value
    refused(admin, f"Bearer {ADMIN_KEY}")  # the old key is over


def test_wrong_keys_read_the_secret_afresh_at_most_once_per_interval(
    admin: AdminAuthenticator, secret: Secret, clock: Clock
) -> None:
    for _ in range(20):
        refused(admin, "Bearer wrong")
    assert secret.fresh_reads == 1
    clock.now += 4.9
    refused(admin, "Bearer wrong")
    assert secret.fresh_reads == 1
    clock.now += 0.1
    refused(admin, "Bearer wrong")
    assert secret.fresh_reads == 2


def test_a_rotation_within_the_interval_of_a_fresh_read_waits_for_the_next_interval(
    admin: AdminAuthenticator, secret: Secret, clock: Clock
) -> None:
    refused(admin, "Bearer wrong")  # a fresh read now
    secret.value = "the-rotated-admin-key"
    refused(admin, "Bearer the-rotated-admin-key")  # the cached value is only just read
    clock.now += 5.0
    assert admin.authenticate("Bearer the-rotated-admin-key") == Operator()
    assert secret.fresh_reads == 2


def test_a_secret_removed_at_its_source_lets_nobody_in(admin: AdminAuthenticator, secret: Secret) -> None:
    secret.value = None
    refused(admin, "Bearer wrong")
    with pytest.raises(UnknownRoute):
        admin.authenticate(f"Bearer {ADMIN_KEY}")
