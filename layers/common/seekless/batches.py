"""Batch files: a JSONL file of chat requests in OpenAI's Batch input format becomes one job per line.

A batch moves forward only::

    awaiting_upload ─► validating ─► in_progress ─► finalizing ─► completed | failed
                          │              │                ▲
                          └── cancel ────┴─► cancelling ──┘ ─► cancelled

- ``awaiting_upload``: ``POST /v1/batches/uploads`` reserved the id and signed an upload URL. A file
  dropped straight into ``batches/input/<tenant>/`` skips it.
- ``validating``: the ingest function reads the file as a stream, checks every line, writes one job per
  valid line (deterministic job ids: ``job_<batch>_<line>``) and sends them in tens. It checkpoints the
  number of valid lines handled, so a redelivered S3 event resumes after the checkpoint and, for the
  lines after it, creates only the jobs that do not exist yet: no batch and no job is made twice.
- Every job's end (succeeded, failed, cancelled) is counted on the batch exactly once: one transaction
  adds to the batch's counter and marks the job counted (refused when already marked). Whoever ends
  the last job (the worker, or the ingest when every line was invalid or had already ended) sees the
  counters complete, claims ``finalizing`` by a conditional write, and writes the output and errors
  files. No Lambda waits in a loop; a finalizer that dies leaves the claim to expire, and the sweeper
  finishes the batch.

Nothing is dropped silently: every input line appears in exactly one of the two files.

Decisions in bulk (docs/DECISIONS.md): a file under ``decisions/input/<tenant>/`` is a batch whose
endpoint is ``/v1/decisions``. Each line is POST /v1/decisions' body plus ``custom_id``; it is checked
at the split as the route would check it (the ruleset exists, the record fits its input schema, the
model exists), and each ruleset's version is pinned then (the line's, else the latest the first line
naming it found), so the whole file is decided under one version per ruleset. Its jobs carry a
``decision`` instead of a chat request; the worker decides them, and everything else (counting, the
finalizer, the sweeper, the output and errors files under ``batches/output/`` and ``batches/errors/``)
is the chat batches' own.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import IO, TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote_plus

from pydantic import ValidationError

from seekless.contracts import ChatCompletionRequest, DecisionJob, GenerationJob
from seekless.errors import Conflict, NotFound, SeeklessError, ServiceUnavailable
from seekless.jobs import Job, JobStatus
from seekless.models import Principal

if TYPE_CHECKING:
    from collections.abc import Callable

    from seekless.chat import ChatService
    from seekless.models import Page

logger = logging.getLogger("seekless.batches")

INPUT_PREFIX = "batches/input/"
OUTPUT_PREFIX = "batches/output/"
ERRORS_PREFIX = "batches/errors/"
WORK_PREFIX = "batches/work/"
ENDPOINT = "/v1/chat/completions"
DECISIONS_INPUT_PREFIX = "decisions/input/"
DECISIONS_ENDPOINT = "/v1/decisions"
COMPLETION_WINDOW = "24h"
CUSTOM_ID_MAX = 512
INGEST_CHUNK = 100  # valid lines written (and checkpointed) together
UPLOAD_URL_SECONDS = 3_600
FINALIZE_LEASE_SECONDS = 300.0
FINALIZE_READ_ATTEMPTS = 5
TENANT_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,128}")


class BatchStatus(StrEnum):
    AWAITING_UPLOAD = "awaiting_upload"
    VALIDATING = "validating"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.CANCELLED)


@dataclass(frozen=True, slots=True)
class Batch:
    id: str
    tenant_id: str
    key_id: str
    status: BatchStatus
    input_key: str
    created_at: int
    jobs: int = 0  # valid lines, each a job; known once ``ingested``
    invalid: int = 0  # lines refused at validation
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    ingested: bool = False
    checkpoint: int = 0  # valid lines whose jobs exist and were sent
    source_tag: str | None = None  # which object version was ingested (a new upload is a new batch)
    output_key: str | None = None
    error_key: str | None = None
    metadata: dict[str, str] | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    times: dict[str, int] = field(default_factory=dict)  # in_progress_at, finalizing_at, ...
    cancel_requested: bool = False
    resumed: bool = False  # found as an earlier delivery left it: its jobs may exist already

    @property
    def ended(self) -> int:
        return self.completed + self.failed + self.cancelled

    @property
    def endpoint(self) -> str:
        """What each line asks for, told by where its file was dropped."""
        return DECISIONS_ENDPOINT if self.input_key.startswith(DECISIONS_INPUT_PREFIX) else ENDPOINT

    @property
    def all_ended(self) -> bool:
        return self.ingested and self.ended >= self.jobs

    def to_api(self, *, output_url: str | None = None, error_url: str | None = None) -> dict[str, Any]:
        """OpenAI's batch object, plus presigned download URLs once the files exist."""
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "input_file_id": self.input_key,
            "completion_window": COMPLETION_WINDOW,
            "status": str(self.status),
            "output_file_id": self.output_key,
            "error_file_id": self.error_key,
            "created_at": self.created_at,
            **{
                f"{name}_at": self.times.get(f"{name}_at")
                for name in ("in_progress", "finalizing", "completed", "failed", "cancelling", "cancelled")
            },
            "request_counts": {
                "total": self.jobs + self.invalid if self.ingested else 0,
                "completed": self.completed,
                "failed": self.failed + self.invalid + self.cancelled,
            },
            "metadata": self.metadata,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "output_url": output_url,
            "error_url": error_url,
        }


def batch_not_found(batch_id: str) -> NotFound:
    return NotFound(f"No batch found with id '{batch_id}'.", code="batch_not_found")


def new_batch_id() -> str:
    return "batch_" + secrets.token_hex(12)


def line_job_id(batch_id: str, line: int) -> str:
    return f"job_{batch_id.removeprefix('batch_')}_{line}"


# -- where a batch file comes from ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BatchSource:
    """One S3 object that starts a batch: ``batches/input/<tenant>/<name>.jsonl`` (chat requests) or
    ``decisions/input/<tenant>/<name>.jsonl`` (decisions)."""

    bucket: str
    key: str
    tag: str  # the object's version id, else its sequencer, else its ETag: a redelivery has the same

    @property
    def prefix(self) -> str | None:
        return next((p for p in (INPUT_PREFIX, DECISIONS_INPUT_PREFIX) if self.key.startswith(p)), None)

    @property
    def tenant_id(self) -> str | None:
        """The first path segment under the input prefix, when it is a plausible tenant id (it becomes part
        of every key the batch writes, so nothing that could forge another key's shape gets through)."""
        if self.prefix is None:
            return None
        parts = self.key.removeprefix(self.prefix).split("/")
        if len(parts) < 2:
            return None
        return parts[0] if TENANT_PATTERN.fullmatch(parts[0]) else None

    def batch_id(self) -> str:
        """The id reserved by ``POST /v1/batches/uploads`` when the name is one, else one derived from the
        object (so every delivery of the same upload names the same batch). Uploads are reserved for chat
        batches only: a decisions file's batch id is always derived."""
        name = self.key.rsplit("/", 1)[-1].removesuffix(".jsonl")
        if self.prefix == DECISIONS_INPUT_PREFIX:
            return self.derived_batch_id()
        if name.startswith("batch_") and len(name) == 30 and all(c in "0123456789abcdef" for c in name[6:]):
            return name
        return self.derived_batch_id()

    def derived_batch_id(self) -> str:
        digest = hashlib.sha256(f"{self.bucket}/{self.key}#{self.tag}".encode()).hexdigest()
        return "batch_" + digest[:24]


def sources_from_s3_event(event: dict[str, Any]) -> list[BatchSource]:
    """The objects an S3 event notification names. Keys arrive URL-encoded (``+`` for a space)."""
    sources = []
    for record in event.get("Records") or []:
        if not str(record.get("eventName", "")).startswith("ObjectCreated"):
            continue
        s3 = record.get("s3") or {}
        obj = s3.get("object") or {}
        key = unquote_plus(str(obj.get("key", "")))
        tag = obj.get("versionId") or obj.get("sequencer") or str(obj.get("eTag", ""))
        sources.append(BatchSource(bucket=str((s3.get("bucket") or {}).get("name", "")), key=key, tag=str(tag)))
    return sources


# -- reading and checking lines ------------------------------------------------------------------


def read_lines(chunks: Iterable[bytes], *, max_line_bytes: int) -> Iterator[tuple[int, bytes | None]]:
    """(line number from 1, the line without its newline) for each line of a byte stream; None for a line
    longer than ``max_line_bytes``, whose bytes are skipped, never held. Memory stays at one line."""
    number = 0
    pending = bytearray()
    overflow = False
    for chunk in chunks:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            piece = chunk[start:] if end < 0 else chunk[start:end]
            if not overflow:
                pending += piece
                if len(pending) > max_line_bytes:
                    overflow = True
                    pending.clear()
            if end < 0:
                break
            number += 1
            yield number, None if overflow else bytes(pending).removesuffix(b"\r")
            pending.clear()
            overflow = False
            start = end + 1
    if pending or overflow:
        yield number + 1, None if overflow else bytes(pending).removesuffix(b"\r")


@dataclass(frozen=True, slots=True)
class BatchLine:
    """A valid line: a chat request, or (a decisions file) a decision; exactly one of the two."""

    number: int
    custom_id: str
    request: ChatCompletionRequest | None
    decision: DecisionJob | None = None

    @property
    def model(self) -> str:
        if self.request is not None:
            return self.request.model
        assert self.decision is not None and self.decision.model is not None
        return self.decision.model


@dataclass(frozen=True, slots=True)
class LineError:
    number: int | None
    custom_id: str | None
    code: str
    message: str

    def to_record(self) -> dict[str, Any]:
        """A line of the errors file."""
        return {
            "id": None,
            "custom_id": self.custom_id,
            "line": self.number,
            "response": None,
            "error": {"code": self.code, "message": self.message},
        }


_FIELDS = frozenset({"custom_id", "method", "url", "body"})
_DECISION_FIELDS = frozenset({"custom_id", "ruleset", "version", "input", "model"})


def _line_object(
    number: int, raw: bytes | None, max_line_bytes: int, fields: str
) -> tuple[dict[str, Any], str] | LineError:
    """(the line's JSON object, its custom_id), or the error that ends the line's checks."""

    def error(code: str, message: str) -> LineError:
        return LineError(number=number, custom_id=None, code=code, message=message)

    if raw is None:
        return error("line_too_large", f"The line is longer than {max_line_bytes} bytes.")
    if not raw.strip():
        return error("empty_line", "The line is empty; every line must be one JSON request.")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        return error("invalid_json", f"The line is not valid JSON: {exc}.")
    except RecursionError:  # deeper than Python's parser goes: one bad line, not a failed batch
        return error("invalid_json", "The line nests JSON too deeply.")
    if not isinstance(data, dict):
        return error("invalid_line", f"The line must be a JSON object with {fields}.")
    custom_id = data.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id or len(custom_id) > CUSTOM_ID_MAX:
        return error("invalid_custom_id", f"custom_id must be a string of 1 to {CUSTOM_ID_MAX} characters.")
    return data, custom_id


def _digest(custom_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(custom_id.encode(), digest_size=8).digest(), "big")


class LineValidator:
    """Checks lines one at a time, as the chat route would check the request, and remembers the
    custom_ids seen (as 8-byte digests, so 50,000 of them take a few MB)."""

    def __init__(self, chat: ChatService, *, max_lines: int) -> None:
        self._chat = chat
        self._max_lines = max_lines
        self._seen: set[int] = set()
        self._accepted = 0
        self._principal = Principal(tenant_id="batch-validation", key_id="batch-validation")

    def check(self, number: int, raw: bytes | None, *, max_line_bytes: int) -> BatchLine | LineError:
        def error(code: str, message: str, custom_id: str | None = None) -> LineError:
            return LineError(number=number, custom_id=custom_id, code=code, message=message)

        parsed = _line_object(number, raw, max_line_bytes, "custom_id, method, url and body")
        if isinstance(parsed, LineError):
            return parsed
        data, custom_id = parsed
        unknown = sorted(set(data) - _FIELDS)
        if unknown:
            return error("invalid_line", f"Unknown field(s): {', '.join(unknown)}.", custom_id)
        if data.get("method") != "POST":
            return error("invalid_method", "method must be POST.", custom_id)
        if data.get("url") != ENDPOINT:
            return error("invalid_url", f"url must be {ENDPOINT} (got {data.get('url')!r}).", custom_id)
        body = data.get("body")
        if not isinstance(body, dict):
            return error("missing_body", "body must be a chat completion request object.", custom_id)
        digest = _digest(custom_id)
        if digest in self._seen:
            return error("duplicate_custom_id", f"custom_id {custom_id!r} appears on an earlier line.", custom_id)
        try:
            request = ChatCompletionRequest.model_validate(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "body"
            return error("invalid_request", f"body.{where}: {first['msg']}.", custom_id)
        if request.stream:
            return error("invalid_request", "stream is not supported in a batch.", custom_id)
        if request.session_id:
            return error("invalid_request", "session_id is not supported in a batch.", custom_id)
        try:
            self._chat.prepare(request, self._principal, headers={}, deadline=time.monotonic() + 60)
        except SeeklessError as exc:
            return error(exc.code or "invalid_request", exc.message, custom_id)
        if self._accepted >= self._max_lines:
            return error("batch_too_large", f"A batch holds at most {self._max_lines} requests.", custom_id)
        self._seen.add(digest)
        self._accepted += 1
        return BatchLine(number=number, custom_id=custom_id, request=request)


class DecisionChecker(Protocol):
    """What the split asks of the decisions service (``DecisionService.check_record``)."""

    def check_record(
        self, principal: Principal, ruleset_id: str, record: Any, *, version: int | None, model: str | None
    ) -> tuple[int, str]:
        """(the version it would be decided under, the model it would ask), or the SeeklessError the
        route would answer (ruleset_not_found, input_schema_mismatch, model_not_found)."""
        ...


class DecisionLineValidator:
    """Checks a decisions file's lines as POST /v1/decisions would check each body, and pins each
    ruleset's version: a line without one gets the version the first such line of its ruleset found."""

    def __init__(self, decisions: DecisionChecker, principal: Principal, *, max_lines: int) -> None:
        self._decisions = decisions
        self._principal = principal
        self._max_lines = max_lines
        self._seen: set[int] = set()
        self._pinned: dict[str, int] = {}
        self._accepted = 0

    def check(self, number: int, raw: bytes | None, *, max_line_bytes: int) -> BatchLine | LineError:
        from seekless.decisions import DecisionRequest

        def error(code: str, message: str, custom_id: str | None = None) -> LineError:
            return LineError(number=number, custom_id=custom_id, code=code, message=message)

        parsed = _line_object(number, raw, max_line_bytes, "custom_id, ruleset and input")
        if isinstance(parsed, LineError):
            return parsed
        data, custom_id = parsed
        unknown = sorted(set(data) - _DECISION_FIELDS)
        if unknown:
            return error("invalid_line", f"Unknown field(s): {', '.join(unknown)}.", custom_id)
        digest = _digest(custom_id)
        if digest in self._seen:
            return error("duplicate_custom_id", f"custom_id {custom_id!r} appears on an earlier line.", custom_id)
        try:
            body = DecisionRequest.model_validate({k: v for k, v in data.items() if k != "custom_id"})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "line"
            return error("invalid_request", f"{where}: {first['msg']}.", custom_id)
        version = body.version if body.version is not None else self._pinned.get(body.ruleset)
        try:
            pinned, model = self._decisions.check_record(
                self._principal, body.ruleset, body.input, version=version, model=body.model
            )
        except SeeklessError as exc:
            return error(exc.code or "invalid_request", exc.message, custom_id)
        if body.version is None:
            self._pinned.setdefault(body.ruleset, pinned)
        if self._accepted >= self._max_lines:
            return error("batch_too_large", f"A batch holds at most {self._max_lines} requests.", custom_id)
        self._seen.add(digest)
        self._accepted += 1
        decision = DecisionJob(ruleset=body.ruleset, version=pinned, input=body.input, model=model)
        return BatchLine(number=number, custom_id=custom_id, request=None, decision=decision)


# -- the output files ------------------------------------------------------------------------------


def output_record(job: Job) -> dict[str, Any]:
    return {
        "id": f"batch_req_{job.id}",
        "custom_id": job.custom_id,
        "response": {"status_code": 200, "request_id": job.id, "body": job.result},
        "error": None,
    }


def job_error_record(job: Job) -> dict[str, Any]:
    if job.status is JobStatus.CANCELLED:
        error = {"code": "batch_cancelled", "message": "The request was cancelled before it ran."}
    else:
        failure = job.error or {}
        error = {"code": failure.get("code") or "job_failed", "message": failure.get("message") or "The job failed."}
    return {
        "id": f"batch_req_{job.id}",
        "custom_id": job.custom_id,
        "line": job.line,
        "response": None
        if job.status is JobStatus.CANCELLED
        else {"status_code": 500, "request_id": job.id, "body": {"error": job.error}},
        "error": error,
    }


def write_jsonl(sink: IO[bytes], record: dict[str, Any]) -> None:
    sink.write(json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode() + b"\n")


# -- ports -----------------------------------------------------------------------------------------


class BatchStore(Protocol):
    """Batch records. Every call names the tenant: another tenant's batch is a miss."""

    def reserve(
        self,
        tenant_id: str,
        batch_id: str,
        *,
        key_id: str,
        input_key: str,
        metadata: dict[str, str] | None,
        expires_in: int,
    ) -> Batch: ...

    def open(
        self, tenant_id: str, batch_id: str, *, key_id: str, input_key: str, source_tag: str, reserved: bool = False
    ) -> Batch:
        """Start validating (or find the batch a previous delivery started). Raises Conflict when the
        id is taken by another object, or (``reserved``) was never reserved."""
        ...

    def checkpoint(self, tenant_id: str, batch_id: str, handled: int) -> None: ...

    def ingested(
        self, tenant_id: str, batch_id: str, *, jobs: int, invalid: int, errors: list[dict[str, Any]]
    ) -> Batch: ...

    def get(self, tenant_id: str, batch_id: str) -> Batch: ...

    def list_batches(self, tenant_id: str, *, limit: int, after: str | None) -> Page[Batch]: ...

    def cancel(self, tenant_id: str, batch_id: str) -> Batch: ...

    def count_end(self, tenant_id: str, batch_id: str, job_id: str, status: JobStatus) -> bool:
        """Count a job's end once (True), or find it counted (False)."""
        ...

    def claim_finalize(self, tenant_id: str, batch_id: str, *, owner: str, lease_seconds: float) -> Batch | None: ...

    def finish(
        self, tenant_id: str, batch_id: str, *, owner: str, status: BatchStatus, output_key: str, error_key: str
    ) -> Batch: ...

    def unfinished(self, *, older_than: float, limit: int) -> list[tuple[str, str]]: ...


class BatchJobs(Protocol):
    def put_batch_jobs(
        self, tenant_id: str, batch_id: str, *, key_id: str, lines: list[BatchLine], only_new: bool
    ) -> list[Job]:
        """Write one job per line; with ``only_new`` skip lines whose job exists. Returns the jobs that
        still need a message (the written ones, and existing ones still queued)."""
        ...

    def batch_jobs(self, batch_id: str) -> Iterator[Job]:
        """Every job of the batch in line order, results resolved."""
        ...

    def cancel(self, tenant_id: str, job_id: str) -> Job: ...


class BatchQueue(Protocol):
    def enqueue_many(self, jobs: list[GenerationJob]) -> None: ...


class BatchFiles(Protocol):
    def read(self, bucket: str, key: str) -> Iterator[bytes]: ...

    def write(self, key: str, source: IO[bytes]) -> None: ...

    def copy_into(self, key: str, sink: IO[bytes]) -> bool:
        """Append the object's bytes to ``sink``; False when it does not exist."""
        ...

    def upload_url(self, key: str, *, content_type: str, expires_in: int) -> str: ...

    def download_url(self, key: str, *, expires_in: int) -> str: ...


# -- the service -----------------------------------------------------------------------------------


class BatchService:
    def __init__(
        self,
        *,
        batches: BatchStore,
        jobs: BatchJobs,
        queue: BatchQueue | None,
        files: BatchFiles,
        chat: ChatService,
        max_lines: int,
        max_line_bytes: int,
        owner: str | None = None,
        finalize_lease_seconds: float = FINALIZE_LEASE_SECONDS,
        decisions: Callable[[], DecisionChecker] | None = None,
    ) -> None:
        self._batches = batches
        self._jobs = jobs
        self._queue = queue
        self._files = files
        self._chat = chat
        self._max_lines = max_lines
        self._max_line_bytes = max_line_bytes
        self._owner = owner or "finalizer-" + secrets.token_hex(6)
        self._finalize_lease = finalize_lease_seconds
        self._decisions = decisions  # built on first use: only the ingest of a decisions file needs it

    # -- the API -------------------------------------------------------------------------------------

    def reserve_upload(self, principal: Principal, *, metadata: dict[str, str] | None) -> dict[str, Any]:
        batch_id = new_batch_id()
        key = f"{INPUT_PREFIX}{principal.tenant_id}/{batch_id}.jsonl"
        batch = self._batches.reserve(
            principal.tenant_id,
            batch_id,
            key_id=principal.key_id,
            input_key=key,
            metadata=metadata,
            expires_in=UPLOAD_URL_SECONDS,
        )
        content_type = "application/jsonl"
        return {
            "id": batch.id,
            "object": "batch.upload",
            "status": str(batch.status),
            "upload_url": self._files.upload_url(key, content_type=content_type, expires_in=UPLOAD_URL_SECONDS),
            "upload_method": "PUT",
            "upload_headers": {"Content-Type": content_type},
            "input_file_id": key,
            "expires_at": int(time.time()) + UPLOAD_URL_SECONDS,
        }

    def describe(self, batch: Batch) -> dict[str, Any]:
        output_url = (
            self._files.download_url(batch.output_key, expires_in=UPLOAD_URL_SECONDS)
            if (batch.output_key and batch.status.terminal)
            else None
        )
        error_url = (
            self._files.download_url(batch.error_key, expires_in=UPLOAD_URL_SECONDS)
            if (batch.error_key and batch.status.terminal)
            else None
        )
        return batch.to_api(output_url=output_url, error_url=error_url)

    def get(self, principal: Principal, batch_id: str) -> Batch:
        return self._batches.get(principal.tenant_id, batch_id)

    def list_batches(self, principal: Principal, *, limit: int, after: str | None) -> Page[Batch]:
        return self._batches.list_batches(principal.tenant_id, limit=limit, after=after)

    def cancel(self, principal: Principal, batch_id: str) -> Batch:
        """Queued lines are cancelled as the worker reaches them (no call here touches 50,000 jobs);
        running ones finish. The batch ends ``cancelled`` with the cancelled lines in its errors file."""
        batch = self._batches.cancel(principal.tenant_id, batch_id)
        if batch.all_ended:
            self.finalize(batch.tenant_id, batch.id)
            batch = self._batches.get(principal.tenant_id, batch_id)
        return batch

    # -- ingest --------------------------------------------------------------------------------------

    def ingest(self, source: BatchSource) -> Batch | None:
        """Split one uploaded file into jobs. None when the object names no tenant or no longer exists
        (both logged)."""
        tenant_id = source.tenant_id
        if tenant_id is None:
            logger.error("batch file %s is not under batches/ or decisions/input/<tenant>/; ignored", source.key)
            return None
        try:
            # Opened first: an object deleted before its event was handled is no batch (and no retry).
            chunks = self._files.read(source.bucket, source.key)
        except NotFound:
            logger.warning("batch file %s is gone; nothing to do", source.key)
            return None
        batch_id = source.batch_id()
        try:
            batch = self._batches.open(
                tenant_id,
                batch_id,
                key_id="s3",
                input_key=source.key,
                source_tag=source.tag,
                reserved=batch_id != source.derived_batch_id(),
            )
        except Conflict:
            # Not reserved by this tenant, or its reservation was used by an earlier upload of this key:
            # this object is its own batch.
            batch_id = source.derived_batch_id()
            batch = self._batches.open(tenant_id, batch_id, key_id="s3", input_key=source.key, source_tag=source.tag)
        if batch.status.terminal and not batch.ingested:
            logger.info("batch %s was cancelled before its file arrived; ignored", batch_id)
            return batch
        if batch.ingested:
            logger.info("batch %s was already split; nothing to do", batch_id)
            if batch.all_ended and not batch.status.terminal:
                self.finalize(tenant_id, batch_id)
            return batch
        return self._split(batch, chunks)

    def _validator(self, batch: Batch) -> LineValidator | DecisionLineValidator:
        if batch.endpoint == ENDPOINT:
            return LineValidator(self._chat, max_lines=self._max_lines)
        if self._decisions is None:
            raise SeeklessError("Decision batches need the rulesets table (SEEKLESS_RULESETS_TABLE).")
        # The batch's own principal: its rulesets are the tenant's.
        principal = Principal(tenant_id=batch.tenant_id, key_id=batch.key_id)
        return DecisionLineValidator(self._decisions(), principal, max_lines=self._max_lines)

    def _split(self, batch: Batch, chunks: Iterator[bytes]) -> Batch:
        validator = self._validator(batch)
        resume_from = batch.checkpoint
        valid = invalid = 0
        pending: list[BatchLine] = []
        with tempfile.SpooledTemporaryFile(max_size=1 << 20) as rejected:
            lines = read_lines(chunks, max_line_bytes=self._max_line_bytes)
            for number, raw in lines:
                outcome = validator.check(number, raw, max_line_bytes=self._max_line_bytes)
                if isinstance(outcome, LineError):
                    invalid += 1
                    write_jsonl(rejected, outcome.to_record())
                    continue
                valid += 1
                if valid <= resume_from:
                    continue  # its job exists and was sent before the last attempt stopped
                pending.append(outcome)
                if len(pending) >= INGEST_CHUNK:
                    self._send(batch, pending, only_new=batch.resumed)
                    self._batches.checkpoint(batch.tenant_id, batch.id, valid)
                    pending = []
            if pending:
                self._send(batch, pending, only_new=batch.resumed)
            errors: list[dict[str, Any]] = []
            if valid + invalid == 0:
                empty = LineError(None, None, "empty_file", "The file holds no lines.")
                errors.append({"code": empty.code, "message": empty.message, "line": None})
                write_jsonl(rejected, empty.to_record())
            rejected.seek(0)
            self._files.write(f"{WORK_PREFIX}{batch.id}/invalid.jsonl", rejected)
        done = self._batches.ingested(batch.tenant_id, batch.id, jobs=valid, invalid=invalid, errors=errors)
        logger.info("batch %s: %d job(s), %d invalid line(s)", batch.id, valid, invalid)
        if done.all_ended:
            self.finalize(done.tenant_id, done.id)
            return self._batches.get(done.tenant_id, done.id)
        return done

    def _send(self, batch: Batch, lines: list[BatchLine], *, only_new: bool) -> None:
        if self._queue is None:
            raise SeeklessError("Batches need the jobs queue (SEEKLESS_JOBS_QUEUE_URL).")
        jobs = self._jobs.put_batch_jobs(batch.tenant_id, batch.id, key_id=batch.key_id, lines=lines, only_new=only_new)
        self._queue.enqueue_many([job.to_generation_job() for job in jobs])

    # -- ends ----------------------------------------------------------------------------------------

    def job_ended(self, tenant_id: str, batch_id: str, job_id: str, status: JobStatus) -> None:
        """Count one job's end on its batch (once), and finish the batch if that was the last one."""
        self._batches.count_end(tenant_id, batch_id, job_id, status)
        try:
            batch = self._batches.get(tenant_id, batch_id)
        except NotFound:
            return  # the batch record expired: nothing left to finish
        if batch.all_ended and not batch.status.terminal:
            self.finalize(tenant_id, batch_id)

    def should_cancel(self, tenant_id: str, batch_id: str) -> bool:
        """Whether a batch's queued line should be cancelled instead of run."""
        try:
            status = self._batches.get(tenant_id, batch_id).status
        except NotFound:
            return True
        return status in (BatchStatus.CANCELLING, BatchStatus.CANCELLED)

    def finalize(self, tenant_id: str, batch_id: str) -> Batch | None:
        """Write the output and errors files, once. None when another finalizer holds the claim."""
        batch = self._batches.claim_finalize(tenant_id, batch_id, owner=self._owner, lease_seconds=self._finalize_lease)
        if batch is None:
            return None
        output_key = f"{OUTPUT_PREFIX}{batch_id}.jsonl"
        error_key = f"{ERRORS_PREFIX}{batch_id}.jsonl"
        with tempfile.TemporaryFile() as output, tempfile.TemporaryFile() as errors:
            self._write_results(batch, output, errors)
            self._files.write(output_key, output)
            self._files.write(error_key, errors)
        if batch.cancel_requested:
            status = BatchStatus.CANCELLED
        elif batch.jobs == 0:
            status = BatchStatus.FAILED
        else:
            status = BatchStatus.COMPLETED
        finished = self._batches.finish(
            tenant_id, batch_id, owner=self._owner, status=status, output_key=output_key, error_key=error_key
        )
        logger.info(
            "batch %s %s: %d completed, %d failed, %d cancelled, %d invalid",
            batch_id,
            status,
            finished.completed,
            finished.failed,
            finished.cancelled,
            finished.invalid,
        )
        return finished

    def _write_results(self, batch: Batch, output: IO[bytes], errors: IO[bytes]) -> None:
        """Every line into one of the two files. The jobs come from an eventually consistent index, so a
        listing that is short of the batch's job count is read again (a line must never go missing);
        still short after a few tries, the finalizer gives up and its claim expires for the sweeper."""
        for attempt in range(FINALIZE_READ_ATTEMPTS):
            for sink in (output, errors):
                sink.seek(0)
                sink.truncate()
            self._files.copy_into(f"{WORK_PREFIX}{batch.id}/invalid.jsonl", errors)
            written = 0
            for job in self._jobs.batch_jobs(batch.id):
                written += 1
                if job.status is JobStatus.SUCCEEDED:
                    write_jsonl(output, output_record(job))
                else:
                    write_jsonl(errors, job_error_record(job))
            if written == batch.jobs:
                output.seek(0)
                errors.seek(0)
                return
            logger.warning("batch %s: the index shows %d of %d jobs; reading again", batch.id, written, batch.jobs)
            time.sleep(min(2.0, 0.25 * 2**attempt))
        raise ServiceUnavailable(f"Batch {batch.id}: not every job could be read back yet; the sweeper will finish it.")

    def sweep(self, *, older_than_seconds: float, limit: int = 500) -> int:
        """Finish batches whose last job ended but whose finalizer died (its claim expired)."""
        finished = 0
        for tenant_id, batch_id in self._batches.unfinished(older_than=time.time() - older_than_seconds, limit=limit):
            try:
                batch = self._batches.get(tenant_id, batch_id)
            except NotFound:
                continue  # expired, not yet deleted by TTL
            if batch.all_ended and not batch.status.terminal and self.finalize(tenant_id, batch_id) is not None:
                finished += 1
        return finished
