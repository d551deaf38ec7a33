"""Lambda's SQS event source mapping, locally (seekless_local.event_sources), against a moto server.

A small template (written per test) declares the queues, a bucket with an S3 → SQS notification and
three functions sharing one recording handler: one reporting partial batch failures, one not (both
mapped by their ``Events``), and one fed by the bucket (mapped by an EventSourceMapping resource).
The handler keeps every event it gets and fails the records whose body says so.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import boto3
import pytest
from aws_lambda_powertools.utilities.parser.models import S3Model

from seekless_local.event_sources import InvalidBatchResponse, SqsPoller, failed_message_ids
from seekless_local.stack import LocalStack, MotoServer, StackConfig
from seekless_local.template import (
    create_queues,
    function_specs,
    load_handler,
    load_template,
    queue_arns,
    sqs_event_sources,
)
from tests.waiting import wait_for

TEMPLATE = """
Transform: AWS::Serverless-2016-10-31
Resources:
  ReportedQueue:
    Type: AWS::SQS::Queue
    Properties:
      VisibilityTimeout: 1
      RedrivePolicy:
        deadLetterTargetArn: !GetAtt ReportedDeadLetterQueue.Arn
        maxReceiveCount: 2
  ReportedDeadLetterQueue:
    Type: AWS::SQS::Queue
  PlainQueue:
    Type: AWS::SQS::Queue
    Properties:
      VisibilityTimeout: 1
  UploadsQueue:
    Type: AWS::SQS::Queue
  FilesBucket:
    Type: AWS::S3::Bucket
    Properties:
      NotificationConfiguration:
        QueueConfigurations:
          - Event: s3:ObjectCreated:*
            Queue: !GetAtt UploadsQueue.Arn
            Filter:
              S3Key:
                Rules:
                  - Name: prefix
                    Value: in/
                  - Name: suffix
                    Value: .jsonl
  ReportingFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: recorder/
      Handler: app.handler
      Events:
        Work:
          Type: SQS
          Properties:
            Queue: !GetAtt ReportedQueue.Arn
            BatchSize: 10
            FunctionResponseTypes: [ReportBatchItemFailures]
  PlainFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: recorder/
      Handler: app.handler
      Events:
        Work:
          Type: SQS
          Properties:
            Queue: !GetAtt PlainQueue.Arn
            BatchSize: 10
  UploadsFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: recorder/
      Handler: app.handler
  # The other spelling of a mapping: a resource of its own, as template.yaml writes them.
  UploadsMapping:
    Type: AWS::Lambda::EventSourceMapping
    Properties:
      EventSourceArn: !GetAtt UploadsQueue.Arn
      FunctionName: !Ref UploadsFunction
      BatchSize: 1
      FunctionResponseTypes: [ReportBatchItemFailures]
"""

HANDLER = """
received = []  # every event this function got, in order


def handler(event, context):
    received.append(event)
    bodies = [record["body"] for record in event["Records"]]
    if "raise" in bodies:
        raise RuntimeError("told to raise")
    if "invalid" in bodies:
        return {"batchItemFailures": [{"itemIdentifier": "not-a-message-of-this-batch"}]}
    failed = [record["messageId"] for record in event["Records"] if record["body"].startswith("fail")]
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failed]}
"""


@pytest.fixture
def template_path(tmp_path: Path) -> Path:
    # A folder per test: the handler module (and its `received`) is then a fresh one each time.
    (tmp_path / "recorder").mkdir()
    (tmp_path / "recorder" / "app.py").write_text(HANDLER)
    path = tmp_path / "template.yaml"
    path.write_text(TEMPLATE)
    return path


def received(template_path: Path, function: str) -> list[dict[str, Any]]:
    """The events ``function`` got (the module is the one the poller or the stack imported)."""
    spec = function_specs(load_template(template_path), base_dir=template_path.parent)[function]
    events: list[dict[str, Any]] = load_handler(spec).__globals__["received"]
    return events


# ---------------------------------------------------------------- one mapping, one batch at a time


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture
def sqs(moto: MotoServer) -> Any:
    return boto3.client(
        "sqs", endpoint_url=moto.url, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )


class Mapping:
    """One event source mapping of the test template, on queues of this test's own."""

    def __init__(self, template_path: Path, sqs: Any, function: str) -> None:
        template = load_template(template_path)
        suffix = uuid.uuid4().hex[:8]
        names = {lid: f"{lid.lower()}-{suffix}" for lid, r in template["Resources"].items() if "SQS" in r["Type"]}
        self.urls = create_queues(sqs, template, names=names)
        self.arns = queue_arns(sqs, self.urls)
        (self.source,) = [s for s in sqs_event_sources(template) if s.function == function]
        self.url = self.urls[self.source.queue]
        spec = function_specs(template, base_dir=template_path.parent)[function]
        handler = load_handler(spec)
        self.received: list[dict[str, Any]] = handler.__globals__["received"]
        self.sqs = sqs
        self.poller = SqsPoller(
            self.source,
            queue_url=self.url,
            queue_arn=self.arns[self.source.queue],
            invoke=lambda event: handler(event, None),
            sqs=sqs,
            wait_seconds=1,
        )

    def send(self, *bodies: str, **attributes: Any) -> list[str]:
        # One call, so the first receive sees them all.
        entries = [{"Id": str(i), "MessageBody": body, **attributes} for i, body in enumerate(bodies)]
        response = self.sqs.send_message_batch(QueueUrl=self.url, Entries=entries)
        assert not response.get("Failed")
        by_id = {entry["Id"]: entry["MessageId"] for entry in response["Successful"]}
        return [by_id[str(i)] for i in range(len(bodies))]

    def counts(self, queue: str | None = None) -> tuple[int, int]:
        """(visible, in flight) messages of the mapping's queue, or of another queue of the template."""
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.urls[queue] if queue else self.url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])

    def next_batch(self, timeout: float = 15.0) -> Any:
        return wait_for(lambda: self.poller.poll_once(wait_seconds=1), timeout=timeout)


@pytest.fixture
def reporting(template_path: Path, sqs: Any) -> Mapping:
    return Mapping(template_path, sqs, "ReportingFunction")


@pytest.fixture
def plain(template_path: Path, sqs: Any) -> Mapping:
    return Mapping(template_path, sqs, "PlainFunction")


def test_the_function_gets_lambdas_sqs_event_shape(reporting: Mapping) -> None:
    (message_id,) = reporting.send(
        '{"hello": "world"}',
        MessageAttributes={
            "contract": {"DataType": "String", "StringValue": "GenerationJob/v2"},
            "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
        },
    )
    reporting.next_batch()
    ((record,),) = [event["Records"] for event in reporting.received]
    assert record["messageId"] == message_id and record["receiptHandle"]
    assert record["body"] == '{"hello": "world"}'
    assert record["eventSource"] == "aws:sqs" and record["awsRegion"] == "us-east-1"
    assert record["eventSourceARN"] == reporting.arns["ReportedQueue"]
    assert record["eventSourceARN"].startswith("arn:aws:sqs:us-east-1:") and record["md5OfBody"]
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert {"SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp"} <= set(record["attributes"])
    assert record["messageAttributes"] == {
        "contract": {
            "stringValue": "GenerationJob/v2",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "String",
        },
        "blob": {"binaryValue": "AAE=", "stringListValues": [], "binaryListValues": [], "dataType": "Binary"},
    }
    assert record["md5OfMessageAttributes"]


def test_a_partial_failure_deletes_every_record_but_the_reported_ones(reporting: Mapping) -> None:
    ok_1, failed, ok_2 = reporting.send("ok-1", "fail-2", "ok-3")
    outcome = reporting.poller.poll_once(wait_seconds=1)
    assert outcome is not None and outcome.error is None
    assert sorted(outcome.message_ids) == sorted([ok_1, failed, ok_2])
    assert sorted(outcome.deleted) == sorted([ok_1, ok_2]) and outcome.kept == [failed]
    assert reporting.counts() == (0, 1)  # only the failed one, invisible until its visibility ends


def test_a_reported_record_comes_back_after_the_visibility_timeout(reporting: Mapping) -> None:
    _, failed = reporting.send("ok-1", "fail-2")
    reporting.next_batch()
    again = reporting.next_batch()  # VisibilityTimeout is 1 s in the test template
    assert again.message_ids == [failed]
    (record,) = reporting.received[-1]["Records"]
    assert record["body"] == "fail-2" and record["attributes"]["ApproximateReceiveCount"] == "2"


def test_a_raising_handler_deletes_nothing(reporting: Mapping) -> None:
    reporting.send("ok-1", "raise")
    outcome = reporting.poller.poll_once(wait_seconds=1)
    assert outcome is not None and outcome.deleted == []
    assert outcome.error == "RuntimeError: told to raise"
    assert reporting.counts() == (0, 2)


def test_an_unknown_item_identifier_fails_the_whole_batch(reporting: Mapping) -> None:
    reporting.send("ok-1", "invalid")
    outcome = reporting.poller.poll_once(wait_seconds=1)
    assert outcome is not None and outcome.deleted == []
    assert outcome.error is not None and "not a message of this batch" in outcome.error
    assert reporting.counts() == (0, 2)


def test_without_report_batch_item_failures_a_returning_handler_deletes_the_whole_batch(plain: Mapping) -> None:
    ids = plain.send("ok-1", "fail-2")  # the handler names fail-2; this mapping does not read responses
    outcome = plain.poller.poll_once(wait_seconds=1)
    assert outcome is not None and sorted(outcome.deleted) == sorted(ids)
    assert plain.counts() == (0, 0)


def test_without_report_batch_item_failures_a_raising_handler_deletes_nothing(plain: Mapping) -> None:
    plain.send("ok-1", "raise")
    outcome = plain.poller.poll_once(wait_seconds=1)
    assert outcome is not None and outcome.deleted == []
    assert plain.counts() == (0, 2)


def test_a_record_failing_max_receive_count_times_moves_to_the_dead_letter_queue(reporting: Mapping) -> None:
    (failed,) = reporting.send("fail-always")
    reporting.next_batch()
    reporting.next_batch()  # the second receive: maxReceiveCount (2) reached
    # The third receive finds it received twice already: the queue's RedrivePolicy moves it instead.
    wait_for(
        lambda: reporting.poller.poll_once(wait_seconds=1) is None and reporting.counts("ReportedDeadLetterQueue")[0]
    )
    assert [event["Records"][0]["attributes"]["ApproximateReceiveCount"] for event in reporting.received] == ["1", "2"]
    assert reporting.counts() == (0, 0)
    (moved,) = reporting.sqs.receive_message(QueueUrl=reporting.urls["ReportedDeadLetterQueue"])["Messages"]
    assert moved["MessageId"] == failed and moved["Body"] == "fail-always"


@pytest.mark.parametrize(
    "response",
    [
        "ok",
        ["not", "an", "object"],
        {"batchItemFailures": "m1"},
        {"batchItemFailures": [{"itemIdentifier": ""}]},
        {"batchItemFailures": [{"itemIdentifier": None}]},
        {"batchItemFailures": [{"id": "m1"}]},
        {"batchItemFailures": [{"itemIdentifier": "elsewhere"}]},
        {"batchItemFailures": ["m1"]},
    ],
)
def test_responses_lambda_rejects_are_whole_batch_failures(response: Any) -> None:
    with pytest.raises(InvalidBatchResponse):
        failed_message_ids(response, ["m1", "m2"])


@pytest.mark.parametrize(
    ("response", "failed"),
    [
        (None, set()),
        ({}, set()),
        ({"batchItemFailures": None}, set()),
        ({"batchItemFailures": []}, set()),
        ({"batchItemFailures": [{"itemIdentifier": "m2"}]}, {"m2"}),
    ],
)
def test_responses_lambda_accepts(response: Any, failed: set[str]) -> None:
    assert failed_message_ids(response, ["m1", "m2"]) == failed


# ---------------------------------------------------------------- the mappings in the local stack


@pytest.fixture
def stack(template_path: Path, redis_url: str) -> Iterator[LocalStack]:
    config = StackConfig(rest_port=0, ws_port=0, redis_url=redis_url, template_path=template_path)
    with LocalStack(config) as running:
        yield running


def test_an_s3_put_reaches_its_function_as_an_sqs_event_with_the_key_url_encoded(
    stack: LocalStack, template_path: Path
) -> None:
    s3 = boto3.client("s3", endpoint_url=stack.moto_url)
    bucket = stack.buckets["FilesBucket"]
    s3.put_object(Bucket=bucket, Key="in/dev/notes.txt", Body=b"not a batch")  # outside the filter
    key = "in/dev/night run+1 (ü).jsonl"
    s3.put_object(Bucket=bucket, Key=key, Body=b'{"line": 1}\n')

    events = wait_for(
        lambda: len(received(template_path, "UploadsFunction")) >= 2 and received(template_path, "UploadsFunction")
    )
    bodies = [json.loads(event["Records"][0]["body"]) for event in events]
    # S3 tests the queue when the notification is set, as on AWS; the function gets that message too.
    assert bodies[0]["Event"] == "s3:TestEvent" and bodies[0]["Bucket"] == bucket
    (record,) = events[1]["Records"]
    assert record["eventSource"] == "aws:sqs" and record["eventSourceARN"] == stack.queue_arns["UploadsQueue"]
    s3_event = S3Model.model_validate(bodies[1])  # every field real S3 sends, as Powertools requires
    (s3_record,) = s3_event.Records
    assert s3_record.eventName == "ObjectCreated:Put" and s3_record.s3.bucket.name == bucket
    assert (
        bodies[1]["Records"][0]["s3"]["object"]["key"]
        == quote_plus(key, safe="/")
        == "in/dev/night+run%2B1+%28%C3%BC%29.jsonl"
    )
    # Both messages were handled and deleted; the .txt put never made one.
    wait_for(lambda: stack.event_sources.poller("UploadsFunction").stats.deleted == 2)
    assert len(received(template_path, "UploadsFunction")) == 2


def test_a_failing_handler_in_the_stack_is_retried_and_the_poller_keeps_going(
    stack: LocalStack, template_path: Path
) -> None:
    sqs = boto3.client("sqs", endpoint_url=stack.moto_url)
    url = stack.queues["ReportedQueue"]
    sqs.send_message(QueueUrl=url, MessageBody="raise")
    wait_for(lambda: len(received(template_path, "ReportingFunction")) >= 2)  # raised, then redelivered
    sqs.send_message(QueueUrl=url, MessageBody="ok-after")
    wait_for(lambda: any(e["Records"][0]["body"] == "ok-after" for e in received(template_path, "ReportingFunction")))
    assert stack.event_sources.poller("ReportingFunction").running


def test_leaving_the_stack_stops_every_poller(template_path: Path, redis_url: str) -> None:
    config = StackConfig(rest_port=0, ws_port=0, redis_url=redis_url, template_path=template_path)
    with LocalStack(config) as stack:
        pollers = stack.event_sources.pollers
        assert {p.source.function for p in pollers} == {"ReportingFunction", "PlainFunction", "UploadsFunction"}
        assert all(p.running for p in pollers)
    assert not any(p.running for p in pollers)
    assert not [t.name for t in threading.enumerate() if t.name.startswith("sqs-poller-")]


def test_without_event_sources_nothing_polls(template_path: Path, redis_url: str) -> None:
    config = StackConfig(rest_port=0, ws_port=0, redis_url=redis_url, template_path=template_path, event_sources=False)
    with LocalStack(config) as stack:
        assert stack.event_sources is None
        assert not [t.name for t in threading.enumerate() if t.name.startswith("sqs-poller-")]


# ---------------------------------------------------------------- template.yaml's own mappings


@pytest.fixture(scope="module")
def app_stack(redis_server: Any) -> Iterator[LocalStack]:
    """The repository's template: every resource, the real BatchIngestFunction and RequestsFunction."""
    with LocalStack(StackConfig(rest_port=0, ws_port=0, redis_url=redis_server.url)) as running:
        yield running


def test_the_stack_creates_every_resource_of_the_template_with_its_notification(app_stack: LocalStack) -> None:
    assert app_stack.tables["BatchesTable"] == "seekless-batches"
    assert {lid: url.rsplit("/", 1)[-1] for lid, url in app_stack.queues.items()} == {
        "JobsQueue": "seekless-jobs",
        "JobsDeadLetterQueue": "seekless-jobs-dlq",
        "BatchUploadsQueue": "seekless-batch-uploads",
        "BatchUploadsDeadLetterQueue": "seekless-batch-uploads-dlq",
        "RequestsQueue": "seekless-requests",
        "RequestsDeadLetterQueue": "seekless-requests-dlq",
        "RepliesQueue": "seekless-replies",
    }
    s3 = boto3.client("s3", endpoint_url=app_stack.moto_url)
    configurations = s3.get_bucket_notification_configuration(Bucket="seekless-jobs")["QueueConfigurations"]
    # Chat batch files and decisions files, both to the uploads queue.
    assert {c["QueueArn"] for c in configurations} == {app_stack.queue_arns["BatchUploadsQueue"]}
    rules = [{r["Name"].lower(): r["Value"] for r in c["Filter"]["Key"]["FilterRules"]} for c in configurations]
    assert sorted(rules, key=lambda r: r["prefix"]) == [
        {"prefix": "batches/input/", "suffix": ".jsonl"},
        {"prefix": "decisions/input/", "suffix": ".jsonl"},
    ]
    assert {p.source.function for p in app_stack.event_sources.pollers} == {"BatchIngestFunction", "RequestsFunction"}


def test_the_functions_see_the_new_resources_in_their_environment(app_stack: LocalStack) -> None:
    import os

    assert os.environ["SEEKLESS_BATCHES_TABLE"] == "seekless-batches"
    assert os.environ["SEEKLESS_REPLY_QUEUE_URLS"].split(",")[0] == app_stack.queues["RepliesQueue"]
    assert os.environ["SEEKLESS_REPLY_S3_PREFIXES"] == "s3://seekless-jobs/replies/"
    assert "SEEKLESS_DEEPSEEK_SECRET_NAME" not in os.environ
    summary = app_stack.summary()
    assert "SQS trigger  BatchIngestFunction ← seekless-batch-uploads" in summary
    assert "S3 → SQS     s3://seekless-jobs/batches/input/*.jsonl → seekless-batch-uploads" in summary
    assert "S3 → SQS     s3://seekless-jobs/decisions/input/*.jsonl → seekless-batch-uploads" in summary


def test_a_batch_file_dropped_in_the_bucket_becomes_a_batch(app_stack: LocalStack) -> None:
    s3 = boto3.client("s3", endpoint_url=app_stack.moto_url)
    dynamodb = boto3.client("dynamodb", endpoint_url=app_stack.moto_url)
    line = {
        "custom_id": "c1",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "deepseek-flash", "messages": [{"role": "user", "content": "hi"}]},
    }
    key = f"batches/input/dev/drop {uuid.uuid4().hex}.jsonl"
    s3.put_object(Bucket="seekless-jobs", Key=key, Body=json.dumps(line).encode())

    def batch_items() -> list[dict[str, Any]]:
        items = dynamodb.scan(TableName="seekless-batches")["Items"]
        return [item for item in items if key in json.dumps(item)]

    assert wait_for(batch_items, timeout=30)
    # Before it, S3's s3:TestEvent reached the function as well, and was taken as a success.
    poller = app_stack.event_sources.poller("BatchIngestFunction")
    wait_for(lambda: poller.stats.batches >= 2)
    assert poller.stats.failed_batches == 0


def test_a_queued_request_becomes_a_job(app_stack: LocalStack) -> None:
    sqs = boto3.client("sqs", endpoint_url=app_stack.moto_url)
    dynamodb = boto3.client("dynamodb", endpoint_url=app_stack.moto_url)
    job_id = f"queued-{uuid.uuid4().hex[:12]}"
    body = {
        "tenant_id": "dev",
        "job_id": job_id,
        "request": {"model": "deepseek-flash", "messages": [{"role": "user", "content": "hi"}]},
        "reply_to": {"queue_url": app_stack.queues["RepliesQueue"]},
    }
    sqs.send_message(QueueUrl=app_stack.queues["RequestsQueue"], MessageBody=json.dumps(body))
    poller = app_stack.event_sources.poller("RequestsFunction")
    wait_for(lambda: poller.stats.deleted >= 1, timeout=30)
    assert poller.stats.failed_batches == 0
    assert job_id in json.dumps(dynamodb.scan(TableName="seekless-jobs")["Items"])
