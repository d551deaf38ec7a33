"""DynamoDB adapters: conversations (one item per message) and hashed API keys.

Sessions table layout (keys from template.yaml):
    pk = "T#<tenant>#S#<session>"  sk = "META"            the session: counters, title, expiry
    pk = "T#<tenant>#S#<session>"  sk = "M#<seq:08d>"     one message (DynamoDB items cap at 400 KB)
    gsi1pk = "T#<tenant>", gsi1sk = "<created µs:017d>#<session>" on META only: the by_tenant index
The tenant is part of every key, so reading another tenant's session is a plain miss (404), never a
permission error that would confirm the session exists. Appends are one transaction conditioned on the
message counter: two concurrent turns both land, one after the other, and nothing is half-written.
TTL deletion is late, so expired items are filtered on read.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from seekless.adapters.dynamo_items import collect_page, from_item, store_error, to_item
from seekless.errors import Conflict, NotFound
from seekless.models import ApiKeyRecord, Page, Session, StoredMessage

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

APPEND_ATTEMPTS = 5


def _store_error(error: ClientError) -> Exception:
    return store_error(error, "session store")


def _default_client() -> DynamoDBClient:
    import boto3

    return boto3.client("dynamodb")


class DynamoSessionStore:
    def __init__(
        self,
        table_name: str,
        *,
        ttl_days: int = 30,
        client: DynamoDBClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._table = table_name
        self._ttl_seconds = ttl_days * 86_400
        self._client = client or _default_client()
        self._clock = clock

    @staticmethod
    def _pk(tenant_id: str, session_id: str) -> str:
        return f"T#{tenant_id}#S#{session_id}"

    def _now(self) -> int:
        return int(self._clock())

    def _session(self, item: dict[str, Any]) -> Session:
        data = from_item(item)
        return Session(
            id=data["session_id"],
            tenant_id=data["tenant_id"],
            created_at=int(data["created_at"]),
            updated_at=int(data["updated_at"]),
            message_count=int(data.get("message_count", 0)),
            title=data.get("title"),
            metadata=dict(data.get("metadata") or {}),
        )

    def _alive(self, item: dict[str, Any]) -> bool:
        expires = item.get("expires_at")
        return expires is None or int(expires["N"]) > self._now()

    def create(
        self, tenant_id: str, *, title: str | None, metadata: dict[str, str], session_id: str | None = None
    ) -> Session:
        """A new, empty session. ``session_id`` is for seeding and imports; the API always mints one."""
        now = self._now()
        session_id = session_id or "sess_" + secrets.token_hex(12)
        values = {
            "pk": self._pk(tenant_id, session_id),
            "sk": "META",
            "gsi1pk": f"T#{tenant_id}",
            # Microseconds, so sessions created within one second still list newest first.
            "gsi1sk": f"{int(self._clock() * 1_000_000):017d}#{session_id}",
            "session_id": session_id,
            "tenant_id": tenant_id,
            "created_at": now,
            "updated_at": now,
            "message_count": 0,
            "title": title,
            "metadata": metadata or None,
            "expires_at": now + self._ttl_seconds,
        }
        try:
            self._client.put_item(
                TableName=self._table, Item=to_item(values), ConditionExpression="attribute_not_exists(pk)"
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                raise Conflict(f"A session with id '{session_id}' already exists.") from error
            raise _store_error(error) from error
        return self._session(to_item(values))

    def _meta(self, tenant_id: str, session_id: str, *, consistent: bool = False) -> dict[str, Any]:
        try:
            found = self._client.get_item(
                TableName=self._table,
                Key=to_item({"pk": self._pk(tenant_id, session_id), "sk": "META"}),
                ConsistentRead=consistent,
            )
        except ClientError as error:
            raise _store_error(error) from error
        item = found.get("Item")
        # The tenant check is redundant with the key; it stays as a guard against a key-format bug.
        if not item or not self._alive(item) or item["tenant_id"]["S"] != tenant_id:
            raise NotFound(f"No session found with id '{session_id}'.", code="session_not_found")
        return item

    def get(self, tenant_id: str, session_id: str) -> Session:
        return self._session(self._meta(tenant_id, session_id))

    def list_sessions(self, tenant_id: str, *, limit: int, after: str | None) -> Page[Session]:
        query: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": "by_tenant",
            "KeyConditionExpression": "gsi1pk = :t",
            "ExpressionAttributeValues": {":t": {"S": f"T#{tenant_id}"}},
            "ScanIndexForward": False,  # newest first
            "Limit": limit + 1,
        }
        if after:
            cursor = self._meta(tenant_id, after)
            query["ExclusiveStartKey"] = {k: cursor[k] for k in ("pk", "sk", "gsi1pk", "gsi1sk")}
        return collect_page(
            self._client, query, limit=limit, alive=self._alive, convert=self._session, store="session store"
        )

    def messages(
        self, tenant_id: str, session_id: str, *, limit: int | None = None, after: int | None = None
    ) -> Page[StoredMessage]:
        self._meta(tenant_id, session_id)
        start = f"M#{(after if after is not None else -1) + 1:08d}"
        query: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :lo AND :hi",
            "ExpressionAttributeValues": {
                ":pk": {"S": self._pk(tenant_id, session_id)},
                ":lo": {"S": start},
                ":hi": {"S": "M#99999999"},
            },
            "ConsistentRead": True,
        }
        if limit is not None:
            query["Limit"] = limit + 1
        return collect_page(
            self._client, query, limit=limit, alive=self._alive, convert=self._message, store="session store"
        )

    @staticmethod
    def _message(item: dict[str, Any]) -> StoredMessage:
        data = from_item(item)
        return StoredMessage(
            seq=int(data["seq"]),
            role=data["role"],
            content=data.get("content"),
            created_at=int(data["created_at"]),
            reasoning_content=data.get("reasoning_content"),
            tool_calls=data.get("tool_calls"),
            tool_call_id=data.get("tool_call_id"),
            name=data.get("name"),
        )

    def append(
        self,
        tenant_id: str,
        session_id: str,
        messages: list[dict[str, Any]],
        *,
        guard: dict[str, Any] | None = None,
    ) -> Session:
        """Append messages after whatever is there now; retried when a concurrent turn got in first.

        ``guard`` is one more TransactWriteItem (any table) committed with the append or not at all:
        the GPU worker passes its job's "session appended" marker, so a redelivered job can never
        append twice. When the guard's own condition fails, nothing is written and Conflict
        (code ``append_guard_failed``) is raised.
        """
        pk = self._pk(tenant_id, session_id)
        for _ in range(APPEND_ATTEMPTS):
            meta = self._session(self._meta(tenant_id, session_id, consistent=True))
            now = self._now()
            expires = now + self._ttl_seconds
            count = meta.message_count
            writes: list[dict[str, Any]] = [
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": to_item({"pk": pk, "sk": "META"}),
                        "UpdateExpression": "SET message_count = :new, updated_at = :now, expires_at = :exp",
                        "ConditionExpression": "message_count = :old",
                        "ExpressionAttributeValues": to_item(
                            {":new": count + len(messages), ":old": count, ":now": now, ":exp": expires}
                        ),
                    }
                }
            ]
            for offset, message in enumerate(messages):
                seq = count + offset
                values = {
                    "pk": pk,
                    "sk": f"M#{seq:08d}",
                    "seq": seq,
                    "role": message["role"],
                    "content": message.get("content"),
                    "reasoning_content": message.get("reasoning_content"),
                    "tool_calls": message.get("tool_calls"),
                    "tool_call_id": message.get("tool_call_id"),
                    "name": message.get("name"),
                    "created_at": now,
                    "expires_at": expires,
                }
                writes.append(
                    {
                        "Put": {
                            "TableName": self._table,
                            "Item": to_item(values),
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    }
                )
            if guard is not None:
                writes.append(guard)
            try:
                self._client.transact_write_items(TransactItems=writes)  # type: ignore[arg-type]
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") == "TransactionCanceledException":
                    reasons: list[Any] = list(error.response.get("CancellationReasons") or [])
                    guard_refused = guard is not None and len(reasons) == len(writes)
                    if guard_refused and reasons[-1].get("Code") == "ConditionalCheckFailed":
                        raise Conflict("The append's guard refused it.", code="append_guard_failed") from error
                    continue  # another turn moved the counter first: re-read and go after it
                raise _store_error(error) from error
            return Session(
                id=meta.id,
                tenant_id=tenant_id,
                created_at=meta.created_at,
                updated_at=now,
                message_count=count + len(messages),
                title=meta.title,
                metadata=meta.metadata,
            )
        raise Conflict("The session is being written by too many requests at once; retry.")

    def delete(self, tenant_id: str, session_id: str) -> None:
        self._meta(tenant_id, session_id)
        pk = self._pk(tenant_id, session_id)
        query: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": pk}},
            "ProjectionExpression": "pk, sk",
        }
        try:
            # The metadata item goes first, so a half-finished delete leaves no visible session.
            self._client.delete_item(TableName=self._table, Key=to_item({"pk": pk, "sk": "META"}))
            while True:
                page = self._client.query(**query)
                keys = [i for i in page.get("Items", []) if i["sk"]["S"] != "META"]
                for start in range(0, len(keys), 25):
                    requests = [{"DeleteRequest": {"Key": key}} for key in keys[start : start + 25]]
                    pending: dict[str, Any] = {self._table: requests}
                    while pending:
                        result = self._client.batch_write_item(RequestItems=pending)
                        pending = result.get("UnprocessedItems") or {}
                if "LastEvaluatedKey" not in page:
                    break
                query["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        except ClientError as error:
            raise _store_error(error) from error


class DynamoKeyStore:
    """API keys by SHA-256 hash. The key itself is never stored."""

    def __init__(
        self, table_name: str, *, client: DynamoDBClient | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self._table = table_name
        self._client = client or _default_client()
        self._clock = clock

    def lookup(self, key_hash: str) -> ApiKeyRecord | None:
        try:
            found = self._client.get_item(TableName=self._table, Key={"key_hash": {"S": key_hash}})
        except ClientError as error:
            raise _store_error(error) from error
        item = found.get("Item")
        if not item:
            return None
        data = from_item(item)
        expires = data.get("expires_at")
        if expires is not None and int(expires) <= self._clock():
            return None
        return ApiKeyRecord(
            key_id=str(data.get("key_id") or key_hash[:12]),
            tenant_id=data["tenant_id"],
            status=str(data.get("status") or "active"),
            expires_at=int(expires) if expires is not None else None,
        )

    def put(self, key_hash: str, *, tenant_id: str, key_id: str, name: str | None = None) -> None:
        now = int(self._clock())
        item = {
            "key_hash": key_hash,
            "key_id": key_id,
            "tenant_id": tenant_id,
            "status": "active",
            "name": name,
            "created_at": now,
        }
        try:
            self._client.put_item(TableName=self._table, Item=to_item(item))
        except ClientError as error:
            raise _store_error(error) from error
