"""Chat requests from systems that hold no connection: a message on the requests queue becomes a job,
and the job's end becomes a reply where the message asked (an SQS queue or an S3 prefix).

Idempotent per message: the job id is the message's ``job_id`` or one derived from the SQS message id,
and the job record is created conditionally, so a redelivered message finds its job instead of making a
second one (and sends its queue message again only while the job is still queued: a duplicate message
is harmless, the worker's claim is conditional). Replies go out at least once: the worker marks a job
replied after sending, so only a crash between the two can repeat one; a reply carries the job id.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

from seekless.contracts import GenerationJob, ReplyTo, RequestMessage
from seekless.errors import InvalidRequest, NotFound
from seekless.jobs import Job, JobStatus
from seekless.models import Principal

if TYPE_CHECKING:
    from seekless.batches import BatchService
    from seekless.chat import ChatService
    from seekless.ports import JobQueue

logger = logging.getLogger("seekless.queued")


class ReplySink(Protocol):
    def send(self, reply_to: ReplyTo, job_id: str, body: dict[str, Any]) -> None: ...


class RequestJobs(Protocol):
    def create(
        self,
        tenant_id: str,
        *,
        key_id: str,
        request: Any,
        session_id: str | None,
        idempotency: tuple[str, str] | None = None,
        job_id: str | None = None,
        reply_to: ReplyTo | None = None,
    ) -> tuple[Job, bool]: ...

    def mark_sent(self, tenant_id: str, job_id: str) -> None: ...


class EndingJobs(Protocol):
    def get(self, tenant_id: str, job_id: str) -> Job: ...

    def mark_replied(self, tenant_id: str, job_id: str) -> bool: ...


def reply_body(job: Job) -> dict[str, Any]:
    """What a reply holds: the job's outcome, as GET /v1/jobs/{id} shows it."""
    return {"object": "job.reply", **job.to_api()}


def error_reply(job_id: str, error: dict[str, Any]) -> dict[str, Any]:
    """The reply to a request that never became a job (invalid)."""
    now = int(time.time())
    return {
        "object": "job.reply",
        "id": job_id,
        "status": "failed",
        "created_at": now,
        "updated_at": now,
        "error": error,
    }


class ReplyPolicy:
    """Where replies may go: the deployment's allowed queue URLs and S3 prefixes (the worker's role can
    write nowhere else, so refusing early gives the sender a clear error instead of a lost reply)."""

    def __init__(self, queue_urls: list[str], s3_prefixes: list[str]) -> None:
        self._queues = {url.rstrip("/") for url in queue_urls if url}
        self._prefixes = [prefix for prefix in s3_prefixes if prefix]

    def allows(self, reply_to: ReplyTo) -> bool:
        if reply_to.queue_url is not None:
            return reply_to.queue_url.rstrip("/") in self._queues
        target = reply_to.s3_prefix or ""
        return any(target.startswith(prefix) for prefix in self._prefixes)

    def check(self, reply_to: ReplyTo) -> None:
        if not self.allows(reply_to):
            raise InvalidRequest(
                f"reply_to {reply_to.describe()!r} is not an allowed reply destination on this deployment.",
                param="reply_to",
                code="reply_to_not_allowed",
            )


def request_job_id(message: RequestMessage, message_id: str) -> str:
    return message.job_id or "req_" + hashlib.sha256(message_id.encode()).hexdigest()[:24]


class QueuedRequests:
    def __init__(self, *, jobs: RequestJobs, queue: JobQueue, chat: ChatService, policy: ReplyPolicy) -> None:
        self._jobs = jobs
        self._queue = queue
        self._chat = chat
        self._policy = policy

    def submit(self, message: RequestMessage, message_id: str) -> Job:
        """Make (or find) the message's job and queue it. InvalidRequest and NotFound mean the request can
        never run: the caller replies with the error instead of retrying."""
        self._policy.check(message.reply_to)
        principal = Principal(tenant_id=message.tenant_id, key_id=message.key_id)
        # Checked as the chat route checks it; the session's existence is the worker's to find (a
        # missing one fails the job, and the reply says so).
        unsessioned = message.request.model_copy(update={"session_id": None})
        self._chat.prepare(unsessioned, principal, headers={}, deadline=time.monotonic() + 60)
        job, created = self._jobs.create(
            message.tenant_id,
            key_id=message.key_id,
            request=message.request,
            session_id=message.session_id or message.request.session_id,
            job_id=request_job_id(message, message_id),
            reply_to=message.reply_to,
        )
        if created or job.status is JobStatus.QUEUED:
            self._queue.enqueue(job.to_generation_job())
            self._jobs.mark_sent(job.tenant_id, job.id)
        return job


class JobEndings:
    """What happens after a job ends, whoever ended it: its batch counts it, its requester gets a reply.
    Safe to call again for the same job (both steps are idempotent); the worker calls it before deleting
    the job's message, so a crash in between is finished by the redelivery."""

    def __init__(self, *, jobs: EndingJobs, batches: BatchService | None, replies: ReplySink | None) -> None:
        self._jobs = jobs
        self._batches = batches
        self._replies = replies

    def __call__(self, job: GenerationJob) -> None:
        if job.batch_id is None and job.reply_to is None:
            return
        try:
            record = self._jobs.get(job.tenant_id, job.job_id)
        except NotFound:
            return
        if not record.status.terminal:
            return
        if job.batch_id is not None and self._batches is not None:
            self._batches.job_ended(job.tenant_id, job.batch_id, job.job_id, record.status)
        if job.reply_to is not None and self._replies is not None:
            if record.replied:
                return
            self._replies.send(job.reply_to, job.job_id, reply_body(record))
            self._jobs.mark_replied(job.tenant_id, job.job_id)

    def should_cancel(self, job: GenerationJob) -> bool:
        """A queued line of a batch being cancelled is cancelled instead of run."""
        if job.batch_id is None or self._batches is None:
            return False
        return self._batches.should_cancel(job.tenant_id, job.batch_id)
