"""Rulesets in CEL, their evaluation, the model's verdict and the merge policy (seekless.rules)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from seekless.contracts import Usage
from seekless.errors import RecordInvalid, RulesetInvalid
from seekless.rules import (
    MAX_RECORD_DEPTH,
    CompiledRuleset,
    DecisionResult,
    FiredRule,
    ModelCall,
    ModelVerdict,
    RuleError,
    RuleOutcome,
    RulesetSpec,
    RuleSpec,
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

ROOT = Path(__file__).resolve().parents[2]
CARD_RISK = ROOT / "examples/rulesets/card_risk.yaml"


def card_risk_spec() -> RulesetSpec:
    return RulesetSpec.model_validate(yaml.safe_load(CARD_RISK.read_text()))


@pytest.fixture(scope="module")
def card_risk() -> CompiledRuleset:
    return compile_ruleset(card_risk_spec(), version=3)


def payment(**changes: Any) -> dict[str, Any]:
    """A card payment no rule of card_risk settles; ``changes`` override fields by path, parts joined with "__"."""
    record: dict[str, Any] = {
        "transaction_id": "tx_1",
        "amount": 180.0,
        "currency": "EUR",
        "ip_country": "FR",
        "card": {"country": "FR", "present": False},
        "merchant": {"country": "FR", "mcc": "5732"},
        "customer": {"known": False, "account_age_days": 40, "chargebacks_90d": 0},
        "velocity": {"tx_1h": 1, "tx_24h": 2, "amount_24h": 90.0, "countries_24h": 1},
    }
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        target = record
        for part in parents:
            target = target[part]
        target[leaf] = value
    return record


def ruleset(*rules: dict[str, Any], schema: dict[str, Any] | None = None) -> RulesetSpec:
    return RulesetSpec.model_validate(
        {"id": "t", "input_schema": schema or {"type": "object"}, "rules": [{"outcome": "deny", **r} for r in rules]}
    )


def refusal(spec: RulesetSpec) -> RulesetInvalid:
    with pytest.raises(RulesetInvalid) as caught:
        compile_ruleset(spec)
    return caught.value


# -- the example ruleset -----------------------------------------------------------------------------------


def test_example_ruleset_compiles_every_rule_once(card_risk: CompiledRuleset) -> None:
    spec = card_risk_spec()
    assert card_risk.id == "card_risk" and card_risk.version == 3
    assert [rule.spec.id for rule in card_risk.rules] == [rule.id for rule in spec.rules]
    assert any(rule.final and rule.outcome == "deny" for rule in spec.rules)
    assert any(rule.final and rule.outcome == "approve" for rule in spec.rules)


@pytest.mark.parametrize(
    ("changes", "decision", "decided_by"),
    [
        ({"merchant__country": "KP"}, "deny", "rule:sanctioned_country"),
        ({"customer__known": True, "amount": 4.99}, "approve", "rule:tiny_amount_known_customer"),
        # Both final rules fire: deny outranks approve.
        ({"customer__known": True, "amount": 4.99, "card__country": "IR"}, "deny", "rule:sanctioned_country"),
        ({"customer__chargebacks_90d": 4}, "deny", "rule:chargeback_history"),
        ({"customer__known": True, "customer__account_age_days": 400}, "approve", "rule:low_risk_regular"),
    ],
)
def test_example_final_rules_decide_without_the_model(
    card_risk: CompiledRuleset, changes: dict[str, Any], decision: str, decided_by: str
) -> None:
    outcome = evaluate(card_risk, payment(**changes))
    assert not needs_model(outcome)
    assert (merge(outcome, None).decision, merge(outcome, None).decided_by) == (decision, decided_by)


def test_example_final_approve_steps_aside_when_a_risk_signal_shows(card_risk: CompiledRuleset) -> None:
    outcome = evaluate(card_risk, payment(customer__known=True, customer__account_age_days=400, ip_country="NG"))
    assert needs_model(outcome)
    assert [rule.id for rule in outcome.fired] == ["ip_card_country_mismatch", "returning_customer"]


def test_example_non_final_rules_leave_the_record_to_the_model(card_risk: CompiledRuleset) -> None:
    outcome = evaluate(card_risk, payment(amount=6000, customer__account_age_days=2, ip_country="BR"))
    assert needs_model(outcome)
    assert [rule.id for rule in outcome.fired] == [
        "large_amount_new_account",
        "large_amount",
        "ip_card_country_mismatch",
    ]
    assert outcome.leaning == "deny"
    assert outcome.score == 70 + 30 + 15
    assert outcome.errors == ()


def test_int_and_double_fields_compare_and_convert_alike(card_risk: CompiledRuleset) -> None:
    """JSON numbers arrive as int or float; the example's conditions hold for both."""
    as_int = evaluate(card_risk, payment(amount=9000, velocity__amount_24h=2000))
    as_float = evaluate(card_risk, payment(amount=9000.0, velocity__amount_24h=2000.0))
    assert [r.id for r in as_int.fired] == [r.id for r in as_float.fired] == ["large_amount", "spend_spike"]


# -- invalid rules are refused with where the error is ----------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "message", "line", "column"),
    [
        ("input.amount > ", "Syntax error: mismatched input '<EOF>'", 1, 16),
        ('input.amount > 10 &&\n  input.currency == "EUR" )', "Syntax error: extraneous input ')'", 2, 27),
        ("frobnicate(input.amount)", "undeclared reference to 'frobnicate'", 1, 11),
        (
            'input.amount >= 10 &&\n    input.card.country.lowerAscii() == "de"',
            "undeclared reference to 'lowerAscii'",
            2,
            34,
        ),
        ("amount > 10", "undeclared reference to 'amount'", 1, 1),
        ('"a" + 1 == "a1"', "found no matching overload for '_+_' applied to '(string, int)'", 1, 5),
        ("input.amount + 1", "the condition must be a bool, not int", 1, 1),
        ("[1, 2]", "the condition must be a bool, not list<int>", 1, 1),
    ],
    ids=[
        "syntax",
        "syntax-line-2",
        "unknown-function",
        "unknown-method",
        "unknown-variable",
        "overload",
        "int",
        "list",
    ],
)
def test_invalid_condition_is_refused_with_rule_line_and_column(
    condition: str, message: str, line: int, column: int
) -> None:
    error = refusal(ruleset({"id": "ok", "condition": "input.amount > 1"}, {"id": "bad", "condition": condition}))
    [problem] = error.problems
    assert (problem.rule, problem.line, problem.column) == ("bad", line, column)
    assert problem.message.startswith(message)
    assert error.status == 400 and error.code == "ruleset_invalid" and error.param == "rules[1].condition"


def test_every_bad_rule_is_reported_at_once_in_the_error_body() -> None:
    error = refusal(
        ruleset(
            {"id": "a", "condition": "input.x >"},
            {"id": "b", "condition": "input.x > 1"},
            {"id": "c", "condition": "nope(input.x)"},
        )
    )
    body = error.to_body()["error"]
    assert [(d["rule"], d["line"], d["column"]) for d in body["details"]] == [("a", 1, 10), ("c", 1, 5)]
    assert "rule 'a' (line 1, column 10)" in body["message"] and "rule 'c' (line 1, column 5)" in body["message"]
    assert body["type"] == "invalid_request_error"


def test_a_rule_that_fails_on_a_schema_example_is_refused_at_upload() -> None:
    schema = {"type": "object", "examples": [{"amount": 12}]}
    error = refusal(ruleset({"id": "mixed", "condition": "input.amount + 1.5 > 10.0"}, schema=schema))
    [problem] = error.problems
    assert problem.rule == "mixed"
    assert problem.message.startswith("fails on input_schema.examples[0]: No matching overloads")


def test_an_example_that_does_not_fit_the_schema_is_refused() -> None:
    schema = {"type": "object", "required": ["amount"], "examples": [{"amount": 1}, {"total": 1}]}
    [problem] = refusal(ruleset({"id": "r", "condition": "input.amount > 1"}, schema=schema)).problems
    assert (problem.rule, problem.field) == (None, "input_schema.examples[1]")
    assert problem.message == '"amount" is a required property'


@pytest.mark.parametrize(
    ("schema", "field", "message"),
    [
        ({"type": "array"}, "input_schema", 'must have "type": "object"'),
        ({"type": "object", "properties": {"n": {"type": "integr"}}}, "input_schema.properties.n.type", "not a valid"),
        (
            {"type": "object", "properties": {"code": {"type": "string", "pattern": "^(?!x)"}}},
            "input_schema.properties.code.pattern",
            'is not a "regex"',
        ),
        ({"type": "object", "$ref": "https://example.com/s.json"}, "input_schema", "Retrieval is disabled"),
        ({"type": "object", "$ref": "#/$defs/card"}, "input_schema", "'/$defs/card' does not exist"),
    ],
    ids=["not-an-object", "bad-type", "backtracking-pattern", "remote-ref", "missing-ref"],
)
def test_unsound_input_schema_is_refused(schema: dict[str, Any], field: str, message: str) -> None:
    [problem] = refusal(ruleset({"id": "r", "condition": "true"}, schema=schema)).problems
    assert problem.rule is None and problem.field == field and message in problem.message


def test_ruleset_shape_is_checked_before_any_compiling() -> None:
    with pytest.raises(ValidationError, match="used twice"):
        ruleset({"id": "r", "condition": "true"}, {"id": "r", "condition": "false"})
    with pytest.raises(ValidationError, match="finale"):
        RuleSpec.model_validate({"id": "r", "condition": "true", "outcome": "deny", "finale": True})
    with pytest.raises(ValidationError, match="outcome"):
        RuleSpec.model_validate({"id": "r", "condition": "true", "outcome": "block"})


# -- records that do not fit ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "param", "message"),
    [
        (payment(amount="12"), "input.amount", '"12" is not of type "number"'),
        (payment(card__country="Germany"), "input.card.country", '"Germany" does not match "^[A-Z]{2}$"'),
        (
            payment(customer={"known": True, "account_age_days": 3}),
            "input.customer",
            '"chargebacks_90d" is a required property',
        ),
        (payment(coupon="X"), "input", "Additional properties are not allowed ('coupon' was unexpected)"),
    ],
    ids=["type", "pattern", "required", "additional"],
)
def test_record_that_does_not_fit_the_schema_is_a_400_naming_the_path(
    card_risk: CompiledRuleset, record: dict[str, Any], param: str, message: str
) -> None:
    with pytest.raises(RecordInvalid) as caught:
        evaluate(card_risk, record)
    assert caught.value.status == 400 and caught.value.code == "input_schema_mismatch"
    assert caught.value.param == param
    assert caught.value.message == f"{param}: {message}"


def test_array_items_are_named_by_index() -> None:
    schema = {"type": "object", "properties": {"items": {"type": "array", "items": {"type": "integer"}}}}
    compiled = compile_ruleset(ruleset({"id": "r", "condition": "size(input.items) > 2"}, schema=schema))
    with pytest.raises(RecordInvalid) as caught:
        evaluate(compiled, {"items": [1, 2, "three"]})
    assert caught.value.param == "input.items[2]"


@pytest.mark.parametrize(
    ("record", "param"),
    [
        ([1, 2], "input"),
        ({"a": float("nan")}, "input.a"),
        ({"a": 2**70}, "input.a"),
        ({"a": {"b": (1, 2)}}, "input.a.b"),
    ],
    ids=["not-an-object", "nan", "wider-than-64-bits", "not-json"],
)
def test_record_cel_cannot_hold_is_refused(record: Any, param: str) -> None:
    compiled = compile_ruleset(ruleset({"id": "r", "condition": "true"}))
    with pytest.raises(RecordInvalid) as caught:
        evaluate(compiled, record)
    assert caught.value.param == param


def test_deeply_nested_record_is_refused_before_the_engine_sees_it() -> None:
    compiled = compile_ruleset(ruleset({"id": "r", "condition": "true"}))
    nested: Any = 1
    for _ in range(50_000):  # the engine's recursive conversion crashed the process at this depth
        nested = [nested]
    with pytest.raises(RecordInvalid, match=f"deeper than {MAX_RECORD_DEPTH}"):
        evaluate(compiled, {"deep": nested})


def test_schema_patterns_match_in_linear_time() -> None:
    """A backtracking engine (Python's re) takes for ever on these patterns and strings: the test would
    hit its timeout."""
    schema = {
        "type": "object",
        "properties": {"code": {"type": "string", "pattern": "^(a+)+$"}},
        "patternProperties": {"^(b+)+$": {"type": "integer"}},
    }
    compiled = compile_ruleset(ruleset({"id": "r", "condition": "true"}, schema=schema))
    with pytest.raises(RecordInvalid, match="does not match"):
        evaluate(compiled, {"code": "a" * 64 + "!"})
    evaluate(compiled, {"code": "a" * 64, "b" * 64 + "!": "not matched, so not an integer"})
    with pytest.raises(RecordInvalid, match="is not of type"):
        evaluate(compiled, {"b" * 64: "matched, so an integer"})


# -- which final rule decides, and rules that cannot be evaluated -----------------------------------------


def rules_on_x(*rules: tuple[str, str, float, bool]) -> CompiledRuleset:
    """Rules that fire when input.x is 1, in this order: (id, outcome, weight, final)."""
    specs = [
        {"id": rule_id, "condition": "input.x == 1", "outcome": outcome, "weight": weight, "final": final}
        for rule_id, outcome, weight, final in rules
    ]
    return compile_ruleset(RulesetSpec.model_validate({"id": "t", "rules": specs}))


@pytest.mark.parametrize(
    ("rules", "winner"),
    [
        ([("ok", "approve", 99, True), ("no", "deny", 1, True)], "no"),
        ([("ok", "approve", 99, True), ("look", "review", 1, True)], "look"),
        ([("look", "review", 99, True), ("no", "deny", 1, True)], "no"),
        ([("light", "deny", 5, True), ("heavy", "deny", 50, True)], "heavy"),
        ([("first", "deny", 5, True), ("second", "deny", 5, True)], "first"),
        ([("nonfinal", "deny", 100, False), ("ok", "approve", 1, True)], "ok"),
    ],
    ids=["deny>approve", "review>approve", "deny>review", "then-weight", "then-order", "final-beats-non-final"],
)
def test_final_rule_choice(rules: list[tuple[str, str, float, bool]], winner: str) -> None:
    outcome = evaluate(rules_on_x(*rules), {"x": 1})
    assert outcome.final is not None and outcome.final.id == winner
    assert merge(outcome, None).decided_by == f"rule:{winner}"


def test_rule_that_cannot_be_evaluated_is_reported_and_sends_the_record_to_review() -> None:
    compiled = compile_ruleset(
        ruleset(
            {"id": "missing", "condition": "input.country == 'KP'"},
            {"id": "typed", "condition": "input.amount > 10", "outcome": "review"},
            {"id": "string", "condition": "input.flag", "outcome": "approve"},
        )
    )
    outcome = evaluate(compiled, {"amount": "12", "flag": "yes"})
    assert outcome.fired == ()
    assert [(e.id, e.message) for e in outcome.errors] == [
        ("missing", 'Key not found in map : "country"'),
        ("typed", "No matching overloads found : _>_(string, int64)"),
        ("string", "the condition evaluated to string, not bool"),
    ]
    assert not needs_model(outcome)
    decision = merge(outcome, ModelVerdict(decision="approve", confidence=1, reasons=["fine"]))
    assert (decision.decision, decision.decided_by) == ("review", "policy")
    assert decision.reasons[0] == "rule 'missing' could not be evaluated: Key not found in map : \"country\""


def test_comprehension_past_the_iteration_budget_is_a_rule_error_not_a_hang() -> None:
    compiled = compile_ruleset(ruleset({"id": "n2", "condition": "input.xs.all(a, input.xs.all(b, a + b >= 0))"}))
    outcome = evaluate(compiled, {"xs": list(range(500))})
    assert [e.id for e in outcome.errors] == ["n2"] and "budget" in outcome.errors[0].message


@pytest.mark.parametrize(
    ("broken", "decision", "decided_by"),
    [
        # A final approve fired, but a final deny could not be evaluated: it might have outranked it.
        (("broken_deny", "deny", True), "review", "policy"),
        # A broken non-final rule cannot outrank a final one.
        (("broken_deny", "deny", False), "approve", "rule:ok"),
        # A broken final approve cannot outrank a final approve.
        (("broken_ok", "approve", True), "approve", "rule:ok"),
    ],
)
def test_broken_rule_blocks_a_final_rule_only_when_it_could_have_outranked_it(
    broken: tuple[str, str, bool], decision: str, decided_by: str
) -> None:
    broken_id, outcome_name, final = broken
    compiled = compile_ruleset(
        ruleset(
            {"id": "ok", "condition": "input.x == 1", "outcome": "approve", "final": True},
            {"id": broken_id, "condition": "input.missing == 1", "outcome": outcome_name, "final": final},
        )
    )
    outcome = evaluate(compiled, {"x": 1})
    assert [e.id for e in outcome.errors] == [broken_id]
    assert (merge(outcome, None).decision, merge(outcome, None).decided_by) == (decision, decided_by)


# -- the merge policy, every combination -------------------------------------------------------------------

OUTCOMES = ("approve", "review", "deny")
# Without a final rule: (strongest non-final rule fired, model verdict) -> (decision, decided_by).
NO_FINAL_TABLE: dict[tuple[str | None, str | None], tuple[str, str]] = {
    (None, None): ("review", "policy"),
    (None, "invalid"): ("review", "policy"),
    (None, "approve"): ("approve", "model"),
    (None, "review"): ("review", "model"),
    (None, "deny"): ("deny", "model"),
    ("approve", None): ("review", "policy"),
    ("approve", "invalid"): ("review", "policy"),
    ("approve", "approve"): ("approve", "model"),
    ("approve", "review"): ("review", "model"),
    ("approve", "deny"): ("deny", "model"),
    ("review", None): ("review", "policy"),
    ("review", "invalid"): ("review", "policy"),
    ("review", "approve"): ("approve", "model"),
    ("review", "review"): ("review", "model"),
    ("review", "deny"): ("deny", "model"),
    ("deny", None): ("review", "policy"),
    ("deny", "invalid"): ("review", "policy"),
    ("deny", "approve"): ("review", "policy"),
    ("deny", "review"): ("review", "model"),
    ("deny", "deny"): ("deny", "model"),
}
MERGE_CASES = [
    (final, non_final, model, (final, f"rule:final_{final}") if final else NO_FINAL_TABLE[(non_final, model)])
    for final in (None, *OUTCOMES)
    for non_final in (None, *OUTCOMES)
    for model in (None, "invalid", *OUTCOMES)
]


def verdict_for(model: str | None) -> ModelVerdict | VerdictProblem | None:
    if model is None:
        return None
    if model == "invalid":
        return VerdictProblem("invalid_json", "Expecting value: line 1 column 1 (char 0)")
    return ModelVerdict.model_validate({"decision": model, "confidence": 0.8, "reasons": [f"model says {model}"]})


@pytest.mark.parametrize(("final", "non_final", "model", "expected"), MERGE_CASES, ids=str)
def test_merge_policy(final: str | None, non_final: str | None, model: str | None, expected: tuple[str, str]) -> None:
    fired = []
    if non_final is not None:
        fired.append(FiredRule(id=f"signal_{non_final}", outcome=non_final, weight=10, final=False))
    final_rule = None
    if final is not None:
        final_rule = FiredRule(id=f"final_{final}", outcome=final, weight=50, final=True)
        fired.append(final_rule)
    outcome = RuleOutcome(fired=tuple(fired), final=final_rule)

    assert needs_model(outcome) is (final is None)
    decision = merge(outcome, verdict_for(model))
    assert (decision.decision, decision.decided_by) == expected
    assert decision.reasons


def test_merge_cases_cover_every_combination() -> None:
    assert len(MERGE_CASES) == 4 * 4 * 5 == len({case[:3] for case in MERGE_CASES})


def test_model_cannot_approve_what_any_rule_denied_even_outweighed() -> None:
    outcome = RuleOutcome(
        fired=(
            FiredRule(id="loyal", outcome="approve", weight=500, final=False),
            FiredRule(id="new_device", outcome="deny", weight=1, final=False),
        )
    )
    decision = merge(outcome, ModelVerdict(decision="approve", confidence=0.99, reasons=["long history"]))
    assert (decision.decision, decision.decided_by) == ("review", "policy")
    assert "'new_device'" in decision.reasons[0] and "cannot approve" in decision.reasons[0]
    assert decision.reasons[1:] == ("long history",)


def test_invalid_verdict_gives_review_with_the_reason() -> None:
    decision = merge(RuleOutcome(), VerdictProblem("blank", "the answer was empty"))
    assert decision.reasons == ("the model's answer stayed invalid after retries (blank: the answer was empty)",)


# -- the model's verdict -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "kind"),
    [
        (None, "blank"),
        ("", "blank"),
        ("  \n ", "blank"),
        ("{decision: deny}", "invalid_json"),
        ('```json\n{"decision": "deny", "confidence": 0.9, "reasons": ["x"]}\n```', "invalid_json"),
        ('{"decision": "deny", "confidence": 0.9, "reasons": ["x"]', "invalid_json"),
        ('["deny"]', "schema_mismatch"),
        ('{"decision": "deny", "confidence": 0.9}', "schema_mismatch"),
        ('{"decision": "deny", "confidence": 0.9, "reasons": []}', "schema_mismatch"),
        ('{"decision": "deny", "confidence": 0.9, "reasons": ["  "]}', "schema_mismatch"),
        ('{"decision": "deny", "confidence": 1.5, "reasons": ["x"]}', "schema_mismatch"),
        ('{"decision": "deny", "confidence": "0.9", "reasons": ["x"]}', "schema_mismatch"),
        ('{"decision": "block", "confidence": 0.9, "reasons": ["x"]}', "schema_mismatch"),
    ],
)
def test_parse_verdict_names_what_is_wrong(content: str | None, kind: str) -> None:
    result = parse_verdict(content)
    assert isinstance(result, VerdictProblem) and result.kind == kind and result.detail


def test_parse_verdict_accepts_a_valid_answer() -> None:
    content = '{"decision": "review", "confidence": 1, "reasons": [" new device "], "notes": "ignored"}'
    assert parse_verdict(content) == ModelVerdict(decision="review", confidence=1.0, reasons=["new device"])


def test_schema_mismatch_says_which_field() -> None:
    problem = parse_verdict('{"decision": "deny", "confidence": 0.9}')
    assert isinstance(problem, VerdictProblem) and problem.detail.startswith("reasons:")


# -- the prompt --------------------------------------------------------------------------------------------


def test_prompt_asks_for_json_with_the_record_and_only_the_rules_that_fired(card_risk: CompiledRuleset) -> None:
    record = payment(amount=6000)
    outcome = evaluate(card_risk, record)
    system, user = verdict_messages(card_risk, outcome, record)
    assert system["role"] == "system" and user["role"] == "user"
    assert "json" in system["content"] and "json" in user["content"]
    facts = json.loads(user["content"].split("\n", 1)[1])
    assert facts["input"] == record
    assert [rule["id"] for rule in facts["rules_fired"]] == ["large_amount"]
    assert "sanctioned_country" not in user["content"]
    assert facts["ruleset"]["id"] == "card_risk"


def test_prompt_is_byte_identical_for_the_same_record_in_any_key_order(card_risk: CompiledRuleset) -> None:
    record = payment(amount=6000)
    shuffled = json.loads(json.dumps(dict(reversed(list(record.items())))))
    assert list(shuffled) != list(record)
    first = verdict_messages(card_risk, evaluate(card_risk, record), record)
    second = verdict_messages(card_risk, evaluate(card_risk, shuffled), shuffled)
    assert first == second
    assert first[0]["content"] == verdict_messages(card_risk, RuleOutcome(), {})[0]["content"]


# -- the input hash and the answer -------------------------------------------------------------------------


def test_input_hash_ignores_key_order_and_whitespace() -> None:
    one = json.loads('{"b": [1, 2], "a": {"y": "é", "x": 1.5}}')
    two = json.loads('{\n  "a" : {"x":1.5,"y":"\\u00e9"},\n  "b":[1,2]\n}')
    assert input_hash(one) == input_hash(two)
    assert input_hash(one) == hashlib.sha256('{"a":{"x":1.5,"y":"é"},"b":[1,2]}'.encode()).hexdigest()
    assert canonical_json(two) == '{"a":{"x":1.5,"y":"é"},"b":[1,2]}'


def test_input_hash_tells_different_values_apart() -> None:
    assert input_hash({"a": 1}) != input_hash({"a": 1.0})
    assert input_hash({"a": [1, 2]}) != input_hash({"a": [2, 1]})
    with pytest.raises(RecordInvalid):
        input_hash({"a": float("inf")})


def test_rules_only_answer(card_risk: CompiledRuleset) -> None:
    record = payment(merchant__country="KP")
    outcome = evaluate(card_risk, record)
    result = DecisionResult.of(
        id="dec_1",
        compiled=card_risk,
        outcome=outcome,
        decision=merge(outcome, None),
        input_hash=input_hash(record),
        latency_ms=2,
    )
    answer = result.to_api()
    assert answer["object"] == "decision" and answer["id"] == "dec_1"
    assert answer["ruleset"] == {"id": "card_risk", "version": 3}
    assert (answer["decision"], answer["decided_by"]) == ("deny", "rule:sanctioned_country")
    assert answer["reasons"] == ["A party to the payment is in a comprehensively sanctioned country."]
    assert answer["rules_fired"][0] == {"id": "sanctioned_country", "outcome": "deny", "weight": 100.0, "final": True}
    assert answer["model"] is None and answer["usage"]["total_tokens"] == 0
    assert answer["input_hash"] == input_hash(record) and answer["latency_ms"] == 2


def test_model_answer_keeps_the_raw_verdict(card_risk: CompiledRuleset) -> None:
    record = payment(amount=6000)
    outcome = evaluate(card_risk, record)
    raw = '{"decision": "review", "confidence": 0.6, "reasons": ["large amount"]}'
    verdict = parse_verdict(raw)
    assert isinstance(verdict, ModelVerdict)
    result = DecisionResult.of(
        id="dec_2",
        compiled=card_risk,
        outcome=outcome,
        decision=merge(outcome, verdict),
        input_hash=input_hash(record),
        model=ModelCall(model="deepseek-flash", attempts=2, raw=raw, verdict=verdict),
        usage=Usage(prompt_tokens=700, completion_tokens=40),
    )
    answer = result.to_api()
    assert (answer["decision"], answer["decided_by"], answer["reasons"]) == ("review", "model", ["large amount"])
    assert answer["model"]["raw"] == raw and answer["model"]["attempts"] == 2
    assert answer["model"]["verdict"] == {"decision": "review", "confidence": 0.6, "reasons": ["large amount"]}
    assert answer["usage"]["total_tokens"] == 740


def test_rule_errors_reach_the_answer() -> None:
    error = RuleError(id="r", outcome="deny", final=False, message="boom")
    assert error.to_api() == {"id": "r", "outcome": "deny", "final": False, "message": "boom"}


def test_the_documented_conditions_compile() -> None:
    """docs/DECISIONS.md shows conditions and names the functions a condition may use: both hold."""
    guide = (ROOT / "docs/DECISIONS.md").read_text()
    shown = [line.split("condition: ", 1)[1] for line in guide.splitlines() if line.startswith("condition: ")]
    assert len(shown) >= 5
    compile_ruleset(ruleset(*({"id": f"doc{i}", "condition": text} for i, text in enumerate(shown))))

    library = (
        'size(input.s) == 3 && input.s.contains("b") && input.s.startsWith("a") && input.s.endsWith("c")'
        ' && input.s.matches("^a.c$") && "b" in ["a", "b"] && input.xs.all(x, x > 0)'
        " && input.xs.exists(x, x > 2) && input.xs.exists_one(x, x == 3)"
        " && size(input.xs.map(x, x * 2).filter(x, x > 2)) == 2"
        ' && int("7") == 7 && double(7) == 7.0 && string(7) == "7"'
        ' && timestamp(input.at) < timestamp("2100-01-01T00:00:00Z") && duration("1h") > duration("59m")'
    )
    compiled = compile_ruleset(ruleset({"id": "library", "condition": library}))
    outcome = evaluate(compiled, {"s": "abc", "xs": [1, 2, 3], "at": "2026-01-01T00:00:00Z"})
    assert outcome.errors == () and [rule.id for rule in outcome.fired] == ["library"]
