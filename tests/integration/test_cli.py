"""The `seekless` command's key management against DynamoDB (moto)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from seekless.adapters.dynamodb import DynamoKeyStore
from seekless.auth import Authenticator, hash_key
from seekless_local.cli import main

from .conftest import TABLES


def test_keys_create_prints_a_working_key_once_and_stores_only_its_hash(
    aws: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "create", "--tenant", "acme", "--table", TABLES["ApiKeysTable"], "--json"]) == 0
    created = json.loads(capsys.readouterr().out)
    principal = Authenticator(DynamoKeyStore(TABLES["ApiKeysTable"], client=aws)).authenticate(
        f"Bearer {created['key']}"
    )
    assert principal.tenant_id == "acme" and principal.key_id == created["key_id"]
    items = aws.scan(TableName=TABLES["ApiKeysTable"])["Items"]
    assert created["key"] not in json.dumps(items)
    assert any(item["key_hash"]["S"] == hash_key(created["key"]) for item in items)
