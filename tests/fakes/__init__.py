"""In-memory fakes of the ports. They satisfy the Protocols structurally: no inheritance, mypy-checkable."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from collections.abc import AsyncIterator, Mapping
from datetime import date
from typing import Any

from seekless.audit import AuditRecord, UsageDay
from seekless.contracts import ChatResult, StreamDelta, StreamEnd, StreamEvent, Usage
from seekless.errors import NotFound
from seekless.models import Page, Session, StoredMessage


class FakeChatModel:
    """Answers 'echo: <last user message>' and records every body it was sent."""

    def __init__(self, *, reasoning: str | None = "thinking...", delay: float = 0.0) -> None:
        self.calls: list[dict[str, Any]] = []
        self.reasoning = reasoning
        self.delay = delay
        self.fail_with: Exception | None = None
        self.fail_after_deltas: int | None = None  # stream: raise after this many deltas
        self.contents: list[str] = []  # scripted answers, consumed first

    def _answer(self, body: Mapping[str, Any]) -> str:
        if self.contents:
            return self.contents.pop(0)
        return "echo: " + str(body["messages"][-1].get("content"))

    async def complete(self, body: Mapping[str, Any], *, deadline: float) -> ChatResult:
        self.calls.append(dict(body))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_with is not None:
            raise self.fail_with
        return ChatResult(
            id="chatcmpl-" + secrets.token_hex(4),
            model=str(body["model"]),
            content=self._answer(body),
            reasoning_content=self.reasoning,
            usage=Usage(prompt_tokens=10, completion_tokens=5, prompt_cache_hit_tokens=4, prompt_cache_miss_tokens=6),
        )

    async def stream(self, body: Mapping[str, Any], *, deadline: float) -> AsyncIterator[StreamEvent]:
        self.calls.append(dict(body))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_with is not None and self.fail_after_deltas is None:
            raise self.fail_with
        if self.reasoning:
            yield StreamDelta(reasoning_content=self.reasoning)
        for index, word in enumerate(self._answer(body).split(" ")):
            if self.fail_after_deltas is not None and index >= self.fail_after_deltas:
                assert self.fail_with is not None
                raise self.fail_with
            yield StreamDelta(content=word if index == 0 else " " + word)
        yield StreamEnd(id="up-1", model=str(body["model"]), finish_reason="stop", usage=Usage(prompt_tokens=10))


class FakeCache:
    def __init__(self) -> None:
        self.items: dict[str, ChatResult] = {}
        self.leases: dict[str, str] = {}

    async def get(self, key: str) -> ChatResult | None:
        return self.items.get(key)

    async def lookup(self, key: str, lease_seconds: float) -> tuple[ChatResult | None, str | None]:
        if key in self.items:
            return self.items[key], None
        return None, await self.acquire(key, lease_seconds)

    async def put(self, key: str, result: ChatResult, ttl_seconds: int, *, lease: str | None = None) -> None:
        self.items[key] = result
        if lease is not None:
            await self.release(key, lease)

    async def acquire(self, key: str, lease_seconds: float) -> str | None:
        if key in self.leases:
            return None
        token = secrets.token_hex(4)
        self.leases[key] = token
        return token

    async def release(self, key: str, token: str) -> None:
        if self.leases.get(key) == token:
            del self.leases[key]

    async def leased(self, key: str) -> bool:
        return key in self.leases


class FakeSessions:
    def __init__(self) -> None:
        self.sessions: dict[tuple[str, str], Session] = {}
        self.stored: dict[tuple[str, str], list[StoredMessage]] = {}

    def create(self, tenant_id: str, *, title: str | None, metadata: dict[str, str]) -> Session:
        session = Session(
            id="sess_" + secrets.token_hex(4),
            tenant_id=tenant_id,
            created_at=1,
            updated_at=1,
            title=title,
            metadata=metadata,
        )
        self.sessions[(tenant_id, session.id)] = session
        self.stored[(tenant_id, session.id)] = []
        return session

    def get(self, tenant_id: str, session_id: str) -> Session:
        try:
            return self.sessions[(tenant_id, session_id)]
        except KeyError:
            raise NotFound(f"No session found with id '{session_id}'.", code="session_not_found") from None

    def list_sessions(self, tenant_id: str, *, limit: int, after: str | None) -> Page[Session]:
        mine = [s for (t, _), s in self.sessions.items() if t == tenant_id]
        return Page(items=mine[:limit], has_more=len(mine) > limit)

    def messages(
        self, tenant_id: str, session_id: str, *, limit: int | None = None, after: int | None = None
    ) -> Page[StoredMessage]:
        self.get(tenant_id, session_id)
        found = [m for m in self.stored[(tenant_id, session_id)] if after is None or m.seq > after]
        return Page(items=found[:limit] if limit else found, has_more=bool(limit and len(found) > limit))

    def append(self, tenant_id: str, session_id: str, messages: list[dict[str, Any]]) -> Session:
        self.get(tenant_id, session_id)
        stored = self.stored[(tenant_id, session_id)]
        for message in messages:
            stored.append(
                StoredMessage(
                    seq=len(stored),
                    role=message["role"],
                    content=message.get("content"),
                    created_at=1,
                    reasoning_content=message.get("reasoning_content"),
                    tool_calls=message.get("tool_calls"),
                    tool_call_id=message.get("tool_call_id"),
                )
            )
        return self.sessions[(tenant_id, session_id)]

    def delete(self, tenant_id: str, session_id: str) -> None:
        self.get(tenant_id, session_id)
        del self.sessions[(tenant_id, session_id)]


class FakeRequestLog:
    """The Redis request log in memory: frames, target connection and cancel flag per (tenant, request)."""

    def __init__(self) -> None:
        self.frames: dict[tuple[str, str], list[bytes]] = {}
        self.meta: dict[tuple[str, str], dict[str, Any]] = {}

    async def claim(self, tenant_id: str, request_id: str, connection_id: str) -> bool:
        if (tenant_id, request_id) in self.meta:
            return False
        self.meta[(tenant_id, request_id)] = {"conn": connection_id, "cancel": False}
        self.frames[(tenant_id, request_id)] = []
        return True

    async def push(
        self, tenant_id: str, request_id: str, frame: bytes, *, connection_id: str | None = None
    ) -> tuple[str | None, bool]:
        self.frames.setdefault((tenant_id, request_id), []).append(frame)
        meta = self.meta.setdefault((tenant_id, request_id), {"conn": connection_id, "cancel": False})
        return meta["conn"], meta["cancel"]

    async def resume(self, tenant_id: str, request_id: str, connection_id: str, after_seq: int) -> list[bytes] | None:
        if (tenant_id, request_id) not in self.meta:
            return None
        self.meta[(tenant_id, request_id)]["conn"] = connection_id
        return self.frames[(tenant_id, request_id)][after_seq:]

    async def cancel(self, tenant_id: str, request_id: str) -> bool:
        if (tenant_id, request_id) not in self.meta:
            return False
        self.meta[(tenant_id, request_id)]["cancel"] = True
        return True

    async def state(self, tenant_id: str, request_id: str) -> tuple[str | None, bool]:
        meta = self.meta.get((tenant_id, request_id), {"conn": None, "cancel": False})
        return meta["conn"], meta["cancel"]


class FakeNotifier:
    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, Any]]] = []
        self.gone: set[str] = set()

    def post(self, connection_id: str, data: bytes) -> bool:
        if connection_id in self.gone:
            return False
        import json

        self.posts.append((connection_id, json.loads(data)))
        return True

    def frames(self, connection_id: str | None = None) -> list[dict[str, Any]]:
        return [f for c, f in self.posts if connection_id is None or c == connection_id]


class FakeInvoker:
    def __init__(self) -> None:
        self.payloads: list[bytes] = []

    def invoke_async(self, payload: bytes) -> None:
        self.payloads.append(payload)


class FakeConnections:
    def __init__(self) -> None:
        self.deleted: list[str] = []

    def delete(self, connection_id: str) -> None:
        self.deleted.append(connection_id)


class RecordingUsage:
    """A UsageStore that keeps every audit record it is given and sums them per day and model."""

    def __init__(self) -> None:
        self.records: list[AuditRecord] = []

    async def add(self, record: AuditRecord) -> None:
        self.records.append(record)

    async def days(self, tenant_id: str, *, start: date, end: date, model: str | None = None) -> list[UsageDay]:
        totals: dict[tuple[date, str], UsageDay] = {}
        for r in self.records:
            if r.tenant_id != tenant_id or r.model is None or not start <= r.day <= end:
                continue
            if model is not None and r.model != model:
                continue
            day = totals.get((r.day, r.model), UsageDay(day=r.day, model=r.model))
            totals[(r.day, r.model)] = dataclasses.replace(
                day,
                requests=day.requests + 1,
                errors=day.errors + (1 if r.status >= 400 or r.error_code else 0),
                cache_hits=day.cache_hits + (r.cache == "hit"),
                prompt_tokens=day.prompt_tokens + r.prompt_tokens,
                completion_tokens=day.completion_tokens + r.completion_tokens,
                estimated_cost_usd=day.estimated_cost_usd + r.estimated_cost_usd,
            )
        return sorted(totals.values(), key=lambda d: (d.day, d.model))


class FakeRulesets:
    """``RulesetStore`` in a dict, counting the reads of versions."""

    def __init__(self) -> None:
        from seekless.decisions import StoredRuleset

        self.versions: dict[tuple[str, str], list[StoredRuleset]] = {}
        self.reads = 0

    def publish(self, tenant_id: str, spec: Any, *, created_by: str) -> Any:
        from seekless.decisions import StoredRuleset

        kept = self.versions.setdefault((tenant_id, spec.id), [])
        kept.append(StoredRuleset(spec=spec, version=len(kept) + 1, created_at=1_700_000_000, created_by=created_by))
        return kept[-1]

    def latest_version(self, tenant_id: str, ruleset_id: str) -> int:
        from seekless.decisions import ruleset_not_found

        if (tenant_id, ruleset_id) not in self.versions:
            raise ruleset_not_found(ruleset_id)
        return len(self.versions[(tenant_id, ruleset_id)])

    def get(self, tenant_id: str, ruleset_id: str, version: int) -> Any:
        self.reads += 1
        return self.versions[(tenant_id, ruleset_id)][version - 1]

    def list_rulesets(self, tenant_id: str, *, limit: int, after: str | None) -> Page[Any]:
        heads = [kept[-1].summary() for (tenant, _), kept in sorted(self.versions.items()) if tenant == tenant_id]
        return Page(items=heads[:limit], has_more=len(heads) > limit)


class FakeDecisions:
    """``DecisionStore`` in a dict."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], Any] = {}

    def put(self, tenant_id: str, result: Any, *, created_by: str) -> None:
        self.items[(tenant_id, result.id)] = result

    def get(self, tenant_id: str, decision_id: str) -> Any:
        from seekless.decisions import decision_not_found

        if (tenant_id, decision_id) not in self.items:
            raise decision_not_found(decision_id)
        return self.items[(tenant_id, decision_id)]

    def list_decisions(self, tenant_id: str, *, limit: int, after: str | None) -> Page[Any]:
        found = sorted((r for (t, _), r in self.items.items() if t == tenant_id), key=lambda r: r.id, reverse=True)
        return Page(items=found[:limit], has_more=len(found) > limit)


class FakeDecisionCache:
    """``DecisionCache`` in a dict."""

    def __init__(self) -> None:
        self.values: dict[str, dict[str, Any]] = {}

    async def get(self, key: str) -> dict[str, Any] | None:
        return self.values.get(key)

    async def put(self, key: str, value: dict[str, Any], ttl_seconds: int) -> None:
        self.values[key] = value
