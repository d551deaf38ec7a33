"""Queued requests: each RequestsQueue message becomes a job; the worker replies where it asked.

A message that can never run (invalid, unknown model, reply destination not allowed) is answered with
an error reply when its reply_to can be read and is allowed, and is then done; otherwise it is reported
as a failure, so SQS retries it and finally moves it to the dead-letter queue: nothing is dropped.
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from seekless import wiring
from seekless.contracts import ReplyTo, RequestMessage
from seekless.errors import InvalidRequest, NotFound, SeeklessError
from seekless.observability import logger, tracer
from seekless.queued import error_reply, request_job_id

processor = BatchProcessor(event_type=EventType.SQS)


def _readable_reply_to(body: str) -> ReplyTo | None:
    try:
        data = json.loads(body)
        return ReplyTo.model_validate(data["reply_to"]) if isinstance(data, dict) else None
    except (ValueError, KeyError, TypeError, ValidationError):
        return None


def _refuse(record: SQSRecord, reply_to: ReplyTo | None, job_id: str, error: dict[str, Any]) -> None:
    """Answer a request that can never run, or fail the record (it goes to the DLQ after its retries)."""
    if reply_to is None or not wiring.reply_policy().allows(reply_to):
        logger.warning("request %s refused (%s) with no allowed reply_to", record.message_id, error["code"])
        raise ValueError(f"request {record.message_id} can never run: {error['code']}")
    logger.info("request %s refused (%s); error reply sent", record.message_id, error["code"])
    wiring.replies().send(reply_to, job_id, error_reply(job_id, error))


def record_handler(record: SQSRecord) -> None:
    try:
        message = RequestMessage.model_validate_json(record.body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "message"
        error = {
            "message": f"{where}: {first['msg']}",
            "type": "invalid_request_error",
            "param": where,
            "code": "invalid_request_message",
        }
        _refuse(record, _readable_reply_to(record.body), "req_invalid_" + record.message_id, error)
        return
    job_id = request_job_id(message, record.message_id)
    try:
        job = wiring.queued_requests().submit(message, record.message_id)
    except (InvalidRequest, NotFound) as exc:
        _refuse(record, message.reply_to, job_id, exc.to_body()["error"])
        return
    except SeeklessError:
        raise  # store or queue unavailable: retried
    logger.info("request %s queued as job %s", record.message_id, job.id)


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
