"""The official openai SDK against the local stack: chat, streaming, models, the cache, upstream failures."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest

from seekless.config import Settings
from seekless_local.stack import LocalStack
from tests.contract.conftest import (
    assert_openai_error_schema,
    unique_messages,
    upstream_calls,
    upstream_requests,
)

MODEL = "deepseek-flash"


def _stream_text(stream: Any) -> tuple[str, str, list[Any]]:
    """(content, reasoning, chunks) of an SDK stream, consumed to the end and closed."""
    content: list[str] = []
    reasoning: list[str] = []
    chunks: list[Any] = []
    with stream:
        for chunk in stream:
            chunks.append(chunk)
            for choice in chunk.choices:
                content.append(choice.delta.content or "")
                reasoning.append(getattr(choice.delta, "reasoning_content", None) or "")
    return "".join(content), "".join(reasoning), chunks


def _extra(model: Any, name: str) -> Any:
    return getattr(model, name, None)


# -- chat completions --------------------------------------------------------------------------------


def test_non_streamed_completion_answers(client: openai.OpenAI, stack: LocalStack) -> None:
    completion = client.chat.completions.create(model=MODEL, messages=unique_messages())

    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    assert upstream_calls(stack) == 1


def test_streamed_completion_assembles_the_same_text_as_non_streamed(client: openai.OpenAI) -> None:
    messages = unique_messages()  # no temperature: not cacheable, so both answers come from upstream

    whole = client.chat.completions.create(model=MODEL, messages=messages)
    content, reasoning, chunks = _stream_text(
        client.chat.completions.create(model=MODEL, messages=messages, stream=True)
    )

    assert len(chunks) > 2
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert content == whole.choices[0].message.content
    assert reasoning == _extra(whole.choices[0].message, "reasoning_content")
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_raw_stream_ends_with_done(http: httpx.Client) -> None:
    body = {"model": MODEL, "messages": unique_messages(), "stream": True}

    response = http.post("/v1/chat/completions", json=body)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [block for block in response.text.split("\n\n") if block]
    assert all(block.startswith("data: ") for block in events)
    assert response.text.endswith("data: [DONE]\n\n")
    assert json.loads(events[0].removeprefix("data: "))["object"] == "chat.completion.chunk"


def test_reasoning_content_is_returned_when_thinking_is_on(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model=MODEL, messages=unique_messages())

    assert _extra(completion.choices[0].message, "reasoning_content")


def test_streamed_reasoning_arrives_before_content(client: openai.OpenAI) -> None:
    _, reasoning, chunks = _stream_text(
        client.chat.completions.create(model=MODEL, messages=unique_messages(), stream=True)
    )

    kinds = []
    for chunk in chunks:
        for choice in chunk.choices:
            if _extra(choice.delta, "reasoning_content"):
                kinds.append("reasoning")
            if choice.delta.content:
                kinds.append("content")
    assert reasoning
    assert kinds.index("content") > max(i for i, kind in enumerate(kinds) if kind == "reasoning")


def test_alias_deepseek_chat_has_no_reasoning(client: openai.OpenAI, stack: LocalStack) -> None:
    completion = client.chat.completions.create(model="deepseek-chat", messages=unique_messages())

    assert completion.choices[0].message.content
    assert _extra(completion.choices[0].message, "reasoning_content") is None
    upstream = upstream_requests(stack)[-1]["body"]
    assert upstream["model"] == "deepseek-flash"
    assert upstream["thinking"] == {"type": "disabled"}


def test_alias_deepseek_chat_streams_no_reasoning(client: openai.OpenAI) -> None:
    content, reasoning, _ = _stream_text(
        client.chat.completions.create(model="deepseek-chat", messages=unique_messages(), stream=True)
    )

    assert content
    assert reasoning == ""


@pytest.mark.parametrize("model", ["deepseek-flash", "deepseek-chat", "deepseek-reasoner", "deepseek-v4-pro"])
def test_answer_names_the_model_that_was_asked_for(client: openai.OpenAI, model: str) -> None:
    completion = client.chat.completions.create(model=model, messages=unique_messages())
    _, _, chunks = _stream_text(client.chat.completions.create(model=model, messages=unique_messages(), stream=True))

    assert completion.model == model
    assert {chunk.model for chunk in chunks} == {model}


def test_usage_reports_prompt_cache_hit_tokens(client: openai.OpenAI) -> None:
    # DeepSeek's own prefix cache: a long shared system prompt is a hit on the second request.
    system = {"role": "system", "content": "You are a careful assistant. " * 200}

    first = client.chat.completions.create(model=MODEL, messages=[system, *unique_messages("one")])
    second = client.chat.completions.create(model=MODEL, messages=[system, *unique_messages("two")])

    assert first.usage is not None and second.usage is not None
    assert _extra(first.usage, "prompt_cache_hit_tokens") == 0
    assert _extra(second.usage, "prompt_cache_hit_tokens") > 0
    assert _extra(second.usage, "prompt_cache_miss_tokens") < second.usage.prompt_tokens
    assert second.usage.total_tokens == second.usage.prompt_tokens + second.usage.completion_tokens


def test_streamed_usage_rides_on_the_final_chunk(client: openai.OpenAI) -> None:
    _, _, chunks = _stream_text(
        client.chat.completions.create(
            model=MODEL, messages=unique_messages(), stream=True, stream_options={"include_usage": True}
        )
    )

    with_usage = [chunk for chunk in chunks if chunk.usage is not None]
    assert with_usage
    usage = with_usage[-1].usage
    assert usage.completion_tokens > 0
    assert _extra(usage, "prompt_cache_hit_tokens") is not None


# -- models ------------------------------------------------------------------------------------------


def test_models_list_has_the_catalogue_and_aliases(client: openai.OpenAI) -> None:
    ids = {model.id for model in client.models.list()}

    assert {"deepseek-flash", "deepseek-v4-pro", "deepseek-chat", "deepseek-reasoner"} <= ids


def test_models_retrieve_keeps_the_alias_name(client: openai.OpenAI) -> None:
    model = client.models.retrieve("deepseek-chat")

    assert model.id == "deepseek-chat"
    assert model.object == "model"


def test_models_retrieve_unknown_is_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("gpt-4o")

    assert_openai_error_schema(caught.value.response.json())


# -- response cache ----------------------------------------------------------------------------------


def _cached_create(client: openai.OpenAI, **kwargs: Any) -> tuple[str, Any]:
    raw = client.chat.completions.with_raw_response.create(**kwargs)
    return raw.headers["x-seekless-cache"], raw.parse()


def test_temperature_zero_is_a_miss_then_a_hit(client: openai.OpenAI, stack: LocalStack) -> None:
    request = {"model": MODEL, "messages": unique_messages(), "temperature": 0}

    first_header, first = _cached_create(client, **request)
    second_header, second = _cached_create(client, **request)

    assert (first_header, second_header) == ("miss", "hit")
    assert second.choices[0].message.content == first.choices[0].message.content
    assert upstream_calls(stack) == 1


def test_nonzero_temperature_bypasses_the_cache(client: openai.OpenAI, stack: LocalStack) -> None:
    request = {"model": MODEL, "messages": unique_messages(), "temperature": 0.7}

    headers = [_cached_create(client, **request)[0] for _ in range(2)]

    assert headers == ["bypass", "bypass"]
    assert upstream_calls(stack) == 2


def test_cache_force_header_caches_a_sampled_request(client: openai.OpenAI, stack: LocalStack) -> None:
    request = {
        "model": MODEL,
        "messages": unique_messages(),
        "temperature": 0.7,
        "extra_headers": {"x-seekless-cache": "force"},
    }

    headers = [_cached_create(client, **request)[0] for _ in range(2)]

    assert headers == ["miss", "hit"]
    assert upstream_calls(stack) == 1


def test_cache_control_no_store_bypasses_the_cache(client: openai.OpenAI, stack: LocalStack) -> None:
    request = {
        "model": MODEL,
        "messages": unique_messages(),
        "temperature": 0,
        "extra_headers": {"Cache-Control": "no-store"},
    }

    headers = [_cached_create(client, **request)[0] for _ in range(2)]

    assert headers == ["bypass", "bypass"]
    assert upstream_calls(stack) == 2


def test_cached_answer_replays_as_stream(client: openai.OpenAI, stack: LocalStack) -> None:
    request = {"model": MODEL, "messages": unique_messages(), "temperature": 0}
    _, whole = _cached_create(client, **request)

    raw = client.chat.completions.with_raw_response.create(**request, stream=True)
    content, reasoning, chunks = _stream_text(raw.parse())

    assert raw.headers["x-seekless-cache"] == "hit"
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert content == whole.choices[0].message.content
    assert reasoning == _extra(whole.choices[0].message, "reasoning_content")
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert upstream_calls(stack) == 1


def test_cached_replay_ends_with_done_on_the_wire(http: httpx.Client, stack: LocalStack) -> None:
    body = {"model": MODEL, "messages": unique_messages(), "temperature": 0}
    assert http.post("/v1/chat/completions", json=body).headers["x-seekless-cache"] == "miss"

    replay = http.post("/v1/chat/completions", json={**body, "stream": True})

    assert replay.headers["x-seekless-cache"] == "hit"
    assert replay.text.endswith("data: [DONE]\n\n")
    assert upstream_calls(stack) == 1


def test_identical_concurrent_requests_make_one_upstream_call(client: openai.OpenAI, stack: LocalStack) -> None:
    stack.emulator.configure(ttft_ms=300)  # long enough that all of them are in flight together
    request = {"model": MODEL, "messages": unique_messages(), "temperature": 0}

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: _cached_create(client, **request), range(8)))

    assert upstream_calls(stack) == 1
    assert sorted(header for header, _ in results) == ["hit"] * 7 + ["miss"]
    assert len({answer.choices[0].message.content for _, answer in results}) == 1


# -- upstream failures -------------------------------------------------------------------------------


def test_upstream_rate_limit_is_429_with_retry_after(client: openai.OpenAI, stack: LocalStack) -> None:
    attempts = Settings().retry_attempts
    stack.emulator.configure(fault="429", fault_count=attempts + 5, retry_after=0)

    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model=MODEL, messages=unique_messages())

    assert caught.value.status_code == 429
    assert int(caught.value.response.headers["retry-after"]) >= 1
    error = assert_openai_error_schema(caught.value.response.json())
    assert error["type"] == "rate_limit_error"
    assert upstream_calls(stack) == attempts  # retried, but never past the configured attempts


def test_upstream_unavailable_is_503(client: openai.OpenAI, stack: LocalStack) -> None:
    stack.emulator.configure(fault="503")

    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model=MODEL, messages=unique_messages())

    assert caught.value.status_code == 503
    assert_openai_error_schema(caught.value.response.json())


def test_upstream_out_of_balance_is_502_and_not_retried(client: openai.OpenAI, stack: LocalStack) -> None:
    stack.emulator.configure(fault="402")

    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model=MODEL, messages=unique_messages())

    assert caught.value.status_code == 502
    assert_openai_error_schema(caught.value.response.json())
    assert upstream_calls(stack) == 1


def test_upstream_failure_is_never_cached(client: openai.OpenAI, stack: LocalStack) -> None:
    request = {"model": MODEL, "messages": unique_messages(), "temperature": 0}
    stack.emulator.configure(fault="503")
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(**request)
    stack.emulator.reset()

    header, answer = _cached_create(client, **request)

    assert header == "miss"
    assert answer.choices[0].message.content


def test_streamed_upstream_failure_before_output_is_a_status(client: openai.OpenAI, stack: LocalStack) -> None:
    stack.emulator.configure(fault="503")

    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model=MODEL, messages=unique_messages(), stream=True)

    assert caught.value.status_code == 503
    assert_openai_error_schema(caught.value.response.json())


def test_stream_reset_mid_answer_raises_while_iterating(client: openai.OpenAI, stack: LocalStack) -> None:
    stack.emulator.configure(fault="reset")
    stream = client.chat.completions.create(model=MODEL, messages=unique_messages(), stream=True)

    received = []
    with pytest.raises(openai.APIError), stream:
        for chunk in stream:
            received.append(chunk)

    assert received  # the answer had started: the failure arrives inside the stream


def test_stream_reset_mid_answer_ends_with_an_error_event(http: httpx.Client, stack: LocalStack) -> None:
    stack.emulator.configure(fault="reset")

    response = http.post("/v1/chat/completions", json={"model": MODEL, "messages": unique_messages(), "stream": True})

    assert response.status_code == 200  # headers had gone out before the upstream broke
    events = [block.removeprefix("data: ") for block in response.text.split("\n\n") if block]
    assert "[DONE]" not in events
    assert_openai_error_schema(json.loads(events[-1]))
    assert any(json.loads(event).get("choices") for event in events[:-1])


def test_stream_reset_mid_answer_is_not_cached(client: openai.OpenAI, stack: LocalStack) -> None:
    request = {"model": MODEL, "messages": unique_messages(), "temperature": 0}
    stack.emulator.configure(fault="reset")
    with pytest.raises(openai.APIError), client.chat.completions.create(**request, stream=True) as stream:
        for _ in stream:
            pass
    stack.emulator.reset()

    header, answer = _cached_create(client, **request)

    assert header == "miss"
    assert answer.choices[0].finish_reason == "stop"


def test_non_streamed_connection_reset_is_503_and_not_cached(client: openai.OpenAI, stack: LocalStack) -> None:
    request = {"model": MODEL, "messages": unique_messages(), "temperature": 0}
    stack.emulator.configure(fault="reset")
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(**request)
    assert caught.value.status_code == 503
    stack.emulator.reset()

    header, _ = _cached_create(client, **request)

    assert header == "miss"


# -- service surface ---------------------------------------------------------------------------------


def test_healthz_needs_no_key(anonymous_http: httpx.Client) -> None:
    response = anonymous_http.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_openapi_schema_lists_chat_completions(anonymous_http: httpx.Client) -> None:
    response = anonymous_http.get("/openapi.json")

    assert response.status_code == 200
    paths = response.json()["paths"]
    assert "post" in paths["/v1/chat/completions"]
    assert "/v1/sessions" in paths
    assert "/v1/models" in paths
