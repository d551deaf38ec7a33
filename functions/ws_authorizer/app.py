"""WebSocket $connect authorizer (REQUEST): API key header or single-use browser ticket."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from seekless import wiring
from seekless.observability import logger
from seekless.ws.authorize import authorize


@logger.inject_lambda_context(log_event=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return authorize(event, authenticator=wiring.authenticator(), tickets=wiring.ticket_store)
