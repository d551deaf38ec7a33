"""The WebSocket message routes (chat, cancel, resume, ping, $default): validate, hand off, answer fast.

A route never generates: ``chat`` validates the request exactly as REST does (model, caps, session
ownership), claims the request id, and invokes the generator function asynchronously, all well inside
a second. Every reply, errors included, is a frame posted to the connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from seekless.adapters.ws_buffer import RedisRequestLog
from seekless.chat import ChatService
from seekless.contracts import GenerationJob
from seekless.errors import SeeklessError
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

logger = logging.getLogger("seekless.ws")
VALIDATION_DEADLINE_SECONDS = 5.0


class Notifier(Protocol):
    def post(self, connection_id: str, data: bytes) -> bool: ...


class Invoker(Protocol):
    def invoke_async(self, payload: bytes) -> None: ...


def frame_for(error: SeeklessError, request_id: str | None) -> dict[str, Any]:
    """The error table's entry for WebSocket: the same code a REST client would see."""
    return error_frame(request_id, 0, error.code or error.type, error.message)


class WsService:
    def __init__(self, *, chat: ChatService, log: RedisRequestLog, notifier: Notifier, invoker: Invoker) -> None:
        self._chat = chat
        self._log = log
        self._notifier = notifier
        self._invoker = invoker

    async def _send(self, connection_id: str, value: dict[str, Any] | bytes) -> None:
        data = value if isinstance(value, bytes) else encode(value)
        await asyncio.to_thread(self._notifier.post, connection_id, data)

    async def handle(self, connection_id: str, principal: Principal, body: str | None) -> None:
        try:
            action = parse_action(body)
            if isinstance(action, ChatAction):
                await self._start(connection_id, principal, action)
            elif isinstance(action, CancelAction):
                if not await self._log.cancel(principal.tenant_id, action.request_id):
                    raise _unknown(action.request_id)
            elif isinstance(action, ResumeAction):
                await self._resume(connection_id, principal, action)
            elif isinstance(action, PingAction):
                await self._send(connection_id, frame("pong", None, 0))
        except FrameError as error:
            await self._send(connection_id, error.frame())
        except SeeklessError as error:
            await self._send(connection_id, frame_for(error, None))
        except Exception:  # Redis or AWS trouble: the client still gets an answer
            logger.exception("websocket route failed")
            await self._send(connection_id, error_frame(None, 0, "internal_error", "The request could not be handled."))

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
            await self._send(connection_id, frame_for(error, action.request_id))
            return
        if not await self._log.claim(principal.tenant_id, action.request_id, connection_id):
            raise FrameError(
                "duplicate_request", f"request_id '{action.request_id}' is already in use.", action.request_id
            )
        job = GenerationJob(
            job_id=action.request_id,
            tenant_id=principal.tenant_id,
            key_id=principal.key_id,
            request=request,
            session_id=action.session_id,
            connection_id=connection_id,
        )
        await asyncio.to_thread(self._invoker.invoke_async, job.model_dump_json().encode())

    async def _resume(self, connection_id: str, principal: Principal, action: ResumeAction) -> None:
        frames = await self._log.resume(principal.tenant_id, action.request_id, connection_id, action.after_seq)
        if frames is None:
            raise _unknown(action.request_id)
        for data in frames:
            await self._send(connection_id, data)


def _unknown(request_id: str) -> FrameError:
    # Another tenant's request id reads exactly like one that never existed.
    return FrameError("unknown_request", f"No request '{request_id}' to act on.", request_id)
