"""The job state machine and the submit rules, as pure logic (no store, no queue)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from seekless.contracts import ChatCompletionRequest, GenerationJob
from seekless.errors import InvalidRequest, NotFound, PayloadTooLarge, ServiceUnavailable
from seekless.jobs import (
    ENQUEUE_FAILED,
    Job,
    JobConflict,
    JobService,
    JobStatus,
    check_transition,
    job_error,
    request_fingerprint,
)
from seekless.models import Page, Principal

NOW = 1_700_000_000.0
DEV = Principal(tenant_id="dev", key_id="key-1")


def chat(text: str = "hi", **extra: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "deepseek-flash", "messages": [{"role": "user", "content": text}], **extra}
    )


def job(status: JobStatus, *, owner: str | None = None, lease: float | None = None) -> Job:
    return Job(
        id="job_1",
        tenant_id="dev",
        status=status,
        model="deepseek-flash",
        created_at=int(NOW),
        updated_at=int(NOW),
        key_id="key-1",
        request=chat(),
        lease_owner=owner,
        lease_expires_at=lease,
    )


QUEUED = job(JobStatus.QUEUED)
LEASED = job(JobStatus.RUNNING, owner="w1", lease=NOW + 30)
EXPIRED = job(JobStatus.RUNNING, owner="w1", lease=NOW - 1)
FINISHED = [job(JobStatus.SUCCEEDED, owner="w1"), job(JobStatus.FAILED, owner="w1"), job(JobStatus.CANCELLED)]


def outcome(action: Any, current: Job | None, owner: str | None = "w1") -> str:
    try:
        check_transition(action, current, job_id="job_1", owner=owner, now=NOW)
    except NotFound:
        return "not_found"
    except JobConflict as conflict:
        return str(conflict.code)
    return "ok"


@pytest.mark.parametrize(
    ("action", "current", "owner", "expected"),
    [
        ("claim", QUEUED, "w2", "ok"),
        ("claim", LEASED, "w2", "job_leased"),
        ("claim", EXPIRED, "w2", "ok"),
        ("heartbeat", LEASED, "w1", "ok"),
        ("heartbeat", LEASED, "w2", "lease_lost"),
        ("heartbeat", QUEUED, "w1", "job_not_running"),
        ("progress", LEASED, "w1", "ok"),
        ("progress", LEASED, "w2", "lease_lost"),
        ("succeed", LEASED, "w1", "ok"),
        ("succeed", LEASED, None, "lease_lost"),
        ("fail", LEASED, "w1", "ok"),
        ("fail", QUEUED, "w1", "job_not_running"),
        ("abandon", QUEUED, None, "ok"),
        ("abandon", LEASED, None, "job_not_queued"),
        ("cancel", QUEUED, None, "ok"),
        ("cancel", LEASED, None, "ok"),
    ],
)
def test_state_machine_allows_and_refuses(action: str, current: Job, owner: str | None, expected: str) -> None:
    assert outcome(action, current, owner) == expected


@pytest.mark.parametrize("action", ["claim", "heartbeat", "progress", "succeed", "fail", "cancel"])
@pytest.mark.parametrize("finished", FINISHED, ids=lambda j: str(j.status))
def test_a_finished_job_is_never_moved_again(action: str, finished: Job) -> None:
    assert outcome(action, finished) == "job_finished"


@pytest.mark.parametrize("action", ["claim", "heartbeat", "progress", "succeed", "fail", "cancel", "abandon"])
def test_a_missing_job_is_not_found(action: str) -> None:
    assert outcome(action, None) == "not_found"


def test_a_job_leaves_for_the_queue_as_the_generation_job_contract() -> None:
    sent = dataclasses.replace(QUEUED, session_id="sess_1").to_generation_job()
    assert isinstance(sent, GenerationJob) and sent.version == 2
    assert (sent.job_id, sent.tenant_id, sent.key_id, sent.session_id) == ("job_1", "dev", "key-1", "sess_1")
    assert sent.connection_id is None and sent.request == chat()


def test_api_shapes() -> None:
    done = dataclasses.replace(LEASED, status=JobStatus.SUCCEEDED, progress_tokens=7, result={"object": "x"})
    assert done.to_api()["progress"] == {"tokens": 7} and done.to_api()["result"] == {"object": "x"}
    assert "error" not in done.to_api()
    assert QUEUED.to_accepted() == {"id": "job_1", "object": "job", "status": "queued", "created_at": int(NOW)}


def test_the_fingerprint_ignores_key_order_and_sees_any_change() -> None:
    a = ChatCompletionRequest.model_validate_json(
        '{"model":"deepseek-flash","messages":[{"role":"user","content":"x"}]}'
    )
    b = ChatCompletionRequest.model_validate_json(
        '{ "messages": [{"content": "x", "role": "user"}], "model": "deepseek-flash" }'
    )
    assert request_fingerprint(a, None) == request_fingerprint(b, None)
    assert request_fingerprint(a, None) != request_fingerprint(a, "sess_1")
    assert request_fingerprint(a, None) != request_fingerprint(chat("x", temperature=0), None)


# -- the service, with fakes -------------------------------------------------------------------------


class FakeStore:
    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.keys: dict[str, tuple[str, str]] = {}
        self.confirmed: set[str] = set()

    def mark_sent(self, tenant_id: str, job_id: str) -> None:
        self.confirmed.add(job_id)

    def unsent(self, *, created_before: float, limit: int = 100) -> list[Job]:
        return [job for job in self.jobs.values() if job.id not in self.confirmed][:limit]

    def create(
        self,
        tenant_id: str,
        *,
        key_id: str,
        request: ChatCompletionRequest,
        session_id: str | None,
        idempotency: tuple[str, str] | None = None,
    ) -> tuple[Job, bool]:
        if idempotency and idempotency[0] in self.keys:
            return self.jobs[self.keys[idempotency[0]][0]], False
        new = dataclasses.replace(QUEUED, id=f"job_{len(self.jobs)}", key_id=key_id, session_id=session_id)
        self.jobs[new.id] = new
        if idempotency:
            self.keys[idempotency[0]] = (new.id, idempotency[1])
        return new, True

    def get(self, tenant_id: str, job_id: str) -> Job:
        return self.jobs[job_id]

    def list_jobs(self, tenant_id: str, *, status: JobStatus | None, limit: int, after: str | None) -> Page[Job]:
        return Page(items=list(self.jobs.values()), has_more=False)

    def cancel(self, tenant_id: str, job_id: str) -> Job:
        check_transition("cancel", self.jobs.get(job_id), job_id=job_id, owner=None, now=NOW)
        self.jobs[job_id] = dataclasses.replace(self.jobs[job_id], status=JobStatus.CANCELLED)
        return self.jobs[job_id]

    def fail(self, tenant_id: str, job_id: str, error: dict[str, Any], *, owner: str | None) -> Job:
        check_transition(
            "abandon" if owner is None else "fail", self.jobs.get(job_id), job_id=job_id, owner=owner, now=NOW
        )
        self.jobs[job_id] = dataclasses.replace(self.jobs[job_id], status=JobStatus.FAILED, error=error)
        return self.jobs[job_id]


class FakeQueue:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[GenerationJob] = []
        self.fail = fail

    def enqueue(self, job: GenerationJob) -> None:
        if self.fail:
            raise ServiceUnavailable("queue down")
        self.sent.append(job)


def test_submit_records_then_enqueues_the_job() -> None:
    store, queue = FakeStore(), FakeQueue()
    submitted = JobService(store=store, queue=queue).submit(DEV, chat(session_id="sess_2"))
    assert submitted.created and submitted.job.status is JobStatus.QUEUED
    assert [m.job_id for m in queue.sent] == [submitted.job.id]
    assert queue.sent[0].session_id == "sess_2"  # the body's session_id names the session too


def test_a_replayed_key_enqueues_nothing() -> None:
    store, queue = FakeStore(), FakeQueue()
    service = JobService(store=store, queue=queue)
    first = service.submit(DEV, chat(), idempotency_key="k")
    again = service.submit(DEV, chat(), idempotency_key="k")
    assert again.job.id == first.job.id and not again.created and len(queue.sent) == 1


def test_an_enqueue_failure_fails_the_job_and_answers_503() -> None:
    store = FakeStore()
    service = JobService(store=store, queue=FakeQueue(fail=True))
    with pytest.raises(ServiceUnavailable) as caught:
        service.submit(DEV, chat(), idempotency_key="k")
    assert caught.value.status == 503 and caught.value.code == ENQUEUE_FAILED
    (failed,) = store.jobs.values()
    assert failed.status is JobStatus.FAILED and failed.error is not None and failed.error["code"] == ENQUEUE_FAILED
    with pytest.raises(ServiceUnavailable):  # the same key replays the same answer
        service.submit(DEV, chat(), idempotency_key="k")


def test_no_queue_means_no_job() -> None:
    store = FakeStore()
    with pytest.raises(ServiceUnavailable):
        JobService(store=store, queue=None).submit(DEV, chat())
    assert store.jobs == {}


@pytest.mark.parametrize("key", ["", "k" * 256])
def test_an_idempotency_key_must_be_1_to_255_characters(key: str) -> None:
    store = FakeStore()
    with pytest.raises(InvalidRequest):
        JobService(store=store, queue=FakeQueue()).submit(DEV, chat(), idempotency_key=key)
    assert store.jobs == {}


def test_job_error_is_openai_shaped() -> None:
    assert job_error("boom", code="x") == {"message": "boom", "type": "server_error", "param": None, "code": "x"}


def test_a_sent_job_is_confirmed_so_the_sweeper_leaves_it_alone() -> None:
    store, queue = FakeStore(), FakeQueue()
    service = JobService(store=store, queue=queue)
    submitted = service.submit(DEV, chat())
    assert store.confirmed == {submitted.job.id}
    assert service.resend_unsent(older_than_seconds=0) == 0 and len(queue.sent) == 1


def test_the_sweeper_resends_a_job_whose_producer_crashed_before_sending() -> None:
    store, queue = FakeStore(), FakeQueue()
    job, _ = store.create("dev", key_id="k1", request=chat(), session_id=None)  # recorded, never sent
    finished, _ = store.create("dev", key_id="k1", request=chat(), session_id=None)
    store.jobs[finished.id] = dataclasses.replace(finished, status=JobStatus.CANCELLED)
    service = JobService(store=store, queue=queue)
    assert service.resend_unsent(older_than_seconds=60) == 1
    assert [m.job_id for m in queue.sent] == [job.id]
    assert store.confirmed == {job.id, finished.id}  # both leave the sweeper's sight
    assert service.resend_unsent(older_than_seconds=60) == 0


def test_a_request_too_large_for_one_queue_message_is_refused_before_anything_is_written() -> None:
    store, queue = FakeStore(), FakeQueue()
    huge = chat("x" * 1_048_000)
    with pytest.raises(PayloadTooLarge) as caught:
        JobService(store=store, queue=queue).submit(DEV, huge)
    assert caught.value.status == 413 and caught.value.code == "job_too_large"
    assert store.jobs == {} and queue.sent == []
