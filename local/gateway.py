"""A local API Gateway REST (v1) proxy: HTTP in, the Lambda proxy event to the handler, HTTP out.

The function is the one template.yaml declares, imported from its own folder and invoked exactly as
Lambda invokes it: ``handler(event, context)`` with a REST v1 proxy event. Each request runs on one of
a fixed pool of "execution environments": threads that live as long as the gateway, each with its
own event loop and its own per-environment clients, handling one invocation at a time, like Lambda.
The 29 s integration timeout answers 504 as API Gateway does.
"""

from __future__ import annotations

import asyncio
import base64
import json
import queue
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from seekless_local.servers import read_body

INTEGRATION_TIMEOUT_SECONDS = 29.0
_TEXT_TYPES = ("text/", "application/json", "application/javascript", "application/xml")


@dataclass
class LocalContext:
    """The parts of the Lambda context object that handlers and Powertools read."""

    function_name: str
    timeout_seconds: float
    memory_limit_in_mb: int = 1024
    aws_request_id: str = ""
    function_version: str = "$LATEST"
    log_group_name: str = ""
    log_stream_name: str = "local"
    _started: float = 0.0

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:000000000000:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._started + self.timeout_seconds - time.monotonic()) * 1000))


def _new_environment_loop() -> None:
    asyncio.set_event_loop(asyncio.new_event_loop())


def _end_environment() -> None:
    from seekless import wiring

    wiring.close_environment()
    loop = asyncio.get_event_loop()
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()
    asyncio.set_event_loop(None)


Handler = Callable[[dict[str, Any], Any], Any]


class ExecutionEnvironments:
    """Warm environments for one function: each a thread of its own with its own event loop and its
    own per-environment clients, running one invocation at a time, as Lambda does.

    ``load`` imports the handler (the init phase). It runs on an environment's thread, where module
    code that sets up an event loop (Mangum does) finds that environment's loop, not the caller's.
    """

    def __init__(self, load: Callable[[], Handler], *, name: str, timeout: float, size: int = 4):
        self._load = load
        self._handler: Handler | None = None
        self._init_lock = threading.Lock()
        self._name = name
        self._timeout = timeout
        self._environments = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"env-{name}-{i}", initializer=_new_environment_loop)
            for i in range(size)
        ]
        self._idle: queue.SimpleQueue[ThreadPoolExecutor] = queue.SimpleQueue()
        for environment in self._environments:
            self._idle.put(environment)
        # Where an awaited invocation waits for its environment and its answer: threads of this function's
        # own, one per environment. On the loop's default executor (min(32, cores + 4) threads, shared by
        # every function the loop serves), long invocations (a generator streams for minutes) would hold
        # every thread, and other functions (the authorizer, $connect, a `cancel`) would wait behind them.
        self._callers = ThreadPoolExecutor(max_workers=size, thread_name_prefix=f"invoke-{name}")

    def _invoke(self, event: dict[str, Any]) -> Any:
        with self._init_lock:
            if self._handler is None:
                self._handler = self._load()
        context = LocalContext(
            function_name=self._name,
            timeout_seconds=self._timeout,
            aws_request_id=str(uuid.uuid4()),
            log_group_name=f"/aws/lambda/{self._name}",
            _started=time.monotonic(),
        )
        return self._handler(event, context)

    def invoke_sync(self, event: dict[str, Any]) -> Any:
        environment = self._idle.get()
        try:
            return environment.submit(self._invoke, event).result()
        finally:
            self._idle.put(environment)

    async def invoke(self, event: dict[str, Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._callers, self.invoke_sync, event)

    def close(self) -> None:
        """Shut every environment down, closing its clients on its own loop first."""
        for environment in self._environments:
            environment.submit(_end_environment)
            environment.shutdown(wait=True, cancel_futures=False)
        self._callers.shutdown(wait=False, cancel_futures=True)


def rest_event(
    *,
    method: str,
    path: str,
    query: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    source_ip: str,
    stage: str,
) -> dict[str, Any]:
    """Build an API Gateway REST (v1) proxy event for ``ANY /`` or ``ANY /{proxy+}``."""
    multi_headers: dict[str, list[str]] = {}
    for raw_name, raw_value in headers:
        multi_headers.setdefault(raw_name.decode("latin-1").title(), []).append(raw_value.decode("latin-1"))
    multi_query: dict[str, list[str]] = {}
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        multi_query.setdefault(name, []).append(value)
    content_type = next((v[0] for k, v in multi_headers.items() if k.lower() == "content-type"), "")
    is_text = not body or content_type.startswith(_TEXT_TYPES)
    proxy = path.lstrip("/")
    now = time.time()
    return {
        "resource": "/{proxy+}" if proxy else "/",
        "path": path,
        "httpMethod": method,
        "headers": {k: v[-1] for k, v in multi_headers.items()} or None,
        "multiValueHeaders": multi_headers or None,
        "queryStringParameters": {k: v[-1] for k, v in multi_query.items()} or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": {"proxy": proxy} if proxy else None,
        "stageVariables": None,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "resourceId": "local",
            "resourcePath": "/{proxy+}" if proxy else "/",
            "httpMethod": method,
            "path": f"/{stage}{path}",
            "stage": stage,
            "protocol": "HTTP/1.1",
            "requestId": str(uuid.uuid4()),
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "requestTimeEpoch": int(now * 1000),
            "identity": {"sourceIp": source_ip, "userAgent": multi_headers.get("User-Agent", [None])[0]},
            "domainName": "127.0.0.1",
        },
        # API Gateway passes a text body that is not valid UTF-8 on with U+FFFD in place of the bad
        # bytes (the app then refuses it as invalid JSON); it never fails the request for it.
        "body": (body.decode(errors="replace") if is_text else base64.b64encode(body).decode()) if body else None,
        "isBase64Encoded": bool(body) and not is_text,
    }


class RestGateway:
    """An ASGI app that plays API Gateway in front of one function (served by uvicorn)."""

    def __init__(self, environments: ExecutionEnvironments, *, stage: str = "local") -> None:
        self._environments = environments
        self._stage = stage
        self.invocations = 0
        self._lock = threading.Lock()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                pass
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        client = scope.get("client") or ("127.0.0.1", 0)
        event = rest_event(
            method=scope["method"],
            path=scope["path"],
            query=scope.get("query_string", b""),
            headers=scope["headers"],
            body=body,
            source_ip=client[0],
            stage=self._stage,
        )
        with self._lock:
            self.invocations += 1
        try:
            result = await asyncio.wait_for(self._environments.invoke(event), INTEGRATION_TIMEOUT_SECONDS)
        except TimeoutError:
            await _respond(
                send,
                504,
                {"content-type": ["application/json"]},
                json.dumps({"message": "Endpoint request timed out"}).encode(),
            )
            return
        except Exception:  # the handler crashed: API Gateway answers 502 for a failed invocation
            await _respond(
                send,
                502,
                {"content-type": ["application/json"]},
                json.dumps({"message": "Internal server error"}).encode(),
            )
            return
        await _respond(send, *_proxy_response(result))


def _proxy_response(result: Any) -> tuple[int, dict[str, list[str]], bytes]:
    if not isinstance(result, dict) or "statusCode" not in result:
        return 502, {"content-type": ["application/json"]}, b'{"message": "Internal server error"}'
    headers: dict[str, list[str]] = {k.lower(): [str(v)] for k, v in (result.get("headers") or {}).items()}
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers[name.lower()] = [str(v) for v in values]
    raw = result.get("body") or ""
    body = base64.b64decode(raw) if result.get("isBase64Encoded") else raw.encode()
    return int(result["statusCode"]), headers, body


async def _respond(send: Any, status: int, headers: dict[str, list[str]], body: bytes) -> None:
    raw_headers = [(k.encode(), v.encode()) for k, values in headers.items() for v in values if k != "content-length"]
    raw_headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})
