"""Hybrid decisions, the service: rulesets stored by version, and decisions made, kept and cached.

``seekless.rules`` is the pure part (compile, evaluate, ask, merge); this module drives it with ports:

- ``publish`` compiles a ruleset first (a bad rule is a 400 naming the rule and the line and column in
  its condition), then stores it as the id's next version. The store numbers versions with a
  conditional write, so two publishers never share one; a version never changes once written.
- ``decide`` loads the ruleset (the latest version, or the one named), checks the record against its
  input schema (a 400 naming the path), runs every rule, and asks DeepSeek only when ``needs_model``
  says so: the verdict request goes through ``ChatService`` like any chat (the key's requests and
  tokens per minute, budgets, the breaker, retries and the audit record's tokens all apply), and an
  answer that is blank, not JSON or not a verdict is asked for again, up to ``decision_json_attempts``
  times in all, each retry past the response cache. ``merge`` then decides. Every decision is stored
  before it is answered.
- The decision cache: a model decision's verdict is kept in Redis under the tenant, the ruleset id and
  version, the record's hash and the model. The same record under the same version is answered from
  it as a new decision (stored too, ``cache: "hit"``, no usage) naming the decision it repeats, with
  no upstream call. Rules-only decisions never touch it (they cost nothing to make again), and a
  verdict that stayed invalid is never cached. Redis unavailable: a miss and a metric, never an error.

Compiled rulesets are kept per execution environment in a small LRU keyed by tenant, id and version:
versions are immutable, so an entry never goes stale. Nothing here imports an SDK.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from seekless import audit
from seekless.caching import CACHE_HEADER, CacheMode, cache_mode
from seekless.contracts import ChatCompletionRequest, ChatResult, Usage
from seekless.errors import Conflict, InvalidRequest, NotFound
from seekless.rules import (
    CompiledRuleset,
    DecisionResult,
    ModelCall,
    ModelVerdict,
    RulesetId,
    RulesetSpec,
    VerdictProblem,
    canonical_json,
    compile_ruleset,
    evaluate,
    input_hash,
    merge,
    needs_model,
    parse_verdict,
    verdict_messages,
)
from seekless.telemetry import NullTelemetry, Telemetry

if TYPE_CHECKING:
    from seekless.chat import ChatService, PreparedChat
    from seekless.config import Settings
    from seekless.models import Page, Principal
    from seekless.ports import DecisionCache, DecisionStore, RulesetStore

logger = logging.getLogger("seekless.decisions")

# A stored version is one DynamoDB item (400 KB at most) holding the ruleset as compact JSON.
MAX_RULESET_BYTES = 300_000
COMPILED_CACHE_SIZE = 64
DECISION_ID_PREFIX = "dec_"


class DecisionRequest(BaseModel):
    """POST /v1/decisions."""

    model_config = ConfigDict(extra="forbid")

    ruleset: RulesetId
    # A version of the ruleset; unset: its latest. Versions are stored zero-padded to eight digits.
    version: Annotated[int, Field(ge=1, le=99_999_999)] | None = None
    # The record, checked against the ruleset's input_schema.
    input: dict[str, Any]
    # The model asked when no rule settles the record; unset: the ruleset's, else the service's default.
    model: Annotated[str, Field(min_length=1, max_length=64)] | None = None


def ruleset_not_found(ruleset_id: str, version: int | None = None) -> NotFound:
    which = f"version {version} of the ruleset '{ruleset_id}'" if version is not None else f"ruleset '{ruleset_id}'"
    return NotFound(f"No {which} found.", code="ruleset_not_found", param="ruleset")


def decision_not_found(decision_id: str) -> NotFound:
    return NotFound(f"No decision found with id '{decision_id}'.", code="decision_not_found")


def new_decision_id(now: float, *, for_job: str | None = None) -> str:
    """``dec_`` + microseconds since the epoch (14 hex digits) + 12 hex digits: ids sort by time, so a
    tenant's decisions list newest first straight from the table's sort key. The 12 digits are random,
    or, for a job's decision (``for_job``, with the job's creation time), derived from the job's id: every
    run of the same job names the same decision."""
    tail = secrets.token_hex(6) if for_job is None else hashlib.sha256(for_job.encode()).hexdigest()[:12]
    return f"{DECISION_ID_PREFIX}{int(now * 1_000_000):014x}{tail}"


def decision_cache_key(tenant_id: str, ruleset_id: str, version: int, record_hash: str, model: str) -> str:
    """A hash, never the record: no input ever appears in a Redis key."""
    digest = hashlib.sha256("\x00".join((tenant_id, ruleset_id, str(version), record_hash, model)).encode())
    return "{" + digest.hexdigest() + "}"


@dataclass(frozen=True, slots=True)
class RulesetSummary:
    """A ruleset's latest version as GET /v1/rulesets lists it: no schema, no rules."""

    id: str
    version: int
    created_at: int
    created_by: str
    description: str
    model: str | None
    rule_count: int

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "ruleset",
            "version": self.version,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "description": self.description,
            "model": self.model,
            "rule_count": self.rule_count,
        }


@dataclass(frozen=True, slots=True)
class StoredRuleset:
    """One version of a ruleset, as the store keeps it: the spec as uploaded, numbered and signed."""

    spec: RulesetSpec
    version: int
    created_at: int
    created_by: str  # the id of the API key that pushed it

    @property
    def id(self) -> str:
        return self.spec.id

    def summary(self) -> RulesetSummary:
        return RulesetSummary(
            id=self.spec.id,
            version=self.version,
            created_at=self.created_at,
            created_by=self.created_by,
            description=self.spec.description,
            model=self.spec.model,
            rule_count=len(self.spec.rules),
        )

    def to_api(self) -> dict[str, Any]:
        spec = self.spec.model_dump(mode="json")
        return {**self.summary().to_api(), "input_schema": spec["input_schema"], "rules": spec["rules"]}


def spec_json(spec: RulesetSpec) -> str:
    """The ruleset as the store keeps it: compact JSON, every default filled in."""
    return canonical_json(spec.model_dump(mode="json"))


def _add(total: Usage, more: Usage) -> Usage:
    return Usage(
        prompt_tokens=total.prompt_tokens + more.prompt_tokens,
        completion_tokens=total.completion_tokens + more.completion_tokens,
        prompt_cache_hit_tokens=total.prompt_cache_hit_tokens + more.prompt_cache_hit_tokens,
        prompt_cache_miss_tokens=total.prompt_cache_miss_tokens + more.prompt_cache_miss_tokens,
        reasoning_tokens=total.reasoning_tokens + more.reasoning_tokens,
    )


def _is_verdict(result: ChatResult) -> bool:
    return isinstance(parse_verdict(result.content), ModelVerdict)


class DecisionService:
    def __init__(
        self,
        *,
        rulesets: RulesetStore,
        decisions: DecisionStore,
        chat: ChatService,
        cache: DecisionCache | None,
        settings: Settings,
        telemetry: Telemetry | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rulesets = rulesets
        self._decisions = decisions
        self._chat = chat
        self._cache = cache
        self._settings = settings
        self._telemetry = telemetry or NullTelemetry()
        self._clock = clock
        self._monotonic = monotonic
        self._compiled: OrderedDict[tuple[str, str, int], CompiledRuleset] = OrderedDict()

    # -- rulesets --------------------------------------------------------------------------------------

    def publish(self, principal: Principal, spec: RulesetSpec) -> StoredRuleset:
        """Compile, then store as the id's next version. Nothing is stored unless every rule compiles."""
        size = len(spec_json(spec).encode())
        if size > MAX_RULESET_BYTES:
            raise InvalidRequest(
                f"The ruleset is {size} bytes as JSON; the limit is {MAX_RULESET_BYTES}.", code="ruleset_too_large"
            )
        compiled = compile_ruleset(spec)
        if spec.model is not None and spec.model not in self._settings.models:
            raise InvalidRequest(
                f"The model '{spec.model}' does not exist. Available: {', '.join(sorted(self._settings.models))}.",
                code="model_not_found",
                param="model",
            )
        stored = self._rulesets.publish(principal.tenant_id, spec, created_by=principal.key_id)
        self._remember(principal.tenant_id, dataclasses.replace(compiled, version=stored.version))
        return stored

    def get_ruleset(self, principal: Principal, ruleset_id: str, version: int | None = None) -> StoredRuleset:
        if version is None:
            version = self._rulesets.latest_version(principal.tenant_id, ruleset_id)
        return self._rulesets.get(principal.tenant_id, ruleset_id, version)

    def list_rulesets(self, principal: Principal, *, limit: int, after: str | None) -> Page[RulesetSummary]:
        return self._rulesets.list_rulesets(principal.tenant_id, limit=limit, after=after)

    def _remember(self, tenant_id: str, compiled: CompiledRuleset) -> None:
        assert compiled.version is not None
        self._compiled[(tenant_id, compiled.id, compiled.version)] = compiled
        self._compiled.move_to_end((tenant_id, compiled.id, compiled.version))
        while len(self._compiled) > COMPILED_CACHE_SIZE:
            self._compiled.popitem(last=False)

    def _ruleset(self, tenant_id: str, ruleset_id: str, version: int | None) -> CompiledRuleset:
        """The compiled ruleset: one read of the latest version's number unless a version is named, and
        the version itself read and compiled only the first time this environment sees it."""
        if version is None:
            version = self._rulesets.latest_version(tenant_id, ruleset_id)
        key = (tenant_id, ruleset_id, version)
        compiled = self._compiled.get(key)
        if compiled is not None:
            self._compiled.move_to_end(key)
            return compiled
        stored = self._rulesets.get(tenant_id, ruleset_id, version)
        compiled = compile_ruleset(stored.spec, version=stored.version)
        self._remember(tenant_id, compiled)
        return compiled

    def using(self, chat: ChatService) -> DecisionService:
        """The same service asking through another ChatService (the worker's per-job one), sharing the
        compiled rulesets."""
        twin = DecisionService(
            rulesets=self._rulesets,
            decisions=self._decisions,
            chat=chat,
            cache=self._cache,
            settings=self._settings,
            telemetry=self._telemetry,
            clock=self._clock,
            monotonic=self._monotonic,
        )
        twin._compiled = self._compiled
        return twin

    # -- decisions -------------------------------------------------------------------------------------

    def check_record(
        self, principal: Principal, ruleset_id: str, record: Any, *, version: int | None, model: str | None
    ) -> tuple[int, str]:
        """What ``decide`` would refuse before deciding, without deciding: an unknown ruleset or version,
        a record that does not fit the input schema, an unknown model. Returns (the version the record
        would be decided under, the model that would be asked if no rule settles it)."""
        compiled = self._ruleset(principal.tenant_id, ruleset_id, version)
        compiled.check(record)
        model_name = model or compiled.spec.model or self._settings.decision_model
        if model_name not in self._settings.models:
            raise InvalidRequest(
                f"The model '{model_name}' does not exist. Available: {', '.join(sorted(self._settings.models))}.",
                code="model_not_found",
                param="model",
            )
        assert compiled.version is not None
        return compiled.version, model_name

    async def decide(
        self,
        principal: Principal,
        ruleset_id: str,
        record: Any,
        *,
        version: int | None = None,
        model: str | None = None,
        headers: Mapping[str, str] | None = None,
        deadline: float,
        decision_id: str | None = None,
    ) -> DecisionResult:
        """Decide on one record, store the decision, and return it. A record that does not fit the
        ruleset's input schema is a 400 before anything is asked or stored.

        With ``decision_id`` (a job's line, run again after a lost lease or a crash) the decision is made
        once: one already stored under that id is returned as it is, with nothing asked again."""
        if decision_id is not None:
            with contextlib.suppress(NotFound):
                return self._decisions.get(principal.tenant_id, decision_id)
        started = self._monotonic()
        headers = _lowered(headers or {})
        compiled = self._ruleset(principal.tenant_id, ruleset_id, version)
        outcome = evaluate(compiled, record)  # checks the record first: RecordInvalid is a 400
        record_hash = input_hash(record)
        now = self._clock()
        decision_id = decision_id or new_decision_id(now)
        if not needs_model(outcome):
            result = DecisionResult.of(
                id=decision_id,
                compiled=compiled,
                outcome=outcome,
                decision=merge(outcome, None),
                input_hash=record_hash,
                created_at=int(now),
                latency_ms=self._elapsed_ms(started),
            )
            result = self._keep(principal, result)
            self._telemetry.count("RulesOnlyDecisions")
            return result

        model_name = model or compiled.spec.model or self._settings.decision_model
        assert compiled.version is not None
        key = decision_cache_key(principal.tenant_id, compiled.id, compiled.version, record_hash, model_name)
        mode = cache_mode({"temperature": 0}, headers)
        cached = await self._cached(key, model_name) if mode is CacheMode.USE else None
        if cached is not None:
            original, call = cached
            audit.note_model(model_name)
            audit.note_answer(
                cache="hit", prompt_tokens=0, completion_tokens=0, prompt_cache_hit_tokens=0, estimated_cost_usd=0.0
            )
            result = DecisionResult.of(
                id=decision_id,
                compiled=compiled,
                outcome=outcome,
                decision=merge(outcome, call.verdict),
                input_hash=record_hash,
                model=call,
                created_at=int(now),
                latency_ms=self._elapsed_ms(started),
                cache="hit",
                cached_from=original,
            )
            result = self._keep(principal, result)
            return result

        request = ChatCompletionRequest.model_validate(
            {
                "model": model_name,
                "messages": verdict_messages(compiled, outcome, record),
                "temperature": 0,
                "response_format": {"type": "json_object"},
            }
        )
        prepared = self._chat.prepare(request, principal, headers=headers, deadline=deadline)
        call, usage = await self._ask(prepared, model_name)
        result = DecisionResult.of(
            id=decision_id,
            compiled=compiled,
            outcome=outcome,
            decision=merge(outcome, call.verdict if call.verdict is not None else call.problem),
            input_hash=record_hash,
            model=call,
            usage=usage,
            created_at=int(now),
            latency_ms=self._elapsed_ms(started),
            cache="miss",
        )
        result = self._keep(principal, result)
        if call.verdict is not None and mode is not CacheMode.BYPASS and self._cache is not None:
            value = {"id": result.id, "model": model_name, "raw": call.raw, "verdict": call.verdict.model_dump()}
            await self._cache.put(key, value, self._settings.decision_cache_seconds)
        return result

    def _keep(self, principal: Principal, result: DecisionResult) -> DecisionResult:
        """Store the decision; the one stored, which is this one unless another run of the same job
        stored its own under the same id first (only a job's decision id can be taken): theirs stands."""
        try:
            self._decisions.put(principal.tenant_id, result, created_by=principal.key_id)
        except Conflict:
            logger.info("decision %s was already stored by another run of its job", result.id)
            return self._decisions.get(principal.tenant_id, result.id)
        return result

    async def _ask(self, prepared: PreparedChat, model_name: str) -> tuple[ModelCall, Usage]:
        """Ask for a verdict until one parses, at most ``decision_json_attempts`` times. Every retry sends
        the same request past the response cache, so a cached answer is never what a retry gets."""
        attempts = max(1, self._settings.decision_json_attempts)
        usage = Usage()
        chat = prepared
        raw: str | None = None
        problem: VerdictProblem | None = None
        for attempt in range(1, attempts + 1):
            answer = await self._chat.complete(chat, accept=_is_verdict)
            if answer.cache != "hit":
                usage = _add(usage, answer.result.usage)
            raw = answer.result.content
            parsed = parse_verdict(raw)
            if isinstance(parsed, ModelVerdict):
                return ModelCall(model=model_name, attempts=attempt, raw=raw, verdict=parsed), usage
            problem = parsed
            logger.warning("the model's verdict was no verdict (%s), attempt %d of %d", parsed.kind, attempt, attempts)
            self._telemetry.count("DecisionVerdictRetries" if attempt < attempts else "DecisionVerdictInvalid")
            chat = dataclasses.replace(prepared, cache_mode=CacheMode.BYPASS)
        return ModelCall(model=model_name, attempts=attempts, raw=raw, problem=problem), usage

    async def _cached(self, key: str, model_name: str) -> tuple[str, ModelCall] | None:
        """(the decision it repeats, its verdict) from the decision cache, or None on a miss."""
        if self._cache is None:
            return None
        value = await self._cache.get(key)
        if value is not None:
            try:
                verdict = ModelVerdict.model_validate(value["verdict"])
                call = ModelCall(model=model_name, attempts=0, raw=value.get("raw"), verdict=verdict)
                original = str(value["id"])
            except (KeyError, TypeError, ValidationError):
                logger.warning("an unreadable decision cache entry was ignored")
                self._telemetry.count("DecisionCacheErrors")
            else:
                self._telemetry.count("DecisionCacheHit")
                return original, call
        self._telemetry.count("DecisionCacheMiss")
        return None

    def get_decision(self, principal: Principal, decision_id: str) -> DecisionResult:
        return self._decisions.get(principal.tenant_id, decision_id)

    def list_decisions(self, principal: Principal, *, limit: int, after: str | None) -> Page[DecisionResult]:
        return self._decisions.list_decisions(principal.tenant_id, limit=limit, after=after)

    def _elapsed_ms(self, started: float) -> int:
        return round((self._monotonic() - started) * 1000)


def _lowered(headers: Mapping[str, str]) -> dict[str, str]:
    """Only the cache directives, with lower-case names (Starlette's headers already are)."""
    wanted = ("cache-control", CACHE_HEADER)
    return {name.lower(): value for name, value in headers.items() if name.lower() in wanted}
