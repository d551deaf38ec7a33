"""Hybrid decisions in template.yaml: the rulesets and decisions tables (a tenant's own partition, no
index), what only the REST function may do with them, and the settings it is given."""

from __future__ import annotations

from typing import Any

import pytest

from seekless_local.template import function_specs
from tests.template.conftest import DATA_KEY, function_roles, grants, resource_key

RULESETS = resource_key({"Fn::GetAtt": ["RulesetsTable", "Arn"]})
DECISIONS = resource_key({"Fn::GetAtt": ["DecisionsTable", "Arn"]})


def _key_schema(props: dict[str, Any]) -> dict[str, str]:
    return {key["AttributeName"]: key["KeyType"] for key in props["KeySchema"]}


@pytest.mark.parametrize(("logical_id", "sort_key"), [("RulesetsTable", "sk"), ("DecisionsTable", "decision_id")])
def test_each_table_is_one_partition_per_tenant_without_an_index(
    template: dict[str, Any], logical_id: str, sort_key: str
) -> None:
    table = template["Resources"][logical_id]
    props = table["Properties"]
    assert _key_schema(props) == {"tenant_id": "HASH", sort_key: "RANGE"}
    assert "GlobalSecondaryIndexes" not in props  # a tenant's own partition is the only way in
    assert props["SSESpecification"] == {"SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": DATA_KEY}
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["DeletionPolicy"] == table["UpdateReplacePolicy"] == "Retain"


def test_decisions_expire_after_the_retention_and_ruleset_versions_never_do(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    assert resources["DecisionsTable"]["Properties"]["TimeToLiveSpecification"] == {
        "AttributeName": "expires_at",
        "Enabled": True,
    }
    assert "TimeToLiveSpecification" not in resources["RulesetsTable"]["Properties"]
    parameter = template["Parameters"]["DecisionRetentionDays"]
    assert (parameter["Type"], parameter["Default"], parameter["MinValue"]) == ("Number", 400, 1)


def test_only_the_rest_and_ingest_functions_touch_them_and_only_with_what_they_use(
    transformed: dict[str, Any],
) -> None:
    roles = function_roles(transformed)
    users = {name for name, role in roles.items() if {RULESETS, DECISIONS} & set(grants(role))}
    assert users == {"RestApiFunction", "BatchIngestFunction"}
    ingest = grants(roles["BatchIngestFunction"])
    assert ingest[RULESETS] == {"dynamodb:GetItem"} and DECISIONS not in ingest  # checks lines, decides none
    granted = grants(roles["RestApiFunction"])
    # A push is a transaction of two conditional Puts (IAM authorizes each as PutItem); no update or
    # delete of either table is ever granted: versions and decisions are written once.
    assert granted[RULESETS] == {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query"}
    assert granted[DECISIONS] == {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query"}


def test_the_worker_task_role_reads_ruleset_versions_and_puts_decisions_only(template: dict[str, Any]) -> None:
    granted = grants(template["Resources"]["WorkerTaskRole"])
    assert granted[RULESETS] == {"dynamodb:GetItem"}  # a decisions file's line names its pinned version
    assert granted[DECISIONS] == {"dynamodb:PutItem"}  # each decision is written once, never read back here
    containers = template["Resources"]["WorkerTaskDefinition"]["Properties"]["ContainerDefinitions"]
    (worker,) = [c for c in containers if c["Name"] == "worker"]
    environment = {pair["Name"]: pair["Value"] for pair in worker["Environment"]}
    assert environment["SEEKLESS_RULESETS_TABLE"] == {"Ref": "RulesetsTable"}
    assert environment["SEEKLESS_DECISIONS_TABLE"] == {"Ref": "DecisionsTable"}
    assert environment["SEEKLESS_DECISION_RETENTION_DAYS"] == {"Ref": "DecisionRetentionDays"}


def test_the_rest_function_is_told_the_tables_and_the_retention(template: dict[str, Any]) -> None:
    environment = function_specs(template)["RestApiFunction"].environment
    assert environment["SEEKLESS_RULESETS_TABLE"] == {"Ref": "RulesetsTable"}
    assert environment["SEEKLESS_DECISIONS_TABLE"] == {"Ref": "DecisionsTable"}
    assert environment["SEEKLESS_DECISION_RETENTION_DAYS"] == {"Ref": "DecisionRetentionDays"}
    outputs = template["Outputs"]
    assert outputs["RulesetsTableName"]["Value"] == {"Ref": "RulesetsTable"}
    assert outputs["DecisionsTableName"]["Value"] == {"Ref": "DecisionsTable"}
