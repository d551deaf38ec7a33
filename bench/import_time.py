"""Import time of the REST handler module against ``import boto3`` (``python -X importtime``).

Run alone with ``python -m bench.import_time [--quick]``. Every measurement is a fresh interpreter:
``python -X importtime`` importing either the handler module the way Lambda's bootstrap does (the
function's folder first on ``sys.path``, then ``importlib.import_module("app")``) or ``boto3``, with
the REST function's environment. The total is the cumulative import time Python reports for that
one top-level import (the handler's includes running its module body: building the FastAPI app).
Runs are interleaved (handler on Lambda, handler locally, boto3, ...) after one warm-up run of each,
and the median of each is reported.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.common import (
    REPO_ROOT,
    Row,
    Section,
    X,
    handler_environment,
    ms,
    parse_args,
    print_sections,
    ratio,
    schedule,
    times,
)

TARGET_RATIO = 1.3
FUNCTION_DIR = REPO_ROOT / "functions" / "rest_api"
START = "@@bench-import-start"

# The child: a marker, then one import, as Lambda's bootstrap imports a handler module. The builtin
# __import__ rather than importlib.import_module: only the former reports the top module's own line.
CHILD = f"""
import sys
target = sys.argv[1]
if target == "app":
    sys.path.insert(0, sys.argv[2])
sys.stderr.write("{START}\\n")
sys.stderr.flush()
__import__(target)
"""

_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( +)(\S+)\s*$")


@dataclass
class Imported:
    """One ``-X importtime`` run: the target's cumulative time and every module's self time (ms)."""

    total_ms: float
    self_ms: dict[str, float] = field(default_factory=dict)


def parse_importtime(stderr: str, target: str) -> Imported:
    """Read ``-X importtime`` output after the start marker, up to and including ``target``'s line."""
    _, marker, after = stderr.partition(START)
    if not marker:
        raise ValueError("the child did not reach the import (no start marker)")
    modules: dict[str, float] = {}
    for line in after.splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        self_us, cumulative_us, indent, name = match.groups()
        modules[name] = modules.get(name, 0.0) + int(self_us) / 1000
        if name == target and len(indent) == 1:  # the top-level line: the import we asked for
            return Imported(total_ms=int(cumulative_us) / 1000, self_ms=modules)
    raise ValueError(f"no top-level import time line for {target!r}")


@dataclass(frozen=True)
class Variant:
    name: str
    target: str
    env: dict[str, str]


def variants() -> list[Variant]:
    base = {
        **os.environ,
        **handler_environment(
            moto_url="http://127.0.0.1:1", redis_url="redis://127.0.0.1:1/0", deepseek_url="http://127.0.0.1:1"
        ),
    }
    # As on Lambda: Powertools Tracer is on (template.yaml: Tracing: Active) when the function runs there.
    on_lambda = {
        **{k: v for k, v in base.items() if k != "POWERTOOLS_TRACE_DISABLED"},
        "AWS_LAMBDA_FUNCTION_NAME": "RestApiFunction",
        "LAMBDA_TASK_ROOT": str(FUNCTION_DIR),
    }
    local = {k: v for k, v in base.items() if k not in ("AWS_LAMBDA_FUNCTION_NAME", "LAMBDA_TASK_ROOT")}
    return [
        Variant("handler (Lambda env, tracer on)", "app", on_lambda),
        Variant("handler (local env, tracer off)", "app", local),
        Variant("boto3", "boto3", local),
    ]


def measure_once(variant: Variant) -> Imported:
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", CHILD, variant.target, str(FUNCTION_DIR)],
        env=variant.env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if completed.returncode != 0:
        tail = "\n".join(completed.stderr.splitlines()[-15:])
        raise RuntimeError(f"importing {variant.target} failed ({variant.name}):\n{tail}")
    return parse_importtime(completed.stderr, variant.target)


def top_self(runs: Sequence[Imported], count: int = 10) -> list[tuple[str, float]]:
    """Modules by median self time across runs (a module missing from a run counts as 0 there)."""
    names = {name for run in runs for name in run.self_ms}
    medians = {name: statistics.median(run.self_ms.get(name, 0.0) for run in runs) for name in names}
    return sorted(medians.items(), key=lambda item: item[1], reverse=True)[:count]


def run(quick: bool = False) -> list[Section]:
    rounds = 3 if quick else 7
    chosen = variants()
    by_name = {variant.name: variant for variant in chosen}
    results: dict[str, list[Imported]] = {variant.name: [] for variant in chosen}
    for variant in chosen:  # warm-up: bytecode caches, the page cache
        measure_once(variant)
    for _, name in schedule(list(by_name), rounds):
        results[name].append(measure_once(by_name[name]))

    boto3 = statistics.median(run.total_ms for run in results["boto3"])
    rows = []
    for variant in chosen[:2]:
        total = statistics.median(run.total_ms for run in results[variant.name])
        value = ratio(total, boto3)
        rows.append(
            Row(
                f"import {variant.name}, median",
                ms(total),
                f"{ms(boto3)} (`import boto3`)",
                times(value),
                f"≤ {TARGET_RATIO:g}{X} (aim)",
                value <= TARGET_RATIO,
            )
        )
    notes = [
        f"{rounds} interleaved runs of each after one warm-up run; every run is a fresh `python -X importtime` "
        "process; the figure is the cumulative time Python reports for the one top-level import.",
        "The handler is imported as Lambda's bootstrap imports it: `functions/rest_api` first on `sys.path`, then "
        "`import app`, with the function's environment from template.yaml. The figure includes the module body "
        "(building the FastAPI app and the Mangum adapter); it excludes interpreter start-up and the Lambda "
        "runtime's own imports, and first-call work (clients are built on the first request).",
        "Lambda env: `AWS_LAMBDA_FUNCTION_NAME` and `LAMBDA_TASK_ROOT` set and `POWERTOOLS_TRACE_DISABLED` unset, so "
        "Powertools Tracer activates and patches botocore and httpx, as on AWS (template.yaml: `Tracing: Active`). "
        "Local env: `POWERTOOLS_TRACE_DISABLED=true`, as `make dev` runs it.",
    ]
    for variant in chosen[:2]:
        runs = results[variant.name]
        top = ", ".join(f"`{name}` {ms(value)}" for name, value in top_self(runs))
        has_boto3 = all("boto3" in run.self_ms for run in runs)
        has_botocore = all("botocore" in run.self_ms for run in runs)
        pulled = "boto3" if has_boto3 else ("botocore, not boto3" if has_botocore else "neither boto3 nor botocore")
        notes.append(f"Top 10 self time, {variant.name} (median per module): {top}. It imports {pulled}.")
    return [Section(title="Import time of the REST handler module", rows=rows, notes=notes)]


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args("Import time of the REST handler module against `import boto3`.", argv)
    print_sections(run(args.quick))


if __name__ == "__main__":
    main()
