"""Batch ingest: a batch file dropped in S3 becomes a batch of jobs.

On AWS the S3 notification reaches this function through BatchUploadsQueue (an SQS event, one record
per S3 event, partial failures reported). A plain S3 event is accepted too, as `sam local invoke -e`
or `seekless invoke` sends one.
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from seekless import wiring
from seekless.batches import sources_from_s3_event
from seekless.observability import logger, tracer

processor = BatchProcessor(event_type=EventType.SQS)


def _ingest(s3_event: dict[str, Any]) -> list[dict[str, Any]]:
    service = wiring.batch_service()
    batches = [service.ingest(source) for source in sources_from_s3_event(s3_event)]
    return [service.describe(batch) for batch in batches if batch is not None]


def record_handler(record: SQSRecord) -> None:
    body = json.loads(record.body)
    if body.get("Event") == "s3:TestEvent":  # S3 sends one when the notification is configured
        return
    _ingest(body)


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    records = event.get("Records") or []
    if records and records[0].get("eventSource") == "aws:s3":
        return {"batches": _ingest(event)}
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
