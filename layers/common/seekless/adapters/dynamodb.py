"""DynamoDB adapters: conversations (one item per message) and hashed API keys.

Sessions table layout (keys from template.yaml):
    pk = "T#<tenant>#S#<session>"  sk = "META"            the session: counters, title, expiry
    pk = "T#<tenant>#S#<session>"  sk = "M#<seq:08d>"     one message (DynamoDB items cap at 400 KB)
    gsi1pk = "T#<tenant>", gsi1sk = "<created µs:017d>#<session>" on META only: the by_tenant index
The tenant is part of every key, so reading another tenant's session is a plain miss (404), never a
permission error that would confirm the session exists. Appends are one transaction conditioned on the
message counter: two concurrent turns both land, one after the other, and nothing is half-written.
TTL deletion is late, so expired items are filtered on read.

API keys table layout (key_hash is the table's only key):
    key_hash = "<sha256 hex of the key>"   the key: key_id, tenant_id, status, name, limits (a map of
                                           rpm/tpm/daily_tokens/monthly_tokens, absent = unlimited),
                                           created_at; expires_at once rotated with a grace period
    key_hash = "kid#<key_id>"              the key id's pointer: points_to = the key's hash
    by_tenant index: tenant_id + created_at, on key items only (pointers carry neither)
A request looks a key up by hash (one GetItem); an operator names it by id. The pointer item turns the
id into the hash with a strongly consistent read (a key revoked the moment it was created is found), and
writing it with attribute_not_exists in the key's own transaction keeps ids unique. A GSI on key_id
would be eventually consistent and could not enforce that. Keys written before pointers existed are
found by a Scan, in the operator's commands only (``get``, which a request path may call, never scans).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import fields, replace
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from seekless.adapters.dynamo_items import collect_page, default_client, error_code, from_item, store_error, to_item
from seekless.errors import Conflict, InvalidRequest, NotFound
from seekless.models import UNLIMITED, ApiKeyRecord, KeyLimits, Page, Session, StoredMessage

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

APPEND_ATTEMPTS = 5
KEY_ID_POINTER = "kid#"  # key_hash of the item that maps a key id to its key's hash
LIMIT_FIELDS = tuple(field.name for field in fields(KeyLimits))


def _store_error(error: ClientError) -> Exception:
    return store_error(error, "session store")


def _keys_error(error: ClientError) -> Exception:
    return store_error(error, "key store")


def _unknown_key(key_id: str) -> NotFound:
    return NotFound(f"No API key with id '{key_id}'.", code="key_not_found")


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
        self._client = client or default_client()
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
    """API keys by SHA-256 hash (the key itself is never stored), and the operator's view of them.

    The request path is ``lookup``: one GetItem by hash. The rest (``create``, ``get``, ``list_keys``,
    ``revoke``, ``rotate``) is for `seekless keys`; see the module docstring for the pointer items and
    the by_tenant index they use.
    """

    def __init__(
        self, table_name: str, *, client: DynamoDBClient | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self._table = table_name
        self._client = client or default_client()
        self._clock = clock

    # -- the request path

    def lookup(self, key_hash: str) -> ApiKeyRecord | None:
        """The key with this hash; None when there is none or it has expired (TTL deletion is late)."""
        try:
            found = self._client.get_item(TableName=self._table, Key={"key_hash": {"S": key_hash}})
        except ClientError as error:
            raise _keys_error(error) from error
        item = found.get("Item")
        if not item or "tenant_id" not in item:  # a key id's pointer item is never a key
            return None
        record = self._record(item)
        if record.expires_at is not None and record.expires_at <= self._clock():
            return None
        return record

    # -- the operator's commands

    def put(
        self,
        key_hash: str,
        *,
        tenant_id: str,
        key_id: str,
        name: str | None = None,
        limits: KeyLimits = UNLIMITED,
    ) -> None:
        """Seed a key, overwriting whatever was there (the local stack's dev key, fixtures). Operators'
        keys go through ``create``, which refuses to overwrite."""
        record = ApiKeyRecord(key_id=key_id, tenant_id=tenant_id, name=name, limits=limits, created_at=self._now())
        self._write(self._inserts(key_hash, record, only_new=False))

    def create(
        self,
        key_hash: str,
        *,
        tenant_id: str,
        key_id: str,
        name: str | None = None,
        limits: KeyLimits = UNLIMITED,
    ) -> ApiKeyRecord:
        """A new active key. Conflict when the hash or the key id is taken (the caller mints another)."""
        record = ApiKeyRecord(key_id=key_id, tenant_id=tenant_id, name=name, limits=limits, created_at=self._now())
        try:
            self._write(self._inserts(key_hash, record))
        except ClientError as error:
            if error_code(error) == "TransactionCanceledException":
                raise Conflict(f"An API key with id '{key_id}' already exists.", code="key_exists") from error
            raise
        return record

    def get(self, key_id: str) -> ApiKeyRecord:
        """The key with this id (an expired key's status reads ``expired``): two GetItems through the
        id's pointer and never a Scan, so a request path may use it (the limits of a job's key).
        NotFound for an unknown id, and for a key written before pointers existed (no limits either)."""
        found = self._by_pointer(key_id)
        if found is None:
            raise _unknown_key(key_id)
        return self._listed(found[1])

    def list_keys(self, tenant_id: str | None = None) -> list[ApiKeyRecord]:
        """One tenant's keys, newest first, through the by_tenant index; with no tenant, every key of
        the table by tenant, through a Scan (an operator's command, not a request path)."""
        if tenant_id is not None:
            query: dict[str, Any] = {
                "TableName": self._table,
                "IndexName": "by_tenant",
                "KeyConditionExpression": "tenant_id = :t",
                "ExpressionAttributeValues": {":t": {"S": tenant_id}},
                "ScanIndexForward": False,
            }
            page = collect_page(
                self._client, query, limit=None, alive=lambda _: True, convert=self._listed, store="key store"
            )
            return page.items
        records = [self._listed(item) for item in self._scan()]
        return sorted(records, key=lambda r: (r.tenant_id, -(r.created_at or 0), r.key_id))

    def revoke(self, key_id: str) -> ApiKeyRecord:
        """Mark the key revoked: lookups return it with that status and Authenticator refuses it (after
        at most its cache TTL). Revoking a revoked key changes nothing. NotFound for an unknown id."""
        key_hash, item, _ = self._find(key_id)
        if self._record(item).status == "revoked":
            return self._listed(item)
        try:
            updated = self._client.update_item(
                TableName=self._table,
                Key={"key_hash": {"S": key_hash}},
                UpdateExpression="SET #status = :revoked, revoked_at = :now",
                ConditionExpression="key_id = :id",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":revoked": {"S": "revoked"},
                    ":now": {"N": str(self._now())},
                    ":id": {"S": key_id},
                },
                ReturnValues="ALL_NEW",
            )
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":  # deleted between read and write
                raise _unknown_key(key_id) from error
            raise _keys_error(error) from error
        return self._listed(updated["Attributes"])

    def rotate(
        self, key_id: str, new_key_hash: str, *, new_key_id: str, grace_seconds: int = 0
    ) -> tuple[ApiKeyRecord, ApiKeyRecord]:
        """Replace an active key by a new one of the same tenant, name and limits, in one transaction.

        The old key stays valid for ``grace_seconds`` (its ``expires_at``, which lookups honour), or is
        revoked at once when that is 0. A key rotates once: its replacement is rotated next time.
        Returns (the old key as it now is, the new key).
        """
        if grace_seconds < 0:
            raise InvalidRequest("The grace period cannot be negative.", param="grace_seconds")
        old_hash, item, pointed = self._find(key_id)
        old = self._listed(item)
        if old.status != "active":
            raise Conflict(f"API key '{key_id}' is {old.status}: only an active key rotates.", code="key_not_active")
        if "replaced_by" in item:
            raise Conflict(
                f"API key '{key_id}' was already rotated; rotate its replacement '{item['replaced_by']['S']}'.",
                code="key_already_rotated",
            )
        now = self._now()
        new = ApiKeyRecord(key_id=new_key_id, tenant_id=old.tenant_id, name=old.name, limits=old.limits, created_at=now)
        names = {"#status": "status"}
        values: dict[str, Any] = {":id": {"S": key_id}, ":active": {"S": "active"}, ":new": {"S": new_key_id}}
        if grace_seconds == 0:
            change = "SET #status = :revoked, revoked_at = :now, replaced_by = :new"
            values |= {":revoked": {"S": "revoked"}, ":now": {"N": str(now)}}
            after = replace(old, status="revoked")
        else:
            expires = now + grace_seconds
            if old.expires_at is not None:
                expires = min(expires, old.expires_at)
            change = "SET expires_at = :expires, replaced_by = :new"
            values[":expires"] = {"N": str(expires)}
            after = replace(old, expires_at=expires)
        writes = [
            *self._inserts(new_key_hash, new),
            {
                "Update": {
                    "TableName": self._table,
                    "Key": {"key_hash": {"S": old_hash}},
                    "UpdateExpression": change,
                    # Unchanged since it was read: still this key, active, and not rotated meanwhile.
                    "ConditionExpression": "key_id = :id AND #status = :active AND attribute_not_exists(replaced_by)",
                    "ExpressionAttributeNames": names,
                    "ExpressionAttributeValues": values,
                }
            },
        ]
        if pointed and after.expires_at is not None:
            # TTL then removes the old key's pointer with it.
            writes.append(
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": {"key_hash": {"S": KEY_ID_POINTER + key_id}},
                        "UpdateExpression": "SET expires_at = :expires",
                        "ExpressionAttributeValues": {":expires": {"N": str(after.expires_at)}},
                    }
                }
            )
        try:
            self._write(writes)
        except ClientError as error:
            if error_code(error) != "TransactionCanceledException":
                raise
            reasons: list[Any] = list(error.response.get("CancellationReasons") or [])
            if len(reasons) > 2 and (reasons[2] or {}).get("Code") == "ConditionalCheckFailed":
                raise Conflict(
                    f"API key '{key_id}' changed while it was being rotated; nothing was written. Look at it "
                    "again with `seekless keys list`.",
                    code="key_changed",
                ) from error
            raise Conflict(f"An API key with id '{new_key_id}' already exists.", code="key_exists") from error
        return after, new

    # -- items

    def _now(self) -> int:
        return int(self._clock())

    def _item(self, key_hash: str, record: ApiKeyRecord) -> dict[str, Any]:
        limits = {name: getattr(record.limits, name) for name in LIMIT_FIELDS}
        return to_item(
            {
                "key_hash": key_hash,
                "key_id": record.key_id,
                "tenant_id": record.tenant_id,
                "status": record.status,
                "name": record.name,
                "created_at": record.created_at,
                "expires_at": record.expires_at,
                "limits": {name: value for name, value in limits.items() if value is not None} or None,
            }
        )

    @staticmethod
    def _pointer(key_id: str, key_hash: str) -> dict[str, Any]:
        return {"key_hash": {"S": KEY_ID_POINTER + key_id}, "points_to": {"S": key_hash}}

    def _inserts(self, key_hash: str, record: ApiKeyRecord, *, only_new: bool = True) -> list[dict[str, Any]]:
        """The key's item and its id's pointer, each only where nothing is yet (``only_new``), else
        overwriting whatever is there."""
        condition = {"ConditionExpression": "attribute_not_exists(key_hash)"} if only_new else {}
        return [
            {"Put": {"TableName": self._table, "Item": item, **condition}}
            for item in (self._item(key_hash, record), self._pointer(record.key_id, key_hash))
        ]

    @staticmethod
    def _record(item: dict[str, Any]) -> ApiKeyRecord:
        data = from_item(item)
        limits = data.get("limits") or {}
        expires = data.get("expires_at")
        created = data.get("created_at")
        return ApiKeyRecord(
            key_id=str(data.get("key_id") or data["key_hash"][:12]),
            tenant_id=data["tenant_id"],
            status=str(data.get("status") or "active"),
            expires_at=int(expires) if expires is not None else None,
            limits=KeyLimits(**{name: int(limits[name]) for name in LIMIT_FIELDS if limits.get(name) is not None}),
            name=data.get("name"),
            created_at=int(created) if created is not None else None,
        )

    def _listed(self, item: dict[str, Any]) -> ApiKeyRecord:
        """The record with the status an operator should see: an active key past its expiry is expired."""
        record = self._record(item)
        if record.status == "active" and record.expires_at is not None and record.expires_at <= self._clock():
            return replace(record, status="expired")
        return record

    def _write(self, writes: list[dict[str, Any]]) -> None:
        try:
            self._client.transact_write_items(TransactItems=writes)  # type: ignore[arg-type]
        except ClientError as error:
            if error_code(error) == "TransactionCanceledException":
                raise
            raise _keys_error(error) from error

    def _by_pointer(self, key_id: str) -> tuple[str, dict[str, Any]] | None:
        """(hash, item) of the key with this id, through its pointer; None when there is no pointer."""
        try:
            pointer = self._client.get_item(
                TableName=self._table, Key={"key_hash": {"S": KEY_ID_POINTER + key_id}}, ConsistentRead=True
            ).get("Item")
            if not pointer:
                return None
            key_hash = pointer["points_to"]["S"]
            item = self._client.get_item(
                TableName=self._table, Key={"key_hash": {"S": key_hash}}, ConsistentRead=True
            ).get("Item")
        except ClientError as error:
            raise _keys_error(error) from error
        if not item or item.get("key_id", {}).get("S") != key_id:  # TTL removed the key before its pointer
            raise _unknown_key(key_id)
        return key_hash, item

    def _find(self, key_id: str) -> tuple[str, dict[str, Any], bool]:
        """(hash, item, whether an id pointer led there) of the key with this id; NotFound if none.
        Operators' commands only: a key written before id pointers existed is found by a Scan."""
        found = self._by_pointer(key_id)
        if found is not None:
            return (*found, True)
        for item in self._scan(key_id):
            return item["key_hash"]["S"], item, False
        raise _unknown_key(key_id)

    def _scan(self, key_id: str | None = None) -> Iterator[dict[str, Any]]:
        """Every key item (pointer items carry no tenant), or those with this id."""
        scan: dict[str, Any] = {"TableName": self._table, "FilterExpression": "attribute_exists(tenant_id)"}
        if key_id is not None:
            scan["FilterExpression"] += " AND key_id = :id"
            scan["ExpressionAttributeValues"] = {":id": {"S": key_id}}
        try:
            while True:
                page = self._client.scan(**scan)
                yield from page.get("Items", [])
                if "LastEvaluatedKey" not in page:
                    return
                scan["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        except ClientError as error:
            raise _keys_error(error) from error
