"""Import time of the handler modules against ``import boto3`` (``python -X importtime``).

Run alone with ``python -m bench.import_time [--quick]``. Every measurement is a fresh interpreter:
``python -X importtime`` importing either a handler module the way Lambda's bootstrap does (the
function's folder first on ``sys.path``, then ``importlib.import_module("app")``) or ``boto3``, with
the function's environment. The total is the cumulative import time Python reports for that one
top-level import (the handler's includes running its module body: for REST, building the FastAPI
app). Handlers: the REST function (Lambda and local environment) and the WebSocket ``$connect`` and
``$disconnect`` functions, which run on every new and every closed connection, against their targets;
every other function in template.yaml for information. Runs are interleaved (REST on Lambda, REST
locally, $connect, $disconnect, the others, boto3, ...) after one warm-up run of each, and the median
of each is reported.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import (
    LOCAL_AWS,
    REPO_ROOT,
    TABLE_NAMES,
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
WS_TARGET_RATIO = 0.5  # issue 3, "Performance": $connect/$disconnect at most half of `import boto3`
FUNCTION_DIR = REPO_ROOT / "functions" / "rest_api"
REST_FUNCTION = "RestApiFunction"
#: The WebSocket handlers with a target: (logical id in template.yaml, route).
WS_FUNCTIONS = (("WsConnectFunction", "$connect"), ("WsDisconnectFunction", "$disconnect"))
CONNECTIONS_TABLE = "seekless-connections"
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
    function_dir: Path = FUNCTION_DIR


def _on_lambda(env: dict[str, str], function_name: str, function_dir: Path) -> dict[str, str]:
    """As on Lambda: Powertools Tracer is on (template.yaml: Tracing: Active) when the function runs there."""
    return {
        **{k: v for k, v in env.items() if k != "POWERTOOLS_TRACE_DISABLED"},
        "AWS_LAMBDA_FUNCTION_NAME": function_name,
        "LAMBDA_TASK_ROOT": str(function_dir),
    }


def lambda_variant(logical_id: str, label: str) -> Variant:
    """A handler with its template.yaml environment, as on Lambda."""
    from seekless_local import template as cfn

    template = cfn.load_template()
    spec = cfn.function_specs(template)[logical_id]
    # Nothing is contacted at import, so every resource the environment names may resolve to a placeholder.
    refs = {
        **{name: f"seekless-{name.lower()}" for name in template.get("Resources", {})},
        **TABLE_NAMES,
        "ConnectionsTable": CONNECTIONS_TABLE,
        "Cache.Endpoint.Address": "127.0.0.1",
        "Cache.Endpoint.Port": "1",
        "AWS::URLSuffix": "amazonaws.com",
    }
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("AWS_LAMBDA_FUNCTION_NAME", "LAMBDA_TASK_ROOT")},
        **cfn.resolve_environment(spec, refs, template),
        **LOCAL_AWS,
        "AWS_ENDPOINT_URL": "http://127.0.0.1:1",
        "SEEKLESS_ENVIRONMENT": "local",
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }
    function_dir = Path(spec.code_uri)
    return Variant(f"{label} handler (Lambda env)", "app", _on_lambda(env, logical_id, function_dir), function_dir)


def other_functions() -> list[tuple[str, str]]:
    """Every function in template.yaml without a target here, labelled by its folder (``generator``)."""
    from seekless_local import template as cfn

    measured = {REST_FUNCTION, *(logical_id for logical_id, _ in WS_FUNCTIONS)}
    specs = cfn.function_specs()
    return [(logical_id, f"`{spec.code_uri.name}`") for logical_id, spec in specs.items() if logical_id not in measured]


def variants() -> tuple[list[Variant], list[Variant], list[Variant], Variant]:
    """(REST on Lambda and locally, $connect and $disconnect, every other handler, ``import boto3``)."""
    base = {
        **os.environ,
        **handler_environment(
            moto_url="http://127.0.0.1:1", redis_url="redis://127.0.0.1:1/0", deepseek_url="http://127.0.0.1:1"
        ),
    }
    on_lambda = _on_lambda(base, REST_FUNCTION, FUNCTION_DIR)
    local = {k: v for k, v in base.items() if k not in ("AWS_LAMBDA_FUNCTION_NAME", "LAMBDA_TASK_ROOT")}
    rest = [
        Variant("handler (Lambda env, tracer on)", "app", on_lambda),
        Variant("handler (local env, tracer off)", "app", local),
    ]
    ws = [lambda_variant(logical_id, route) for logical_id, route in WS_FUNCTIONS]
    others = [lambda_variant(logical_id, label) for logical_id, label in other_functions()]
    return rest, ws, others, Variant("boto3", "boto3", local)


def measure_once(variant: Variant) -> Imported:
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", CHILD, variant.target, str(variant.function_dir)],
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
    rest, ws, others, baseline = variants()
    chosen = [*rest, *ws, *others, baseline]
    by_name = {variant.name: variant for variant in chosen}
    results: dict[str, list[Imported]] = {variant.name: [] for variant in chosen}
    for variant in chosen:  # warm-up: bytecode caches, the page cache
        measure_once(variant)
    for _, name in schedule(list(by_name), rounds):
        results[name].append(measure_once(by_name[name]))

    boto3 = statistics.median(run.total_ms for run in results[baseline.name])
    rows = [_row(variant, results, boto3, TARGET_RATIO, "(aim)") for variant in rest]
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
    notes += [_top_note(variant, results[variant.name]) for variant in rest]
    ws_rows = [_row(variant, results, boto3, WS_TARGET_RATIO, "") for variant in ws]
    ws_notes = [
        "Measured in the same interleaved runs as the REST handler (same method, same `import boto3` baseline): "
        "`functions/ws_connect` and `functions/ws_disconnect` first on `sys.path`, then `import app`, with each "
        "function's environment from template.yaml and the Lambda variables set (Tracer on, as on AWS). These run "
        "on every new and every closed connection, so their cold start is paid often.",
        "Excluded, as for REST: interpreter start-up, the Lambda runtime's imports and first-call work (the "
        "DynamoDB client is built on the first invocation, by `store_from_environment()`).",
    ]
    ws_notes += [_top_note(variant, results[variant.name]) for variant in ws]
    other_rows = [_row(variant, results, boto3, None, "") for variant in others]
    other_notes = [
        "Measured in the same interleaved runs (same method, same `import boto3` baseline), for information: the "
        "issue sets no target for these. Each is the function's folder first on `sys.path`, then `import app`, with "
        "its environment from template.yaml (the resources it names resolve to placeholders: nothing is contacted "
        "at import) and the Lambda variables set (Tracer on, as on AWS: `Tracing: Active` is in the template's "
        "Globals).",
        "Excluded, as above: interpreter start-up, the Lambda runtime's imports and first-call work (every client "
        "is built by `seekless.wiring` on the first invocation).",
    ]
    other_notes += [_top_note(variant, results[variant.name], count=5) for variant in others]
    return [
        Section(title="Import time of the REST handler module", rows=rows, notes=notes),
        Section(title="Import time of the WebSocket $connect and $disconnect handlers", rows=ws_rows, notes=ws_notes),
        Section(title="Import time of every other handler", rows=other_rows, notes=other_notes),
    ]


def _row(variant: Variant, results: dict[str, list[Imported]], boto3: float, target: float | None, aim: str) -> Row:
    total = statistics.median(run.total_ms for run in results[variant.name])
    value = ratio(total, boto3)
    return Row(
        f"import {variant.name}, median",
        ms(total),
        f"{ms(boto3)} (`import boto3`)",
        times(value),
        "-" if target is None else f"≤ {target:g}{X} {aim}".rstrip(),
        None if target is None else value <= target,
    )


#: Heavy imports the WebSocket handlers promise to avoid (``botocore.client``: the real botocore;
#: Powertools imports the bare ``botocore`` package for its user agent, which costs under a millisecond).
HEAVY = ("boto3", "botocore.client", "pydantic", "httpx", "redis", "aws_xray_sdk")


def _top_note(variant: Variant, runs: Sequence[Imported], count: int = 10) -> str:
    top = ", ".join(f"`{name}` {ms(value)}" for name, value in top_self(runs, count))
    heavy = [f"`{name}`" for name in HEAVY if all(name in run.self_ms for run in runs)]
    pulled = ", ".join(heavy) if heavy else "none of " + ", ".join(f"`{name}`" for name in HEAVY)
    return f"Top {count} self time, {variant.name} (median per module): {top}. It imports {pulled}."


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args("Import time of the handler modules against `import boto3`.", argv)
    print_sections(run(args.quick))


if __name__ == "__main__":
    main()
