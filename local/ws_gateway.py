"""A local API Gateway WebSocket API, driven by template.yaml: what `sam local` cannot run.

The routes, the route selection expression and the $connect authorizer come from the template
(``seekless_local.template.websocket_api``). Each route's function is invoked as API Gateway invokes
it, with a WebSocket proxy event, on its own warm execution environments
(``seekless_local.gateway.ExecutionEnvironments``):

- handshake: the REQUEST authorizer (its IAM policy decides: Allow, Deny → 403, ``Unauthorized`` →
  401, anything else → 500), then ``$connect`` (a non-2xx statusCode refuses the connection);
- each message: routed by the selection expression (``$default`` when the message is not JSON or no
  route matches), invocations running concurrently, the function's return value ignored;
- close, from either side: ``$disconnect`` with disconnectStatusCode and disconnectReason.

Beside the WebSocket port, one HTTP port serves what handlers reach with boto3 and an endpoint_url:
the ``@connections`` management API (``management_url``) and the Lambda Invoke API (``lambda_url``).

API Gateway's limits are enforced (``WebSocketLimits``): a frame over 32 KB or a message over 128 KB
closes the connection with 1009; 10 minutes without a message from the client, or 2 hours in all,
closes it with 1001 "Going away". Connect URLs are never logged with their query string (tickets
are credentials), nor credential headers.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import http
import json
import logging
import re
import secrets
import string
import threading
import time
import traceback
import uuid
import weakref
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from seekless_local.gateway import INTEGRATION_TIMEOUT_SECONDS, ExecutionEnvironments, Handler
from seekless_local.servers import bind, read_body
from seekless_local.template import WebSocketApiSpec, websocket_api

logger = logging.getLogger(__name__)

REGION = "us-east-1"
ACCOUNT_ID = "000000000000"
API_ID = "local"
MAX_POST_BYTES = 128 * 1024  # PostToConnection Data (the service model's max)
LAMBDA_SYNC_PAYLOAD_BYTES = 6 * 1024 * 1024
LAMBDA_EVENT_PAYLOAD_BYTES = 256 * 1024
_ID_ALPHABET = string.ascii_letters + string.digits
_CONNECTIONS_PATH = re.compile(r"(?:/[^/@]+)?/@connections/(?P<id>[^/]+)")
_INVOKE_PATH = re.compile(r"/2015-03-31/functions/(?P<name>[^/]+)/invocations")
_SENSITIVE_HEADERS = frozenset({"authorization", "cookie", "sec-websocket-protocol", "x-api-key"})


@dataclass(frozen=True)
class WebSocketLimits:
    """API Gateway's WebSocket quotas; tests shrink them."""

    max_message_bytes: int = 128 * 1024
    max_frame_bytes: int = 32 * 1024
    idle_timeout: float = 600.0  # seconds without a message from the client
    max_connection_seconds: float = 7200.0


def _aws_id() -> str:
    """An id shaped like API Gateway's connection, request and message ids ("L0SM9cOFvHcCIhw=")."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(15)) + "="


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(epoch * 1000) % 1000:03d}Z"


def _request_time(epoch: float) -> str:
    return time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(epoch))


@dataclass
class _Connection:
    id: str
    source_ip: str
    user_agent: str
    connected_at: float  # epoch seconds
    headers: dict[str, str]
    multi_headers: dict[str, list[str]]
    query: dict[str, list[str]]
    authorizer: dict[str, Any] | None = None
    ws: ServerConnection | None = None
    last_active_at: float = 0.0  # epoch seconds, either direction (GetConnection's LastActiveAt)
    last_inbound: float = 0.0  # monotonic, client → server only (the idle timer)
    opened: float = 0.0  # monotonic
    closing: tuple[int, str] | None = None  # set when the gateway closes it: the code and reason


class _Refused(Exception):
    """The handshake ends with this HTTP status instead of 101."""

    def __init__(self, status: int, message: str | None, body: str | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body if body is not None else json.dumps({"message": message})


class _RedactingLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The logger handed to websockets: at DEBUG it logs the request line and every header, which
    would leak ``?ticket=`` and ``Authorization``. Query strings and credential headers are cut."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return msg, kwargs  # keep websockets' own ``extra``

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        redacted = list(args)
        if msg == "< %s: %s" and len(args) == 2 and str(args[0]).lower() in _SENSITIVE_HEADERS:
            redacted[1] = "<redacted>"
        redacted = [redact_url(a) if isinstance(a, str) and a.startswith("/") else a for a in redacted]
        self.logger.log(level, msg, *redacted, **kwargs)


def redact_url(path: str) -> str:
    """The path without its query string: what may be logged of a connect URL."""
    base, sep, _ = path.partition("?")
    return f"{base}?<redacted>" if sep else base


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _wildcard(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.IGNORECASE if ignore_case else 0) is not None


def policy_allows(policy: Any, method_arn: str) -> bool:
    """IAM evaluation of an authorizer's policyDocument for ``execute-api:Invoke`` on ``method_arn``:
    an explicit Deny wins, then an Allow, else denied. Raises ValueError for a malformed policy."""
    if not isinstance(policy, dict) or "Statement" not in policy:
        raise ValueError("policyDocument has no Statement")
    allowed = False
    for statement in _as_list(policy["Statement"]):
        if not isinstance(statement, dict) or statement.get("Effect") not in ("Allow", "Deny"):
            raise ValueError("each Statement needs Effect Allow or Deny")
        actions = [a for a in _as_list(statement.get("Action")) if isinstance(a, str)]
        resources = [r for r in _as_list(statement.get("Resource")) if isinstance(r, str)]
        if not any(_wildcard(a, "execute-api:Invoke", ignore_case=True) for a in actions):
            continue
        if not any(_wildcard(r, method_arn) for r in resources):
            continue
        if statement["Effect"] == "Deny":
            return False
        allowed = True
    return allowed


def _authorizer_context(answer: Any, latency_ms: int) -> dict[str, Any]:
    """``requestContext.authorizer`` as API Gateway flattens it: the context's keys (numbers and
    booleans as strings), principalId and integrationLatency. Raises ValueError for a bad answer."""
    if not isinstance(answer, dict) or not isinstance(answer.get("principalId"), str):
        raise ValueError("the authorizer's answer has no principalId")
    context = answer.get("context") or {}
    if not isinstance(context, dict):
        raise ValueError("the authorizer's context is not an object")
    flat: dict[str, Any] = {}
    for key, value in context.items():
        if isinstance(value, bool):
            flat[key] = "true" if value else "false"
        elif isinstance(value, int | float | str):
            flat[key] = str(value)
        elif value is not None:
            raise ValueError(f"authorizer context value {key!r} is not a string, number or boolean")
    flat["principalId"] = answer["principalId"]
    flat["integrationLatency"] = latency_ms
    return flat


def _selection_path(expression: str) -> list[str] | None:
    """``$request.body.action`` (or ``${request.body.action}``) → ["action"]; None for others."""
    match = re.fullmatch(r"\$\{?request\.body\.([A-Za-z0-9_.\-]+)\}?", expression.strip())
    return match.group(1).split(".") if match else None


class WebSocketGateway:
    """API Gateway WebSocket in front of the template's route functions, for local use and tests.

    ``load(logical_id)`` returns a function's handler (it runs on the function's own environment
    thread, once per function). ``function_names`` maps logical ids to the names handlers use for
    them (Lambda Invoke accepts either, and ARNs). ``port=0`` picks a free port (``url`` tells it);
    ``http_port`` is the management/Invoke port (0: a free one). Use as a context manager, or
    ``start()``/``stop()``, from synchronous code: the servers run on a thread with its own loop.
    """

    def __init__(
        self,
        template: Mapping[str, Any] | WebSocketApiSpec,
        load: Callable[[str], Handler],
        *,
        host: str = "127.0.0.1",
        port: int = 3001,
        http_port: int = 0,
        stage: str = "local",
        limits: WebSocketLimits | None = None,
        function_names: Mapping[str, str] | None = None,
        environments: int = 8,
        integration_timeout: float = INTEGRATION_TIMEOUT_SECONDS,
        drain_timeout: float = 10.0,
    ) -> None:
        self.spec = template if isinstance(template, WebSocketApiSpec) else websocket_api(template)
        self._load = load
        self.stage = stage
        self.limits = limits or WebSocketLimits()
        self._function_names = dict(function_names or {})
        self._names = {lid: lid for lid in self.spec.functions} | {
            name: lid for lid, name in self._function_names.items()
        }
        self._environment_count = environments
        self._integration_timeout = integration_timeout
        self._drain_timeout = drain_timeout
        self._ws_socket = bind(host, port)
        self._http_socket = bind(host, http_port)
        self.host, self.port = self._ws_socket.getsockname()[:2]
        self.http_port = self._http_socket.getsockname()[1]
        self.domain_name = f"{self.host}:{self.port}"
        self.method_arn = f"arn:aws:execute-api:{REGION}:{ACCOUNT_ID}:{API_ID}/{stage}/$connect"

        self._environments: dict[str, ExecutionEnvironments] = {}
        self._environments_lock = threading.Lock()
        self._connections: dict[str, _Connection] = {}
        self._pending: weakref.WeakKeyDictionary[ServerConnection, _Connection] = weakref.WeakKeyDictionary()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Condition()
        self._state = "new"  # new → starting → ready → stopped, or failed
        self._error: BaseException | None = None

    # ------------------------------------------------------------ public surface

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def management_url(self) -> str:
        """The endpoint_url for boto3 ``apigatewaymanagementapi`` (stage in the path, as on AWS)."""
        return f"http://{self.host}:{self.http_port}/{self.stage}"

    @property
    def lambda_url(self) -> str:
        """The endpoint_url for boto3 ``lambda`` (Invoke only)."""
        return f"http://{self.host}:{self.http_port}"

    def connection_ids(self) -> list[str]:
        return list(self._connections.copy())

    def start(self, timeout: float = 15.0) -> WebSocketGateway:
        self._thread = threading.Thread(target=self._run, name="ws-gateway", daemon=True)
        with self._ready:
            self._state = "starting"
            self._thread.start()
            if not self._ready.wait_for(lambda: self._state != "starting", timeout):
                raise TimeoutError(f"WebSocket gateway did not start within {timeout}s")
        if self._state == "failed":
            self._thread.join(timeout)
            self._close_sockets()
            raise RuntimeError("WebSocket gateway failed to start") from self._error
        logger.info("WebSocket API at %s (management %s)", self.url, self.management_url)
        return self

    def stop(self, timeout: float = 60.0) -> None:
        """Close every connection ($disconnect runs for each), drain invocations, shut down."""
        loop, stopping = self._loop, self._stopping
        if self._thread is not None and loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                loop.call_soon_threadsafe(stopping.set)
            self._thread.join(timeout)
        self._close_sockets()

    def __enter__(self) -> WebSocketGateway:
        return self.start()

    def __exit__(self, *exc: tuple[type[BaseException], BaseException, TracebackType] | None) -> None:
        self.stop()

    # ------------------------------------------------------------ the loop thread

    def _close_sockets(self) -> None:
        self._ws_socket.close()
        self._http_socket.close()

    def _set_state(self, state: str) -> None:
        with self._ready:
            self._state = state
            self._ready.notify_all()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        # Invocations wait on their function's own threads (ExecutionEnvironments.invoke); the default
        # executor runs this loop's other blocking work (closing environments), sized for all of them.
        executor = ThreadPoolExecutor(
            max_workers=self._environment_count * max(1, len(self.spec.functions)) + 16,
            thread_name_prefix="ws-gateway-wait",
        )
        loop.set_default_executor(executor)
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:
            self._error = exc
            if self._state == "starting":
                self._set_state("failed")
            else:
                logger.exception("WebSocket gateway crashed")
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()
            asyncio.set_event_loop(None)
            if self._state != "failed":
                self._set_state("stopped")

    async def _main(self) -> None:
        import uvicorn

        self._stopping = asyncio.Event()
        ws_server = await serve(
            self._handle,
            sock=self._ws_socket,
            process_request=self._process_request,
            max_size=(self.limits.max_message_bytes, self.limits.max_frame_bytes),
            compression=None,  # API Gateway negotiates no permessage-deflate
            ping_interval=None,  # nor sends keepalive pings
            open_timeout=2 * self._integration_timeout + 5,
            logger=_RedactingLogger(logging.getLogger("websockets.server"), {}),
        )
        config = uvicorn.Config(
            self._http_app,
            interface="asgi3",  # a bound method: uvicorn would guess ASGI2
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        http_server = uvicorn.Server(config)
        http_task = asyncio.create_task(http_server.serve(sockets=[self._http_socket]))
        try:
            while not http_server.started:
                if http_task.done():
                    http_task.result()
                    raise RuntimeError("the management API server exited during startup")
                await asyncio.sleep(0.005)
            self._set_state("ready")
            await self._stopping.wait()
        finally:
            await self._shutdown(ws_server, http_server, http_task)

    async def _shutdown(self, ws_server: Server, http_server: Any, http_task: asyncio.Task[None]) -> None:
        for connection in list(self._connections.values()):
            if connection.closing is None:
                connection.closing = (1001, "Going away")
        ws_server.close(close_connections=True, code=1001, reason="Going away")
        await ws_server.wait_closed()  # every handler returned: $disconnect has run for each
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=self._drain_timeout)
            for task in pending:
                task.cancel()
            if pending:
                logger.warning("stopped waiting for %d invocation(s) still running", len(pending))
                await asyncio.wait(pending)
        http_server.should_exit = True
        await http_task
        await asyncio.to_thread(self._close_environments)

    def _close_environments(self) -> None:
        with self._environments_lock:
            environments, self._environments = list(self._environments.values()), {}
        closers = [threading.Thread(target=env.close, daemon=True) for env in environments]
        for closer in closers:
            closer.start()
        deadline = time.monotonic() + self._drain_timeout
        for closer in closers:
            closer.join(max(0.0, deadline - time.monotonic()))
            if closer.is_alive():
                logger.warning("an execution environment is still busy; leaving it behind")

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------ invoking functions

    def _environments_for(self, logical_id: str) -> ExecutionEnvironments:
        with self._environments_lock:
            environments = self._environments.get(logical_id)
            if environments is None:
                environments = ExecutionEnvironments(
                    lambda: self._load(logical_id),
                    name=self._function_names.get(logical_id, logical_id),
                    timeout=float(self.spec.functions.get(logical_id, 3)),
                    size=self._environment_count,
                )
                self._environments[logical_id] = environments
            return environments

    async def _invoke(self, logical_id: str, event: dict[str, Any]) -> Any:
        return await self._environments_for(logical_id).invoke(event)

    def _request_context(
        self, connection: _Connection, *, route_key: str, event_type: str, authorizer: bool = True
    ) -> dict[str, Any]:
        now = time.time()
        request_id = _aws_id()
        context: dict[str, Any] = {
            "routeKey": route_key,
            "eventType": event_type,
            "extendedRequestId": request_id,
            "requestTime": _request_time(now),
            "messageDirection": "IN",
            "stage": self.stage,
            "connectedAt": int(connection.connected_at * 1000),
            "requestTimeEpoch": int(now * 1000),
            "identity": {"userAgent": connection.user_agent, "sourceIp": connection.source_ip},
            "requestId": request_id,
            "domainName": self.domain_name,
            "connectionId": connection.id,
            "apiId": API_ID,
        }
        if authorizer and connection.authorizer is not None:
            context["authorizer"] = dict(connection.authorizer)
        return context

    def _http_parts(self, connection: _Connection) -> dict[str, Any]:
        parts: dict[str, Any] = {"headers": connection.headers, "multiValueHeaders": connection.multi_headers}
        if connection.query:
            parts["queryStringParameters"] = {k: v[-1] for k, v in connection.query.items()}
            parts["multiValueQueryStringParameters"] = connection.query
        return parts

    # ------------------------------------------------------------ handshake: authorizer, $connect

    def _new_connection(self, ws: ServerConnection, request: Request) -> _Connection:
        source_ip = str((ws.remote_address or ("127.0.0.1",))[0])
        multi: dict[str, list[str]] = {}
        for name, value in request.headers.raw_items():
            multi.setdefault(name, []).append(value)
        multi.setdefault("X-Forwarded-For", [source_ip])
        multi.setdefault("X-Forwarded-Port", [str(self.port)])
        multi.setdefault("X-Forwarded-Proto", ["http"])
        query: dict[str, list[str]] = {}
        for name, value in parse_qsl(urlsplit(request.path).query, keep_blank_values=True):
            query.setdefault(name, []).append(value)
        return _Connection(
            id=_aws_id(),
            source_ip=source_ip,
            user_agent=request.headers.get("User-Agent", ""),
            connected_at=time.time(),
            headers={name: values[-1] for name, values in multi.items()},
            multi_headers=multi,
            query=query,
        )

    async def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        connection = self._new_connection(ws, request)
        path = urlsplit(request.path).path
        try:
            await self._authorize(connection)
            await self._connect(connection)
        except _Refused as refused:
            logger.info("refused %s %s from %s: HTTP %d", connection.id, path, connection.source_ip, refused.status)
            return _response(refused.status, refused.body)
        self._pending[ws] = connection
        logger.info("connected %s %s from %s", connection.id, path, connection.source_ip)
        return None

    def _identity_present(self, connection: _Connection, source: str) -> bool:
        kind, _, name = source.removeprefix("route.request.").partition(".")
        if kind == "header":
            return any(h.lower() == name.lower() and v for h, v in connection.headers.items())
        if kind == "querystring":
            return bool(connection.query.get(name, [""])[-1])
        return True  # stage variables and context identity sources are always "present" here

    async def _authorize(self, connection: _Connection) -> None:
        authorizer = self.spec.authorizer
        if authorizer is None:
            return
        if not all(self._identity_present(connection, s) for s in authorizer.identity_sources):
            raise _Refused(401, "Unauthorized")  # API Gateway answers without invoking the authorizer
        event = {
            "type": "REQUEST",
            "methodArn": self.method_arn,
            **self._http_parts(connection),
            "stageVariables": {},
            "requestContext": self._request_context(connection, route_key="$connect", event_type="CONNECT"),
        }
        started = time.monotonic()
        try:
            answer = await asyncio.wait_for(self._invoke(authorizer.function, event), self._integration_timeout)
        except Exception as exc:
            if str(exc) == "Unauthorized":  # the Lambda authorizer convention for 401
                raise _Refused(401, "Unauthorized") from None
            logger.exception("authorizer %s failed", authorizer.function)
            raise _Refused(500, None) from None
        try:
            allowed = policy_allows(answer.get("policyDocument") if isinstance(answer, dict) else None, self.method_arn)
            context = _authorizer_context(answer, int((time.monotonic() - started) * 1000))
        except ValueError as exc:
            logger.error("authorizer %s answered badly: %s", authorizer.function, exc)
            raise _Refused(500, None) from None
        if not allowed:
            raise _Refused(403, "Forbidden")
        connection.authorizer = context

    async def _connect(self, connection: _Connection) -> None:
        function = self.spec.routes.get("$connect")
        if function is None:
            return
        event = {
            **self._http_parts(connection),
            "requestContext": self._request_context(connection, route_key="$connect", event_type="CONNECT"),
            "isBase64Encoded": False,
        }
        try:
            result = await asyncio.wait_for(self._invoke(function, event), self._integration_timeout)
        except Exception:
            logger.exception("$connect (%s) failed", function)
            raise _Refused(502, "Internal server error") from None
        status = result.get("statusCode", 200) if isinstance(result, dict) else 200
        try:
            status = int(status)
        except (TypeError, ValueError):
            raise _Refused(502, "Internal server error") from None
        if not 200 <= status < 300:
            body = result.get("body") if isinstance(result, dict) else None
            raise _Refused(status, None, body if isinstance(body, str) else "")

    # ------------------------------------------------------------ the connection

    async def _handle(self, ws: ServerConnection) -> None:
        connection = self._pending.pop(ws, None)
        if connection is None:
            return
        connection.ws = ws
        connection.opened = connection.last_inbound = time.monotonic()
        connection.last_active_at = time.time()
        self._connections[connection.id] = connection
        watchdog = asyncio.create_task(self._watch(connection))
        try:
            async for message in ws:
                connection.last_inbound = time.monotonic()
                connection.last_active_at = time.time()
                self._spawn(self._on_message(connection, message))
        except ConnectionClosed:
            pass  # 1009 and abnormal closures end here; the code is read below
        finally:
            watchdog.cancel()
            self._connections.pop(connection.id, None)
            await ws.wait_closed()
            code, reason = _close_status(connection, ws)
            logger.info("disconnected %s (%d %s)", connection.id, code, reason)
            await self._disconnect(connection, code, reason)

    async def _watch(self, connection: _Connection) -> None:
        """Close the connection when it has been idle too long or open too long, as AWS does."""
        while True:
            deadline = min(
                connection.last_inbound + self.limits.idle_timeout,
                connection.opened + self.limits.max_connection_seconds,
            )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._spawn(self._close(connection, 1001, "Going away"))
                return
            await asyncio.sleep(remaining)

    async def _close(self, connection: _Connection, code: int, reason: str) -> None:
        if connection.closing is None:
            connection.closing = (code, reason)
        if connection.ws is not None:
            await connection.ws.close(code, reason)

    async def _disconnect(self, connection: _Connection, code: int, reason: str) -> None:
        function = self.spec.routes.get("$disconnect")
        if function is None:
            return
        context = self._request_context(connection, route_key="$disconnect", event_type="DISCONNECT")
        context["disconnectStatusCode"] = code
        context["disconnectReason"] = reason
        headers = {"Host": self.domain_name, "x-api-key": "", "X-Forwarded-For": "", "x-restapi": ""}
        event = {
            "headers": headers,
            "multiValueHeaders": {k: [v] for k, v in headers.items()},
            "requestContext": context,
            "isBase64Encoded": False,
        }
        try:
            await asyncio.wait_for(self._invoke(function, event), self._integration_timeout)
        except Exception:
            logger.exception("$disconnect (%s) failed for %s", function, connection.id)

    def _select_route(self, message: str | bytes) -> str:
        path = _selection_path(self.spec.route_selection_expression)
        if isinstance(message, bytes) or path is None:
            return "$default"
        try:
            value: Any = json.loads(message)
        except (ValueError, RecursionError):  # nested too deep for Python's parser is not JSON to route by
            return "$default"
        for part in path:
            if not isinstance(value, dict) or part not in value:
                return "$default"
            value = value[part]
        if not isinstance(value, str) or value in ("$connect", "$disconnect") or value not in self.spec.routes:
            return "$default"
        return value

    async def _on_message(self, connection: _Connection, message: str | bytes) -> None:
        route_key = self._select_route(message)
        function = self.spec.routes.get(route_key)
        request_id = _aws_id()
        if function is None:  # no route and no $default: API Gateway answers on the socket
            await self._send_error(connection, "Forbidden", request_id)
            return
        context = self._request_context(connection, route_key=route_key, event_type="MESSAGE")
        context["messageId"] = _aws_id()
        context["requestId"] = context["extendedRequestId"] = request_id
        event = {
            "requestContext": context,
            "body": message if isinstance(message, str) else base64.b64encode(message).decode(),
            "isBase64Encoded": isinstance(message, bytes),
        }
        invocation = asyncio.ensure_future(self._invoke(function, event))
        done, _ = await asyncio.wait({invocation}, timeout=self._integration_timeout)
        if not done:  # API Gateway gives up on the integration; the function runs on
            await self._send_error(connection, "Endpoint request timed out", request_id)
            await asyncio.wait({invocation})
        error = invocation.exception()
        if error is not None:
            logger.error("%s (%s) failed", route_key, function, exc_info=error)
            if done:
                await self._send_error(connection, "Internal server error", request_id)

    async def _send_error(self, connection: _Connection, message: str, request_id: str) -> None:
        frame = json.dumps({"message": message, "connectionId": connection.id, "requestId": request_id})
        if connection.ws is not None:
            with contextlib.suppress(ConnectionClosed):
                await connection.ws.send(frame)

    # ------------------------------------------------------------ HTTP: @connections and Lambda Invoke

    async def _http_app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        path, method = scope["path"], scope["method"]
        if match := _CONNECTIONS_PATH.fullmatch(path):
            answer = await self._management(method, match["id"], body)
        elif (match := _INVOKE_PATH.fullmatch(path)) and method == "POST":
            answer = await self._lambda_invoke(match["name"], headers, body)
        else:
            answer = 404, {}, json.dumps({"message": "Not Found"}).encode()
        status, extra, payload = answer
        raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        raw += [(k.encode(), v.encode()) for k, v in extra.items()]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": payload})

    async def _management(self, method: str, connection_id: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        connection = self._connections.get(connection_id)
        if connection is None or connection.ws is None or connection.closing is not None:
            return _error(410, "GoneException", f"Connection {connection_id} is gone")
        if method == "POST":
            if len(body) > MAX_POST_BYTES:
                return _error(413, "PayloadTooLargeException", f"Message is larger than {MAX_POST_BYTES} bytes")
            try:
                data: str | bytes = body.decode("utf-8")
            except UnicodeDecodeError:
                data = body
            try:
                await connection.ws.send(data)
            except ConnectionClosed:
                return _error(410, "GoneException", f"Connection {connection_id} is gone")
            connection.last_active_at = time.time()
            return 200, {}, b""
        if method == "GET":
            info = {
                "connectedAt": _iso(connection.connected_at),
                "identity": {"sourceIp": connection.source_ip, "userAgent": connection.user_agent},
                "lastActiveAt": _iso(connection.last_active_at),
            }
            return 200, {}, json.dumps(info).encode()
        if method == "DELETE":
            connection.closing = (1000, "")
            self._spawn(self._close(connection, 1000, ""))
            return 204, {}, b""
        return _error(403, "ForbiddenException", f"{method} is not supported on @connections")

    def _function_for(self, name: str) -> str | None:
        if ":function:" in name:  # a full or partial ARN
            name = name.split(":function:", 1)[1]
        name = name.split(":", 1)[0]  # a version or alias qualifier
        return self._names.get(name)

    async def _lambda_invoke(
        self, name: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        logical_id = self._function_for(name)
        if logical_id is None:
            arn = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{name}"
            return _lambda_error(404, "ResourceNotFoundException", f"Function not found: {arn}")
        invocation_type = headers.get("x-amz-invocation-type", "RequestResponse")
        if invocation_type not in ("RequestResponse", "Event", "DryRun"):
            return _lambda_error(400, "InvalidParameterValueException", f"Bad InvocationType {invocation_type}")
        limit = LAMBDA_EVENT_PAYLOAD_BYTES if invocation_type == "Event" else LAMBDA_SYNC_PAYLOAD_BYTES
        if len(body) > limit:
            message = f"Request must be smaller than {limit} bytes for the InvokeFunction operation"
            return _lambda_error(413, "RequestTooLargeException", message)
        try:
            event = json.loads(body) if body.strip() else {}
        except ValueError as exc:
            return _lambda_error(
                400, "InvalidRequestContentException", f"Could not parse request body into json: {exc}"
            )
        if invocation_type == "DryRun":
            return 204, {}, b""
        if invocation_type == "Event":
            self._spawn(self._invoke_event(logical_id, event))
            return 202, {}, b""
        version = {"X-Amz-Executed-Version": "$LATEST"}
        try:
            result = await self._invoke(logical_id, event)
            return 200, version, json.dumps(result).encode()
        except Exception as exc:
            marshal = isinstance(exc, TypeError | ValueError) and "JSON" in str(exc)
            error = {
                "errorMessage": str(exc),
                "errorType": "Runtime.MarshalError" if marshal else type(exc).__name__,
                "requestId": str(uuid.uuid4()),
                "stackTrace": traceback.format_tb(exc.__traceback__),
            }
            return 200, {**version, "X-Amz-Function-Error": "Unhandled"}, json.dumps(error).encode()

    async def _invoke_event(self, logical_id: str, event: Any) -> None:
        try:
            await self._invoke(logical_id, event)
        except Exception:  # Lambda would retry twice, then drop it (no DLQ here)
            logger.exception("asynchronous invocation of %s failed", logical_id)


def _close_status(connection: _Connection, ws: ServerConnection) -> tuple[int, str]:
    """disconnectStatusCode and disconnectReason: the gateway's own close, else what the client sent."""
    if connection.closing is not None:
        return connection.closing
    protocol = ws.protocol
    received, sent = protocol.close_rcvd, protocol.close_sent
    if received is not None and (sent is None or protocol.close_rcvd_then_sent):
        if received.code == 1005:
            return 1005, "Client-side close frame status not set"
        return received.code, received.reason
    if sent is not None:
        return sent.code, sent.reason
    return 1006, "Connection closed abnormally"


def _response(status: int, body: str) -> Response:
    data = body.encode()
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Length", str(len(data))),
            ("Content-Type", "application/json"),
        ]
    )
    return Response(status, phrase, headers, data)


def _error(status: int, code: str, message: str) -> tuple[int, dict[str, str], bytes]:
    """The rest-json error shape botocore maps to ``client.exceptions.<code>``."""
    return status, {"x-amzn-ErrorType": code}, json.dumps({"message": message}).encode()


def _lambda_error(status: int, code: str, message: str) -> tuple[int, dict[str, str], bytes]:
    return status, {"x-amzn-ErrorType": code}, json.dumps({"Type": "User", "Message": message}).encode()
