"""DynamoDB adapters of hybrid decisions: rulesets by version, and every decision made.

Rulesets table layout (keys from template.yaml):
    tenant_id = "<tenant>"  sk = "V#<ruleset>#<version:08d>"  one version: the spec as compact JSON, who
                                                              pushed it and when; never written again
    tenant_id = "<tenant>"  sk = "R#<ruleset>"                the ruleset's head: its latest version and
                                                              that version's summary (what a list shows)
A version and its head are written in one transaction: the version only where none is yet, the head
only if it still names the version read before (or does not exist, for version 1). Two concurrent
publishes of one id therefore cannot both take version N: one transaction fails its condition, re-reads
the head and takes N + 1. Listing a tenant's rulesets is one Query over its heads (ids are plain
``[A-Za-z0-9_.:-]``, so ``#`` cannot occur in one and the prefixes never mix).

Decisions table layout:
    tenant_id = "<tenant>"  decision_id = "dec_<µs:014x><random>"   one decision, kept decision_retention_days
Decision ids begin with their creation time in fixed-width hex, so the sort key orders a tenant's
decisions by time: a list is one Query, newest first, and ``after=<id>`` is a key condition. The record
itself is never stored, only its hash. Numbers (weights, scores, confidence) go in as decimals, as
DynamoDB requires, and come back as floats.

The tenant is part of every key, so another tenant's ruleset or decision is a plain miss (404). TTL
deletion is late, so expired decisions are filtered on read.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from seekless.adapters.dynamo_items import collect_page, default_client, error_code, from_item, store_error, to_item
from seekless.contracts import Usage
from seekless.decisions import (
    RulesetSummary,
    StoredRuleset,
    decision_not_found,
    ruleset_not_found,
    spec_json,
)
from seekless.errors import Conflict
from seekless.models import Page
from seekless.rules import (
    DecisionResult,
    FiredRule,
    ModelCall,
    ModelVerdict,
    RuleError,
    RulesetSpec,
    VerdictProblem,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

PUBLISH_ATTEMPTS = 8
HEAD = "R#"
VERSION = "V#"
_LAST = "\U0010ffff"  # sorts after every id


def _decimals(value: Any) -> Any:
    """Floats as the Decimals DynamoDB takes (exactly their shortest repr), inside lists and maps too."""
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {key: _decimals(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_decimals(item) for item in value]
    return value


class DynamoRulesetStore:
    """Implements ``seekless.ports.RulesetStore``."""

    def __init__(
        self, table_name: str, *, client: DynamoDBClient | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self._table = table_name
        self._client = client or default_client()
        self._clock = clock

    @staticmethod
    def _head_key(tenant_id: str, ruleset_id: str) -> dict[str, Any]:
        return {"tenant_id": {"S": tenant_id}, "sk": {"S": HEAD + ruleset_id}}

    @staticmethod
    def _version_key(tenant_id: str, ruleset_id: str, version: int) -> dict[str, Any]:
        return {"tenant_id": {"S": tenant_id}, "sk": {"S": f"{VERSION}{ruleset_id}#{version:08d}"}}

    def _read(self, key: dict[str, Any]) -> dict[str, Any] | None:
        try:
            found = self._client.get_item(TableName=self._table, Key=key, ConsistentRead=True)
        except ClientError as error:
            raise store_error(error, "ruleset store") from error
        item = found.get("Item")
        return item or None

    def publish(self, tenant_id: str, spec: RulesetSpec, *, created_by: str) -> StoredRuleset:
        text = spec_json(spec)
        for _ in range(PUBLISH_ATTEMPTS):
            head = self._read(self._head_key(tenant_id, spec.id))
            latest = int(head["version"]["N"]) if head else 0
            stored = StoredRuleset(spec=spec, version=latest + 1, created_at=int(self._clock()), created_by=created_by)
            summary = stored.summary()
            common = {
                "tenant_id": tenant_id,
                "ruleset_id": spec.id,
                "version": stored.version,
                "created_at": stored.created_at,
                "created_by": created_by,
            }
            head_item = {
                **common,
                "sk": HEAD + spec.id,
                "description": summary.description,
                "model": summary.model,
                "rule_count": summary.rule_count,
            }
            head_write: dict[str, Any] = {"TableName": self._table, "Item": to_item(head_item)}
            if head is None:
                head_write["ConditionExpression"] = "attribute_not_exists(sk)"
            else:
                head_write["ConditionExpression"] = "version = :latest"
                head_write["ExpressionAttributeValues"] = {":latest": {"N": str(latest)}}
            version_key = self._version_key(tenant_id, spec.id, stored.version)
            writes = [
                {
                    "Put": {
                        "TableName": self._table,
                        "Item": to_item({**common, "sk": version_key["sk"]["S"], "spec": text}),
                        "ConditionExpression": "attribute_not_exists(sk)",
                    }
                },
                {"Put": head_write},
            ]
            try:
                self._client.transact_write_items(TransactItems=writes)  # type: ignore[arg-type]
            except ClientError as error:
                if error_code(error) == "TransactionCanceledException":
                    continue  # another publish took this version first: read the head again, take the next
                raise store_error(error, "ruleset store") from error
            return stored
        raise Conflict(
            f"The ruleset '{spec.id}' is being published by too many requests at once; retry.", code="ruleset_busy"
        )

    def latest_version(self, tenant_id: str, ruleset_id: str) -> int:
        head = self._read(self._head_key(tenant_id, ruleset_id))
        # The tenant check is redundant with the key; it guards against a key-format bug.
        if head is None or head["tenant_id"]["S"] != tenant_id:
            raise ruleset_not_found(ruleset_id)
        return int(head["version"]["N"])

    def get(self, tenant_id: str, ruleset_id: str, version: int) -> StoredRuleset:
        item = self._read(self._version_key(tenant_id, ruleset_id, version))
        if item is None or item["tenant_id"]["S"] != tenant_id:
            raise ruleset_not_found(ruleset_id, version)
        data = from_item(item)
        return StoredRuleset(
            spec=RulesetSpec.model_validate_json(data["spec"]),
            version=int(data["version"]),
            created_at=int(data["created_at"]),
            created_by=str(data["created_by"]),
        )

    def list_rulesets(self, tenant_id: str, *, limit: int, after: str | None) -> Page[RulesetSummary]:
        # After a cursor: every head whose id sorts above it (the cursor's head plus "\0" is the least).
        low = HEAD + (after + "\x00" if after else "")
        query: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "tenant_id = :t AND sk BETWEEN :low AND :high",
            "ExpressionAttributeValues": {":t": {"S": tenant_id}, ":low": {"S": low}, ":high": {"S": HEAD + _LAST}},
            "Limit": limit + 1,
        }
        return collect_page(
            self._client, query, limit=limit, alive=lambda item: True, convert=self._summary, store="ruleset store"
        )

    @staticmethod
    def _summary(item: dict[str, Any]) -> RulesetSummary:
        data = from_item(item)
        return RulesetSummary(
            id=str(data["ruleset_id"]),
            version=int(data["version"]),
            created_at=int(data["created_at"]),
            created_by=str(data["created_by"]),
            description=str(data.get("description") or ""),
            model=data.get("model"),
            rule_count=int(data.get("rule_count", 0)),
        )


class DynamoDecisionStore:
    """Implements ``seekless.ports.DecisionStore``."""

    def __init__(
        self,
        table_name: str,
        *,
        retention_days: int = 400,
        client: DynamoDBClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._table = table_name
        self._retention_seconds = retention_days * 86_400
        self._client = client or default_client()
        self._clock = clock

    def _alive(self, item: dict[str, Any]) -> bool:
        expires = item.get("expires_at")
        return expires is None or int(expires["N"]) > int(self._clock())

    def put(self, tenant_id: str, result: DecisionResult, *, created_by: str) -> None:
        model = result.model
        values: dict[str, Any] = {
            "tenant_id": tenant_id,
            "decision_id": result.id,
            "created_at": result.created_at,
            "expires_at": result.created_at + self._retention_seconds,
            "created_by": created_by,
            "ruleset_id": result.ruleset_id,
            "ruleset_version": result.ruleset_version,
            "input_hash": result.input_hash,
            "decision": result.decision,
            "decided_by": result.decided_by,
            "reasons": list(result.reasons),
            "rules_fired": [rule.to_api() for rule in result.rules_fired],
            "rule_errors": [error.to_api() for error in result.rule_errors],
            "score": result.score,
            "model": model.to_api() if model is not None else None,
            "usage": result.usage.to_wire(),
            "latency_ms": result.latency_ms,
            "cache": result.cache,
            "cached_from": result.cached_from,
        }
        try:
            self._client.put_item(
                TableName=self._table,
                Item=to_item(_decimals(values)),
                ConditionExpression="attribute_not_exists(decision_id)",
            )
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                raise Conflict(f"A decision with id '{result.id}' already exists.") from error
            raise store_error(error, "decision store") from error

    def get(self, tenant_id: str, decision_id: str) -> DecisionResult:
        try:
            found = self._client.get_item(
                TableName=self._table,
                Key={"tenant_id": {"S": tenant_id}, "decision_id": {"S": decision_id}},
                ConsistentRead=True,
            )
        except ClientError as error:
            raise store_error(error, "decision store") from error
        item = found.get("Item")
        if not item or not self._alive(item) or item["tenant_id"]["S"] != tenant_id:
            raise decision_not_found(decision_id)
        return self._decision(item)

    def list_decisions(self, tenant_id: str, *, limit: int, after: str | None) -> Page[DecisionResult]:
        condition = "tenant_id = :t"
        values: dict[str, Any] = {":t": {"S": tenant_id}}
        if after:
            condition += " AND decision_id < :after"
            values[":after"] = {"S": after}
        query: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": values,
            "ScanIndexForward": False,  # newest first: ids begin with their time
            "Limit": limit + 1,
        }
        return collect_page(
            self._client, query, limit=limit, alive=self._alive, convert=self._decision, store="decision store"
        )

    @staticmethod
    def _decision(item: dict[str, Any]) -> DecisionResult:
        data = from_item(item)
        model = data.get("model")
        version = data.get("ruleset_version")
        return DecisionResult(
            id=str(data["decision_id"]),
            ruleset_id=str(data["ruleset_id"]),
            ruleset_version=int(version) if version is not None else None,
            decision=data["decision"],
            decided_by=str(data["decided_by"]),
            reasons=tuple(str(reason) for reason in data.get("reasons", [])),
            rules_fired=tuple(
                FiredRule(id=r["id"], outcome=r["outcome"], weight=float(r["weight"]), final=bool(r["final"]))
                for r in data.get("rules_fired", [])
            ),
            rule_errors=tuple(
                RuleError(id=e["id"], outcome=e["outcome"], final=bool(e["final"]), message=e["message"])
                for e in data.get("rule_errors", [])
            ),
            score=float(data.get("score", 0)),
            input_hash=str(data["input_hash"]),
            model=_model_call(model) if model is not None else None,
            usage=Usage.from_wire(data.get("usage") or {}),
            latency_ms=int(data.get("latency_ms", 0)),
            created_at=int(data["created_at"]),
            cache=data.get("cache"),
            cached_from=data.get("cached_from"),
        )


def _model_call(data: dict[str, Any]) -> ModelCall:
    verdict = data.get("verdict")
    problem = data.get("problem")
    return ModelCall(
        model=str(data["model"]),
        attempts=int(data["attempts"]),
        raw=data.get("raw"),
        verdict=(
            ModelVerdict(
                decision=verdict["decision"],
                confidence=float(verdict["confidence"]),
                reasons=[str(reason) for reason in verdict["reasons"]],
            )
            if verdict
            else None
        ),
        problem=VerdictProblem(kind=problem["kind"], detail=str(problem["detail"])) if problem else None,
    )
