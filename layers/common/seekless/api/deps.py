"""FastAPI dependencies as named Annotated aliases, so each route reads as one line of intent."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from fastapi import Depends, Header, Path, Query, Request, Security
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ValidationError
from starlette.requests import HTTPConnection

from seekless import audit, wiring
from seekless.adapters.tickets import RedisTicketStore
from seekless.api.errors import validation_error
from seekless.audit import UsageStore
from seekless.batches import BatchService
from seekless.chat import ChatService
from seekless.config import Settings
from seekless.contracts import SESSION_ID_MAX_LENGTH, SESSION_ID_PATTERN, ChatCompletionRequest
from seekless.errors import PayloadTooLarge
from seekless.jobs import JobService
from seekless.keys import KeyAdmin
from seekless.models import Operator, Principal
from seekless.ports import SessionStore

if TYPE_CHECKING:
    from seekless.decisions import DecisionService

# Leave the Lambda this much time after the upstream deadline to answer with a clean 504.
DEADLINE_MARGIN_SECONDS = 1.0
# Ids in paths and list cursors become DynamoDB keys (2 KB at most; DynamoDB refuses a longer one with an
# error that would be a 500) and are echoed in a 404: every id seekless mints is far shorter.
ID_MAX_LENGTH = 128
M = TypeVar("M", bound=BaseModel)


# Every dependency is async on purpose: FastAPI runs plain ``def`` dependencies on a worker thread,
# and the wiring caches per execution environment, i.e. per event-loop thread. Async clients built on
# a worker thread would belong to no loop the request runs on.


class BearerKey(HTTPBearer):
    """``Authorization: Bearer <key>`` as /openapi.json's security scheme. The header goes to the
    authenticator as it came, which answers every problem with it (missing, malformed, unknown) in
    OpenAI's error schema, where HTTPBearer would answer its own 403."""

    async def __call__(self, request: HTTPConnection) -> str | None:  # type: ignore[override]
        return request.headers.get("Authorization")


API_KEY = BearerKey(scheme_name="ApiKey", bearerFormat="seekless API key", auto_error=False)


async def authenticate(authorization: Annotated[str | None, Security(API_KEY)]) -> Principal:
    principal = wiring.authenticator().authenticate(authorization)
    audit.note_principal(principal)
    return principal


async def authenticate_admin(authorization: Annotated[str | None, Header()] = None) -> Operator:
    """The admin key, never a tenant's: 401 otherwise, and 404 where no admin key is configured."""
    return wiring.admin_authenticator().authenticate(authorization)


async def deadline(request: Request) -> float:
    """An absolute monotonic deadline: the configured one, shortened by the Lambda's time left."""
    budget = wiring.settings().request_deadline_seconds
    context: Any = request.scope.get("aws.context")
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is not None:
        budget = min(budget, remaining() / 1000 - DEADLINE_MARGIN_SECONDS)
    return time.monotonic() + max(0.5, budget)


async def chat_service() -> ChatService:
    return wiring.chat_service()


async def session_store() -> SessionStore:
    return wiring.session_store()


async def settings() -> Settings:
    return wiring.settings()


async def ticket_store() -> RedisTicketStore:
    return wiring.ticket_store()


async def job_service() -> JobService:
    return wiring.job_service()


async def batch_service() -> BatchService:
    return wiring.batch_service()


async def usage_store() -> UsageStore:
    return wiring.usage_store()


async def key_admin() -> KeyAdmin:
    return wiring.key_admin()


async def decision_service() -> DecisionService:
    return wiring.decision_service()


CurrentPrincipal = Annotated[Principal, Depends(authenticate)]
AdminPrincipal = Annotated[Operator, Depends(authenticate_admin)]
Deadline = Annotated[float, Depends(deadline)]
Chat = Annotated[ChatService, Depends(chat_service)]
Sessions = Annotated[SessionStore, Depends(session_store)]
AppSettings = Annotated[Settings, Depends(settings)]
Tickets = Annotated[RedisTicketStore, Depends(ticket_store)]
Jobs = Annotated[JobService, Depends(job_service)]
Batches = Annotated[BatchService, Depends(batch_service)]
Usage = Annotated[UsageStore, Depends(usage_store)]
ResourceId = Annotated[str, Path(max_length=ID_MAX_LENGTH)]
After = Annotated[str | None, Query(max_length=ID_MAX_LENGTH)]
# X-Session-Id is held to the same rule as a body's session_id.
SessionHeader = Annotated[
    str | None, Header(min_length=1, max_length=SESSION_ID_MAX_LENGTH, pattern=SESSION_ID_PATTERN)
]
Keys = Annotated[KeyAdmin, Depends(key_admin)]
# The decisions service, and with it seekless.rules (some 40 ms of pydantic models and dataclasses), is
# imported by the first ruleset or decision request, not by every cold start of the REST function:
# FastAPI sees Any, mypy the service.
if TYPE_CHECKING:
    Decisions = Annotated[DecisionService, Depends(decision_service)]
else:
    Decisions = Annotated[Any, Depends(decision_service)]


async def json_body(request: Request, config: Settings, model: type[M], *, empty: M | None = None) -> M:
    """A body read by hand, as /v1/chat/completions reads it: the real size against the cap, then strict
    validation with OpenAI-style 400s. ``empty`` stands for a body the client left out."""
    raw = await request.body()
    limit = config.max_body_bytes
    if len(raw) > limit:
        raise PayloadTooLarge(f"The request body is {len(raw)} bytes; the limit is {limit}.")
    if empty is not None and not raw.strip():
        return empty
    try:
        return model.model_validate_json(raw)
    except ValidationError as error:
        raise validation_error(error) from error


async def chat_request(request: Request, config: AppSettings) -> ChatCompletionRequest:
    """A chat-completion body (a job's too), parsed as /v1/chat/completions parses it."""
    return await json_body(request, config, ChatCompletionRequest)


ChatRequestBody = Annotated[ChatCompletionRequest, Depends(chat_request)]
