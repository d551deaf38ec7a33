"""The job state machine and the submit rules, as pure logic (no store, no queue)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from seekless.contracts import ChatCompletionRequest, GenerationJob
from seekless.errors import InvalidRequest, NotFound, PayloadTooLarge, RateLimited, SeeklessError, ServiceUnavailable
from seekless.jobs import (
    ENQUEUE_FAILED,
    Job,
    JobConflict,
    JobService,
    JobStatus,
    WaitPolicy,
    check_transition,
    job_error,
    request_fingerprint,
    waits,
)
from seekless.limits import refused
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
DEFERRED = dataclasses.replace(
    QUEUED, deferrals=1, wait_reason="rate_limit_requests", not_before=NOW + 41.5, deferred_message="msg-2"
)


def outcome(action: Any, current: Job | None, owner: str | None = "w1", message_id: str | None = None) -> str:
    try:
        check_transition(action, current, job_id="job_1", owner=owner, now=NOW, message_id=message_id)
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
        ("defer", LEASED, "w1", "ok"),
        ("defer", LEASED, "w2", "lease_lost"),
        ("defer", EXPIRED, "w2", "lease_lost"),
        ("defer", QUEUED, "w1", "job_not_running"),
        ("cancel", DEFERRED, None, "ok"),
    ],
)
def test_state_machine_allows_and_refuses(action: str, current: Job, owner: str | None, expected: str) -> None:
    assert outcome(action, current, owner) == expected


@pytest.mark.parametrize(
    ("current", "message_id", "expected"),
    [
        (DEFERRED, "msg-2", "ok"),  # the delayed copy its deferral sent
        (DEFERRED, "msg-1", "job_deferred"),  # the delivery that deferred it, back after a crash
        (DEFERRED, None, "ok"),  # a caller that holds no message is not checked
        (QUEUED, "msg-1", "ok"),  # never deferred: any copy may claim it
    ],
)
def test_only_the_message_a_deferral_sent_claims_the_waiting_job(
    current: Job, message_id: str | None, expected: str
) -> None:
    assert outcome("claim", current, "w2", message_id=message_id) == expected


@pytest.mark.parametrize("action", ["claim", "heartbeat", "progress", "succeed", "fail", "cancel", "defer"])
@pytest.mark.parametrize("finished", FINISHED, ids=lambda j: str(j.status))
def test_a_finished_job_is_never_moved_again(action: str, finished: Job) -> None:
    assert outcome(action, finished) == "job_finished"


@pytest.mark.parametrize("action", ["claim", "heartbeat", "progress", "succeed", "fail", "cancel", "abandon", "defer"])
def test_a_missing_job_is_not_found(action: str) -> None:
    assert outcome(action, None) == "not_found"


def test_a_job_leaves_for_the_queue_as_the_generation_job_contract() -> None:
    sent = dataclasses.replace(QUEUED, session_id="sess_1").to_generation_job()
    assert isinstance(sent, GenerationJob) and sent.version == 3
    assert (sent.job_id, sent.tenant_id, sent.key_id, sent.session_id) == ("job_1", "dev", "key-1", "sess_1")
    assert sent.connection_id is None and sent.request == chat()


def test_api_shapes() -> None:
    done = dataclasses.replace(LEASED, status=JobStatus.SUCCEEDED, progress_tokens=7, result={"object": "x"})
    assert done.to_api()["progress"] == {"tokens": 7} and done.to_api()["result"] == {"object": "x"}
    assert "error" not in done.to_api()
    assert QUEUED.to_accepted() == {"id": "job_1", "object": "job", "status": "queued", "created_at": int(NOW)}


def test_a_deferred_job_shows_why_and_until_when_it_waits() -> None:
    shown = DEFERRED.to_api()
    assert shown["status"] == "queued" and shown["waiting"] == {"reason": "rate_limit_requests", "until": int(NOW) + 42}
    assert "waiting" not in QUEUED.to_api()
    assert "waiting" not in dataclasses.replace(DEFERRED, status=JobStatus.CANCELLED).to_api()


# -- waiting for a key's per-minute limits ----------------------------------------------------------


def rpm_refusal(retry_after: float) -> SeeklessError:
    return refused("rpm", limit=1, retry_after=retry_after)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (rpm_refusal(30), True),
        (refused("tpm", limit=1_000, retry_after=30), True),
        (refused("too_large", limit=1_000, retry_after=0, tokens=5_000), False),  # can never fit: 400
        (RateLimited("spent", code="daily_budget_exhausted", retry_after=3_600), False),
        (RateLimited("spent", code="monthly_budget_exhausted", retry_after=86_400), False),
        (RateLimited("DeepSeek rate limit reached"), False),  # upstream's own 429: after the call
    ],
    ids=lambda value: getattr(value, "code", str(value)),
)
def test_only_the_per_minute_limits_make_a_job_wait(error: SeeklessError, expected: bool) -> None:
    assert waits(error) is expected


def waiting(deferrals: int = 0, created_at: float = NOW) -> Job:
    return dataclasses.replace(LEASED, deferrals=deferrals, created_at=int(created_at))


def test_the_first_deferral_comes_back_after_the_window_within_one_more_window() -> None:
    policy = WaitPolicy()
    assert policy.delay(waiting(), rpm_refusal(12.3), now=NOW, rand=lambda: 0.0) == 13  # never before it turns
    assert policy.delay(waiting(), rpm_refusal(12.3), now=NOW, rand=lambda: 0.999) == 73  # spread over the next


def test_the_spread_doubles_with_each_deferral_up_to_the_queues_longest_delay() -> None:
    policy = WaitPolicy()
    spreads = [policy.delay(waiting(deferrals=n), rpm_refusal(0.5), now=NOW, rand=lambda: 1.0) for n in range(6)]
    assert spreads == [61, 121, 241, 481, 900, 900]


def test_a_job_never_waits_past_its_maximum_and_at_least_a_second() -> None:
    policy = WaitPolicy(max_wait_seconds=100)
    assert policy.delay(waiting(), rpm_refusal(5), now=NOW + 90, rand=lambda: 1.0) == 10
    assert policy.delay(waiting(), rpm_refusal(0.0), now=NOW, rand=lambda: 0.0) == 1


@pytest.mark.parametrize(
    ("policy", "job", "now"),
    [
        (WaitPolicy(max_wait_seconds=100), waiting(), NOW + 90.5),  # the window turns after the maximum
        (WaitPolicy(max_wait_seconds=100), waiting(), NOW + 200),
        (WaitPolicy(max_deferrals=3), waiting(deferrals=3), NOW),
    ],
)
def test_a_job_that_would_wait_too_long_fails_with_a_clear_reason(policy: WaitPolicy, job: Job, now: float) -> None:
    with pytest.raises(RateLimited) as caught:
        policy.delay(job, rpm_refusal(10), now=now)
    assert caught.value.code == "rate_limit_wait_exceeded" and caught.value.status == 429
    assert "rate_limit_requests" in caught.value.message


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
