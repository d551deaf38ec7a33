"""Powertools logger, tracer and metrics, shared by every handler and kept out of the domain.

The domain writes metrics through the ``Telemetry`` port; ``PowertoolsTelemetry`` is its Lambda
implementation: CloudWatch EMF through a Powertools provider of its own per execution environment,
flushed after every invocation by ``log_metrics``. (Powertools' ``Metrics`` keeps one metric set per
process, which the local gateway's concurrent environments would share, and while
POWERTOOLS_METRICS_DISABLED is set it never clears that set.) Logs are JSON with the API Gateway
request id as correlation id; they never carry prompts, answers or keys.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.functions import is_metrics_disabled
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

logger = Logger(log_uncaught_exceptions=True)
# Patch only what the handlers call out through: patch_all would import every supported library.
tracer = Tracer(patch_modules=("botocore", "httpx"))

Handler = TypeVar("Handler", bound=Callable[..., Any])


class PowertoolsTelemetry:
    def __init__(self, provider: AmazonCloudWatchEMFProvider | None = None) -> None:
        self._provider = provider or AmazonCloudWatchEMFProvider()

    def count(self, name: str, value: float = 1.0) -> None:
        self._provider.add_metric(name=name, unit=MetricUnit.Count, value=value)

    def milliseconds(self, name: str, value: float) -> None:
        self._provider.add_metric(name=name, unit=MetricUnit.Milliseconds, value=value)

    def flush(self) -> None:
        """Publish this invocation's metrics as one EMF log line (or drop them when disabled)."""
        if not self._provider.metric_set:
            return
        if is_metrics_disabled():
            self._provider.clear_metrics()
        else:
            self._provider.flush_metrics()


def log_metrics(handler: Handler) -> Handler:
    """Flush the environment's metrics after each invocation, whatever the handler did."""
    from seekless import wiring

    @functools.wraps(handler)
    def invoke(event: Any, context: Any) -> Any:
        try:
            return handler(event, context)
        finally:
            telemetry = wiring.telemetry()
            if isinstance(telemetry, PowertoolsTelemetry):
                telemetry.flush()

    return invoke  # type: ignore[return-value]
