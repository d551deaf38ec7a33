"""WebSocket $connect: remember the connection and its tenant (the authorizer already let it in).

Cold start matters on every new connection: no pydantic, httpx, redis or boto3 at import.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import Logger

from seekless.adapters.connections import store_from_environment

logger = Logger()


@logger.inject_lambda_context(log_event=False)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    request = event["requestContext"]
    authorizer = request.get("authorizer") or {}
    store_from_environment().put(
        request["connectionId"], tenant_id=authorizer["tenant_id"], key_id=authorizer["key_id"]
    )
    return {"statusCode": 200}
