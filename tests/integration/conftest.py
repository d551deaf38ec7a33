"""Integration fixtures: moto tables built from template.yaml, the emulator over a real socket, and a
fresh set of per-environment adapters wired to them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from redis.asyncio import Redis

from seekless import wiring
from seekless.adapters.dynamodb import DynamoKeyStore
from seekless.auth import hash_key
from seekless_local.emulator import EmulatorServer
from seekless_local.template import create_tables

DEV_KEY = "sk-seekless-local-dev"
OTHER_KEY = "sk-seekless-other-tenant"
TABLES = {
    "SessionsTable": "seekless-sessions",
    "ApiKeysTable": "seekless-keys",
    "ConnectionsTable": "seekless-connections",
    "JobsTable": "seekless-jobs",
    "BatchesTable": "seekless-batches",
    "UsageTable": "seekless-usage",
    "RulesetsTable": "seekless-rulesets",
    "DecisionsTable": "seekless-decisions",
}


@pytest.fixture(scope="session")
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer() as server:
        yield server


@pytest.fixture
def emulator_url(emulator: EmulatorServer) -> str:
    emulator.reset(settings=True)
    return emulator.base_url


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """moto's mock_aws with the template's tables and two tenants' keys."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_tables(client, names=TABLES)
        keys = DynamoKeyStore(TABLES["ApiKeysTable"], client=client)
        keys.put(hash_key(DEV_KEY), tenant_id="dev", key_id="dev")
        keys.put(hash_key(OTHER_KEY), tenant_id="other", key_id="other")
        yield client


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """An asyncio client of this test's clean Redis database."""
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def app_env(monkeypatch: pytest.MonkeyPatch, aws: Any, redis_url: str, emulator_url: str) -> Iterator[None]:
    """The environment a deployed function would see, pointed at the local stand-ins."""
    for name, value in {
        "REDIS_URL": redis_url,
        "DEEPSEEK_BASE_URL": emulator_url,
        "DEEPSEEK_API_KEY": "sk-emulator-test",
        "SEEKLESS_SESSIONS_TABLE": TABLES["SessionsTable"],
        "SEEKLESS_KEYS_TABLE": TABLES["ApiKeysTable"],
        "SEEKLESS_RULESETS_TABLE": TABLES["RulesetsTable"],
        "SEEKLESS_DECISIONS_TABLE": TABLES["DecisionsTable"],
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }.items():
        monkeypatch.setenv(name, value)
    wiring.reset_environment()
    yield
    wiring.reset_environment()
