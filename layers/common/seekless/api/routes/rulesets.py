"""Rulesets of hybrid decisions: /v1/rulesets (docs/DECISIONS.md). Pushing an id again makes its next
version; versions never change, and a decision names the one it ran under.

The body is read by hand (``deps.json_body``: its real size against the cap, then strict validation)
so that ``seekless.rules`` loads with the first ruleset or decision request rather than with every cold
start (see ``deps.Decisions``); ``docs.document`` puts it in /openapi.json.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from seekless.api import docs
from seekless.api.deps import AppSettings, CurrentPrincipal, Decisions, ResourceId, json_body
from seekless.api.lists import list_page

router = APIRouter(prefix="/v1/rulesets", tags=["decisions"])

Limit = Annotated[int, Query(ge=1, le=100)]
# Versions are stored zero-padded to eight digits.
Version = Annotated[int | None, Query(ge=1, le=99_999_999)]
RulesetCursor = Annotated[str | None, Query(max_length=128)]


@router.post("", status_code=201, response_model=None, responses=docs.answers("Ruleset", 400, 409, status=201))
async def create_ruleset(
    request: Request, principal: CurrentPrincipal, decisions: Decisions, config: AppSettings
) -> dict[str, Any]:
    """Compile every rule, then store the ruleset as its id's next version. A rule that does not compile
    is a 400 ``ruleset_invalid`` listing every problem (rule, field, line and column) in ``details``."""
    from seekless.rules import RulesetSpec

    spec = await json_body(request, config, RulesetSpec)
    return decisions.publish(principal, spec).to_api()


@router.get("", response_model=None, responses=docs.answers("RulesetList", 400))
def list_rulesets(
    principal: CurrentPrincipal, decisions: Decisions, limit: Limit = 20, after: RulesetCursor = None
) -> dict[str, Any]:
    """The latest version of each ruleset, by id, without schemas or rules (GET one for those)."""
    page = decisions.list_rulesets(principal, limit=limit, after=after)
    return list_page([summary.to_api() for summary in page.items], page.has_more)


@router.get("/{ruleset_id}", response_model=None, responses=docs.answers("Ruleset", 400, 404))
def get_ruleset(
    ruleset_id: ResourceId, principal: CurrentPrincipal, decisions: Decisions, version: Version = None
) -> dict[str, Any]:
    """The latest version, or the one named by ``version``."""
    return decisions.get_ruleset(principal, ruleset_id, version).to_api()
