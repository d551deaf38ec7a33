"""DynamoDB throttling (stubbed in botocore, see throttle.py): boto3 retries a short burst away; a longer
one is a clear 503 in OpenAI's schema; and no message is lost: a turn whose session write was throttled
is written once when the client asks again, and a job whose claim was throttled runs once it ends."""

from __future__ import annotations

import time
from collections.abc import Callable

from seekless_local.stack import LocalStack
from seekless_local.worker import WorkerThread
from tests.faults.conftest import Tally
from tests.faults.drive import (
    STRUCTURED,
    SUCCEEDED,
    WsChats,
    chat_body,
    http_client,
    new_session,
    question,
    rest_chat,
    session_turns,
)
from tests.faults.throttle import throttled_dynamodb
from tests.waiting import wait_for

BOTO3_ATTEMPTS = 4  # botocore's standard retry mode: the call and 3 retries


def test_dynamodb_throttling_is_retried_then_a_clear_503_and_loses_no_message(
    stack: LocalStack, tally: Callable[[str], Tally]
) -> None:
    row = tally("DynamoDB throttling (stubbed)")
    sessions, jobs = stack.tables["SessionsTable"], stack.tables["JobsTable"]
    with throttled_dynamodb() as throttle, http_client(stack) as http, WsChats(stack) as ws:

        def count(outcome_kind: str, detail: str = "") -> None:
            row.count(outcome_kind, detail)

        # A short burst: boto3's own retries absorb it.
        session = new_session(http)
        throttle.start(operations={"Query"}, table=sessions, times=2)
        outcome = rest_chat(http, chat_body(question(), session_id=session))
        count(outcome.kind, outcome.detail)
        assert outcome.kind == SUCCEEDED, outcome
        assert [s.throttled for s in throttle.sent] == [True, True, False]
        row.figure("2 throttled reads retried away by boto3")

        # Throttled for longer than boto3 retries: a clear 503, after its attempts.
        throttle.start(operations={"Query"}, table=sessions)
        started = time.monotonic()
        outcome = rest_chat(http, chat_body(question(), session_id=session))
        waited = time.monotonic() - started
        throttle.stop()
        count(outcome.kind, outcome.detail)
        assert (outcome.kind, outcome.status, outcome.code) == (STRUCTURED, 503, "service_unavailable"), outcome
        assert throttle.throttled == BOTO3_ATTEMPTS
        row.figure(f"503 service_unavailable after {throttle.throttled} throttled attempts ({waited:.1f} s)")

        # The session write throttled after the answer: an error now, the turn written once on the retry.
        cases = [(kind, new_session(http), question()) for kind in ("rest", "rest-stream", "websocket")]
        throttle.start(operations={"TransactWriteItems"}, table=sessions)
        for kind, session_id, content in cases:
            if kind == "websocket":
                rid = ws.chat(content, session_id=session_id)
                ws.wait([rid], timeout=15)
                outcome = ws.outcome(rid)
            else:
                outcome = rest_chat(http, chat_body(content, stream=kind == "rest-stream", session_id=session_id))
            count(outcome.kind, outcome.detail)
            assert (outcome.kind, outcome.code) == (STRUCTURED, "service_unavailable"), (kind, outcome)
        throttle.stop()
        for kind, session_id, content in cases:
            assert session_turns(http, session_id) == []
            if kind == "websocket":
                rid = ws.chat(content, session_id=session_id)
                ws.wait([rid], timeout=15)
                outcome = ws.outcome(rid)
            else:
                outcome = rest_chat(http, chat_body(content, stream=kind == "rest-stream", session_id=session_id))
            count(outcome.kind, outcome.detail)
            assert (outcome.kind, outcome.cache) == (SUCCEEDED, "hit"), (kind, outcome)  # no second upstream call
            turns = session_turns(http, session_id)
            assert [(t["role"], t["content"]) for t in turns] == [("user", content), ("assistant", outcome.content)]
        ws.settle()
        assert ws.doubled() == []
        assert stack.emulator.stats()["calls"] == 1 + len(cases)
        row.figure("3 turns whose session write was throttled: written once each on the retry (cache hits)")

        # A job: refused with a 503 while its record cannot be written...
        job_session = new_session(http)
        body = chat_body(question(), session_id=job_session)
        listed = {job["id"] for job in http.get("/v1/jobs").json()["data"]}
        throttle.start(operations={"PutItem", "TransactWriteItems"}, table=jobs)
        refused = http.post("/v1/jobs", json=body)
        throttle.stop()
        count(STRUCTURED if refused.status_code == 503 else "unhandled", refused.text)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "service_unavailable"
        assert {job["id"] for job in http.get("/v1/jobs").json()["data"]} == listed  # nothing half-created
        accepted = http.post("/v1/jobs", json=body)
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["id"]

        # ... and, once accepted, run exactly once although the worker's claim was throttled past boto3's
        # retries: the message comes back after its visibility timeout and the next claim succeeds.
        calls = stack.emulator.stats()["calls"]
        throttle.start(operations={"UpdateItem"}, table=jobs, times=BOTO3_ATTEMPTS)
        with WorkerThread():

            def finished() -> dict[str, object] | None:
                job: dict[str, object] = http.get(f"/v1/jobs/{job_id}").json()
                return job if job["status"] in ("succeeded", "failed", "cancelled") else None

            job = wait_for(finished, timeout=30, interval=0.2, what="the job to finish")
        assert throttle.throttled == BOTO3_ATTEMPTS
        count(SUCCEEDED if job["status"] == "succeeded" else "lost", str(job))
        assert job["status"] == "succeeded" and job["attempts"] == 1, job
        assert stack.emulator.stats()["calls"] == calls + 1
        assert len(session_turns(http, job_session)) == 2
        row.figure("a job whose claim was throttled: run once after redelivery")
    row.assert_clean()
