"""Hybrid decisions through the running local stack, as a user drives them: `seekless rulesets push`
of the example ruleset, `seekless decide`, and a decisions file dropped into the bucket, whose results
file names decisions that `GET /v1/decisions/{id}` reads back, to their tenant only."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import yaml

from seekless.adapters.dynamodb import DynamoKeyStore
from seekless.auth import hash_key
from seekless_local import decisions_cli
from seekless_local.stack import LocalStack
from tests.waiting import wait_for

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "rulesets" / "card_risk.yaml"


def options(stack: LocalStack) -> list[str]:
    return ["--url", stack.rest_url + "/v1", "--api-key", stack.dev_api_key]


@pytest.fixture(scope="module")
def records() -> list[dict[str, Any]]:
    return list(yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))["input_schema"]["examples"])


def test_push_decide_and_a_dropped_file_through_the_stack(
    stack: LocalStack, records: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert decisions_cli.main(["rulesets", "push", str(EXAMPLE), "--json", *options(stack)]) == 0
    pushed = json.loads(capsys.readouterr().out)
    assert (pushed["id"], pushed["object"]) == ("card_risk", "ruleset")

    assert stack.emulator is not None
    calls_before = stack.emulator.stats()["calls"]
    assert (
        decisions_cli.main(
            ["decide", "--ruleset", "card_risk", "--input", json.dumps(records[0]), "--json", *options(stack)]
        )
        == 0
    )
    by_rule = json.loads(capsys.readouterr().out)
    assert by_rule["decided_by"].startswith("rule:") and by_rule["ruleset"]["version"] == pushed["version"]
    assert stack.emulator.stats()["calls"] == calls_before  # a final rule decided: no upstream call

    lines = [
        json.dumps({"custom_id": f"tx-{i}", "ruleset": "card_risk", "input": record})
        for i, record in enumerate(records)
    ]
    lines += ['{"custom_id": "broken"', json.dumps({"custom_id": "no-such", "ruleset": "nope", "input": {}})]
    s3 = boto3.client("s3", endpoint_url=stack.moto_url, region_name="us-east-1")
    key = f"decisions/input/dev/payments-{uuid.uuid4().hex}.jsonl"
    s3.put_object(Bucket=stack.buckets["JobsBucket"], Key=key, Body="\n".join(lines).encode())

    headers = {"Authorization": f"Bearer {stack.dev_api_key}"}
    with httpx.Client(base_url=stack.rest_url, headers=headers) as http:

        def ended() -> dict[str, Any] | None:
            listing = http.get("/v1/batches", params={"limit": 100}).json()["data"]
            mine = [b for b in listing if b["input_file_id"] == key]
            return mine[0] if mine and mine[0]["status"] in ("completed", "failed") else None

        batch = wait_for(ended, timeout=60, what="the decisions file to be decided")
        assert (batch["status"], batch["endpoint"]) == ("completed", "/v1/decisions")
        output = [json.loads(text) for text in httpx.get(batch["output_url"]).text.splitlines()]
        errors = [json.loads(text) for text in httpx.get(batch["error_url"]).text.splitlines()]
        assert sorted(r["custom_id"] for r in output) == [f"tx-{i}" for i in range(len(records))]
        assert {(e["line"], e["error"]["code"]) for e in errors} == {
            (len(records) + 1, "invalid_json"),
            (len(records) + 2, "ruleset_not_found"),
        }
        for result in output:
            decision = result["response"]["body"]
            assert decision["ruleset"] == {"id": "card_risk", "version": pushed["version"]}
            read_back = http.get(f"/v1/decisions/{decision['id']}")
            assert read_back.status_code == 200 and read_back.json() == decision

        # Another tenant reads none of them.
        keys = DynamoKeyStore(
            stack.tables["ApiKeysTable"], client=boto3.client("dynamodb", endpoint_url=stack.moto_url)
        )
        other_key = "sk-e2e-decisions-other"
        keys.put(hash_key(other_key), tenant_id="decisions-other", key_id="decisions-other")
        for result in output:
            other = http.get(
                f"/v1/decisions/{result['response']['body']['id']}", headers={"Authorization": f"Bearer {other_key}"}
            )
            assert other.status_code == 404
