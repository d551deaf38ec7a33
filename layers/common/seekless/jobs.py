"""Long generations as jobs: the job model, its state machine, and the service that submits them.

A job moves forward, except back to the queue to wait for its key's per-minute limits::

    queued ──claim──► running ──succeed──► succeeded
    ▲ │                │  ▲  └────fail────► failed
    │ │                │  └─ claim again once the lease has expired (a worker died): attempts + 1
    │ └────cancel──────┴───cancel─────────► cancelled
    └──────defer───────┘

``defer``: the lease holder puts back a job its key's requests or tokens per minute refused before any
upstream call, until ``not_before``, naming the delayed copy of its message that will take it then (a
claim by any other copy is refused, so a duplicate message never runs it early or keeps cycling). A
deferral is not an attempt: it gives back the one its claim counted. ``WaitPolicy`` says how long a job
may wait in all; past that it fails with ``rate_limit_wait_exceeded``.

``check_transition`` is the one statement of these rules. The DynamoDB adapter enforces the same rules
as condition expressions (so two writers can never both win) and, when a condition fails, asks
``check_transition`` which rule the current item broke, to raise the specific error. A terminal job
(succeeded, failed, cancelled) is never written again.

Nothing here imports an SDK: the store and the queue are ports (``JobStore``, ``JobQueue``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

from seekless.contracts import ChatCompletionRequest, DecisionJob, GenerationJob, ReplyTo
from seekless.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    SeeklessError,
    ServiceUnavailable,
)
from seekless.models import Principal

if TYPE_CHECKING:
    from seekless.models import Page
    from seekless.ports import JobQueue, JobStore

logger = logging.getLogger("seekless.jobs")

# Stripe's limit; longer keys are refused rather than silently truncated.
IDEMPOTENCY_KEY_MAX_LENGTH = 255
# SQS carries at most 1 MiB a message; the GenerationJob around the request adds well under this.
SQS_MAX_MESSAGE_BYTES = 1_048_576
JOB_ENVELOPE_BYTES = 4_096
ENQUEUE_FAILED = "job_enqueue_failed"


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
Action = Literal["claim", "heartbeat", "progress", "succeed", "fail", "cancel", "abandon", "defer"]


@dataclass(frozen=True, slots=True)
class Job:
    """One job as the domain sees it. ``request`` is None in listings (the list index leaves it out,
    with the result, so a page of jobs never reads megabytes)."""

    id: str
    tenant_id: str
    status: JobStatus
    model: str
    created_at: int
    updated_at: int
    key_id: str = ""
    request: ChatCompletionRequest | None = None
    session_id: str | None = None
    attempts: int = 0
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    progress_tokens: int = 0
    result: dict[str, Any] | None = None  # the chat.completion object, once succeeded
    error: dict[str, Any] | None = None  # OpenAI's error shape (message, type, param, code), once failed
    batch_id: str | None = None  # a line of this batch file
    custom_id: str | None = None  # the batch line's custom_id
    line: int | None = None  # the batch line's number, from 1
    reply_to: ReplyTo | None = None  # a queued request's reply destination
    replied: bool = False  # its reply went out
    deferrals: int = 0  # times it went back to the queue to wait for its key's per-minute limits
    wait_reason: str | None = None  # while deferred: the limit's error code
    not_before: float | None = None  # while deferred: when its delayed message comes back
    deferred_message: str | None = None  # while deferred: the id of that message, the only one that may claim it
    decision: DecisionJob | None = None  # a decisions file's line: decided, not chatted (no ``request``)

    def to_api(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "object": "job",
            "status": str(self.status),
            "model": self.model,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "session_id": self.session_id,
            "attempts": self.attempts,
            "progress": {"tokens": self.progress_tokens},
        }
        if self.result is not None:
            data["result"] = self.result
        if self.error is not None:
            data["error"] = self.error
        if self.batch_id is not None:
            data["batch_id"] = self.batch_id
            data["custom_id"] = self.custom_id
        if self.status is JobStatus.QUEUED and self.wait_reason is not None and self.not_before is not None:
            data["waiting"] = {"reason": self.wait_reason, "until": math.ceil(self.not_before)}
        return data

    def to_accepted(self) -> dict[str, Any]:
        """The 202 answer to POST /v1/jobs."""
        return {"id": self.id, "object": "job", "status": str(self.status), "created_at": self.created_at}

    def to_generation_job(self) -> GenerationJob:
        """The queue message: the shared, versioned contract (no connection: a REST job's sink is its record)."""
        if self.request is None and self.decision is None:
            raise ValueError("a job read from a listing carries no request")
        return GenerationJob(
            job_id=self.id,
            tenant_id=self.tenant_id,
            key_id=self.key_id,
            request=self.request,
            decision=self.decision,
            session_id=self.session_id,
            created_at=float(self.created_at),
            batch_id=self.batch_id,
            reply_to=self.reply_to,
        )


def job_error(message: str, *, type: str = "server_error", code: str | None = None) -> dict[str, Any]:
    """A job's ``error`` field, in OpenAI's error shape."""
    return {"message": message, "type": type, "param": None, "code": code}


# -- errors ------------------------------------------------------------------------------------------


class JobConflict(Conflict):
    """A transition the job's current state does not allow (409). ``current`` is the job as it is."""

    default_code = "job_conflict"

    def __init__(self, message: str, *, code: str | None = None, current: Job | None = None) -> None:
        super().__init__(message, code=code)
        self.current = current


class IdempotencyKeyReused(Conflict):
    default_code = "idempotency_key_reused"


def job_not_found(job_id: str) -> NotFound:
    return NotFound(f"No job found with id '{job_id}'.", code="job_not_found")


# -- the state machine -------------------------------------------------------------------------------


def check_transition(
    action: Action, job: Job | None, *, job_id: str, owner: str | None, now: float, message_id: str | None = None
) -> None:
    """Raise the error ``action`` meets on ``job`` (None: missing or expired); return if it is allowed.

    ``abandon`` is the producer giving up on a job it could not enqueue: queued → failed, no owner.
    ``message_id`` (claim): the queue message the claimer holds, checked against a deferred job's.
    """
    if job is None:
        raise job_not_found(job_id)
    status = job.status
    if action == "cancel":
        if status.terminal:
            raise JobConflict(f"Job '{job_id}' is already {status} and cannot be cancelled.", code="job_finished")
        return
    if action == "abandon":
        if status is not JobStatus.QUEUED:
            raise JobConflict(f"Job '{job_id}' is {status}, not queued.", code="job_not_queued", current=job)
        return
    if action == "claim":
        if status is JobStatus.QUEUED:
            if job.deferred_message is not None and message_id is not None and message_id != job.deferred_message:
                raise JobConflict(
                    f"Job '{job_id}' waits for its key's limits; another message takes it.",
                    code="job_deferred",
                    current=job,
                )
            return
        if status is JobStatus.RUNNING and (job.lease_expires_at or 0) <= now:
            return
        code = "job_finished" if status.terminal else "job_leased"
        raise JobConflict(f"Job '{job_id}' is {status} and cannot be claimed.", code=code, current=job)
    # heartbeat, progress, succeed, fail, defer: only the lease holder of a running job.
    if status is not JobStatus.RUNNING:
        code = "job_finished" if status.terminal else "job_not_running"
        raise JobConflict(f"Job '{job_id}' is {status}, not running.", code=code, current=job)
    if job.lease_owner != owner:
        raise JobConflict(f"Job '{job_id}' is leased by another worker.", code="lease_lost", current=job)


# -- waiting for a key's per-minute limits -----------------------------------------------------------

# Refusals that pass with time (the minute window turns over). A spent daily or monthly budget, or a
# request larger than the key's whole tokens per minute, fails at once: waiting hours helps nobody.
WAIT_CODES = frozenset({"rate_limit_requests", "rate_limit_tokens"})
WAIT_EXCEEDED = "rate_limit_wait_exceeded"
MAX_QUEUE_DELAY_SECONDS = 900  # SQS DelaySeconds' maximum


def waits(error: SeeklessError) -> bool:
    """Whether a job refused with ``error`` (before any upstream call) should wait rather than fail."""
    return error.code in WAIT_CODES


@dataclass(frozen=True, slots=True)
class WaitPolicy:
    """How long a job refused by its key's per-minute limits is put back on the queue, and for how long
    in all it may wait before it fails."""

    max_wait_seconds: float = 86_400.0  # from the job's creation: a batch's completion window
    max_deferrals: int = 1_000  # a bound on what one job may cost in queue and table writes
    # One limit window: the first retries of jobs deferred together are spread over the next minute
    # instead of all arriving as it turns over; the spread doubles with each deferral of the same job.
    spread_seconds: float = 60.0
    max_delay_seconds: int = MAX_QUEUE_DELAY_SECONDS

    def delay(
        self,
        job: Job,
        error: SeeklessError,
        *,
        now: float,
        rand: Callable[[], float] = random.random,
    ) -> int:
        """Whole seconds until ``job`` (as claimed) tries again after ``error``; raises RateLimited with
        ``rate_limit_wait_exceeded`` when it has waited, or would wait, longer than allowed."""
        retry_after = max(0.0, error.retry_after or 0.0)
        left = job.created_at + self.max_wait_seconds - now
        if job.deferrals >= self.max_deferrals or retry_after > left:
            raise RateLimited(
                f"The job waited for this API key's per-minute limits ({error.code}) past its maximum wait "
                f"({self.max_wait_seconds:g} s or {self.max_deferrals} deferrals) and was not run. Spread the "
                "requests out or ask for a higher limit.",
                code=WAIT_EXCEEDED,
            )
        # Full jitter over a growing spread: a job that keeps losing the race comes back less often,
        # so a large batch under a small limit costs fewer receives and writes per line.
        spread = min(float(self.max_delay_seconds), self.spread_seconds * 2.0 ** min(job.deferrals, 16))
        delay = min(retry_after + rand() * spread, float(self.max_delay_seconds), left)
        return max(1, math.ceil(delay))


# -- submitting jobs ---------------------------------------------------------------------------------


def request_fingerprint(request: ChatCompletionRequest, session_id: str | None) -> str:
    """What "the same body" means for an idempotency key: the validated request, canonically encoded,
    so key order and whitespace do not make two identical requests differ."""
    canonical = json.dumps(
        {"request": request.model_dump(mode="json", exclude_none=True), "session_id": session_id},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Submission:
    job: Job
    created: bool  # False: an earlier request with the same idempotency key made this job


class JobService:
    """Submit, read, list and cancel a tenant's jobs. The worker drives the rest of the lifecycle."""

    def __init__(self, *, store: JobStore, queue: JobQueue | None) -> None:
        self._store = store
        self._queue = queue

    def submit(
        self,
        principal: Principal,
        request: ChatCompletionRequest,
        *,
        session_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Submission:
        """Record the job, then enqueue it. The record comes first so a worker always finds it; if the
        enqueue fails the job is marked failed at once, so no queued job waits for a message that was
        never sent."""
        if self._queue is None:
            raise ServiceUnavailable(
                "Jobs are not available on this deployment (no jobs queue).", code="jobs_unavailable"
            )
        session_id = session_id or request.session_id
        size = len(request.model_dump_json(exclude_none=True).encode()) + JOB_ENVELOPE_BYTES
        if size > SQS_MAX_MESSAGE_BYTES:
            # Refused before anything is written: a job whose message cannot be sent would never run.
            raise PayloadTooLarge(
                f"The job's request is too large to queue ({size} bytes with its envelope; the limit is "
                f"{SQS_MAX_MESSAGE_BYTES}). Shorten the messages.",
                code="job_too_large",
            )
        idempotency: tuple[str, str] | None = None
        if idempotency_key is not None:
            if not idempotency_key or len(idempotency_key) > IDEMPOTENCY_KEY_MAX_LENGTH:
                raise InvalidRequest(
                    f"Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} characters.",
                    param="Idempotency-Key",
                    code="invalid_idempotency_key",
                )
            idempotency = (idempotency_key, request_fingerprint(request, session_id))
        job, created = self._store.create(
            principal.tenant_id,
            key_id=principal.key_id,
            request=request,
            session_id=session_id,
            idempotency=idempotency,
        )
        if not created:
            _replay_enqueue_failure(job)
            return Submission(job=job, created=False)
        try:
            self._queue.enqueue(job.to_generation_job())
        except Exception as error:
            logger.exception("enqueue failed; marking job %s failed", job.id)
            message = "The job could not be queued, so it will not run. Retry the request (with a new Idempotency-Key)."
            self._store.fail(principal.tenant_id, job.id, job_error(message, code=ENQUEUE_FAILED), owner=None)
            raise _enqueue_failed(job.id) from error
        self._confirm_sent(job)
        return Submission(job=job, created=True)

    def _confirm_sent(self, job: Job) -> None:
        try:
            self._store.mark_sent(job.tenant_id, job.id)
        except Exception:  # the sweeper will send it again; a duplicate message is harmless (claims are conditional)
            logger.warning("could not confirm job %s as sent", job.id, exc_info=True)

    def resend_unsent(self, *, older_than_seconds: float, now: float | None = None, limit: int = 100) -> int:
        """Send again the jobs whose producer crashed between recording and enqueueing them (they would
        otherwise stay queued forever). Returns how many were re-sent."""
        if self._queue is None:
            return 0
        cutoff = (time.time() if now is None else now) - older_than_seconds
        resent = 0
        for job in self._store.unsent(created_before=cutoff, limit=limit):
            if job.status is JobStatus.QUEUED:
                self._queue.enqueue(job.to_generation_job())
                resent += 1
            self._store.mark_sent(job.tenant_id, job.id)
        return resent

    def get(self, principal: Principal, job_id: str) -> Job:
        return self._store.get(principal.tenant_id, job_id)

    def list_jobs(self, principal: Principal, *, status: JobStatus | None, limit: int, after: str | None) -> Page[Job]:
        return self._store.list_jobs(principal.tenant_id, status=status, limit=limit, after=after)

    def cancel(self, principal: Principal, job_id: str) -> Job:
        return self._store.cancel(principal.tenant_id, job_id)


def _enqueue_failed(job_id: str) -> SeeklessError:
    return ServiceUnavailable(
        f"Job '{job_id}' could not be queued and was marked failed; retry with a new Idempotency-Key.",
        code=ENQUEUE_FAILED,
    )


def _replay_enqueue_failure(job: Job) -> None:
    """The same key replays the same outcome: a job that never reached the queue answers as it did."""
    if job.status is JobStatus.FAILED and (job.error or {}).get("code") == ENQUEUE_FAILED:
        raise _enqueue_failed(job.id)
