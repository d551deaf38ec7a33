"""The load benchmark's pure parts: the open-loop schedule, the mix, the Zipf picker, the knee, /proc parsing.

No timing is asserted: the one test that runs the dispatcher checks that arrivals never wait for earlier
answers (open loop), not how fast anything is.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter
from typing import Any

import httpx
import pytest

from bench.load import (
    DEFAULT_MIX,
    KINDS,
    Arrival,
    Failed,
    Phase,
    Plan,
    Run,
    Step,
    Upstream,
    Zipf,
    arrival_times,
    classify,
    cpu_ticks,
    http_error,
    judge,
    knee,
    load_section,
    parse_mix,
    run_phase,
    schedule,
)


def test_fixed_rate_arrivals_are_evenly_spaced_within_the_phase() -> None:
    assert arrival_times(4, 1, random.Random(1), poisson=False) == [0, 0.25, 0.5, 0.75]
    assert arrival_times(3, 2, random.Random(1), poisson=False) == pytest.approx([i / 3 for i in range(6)])


def test_poisson_arrivals_are_ordered_inside_the_phase_and_near_the_rate() -> None:
    times = arrival_times(50, 100, random.Random(7))
    assert times == sorted(times)
    assert times[0] > 0 and times[-1] < 100
    assert 4500 < len(times) < 5500  # 5000 expected; sd about 71
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert sum(gaps) / len(gaps) == pytest.approx(1 / 50, rel=0.05)


def test_arrivals_are_reproducible_from_the_seed() -> None:
    assert arrival_times(5, 10, random.Random(3)) == arrival_times(5, 10, random.Random(3))
    with pytest.raises(ValueError):
        arrival_times(0, 10, random.Random(3))


def test_parse_mix_reads_kind_weights() -> None:
    assert parse_mix("miss=3, hit=1") == {"miss": 3, "hit": 1}
    assert parse_mix("ws=0.5,session=0,stream=2") == {"ws": 0.5, "session": 0, "stream": 2}
    for bad in ("miss", "nope=1", "miss=-1", "miss=0", "hit=inf"):
        with pytest.raises(ValueError):
            parse_mix(bad)


def test_schedule_draws_kinds_by_weight_and_never_a_weightless_one() -> None:
    arrivals = schedule(100, 50, {"miss": 3, "ws": 1, "session": 0}, random.Random(11))
    kinds = Counter(arrival.kind for arrival in arrivals)
    assert set(kinds) == {"miss", "ws"}
    assert kinds["miss"] / len(arrivals) == pytest.approx(0.75, abs=0.03)
    assert [arrival.serial for arrival in arrivals] == list(range(len(arrivals)))
    assert set(DEFAULT_MIX) == set(KINDS)


def test_zipf_favours_the_first_ranks() -> None:
    zipf = Zipf(64, 1.1, random.Random(5))
    picks = Counter(zipf.pick() for _ in range(20_000))
    assert set(picks) <= set(range(64))
    assert picks[0] > picks[1] > picks[7] > picks[63]
    assert picks[0] / 20_000 == pytest.approx(zipf.weights[0] / sum(zipf.weights), abs=0.02)
    with pytest.raises(ValueError):
        Zipf(0, 1.0, random.Random(5))


def phase(target: str, samples: dict[str, list[float]], errors: dict[str, int] | None = None) -> Phase:
    found = Phase(target=target, rate=4, seconds=10, arrivals=40)
    found.samples = {name: list(values) for name, values in samples.items()}
    found.errors = Counter(errors or {})
    found.done = [float(index) for index in range(40 - sum(found.errors.values()))]
    return found


def step(rate: float, added_ms: float, *, errors: dict[str, int] | None = None) -> Step:
    direct = phase("direct", {"miss": [600.0] * 10, "ws.first": [200.0] * 10})
    seekless = phase(
        "seekless",
        {"miss": [600.0 + added_ms] * 10, "ws.first": [200.0] * 10, "stream.first": [5000.0]},
        errors,
    )
    return Step(rate, direct, seekless)


def test_judge_bounds_each_p99_against_the_direct_calls() -> None:
    assert judge(step(4, 100), bound_ms=250) == []
    assert judge(step(4, 300), bound_ms=250) == ["miss p99 +300 ms"]
    assert judge(step(4, 0, errors={"ws: HTTP 502": 2}), bound_ms=250) == ["2 errors"]
    # The REST SSE first chunk is left out (Mangum buffers a Lambda's response by design).
    assert not any("stream.first" in reason for reason in judge(step(4, 0)))


def test_judge_holds_a_measure_with_no_direct_call_to_the_bound_itself() -> None:
    slow_create = step(4, 0)
    slow_create.seekless.samples["session.create"] = [300.0]
    assert judge(slow_create, bound_ms=250) == ["session.create p99 +300 ms"]


def test_knee_is_the_last_step_before_the_first_one_past_the_bound() -> None:
    steps = [step(8, 400), step(2, 10), step(4, 50), step(6, 100), step(10, 20)]
    found = knee(steps, bound_ms=250)
    assert found is not None and found.rate == 6  # 10 passes again, after 8 failed: luck, not capacity
    assert knee([step(2, 300)], bound_ms=250) is None
    assert knee([], bound_ms=250) is None


def test_cpu_ticks_reads_utime_and_stime_past_a_command_with_spaces() -> None:
    fields = ["S", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "250", "50", "0", "0"]
    assert cpu_ticks("1234 (python -m x) " + " ".join(fields)) == 300


def test_errors_are_classified_by_what_a_client_sees() -> None:
    assert str(http_error(429, b'{"error": {"code": "rate_limit_requests"}}')) == "HTTP 429 rate_limit_requests"
    assert str(http_error(502, b"Internal server error")) == "HTTP 502"
    assert classify(Failed("WebSocket error frame upstream_error")) == "WebSocket error frame upstream_error"
    assert classify(TimeoutError()) == "timeout"
    assert classify(httpx.ConnectError("refused")) == "connect refused"
    assert classify(httpx.RemoteProtocolError("peer closed")) == "dropped connection"
    assert classify(ValueError("?")) == "ValueError"


class HeldDriver:
    """The first arrival's answer waits until every later one has been sent: a closed loop would hang."""

    def __init__(self, arrivals: int) -> None:
        self.sent = 0
        self.everyone_sent = asyncio.Event()
        self.arrivals = arrivals

    async def send(self, target: str, kind: str, phase: Phase) -> dict[str, float]:
        self.sent += 1
        if self.sent == self.arrivals:
            self.everyone_sent.set()
        await self.everyone_sent.wait()
        return {kind: asyncio.get_running_loop().time()}


def test_arrivals_go_out_on_schedule_whatever_earlier_answers_are_doing() -> None:
    arrivals = [Arrival(index * 0.001, "miss", index) for index in range(5)]
    driver: Any = HeldDriver(len(arrivals))

    async def run() -> Phase:
        return await asyncio.wait_for(run_phase(driver, "seekless", arrivals, 5, 1), 10)

    done = asyncio.run(run())
    assert (done.arrivals, len(done.done), len(done.samples["miss"])) == (5, 5, 5)
    assert done.due == [arrival.at for arrival in arrivals]
    assert all(sample >= 0 for sample in done.samples["miss"])  # from the scheduled send, never before it


def test_the_section_names_the_knee_and_every_step() -> None:
    steps = [step(2, 10), step(4, 400)]
    run = Run(
        steps=steps,
        upstream=Upstream(),
        mix=dict(DEFAULT_MIX),
        plan=Plan(rates=(2, 4), seconds=10, warmup=4),
        poisson=True,
        environments=16,
        redis="redis-server",
        warmup_errors=Counter(),
        seconds=60,
        load_before="0.1 / 0.1 / 0.1",
        stopped_early=False,
        costs={"miss": {"stack": 20.0, "moto": 10.0}, "ws": {"stack": 80.0, "moto": 12.0}},
    )
    section = load_section(run)
    rows = {row.measure: row for row in section.rows}
    assert section.title == "Load: open-loop mix"
    assert rows["sustained rate (the knee)"].seekless.startswith("2 req/s")
    assert rows["sustained rate (the knee)"].met is True
    assert [row.met for name, row in rows.items() if name.startswith("step ")] == [True, False]
    mixed = rows["CPU per request, the mix (weighted)"]
    assert mixed.seekless.startswith("stack process 44.0 ms")  # (3 * 20 + 2 * 80) / 5 by the default mix
