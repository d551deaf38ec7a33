"""Ports: the small Protocols the domain depends on. Adapters implement them; fakes need no inheritance."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from seekless.contracts import ChatCompletionRequest, ChatResult, GenerationJob, StreamEvent
from seekless.models import ApiKeyRecord, KeyLimits, Page, Session, StoredMessage

if TYPE_CHECKING:
    from seekless.decisions import RulesetSummary, StoredRuleset
    from seekless.jobs import Job, JobStatus
    from seekless.rules import DecisionResult, RulesetSpec


class ChatModel(Protocol):
    """An OpenAI-compatible chat endpoint (DeepSeek, or later the GPU worker's vLLM).

    ``body`` is the upstream request body, already normalised by the service (upstream model name,
    ``max_tokens`` capped, ``user_id`` set). ``deadline`` is an absolute ``time.monotonic()`` value that
    nothing (retries, keep-alives) may stretch. Errors are ``seekless.errors.SeeklessError`` subclasses.
    """

    async def complete(self, body: Mapping[str, Any], *, deadline: float) -> ChatResult: ...

    def stream(self, body: Mapping[str, Any], *, deadline: float) -> AsyncIterator[StreamEvent]: ...


class CircuitBreaker(Protocol):
    """Shared across every Lambda: state lives in Redis."""

    async def allow(self) -> bool: ...

    async def record_success(self) -> None: ...

    async def record_failure(self) -> None: ...


class ResponseCache(Protocol):
    """Finished answers by cache key, plus a lease so identical concurrent misses call upstream once.

    Implementations fail open: an unavailable store reads as a miss, a write is dropped, and a lease is
    granted (no coordination is possible, so the caller computes the answer itself).
    """

    async def lookup(self, key: str, lease_seconds: float) -> tuple[ChatResult | None, str | None]:
        """The cached answer; else a lease token when this caller should compute it (None, None: another
        caller holds the lease). One round trip."""
        ...

    async def acquire(self, key: str, lease_seconds: float) -> str | None:
        """A lease without reading the answer (a refresh)."""
        ...

    async def put(self, key: str, result: ChatResult, ttl_seconds: int, *, lease: str | None = None) -> None:
        """Store the answer, and give up ``lease`` in the same round trip."""
        ...

    async def release(self, key: str, token: str) -> None: ...

    async def leased(self, key: str) -> bool:
        """Whether some caller holds the lease for ``key`` right now."""
        ...


class SessionStore(Protocol):
    """Conversations, one item per message. Every call names the tenant: another tenant's session is
    indistinguishable from a missing one."""

    def create(self, tenant_id: str, *, title: str | None, metadata: dict[str, str]) -> Session: ...

    def get(self, tenant_id: str, session_id: str) -> Session: ...

    def list_sessions(self, tenant_id: str, *, limit: int, after: str | None) -> Page[Session]: ...

    def messages(
        self, tenant_id: str, session_id: str, *, limit: int | None = None, after: int | None = None
    ) -> Page[StoredMessage]: ...

    def append(self, tenant_id: str, session_id: str, messages: list[dict[str, Any]]) -> Session: ...

    def delete(self, tenant_id: str, session_id: str) -> None: ...


class KeyStore(Protocol):
    def lookup(self, key_hash: str) -> ApiKeyRecord | None: ...


class KeyAdminStore(Protocol):
    """Keys as an operator manages them, by id. Writes that could collide (a minted id already taken)
    raise Conflict with code ``key_exists``; an unknown id is NotFound."""

    def create(
        self, key_hash: str, *, tenant_id: str, key_id: str, name: str | None, limits: KeyLimits
    ) -> ApiKeyRecord: ...

    def get(self, key_id: str) -> ApiKeyRecord: ...

    def list_keys(self, tenant_id: str | None = None) -> list[ApiKeyRecord]: ...

    def revoke(self, key_id: str) -> ApiKeyRecord: ...

    def rotate(
        self, key_id: str, new_key_hash: str, *, new_key_id: str, grace_seconds: int = 0
    ) -> tuple[ApiKeyRecord, ApiKeyRecord]: ...


class JobStore(Protocol):
    """Job records, seen from the API: every call names the tenant (another tenant's job is a miss).

    ``create`` returns (job, created): with ``idempotency`` = (key, request fingerprint), a key seen
    before returns that key's job and False, or raises IdempotencyKeyReused for another body.
    ``fail`` with ``owner=None`` is the producer abandoning a job it could not enqueue (queued only).
    Refused transitions raise ``seekless.jobs.JobConflict``; a missing job raises NotFound.
    """

    def create(
        self,
        tenant_id: str,
        *,
        key_id: str,
        request: ChatCompletionRequest,
        session_id: str | None,
        idempotency: tuple[str, str] | None = None,
    ) -> tuple[Job, bool]: ...

    def get(self, tenant_id: str, job_id: str) -> Job: ...

    def list_jobs(self, tenant_id: str, *, status: JobStatus | None, limit: int, after: str | None) -> Page[Job]: ...

    def cancel(self, tenant_id: str, job_id: str) -> Job: ...

    def fail(self, tenant_id: str, job_id: str, error: dict[str, Any], *, owner: str | None) -> Job: ...

    def mark_sent(self, tenant_id: str, job_id: str) -> None: ...

    def unsent(self, *, created_before: float, limit: int = 100) -> list[Job]: ...


class JobLeases(Protocol):
    """Job records, seen from a worker: every write is conditional on the lease it holds."""

    def claim(
        self, tenant_id: str, job_id: str, *, owner: str, lease_seconds: float, message_id: str | None = None
    ) -> Job: ...

    def heartbeat(self, tenant_id: str, job_id: str, *, owner: str, lease_seconds: float) -> Job: ...

    def progress(self, tenant_id: str, job_id: str, *, owner: str, tokens: int) -> Job: ...

    def succeed(self, tenant_id: str, job_id: str, result: dict[str, Any], *, owner: str) -> Job: ...

    def fail(self, tenant_id: str, job_id: str, error: dict[str, Any], *, owner: str | None) -> Job: ...

    def defer(
        self, tenant_id: str, job_id: str, *, owner: str, not_before: float, reason: str, message_id: str
    ) -> Job: ...


class JobQueue(Protocol):
    """Where jobs wait for a worker: the message is the versioned ``GenerationJob`` contract."""

    def enqueue(self, job: GenerationJob) -> None: ...


@dataclass(frozen=True, slots=True)
class QueueMessage:
    """One received job message. ``receipt`` identifies this delivery; ``receive_count`` is SQS's
    ApproximateReceiveCount (1 on the first delivery)."""

    id: str
    receipt: str
    body: str
    receive_count: int


class JobMessages(Protocol):
    """The jobs queue, seen from the worker. Calls block (boto3); the worker runs them in threads.
    ``extend``, ``delete`` and ``release`` answer False when the delivery is no longer valid."""

    def receive(self, *, max_messages: int, wait_seconds: int, visibility_seconds: int) -> list[QueueMessage]: ...

    def extend(self, message: QueueMessage, seconds: int) -> bool: ...

    def delete(self, message: QueueMessage) -> bool: ...

    def release(self, message: QueueMessage) -> bool:
        """Visibility 0: hand the message back for another worker at once."""
        ...

    def send_later(self, job: GenerationJob, delay_seconds: int) -> str:
        """Send ``job`` again as a new message, delivered after ``delay_seconds``; its message id. A new
        message, not a longer visibility: its receive count starts again, so waiting never dead-letters."""
        ...


class RulesetStore(Protocol):
    """Rulesets by tenant, id and version. Every call names the tenant: another tenant's ruleset is a
    miss (NotFound, code ``ruleset_not_found``), never a permission error."""

    def publish(self, tenant_id: str, spec: RulesetSpec, *, created_by: str) -> StoredRuleset:
        """Store ``spec`` as the id's next version (1 for a new id). Two concurrent publishes of one id
        get two versions; a stored version is never written again."""
        ...

    def latest_version(self, tenant_id: str, ruleset_id: str) -> int: ...

    def get(self, tenant_id: str, ruleset_id: str, version: int) -> StoredRuleset: ...

    def list_rulesets(self, tenant_id: str, *, limit: int, after: str | None) -> Page[RulesetSummary]:
        """The latest version of each of the tenant's rulesets, by id; ``after`` is the last id seen."""
        ...


class DecisionStore(Protocol):
    """Decisions kept for audit, by tenant and decision id (another tenant's is NotFound)."""

    def put(self, tenant_id: str, result: DecisionResult, *, created_by: str) -> None: ...

    def get(self, tenant_id: str, decision_id: str) -> DecisionResult: ...

    def list_decisions(self, tenant_id: str, *, limit: int, after: str | None) -> Page[DecisionResult]:
        """Newest first; ``after`` is the last decision id seen."""
        ...


class DecisionCache(Protocol):
    """A model decision's verdict by its cache key (``seekless.decisions.decision_cache_key``). Fails
    open, as the response cache does: an unavailable store is a miss and a dropped write."""

    async def get(self, key: str) -> dict[str, Any] | None: ...

    async def put(self, key: str, value: dict[str, Any], ttl_seconds: int) -> None: ...
