"""Job sweeper (every minute): re-send jobs whose producer crashed before confirming the message, and
finish batches whose last job ended but whose finalizer died."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from seekless import wiring
from seekless.observability import logger


@logger.inject_lambda_context(log_event=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    config = wiring.settings()
    resent = wiring.job_service().resend_unsent(older_than_seconds=config.job_resend_after_seconds)
    if resent:
        logger.warning("re-sent %d jobs whose message was never confirmed", resent)
    finished = 0
    if config.jobs_bucket:
        finished = wiring.batch_service().sweep(older_than_seconds=config.batch_finalize_after_seconds)
        if finished:
            logger.warning("finished %d batches whose finalizer never completed", finished)
    return {"resent": resent, "batches_finished": finished}
