"""POST /v1/chat/completions."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from seekless.api import docs
from seekless.api.deps import Chat, ChatRequestBody, CurrentPrincipal, Deadline, SessionHeader
from seekless.api.sse import sse_events
from seekless.caching import CACHE_HEADER

router = APIRouter(prefix="/v1", tags=["chat"])


# The body is read by hand (deps.chat_request: the real size against the cap, then strict validation);
# docs.document puts it in /openapi.json.
ANSWERS = docs.answers(
    "ChatCompletion",
    400,
    404,
    429,
    502,
    504,
    content={
        "application/json": {"schema": docs.shape("ChatCompletion")},
        "text/event-stream": {"schema": {"type": "string", "description": "chat.completion.chunk events"}},
    },
)


@router.post("/chat/completions", response_model=None, responses=ANSWERS)
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
