"""FastAPI dependencies as named Annotated aliases, so each route reads as one line of intent."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import Depends, Header, Request

from seekless import wiring
from seekless.auth import Authenticator
from seekless.chat import ChatService
from seekless.config import Settings
from seekless.models import Principal
from seekless.ports import SessionStore

# Leave the Lambda this much time after the upstream deadline to answer with a clean 504.
DEADLINE_MARGIN_SECONDS = 1.0


def authenticate(authorization: Annotated[str | None, Header()] = None) -> Principal:
    return wiring.authenticator().authenticate(authorization)


def deadline(request: Request) -> float:
    """An absolute monotonic deadline: the configured one, shortened by the Lambda's time left."""
    budget = wiring.settings().request_deadline_seconds
    context: Any = request.scope.get("aws.context")
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is not None:
        budget = min(budget, remaining() / 1000 - DEADLINE_MARGIN_SECONDS)
    return time.monotonic() + max(0.5, budget)


CurrentPrincipal = Annotated[Principal, Depends(authenticate)]
Deadline = Annotated[float, Depends(deadline)]
Chat = Annotated[ChatService, Depends(wiring.chat_service)]
Sessions = Annotated[SessionStore, Depends(wiring.session_store)]
AppSettings = Annotated[Settings, Depends(wiring.settings)]
Auth = Annotated[Authenticator, Depends(wiring.authenticator)]
