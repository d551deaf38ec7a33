"""WebSocket routes and the generator, with in-memory ports: the frame sequence a client sees."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import pytest

from seekless.audit import Auditor
from seekless.chat import ChatService
from seekless.config import Settings
from seekless.contracts import GenerationJob
from seekless.errors import UpstreamUnavailable
from seekless.limits import Reservation, refused
from seekless.models import KeyLimits, Principal
from seekless.ws.generator import Generator, StreamingOptions
from seekless.ws.service import WsService
from tests.fakes import (
    FakeCache,
    FakeChatModel,
    FakeConnections,
    FakeInvoker,
    FakeNotifier,
    FakeRequestLog,
    FakeSessions,
    RecordingUsage,
)

DEV = Principal(tenant_id="dev", key_id="k1")
OTHER = Principal(tenant_id="other", key_id="k2")


@pytest.fixture
def model() -> FakeChatModel:
    return FakeChatModel()


@pytest.fixture
def chat(model: FakeChatModel) -> ChatService:
    return ChatService(settings=Settings(), model=model, cache=FakeCache(), sessions=FakeSessions())


@pytest.fixture
def log() -> FakeRequestLog:
    return FakeRequestLog()


@pytest.fixture
def notifier() -> FakeNotifier:
    return FakeNotifier()


@pytest.fixture
def invoker() -> FakeInvoker:
    return FakeInvoker()


@pytest.fixture
def service(chat: ChatService, log: FakeRequestLog, notifier: FakeNotifier, invoker: FakeInvoker) -> WsService:
    return WsService(chat=chat, log=log, notifier=notifier, invoker=invoker)


@pytest.fixture
def connections() -> FakeConnections:
    return FakeConnections()


@pytest.fixture
def generator(
    chat: ChatService, log: FakeRequestLog, notifier: FakeNotifier, connections: FakeConnections
) -> Generator:
    options = StreamingOptions(resume_grace_seconds=0.3)
    return Generator(chat=chat, log=log, notifier=notifier, connections=connections, options=options)


def chat_message(**fields: Any) -> str:
    return json.dumps({"action": "chat", "request_id": "r1", "message": "hello", **fields})


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ("not json", "invalid_json"),
        ("[1, 2]", "invalid_json"),
        ("[" * 5000 + "]" * 5000, "invalid_json"),  # deeper than json.loads goes: was an internal_error
        ('{"action": "dance"}', "unknown_action"),
        ('{"action": "chat", "message": "hi"}', "invalid_request"),
        ('{"action": "chat", "request_id": "r 1", "message": "hi"}', "invalid_request"),
        ('{"action": "chat", "request_id": "r1"}', "invalid_request"),
        ('{"action": "chat", "request_id": "r1", "message": "hi", "model": "gpt-9"}', "model_not_found"),
        ('{"action": "chat", "request_id": "r1", "message": "hi", "max_tokens": 999999}', "invalid_value"),
        ('{"action": "resume", "request_id": "r1", "after_seq": -1}', "invalid_request"),
        ('{"action": "cancel", "request_id": "nope"}', "unknown_request"),
        ('{"action": "resume", "request_id": "nope", "after_seq": 0}', "unknown_request"),
        ('{"action": "chat", "request_id": "r1", "message": "' + "x" * 140_000 + '"}', "message_too_large"),
    ],
)
async def test_bad_input_gets_an_error_frame_and_nothing_is_started(
    service: WsService, notifier: FakeNotifier, invoker: FakeInvoker, log: FakeRequestLog, body: str, code: str
) -> None:
    await service.handle("c1", DEV, body)
    (sent,) = notifier.frames("c1")
    assert sent["type"] == "error" and sent["code"] == code and sent["message"]
    assert invoker.payloads == [] and log.meta == {}


async def test_an_input_limit_breach_names_its_param_in_the_error_frame(
    model: FakeChatModel, log: FakeRequestLog, notifier: FakeNotifier, invoker: FakeInvoker
) -> None:
    chat = ChatService(settings=Settings(max_message_chars=5), model=model, cache=FakeCache(), sessions=FakeSessions())
    service = WsService(chat=chat, log=log, notifier=notifier, invoker=invoker)
    await service.handle("c1", DEV, chat_message(message="too long"))
    (sent,) = notifier.frames("c1")
    assert {k: sent[k] for k in ("type", "request_id", "code", "param")} == {
        "type": "error",
        "request_id": "r1",
        "code": "string_above_max_length",
        "param": "messages.0.content",
    }
    assert "maximum length 5" in sent["message"]
    assert invoker.payloads == [] and log.meta == {} and model.calls == []


async def test_ping_answers_pong(service: WsService, notifier: FakeNotifier) -> None:
    await service.handle("c1", DEV, '{"action": "ping"}')
    assert notifier.frames("c1") == [{"type": "pong", "request_id": None, "seq": 0}]


async def test_chat_hands_a_generation_job_to_the_generator(service: WsService, invoker: FakeInvoker) -> None:
    await service.handle("c1", DEV, chat_message(model="deepseek-chat"))
    (payload,) = invoker.payloads
    job = GenerationJob.model_validate_json(payload)
    assert (job.job_id, job.tenant_id, job.connection_id, job.request.model) == ("r1", "dev", "c1", "deepseek-chat")
    assert job.request.messages[0].content == "hello"


async def test_a_request_id_cannot_be_reused(service: WsService, notifier: FakeNotifier, invoker: FakeInvoker) -> None:
    await service.handle("c1", DEV, chat_message())
    await service.handle("c1", DEV, chat_message())
    assert len(invoker.payloads) == 1
    assert notifier.frames("c1")[-1]["code"] == "duplicate_request"


async def test_another_tenant_cannot_cancel_or_resume(
    service: WsService, notifier: FakeNotifier, log: FakeRequestLog
) -> None:
    await service.handle("c1", DEV, chat_message())
    await service.handle("c2", OTHER, '{"action": "cancel", "request_id": "r1"}')
    await service.handle("c2", OTHER, '{"action": "resume", "request_id": "r1", "after_seq": 0}')
    assert [f["code"] for f in notifier.frames("c2")] == ["unknown_request", "unknown_request"]
    assert log.meta[("dev", "r1")]["cancel"] is False


def job(**fields: Any) -> GenerationJob:
    body = {"model": "deepseek-flash", "messages": [{"role": "user", "content": "one two three"}], "stream": True}
    return GenerationJob.model_validate(
        {"job_id": "r1", "tenant_id": "dev", "key_id": "k1", "request": body, "connection_id": "c1", **fields}
    )


async def test_generation_streams_start_deltas_and_exactly_one_done(
    generator: Generator, notifier: FakeNotifier, log: FakeRequestLog
) -> None:
    await log.claim("dev", "r1", "c1")
    await generator.run(job(), deadline=time.monotonic() + 5)
    frames = notifier.frames("c1")
    assert frames[0]["type"] == "start" and frames[-1]["cache"] == "bypass"
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
    assert [f["type"] for f in frames].count("done") == 1 and frames[-1]["type"] == "done"
    assert frames[-1]["finish_reason"] == "stop"
    deltas = [f for f in frames if f["type"] == "delta"]
    assert "".join(f.get("content", "") for f in deltas) == "echo: one two three"
    assert "".join(f.get("reasoning_content", "") for f in deltas) == "thinking..."
    assert len(log.frames[("dev", "r1")]) == len(frames)  # every frame is resumable


async def test_upstream_failure_ends_with_one_error_frame(
    generator: Generator, notifier: FakeNotifier, model: FakeChatModel, log: FakeRequestLog
) -> None:
    await log.claim("dev", "r1", "c1")
    model.fail_with = UpstreamUnavailable("DeepSeek is unavailable.")
    await generator.run(job(), deadline=time.monotonic() + 5)
    start, error = notifier.frames("c1")
    assert start["type"] == "start"
    assert error["type"] == "error" and error["code"] == "upstream_unavailable" and error["seq"] == 2


class Refusing:
    """A key's per-minute limiter with nothing left this minute."""

    async def admit(self, principal: Principal, *, tokens: int) -> Reservation | None:
        raise refused("rpm", limit=1, retry_after=30)

    async def settle(self, reservation: Reservation, *, used: int) -> None:
        return None


async def test_a_refusal_by_the_keys_limit_is_one_error_frame_and_the_generations_failure(
    model: FakeChatModel, log: FakeRequestLog, notifier: FakeNotifier, connections: FakeConnections
) -> None:
    chat = ChatService(
        settings=Settings(),
        model=model,
        cache=FakeCache(),
        sessions=FakeSessions(),
        limiter=Refusing(),
        limits_for=lambda key_id: KeyLimits(rpm=1),
    )
    generator = Generator(chat=chat, log=log, notifier=notifier, connections=connections)
    await log.claim("dev", "r1", "c1")
    emitter = await generator.run(job(), deadline=time.monotonic() + 5)
    error = notifier.frames("c1")[-1]
    assert error["type"] == "error" and error["code"] == "rate_limit_requests"
    # The worker records the same reason for a job streamed to a connection.
    assert emitter.failure is not None and emitter.failure.code == "rate_limit_requests"
    assert model.calls == []


async def test_cancel_stops_within_a_second_with_done_cancelled(
    generator: Generator, service: WsService, notifier: FakeNotifier, model: FakeChatModel, log: FakeRequestLog
) -> None:
    await log.claim("dev", "r1", "c1")
    model.delay = 30  # upstream never answers on its own
    running = asyncio.create_task(generator.run(job(), deadline=time.monotonic() + 60))
    await asyncio.sleep(0)
    started = time.monotonic()
    await service.handle("c1", DEV, '{"action": "cancel", "request_id": "r1"}')
    await asyncio.wait_for(running, timeout=2)
    assert time.monotonic() - started < 1.0
    frames = notifier.frames("c1")
    assert frames[-1]["type"] == "done" and frames[-1]["finish_reason"] == "cancelled"


async def test_gone_connection_is_deleted_and_generation_stops_without_resume(
    generator: Generator,
    notifier: FakeNotifier,
    connections: FakeConnections,
    model: FakeChatModel,
    log: FakeRequestLog,
) -> None:
    await log.claim("dev", "r1", "c1")
    notifier.gone.add("c1")
    model.delay = 30
    await asyncio.wait_for(generator.run(job(), deadline=time.monotonic() + 60), timeout=3)
    assert connections.deleted == ["c1"]
    assert json.loads(log.frames[("dev", "r1")][-1])["finish_reason"] == "cancelled"


async def test_resume_replays_after_seq_and_continues_on_the_new_connection(
    generator: Generator, service: WsService, notifier: FakeNotifier, model: FakeChatModel, log: FakeRequestLog
) -> None:
    await log.claim("dev", "r1", "c1")
    model.contents = ["a b c d e f"]
    model.delay = 0.2
    running = asyncio.create_task(generator.run(job(), deadline=time.monotonic() + 10))
    await service.handle("c2", DEV, '{"action": "resume", "request_id": "r1", "after_seq": 0}')
    await asyncio.wait_for(running, timeout=5)
    seen = {f["seq"]: f for f in notifier.frames("c2")}
    assert sorted(seen) == list(range(1, max(seen) + 1))  # nothing missing, duplicates collapse by seq
    assert seen[max(seen)]["type"] == "done"
    assert "".join(f.get("content", "") for f in seen.values() if f["type"] == "delta") == "a b c d e f"


# -- audit ---------------------------------------------------------------------------------------------


async def test_a_refused_frame_is_audited_here_and_a_started_chat_by_its_generator(
    chat: ChatService, log: FakeRequestLog, notifier: FakeNotifier, invoker: FakeInvoker, caplog: Any
) -> None:
    caplog.set_level(logging.INFO, logger="seekless.audit")
    usage = RecordingUsage()
    service = WsService(chat=chat, log=log, notifier=notifier, invoker=invoker, auditor=Auditor(usage=usage))
    await service.handle("c1", DEV, chat_message(request_id="r-refused", max_tokens=999_999))
    await service.handle("c1", DEV, '{"action": "cancel", "request_id": "nope"}')
    await service.handle("c1", DEV, '{"action": "ping"}')
    await service.handle("c1", DEV, chat_message(request_id="r-started"))
    audits = [r.audit for r in caplog.records if hasattr(r, "audit")]
    assert [(a["route"], a["request_id"], a["status"], a["error_code"]) for a in audits] == [
        ("ws.chat", "r-refused", 400, "invalid_value"),
        ("ws.cancel", "nope", 400, "unknown_request"),
    ]
    assert audits[0]["tenant_id"] == DEV.tenant_id and audits[0]["model"] == "deepseek-flash"
    assert [(r.model, r.status) for r in usage.records] == [("deepseek-flash", 400)]  # an error on its model
    assert len(invoker.payloads) == 1  # the started chat went on to the generator, which audits it


async def test_a_generation_is_one_audit_record_with_its_tokens_and_an_upstream_error_its_code(
    chat: ChatService,
    model: FakeChatModel,
    log: FakeRequestLog,
    notifier: FakeNotifier,
    connections: FakeConnections,
    caplog: Any,
) -> None:
    caplog.set_level(logging.INFO, logger="seekless.audit")
    generator = Generator(chat=chat, log=log, notifier=notifier, connections=connections, auditor=Auditor())
    await log.claim("dev", "r1", "c1")
    await generator.run(job(), deadline=time.monotonic() + 5)
    model.fail_with = UpstreamUnavailable("DeepSeek is unavailable.")
    await log.claim("dev", "r2", "c1")
    await generator.run(job(job_id="r2"), deadline=time.monotonic() + 5)
    ok, failed = [r.audit for r in caplog.records if hasattr(r, "audit")]
    assert (ok["route"], ok["request_id"], ok["status"], ok["model"], ok["prompt_tokens"]) == (
        "ws.chat",
        "r1",
        200,
        "deepseek-flash",
        10,
    )
    assert (failed["request_id"], failed["status"], failed["error_code"]) == ("r2", 503, "upstream_unavailable")


class UnreachableLog(FakeRequestLog):
    """The request log with Redis down: every call fails as redis-py fails on a refused connection."""

    async def claim(self, tenant_id: str, request_id: str, connection_id: str) -> bool:
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")


async def test_a_chat_still_streams_when_the_request_log_is_down(
    chat: ChatService, notifier: FakeNotifier, invoker: FakeInvoker, caplog: pytest.LogCaptureFixture
) -> None:
    service = WsService(chat=chat, log=UnreachableLog(), notifier=notifier, invoker=invoker)
    await service.handle("c1", DEV, chat_message())
    assert notifier.frames("c1") == []  # no error: the generator streams it (without resume)
    (payload,) = invoker.payloads
    assert GenerationJob.model_validate_json(payload).job_id == "r1"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


class BrokenInvoker(FakeInvoker):
    def invoke_async(self, payload: bytes) -> None:
        raise RuntimeError("the Lambda service is unreachable")


async def test_a_chat_the_route_fails_to_start_ends_with_one_error_frame_naming_it(
    chat: ChatService, log: FakeRequestLog, notifier: FakeNotifier
) -> None:
    service = WsService(chat=chat, log=log, notifier=notifier, invoker=BrokenInvoker())
    await service.handle("c1", DEV, chat_message())
    (sent,) = notifier.frames("c1")
    assert (sent["type"], sent["request_id"], sent["code"]) == ("error", "r1", "internal_error")


class ForgetfulLog(FakeRequestLog):
    """A request log that loses every request after its first frame, as Redis restarted empty does."""

    async def push(
        self, tenant_id: str, request_id: str, frame: bytes, *, connection_id: str | None = None
    ) -> tuple[str | None, bool]:
        answer = await super().push(tenant_id, request_id, frame, connection_id=connection_id)
        self.meta.clear()
        self.frames.clear()
        return answer


async def test_a_request_the_log_loses_mid_stream_still_reaches_its_client(
    chat: ChatService, notifier: FakeNotifier, connections: FakeConnections
) -> None:
    log = ForgetfulLog()
    await log.claim("dev", "r1", "c1")
    generator = Generator(chat=chat, log=log, notifier=notifier, connections=connections)
    await generator.run(job(), deadline=time.monotonic() + 5)
    types = [f["type"] for f in notifier.frames("c1")]
    assert types[0] == "start" and types.count("done") == 1 and types[-1] == "done"
    assert "delta" in types
