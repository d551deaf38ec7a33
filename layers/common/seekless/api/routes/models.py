"""GET /v1/models and /v1/models/{id}: the catalogue from configuration, aliases included."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from seekless.api import docs
from seekless.api.deps import AppSettings, Chat, CurrentPrincipal

router = APIRouter(prefix="/v1", tags=["models"])


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "deepseek"}


@router.get("/models", response_model=None, responses=docs.answers("ModelList"))
def list_models(_: CurrentPrincipal, settings: AppSettings) -> dict[str, Any]:
    return {"object": "list", "data": [_model(name) for name in settings.models]}


@router.get("/models/{model_id}", response_model=None, responses=docs.answers("Model", 404))
def retrieve_model(model_id: str, _: CurrentPrincipal, chat: Chat) -> dict[str, Any]:
    chat.resolve_model(model_id)
    return _model(model_id)
