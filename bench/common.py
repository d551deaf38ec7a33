"""Shared helpers for the benchmarks: statistics, interleaved timing, the machine, Markdown output.

The rules every benchmark here follows (project standards):

- Compare against a direct call measured on the same machine, in the same run: absolute times on a
  small shared machine are noisy, ratios much less so.
- Warm up first, then interleave the candidates round by round (A, B, A, B, ...), so that drift in
  the machine (frequency, neighbours, caches) hits every candidate alike.
- Report p50 and p99 and the ratio (or the added time) to the direct call. Never assert timings in
  tests: the unit tests cover the arithmetic here, not the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import math
import os
import platform
import random
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent

#: A case: given the round's index, prepare one call (outside the timing) and return it.
Prepare = Callable[[int], Callable[[], Any]]

# -- statistics -----------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), interpolating linearly between closest ranks.

    The same definition as ``numpy.percentile``'s default and ``statistics.quantiles(method="inclusive")``:
    p0 is the minimum, p100 the maximum, p50 of an even count the mean of the middle two.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100 or math.isnan(q):
        raise ValueError(f"percentile must be within 0..100, not {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    fraction = rank - low
    return ordered[low] + (ordered[high] - ordered[low]) * fraction


@dataclass(frozen=True)
class Summary:
    """Milliseconds (or whatever unit the samples were in)."""

    n: int
    p50: float
    p99: float
    mean: float
    minimum: float
    maximum: float


def summarize(values: Sequence[float]) -> Summary:
    if not values:
        raise ValueError("summary of no values")
    return Summary(
        n=len(values),
        p50=percentile(values, 50),
        p99=percentile(values, 99),
        mean=math.fsum(values) / len(values),
        minimum=min(values),
        maximum=max(values),
    )


def ratio(value: float, baseline: float) -> float:
    """``value / baseline``; infinite when the baseline is zero (never a ZeroDivisionError)."""
    if baseline == 0:
        return math.inf if value else 1.0
    return value / baseline


# -- interleaved timing ---------------------------------------------------------------------------


def schedule(names: Sequence[str], rounds: int) -> list[tuple[int, str]]:
    """The order of calls: round by round, every case once per round, in the given order.

    ``schedule(["A", "B"], 2) == [(0, "A"), (0, "B"), (1, "A"), (1, "B")]``.
    """
    if rounds < 0:
        raise ValueError("rounds must be >= 0")
    if len(set(names)) != len(names):
        raise ValueError("case names must be unique")
    return [(index, name) for index in range(rounds) for name in names]


def interleave(
    cases: Mapping[str, Prepare],
    *,
    rounds: int,
    warmup: int,
    check: Callable[[str, Any], None] | None = None,
    clock: Callable[[], int] = time.perf_counter_ns,
    collect: bool = True,
) -> dict[str, list[float]]:
    """Time every case ``rounds`` times, interleaved, after ``warmup`` untimed interleaved rounds.

    Each call is prepared by ``cases[name](index)`` outside the timing (``index`` counts warm-up
    rounds too, so every call can be unique), then timed alone with ``clock`` (nanoseconds). ``check``
    sees each result after its timing stopped. Returns milliseconds per case, in call order. The
    garbage collector stays on (its pauses are part of a real p99); ``collect`` runs it once between
    the warm-up and the timed rounds so that the warm-up's garbage is not billed to round one.
    """
    names = list(cases)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for index, name in schedule(names, warmup + rounds):
        call = cases[name](index)
        if index == warmup and name == names[0] and collect:
            gc.collect()
        started = clock()
        result = call()
        elapsed = clock() - started
        if check is not None:
            check(name, result)
        if index >= warmup:
            samples[name].append(elapsed / 1e6)
    return samples


# -- open-loop timing ----------------------------------------------------------------------------


def poisson_arrivals(rate: float, count: int, *, seed: int) -> list[float]:
    """Start times (seconds from 0) of ``count`` arrivals at ``rate`` a second, as independent users
    send them: exponential gaps, from a seeded generator so every run replays the same schedule."""
    if rate <= 0 or count < 0:
        raise ValueError("need a rate > 0 and a count >= 0")
    rng = random.Random(seed)
    offsets, now = [], 0.0
    for _ in range(count):
        now += rng.expovariate(rate)
        offsets.append(now)
    return offsets


def open_loop(
    calls: Sequence[Callable[[], Any]],
    offsets: Sequence[float],
    *,
    pool: Executor,
    check: Callable[[Any], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], None] = time.sleep,
) -> list[float]:
    """Start each call at its offset (seconds from now) on ``pool``, whether or not earlier calls have
    finished, and return each call's milliseconds from its scheduled start to its end.

    An open loop, as real traffic is: a slow answer does not hold the next arrival back, so queueing
    shows in the figures (a closed loop at concurrency 1 hides it), and timing from the schedule rather
    than from the actual start bills a late start to the system too. ``check`` sees each result.
    """
    if len(calls) != len(offsets):
        raise ValueError("one offset per call")

    def timed(call: Callable[[], Any]) -> tuple[Any, float]:
        result = call()
        return result, clock()

    started = clock()
    pending = []
    for call, offset in zip(calls, offsets, strict=True):
        due = started + offset
        wait = due - clock()
        if wait > 0:
            sleep(wait)
        pending.append((due, pool.submit(timed, call)))
    latencies = []
    for due, future in pending:
        result, ended = future.result()
        if check is not None:
            check(result)
        latencies.append((ended - due) * 1000)
    return latencies


# -- the machine ----------------------------------------------------------------------------------


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name from /proc/cpuinfo (or ``platform.processor()`` where there is none)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo = ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "cpu model") and value.strip():
            return value.strip()
    return platform.processor() or platform.machine() or "unknown"


def machine() -> dict[str, str]:
    logical = os.cpu_count() or 0
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = logical
    cores = f"{usable}" if usable == logical else f"{usable} usable of {logical}"
    return {
        "CPU": cpu_model(),
        "Cores": cores,
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "OS": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "Load average at start": load_average(),
    }


def load_average() -> str:
    """Other work on the machine skews every figure: the 1/5/15-minute load average says how much."""
    try:
        return " / ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def today() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


# -- results and Markdown -------------------------------------------------------------------------

X = "\N{MULTIPLICATION SIGN}"  # spelled out: ruff flags the bare character as ambiguous
HEADERS = ("measure", "seekless", "direct (baseline)", "ratio / added", "target", "met?")


@dataclass(frozen=True)
class Row:
    measure: str
    seekless: str
    direct: str
    relation: str
    target: str = "-"
    met: bool | None = None  # None: nothing to meet (informational)

    def cells(self) -> list[str]:
        verdict = {True: "yes", False: "**no**", None: "-"}[self.met]
        return [self.measure, self.seekless, self.direct, self.relation, self.target, verdict]


@dataclass
class Section:
    """One table of BENCHMARKS.md, with the honest notes under it."""

    title: str
    rows: list[Row]
    notes: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)  # printed by the script alone, not written to the file


def ms(value: float) -> str:
    if value >= 100:
        return f"{value:.0f} ms"
    if value >= 10:
        return f"{value:.1f} ms"
    return f"{value:.2f} ms"


def times(value: float) -> str:
    if math.isinf(value):
        return "inf"
    return f"{value:.1f}{X}" if value >= 10 else f"{value:.2f}{X}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"

    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"row has {len(row)} cells, the table {len(headers)}: {row!r}")
    return "\n".join([line(headers), line(["---"] * len(headers)), *(line(row) for row in rows)])


def render_section(section: Section, *, level: int = 2) -> str:
    parts = [
        "#" * level + " " + section.title,
        "",
        markdown_table(HEADERS, [row.cells() for row in section.rows]),
    ]
    if section.notes:
        parts += ["", *(f"- {note}" for note in section.notes)]
    return "\n".join(parts)


def print_sections(sections: Sequence[Section], *, extra: bool = True) -> None:
    for section in sections:
        print(render_section(section))
        if extra and section.extra:
            print()
            print("\n".join(section.extra))
        print()


# -- running a script -----------------------------------------------------------------------------


def parse_args(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run; noisier numbers)")
    return parser.parse_args(argv)


@contextlib.contextmanager
def environment(values: Mapping[str, str | None]) -> Iterator[None]:
    """Set (or, for None, unset) environment variables for a ``with`` block, then restore them."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


#: The fake AWS credentials every local run uses (moto accepts anything).
LOCAL_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}
TABLE_NAMES = {"SessionsTable": "seekless-sessions", "ApiKeysTable": "seekless-keys", "UsageTable": "seekless-usage"}


def handler_environment(*, moto_url: str, redis_url: str, deepseek_url: str) -> dict[str, str]:
    """The REST function's environment for a local run: template.yaml's, with local endpoints.

    The same for the latency benchmark (live endpoints) and the import-time benchmark (nothing is
    contacted at import, so any URL will do).
    """
    from seekless_local import template as cfn

    template = cfn.load_template()
    spec = cfn.function_specs(template)["RestApiFunction"]
    env = cfn.resolve_environment(spec, TABLE_NAMES, template)
    env.pop("SEEKLESS_DEEPSEEK_SECRET_NAME", None)  # locally the key comes from the environment
    env.update(LOCAL_AWS)
    env.update(
        {
            "AWS_ENDPOINT_URL": moto_url,
            "SEEKLESS_ENVIRONMENT": "local",
            "SEEKLESS_SESSIONS_TABLE": TABLE_NAMES["SessionsTable"],
            "SEEKLESS_KEYS_TABLE": TABLE_NAMES["ApiKeysTable"],
            "REDIS_URL": redis_url,
            "SEEKLESS_REDIS_CLUSTER": "false",
            "DEEPSEEK_BASE_URL": deepseek_url,
            "DEEPSEEK_API_KEY": "sk-emulator-bench",
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_METRICS_DISABLED": "true",
            "POWERTOOLS_LOG_LEVEL": "WARNING",
        }
    )
    return env


def parse_vm_hwm(status: str) -> int | None:
    """The ``VmHWM`` line of /proc/PID/status (the peak resident set of this process image) in KiB.

    Not ``getrusage(RUSAGE_SELF).ru_maxrss``: Linux folds the peak of the image an exec replaced into
    it, so a child started by ``subprocess`` (vfork, then exec) reports its parent's peak when that is
    the larger. None when the line is missing (not Linux).
    """
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name == "VmHWM":
            number, _, unit = value.strip().partition(" ")
            if unit.strip() != "kB":
                raise ValueError(f"VmHWM in an unknown unit: {line!r}")
            return int(number)
    return None


def peak_rss_mib() -> float:
    """This process's peak resident set in MiB (VmHWM; ``ru_maxrss`` where /proc is missing)."""
    try:
        kib = parse_vm_hwm(Path("/proc/self/status").read_text(encoding="ascii", errors="replace"))
    except OSError:
        kib = None
    if kib is None:
        import resource

        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kib / 1024


def python_command(module: str, *args: str) -> str:
    return " ".join([".venv/bin/python", "-m", module, *args])


def flush() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
