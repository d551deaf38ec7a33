"""Domain errors and the one table that maps them to HTTP (and, later, WebSocket error frames).

Every error the service raises is a ``SeeklessError`` subclass carrying the OpenAI error schema fields.
Handlers never match on message strings: they read ``status``, ``type`` and ``code`` from the class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar


class SeeklessError(Exception):
    """Base of every error that reaches a client. Shaped like OpenAI's ``{"error": {...}}``."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    default_code: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code if code is not None else self.default_code
        self.param = param
        self.retry_after = retry_after

    def to_body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        # Retry-After is whole seconds; round up so a client never retries early.
        return {"Retry-After": str(max(1, int(-(-self.retry_after // 1))))}


class InvalidRequest(SeeklessError):
    """The request itself is wrong. OpenAI answers these with 400 (the SDK raises BadRequestError)."""

    status = 400
    type = "invalid_request_error"


class PayloadTooLarge(InvalidRequest):
    status = 413
    default_code = "request_too_large"


class AuthenticationFailed(SeeklessError):
    status = 401
    type = "authentication_error"
    default_code = "invalid_api_key"


class NotFound(InvalidRequest):
    status = 404
    default_code = "not_found"


class UnknownRoute(NotFound):
    """No such route here, or one turned off (the admin routes when no admin key is configured): both
    answer alike, so a caller cannot tell which."""

    def __init__(self) -> None:
        super().__init__("Unknown request URL.")
        self.code = None


class Conflict(InvalidRequest):
    status = 409
    default_code = "conflict"


class RateLimited(SeeklessError):
    status = 429
    type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class UpstreamError(SeeklessError):
    """DeepSeek failed in a way the client cannot fix by changing its request."""

    status = 502
    type = "api_error"
    default_code = "upstream_error"


class UpstreamUnavailable(UpstreamError):
    """Upstream is down or the breaker is open; retry later."""

    status = 503
    default_code = "upstream_unavailable"


class UpstreamTimeout(UpstreamError):
    """The absolute deadline of the call passed."""

    status = 504
    default_code = "upstream_timeout"


class UpstreamRejected(InvalidRequest):
    """DeepSeek answered 400/422: the request is at fault (context too long, bad tool schema...)."""

    default_code = "upstream_rejected"


class ServiceUnavailable(SeeklessError):
    """One of our own stores is unavailable (DynamoDB throttled past its retries)."""

    status = 503
    default_code = "service_unavailable"


@dataclass(frozen=True, slots=True)
class RuleProblem:
    """One reason a ruleset was refused. ``rule`` is None for the ruleset itself (its input schema);
    ``line`` and ``column`` (1-based) point into the rule's condition when the CEL compiler knows where."""

    rule: str | None
    message: str
    field: str = "condition"
    line: int | None = None
    column: int | None = None

    def to_api(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "field": self.field,
            "message": self.message,
            "line": self.line,
            "column": self.column,
        }

    def describe(self) -> str:
        where = f"rule '{self.rule}'" if self.rule is not None else self.field
        if self.line is not None and self.column is not None:
            where += f" (line {self.line}, column {self.column})"
        return f"{where}: {self.message}"


class RulesetInvalid(InvalidRequest):
    """A ruleset refused at upload: every problem found, not only the first, so one round trip fixes them."""

    default_code = "ruleset_invalid"

    def __init__(self, problems: Sequence[RuleProblem], *, param: str | None = None) -> None:
        self.problems = tuple(problems)
        summary = "; ".join(problem.describe() for problem in self.problems[:5])
        more = len(self.problems) - 5
        if more > 0:
            summary += f"; and {more} more"
        super().__init__(f"The ruleset is invalid: {summary}.", param=param)

    def to_body(self) -> dict[str, Any]:
        body = super().to_body()
        # An extra member of OpenAI's error object: clients that do not know it ignore it.
        body["error"]["details"] = [problem.to_api() for problem in self.problems]
        return body


class RecordInvalid(InvalidRequest):
    """A decision's input does not fit its ruleset's declared input schema (``param`` names the path)."""

    default_code = "input_schema_mismatch"
