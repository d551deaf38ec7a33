"""The benchmarks' arithmetic: percentiles, summaries, ratios, the interleaved schedule, parsing.

No timing is asserted anywhere: ``interleave`` runs on a fake clock.
"""

from __future__ import annotations

import itertools
import math
import statistics
from concurrent.futures import Executor, Future

import pytest

from bench.common import (
    Row,
    cpu_model,
    interleave,
    markdown_table,
    open_loop,
    parse_vm_hwm,
    percentile,
    poisson_arrivals,
    ratio,
    schedule,
    summarize,
)
from bench.import_time import START, parse_importtime, top_self


def test_percentile_matches_the_inclusive_definition() -> None:
    values = [7.0, 1.0, 3.0, 5.0, 9.0, 2.0, 8.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 9.0
    assert percentile(values, 50) == statistics.median(values)
    quartiles = statistics.quantiles(values, n=4, method="inclusive")
    assert percentile(values, 25) == pytest.approx(quartiles[0])
    assert percentile(values, 75) == pytest.approx(quartiles[2])


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([1.0, 2.0], 50) == 1.5
    assert percentile([0.0, 10.0], 99) == pytest.approx(9.9)
    assert percentile(list(range(101)), 99) == 99
    assert percentile([4.0], 99) == 4.0


def test_percentile_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)
    with pytest.raises(ValueError):
        percentile([1.0], -1)


def test_summarize() -> None:
    summary = summarize([3.0, 1.0, 2.0, 4.0])
    assert summary.n == 4
    assert summary.p50 == 2.5
    assert summary.mean == 2.5
    assert (summary.minimum, summary.maximum) == (1.0, 4.0)
    assert summary.p99 == pytest.approx(3.97)
    with pytest.raises(ValueError):
        summarize([])


def test_ratio_never_divides_by_zero() -> None:
    assert ratio(3.0, 1.5) == 2.0
    assert ratio(1.0, 0.0) == math.inf
    assert ratio(0.0, 0.0) == 1.0


def test_schedule_interleaves_round_by_round() -> None:
    assert schedule(["A", "B"], 2) == [(0, "A"), (0, "B"), (1, "A"), (1, "B")]
    assert schedule(["A", "B", "C"], 0) == []
    with pytest.raises(ValueError):
        schedule(["A", "A"], 1)
    with pytest.raises(ValueError):
        schedule(["A"], -1)


class FakeClock:
    """Each call advances by the next step (nanoseconds), so every call's duration is known."""

    def __init__(self) -> None:
        self.now = 0
        self.step = 0

    def __call__(self) -> int:
        self.now += self.step
        return self.now


def test_interleave_calls_in_order_and_drops_the_warmup() -> None:
    clock = FakeClock()
    calls: list[tuple[str, int]] = []
    durations = {"A": 1_000_000, "B": 3_000_000}  # 1 ms and 3 ms per call

    def case(name: str):  # type: ignore[no-untyped-def]
        def prepare(index: int):  # type: ignore[no-untyped-def]
            def call() -> str:
                calls.append((name, index))
                return f"{name}{index}"

            clock.step = durations[name] // 2  # two clock reads per call: start and stop
            return call

        return prepare

    checked: list[tuple[str, object]] = []
    samples = interleave(
        {"A": case("A"), "B": case("B")},
        rounds=3,
        warmup=2,
        clock=clock,
        check=lambda name, result: checked.append((name, result)),
    )
    assert calls == [(name, index) for index in range(5) for name in ("A", "B")]
    assert samples["A"] == [0.5, 0.5, 0.5]  # clock.step is per read: stop - start = one step
    assert samples["B"] == [1.5, 1.5, 1.5]
    assert len(checked) == 10  # warm-up results are checked too
    assert checked[0] == ("A", "A0")


def test_interleave_with_no_rounds() -> None:
    samples = interleave({"A": lambda index: lambda: None}, rounds=0, warmup=0)
    assert samples == {"A": []}


def test_poisson_arrivals_replay_from_their_seed_at_the_given_rate() -> None:
    offsets = poisson_arrivals(10.0, 20_000, seed=1)
    assert offsets == poisson_arrivals(10.0, 20_000, seed=1)
    assert offsets != poisson_arrivals(10.0, 20_000, seed=2)
    assert all(later > earlier for earlier, later in itertools.pairwise(offsets))
    assert offsets[0] > 0
    assert len(offsets) / offsets[-1] == pytest.approx(10.0, rel=0.03)  # arrivals per second
    assert poisson_arrivals(10.0, 0, seed=1) == []
    with pytest.raises(ValueError):
        poisson_arrivals(0.0, 5, seed=1)


class ImmediateExecutor(Executor):
    """Runs each call on submit, on this thread: no real time passes, so every latency is exact."""

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        future: Future[object] = Future()
        future.set_result(fn(*args, **kwargs))
        return future


class SecondsClock:
    """A clock that moves only when slept on or when a call takes its (fake) time."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_open_loop_times_each_call_from_its_scheduled_arrival() -> None:
    clock = SecondsClock()

    def taking(seconds: float, result: str):  # type: ignore[no-untyped-def]
        def call() -> str:
            clock.now += seconds
            return result

        return call

    checked: list[object] = []
    latencies = open_loop(
        [taking(0.1, "a"), taking(0.01, "b"), taking(0.02, "c")],
        [0.1, 0.15, 0.5],
        pool=ImmediateExecutor(),
        check=checked.append,
        clock=clock,
        sleep=clock.sleep,
    )
    # a: on time, 100 ms. b: due at 0.15 but started at 0.2 (behind a, on this one-thread pool), so
    # its 50 ms late start counts: 60 ms. c: on time again after a sleep, 20 ms.
    assert latencies == pytest.approx([100.0, 60.0, 20.0])
    assert clock.slept == pytest.approx([0.1, 0.29])
    assert checked == ["a", "b", "c"]
    with pytest.raises(ValueError):
        open_loop([taking(0.1, "a")], [0.1, 0.2], pool=ImmediateExecutor())


def test_cpu_model_reads_proc_cpuinfo() -> None:
    text = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n\nprocessor\t: 1\n"
    assert cpu_model(text) == "AMD EPYC 7B13"
    assert cpu_model("") != ""


def test_markdown_table() -> None:
    row = Row("miss, p50", "1 ms", "0.5 ms", "+0.5 ms", "≤ 2 ms", True)
    table = markdown_table(["a", "b", "c", "d", "e", "f"], [row.cells()])
    lines = table.splitlines()
    assert lines[0] == "| a | b | c | d | e | f |"
    assert lines[1] == "| --- | --- | --- | --- | --- | --- |"
    assert lines[2] == "| miss, p50 | 1 ms | 0.5 ms | +0.5 ms | ≤ 2 ms | yes |"
    assert Row("x", "1", "2", "3", "4", False).cells()[-1] == "**no**"
    assert Row("x", "1", "2", "3").cells()[-1] == "-"
    with pytest.raises(ValueError):
        markdown_table(["a", "b"], [["only one"]])


IMPORTTIME = f"""import time: self [us] | cumulative | imported package
import time:       100 |        100 | site
{START}
import time:       300 |        300 |     json.decoder
import time:       200 |        500 |   json
import time:      1000 |       1000 |   fastapi
import time:      2000 |       3500 | app
import time:       999 |        999 | later
"""


def test_parse_importtime_takes_the_target_line_after_the_marker() -> None:
    imported = parse_importtime(IMPORTTIME, "app")
    assert imported.total_ms == 3.5
    assert imported.self_ms == {"json.decoder": 0.3, "json": 0.2, "fastapi": 1.0, "app": 2.0}
    with pytest.raises(ValueError):
        parse_importtime(IMPORTTIME, "missing")
    with pytest.raises(ValueError):
        parse_importtime("import time:  1 |  1 | app\n", "app")  # no marker: the child never got there


def test_top_self_takes_medians_across_runs() -> None:
    runs = [parse_importtime(IMPORTTIME, "app"), parse_importtime(IMPORTTIME.replace("2000 |", "4000 |"), "app")]
    top = top_self(runs, count=2)
    assert top == [("app", 3.0), ("fastapi", 1.0)]


def test_parse_vm_hwm_reads_the_peak_resident_set_in_kib() -> None:
    status = "Name:\tpython\nVmPeak:\t  500000 kB\nVmHWM:\t   13616 kB\nVmRSS:\t   12000 kB\n"
    assert parse_vm_hwm(status) == 13616
    assert parse_vm_hwm("Name:\tpython\n") is None
    with pytest.raises(ValueError):
        parse_vm_hwm("VmHWM:\t 12 MB\n")
