"""``python -m bench`` (``make bench``): run every benchmark, print the tables, rewrite BENCHMARKS.md."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from bench import (
    batch_split,
    cache_zipf,
    import_time,
    load,
    rest_latency,
    rest_limits,
    rest_open_loop,
    rules_eval,
    worker_throughput,
    ws_latency,
)
from bench.common import REPO_ROOT, Section, machine, print_sections, render_section, today

HEADER = """# Benchmarks

What seekless costs on top of calling DeepSeek directly: the added latency of the REST path (a cache
miss, a bypass and a hit, through the API Gateway event, Mangum and the FastAPI app, in process), its
overhead at 10 requests/s in an open loop against a 60 ms upstream, and what a key's per-minute limits
(Redis) and daily/monthly budgets (DynamoDB, through moto) add to a cache miss; the response cache's
exact-cache hit ratio on a Zipf workload (10,000 prompts, 1,000 answers held) against an exact LRU of
the same size; the added time to first token and the frames per streamed response of the WebSocket
path (through the local stack); the import time of every handler module against `import boto3`; the
job worker's throughput at 2 s per job against the emulator (through moto); and the split of a
50,000-line batch file into jobs (its enqueue rate against the raw DynamoDB and SQS calls, and its peak
memory against a 5,000-line file's, through moto); hybrid decisions decided by rules alone, per second
through the decisions service (in-memory stores and moto) against the bare CEL engine, and the share of
a synthetic record set that needs the model; and an open-loop load of mixed requests on the
local stack (the rate this machine sustains, p50 / p99 per kind and errors, against the same mix sent
straight to the emulator). Every figure is compared with a direct baseline
measured on the same machine in the same run (absolute times on a small shared machine are noisy;
ratios are not): timings in interleaved rounds (or alternating blocks) after a warm-up, reported as
p50 / p99 and the ratio or the added time; the hit ratio against an exact LRU run on the same trace.

Reproduce with `make bench` (that is `.venv/bin/python -m bench`, which rewrites this file). Each script
also runs alone and prints its tables: `python -m bench.rest_latency` (`--profile N` adds a cProfile
of N cache misses), `python -m bench.rest_open_loop`, `python -m bench.rest_limits`,
`python -m bench.cache_zipf`, `python -m bench.ws_latency` (`--hops N` adds a per-hop timeline of N
chat requests), `python -m bench.import_time`, `python -m bench.worker_throughput` and
`python -m bench.batch_split` (`--profile N` adds a cProfile of a small ingest), `python -m bench.rules_eval`
(`--records`, `--seed`, `--json`) and `python -m bench.load`
(`make load`; `--rates`, `--mix`, `--profile-stack FILE`); `--quick` runs fewer iterations (and smaller
files, a shorter trace and ramp).

This file is generated: edit `bench/`, not this file."""


def document(sections: Sequence[Section], *, machine: dict[str, str], command: str, seconds: float) -> str:
    facts = {**machine, "Date": today(), "Command": f"`{command}` ({seconds:.0f} s)"}
    lines = [HEADER, "", "## Machine", "", *(f"- {name}: {value}" for name, value in facts.items())]
    for section in sections:
        lines += ["", render_section(section)]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run; noisier numbers)")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="also cProfile N cache misses")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "BENCHMARKS.md", help="where to write")
    parser.add_argument("--no-write", action="store_true", help="print the tables only")
    args = parser.parse_args(argv)

    facts = machine()  # the load average before this run adds its own
    started = time.monotonic()
    sections = [
        *rest_latency.run(args.quick, profile=args.profile),
        *rest_open_loop.run(args.quick),
        *rest_limits.run(args.quick),
        *cache_zipf.run(args.quick),
        *ws_latency.run(args.quick),
        *import_time.run(args.quick),
        *worker_throughput.run(args.quick),
        *batch_split.run(args.quick),
        *rules_eval.run(args.quick),
        *load.run(args.quick),
    ]
    seconds = time.monotonic() - started
    print_sections(sections)
    if args.no_write:
        return
    command = " ".join(
        [
            ".venv/bin/python -m bench",
            *(["--quick"] if args.quick else []),
            *(["--profile", str(args.profile)] if args.profile else []),
        ]
    )
    args.output.write_text(document(sections, machine=facts, command=command, seconds=seconds), encoding="utf-8")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
