"""Wire contracts: the OpenAI-compatible request we accept and the results the generation routine yields.

API models (pydantic, validated at the edge) are kept apart from the small frozen dataclasses the
domain passes around (``ChatResult``, ``StreamDelta``...), which cost nothing to build per token.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Role = Literal["system", "user", "assistant", "tool"]

# A session id is part of DynamoDB keys ("T#<tenant>#S#<session>"): a short, plain alphabet keeps it far
# below the 2 KB key limit and free of the "#" that separates the key's fields.
SESSION_ID_MAX_LENGTH = 128
SESSION_ID_PATTERN = r"^[A-Za-z0-9_.:-]+$"
SessionId = Annotated[str, Field(min_length=1, max_length=SESSION_ID_MAX_LENGTH, pattern=SESSION_ID_PATTERN)]
# OpenAI's metadata: at most 16 pairs, keys of at most 64 characters, values of at most 512. A key is
# never empty: metadata is stored as a DynamoDB map, and moto cannot read back an item whose map has an
# empty key (one such session or batch made every later listing of its tenant fail).
Metadata = Annotated[
    dict[Annotated[str, Field(min_length=1, max_length=64)], Annotated[str, Field(max_length=512)]],
    Field(max_length=16),
]


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


def _one_shape_per_role(schema: dict[str, Any]) -> None:
    """ChatMessage's JSON schema says what ``_check_role_fields`` checks, one variant per role, so that a
    client (or a fuzzer) reading /openapi.json knows a tool message needs ``tool_call_id``."""
    properties = schema.pop("properties")
    for name in ("required", "type", "additionalProperties"):
        schema.pop(name, None)
    content = {"anyOf": [v for v in properties["content"]["anyOf"] if v.get("type") != "null"], "title": "Content"}

    def variant(roles: list[str], required: list[str], **tightened: Any) -> dict[str, Any]:
        fields = {**properties, "role": {"type": "string", "enum": roles}, **tightened}
        return {"type": "object", "properties": fields, "required": required, "additionalProperties": False}

    schema["anyOf"] = [
        variant(["system", "user"], ["role", "content"], content=content),
        variant(
            ["tool"],
            ["role", "content", "tool_call_id"],
            content=content,
            tool_call_id={"type": "string", "minLength": 1},
        ),
        variant(["assistant"], ["role", "content"], content=content),
        variant(
            ["assistant"], ["role", "tool_calls"], tool_calls={**properties["tool_calls"]["anyOf"][0], "minItems": 1}
        ),
    ]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_one_shape_per_role)

    role: Role
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    # DeepSeek requires it back on assistant turns that made tool calls.
    reasoning_content: str | None = None
    # DeepSeek chat prefix completion (beta); passed through untouched.
    prefix: bool | None = None

    @field_validator("content")
    @classmethod
    def _flatten_text_parts(cls, value: str | list[TextPart] | None) -> str | None:
        if isinstance(value, list):
            return "".join(part.text for part in value)
        return value

    @model_validator(mode="after")
    def _check_role_fields(self) -> ChatMessage:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs tool_call_id")
        if self.role in ("system", "user", "tool") and self.content is None:
            raise ValueError(f"a {self.role} message needs content")
        if self.role == "assistant" and self.content is None and not self.tool_calls:
            raise ValueError("an assistant message needs content or tool_calls")
        return self

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else ""


class Thinking(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["enabled", "disabled"]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text", "json_object"]


class ChatCompletionRequest(BaseModel):
    """POST /v1/chat/completions. Unknown fields are refused, as OpenAI refuses them."""

    model_config = ConfigDict(extra="forbid")

    model: Annotated[str, Field(examples=["deepseek-flash"])]
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    stop: str | list[str] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    thinking: Thinking | None = None
    reasoning_effort: Literal["low", "medium", "high", "max"] | None = None
    n: Annotated[int, Field(ge=1, le=1)] | None = None
    user: str | None = None
    # seekless extension: continue a stored conversation (also the X-Session-Id header).
    session_id: SessionId | None = None

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_cache_hit_tokens: int = 0
    prompt_cache_miss_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Usage:
        details = data.get("completion_tokens_details") or {}
        return cls(
            prompt_tokens=int(data.get("prompt_tokens") or 0),
            completion_tokens=int(data.get("completion_tokens") or 0),
            prompt_cache_hit_tokens=int(data.get("prompt_cache_hit_tokens") or 0),
            prompt_cache_miss_tokens=int(data.get("prompt_cache_miss_tokens") or 0),
            reasoning_tokens=int(details.get("reasoning_tokens") or 0),
        )

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "prompt_cache_hit_tokens": self.prompt_cache_hit_tokens,
            "prompt_cache_miss_tokens": self.prompt_cache_miss_tokens,
            "prompt_tokens_details": {"cached_tokens": self.prompt_cache_hit_tokens},
        }
        if self.reasoning_tokens:
            wire["completion_tokens_details"] = {"reasoning_tokens": self.reasoning_tokens}
        return wire


@dataclass(frozen=True, slots=True)
class StreamDelta:
    """One upstream chunk's worth of new output. Content and reasoning are kept apart."""

    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """The last event of an upstream stream: why it stopped and what it cost."""

    id: str
    model: str
    finish_reason: str
    usage: Usage | None = None


StreamEvent = StreamDelta | StreamEnd


@dataclass(frozen=True, slots=True)
class ChatResult:
    """A finished generation: what a non-streamed answer holds and what the cache stores."""

    id: str
    model: str
    content: str
    reasoning_content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    finish_reason: str = "stop"
    usage: Usage = field(default_factory=Usage)
    created: int = field(default_factory=lambda: int(time.time()))

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.reasoning_content is not None:
            message["reasoning_content"] = self.reasoning_content
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        return message

    def to_completion(self) -> dict[str, Any]:
        """The OpenAI ``chat.completion`` object."""
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "message": self.message(), "finish_reason": self.finish_reason, "logprobs": None}],
            "usage": self.usage.to_wire(),
        }

    def to_cache(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "model": self.model,
            "content": self.content,
            "reasoning_content": self.reasoning_content,
            "tool_calls": self.tool_calls,
            "finish_reason": self.finish_reason,
            "usage": self.usage.to_wire(),
            "created": self.created,
        }

    @classmethod
    def from_cache(cls, data: dict[str, Any]) -> ChatResult:
        return cls(
            id=data["id"],
            model=data["model"],
            content=data["content"],
            reasoning_content=data.get("reasoning_content"),
            tool_calls=data.get("tool_calls"),
            finish_reason=data.get("finish_reason") or "stop",
            usage=Usage.from_wire(data.get("usage") or {}),
            created=int(data.get("created") or time.time()),
        )


class ResultBuilder:
    """Accumulates stream deltas into a ChatResult (tool-call fragments merged by index)."""

    def __init__(self) -> None:
        self._content: list[str] = []
        self._reasoning: list[str] = []
        self._tool_calls: dict[int, dict[str, Any]] = {}

    def add(self, delta: StreamDelta) -> None:
        if delta.content:
            self._content.append(delta.content)
        if delta.reasoning_content:
            self._reasoning.append(delta.reasoning_content)
        for fragment in delta.tool_calls or ():
            index = int(fragment.get("index", len(self._tool_calls)))
            call = self._tool_calls.setdefault(
                index, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
            )
            if fragment.get("id"):
                call["id"] = fragment["id"]
            function = fragment.get("function") or {}
            call["function"]["name"] += function.get("name") or ""
            call["function"]["arguments"] += function.get("arguments") or ""

    def build(self, *, id: str, model: str, finish_reason: str, usage: Usage | None) -> ChatResult:
        return ChatResult(
            id=id,
            model=model,
            content="".join(self._content),
            reasoning_content="".join(self._reasoning) if self._reasoning else None,
            tool_calls=[self._tool_calls[i] for i in sorted(self._tool_calls)] or None,
            finish_reason=finish_reason,
            usage=usage or Usage(),
        )


class ReplyTo(BaseModel):
    """Where the reply to a queued request goes: an SQS queue, or an S3 prefix (``s3://bucket/prefix/``,
    one ``<job_id>.json`` object per reply). Exactly one of the two."""

    model_config = ConfigDict(extra="forbid")

    queue_url: Annotated[str, Field(pattern=r"^https://\S+$|^http://\S+$")] | None = None
    s3_prefix: Annotated[str, Field(pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/\S*)?$")] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ReplyTo:
        if (self.queue_url is None) == (self.s3_prefix is None):
            raise ValueError("reply_to needs exactly one of queue_url and s3_prefix")
        return self

    def describe(self) -> str:
        return self.queue_url or self.s3_prefix or ""


JOB_ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"


class DecisionJob(BaseModel):
    """A decision to make (a line of a decisions file): POST /v1/decisions' body with the ruleset's
    version pinned when the batch was split, so every line of a file is decided under one version."""

    model_config = ConfigDict(extra="forbid")

    ruleset: str
    version: Annotated[int, Field(ge=1)]
    input: dict[str, Any]
    model: str | None = None


class GenerationJob(BaseModel):
    """One generation, whoever asked for it: a WebSocket chat handed to the generator function, a REST
    job, a line of a batch file or a queued request, as SQS carries it to the GPU worker.

    A contract change is a version bump. v2 added ``batch_id`` (the job is a line of that batch: its end
    is counted there) and ``reply_to`` (put the reply there); a v1 message still parses (both absent).
    v3 added ``decision`` (a line of a decisions file: the worker decides it instead of chatting); such a
    job carries no ``request``, every other job exactly one. v1 and v2 messages still parse.
    """

    model_config = ConfigDict(extra="forbid")

    version: Literal[1, 2, 3] = 3
    job_id: str  # the WebSocket request_id
    tenant_id: str
    key_id: str
    request: ChatCompletionRequest | None = None
    session_id: str | None = None
    connection_id: str | None = None  # sink: stream frames to this WebSocket connection
    created_at: float = Field(default_factory=time.time)
    batch_id: str | None = None
    reply_to: ReplyTo | None = None
    decision: DecisionJob | None = None

    @model_validator(mode="after")
    def _request_or_decision(self) -> GenerationJob:
        if (self.request is None) == (self.decision is None):
            raise ValueError("a job carries exactly one of request and decision")
        if self.decision is not None and (self.version < 3 or self.connection_id or self.session_id):
            raise ValueError("a decision job is v3, with no connection and no session")
        return self

    def chat_request(self) -> ChatCompletionRequest:
        """The chat request of a job that is not a decision."""
        if self.request is None:
            raise ValueError(f"job {self.job_id} is a decision, not a chat")
        return self.request


class RequestMessage(BaseModel):
    """What a system drops on the requests queue: the GenerationJob contract without the fields only
    seekless sets (connection, batch), ``job_id`` optional (by default derived from the SQS message id,
    so a redelivered message makes no second job), and ``reply_to`` required."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1, 2] = 2
    job_id: Annotated[str, Field(pattern=JOB_ID_PATTERN)] | None = None
    tenant_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,128}$")]
    key_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,128}$")] = "sqs"
    request: ChatCompletionRequest
    session_id: SessionId | None = None
    reply_to: ReplyTo
