"""Domain models. Storage items (adapters/dynamodb.py) and API shapes (functions/) map to and from these."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """What one API key may spend. None means unlimited."""

    rpm: int | None = None  # requests per minute
    tpm: int | None = None  # tokens per minute (prompt estimate + max_tokens reserved, then reconciled)
    daily_tokens: int | None = None
    monthly_tokens: int | None = None

    @property
    def per_minute(self) -> bool:
        return self.rpm is not None or self.tpm is not None


UNLIMITED = KeyLimits()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the tenant an API key belongs to, and that key's limits. ``limits`` is None where
    the key was not read (a job or WebSocket generation rebuilt from its key id): ChatService looks
    them up by key id before it admits the request."""

    tenant_id: str
    key_id: str
    limits: KeyLimits | None = None

    @property
    def upstream_user_id(self) -> str:
        """DeepSeek's ``user_id``: a stable hash of the tenant, never the tenant name itself (no PII)."""
        return "t_" + hashlib.sha256(self.tenant_id.encode()).hexdigest()[:40]


@dataclass(frozen=True, slots=True)
class Operator:
    """The caller of an admin route: whoever holds the admin key (one credential, not one per person)."""


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    key_id: str
    tenant_id: str
    status: str = "active"
    expires_at: int | None = None
    limits: KeyLimits = UNLIMITED
    name: str | None = None
    created_at: int | None = None

    def to_api(self) -> dict[str, Any]:
        """The operator's view (admin API, `seekless keys --json`): never the key, never its hash."""
        return {
            "id": self.key_id,
            "object": "api_key",
            "tenant": self.tenant_id,
            "name": self.name,
            "status": self.status,
            "limits": {
                "rpm": self.limits.rpm,
                "tpm": self.limits.tpm,
                "daily_tokens": self.limits.daily_tokens,
                "monthly_tokens": self.limits.monthly_tokens,
            },
            "created_at": self.created_at,
            "expires_at": self.expires_at,
        }


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A key just minted (created, or the replacement of a rotated one): the only time it is shown.
    ``previous`` is the rotated key as it now is."""

    key: str = field(repr=False)  # never in a log line or a traceback's locals
    record: ApiKeyRecord
    previous: ApiKeyRecord | None = None

    def to_api(self) -> dict[str, Any]:
        shown = {**self.record.to_api(), "key": self.key}
        if self.previous is not None:
            shown["previous"] = self.previous.to_api()
        return shown


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    tenant_id: str
    created_at: int
    updated_at: int
    message_count: int = 0
    title: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "session",
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "title": self.title,
            "metadata": self.metadata,
            "message_count": self.message_count,
        }


@dataclass(frozen=True, slots=True)
class StoredMessage:
    seq: int
    role: str
    content: str | None
    created_at: int
    reasoning_content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    name: str | None = None

    @property
    def id(self) -> str:
        return f"msg_{self.seq:08d}"

    def to_upstream(self) -> dict[str, Any]:
        """The message as it goes back to DeepSeek in a later turn."""
        message: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.name:
            message["name"] = self.name
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
            # DeepSeek answers 400 when a tool-calling turn comes back without its reasoning.
            if self.reasoning_content is not None:
                message["reasoning_content"] = self.reasoning_content
        if self.tool_call_id:
            message["tool_call_id"] = self.tool_call_id
        return message

    def to_api(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "object": "session.message",
            "seq": self.seq,
            "role": self.role,
            "content": self.content,
            "created_at": self.created_at,
        }
        for name in ("reasoning_content", "tool_calls", "tool_call_id", "name"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        return data


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    has_more: bool
