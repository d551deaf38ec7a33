"""An operator's API keys: /v1/admin/keys, behind the admin key (a tenant's key is a 401 here).

Left out of /openapi.json, and a 404 like any unknown route where no admin key is configured: the API
tells a tenant nothing of these routes. Bodies are read after the admin key is checked, so not even a
malformed body gets an answer other than 401 or 404 without it. Revoking is a POST action, as
cancelling a job is: the key stays listed, revoked, rather than being deleted.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from seekless.api.deps import AdminPrincipal, AppSettings, Keys, json_body
from seekless.api.lists import list_page
from seekless.models import KeyLimits

router = APIRouter(prefix="/v1/admin/keys", tags=["admin"], include_in_schema=False)

Limit = Annotated[int, Query(ge=1, le=100)]
# strict: a limit of true or "60" is a mistake to report, not a number to guess.
Count = Annotated[int, Field(strict=True)]


class CreateKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tenant: Annotated[str, Field(strict=True)]
    name: Annotated[str, Field(strict=True)] | None = None
    rpm: Count | None = None
    tpm: Count | None = None
    daily_tokens: Count | None = None
    monthly_tokens: Count | None = None

    def limits(self) -> KeyLimits:
        return KeyLimits(rpm=self.rpm, tpm=self.tpm, daily_tokens=self.daily_tokens, monthly_tokens=self.monthly_tokens)


class RotateKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grace_seconds: Count = 0


async def create_body(request: Request, _: AdminPrincipal, config: AppSettings) -> CreateKey:
    return await json_body(request, config, CreateKey)


async def rotate_body(request: Request, _: AdminPrincipal, config: AppSettings) -> RotateKey:
    return await json_body(request, config, RotateKey, empty=RotateKey())


@router.post("", status_code=201)
def create_key(_: AdminPrincipal, body: Annotated[CreateKey, Depends(create_body)], keys: Keys) -> dict[str, Any]:
    """The new key (its only appearance) with its record."""
    return keys.create(body.tenant, name=body.name, limits=body.limits()).to_api()


@router.get("")
def list_keys(
    _: AdminPrincipal, keys: Keys, tenant: str | None = None, limit: Limit = 20, after: str | None = None
) -> dict[str, Any]:
    """A tenant's keys newest first, or every tenant's (a table scan); records only, never a key or hash."""
    page = keys.list_keys(tenant, limit=limit, after=after)
    return list_page([record.to_api() for record in page.items], page.has_more)


@router.get("/{key_id}")
def get_key(_: AdminPrincipal, key_id: str, keys: Keys) -> dict[str, Any]:
    return keys.get(key_id).to_api()


@router.post("/{key_id}/revoke")
def revoke_key(_: AdminPrincipal, key_id: str, keys: Keys) -> dict[str, Any]:
    return keys.revoke(key_id).to_api()


@router.post("/{key_id}/rotate")
def rotate_key(
    _: AdminPrincipal, key_id: str, body: Annotated[RotateKey, Depends(rotate_body)], keys: Keys
) -> dict[str, Any]:
    """The new key (shown once) and, as ``previous``, the old one: revoked, or active until its
    ``expires_at`` when ``grace_seconds`` is above 0."""
    return keys.rotate(key_id, grace_seconds=body.grace_seconds).to_api()
