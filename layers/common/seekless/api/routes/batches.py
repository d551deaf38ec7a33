"""Batch files: /v1/batches. A batch runs from a JSONL file in S3 (docs/EVENTS.md); these routes hand
out an upload URL, and read and cancel a tenant's batches."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from seekless.api import docs
from seekless.api.deps import After, Batches, CurrentPrincipal, ResourceId
from seekless.api.lists import list_page
from seekless.contracts import Metadata

router = APIRouter(prefix="/v1/batches", tags=["batches"])

Limit = Annotated[int, Query(ge=1, le=100)]


class UploadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metadata: Metadata | None = None
    filename: Annotated[str, Field(max_length=255)] | None = None


@router.post("/uploads", status_code=201, response_model=None, responses=docs.answers("BatchUpload", 400, status=201))
def create_upload(principal: CurrentPrincipal, batches: Batches, body: UploadRequest | None = None) -> dict[str, Any]:
    """Reserve a batch and a presigned PUT URL for its JSONL file; the batch starts when the file lands."""
    metadata = dict(body.metadata or {}) if body is not None else {}
    if body is not None and body.filename:
        metadata.setdefault("filename", body.filename)
    return batches.reserve_upload(principal, metadata=metadata or None)


@router.get("", response_model=None, responses=docs.answers("BatchList", 400, 404))
def list_batches(
    principal: CurrentPrincipal, batches: Batches, limit: Limit = 20, after: After = None
) -> dict[str, Any]:
    page = batches.list_batches(principal, limit=limit, after=after)
    return list_page([batches.describe(batch) for batch in page.items], page.has_more)


@router.get("/{batch_id}", response_model=None, responses=docs.answers("Batch", 400, 404))
def get_batch(batch_id: ResourceId, principal: CurrentPrincipal, batches: Batches) -> dict[str, Any]:
    return batches.describe(batches.get(principal, batch_id))


@router.post("/{batch_id}/cancel", response_model=None, responses=docs.answers("Batch", 400, 404, 409))
def cancel_batch(batch_id: ResourceId, principal: CurrentPrincipal, batches: Batches) -> dict[str, Any]:
    """Lines not yet run are cancelled; running ones finish. A batch that has ended answers 409."""
    return batches.describe(batches.cancel(principal, batch_id))
