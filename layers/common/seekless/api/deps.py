"""FastAPI dependencies as named Annotated aliases, so each route reads as one line of intent."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import Depends, Header, Request

from seekless import wiring
from seekless.adapters.tickets import RedisTicketStore
from seekless.chat import ChatService
from seekless.config import Settings
from seekless.models import Principal
from seekless.ports import SessionStore

# Leave the Lambda this much time after the upstream deadline to answer with a clean 504.
DEADLINE_MARGIN_SECONDS = 1.0


# Every dependency is async on purpose: FastAPI runs plain ``def`` dependencies on a worker thread,
# and the wiring caches per execution environment, i.e. per event-loop thread. Async clients built on
# a worker thread would belong to no loop the request runs on.


async def authenticate(authorization: Annotated[str | None, Header()] = None) -> Principal:
    return wiring.authenticator().authenticate(authorization)


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


CurrentPrincipal = Annotated[Principal, Depends(authenticate)]
Deadline = Annotated[float, Depends(deadline)]
Chat = Annotated[ChatService, Depends(chat_service)]
Sessions = Annotated[SessionStore, Depends(session_store)]
AppSettings = Annotated[Settings, Depends(settings)]
Tickets = Annotated[RedisTicketStore, Depends(ticket_store)]
