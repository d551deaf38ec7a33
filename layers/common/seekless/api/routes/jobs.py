"""Long generations as jobs: /v1/jobs. A job runs on the worker; these routes submit, read and cancel."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request

from seekless.api import docs
from seekless.api.deps import After, Chat, ChatRequestBody, CurrentPrincipal, Deadline, Jobs, ResourceId, SessionHeader
from seekless.api.lists import list_page
from seekless.jobs import JobStatus

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

Limit = Annotated[int, Query(ge=1, le=100)]


@router.post(
    "", status_code=202, response_model=None, responses=docs.answers("JobAccepted", 400, 404, 409, 429, status=202)
)
def create_job(
    request: Request,
    body: ChatRequestBody,
    principal: CurrentPrincipal,
    chat: Chat,
    jobs: Jobs,
    deadline: Deadline,
    x_session_id: SessionHeader = None,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    """202 with the job's id; the same Idempotency-Key (same tenant, same body) answers with the same job."""
    # Validated as a chat completion would be (model, max_tokens, session): a bad request makes no job.
    chat.prepare(body, principal, headers=request.headers, deadline=deadline, session_id=x_session_id)
    submitted = jobs.submit(principal, body, session_id=x_session_id, idempotency_key=idempotency_key)
    return submitted.job.to_accepted()


@router.get("", response_model=None, responses=docs.answers("JobList", 400, 404))
def list_jobs(
    principal: CurrentPrincipal,
    jobs: Jobs,
    status: JobStatus | None = None,
    limit: Limit = 20,
    after: After = None,
) -> dict[str, Any]:
    """The tenant's jobs, newest first, without results (GET one job for its result)."""
    page = jobs.list_jobs(principal, status=status, limit=limit, after=after)
    return list_page([job.to_api() for job in page.items], page.has_more)


@router.get("/{job_id}", response_model=None, responses=docs.answers("Job", 400, 404))
def get_job(job_id: ResourceId, principal: CurrentPrincipal, jobs: Jobs) -> dict[str, Any]:
    return jobs.get(principal, job_id).to_api()


@router.post("/{job_id}/cancel", response_model=None, responses=docs.answers("Job", 400, 404, 409))
def cancel_job(job_id: ResourceId, principal: CurrentPrincipal, jobs: Jobs) -> dict[str, Any]:
    """queued or running → cancelled; a finished job answers 409."""
    return jobs.cancel(principal, job_id).to_api()
