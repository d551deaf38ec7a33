"""One audit record per request, filled in by whoever knows each part, and GET /v1/usage over it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from seekless import audit, wiring
from seekless.api import deps
from seekless.api.app import create_app
from seekless.audit import Auditor, AuditRecord
from seekless.chat import ChatService
from seekless.config import Settings
from seekless.errors import AuthenticationFailed, UpstreamError
from seekless.models import Principal
from seekless.telemetry import RecordingTelemetry
from tests.fakes import FakeCache, FakeChatModel, FakeSessions, RecordingUsage

SECRET_PROMPT = "my card number is 4111-1111"
CHAT = {"model": "deepseek-flash", "messages": [{"role": "user", "content": SECRET_PROMPT}]}
KEYS = {"Bearer key-acme": Principal("acme", "key_acme"), "Bearer key-other": Principal("other", "key_other")}


class Keys:
    def authenticate(self, authorization: str | None) -> Principal:
        if authorization not in KEYS:
            raise AuthenticationFailed("Incorrect API key provided.")
        return KEYS[authorization]


class Env:
    def __init__(self, *, include_content: bool = False) -> None:
        self.settings = Settings(max_body_bytes=4096)
        self.model = FakeChatModel()
        self.usage = RecordingUsage()
        self.telemetry = RecordingTelemetry()
        self.auditor = Auditor(usage=self.usage, include_content=include_content, telemetry=self.telemetry)
        self.sessions = FakeSessions()
        self.chat = ChatService(settings=self.settings, model=self.model, cache=FakeCache(), sessions=self.sessions)

    def app(self) -> FastAPI:
        app = create_app(settings=lambda: self.settings, telemetry=lambda: self.telemetry, auditor=lambda: self.auditor)
        app.dependency_overrides[deps.settings] = lambda: self.settings
        app.dependency_overrides[deps.chat_service] = lambda: self.chat
        app.dependency_overrides[deps.session_store] = lambda: self.sessions
        app.dependency_overrides[deps.usage_store] = lambda: self.usage
        return app


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Env:
    # The real authentication dependency runs (it notes who is calling), over these keys.
    monkeypatch.setattr(wiring, "authenticator", lambda: Keys())
    return Env()


@pytest.fixture
async def client(env: Env) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=env.app())
    async with httpx.AsyncClient(
        transport=transport, base_url="http://api", headers={"Authorization": "Bearer key-acme"}
    ) as c:
        yield c


@pytest.fixture
def audits(caplog: pytest.LogCaptureFixture) -> Audits:
    caplog.set_level(logging.INFO, logger="seekless.audit")
    return Audits(caplog)


class Audits:
    """The audit objects logged so far, read afresh on every access."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self._caplog = caplog

    def all(self) -> list[dict[str, Any]]:
        return [r.audit for r in self._caplog.records if hasattr(r, "audit")]

    def one(self) -> dict[str, Any]:
        found = self.all()
        assert len(found) == 1, found
        return found[0]


async def test_a_chat_leaves_one_record_with_who_what_and_cost_but_no_prompt(
    client: httpx.AsyncClient, env: Env, audits: Audits, caplog: pytest.LogCaptureFixture
) -> None:
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200
    record = audits.one()
    assert record["route"] == "POST /v1/chat/completions"
    assert (record["tenant_id"], record["key_id"], record["model"]) == ("acme", "key_acme", "deepseek-flash")
    assert (record["status"], record["cache"]) == (200, "bypass")  # temperature unset: not cached
    assert (record["prompt_tokens"], record["completion_tokens"], record["prompt_cache_hit_tokens"]) == (10, 5, 4)
    assert record["estimated_cost_usd"] > 0 and record["latency_ms"] >= 0
    assert "messages" not in record and "answer" not in record
    assert SECRET_PROMPT not in caplog.text and "key-acme" not in caplog.text
    assert [r.tenant_id for r in env.usage.records] == ["acme"]


async def test_a_cache_hit_is_recorded_as_a_hit_costing_nothing(client: httpx.AsyncClient, audits: Audits) -> None:
    body = {**CHAT, "temperature": 0}
    await client.post("/v1/chat/completions", json=body)
    await client.post("/v1/chat/completions", json=body)
    first, second = audits.all()
    assert first["cache"] == "miss" and second["cache"] == "hit"
    assert second["prompt_tokens"] == second["completion_tokens"] == 0 and second["estimated_cost_usd"] == 0


async def test_content_is_recorded_only_when_the_operator_opts_in(
    monkeypatch: pytest.MonkeyPatch, audits: Audits
) -> None:
    monkeypatch.setattr(wiring, "authenticator", lambda: Keys())
    env = Env(include_content=True)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=env.app()),
        base_url="http://api",
        headers={"Authorization": "Bearer key-acme"},
    ) as client:
        await client.post("/v1/chat/completions", json=CHAT)
    record = audits.one()
    assert record["messages"] == [{"role": "user", "content": SECRET_PROMPT}]
    assert record["answer"] == "echo: " + SECRET_PROMPT


async def test_a_stream_is_one_record_and_an_error_mid_stream_is_recorded(
    client: httpx.AsyncClient, env: Env, audits: Audits
) -> None:
    response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert response.text.endswith("data: [DONE]\n\n")
    env.model.fail_with, env.model.fail_after_deltas = UpstreamError("DeepSeek broke off."), 1
    await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    ok, broken = audits.all()
    assert (ok["status"], ok["prompt_tokens"]) == (200, 10)
    assert (broken["status"], broken["error_code"]) == (502, "upstream_error")


async def test_refusals_are_recorded_with_their_status_and_code(
    client: httpx.AsyncClient, env: Env, audits: Audits
) -> None:
    await client.post("/v1/chat/completions", json={**CHAT, "model": "gpt-nothing"})
    await client.get("/v1/models", headers={"Authorization": "Bearer stolen"})
    await client.post("/v1/chat/completions", json={**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]})
    unknown, unauthenticated, too_big = audits.all()
    assert (unknown["status"], unknown["error_code"], unknown.get("model")) == (404, "model_not_found", None)
    assert unknown["tenant_id"] == "acme"
    assert (unauthenticated["status"], unauthenticated["error_code"]) == (401, "invalid_api_key")
    assert "tenant_id" not in unauthenticated
    assert (too_big["status"], too_big["error_code"]) == (413, "request_too_large")
    assert env.usage.records == []  # nothing named a model that exists: no usage counted
    assert env.model.calls == []


async def test_the_route_is_the_template_never_an_id_from_the_path(client: httpx.AsyncClient, audits: Audits) -> None:
    await client.get("/v1/sessions/sess_secretish")
    await client.get("/v1/not-a-route")
    found, unmatched = audits.all()
    assert found["route"] == "GET /v1/sessions/{session_id}" and found["status"] == 404
    assert unmatched["route"] == "GET (unmatched)"


async def test_a_failing_usage_store_never_fails_the_answer(
    client: httpx.AsyncClient, env: Env, audits: Audits
) -> None:
    def broken(record: AuditRecord) -> None:
        raise RuntimeError("DynamoDB is away")

    env.usage.add = broken  # type: ignore[method-assign]
    assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
    assert audits.one()["status"] == 200
    assert env.telemetry.counts["UsageErrors"] == 1


async def test_a_scope_inside_a_scope_adds_to_the_outer_record(audits: Audits) -> None:
    usage = RecordingUsage()
    auditor = Auditor(usage=usage)
    outer = auditor.request("job", request_id="job_1", principal=Principal("acme", "k"))
    async with outer, auditor.request("ws.chat", request_id="job_1") as inner:
        audit.note_model("deepseek-flash")
        assert inner.route == "job"
    assert [r["route"] for r in audits.all()] == ["job"]
    assert [r.model for r in usage.records] == ["deepseek-flash"]


async def test_a_handed_off_request_leaves_its_record_to_whoever_finishes_it(audits: Audits) -> None:
    auditor = Auditor()
    async with auditor.request("ws.chat"):
        audit.handed_off()
    assert audits.all() == []


async def test_concurrent_requests_keep_their_own_records(audits: Audits) -> None:
    auditor = Auditor()

    async def one(tenant: str) -> None:
        async with auditor.request("job", principal=Principal(tenant, "k")):
            await asyncio.sleep(0)
            audit.note_model(f"model-of-{tenant}")

    await asyncio.gather(*(one(f"t{i}") for i in range(20)))
    assert sorted((r["tenant_id"], r["model"]) for r in audits.all()) == sorted(
        (f"t{i}", f"model-of-t{i}") for i in range(20)
    )


# -- GET /v1/usage -----------------------------------------------------------------------------------


def _record(tenant: str, day: date, model: str = "deepseek-flash", **fields: Any) -> AuditRecord:
    started = datetime(day.year, day.month, day.day, 12, tzinfo=UTC).timestamp()
    return AuditRecord(route="job", request_id="r", started_at=started, tenant_id=tenant, model=model, **fields)


async def test_usage_is_the_callers_own_by_day_and_model_with_totals(client: httpx.AsyncClient, env: Env) -> None:
    today = datetime.now(UTC).date()
    yesterday = today - timedelta(days=1)
    env.usage.records += [
        _record("acme", yesterday, prompt_tokens=10, completion_tokens=5, estimated_cost_usd=0.001),
        _record("acme", today, prompt_tokens=20, completion_tokens=1, cache="hit"),
        _record("acme", today, model="deepseek-v4-pro", status=502, error_code="upstream_error"),
        _record("other", today, prompt_tokens=999),
    ]
    body = (await client.get("/v1/usage")).json()
    assert [(d["date"], d["model"], d["requests"]) for d in body["data"]] == [
        (yesterday.isoformat(), "deepseek-flash", 1),
        (today.isoformat(), "deepseek-flash", 1),
        (today.isoformat(), "deepseek-v4-pro", 1),
    ]
    assert body["total"] == {
        "requests": 3,
        "errors": 1,
        "cache_hits": 1,
        "prompt_tokens": 30,
        "completion_tokens": 6,
        "total_tokens": 36,
        "estimated_cost_usd": 0.001,
    }
    only_pro = (await client.get("/v1/usage", params={"model": "deepseek-v4-pro"})).json()
    assert [d["model"] for d in only_pro["data"]] == ["deepseek-v4-pro"]
    other = (await client.get("/v1/usage", headers={"Authorization": "Bearer key-other"})).json()
    assert other["total"]["prompt_tokens"] == 999 and other["total"]["requests"] == 1


@pytest.mark.parametrize(
    "params",
    [
        {"start_date": "2026-11-20", "end_date": "2026-11-01"},
        {"start_date": "2024-01-01", "end_date": "2026-01-01"},
        {"start_date": "yesterday"},
    ],
)
async def test_a_bad_usage_range_is_a_400_naming_the_param(client: httpx.AsyncClient, params: dict[str, str]) -> None:
    response = await client.get("/v1/usage", params=params)
    assert response.status_code == 400
    assert response.json()["error"]["param"] in ("start_date", "query.start_date")
