"""POST /v1/chat/completions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from seekless.api.deps import Chat, ChatRequestBody, CurrentPrincipal, Deadline, SessionHeader
from seekless.api.sse import sse_events
from seekless.caching import CACHE_HEADER
from seekless.contracts import ChatCompletionRequest

router = APIRouter(prefix="/v1", tags=["chat"])


@router.post("/chat/completions", response_model=None)
async def create_chat_completion(
    request: Request,
    body: ChatRequestBody,
    principal: CurrentPrincipal,
    chat: Chat,
    deadline: Deadline,
    x_session_id: SessionHeader = None,
) -> Response:
    prepared = chat.prepare(body, principal, headers=request.headers, deadline=deadline, session_id=x_session_id)
    if not body.stream:
        answer = await chat.complete(prepared)
        return JSONResponse(answer.result.to_completion(), headers={CACHE_HEADER: answer.cache})
    stream = await chat.stream(prepared)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return StreamingResponse(
        sse_events(stream, include_usage=include_usage),
        media_type="text/event-stream",
        headers={CACHE_HEADER: stream.cache, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def document_request_body(schema: dict[str, Any]) -> None:
    """Describe the body in the OpenAPI schema. The route parses the raw body itself (size cap, fast
    JSON validation), so FastAPI cannot see the model; this runs on the first /openapi.json request,
    not at import, where building the JSON schema would cost every cold start ~15 ms."""
    body = ChatCompletionRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(body.pop("$defs", {}))
    components["ChatCompletionRequest"] = body
    schema["paths"]["/v1/chat/completions"]["post"]["requestBody"] = {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ChatCompletionRequest"}}},
    }
