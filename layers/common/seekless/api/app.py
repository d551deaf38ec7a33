"""The FastAPI application: routers, the error table and a body-size guard. No clients are built here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from seekless import wiring
from seekless.api import docs, errors
from seekless.api.routes import (
    admin_keys,
    batches,
    chat,
    decisions,
    jobs,
    models,
    page,
    rulesets,
    sessions,
    tickets,
    usage,
)
from seekless.audit import Auditor
from seekless.config import Settings
from seekless.errors import PayloadTooLarge
from seekless.telemetry import Telemetry


class BodyLimit:
    """Refuse a declared body over the cap before reading it (the chat route also checks real size)."""

    def __init__(self, app: ASGIApp, settings: Callable[[], Settings]) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            limit = self.settings().max_body_bytes
            for name, value in scope.get("headers", ()):
                if name == b"content-length" and value.isdigit() and int(value) > limit:
                    response = errors.error_response(
                        PayloadTooLarge(f"The request body is {int(value)} bytes; the limit is {limit}.")
                    )
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


class RequestMetrics:
    """Count every request and its outcome class, so each invocation publishes at least one metric."""

    def __init__(self, app: ASGIApp, telemetry: Callable[[], Telemetry]) -> None:
        self.app = app
        self.telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        telemetry = self.telemetry()
        telemetry.count("Requests")

        async def observe(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] >= 400:
                telemetry.count("ServerErrors" if message["status"] >= 500 else "ClientErrors")
            await send(message)

        await self.app(scope, receive, observe)


class AuditTrail:
    """One audit record per HTTP request: its route template, status and latency; the authentication
    dependency and the chat service fill in who asked and what it cost."""

    def __init__(self, app: ASGIApp, auditor: Callable[[], Auditor]) -> None:
        self.app = app
        self.auditor = auditor

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        event = scope.get("aws.event") or {}
        request_id = (event.get("requestContext") or {}).get("requestId")
        async with self.auditor().request(scope["method"] + " " + scope["path"], request_id=request_id) as record:

            async def observe(message: Message) -> None:
                if message["type"] == "http.response.start":
                    record.status = message["status"]
                await send(message)

            try:
                await self.app(scope, receive, observe)
            finally:
                route = scope.get("route")  # set by routing: the template, never ids from the path
                template = getattr(route, "path", None)
                record.route = f"{scope['method']} {template or '(unmatched)'}"


def create_app(
    *,
    settings: Callable[[], Settings] = wiring.settings,
    telemetry: Callable[[], Telemetry] = wiring.telemetry,
    auditor: Callable[[], Auditor] = wiring.auditor,
) -> FastAPI:
    """The app. Middleware reaches settings and metrics through these factories (tests pass their own);
    routes reach services through the dependencies in ``deps``."""
    app = FastAPI(
        title="seekless",
        version="0.1.0",
        description="OpenAI-compatible DeepSeek gateway on AWS Lambda.",
        openapi_url="/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    errors.install(app)
    app.add_middleware(BodyLimit, settings=settings)
    app.add_middleware(RequestMetrics, telemetry=telemetry)
    app.add_middleware(AuditTrail, auditor=auditor)  # outermost: even a refused body leaves a record

    @app.get("/healthz", tags=["health"], response_model=None, responses=docs.answers("Health", authenticated=False))
    def healthz() -> dict[str, Any]:
        return {"status": "ok"}

    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            # Completed on the first /openapi.json request, not at import, where building the JSON
            # schemas would cost every cold start.
            docs.document(default_openapi())
        return app.openapi_schema  # type: ignore[return-value]  # set by default_openapi

    app.openapi = openapi  # type: ignore[method-assign]
    app.include_router(chat.router)
    app.include_router(models.router)
    app.include_router(sessions.router)
    app.include_router(tickets.router)
    app.include_router(jobs.router)
    app.include_router(batches.router)
    app.include_router(usage.router)
    app.include_router(rulesets.router)
    app.include_router(decisions.router)
    app.include_router(page.router)
    app.include_router(admin_keys.router)
    return app
