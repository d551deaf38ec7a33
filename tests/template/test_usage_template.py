"""The usage table: one partition per tenant, and exactly the functions that finish requests may add to it."""

from __future__ import annotations

from typing import Any

from tests.template.conftest import function_roles, grants, resource_key

USAGE = resource_key({"Fn::GetAtt": ["UsageTable", "Arn"]})
# Whoever ends a request writes its audit record and adds to the tenant's counters (in Redis; straight into
# the table while Redis is down); the sweeper folds Redis's counters into the table.
WRITERS = {"RestApiFunction", "WsMessageFunction", "GeneratorFunction", "JobSweeperFunction"}


def test_usage_table_is_keyed_by_tenant_then_day_and_model(template: dict[str, Any]) -> None:
    props = template["Resources"]["UsageTable"]["Properties"]
    assert {k["AttributeName"]: k["KeyType"] for k in props["KeySchema"]} == {"tenant_id": "HASH", "period": "RANGE"}
    assert "GlobalSecondaryIndexes" not in props  # a tenant's own partition is the only way in
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}


def test_only_request_finishers_and_the_sweeper_add_usage_and_only_the_rest_api_reads_it(
    transformed: dict[str, Any],
) -> None:
    roles = function_roles(transformed)
    writers = {name for name, role in roles.items() if USAGE in grants(role)}
    assert writers == WRITERS
    for name in WRITERS:
        expected = {"dynamodb:UpdateItem", "dynamodb:Query"} if name == "RestApiFunction" else {"dynamodb:UpdateItem"}
        assert grants(roles[name])[USAGE] == expected, name


def test_the_worker_adds_usage_for_the_jobs_it_runs(template: dict[str, Any]) -> None:
    role = template["Resources"]["WorkerTaskRole"]
    assert grants(role)[USAGE] == {"dynamodb:UpdateItem"}
    containers = template["Resources"]["WorkerTaskDefinition"]["Properties"]["ContainerDefinitions"]
    (worker,) = [c for c in containers if c["Name"] == "worker"]
    env = {item["Name"]: item["Value"] for item in worker["Environment"]}
    assert env["SEEKLESS_USAGE_TABLE"] == {"Ref": "UsageTable"}
