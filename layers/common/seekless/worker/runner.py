"""The worker: long-polls the jobs queue and runs each ``GenerationJob`` through the one chat routine.

One message, one job, at most ``concurrency`` at once::

    receive ─► parse ─► claim (conditional) ─► generate ─► succeed | fail ─► session append ─► delete
                 │          │                    │ every third of the visibility timeout: renew the
                 │          │                    │ lease, then extend the message; every few seconds:
                 │          │                    │ progress; every ``cancel_poll``: the job's status
                 │          └ finished / leased by a live worker: delete this copy, no second result
                 └ unparseable: left for redelivery; at the last receive the job (if its id can be read)
                   is marked failed, and SQS moves the message to the dead-letter queue

Exactly-once effect. SQS delivers at least once; the job record decides. ``claim`` is a conditional
write, so of two deliveries only one runs; ``succeed``/``fail`` are conditional on the lease, so a
worker that lost its lease never writes a result. The session append runs after ``succeed`` in one
DynamoDB transaction with a marker on the job item (``session_appended_at``, refused when present):

- a crash before ``succeed``: the job is re-run (nothing was appended: the append comes later);
- a crash between ``succeed`` and the append: the redelivered message finds the job succeeded and
  completes the append from the stored result;
- a crash after the append: the redelivery's append is refused by the marker. No turn is lost or doubled.
The message is deleted last, so any crash before it means a redelivery that finishes what was left.

Waiting for limits. A job its key's requests or tokens per minute refuse (always before any upstream
call) is deferred, not failed, unless it streams to a WebSocket client, who has the error frame and
wants to know now:

1. a copy of its message is sent, delayed until the limit's window turns over (plus jitter);
2. the record goes running → queued (``defer``, conditional on our lease), naming that copy;
3. this delivery is deleted.

A crash before 1 is any worker crash: the message comes back once the lease has expired. From 1 on, two
messages may exist and the claim decides between them: between 1 and 2 the record is still running, so
whichever message comes second finds it leased (and waits), finished, or deferred again by the first;
after 2 only the named copy may claim the queued job, so this delivery, if it comes back, is dropped
(``job_deferred``). One copy runs the job; nothing is lost, since this delivery is deleted last. The
copy is a new message, so waiting adds nothing to a receive count and never dead-letters. A job past
its ``WaitPolicy`` fails with ``rate_limit_wait_exceeded``; one whose copy cannot be sent fails with the
limit's own error, as it would without waiting.

Lease and visibility are renewed together, lease first, so a dead worker's lease has expired by the
time its message reappears and the next claim succeeds at once. A delivery that still finds a live
lease waits once for it to expire (holding the message, so no receive is spent) before concluding
that the holder is alive and dropping its own copy.

Shutdown (``stop``, SIGTERM): no receive is started after the signal; messages a long poll already
in flight returns are handed back at once (visibility 0). Running jobs get ``grace_seconds``; those
still running then are stopped and handed back: lease expired (heartbeat with 0 s) and visibility 0,
so another worker takes them at once and nothing stays invisible after exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import ValidationError

from seekless import audit
from seekless.audit import Auditor
from seekless.chat import ChatService, PreparedChat
from seekless.config import Settings
from seekless.contracts import ChatResult, GenerationJob, ResultBuilder, StreamEnd, StreamEvent
from seekless.errors import Conflict, NotFound, RateLimited, SeeklessError, ServiceUnavailable, UpstreamError
from seekless.jobs import Job, JobConflict, JobStatus, WaitPolicy, job_error, waits
from seekless.limits import RateLimiter
from seekless.models import KeyLimits, Page, Principal, Session, StoredMessage
from seekless.ports import ChatModel, JobLeases, JobMessages, QueueMessage, SessionStore
from seekless.queued import JobEndings
from seekless.telemetry import NullTelemetry, Telemetry
from seekless.ws.generator import Connections, FrameEmitter, Generator, Notifier, RequestLog, StreamingOptions

if TYPE_CHECKING:
    from seekless.decisions import DecisionService
    from seekless.rules import DecisionResult

logger = logging.getLogger("seekless.worker")
SNAPSHOT_CHECK_SECONDS = 0.1

# -- ports the worker needs beyond the shared ones ---------------------------------------------------


class WorkerJobs(JobLeases, Protocol):
    def get(self, tenant_id: str, job_id: str) -> Job: ...

    def holders(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], tuple[JobStatus, str | None] | None]: ...

    def cancel(self, tenant_id: str, job_id: str) -> Job: ...

    def session_append_guard(self, tenant_id: str, job_id: str) -> dict[str, Any]: ...


class WorkerSessions(SessionStore, Protocol):
    def append(
        self, tenant_id: str, session_id: str, messages: list[dict[str, Any]], *, guard: dict[str, Any] | None = None
    ) -> Session: ...


class JobRequestLog(RequestLog, Protocol):
    async def claim(self, tenant_id: str, request_id: str, connection_id: str) -> bool: ...

    async def cancel(self, tenant_id: str, request_id: str) -> bool: ...


@dataclass(frozen=True)
class FrameSink:
    """What streaming a job to its WebSocket connection needs (the generator's own collaborators)."""

    log: JobRequestLog
    notifier: Notifier
    connections: Connections
    options: StreamingOptions = field(default_factory=StreamingOptions)


@dataclass(frozen=True)
class WorkerConfig:
    concurrency: int = 32
    wait_seconds: int = 20
    visibility_seconds: int = 300
    lease_seconds: float = 300.0
    max_receive_count: int = 5
    grace_seconds: float = 100.0
    progress_seconds: float = 5.0
    cancel_poll_seconds: float = 0.5
    job_deadline_seconds: float = 3_600.0
    wait: WaitPolicy = field(default_factory=WaitPolicy)

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkerConfig:
        return cls(
            concurrency=max(1, settings.worker_concurrency),
            wait_seconds=settings.worker_wait_seconds,
            visibility_seconds=settings.worker_visibility_seconds,
            lease_seconds=settings.worker_lease_seconds or float(settings.worker_visibility_seconds),
            max_receive_count=settings.worker_max_receive_count,
            grace_seconds=settings.worker_grace_seconds,
            progress_seconds=settings.worker_progress_seconds,
            cancel_poll_seconds=settings.worker_cancel_poll_seconds,
            job_deadline_seconds=settings.worker_job_deadline_seconds,
            wait=WaitPolicy(max_wait_seconds=settings.job_max_wait_seconds, max_deferrals=settings.job_max_deferrals),
        )

    @property
    def heartbeat_seconds(self) -> float:
        """At most every third of the shorter of visibility and lease."""
        return max(0.05, min(float(self.visibility_seconds), self.lease_seconds) / 3)


# -- per-job helpers ---------------------------------------------------------------------------------


class _Tap:
    """The job's view of the model stream: counts tokens for progress and keeps the finished result
    (the WebSocket generator consumes the stream itself, so the tap is where the worker sees it)."""

    def __init__(self, inner: ChatModel) -> None:
        self._inner = inner
        self.tokens = 0
        self.builder = ResultBuilder()
        self.end: StreamEnd | None = None
        self.error: SeeklessError | None = None

    async def complete(self, body: Mapping[str, Any], *, deadline: float) -> ChatResult:
        return await self._inner.complete(body, deadline=deadline)

    async def stream(self, body: Mapping[str, Any], *, deadline: float) -> AsyncIterator[StreamEvent]:
        try:
            async with aclosing(self._inner.stream(body, deadline=deadline)) as events:  # type: ignore[type-var]
                async for event in events:
                    if isinstance(event, StreamEnd):
                        self.end = event
                        if event.usage is not None:
                            self.tokens = event.usage.completion_tokens
                    else:
                        self.builder.add(event)
                        self.tokens += 1  # one upstream delta is about one token
                    yield event
        except SeeklessError as error:
            self.error = error
            raise

    def result(self, job: GenerationJob) -> ChatResult:
        assert self.end is not None
        return self.builder.build(
            id=f"chatcmpl-{job.job_id}",
            model=job.chat_request().model,
            finish_reason=self.end.finish_reason,
            usage=self.end.usage,
        )


class _HistoryOnly:
    """The sessions as the job's ChatService sees them: history reads pass through, the append is a
    no-op because the worker appends itself, once, after the result is recorded (see module doc)."""

    def __init__(self, inner: SessionStore) -> None:
        self._inner = inner

    def create(self, tenant_id: str, *, title: str | None, metadata: dict[str, str]) -> Session:
        return self._inner.create(tenant_id, title=title, metadata=metadata)

    def get(self, tenant_id: str, session_id: str) -> Session:
        return self._inner.get(tenant_id, session_id)

    def list_sessions(self, tenant_id: str, *, limit: int, after: str | None) -> Page[Session]:
        return self._inner.list_sessions(tenant_id, limit=limit, after=after)

    def messages(
        self, tenant_id: str, session_id: str, *, limit: int | None = None, after: int | None = None
    ) -> Page[StoredMessage]:
        return self._inner.messages(tenant_id, session_id, limit=limit, after=after)

    def append(self, tenant_id: str, session_id: str, messages: list[dict[str, Any]]) -> Session:
        return self._inner.get(tenant_id, session_id)

    def delete(self, tenant_id: str, session_id: str) -> None:
        self._inner.delete(tenant_id, session_id)


class _ClientCancelled(Exception):
    """The WebSocket client sent ``cancel`` for the job's request."""


@dataclass
class _RunState:
    cancelled: bool = False  # the job was cancelled (API or client): no result, delete the message
    lease_lost: bool = False  # another worker holds the job now: write nothing, delete nothing
    # Another run of the job ended it: a redelivery that claimed it once this run's lease had run out
    # (in this process, under the same owner, or in another). That run writes the request's record.
    finished_elsewhere: bool = False


def _recover_ids(body: str) -> tuple[str, str] | None:
    """(tenant_id, job_id) from a message that does not parse as the contract, if they can be read."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    tenant_id, job_id = data.get("tenant_id"), data.get("job_id")
    if isinstance(tenant_id, str) and isinstance(job_id, str) and tenant_id and job_id:
        return tenant_id, job_id
    return None


def _audit_route(job: GenerationJob) -> str:
    if job.batch_id:
        return "batch.line"
    if job.reply_to:
        return "queued.request"
    return "ws.job" if job.connection_id else "job"


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


# -- the worker --------------------------------------------------------------------------------------


class Worker:
    def __init__(
        self,
        *,
        config: WorkerConfig,
        messages: JobMessages,
        jobs: WorkerJobs,
        settings: Settings,
        model: ChatModel,
        sessions: WorkerSessions | None,
        frames: FrameSink | None = None,
        telemetry: Telemetry | None = None,
        owner: str | None = None,
        on_alive: Callable[[], None] | None = None,
        alive_interval: float = 5.0,
        endings: JobEndings | None = None,
        limiter: RateLimiter | Sequence[RateLimiter] | None = None,
        limits_for: Callable[[str], KeyLimits] | None = None,
        auditor: Auditor | None = None,
        decisions: DecisionService | None = None,
    ) -> None:
        self.config = config
        self.owner = owner or default_owner()
        self._messages = messages
        self._jobs = jobs
        self._settings = settings
        self._model = model
        self._sessions = sessions
        self._frames = frames
        self._telemetry = telemetry or NullTelemetry()
        self._on_alive = on_alive
        self._alive_interval = alive_interval
        self._endings = endings
        self._limiter = limiter
        self._limits_for = limits_for
        self._auditor = auditor or Auditor(telemetry=self._telemetry)
        self._decisions = decisions  # decides the lines of decisions files (jobs that carry a decision)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        # Every running job's (status, lease owner), refreshed for all of them by one batched read per
        # cancel poll: one DynamoDB call per poll whatever the concurrency, instead of one per job.
        self._watched: dict[tuple[str, str], tuple[JobStatus, str | None] | None] = {}
        # Runs of each watched job here: a redelivery can start a second run of a job whose first run
        # stalled past its lease, and the first to end must not take the job out of the other's sight.
        self._runs: Counter[tuple[str, str]] = Counter()
        self._watch_round = 0
        self._stop_requested = False
        self._stop_at: float | None = None
        self._active: dict[asyncio.Task[None], QueueMessage] = {}
        self._cleanup: set[asyncio.Task[None]] = set()

    # -- lifecycle -----------------------------------------------------------------------------------

    def stop(self) -> None:
        """Begin the graceful shutdown. Safe from any thread and from a signal handler."""
        loop = self._loop
        if loop is None or self._stop is None:
            self._stop_requested = True
            return
        loop.call_soon_threadsafe(self._request_stop)

    def _request_stop(self) -> None:
        if self._stop is not None and not self._stop.is_set():
            logger.info("stopping: no more receives; %d job(s) running", len(self._active))
            self._stop_at = time.monotonic()
            self._stop.set()

    async def aclose(self) -> None:
        """Close the model's pooled connections (when it has any to close)."""
        close = getattr(self._model, "aclose", None)
        if close is not None:
            await close()

    @property
    def active(self) -> int:
        return len(self._active)

    async def run(self) -> None:
        """Receive and run jobs until ``stop``; then drain within the grace period and return."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self._stop_requested:
            self._request_stop()
        alive = asyncio.create_task(self._alive_loop())
        watch = asyncio.create_task(self._watch_loop())
        try:
            await self._receive_loop()
            await self._drain()
        finally:
            alive.cancel()
            watch.cancel()
            await asyncio.gather(alive, watch, return_exceptions=True)

    async def _watch_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.cancel_poll_seconds)
            keys = list(self._watched)
            if not keys:
                continue
            try:
                found = await asyncio.to_thread(self._jobs.holders, keys)
            except Exception:
                logger.warning("could not read the running jobs' status; will retry", exc_info=True)
                continue
            for key, holder in found.items():
                if key in self._watched:
                    self._watched[key] = holder
            self._watch_round += 1

    async def _alive_loop(self) -> None:
        while self._on_alive is not None:
            try:
                self._on_alive()
            except OSError:
                logger.warning("could not touch the health file", exc_info=True)
            await asyncio.sleep(self._alive_interval)

    async def _receive_loop(self) -> None:
        assert self._stop is not None
        stop = self._stop
        stopping = asyncio.create_task(stop.wait())
        config = self.config
        try:
            while not stop.is_set():
                free = config.concurrency - len(self._active)
                if free <= 0:
                    await asyncio.wait({*self._active, stopping}, return_when=asyncio.FIRST_COMPLETED)
                    continue
                receiving = asyncio.create_task(
                    asyncio.to_thread(
                        self._messages.receive,
                        max_messages=min(10, free),
                        wait_seconds=config.wait_seconds,
                        visibility_seconds=config.visibility_seconds,
                    )
                )
                await asyncio.wait({receiving, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not receiving.done():
                    # The long poll cannot be interrupted: whatever it brings back goes straight back.
                    self._track_cleanup(self._hand_back_received(receiving))
                    break
                try:
                    received = receiving.result()
                except Exception:
                    logger.exception("receiving from the jobs queue failed; retrying in 1 s")
                    await asyncio.wait({stopping}, timeout=1.0)
                    continue
                if stop.is_set():
                    await self._release_all(received)
                    break
                for message in received:
                    task = asyncio.create_task(self._process(message))
                    self._active[task] = message
                    task.add_done_callback(self._forget)
        finally:
            stopping.cancel()

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._active.pop(task, None)

    def _track_cleanup(self, coroutine: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coroutine)
        self._cleanup.add(task)
        task.add_done_callback(self._cleanup.discard)

    async def _hand_back_received(self, receiving: asyncio.Task[list[QueueMessage]]) -> None:
        try:
            received = await receiving
        except Exception:
            return
        await self._release_all(received)

    async def _release_all(self, received: list[QueueMessage]) -> None:
        if received:
            logger.info("handing back %d message(s) received while stopping", len(received))
        await asyncio.gather(*(asyncio.to_thread(self._messages.release, m) for m in received))

    async def _drain(self) -> None:
        started = self._stop_at if self._stop_at is not None else time.monotonic()
        left = self.config.grace_seconds - (time.monotonic() - started)
        if self._active:
            _, pending = await asyncio.wait(set(self._active), timeout=max(0.0, left))
            if pending:
                logger.warning("grace period over: handing back %d running job(s)", len(pending))
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._cleanup:
            await asyncio.gather(*self._cleanup, return_exceptions=True)

    # -- one message ---------------------------------------------------------------------------------

    async def _process(self, message: QueueMessage) -> None:
        try:
            job = GenerationJob.model_validate_json(message.body)
        except ValidationError as error:
            await self._poison(message, error)
            return
        try:
            principal = Principal(tenant_id=job.tenant_id, key_id=job.key_id)
            async with self._auditor.request(_audit_route(job), request_id=job.job_id, principal=principal):
                await self._run(job, message)
        except asyncio.CancelledError:
            await self._hand_back(job, message)  # shutdown past the grace period
            raise
        except Exception as error:
            if isinstance(error, ServiceUnavailable):
                # A store throttled past its client's retries: expected now and then, and handled by leaving
                # the message for redelivery (the job is untouched or still ours to finish), not a crash.
                logger.warning(
                    "job %s: %s; it runs again when its message comes back (receive %d)",
                    job.job_id,
                    error.message,
                    message.receive_count,
                )
            else:
                logger.exception("job %s could not be handled (receive %d)", job.job_id, message.receive_count)
            if message.receive_count >= self.config.max_receive_count:
                await self._give_up(job.tenant_id, job.job_id, f"The job could not be run: {type(error).__name__}.")
                with contextlib.suppress(Exception):
                    await self._ended(job)  # its batch still counts it; its requester still hears

    async def _poison(self, message: QueueMessage, error: ValidationError) -> None:
        """Never deleted: left for redelivery, and after the last receive SQS moves it to the DLQ."""
        logger.error(
            "message %s is not a GenerationJob v1 (receive %d of %d): %d error(s)",
            message.id,
            message.receive_count,
            self.config.max_receive_count,
            error.error_count(),
        )
        if message.receive_count < self.config.max_receive_count:
            return
        ids = _recover_ids(message.body)
        if ids is not None:
            reason = "The job message could not be read (not a GenerationJob v1); it was dead-lettered."
            await self._give_up(*ids, reason)

    async def _give_up(self, tenant_id: str, job_id: str, reason: str) -> None:
        """Mark a job that will never run failed (best effort): as its lease holder, or as queued."""
        error = job_error(reason, code="job_dead_lettered")
        for owner in (self.owner, None):
            try:
                await asyncio.to_thread(self._jobs.fail, tenant_id, job_id, error, owner=owner)
                return
            except (JobConflict, NotFound):
                continue
            except Exception:
                logger.exception("could not mark job %s failed", job_id)
                return

    async def _ended(self, job: GenerationJob) -> None:
        """The job is finished: count it on its batch, reply to its requester (before the message goes)."""
        if self._endings is not None:
            await asyncio.to_thread(self._endings, job)

    async def _run(self, job: GenerationJob, message: QueueMessage) -> None:
        if self._endings is not None and await asyncio.to_thread(self._endings.should_cancel, job):
            with contextlib.suppress(JobConflict, NotFound):
                await asyncio.to_thread(self._jobs.cancel, job.tenant_id, job.job_id)
            await self._ended(job)
            await self._delete(message)
            return
        record = await self._claim(job, message)
        if record is None:
            audit.handed_off()  # a copy of a job another delivery ran or runs: that one is the request
            return
        state = _RunState()
        tap = _Tap(self._model)
        chat = self._chat(tap)
        deadline = time.monotonic() + self.config.job_deadline_seconds
        generating: asyncio.Task[PreparedChat | DecisionResult] = asyncio.create_task(
            self._decide(job, chat, deadline) if job.decision is not None else self._generate(job, chat, tap, deadline)
        )
        try:
            await self._supervise(job, message, generating, tap, state)
        finally:
            if not generating.done():  # cancelled: stop upstream before the message is handed back
                generating.cancel()
                await asyncio.gather(generating, return_exceptions=True)
        if state.lease_lost:
            audit.handed_off()  # the run that holds the lease now is the request: it writes the record
            logger.warning("job %s: lease lost to another worker; leaving it to that worker", job.job_id)
            return
        if state.cancelled:
            if state.finished_elsewhere:
                audit.handed_off()
            await self._ended(job)
            await self._delete(message)
            return
        try:
            outcome = generating.result()
        except _ClientCancelled:
            with contextlib.suppress(JobConflict):
                await asyncio.to_thread(self._jobs.cancel, job.tenant_id, job.job_id)
            await self._ended(job)
            await self._delete(message)
            return
        except SeeklessError as error:
            if job.connection_id is None and waits(error):
                await self._defer(job, message, record, error)
            else:
                await self._fail(job, message, error)
            return
        if isinstance(outcome, PreparedChat):
            reply = tap.result(job)
            await self._succeed(job, message, reply.to_completion(), [*outcome.new_messages, reply.message()])
        else:
            await self._succeed(job, message, outcome.to_api(), None)

    def _chat(self, model: ChatModel) -> ChatService:
        """A ChatService per job (cheap): its model is the job's tap; no response cache (a leader that
        died mid-generation would hold the single-flight lease for the whole job deadline)."""
        return ChatService(
            settings=self._settings,
            model=model,
            cache=None,
            sessions=_HistoryOnly(self._sessions) if self._sessions is not None else None,
            telemetry=self._telemetry,
            limiter=self._limiter,
            limits_for=self._limits_for,
        )

    async def _claim(self, job: GenerationJob, message: QueueMessage) -> Job | None:
        for attempt in range(2):
            try:
                lease = self.config.lease_seconds
                return await asyncio.to_thread(
                    self._jobs.claim,
                    job.tenant_id,
                    job.job_id,
                    owner=self.owner,
                    lease_seconds=lease,
                    message_id=message.id,
                )
            except NotFound:
                logger.warning("job %s has no record (expired or never created); dropping its message", job.job_id)
                await self._delete(message)
                return None
            except JobConflict as conflict:
                if conflict.code == "job_deferred":
                    logger.info("job %s waits for its deferred message; dropping this copy", job.job_id)
                    await self._delete(message)
                    return None
                current = conflict.current
                if current is None or current.status.terminal:
                    if current is not None and current.status is JobStatus.SUCCEEDED and current.session_id:
                        await self._complete_session_append(job)
                    if current is not None:
                        await self._ended(job)
                    logger.info("job %s is already %s; dropping a redelivery", job.job_id, current and current.status)
                    await self._delete(message)
                    return None
                expires = current.lease_expires_at or 0.0
                if attempt == 0 and await self._wait_for_lease(message, expires):
                    continue
                if attempt == 0:
                    return None  # stopping while waiting: the message was handed back
                logger.info("job %s is leased by a live worker; dropping this copy", job.job_id)
                await self._delete(message)
                return None
        return None

    async def _wait_for_lease(self, message: QueueMessage, expires: float) -> bool:
        """Wait (holding the message) for another holder's lease to expire. False when stopping."""
        assert self._stop is not None
        wait = min(max(0.0, expires - time.time()) + 0.05, self.config.lease_seconds + 1.0)
        await asyncio.to_thread(self._messages.extend, message, int(wait + self.config.visibility_seconds))
        stopping = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({stopping}, timeout=wait)
        finally:
            stopping.cancel()
        if self._stop.is_set():
            await asyncio.to_thread(self._messages.release, message)
            return False
        return True

    async def _decide(self, job: GenerationJob, chat: ChatService, deadline: float) -> DecisionResult:
        """A decisions file's line: the ruleset's rules, then DeepSeek only if they leave it open, through
        the job's ChatService (the key's limits, the breaker, retries and JSON-mode re-asks all apply).
        The decision is stored by the decisions service; its API object becomes the job's result."""
        from seekless.decisions import new_decision_id

        decision = job.decision
        assert decision is not None
        if self._decisions is None:
            raise ServiceUnavailable(
                "This worker cannot make decisions (no rulesets table configured).", code="decisions_unavailable"
            )
        principal = Principal(tenant_id=job.tenant_id, key_id=job.key_id)
        return await self._decisions.using(chat).decide(
            principal,
            decision.ruleset,
            decision.input,
            version=decision.version,
            model=decision.model,
            deadline=deadline,
            # The same id on every run of this job: a run after a lost lease or a crash returns the
            # decision already stored instead of deciding (and asking DeepSeek) again.
            decision_id=new_decision_id(job.created_at, for_job=job.job_id),
        )

    async def _generate(self, job: GenerationJob, chat: ChatService, tap: _Tap, deadline: float) -> PreparedChat:
        principal = Principal(tenant_id=job.tenant_id, key_id=job.key_id)
        frames = self._frames if job.connection_id else None
        try:
            prepared = await asyncio.to_thread(
                chat.prepare, job.chat_request(), principal, headers={}, deadline=deadline, session_id=job.session_id
            )
        except SeeklessError:
            if frames is not None:
                await self._stream_to_connection(job, chat, frames, deadline)  # sends the error frame
            raise
        if frames is None:
            stream = await chat.stream(prepared)
            async with aclosing(stream.events) as events:  # type: ignore[type-var]
                async for _ in events:
                    pass
            return prepared
        emitter = await self._stream_to_connection(job, chat, frames, deadline)
        if tap.end is not None:
            return prepared
        if tap.error is not None:
            raise tap.error
        if emitter.cancelled:
            raise _ClientCancelled
        if emitter.failure is not None:  # refused before upstream (a key's limit): the frame's reason
            raise emitter.failure
        raise UpstreamError("The generation stopped: its WebSocket client went away.", code="client_gone")

    async def _stream_to_connection(
        self, job: GenerationJob, chat: ChatService, frames: FrameSink, deadline: float
    ) -> FrameEmitter:
        """The WebSocket generator's own path (frames, coalescing, resume, client cancel)."""
        assert job.connection_id is not None
        try:
            await frames.log.claim(job.tenant_id, job.job_id, job.connection_id)  # False: already claimed
        except Exception:
            logger.warning("request log unavailable for job %s", job.job_id, exc_info=True)
        generator = Generator(
            chat=chat,
            log=frames.log,
            notifier=frames.notifier,
            connections=frames.connections,
            options=frames.options,
        )
        return await generator.run(job, deadline=deadline)

    async def _supervise(
        self,
        job: GenerationJob,
        message: QueueMessage,
        generating: asyncio.Task[Any],
        tap: _Tap,
        state: _RunState,
    ) -> None:
        config = self.config
        now = time.monotonic()
        next_beat = now + config.heartbeat_seconds
        next_poll = now + SNAPSHOT_CHECK_SECONDS
        next_progress = now + config.progress_seconds
        reported = 0
        key = (job.tenant_id, job.job_id)
        self._watched[key] = (JobStatus.RUNNING, self.owner)
        self._runs[key] += 1
        try:
            await self._supervise_loop(
                job, message, generating, tap, state, next_beat, next_poll, next_progress, reported
            )
        finally:
            self._runs[key] -= 1
            if not self._runs[key]:
                del self._runs[key]
                self._watched.pop(key, None)

    async def _supervise_loop(
        self,
        job: GenerationJob,
        message: QueueMessage,
        generating: asyncio.Task[Any],
        tap: _Tap,
        state: _RunState,
        next_beat: float,
        next_poll: float,
        next_progress: float,
        reported: int,
    ) -> None:
        config = self.config
        key = (job.tenant_id, job.job_id)
        while not generating.done():
            wake = min(next_beat, next_poll, next_progress)
            await asyncio.wait({generating}, timeout=max(0.0, wake - time.monotonic()))
            if generating.done():
                return
            now = time.monotonic()
            try:
                if now >= next_poll:
                    # An in-memory look at the batched snapshot (see _watch_loop): cheap enough to do often.
                    next_poll = now + SNAPSHOT_CHECK_SECONDS
                    holder = self._watched.get(key)
                    if holder is None:  # the record is gone or expired
                        raise NotFound(f"job {job.job_id} is gone")
                    status, owner = holder
                    if status is not JobStatus.RUNNING or owner != self.owner:
                        self._stopped(status, state)
                if now >= next_beat and not (state.cancelled or state.lease_lost):
                    next_beat = now + config.heartbeat_seconds
                    # Lease first, then visibility: the lease always runs out before the message returns.
                    lease = config.lease_seconds
                    await asyncio.to_thread(
                        self._jobs.heartbeat, job.tenant_id, job.job_id, owner=self.owner, lease_seconds=lease
                    )
                    await asyncio.to_thread(self._messages.extend, message, config.visibility_seconds)
                if now >= next_progress and tap.tokens != reported and not (state.cancelled or state.lease_lost):
                    next_progress = now + config.progress_seconds
                    reported = tap.tokens
                    await asyncio.to_thread(
                        self._jobs.progress, job.tenant_id, job.job_id, owner=self.owner, tokens=reported
                    )
            except JobConflict as conflict:
                if conflict.current is not None:
                    self._stopped(conflict.current.status, state)
            except NotFound:
                state.cancelled = True
            except Exception:
                logger.warning("job %s: bookkeeping failed; will retry", job.job_id, exc_info=True)
            if state.cancelled or state.lease_lost:
                await self._stop_generation(job, generating)
                return

    @staticmethod
    def _stopped(status: JobStatus, state: _RunState) -> None:
        if status.terminal:
            state.cancelled = True  # cancelled through the API, or ended by another run (see _RunState)
            state.finished_elsewhere = status is not JobStatus.CANCELLED
        else:
            state.lease_lost = True

    async def _stop_generation(self, job: GenerationJob, generating: asyncio.Task[Any]) -> None:
        if job.connection_id and self._frames is not None:
            # The generator's own cancel path ends the client's stream with done/cancelled.
            with contextlib.suppress(Exception):
                await self._frames.log.cancel(job.tenant_id, job.job_id)
            await asyncio.wait({generating}, timeout=0.6)
        generating.cancel()
        await asyncio.gather(generating, return_exceptions=True)

    async def _succeed(
        self,
        job: GenerationJob,
        message: QueueMessage,
        result: dict[str, Any],
        session_messages: list[dict[str, Any]] | None,
    ) -> None:
        try:
            await asyncio.to_thread(self._jobs.succeed, job.tenant_id, job.job_id, result, owner=self.owner)
        except JobConflict as conflict:
            current = conflict.current
            if conflict.code != "job_finished" or (current is not None and current.status is not JobStatus.CANCELLED):
                audit.handed_off()  # the run that holds the job, or ended it, is the request: its record
            if conflict.code == "job_finished":
                await self._ended(job)
                await self._delete(message)  # cancelled at the last moment: the cancel stands
            return  # else: lease lost, the new holder finishes the job
        self._telemetry.count("JobsSucceeded")
        if job.session_id and session_messages is not None:
            await self._append_session(job, session_messages)
        await self._ended(job)
        await self._delete(message)

    async def _fail(self, job: GenerationJob, message: QueueMessage, error: SeeklessError) -> None:
        audit.note_error(error)
        logger.info("job %s failed: %s (%s)", job.job_id, error.code, error.message)
        try:
            await asyncio.to_thread(
                self._jobs.fail,
                job.tenant_id,
                job.job_id,
                job_error(error.message, type=error.type, code=error.code),
                owner=self.owner,
            )
        except JobConflict as conflict:
            if conflict.code != "job_finished":
                return
        self._telemetry.count("JobsFailed")
        await self._ended(job)
        await self._delete(message)

    async def _defer(self, job: GenerationJob, message: QueueMessage, claimed: Job, error: SeeklessError) -> None:
        """Put the job back on the queue until its key's per-minute limits allow it (see module doc)."""
        now = time.time()
        try:
            delay = self.config.wait.delay(claimed, error, now=now)
        except RateLimited as exceeded:
            await self._fail(job, message, exceeded)
            return
        try:
            copy = await asyncio.to_thread(self._messages.send_later, job, delay)
        except Exception:
            logger.warning("job %s: its deferred copy could not be sent; failing it", job.job_id, exc_info=True)
            await self._fail(job, message, error)
            return
        try:
            await asyncio.to_thread(
                self._jobs.defer,
                job.tenant_id,
                job.job_id,
                owner=self.owner,
                not_before=now + delay,
                reason=str(error.code),
                message_id=copy,
            )
        except JobConflict as conflict:
            if conflict.code == "job_finished":  # cancelled meanwhile: the copy will find it so and go
                await self._ended(job)
                await self._delete(message)
            return  # else: lease lost, the new holder has the job
        self._telemetry.count("JobsDeferred")
        audit.handed_off()  # the run its copy makes writes this request's record
        logger.info(
            "job %s deferred %d s by its key's limit (%s; deferral %d)",
            job.job_id,
            delay,
            error.code,
            claimed.deferrals + 1,
        )
        await self._delete(message)

    async def _append_session(self, job: GenerationJob, messages: list[dict[str, Any]]) -> None:
        assert job.session_id is not None
        if self._sessions is None:
            return
        guard = self._jobs.session_append_guard(job.tenant_id, job.job_id)
        try:
            await asyncio.to_thread(self._sessions.append, job.tenant_id, job.session_id, messages, guard=guard)
        except Conflict as conflict:
            if conflict.code != "append_guard_failed":
                raise
            logger.info("job %s: the session already has this reply", job.job_id)
        except NotFound:
            logger.warning("job %s: its session is gone; the reply stays in the job only", job.job_id)

    async def _complete_session_append(self, job: GenerationJob) -> None:
        """A redelivered succeeded job: append its reply if a crash came between succeed and append."""
        current = await asyncio.to_thread(self._jobs.get, job.tenant_id, job.job_id)
        choices = (current.result or {}).get("choices") or [{}]
        reply = choices[0].get("message")
        if not reply:
            return
        principal = Principal(tenant_id=job.tenant_id, key_id=job.key_id)
        try:
            prepared = await asyncio.to_thread(
                self._chat(self._model).prepare,
                job.chat_request(),
                principal,
                headers={},
                deadline=time.monotonic() + 60,
                session_id=job.session_id,
            )
        except SeeklessError:
            return
        await self._append_session(job, [*prepared.new_messages, dict(reply)])

    async def _hand_back(self, job: GenerationJob, message: QueueMessage) -> None:
        """Shutdown past the grace period: expire our lease and make the message visible now."""
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self._jobs.heartbeat, job.tenant_id, job.job_id, owner=self.owner, lease_seconds=0)
        await asyncio.to_thread(self._messages.release, message)

    async def _delete(self, message: QueueMessage) -> None:
        await asyncio.to_thread(self._messages.delete, message)
