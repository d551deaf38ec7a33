"""The WebSocket message routes (chat, cancel, resume, ping, $default): validate, hand off, answer fast.

A route never generates: ``chat`` validates the request exactly as REST does (model, caps, session
ownership), claims the request id, and invokes the generator function asynchronously, all well inside
a second. Every reply, errors included, is a frame posted to the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

from seekless import audit
from seekless.adapters.ws_buffer import RedisRequestLog
from seekless.audit import Auditor
from seekless.chat import ChatService
from seekless.contracts import GenerationJob
from seekless.errors import SeeklessError
from seekless.jobs import JobConflict, JobService, JobStatus
from seekless.models import Principal
from seekless.ws.frames import (
    CancelAction,
    ChatAction,
    FrameError,
    PingAction,
    ResumeAction,
    encode,
    error_frame,
    frame,
    parse_action,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from seekless.ports import JobQueue, JobStore

logger = logging.getLogger("seekless.ws")
VALIDATION_DEADLINE_SECONDS = 5.0


class Notifier(Protocol):
    def post(self, connection_id: str, data: bytes) -> bool: ...


class Invoker(Protocol):
    def invoke_async(self, payload: bytes) -> None: ...


def frame_for(error: SeeklessError, request_id: str | None) -> dict[str, Any]:
    """The error table's entry for WebSocket: the same code a REST client would see."""
    return error_frame(request_id, 0, error.code or error.type, error.message, param=error.param)


QUEUED_SEQ = 1  # a job's ``queued`` frame; the worker's frames follow from seq 2
ENQUEUE_STEP_SECONDS = 10.0


class JobAliases:
    """Which WebSocket request a job streams to, and back. A job's id is minted by the job store, so it
    cannot be the client's request_id; the worker streams under the job id and ``JobFrameLog`` maps it."""

    def __init__(self, redis: Redis, *, ttl_seconds: int, prefix: str = "seekless:ws:job:") -> None:
        self._redis = redis
        self._ttl = ttl_seconds
        self._prefix = prefix

    def _job_key(self, tenant_id: str, job_id: str) -> str:
        return f"{self._prefix}{{{tenant_id}:{job_id}}}:request"

    def _request_key(self, tenant_id: str, request_id: str) -> str:
        return f"{self._prefix}{{{tenant_id}:{request_id}}}:job"

    async def link(self, tenant_id: str, job_id: str, request_id: str) -> None:
        await self._redis.set(self._job_key(tenant_id, job_id), request_id, ex=self._ttl)
        await self._redis.set(self._request_key(tenant_id, request_id), job_id, ex=self._ttl)

    async def request_for(self, tenant_id: str, job_id: str) -> str | None:
        return _text(await self._redis.get(self._job_key(tenant_id, job_id)))

    async def job_for(self, tenant_id: str, request_id: str) -> str | None:
        return _text(await self._redis.get(self._request_key(tenant_id, request_id)))


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


class JobFrameLog:
    """The worker's request log for jobs started over WebSocket (wiring.worker_frames): frames the
    generator writes under the job id are logged, and posted, under the client's request_id, their
    ``seq`` shifted past the ``queued`` frame. A job with no alias passes through unchanged.

    ``push`` posts the frame itself and tells the generator there is nobody to post to: a job keeps
    running when its client leaves (the result lands in the job record), instead of stopping after
    the resume grace period as a short chat does."""

    def __init__(self, log: RedisRequestLog, aliases: JobAliases, notifier: Notifier) -> None:
        self._log = log
        self._aliases = aliases
        self._notifier = notifier
        self._known: dict[tuple[str, str], str | None] = {}

    async def _request(self, tenant_id: str, job_id: str) -> str | None:
        key = (tenant_id, job_id)
        if key not in self._known:
            if len(self._known) > 4096:
                self._known.clear()
            self._known[key] = await self._aliases.request_for(tenant_id, job_id)
        return self._known[key]

    async def claim(self, tenant_id: str, request_id: str, connection_id: str) -> bool:
        alias = await self._request(tenant_id, request_id)
        return await self._log.claim(tenant_id, alias or request_id, connection_id)

    async def push(
        self, tenant_id: str, request_id: str, frame: bytes, *, connection_id: str | None = None
    ) -> tuple[str | None, bool]:
        alias = await self._request(tenant_id, request_id)
        if alias is None:
            return await self._log.push(tenant_id, request_id, frame, connection_id=connection_id)
        value = json.loads(frame)
        value["request_id"] = alias
        value["seq"] = int(value["seq"]) + QUEUED_SEQ
        data = encode(value)
        target, cancelled = await self._log.push(tenant_id, alias, data, connection_id=connection_id)
        if target is not None:
            await asyncio.to_thread(self._notifier.post, target, data)
        return None, cancelled

    async def state(self, tenant_id: str, request_id: str) -> tuple[str | None, bool]:
        alias = await self._request(tenant_id, request_id)
        return await self._log.state(tenant_id, alias or request_id)

    async def cancel(self, tenant_id: str, request_id: str) -> bool:
        alias = await self._request(tenant_id, request_id)
        return await self._log.cancel(tenant_id, alias or request_id)


class _ConnectionQueue:
    """The jobs queue as JobService sees it for one WebSocket chat: before the message goes out, link
    the job to the request and log the ``queued`` frame (so the worker's frames always follow it);
    the message carries the connection, so the worker streams."""

    def __init__(self, queue: JobQueue, connection_id: str, before: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._queue = queue
        self._connection_id = connection_id
        self._before = before
        self._loop = loop

    def enqueue(self, job: GenerationJob) -> None:  # runs in a thread (JobService is synchronous)
        asyncio.run_coroutine_threadsafe(self._before(job.job_id), self._loop).result(ENQUEUE_STEP_SECONDS)
        self._queue.enqueue(job.model_copy(update={"connection_id": self._connection_id}))


class WsService:
    def __init__(
        self,
        *,
        chat: ChatService,
        log: RedisRequestLog,
        notifier: Notifier,
        invoker: Invoker,
        job_store: JobStore | None = None,
        job_queue: JobQueue | None = None,
        aliases: JobAliases | None = None,
        job_min_max_tokens: int = 16_384,
        auditor: Auditor | None = None,
    ) -> None:
        self._chat = chat
        self._auditor = auditor or Auditor()
        self._log = log
        self._notifier = notifier
        self._invoker = invoker
        self._job_store = job_store
        self._job_queue = job_queue
        self._aliases = aliases
        self._job_min_max_tokens = job_min_max_tokens

    @property
    def jobs_available(self) -> bool:
        return self._job_store is not None and self._job_queue is not None and self._aliases is not None

    async def _send(self, connection_id: str, value: dict[str, Any] | bytes) -> None:
        data = value if isinstance(value, bytes) else encode(value)
        await asyncio.to_thread(self._notifier.post, connection_id, data)

    async def handle(self, connection_id: str, principal: Principal, body: str | None) -> None:
        """Answer one frame. Its audit record is written here, unless the frame started a generation,
        whose generator (or worker, for a job) writes the record when it ends."""
        async with self._auditor.request("ws.frame", principal=principal) as record:
            chat_id: str | None = None  # a chat's request id: a failure here is that chat's terminal frame
            try:
                action = parse_action(body)
                chat_id = action.request_id if isinstance(action, ChatAction) else None
                record.route = f"ws.{getattr(action, 'action', 'chat')}"
                record.request_id = getattr(action, "request_id", None) or record.request_id
                if isinstance(action, ChatAction):
                    await self._start(connection_id, principal, action)
                elif isinstance(action, CancelAction):
                    if not await self._log.cancel(principal.tenant_id, action.request_id):
                        raise _unknown(action.request_id)
                    await self._cancel_job(connection_id, principal, action.request_id)
                elif isinstance(action, ResumeAction):
                    await self._resume(connection_id, principal, action)
                elif isinstance(action, PingAction):
                    audit.handed_off()  # a keep-alive, not a request: no record
                    await self._send(connection_id, frame("pong", None, 0))
            except FrameError as error:
                record.status, record.error_code = 400, error.code
                await self._send(connection_id, error.frame())
            except SeeklessError as error:
                audit.note_error(error)
                await self._send(connection_id, frame_for(error, chat_id))
            except Exception:  # Redis or AWS trouble: the client still gets an answer
                logger.exception("websocket route failed")
                record.status, record.error_code = 500, "internal_error"
                await self._send(
                    connection_id, error_frame(chat_id, 0, "internal_error", "The request could not be handled.")
                )

    async def _start(self, connection_id: str, principal: Principal, action: ChatAction) -> None:
        request = action.completion_request()
        try:
            # Everything REST refuses is refused here too, before any upstream call or hand-off.
            self._chat.prepare(
                request,
                principal,
                headers={},
                deadline=time.monotonic() + VALIDATION_DEADLINE_SECONDS,
                session_id=action.session_id,
            )
        except SeeklessError as error:
            audit.note_error(error)
            await self._send(connection_id, frame_for(error, action.request_id))
            return
        as_job = action.runs_as_job(request, min_max_tokens=self._job_min_max_tokens)
        if as_job and not self.jobs_available:
            if action.mode == "job":
                raise FrameError("jobs_unavailable", "Jobs are not available on this deployment.", action.request_id)
            as_job = False  # over the threshold, but no worker to hand it to: stream as before
        if not await self._claim(principal.tenant_id, action.request_id, connection_id):
            raise FrameError(
                "duplicate_request", f"request_id '{action.request_id}' is already in use.", action.request_id
            )
        if as_job:
            await self._submit_job(connection_id, principal, action, request)
            return
        audit.handed_off()  # the generator writes this request's record when the answer ends
        job = GenerationJob(
            job_id=action.request_id,
            tenant_id=principal.tenant_id,
            key_id=principal.key_id,
            request=request,
            session_id=action.session_id,
            connection_id=connection_id,
        )
        await asyncio.to_thread(self._invoker.invoke_async, job.model_dump_json().encode())

    async def _claim(self, tenant_id: str, request_id: str, connection_id: str) -> bool:
        """Claim the request id in the request log. Without the log (Redis down) the chat still streams, as
        the generator does without it: no duplicate check, no resume, but an answer."""
        try:
            return await self._log.claim(tenant_id, request_id, connection_id)
        except Exception as error:
            logger.warning(
                "request log unavailable (%s); streaming %s without resume", type(error).__name__, request_id
            )
            return True

    async def _submit_job(self, connection_id: str, principal: Principal, action: ChatAction, request: Any) -> None:
        assert self._job_store is not None and self._job_queue is not None and self._aliases is not None
        aliases, tenant_id, request_id = self._aliases, principal.tenant_id, action.request_id

        async def before_enqueue(job_id: str) -> None:
            await aliases.link(tenant_id, job_id, request_id)
            await self._post_logged(tenant_id, request_id, frame("queued", request_id, QUEUED_SEQ, job_id=job_id))

        queue = _ConnectionQueue(self._job_queue, connection_id, before_enqueue, asyncio.get_running_loop())
        jobs = JobService(store=self._job_store, queue=queue)
        try:
            await asyncio.to_thread(jobs.submit, principal, request, session_id=action.session_id)
            audit.handed_off()  # the worker writes this request's record when the job ends
        except SeeklessError as error:
            audit.note_error(error)
            # After the queued frame (enqueue failed, the job is marked failed) or instead of it.
            seq = QUEUED_SEQ + 1 if await aliases.job_for(tenant_id, request_id) else QUEUED_SEQ
            value = error_frame(request_id, seq, error.code or error.type, error.message)
            await self._post_logged(tenant_id, request_id, value)

    async def _post_logged(self, tenant_id: str, request_id: str, value: dict[str, Any]) -> None:
        data = encode(value)
        target, _ = await self._log.push(tenant_id, request_id, data)
        if target is not None:
            await self._send(target, data)

    async def _cancel_job(self, connection_id: str, principal: Principal, request_id: str) -> None:
        """A job still queued is cancelled here and its stream ended; a running one stops on the cancel
        flag (the worker's generator ends the stream and the worker marks the job cancelled)."""
        if self._aliases is None or self._job_store is None:
            return
        job_id = await self._aliases.job_for(principal.tenant_id, request_id)
        if job_id is None:
            return
        jobs = JobService(store=self._job_store, queue=self._job_queue)
        current = await asyncio.to_thread(jobs.get, principal, job_id)
        if current.status is not JobStatus.QUEUED:
            return
        with contextlib.suppress(JobConflict):
            await asyncio.to_thread(jobs.cancel, principal, job_id)
            done = frame("done", request_id, QUEUED_SEQ + 1, finish_reason="cancelled", usage=None, cache=None)
            await self._post_logged(principal.tenant_id, request_id, done)

    async def _resume(self, connection_id: str, principal: Principal, action: ResumeAction) -> None:
        frames = await self._log.resume(principal.tenant_id, action.request_id, connection_id, action.after_seq)
        if frames is None:
            raise _unknown(action.request_id)
        for data in frames:
            await self._send(connection_id, data)


def _unknown(request_id: str) -> FrameError:
    # Another tenant's request id reads exactly like one that never existed.
    return FrameError("unknown_request", f"No request '{request_id}' to act on.", request_id)
