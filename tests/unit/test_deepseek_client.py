"""The DeepSeek adapter against httpx.MockTransport: what callers see for each upstream behaviour."""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest

from seekless.adapters.deepseek import DeepSeekClient, parse_retry_after
from seekless.config import Settings
from seekless.contracts import ChatResult, StreamDelta, StreamEnd, StreamEvent, Usage
from seekless.errors import (
    RateLimited,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)

KEY = "sk-test-0123456789abcdef"
BASE_URL = "https://api.deepseek.test"
BODY: dict[str, Any] = {"model": "deepseek-flash", "messages": [{"role": "user", "content": "hi"}]}

Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


# -- upstream shapes --------------------------------------------------------------------------------


def chunk(
    *,
    content: str | None = None,
    reasoning: str | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
    finish: str | None = None,
    usage: dict[str, Any] | None = None,
    choices: bool = True,
) -> dict[str, Any]:
    delta: dict[str, Any] = {}
    if content is not None:
        delta["content"] = content
    if reasoning is not None:
        delta["reasoning_content"] = reasoning
    if tool_calls is not None:
        delta["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-42",
        "object": "chat.completion.chunk",
        "created": 1_760_000_000,
        "model": "deepseek-flash",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if choices else [],
        "usage": usage,
    }


def sse(*events: dict[str, Any], done: bool = True) -> bytes:
    body = b"".join(b"data: " + json.dumps(event, ensure_ascii=False).encode() + b"\n\n" for event in events)
    return body + (b"data: [DONE]\n\n" if done else b"")


WIRE_USAGE = {
    "prompt_tokens": 11,
    "completion_tokens": 7,
    "total_tokens": 18,
    "prompt_cache_hit_tokens": 8,
    "prompt_cache_miss_tokens": 3,
    "completion_tokens_details": {"reasoning_tokens": 4},
}

COMPLETION = {
    "id": "chatcmpl-7",
    "object": "chat.completion",
    "created": 1_760_000_000,
    "model": "deepseek-flash",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello!", "reasoning_content": "Greet back."},
            "finish_reason": "stop",
        }
    ],
    "usage": WIRE_USAGE,
}


async def pieces(*parts: bytes, then: BaseException | None = None) -> AsyncIterator[bytes]:
    for part in parts:
        await asyncio.sleep(0)
        yield part
    if then is not None:
        raise then


def ok_json(data: dict[str, Any] = COMPLETION) -> httpx.Response:
    return httpx.Response(200, json=data)


def ok_stream(body: bytes) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=pieces(body))


def error(status: int, message: str = "boom", headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers, json={"error": {"message": message, "type": "x", "code": None}})


# -- harness ----------------------------------------------------------------------------------------


class Upstream:
    """A scripted DeepSeek: answers requests from a list of responses (or exceptions) in order."""

    def __init__(self, *script: httpx.Response | BaseException | Handler) -> None:
        self.script = list(script)
        self.requests: list[httpx.Request] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, httpx.Response):
            return step
        return await step(request)

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(request.content) for request in self.requests]


class FakeBreaker:
    def __init__(self, *, allowed: bool = True, cooldown_remaining: float | None = None) -> None:
        self.allowed = allowed
        self.cooldown_remaining = cooldown_remaining
        self.calls: list[str] = []

    async def allow(self) -> bool:
        self.calls.append("allow")
        return self.allowed

    async def record_success(self) -> None:
        self.calls.append("success")

    async def record_failure(self) -> None:
        self.calls.append("failure")


class Harness:
    def __init__(self) -> None:
        self.delays: list[float] = []
        self.key_fetches: list[bool] = []
        self._http: list[httpx.AsyncClient] = []

    async def sleep(self, delay: float) -> None:
        self.delays.append(delay)

    def client(self, upstream: Upstream, **kwargs: Any) -> DeepSeekClient:
        http = httpx.AsyncClient(transport=httpx.MockTransport(upstream))
        self._http.append(http)

        def api_key(force: bool) -> str:
            self.key_fetches.append(force)
            return KEY + "-rotated" if force else KEY

        kwargs.setdefault("api_key", api_key)
        kwargs.setdefault("rng", random.Random(1234))
        kwargs.setdefault("sleep", self.sleep)
        kwargs.setdefault("retry_attempts", 3)
        kwargs.setdefault("retry_base_delay", 0.2)
        kwargs.setdefault("retry_max_delay", 4.0)
        return DeepSeekClient(base_url=BASE_URL, http_client=http, **kwargs)

    async def aclose(self) -> None:
        for http in self._http:
            await http.aclose()


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    h = Harness()
    yield h
    await h.aclose()


def later(seconds: float = 30.0) -> float:
    return time.monotonic() + seconds


async def collect(events: AsyncIterator[StreamEvent]) -> list[StreamEvent]:
    return [event async for event in events]


@pytest.fixture
def no_retry_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.WARNING, logger="seekless.deepseek")
    yield caplog


# -- non-streamed -----------------------------------------------------------------------------------


async def test_complete_posts_the_body_with_bearer_auth_and_parses_the_result(harness: Harness) -> None:
    upstream = Upstream(ok_json())
    client = harness.client(upstream)

    result = await client.complete({**BODY, "stream": True}, deadline=later())

    assert result == ChatResult(
        id="chatcmpl-7",
        model="deepseek-flash",
        content="Hello!",
        reasoning_content="Greet back.",
        finish_reason="stop",
        usage=Usage(
            prompt_tokens=11,
            completion_tokens=7,
            prompt_cache_hit_tokens=8,
            prompt_cache_miss_tokens=3,
            reasoning_tokens=4,
        ),
        created=1_760_000_000,
    )
    (request,) = upstream.requests
    assert request.method == "POST"
    assert str(request.url) == f"{BASE_URL}/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert upstream.bodies() == [{**BODY, "stream": False}]


async def test_complete_skips_the_blank_keep_alive_lines_before_the_body(harness: Harness) -> None:
    body = b"\n\n\n" + json.dumps(COMPLETION).encode()
    upstream = Upstream(httpx.Response(200, content=pieces(b"\n", b"\n\n", body)))

    result = await harness.client(upstream).complete(BODY, deadline=later())

    assert result.content == "Hello!"


async def test_complete_returns_tool_calls(harness: Harness) -> None:
    calls = [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    data = json.loads(json.dumps(COMPLETION))
    data["choices"][0]["message"] = {"role": "assistant", "content": None, "tool_calls": calls}
    data["choices"][0]["finish_reason"] = "tool_calls"

    result = await harness.client(Upstream(ok_json(data))).complete(BODY, deadline=later())

    assert (result.content, result.tool_calls, result.finish_reason) == ("", calls, "tool_calls")


async def test_a_body_that_is_not_json_is_upstream_malformed(harness: Harness) -> None:
    upstream = Upstream(httpx.Response(200, content=b"<html>oops</html>"))
    with pytest.raises(UpstreamError) as caught:
        await harness.client(upstream).complete(BODY, deadline=later())
    assert caught.value.code == "upstream_malformed"


# -- streamed ---------------------------------------------------------------------------------------


async def test_stream_yields_reasoning_apart_from_content_and_ends_once(harness: Harness) -> None:
    body = sse(
        chunk(content=""),  # the role-only opening chunk carries nothing
        chunk(reasoning="Think"),
        chunk(reasoning="ing."),
        chunk(content="Hel"),
        chunk(content="lo", finish="stop", usage=WIRE_USAGE),
    )
    upstream = Upstream(ok_stream(b": keep-alive\n\n" + body))

    events = await collect(harness.client(upstream).stream(BODY, deadline=later()))

    assert events == [
        StreamDelta(reasoning_content="Think"),
        StreamDelta(reasoning_content="ing."),
        StreamDelta(content="Hel"),
        StreamDelta(content="lo"),
        StreamEnd(id="chatcmpl-42", model="deepseek-flash", finish_reason="stop", usage=Usage.from_wire(WIRE_USAGE)),
    ]
    assert upstream.bodies() == [{**BODY, "stream": True}]


@pytest.mark.parametrize("where", ["last content chunk", "separate empty-choices chunk"])
async def test_stream_reads_usage_from_whichever_chunk_carries_it(harness: Harness, where: str) -> None:
    if where == "last content chunk":
        body = sse(chunk(content="Hi", finish="stop", usage=WIRE_USAGE))
    else:
        body = sse(chunk(content="Hi", finish="stop"), chunk(choices=False, usage=WIRE_USAGE))

    events = await collect(harness.client(Upstream(ok_stream(body))).stream(BODY, deadline=later()))

    assert events[-1] == StreamEnd(
        id="chatcmpl-42", model="deepseek-flash", finish_reason="stop", usage=Usage.from_wire(WIRE_USAGE)
    )
    assert sum(isinstance(event, StreamEnd) for event in events) == 1


async def test_stream_passes_tool_call_fragments_through(harness: Harness) -> None:
    first = [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_", "arguments": ""}}]
    second = [{"index": 0, "function": {"name": "weather", "arguments": '{"city":'}}]
    third = [{"index": 0, "function": {"arguments": '"Paris"}'}}]
    body = sse(chunk(tool_calls=first), chunk(tool_calls=second), chunk(tool_calls=third, finish="tool_calls"))

    events = await collect(harness.client(Upstream(ok_stream(body))).stream(BODY, deadline=later()))

    assert events[:3] == [StreamDelta(tool_calls=first), StreamDelta(tool_calls=second), StreamDelta(tool_calls=third)]
    assert isinstance(events[3], StreamEnd) and events[3].finish_reason == "tool_calls"


async def test_a_stream_split_mid_character_decodes_intact(harness: Harness) -> None:
    body = sse(chunk(content="\u4e16\u754c\U0001f30d", finish="stop"))
    split = body.index("\u754c".encode()) + 1
    upstream = Upstream(httpx.Response(200, content=pieces(body[:split], body[split:])))

    events = await collect(harness.client(upstream).stream(BODY, deadline=later()))

    assert events[0] == StreamDelta(content="\u4e16\u754c\U0001f30d")


async def test_a_stream_with_finish_reason_but_no_done_ends_normally(harness: Harness) -> None:
    body = sse(chunk(content="Hi", finish="length"), done=False)

    events = await collect(harness.client(Upstream(ok_stream(body))).stream(BODY, deadline=later()))

    assert isinstance(events[-1], StreamEnd) and events[-1].finish_reason == "length"


async def test_an_invalid_json_event_is_upstream_malformed(harness: Harness) -> None:
    upstream = Upstream(ok_stream(b"data: {nope\n\n"))
    with pytest.raises(UpstreamError) as caught:
        await collect(harness.client(upstream).stream(BODY, deadline=later()))
    assert caught.value.code == "upstream_malformed"


async def test_a_consumer_that_stops_early_closes_the_upstream_response(harness: Harness) -> None:
    closed = asyncio.Event()

    class Endless(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            while True:
                yield b"data: " + json.dumps(chunk(content="x")).encode() + b"\n\n"
                await asyncio.sleep(0)

        async def aclose(self) -> None:
            closed.set()

    stream = harness.client(Upstream(httpx.Response(200, stream=Endless()))).stream(BODY, deadline=later())
    assert await anext(stream) == StreamDelta(content="x")
    await stream.aclose()  # type: ignore[attr-defined]

    assert closed.is_set()


# -- retries ----------------------------------------------------------------------------------------


def expected_jitter(seed: int, count: int, base: float = 0.2, cap: float = 4.0) -> list[float]:
    rng = random.Random(seed)
    return [rng.uniform(0, min(cap, base * 2**n)) for n in range(count)]


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
async def test_retryable_statuses_are_retried_with_full_jitter_backoff(harness: Harness, status: int) -> None:
    upstream = Upstream(error(status), error(status), ok_json())

    result = await harness.client(upstream).complete(BODY, deadline=later())

    assert result.content == "Hello!"
    assert len(upstream.requests) == 3
    assert harness.delays == expected_jitter(1234, 2)


async def test_retry_after_seconds_is_the_minimum_wait(harness: Harness) -> None:
    upstream = Upstream(error(429, headers={"Retry-After": "2"}), ok_json())

    await harness.client(upstream).complete(BODY, deadline=later())

    assert harness.delays == [2.0]


async def test_retry_after_http_date_is_honoured(harness: Harness) -> None:
    when = email.utils.formatdate(time.time() + 3, usegmt=True)
    upstream = Upstream(error(503, headers={"Retry-After": when}), ok_json())

    await harness.client(upstream).complete(BODY, deadline=later())

    (delay,) = harness.delays
    assert 1.0 <= delay <= 3.5


def test_parse_retry_after_reads_seconds_and_http_dates() -> None:
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


async def test_rate_limited_after_the_last_attempt_carries_retry_after(harness: Harness) -> None:
    upstream = Upstream(error(429, "Rate limit reached", headers={"Retry-After": "1"}))

    with pytest.raises(RateLimited) as caught:
        await harness.client(upstream).complete(BODY, deadline=later())

    assert caught.value.retry_after == 1.0
    assert caught.value.message == "Rate limit reached"
    assert len(upstream.requests) == 3


@pytest.mark.parametrize(
    ("status", "error_type"),
    [(500, UpstreamUnavailable), (503, UpstreamUnavailable), (502, UpstreamError), (504, UpstreamError)],
)
async def test_server_errors_after_the_last_attempt_map_by_status(
    harness: Harness, status: int, error_type: type[UpstreamError]
) -> None:
    with pytest.raises(UpstreamError) as caught:
        await harness.client(Upstream(error(status))).complete(BODY, deadline=later())
    assert type(caught.value) is error_type


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ConnectError("refused"),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.ReadError("connection reset"),
    ],
    ids=["connect", "remote-protocol", "read"],
)
async def test_connection_errors_are_retried(harness: Harness, failure: Exception) -> None:
    upstream = Upstream(failure, ok_json())

    result = await harness.client(upstream).complete(BODY, deadline=later())

    assert result.content == "Hello!"
    assert len(upstream.requests) == 2


async def test_connection_failures_after_the_last_attempt_are_upstream_unavailable(harness: Harness) -> None:
    upstream = Upstream(httpx.ConnectError("refused"))
    with pytest.raises(UpstreamUnavailable):
        await harness.client(upstream).complete(BODY, deadline=later())
    assert len(upstream.requests) == 3


@pytest.mark.parametrize(
    ("status", "error_type", "code"),
    [
        (400, UpstreamRejected, "upstream_rejected"),
        (422, UpstreamRejected, "upstream_rejected"),
        (402, UpstreamError, "upstream_insufficient_balance"),
        (404, UpstreamError, "upstream_error"),
    ],
)
async def test_client_errors_are_never_retried(
    harness: Harness, status: int, error_type: type[Exception], code: str
) -> None:
    upstream = Upstream(error(status, "This model's maximum context length is 1000000 tokens"))
    with pytest.raises(error_type) as caught:
        await harness.client(upstream).complete(BODY, deadline=later())
    assert getattr(caught.value, "code", None) == code
    assert len(upstream.requests) == 1
    assert harness.delays == []


async def test_a_rejected_request_keeps_the_upstream_message(harness: Harness) -> None:
    upstream = Upstream(error(400, "Invalid tool schema"))
    with pytest.raises(UpstreamRejected) as caught:
        await harness.client(upstream).complete(BODY, deadline=later())
    assert caught.value.message == "Invalid tool schema"
    assert caught.value.status == 400


async def test_an_upstream_message_never_leaks_the_api_key(harness: Harness) -> None:
    upstream = Upstream(error(400, f"bad request from key {KEY} / sk-otherkey123456"))
    with pytest.raises(UpstreamRejected) as caught:
        await harness.client(upstream).complete(BODY, deadline=later())
    assert "sk-" + "test" not in caught.value.message
    assert "otherkey" not in caught.value.message


async def test_a_401_refreshes_the_key_once_and_retries(harness: Harness) -> None:
    upstream = Upstream(error(401), ok_json())

    result = await harness.client(upstream).complete(BODY, deadline=later())

    assert result.content == "Hello!"
    assert harness.key_fetches == [False, True]
    assert [r.headers["authorization"] for r in upstream.requests] == [f"Bearer {KEY}", f"Bearer {KEY}-rotated"]
    assert harness.delays == []


async def test_a_second_401_is_upstream_auth_failed_without_the_key(harness: Harness) -> None:
    upstream = Upstream(error(401, f"Authentication Fails, Your api key: {KEY} is invalid"))

    with pytest.raises(UpstreamError) as caught:
        await harness.client(upstream).complete(BODY, deadline=later())

    assert caught.value.code == "upstream_auth_failed"
    assert KEY not in caught.value.message
    assert len(upstream.requests) == 2


async def test_retry_logs_say_attempt_status_and_delay_but_never_key_or_prompt(
    harness: Harness, no_retry_logs: pytest.LogCaptureFixture
) -> None:
    upstream = Upstream(error(503), ok_json())
    body = {**BODY, "messages": [{"role": "user", "content": "my secret prompt"}]}

    await harness.client(upstream).complete(body, deadline=later())

    (record,) = no_retry_logs.records
    assert record.levelno == logging.WARNING
    text = record.getMessage()
    assert "attempt 1" in text and "503" in text
    assert KEY not in text and "secret prompt" not in text


# -- streams and retries ----------------------------------------------------------------------------


async def test_a_stream_failing_before_any_output_is_retried(harness: Harness) -> None:
    upstream = Upstream(
        httpx.Response(200, content=pieces(b": keep-alive\n\n", then=httpx.ReadError("reset"))),
        ok_stream(sse(chunk(content="Hi", finish="stop"))),
    )

    events = await collect(harness.client(upstream).stream(BODY, deadline=later()))

    assert events[0] == StreamDelta(content="Hi")
    assert len(upstream.requests) == 2


async def test_a_stream_cut_after_output_is_interrupted_and_not_retried(harness: Harness) -> None:
    breaker = FakeBreaker()
    body = b"data: " + json.dumps(chunk(content="Hel")).encode() + b"\n\n"
    upstream = Upstream(
        httpx.Response(200, content=pieces(body, then=httpx.ReadError("reset"))),
        ok_stream(sse(chunk(content="Hello", finish="stop"))),
    )
    seen: list[StreamEvent] = []

    with pytest.raises(UpstreamError) as caught:
        async for event in harness.client(upstream, breaker=breaker).stream(BODY, deadline=later()):
            seen.append(event)

    assert caught.value.code == "upstream_stream_interrupted"
    assert seen == [StreamDelta(content="Hel")]
    assert len(upstream.requests) == 1
    assert breaker.calls == ["allow", "success", "failure"]


async def test_a_stream_ending_without_done_or_finish_reason_after_output_is_interrupted(
    harness: Harness,
) -> None:
    upstream = Upstream(ok_stream(sse(chunk(content="Hel"), done=False)))
    with pytest.raises(UpstreamError) as caught:
        await collect(harness.client(upstream).stream(BODY, deadline=later()))
    assert caught.value.code == "upstream_stream_interrupted"
    assert len(upstream.requests) == 1


async def test_a_stream_error_status_is_mapped_like_complete(harness: Harness) -> None:
    upstream = Upstream(error(400, "bad"))
    with pytest.raises(UpstreamRejected):
        await collect(harness.client(upstream).stream(BODY, deadline=later()))


# -- deadline ---------------------------------------------------------------------------------------


async def keep_alive_forever(request: httpx.Request) -> httpx.Response:
    line = b": keep-alive\n\n" if json.loads(request.content)["stream"] else b"\n"

    async def forever() -> AsyncIterator[bytes]:
        while True:
            yield line
            await asyncio.sleep(0.01)

    return httpx.Response(200, content=forever())


async def test_stream_keep_alives_do_not_stretch_the_deadline(harness: Harness) -> None:
    client = harness.client(Upstream(keep_alive_forever))
    started = time.monotonic()

    with pytest.raises(UpstreamTimeout):
        await collect(client.stream(BODY, deadline=started + 0.3))

    assert time.monotonic() - started < 0.3 + 2.0


async def test_complete_blank_lines_do_not_stretch_the_deadline(harness: Harness) -> None:
    client = harness.client(Upstream(keep_alive_forever))
    started = time.monotonic()

    with pytest.raises(UpstreamTimeout):
        await client.complete(BODY, deadline=started + 0.3)

    assert time.monotonic() - started < 0.3 + 2.0


async def test_deadline_passing_mid_stream_is_upstream_timeout(harness: Harness) -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        async def body() -> AsyncIterator[bytes]:
            yield sse(chunk(content="Hi"), done=False)
            while True:
                await asyncio.sleep(0.01)
                yield b": keep-alive\n\n"

        return httpx.Response(200, content=body())

    seen: list[StreamEvent] = []
    with pytest.raises(UpstreamTimeout):
        async for event in harness.client(Upstream(slow)).stream(BODY, deadline=later(0.3)):
            seen.append(event)
    assert seen == [StreamDelta(content="Hi")]


async def test_a_deadline_already_passed_makes_no_call(harness: Harness) -> None:
    upstream = Upstream(ok_json())
    with pytest.raises(UpstreamTimeout):
        await harness.client(upstream).complete(BODY, deadline=time.monotonic() - 1)
    assert upstream.requests == []


async def test_a_backoff_that_would_cross_the_deadline_fails_at_once(harness: Harness) -> None:
    upstream = Upstream(error(503, headers={"Retry-After": "60"}), ok_json())

    with pytest.raises(UpstreamUnavailable):
        await harness.client(upstream).complete(BODY, deadline=later(5))

    assert len(upstream.requests) == 1
    assert harness.delays == []


# -- breaker ----------------------------------------------------------------------------------------


async def test_an_open_breaker_refuses_without_a_network_call(harness: Harness) -> None:
    upstream = Upstream(ok_json())
    client = harness.client(upstream, breaker=FakeBreaker(allowed=False, cooldown_remaining=12.5))

    with pytest.raises(UpstreamUnavailable) as caught:
        await client.complete(BODY, deadline=later())
    with pytest.raises(UpstreamUnavailable):
        await collect(client.stream(BODY, deadline=later()))

    assert caught.value.code == "circuit_open"
    assert caught.value.retry_after == 12.5
    assert upstream.requests == []


async def test_the_breaker_hears_of_a_call_once_so_failed_attempts_that_a_retry_fixes_are_a_success(
    harness: Harness,
) -> None:
    breaker = FakeBreaker()
    upstream = Upstream(error(503), httpx.ConnectError("refused"), ok_json())

    await harness.client(upstream, breaker=breaker).complete(BODY, deadline=later())

    assert breaker.calls == ["allow", "allow", "allow", "success"]


@pytest.mark.parametrize("stream", [False, True])
async def test_a_call_whose_every_attempt_fails_is_one_breaker_failure(harness: Harness, stream: bool) -> None:
    breaker = FakeBreaker()
    upstream = Upstream(error(503))
    client = harness.client(upstream, breaker=breaker, retry_attempts=4)

    with pytest.raises(UpstreamUnavailable):
        await (collect(client.stream(BODY, deadline=later())) if stream else client.complete(BODY, deadline=later()))

    assert len(upstream.requests) == 4
    assert breaker.calls == ["allow"] * 4 + ["failure"]


async def test_a_timeout_is_one_breaker_failure(harness: Harness) -> None:
    breaker = FakeBreaker()
    with pytest.raises(UpstreamTimeout):
        await harness.client(Upstream(keep_alive_forever), breaker=breaker).complete(BODY, deadline=later(0.2))
    assert breaker.calls == ["allow", "failure"]


class ProbeOnce(FakeBreaker):
    """Half-open: the first caller gets the probe; everyone after it is refused until it reports."""

    async def allow(self) -> bool:
        self.calls.append("allow")
        return self.calls.count("allow") == 1


async def test_a_failed_probe_reports_its_failure_when_its_retry_is_refused(harness: Harness) -> None:
    breaker = ProbeOnce(cooldown_remaining=2.0)
    upstream = Upstream(error(503), ok_json())

    with pytest.raises(UpstreamUnavailable) as caught:
        await harness.client(upstream, breaker=breaker).complete(BODY, deadline=later())

    assert caught.value.code == "circuit_open"
    assert len(upstream.requests) == 1
    assert breaker.calls == ["allow", "allow", "failure"]  # the breaker reopens now, not at the probe timeout


@pytest.mark.parametrize("status", [400, 402, 429])
async def test_client_errors_and_rate_limits_say_nothing_to_the_breaker(harness: Harness, status: int) -> None:
    breaker = FakeBreaker()
    with pytest.raises(Exception):  # noqa: B017 - the type is covered elsewhere
        await harness.client(Upstream(error(status)), breaker=breaker, retry_attempts=1).complete(
            BODY, deadline=later()
        )
    assert "failure" not in breaker.calls and "success" not in breaker.calls


async def test_a_stream_records_success_once_output_arrives(harness: Harness) -> None:
    breaker = FakeBreaker()
    upstream = Upstream(ok_stream(sse(chunk(content="a"), chunk(content="b", finish="stop"))))

    await collect(harness.client(upstream, breaker=breaker).stream(BODY, deadline=later()))

    assert breaker.calls == ["allow", "success"]


# -- construction -----------------------------------------------------------------------------------


async def test_from_settings_builds_and_closes_its_own_pooled_client() -> None:
    settings = Settings(deepseek_base_url="http://127.0.0.1:9/", retry_attempts=5)
    client = DeepSeekClient.from_settings(settings, api_key=lambda force: KEY)
    try:
        assert client._url == "http://127.0.0.1:9/chat/completions"
        assert client._retry_attempts == 5
    finally:
        await client.aclose()
    assert client._http.is_closed


async def test_a_client_passed_in_is_left_open(harness: Harness) -> None:
    client = harness.client(Upstream(ok_json()))
    await client.aclose()
    assert not client._http.is_closed
