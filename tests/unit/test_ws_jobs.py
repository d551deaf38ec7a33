"""WebSocket chats as jobs, with in-memory ports: the routing decision, the ``queued`` frame, the job
message, cancel of a queued job, and the worker-side log that maps a job's frames to the request."""

from __future__ import annotations

import json
from typing import Any

import pytest

from seekless.chat import ChatService
from seekless.config import Settings
from seekless.contracts import ChatCompletionRequest, GenerationJob
from seekless.jobs import Job, JobStatus
from seekless.models import Principal
from seekless.ws.frames import ChatAction, encode, frame
from seekless.ws.service import JobFrameLog, WsService
from tests.fakes import FakeCache, FakeChatModel, FakeInvoker, FakeNotifier, FakeRequestLog, FakeSessions

DEV = Principal(tenant_id="dev", key_id="k1")


class FakeAliases:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, str], str] = {}
        self.jobs: dict[tuple[str, str], str] = {}

    async def link(self, tenant_id: str, job_id: str, request_id: str) -> None:
        self.requests[(tenant_id, job_id)] = request_id
        self.jobs[(tenant_id, request_id)] = job_id

    async def request_for(self, tenant_id: str, job_id: str) -> str | None:
        return self.requests.get((tenant_id, job_id))

    async def job_for(self, tenant_id: str, request_id: str) -> str | None:
        return self.jobs.get((tenant_id, request_id))


class FakeJobStore:
    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}

    def mark_sent(self, tenant_id: str, job_id: str) -> None:
        pass

    def unsent(self, *, created_before: float, limit: int = 100) -> list[Job]:
        return []

    def create(
        self, tenant_id: str, *, key_id: str, request: ChatCompletionRequest, session_id: str | None, idempotency: Any
    ) -> tuple[Job, bool]:
        job = Job(
            id=f"job_{len(self.jobs) + 1}",
            tenant_id=tenant_id,
            status=JobStatus.QUEUED,
            model=request.model,
            created_at=1,
            updated_at=1,
            key_id=key_id,
            request=request,
            session_id=session_id,
        )
        self.jobs[job.id] = job
        return job, True

    def get(self, tenant_id: str, job_id: str) -> Job:
        return self.jobs[job_id]

    def cancel(self, tenant_id: str, job_id: str) -> Job:
        from dataclasses import replace

        self.jobs[job_id] = replace(self.jobs[job_id], status=JobStatus.CANCELLED)
        return self.jobs[job_id]

    def fail(self, tenant_id: str, job_id: str, error: dict[str, Any], *, owner: str | None) -> Job:
        from dataclasses import replace

        self.jobs[job_id] = replace(self.jobs[job_id], status=JobStatus.FAILED, error=error)
        return self.jobs[job_id]


class FakeQueue:
    def __init__(self) -> None:
        self.messages: list[GenerationJob] = []
        self.broken = False

    def enqueue(self, job: GenerationJob) -> None:
        if self.broken:
            raise RuntimeError("sqs down")
        self.messages.append(job)


@pytest.fixture
def parts() -> dict[str, Any]:
    return {
        "log": FakeRequestLog(),
        "notifier": FakeNotifier(),
        "invoker": FakeInvoker(),
        "store": FakeJobStore(),
        "queue": FakeQueue(),
        "aliases": FakeAliases(),
    }


def service(parts: dict[str, Any], *, jobs: bool = True) -> WsService:
    chat = ChatService(settings=Settings(), model=FakeChatModel(), cache=FakeCache(), sessions=FakeSessions())
    extra: dict[str, Any] = (
        {"job_store": parts["store"], "job_queue": parts["queue"], "aliases": parts["aliases"]} if jobs else {}
    )
    return WsService(
        chat=chat,
        log=parts["log"],
        notifier=parts["notifier"],
        invoker=parts["invoker"],
        job_min_max_tokens=1000,
        **extra,
    )


def chat_body(**fields: Any) -> str:
    return json.dumps({"action": "chat", "request_id": "r1", "message": "hello", **fields})


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, False),
        ({"mode": "job"}, True),
        ({"mode": "stream", "max_tokens": 5000}, False),
        ({"max_tokens": 999}, False),
        ({"max_tokens": 1000}, True),
        ({"reasoning_effort": "high"}, False),
        ({"reasoning_effort": "max"}, True),
    ],
)
def test_routing_decision(fields: dict[str, Any], expected: bool) -> None:
    action = ChatAction.model_validate(json.loads(chat_body(**fields)))
    assert action.runs_as_job(action.completion_request(), min_max_tokens=1000) is expected


def test_mode_is_not_part_of_the_completion_request() -> None:
    action = ChatAction.model_validate(json.loads(chat_body(mode="job")))
    assert "mode" not in action.completion_request().model_dump(exclude_none=True)


async def test_a_job_chat_is_queued_with_its_connection_and_a_queued_frame(parts: dict[str, Any]) -> None:
    await service(parts).handle("c1", DEV, chat_body(mode="job", session_id=None))
    assert parts["invoker"].payloads == []
    [message] = parts["queue"].messages
    assert message.connection_id == "c1" and message.job_id == "job_1"
    assert parts["notifier"].frames("c1") == [{"type": "queued", "request_id": "r1", "seq": 1, "job_id": "job_1"}]
    assert parts["log"].frames[("dev", "r1")] == [encode(parts["notifier"].frames("c1")[0])]
    assert parts["aliases"].jobs[("dev", "r1")] == "job_1"


async def test_the_threshold_without_jobs_streams_as_before(parts: dict[str, Any]) -> None:
    await service(parts, jobs=False).handle("c1", DEV, chat_body(max_tokens=5000))
    assert len(parts["invoker"].payloads) == 1 and parts["queue"].messages == []


async def test_mode_job_without_jobs_is_an_error_frame(parts: dict[str, Any]) -> None:
    await service(parts, jobs=False).handle("c1", DEV, chat_body(mode="job"))
    [error] = parts["notifier"].frames("c1")
    assert error["type"] == "error" and error["code"] == "jobs_unavailable" and error["request_id"] == "r1"
    assert parts["invoker"].payloads == [] and parts["log"].frames == {}


async def test_a_failed_enqueue_ends_the_request_with_an_error_after_queued(parts: dict[str, Any]) -> None:
    parts["queue"].broken = True
    await service(parts).handle("c1", DEV, chat_body(mode="job"))
    queued, error = parts["notifier"].frames("c1")
    assert queued["type"] == "queued" and (error["type"], error["seq"]) == ("error", 2)
    assert error["code"] == "job_enqueue_failed" and parts["store"].jobs["job_1"].status is JobStatus.FAILED


async def test_cancelling_a_queued_job_cancels_it_and_ends_the_stream(parts: dict[str, Any]) -> None:
    ws = service(parts)
    await ws.handle("c1", DEV, chat_body(mode="job"))
    await ws.handle("c1", DEV, json.dumps({"action": "cancel", "request_id": "r1"}))
    assert parts["store"].jobs["job_1"].status is JobStatus.CANCELLED
    done = parts["notifier"].frames("c1")[-1]
    assert (done["type"], done["seq"], done["finish_reason"]) == ("done", 2, "cancelled")


async def test_cancelling_a_running_job_only_raises_the_flag(parts: dict[str, Any]) -> None:
    from dataclasses import replace

    ws = service(parts)
    await ws.handle("c1", DEV, chat_body(mode="job"))
    parts["store"].jobs["job_1"] = replace(parts["store"].jobs["job_1"], status=JobStatus.RUNNING)
    await ws.handle("c1", DEV, json.dumps({"action": "cancel", "request_id": "r1"}))
    assert parts["log"].meta[("dev", "r1")]["cancel"] is True
    assert parts["store"].jobs["job_1"].status is JobStatus.RUNNING  # the worker ends it
    assert [f["type"] for f in parts["notifier"].frames("c1")] == ["queued"]


async def test_job_frame_log_writes_the_workers_frames_under_the_request(parts: dict[str, Any]) -> None:
    log, aliases, notifier = parts["log"], parts["aliases"], parts["notifier"]
    await log.claim("dev", "r1", "c1")
    await aliases.link("dev", "job_1", "r1")
    jobs_log = JobFrameLog(log, aliases, notifier)  # type: ignore[arg-type]
    assert await jobs_log.claim("dev", "job_1", "c1") is False  # the route claimed it already
    target, cancelled = await jobs_log.push("dev", "job_1", encode(frame("start", "job_1", 1, model="m")))
    assert (target, cancelled) == (None, False)  # posted by the log itself
    assert notifier.frames("c1") == [{"type": "start", "request_id": "r1", "seq": 2, "model": "m"}]
    assert json.loads(log.frames[("dev", "r1")][0])["seq"] == 2
    await log.cancel("dev", "r1")
    assert (await jobs_log.state("dev", "job_1"))[1] is True


async def test_job_frame_log_passes_unaliased_jobs_through(parts: dict[str, Any]) -> None:
    jobs_log = JobFrameLog(parts["log"], parts["aliases"], parts["notifier"])  # type: ignore[arg-type]
    assert await jobs_log.claim("dev", "job_9", "c9") is True
    data = encode(frame("start", "job_9", 1))
    assert await jobs_log.push("dev", "job_9", data) == ("c9", False)
    assert parts["log"].frames[("dev", "job_9")] == [data]
