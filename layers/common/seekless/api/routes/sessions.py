"""Conversations: /v1/sessions. A chat completion naming a session continues it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from seekless.api import docs
from seekless.api.deps import After, CurrentPrincipal, ResourceId, Sessions
from seekless.api.lists import list_page
from seekless.contracts import Metadata

router = APIRouter(prefix="/v1/sessions", tags=["sessions"])

Limit = Annotated[int, Query(ge=1, le=100)]


class CreateSession(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: Annotated[str, Field(max_length=256)] | None = None
    metadata: Metadata = {}


@router.post("", status_code=201, response_model=None, responses=docs.answers("Session", 400, status=201))
def create_session(
    principal: CurrentPrincipal, sessions: Sessions, body: CreateSession | None = None
) -> dict[str, Any]:
    body = body or CreateSession()
    return sessions.create(principal.tenant_id, title=body.title, metadata=body.metadata).to_api()


@router.get("", response_model=None, responses=docs.answers("SessionList", 400, 404))
def list_sessions(
    principal: CurrentPrincipal, sessions: Sessions, limit: Limit = 20, after: After = None
) -> dict[str, Any]:
    page = sessions.list_sessions(principal.tenant_id, limit=limit, after=after)
    return list_page([s.to_api() for s in page.items], page.has_more)


@router.get("/{session_id}", response_model=None, responses=docs.answers("SessionDetail", 400, 404))
def get_session(
    session_id: ResourceId,
    principal: CurrentPrincipal,
    sessions: Sessions,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[str | None, Query(pattern=r"^msg_\d{8}$")] = None,
) -> dict[str, Any]:
    """The session and a page of its messages, oldest first; page on with ``after=<last_id>``."""
    session = sessions.get(principal.tenant_id, session_id)
    after_seq = int(after.removeprefix("msg_")) if after else None
    page = sessions.messages(principal.tenant_id, session_id, limit=limit, after=after_seq)
    return {**session.to_api(), "messages": list_page([m.to_api() for m in page.items], page.has_more)}


@router.delete("/{session_id}", response_model=None, responses=docs.answers("SessionDeleted", 400, 404))
def delete_session(session_id: ResourceId, principal: CurrentPrincipal, sessions: Sessions) -> dict[str, Any]:
    sessions.delete(principal.tenant_id, session_id)
    return {"id": session_id, "object": "session.deleted", "deleted": True}
