"""Powertools logger, tracer and metrics, shared by every handler and kept out of the domain.

The domain writes metrics through the ``Telemetry`` port; ``PowertoolsTelemetry`` is its Lambda
implementation (CloudWatch EMF, flushed by ``@metrics.log_metrics`` on each handler). Logs are JSON with
the API Gateway request id as correlation id; they never carry prompts, answers or keys.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

logger = Logger(log_uncaught_exceptions=True)
# Patch only what the handlers call out through: patch_all would import every supported library.
tracer = Tracer(patch_modules=("botocore", "httpx"))
metrics = Metrics()


class PowertoolsTelemetry:
    def __init__(self, target: Metrics | None = None) -> None:
        self._metrics = target or metrics

    def count(self, name: str, value: float = 1.0) -> None:
        self._metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)

    def milliseconds(self, name: str, value: float) -> None:
        self._metrics.add_metric(name=name, unit=MetricUnit.Milliseconds, value=value)
