"""API Gateway's @connections management API: posting frames to a WebSocket client."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_apigatewaymanagementapi import ApiGatewayManagementApiClient


class ApiGatewayNotifier:
    """``post`` answers False when the connection is gone (410), so callers can drop it."""

    def __init__(self, endpoint_url: str, *, client: ApiGatewayManagementApiClient | Any | None = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("apigatewaymanagementapi", endpoint_url=endpoint_url)
        self._client = client

    def post(self, connection_id: str, data: bytes) -> bool:
        try:
            self._client.post_to_connection(ConnectionId=connection_id, Data=data)
        except self._client.exceptions.GoneException:
            return False
        return True
