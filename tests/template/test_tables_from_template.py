"""Tables built from template.yaml carry exactly the template's keys, index and TTL (STYLE.md #11)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from seekless_local.template import create_tables, load_template, table_definitions


@pytest.fixture
def dynamodb(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield boto3.client("dynamodb", region_name="us-east-1")


def _key_schema(description: dict[str, Any]) -> dict[str, str]:
    return {key["AttributeName"]: key["KeyType"] for key in description["KeySchema"]}


def test_create_tables_names_each_table_after_its_logical_id(dynamodb: Any) -> None:
    names = create_tables(dynamodb)
    assert names == {
        "SessionsTable": "seekless-sessionstable",
        "ApiKeysTable": "seekless-apikeystable",
        "ConnectionsTable": "seekless-connectionstable",
        "JobsTable": "seekless-jobstable",
        "BatchesTable": "seekless-batchestable",
        "UsageTable": "seekless-usagetable",
        "RulesetsTable": "seekless-rulesetstable",
        "DecisionsTable": "seekless-decisionstable",
    }
    assert sorted(dynamodb.list_tables()["TableNames"]) == sorted(names.values())


def test_caller_chosen_names_override_the_default(dynamodb: Any) -> None:
    names = create_tables(dynamodb, names={"SessionsTable": "test-sessions"})
    assert names == {
        "SessionsTable": "test-sessions",
        "ApiKeysTable": "seekless-apikeystable",
        "ConnectionsTable": "seekless-connectionstable",
        "JobsTable": "seekless-jobstable",
        "BatchesTable": "seekless-batchestable",
        "UsageTable": "seekless-usagetable",
        "RulesetsTable": "seekless-rulesetstable",
        "DecisionsTable": "seekless-decisionstable",
    }


def test_sessions_table_has_the_templates_keys_and_tenant_index(dynamodb: Any) -> None:
    names = create_tables(dynamodb)
    table = dynamodb.describe_table(TableName=names["SessionsTable"])["Table"]
    assert _key_schema(table) == {"pk": "HASH", "sk": "RANGE"}
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    (index,) = table["GlobalSecondaryIndexes"]
    assert index["IndexName"] == "by_tenant"
    assert _key_schema(index) == {"gsi1pk": "HASH", "gsi1sk": "RANGE"}
    assert index["Projection"]["ProjectionType"] == "ALL"
    attributes = {a["AttributeName"]: a["AttributeType"] for a in table["AttributeDefinitions"]}
    assert attributes == {"pk": "S", "sk": "S", "gsi1pk": "S", "gsi1sk": "S"}


def test_api_keys_table_is_keyed_by_key_hash_with_one_tenant_index(dynamodb: Any) -> None:
    names = create_tables(dynamodb)
    table = dynamodb.describe_table(TableName=names["ApiKeysTable"])["Table"]
    assert _key_schema(table) == {"key_hash": "HASH"}
    # One index only: CloudFormation adds at most one GSI to a table per stack update.
    (index,) = table["GlobalSecondaryIndexes"]
    assert index["IndexName"] == "by_tenant"
    assert _key_schema(index) == {"tenant_id": "HASH", "created_at": "RANGE"}
    assert index["Projection"]["ProjectionType"] == "ALL"
    attributes = {a["AttributeName"]: a["AttributeType"] for a in table["AttributeDefinitions"]}
    assert attributes == {"key_hash": "S", "tenant_id": "S", "created_at": "N"}


def test_the_api_keys_tenant_index_lists_a_tenants_keys_newest_first(dynamodb: Any) -> None:
    table_name = create_tables(dynamodb)["ApiKeysTable"]
    for key_hash, tenant_id, created_at in [("h1", "acme", 100), ("h2", "acme", 200), ("h3", "other", 300)]:
        dynamodb.put_item(
            TableName=table_name,
            Item={"key_hash": {"S": key_hash}, "tenant_id": {"S": tenant_id}, "created_at": {"N": str(created_at)}},
        )
    page = dynamodb.query(
        TableName=table_name,
        IndexName="by_tenant",
        KeyConditionExpression="tenant_id = :tenant",
        ExpressionAttributeValues={":tenant": {"S": "acme"}},
        ScanIndexForward=False,
    )
    assert [item["key_hash"]["S"] for item in page["Items"]] == ["h2", "h1"]


def test_connections_table_is_keyed_by_connection_id_with_a_tenant_index(dynamodb: Any) -> None:
    names = create_tables(dynamodb)
    table = dynamodb.describe_table(TableName=names["ConnectionsTable"])["Table"]
    assert _key_schema(table) == {"connection_id": "HASH"}
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    (index,) = table["GlobalSecondaryIndexes"]
    assert index["IndexName"] == "by_tenant"
    assert _key_schema(index) == {"tenant_id": "HASH", "connected_at": "RANGE"}
    attributes = {a["AttributeName"]: a["AttributeType"] for a in table["AttributeDefinitions"]}
    assert attributes == {"connection_id": "S", "tenant_id": "S", "connected_at": "N"}


def test_a_tenants_connections_are_listed_newest_first_without_a_scan(dynamodb: Any) -> None:
    table_name = create_tables(dynamodb)["ConnectionsTable"]
    for connection_id, tenant_id, connected_at in [
        ("Aaa111connId=", "acme", 1_767_225_600_000),
        ("Bbb222connId=", "acme", 1_767_225_700_000),
        ("Ccc333connId=", "other", 1_767_225_800_000),
    ]:
        dynamodb.put_item(
            TableName=table_name,
            Item={
                "connection_id": {"S": connection_id},
                "tenant_id": {"S": tenant_id},
                "connected_at": {"N": str(connected_at)},
            },
        )
    page = dynamodb.query(
        TableName=table_name,
        IndexName="by_tenant",
        KeyConditionExpression="tenant_id = :tenant",
        ExpressionAttributeValues={":tenant": {"S": "acme"}},
        ScanIndexForward=False,
    )
    assert [item["connection_id"]["S"] for item in page["Items"]] == ["Bbb222connId=", "Aaa111connId="]


@pytest.mark.parametrize("logical_id", ["SessionsTable", "ApiKeysTable", "ConnectionsTable"])
def test_ttl_is_enabled_on_expires_at(dynamodb: Any, logical_id: str) -> None:
    names = create_tables(dynamodb)
    ttl = dynamodb.describe_time_to_live(TableName=names[logical_id])["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}


def test_table_definitions_follow_an_edited_template(dynamodb: Any) -> None:
    template = load_template()
    sessions = template["Resources"]["SessionsTable"]["Properties"]
    sessions["GlobalSecondaryIndexes"][0]["IndexName"] = "renamed"
    del sessions["TimeToLiveSpecification"]
    assert table_definitions(template)["SessionsTable"]["GlobalSecondaryIndexes"][0]["IndexName"] == "renamed"

    names = create_tables(dynamodb, template)
    table = dynamodb.describe_table(TableName=names["SessionsTable"])["Table"]
    assert table["GlobalSecondaryIndexes"][0]["IndexName"] == "renamed"
    ttl = dynamodb.describe_time_to_live(TableName=names["SessionsTable"])["TimeToLiveDescription"]
    assert ttl["TimeToLiveStatus"] == "DISABLED"
