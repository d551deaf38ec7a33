"""Job sweeper (every minute): re-send jobs whose producer crashed before confirming the message,
finish batches whose last job ended but whose finalizer died, and fold the closed minutes of usage
counters in Redis into the usage table."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from seekless import wiring
from seekless.observability import log_metrics, logger


@logger.inject_lambda_context(log_event=False)
@log_metrics
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
    folded = _fold_usage()
    return {"resent": resent, "batches_finished": finished, "usage_minutes_folded": folded}


def _fold_usage() -> int:
    """Never fails the sweep: a minute left in Redis is folded by the next run."""
    folder = wiring.usage_folder()
    if folder is None:
        return 0
    try:
        report = folder.fold()
    except Exception:
        wiring.telemetry().count("UsageFoldErrors")
        logger.exception("could not fold usage counters; the next run retries")
        return 0
    if report.failed:
        wiring.telemetry().count("UsageFoldErrors", report.failed)
    return report.minutes
