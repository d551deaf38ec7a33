"""The $connect REQUEST authorizer: an API key in the Authorization header, or a browser ticket.

API Gateway turns the answer into the handshake's result: an Allow policy lets the connection in with
the tenant in its context (every later route of the connection sees it); a Deny policy is a 403; the
exception ``Unauthorized`` is a 401. Connect URLs carry tickets, so the query string is never logged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from seekless.errors import AuthenticationFailed
from seekless.models import Principal


class Authenticator(Protocol):
    def authenticate(self, authorization: str | None) -> Principal: ...


class Tickets(Protocol):
    def redeem(self, ticket: str) -> Principal | None: ...


class Unauthorized(Exception):
    """Raised with exactly this message, API Gateway answers the handshake with 401."""

    def __init__(self) -> None:
        super().__init__("Unauthorized")


def policy(principal_id: str, effect: str, resource: str, context: dict[str, str] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "principalId": principal_id,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": effect, "Resource": resource}],
        },
    }
    if context:
        answer["context"] = context
    return answer


def authorize(event: dict[str, Any], *, authenticator: Authenticator, tickets: Callable[[], Tickets]) -> dict[str, Any]:
    headers = {name.lower(): value for name, value in (event.get("headers") or {}).items()}
    query = event.get("queryStringParameters") or {}
    resource = event["methodArn"]
    principal: Principal | None = None
    if query.get("ticket"):
        principal = tickets().redeem(query["ticket"])
    elif headers.get("authorization"):
        try:
            principal = authenticator.authenticate(headers["authorization"])
        except AuthenticationFailed:
            principal = None
    else:
        raise Unauthorized()
    if principal is None:
        return policy("anonymous", "Deny", resource)
    return policy(principal.key_id, "Allow", resource, {"tenant_id": principal.tenant_id, "key_id": principal.key_id})
