"""GET /v1/usage: the calling tenant's own usage by UTC day and model (requests, tokens, cost)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query

from seekless.api import docs
from seekless.api.deps import CurrentPrincipal, Usage
from seekless.errors import InvalidRequest

router = APIRouter(prefix="/v1/usage", tags=["usage"])

DEFAULT_DAYS = 30
MAX_DAYS = 366


@router.get("", response_model=None, responses=docs.answers("Usage", 400))
async def get_usage(
    principal: CurrentPrincipal,
    usage: Usage,
    start_date: Annotated[date | None, Query(description="first UTC day, YYYY-MM-DD (default: 30 days ago)")] = None,
    end_date: Annotated[date | None, Query(description="last UTC day, YYYY-MM-DD (default: today)")] = None,
    model: Annotated[str | None, Query(max_length=128)] = None,
) -> dict[str, Any]:
    end = end_date or datetime.now(UTC).date()
    start = start_date or _days_before(end, DEFAULT_DAYS - 1)
    if start > end:
        raise InvalidRequest("start_date is after end_date.", param="start_date")
    if (end - start).days >= MAX_DAYS:
        raise InvalidRequest(f"A usage query spans at most {MAX_DAYS} days.", param="start_date")
    days = [day.to_api() for day in (await usage.days(principal.tenant_id, start=start, end=end, model=model))]
    totals = {
        name: sum(day[name] for day in days)
        for name in ("requests", "errors", "cache_hits", "prompt_tokens", "completion_tokens", "total_tokens")
    }
    cost = round(sum(day["estimated_cost_usd"] for day in days), 6)
    return {
        "object": "list",
        "data": days,
        "start_date": start.isoformat(),
        "end_date": end.isoformat(),
        "total": {**totals, "estimated_cost_usd": cost},
    }


def _days_before(day: date, days: int) -> date:
    """``day`` less ``days``, but never before the calendar's first day (an end_date in year 1 has no
    30 days before it: date arithmetic would raise OverflowError, a 500)."""
    return day - timedelta(days=days) if day - date.min >= timedelta(days=days) else date.min
