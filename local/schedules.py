"""EventBridge schedules, locally: a function's ``Events`` entry of ``Type: Schedule`` runs on a timer.

Only ``rate(...)`` expressions (what template.yaml uses); a ``cron(...)`` is refused rather than run at
the wrong times. Each schedule has a thread that invokes its function with EventBridge's Scheduled
Event every period, on a warm execution environment of its own, the first time one period after the
start (as a new rule does). A handler that raises is logged and the timer carries on, as EventBridge
does (its retries are not emulated).
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from seekless_local.template import FUNCTION_TYPE

logger = logging.getLogger(__name__)

REGION = "us-east-1"
ACCOUNT = "123456789012"
_RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


@dataclass(frozen=True)
class Schedule:
    function: str  # logical id
    name: str  # "<function>.<event name>"
    period_seconds: float


def rate_seconds(expression: str) -> float:
    """Seconds between runs of an EventBridge ``rate(...)`` expression."""
    match = _RATE.match(expression.strip())
    if match is None:
        raise ValueError(f"only rate(N unit) schedules run locally, not {expression!r}")
    count, unit = int(match.group(1)), match.group(2).rstrip("s")
    if count < 1 or (count == 1) != (match.group(2) == unit):
        raise ValueError(f"{expression!r}: EventBridge wants 'rate(1 {unit})' or 'rate(N {unit}s)'")
    return float(count * _UNIT_SECONDS[unit])


def schedules(template: Mapping[str, Any]) -> list[Schedule]:
    """Every enabled ``Type: Schedule`` event of the template's functions."""
    found = []
    for logical_id, resource in (template.get("Resources") or {}).items():
        if resource.get("Type") != FUNCTION_TYPE:
            continue
        for name, event in (resource.get("Properties", {}).get("Events") or {}).items():
            if event.get("Type") != "Schedule":
                continue
            props = event.get("Properties", {})
            if props.get("Enabled", True) in (False, "false", "False") or props.get("State") == "DISABLED":
                continue
            found.append(Schedule(logical_id, f"{logical_id}.{name}", rate_seconds(str(props["Schedule"]))))
    return found


def scheduled_event(schedule: Schedule, now: datetime | None = None) -> dict[str, Any]:
    """EventBridge's Scheduled Event, as the function receives it."""
    when = (now or datetime.now(UTC)).replace(microsecond=0)
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT,
        "time": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION,
        "resources": [f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{schedule.name.replace('.', '-')}"],
        "detail": {},
    }


class Schedules:
    """Runs each schedule on its thread until closed. ``period_seconds`` overrides every period (tests)."""

    def __init__(
        self,
        found: Iterable[Schedule],
        *,
        load: Callable[[str], Any],
        timeouts: Mapping[str, int] | None = None,
        period_seconds: float | None = None,
    ) -> None:
        self.schedules = list(found)
        self._load = load
        self._timeouts = dict(timeouts or {})
        self._period = period_seconds
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._environments: list[Any] = []
        self.runs: dict[str, int] = {schedule.name: 0 for schedule in self.schedules}
        self.failures: dict[str, int] = {schedule.name: 0 for schedule in self.schedules}

    def __enter__(self) -> Schedules:
        from seekless_local.gateway import ExecutionEnvironments

        for schedule in self.schedules:
            environments = ExecutionEnvironments(
                lambda logical_id=schedule.function: self._load(logical_id),
                name=schedule.function,
                timeout=float(self._timeouts.get(schedule.function, 3)),
                size=1,
            )
            self._environments.append(environments)
            thread = threading.Thread(
                target=self._run, args=(schedule, environments), name=f"schedule-{schedule.name}", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        return self

    def _run(self, schedule: Schedule, environments: Any) -> None:
        period = self._period if self._period is not None else schedule.period_seconds
        while not self._stop.wait(period):  # a timer, not a sleep: closing wakes it at once
            try:
                environments.invoke_sync(scheduled_event(schedule))
            except Exception:
                self.failures[schedule.name] += 1
                logger.exception("scheduled run of %s failed", schedule.name)
            self.runs[schedule.name] += 1

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        for environments in self._environments:
            environments.close()
