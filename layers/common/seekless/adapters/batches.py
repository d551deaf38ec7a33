"""Batch records in DynamoDB and batch files in S3.

Batches table layout (keys from template.yaml):
    pk = "T#<tenant>#B#<batch>"   sk = "BATCH"     status, counters, checkpoint, file keys
    by_tenant index: gsi1pk = "T#<tenant>", gsi1sk = "<created µs:017d>#<batch>"   (newest first)
    open index (sparse): open_pk = "OPEN", open_sk = "<created µs:017d>"  until the batch ends

Counters: ``ended`` and one of ``n_completed``/``n_failed``/``n_cancelled`` go up by one in the same
transaction that marks the job counted (``DynamoJobStore.end_marker``), so a redelivered end never
counts twice. ``claim_finalize`` compares ``ended >= jobs`` in its condition: of the writers that saw
the last end, exactly one moves the batch to ``finalizing``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import IO, TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from seekless.adapters.dynamo_items import collect_page, error_code, from_item, store_error, to_item
from seekless.batches import Batch, BatchStatus, batch_not_found
from seekless.errors import Conflict, NotFound, ServiceUnavailable
from seekless.jobs import JobStatus
from seekless.models import Page

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

    from seekless.adapters.jobs import DynamoJobStore

OPEN = "OPEN"
_COUNTERS = {JobStatus.SUCCEEDED: "n_completed", JobStatus.FAILED: "n_failed", JobStatus.CANCELLED: "n_cancelled"}
_TIMES = ("in_progress_at", "finalizing_at", "completed_at", "failed_at", "cancelling_at", "cancelled_at")


def _store_error(error: ClientError) -> Exception:
    return store_error(error, "batch store")


class DynamoBatchStore:
    """Implements ``seekless.batches.BatchStore``."""

    def __init__(
        self,
        table_name: str,
        *,
        jobs: DynamoJobStore,
        ttl_days: int = 7,
        client: DynamoDBClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._table = table_name
        self._jobs = jobs
        self._ttl_seconds = ttl_days * 86_400
        if client is None:
            import boto3

            client = boto3.client("dynamodb")
        self._client = client
        self._clock = clock

    @staticmethod
    def _key(tenant_id: str, batch_id: str) -> dict[str, Any]:
        return {"pk": {"S": f"T#{tenant_id}#B#{batch_id}"}, "sk": {"S": "BATCH"}}

    def _alive(self, item: dict[str, Any] | None) -> bool:
        return bool(item) and int(item["expires_at"]["N"]) > int(self._clock())  # type: ignore[index]

    @staticmethod
    def _batch(item: dict[str, Any]) -> Batch:
        data = from_item(item)
        return Batch(
            id=data["batch_id"],
            tenant_id=data["tenant_id"],
            key_id=data.get("key_id", ""),
            status=BatchStatus(data["status"]),
            input_key=data["input_key"],
            created_at=int(data["created_at"]),
            jobs=int(data.get("jobs", 0)),
            invalid=int(data.get("invalid", 0)),
            completed=int(data.get("n_completed", 0)),
            failed=int(data.get("n_failed", 0)),
            cancelled=int(data.get("n_cancelled", 0)),
            ingested=bool(data.get("ingested", False)),
            checkpoint=int(data.get("checkpoint", 0)),
            source_tag=data.get("source_tag"),
            output_key=data.get("output_key"),
            error_key=data.get("error_key"),
            metadata=dict(data["metadata"]) if data.get("metadata") else None,
            errors=[dict(e) for e in data.get("errors") or []],
            times={name: int(data[name]) for name in _TIMES if data.get(name) is not None},
            cancel_requested=bool(data.get("cancel_requested", False)),
        )

    def _new_item(
        self, tenant_id: str, batch_id: str, *, key_id: str, input_key: str, status: BatchStatus, extra: dict[str, Any]
    ) -> dict[str, Any]:
        now = self._clock()
        created = f"{int(now * 1_000_000):017d}"
        values = {
            "gsi1pk": f"T#{tenant_id}",
            "gsi1sk": f"{created}#{batch_id}",
            # An upload not yet made is not open work: the sweeper's index holds only batches that run.
            "open_pk": None if status is BatchStatus.AWAITING_UPLOAD else OPEN,
            "open_sk": None if status is BatchStatus.AWAITING_UPLOAD else created,
            "batch_id": batch_id,
            "tenant_id": tenant_id,
            "key_id": key_id,
            "status": str(status),
            "input_key": input_key,
            "created_at": int(now),
            "updated_at": int(now),
            "expires_at": int(now) + self._ttl_seconds,
            "jobs": 0,
            "invalid": 0,
            "ended": 0,
            "checkpoint": 0,
            **extra,
        }
        return {**self._key(tenant_id, batch_id), **to_item(values)}

    def _read(self, tenant_id: str, batch_id: str) -> dict[str, Any] | None:
        try:
            found = self._client.get_item(
                TableName=self._table, Key=self._key(tenant_id, batch_id), ConsistentRead=True
            )
        except ClientError as error:
            raise _store_error(error) from error
        item = found.get("Item")
        if not self._alive(item) or item["tenant_id"]["S"] != tenant_id:  # type: ignore[index]
            return None
        return item

    def _update(
        self, tenant_id: str, batch_id: str, *, update: str, condition: str, values: dict[str, Any]
    ) -> dict[str, Any] | None:
        """One conditional UpdateItem; the new item, or None when the condition failed."""
        names = {"#status": "status"} if "#status" in update + condition else {}
        request: dict[str, Any] = {
            "TableName": self._table,
            "Key": self._key(tenant_id, batch_id),
            "UpdateExpression": update,
            "ConditionExpression": f"({condition}) AND expires_at > :now",
            "ExpressionAttributeValues": to_item({**values, ":now": int(self._clock())}),
            "ReturnValues": "ALL_NEW",
        }
        if names:
            request["ExpressionAttributeNames"] = names
        try:
            return dict(self._client.update_item(**request)["Attributes"])
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return None
            raise _store_error(error) from error

    # -- creating ------------------------------------------------------------------------------------

    def reserve(
        self,
        tenant_id: str,
        batch_id: str,
        *,
        key_id: str,
        input_key: str,
        metadata: dict[str, str] | None,
        expires_in: int,
    ) -> Batch:
        item = self._new_item(
            tenant_id,
            batch_id,
            key_id=key_id,
            input_key=input_key,
            status=BatchStatus.AWAITING_UPLOAD,
            extra={"metadata": metadata or None},
        )
        try:
            self._client.put_item(TableName=self._table, Item=item, ConditionExpression="attribute_not_exists(pk)")
        except ClientError as error:
            raise _store_error(error) from error
        return self._batch(item)

    def open(
        self, tenant_id: str, batch_id: str, *, key_id: str, input_key: str, source_tag: str, reserved: bool = False
    ) -> Batch:
        """Start validating the object ``source_tag`` as this batch. A reserved id must have been reserved
        (awaiting its upload) by this tenant; an id whose batch came from another object is a Conflict."""
        if not reserved:
            item = self._new_item(
                tenant_id,
                batch_id,
                key_id=key_id,
                input_key=input_key,
                status=BatchStatus.VALIDATING,
                extra={"source_tag": source_tag},
            )
            try:
                self._client.put_item(TableName=self._table, Item=item, ConditionExpression="attribute_not_exists(pk)")
                return self._batch(item)
            except ClientError as error:
                if error_code(error) != "ConditionalCheckFailedException":
                    raise _store_error(error) from error
        existing = self._read(tenant_id, batch_id)
        if existing is None:
            raise Conflict(f"Batch '{batch_id}' was not reserved.", code="batch_not_reserved")
        batch = self._batch(existing)
        if batch.source_tag == source_tag:
            return replace(batch, resumed=True)  # a redelivery: resume (only jobs not yet made) or skip
        if batch.status is BatchStatus.AWAITING_UPLOAD and batch.input_key == input_key:
            updated = self._update(
                tenant_id,
                batch_id,
                update="SET #status = :v, source_tag = :tag, updated_at = :now, open_pk = :o, open_sk = :osk",
                condition="#status = :a",
                values={
                    ":v": str(BatchStatus.VALIDATING),
                    ":tag": source_tag,
                    ":a": str(BatchStatus.AWAITING_UPLOAD),
                    ":o": OPEN,
                    ":osk": f"{int(self._clock() * 1_000_000):017d}",
                },
            )
            if updated is not None:
                return self._batch(updated)
            return self.open(
                tenant_id, batch_id, key_id=key_id, input_key=input_key, source_tag=source_tag, reserved=True
            )
        if batch.status is BatchStatus.CANCELLED and batch.source_tag is None:
            return batch  # cancelled before its upload arrived: nothing to run
        raise Conflict(f"Batch '{batch_id}' belongs to another upload.", code="batch_id_taken")

    def checkpoint(self, tenant_id: str, batch_id: str, handled: int) -> None:
        self._update(
            tenant_id,
            batch_id,
            update="SET checkpoint = :n, updated_at = :now",
            condition="attribute_exists(pk)",
            values={":n": handled},
        )

    def ingested(
        self, tenant_id: str, batch_id: str, *, jobs: int, invalid: int, errors: list[dict[str, Any]]
    ) -> Batch:
        values: dict[str, Any] = {":jobs": jobs, ":invalid": invalid, ":true": True, ":n": jobs}
        base = "SET jobs = :jobs, invalid = :invalid, ingested = :true, checkpoint = :n, updated_at = :now"
        if errors:
            base += ", errors = :errors"
            values[":errors"] = errors
        updated = self._update(
            tenant_id,
            batch_id,
            update=base + ", #status = :p, in_progress_at = :now",
            condition="#status = :v",
            values={**values, ":p": str(BatchStatus.IN_PROGRESS), ":v": str(BatchStatus.VALIDATING)},
        )
        if updated is None:  # cancelled while validating: stays cancelling
            updated = self._update(tenant_id, batch_id, update=base, condition="attribute_exists(pk)", values=values)
        if updated is None:
            raise batch_not_found(batch_id)
        return self._batch(updated)

    # -- reading -------------------------------------------------------------------------------------

    def get(self, tenant_id: str, batch_id: str) -> Batch:
        item = self._read(tenant_id, batch_id)
        if item is None:
            raise batch_not_found(batch_id)
        return self._batch(item)

    def list_batches(self, tenant_id: str, *, limit: int, after: str | None) -> Page[Batch]:
        condition = "gsi1pk = :p"
        values: dict[str, Any] = {":p": {"S": f"T#{tenant_id}"}}
        if after:
            cursor = self._read(tenant_id, after)
            if cursor is None:
                raise batch_not_found(after)
            condition += " AND gsi1sk < :c"
            values[":c"] = cursor["gsi1sk"]
        query: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": "by_tenant",
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": values,
            "ScanIndexForward": False,
            "Limit": limit + 1,
        }
        return collect_page(
            self._client, query, limit=limit, alive=self._alive, convert=self._batch, store="batch store"
        )

    # -- cancelling and ending -----------------------------------------------------------------------

    def cancel(self, tenant_id: str, batch_id: str) -> Batch:
        # Not uploaded yet: nothing will run, so the batch ends at once.
        updated = self._update(
            tenant_id,
            batch_id,
            update="SET #status = :x, cancelled_at = :now, cancel_requested = :true, updated_at = :now "
            "REMOVE open_pk, open_sk",
            condition="#status = :a",
            values={":x": str(BatchStatus.CANCELLED), ":a": str(BatchStatus.AWAITING_UPLOAD), ":true": True},
        )
        if updated is None:
            updated = self._update(
                tenant_id,
                batch_id,
                update="SET #status = :c, cancelling_at = :now, cancel_requested = :true, updated_at = :now",
                condition="#status IN (:v, :p)",
                values={
                    ":c": str(BatchStatus.CANCELLING),
                    ":v": str(BatchStatus.VALIDATING),
                    ":p": str(BatchStatus.IN_PROGRESS),
                    ":true": True,
                },
            )
        if updated is not None:
            return self._batch(updated)
        current = self.get(tenant_id, batch_id)
        if current.status in (BatchStatus.CANCELLING, BatchStatus.CANCELLED):
            return current
        raise Conflict(f"Batch '{batch_id}' is {current.status} and cannot be cancelled.", code="batch_finished")

    def count_end(self, tenant_id: str, batch_id: str, job_id: str, status: JobStatus) -> bool:
        counter = _COUNTERS[status]
        try:
            self._client.transact_write_items(
                TransactItems=[
                    self._jobs.end_marker(tenant_id, job_id),  # type: ignore[list-item]
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": self._key(tenant_id, batch_id),
                            "UpdateExpression": f"ADD ended :one, {counter} :one SET updated_at = :now",
                            "ConditionExpression": "attribute_exists(pk)",
                            "ExpressionAttributeValues": to_item({":one": 1, ":now": int(self._clock())}),
                        }
                    },
                ]
            )
        except ClientError as error:
            if error_code(error) != "TransactionCanceledException":
                raise _store_error(error) from error
            reasons = list(error.response.get("CancellationReasons") or [])
            if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
                return False  # counted before
            if len(reasons) > 1 and reasons[1].get("Code") == "ConditionalCheckFailed":
                return False  # the batch is gone (expired): nothing to count on
            raise ServiceUnavailable("The batch counter could not be updated; retry shortly.") from error
        return True

    def claim_finalize(self, tenant_id: str, batch_id: str, *, owner: str, lease_seconds: float) -> Batch | None:
        now = self._clock()
        updated = self._update(
            tenant_id,
            batch_id,
            update="SET #status = :f, finalizing_at = :now, finalize_owner = :owner, finalize_expires_at = :lease, "
            "updated_at = :now",
            condition="(#status IN (:p, :c) OR (#status = :f AND finalize_expires_at <= :now)) "
            "AND ingested = :true AND ended >= jobs",
            values={
                ":f": str(BatchStatus.FINALIZING),
                ":p": str(BatchStatus.IN_PROGRESS),
                ":c": str(BatchStatus.CANCELLING),
                ":true": True,
                ":owner": owner,
                ":lease": int(now + lease_seconds),
            },
        )
        return self._batch(updated) if updated is not None else None

    def finish(
        self, tenant_id: str, batch_id: str, *, owner: str, status: BatchStatus, output_key: str, error_key: str
    ) -> Batch:
        stamp = f"{status}_at"
        updated = self._update(
            tenant_id,
            batch_id,
            update=f"SET #status = :s, {stamp} = :now, output_key = :o, error_key = :e, updated_at = :now "
            "REMOVE open_pk, open_sk, finalize_owner, finalize_expires_at",
            condition="#status = :f AND finalize_owner = :owner",
            values={
                ":s": str(status),
                ":o": output_key,
                ":e": error_key,
                ":f": str(BatchStatus.FINALIZING),
                ":owner": owner,
            },
        )
        if updated is None:
            return self.get(tenant_id, batch_id)  # another finalizer took over after our claim expired
        return self._batch(updated)

    def unfinished(self, *, older_than: float, limit: int) -> list[tuple[str, str]]:
        """Running batches (uploads not yet made are not in the index), oldest first, up to ``limit``:
        every page, since the oldest open ones may be long, healthy batches."""
        query: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": "open",
            "KeyConditionExpression": "open_pk = :o AND open_sk < :c",
            "ExpressionAttributeValues": {":o": {"S": OPEN}, ":c": {"S": f"{int(older_than * 1_000_000):017d}"}},
        }
        found: list[tuple[str, str]] = []
        while len(found) < limit:
            try:
                page = self._client.query(**query)
            except ClientError as error:
                raise _store_error(error) from error
            found += [(item["tenant_id"]["S"], item["batch_id"]["S"]) for item in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                break
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return found[:limit]


class S3BatchFiles:
    """Implements ``seekless.batches.BatchFiles`` on the jobs bucket (boto3's managed transfers, so a
    large file goes up in parts and never sits in memory)."""

    CHUNK = 1 << 20

    def __init__(self, bucket: str, *, client: Any | None = None) -> None:
        self._bucket = bucket
        if client is None:
            import boto3

            client = boto3.client("s3")
        self._client = client

    def _unavailable(self, error: Exception) -> ServiceUnavailable:
        return ServiceUnavailable(f"The batch files are unavailable ({type(error).__name__}); retry shortly.")

    def read(self, bucket: str, key: str) -> Iterator[bytes]:
        """Opens the object now (a missing one raises NotFound here), then streams it in 1 MiB chunks."""
        try:
            body = self._client.get_object(Bucket=bucket, Key=key)["Body"]
        except ClientError as error:
            if error_code(error) in ("NoSuchKey", "404"):
                raise NotFound(f"No object s3://{bucket}/{key}.", code="batch_file_not_found") from error
            raise self._unavailable(error) from error
        except BotoCoreError as error:
            raise self._unavailable(error) from error
        return self._chunks(body)

    def _chunks(self, body: Any) -> Iterator[bytes]:
        try:
            yield from body.iter_chunks(self.CHUNK)
        except (ClientError, BotoCoreError) as error:
            raise self._unavailable(error) from error

    def write(self, key: str, source: IO[bytes]) -> None:
        try:
            self._client.upload_fileobj(source, self._bucket, key, ExtraArgs={"ContentType": "application/jsonl"})
        except (ClientError, BotoCoreError) as error:
            raise self._unavailable(error) from error

    def copy_into(self, key: str, sink: IO[bytes]) -> bool:
        try:
            body = self._client.get_object(Bucket=self._bucket, Key=key)["Body"]
            for chunk in body.iter_chunks(self.CHUNK):
                sink.write(chunk)
        except ClientError as error:
            if error_code(error) in ("NoSuchKey", "404"):
                return False
            raise self._unavailable(error) from error
        except BotoCoreError as error:
            raise self._unavailable(error) from error
        return True

    def upload_url(self, key: str, *, content_type: str, expires_in: int) -> str:
        return str(
            self._client.generate_presigned_url(
                "put_object",
                Params={"Bucket": self._bucket, "Key": key, "ContentType": content_type},
                ExpiresIn=expires_in,
            )
        )

    def download_url(self, key: str, *, expires_in: int) -> str:
        return str(
            self._client.generate_presigned_url(
                "get_object", Params={"Bucket": self._bucket, "Key": key}, ExpiresIn=expires_in
            )
        )
