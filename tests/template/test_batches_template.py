"""Batch files and queued requests in template.yaml: S3 → queue → function, the requests queue, and
each function's narrow grants."""

from __future__ import annotations

from typing import Any

from tests.template.conftest import DATA_KEY, DATA_KEY_USE, function_roles, grants, resource_key, resources


def _props(template: dict[str, Any], logical_id: str) -> dict[str, Any]:
    return dict(template["Resources"][logical_id]["Properties"])


def _arn(logical_id: str) -> dict[str, Any]:
    return {"Fn::GetAtt": [logical_id, "Arn"]}


def test_new_batch_and_decision_files_notify_the_uploads_queue_and_nothing_else(template: dict[str, Any]) -> None:
    bucket = template["Resources"]["JobsBucket"]
    notifications = bucket["Properties"]["NotificationConfiguration"]["QueueConfigurations"]
    assert [n["Queue"] for n in notifications] == [_arn("BatchUploadsQueue")] * 2
    assert {n["Event"] for n in notifications} == {"s3:ObjectCreated:*"}
    rules = [{r["Name"]: r["Value"] for r in n["Filter"]["S3Key"]["Rules"]} for n in notifications]
    # Results (batches/output/, batches/errors/) never re-trigger ingest.
    assert rules == [
        {"prefix": "batches/input/", "suffix": ".jsonl"},
        {"prefix": "decisions/input/", "suffix": ".jsonl"},
    ]
    assert bucket["DependsOn"] == "BatchUploadsQueuePolicy"  # S3 checks it may send when configured


def test_only_s3_of_this_account_may_send_to_the_uploads_queue(template: dict[str, Any]) -> None:
    allow, deny = _props(template, "BatchUploadsQueuePolicy")["PolicyDocument"]["Statement"]
    assert allow["Principal"] == {"Service": "s3.amazonaws.com"} and allow["Action"] == "sqs:SendMessage"
    assert allow["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_queues_hide_a_message_longer_than_six_function_timeouts_and_dead_letter_it(template: dict[str, Any]) -> None:
    # Lambda's SQS event source wants visibility >= 6x the timeout, so a retry never overlaps a run.
    for mapping_id, queue_id, function_id in (
        ("BatchIngestUploads", "BatchUploadsQueue", "BatchIngestFunction"),
        ("RequestsMapping", "RequestsQueue", "RequestsFunction"),
    ):
        mapping = _props(template, mapping_id)
        assert mapping["EventSourceArn"] == _arn(queue_id)
        assert mapping["FunctionName"] == {"Ref": function_id}
        assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        queue = _props(template, queue_id)
        timeout = _props(template, function_id)["Timeout"]
        assert queue["VisibilityTimeout"] >= 6 * timeout, queue_id
        assert queue["RedrivePolicy"]["maxReceiveCount"] >= 2
        assert queue["KmsMasterKeyId"] == DATA_KEY
    assert _props(template, "BatchIngestUploads")["BatchSize"] == 1  # one file per invocation
    assert _props(template, "RequestsMapping")["BatchSize"] == 10


def test_no_function_gets_sams_any_queue_sqs_policy(transformed: dict[str, Any]) -> None:
    for logical_id, role in resources(transformed, "AWS::IAM::Role").items():
        managed = [str(arn) for arn in role["Properties"].get("ManagedPolicyArns", [])]
        assert not any("AWSLambdaSQSQueueExecutionRole" in arn for arn in managed), logical_id


def test_batch_ingest_reads_inputs_writes_results_and_creates_jobs_only(transformed: dict[str, Any]) -> None:
    granted = grants(function_roles(transformed)["BatchIngestFunction"])
    files = {"s3:GetObject", "s3:PutObject"}
    assert granted == {
        resource_key({"Fn::Sub": "${JobsBucket.Arn}/batches/input/*"}): {"s3:GetObject"},
        resource_key({"Fn::Sub": "${JobsBucket.Arn}/decisions/input/*"}): {"s3:GetObject"},
        resource_key(_arn("RulesetsTable")): {"dynamodb:GetItem"},  # a decisions file's lines are checked
        **{
            resource_key({"Fn::Sub": f"${{JobsBucket.Arn}}/batches/{p}/*"}): files for p in ("work", "output", "errors")
        },
        resource_key(_arn("BatchesTable")): {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"},
        resource_key(_arn("JobsTable")): {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:BatchWriteItem"},
        resource_key({"Fn::Sub": "${JobsTable.Arn}/index/by_batch"}): {"dynamodb:Query"},
        resource_key(_arn("JobsQueue")): {"sqs:SendMessage"},
        resource_key(_arn("BatchUploadsQueue")): {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"},
        resource_key(DATA_KEY): DATA_KEY_USE,
    }


def test_requests_function_creates_jobs_and_answers_only_on_the_stacks_reply_destinations(
    transformed: dict[str, Any],
) -> None:
    granted = grants(function_roles(transformed)["RequestsFunction"])
    assert granted == {
        resource_key(_arn("JobsTable")): {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"},
        resource_key(_arn("JobsQueue")): {"sqs:SendMessage"},
        resource_key(_arn("RepliesQueue")): {"sqs:SendMessage"},
        resource_key({"Fn::Sub": "${JobsBucket.Arn}/replies/*"}): {"s3:PutObject"},
        resource_key(_arn("RequestsQueue")): {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"},
        resource_key(DATA_KEY): DATA_KEY_USE,
    }


def test_the_reply_allowlists_match_what_the_worker_may_write(template: dict[str, Any]) -> None:
    environment = _props(template, "RequestsFunction")["Environment"]["Variables"]
    assert environment["SEEKLESS_REPLY_QUEUE_URLS"] == {"Ref": "RepliesQueue"}
    assert environment["SEEKLESS_REPLY_S3_PREFIXES"] == {"Fn::Sub": "s3://${JobsBucket}/replies/"}
    worker = {
        e["Name"]: e["Value"]
        for container in _props(template, "WorkerTaskDefinition")["ContainerDefinitions"]
        for e in container.get("Environment", [])
    }
    assert worker["SEEKLESS_REPLY_QUEUE_URLS"] == environment["SEEKLESS_REPLY_QUEUE_URLS"]
    assert worker["SEEKLESS_REPLY_S3_PREFIXES"] == environment["SEEKLESS_REPLY_S3_PREFIXES"]
