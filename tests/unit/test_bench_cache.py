"""The Zipf cache benchmark's workload and baselines: trace generation and the exact-LRU simulation."""

from __future__ import annotations

from collections import Counter

import pytest

from bench.cache_zipf import hit_ratio, lru_hits, repeat_hits, zipf_trace


def test_zipf_trace_is_reproducible_from_its_seed() -> None:
    assert zipf_trace(100, 500, exponent=1.0, seed=7) == zipf_trace(100, 500, exponent=1.0, seed=7)
    assert zipf_trace(100, 500, exponent=1.0, seed=7) != zipf_trace(100, 500, exponent=1.0, seed=8)


def test_zipf_trace_draws_only_the_given_items() -> None:
    trace = zipf_trace(50, 2_000, exponent=1.0, seed=1)
    assert len(trace) == 2_000
    assert set(trace) <= set(range(50))


def test_zipf_trace_makes_rank_one_the_most_popular_in_proportion() -> None:
    counts = Counter(zipf_trace(1_000, 200_000, exponent=1.0, seed=3))
    # s = 1: rank 1 twice as likely as rank 2, ten times rank 10.
    assert counts[0] / counts[1] == pytest.approx(2.0, rel=0.05)
    assert counts[0] / counts[9] == pytest.approx(10.0, rel=0.1)
    assert counts.most_common(1)[0][0] == 0


def test_zipf_trace_of_exponent_zero_is_uniform() -> None:
    counts = Counter(zipf_trace(4, 40_000, exponent=0.0, seed=5))
    assert all(c / 10_000 == pytest.approx(1.0, rel=0.05) for c in counts.values())


def test_zipf_trace_rejects_an_empty_catalogue() -> None:
    with pytest.raises(ValueError):
        zipf_trace(0, 10, exponent=1.0, seed=1)


def test_lru_evicts_the_least_recently_used() -> None:
    # capacity 2: a, b cached; a touched; c evicts b (not a); b misses again.
    assert lru_hits(["a", "b", "a", "c", "a", "b"], 2) == [False, False, True, False, True, False]


def test_lru_of_capacity_one_hits_only_immediate_repeats() -> None:
    assert lru_hits([1, 1, 2, 1, 1], 1) == [False, True, False, False, True]


def test_lru_of_no_capacity_never_hits() -> None:
    assert lru_hits([1, 1, 1], 0) == [False, False, False]


def test_lru_large_enough_for_every_item_is_the_infinite_cache() -> None:
    trace = zipf_trace(30, 1_000, exponent=1.0, seed=2)
    assert lru_hits(trace, 30) == repeat_hits(trace)


def test_a_bounded_lru_never_beats_the_infinite_cache() -> None:
    trace = zipf_trace(1_000, 5_000, exponent=1.0, seed=4)
    assert hit_ratio(lru_hits(trace, 100)) < hit_ratio(repeat_hits(trace))


def test_repeat_hits_marks_every_request_seen_before() -> None:
    assert repeat_hits(["x", "y", "x", "x", "z"]) == [False, False, True, True, False]


def test_hit_ratio_counts_from_the_end_of_the_warm_up() -> None:
    hits = [False, False, True, True, False, True]
    assert hit_ratio(hits) == 0.5
    assert hit_ratio(hits, 2) == 0.75
    with pytest.raises(ValueError):
        hit_ratio(hits, 6)
