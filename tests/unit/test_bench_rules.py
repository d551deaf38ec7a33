"""bench/rules_eval.py's arithmetic and its records, not the machine: the synthetic payments are the same for a
seed and all fit the example ruleset, and the table reports rates against the engine's as times per record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bench.common import X
from bench.rules_eval import RULESET, section, synthetic_records
from seekless.rules import RulesetSpec, compile_ruleset


def test_synthetic_payments_are_the_same_for_a_seed_and_fit_the_example_ruleset() -> None:
    records = synthetic_records(300, seed=8)
    assert records == synthetic_records(300, seed=8) != synthetic_records(300, seed=9)
    compiled = compile_ruleset(RulesetSpec.model_validate(yaml.safe_load(Path(RULESET).read_text())))
    for record in records:
        compiled.check(record)


def results(**changes: Any) -> dict[str, Any]:
    base = {
        "ruleset": "card_risk (13 rules)",
        "records": 20_000,
        "seed": 8,
        "needs_model_share": 0.616,
        "rules_decided_share": 0.384,
        "records_with_rule_errors": 0,
        "decided_by": {"rule:low_risk_regular": 5233, "rule:sanctioned_country": 180},
        "engine_only_per_second_p50": 20_000,
        "rules_only_pure_per_second_p50": 10_000,
        "service_memory_per_second_p50": 8_000,
        "service_moto_per_second_p50": 250,
        "chunk": 1000,
        "moto_chunk": 100,
        "rounds": 20,
    }
    return {**base, **changes}


def test_the_table_gives_each_rate_as_time_per_record_against_the_engines() -> None:
    rows = {row.measure: row for row in section(results()).rows}
    memory = rows["rules-only decisions, `DecisionService.decide`, in-memory stores"]
    assert memory.seekless == "8,000/s (125 µs each)"
    assert memory.direct == "20,000/s (50 µs each)"
    assert memory.relation == f"2.50{X} the time (+75 µs)"
    moto = rows["rules-only decisions, `DecisionService.decide`, DynamoDB adapters on moto"]
    assert moto.relation == f"80.0{X} the time (+3,950 µs)"
    (share,) = [row for row in rows.values() if row.measure.startswith("share of 20,000")]
    assert (share.seekless, share.relation) == ("61.6%", "decided by rules alone: 38.4%")
