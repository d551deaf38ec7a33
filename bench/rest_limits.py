"""What a key's limits cost a REST cache miss: per-minute limits in Redis, daily/monthly budgets in DynamoDB.

Run alone with ``python -m bench.rest_limits [--quick]``. The same in-process REST path as
``bench.rest_latency`` (its ``rest_stack``: the handler called with an API Gateway event, the emulator
in a child process with no delay, a redis-server, moto), with three API keys seeded: one unlimited, one
with requests and tokens per minute, one with daily and monthly token budgets. Cache misses under each
key are interleaved round by round after a warm-up; the unlimited key is the baseline.
"""

from __future__ import annotations

import collections
import contextlib
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from bench.common import Row, Section, interleave, ms, parse_args, print_sections, ratio, summarize, times
from bench.rest_latency import API_KEY, Cases, commands_per_call, make_event, rest_stack

# Limits far above what the run spends: every request is admitted and pays the full check and settle.
PER_MINUTE_KEY = "sk-seekless-bench-rpm-" + "1" * 28
BUDGET_KEY = "sk-seekless-bench-budget-" + "2" * 25


@dataclass(frozen=True)
class Plan:
    rounds: int
    warmup: int


FULL = Plan(rounds=300, warmup=30)
QUICK = Plan(rounds=60, warmup=10)


@contextlib.contextmanager
def dynamodb_calls() -> Iterator[collections.Counter[str]]:
    """Count DynamoDB API calls by operation, of every boto3 client built while the block runs."""
    import boto3

    counts: collections.Counter[str] = collections.Counter()

    def count(model: Any, **_: Any) -> None:
        counts[model.name] += 1

    # Registered on the default session, whose events every client built from it later copies.
    session = boto3._get_default_session()
    session.events.register("before-call.dynamodb", count)
    try:
        yield counts
    finally:
        session.events.unregister("before-call.dynamodb", count)


def per_call(counts: collections.Counter[str], prepare: Callable[[int], Callable[[], Any]], calls: int = 20) -> str:
    before = dict(counts)
    for index in range(calls):
        prepare(30_000_000 + index)()
    delta = {name: (counts[name] - before.get(name, 0)) / calls for name in counts}
    parts = [f"{name} {count:g}" for name, count in sorted(delta.items()) if count]
    return f"{sum(delta.values()):g} ({', '.join(parts)})" if parts else "0"


def run(quick: bool = False) -> list[Section]:
    from seekless.models import KeyLimits

    plan = QUICK if quick else FULL
    keys = {
        PER_MINUTE_KEY: KeyLimits(rpm=10**9, tpm=10**12),
        BUDGET_KEY: KeyLimits(daily_tokens=10**12, monthly_tokens=10**13),
    }
    # Powertools' EMF output goes to stdout: kept out of the tables, as in bench.rest_latency.
    with (
        open(os.devnull, "w") as sink,
        contextlib.redirect_stdout(sink),
        warnings.catch_warnings(),
        rest_stack(keys=keys) as stack,
        dynamodb_calls() as dynamodb,
    ):
        warnings.filterwarnings("ignore", message="No application metrics to publish")
        cases = Cases(stack, client=None)
        stack.emulator.configure(ttft_ms=0, tps=0)
        prepares = {
            "unlimited": cases.miss,
            "per-minute": cases.miss_as(PER_MINUTE_KEY),
            "budgets": cases.miss_as(BUDGET_KEY),
        }
        # Prime each key: its lookup in DynamoDB, then cached per execution environment, as on Lambda.
        for api_key in (API_KEY, *keys):
            cases.check("miss", cases.invoke(make_event(cases.unique("prime", 0), api_key=api_key))())
        samples = interleave(
            prepares, rounds=plan.rounds, warmup=plan.warmup, check=lambda name, result: cases.check("miss", result)
        )
        redis = {name: commands_per_call(stack, prepares[name]) for name in prepares}
        calls = {name: per_call(dynamodb, prepares[name]) for name in prepares}
    return [limits_section(samples, plan, redis, calls)]


def limits_section(
    samples: dict[str, list[float]], plan: Plan, redis: dict[str, str], calls: dict[str, str]
) -> Section:
    base = summarize(samples["unlimited"])
    labels = {
        "per-minute": "key with rpm/tpm (Redis admit + settle)",
        "budgets": "key with daily/monthly budgets (DynamoDB via moto)",
    }
    rows = []
    for name, label in labels.items():
        value = summarize(samples[name])
        for q in ("p50", "p99"):
            mine, theirs = getattr(value, q), getattr(base, q)
            rows.append(
                Row(
                    f"cache miss, {label}, {q}",
                    ms(mine),
                    f"{ms(theirs)} (unlimited key)",
                    f"{'+' if mine >= theirs else ''}{ms(mine - theirs)} ({times(ratio(mine, theirs))})",
                )
            )
    notes = [
        f"{plan.rounds} interleaved rounds (unlimited, per-minute, budgets) after {plan.warmup} warm-up rounds, "
        "concurrency 1, each a cache miss (a message never sent before) through the REST handler in process, "
        "as in the first REST table (same stack, the emulator with no delay). The keys' limits are far above "
        "what the run spends, so every request is admitted and settled; the key lookup itself is cached per "
        "execution environment (primed before the run), so only the limits differ.",
        "per-minute: `rpm` and `tpm` set. Admission is one Lua script in Redis that checks and reserves both "
        "counters; the settle gives back the reservation's unused tokens (a pipeline of INCRBY and EXPIRE). "
        f"Redis commands per call: unlimited {redis['unlimited']}; per-minute {redis['per-minute']}.",
        "budgets: `daily_tokens` and `monthly_tokens` set. Admission is one DynamoDB TransactWriteItems over both "
        "periods' items (each conditioned on enough left), the settle one UpdateItem per period, each on a worker "
        f"thread. DynamoDB calls per call: unlimited {calls['unlimited']}, the tenant's usage counters, which every "
        f"request writes; budgets {calls['budgets']}. They go to moto (a local server that applies one call at a "
        "time, sharing this machine's cores), so the budgets' figure is moto-bound, as measured here: on AWS each "
        "call is a network round trip of a few milliseconds instead.",
        "No target: the issue asks for the cost, to be weighed against what the limits protect.",
    ]
    return Section(title="REST path: what a key's limits add to a cache miss", rows=rows, notes=notes)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args("What per-key limits add to a REST cache miss.", argv)
    print_sections(run(args.quick))


if __name__ == "__main__":
    main()
