"""Job records in DynamoDB, results too large for an item in S3.

Jobs table layout (keys from template.yaml):
    pk = "T#<tenant>#J#<job>"        sk = "JOB"          the job: status, lease, progress, result or error
    pk = "T#<tenant>#K#<sha256(key)>" sk = "IDEMPOTENCY"  an Idempotency-Key: the job it made, the body's hash
    by_tenant index:        gsi1pk = "T#<tenant>",          gsi1sk = "<created µs:017d>#<job>"
    by_tenant_status index: gsi2pk = "T#<tenant>#<status>", gsi2sk = gsi1sk
Both indexes exist on job items only (idempotency items carry no index keys) and list newest first.
``?status=`` queries the status index directly, so listing the few queued jobs among thousands of
finished ones reads only queued ones; every transition moves ``gsi2pk`` with the status in the same
write. The indexes project the summary attributes only (INCLUDE): a page of jobs never reads the
requests or results (nor a deferred job's ``waiting``, which GET shows). The cursor
(``after=<job id>``) becomes ``gsi sort key < cursor's``, which stays valid when the cursor job changes
status between pages.

The tenant is part of every key, so another tenant's job id is a plain miss (404). Every transition is
one UpdateItem whose condition is the state machine's rule (seekless.jobs) and ``expires_at > now``;
when it fails, the item as it was (ReturnValuesOnConditionCheckFailure) says which rule, so there is
no read-then-write window and no lost update. TTL deletion is late: expired items read as missing.

Idempotency: the key's record and the job are put in one transaction, each conditioned on not
existing (an expired key record may be replaced). Of N concurrent identical requests exactly one
transaction succeeds; the others read the winner's record and return its job. Powertools' idempotency
utility was considered and not used: it answers a concurrent duplicate with
IdempotencyAlreadyInProgressError instead of the winner's job, it caches the handler's response (ours
is "the job", read fresh each time), and its record cannot share one transaction with the job, so a
crash between the two writes could leave a key pointing at nothing.

Large results: a result whose JSON exceeds ``inline_result_bytes`` is written to
``s3://<bucket>/jobs/<tenant>/<job>/result-<random>.json`` first, then the pointer goes into the item
by the same conditional write as an inline result. The random part means a worker that lost its lease
can never overwrite the winner's object; a loser's object is orphaned and removed by the bucket's
lifecycle rule.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from seekless.adapters.dynamo_items import collect_page, error_code, from_item, store_error, to_item
from seekless.contracts import ChatCompletionRequest, DecisionJob, ReplyTo
from seekless.errors import ServiceUnavailable
from seekless.jobs import (
    Action,
    IdempotencyKeyReused,
    Job,
    JobConflict,
    JobStatus,
    check_transition,
    job_not_found,
)
from seekless.models import Page

if TYPE_CHECKING:
    from collections.abc import Iterator

    from mypy_boto3_dynamodb import DynamoDBClient

    from seekless.batches import BatchLine

UNSENT = "UNSENT"
CREATE_ATTEMPTS = 5
# What the list indexes carry (template.yaml's NonKeyAttributes must match).
SUMMARY_ATTRIBUTES = (
    "job_id",
    "tenant_id",
    "key_id",
    "status",
    "model",
    "session_id",
    "attempts",
    "progress_tokens",
    "lease_owner",
    "lease_expires_at",
    "error",
    "created_at",
    "updated_at",
    "expires_at",
)


class S3Client(Protocol):
    """The two calls the store makes (boto3's S3 client; no stubs needed)."""

    def put_object(self, **kwargs: Any) -> Any: ...

    def get_object(self, **kwargs: Any) -> Any: ...


def _number(value: float) -> Decimal:
    # DynamoDB numbers are decimals; millisecond precision is plenty for a lease.
    return Decimal(str(round(value, 3)))


def _store_error(error: ClientError) -> Exception:
    return store_error(error, "job store")


class DynamoJobStore:
    """Implements ``seekless.ports.JobStore`` (the API) and ``JobLeases`` (the worker)."""

    def __init__(
        self,
        table_name: str,
        *,
        bucket: str | None = None,
        ttl_days: int = 7,
        inline_result_bytes: int = 300_000,
        client: DynamoDBClient | None = None,
        s3_client: S3Client | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._table = table_name
        self._bucket = bucket
        self._ttl_seconds = ttl_days * 86_400
        self._inline_result_bytes = inline_result_bytes
        if client is None:
            import boto3

            client = boto3.client("dynamodb")
        self._client = client
        self._s3 = s3_client
        self._clock = clock

    # -- keys and mapping ----------------------------------------------------------------------------

    @staticmethod
    def _key(tenant_id: str, job_id: str) -> dict[str, Any]:
        return {"pk": {"S": f"T#{tenant_id}#J#{job_id}"}, "sk": {"S": "JOB"}}

    @staticmethod
    def _idempotency_key(tenant_id: str, key: str) -> dict[str, Any]:
        digest = hashlib.sha256(key.encode()).hexdigest()
        return {"pk": {"S": f"T#{tenant_id}#K#{digest}"}, "sk": {"S": "IDEMPOTENCY"}}

    def _alive(self, item: dict[str, Any] | None) -> bool:
        return bool(item) and int(item["expires_at"]["N"]) > int(self._clock())  # type: ignore[index]

    def _s3_client(self) -> S3Client:
        if self._s3 is None:
            import boto3

            self._s3 = boto3.client("s3")
        return self._s3

    def _job(self, item: dict[str, Any], *, resolve: bool = False) -> Job:
        data = from_item(item)
        request = data.get("request")
        result = data.get("result")
        pointer = data.get("result_s3")
        if pointer and resolve:
            result = self._read_result(pointer)
        lease = data.get("lease_expires_at")
        return Job(
            id=data["job_id"],
            tenant_id=data["tenant_id"],
            status=JobStatus(data["status"]),
            model=data.get("model", ""),
            created_at=int(data["created_at"]),
            updated_at=int(data["updated_at"]),
            key_id=data.get("key_id", ""),
            request=ChatCompletionRequest.model_validate_json(request) if request else None,
            session_id=data.get("session_id"),
            attempts=int(data.get("attempts", 0)),
            lease_owner=data.get("lease_owner"),
            lease_expires_at=float(lease) if lease is not None else None,
            progress_tokens=int(data.get("progress_tokens", 0)),
            result=json.loads(result) if isinstance(result, str) else result,
            error=dict(data["error"]) if data.get("error") else None,
            batch_id=data.get("batch_id"),
            custom_id=data.get("custom_id"),
            line=int(data["line"]) if data.get("line") is not None else None,
            reply_to=ReplyTo.model_validate_json(data["reply_to"]) if data.get("reply_to") else None,
            replied="replied_at" in data,
            deferrals=int(data.get("deferrals", 0)),
            wait_reason=data.get("wait_reason"),
            not_before=float(data["not_before"]) if data.get("not_before") is not None else None,
            deferred_message=data.get("deferred_message"),
            decision=DecisionJob.model_validate_json(data["decision"]) if data.get("decision") else None,
        )

    # -- create --------------------------------------------------------------------------------------

    def create(
        self,
        tenant_id: str,
        *,
        key_id: str,
        request: ChatCompletionRequest,
        session_id: str | None,
        idempotency: tuple[str, str] | None = None,
        job_id: str | None = None,
        reply_to: ReplyTo | None = None,
    ) -> tuple[Job, bool]:
        """Record a queued job. With ``job_id`` (a queued request's id, derived from its message id) a job
        that already exists is returned with False: the same message delivered twice makes one job."""
        chosen = job_id
        for _ in range(CREATE_ATTEMPTS):
            now = self._clock()
            job_id = chosen or "job_" + secrets.token_hex(12)
            sort_key = f"{int(now * 1_000_000):017d}#{job_id}"
            expires = int(now) + self._ttl_seconds
            values = {
                "gsi1pk": f"T#{tenant_id}",
                "gsi1sk": sort_key,
                "gsi2pk": f"T#{tenant_id}#{JobStatus.QUEUED}",
                "gsi2sk": sort_key,
                "job_id": job_id,
                "tenant_id": tenant_id,
                "key_id": key_id,
                "status": str(JobStatus.QUEUED),
                "model": request.model,
                "request": request.model_dump_json(exclude_none=True),
                "session_id": session_id,
                "attempts": 0,
                "progress_tokens": 0,
                "created_at": int(now),
                "updated_at": int(now),
                "expires_at": expires,
                # In the sparse `unsent` index until the producer confirms the message was sent: a
                # producer that crashed in between leaves the job there for the sweeper to re-send.
                "unsent_pk": UNSENT,
                "unsent_sk": sort_key,
            }
            if reply_to is not None:
                values["reply_to"] = reply_to.model_dump_json(exclude_none=True)
            job_item = {**self._key(tenant_id, job_id), **to_item(values)}
            put_job: dict[str, Any] = {
                "TableName": self._table,
                "Item": job_item,
                "ConditionExpression": "attribute_not_exists(pk)",
            }
            try:
                if idempotency is None:
                    self._client.put_item(**put_job)
                else:
                    key, fingerprint = idempotency
                    record = {
                        **self._idempotency_key(tenant_id, key),
                        **to_item({"job_id": job_id, "fingerprint": fingerprint, "expires_at": expires}),
                    }
                    self._client.transact_write_items(
                        TransactItems=[
                            {
                                "Put": {
                                    "TableName": self._table,
                                    "Item": record,
                                    # An expired record TTL has not deleted yet counts as gone.
                                    "ConditionExpression": "attribute_not_exists(pk) OR expires_at <= :now",
                                    "ExpressionAttributeValues": {":now": {"N": str(int(now))}},
                                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                                }
                            },
                            {"Put": put_job},  # type: ignore[typeddict-item]
                        ]
                    )
            except ClientError as error:
                code = error_code(error)
                if code == "ConditionalCheckFailedException":
                    if chosen is not None:
                        existing_item = self._read(tenant_id, chosen)
                        if existing_item is not None:
                            return self._job(existing_item, resolve=True), False
                    continue  # a job id collision: mint another
                if code != "TransactionCanceledException" or idempotency is None:
                    raise _store_error(error) from error
                reasons: list[Any] = list(error.response.get("CancellationReasons") or [{}])
                if any(r.get("Code") == "TransactionConflict" for r in reasons):
                    time.sleep(0.02 * (1 + secrets.randbelow(5)))
                    continue  # a concurrent request holds the key right now: read its result next round
                existing = self._existing(tenant_id, idempotency, reasons[0].get("Item"))
                if existing is not None:
                    return existing, False
                continue  # the record vanished (expired) between the two calls: try again
            return self._job(job_item), True
        raise JobConflict("The job could not be created under contention; retry.", code="job_create_contention")

    def _existing(self, tenant_id: str, idempotency: tuple[str, str], record: dict[str, Any] | None) -> Job | None:
        key, fingerprint = idempotency
        if record is None:
            try:
                found = self._client.get_item(
                    TableName=self._table, Key=self._idempotency_key(tenant_id, key), ConsistentRead=True
                )
            except ClientError as error:
                raise _store_error(error) from error
            record = found.get("Item")
        if not self._alive(record):
            return None
        assert record is not None
        if record["fingerprint"]["S"] != fingerprint:
            raise IdempotencyKeyReused(
                "This Idempotency-Key was already used with a different request body. Use a new key.",
                param="Idempotency-Key",
            )
        job_item = self._read(tenant_id, record["job_id"]["S"])
        return self._job(job_item, resolve=True) if job_item is not None else None

    # -- batch lines ---------------------------------------------------------------------------------

    def _batch_job_item(
        self, tenant_id: str, batch_id: str, key_id: str, line: BatchLine, now: float
    ) -> dict[str, Any]:
        from seekless.batches import line_job_id

        job_id = line_job_id(batch_id, line.number)
        sort_key = f"{int(now * 1_000_000):017d}#{job_id}"
        values = {
            "gsi1pk": f"T#{tenant_id}",
            "gsi1sk": sort_key,
            "gsi2pk": f"T#{tenant_id}#{JobStatus.QUEUED}",
            "gsi2sk": sort_key,
            "gsi3pk": f"B#{batch_id}",
            "gsi3sk": f"{line.number:09d}",
            "job_id": job_id,
            "tenant_id": tenant_id,
            "key_id": key_id,
            "status": str(JobStatus.QUEUED),
            "model": line.model,
            "attempts": 0,
            "progress_tokens": 0,
            "created_at": int(now),
            "updated_at": int(now),
            "expires_at": int(now) + self._ttl_seconds,
            "batch_id": batch_id,
            "custom_id": line.custom_id,
            "line": line.number,
        }
        if line.request is not None:
            values["request"] = line.request.model_dump_json(exclude_none=True)
        if line.decision is not None:
            values["decision"] = line.decision.model_dump_json(exclude_none=True)
        return {**self._key(tenant_id, job_id), **to_item(values)}

    def put_batch_jobs(
        self, tenant_id: str, batch_id: str, *, key_id: str, lines: list[BatchLine], only_new: bool
    ) -> list[Job]:
        """One job per batch line, in BatchWriteItem pages of 25. ``only_new`` (a resumed ingest): one
        conditional put per line instead, so a job that already ran is never overwritten; the jobs
        returned are those still queued, to be sent (again: a duplicate message is harmless)."""
        now = self._clock()
        items = [self._batch_job_item(tenant_id, batch_id, key_id, line, now) for line in lines]
        try:
            if not only_new:
                for start in range(0, len(items), 25):
                    pending: dict[str, Any] = {
                        self._table: [{"PutRequest": {"Item": item}} for item in items[start : start + 25]]
                    }
                    for attempt in range(8):
                        answer = self._client.batch_write_item(RequestItems=pending)
                        pending = answer.get("UnprocessedItems") or {}
                        if not pending:
                            break
                        time.sleep(min(1.0, 0.05 * 2**attempt))  # throttled: back off, then the rest
                    if pending:
                        raise ServiceUnavailable("The job store is throttling; the batch will resume on retry.")
                return [self._job(item) for item in items]
            queued = []
            for item in items:
                try:
                    self._client.put_item(
                        TableName=self._table, Item=item, ConditionExpression="attribute_not_exists(pk)"
                    )
                    queued.append(self._job(item))
                except ClientError as error:
                    if error_code(error) != "ConditionalCheckFailedException":
                        raise
                    existing = self._read(tenant_id, item["job_id"]["S"])
                    if existing is not None and existing["status"]["S"] == JobStatus.QUEUED:
                        queued.append(self._job(existing))
            return queued
        except ClientError as error:
            raise _store_error(error) from error

    def batch_jobs(self, batch_id: str) -> Iterator[Job]:
        """The batch's jobs in line order. The index is eventually consistent, so a job it still shows
        unfinished is read again from the table (consistently) before it is reported."""
        query: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": "by_batch",
            "KeyConditionExpression": "gsi3pk = :b",
            "ExpressionAttributeValues": {":b": {"S": f"B#{batch_id}"}},
        }
        while True:
            try:
                page = self._client.query(**query)
            except ClientError as error:
                raise _store_error(error) from error
            for item in page.get("Items", []):
                job = self._job(item, resolve=True)
                if not job.status.terminal:
                    fresh = self._read(job.tenant_id, job.id)
                    if fresh is not None:
                        job = self._job(fresh, resolve=True)
                yield job
            if "LastEvaluatedKey" not in page:
                return
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def end_marker(self, tenant_id: str, job_id: str) -> dict[str, Any]:
        """A TransactWriteItem marking a finished batch job as counted on its batch, refused when it
        already was: committed with the batch's counter, it makes each end count once."""
        return {
            "Update": {
                "TableName": self._table,
                "Key": self._key(tenant_id, job_id),
                "UpdateExpression": "SET counted_at = :t",
                "ConditionExpression": "#status IN (:s, :f, :c) AND attribute_not_exists(counted_at)",
                "ExpressionAttributeNames": {"#status": "status"},
                "ExpressionAttributeValues": to_item(
                    {
                        ":t": int(self._clock()),
                        ":s": str(JobStatus.SUCCEEDED),
                        ":f": str(JobStatus.FAILED),
                        ":c": str(JobStatus.CANCELLED),
                    }
                ),
            }
        }

    def mark_replied(self, tenant_id: str, job_id: str) -> bool:
        """Record that a queued request's reply went out; False when it already had."""
        try:
            self._client.update_item(
                TableName=self._table,
                Key=self._key(tenant_id, job_id),
                UpdateExpression="SET replied_at = :t",
                ConditionExpression="attribute_exists(pk) AND attribute_not_exists(replied_at)",
                ExpressionAttributeValues={":t": {"N": str(int(self._clock()))}},
            )
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return False
            raise _store_error(error) from error
        return True

    # -- reads ---------------------------------------------------------------------------------------

    def _read(self, tenant_id: str, job_id: str) -> dict[str, Any] | None:
        try:
            found = self._client.get_item(TableName=self._table, Key=self._key(tenant_id, job_id), ConsistentRead=True)
        except ClientError as error:
            raise _store_error(error) from error
        item = found.get("Item")
        # The tenant check is redundant with the key; it guards against a key-format bug.
        if not self._alive(item) or item["tenant_id"]["S"] != tenant_id:  # type: ignore[index]
            return None
        return item

    def get(self, tenant_id: str, job_id: str) -> Job:
        item = self._read(tenant_id, job_id)
        if item is None:
            raise job_not_found(job_id)
        return self._job(item, resolve=True)

    def mark_sent(self, tenant_id: str, job_id: str) -> None:
        """The job's message is on the queue: take it out of the sweeper's sight."""
        try:
            self._client.update_item(
                TableName=self._table,
                Key=self._key(tenant_id, job_id),
                UpdateExpression="REMOVE unsent_pk, unsent_sk",
                ConditionExpression="attribute_exists(pk)",
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise _store_error(error) from error

    def unsent(self, *, created_before: float, limit: int = 100) -> list[Job]:
        """Jobs whose message was never confirmed sent, oldest first, created before the cutoff."""
        cutoff = f"{int(created_before * 1_000_000):017d}"
        try:
            page = self._client.query(
                TableName=self._table,
                IndexName="unsent",
                KeyConditionExpression="unsent_pk = :u AND unsent_sk < :c",
                ExpressionAttributeValues={":u": {"S": UNSENT}, ":c": {"S": cutoff}},
                Limit=limit,
            )
        except ClientError as error:
            raise _store_error(error) from error
        jobs = []
        for key in page.get("Items", []):  # the index projects tenant_id and job_id
            item = self._read(key["tenant_id"]["S"], key["job_id"]["S"])
            if item is not None:
                jobs.append(self._job(item))
        return jobs

    def holders(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], tuple[JobStatus, str | None] | None]:
        """Status and lease owner of many jobs in one consistent BatchGetItem per hundred: how a worker
        watches all its running jobs for a cancel with one read per poll, not one per job.
        A missing or expired job maps to None."""
        found: dict[tuple[str, str], tuple[JobStatus, str | None] | None] = dict.fromkeys(keys)
        for start in range(0, len(keys), 100):
            pending: dict[str, Any] = {
                self._table: {
                    "Keys": [self._key(tenant, job) for tenant, job in keys[start : start + 100]],
                    "ConsistentRead": True,
                    "ProjectionExpression": "pk, tenant_id, #status, lease_owner, expires_at",
                    "ExpressionAttributeNames": {"#status": "status"},
                }
            }
            try:
                while pending:
                    answer = self._client.batch_get_item(RequestItems=pending)
                    for item in answer.get("Responses", {}).get(self._table, []):
                        if not self._alive(item):
                            continue
                        tenant = item["tenant_id"]["S"]
                        job = item["pk"]["S"].removeprefix(f"T#{tenant}#J#")
                        owner = item.get("lease_owner", {}).get("S")
                        found[(tenant, job)] = (JobStatus(item["status"]["S"]), owner)
                    pending = answer.get("UnprocessedKeys") or {}
            except ClientError as error:
                raise _store_error(error) from error
        return found

    def list_jobs(self, tenant_id: str, *, status: JobStatus | None, limit: int, after: str | None) -> Page[Job]:
        if status is None:
            index, partition, pk_name, sk_name = "by_tenant", f"T#{tenant_id}", "gsi1pk", "gsi1sk"
        else:
            index, partition, pk_name, sk_name = "by_tenant_status", f"T#{tenant_id}#{status}", "gsi2pk", "gsi2sk"
        condition = f"{pk_name} = :p"
        values: dict[str, Any] = {":p": {"S": partition}}
        if after:
            cursor = self._read(tenant_id, after)
            if cursor is None:
                raise job_not_found(after)
            condition += f" AND {sk_name} < :c"
            values[":c"] = cursor["gsi1sk"]
        query: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": index,
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": values,
            "ScanIndexForward": False,  # newest first
            "Limit": limit + 1,
        }
        return collect_page(self._client, query, limit=limit, alive=self._alive, convert=self._job, store="job store")

    # -- transitions ---------------------------------------------------------------------------------

    def _transition(
        self,
        action: Action,
        tenant_id: str,
        job_id: str,
        *,
        owner: str | None,
        condition: str,
        update: str,
        values: dict[str, Any],
        status: JobStatus | None = None,
        message_id: str | None = None,
    ) -> Job:
        now = self._clock()
        values = {**values, ":now": int(now), ":t": int(now)}
        if status is not None:
            values[":status"] = str(status)
            values[":gsi2"] = f"T#{tenant_id}#{status}"
            update = update.replace("SET ", "SET #status = :status, gsi2pk = :gsi2, ", 1)
        update = update.replace("SET ", "SET updated_at = :t, ", 1)
        names = {f"#{name}": name for name in re.findall(r"#(\w+)", condition + update)}
        request: dict[str, Any] = {
            "TableName": self._table,
            "Key": self._key(tenant_id, job_id),
            "UpdateExpression": update,
            "ConditionExpression": f"({condition}) AND expires_at > :now",
            "ExpressionAttributeValues": to_item(values),
            "ReturnValues": "ALL_NEW",
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if names:
            request["ExpressionAttributeNames"] = names
        try:
            updated = self._client.update_item(**request)
        except ClientError as error:
            if error_code(error) != "ConditionalCheckFailedException":
                raise _store_error(error) from error
            old: dict[str, Any] | None = error.response.get("Item")  # type: ignore[assignment]
            current = self._job(old) if old and self._alive(old) and old.get("job_id") else None
            if action == "cancel" and current is not None and current.status is JobStatus.CANCELLED:
                return current  # cancelling twice is harmless: the answer is the same
            check_transition(action, current, job_id=job_id, owner=owner, now=now, message_id=message_id)
            raise JobConflict(f"Job '{job_id}' changed concurrently; read it again.", current=current) from error
        return self._job(updated["Attributes"], resolve=action == "succeed")

    def claim(
        self, tenant_id: str, job_id: str, *, owner: str, lease_seconds: float, message_id: str | None = None
    ) -> Job:
        """queued → running, or take over a running job whose lease expired (a worker died): attempts + 1.
        With ``message_id``, a deferred job is claimed only through the message its deferral sent."""
        queued = "#status = :queued"
        values: dict[str, Any] = {
            ":queued": str(JobStatus.QUEUED),
            ":running": str(JobStatus.RUNNING),
            ":nowf": _number(self._clock()),
            ":zero": 0,
            ":one": 1,
            ":owner": owner,
            ":lease": _number(self._clock() + lease_seconds),
        }
        if message_id is not None:
            queued += " AND (attribute_not_exists(deferred_message) OR deferred_message = :message)"
            values[":message"] = message_id
        return self._transition(
            "claim",
            tenant_id,
            job_id,
            owner=owner,
            condition=f"({queued}) OR (#status = :running AND lease_expires_at <= :nowf)",
            update=(
                "SET attempts = if_not_exists(attempts, :zero) + :one, lease_owner = :owner, lease_expires_at = :lease "
                "REMOVE wait_reason, not_before, deferred_message"
            ),
            values=values,
            status=JobStatus.RUNNING,
            message_id=message_id,
        )

    def defer(self, tenant_id: str, job_id: str, *, owner: str, not_before: float, reason: str, message_id: str) -> Job:
        """running → queued by its lease holder, to wait for its key's per-minute limits until
        ``not_before``, when ``message_id`` (sent before this write) comes back to claim it. The attempt
        its claim counted is given back: nothing ran."""
        return self._transition(
            "defer",
            tenant_id,
            job_id,
            owner=owner,
            condition=self._owned(),
            update=(
                "SET attempts = attempts - :one, deferrals = if_not_exists(deferrals, :zero) + :one, "
                "wait_reason = :reason, not_before = :not_before, deferred_message = :message "
                "REMOVE lease_owner, lease_expires_at"
            ),
            values={
                ":running": str(JobStatus.RUNNING),
                ":owner": owner,
                ":zero": 0,
                ":one": 1,
                ":reason": reason,
                ":not_before": _number(not_before),
                ":message": message_id,
            },
            status=JobStatus.QUEUED,
        )

    def _owned(self) -> str:
        return "#status = :running AND lease_owner = :owner"

    def heartbeat(self, tenant_id: str, job_id: str, *, owner: str, lease_seconds: float) -> Job:
        return self._transition(
            "heartbeat",
            tenant_id,
            job_id,
            owner=owner,
            condition=self._owned(),
            update="SET lease_expires_at = :lease",
            values={
                ":running": str(JobStatus.RUNNING),
                ":owner": owner,
                ":lease": _number(self._clock() + lease_seconds),
            },
        )

    def progress(self, tenant_id: str, job_id: str, *, owner: str, tokens: int) -> Job:
        return self._transition(
            "progress",
            tenant_id,
            job_id,
            owner=owner,
            condition=self._owned(),
            update="SET progress_tokens = :tokens",
            values={":running": str(JobStatus.RUNNING), ":owner": owner, ":tokens": tokens},
        )

    def succeed(self, tenant_id: str, job_id: str, result: dict[str, Any], *, owner: str) -> Job:
        body = json.dumps(result, separators=(",", ":"))
        values: dict[str, Any] = {":running": str(JobStatus.RUNNING), ":owner": owner}
        if len(body.encode()) <= self._inline_result_bytes:
            values[":result"] = body
            update = "SET #result = :result REMOVE lease_expires_at"
        else:
            values[":pointer"] = self._write_result(tenant_id, job_id, body)
            update = "SET result_s3 = :pointer REMOVE lease_expires_at"
        job = self._transition(
            "succeed",
            tenant_id,
            job_id,
            owner=owner,
            condition=self._owned(),
            update=update,
            values=values,
            status=JobStatus.SUCCEEDED,
        )
        return job

    def fail(self, tenant_id: str, job_id: str, error: dict[str, Any], *, owner: str | None) -> Job:
        """running → failed by its lease holder; or, with ``owner=None``, queued → failed by the producer
        that could not enqueue it."""
        if owner is None:
            return self._transition(
                "abandon",
                tenant_id,
                job_id,
                owner=None,
                condition="#status = :queued",
                update="SET #error = :error",
                values={":queued": str(JobStatus.QUEUED), ":error": error},
                status=JobStatus.FAILED,
            )
        return self._transition(
            "fail",
            tenant_id,
            job_id,
            owner=owner,
            condition=self._owned(),
            update="SET #error = :error REMOVE lease_expires_at",
            values={":running": str(JobStatus.RUNNING), ":owner": owner, ":error": error},
            status=JobStatus.FAILED,
        )

    def cancel(self, tenant_id: str, job_id: str) -> Job:
        """queued or running → cancelled. A running job's worker sees it at its next heartbeat or
        progress write (they fail with job_finished) and stops."""
        return self._transition(
            "cancel",
            tenant_id,
            job_id,
            owner=None,
            condition="#status IN (:queued, :running)",
            update="SET cancelled_at = :t REMOVE lease_expires_at",
            values={":queued": str(JobStatus.QUEUED), ":running": str(JobStatus.RUNNING)},
            status=JobStatus.CANCELLED,
        )

    def session_append_guard(self, tenant_id: str, job_id: str) -> dict[str, Any]:
        """A TransactWriteItem that marks a succeeded job's reply as appended to its session, and
        refuses if it already was: committed in the same transaction as the append (see
        ``DynamoSessionStore.append(guard=...)``), it makes the append happen once per job."""
        return {
            "Update": {
                "TableName": self._table,
                "Key": self._key(tenant_id, job_id),
                "UpdateExpression": "SET session_appended_at = :t",
                "ConditionExpression": "#status = :succeeded AND attribute_not_exists(session_appended_at)",
                "ExpressionAttributeNames": {"#status": "status"},
                "ExpressionAttributeValues": to_item(
                    {":t": int(self._clock()), ":succeeded": str(JobStatus.SUCCEEDED)}
                ),
            }
        }

    # -- results in S3 -------------------------------------------------------------------------------

    def _write_result(self, tenant_id: str, job_id: str, body: str) -> dict[str, Any]:
        if not self._bucket:
            raise ServiceUnavailable("The result is too large for the job record and no jobs bucket is configured.")
        key = f"jobs/{tenant_id}/{job_id}/result-{secrets.token_hex(8)}.json"
        try:
            self._s3_client().put_object(
                Bucket=self._bucket, Key=key, Body=body.encode(), ContentType="application/json"
            )
        except (ClientError, BotoCoreError) as error:
            raise ServiceUnavailable("The job result could not be stored; retry shortly.") from error
        return {"bucket": self._bucket, "key": key, "bytes": len(body.encode())}

    def _read_result(self, pointer: dict[str, Any]) -> dict[str, Any]:
        try:
            found = self._s3_client().get_object(Bucket=pointer["bucket"], Key=pointer["key"])
            return dict(json.loads(found["Body"].read()))
        except (ClientError, BotoCoreError) as error:
            raise ServiceUnavailable("The job result could not be read; retry shortly.") from error
