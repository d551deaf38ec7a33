"""WebSocket message routes (chat, cancel, resume, ping, $default): answer within a second."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from seekless import wiring
from seekless.models import Principal
from seekless.observability import log_metrics, logger, tracer


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = event["requestContext"]
    authorizer = request.get("authorizer") or {}
    principal = Principal(tenant_id=authorizer["tenant_id"], key_id=authorizer["key_id"])
    wiring.run(wiring.ws_service().handle(request["connectionId"], principal, event.get("body")))
    return {"statusCode": 200}
