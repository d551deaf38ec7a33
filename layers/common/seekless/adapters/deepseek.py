"""The DeepSeek chat API over httpx: the ``ChatModel`` port.

Every call has an absolute deadline (a ``time.monotonic()`` value). DeepSeek keeps a loaded request
alive with ``: keep-alive`` comments (stream) or blank lines (non-stream) for up to ten minutes, so a
read timeout never fires: each attempt runs under ``asyncio.timeout`` (for streams, each read of the
body) and httpx timeouts bounded by the time left, and no retry or backoff sleep may cross it.

Retries use full-jitter exponential backoff on 429/5xx and connection failures that happened before
any output reached the caller; a ``Retry-After`` header is the minimum wait. A 401 gets exactly one
retry with a freshly fetched key (the secret may have rotated). Errors leave as ``seekless.errors``.

The circuit breaker hears of each call once: a success, or one failure when the call gives up (its
retries spent). Counting failed attempts instead would open it on chance alone when a share of calls
fails (at 30 % per attempt, five failures in a row come every ~600 attempts) and turn a partial outage
into a full one. The one exception: a call that failed and is refused its retry by the breaker (it was
the half-open probe, or the breaker opened meanwhile) reports its failure then, so a failed probe
reopens the breaker at once.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import re
import socket
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, Self, cast

import httpx

from seekless.adapters.sse import SSEDecoder, malformed
from seekless.config import Settings
from seekless.contracts import ChatResult, StreamDelta, StreamEnd, StreamEvent, Usage
from seekless.errors import (
    RateLimited,
    SeeklessError,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)

if TYPE_CHECKING:
    from seekless.ports import CircuitBreaker

logger = logging.getLogger("seekless.deepseek")

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
_ERROR_BODY_LIMIT = 64 * 1024
_MESSAGE_LIMIT = 500
_DRAIN_SECONDS = 0.5  # after [DONE], how long to wait for the end of the body to keep the connection
_SECRET_LIKE = re.compile(r"(?i)\b(sk-|bearer\s+)[A-Za-z0-9._\-]{4,}")


def _setting_default(name: str) -> Any:
    return Settings.model_fields[name].default


DEFAULT_RETRY_ATTEMPTS: int = _setting_default("retry_attempts")
DEFAULT_RETRY_BASE_DELAY: float = _setting_default("retry_base_delay_seconds")
DEFAULT_RETRY_MAX_DELAY: float = _setting_default("retry_max_delay_seconds")
DEFAULT_CONNECT_TIMEOUT: float = _setting_default("connect_timeout_seconds")
DEFAULT_MAX_CONNECTIONS: int = _setting_default("max_upstream_connections")


class _Failure(Exception):
    """One failed attempt: the error to raise if no retry follows, and how to treat it."""

    def __init__(
        self,
        error: SeeklessError,
        *,
        retryable: bool = False,
        breaker_failure: bool = False,
        retry_after: float | None = None,
        refresh_key: bool = False,
        reason: str = "",
        cause: BaseException | None = None,
    ) -> None:
        super().__init__(error.message)
        self.error = error
        self.retryable = retryable
        self.breaker_failure = breaker_failure
        self.retry_after = retry_after
        self.refresh_key = refresh_key
        self.reason = reason
        self.cause = cause


class _Call:
    """Retry bookkeeping for one ``complete`` or ``stream`` call."""

    __slots__ = ("attempts", "failed", "force_key", "refreshed")

    def __init__(self) -> None:
        self.attempts = 0  # attempts counted against retry_attempts (the key-refresh retry is free)
        self.refreshed = False
        self.force_key = False
        self.failed = False  # an attempt failed in a way the breaker counts, not reported yet


def _timeout_error() -> UpstreamTimeout:
    return UpstreamTimeout("DeepSeek did not answer within the request deadline")


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP-date. None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


class DeepSeekClient:
    """``ChatModel`` for DeepSeek's OpenAI-compatible ``/chat/completions``."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: Callable[[bool], str],
        breaker: CircuitBreaker | None = None,
        retry_attempts: int = DEFAULT_RETRY_ATTEMPTS,
        retry_base_delay: float = DEFAULT_RETRY_BASE_DELAY,
        retry_max_delay: float = DEFAULT_RETRY_MAX_DELAY,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        http_client: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._api_key = api_key
        self._breaker = breaker
        self._retry_attempts = max(1, retry_attempts)
        self._base_delay = retry_base_delay
        self._max_delay = retry_max_delay
        self._connect_timeout = connect_timeout
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()
        self._owns_client = http_client is None
        self._http = http_client if http_client is not None else self._build_client(max_connections, connect_timeout)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        api_key: Callable[[bool], str],
        breaker: CircuitBreaker | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> Self:
        return cls(
            base_url=settings.deepseek_base_url,
            api_key=api_key,
            breaker=breaker,
            retry_attempts=settings.retry_attempts,
            retry_base_delay=settings.retry_base_delay_seconds,
            retry_max_delay=settings.retry_max_delay_seconds,
            connect_timeout=settings.connect_timeout_seconds,
            max_connections=settings.max_upstream_connections,
            http_client=http_client,
        )

    @staticmethod
    def _build_client(max_connections: int, connect_timeout: float) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        transport = httpx.AsyncHTTPTransport(
            http1=True,
            http2=False,
            limits=limits,
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )
        # Every request carries its own timeouts bounded by its deadline; this default is a backstop.
        return httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(60.0, connect=connect_timeout))

    async def aclose(self) -> None:
        """Close the HTTP client if this adapter built it; a client passed in belongs to the caller."""
        if self._owns_client:
            await self._http.aclose()

    # -- non-streamed -----------------------------------------------------------------------------

    async def complete(self, body: Mapping[str, Any], *, deadline: float) -> ChatResult:
        content = self._encode(body, stream=False)
        call = _Call()
        while True:
            try:
                return await self._complete_once(content, deadline, call)
            except _Failure as failure:
                await self._after_failure(failure, call, deadline)

    async def _complete_once(self, content: bytes, deadline: float, call: _Call) -> ChatResult:
        remaining = await self._admit(deadline, call)
        try:
            async with asyncio.timeout(remaining):
                response = await self._send(content, call, remaining, stream=False)
                try:
                    raw = await response.aread()
                finally:
                    await response.aclose()
        except (TimeoutError, httpx.HTTPError) as exc:
            raise self._transport_failure(exc, deadline) from None
        if not raw.strip():
            # Only keep-alive blank lines, then the connection ended: nothing was produced.
            error = UpstreamUnavailable("DeepSeek closed the connection before answering")
            raise _Failure(error, retryable=True, breaker_failure=True, reason="empty body")
        try:
            # json.loads skips the blank keep-alive lines DeepSeek sends before the body under load.
            data = json.loads(raw)
        except ValueError:
            raise malformed("the response body is not valid JSON") from None
        if not isinstance(data, dict):
            raise malformed("the response body is not a JSON object")
        result = self._result(data)
        await self._record_success()
        return result

    @staticmethod
    def _result(data: dict[str, Any]) -> ChatResult:
        choices = data.get("choices") or []
        choice = choices[0] if choices and isinstance(choices[0], dict) else {}
        message = choice.get("message") or {}
        created = data.get("created")
        return ChatResult(
            id=str(data.get("id") or ""),
            model=str(data.get("model") or ""),
            content=message.get("content") or "",
            reasoning_content=message.get("reasoning_content"),
            tool_calls=message.get("tool_calls") or None,
            finish_reason=choice.get("finish_reason") or "stop",
            usage=Usage.from_wire(data.get("usage") or {}),
            created=int(created) if isinstance(created, int | float) else int(time.time()),
        )

    # -- streamed ---------------------------------------------------------------------------------

    async def stream(self, body: Mapping[str, Any], *, deadline: float) -> AsyncIterator[StreamEvent]:
        content = self._encode(body, stream=True)
        fallback_model = str(body.get("model") or "")
        call = _Call()
        while True:
            try:
                # aclosing: when our consumer stops early, the attempt (and its response) closes now.
                async with aclosing(self._stream_once(content, deadline, call, fallback_model)) as events:
                    async for event in events:
                        yield event
                return
            except _Failure as failure:
                # _stream_once raises _Failure only before it has yielded anything.
                await self._after_failure(failure, call, deadline)

    async def _stream_once(
        self, content: bytes, deadline: float, call: _Call, fallback_model: str
    ) -> AsyncGenerator[StreamEvent, None]:
        remaining = await self._admit(deadline, call)
        try:
            async with asyncio.timeout(remaining):
                response = await self._send(content, call, remaining, stream=True)
        except (TimeoutError, httpx.HTTPError) as exc:
            raise self._transport_failure(exc, deadline) from None

        decoder = SSEDecoder()
        yielded = False
        stream_id = ""
        model = fallback_model
        finish_reason: str | None = None
        usage: Usage | None = None
        try:
            # httpx's aiter_bytes is an async generator; aclosing finalises it when we stop early.
            byte_stream = cast("AsyncGenerator[bytes, None]", response.aiter_bytes())
            async with aclosing(byte_stream) as chunks:
                ended = False
                while not decoder.done and not ended:
                    try:
                        events = decoder.feed(await self._read(chunks, deadline))
                    except StopAsyncIteration:
                        events = decoder.end()
                        ended = True
                    except (TimeoutError, httpx.HTTPError) as exc:
                        failure = self._transport_failure(exc, deadline)
                        if not yielded:
                            raise failure from None
                        if isinstance(failure.error, UpstreamTimeout):
                            raise failure.error from exc  # upstream was producing: no breaker failure
                        await self._record_failure()
                        raise UpstreamError(
                            "the DeepSeek stream was interrupted", code="upstream_stream_interrupted"
                        ) from exc
                    for event in events:
                        if "error" in event and not event.get("choices"):
                            raise self._stream_error(event, yielded)
                        stream_id = stream_id or str(event.get("id") or "")
                        model = str(event.get("model") or model)
                        if event.get("usage"):
                            usage = Usage.from_wire(event["usage"])
                        choices = event.get("choices") or []
                        if not choices or not isinstance(choices[0], dict):
                            continue
                        choice = choices[0]
                        finish_reason = choice.get("finish_reason") or finish_reason
                        delta = choice.get("delta") or {}
                        text = delta.get("content") or None
                        reasoning = delta.get("reasoning_content") or None
                        tool_calls = delta.get("tool_calls") or None
                        if text is None and reasoning is None and tool_calls is None:
                            continue
                        if not yielded:
                            yielded = True
                            await self._record_success()
                        yield StreamDelta(content=text, reasoning_content=reasoning, tool_calls=tool_calls)
                if decoder.done:
                    await self._drain(chunks, deadline)
        finally:
            await response.aclose()

        if not decoder.done and finish_reason is None:
            if yielded:
                await self._record_failure()
                raise UpstreamError("the DeepSeek stream was interrupted", code="upstream_stream_interrupted")
            raise _Failure(
                UpstreamUnavailable("the DeepSeek stream ended before any output"),
                retryable=True,
                breaker_failure=True,
                reason="stream ended early",
            )
        if not yielded:
            await self._record_success()
        yield StreamEnd(id=stream_id, model=model, finish_reason=finish_reason or "stop", usage=usage)

    def _stream_error(self, event: dict[str, Any], yielded: bool) -> SeeklessError:
        message = self._upstream_message(event) or "DeepSeek reported an error mid-stream"
        if yielded:
            return UpstreamError(message, code="upstream_stream_interrupted")
        return UpstreamError(message)

    @staticmethod
    async def _read(chunks: AsyncIterator[bytes], deadline: float) -> bytes:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        async with asyncio.timeout(remaining):
            return await anext(chunks)

    @staticmethod
    async def _drain(chunks: AsyncIterator[bytes], deadline: float) -> None:
        """Read to the end of the body after [DONE] so the connection goes back to the pool.
        Best effort, briefly: the stream is complete whatever happens here."""
        try:
            async with asyncio.timeout(min(_DRAIN_SECONDS, max(0.0, deadline - time.monotonic()))):
                async for _ in chunks:
                    pass
        except (TimeoutError, httpx.HTTPError):
            pass

    # -- one attempt ------------------------------------------------------------------------------

    @staticmethod
    def _encode(body: Mapping[str, Any], *, stream: bool) -> bytes:
        payload = dict(body)
        payload["stream"] = stream
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()

    async def _admit(self, deadline: float, call: _Call) -> float:
        """The seconds left for an attempt the breaker lets go; else the call ends here (and a retry
        refused reports its call's failure: the half-open probe failed, see the module doc)."""
        allowed = deadline > time.monotonic() and (self._breaker is None or await self._breaker.allow())
        remaining = deadline - time.monotonic()
        if allowed and remaining > 0:
            return remaining
        await self._report_failure(call)
        if remaining <= 0:
            raise _timeout_error()
        hint = getattr(self._breaker, "cooldown_remaining", None)
        raise UpstreamUnavailable(
            "DeepSeek is unavailable (circuit open); retry later",
            code="circuit_open",
            retry_after=float(hint) if isinstance(hint, int | float) else None,
        )

    async def _send(self, content: bytes, call: _Call, remaining: float, *, stream: bool) -> httpx.Response:
        """Send one request; return the response if it is 2xx, else raise a ``_Failure``."""
        key = self._api_key(call.force_key)
        call.force_key = False
        timeout = httpx.Timeout(
            connect=min(self._connect_timeout, remaining), read=remaining, write=remaining, pool=remaining
        )
        request = self._http.build_request(
            "POST",
            self._url,
            content=content,
            headers={
                "Authorization": f"Bearer {key}",
                "Content-Type": "application/json",
                "Accept": "text/event-stream" if stream else "application/json",
                # A compressed event stream would sit in the decompressor: ask for none.
                **({"Accept-Encoding": "identity"} if stream else {}),
            },
            timeout=timeout,
        )
        response = await self._http.send(request, stream=True)
        if response.is_success:
            return response
        try:
            raw = await self._read_error_body(response)
        finally:
            await response.aclose()
        raise self._status_failure(response, raw, key)

    @staticmethod
    async def _read_error_body(response: httpx.Response) -> bytes:
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) >= _ERROR_BODY_LIMIT:
                break
        return bytes(body[:_ERROR_BODY_LIMIT])

    def _status_failure(self, response: httpx.Response, raw: bytes, key: str) -> _Failure:
        status = response.status_code
        reason = f"HTTP {status}"
        message = self._upstream_message(raw, key=key)
        if status in (400, 422):
            return _Failure(UpstreamRejected(message or f"DeepSeek rejected the request ({status})"), reason=reason)
        if status == 401:
            # Never echo DeepSeek's message here: it quotes part of the key.
            error = UpstreamError("DeepSeek rejected the API key", code="upstream_auth_failed")
            return _Failure(error, refresh_key=True, reason=reason)
        if status == 402:
            error = UpstreamError("the DeepSeek account is out of balance", code="upstream_insufficient_balance")
            return _Failure(error, reason=reason)
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            limited = RateLimited(message or "DeepSeek rate limit reached", retry_after=retry_after)
            return _Failure(limited, retryable=True, retry_after=retry_after, reason=reason)
        if status >= 500:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            text = message or f"DeepSeek answered {status}"
            error = UpstreamUnavailable(text) if status in (500, 503) else UpstreamError(text)
            return _Failure(
                error,
                retryable=status in RETRYABLE_STATUSES,
                breaker_failure=True,
                retry_after=retry_after,
                reason=reason,
            )
        return _Failure(UpstreamError(f"DeepSeek answered {status}"), reason=reason)

    def _transport_failure(self, exc: BaseException, deadline: float) -> _Failure:
        kind = type(exc).__name__
        time_left = deadline - time.monotonic() > 0
        if isinstance(exc, httpx.ConnectTimeout) and time_left:
            error: SeeklessError = UpstreamUnavailable("could not connect to DeepSeek (connect timeout)")
            return _Failure(error, retryable=True, breaker_failure=True, reason=kind, cause=exc)
        if isinstance(exc, TimeoutError | httpx.TimeoutException):
            return _Failure(_timeout_error(), breaker_failure=True, reason=kind, cause=exc)
        if isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError):
            error = UpstreamUnavailable(f"could not reach DeepSeek ({kind})")
            return _Failure(error, retryable=True, breaker_failure=True, reason=kind, cause=exc)
        if isinstance(exc, httpx.DecodingError):
            return _Failure(malformed("the response could not be decoded"), reason=kind, cause=exc)
        return _Failure(UpstreamError(f"calling DeepSeek failed ({kind})"), reason=kind, cause=exc)

    @staticmethod
    def _upstream_message(source: bytes | dict[str, Any], *, key: str | None = None) -> str | None:
        """DeepSeek's own error message, trimmed and with anything key-like masked."""
        data: Any = source
        if isinstance(source, bytes):
            try:
                data = json.loads(source)
            except ValueError:
                return None
        if not isinstance(data, dict):
            return None
        error = data.get("error")
        message = error.get("message") if isinstance(error, dict) else error
        if not isinstance(message, str) or not message.strip():
            return None
        if key:
            message = message.replace(key, "***")
        message = _SECRET_LIKE.sub(lambda m: m.group(1) + "***", message)
        return message.strip()[:_MESSAGE_LIMIT]

    # -- retries and the breaker ------------------------------------------------------------------

    async def _after_failure(self, failure: _Failure, call: _Call, deadline: float) -> None:
        """Wait before the next attempt, or raise the failure's error when there is none to make (and
        then tell the breaker, once for the whole call)."""
        call.failed = call.failed or failure.breaker_failure
        if failure.refresh_key:
            if call.refreshed:
                await self._report_failure(call)
                raise failure.error from failure.cause
            call.refreshed = True
            call.force_key = True
            logger.warning("DeepSeek answered 401; retrying once with a freshly fetched API key")
            return
        call.attempts += 1
        if not failure.retryable or call.attempts >= self._retry_attempts:
            await self._report_failure(call)
            raise failure.error from failure.cause
        delay = self._rng.uniform(0, min(self._max_delay, self._base_delay * 2 ** (call.attempts - 1)))
        if failure.retry_after is not None:
            delay = max(delay, failure.retry_after)
        if time.monotonic() + delay >= deadline:
            await self._report_failure(call)
            raise failure.error from failure.cause
        logger.warning("DeepSeek attempt %d failed (%s); retrying in %.3fs", call.attempts, failure.reason, delay)
        await self._sleep(delay)

    async def _report_failure(self, call: _Call) -> None:
        """The breaker hears of a failed call once, when it gives up."""
        if call.failed:
            call.failed = False
            await self._record_failure()

    async def _record_success(self) -> None:
        if self._breaker is not None:
            await self._breaker.record_success()

    async def _record_failure(self) -> None:
        if self._breaker is not None:
            await self._breaker.record_failure()


if TYPE_CHECKING:
    from seekless.ports import ChatModel

    def _implements_port(client: DeepSeekClient) -> ChatModel:
        return client
