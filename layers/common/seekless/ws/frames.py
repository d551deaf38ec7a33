"""The WebSocket frame protocol (docs/WEBSOCKET.md): client actions in, typed frames out.

Bad input never raises past ``parse_action``: it becomes a ``FrameError`` carrying the code and
message of the error frame the client will see.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from seekless.contracts import ChatCompletionRequest, SessionId

RequestId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")]
MAX_MESSAGE_BYTES = 128 * 1024  # API Gateway's WebSocket message limit


class FrameError(Exception):
    def __init__(self, code: str, message: str, request_id: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id
        self.param = param

    def frame(self) -> dict[str, Any]:
        return error_frame(self.request_id, 0, self.code, self.message, param=self.param)


class ChatAction(BaseModel):
    """``chat``: the chat-completion fields a frontend needs, plus the request id."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["chat"]
    request_id: RequestId
    session_id: SessionId | None = None
    messages: list[dict[str, Any]] | None = None
    message: str | None = None
    model: str = "deepseek-flash"
    thinking: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    response_format: dict[str, Any] | None = None
    mode: Literal["stream", "job"] | None = None  # None: a job when the settings cross the threshold

    def runs_as_job(self, request: ChatCompletionRequest, *, min_max_tokens: int) -> bool:
        """Whether this chat goes to the job worker rather than the generator function: asked for, or
        too long for a Lambda (large max_tokens, maximum reasoning effort). ``"mode": "stream"`` wins."""
        if self.mode is not None:
            return self.mode == "job"
        max_tokens = request.requested_max_tokens()
        return (max_tokens is not None and max_tokens >= min_max_tokens) or request.reasoning_effort == "max"

    def completion_request(self) -> ChatCompletionRequest:
        """The same validated request REST takes, so both paths share every rule."""
        if (self.messages is None) == (self.message is None):
            raise FrameError("invalid_request", "Send exactly one of 'messages' or 'message'.", self.request_id)
        messages = self.messages if self.messages is not None else [{"role": "user", "content": self.message}]
        body = self.model_dump(exclude={"action", "request_id", "message", "messages", "mode"}, exclude_none=True)
        try:
            return ChatCompletionRequest.model_validate({**body, "messages": messages, "stream": True})
        except ValidationError as error:
            raise _invalid(error, self.request_id) from error


class CancelAction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Literal["cancel"]
    request_id: RequestId


class ResumeAction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Literal["resume"]
    request_id: RequestId
    after_seq: Annotated[int, Field(ge=0)] = 0


class PingAction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Literal["ping"]


Action = ChatAction | CancelAction | ResumeAction | PingAction
_ACTIONS: dict[str, type[BaseModel]] = {
    "chat": ChatAction,
    "cancel": CancelAction,
    "resume": ResumeAction,
    "ping": PingAction,
}


def _invalid(error: ValidationError, request_id: str | None) -> FrameError:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ()))
    detail = f"'{where}': {first.get('msg')}" if where else str(first.get("msg"))
    return FrameError("invalid_request", f"Invalid request: {detail}", request_id, param=where or None)


def parse_action(body: str | bytes | None) -> Action:
    raw = body.encode() if isinstance(body, str) else body or b""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise FrameError("message_too_large", f"A message may be at most {MAX_MESSAGE_BYTES} bytes.")
    try:
        data = json.loads(raw)
    except ValueError:
        raise FrameError("invalid_json", "The message is not valid JSON.") from None
    except RecursionError:  # deeper than Python's parser goes (about 1000 levels): no request nests so
        raise FrameError("invalid_json", "The message nests JSON too deeply.") from None
    if not isinstance(data, dict):
        raise FrameError("invalid_json", "The message must be a JSON object with an 'action'.")
    request_id = data.get("request_id") if isinstance(data.get("request_id"), str) else None
    model = _ACTIONS.get(str(data.get("action")))
    if model is None:
        actions = ", ".join(sorted(_ACTIONS))
        raise FrameError("unknown_action", f"Unknown action {data.get('action')!r}; use one of: {actions}.", request_id)
    try:
        return model.model_validate(data)  # type: ignore[return-value]
    except ValidationError as error:
        raise _invalid(error, request_id) from error


def frame(kind: str, request_id: str | None, seq: int, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "request_id": request_id, "seq": seq, **fields}


def error_frame(request_id: str | None, seq: int, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    """``param`` names the one field at fault, as REST's error does; it is left out when there is none."""
    if param is None:
        return frame("error", request_id, seq, code=code, message=message)
    return frame("error", request_id, seq, code=code, message=message, param=param)


def encode(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
