"""Hybrid decisions, the pure part: rulesets written in CEL, their evaluation on a record, the verdict asked
of DeepSeek when no rule settles it, and the one policy that merges the two.

Nothing here does I/O. The decisions service (routes, store, cache, bulk files) drives it:
``compile_ruleset`` once per stored ruleset version, then per record ``evaluate`` -> ``needs_model`` ->
(``verdict_messages`` -> DeepSeek in JSON mode -> ``parse_verdict``, retried on a ``VerdictProblem``) ->
``merge`` -> ``DecisionResult``. docs/DECISIONS.md is the user's guide to the same.

Conditions see the record as one variable, ``input`` (a ``map(string, dyn)``), so ``has(input.x)`` can
test an optional field. They are CEL as specified: no implicit numeric conversion in arithmetic
(``input.a + 1.5`` fails on an int ``a``; write ``double(input.a)``), though comparisons across int and
double work (``input.amount < 10.0`` holds for ``5``).

The CEL engine: cel-expr-python (the CEL project's own Python binding of cel-cpp)
--------------------------------------------------------------------------------
The two candidates we were pointed at and the official binding, measured on the dev machine (2 shared
x86_64 cores, load average near 3, Python 3.11) with 10 card-risk conditions like those of
examples/rulesets/card_risk.yaml, compiled once and evaluated on 2,000 synthetic records (one activation
per record shared by its rules), and ``python -X importtime`` (least of 7 runs):

=================================  =======================  ============================  =====================
                                   cel-expr-python 0.1.3    common-expression-language    cel-python 0.5.0
                                   (cel-expr/cel-python)    0.10.0 (cel-rust via PyO3)    (pure Python, lark)
=================================  =======================  ============================  =====================
maintainer                         Google's CEL team, the   one maintainer, "Beta"        cloud-custodian;
                                   cel-cpp runtime they     classifier                    infrequent releases
                                   run in production
records/s (10 rules)               21,500 (47 us)           14,800 (68 us)                183 interpreted,
                                                                                          856 transpiled
import + env + compile 10 rules    11 ms                    310 ms                        ~400 ms
cold ``import``                    5 ms                     320 ms (its ``__init__``      145 ms, + the lark
                                                            imports its CLI: typer, rich, parser built on
                                                            prompt_toolkit, pygments)     first compile
compile-time checks                type checker: syntax,    syntax only; unknown          syntax only
                                   undeclared functions     functions and non-bool
                                   and variables, overload  results found at evaluation
                                   mismatches, result type
error positions                    ``<input>:line:col`` for ``<input>:line:col`` for      ``line``/``column``
                                   every error above        syntax errors only            on syntax errors
bounds                             recursion limit 32,      parser nesting limit; no      none; transpiled mode
                                   100k code points, a      budget (1M comprehension      ``exec``s generated
                                   comprehension iteration  steps ran 1.5 s)              Python
                                   budget (raises)
regex                              RE2 (linear time)        Rust regex (linear time)      google-re2
arm64 / cp312 wheel                manylinux_2_28, 16 MB,   manylinux2014 + 17 MB of      manylinux_2_28 (via
                                   no dependencies          CLI dependencies              google-re2), pendulum
=================================  =======================  ============================  =====================

cel-expr-python wins on every measure but age (0.1.x, so pinned below 0.2 and used only here, behind
``_engine``). Its manylinux_2_28 wheel needs a SAM CLI whose aws-lambda-builders knows python3.12 runs on
glibc 2.34 (aws-lambda-builders PRs 752 and 762, 2025), or ``sam build --use-container``. No code runs in
the engine but CEL: no Python callbacks are registered and no extension library is loaded (so the
standard library only: no ``lowerAscii()``, no ``math.*``). One bound is ours: records nested deeper than
``MAX_RECORD_DEPTH`` are refused before the engine sees them (it converts nested values recursively and
crashed the process on a list nested 50,000 deep).

Records are checked against the ruleset's JSON Schema with jsonschema-rs (one abi3 wheel, no
dependencies, typed): 11 us per card-risk record where the pure-Python jsonschema 4.26 (here only as a
dev tool's dependency, never in the layer) took 1.5 ms, and a 38 ms import against 118 ms. It runs
offline, so a "$ref" can never make a request (with retrieval on, it reached for the network from a unit
test, past pytest-socket), and with its linear-time regex engine, so no pattern in a tenant's schema can
hang a function (lookaround and backreferences are refused at upload). Its arm64 wheel is manylinux_2_28
too. Both libraries are imported on first use: importing this module costs pydantic only.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from seekless.contracts import Usage
from seekless.errors import RecordInvalid, RuleProblem, RulesetInvalid

if TYPE_CHECKING:
    import cel_expr_python.cel as cel
    from jsonschema_rs import Validator

Outcome = Literal["approve", "review", "deny"]
# The order a final rule is chosen in, and the order of caution a merge never goes below.
SEVERITY: Mapping[str, int] = {"approve": 0, "review": 1, "deny": 2}

MAX_RULES = 200
MAX_CONDITION_CHARS = 4000
MAX_RECORD_DEPTH = 32
# CEL's int is 64-bit signed and its uint 64-bit unsigned: anything wider is no CEL number.
_CEL_INT_RANGE = (-(2**63), 2**64 - 1)

# Ids end up in DynamoDB keys ("#" separates their fields) and in "rule:<id>": a short, plain alphabet.
RulesetId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")]
RuleId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


# -- the ruleset as uploaded (POST /v1/rulesets, `seekless rulesets push file.yaml`) ------------------------


class RuleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: RuleId
    description: Annotated[str, Field(max_length=1000)] = ""
    condition: Annotated[str, Field(min_length=1, max_length=MAX_CONDITION_CHARS)]
    outcome: Outcome
    weight: Annotated[float, Field(ge=0, le=1_000_000, allow_inf_nan=False)] = 1.0
    final: bool = False


class RulesetSpec(BaseModel):
    """A ruleset as its author writes it. The store gives each upload of an id the next version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: RulesetId
    description: Annotated[str, Field(max_length=2000)] = ""
    # The model asked for a verdict when no rule settles a record (a decision request may name another);
    # unset: the service's default (SEEKLESS_DECISION_MODEL). A name of the model catalogue.
    model: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    # A JSON Schema for the record (draft 2020-12 unless it names another with "$schema"). Its
    # "examples", if any, are checked against the schema and run through every rule at upload.
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    rules: Annotated[list[RuleSpec], Field(min_length=1, max_length=MAX_RULES)]

    @model_validator(mode="after")
    def _unique_rule_ids(self) -> RulesetSpec:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError(f"rule id '{rule.id}' is used twice")
            seen.add(rule.id)
        return self


# -- the engine --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Engine:
    env: cel.Env
    bool_type: cel.Type
    dyn_type: cel.Type
    error_type: cel.Type


@lru_cache(maxsize=1)
def _engine() -> _Engine:
    # Imported here, not at the top: the REST function imports this module for its API models and should
    # load the engine only when a ruleset is compiled.
    import cel_expr_python.cel as cel

    env = cel.NewEnv(variables={"input": cel.Type.Map(cel.Type.STRING, cel.Type.DYN)})
    return _Engine(env=env, bool_type=cel.Type.BOOL, dyn_type=cel.Type.DYN, error_type=cel.Type.ERROR)


_POSITIONED = re.compile(r"ERROR: <input>:(\d+):(\d+): ([^\n]+)")
_STATUS_PREFIX = re.compile(r"^[A-Z_]+: ")
_STATUS_SUFFIX = re.compile(r"\s*\[[A-Z_]+\]$")


def _clean(message: str) -> str:
    """cel-cpp's status text without its status code wrapping: what a rule author can act on."""
    message = _STATUS_SUFFIX.sub("", _STATUS_PREFIX.sub("", message.strip()))
    return message.replace(" (in container '')", "")


def _compile_problems(rule_id: str, text: str) -> list[RuleProblem]:
    found = [
        RuleProblem(rule_id, _clean(match.group(3)), line=int(match.group(1)), column=int(match.group(2)))
        for match in _POSITIONED.finditer(text)
    ]
    return found or [RuleProblem(rule_id, _clean(text))]


def _run(program: cel.Expression, activation: cel.Activation) -> bool | str:
    """True or False, or why the condition could not be evaluated on this record."""
    try:
        value = program.eval(activation)
    except Exception as error:  # the iteration budget raises; other evaluation errors come back as values
        return _clean(str(error))
    result = value.value()
    if result is True or result is False:  # only a CEL bool converts to a Python bool
        return result
    kind = value.type()
    if kind == _engine().error_type:
        return _clean(str(result))
    return f"the condition evaluated to {kind.name().lower()}, not bool"


# -- compiling ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CompiledRule:
    spec: RuleSpec
    index: int  # its place in the ruleset: the last tie-break between final rules
    program: cel.Expression


@dataclass(frozen=True, slots=True, eq=False)
class CompiledRuleset:
    """A ruleset whose conditions compiled and whose schema is sound. Build one per stored version and
    keep it: compiling costs far more than evaluating."""

    spec: RulesetSpec
    version: int | None
    rules: tuple[CompiledRule, ...]
    validator: Validator

    @property
    def id(self) -> str:
        return self.spec.id

    def check(self, record: Any, *, root: str = "input") -> None:
        """Refuse a record that is not a JSON object fit for CEL or does not match the input schema. The
        error's ``param`` is the path of the first fault (``input.card.country``), its message that path,
        a colon and what is wrong."""
        _check_json_value(record, root)
        if not isinstance(record, dict):
            raise RecordInvalid(f"{root}: must be a JSON object.", param=root)
        if self.validator.is_valid(record):
            return
        error = next(iter(self.validator.iter_errors(record)))
        path = _json_path(error.instance_path, root=root)
        raise RecordInvalid(f"{path}: {error.message}", param=path)


def compile_ruleset(spec: RulesetSpec, *, version: int | None = None) -> CompiledRuleset:
    """Compile every condition once, or raise ``RulesetInvalid`` naming every problem found: each bad rule
    with the compiler's message and the line and column in its condition, and the schema's faults."""
    validator = _validator(spec.input_schema)
    problems = [validator] if isinstance(validator, RuleProblem) else []
    if spec.input_schema.get("type") != "object":
        problems.append(RuleProblem(None, 'the input schema must have "type": "object"', field="input_schema"))
    engine = _engine()
    rules: list[CompiledRule] = []
    for index, rule in enumerate(spec.rules):
        try:
            program = engine.env.compile(rule.condition)
        except Exception as error:  # cel-cpp raises RuntimeError; whatever it raises, the condition is at fault
            problems.extend(_compile_problems(rule.id, str(error)))
            continue
        result = program.return_type()
        if result != engine.bool_type and result != engine.dyn_type:
            # Only a dyn result (a bare `input.flag`) has to wait for a record to show what it is.
            problems.append(
                RuleProblem(rule.id, f"the condition must be a bool, not {result.name().lower()}", line=1, column=1)
            )
            continue
        rules.append(CompiledRule(spec=rule, index=index, program=program))
    if problems or isinstance(validator, RuleProblem):  # a refused schema is in problems: this tells mypy
        raise RulesetInvalid(problems, param=_problem_param(spec, problems[0]))

    compiled = CompiledRuleset(spec=spec, version=version, rules=tuple(rules), validator=validator)
    problems = _example_problems(compiled)
    if problems:
        raise RulesetInvalid(problems, param=_problem_param(spec, problems[0]))
    return compiled


def _problem_param(spec: RulesetSpec, problem: RuleProblem) -> str:
    if problem.rule is None:
        return problem.field
    index = next(i for i, rule in enumerate(spec.rules) if rule.id == problem.rule)
    return f"rules[{index}].condition"


def _validator(schema: dict[str, Any]) -> Validator | RuleProblem:
    """The record validator, or why the schema is refused. Offline, so a "$ref" can never make a request
    (only what the schema itself holds resolves), and with the linear-time regex engine, so no pattern a
    tenant writes can hang a function. "format" annotates only, as the 2020-12 draft has it by default."""
    import jsonschema_rs

    try:
        return jsonschema_rs.validator_for(
            schema, offline=True, pattern_options=jsonschema_rs.RegexOptions(), validate_formats=False
        )
    except jsonschema_rs.ValidationError as error:
        path = _json_path(error.instance_path, root="input_schema")
        return RuleProblem(None, f"not a valid JSON Schema: {error.message}", field=path)
    except (jsonschema_rs.ReferencingError, ValueError) as error:
        return RuleProblem(None, f"not a valid JSON Schema: {error}", field="input_schema")


def _example_problems(compiled: CompiledRuleset) -> list[RuleProblem]:
    """The schema's examples must fit it, and every rule must evaluate to a bool on each: evaluation-time
    type errors (`input.amount + 1.5` on an int amount) are found at upload when there are examples."""
    examples = compiled.spec.input_schema.get("examples")
    if not isinstance(examples, list):
        return []
    problems: list[RuleProblem] = []
    for i, example in enumerate(examples):
        where = f"input_schema.examples[{i}]"
        try:
            compiled.check(example, root=where)
        except RecordInvalid as error:
            field = error.param or where
            problems.append(RuleProblem(None, error.message.removeprefix(f"{field}: "), field=field))
            continue
        activation = _engine().env.Activation({"input": example})
        for rule in compiled.rules:
            result = _run(rule.program, activation)
            if isinstance(result, str):
                problems.append(RuleProblem(rule.spec.id, f"fails on {where}: {result}"))
    return problems


def _json_path(parts: Sequence[str | int], *, root: str = "input") -> str:
    path = root
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


# Where a value sits, as (parent, key) links: the path is spelled out only for the error message.
_Trail = tuple[Any, str | int] | None


def _spell(trail: _Trail, root: str) -> str:
    parts: list[str | int] = []
    while trail is not None:
        trail, key = trail
        parts.append(key)
    return _json_path(parts[::-1], root=root)


def _check_json_value(record: Any, root: str) -> None:
    """JSON types only (as json.loads makes them), numbers CEL can hold, and no deeper than
    ``MAX_RECORD_DEPTH``: checked without recursion, before any recursive code sees the record."""
    stack: list[tuple[Any, _Trail, int]] = [(record, None, 0)]
    while stack:
        value, trail, depth = stack.pop()
        kind = type(value)
        if kind is dict or kind is list:
            if depth >= MAX_RECORD_DEPTH:
                problem = f"nested deeper than {MAX_RECORD_DEPTH} levels"
            elif kind is list:
                stack.extend((item, (trail, i), depth + 1) for i, item in enumerate(value))
                continue
            elif all(type(key) is str for key in value):
                stack.extend((item, (trail, key), depth + 1) for key, item in value.items())
                continue
            else:
                problem = "object keys must be strings"
        elif kind is str or kind is bool or value is None:
            continue
        elif kind is int:
            if _CEL_INT_RANGE[0] <= value <= _CEL_INT_RANGE[1]:
                continue
            problem = "integers must fit in 64 bits"
        elif kind is float:
            if math.isfinite(value):
                continue
            problem = "NaN and infinities are not JSON numbers"
        else:
            problem = f"{kind.__name__} is not a JSON value"
        path = _spell(trail, root)
        raise RecordInvalid(f"{path}: {problem}.", param=path)


# -- evaluating --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FiredRule:
    id: str
    outcome: Outcome
    weight: float
    final: bool
    description: str = ""

    def to_api(self) -> dict[str, Any]:
        return {"id": self.id, "outcome": self.outcome, "weight": self.weight, "final": self.final}


@dataclass(frozen=True, slots=True)
class RuleError:
    """A rule whose condition could not be evaluated on this record (a missing field, a type mismatch)."""

    id: str
    outcome: Outcome
    final: bool
    message: str

    def to_api(self) -> dict[str, Any]:
        return {"id": self.id, "outcome": self.outcome, "final": self.final, "message": self.message}


@dataclass(frozen=True, slots=True)
class RuleOutcome:
    """What the rules said about one record, in ruleset order."""

    fired: tuple[FiredRule, ...] = ()
    errors: tuple[RuleError, ...] = ()
    # Of the final rules that fired, the one that ranks first: deny > review > approve, then the highest
    # weight, then the earliest in the ruleset. Whether it decides is ``decisive``'s question.
    final: FiredRule | None = None

    @property
    def score(self) -> float:
        """The summed weight of the fired deny and review rules minus that of the fired approve rules.
        Shown to the model and in the answer; it decides nothing."""
        return sum(-rule.weight if rule.outcome == "approve" else rule.weight for rule in self.fired)

    @property
    def decisive(self) -> FiredRule | None:
        """The final rule that settles the record, unless a final rule that failed to evaluate could have
        outranked it (a broken final deny must not let a final approve through)."""
        if self.final is None:
            return None
        rank = SEVERITY[self.final.outcome]
        if any(error.final and SEVERITY[error.outcome] > rank for error in self.errors):
            return None
        return self.final

    @property
    def leaning(self) -> Outcome | None:
        """The most cautious outcome among the non-final rules that fired."""
        outcomes: list[Outcome] = [rule.outcome for rule in self.fired if not rule.final]
        if not outcomes:
            return None
        return max(outcomes, key=lambda outcome: SEVERITY[outcome])


def evaluate(compiled: CompiledRuleset, record: Any) -> RuleOutcome:
    """Run every rule on a record. A record that does not fit the input schema raises ``RecordInvalid``
    (a 400 naming the path); a rule that cannot be evaluated on it is reported in ``errors`` and never
    counts as fired (``merge`` then sends the record to review: see ``RuleOutcome.decisive``)."""
    compiled.check(record)
    activation = _engine().env.Activation({"input": record})
    fired: list[FiredRule] = []
    errors: list[RuleError] = []
    finals: list[tuple[int, float, int, FiredRule]] = []
    for rule in compiled.rules:
        spec = rule.spec
        result = _run(rule.program, activation)
        if isinstance(result, str):
            errors.append(RuleError(id=spec.id, outcome=spec.outcome, final=spec.final, message=result))
        elif result:
            hit = FiredRule(
                id=spec.id, outcome=spec.outcome, weight=spec.weight, final=spec.final, description=spec.description
            )
            fired.append(hit)
            if spec.final:
                finals.append((-SEVERITY[spec.outcome], -spec.weight, rule.index, hit))
    final = min(finals, key=lambda entry: entry[:3])[3] if finals else None
    return RuleOutcome(fired=tuple(fired), errors=tuple(errors), final=final)


def needs_model(outcome: RuleOutcome) -> bool:
    """Whether DeepSeek is asked: only when no final rule settles the record and every rule evaluated.
    A rules-only decision makes no upstream call at all."""
    return outcome.decisive is None and not outcome.errors


# -- the model's verdict -----------------------------------------------------------------------------------

Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)]


class ModelVerdict(BaseModel):
    """What DeepSeek must answer, as a JSON object. Strict: "0.9" is no confidence and true no number."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    decision: Outcome
    confidence: Annotated[float, Field(ge=0, le=1)]
    reasons: Annotated[list[Reason], Field(min_length=1, max_length=10)]


VerdictProblemKind = Literal["blank", "invalid_json", "schema_mismatch"]


@dataclass(frozen=True, slots=True)
class VerdictProblem:
    """Why an answer was no verdict. Each kind is worth asking again; after the last retry it is merged
    as is, and the record goes to review with this as the reason."""

    kind: VerdictProblemKind
    detail: str

    def describe(self) -> str:
        return f"{self.kind.replace('_', ' ')}: {self.detail}"


def parse_verdict(content: str | None) -> ModelVerdict | VerdictProblem:
    if content is None or not content.strip():
        # DeepSeek's JSON mode sometimes answers with nothing at all.
        return VerdictProblem("blank", "the answer was empty")
    try:
        data = json.loads(content)
    except ValueError as error:
        return VerdictProblem("invalid_json", str(error))
    if not isinstance(data, dict):
        return VerdictProblem("schema_mismatch", f"a JSON object was expected, not {type(data).__name__}")
    try:
        return ModelVerdict.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "verdict"
        return VerdictProblem("schema_mismatch", f"{where}: {first['msg']}")


VERDICT_SYSTEM_PROMPT = """\
You decide on one record for an automated decision system. Deterministic rules ran first and did not \
settle it; their findings come with the record.

Answer with one json object and nothing else:
{"decision": "approve" | "deny" | "review", "confidence": <a number from 0 to 1>, \
"reasons": ["<a short sentence>", ...]}

- "review" hands the record to a person: choose it when the evidence is mixed, thin or contradictory.
- Give one to five reasons, each naming the facts of the record that led to the decision.
- The rules that fired are weighted signals, not orders, but you cannot approve a record a rule denied: \
answer "review" instead.
- Judge only from the record and the rules shown; do not assume facts that are not there."""


def verdict_messages(
    compiled: CompiledRuleset, outcome: RuleOutcome, record: Mapping[str, Any]
) -> list[dict[str, str]]:
    """The chat messages asking for a verdict, for JSON mode (the word "json" is in them, as DeepSeek
    requires). Byte-identical for identical inputs: the system prompt is one constant (a prefix DeepSeek's
    own cache keeps hitting) and the rest is canonical JSON, so identical requests also share a cache key.
    Only the rules that fired are sent, never the whole ruleset."""
    facts = {
        "ruleset": {"id": compiled.id, "description": compiled.spec.description},
        "input": record,
        "rules_fired": [
            {"id": rule.id, "description": rule.description, "outcome": rule.outcome, "weight": rule.weight}
            for rule in outcome.fired
        ],
        "score": outcome.score,
    }
    user = "Decide on this record. The ruleset, the input record and the rules that fired, as json:\n"
    return [
        {"role": "system", "content": VERDICT_SYSTEM_PROMPT},
        {"role": "user", "content": user + canonical_json(facts)},
    ]


# -- merging -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decision:
    decision: Outcome
    decided_by: str  # "rule:<id>", "model" or "policy"
    reasons: tuple[str, ...]


def merge(outcome: RuleOutcome, verdict: ModelVerdict | VerdictProblem | None) -> Decision:
    """The one policy that turns rules and the model's verdict into a decision (docs/DECISIONS.md):

    1. A decisive final rule decides, whatever the model said (it is not asked).
    2. A rule that could not be evaluated sends the record to review ("policy"): its outcome is unknown.
    3. No verdict, or one still invalid after the retries: review ("policy"), with the reason.
    4. The model approves but a non-final rule denied: review ("policy"), never approve.
    5. Otherwise the model's verdict ("model"): it may deny, send to review, or approve what the rules
       only approved or flagged for review.

    When no final rule decides and every rule evaluated (rows: the most cautious non-final rule that
    fired; cells: decision / decided_by):

    ===================  =============  =================  ===============  =============  ===========
    non-final fired      no verdict     invalid verdict    model approve    model review   model deny
    ===================  =============  =================  ===============  =============  ===========
    none                 review/policy  review/policy      approve/model    review/model   deny/model
    approve only         review/policy  review/policy      approve/model    review/model   deny/model
    review, no deny      review/policy  review/policy      approve/model    review/model   deny/model
    at least one deny    review/policy  review/policy      review/policy    review/model   deny/model
    ===================  =============  =================  ===============  =============  ===========
    """
    decisive = outcome.decisive
    if decisive is not None:
        return Decision(decisive.outcome, f"rule:{decisive.id}", (_rule_reason(decisive),))
    if outcome.errors:
        reasons = tuple(f"rule '{error.id}' could not be evaluated: {error.message}" for error in outcome.errors)
        return Decision("review", "policy", reasons)
    if verdict is None:
        return Decision("review", "policy", ("no rule settled the record and there is no model verdict",))
    if isinstance(verdict, VerdictProblem):
        invalid = f"the model's answer stayed invalid after retries ({verdict.describe()})"
        return Decision("review", "policy", (invalid,))
    if verdict.decision == "approve" and outcome.leaning == "deny":
        denied = ", ".join(f"'{rule.id}'" for rule in outcome.fired if rule.outcome == "deny")
        overruled = f"the model approved, but rule {denied} denied: a model cannot approve what a rule denied"
        return Decision("review", "policy", (overruled, *verdict.reasons))
    return Decision(verdict.decision, "model", tuple(verdict.reasons))


def _rule_reason(rule: FiredRule) -> str:
    return rule.description or f"rule '{rule.id}' matched"


# -- the answer --------------------------------------------------------------------------------------------


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 kept as is: one text per JSON value, whatever order or spacing
    it arrived in."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def input_hash(record: Any) -> str:
    """SHA-256 (hex) of the record's canonical JSON: with the ruleset id and version, the cache key."""
    try:
        text = canonical_json(record)
    except ValueError:
        raise RecordInvalid("input: NaN and infinities are not JSON numbers.", param="input") from None
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class ModelCall:
    """What the model answered, kept for audit: the raw content of the last attempt and what it parsed to."""

    model: str
    attempts: int
    raw: str | None
    verdict: ModelVerdict | None = None
    problem: VerdictProblem | None = None

    def to_api(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "attempts": self.attempts,
            "raw": self.raw,
            "verdict": self.verdict.model_dump() if self.verdict is not None else None,
            "problem": {"kind": self.problem.kind, "detail": self.problem.detail} if self.problem else None,
        }


@dataclass(frozen=True, slots=True)
class DecisionResult:
    """One decision as POST /v1/decisions answers it and GET /v1/decisions/{id} reads it back."""

    id: str
    ruleset_id: str
    ruleset_version: int | None
    decision: Outcome
    decided_by: str
    reasons: tuple[str, ...]
    rules_fired: tuple[FiredRule, ...]
    rule_errors: tuple[RuleError, ...]
    score: float
    input_hash: str
    model: ModelCall | None = None  # None when the rules decided
    usage: Usage = field(default_factory=Usage)
    latency_ms: int = 0
    created_at: int = field(default_factory=lambda: int(time.time()))
    # "hit": answered from the decision cache (no model call), naming the decision it repeats; "miss": the
    # model was asked; None: the rules decided and no cache was consulted.
    cache: Literal["hit", "miss"] | None = None
    cached_from: str | None = None

    @classmethod
    def of(
        cls,
        *,
        id: str,
        compiled: CompiledRuleset,
        outcome: RuleOutcome,
        decision: Decision,
        input_hash: str,
        model: ModelCall | None = None,
        usage: Usage | None = None,
        latency_ms: int = 0,
        created_at: int | None = None,
        cache: Literal["hit", "miss"] | None = None,
        cached_from: str | None = None,
    ) -> DecisionResult:
        return cls(
            id=id,
            ruleset_id=compiled.id,
            ruleset_version=compiled.version,
            decision=decision.decision,
            decided_by=decision.decided_by,
            reasons=decision.reasons,
            rules_fired=outcome.fired,
            rule_errors=outcome.errors,
            score=outcome.score,
            input_hash=input_hash,
            model=model,
            usage=usage or Usage(),
            latency_ms=latency_ms,
            created_at=int(time.time()) if created_at is None else created_at,
            cache=cache,
            cached_from=cached_from,
        )

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "decision",
            "created_at": self.created_at,
            "ruleset": {"id": self.ruleset_id, "version": self.ruleset_version},
            "decision": self.decision,
            "decided_by": self.decided_by,
            "reasons": list(self.reasons),
            "rules_fired": [rule.to_api() for rule in self.rules_fired],
            "rule_errors": [error.to_api() for error in self.rule_errors],
            "score": self.score,
            "model": self.model.to_api() if self.model is not None else None,
            "usage": self.usage.to_wire(),
            "latency_ms": self.latency_ms,
            "input_hash": self.input_hash,
            "cache": self.cache,
            "cached_from": self.cached_from,
        }
