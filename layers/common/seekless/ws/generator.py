"""The generator: runs one GenerationJob and streams it to a WebSocket connection as frames.

Frames get consecutive ``seq`` numbers and each is appended to the request's Redis log before it is
posted, so a client that reconnects can ``resume`` from any point. Deltas are coalesced (see
coalescer.py). The client's ``cancel`` flag is read with every frame and, while upstream is quiet,
every quarter second: a cancelled generation stops upstream and ends with ``done`` / ``cancelled``.
When the connection is gone the generation keeps writing to the log for a grace period, waiting for
a ``resume`` from a new connection, and stops if none comes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

from seekless import audit
from seekless.audit import Auditor
from seekless.chat import ChatService
from seekless.config import Settings
from seekless.contracts import GenerationJob, StreamDelta, StreamEnd, StreamEvent
from seekless.errors import SeeklessError
from seekless.models import Principal
from seekless.ws.coalescer import Coalescer
from seekless.ws.frames import encode, frame

logger = logging.getLogger("seekless.ws.generator")
CANCEL_POLL_SECONDS = 0.25
_TICK = object()


class RequestLog(Protocol):
    async def push(
        self, tenant_id: str, request_id: str, frame: bytes, *, connection_id: str | None = None
    ) -> tuple[str | None, bool]:
        """Log a frame; (where to post it, cancelled). ``connection_id`` is the connection the request was
        claimed for: a log that has lost the request (Redis restarted empty) takes it as the target again."""
        ...

    async def state(self, tenant_id: str, request_id: str) -> tuple[str | None, bool]: ...


class Notifier(Protocol):
    def post(self, connection_id: str, data: bytes) -> bool: ...


class Connections(Protocol):
    def delete(self, connection_id: str) -> None: ...


class FrameEmitter:
    """Numbers, logs and posts one request's frames; follows the request to a resumed connection."""

    def __init__(
        self, job: GenerationJob, *, log: RequestLog, notifier: Notifier, connections: Connections, clock: Any
    ) -> None:
        self._job = job
        self._log = log
        self._notifier = notifier
        self._connections = connections
        self._clock = clock
        self.seq = 0
        self.posts = 0
        self.cancelled = False
        self.failure: SeeklessError | None = None  # what the error frame said, for a job's record
        self.gone_since: float | None = None
        self._dead: set[str] = set()

    async def emit(self, kind: str, **fields: Any) -> None:
        self.seq += 1
        data = encode(frame(kind, self._job.job_id, self.seq, **fields))
        try:
            target, cancelled = await self._log.push(
                self._job.tenant_id, self._job.job_id, data, connection_id=self._job.connection_id
            )
        except Exception:  # no Redis: no resume, but the live stream still goes out
            logger.warning("request log unavailable; streaming without resume", exc_info=True)
            target, cancelled = self._job.connection_id, False
        self.cancelled = self.cancelled or cancelled
        await self._post(target, data)

    async def fail(self, error: SeeklessError) -> None:
        """End the request with an ``error`` frame (a job streamed here fails with the same reason)."""
        self.failure = error
        audit.note_error(error)
        await self.emit("error", code=error.code or error.type, message=error.message)

    async def poll(self) -> None:
        """While nothing is being emitted: has the client cancelled, or come back on a new connection?"""
        try:
            target, cancelled = await self._log.state(self._job.tenant_id, self._job.job_id)
        except Exception:
            return
        self.cancelled = self.cancelled or cancelled
        if target is not None and target not in self._dead:
            self.gone_since = None

    async def _post(self, target: str | None, data: bytes) -> None:
        if target is None or target in self._dead:
            return
        self.posts += 1
        if await asyncio.to_thread(self._notifier.post, target, data):
            self.gone_since = None
            return
        # 410: the client left. Forget the stale connection (the target, not whoever asked) and keep
        # logging frames, so a resume from a new connection can pick the stream up.
        self._dead.add(target)
        await asyncio.to_thread(self._connections.delete, target)
        if self.gone_since is None:
            self.gone_since = self._clock()


@dataclass(frozen=True, slots=True)
class StreamingOptions:
    """How frames are coalesced and how long a vanished client may take to resume."""

    flush_interval: float = 0.1
    flush_bytes: int = 4096
    frame_max_bytes: int = 32_768
    resume_grace_seconds: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> StreamingOptions:
        return cls(
            flush_interval=settings.ws_flush_interval_ms / 1000,
            flush_bytes=settings.ws_flush_bytes,
            frame_max_bytes=settings.ws_frame_max_bytes,
            resume_grace_seconds=settings.ws_resume_grace_seconds,
        )


class Generator:
    def __init__(
        self,
        *,
        chat: ChatService,
        log: RequestLog,
        notifier: Notifier,
        connections: Connections,
        options: StreamingOptions | None = None,
        clock: Any = time.monotonic,
        auditor: Auditor | None = None,
    ) -> None:
        self._chat = chat
        self._auditor = auditor or Auditor()
        self._log = log
        self._notifier = notifier
        self._connections = connections
        self._options = options or StreamingOptions()
        self._clock = clock

    async def run(self, job: GenerationJob, *, deadline: float) -> FrameEmitter:
        """Stream one chat to its connection; one audit record for it (or the worker's, when it runs a job)."""
        principal = Principal(tenant_id=job.tenant_id, key_id=job.key_id)
        async with self._auditor.request("ws.chat", request_id=job.job_id, principal=principal):
            return await self._run(job, principal, deadline)

    async def _run(self, job: GenerationJob, principal: Principal, deadline: float) -> FrameEmitter:
        emitter = FrameEmitter(
            job, log=self._log, notifier=self._notifier, connections=self._connections, clock=self._clock
        )
        try:
            prepared = self._chat.prepare(
                job.chat_request(), principal, headers={}, deadline=deadline, session_id=job.session_id
            )
        except SeeklessError as error:
            await emitter.fail(error)
            return emitter
        # Upstream starts first; the client hears back at once while it works (thinking models take
        # long to their first token), and a cancel must work during that wait too.
        starting = asyncio.create_task(self._chat.stream(prepared))
        await emitter.emit("start", model=job.chat_request().model, session_id=job.session_id)
        while not starting.done():
            await asyncio.wait({starting}, timeout=CANCEL_POLL_SECONDS)
            if not starting.done():
                await emitter.poll()
                if self._should_stop(emitter):
                    starting.cancel()
                    await asyncio.gather(starting, return_exceptions=True)
                    await emitter.emit("done", finish_reason="cancelled", usage=None, cache=None)
                    return emitter
        try:
            stream = starting.result()
        except SeeklessError as error:
            await emitter.fail(error)
            return emitter
        await self._relay(stream.events, emitter, cache=stream.cache)
        return emitter

    def _should_stop(self, emitter: FrameEmitter) -> bool:
        gone_for = None if emitter.gone_since is None else self._clock() - emitter.gone_since
        return emitter.cancelled or (gone_for is not None and gone_for > self._options.resume_grace_seconds)

    async def _relay(self, events: Any, emitter: FrameEmitter, *, cache: str | None) -> None:
        queue: asyncio.Queue[Any] = asyncio.Queue()

        async def pump() -> None:
            try:
                async for event in events:
                    await queue.put(event)
            except SeeklessError as error:
                await queue.put(error)

        pumping = asyncio.create_task(pump())
        coalescer = Coalescer(
            interval=self._options.flush_interval,
            flush_bytes=self._options.flush_bytes,
            frame_max_bytes=self._options.frame_max_bytes,
            overhead_bytes=len(encode(frame("delta", emitter._job.job_id, 10**9))) + 64,
            clock=self._clock,
        )

        async def flush() -> None:
            for payload in coalescer.drain():
                await emitter.emit("delta", **payload)

        try:
            while True:
                due = coalescer.due_in()
                wait = CANCEL_POLL_SECONDS if due is None else min(due, CANCEL_POLL_SECONDS)
                try:
                    item: StreamEvent | SeeklessError | object = await asyncio.wait_for(queue.get(), wait)
                except TimeoutError:
                    item = _TICK
                if item is _TICK:
                    if coalescer.due_in() == 0:
                        await flush()
                    else:
                        await emitter.poll()
                elif isinstance(item, StreamDelta):
                    if coalescer.add(item):
                        await flush()
                elif isinstance(item, StreamEnd):
                    await flush()
                    usage = item.usage.to_wire() if item.usage else None
                    await emitter.emit("done", finish_reason=item.finish_reason, usage=usage, cache=cache)
                    return
                elif isinstance(item, SeeklessError):
                    await flush()
                    await emitter.fail(item)
                    return
                if self._should_stop(emitter):
                    pumping.cancel()
                    await flush()
                    await emitter.emit("done", finish_reason="cancelled", usage=None, cache=cache)
                    return
        finally:
            pumping.cancel()
            await asyncio.gather(pumping, return_exceptions=True)
