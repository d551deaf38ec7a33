"""Hybrid decisions without the model: rules-only decisions per second through the decisions service,
against the bare CEL engine, and the share of records that need the model, for the example ruleset
(examples/rulesets/card_risk.yaml).

Part of ``make bench`` (``run``); alone: ``python -m bench.rules_eval [--quick] [--records N] [--seed S]
[--json]``. What runs:

- the example ruleset, pushed once through ``DecisionService.publish`` (compiled once, as the service
  keeps it);
- a synthetic set of card payments from a fixed seed (``synthetic_records``): every one fits the
  ruleset's input schema, with the mix of countries, amounts, customers and velocities a European web
  shop might see, a few sanctioned countries and ints among the doubles as JSON producers send them;
- ``evaluate`` once on every record (untimed) to sort them: the share that needs the model is the share
  where ``needs_model`` is true (no final rule settles it and every rule evaluated);
- timed, interleaved round by round (bench/common.py), each round one pass over a chunk of the records
  the rules decide:
  ``engine`` (the direct baseline: one CEL activation per record and every condition evaluated, nothing
  else), ``pure`` (the rules-only path without I/O: ``evaluate`` with its schema validation, ``merge``,
  ``input_hash``), ``service, memory`` (``DecisionService.decide`` as the route calls it, latest version,
  with in-memory stores: the service's own cost) and ``service, moto`` (the same with the DynamoDB
  adapters on moto in process: a consistent GetItem of the ruleset's head and the PutItem of the decision,
  serialised through botocore, per record).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from bench.common import (
    LOCAL_AWS,
    REPO_ROOT,
    Row,
    Section,
    environment,
    interleave,
    load_average,
    machine,
    print_sections,
    summarize,
    times,
)
from seekless.rules import RulesetSpec, compile_ruleset, evaluate, input_hash, merge, needs_model

if TYPE_CHECKING:
    from seekless.decisions import DecisionService, RulesetSummary, StoredRuleset
    from seekless.models import Page
    from seekless.rules import DecisionResult

RULESET = REPO_ROOT / "examples/rulesets/card_risk.yaml"
TITLE = "Hybrid decisions: rules-only decisions per second (no model call)"

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


# -- the stores --------------------------------------------------------------------------------------


class MemoryRulesets:
    """``seekless.ports.RulesetStore`` in a dict: what the service costs with storage taken away."""

    def __init__(self) -> None:
        self.versions: dict[tuple[str, str], list[StoredRuleset]] = {}

    def publish(self, tenant_id: str, spec: RulesetSpec, *, created_by: str) -> StoredRuleset:
        from seekless.decisions import StoredRuleset

        kept = self.versions.setdefault((tenant_id, spec.id), [])
        kept.append(StoredRuleset(spec=spec, version=len(kept) + 1, created_at=int(time.time()), created_by=created_by))
        return kept[-1]

    def latest_version(self, tenant_id: str, ruleset_id: str) -> int:
        return len(self.versions[(tenant_id, ruleset_id)])

    def get(self, tenant_id: str, ruleset_id: str, version: int) -> StoredRuleset:
        return self.versions[(tenant_id, ruleset_id)][version - 1]

    def list_rulesets(self, tenant_id: str, *, limit: int, after: str | None) -> Page[RulesetSummary]:
        raise NotImplementedError


class MemoryDecisions:
    """``seekless.ports.DecisionStore`` in a dict."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], DecisionResult] = {}

    def put(self, tenant_id: str, result: DecisionResult, *, created_by: str) -> None:
        self.items[(tenant_id, result.id)] = result

    def get(self, tenant_id: str, decision_id: str) -> DecisionResult:
        return self.items[(tenant_id, decision_id)]

    def list_decisions(self, tenant_id: str, *, limit: int, after: str | None) -> Page[DecisionResult]:
        raise NotImplementedError


def service(rulesets: Any, decisions: Any) -> DecisionService:
    from seekless.chat import validation_only
    from seekless.config import Settings
    from seekless.decisions import DecisionService

    settings = Settings()
    # Rules-only records never reach the model: a ChatService without a client is enough.
    return DecisionService(
        rulesets=rulesets, decisions=decisions, chat=validation_only(settings), cache=None, settings=settings
    )


@contextmanager
def moto_stores() -> Iterator[tuple[Any, Any]]:
    """The DynamoDB adapters on moto in process, with the template's tables."""
    import boto3
    from moto import mock_aws

    from seekless.adapters.decisions import DynamoDecisionStore, DynamoRulesetStore
    from seekless_local.template import create_tables

    names = {"RulesetsTable": "bench-rulesets", "DecisionsTable": "bench-decisions"}
    with environment({**LOCAL_AWS, "AWS_ENDPOINT_URL": None}), mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_tables(client, names=names)
        yield (
            DynamoRulesetStore(names["RulesetsTable"], client=client),
            DynamoDecisionStore(names["DecisionsTable"], client=client),
        )


# -- measuring ---------------------------------------------------------------------------------------


def measure(*, quick: bool, records: int = 20_000, seed: int = 8) -> dict[str, Any]:
    from seekless.models import Principal

    host = machine()
    spec = RulesetSpec.model_validate(yaml.safe_load(Path(RULESET).read_text()))
    compiled = compile_ruleset(spec, version=1)
    pool = synthetic_records(records, seed)

    outcomes = [evaluate(compiled, record) for record in pool]
    to_model = sum(needs_model(outcome) for outcome in outcomes)
    by_rules = [record for record, outcome in zip(pool, outcomes, strict=True) if not needs_model(outcome)]
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

    def pure(record: dict[str, Any]) -> None:
        merge(evaluate(compiled, record), None)
        input_hash(record)

    principal = Principal(tenant_id="bench", key_id="bench")
    loop = asyncio.new_event_loop()
    chunk = 200 if quick else 1000
    moto_chunk = 20 if quick else 100
    rounds = 5 if quick else 20

    def passes(step: Callable[[dict[str, Any]], Any], size: int) -> Callable[[int], Callable[[], None]]:
        def prepare(index: int) -> Callable[[], None]:
            start = (index * size) % max(1, len(by_rules) - size)
            batch = by_rules[start : start + size]

            def run() -> None:
                for record in batch:
                    step(record)

            return run

        return prepare

    def decisions(svc: DecisionService, size: int) -> Callable[[int], Callable[[], None]]:
        async def each(batch: list[dict[str, Any]]) -> None:
            deadline = time.monotonic() + 3600
            for record in batch:
                await svc.decide(principal, spec.id, record, deadline=deadline)

        def prepare(index: int) -> Callable[[], None]:
            start = (index * size) % max(1, len(by_rules) - size)
            batch = by_rules[start : start + size]
            return lambda: loop.run_until_complete(each(batch))

        return prepare

    in_memory = service(MemoryRulesets(), MemoryDecisions())
    in_memory.publish(principal, spec)
    try:
        with moto_stores() as (rulesets, kept):
            on_moto = service(rulesets, kept)
            on_moto.publish(principal, spec)
            samples = interleave(
                {
                    "engine": passes(engine_only, chunk),
                    "pure": passes(pure, chunk),
                    "service, memory": decisions(in_memory, chunk),
                    "service, moto": decisions(on_moto, moto_chunk),
                },
                rounds=rounds,
                warmup=2,
            )
    finally:
        loop.close()
    sizes = {"engine": chunk, "pure": chunk, "service, memory": chunk, "service, moto": moto_chunk}
    per_second = {name: sizes[name] / (summarize(values).p50 / 1000) for name, values in samples.items()}
    return {
        "ruleset": f"{spec.id} ({len(spec.rules)} rules)",
        "records": len(pool),
        "seed": seed,
        "needs_model_share": to_model / len(pool),
        "rules_decided_share": len(by_rules) / len(pool),
        "records_with_rule_errors": errors,
        "decided_by": dict(sorted(decided_by.items(), key=lambda item: -item[1])),
        "engine_only_per_second_p50": round(per_second["engine"]),
        "rules_only_pure_per_second_p50": round(per_second["pure"]),
        "service_memory_per_second_p50": round(per_second["service, memory"]),
        "service_moto_per_second_p50": round(per_second["service, moto"]),
        "chunk": chunk,
        "moto_chunk": moto_chunk,
        "rounds": rounds,
        "machine": host,
        "load_average_at_end": load_average(),
    }


def run(quick: bool = False) -> list[Section]:
    return [section(measure(quick=quick))]


def section(results: dict[str, Any]) -> Section:
    engine = results["engine_only_per_second_p50"]

    def row(label: str, rate: float) -> Row:
        mine, base = 1e6 / rate, 1e6 / engine
        return Row(
            label,
            f"{rate:,.0f}/s ({mine:,.0f} µs each)",
            f"{engine:,.0f}/s ({base:,.0f} µs each)",
            f"{times(mine / base)} the time (+{mine - base:,.0f} µs)",
        )

    shares = ", ".join(f"{label} {count:,}" for label, count in results["decided_by"].items())
    rows = [
        row(
            "rules-only decisions, `DecisionService.decide`, DynamoDB adapters on moto",
            results["service_moto_per_second_p50"],
        ),
        row(
            "rules-only decisions, `DecisionService.decide`, in-memory stores", results["service_memory_per_second_p50"]
        ),
        row("evaluate + merge + input_hash (no service, no store)", results["rules_only_pure_per_second_p50"]),
        Row(
            f"share of {results['records']:,} synthetic payments that need the model",
            f"{results['needs_model_share']:.1%}",
            "-",
            f"decided by rules alone: {results['rules_decided_share']:.1%}",
        ),
    ]
    notes = [
        f"Ruleset {results['ruleset']}, examples/rulesets/card_risk.yaml; {results['records']:,} synthetic card "
        f"payments from seed {results['seed']} (bench/rules_eval.py). The rules alone decided {shares}; "
        f"{results['records_with_rule_errors']} records had a rule that could not be evaluated.",
        "Baseline: the same conditions compiled with cel-expr-python directly, one activation per record and every "
        "condition evaluated, nothing else. p50 of "
        f"{results['rounds']} interleaved rounds after 2 warm-up rounds; each round one pass over "
        f"{results['chunk']:,} records the rules decide ({results['moto_chunk']:,} for moto).",
        "`decide` per record: the latest version's number read from the store (the compiled ruleset then comes "
        "from the service's LRU), the record checked against the input schema, every rule evaluated, the input "
        "hashed, the decision built and stored. On moto that is a consistent GetItem and a PutItem through "
        "botocore, in process: the figure shows what serialising them costs here, not DynamoDB's latency "
        "(a few milliseconds per call from Lambda in the same region, which then dominates).",
        "Rules-only decisions make no upstream call and no Redis call (the decision cache is only for verdicts).",
    ]
    return Section(title=TITLE, rows=rows, notes=notes)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run; noisier numbers)")
    parser.add_argument("--records", type=int, default=20_000, help="synthetic records (default 20,000)")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    args = parser.parse_args(argv)
    results = measure(quick=args.quick, records=args.records, seed=args.seed)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_sections([section(results)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
