"""The chat service: request normalisation, cache modes, sessions, and what is (not) stored."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from seekless.chat import ChatService, estimated_cost_usd, replay
from seekless.config import ModelSpec, Settings
from seekless.contracts import ChatCompletionRequest, StreamDelta, StreamEnd, Usage
from seekless.errors import InvalidRequest, NotFound, UpstreamUnavailable
from seekless.models import Principal
from seekless.telemetry import RecordingTelemetry
from tests.fakes import FakeCache, FakeChatModel, FakeSessions

DEV = Principal(tenant_id="dev", key_id="k1")
OTHER = Principal(tenant_id="other", key_id="k2")


def request(**fields: Any) -> ChatCompletionRequest:
    body: dict[str, Any] = {"model": "deepseek-flash", "messages": [{"role": "user", "content": "hello"}]}
    body.update(fields)
    return ChatCompletionRequest.model_validate(body)


@pytest.fixture
def model() -> FakeChatModel:
    return FakeChatModel()


@pytest.fixture
def cache() -> FakeCache:
    return FakeCache()


@pytest.fixture
def sessions() -> FakeSessions:
    return FakeSessions()


@pytest.fixture
def telemetry() -> RecordingTelemetry:
    return RecordingTelemetry()


@pytest.fixture
def service(
    model: FakeChatModel, cache: FakeCache, sessions: FakeSessions, telemetry: RecordingTelemetry
) -> ChatService:
    return ChatService(settings=Settings(), model=model, cache=cache, sessions=sessions, telemetry=telemetry)


def prepare(service: ChatService, req: ChatCompletionRequest, principal: Principal = DEV, **kw: Any) -> Any:
    headers = kw.pop("headers", {})
    return service.prepare(req, principal, headers=headers, deadline=time.monotonic() + 5, **kw)


def test_upstream_body_carries_capped_max_tokens_thinking_and_hashed_tenant(service: ChatService) -> None:
    body = prepare(service, request()).body
    assert body["max_tokens"] == Settings().default_max_tokens
    assert body["thinking"] == {"type": "enabled"}
    assert body["user_id"].startswith("t_") and "dev" not in body["user_id"]
    assert len(body["user_id"]) <= 512


@pytest.mark.parametrize(("alias", "thinking"), [("deepseek-chat", "disabled"), ("deepseek-reasoner", "enabled")])
def test_retired_names_are_aliases_of_flash(service: ChatService, alias: str, thinking: str) -> None:
    body = prepare(
        service, request(model=alias, thinking={"type": "enabled" if thinking == "disabled" else "disabled"})
    ).body
    assert body["model"] == "deepseek-flash"
    assert body["thinking"] == {"type": thinking}


def test_unknown_model_is_not_found(service: ChatService, model: FakeChatModel) -> None:
    with pytest.raises(NotFound) as caught:
        prepare(service, request(model="gpt-4"))
    assert caught.value.param == "model" and caught.value.code == "model_not_found"
    assert model.calls == []


def test_max_tokens_over_the_cap_is_refused(service: ChatService) -> None:
    with pytest.raises(InvalidRequest) as caught:
        prepare(service, request(max_tokens=Settings().max_tokens_cap + 1))
    assert caught.value.param == "max_tokens" and caught.value.status == 400


def test_input_limits_are_checked_before_the_session_is_read(model: FakeChatModel) -> None:
    sessions = FakeSessions()  # holds no session: reading one would be a NotFound
    service = ChatService(settings=Settings(max_message_chars=5), model=model, cache=None, sessions=sessions)
    with pytest.raises(InvalidRequest) as caught:
        prepare(service, request(messages=[{"role": "user", "content": "too long"}]), session_id="sess_missing")
    assert (caught.value.param, caught.value.code) == ("messages.0.content", "string_above_max_length")


def test_session_history_counts_towards_the_context_window(model: FakeChatModel, sessions: FakeSessions) -> None:
    small = ModelSpec(upstream="deepseek-flash", context_tokens=1_000)
    service = ChatService(
        settings=Settings(models={"deepseek-flash": small}), model=model, cache=None, sessions=sessions
    )
    session = sessions.create("dev", title=None, metadata={})
    sessions.append(
        "dev", session.id, [{"role": "user", "content": "x" * 3_800}, {"role": "assistant", "content": "ok"}]
    )
    prepare(service, request(max_tokens=100))

    with pytest.raises(InvalidRequest) as caught:
        prepare(service, request(max_tokens=100), session_id=session.id)
    assert (caught.value.param, caught.value.code) == ("messages", "context_length_exceeded")


def test_json_mode_without_the_word_json_is_refused(service: ChatService) -> None:
    with pytest.raises(InvalidRequest):
        prepare(service, request(response_format={"type": "json_object"}))
    prepare(
        service,
        request(response_format={"type": "json_object"}, messages=[{"role": "user", "content": "Reply in JSON"}]),
    )


def test_reasoning_goes_back_upstream_only_after_tool_calls(service: ChatService) -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a", "reasoning_content": "r1"},
        {"role": "user", "content": "q2"},
        {"role": "assistant", "content": None, "tool_calls": [call], "reasoning_content": "r2"},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]
    sent = prepare(service, request(messages=messages)).body["messages"]
    assert "reasoning_content" not in sent[1]
    assert sent[3]["reasoning_content"] == "r2"


async def test_deterministic_request_is_a_miss_then_a_hit(service: ChatService, model: FakeChatModel) -> None:
    first = await service.complete(prepare(service, request(temperature=0)))
    second = await service.complete(prepare(service, request(temperature=0)))
    assert (first.cache, second.cache) == ("miss", "hit")
    assert second.result.content == first.result.content
    assert len(model.calls) == 1


async def test_sampled_request_bypasses_the_cache(service: ChatService, model: FakeChatModel) -> None:
    answers = [await service.complete(prepare(service, request(temperature=0.7))) for _ in range(2)]
    assert [a.cache for a in answers] == ["bypass", "bypass"]
    assert len(model.calls) == 2


async def test_no_cache_header_refreshes_and_no_store_bypasses(service: ChatService, model: FakeChatModel) -> None:
    await service.complete(prepare(service, request(temperature=0)))
    refreshed = await service.complete(prepare(service, request(temperature=0), headers={"cache-control": "no-cache"}))
    bypassed = await service.complete(prepare(service, request(temperature=0), headers={"cache-control": "no-store"}))
    assert (refreshed.cache, bypassed.cache) == ("miss", "bypass")
    assert len(model.calls) == 3


async def test_tenants_never_share_cached_answers(service: ChatService, model: FakeChatModel) -> None:
    await service.complete(prepare(service, request(temperature=0), DEV))
    other = await service.complete(prepare(service, request(temperature=0), OTHER))
    assert other.cache == "miss" and len(model.calls) == 2


async def test_upstream_error_is_not_cached_and_releases_the_lease(
    service: ChatService, model: FakeChatModel, cache: FakeCache, telemetry: RecordingTelemetry
) -> None:
    model.fail_with = UpstreamUnavailable("down")
    with pytest.raises(UpstreamUnavailable):
        await service.complete(prepare(service, request(temperature=0)))
    assert cache.items == {} and cache.leases == {}
    assert telemetry.counts["UpstreamErrors"] == 1
    model.fail_with = None
    assert (await service.complete(prepare(service, request(temperature=0)))).cache == "miss"


async def test_blank_json_mode_answer_is_asked_again(service: ChatService, model: FakeChatModel) -> None:
    model.contents = ["", '{"ok": true}']
    req = request(response_format={"type": "json_object"}, messages=[{"role": "user", "content": "json please"}])
    answer = await service.complete(prepare(service, req))
    assert answer.result.content == '{"ok": true}' and len(model.calls) == 2


async def test_a_caller_that_judges_answers_gets_a_blank_one_back_and_nothing_it_refuses_is_cached(
    service: ChatService, model: FakeChatModel, cache: FakeCache
) -> None:
    model.contents = ["", "not json", '{"ok": true}']
    req = request(
        temperature=0, response_format={"type": "json_object"}, messages=[{"role": "user", "content": "json please"}]
    )
    chat = prepare(service, req)

    def accept(result: Any) -> bool:
        return result.content.startswith("{")

    contents = [(await service.complete(chat, accept=accept)).result.content for _ in range(3)]
    assert contents == ["", "not json", '{"ok": true}'] and len(model.calls) == 3  # one upstream call each
    assert [result.content for result in cache.items.values()] == ['{"ok": true}'] and cache.leases == {}
    assert (await service.complete(chat, accept=accept)).cache == "hit"


async def test_identical_concurrent_misses_make_one_upstream_call(service: ChatService, model: FakeChatModel) -> None:
    model.delay = 0.05
    answers = await asyncio.gather(*(service.complete(prepare(service, request(temperature=0))) for _ in range(6)))
    assert len(model.calls) == 1
    assert sorted(a.cache for a in answers) == ["hit"] * 5 + ["miss"]


async def test_stream_relays_deltas_and_stores_the_whole_answer(
    service: ChatService, model: FakeChatModel, cache: FakeCache
) -> None:
    stream = await service.stream(prepare(service, request(temperature=0, stream=True)))
    events = [event async for event in stream.events]
    assert isinstance(events[0], StreamDelta) and events[0].reasoning_content == "thinking..."
    assert "".join(e.content or "" for e in events if isinstance(e, StreamDelta)) == "echo: hello"
    assert isinstance(events[-1], StreamEnd) and events[-1].id == stream.id
    (stored,) = cache.items.values()
    assert stored.content == "echo: hello" and stored.reasoning_content == "thinking..."


async def test_interrupted_stream_stores_nothing(
    service: ChatService, model: FakeChatModel, cache: FakeCache, sessions: FakeSessions
) -> None:
    session = sessions.create("dev", title=None, metadata={})
    model.fail_with, model.fail_after_deltas = UpstreamUnavailable("reset"), 1
    stream = await service.stream(prepare(service, request(temperature=0, stream=True, session_id=session.id)))
    with pytest.raises(UpstreamUnavailable):
        _ = [event async for event in stream.events]
    assert cache.items == {} and cache.leases == {}
    assert sessions.stored[("dev", session.id)] == []


async def test_error_before_the_first_event_raises_from_stream(service: ChatService, model: FakeChatModel) -> None:
    model.fail_with = UpstreamUnavailable("down")
    with pytest.raises(UpstreamUnavailable):
        await service.stream(prepare(service, request(stream=True)))


async def test_cached_answer_replays_as_stream(service: ChatService, model: FakeChatModel) -> None:
    await service.complete(prepare(service, request(temperature=0)))
    stream = await service.stream(prepare(service, request(temperature=0, stream=True)))
    events = [event async for event in stream.events]
    assert stream.cache == "hit" and len(model.calls) == 1
    assert "".join(e.content or "" for e in events if isinstance(e, StreamDelta)) == "echo: hello"
    assert isinstance(events[-1], StreamEnd) and events[-1].finish_reason == "stop"


async def test_session_turn_sends_history_and_appends_both_messages(
    service: ChatService, model: FakeChatModel, sessions: FakeSessions
) -> None:
    session = sessions.create("dev", title=None, metadata={})
    await service.complete(prepare(service, request(session_id=session.id)))
    await service.complete(
        prepare(service, request(messages=[{"role": "user", "content": "again"}]), session_id=session.id)
    )
    sent = model.calls[-1]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[1]["content"] == "echo: hello"
    stored = sessions.stored[("dev", session.id)]
    assert [(m.role, m.content) for m in stored][-2:] == [("user", "again"), ("assistant", "echo: again")]


async def test_another_tenants_session_is_not_found(
    service: ChatService, sessions: FakeSessions, model: FakeChatModel
) -> None:
    session = sessions.create("dev", title=None, metadata={})
    with pytest.raises(NotFound):
        prepare(service, request(session_id=session.id), OTHER)
    assert model.calls == []


async def test_cache_hit_still_appends_to_the_session(service: ChatService, sessions: FakeSessions) -> None:
    await service.complete(prepare(service, request(temperature=0)))
    session = sessions.create("dev", title=None, metadata={})
    answer = await service.complete(prepare(service, request(temperature=0, session_id=session.id)))
    # With history empty the upstream body equals the first request's, so it is a hit.
    assert answer.cache == "hit"
    assert len(sessions.stored[("dev", session.id)]) == 2


async def test_replay_splits_reasoning_then_content() -> None:
    from seekless.contracts import ChatResult

    result = ChatResult(id="x", model="m", content="c" * 100, reasoning_content="r" * 70)
    events = [e async for e in replay(result, piece=64)]
    kinds = [
        "r" if isinstance(e, StreamDelta) and e.reasoning_content else "c" if isinstance(e, StreamDelta) else "end"
        for e in events
    ]
    assert kinds == ["r", "r", "c", "c", "end"]


def test_cost_estimate_prices_cache_hits_apart() -> None:
    spec = Settings().models["deepseek-flash"]
    usage = Usage(
        prompt_tokens=1_000_000,
        completion_tokens=1_000_000,
        prompt_cache_hit_tokens=500_000,
        prompt_cache_miss_tokens=500_000,
    )
    expected = 0.5 * spec.price_input_cache_hit + 0.5 * spec.price_input_cache_miss + spec.price_output
    assert estimated_cost_usd(spec, usage) == pytest.approx(expected)
