"""BatchIngestFunction and RequestsFunction invoked with their events, as `sam local invoke -e` (or the
local event-source poller) would: partial batch failures, S3's test event, URL-encoded keys."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest

from seekless_local.events import load_event
from seekless_local.gateway import ExecutionEnvironments
from seekless_local.template import create_buckets, create_queues, function_specs, load_handler

from .conftest import TABLES

BUCKET = "seekless-jobs"
Invoke = Callable[[str, dict[str, Any]], Any]


@pytest.fixture
def queues(app_env: None, aws: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    sqs = boto3.client("sqs", region_name="us-east-1")
    urls = create_queues(sqs, names={"JobsQueue": "seekless-jobs", "RepliesQueue": "seekless-replies"})
    create_buckets(boto3.client("s3", region_name="us-east-1"), names={"JobsBucket": BUCKET})
    for name, value in {
        "SEEKLESS_JOBS_TABLE": TABLES["JobsTable"],
        "SEEKLESS_BATCHES_TABLE": TABLES["BatchesTable"],
        "SEEKLESS_JOBS_QUEUE_URL": urls["JobsQueue"],
        "SEEKLESS_JOBS_BUCKET": BUCKET,
        "SEEKLESS_REPLY_QUEUE_URLS": urls["RepliesQueue"],
        "SEEKLESS_REPLY_S3_PREFIXES": f"s3://{BUCKET}/replies/",
    }.items():
        monkeypatch.setenv(name, value)
    return urls


@pytest.fixture
def invoke(queues: dict[str, str]) -> Iterator[Invoke]:
    specs = function_specs()
    opened: dict[str, ExecutionEnvironments] = {}

    def call(logical_id: str, event: dict[str, Any]) -> Any:
        if logical_id not in opened:
            spec = specs[logical_id]
            opened[logical_id] = ExecutionEnvironments(lambda: load_handler(spec), name=logical_id, timeout=60, size=1)
        return opened[logical_id].invoke_sync(event)

    yield call
    for environments in opened.values():
        environments.close()


def _record(body: dict[str, Any] | str, message_id: str) -> dict[str, Any]:
    record = load_event("sqs/request_reply_sqs")["Records"][0]
    return {**record, "messageId": message_id, "body": body if isinstance(body, str) else json.dumps(body)}


def _request(reply_to: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {
        "tenant_id": "dev",
        "request": {"model": "deepseek-flash", "messages": [{"role": "user", "content": "hi"}]},
        "reply_to": reply_to,
        **extra,
    }


def _messages(url: str) -> list[dict[str, Any]]:
    sqs = boto3.client("sqs", region_name="us-east-1")
    return [
        json.loads(m["Body"]) for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    ]


def test_only_the_requests_that_can_never_be_answered_fail_the_batch(invoke: Invoke, queues: dict[str, str]) -> None:
    replies = {"queue_url": queues["RepliesQueue"]}
    event = {
        "Records": [
            _record(_request(replies), "good"),
            _record(_request(replies, request={"model": "no-such-model", "messages": []}), "invalid-answered"),
            _record("not json at all", "unreadable"),
            _record(_request({"queue_url": "https://sqs.us-east-1.amazonaws.com/1/not-ours"}), "not-allowed"),
        ]
    }
    answer = invoke("RequestsFunction", event)
    assert sorted(f["itemIdentifier"] for f in answer["batchItemFailures"]) == ["not-allowed", "unreadable"]
    (job_message,) = _messages(queues["JobsQueue"])
    assert job_message["reply_to"] == replies and job_message["tenant_id"] == "dev"
    (error,) = _messages(queues["RepliesQueue"])
    assert error["status"] == "failed" and error["error"]["code"] == "invalid_request_message"


def test_a_redelivered_request_makes_no_second_job(invoke: Invoke, queues: dict[str, str]) -> None:
    event = {"Records": [_record(_request({"queue_url": queues["RepliesQueue"]}), "same-message")]}
    assert invoke("RequestsFunction", event) == {"batchItemFailures": []}
    assert invoke("RequestsFunction", event) == {"batchItemFailures": []}
    first, second = _messages(queues["JobsQueue"]), _messages(queues["JobsQueue"])
    assert len(first) + len(second) <= 2  # resent while still queued, at most: one job either way
    assert {m["job_id"] for m in first + second} == {first[0]["job_id"]}


def test_a_plain_s3_event_with_an_encoded_key_starts_its_batch(invoke: Invoke, queues: dict[str, str]) -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    event = load_event("s3/batch_put_encoded_key")
    key = "batches/input/dev/risk review (2026-11).jsonl"
    line = {
        "custom_id": "a",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "deepseek-flash", "messages": [{"role": "user", "content": "hi"}]},
    }
    s3.put_object(Bucket=BUCKET, Key=key, Body=(json.dumps(line) + "\nnot json\n").encode())
    (batch,) = invoke("BatchIngestFunction", event)["batches"]
    assert batch["status"] == "in_progress" and batch["input_file_id"] == key
    assert batch["request_counts"] == {"total": 2, "completed": 0, "failed": 1}
    (job,) = _messages(queues["JobsQueue"])
    assert job["batch_id"] == batch["id"]


def test_s3s_test_event_on_the_uploads_queue_is_ignored(invoke: Invoke) -> None:
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2026-11-28T12:00:00Z", "Bucket": BUCKET}
    record = {**load_event("sqs/batch_upload")["Records"][0], "body": json.dumps(test_event)}
    assert invoke("BatchIngestFunction", {"Records": [record]}) == {"batchItemFailures": []}


def test_an_event_for_a_file_already_deleted_is_done_and_makes_no_batch(invoke: Invoke) -> None:
    assert invoke("BatchIngestFunction", load_event("sqs/batch_upload")) == {"batchItemFailures": []}
    dynamodb = boto3.client("dynamodb", region_name="us-east-1")
    assert dynamodb.scan(TableName=TABLES["BatchesTable"])["Items"] == []
