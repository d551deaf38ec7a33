"""One structured audit record per request, and the usage a tenant reads back from GET /v1/usage.

Whoever starts a request opens its record (``Auditor.request``): the REST middleware for every HTTP
request, the WebSocket service for every frame it answers itself, the generator for a streamed chat,
the worker for a job. The chat service fills in what only it knows (model, tokens, cache, cost)
through ``note_*`` on the record of the current context, so there is one record per request however
deep the call goes; a scope opened inside another (the worker running a WebSocket job through the
generator) adds to the outer record instead of writing a second one.

A finished record goes to the log as one JSON object under ``audit`` (CloudWatch Logs; subscribe a
filter to ship it elsewhere) and, when it named a model, into the tenant's daily usage counters. The
record holds no prompt or answer unless the operator opts in (``audit_include_content``); keys,
tickets and the Authorization header never enter it.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Protocol

from seekless.errors import SeeklessError
from seekless.models import Principal
from seekless.telemetry import NullTelemetry, Telemetry

logger = logging.getLogger("seekless.audit")

CONTENT_MAX_CHARS = 16_384  # an opted-in prompt or answer is cut here: a log event caps at 256 KB


@dataclass(slots=True)
class AuditRecord:
    route: str
    request_id: str
    started_at: float  # unix seconds
    tenant_id: str | None = None
    key_id: str | None = None
    model: str | None = None
    status: int = 200
    error_code: str | None = None
    cache: str | None = None  # hit | miss | bypass; None when no answer was looked up
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_cache_hit_tokens: int = 0
    estimated_cost_usd: float = 0.0
    latency_ms: float = 0.0
    # Only with audit_include_content: the messages this request sent and the answer's text.
    messages: list[dict[str, Any]] | None = None
    answer: str | None = None
    handed_off: bool = field(default=False, repr=False)  # finished elsewhere (generator, worker): not written here
    keep_content: bool = field(default=False, repr=False)  # the operator opted in to prompts in the audit log

    @property
    def day(self) -> date:
        return datetime.fromtimestamp(self.started_at, UTC).date()

    def to_log(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("handed_off")
        data.pop("keep_content")
        data["latency_ms"] = round(self.latency_ms, 2)
        data["estimated_cost_usd"] = round(self.estimated_cost_usd, 8)
        return {name: value for name, value in data.items() if value is not None}


@dataclass(frozen=True, slots=True)
class UsageDay:
    """One tenant's use of one model on one UTC day."""

    day: date
    model: str
    requests: int = 0
    errors: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_cache_hit_tokens: int = 0
    estimated_cost_usd: float = 0.0

    def to_api(self) -> dict[str, Any]:
        return {
            "object": "usage.day",
            "date": self.day.isoformat(),
            "model": self.model,
            "requests": self.requests,
            "errors": self.errors,
            "cache_hits": self.cache_hits,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_cache_hit_tokens": self.prompt_cache_hit_tokens,
            "estimated_cost_usd": round(self.estimated_cost_usd, 6),
        }


class UsageStore(Protocol):
    async def add(self, record: AuditRecord) -> None: ...

    async def days(self, tenant_id: str, *, start: date, end: date, model: str | None = None) -> list[UsageDay]: ...


_current: contextvars.ContextVar[AuditRecord | None] = contextvars.ContextVar("seekless_audit", default=None)


def current() -> AuditRecord | None:
    return _current.get()


def note_principal(principal: Principal) -> None:
    record = _current.get()
    if record is not None:
        record.tenant_id = principal.tenant_id
        record.key_id = principal.key_id


def note_model(model: str) -> None:
    record = _current.get()
    if record is not None:
        record.model = model


def note_error(error: SeeklessError) -> None:
    """The error the client is told about: in an error response, an error frame, or inside a 200 (a
    stream that broke after its first event)."""
    record = _current.get()
    if record is not None:
        record.status, record.error_code = error.status, error.code or error.type


def handed_off() -> None:
    """This request goes on elsewhere (the generator, the worker), which writes its record."""
    record = _current.get()
    if record is not None:
        record.handed_off = True


class Auditor:
    def __init__(
        self,
        *,
        usage: UsageStore | None = None,
        include_content: bool = False,
        telemetry: Telemetry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._usage = usage
        self.include_content = include_content
        self._telemetry = telemetry or NullTelemetry()
        self._clock = clock

    @asynccontextmanager
    async def request(
        self, route: str, *, request_id: str | None = None, principal: Principal | None = None
    ) -> AsyncIterator[AuditRecord]:
        outer = _current.get()
        if outer is not None:  # already audited by whoever started the request
            if principal is not None:
                note_principal(principal)
            yield outer
            return
        record = AuditRecord(
            route=route,
            request_id=request_id or "req_" + secrets.token_hex(12),
            started_at=self._clock(),
            keep_content=self.include_content,
        )
        if principal is not None:
            record.tenant_id, record.key_id = principal.tenant_id, principal.key_id
        token = _current.set(record)
        try:
            yield record
        except SeeklessError as error:
            record.status, record.error_code = error.status, error.code or error.type
            raise
        except asyncio.CancelledError:
            record.status, record.error_code = 499, "cancelled"  # the client left, or a worker is stopping
            raise
        except BaseException:
            record.status, record.error_code = 500, record.error_code or "internal_error"
            raise
        finally:
            _current.reset(token)
            if not record.handed_off:
                record.latency_ms = (self._clock() - record.started_at) * 1000
                await self.write(record)

    async def write(self, record: AuditRecord) -> None:
        """Log the record and count its usage. Never raises: the answer is already made. On Lambda it is
        not yet sent (Mangum returns when the app does), so the count is one Redis call, folded into
        the usage table by the sweeper (adapters/usage.py)."""
        logger.info("audit", extra={"audit": record.to_log()})
        if self._usage is None or record.model is None or record.tenant_id is None:
            return
        try:
            await self._usage.add(record)
        except Exception:
            self._telemetry.count("UsageErrors")
            logger.warning("could not count usage for request %s", record.request_id, exc_info=True)


def note_answer(
    *,
    cache: str,
    prompt_tokens: int,
    completion_tokens: int,
    prompt_cache_hit_tokens: int,
    estimated_cost_usd: float,
) -> None:
    record = _current.get()
    if record is None:
        return
    record.cache = cache
    record.prompt_tokens += prompt_tokens
    record.completion_tokens += completion_tokens
    record.prompt_cache_hit_tokens += prompt_cache_hit_tokens
    record.estimated_cost_usd += estimated_cost_usd


def note_content(messages: Sequence[dict[str, Any]], answer: str | None) -> None:
    """Keep the prompt and answer on the current record, only where the operator opted in."""
    record = _current.get()
    if record is None or not record.keep_content:
        return
    record.messages = [_cut(message) for message in messages]
    record.answer = None if answer is None else answer[:CONTENT_MAX_CHARS]


def _cut(message: dict[str, Any]) -> dict[str, Any]:
    content = message.get("content")
    if isinstance(content, str) and len(content) > CONTENT_MAX_CHARS:
        return {**message, "content": content[:CONTENT_MAX_CHARS]}
    return message
