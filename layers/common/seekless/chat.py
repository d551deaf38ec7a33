"""The chat service: one generation routine behind REST today, WebSocket and the GPU worker later.

It turns a validated ``ChatCompletionRequest`` into an upstream body (model catalogue, caps, the
tenant's ``user_id``, session history as a stable prefix), then serves it from the response cache or
from the chat model, with single-flight so N identical concurrent misses make one upstream call.
Nothing is stored (cache or session) unless the generation finished: errors and interrupted streams
leave no trace.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from seekless import audit
from seekless.caching import CacheMode, cache_key, cache_mode
from seekless.config import ModelSpec, Settings
from seekless.contracts import (
    ChatCompletionRequest,
    ChatResult,
    ResultBuilder,
    StreamDelta,
    StreamEnd,
    StreamEvent,
    Usage,
)
from seekless.errors import InvalidRequest, NotFound, SeeklessError, UpstreamError
from seekless.input_limits import check_context, check_request
from seekless.limits import RateLimiter, Reservation, reservation_tokens
from seekless.models import KeyLimits, Principal
from seekless.ports import ChatModel, ResponseCache, SessionStore
from seekless.telemetry import NullTelemetry, Telemetry
from seekless.tokens import estimate_prompt_tokens, trim_history

Reserved = list[tuple[RateLimiter, Reservation]]
logger = logging.getLogger("seekless.chat")

CACHEABLE_FINISH = frozenset({"stop", "length", "tool_calls"})
JSON_BLANK_RETRIES = 2
_SAMPLING_FIELDS = (
    "temperature",
    "top_p",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "tools",
    "tool_choice",
    "logprobs",
    "top_logprobs",
    "reasoning_effort",
)


@dataclass(frozen=True, slots=True)
class PreparedChat:
    """Everything decided before any I/O to DeepSeek."""

    principal: Principal
    model_name: str  # as the client named it
    spec: ModelSpec
    body: dict[str, Any]  # the upstream body, history included
    new_messages: list[dict[str, Any]]  # what this turn adds to the session
    session_id: str | None
    cache_mode: CacheMode
    cache_key: str
    deadline: float


@dataclass(frozen=True, slots=True)
class ChatAnswer:
    result: ChatResult
    cache: str  # hit | miss | bypass


@dataclass(frozen=True, slots=True)
class ChatStream:
    events: AsyncIterator[StreamEvent]
    cache: str
    created: int
    id: str
    model: str


class ChatService:
    def __init__(
        self,
        *,
        settings: Settings,
        model: ChatModel,
        cache: ResponseCache | None,
        sessions: SessionStore | None,
        telemetry: Telemetry | None = None,
        clock: Any = time.monotonic,
        limiter: RateLimiter | Sequence[RateLimiter] | None = None,
        limits_for: Callable[[str], KeyLimits] | None = None,
    ) -> None:
        self._settings = settings
        # Checked in order (the durable budgets first, so a refusal by a later one gives them back).
        self._limiters: tuple[RateLimiter, ...] = (
            () if limiter is None else tuple(limiter) if isinstance(limiter, Sequence) else (limiter,)
        )
        self._limits_for = limits_for
        self._model = model
        self._cache = cache
        self._sessions = sessions
        self._telemetry = telemetry or NullTelemetry()
        self._clock = clock

    # -- preparation -----------------------------------------------------------------------------

    def resolve_model(self, name: str) -> ModelSpec:
        spec = self._settings.models.get(name)
        if spec is None:
            raise NotFound(
                f"The model '{name}' does not exist. Available: {', '.join(sorted(self._settings.models))}.",
                code="model_not_found",
                param="model",
            )
        return spec

    def prepare(
        self,
        request: ChatCompletionRequest,
        principal: Principal,
        *,
        headers: Mapping[str, str],
        deadline: float,
        session_id: str | None = None,
    ) -> PreparedChat:
        settings = self._settings
        spec = self.resolve_model(request.model)
        audit.note_model(request.model)
        max_tokens = request.requested_max_tokens() or settings.default_max_tokens
        cap = min(settings.max_tokens_cap, spec.max_output_tokens)
        if max_tokens > cap:
            raise InvalidRequest(
                f"max_tokens is too large: {max_tokens}. This model supports at most {cap} completion tokens.",
                param="max_tokens",
                code="invalid_value",
            )
        check_request(request, settings)
        new_messages = [_upstream_message(m.model_dump(exclude_none=True)) for m in request.messages]
        thinking = spec.thinking or (request.thinking.type if request.thinking else "enabled")
        session_id = session_id or request.session_id
        history: list[dict[str, Any]] = []
        if session_id:
            if self._sessions is None:
                raise InvalidRequest("Sessions are not available on this deployment.", param="session_id")
            stored = self._sessions.messages(principal.tenant_id, session_id).items
            history = trim_history(
                [m.to_upstream() for m in stored],
                budget=settings.history_token_budget,
                reserved=estimate_prompt_tokens(new_messages),
            )

        body: dict[str, Any] = {
            "model": spec.upstream,
            "messages": history + new_messages,
            "thinking": {"type": thinking},
            "max_tokens": max_tokens,
            "user_id": principal.upstream_user_id,
        }
        wants_json = request.response_format is not None and request.response_format.type == "json_object"
        if wants_json and not any("json" in (m.get("content") or "").lower() for m in body["messages"]):
            raise InvalidRequest(
                "response_format json_object needs the word 'json' in a message, as DeepSeek requires.",
                param="response_format",
            )
        dumped = request.model_dump(include=set(_SAMPLING_FIELDS), exclude_none=True)
        body.update(dumped)
        if request.response_format is not None:
            body["response_format"] = request.response_format.model_dump()
        check_context(body, spec)
        mode = cache_mode(body, headers)
        return PreparedChat(
            principal=principal,
            model_name=request.model,
            spec=spec,
            body=body,
            new_messages=new_messages,
            session_id=session_id,
            cache_mode=mode,
            cache_key=cache_key(principal.tenant_id, body),
            deadline=deadline,
        )

    # -- non-streaming -----------------------------------------------------------------------------

    async def complete(self, chat: PreparedChat, *, accept: Callable[[ChatResult], bool] | None = None) -> ChatAnswer:
        """The answer, from the cache or upstream. ``accept``: the caller judges the answer itself (a
        decision's verdict): upstream is asked once, a blank JSON-mode answer included (the caller counts
        and retries its own attempts), and only an answer it accepts is cached, so a cached answer is never
        one the caller would have refused."""
        started = self._clock()
        reservation = await self._reserve(chat)
        used = 0
        try:
            cached, lease = await self._lookup(chat)
            if cached is not None:
                await self._store(chat, cached, cache_it=False)
                self._finish(chat, cached, "hit", started)
                return ChatAnswer(result=_as_model(cached, chat.model_name), cache="hit")
            try:
                result = await self._generate(chat, retry_blank=accept is None)
                used = result.usage.total_tokens
                await self._store(chat, result, cache_it=accept is None or accept(result), lease=lease)
                lease = None  # stored together with the answer
            except SeeklessError as error:
                self._count_error(error)
                raise
            finally:
                if lease is not None and self._cache is not None:
                    await self._cache.release(chat.cache_key, lease)
        finally:
            await self._settle(reservation, used)
        label = "bypass" if chat.cache_mode is CacheMode.BYPASS else "miss"
        self._finish(chat, result, label, started)
        return ChatAnswer(result=_as_model(result, chat.model_name), cache=label)

    async def _reserve(self, chat: PreparedChat) -> Reserved:
        """Admit the request under its key's limits, or raise before anything goes upstream."""
        if not self._limiters:
            return []
        principal = chat.principal
        reserved: Reserved = []
        try:
            if principal.limits is None and self._limits_for is not None:
                limits = await asyncio.to_thread(self._limits_for, principal.key_id)
                principal = dataclasses.replace(principal, limits=limits)
            tokens = reservation_tokens(chat.body)
            for limiter in self._limiters:
                reservation = await limiter.admit(principal, tokens=tokens)
                if reservation is not None:
                    reserved.append((limiter, reservation))
        except BaseException as error:
            await self._settle(reserved, 0)  # what was reserved before the refusal goes back
            if isinstance(error, SeeklessError):
                self._count_error(error)
            raise
        return reserved

    async def _settle(self, reserved: Reserved, used: int) -> None:
        """Settle every reservation; one that cannot be settled is logged and counted, never raised (the
        answer is already paid for: failing it now would only make the client pay again)."""
        for limiter, reservation in reserved:
            try:
                await limiter.settle(reservation, used=used)
            except Exception:
                self._telemetry.count("RateLimiterErrors")
                logger.warning("could not settle a %s reservation", type(limiter).__name__, exc_info=True)

    async def _generate(self, chat: PreparedChat, *, retry_blank: bool = True) -> ChatResult:
        wants_json = retry_blank and chat.body.get("response_format", {}).get("type") == "json_object"
        for attempt in range(JSON_BLANK_RETRIES + 1):
            result = await self._model.complete(chat.body, deadline=chat.deadline)
            # DeepSeek's JSON mode can answer with empty content: asking again is the documented fix.
            if not (wants_json and not result.content.strip() and not result.tool_calls):
                return result
            logger.warning("blank JSON-mode answer, retrying (attempt %d)", attempt + 1)
        raise UpstreamError("DeepSeek returned blank content in JSON mode repeatedly.", code="upstream_blank")

    # -- streaming ---------------------------------------------------------------------------------

    async def stream(self, chat: PreparedChat) -> ChatStream:
        """Start a stream. Errors before the first event raise here, so they can still set a status."""
        started = self._clock()
        reservation = await self._reserve(chat)
        try:
            cached, lease = await self._lookup(chat)
        except BaseException:
            await self._settle(reservation, 0)
            raise
        if cached is not None:
            await self._settle(reservation, 0)
            await self._store(chat, cached, cache_it=False)
            self._finish(chat, cached, "hit", started)
            result = _as_model(cached, chat.model_name)
            return ChatStream(
                events=replay(result), cache="hit", created=result.created, id=result.id, model=result.model
            )
        label = "bypass" if chat.cache_mode is CacheMode.BYPASS else "miss"
        upstream = self._model.stream(chat.body, deadline=chat.deadline)
        try:
            first = await anext(upstream)
        except BaseException as error:
            await _aclose(upstream)
            await self._settle(reservation, 0)
            if lease is not None and self._cache is not None:
                await self._cache.release(chat.cache_key, lease)
            if isinstance(error, SeeklessError):
                self._count_error(error)
            if isinstance(error, StopAsyncIteration):
                raise UpstreamError("DeepSeek closed the stream before any output.") from error
            raise
        self._telemetry.milliseconds("TimeToFirstToken", (self._clock() - started) * 1000)
        stream_id = "chatcmpl-" + secrets.token_hex(12)
        events = self._relay(chat, stream_id, first, upstream, lease, label, started, reservation)
        return ChatStream(events=events, cache=label, created=int(time.time()), id=stream_id, model=chat.model_name)

    async def _relay(
        self,
        chat: PreparedChat,
        stream_id: str,
        first: StreamEvent,
        upstream: AsyncIterator[StreamEvent],
        lease: str | None,
        label: str,
        started: float,
        reservation: Reserved | None = None,
    ) -> AsyncIterator[StreamEvent]:
        builder = ResultBuilder()
        used = 0
        try:
            event: StreamEvent | None = first
            while event is not None:
                if isinstance(event, StreamEnd):
                    result = builder.build(
                        id=stream_id,
                        model=chat.model_name,
                        finish_reason=event.finish_reason,
                        usage=event.usage,
                    )
                    used = result.usage.total_tokens
                    await self._store(chat, result, cache_it=True, lease=lease)
                    lease = None  # stored together with the answer
                    self._finish(chat, result, label, started)
                    yield StreamEnd(
                        id=stream_id,
                        model=chat.model_name,
                        finish_reason=event.finish_reason,
                        usage=event.usage,
                    )
                    return
                builder.add(event)
                yield event
                event = await anext(upstream, None)
            raise UpstreamError("DeepSeek's stream ended without a finish reason.", code="upstream_stream_interrupted")
        except SeeklessError as error:
            self._count_error(error)
            raise
        finally:
            await _aclose(upstream)
            await self._settle(reservation or [], used)
            if lease is not None and self._cache is not None:
                await self._cache.release(chat.cache_key, lease)

    # -- cache and sessions --------------------------------------------------------------------------

    async def _lookup(self, chat: PreparedChat) -> tuple[ChatResult | None, str | None]:
        """(cached answer, None) on a hit; (None, lease) when this caller must generate."""
        cache = self._cache
        if cache is None or chat.cache_mode is CacheMode.BYPASS:
            return None, None
        lease_seconds = max(1.0, chat.deadline - self._clock())
        if chat.cache_mode is CacheMode.REFRESH:
            found, lease = None, await cache.acquire(chat.cache_key, lease_seconds)
        else:
            found, lease = await cache.lookup(chat.cache_key, lease_seconds)
        delay = 0.005
        while found is None and lease is None:
            # Someone else is generating this very answer: wait for it rather than pay twice.
            while await cache.leased(chat.cache_key):
                if self._clock() + delay > chat.deadline:
                    return None, None  # out of patience: generate without the lease
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.1)
            # The leader stored its answer, or failed and we may lead now.
            found, lease = await cache.lookup(chat.cache_key, lease_seconds)
        return found, lease

    async def _store(self, chat: PreparedChat, result: ChatResult, *, cache_it: bool, lease: str | None = None) -> None:
        """Keep a finished answer: in the cache (unless it came from there) and in the session.
        A single-flight lease is always given up here, in the same round trip as the write."""
        cacheable = result.finish_reason in CACHEABLE_FINISH and (result.content.strip() or result.tool_calls)
        if self._cache is not None:
            if cache_it and cacheable and chat.cache_mode is not CacheMode.BYPASS:
                await self._cache.put(chat.cache_key, result, self._settings.cache_ttl_seconds, lease=lease)
            elif lease is not None:
                await self._cache.release(chat.cache_key, lease)
        if chat.session_id and self._sessions is not None:
            self._sessions.append(chat.principal.tenant_id, chat.session_id, [*chat.new_messages, result.message()])

    def _finish(self, chat: PreparedChat, result: ChatResult, label: str, started: float) -> None:
        telemetry = self._telemetry
        telemetry.count({"hit": "CacheHit", "miss": "CacheMiss", "bypass": "CacheBypass"}[label])
        telemetry.milliseconds("Latency", (self._clock() - started) * 1000)
        audit.note_content(chat.new_messages, result.content)
        if label == "hit":
            audit.note_answer(
                cache=label, prompt_tokens=0, completion_tokens=0, prompt_cache_hit_tokens=0, estimated_cost_usd=0.0
            )
            return  # a cache hit costs no tokens
        usage = result.usage
        cost = estimated_cost_usd(chat.spec, usage)
        audit.note_answer(
            cache=label,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            prompt_cache_hit_tokens=usage.prompt_cache_hit_tokens,
            estimated_cost_usd=cost,
        )
        telemetry.count("PromptTokens", usage.prompt_tokens)
        telemetry.count("CompletionTokens", usage.completion_tokens)
        telemetry.count("PromptCacheHitTokens", usage.prompt_cache_hit_tokens)
        telemetry.count("EstimatedCostMicroUSD", cost * 1_000_000)

    def _count_error(self, error: SeeklessError) -> None:
        audit.note_error(error)
        if isinstance(error, UpstreamError) or error.type == "rate_limit_error":
            self._telemetry.count("UpstreamErrors")


class _NoModel:
    """The model of a ChatService that only checks requests: it is never called."""

    async def complete(self, body: Mapping[str, Any], *, deadline: float) -> ChatResult:
        raise RuntimeError("a validation-only ChatService generates nothing")

    def stream(self, body: Mapping[str, Any], *, deadline: float) -> AsyncIterator[StreamEvent]:
        raise RuntimeError("a validation-only ChatService generates nothing")


def validation_only(settings: Settings) -> ChatService:
    """A ChatService that checks requests as the chat route does (model, max_tokens, input limits, JSON
    mode) and holds no client: what batch ingest and queued requests validate with."""
    return ChatService(settings=settings, model=_NoModel(), cache=None, sessions=None)


def estimated_cost_usd(spec: ModelSpec, usage: Usage) -> float:
    hit = usage.prompt_cache_hit_tokens
    miss = usage.prompt_cache_miss_tokens or max(0, usage.prompt_tokens - hit)
    return (
        hit * spec.price_input_cache_hit
        + miss * spec.price_input_cache_miss
        + usage.completion_tokens * spec.price_output
    ) / 1_000_000


async def replay(result: ChatResult, piece: int = 64) -> AsyncIterator[StreamEvent]:
    """A finished answer as a stream: reasoning first, then content, then the end with its usage."""
    if result.reasoning_content:
        for start in range(0, len(result.reasoning_content), piece):
            yield StreamDelta(reasoning_content=result.reasoning_content[start : start + piece])
    for start in range(0, len(result.content), piece):
        yield StreamDelta(content=result.content[start : start + piece])
    if result.tool_calls:
        yield StreamDelta(tool_calls=[{"index": i, **call} for i, call in enumerate(result.tool_calls)])
    yield StreamEnd(id=result.id, model=result.model, finish_reason=result.finish_reason, usage=result.usage)


def _upstream_message(message: dict[str, Any]) -> dict[str, Any]:
    # reasoning_content goes back upstream only where DeepSeek requires it: after tool calls.
    if message.get("role") == "assistant" and not message.get("tool_calls"):
        message.pop("reasoning_content", None)
    return message


def _as_model(result: ChatResult, model_name: str) -> ChatResult:
    """Answers carry the model name the client asked for (an alias stays an alias)."""
    if result.model == model_name:
        return result
    return ChatResult(
        id=result.id,
        model=model_name,
        content=result.content,
        reasoning_content=result.reasoning_content,
        tool_calls=result.tool_calls,
        finish_reason=result.finish_reason,
        usage=result.usage,
        created=result.created,
    )


async def _aclose(stream: AsyncIterator[StreamEvent]) -> None:
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()
