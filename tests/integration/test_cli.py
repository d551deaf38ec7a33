"""The `seekless` command: key management against DynamoDB (moto), and the sample events it lists."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from seekless.adapters.dynamodb import DynamoKeyStore
from seekless.auth import Authenticator, hash_key
from seekless_local.cli import main
from seekless_local.events import load_manifest
from seekless_local.template import function_specs

from .conftest import TABLES


def test_keys_create_prints_a_working_key_once_and_stores_only_its_hash(
    aws: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "create", "--tenant", "acme", "--table", TABLES["ApiKeysTable"], "--json"]) == 0
    created = json.loads(capsys.readouterr().out)
    principal = Authenticator(DynamoKeyStore(TABLES["ApiKeysTable"], client=aws)).authenticate(
        f"Bearer {created['key']}"
    )
    assert principal.tenant_id == "acme" and principal.key_id == created["id"]
    items = aws.scan(TableName=TABLES["ApiKeysTable"])["Items"]
    assert created["key"] not in json.dumps(items)
    assert any(item["key_hash"]["S"] == hash_key(created["key"]) for item in items)


def test_events_lists_every_function_of_the_template_with_its_sample_events(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["events"]) == 0
    out = capsys.readouterr().out
    for function, spec in function_specs().items():
        assert re.search(rf"^{function}  \(functions/{spec.code_uri.name}/app\.handler\)$", out, re.MULTILINE), function
    assert "\n  rest/get_healthz   (expected output: rest/get_healthz_output.json)\n" in out
    assert "\n  ws/authorizer_none   (raises 'Unauthorized')\n" in out
    assert re.search(r"^worker  \(not a Lambda\)$", out, re.MULTILINE)
    assert "\n  sqs/job_message\n" in out


def test_events_json_lists_the_same_functions_and_events_as_the_manifest(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["events", "--json"]) == 0
    listing = {entry["name"]: entry for entry in json.loads(capsys.readouterr().out)}
    assert set(function_specs()) <= set(listing) and listing["worker"]["kind"] != "function"
    for name, consumer in load_manifest().items():
        assert [event["file"] for event in listing[name]["events"]] == [event.file for event in consumer.events]
    healthz = next(e for e in listing["RestApiFunction"]["events"] if e["name"] == "rest/get_healthz")
    assert healthz["expected_output"] == "rest/get_healthz_output.json" and healthz["missing"] is False
    assert listing["RestApiFunction"]["handler"] == "functions/rest_api/app.handler"


def test_events_of_one_function_lists_only_its_events(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["events", "RequestsFunction"]) == 0
    header, *events = capsys.readouterr().out.splitlines()
    assert header.startswith("RequestsFunction  ")
    assert [line.strip() for line in events] == [
        "sqs/request_invalid",
        "sqs/request_reply_s3",
        "sqs/request_reply_sqs",
    ]


def test_events_of_an_unknown_function_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["events", "NoSuchFunction"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "NoSuchFunction" in captured.err
