"""What /openapi.json says each route answers: its success shape and every error status it can send.

Routes declare ``responses=docs.answers(...)`` with the shapes by name (plain dicts: nothing is built at
import). ``document`` completes the document on the first /openapi.json request: the shapes' JSON schemas
(``api/shapes.py``), the bodies of the routes that read theirs by hand, the bearer key, and no
422: the error table answers a request it cannot validate with a 400 in OpenAI's error schema.
"""

from __future__ import annotations

from typing import Any

ERROR = {"$ref": "#/components/schemas/Error"}
DESCRIPTIONS = {
    400: "The request is invalid: a parameter, the body or an input limit; `param` names it.",
    401: "No API key, or one that is not valid.",
    404: "No such resource (or another tenant's).",
    409: "The resource's state does not allow it.",
    413: "The request body is over the size cap.",
    429: "Over a rate limit or budget of the key; `Retry-After` says when to try again.",
    500: "An error of the server's own.",
    502: "DeepSeek answered with an error.",
    503: "DeepSeek or one of the service's stores is unavailable; retry later.",
    504: "The upstream deadline passed.",
}
# Every route: a body over the cap is refused before routing (BodyLimit), and any route can fail.
ANY_ROUTE = (413, 500)
# Every route behind the API key: its lookup can be refused or throttled.
AUTHENTICATED = (*ANY_ROUTE, 401, 503)
# The routes whose body is read by hand (deps.json_body) rather than by FastAPI, and the model it is read as.
HAND_READ_BODIES = {
    ("/v1/chat/completions", "post"): "ChatCompletionRequest",
    ("/v1/jobs", "post"): "ChatCompletionRequest",
    ("/v1/rulesets", "post"): "RulesetSpec",
    ("/v1/decisions", "post"): "DecisionRequest",
}


def shape(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def answers(
    name: str,
    *errors: int,
    status: int = 200,
    authenticated: bool = True,
    content: dict[str, Any] | None = None,
) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: ``status`` with the shape ``name`` (or ``content``), and the errors
    every route of its kind can send plus ``errors``."""
    success = content or {"application/json": {"schema": shape(name)}}
    documented: dict[int | str, dict[str, Any]] = {status: {"content": success}}
    for code in sorted({*(AUTHENTICATED if authenticated else ANY_ROUTE), *errors}):
        documented[code] = {"description": DESCRIPTIONS[code], "content": {"application/json": {"schema": ERROR}}}
    return documented


def document(schema: dict[str, Any]) -> dict[str, Any]:
    """Complete FastAPI's document in place (see the module's docstring) and return it."""
    from pydantic.json_schema import models_json_schema

    from seekless.api.shapes import SHAPES
    from seekless.contracts import ChatCompletionRequest
    from seekless.decisions import DecisionRequest
    from seekless.rules import RulesetSpec

    ref = "#/components/schemas/{model}"
    _, shapes = models_json_schema([(model, "validation") for model in SHAPES], ref_template=ref)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(shapes.get("$defs", {}))
    for model in (ChatCompletionRequest, RulesetSpec, DecisionRequest):
        body = model.model_json_schema(ref_template=ref)
        components.update(body.pop("$defs", {}))
        components[model.__name__] = body
    for (path, method), name in HAND_READ_BODIES.items():
        schema["paths"][path][method]["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": shape(name)}},
        }
    for operations in schema["paths"].values():
        for operation in operations.values():
            operation.get("responses", {}).pop("422", None)
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    return schema
