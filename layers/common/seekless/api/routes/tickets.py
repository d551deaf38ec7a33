"""POST /v1/ws-tickets: a short-lived, single-use ticket for a browser's WebSocket handshake."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from seekless.api import docs
from seekless.api.deps import CurrentPrincipal, Tickets

router = APIRouter(prefix="/v1", tags=["websocket"])


@router.post("/ws-tickets", status_code=201, response_model=None, responses=docs.answers("WsTicket", status=201))
async def create_ticket(principal: CurrentPrincipal, tickets: Tickets) -> dict[str, Any]:
    """Browsers cannot send headers at a WebSocket handshake: connect with ``?ticket=<ticket>`` instead."""
    return {"ticket": tickets.issue(principal), "expires_in": tickets.ttl_seconds}
