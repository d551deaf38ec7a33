"""Generator: streams one GenerationJob to its WebSocket connection (invoked asynchronously)."""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from seekless import wiring
from seekless.contracts import GenerationJob
from seekless.observability import log_metrics, logger, tracer

# Stop generating this long before Lambda's own timeout, to end the stream with a proper frame.
MARGIN_SECONDS = 5.0


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    job = GenerationJob.model_validate(event)
    deadline = time.monotonic() + max(1.0, context.get_remaining_time_in_millis() / 1000 - MARGIN_SECONDS)
    emitter = wiring.run(wiring.generator().run(job, deadline=deadline))
    return {"job_id": job.job_id, "frames": emitter.seq, "posts": emitter.posts}
