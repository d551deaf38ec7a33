"""``python -m seekless.worker``: run the worker until SIGTERM/SIGINT; ``--health`` for HEALTHCHECK."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys


def _health() -> int:
    from seekless.config import Settings
    from seekless.worker.health import health_path, is_fresh

    settings = Settings()
    return 0 if is_fresh(health_path(settings.worker_health_file), settings.worker_health_max_age_seconds) else 1


async def _serve() -> None:
    from seekless import wiring

    worker = wiring.worker()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    logging.getLogger("seekless.worker").info(
        "worker %s: concurrency %d, visibility %d s, grace %.0f s",
        worker.owner,
        worker.config.concurrency,
        worker.config.visibility_seconds,
        worker.config.grace_seconds,
    )
    try:
        await worker.run()
    finally:
        await wiring.close_worker()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seekless.worker", description="the seekless GPU worker")
    parser.add_argument("--health", action="store_true", help="exit 0 when the running worker's heartbeat is fresh")
    args = parser.parse_args(argv)
    if args.health:
        return _health()
    from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

    # JSON lines, as the Lambdas write them: audit records and EMF metrics stay machine-readable.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LambdaPowertoolsFormatter(utc=True))
    logging.basicConfig(level=os.environ.get("POWERTOOLS_LOG_LEVEL", "INFO").upper(), handlers=[handler])
    asyncio.run(_serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
