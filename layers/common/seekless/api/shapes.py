"""The shapes of the REST API's answers, for /openapi.json only.

Routes build their answers as plain dicts (``to_api()``), so nothing here runs per request: these models
are turned into JSON schemas on the first /openapi.json request (``docs.document``), never at import by a
handler. The fuzz tier (tests/fuzz) holds every answer to them, so they cannot drift from the code.
``extra="forbid"``: a field the code adds must be documented here first.
"""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import SkipJsonSchema

# A field that is either absent or set: documented without ``null``.
Absent = SkipJsonSchema[None]


class Shape(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RuleProblem(Shape):
    """One reason a ruleset was refused (``ruleset_invalid``): the rule (null for the ruleset itself), the
    field, and for a condition the 1-based line and column when the compiler knows them."""

    rule: str | None
    field: str
    message: str
    line: int | None
    column: int | None


class ErrorDetail(Shape):
    message: str
    type: str
    param: str | None
    code: str | None
    details: list[RuleProblem] | Absent = None  # only on ruleset_invalid: every problem found


class Error(Shape):
    """OpenAI's error schema: every 4xx and 5xx answer."""

    error: ErrorDetail


class Health(Shape):
    status: Literal["ok"]


class ListPage(Shape):
    """OpenAI's list shape (``api/lists.py``)."""

    object: Literal["list"]
    has_more: bool
    first_id: str | None
    last_id: str | None


# --- models


class Model(Shape):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(Shape):
    object: Literal["list"]
    data: list[Model]


# --- chat completions


class AssistantMessage(Shape):
    role: Literal["assistant"]
    content: str | None
    reasoning_content: str | Absent = None
    tool_calls: list[dict[str, Any]] | Absent = None


class Choice(Shape):
    index: int
    message: AssistantMessage
    finish_reason: str
    logprobs: None


class PromptTokensDetails(Shape):
    cached_tokens: int


class CompletionTokensDetails(Shape):
    reasoning_tokens: int


class CompletionUsage(Shape):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_cache_hit_tokens: int
    prompt_cache_miss_tokens: int
    prompt_tokens_details: PromptTokensDetails
    completion_tokens_details: CompletionTokensDetails | Absent = None


class ChatCompletion(Shape):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage


# --- sessions


class Session(Shape):
    id: str
    object: Literal["session"]
    created_at: int
    updated_at: int
    title: str | None
    metadata: dict[str, str]
    message_count: int


class SessionMessage(Shape):
    id: str
    object: Literal["session.message"]
    seq: int
    role: str
    content: str | None
    created_at: int
    reasoning_content: str | Absent = None
    tool_calls: list[dict[str, Any]] | Absent = None
    tool_call_id: str | Absent = None
    name: str | Absent = None


class SessionList(ListPage):
    data: list[Session]


class SessionMessageList(ListPage):
    data: list[SessionMessage]


class SessionDetail(Session):
    messages: SessionMessageList


class SessionDeleted(Shape):
    id: str
    object: Literal["session.deleted"]
    deleted: Literal[True]


# --- WebSocket tickets


class WsTicket(Shape):
    ticket: str
    expires_in: int


# --- jobs

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class JobProgress(Shape):
    tokens: int


class JobWaiting(Shape):
    reason: str
    until: int


class Job(Shape):
    id: str
    object: Literal["job"]
    status: JobStatus
    model: str
    created_at: int
    updated_at: int
    session_id: str | None
    attempts: int
    progress: JobProgress
    result: ChatCompletion | Absent = None
    error: ErrorDetail | Absent = None
    batch_id: str | Absent = None
    custom_id: str | None = None
    waiting: JobWaiting | Absent = None


class JobAccepted(Shape):
    id: str
    object: Literal["job"]
    status: JobStatus
    created_at: int


class JobList(ListPage):
    data: list[Job]


# --- batches

BatchStatus = Literal[
    "awaiting_upload", "validating", "in_progress", "finalizing", "completed", "failed", "cancelling", "cancelled"
]


class BatchUpload(Shape):
    id: str
    object: Literal["batch.upload"]
    status: BatchStatus
    upload_url: str
    upload_method: Literal["PUT"]
    upload_headers: dict[str, str]
    input_file_id: str
    expires_at: int


class RequestCounts(Shape):
    total: int
    completed: int
    failed: int


class BatchErrors(Shape):
    object: Literal["list"]
    data: list[dict[str, Any]]


class Batch(Shape):
    id: str
    object: Literal["batch"]
    endpoint: str
    input_file_id: str
    completion_window: str
    status: BatchStatus
    output_file_id: str | None
    error_file_id: str | None
    created_at: int
    in_progress_at: int | None
    finalizing_at: int | None
    completed_at: int | None
    failed_at: int | None
    cancelling_at: int | None
    cancelled_at: int | None
    request_counts: RequestCounts
    metadata: dict[str, str] | None
    errors: BatchErrors | None
    output_url: str | None
    error_url: str | None


class BatchList(ListPage):
    data: list[Batch]


# --- usage


class UsageDay(Shape):
    object: Literal["usage.day"]
    date: date
    model: str
    requests: int
    errors: int
    cache_hits: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_cache_hit_tokens: int
    estimated_cost_usd: float


class UsageTotal(Shape):
    requests: int
    errors: int
    cache_hits: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    estimated_cost_usd: float


class Usage(Shape):
    object: Literal["list"]
    data: list[UsageDay]
    start_date: date
    end_date: date
    total: UsageTotal


# --- hybrid decisions (docs/DECISIONS.md)

Outcome = Literal["approve", "review", "deny"]


class RulesetRule(Shape):
    id: str
    description: str
    condition: str
    outcome: Outcome
    weight: float
    final: bool


class RulesetSummary(Shape):
    id: str
    object: Literal["ruleset"]
    version: int
    created_at: int
    created_by: str
    description: str
    model: str | None
    rule_count: int


class Ruleset(RulesetSummary):
    input_schema: dict[str, Any]
    rules: list[RulesetRule]


class RulesetList(ListPage):
    data: list[RulesetSummary]


class DecisionRuleset(Shape):
    id: str
    version: int | None


class DecisionRuleFired(Shape):
    id: str
    outcome: Outcome
    weight: float
    final: bool


class DecisionRuleError(Shape):
    id: str
    outcome: Outcome
    final: bool
    message: str


class DecisionVerdict(Shape):
    decision: Outcome
    confidence: float
    reasons: list[str]


class DecisionVerdictProblem(Shape):
    kind: Literal["blank", "invalid_json", "schema_mismatch"]
    detail: str


class DecisionModel(Shape):
    model: str
    attempts: int
    raw: str | None
    verdict: DecisionVerdict | None
    problem: DecisionVerdictProblem | None


class Decision(Shape):
    id: str
    object: Literal["decision"]
    created_at: int
    ruleset: DecisionRuleset
    decision: Outcome
    decided_by: str
    reasons: list[str]
    rules_fired: list[DecisionRuleFired]
    rule_errors: list[DecisionRuleError]
    score: float
    model: DecisionModel | None
    usage: CompletionUsage
    latency_ms: int
    input_hash: str
    cache: Literal["hit", "miss"] | None
    cached_from: str | None


class DecisionList(ListPage):
    data: list[Decision]


SHAPES: tuple[type[BaseModel], ...] = (
    Error,
    Health,
    ModelList,
    Model,
    ChatCompletion,
    Session,
    SessionList,
    SessionDetail,
    SessionDeleted,
    WsTicket,
    Job,
    JobAccepted,
    JobList,
    BatchUpload,
    Batch,
    BatchList,
    Usage,
    Ruleset,
    RulesetList,
    Decision,
    DecisionList,
)
