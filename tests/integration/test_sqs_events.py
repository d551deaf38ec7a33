"""SQS events (events/sqs/), in the shape Lambda's SQS event source delivers: job messages (the versioned
GenerationJob contract the worker reads), queued requests (RequestMessage) and S3 notifications."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from seekless.batches import sources_from_s3_event
from seekless.contracts import GenerationJob, RequestMessage
from seekless_local.events import event_files, load_event

SQS_EVENTS = sorted(p for p in event_files() if p.parent.name == "sqs")


def test_there_are_sqs_events() -> None:
    assert {p.stem for p in SQS_EVENTS} >= {"job_message", "job_message_websocket", "job_message_poison"}


@pytest.mark.parametrize("path", SQS_EVENTS, ids=lambda p: p.stem)
def test_records_have_lambdas_sqs_shape(path: object) -> None:
    for record in load_event(path)["Records"]:  # type: ignore[arg-type]
        assert record["eventSource"] == "aws:sqs" and record["eventSourceARN"].startswith("arn:aws:sqs:")
        assert isinstance(record["body"], str) and record["messageId"] and record["receiptHandle"]
        assert int(record["attributes"]["ApproximateReceiveCount"]) >= 1
        if path.stem.startswith("job_message"):  # type: ignore[attr-defined]
            assert record["messageAttributes"]["contract"]["stringValue"] == "GenerationJob/v1"


@pytest.mark.parametrize("name", ["sqs/request_reply_sqs", "sqs/request_reply_s3"])
def test_request_messages_carry_the_request_contract_with_a_reply_destination(name: str) -> None:
    (record,) = load_event(name)["Records"]
    message = RequestMessage.model_validate_json(record["body"])
    assert message.tenant_id == "dev" and message.reply_to.describe()


def test_the_invalid_request_event_holds_one_bad_and_one_good_message() -> None:
    bad, good = load_event("sqs/request_invalid")["Records"]
    with pytest.raises(ValidationError):
        RequestMessage.model_validate_json(bad["body"])
    RequestMessage.model_validate_json(good["body"])


def test_the_batch_upload_event_wraps_an_s3_notification() -> None:
    import json

    (record,) = load_event("sqs/batch_upload")["Records"]
    (source,) = sources_from_s3_event(json.loads(record["body"]))
    assert source.tenant_id == "dev" and source.key.endswith(".jsonl")


@pytest.mark.parametrize("name", ["sqs/job_message", "sqs/job_message_websocket"])
def test_job_messages_carry_the_contract(name: str) -> None:
    (record,) = load_event(name)["Records"]
    job = GenerationJob.model_validate_json(record["body"])
    assert job.version == 1 and job.request.messages and job.tenant_id == "dev"


def test_the_poison_message_does_not_parse_and_is_on_its_last_receive() -> None:
    (record,) = load_event("sqs/job_message_poison")["Records"]
    with pytest.raises(ValidationError):
        GenerationJob.model_validate_json(record["body"])
    assert record["attributes"]["ApproximateReceiveCount"] == "5"  # the queue's maxReceiveCount
