"""A local DeepSeek: an HTTP server that speaks DeepSeek's OpenAI-compatible chat API.

It stands in for ``https://api.deepseek.com`` wherever the real API cannot be reached or should not
be paid for: the integration, contract, fault and load suites, the benchmarks, and ``make dev`` when
``DEEPSEEK_API_KEY`` is not set. Run it on its own with ``python -m seekless_local.emulator``.

Contract facts it reproduces (DESIGN.md, "Runtime facts"):

- ``POST /chat/completions`` (and ``/v1/...``), ``GET /models``; ``Authorization: Bearer`` required.
- Models ``deepseek-flash`` and ``deepseek-v4-pro`` only: the retired ``deepseek-chat`` and
  ``deepseek-reasoner`` are refused, since mapping them is the gateway's job.
- Thinking is on unless ``thinking: {"type": "disabled"}``; its output arrives as
  ``reasoning_content`` before ``content``. ``max_tokens`` caps reasoning and content together, as it
  does on DeepSeek, so a small ``max_tokens`` can end inside the reasoning with ``length``.
- SSE ``data:`` chunks ending in ``data: [DONE]``; usage rides on the last chunk (the one with
  ``finish_reason``), not on a separate empty-choices chunk (switchable with ``usage_mode``).
- Under load DeepSeek sends status and headers first, then ``: keep-alive`` comments (stream) or
  blank lines (non-stream) until inference starts: ``ttft_ms`` reproduces that wait.
- Usage carries ``prompt_cache_hit_tokens`` / ``prompt_cache_miss_tokens`` from an emulated prefix
  cache over whole messages, counted in 64-token units, and ``completion_tokens_details``.
- 400 for an unknown model, empty messages, JSON mode without the word "json", or (thinking on) an
  assistant turn with ``tool_calls`` but no ``reasoning_content``; errors in DeepSeek's shape
  ``{"error": {"message", "type", "param", "code"}}``; 401 / 402 / 429 (``Retry-After``) / 500 / 503.
- Faults DeepSeek shows in the wild: hangs, endless keep-alives, dropped connections, a malformed
  chunk (``STREAM_FAULTS``), and 200 answers whose content is wrong (``CONTENT_FAULTS``, stream or not):
  ``blank`` (content ``""``, as JSON mode sometimes answers) and ``invalid_json`` (prose that is not
  JSON, even in JSON mode). Each is one ``x-emulator-fault`` value, or the global fault plan's
  (``POST /_emulator/config`` with ``fault``, ``fault_count``, ``fault_rate``): ``{"fault": "blank",
  "fault_count": 1}`` makes only the next call blank.
- JSON mode answers a JSON object. When the prompt asks for a decision verdict (it names the keys
  ``"decision"``, ``"confidence"`` and ``"reasons"``, as seekless's decisions do) the object is a
  verdict: ``{"decision": "approve" | "review" | "deny", "confidence": 0.5-0.99, "reasons": [...]}``,
  picked by the request's hash like every answer; otherwise ``{"answer": "..."}``.

Answers are deterministic: words picked by a hash of the model and messages. Knobs are global
(``POST /_emulator/config``) or per request (``x-emulator-*`` headers); see ``Settings`` and
``HEADERS``. It is a bare ASGI app rather than a framework app because it must control every byte
and its timing on the wire (headers before the body, keep-alives, a connection dropped mid-body),
and because benchmarks measure against it: with no latency configured it never sleeps.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import math
import random
import socket
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import asdict, dataclass, replace
from json.encoder import encode_basestring_ascii as _json_str  # C-accelerated; far cheaper than dumps
from types import TracebackType
from typing import Any

from seekless_local.emulator_text import json_pieces, pieces, prose_pieces, verdict_pieces
from seekless_local.servers import bind, read_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MODELS: tuple[str, ...] = ("deepseek-flash", "deepseek-v4-pro")
MAX_OUTPUT_TOKENS = 384 * 1024
CACHE_UNIT = 64  # DeepSeek's prefix cache counts hits in 64-token units
BAD_KEY = "sk-emulator-bad"
STATUS_FAULTS: tuple[str, ...] = ("429", "500", "503", "402", "401", "400")
STREAM_FAULTS: tuple[str, ...] = ("hang", "keepalive_forever", "reset", "malformed")
# A 200 whose content is wrong: empty, or not JSON (in JSON mode too). Stream or not.
CONTENT_FAULTS: tuple[str, ...] = ("blank", "invalid_json")
FAULTS: frozenset[str] = frozenset(STATUS_FAULTS + STREAM_FAULTS + CONTENT_FAULTS)
# What a prompt asking for a decision verdict names (seekless.rules.VERDICT_SYSTEM_PROMPT does).
VERDICT_KEYS: tuple[str, ...] = ('"decision"', '"confidence"', '"reasons"')
REQUEST_LOG_SIZE = 100

#: Per-request headers and what they override.
HEADERS: dict[str, str] = {
    "x-emulator-tokens": "content tokens (int)",
    "x-emulator-reasoning-tokens": "reasoning tokens when thinking (int)",
    "x-emulator-ttft-ms": "time to first token (ms)",
    "x-emulator-tps": "tokens per second (0 = all at once)",
    "x-emulator-keepalive-ms": "keep-alive interval while waiting (ms, 0 = none)",
    "x-emulator-fault": "one of FAULTS",
    "x-emulator-tool-call": "answer with one call to this function (when tools are given)",
    "x-emulator-retry-after": "Retry-After seconds on a 429 fault",
}

_ERRORS: dict[str, tuple[int, str, str, str]] = {
    # fault -> (status, message, type, code), as DeepSeek words them
    "400": (400, "Invalid request (emulated fault)", "invalid_request_error", "invalid_request_error"),
    "401": (
        401,
        "Authentication Fails, Your api key is invalid",
        "authentication_error",
        "invalid_request_error",
    ),
    "402": (402, "Insufficient Balance", "unknown_error", "invalid_request_error"),
    "429": (429, "Rate Limit Reached", "rate_limit_error", "rate_limit_reached"),
    "500": (500, "Server Error", "api_error", "internal_error"),
    "503": (503, "Server Overloaded", "api_error", "server_overloaded"),
}


@dataclass(frozen=True)
class Settings:
    """Global knobs, set with ``POST /_emulator/config`` or ``EmulatorServer.configure``."""

    tokens: int = 24
    reasoning_tokens: int = 8
    ttft_ms: float = 0.0
    tps: float = 0.0
    keepalive_ms: float = 1000.0
    usage_mode: str = "last_chunk"  # or "separate": an empty-choices chunk when include_usage
    retry_after: int = 1
    prefix_cache_size: int = 4096


@dataclass
class FaultPlan:
    """A global fault: every call, the next ``count`` calls, or each call with probability ``rate``.

    With both, each call fails with probability ``rate`` until ``count`` faults have been served.
    """

    fault: str | None = None
    rate: float | None = None
    count: int | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def draw(self) -> str | None:
        if self.fault is None or (self.count is not None and self.count <= 0):
            return None
        if self.rate is not None and self._rng.random() >= self.rate:
            return None
        if self.count is not None:
            self.count -= 1
        return self.fault

    def as_config(self) -> dict[str, Any]:
        return {"fault": self.fault, "fault_rate": self.rate, "fault_count": self.count, "seed": self.seed}


class ConfigError(ValueError):
    """A bad emulator setting (HTTP 400 on the control endpoint)."""


class _ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = extra.get("code", "invalid_request_error")
        self.param = extra.get("param")
        self.headers: list[tuple[bytes, bytes]] = extra.get("headers", [])

    def body(self) -> bytes:
        return _error_body(self.status, self.message, self.type, self.code, self.param)


class _ConnectionDropped(Exception):
    """Raised to make a server drop the connection when its transport cannot be reached directly."""


def _error_body(status: int, message: str, type_: str, code: str | None, param: str | None = None) -> bytes:
    error = {"message": message, "type": type_, "param": param, "code": code}
    return json.dumps({"error": error}).encode()


def _setting_values(raw: dict[str, Any]) -> dict[str, Any]:
    """Validate setting values; raises ConfigError."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key in ("tokens", "reasoning_tokens", "retry_after", "prefix_cache_size"):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{key} must be a non-negative integer")
        elif key in ("ttft_ms", "tps", "keepalive_ms"):
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
                raise ConfigError(f"{key} must be a non-negative number")
            value = float(value)
        elif key == "usage_mode":
            if value not in ("last_chunk", "separate"):
                raise ConfigError("usage_mode must be 'last_chunk' or 'separate'")
        else:
            raise ConfigError(f"unknown setting {key!r}")
        out[key] = value
    return out


def _fault_plan(raw: dict[str, Any]) -> FaultPlan:
    fault, rate, count, seed = (raw.get(k) for k in ("fault", "fault_rate", "fault_count", "seed"))
    if fault is not None and str(fault) not in FAULTS:
        raise ConfigError(f"unknown fault {fault!r}; one of {sorted(FAULTS)}")
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1):
        raise ConfigError("fault_rate must be a number in [0, 1]")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
        raise ConfigError("fault_count must be a non-negative integer")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ConfigError("seed must be an integer")
    return FaultPlan(None if fault is None else str(fault), rate, count, seed)


# --------------------------------------------------------------------------------------------------
# Request model: what one chat call asks for, after validation and per-request overrides


@dataclass
class _Call:
    model: str
    messages: list[dict[str, Any]]
    stream: bool
    thinking: bool
    json_mode: bool
    verdict: bool  # JSON mode, asked for a decision verdict
    max_tokens: int | None
    include_usage: bool
    tool_call: str | None
    tokens: int
    reasoning_tokens: int
    ttft: float  # seconds
    tps: float
    keepalive: float  # seconds, 0 = none
    usage_mode: str


def _message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    text = content if isinstance(content, str) else ""
    reasoning = message.get("reasoning_content")
    if isinstance(reasoning, str):
        text += reasoning
    if message.get("tool_calls"):
        text += json.dumps(message["tool_calls"])
    return text


def _validate(body: Any) -> tuple[str, list[dict[str, Any]], bool, bool, int | None, bool, bool]:
    """DeepSeek's request rules. Returns (model, messages, stream, thinking, max_tokens, json, usage)."""
    if not isinstance(body, dict):
        raise _ApiError(422, "Failed to deserialize the JSON body into the target type: expected an object")
    if "model" not in body:
        raise _ApiError(422, "Failed to deserialize the JSON body into the target type: missing field `model`")
    model = body["model"]
    if model not in MODELS:
        raise _ApiError(400, "Model Not Exist", param="model")
    messages = body.get("messages")
    if not messages:
        raise _ApiError(400, "messages must not be empty", param="messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise _ApiError(422, "Failed to deserialize the JSON body into the target type: messages")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise _ApiError(422, "Failed to deserialize the JSON body into the target type: stream")

    thinking_opt = body.get("thinking")
    thinking = True
    if thinking_opt is not None:
        if not isinstance(thinking_opt, dict) or thinking_opt.get("type") not in ("enabled", "disabled"):
            raise _ApiError(400, "thinking.type must be 'enabled' or 'disabled'", param="thinking")
        thinking = thinking_opt["type"] == "enabled"
    effort = body.get("reasoning_effort")
    if effort is not None and effort not in ("low", "medium", "high", "max"):
        raise _ApiError(400, "reasoning_effort must be one of low, high, max", param="reasoning_effort")

    max_tokens = body.get("max_tokens")
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= MAX_OUTPUT_TOKENS
    ):
        raise _ApiError(
            400,
            f"Invalid max_tokens value, the valid range of max_tokens is [1, {MAX_OUTPUT_TOKENS}]",
            param="max_tokens",
        )

    previous_role: str | None = None
    for message in messages:
        role = message.get("role")
        if role not in ("system", "user", "assistant", "tool"):
            raise _ApiError(422, f"Failed to deserialize the JSON body into the target type: role {role!r}")
        if role == "tool" and previous_role not in ("assistant_tool_calls", "tool"):
            raise _ApiError(
                400, "Messages with role 'tool' must be a response to a preceding message with 'tool_calls'"
            )
        if role == "assistant" and message.get("tool_calls"):
            if thinking and not message.get("reasoning_content"):
                raise _ApiError(
                    400,
                    "Missing `reasoning_content` field in the assistant message with tool_calls: in thinking "
                    "mode the `reasoning_content` must be passed back to the API.",
                    param="messages",
                )
            role = "assistant_tool_calls"
        previous_role = role

    response_format = body.get("response_format")
    json_mode = False
    if response_format is not None:
        kind = response_format.get("type") if isinstance(response_format, dict) else None
        if kind not in ("text", "json_object"):
            raise _ApiError(400, "response_format.type must be 'text' or 'json_object'", param="response_format")
        json_mode = kind == "json_object"
        if json_mode and not any("json" in _message_text(m).lower() for m in messages):
            raise _ApiError(
                400,
                "Prompt must contain the word 'json' in some form to use 'response_format' of type 'json_object'.",
                param="response_format",
            )

    stream_options = body.get("stream_options")
    include_usage = isinstance(stream_options, dict) and bool(stream_options.get("include_usage"))
    return model, messages, stream, thinking, max_tokens, json_mode, include_usage


def _asks_for_verdict(messages: list[dict[str, Any]]) -> bool:
    text = "".join(_message_text(message) for message in messages)
    return all(key in text for key in VERDICT_KEYS)


def _header_number(headers: dict[str, str], name: str, default: float) -> float:
    raw = headers.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise _ApiError(400, f"{name} must be a number") from None
    if not 0 <= value < math.inf:
        raise _ApiError(400, f"{name} must be a non-negative number")
    return value


# --------------------------------------------------------------------------------------------------
# Prefix cache


class _PrefixCache:
    """Hashes of message-list prefixes seen before (bounded LRU), as DeepSeek's disk cache sees them."""

    def __init__(self) -> None:
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    def clear(self) -> None:
        self._seen.clear()

    def usage(self, model: str, messages: list[dict[str, Any]], size: int) -> tuple[int, int, bytes]:
        """(prompt_tokens, cache hit tokens, digest of the whole request) and remember its prefixes."""
        digest = hashlib.blake2b(model.encode(), digest_size=16)
        prefixes: list[tuple[bytes, int]] = []
        chars = 0
        for message in messages:
            digest.update(json.dumps(message, sort_keys=True, separators=(",", ":")).encode())
            chars += len(_message_text(message))
            prefixes.append((digest.digest(), -(-chars // 4)))
        prompt_tokens = max(1, -(-chars // 4))
        hit = 0
        for key, tokens in reversed(prefixes):
            if key in self._seen:
                hit = min(prompt_tokens, tokens) // CACHE_UNIT * CACHE_UNIT
                break
        if size > 0:
            for key, _ in prefixes:
                self._seen[key] = None
                self._seen.move_to_end(key)
            while len(self._seen) > size:
                self._seen.popitem(last=False)
        return prompt_tokens, hit, prefixes[-1][0]


# --------------------------------------------------------------------------------------------------
# The ASGI app


_JSON_HEADERS = [(b"content-type", b"application/json")]
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_SSE_KEEPALIVE = b": keep-alive\n\n"
_BLANK_KEEPALIVE = b"\n"
_DONE = b"data: [DONE]\n\n"


class EmulatorApp:
    """The ASGI application. State lives here; ``EmulatorServer`` serves it over a socket."""

    def __init__(self, settings: Settings | None = None) -> None:
        self._lock = threading.Lock()
        self._defaults = settings or Settings()
        self.settings = self._defaults
        self._plan = FaultPlan()
        self._cache = _PrefixCache()
        self._calls = 0
        self._by_fault: dict[str, int] = {}
        self._requests: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_SIZE)
        self._waiting: set[asyncio.Future[bool]] = set()
        self._closing = False

    # ---- control surface (also called in-process, from other threads) ----

    def configure(self, **raw: Any) -> dict[str, Any]:
        """Apply settings and/or a global fault plan; returns the resulting config."""
        fault_keys = {"fault", "fault_rate", "fault_count", "seed"}
        values = _setting_values({k: v for k, v in raw.items() if k not in fault_keys})
        plan = _fault_plan(raw) if fault_keys & raw.keys() else None
        with self._lock:
            self.settings = replace(self.settings, **values)
            if plan is not None:
                self._plan = plan
            return self._config_locked()

    def reset(self, *, settings: bool = False) -> None:
        """Zero the counters, clear the global fault and the prefix cache (and settings, if asked)."""
        with self._lock:
            self._calls = 0
            self._by_fault = {}
            self._requests.clear()
            self._plan = FaultPlan()
            self._cache.clear()
            if settings:
                self.settings = self._defaults

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "calls": self._calls,
                "by_fault": dict(self._by_fault),
                "requests": list(self._requests),
                "config": self._config_locked(),
            }

    def begin_shutdown(self) -> None:
        """End every waiting response (hangs, endless keep-alives); call in the server's loop."""
        self._closing = True
        for waiter in list(self._waiting):
            if not waiter.done():
                waiter.set_result(True)

    def _config_locked(self) -> dict[str, Any]:
        return {**asdict(self.settings), **self._plan.as_config()}

    # ---- ASGI ----

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        if path.startswith("/v1/"):
            path = path[3:]
        if path == "/chat/completions":
            if method != "POST":
                await _send_error(send, _ApiError(405, "Method Not Allowed"))
                return
            await self._chat(scope, receive, send)
        elif path == "/models":
            await self._models(scope, send)
        elif path.startswith("/_emulator/"):
            await self._control(path, method, receive, send)
        else:
            await _send_error(send, _ApiError(404, f"Not Found: {scope['path']}"))

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _models(self, scope: Scope, send: Send) -> None:
        headers = _headers(scope)
        try:
            _check_auth(headers)
        except _ApiError as exc:
            await _send_error(send, exc)
            return
        created = 1_700_000_000
        data = [{"id": m, "object": "model", "created": created, "owned_by": "deepseek"} for m in MODELS]
        await _send_body(send, 200, json.dumps({"object": "list", "data": data}).encode())

    async def _control(self, path: str, method: str, receive: Receive, send: Send) -> None:
        if path == "/_emulator/stats" and method == "GET":
            await _send_body(send, 200, json.dumps(self.stats()).encode())
            return
        if path not in ("/_emulator/reset", "/_emulator/config") or method != "POST":
            await _send_error(send, _ApiError(404, f"Not Found: {path}"))
            return
        raw = await read_body(receive)
        try:
            body = json.loads(raw) if raw.strip() else {}
            if not isinstance(body, dict):
                raise ConfigError("body must be a JSON object")
            if path == "/_emulator/reset":
                self.reset(settings=bool(body.get("settings")))
                result: dict[str, Any] = self.stats()["config"]
            else:
                result = self.configure(**body)
        except (ValueError, ConfigError) as exc:
            await _send_error(send, _ApiError(400, str(exc)))
            return
        await _send_body(send, 200, json.dumps(result).encode())

    # ---- chat ----

    async def _chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = await read_body(receive)
        headers = _headers(scope)
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        with self._lock:
            self._calls += 1
            logged_headers = {k: v for k, v in headers.items() if k != "authorization"}
            logged_body = body if body is not None else raw.decode("utf-8", "replace")
            self._requests.append({"path": scope["path"], "headers": logged_headers, "body": logged_body})
            settings = self.settings
        try:
            _check_auth(headers)
            fault = headers.get("x-emulator-fault")
            if fault is not None and fault not in FAULTS:
                raise _ApiError(400, f"unknown x-emulator-fault {fault!r}; one of {sorted(FAULTS)}")
            with self._lock:
                if fault is None:
                    fault = self._plan.draw()
                if fault is not None:
                    self._by_fault[fault] = self._by_fault.get(fault, 0) + 1
            if fault in _ERRORS:
                raise _fault_error(fault, headers, settings)
            if body is None:
                raise _ApiError(400, "Failed to parse the request body as JSON")
            call = self._call(body, headers, settings)
            with self._lock:
                prompt_tokens, hit, digest = self._cache.usage(
                    call.model, call.messages, self.settings.prefix_cache_size
                )
        except _ApiError as exc:
            await _send_error(send, exc)
            return
        answer = _Answer(call, fault, prompt_tokens, hit, digest)
        if fault in ("hang", "keepalive_forever") or call.ttft or call.tps:
            await self._respond_slowly(call, answer, fault, receive, send)
        elif call.stream:
            await _start(send, 200, _SSE_HEADERS)
            events = answer.stream_events()
            if fault == "reset":
                await _send_chunk(send, b"".join(events[: min(4, len(events) - 1)]))
                await _drop(send)
                return
            await _send_chunk(send, b"".join(events), more=False)
        else:
            payload = answer.body()
            if fault == "reset":
                await _start(send, 200, [*_JSON_HEADERS, (b"content-length", str(len(payload)).encode())])
                await _send_chunk(send, payload[: len(payload) // 2])
                await _drop(send)
                return
            await _send_body(send, 200, payload)

    def _call(self, body: Any, headers: dict[str, str], settings: Settings) -> _Call:
        model, messages, stream, thinking, max_tokens, json_mode, include_usage = _validate(body)
        tool_call = headers.get("x-emulator-tool-call") if body.get("tools") else None
        return _Call(
            model=model,
            messages=messages,
            stream=stream,
            thinking=thinking,
            json_mode=json_mode,
            verdict=json_mode and _asks_for_verdict(messages),
            max_tokens=max_tokens,
            include_usage=include_usage,
            tool_call=tool_call or None,
            tokens=int(_header_number(headers, "x-emulator-tokens", settings.tokens)),
            reasoning_tokens=int(_header_number(headers, "x-emulator-reasoning-tokens", settings.reasoning_tokens)),
            ttft=_header_number(headers, "x-emulator-ttft-ms", settings.ttft_ms) / 1000,
            tps=_header_number(headers, "x-emulator-tps", settings.tps),
            keepalive=_header_number(headers, "x-emulator-keepalive-ms", settings.keepalive_ms) / 1000,
            usage_mode=settings.usage_mode,
        )

    async def _respond_slowly(
        self, call: _Call, answer: _Answer, fault: str | None, receive: Receive, send: Send
    ) -> None:
        """Every path that waits: watches for the client going away (or the server closing)."""
        loop = asyncio.get_running_loop()
        gone: asyncio.Future[bool] = loop.create_future()
        watcher = loop.create_task(_watch_disconnect(receive, gone))
        self._waiting.add(gone)
        if self._closing:
            gone.set_result(True)
        try:
            if fault == "hang":
                await gone
                await _drop(send)
                return
            keepalive = _SSE_KEEPALIVE if call.stream else _BLANK_KEEPALIVE
            await _start(send, 200, _SSE_HEADERS if call.stream else _JSON_HEADERS)
            start = loop.time()
            if fault == "keepalive_forever":
                await _keep_alive_until(send, gone, keepalive, call.keepalive or 1.0, start, math.inf)
                await _drop(send)
                return
            if not call.stream:
                generation = answer.completion_tokens / call.tps if call.tps else 0.0
                if not await _keep_alive_until(send, gone, keepalive, call.keepalive, start, call.ttft + generation):
                    await _drop(send)
                    return
                payload = answer.body()
                if fault == "reset":
                    await _send_chunk(send, payload[: len(payload) // 2])
                    await _drop(send)
                    return
                await _send_chunk(send, payload, more=False)
                return
            if not await _keep_alive_until(send, gone, keepalive, call.keepalive, start, call.ttft):
                await _drop(send)
                return
            events = answer.stream_events()
            # role chunk with the first token, the final chunk with the last: one send per token
            middle = events[1:-1]
            tokens = [events[0] + middle[0], *middle[1:]] if middle else [events[0]]
            tokens[-1] += events[-1]
            drop_at = min(3, len(tokens) - 1) if fault == "reset" else -1
            interval = 1 / call.tps if call.tps else 0.0
            first = loop.time()
            for index, event in enumerate(tokens):
                if index == drop_at:
                    await _drop(send)
                    return
                if interval and index and not await _sleep(gone, first + index * interval - loop.time()):
                    await _drop(send)
                    return
                await _send_chunk(send, event, more=index < len(tokens) - 1)
        finally:
            self._waiting.discard(gone)
            watcher.cancel()


def _fault_error(fault: str, headers: dict[str, str], settings: Settings) -> _ApiError:
    status, message, type_, code = _ERRORS[fault]
    extra: list[tuple[bytes, bytes]] = []
    if fault == "429":
        retry_after = int(_header_number(headers, "x-emulator-retry-after", settings.retry_after))
        extra.append((b"retry-after", str(retry_after).encode()))
    return _ApiError(status, message, type_, code=code, headers=extra)


class _Answer:
    """The deterministic answer to one call, as a JSON body or as SSE events."""

    def __init__(self, call: _Call, fault: str | None, prompt_tokens: int, hit: int, digest: bytes) -> None:
        self.call = call
        self.id = str(uuid.uuid4())
        self.created = int(time.time())
        budget = call.max_tokens if call.max_tokens is not None else math.inf
        n_reasoning = min(call.reasoning_tokens, budget) if call.thinking else 0
        self.reasoning = pieces(hashlib.blake2b(digest, digest_size=8, person=b"reason").digest(), int(n_reasoning))
        self.tool_call = call.tool_call
        if self.tool_call is not None:
            self.content: list[str] = []
            self.finish = "tool_calls"
            n_content = 2  # the call's two chunks: name, then arguments
        else:
            maker = verdict_pieces if call.verdict else json_pieces if call.json_mode else pieces
            if fault == "blank":
                full = []
            elif fault == "invalid_json":
                full = prose_pieces(digest, call.tokens)
            else:
                full = maker(digest, call.tokens)
            self.content = full[: max(0, int(min(len(full), budget - len(self.reasoning))))]
            wanted_reasoning = call.reasoning_tokens if call.thinking else 0
            cut = len(self.content) < len(full) or len(self.reasoning) < wanted_reasoning
            self.finish = "length" if cut else "stop"
            n_content = len(self.content)
        self.malformed = fault == "malformed"
        self.completion_tokens = len(self.reasoning) + n_content
        self.usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": hit},
            "prompt_cache_hit_tokens": hit,
            "prompt_cache_miss_tokens": prompt_tokens - hit,
            "completion_tokens_details": {"reasoning_tokens": len(self.reasoning)},
        }

    def _tool_call_id(self) -> str:
        return "call_00_" + hashlib.blake2b(self.id.encode(), digest_size=12).hexdigest()

    def body(self) -> bytes:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.content)}
        if self.call.thinking:
            message["reasoning_content"] = "".join(self.reasoning)
        if self.tool_call is not None:
            function = {"name": self.tool_call, "arguments": "{}"}
            message["tool_calls"] = [{"index": 0, "id": self._tool_call_id(), "type": "function", "function": function}]
        payload = {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.call.model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": self.finish}],
            "usage": self.usage,
            "system_fingerprint": "fp_emulator",
        }
        raw = json.dumps(payload, separators=(",", ":")).encode()
        return raw[: len(raw) * 2 // 3] if self.malformed else raw

    def stream_events(self) -> list[bytes]:
        """[role chunk, one chunk per token..., final chunk(s) + [DONE]]; the last entry ends the stream."""
        head = (
            f'data: {{"id":"{self.id}","object":"chat.completion.chunk","created":{self.created},'
            f'"model":{json.dumps(self.call.model)},"system_fingerprint":"fp_emulator",'
            '"choices":[{"index":0,"delta":'
        )
        tail = ',"logprobs":null,"finish_reason":null}]}\n\n'
        dumps = json.dumps
        thinking = self.call.thinking
        role = (
            '{"role":"assistant","content":null,"reasoning_content":""}'
            if thinking
            else ('{"role":"assistant","content":""}')
        )
        events = [(head + role + tail).encode()]
        events += [
            (head + '{"content":null,"reasoning_content":' + _json_str(p) + "}" + tail).encode() for p in self.reasoning
        ]
        content_key = '{"content":'
        content_end = ',"reasoning_content":null}' if thinking else "}"
        events += [(head + content_key + _json_str(p) + content_end + tail).encode() for p in self.content]
        if self.tool_call is not None:
            call = {
                "index": 0,
                "id": self._tool_call_id(),
                "type": "function",
                "function": {"name": self.tool_call, "arguments": ""},
            }
            events.append((head + '{"content":null,"tool_calls":' + dumps([call]) + "}" + tail).encode())
            args = [{"index": 0, "function": {"arguments": "{}"}}]
            events.append((head + '{"tool_calls":' + dumps(args) + "}" + tail).encode())
        if self.malformed:
            # a data line cut off mid-JSON, as a proxy or an overloaded server can produce
            broken = f'data: {{"id":"{self.id}","object":"chat.completion.chunk","choices":[{{"delta":{{"con\n\n'
            events.insert(min(3, len(events)), broken.encode())
        separate = self.call.usage_mode == "separate"
        final_delta = '{"content":null}' if self.tool_call is not None else '{"content":""}'
        usage = dumps(self.usage, separators=(",", ":"))
        final = head + final_delta + f',"logprobs":null,"finish_reason":"{self.finish}"}}]'
        final += "}\n\n" if separate else f',"usage":{usage}}}\n\n'
        if separate and self.call.include_usage:
            final += (
                f'data: {{"id":"{self.id}","object":"chat.completion.chunk","created":{self.created},'
                f'"model":{dumps(self.call.model)},"system_fingerprint":"fp_emulator","choices":[],"usage":{usage}}}\n\n'
            )
        events.append(final.encode() + _DONE)
        return events


# --------------------------------------------------------------------------------------------------
# Wire helpers


def _headers(scope: Scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in scope["headers"]:
        key = name.decode("latin-1")
        text = value.decode("latin-1")
        out[key] = f"{out[key]}, {text}" if key in out else text
    return out


def _check_auth(headers: dict[str, str]) -> None:
    scheme, _, key = headers.get("authorization", "").partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key or key == BAD_KEY:
        shown = f"****{key[-4:]}" if key else "(none)"
        raise _ApiError(401, f"Authentication Fails, Your api key: {shown} is invalid", "authentication_error")


async def _start(send: Send, status: int, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})


async def _send_chunk(send: Send, body: bytes, *, more: bool = True) -> None:
    await send({"type": "http.response.body", "body": body, "more_body": more})


async def _send_body(send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode()), *(extra or [])]
    await _start(send, status, headers)
    await _send_chunk(send, body, more=False)


async def _send_error(send: Send, error: _ApiError) -> None:
    await _send_body(send, error.status, error.body(), error.headers)


async def _watch_disconnect(receive: Receive, gone: asyncio.Future[bool]) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    if not gone.done():
        gone.set_result(True)


async def _sleep(gone: asyncio.Future[bool], seconds: float) -> bool:
    """Sleep unless the client goes away first; False when it did."""
    if gone.done():
        return False
    if seconds > 0:
        done, _ = await asyncio.wait((gone,), timeout=seconds)
        return not done
    return True


async def _keep_alive_until(
    send: Send, gone: asyncio.Future[bool], line: bytes, every: float, start: float, wait: float
) -> bool:
    """Wait ``wait`` seconds from ``start``, sending ``line`` every ``every`` seconds; False if gone."""
    loop = asyncio.get_running_loop()
    deadline = start + wait
    next_line = start + every if every > 0 else math.inf
    while True:
        now = loop.time()
        if now >= deadline:
            return not gone.done()
        if next_line < deadline:
            if not await _sleep(gone, next_line - now):
                return False
            await _send_chunk(send, line)
            next_line += every
        else:
            return await _sleep(gone, deadline - now)


async def _drop(send: Send) -> None:
    """Drop the connection mid-response: the client sees an incomplete message, not an error body."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:
        raise _ConnectionDropped
    transport.abort()
    await asyncio.sleep(0)  # let the server see connection_lost, so it does not log an error


class _QuietDrops(logging.Filter):
    """Keep uvicorn from logging our deliberate connection drops as application errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, _ConnectionDropped)


def _quiet_uvicorn() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietDrops) for f in logger.filters):
        logger.addFilter(_QuietDrops())


# --------------------------------------------------------------------------------------------------
# Serving


def _uvicorn_config(app: EmulatorApp, **overrides: Any) -> Any:
    import uvicorn

    options: dict[str, Any] = {
        "log_level": "warning",
        "access_log": False,
        "lifespan": "off",
        "ws": "none",
        "proxy_headers": False,
        "server_header": False,
        "timeout_graceful_shutdown": 3,
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)


class EmulatorServer:
    """The emulator on a real socket, in a background thread, for the lifetime of a ``with`` block.

    ``base_url`` is the DeepSeek base (no ``/v1``). ``stats``, ``reset`` and ``configure`` call the
    app directly; the HTTP control endpoints do the same for other processes.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, start_timeout: float = 10.0, **settings: Any) -> None:
        self.app = EmulatorApp()
        if settings:
            self.app.configure(**settings)
        self.host = host
        self.port = port
        self._start_timeout = start_timeout
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._server: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stats(self) -> dict[str, Any]:
        return self.app.stats()

    def reset(self, *, settings: bool = False) -> None:
        self.app.reset(settings=settings)

    def configure(self, **settings: Any) -> dict[str, Any]:
        return self.app.configure(**settings)

    def start(self) -> EmulatorServer:
        import uvicorn

        _quiet_uvicorn()
        sock = bind(self.host, self.port)
        self.port = sock.getsockname()[1]
        ready = self._ready

        class _Server(uvicorn.Server):
            async def startup(inner, sockets: list[socket.socket] | None = None) -> None:
                await super().startup(sockets)
                self._loop = asyncio.get_running_loop()
                ready.set()

        self._server = _Server(_uvicorn_config(self.app, log_config=None))

        def serve() -> None:
            try:
                self._server.run(sockets=[sock])
            except BaseException as exc:  # surfaced by start(), not lost in the thread
                self._error = exc
            finally:
                sock.close()
                ready.set()

        self._thread = threading.Thread(target=serve, name=f"deepseek-emulator:{self.port}", daemon=True)
        self._thread.start()
        if not ready.wait(self._start_timeout):
            self.stop()
            raise TimeoutError(f"emulator did not start within {self._start_timeout}s")
        if not self._server.started:
            self.stop()
            raise RuntimeError(f"emulator failed to start on {self.base_url}") from self._error
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                self._loop.call_soon_threadsafe(self.app.begin_shutdown)
        self._server.should_exit = True
        self._thread.join(timeout=15)
        self._thread = None

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """Run the emulator in the foreground until interrupted."""
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m seekless_local.emulator", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--ttft-ms", type=float, default=Settings.ttft_ms, help="time to first token")
    parser.add_argument("--tps", type=float, default=Settings.tps, help="tokens per second (0 = all at once)")
    parser.add_argument("--tokens", type=int, default=Settings.tokens, help="content tokens per answer")
    parser.add_argument("--reasoning-tokens", type=int, default=Settings.reasoning_tokens)
    parser.add_argument("--keepalive-ms", type=float, default=Settings.keepalive_ms)
    args = parser.parse_args(argv)
    try:
        settings = Settings(
            **_setting_values(
                {
                    "ttft_ms": args.ttft_ms,
                    "tps": args.tps,
                    "tokens": args.tokens,
                    "reasoning_tokens": args.reasoning_tokens,
                    "keepalive_ms": args.keepalive_ms,
                }
            )
        )
    except ConfigError as exc:
        parser.error(str(exc))
    app = EmulatorApp(settings)
    sock = bind(args.host, args.port)
    sock.listen(2048)  # connections queue from here on, so the URL works as soon as it is printed
    port = sock.getsockname()[1]
    _quiet_uvicorn()
    print(f"DeepSeek emulator on http://{args.host}:{port} (OpenAI SDK base_url: http://{args.host}:{port}/v1)")
    print(f"models {', '.join(MODELS)}; settings {asdict(settings)}; Ctrl+C to stop", flush=True)
    try:
        uvicorn.Server(_uvicorn_config(app)).run(sockets=[sock])
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
