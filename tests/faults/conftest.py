"""Fault tier: the local stack with its upstream, Redis, DynamoDB and worker broken on purpose, driven as
users drive it (httpx against the REST URL, the WebSocket client, jobs through POST /v1/jobs).

One ``LocalStack`` serves the package (it sets process-wide environment, so one per pytest process),
with deadlines of seconds instead of the deployed 25 s / 15 min, a 2 s breaker cooldown and a worker
that redelivers within seconds, so every fault plays out in a few seconds. Each test tallies what
happened to every request it sent into a row of the fault table (`Tally`), printed at the end of the
run and written to ``$SEEKLESS_FAULTS_REPORT`` (default ``.seekless/faults.md``).

"Unhandled" is what no client should ever see: a 5xx without OpenAI's error schema, a dropped
connection, a stream with neither ``[DONE]`` nor an error event, a WebSocket request without exactly
one terminal frame, or an exception seekless logged as unhandled (an ERROR record with exc_info from a
``seekless`` logger, or from the local gateways that run its handlers) while the test ran.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from seekless_local.stack import LocalStack
from seekless_local.template import REPO_ROOT
from tests.stacks import clean_upstream, emulated_stack

REST_DEADLINE_SECONDS = 3.0
GENERATOR_TIMEOUT_SECONDS = 9
# functions/generator/app.py stops this long before its Lambda's timeout (MARGIN_SECONDS).
GENERATOR_MARGIN_SECONDS = 5.0
WS_DEADLINE_SECONDS = GENERATOR_TIMEOUT_SECONDS - GENERATOR_MARGIN_SECONDS
BREAKER_COOLDOWN_SECONDS = 2.0

# What a job worker reads (the in-process one of the DynamoDB test and the SIGKILL test's processes
# inherit it): a lost delivery comes back within seconds.
WORKER_ENV = {
    "SEEKLESS_WORKER_WAIT_SECONDS": "1",
    "SEEKLESS_WORKER_VISIBILITY_SECONDS": "3",
    "SEEKLESS_WORKER_LEASE_SECONDS": "3",
    "SEEKLESS_WORKER_PROGRESS_SECONDS": "0.5",
    "SEEKLESS_WORKER_CANCEL_POLL_SECONDS": "0.5",
    "SEEKLESS_WORKER_GRACE_SECONDS": "5",
}
FAULT_ENV = {
    "SEEKLESS_REQUEST_DEADLINE_SECONDS": str(REST_DEADLINE_SECONDS),
    "SEEKLESS_BREAKER_COOLDOWN_SECONDS": str(BREAKER_COOLDOWN_SECONDS),
    **WORKER_ENV,
}
# Loggers whose ERROR records with a traceback mean an exception seekless did not handle: its own,
# and the local gateways', which log a handler that raised (API Gateway would answer 502 / "Internal
# server error"). The emulator's are not seekless's.
WATCHED_LOGGERS = ("seekless", "seekless_local.gateway", "seekless_local.ws_gateway", "seekless_local.worker")
COLUMNS = ("fault", "sent", "succeeded", "failed (structured error)", "unhandled", "lost")


# -- the results table ----------------------------------------------------------------------------


@dataclass
class Tally:
    """One row of the fault table: what happened to every request (or job) a fault test sent."""

    fault: str
    sent: int = 0
    succeeded: int = 0
    structured: int = 0
    unhandled: int = 0
    lost: int = 0
    logged: int = 0  # exceptions seekless logged as unhandled while the test ran (also in unhandled)
    figures: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what each unhandled or lost one was
    seconds: float = 0.0
    passed: bool | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, kind: str, detail: str = "") -> None:
        """Tally one request's outcome: succeeded, structured, unhandled or lost."""
        with self._lock:
            self.sent += 1
            setattr(self, kind, getattr(self, kind) + 1)
            if kind in ("unhandled", "lost"):
                self.problems.append(f"{kind}: {detail}")

    def figure(self, text: str) -> None:
        """A measured number worth a line in the table (calls per request, time past the deadline...)."""
        self.figures.append(text)

    def assert_clean(self) -> None:
        """No request unhandled or lost, and nothing logged as unhandled so far."""
        assert (self.unhandled, self.lost) == (0, 0), self.problems[:10]


class UnhandledLog(logging.Handler):
    """Keeps every ERROR record with exc_info from the watched loggers."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.exc_text:
            self.records.append(record)

    def describe(self, start: int) -> list[str]:
        return [
            f"{r.name}: {r.getMessage()} ({r.exc_info[1]!r})" if r.exc_info else r.getMessage()
            for r in self.records[start:]
        ]


class FaultTable:
    def __init__(self) -> None:
        self.rows: list[Tally] = []
        self.log = UnhandledLog()
        self.attributed: set[int] = set()  # indices of log records some test's row has counted

    def markdown(self) -> str:
        lines = [
            "| " + " | ".join(COLUMNS) + " | measured | test time |",
            "| " + " | ".join("---" for _ in range(len(COLUMNS) + 2)) + " |",
        ]
        for row in self.rows:
            status = "" if row.passed else " **(test failed)**"
            counts = (row.sent, row.succeeded, row.structured, row.unhandled, row.lost)
            figures = "; ".join(row.figures) or "-"
            lines.append(
                f"| {row.fault}{status} | "
                + " | ".join(str(n) for n in counts)
                + f" | {figures} | {row.seconds:.1f} s |"
            )
        total = [
            sum(getattr(r, name) for r in self.rows)
            for name in ("sent", "succeeded", "structured", "unhandled", "lost")
        ]
        lines.append("| **all faults** | " + " | ".join(f"**{n}**" for n in total) + " | | |")
        return "\n".join(lines)


TABLE = pytest.StashKey[FaultTable]()


def report_path() -> Path:
    return Path(os.environ.get("SEEKLESS_FAULTS_REPORT") or REPO_ROOT / ".seekless" / "faults.md")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[TABLE] = FaultTable()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    table = config.stash.get(TABLE, None)
    if table is None or not table.rows:
        return
    text = table.markdown()
    terminalreporter.section("fault table")
    terminalreporter.write_line(text)
    path = report_path()
    path.parent.mkdir(parents=True, exist_ok=True)  # .seekless/ is git-ignored
    path.write_text("# Fault suite\n\n" + text + "\n", encoding="utf-8")
    terminalreporter.write_line(f"(written to {path})")


# -- the stack ------------------------------------------------------------------------------------


@pytest.fixture(scope="package")
def fault_table(pytestconfig: pytest.Config) -> FaultTable:
    return pytestconfig.stash[TABLE]


@pytest.fixture(scope="package")
def stack(fault_table: FaultTable) -> Iterator[LocalStack]:
    with emulated_stack(
        worker=False,  # the tests that need one start their own
        event_sources=False,
        extra_env=FAULT_ENV,
        function_timeouts={"GeneratorFunction": GENERATOR_TIMEOUT_SECONDS},
    ) as running:
        # Powertools sets the "seekless" logger up when the handlers first import it, and takes the
        # logger's first handler for its own: let it go first (with the stack's environment set).
        import seekless.observability  # noqa: F401

        loggers = [logging.getLogger(name) for name in WATCHED_LOGGERS]
        for logger in loggers:
            logger.addHandler(fault_table.log)
        try:
            yield running
        finally:
            for logger in loggers:
                logger.removeHandler(fault_table.log)
    # Zero across the whole suite, between tests and while the stack stopped included.
    stray = [i for i in range(len(fault_table.log.records)) if i not in fault_table.attributed]
    if stray:
        fault_table.rows.append(Tally("(outside any test)", unhandled=len(stray), logged=len(stray), passed=False))
    assert not stray, f"seekless logged {len(stray)} unhandled exception(s) outside the tests"


@pytest.fixture(autouse=True)
def _clean_upstream(stack: LocalStack) -> Iterator[None]:
    with clean_upstream(stack):
        yield


@pytest.fixture
def tally(
    request: pytest.FixtureRequest, fault_table: FaultTable, stack: LocalStack
) -> Iterator[Callable[[str], Tally]]:
    """``tally("fault name")``: this test's row of the table; the exceptions seekless logs as unhandled
    while the test runs are added to it (and fail the test)."""
    rows: list[Tally] = []
    start = len(fault_table.log.records)
    started = time.monotonic()

    def new(fault: str) -> Tally:
        row = Tally(fault)
        rows.append(row)
        return row

    yield new
    logged = fault_table.log.describe(start)
    fault_table.attributed.update(range(start, len(fault_table.log.records)))
    for row in rows:
        row.seconds = time.monotonic() - started
        row.logged = len(logged)
        row.unhandled += len(logged)
        report = getattr(request.node, "rep_call", None)
        row.passed = bool(report is not None and report.passed and not logged)
        fault_table.rows.append(row)
    assert not logged, f"seekless logged {len(logged)} unhandled exception(s): {logged[:5]}"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]  # read by the tally fixture's teardown
    return report
