"""The job sweeper function, invoked with its scheduled event as `sam local invoke -e` would: a job whose
producer crashed before sending its message goes back on the queue; confirmed jobs are left alone."""

from __future__ import annotations

import time
from typing import Any

import boto3
import pytest

from seekless.adapters.jobs import DynamoJobStore
from seekless.contracts import ChatCompletionRequest, GenerationJob
from seekless_local.events import load_event
from seekless_local.gateway import ExecutionEnvironments
from seekless_local.template import create_queues, function_specs, load_handler

from .conftest import TABLES


def test_the_scheduled_sweep_resends_an_unsent_job(app_env: None, aws: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    sqs = boto3.client("sqs", region_name="us-east-1")
    urls = create_queues(sqs, names={"JobsQueue": "seekless-jobs", "JobsDeadLetterQueue": "seekless-jobs-dlq"})
    monkeypatch.setenv("SEEKLESS_JOBS_TABLE", TABLES["JobsTable"])
    monkeypatch.setenv("SEEKLESS_JOBS_QUEUE_URL", urls["JobsQueue"])
    monkeypatch.setenv("SEEKLESS_JOB_RESEND_AFTER_SECONDS", "60")
    request = ChatCompletionRequest.model_validate(
        {"model": "deepseek-flash", "messages": [{"role": "user", "content": "hi"}]}
    )
    old = DynamoJobStore(TABLES["JobsTable"], client=aws, clock=lambda: time.time() - 120)
    orphan, _ = old.create("dev", key_id="dev", request=request, session_id=None)
    fresh, _ = DynamoJobStore(TABLES["JobsTable"], client=aws).create(
        "dev", key_id="dev", request=request, session_id=None
    )

    spec = function_specs()["JobSweeperFunction"]
    environments = ExecutionEnvironments(lambda: load_handler(spec), name=spec.logical_id, timeout=60, size=1)
    try:
        swept = environments.invoke_sync(load_event("schedule/job_sweeper"))
        assert swept == {"resent": 1, "batches_finished": 0, "usage_minutes_folded": 0}
    finally:
        environments.close()
    (message,) = sqs.receive_message(QueueUrl=urls["JobsQueue"])["Messages"]
    assert GenerationJob.model_validate_json(message["Body"]).job_id == orphan.id != fresh.id
