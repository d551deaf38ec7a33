"""The job worker killed with SIGKILL at random points while 200 jobs run, then restarted: every job
succeeds, none twice (one result, one session turn, one success record), nothing is left on a queue."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from seekless_local.stack import LocalStack
from tests.faults.conftest import Tally
from tests.faults.drive import chat_body, http_client, new_session, question, session_turns
from tests.waiting import wait_for

JOBS = 200
KILLS = 3  # each kill costs the jobs it held one receive; the queue dead-letters at the fifth
QUEUE_COUNTS = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
]


def start_worker(environment: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        return subprocess.Popen([sys.executable, "-m", "seekless.worker"], env=environment, stdout=sink, stderr=sink)


def queued(sqs: Any, url: str) -> int:
    """Messages on a queue: visible, in flight or delayed."""
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=QUEUE_COUNTS)["Attributes"]
    return sum(int(attributes[name]) for name in QUEUE_COUNTS)


def submit(http: httpx.Client, n: int) -> tuple[str, str | None]:
    session = new_session(http) if n % 4 == 0 else None
    response = http.post("/v1/jobs", json=chat_body(question(f"job {n}"), session_id=session))
    assert response.status_code == 202, response.text
    return str(response.json()["id"]), session


def listed(http: httpx.Client, ids: set[str]) -> list[dict[str, Any]]:
    """These jobs as GET /v1/jobs lists them (every page)."""
    found: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 100, **({"after": after} if after else {})}
        page = http.get("/v1/jobs", params=params).json()
        found += [job for job in page["data"] if job["id"] in ids]
        if not page["has_more"]:
            return found
        after = page["data"][-1]["id"]


@pytest.mark.timeout(300)
def test_worker_sigkill_during_200_jobs_loses_and_duplicates_nothing(
    stack: LocalStack, tally: Callable[[str], Tally], tmp_path: Path
) -> None:
    row = tally(f"Worker SIGKILL during {JOBS} jobs")
    stack.emulator.configure(tps=400)  # short jobs (about 0.1 s upstream), so the run stays lean
    sqs = boto3.client("sqs", endpoint_url=stack.moto_url)
    queue, dlq = stack.queues["JobsQueue"], stack.queues["JobsDeadLetterQueue"]
    started, waiting = time.monotonic(), queued(sqs, queue)
    with http_client(stack) as http:
        with ThreadPoolExecutor(4) as pool:
            jobs = list(pool.map(lambda n: submit(http, n), range(JOBS)))
        assert queued(sqs, queue) - waiting == JOBS
        submitted = time.monotonic()

        environment = {
            **os.environ,  # the stack's: endpoints, tables, queue, Redis, DeepSeek, the worker settings
            "SEEKLESS_WORKER_HEALTH_FILE": str(tmp_path / "alive"),
            "POWERTOOLS_LOG_LEVEL": "INFO",  # audit records: one per job that ran to its end
        }
        log = tmp_path / "worker.log"
        rng = random.Random(9)
        calls = lambda: int(stack.emulator.stats()["calls"])  # noqa: E731
        # Kill points: when upstream has been called a random number of times, one in each of the first
        # three quarters of the run (a condition to wait on, drawn from a seeded generator).
        points = [rng.randint(JOBS * k // 4, JOBS * (k + 1) // 4) for k in range(KILLS)]
        for point in points:
            process = start_worker(environment, log)
            try:
                wait_for(lambda at=point: calls() >= at, timeout=60, interval=0.02, what=f"{point} upstream calls")
            finally:
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=10)
        final = start_worker(environment, log)
        try:
            wait_for(lambda: queued(sqs, queue) == 0, timeout=120, interval=0.25, what="the jobs queue to drain")
            drained = time.monotonic()
        finally:
            final.send_signal(signal.SIGTERM)
            assert final.wait(timeout=30) == 0, log.read_text()[-3000:]

        records = listed(http, {job_id for job_id, _ in jobs})
        sessions = {session: session_turns(http, session) for _, session in jobs if session}
    turns = {session: len(messages) for session, messages in sessions.items()}

    lines = [json.loads(text) for text in log.read_text().splitlines() if text.startswith("{") and text.endswith("}")]
    successes = Counter(
        line["audit"]["request_id"] for line in lines if "audit" in line and line["audit"].get("status") == 200
    )
    crashed = [line for line in lines if line.get("level") in ("ERROR", "CRITICAL") and line.get("exception")]
    for missing in {job_id for job_id, _ in jobs} - {record["id"] for record in records}:
        row.count("lost", f"{missing}: not listed")
    for record in records:
        if record.get("status") == "succeeded":
            row.count("succeeded")
        elif record.get("status") == "failed" and record["error"].get("code") != "job_dead_lettered":
            row.count("structured", str(record["error"]))
        else:
            row.count("lost", f"{record.get('id')}: {record.get('status')} {record.get('error')}")
    for line in crashed:
        row.unhandled += 1
        row.problems.append(f"worker logged: {line.get('message')} {str(line.get('exception'))[-300:]}")
    duplicated = sum(1 for count in successes.values() if count > 1) + sum(1 for n in turns.values() if n != 2)
    reruns = calls() - JOBS
    retried = sum(1 for record in records if record.get("attempts", 1) > 1)
    row.figure(f"submitted in {submitted - started:.0f} s, all done {drained - submitted:.0f} s later")
    row.figure(f"killed at {', '.join(map(str, points))} upstream calls; {retried} jobs re-run after a kill")
    row.figure(f"{duplicated} duplicated; {calls()} upstream calls ({reruns} re-runs of interrupted jobs)")
    row.figure(
        f"{len(turns)} sessions with exactly 1 turn each" if duplicated == 0 else f"turns: {Counter(turns.values())}"
    )
    row.assert_clean()
    assert row.succeeded == JOBS
    assert all(messages[-1]["role"] == "assistant" and messages[-1]["content"] for messages in sessions.values())
    assert duplicated == 0, (successes.most_common(3), Counter(turns.values()))
    assert queued(sqs, dlq) == 0
    assert retried > 0, "no kill landed while a job was running"
    assert reruns <= retried  # upstream is called again only for a job a kill interrupted
