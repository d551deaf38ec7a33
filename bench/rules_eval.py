"""Hybrid decisions without the model: rules-only decisions per second, and the share of records that
need the model, for the example ruleset (examples/rulesets/card_risk.yaml).

Run alone with ``python -m bench.rules_eval [--quick] [--records N] [--seed S] [--json]``; it is not part
of ``make bench`` yet. What runs:

- the example ruleset, compiled once (``compile_ruleset``), as the decisions service will keep it;
- a synthetic set of card payments from a fixed seed (``synthetic_records``): every one fits the
  ruleset's input schema, with the mix of countries, amounts, customers and velocities a European web
  shop might see, a few sanctioned countries and ints among the doubles as JSON producers send them;
- ``evaluate`` once on every record (untimed) to sort them: the share that needs the model is the share
  where ``needs_model`` is true (no final rule settles it and every rule evaluated);
- timed, interleaved round by round (bench/common.py), each round one pass over the same chunk of records:
  ``decision`` (the rules-only path of the service, no I/O: ``evaluate`` with its schema validation,
  ``merge``, ``input_hash``, over the records the rules decide), ``rules`` (``evaluate`` alone over every
  record: the rules' cost for records that then go to the model), and ``engine`` (the direct baseline:
  one CEL activation per record and every condition evaluated, nothing else).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from bench.common import REPO_ROOT, interleave, load_average, machine, summarize
from seekless.rules import RulesetSpec, compile_ruleset, evaluate, input_hash, merge, needs_model

RULESET = REPO_ROOT / "examples/rulesets/card_risk.yaml"

# Weights, not shares: a European web shop with some travel, a little fraud and rare sanctioned parties.
COUNTRIES = {
    "DE": 22, "FR": 16, "GB": 12, "US": 12, "ES": 8, "IT": 8, "NL": 6, "PL": 5,
    "BR": 3, "IN": 3, "NG": 2, "IR": 0.4, "KP": 0.2, "CU": 0.2,
}  # fmt: skip
MCCS = {"5411": 30, "5812": 20, "5732": 15, "5999": 15, "5311": 10, "4829": 4, "6051": 3, "7995": 3}
CHARGEBACKS = {0: 92, 1: 5, 2: 2, 3: 0.7, 5: 0.3}


def pick(rng: random.Random, weights: dict[Any, float]) -> Any:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def synthetic_records(count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    records = []
    for index in range(count):
        card_country = pick(rng, COUNTRIES)
        present = rng.random() < 0.25
        amount: float | int = round(rng.lognormvariate(3.6, 1.3), 2)
        if rng.random() < 0.2:
            amount = max(1, round(amount))  # whole amounts often arrive as JSON ints
        tx_1h = int(rng.expovariate(1 / 1.5))
        tx_24h = tx_1h + int(rng.expovariate(1 / 4))
        record: dict[str, Any] = {
            "transaction_id": f"tx_{index:07d}",
            "amount": amount,
            "currency": "EUR",
            "card": {"country": card_country, "present": present},
            "merchant": {
                "country": card_country if rng.random() < 0.75 else pick(rng, COUNTRIES),
                "mcc": pick(rng, MCCS),
            },
            "customer": {
                "known": rng.random() < 0.7,
                "account_age_days": int(rng.expovariate(1 / 600)),
                "chargebacks_90d": pick(rng, CHARGEBACKS),
            },
            "velocity": {
                "tx_1h": tx_1h,
                "tx_24h": tx_24h,
                "amount_24h": round(float(amount) * tx_24h * rng.uniform(0.2, 1.2), 2),
                "countries_24h": 1 + (rng.random() < 0.06) + (rng.random() < 0.03),
            },
        }
        if not present:
            record["ip_country"] = card_country if rng.random() < 0.85 else pick(rng, COUNTRIES)
        records.append(record)
    return records


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run; noisier numbers)")
    parser.add_argument("--records", type=int, default=20_000, help="synthetic records (default 20,000)")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    args = parser.parse_args(argv)

    host = machine()
    spec = RulesetSpec.model_validate(yaml.safe_load(Path(RULESET).read_text()))
    compiled = compile_ruleset(spec, version=1)
    records = synthetic_records(args.records, args.seed)

    outcomes = [evaluate(compiled, record) for record in records]
    to_model = sum(needs_model(outcome) for outcome in outcomes)
    by_rules = [record for record, outcome in zip(records, outcomes, strict=True) if not needs_model(outcome)]
    errors = sum(bool(outcome.errors) for outcome in outcomes)
    decided_by: dict[str, int] = {}
    for outcome in outcomes:
        if not needs_model(outcome):
            label = merge(outcome, None).decided_by
            decided_by[label] = decided_by.get(label, 0) + 1

    # The direct baseline: cel-expr-python as a caller without seekless would use it.
    import cel_expr_python.cel as cel

    env = cel.NewEnv(variables={"input": cel.Type.Map(cel.Type.STRING, cel.Type.DYN)})
    programs = [env.compile(rule.condition) for rule in spec.rules]

    def engine_only(record: dict[str, Any]) -> None:
        activation = env.Activation({"input": record})
        for program in programs:
            program.eval(activation)

    def decide(record: dict[str, Any]) -> None:
        outcome = evaluate(compiled, record)
        merge(outcome, None)
        input_hash(record)

    chunk = 200 if args.quick else 1000
    rounds = 5 if args.quick else 20

    def passes(pool: list[dict[str, Any]], step: Callable[[dict[str, Any]], Any]) -> Callable[[int], Any]:
        def prepare(index: int) -> Callable[[], None]:
            start = (index * chunk) % max(1, len(pool) - chunk)
            batch = pool[start : start + chunk]

            def run() -> None:
                for record in batch:
                    step(record)

            return run

        return prepare

    samples = interleave(
        {
            "decision": passes(by_rules, decide),
            "rules": passes(records, lambda record: evaluate(compiled, record)),
            "engine": passes(records, engine_only),
        },
        rounds=rounds,
        warmup=2,
    )
    per_second = {name: chunk / (summarize(values).p50 / 1000) for name, values in samples.items()}
    results = {
        "ruleset": f"{spec.id} ({len(spec.rules)} rules)",
        "records": len(records),
        "seed": args.seed,
        "needs_model_share": to_model / len(records),
        "rules_decided_share": len(by_rules) / len(records),
        "records_with_rule_errors": errors,
        "decided_by": dict(sorted(decided_by.items(), key=lambda item: -item[1])),
        "rules_only_decisions_per_second_p50": round(per_second["decision"]),
        "evaluate_per_second_p50": round(per_second["rules"]),
        "engine_only_per_second_p50": round(per_second["engine"]),
        "chunk": chunk,
        "rounds": rounds,
        "machine": host,
        "load_average_at_end": load_average(),
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{results['ruleset']}, {len(records):,} synthetic records (seed {args.seed})")
    print(f"  need the model:            {to_model:,} ({results['needs_model_share']:.1%})")
    print(f"  decided by rules alone:    {len(by_rules):,} ({results['rules_decided_share']:.1%}): {decided_by}")
    print(f"  records with a rule error: {errors}")
    print(f"  rules-only decisions/s:    {per_second['decision']:,.0f}  (evaluate + merge + input_hash, p50)")
    print(f"  evaluate/s, every record:  {per_second['rules']:,.0f}")
    print(f"  engine alone/s (baseline): {per_second['engine']:,.0f}  (activation + every condition)")
    print(f"  {rounds} interleaved rounds of {chunk} records; load {results['machine']['Load average at start']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
