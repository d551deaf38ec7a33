"""Open WebSocket connections in DynamoDB, keyed by connection id, with the tenant that opened them.

This module is imported by the $connect and $disconnect handlers, whose cold start must stay far
below `import boto3`: it imports nothing heavy at module level and speaks DynamoDB's attribute-value
format by hand (three attributes) rather than through boto3's serializer.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from seekless.environment import per_environment

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

DEFAULT_TABLE = "seekless-connections"
MAX_CONNECTION_SECONDS = 2 * 3600  # API Gateway ends every WebSocket connection after two hours


@dataclass(frozen=True, slots=True)
class Connection:
    connection_id: str
    tenant_id: str
    key_id: str
    connected_at: int


class DynamoConnectionStore:
    def __init__(
        self, table_name: str, *, client: DynamoDBClient | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self._table = table_name
        self._client = client
        self._clock = clock

    @property
    def client(self) -> DynamoDBClient:
        if self._client is None:
            import boto3  # deferred: the first call pays for it, not the import of every handler

            self._client = boto3.client("dynamodb")
        return self._client

    def put(self, connection_id: str, *, tenant_id: str, key_id: str) -> Connection:
        now = int(self._clock())
        self.client.put_item(
            TableName=self._table,
            Item={
                "connection_id": {"S": connection_id},
                "tenant_id": {"S": tenant_id},
                "key_id": {"S": key_id},
                "connected_at": {"N": str(now)},
                "expires_at": {"N": str(now + MAX_CONNECTION_SECONDS)},
            },
        )
        return Connection(connection_id=connection_id, tenant_id=tenant_id, key_id=key_id, connected_at=now)

    def get(self, connection_id: str) -> Connection | None:
        item: dict[str, Any] = (
            self.client.get_item(
                TableName=self._table, Key={"connection_id": {"S": connection_id}}, ConsistentRead=True
            ).get("Item")
            or {}
        )
        if not item or int(item["expires_at"]["N"]) <= self._clock():  # TTL deletion runs late
            return None
        return Connection(
            connection_id=connection_id,
            tenant_id=item["tenant_id"]["S"],
            key_id=item["key_id"]["S"],
            connected_at=int(item["connected_at"]["N"]),
        )

    def delete(self, connection_id: str) -> None:
        self.client.delete_item(TableName=self._table, Key={"connection_id": {"S": connection_id}})


@per_environment
def store_from_environment() -> DynamoConnectionStore:
    """The store for $connect/$disconnect, configured straight from SEEKLESS_CONNECTIONS_TABLE.

    The one deliberate exception to "one settings model": pydantic-settings would triple these
    handlers' cold start. The name and default are Settings.connections_table's (a test checks).
    """
    return DynamoConnectionStore(os.environ.get("SEEKLESS_CONNECTIONS_TABLE", DEFAULT_TABLE))
