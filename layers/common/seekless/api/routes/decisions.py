"""Hybrid decisions: /v1/decisions (docs/DECISIONS.md). Rules first, DeepSeek only when no rule settles
the record; every decision is kept and can be read back for audit. The body is read by hand, as
/v1/rulesets reads its own (see there)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from seekless.api import docs
from seekless.api.deps import After, AppSettings, CurrentPrincipal, Deadline, Decisions, ResourceId, json_body
from seekless.api.lists import list_page

router = APIRouter(prefix="/v1/decisions", tags=["decisions"])

Limit = Annotated[int, Query(ge=1, le=100)]


@router.post("", response_model=None, responses=docs.answers("Decision", 400, 404, 429, 502, 504))
async def create_decision(
    request: Request, principal: CurrentPrincipal, decisions: Decisions, deadline: Deadline, config: AppSettings
) -> dict[str, Any]:
    """Decide on one record. ``Cache-Control: no-cache`` asks the model again for a record decided
    before; ``no-store`` (or ``x-seekless-cache: off``) neither reads nor fills the decision cache."""
    from seekless.decisions import DecisionRequest

    body = await json_body(request, config, DecisionRequest)
    result = await decisions.decide(
        principal,
        body.ruleset,
        body.input,
        version=body.version,
        model=body.model,
        headers=request.headers,
        deadline=deadline,
    )
    return result.to_api()


@router.get("", response_model=None, responses=docs.answers("DecisionList", 400))
def list_decisions(
    principal: CurrentPrincipal, decisions: Decisions, limit: Limit = 20, after: After = None
) -> dict[str, Any]:
    """The tenant's decisions, newest first; page on with ``after=<last_id>``."""
    page = decisions.list_decisions(principal, limit=limit, after=after)
    return list_page([result.to_api() for result in page.items], page.has_more)


@router.get("/{decision_id}", response_model=None, responses=docs.answers("Decision", 400, 404))
def get_decision(decision_id: ResourceId, principal: CurrentPrincipal, decisions: Decisions) -> dict[str, Any]:
    """One decision as it was answered, the model's raw answer included."""
    return decisions.get_decision(principal, decision_id).to_api()
