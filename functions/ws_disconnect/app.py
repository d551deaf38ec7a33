"""WebSocket $disconnect: forget the connection. Same cold-start rules as $connect."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import Logger

from seekless.adapters.connections import store_from_environment

logger = Logger()


@logger.inject_lambda_context(log_event=False)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    store_from_environment().delete(event["requestContext"]["connectionId"])
    return {"statusCode": 200}
