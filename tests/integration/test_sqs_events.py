"""SQS events carrying job messages (events/sqs/): each record is the versioned GenerationJob contract
the worker reads, in the shape Lambda's SQS event source delivers, for any SQS-driven function."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from seekless.contracts import GenerationJob
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
        assert record["messageAttributes"]["contract"]["stringValue"] == "GenerationJob/v1"


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
