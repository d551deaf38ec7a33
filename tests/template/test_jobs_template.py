"""The jobs resources in template.yaml: table, queues, bucket, and the REST function's narrow grants."""

from __future__ import annotations

from typing import Any

from seekless.adapters.jobs import SUMMARY_ATTRIBUTES
from seekless_local.template import function_specs
from tests.template.conftest import DATA_KEY, DATA_KEY_USE, cache_connect_grants, function_roles, grants, resource_key

TLS_ONLY = {"Bool": {"aws:SecureTransport": "false"}}


def _props(template: dict[str, Any], logical_id: str) -> dict[str, Any]:
    return dict(template["Resources"][logical_id]["Properties"])


def test_jobs_table_keys_tenant_first_and_lists_by_tenant_and_status(template: dict[str, Any]) -> None:
    props = _props(template, "JobsTable")
    assert {k["AttributeName"]: k["KeyType"] for k in props["KeySchema"]} == {"pk": "HASH", "sk": "RANGE"}
    indexes = {index["IndexName"]: index for index in props["GlobalSecondaryIndexes"]}
    assert set(indexes) == {"by_tenant", "by_tenant_status", "unsent", "by_batch"}
    # The sweeper's sparse index: keys only plus what it needs to read each job back.
    assert [k["AttributeName"] for k in indexes["unsent"]["KeySchema"]] == ["unsent_pk", "unsent_sk"]
    assert set(indexes["unsent"]["Projection"]["NonKeyAttributes"]) == {"job_id", "tenant_id"}
    for name, (pk, sk) in {"by_tenant": ("gsi1pk", "gsi1sk"), "by_tenant_status": ("gsi2pk", "gsi2sk")}.items():
        assert [k["AttributeName"] for k in indexes[name]["KeySchema"]] == [pk, sk]
        # Summaries only: a listing never reads requests or results. The adapter maps exactly these.
        projection = indexes[name]["Projection"]
        assert projection["ProjectionType"] == "INCLUDE"
        assert set(projection["NonKeyAttributes"]) == set(SUMMARY_ATTRIBUTES)


def test_jobs_queue_is_encrypted_and_redrives_to_the_dlq_after_five_receives(template: dict[str, Any]) -> None:
    queue = _props(template, "JobsQueue")
    dlq = _props(template, "JobsDeadLetterQueue")
    for props in (queue, dlq):
        assert props["KmsMasterKeyId"] == DATA_KEY
    assert queue["VisibilityTimeout"] == 300
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["JobsDeadLetterQueue", "Arn"]},
        "maxReceiveCount": 5,
    }
    assert dlq["MessageRetentionPeriod"] == 14 * 86_400


def test_jobs_queues_refuse_requests_without_tls(template: dict[str, Any]) -> None:
    policy = _props(template, "JobsQueuesPolicy")
    assert policy["Queues"] == [{"Ref": "JobsQueue"}, {"Ref": "JobsDeadLetterQueue"}]
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Deny" and statement["Condition"] == TLS_ONLY


def test_jobs_bucket_is_private_encrypted_tls_only_and_expires_results(template: dict[str, Any]) -> None:
    bucket = template["Resources"]["JobsBucket"]
    props = bucket["Properties"]
    (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": DATA_KEY}
    assert set(props["PublicAccessBlockConfiguration"].values()) == {True}
    assert len(props["PublicAccessBlockConfiguration"]) == 4
    expiring = [r for r in props["LifecycleConfiguration"]["Rules"] if "ExpirationInDays" in r]
    assert expiring and all(r["Status"] == "Enabled" for r in expiring)
    assert bucket["DeletionPolicy"] == bucket["UpdateReplacePolicy"] == "Retain"
    policy = _props(template, "JobsBucketPolicy")
    assert policy["Bucket"] == {"Ref": "JobsBucket"}
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Deny" and statement["Condition"] == TLS_ONLY
    assert {"Fn::Sub": "${JobsBucket.Arn}/*"} in statement["Resource"]


def test_rest_function_may_only_write_jobs_send_to_the_queue_and_read_results(transformed: dict[str, Any]) -> None:
    granted = grants(function_roles(transformed)["RestApiFunction"])

    def actions(resource: Any) -> set[str]:
        return granted.get(resource_key(resource), set())

    assert actions({"Fn::GetAtt": ["JobsTable", "Arn"]}) == {
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:TransactWriteItems",
    }
    for index in ("by_tenant", "by_tenant_status"):
        assert actions({"Fn::Sub": f"${{JobsTable.Arn}}/index/{index}"}) == {"dynamodb:Query"}
    assert actions({"Fn::GetAtt": ["JobsQueue", "Arn"]}) == {"sqs:SendMessage"}
    assert actions({"Fn::Sub": "${JobsBucket.Arn}/jobs/*"}) == {"s3:GetObject"}
    # Nothing reaches the dead-letter queue or the bucket itself.
    assert not actions({"Fn::GetAtt": ["JobsDeadLetterQueue", "Arn"]})
    assert not actions({"Fn::GetAtt": ["JobsBucket", "Arn"]})


def test_only_the_job_producers_touch_the_jobs_resources(transformed: dict[str, Any]) -> None:
    # The REST API, the WebSocket message route, batch ingest and queued requests create jobs, the
    # sweeper re-sends unconfirmed ones and finishes stuck batches; the worker (an ECS task role) runs them.
    producers = (
        "RestApiFunction",
        "WsMessageFunction",
        "JobSweeperFunction",
        "BatchIngestFunction",
        "RequestsFunction",
    )
    for logical_id, role in function_roles(transformed).items():
        if logical_id in producers:
            continue
        assert not any("Jobs" in resource for resource in grants(role)), logical_id


def test_rest_function_is_told_where_jobs_live(template: dict[str, Any]) -> None:
    environment = function_specs(template)["RestApiFunction"].environment
    assert environment["SEEKLESS_JOBS_TABLE"] == {"Ref": "JobsTable"}
    assert environment["SEEKLESS_JOBS_QUEUE_URL"] == {"Ref": "JobsQueue"}  # Ref of a queue is its URL
    assert environment["SEEKLESS_JOBS_BUCKET"] == {"Ref": "JobsBucket"}
    assert environment["SEEKLESS_JOB_TTL_DAYS"] == {"Ref": "JobRetentionDays"}


def test_the_sweeper_runs_every_minute_with_least_privilege(transformed: dict[str, Any]) -> None:
    role = function_roles(transformed)["JobSweeperFunction"]
    batch_files = {"s3:GetObject", "s3:PutObject"}
    assert grants(role) == {
        resource_key({"Fn::Sub": "${JobsTable.Arn}/index/unsent"}): {"dynamodb:Query"},
        resource_key({"Fn::GetAtt": ["JobsTable", "Arn"]}): {"dynamodb:GetItem", "dynamodb:UpdateItem"},
        resource_key({"Fn::GetAtt": ["JobsQueue", "Arn"]}): {"sqs:SendMessage"},
        resource_key({"Fn::GetAtt": ["BatchesTable", "Arn"]}): {"dynamodb:GetItem", "dynamodb:UpdateItem"},
        resource_key({"Fn::Sub": "${BatchesTable.Arn}/index/open"}): {"dynamodb:Query"},
        resource_key({"Fn::Sub": "${JobsTable.Arn}/index/by_batch"}): {"dynamodb:Query"},
        resource_key({"Fn::Sub": "${JobsBucket.Arn}/batches/work/*"}): batch_files,
        resource_key({"Fn::Sub": "${JobsBucket.Arn}/batches/output/*"}): batch_files,
        resource_key({"Fn::Sub": "${JobsBucket.Arn}/batches/errors/*"}): batch_files,
        resource_key(DATA_KEY): DATA_KEY_USE,
        # It folds the usage counters kept in Redis into the usage table.
        resource_key({"Fn::GetAtt": ["UsageTable", "Arn"]}): {"dynamodb:UpdateItem"},
        **cache_connect_grants(),
    }
    rules = [r for r in transformed["Resources"].values() if r["Type"] == "AWS::Events::Rule"]
    assert any(r["Properties"].get("ScheduleExpression") == "rate(1 minute)" for r in rules)
