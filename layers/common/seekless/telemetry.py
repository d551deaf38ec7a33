"""The metrics port the domain writes to. The Powertools implementation lives in observability.py."""

from __future__ import annotations

from typing import Protocol


class Telemetry(Protocol):
    def count(self, name: str, value: float = 1.0) -> None: ...

    def milliseconds(self, name: str, value: float) -> None: ...


class NullTelemetry:
    def count(self, name: str, value: float = 1.0) -> None:
        return None

    def milliseconds(self, name: str, value: float) -> None:
        return None


class RecordingTelemetry:
    """Keeps every metric in memory: for tests and the local stack's debugging."""

    def __init__(self) -> None:
        self.counts: dict[str, float] = {}
        self.timings: dict[str, list[float]] = {}

    def count(self, name: str, value: float = 1.0) -> None:
        self.counts[name] = self.counts.get(name, 0.0) + value

    def milliseconds(self, name: str, value: float) -> None:
        self.timings.setdefault(name, []).append(value)
