"""The job worker against real sockets: moto as a child process (queues with their redrive policy from
template.yaml), a real Redis, and the DeepSeek emulator. Visibility timeouts and leases are seconds
long so crashes, redeliveries and the dead-letter queue show up quickly; every wait has a deadline."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from seekless.adapters.budgets import DynamoBudgets
from seekless.adapters.deepseek import DeepSeekClient
from seekless.adapters.dynamodb import DynamoSessionStore
from seekless.adapters.jobs import DynamoJobStore
from seekless.adapters.limits import RedisRateLimiter
from seekless.adapters.sqs import SqsJobMessages, SqsJobQueue
from seekless.config import Settings
from seekless.contracts import ChatCompletionRequest
from seekless.errors import ServiceUnavailable
from seekless.jobs import Job, JobService, JobStatus, WaitPolicy
from seekless.limits import LimitsByKeyId, RateLimiter
from seekless.models import ApiKeyRecord, KeyLimits, Principal
from seekless.ports import QueueMessage
from seekless.telemetry import RecordingTelemetry, Telemetry
from seekless.worker.fallback import FallbackChatModel
from seekless.worker.runner import Worker, WorkerConfig
from seekless_local.emulator import EmulatorServer
from seekless_local.stack import MotoServer
from seekless_local.template import create_buckets, create_queues, create_tables
from seekless_local.worker import WorkerThread
from tests.waiting import wait_for

from .conftest import TABLES

pytestmark = pytest.mark.redis
DEV = Principal(tenant_id="dev", key_id="dev")
EMULATOR_KEY = "sk-emulator-test"
AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        client = boto3.client("dynamodb", endpoint_url=server.url, region_name="us-east-1", **_creds())
        create_tables(client, names=TABLES)
        s3 = boto3.client("s3", endpoint_url=server.url, region_name="us-east-1", **_creds())
        create_buckets(s3, names={"JobsBucket": "seekless-jobs"})
        yield server


@pytest.fixture(autouse=True)
def _clean_emulator(emulator: EmulatorServer) -> Iterator[None]:
    emulator.reset(settings=True)
    yield
    emulator.reset(settings=True)


def _creds() -> dict[str, str]:
    return {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@dataclass
class Env:
    moto_url: str
    sqs: Any
    queue_url: str
    dlq_url: str
    store: DynamoJobStore
    sessions: DynamoSessionStore
    service: JobService

    def submit(self, text: str, *, session: bool = False, max_tokens: int = 200, principal: Principal = DEV) -> Job:
        request = ChatCompletionRequest.model_validate(
            {"model": "deepseek-flash", "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens}
        )
        session_id = self.sessions.create("dev", title=None, metadata={}).id if session else None
        return self.service.submit(principal, request, session_id=session_id).job

    def job(self, job_id: str) -> Job:
        return self.store.get("dev", job_id)

    def counts(self, url: str | None = None) -> tuple[int, int]:
        """(visible, not visible) messages in the jobs queue (or ``url``)."""
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        attributes = self.sqs.get_queue_attributes(QueueUrl=url or self.queue_url, AttributeNames=names)["Attributes"]
        return int(attributes[names[0]]), int(attributes[names[1]])

    def pending(self) -> int:
        """Messages left in the jobs queue, delayed ones (a deferred job's copy) included."""
        names = [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ]
        attributes = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=names)["Attributes"]
        return sum(int(attributes[name]) for name in names)

    def session_messages(self, session_id: str) -> int:
        return len(self.sessions.messages("dev", session_id).items)


@pytest.fixture
def env(moto: MotoServer) -> Env:
    sqs = boto3.client("sqs", endpoint_url=moto.url, region_name="us-east-1", **_creds())
    suffix = uuid.uuid4().hex[:10]
    queues = create_queues(sqs, names={"JobsQueue": f"jobs-{suffix}", "JobsDeadLetterQueue": f"dlq-{suffix}"})
    dynamodb = boto3.client("dynamodb", endpoint_url=moto.url, region_name="us-east-1", **_creds())
    s3 = boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1", **_creds())
    store = DynamoJobStore(TABLES["JobsTable"], bucket="seekless-jobs", client=dynamodb, s3_client=s3)
    sessions = DynamoSessionStore(TABLES["SessionsTable"], client=dynamodb)
    queue = SqsJobQueue(queues["JobsQueue"], client=sqs)
    return Env(
        moto_url=moto.url,
        sqs=sqs,
        queue_url=queues["JobsQueue"],
        dlq_url=queues["JobsDeadLetterQueue"],
        store=store,
        sessions=sessions,
        service=JobService(store=store, queue=queue),
    )


class RecordingMessages(SqsJobMessages):
    """The real adapter, remembering every delivery it received."""

    def __init__(self, queue_url: str, *, client: Any) -> None:
        super().__init__(queue_url, client=client)
        self.received: list[QueueMessage] = []

    def receive(self, *, max_messages: int, wait_seconds: int, visibility_seconds: int) -> list[QueueMessage]:
        got = super().receive(
            max_messages=max_messages, wait_seconds=wait_seconds, visibility_seconds=visibility_seconds
        )
        self.received.extend(got)
        return got


FAST = WorkerConfig(
    concurrency=8,
    wait_seconds=1,
    visibility_seconds=3,
    lease_seconds=3.0,
    grace_seconds=5.0,
    progress_seconds=0.2,
    cancel_poll_seconds=0.2,
    job_deadline_seconds=60.0,
)


# Deferred jobs come back as soon as the limit's window turns over: no jitter to wait out in a test.
WAITING = dataclasses.replace(FAST, wait=WaitPolicy(spread_seconds=0.0))


class Minutes:
    """The rate limiter's clock: one second before a minute ends, until the test moves it on a minute.
    So a refused job's retry-after is one second (it is back a second later and refused again while the
    minute lasts), and which jobs a minute admits is the test's choice, not a race with a real clock."""

    def __init__(self) -> None:
        self.now = 1_700_000_039.0  # hh:mm:59

    def __call__(self) -> float:
        return self.now

    def next(self) -> None:
        self.now += 60


@dataclass(frozen=True)
class Limits:
    """Every job's key has ``key`` limits: per minute in Redis (on ``minutes``' clock), daily and
    monthly in ``budgets``."""

    redis_url: str
    key: KeyLimits
    minutes: Minutes = dataclasses.field(default_factory=Minutes)
    budgets: DynamoBudgets | None = None

    def worker(self, **parts: Any) -> Worker:
        """A worker with these limits; call it on the worker's own thread (its Redis client lives on that
        loop, and is closed with the worker's other pooled connections)."""
        from redis.asyncio import Redis

        redis = Redis.from_url(self.redis_url)
        limits = self.key

        class Keys:
            def get(self, key_id: str) -> ApiKeyRecord:
                return ApiKeyRecord(key_id=key_id, tenant_id="dev", limits=limits)

        class LimitedWorker(Worker):
            async def aclose(self) -> None:
                await super().aclose()
                await redis.aclose()

        limiters: list[RateLimiter] = [RedisRateLimiter(redis, clock=self.minutes)]
        if self.budgets is not None:
            limiters.insert(0, self.budgets)  # as wiring orders them: the durable budgets first
        return LimitedWorker(limiter=limiters, limits_for=LimitsByKeyId(Keys()), **parts)


def in_process(
    env: Env,
    deepseek_url: str,
    *,
    config: WorkerConfig = FAST,
    inference_url: str | None = None,
    messages: SqsJobMessages | None = None,
    limits: Limits | None = None,
    telemetry: Telemetry | None = None,
    jobs: Any = None,
) -> WorkerThread:
    settings = Settings(deepseek_base_url=deepseek_url, deepseek_api_key=EMULATOR_KEY, retry_attempts=1)

    def build() -> Worker:
        model: Any = DeepSeekClient.from_settings(settings, api_key=lambda _refresh: EMULATOR_KEY)
        if inference_url is not None:
            primary = DeepSeekClient(base_url=inference_url, api_key=lambda _refresh: "EMPTY", retry_attempts=1)
            model = FallbackChatModel(primary, model, primary_model="deepseek-flash")
        parts: dict[str, Any] = {
            "config": config,
            "messages": messages or SqsJobMessages(env.queue_url, client=env.sqs),
            "jobs": jobs or env.store,
            "settings": settings,
            "model": model,
            "sessions": env.sessions,
            "telemetry": telemetry,
        }
        return limits.worker(**parts) if limits is not None else Worker(**parts)

    return WorkerThread(build)


# -- lifecycle ---------------------------------------------------------------------------------------


def test_a_job_goes_queued_running_succeeded_and_its_session_gets_the_turn(env: Env, emulator: EmulatorServer) -> None:
    emulator.configure(tps=40)  # 32 tokens: under a second
    job = env.submit("Explain SQS visibility", session=True)
    assert env.job(job.id).status is JobStatus.QUEUED
    seen: set[JobStatus] = set()
    with in_process(env, emulator.base_url):

        def finished() -> bool:
            current = env.job(job.id)
            seen.add(current.status)
            return current.status.terminal

        wait_for(finished, timeout=15, what="the job to finish")
    done = env.job(job.id)
    assert JobStatus.RUNNING in seen
    assert done.status is JobStatus.SUCCEEDED and done.attempts == 1
    assert done.result is not None and done.result["object"] == "chat.completion"
    message = done.result["choices"][0]["message"]
    assert message["content"] and message["reasoning_content"]
    assert done.result["usage"]["completion_tokens"] > 0
    assert done.progress_tokens > 0
    assert done.session_id is not None and env.session_messages(done.session_id) == 2
    assert env.counts() == (0, 0)  # the message was deleted


def test_a_job_cancelled_while_queued_never_runs(env: Env, emulator: EmulatorServer) -> None:
    job = env.submit("Never mind")
    env.service.cancel(DEV, job.id)
    calls = emulator.stats()["calls"]
    with in_process(env, emulator.base_url):
        wait_for(lambda: env.counts() == (0, 0), timeout=10, what="the message to be dropped")
    done = env.job(job.id)
    assert done.status is JobStatus.CANCELLED and done.result is None and done.attempts == 0
    assert emulator.stats()["calls"] == calls


def test_a_running_job_stops_within_a_second_of_its_cancel(env: Env, emulator: EmulatorServer) -> None:
    emulator.configure(tps=20, tokens=400)  # 20 s if left alone
    job = env.submit("Write at length", max_tokens=1000)
    with in_process(env, emulator.base_url) as thread:
        assert thread.worker is not None
        wait_for(lambda: env.job(job.id).progress_tokens > 0, timeout=10, what="the job to be running")
        cancelled_at = time.monotonic()
        env.service.cancel(DEV, job.id)
        wait_for(lambda: thread.worker.active == 0, timeout=1.0, interval=0.02, what="the job to stop")
        stopped_in = time.monotonic() - cancelled_at
        wait_for(lambda: env.counts() == (0, 0), timeout=2, what="the message to be deleted")
    done = env.job(job.id)
    assert done.status is JobStatus.CANCELLED and done.result is None
    assert stopped_in < 1.0


def test_a_job_lasting_three_visibility_timeouts_is_received_once(env: Env, emulator: EmulatorServer) -> None:
    config = WorkerConfig(
        concurrency=4, wait_seconds=1, visibility_seconds=1, lease_seconds=1.0, progress_seconds=0.5, grace_seconds=5
    )
    emulator.configure(tps=10)  # 32 tokens: 3.2 s, over three 1 s visibility timeouts
    messages = RecordingMessages(env.queue_url, client=env.sqs)
    job = env.submit("Take your time")
    started = time.monotonic()
    with in_process(env, emulator.base_url, config=config, messages=messages):
        wait_for(lambda: env.job(job.id).status.terminal, timeout=15, what="the job to finish")
    assert time.monotonic() - started > 3 * config.visibility_seconds
    done = env.job(job.id)
    assert done.status is JobStatus.SUCCEEDED and done.attempts == 1
    assert [m.receive_count for m in messages.received] == [1]
    assert env.counts() == (0, 0)


def test_a_poison_message_reaches_the_dlq_after_exactly_max_receive_count_receives(
    env: Env, emulator: EmulatorServer
) -> None:
    job = env.store.create("dev", key_id="dev", request=_request(), session_id=None)[0]
    # A future contract version this worker cannot read, still naming its job.
    body = f'{{"version": 2, "job_id": "{job.id}", "tenant_id": "dev"}}'
    env.sqs.send_message(QueueUrl=env.queue_url, MessageBody=body)
    config = WorkerConfig(concurrency=2, wait_seconds=1, visibility_seconds=1, lease_seconds=1.0, max_receive_count=5)
    messages = RecordingMessages(env.queue_url, client=env.sqs)
    with in_process(env, emulator.base_url, config=config, messages=messages):
        wait_for(lambda: env.counts(env.dlq_url)[0] == 1, timeout=20, interval=0.2, what="the DLQ")
    assert [m.receive_count for m in messages.received] == [1, 2, 3, 4, 5]
    assert env.counts() == (0, 0)
    failed = env.job(job.id)
    assert failed.status is JobStatus.FAILED
    assert failed.error is not None and failed.error["code"] == "job_dead_lettered"


# -- waiting for the key's limits ---------------------------------------------------------------------


def test_jobs_over_one_request_per_minute_wait_their_turn_and_each_runs_once(
    env: Env, emulator: EmulatorServer, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="seekless.audit")
    telemetry = RecordingTelemetry()
    messages = RecordingMessages(env.queue_url, client=env.sqs)
    limits = Limits(redis_url, KeyLimits(rpm=1))
    jobs = [env.submit(f"Essay number {n}", max_tokens=50) for n in range(3)]

    def shown() -> list[dict[str, Any]]:
        return [env.job(job.id).to_api() for job in jobs]

    def minute_done(ran: int) -> list[dict[str, Any]] | None:
        """The jobs once ``ran`` have succeeded and every other one is seen waiting at the same time."""
        now = shown()
        succeeded = [job for job in now if job["status"] == "succeeded"]
        waiting = [job for job in now if "waiting" in job]
        return now if len(succeeded) == ran and len(waiting) == len(jobs) - ran else None

    with in_process(env, emulator.base_url, config=WAITING, messages=messages, limits=limits, telemetry=telemetry):
        for minute in range(1, len(jobs)):
            now = wait_for(lambda ran=minute: minute_done(ran), timeout=20, interval=0.02, what=f"minute {minute}")
            assert emulator.stats()["calls"] == minute  # a waiting job never reached upstream
            for job in now:
                if job["status"] != "succeeded":
                    assert job["status"] == "queued" and job["waiting"]["reason"] == "rate_limit_requests"
                    assert job["waiting"]["until"] >= job["updated_at"]
            limits.minutes.next()
        wait_for(lambda: all(job["status"] == "succeeded" for job in shown()), timeout=20, what="every job")
        wait_for(lambda: env.pending() == 0, timeout=10, what="every message to be deleted")
    done = [env.job(job.id) for job in jobs]
    assert all(job.attempts == 1 and "waiting" not in job.to_api() for job in done)  # a deferral is no attempt
    assert emulator.stats()["calls"] == 3
    deferrals = sum(job.deferrals for job in done)
    assert deferrals >= 3 and telemetry.counts["JobsDeferred"] == deferrals  # 2 in the first minute, 1 in the next
    # Each deferral is a new message: nothing was received twice, so nothing nears the dead-letter queue.
    assert [m.receive_count for m in messages.received] == [1] * (3 + deferrals)
    assert env.counts(env.dlq_url) == (0, 0)
    # One audit record per job, written by the run that answered it (a deferral is not a request).
    audits = [r.audit for r in caplog.records if hasattr(r, "audit")]
    assert sorted(a["request_id"] for a in audits) == sorted(job.id for job in jobs)
    assert all(a["route"] == "job" and a["status"] == 200 and a["completion_tokens"] > 0 for a in audits)


class DiesBeforeRecording:
    """The job store, except the first ``defer`` raises: the worker dies after sending the deferred copy
    and before recording it, so its lease and its delivery are left to run out."""

    def __init__(self, inner: DynamoJobStore) -> None:
        self._inner = inner
        self.died = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def defer(self, *args: Any, **kwargs: Any) -> Job:
        if not self.died:
            self.died = True
            raise RuntimeError("killed between the copy and the record")
        return self._inner.defer(*args, **kwargs)  # type: ignore[no-any-return]


class DiesBeforeDeleting(RecordingMessages):
    """The first deferral's delivery is never deleted, as if the worker died right after recording the
    deferral: the delivery comes back when its visibility runs out."""

    deferred: str | None = None
    died = False

    def send_later(self, job: Any, delay_seconds: int) -> str:
        if self.deferred is None:
            self.deferred = job.job_id
        return super().send_later(job, delay_seconds)

    def delete(self, message: QueueMessage) -> bool:
        if not self.died and self.deferred is not None and self.deferred in message.body:
            self.died = True
            return True
        return super().delete(message)


class ThrottledClaim:
    """The job store with its first ``claim`` throttled past boto3's retries (ServiceUnavailable)."""

    def __init__(self, inner: DynamoJobStore) -> None:
        self._inner = inner
        self.throttled = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def claim(self, *args: Any, **kwargs: Any) -> Job:
        if not self.throttled:
            self.throttled += 1
            raise ServiceUnavailable("the job store is busy; retry shortly")
        return self._inner.claim(*args, **kwargs)  # type: ignore[no-any-return]


def test_a_throttled_claim_is_a_warning_and_the_job_runs_once_when_its_message_returns(
    env: Env, emulator: EmulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    job = env.submit("Throttled at first")
    store = ThrottledClaim(env.store)
    with caplog.at_level(logging.WARNING, logger="seekless.worker"), in_process(env, emulator.base_url, jobs=store):
        wait_for(lambda: env.job(job.id).status.terminal, timeout=20, what="the job to finish")
    done = env.job(job.id)
    assert store.throttled == 1 and done.status is JobStatus.SUCCEEDED and done.attempts == 1
    assert emulator.stats()["calls"] == 1
    worker_records = [r for r in caplog.records if r.name == "seekless.worker"]
    assert any("job store is busy" in r.getMessage() for r in worker_records)
    assert not [r for r in worker_records if r.levelno >= logging.ERROR]  # handled, not a crash


class NeverRenewed:
    """The job store and the queue with a stalled worker's renewals: heartbeats and visibility extensions
    never land, so the job's lease and its message run out while its first run is still generating."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def heartbeat(self, *args: Any, **kwargs: Any) -> None:
        return None

    def extend(self, *args: Any, **kwargs: Any) -> None:
        return None


def test_a_job_run_twice_after_its_lease_ran_out_has_one_result_and_one_audit_record(
    env: Env, emulator: EmulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.configure(tps=12)  # about 2.7 s: the 1 s lease and visibility run out meanwhile
    job = env.submit("Slow enough to be redelivered")
    config = dataclasses.replace(FAST, visibility_seconds=1, lease_seconds=1.0)
    messages = NeverRenewed(SqsJobMessages(env.queue_url, client=env.sqs))
    worker = in_process(env, emulator.base_url, config=config, messages=messages, jobs=NeverRenewed(env.store))
    with caplog.at_level(logging.INFO, logger="seekless.audit"), worker:
        wait_for(lambda: env.job(job.id).status.terminal, timeout=20, what="the job to finish")
        wait_for(lambda: env.pending() == 0, timeout=20, what="every delivery to be deleted")
    done = env.job(job.id)
    assert done.status is JobStatus.SUCCEEDED and done.attempts >= 2  # a second run claimed it meanwhile
    audits = [r.audit for r in caplog.records if hasattr(r, "audit") and r.audit["request_id"] == job.id]
    assert len(audits) == 1, audits  # the run that finished it; the one stopped for it writes none
    assert audits[0]["status"] == 200 and audits[0]["completion_tokens"] > 0


@pytest.mark.parametrize("dies", ["before recording the deferral", "before deleting the deferred delivery"])
def test_a_worker_dying_in_a_deferral_neither_loses_nor_repeats_the_job(
    env: Env, emulator: EmulatorServer, redis_url: str, dies: str
) -> None:
    jobs = [env.submit(f"Essay number {n}", max_tokens=50) for n in range(2)]
    limits = Limits(redis_url, KeyLimits(rpm=1))
    messages = (DiesBeforeDeleting if dies.endswith("delivery") else RecordingMessages)(env.queue_url, client=env.sqs)
    store = DiesBeforeRecording(env.store) if dies.endswith("deferral") else env.store
    with in_process(env, emulator.base_url, config=WAITING, messages=messages, limits=limits, jobs=store):
        # The interrupted delivery comes back once its visibility runs out, and finds another copy in charge.
        wait_for(
            lambda: any(m.receive_count == 2 for m in messages.received), timeout=20, what="the delivery to return"
        )
        assert emulator.stats()["calls"] == 1  # the minute's one request; the waiting job has not run
        limits.minutes.next()
        wait_for(lambda: all(env.job(job.id).status.terminal for job in jobs), timeout=20, what="both jobs to end")
        wait_for(lambda: env.pending() == 0, timeout=20, what="every copy to be deleted")
    assert all(env.job(job.id).status is JobStatus.SUCCEEDED for job in jobs)
    assert emulator.stats()["calls"] == 2  # each job once
    assert env.counts(env.dlq_url) == (0, 0)


def test_a_job_that_would_wait_past_its_maximum_fails_with_the_reason(
    env: Env, emulator: EmulatorServer, redis_url: str
) -> None:
    config = dataclasses.replace(WAITING, wait=WaitPolicy(max_wait_seconds=0.0))
    jobs = [env.submit(f"Essay number {n}", max_tokens=50) for n in range(2)]
    with in_process(env, emulator.base_url, config=config, limits=Limits(redis_url, KeyLimits(rpm=1))):
        wait_for(lambda: all(env.job(job.id).status.terminal for job in jobs), timeout=15, what="both jobs to end")
        wait_for(lambda: env.pending() == 0, timeout=10, what="both messages to be deleted")
    ran, refused = sorted((env.job(job.id) for job in jobs), key=lambda job: job.status is not JobStatus.SUCCEEDED)
    assert ran.status is JobStatus.SUCCEEDED and refused.status is JobStatus.FAILED and refused.deferrals == 0
    assert refused.error is not None and refused.error["code"] == "rate_limit_wait_exceeded"
    assert refused.error["type"] == "rate_limit_error" and "rate_limit_requests" in refused.error["message"]
    assert emulator.stats()["calls"] == 1


def test_a_job_over_its_keys_daily_budget_fails_with_the_reason_and_no_upstream_call(
    env: Env, emulator: EmulatorServer, redis_url: str
) -> None:
    dynamodb = boto3.client("dynamodb", endpoint_url=env.moto_url, region_name="us-east-1", **_creds())
    budgets = DynamoBudgets(TABLES["ApiKeysTable"], client=dynamodb)
    key = Principal(tenant_id="dev", key_id=f"key_{uuid.uuid4().hex[:8]}", limits=KeyLimits(daily_tokens=1_000))
    assert budgets.reserve(key, 1_000) is not None  # today's budget, spent
    telemetry = RecordingTelemetry()
    limits = Limits(redis_url, key.limits or KeyLimits(), budgets=budgets)
    with in_process(env, emulator.base_url, config=WAITING, limits=limits, telemetry=telemetry):
        job = env.submit("One more, please", max_tokens=50, principal=Principal(tenant_id="dev", key_id=key.key_id))
        wait_for(lambda: env.job(job.id).status.terminal, timeout=15, what="the job to end")
        wait_for(lambda: env.pending() == 0, timeout=10, what="its message to be deleted")
    failed = env.job(job.id)
    assert failed.status is JobStatus.FAILED and failed.deferrals == 0
    assert failed.error is not None and failed.error["code"] == "daily_budget_exhausted"
    assert failed.error["type"] == "rate_limit_error" and "daily token budget" in failed.error["message"]
    assert emulator.stats()["calls"] == 0
    assert "JobsDeferred" not in telemetry.counts


def _request() -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "deepseek-flash", "messages": [{"role": "user", "content": "poison"}]}
    )


# -- the inference endpoint and its fallback -----------------------------------------------------------


def test_an_inference_endpoint_that_is_down_falls_back_to_the_deepseek_api(env: Env, emulator: EmulatorServer) -> None:
    with EmulatorServer() as vllm:
        vllm.configure(fault="503")
        job = env.submit("Fallback please")
        with in_process(env, emulator.base_url, inference_url=vllm.base_url):
            wait_for(lambda: env.job(job.id).status.terminal, timeout=15, what="the job to finish")
        assert vllm.stats()["calls"] >= 1
    done = env.job(job.id)
    assert done.status is JobStatus.SUCCEEDED
    assert emulator.stats()["calls"] == 1


def test_an_inference_endpoint_failing_mid_stream_fails_the_job_clearly(env: Env, emulator: EmulatorServer) -> None:
    with EmulatorServer() as vllm:
        vllm.configure(fault="reset", tps=50)  # the connection drops after a few tokens
        job = env.submit("Break halfway")
        with in_process(env, emulator.base_url, inference_url=vllm.base_url):
            wait_for(lambda: env.job(job.id).status.terminal, timeout=15, what="the job to finish")
    done = env.job(job.id)
    assert done.status is JobStatus.FAILED and done.result is None
    assert done.error is not None and done.error["code"] == "upstream_stream_interrupted"
    assert done.error["type"] == "api_error" and done.error["message"]
    assert emulator.stats()["calls"] == 0  # no silent switch to another model mid-answer
    assert env.counts() == (0, 0)


# -- the worker as a process: crashes and SIGTERM -------------------------------------------------------


def worker_env(env: Env, emulator: EmulatorServer, redis_url: str, tmp_path: Path, **overrides: str) -> dict[str, str]:
    values = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SEEKLESS_", "DEEPSEEK_", "AWS_"))},
        **AWS,
        "AWS_ENDPOINT_URL": env.moto_url,
        "SEEKLESS_JOBS_TABLE": TABLES["JobsTable"],
        "SEEKLESS_SESSIONS_TABLE": TABLES["SessionsTable"],
        "SEEKLESS_JOBS_QUEUE_URL": env.queue_url,
        "SEEKLESS_JOBS_BUCKET": "seekless-jobs",
        "REDIS_URL": redis_url,
        "DEEPSEEK_BASE_URL": emulator.base_url,
        "DEEPSEEK_API_KEY": EMULATOR_KEY,
        "SEEKLESS_WORKER_CONCURRENCY": "32",
        "SEEKLESS_WORKER_WAIT_SECONDS": "1",
        "SEEKLESS_WORKER_VISIBILITY_SECONDS": "3",
        "SEEKLESS_WORKER_LEASE_SECONDS": "3",
        "SEEKLESS_WORKER_PROGRESS_SECONDS": "0.5",
        "SEEKLESS_WORKER_CANCEL_POLL_SECONDS": "0.5",
        "SEEKLESS_WORKER_HEALTH_FILE": str(tmp_path / "alive"),
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        **overrides,
    }
    return values


def start_worker(environment: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        return subprocess.Popen([sys.executable, "-m", "seekless.worker"], env=environment, stdout=sink, stderr=sink)


def test_kill_9_at_random_points_loses_no_job_and_doubles_nothing(
    env: Env, emulator: EmulatorServer, redis_url: str, tmp_path: Path
) -> None:
    emulator.configure(tps=32)  # about a second per job
    jobs = [env.submit(f"job {n}: {uuid.uuid4().hex}", session=n % 3 == 0) for n in range(60)]
    environment = worker_env(env, emulator, redis_url, tmp_path)
    log = tmp_path / "worker.log"
    rng = random.Random(4)
    for _ in range(3):
        process = start_worker(environment, log)
        try:
            # Kill once the worker is busy, at a random point of its work.
            wait_for(lambda: env.counts()[1] > 0, timeout=20, what="the worker to take messages")
            time.sleep(rng.uniform(0.1, 1.5))  # the random kill point, not a wait for a condition
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
    final = start_worker(environment, log)
    try:

        def settled() -> bool:
            visible, invisible = env.counts()
            return visible + invisible == 0

        wait_for(settled, timeout=60, interval=0.25, what="the queue to drain")
    finally:
        final.send_signal(signal.SIGTERM)
        assert final.wait(timeout=15) == 0, log.read_text()[-3000:]
    dead_lettered = env.counts(env.dlq_url)[0]
    statuses = {}
    for job in jobs:
        done = env.job(job.id)
        statuses[job.id] = done.status
        if done.status is JobStatus.SUCCEEDED:
            assert done.result is not None and done.result["choices"][0]["message"]["content"]
            if done.session_id:
                assert env.session_messages(done.session_id) == 2, f"{job.id}: one user turn and one reply"
        else:
            assert done.status is JobStatus.FAILED, f"{job.id} ended {done.status}"
    assert any(env.job(job.id).attempts > 1 for job in jobs), "no kill landed while a job was running"
    failed = sum(1 for status in statuses.values() if status is JobStatus.FAILED)
    assert failed == dead_lettered
    assert sum(1 for status in statuses.values() if status is JobStatus.SUCCEEDED) + dead_lettered == len(jobs)


def test_sigterm_drains_running_jobs_within_the_grace_period(
    env: Env, emulator: EmulatorServer, redis_url: str, tmp_path: Path
) -> None:
    emulator.configure(tps=16)  # about two seconds per job
    jobs = [env.submit(f"drain {n}") for n in range(6)]
    log = tmp_path / "worker.log"
    process = start_worker(worker_env(env, emulator, redis_url, tmp_path, SEEKLESS_WORKER_GRACE_SECONDS="10"), log)
    try:
        wait_for(
            lambda: all(env.job(j.id).status is JobStatus.RUNNING for j in jobs), timeout=20, what="all jobs running"
        )
        assert (
            subprocess.run(  # the container HEALTHCHECK
                [sys.executable, "-m", "seekless.worker", "--health"],
                env=worker_env(env, emulator, redis_url, tmp_path),
            ).returncode
            == 0
        )
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        env.submit("after the signal")  # stays queued: no receive starts after SIGTERM
        assert process.wait(timeout=15) == 0, log.read_text()[-3000:]
        assert time.monotonic() - signalled < 10
    finally:
        if process.poll() is None:
            process.kill()
    assert all(env.job(j.id).status is JobStatus.SUCCEEDED for j in jobs)
    assert env.counts() == (1, 0)  # only the late job, visible; nothing invisible after exit


def test_sigterm_hands_back_what_the_grace_period_cannot_finish(
    env: Env, emulator: EmulatorServer, redis_url: str, tmp_path: Path
) -> None:
    emulator.configure(tps=10, tokens=200)  # 20 s per job
    jobs = [env.submit(f"too long {n}", max_tokens=1000) for n in range(4)]
    log = tmp_path / "worker.log"
    environment = worker_env(
        env, emulator, redis_url, tmp_path, SEEKLESS_WORKER_GRACE_SECONDS="1", SEEKLESS_WORKER_VISIBILITY_SECONDS="30"
    )
    process = start_worker(environment, log)
    try:
        wait_for(
            lambda: all(env.job(j.id).status is JobStatus.RUNNING for j in jobs), timeout=20, what="all jobs running"
        )
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        assert process.wait(timeout=10) == 0, log.read_text()[-3000:]
        assert time.monotonic() - signalled < 4  # grace 1 s, plus the hand-back
    finally:
        if process.poll() is None:
            process.kill()
    assert env.counts() == (4, 0)  # every message visible again at once, though visibility was 30 s
    now = time.time()
    for j in jobs:
        held = env.job(j.id)
        assert held.status is JobStatus.RUNNING and (held.lease_expires_at or 0) <= now  # free to claim now


def test_the_worker_process_writes_json_audit_records_and_publishes_its_metrics(
    env: Env, emulator: EmulatorServer, redis_url: str, tmp_path: Path
) -> None:
    job = env.submit("audit me")
    log = tmp_path / "worker.log"
    environment = worker_env(
        env,
        emulator,
        redis_url,
        tmp_path,
        POWERTOOLS_LOG_LEVEL="INFO",
        POWERTOOLS_METRICS_DISABLED="false",
        POWERTOOLS_METRICS_NAMESPACE="Seekless",
        POWERTOOLS_SERVICE_NAME="seekless",
    )
    process = start_worker(environment, log)
    try:
        wait_for(lambda: env.job(job.id).status is JobStatus.SUCCEEDED, timeout=20, what="the job")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0, log.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
    lines = [json.loads(text) for text in log.read_text().splitlines() if text.startswith("{")]
    (audit,) = [line["audit"] for line in lines if "audit" in line]
    assert (audit["route"], audit["request_id"], audit["status"]) == ("job", job.id, 200)
    assert audit["tenant_id"] == "dev" and audit["completion_tokens"] > 0
    emf = [line for line in lines if "_aws" in line]  # CloudWatch's embedded metric format
    succeeded = [value for line in emf for value in _as_list(line.get("JobsSucceeded", []))]
    assert sum(succeeded) == 1


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]
