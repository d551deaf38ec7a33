"""Coalescing: the first delta at once, no delta held past the interval, frames within 32 KB."""

from __future__ import annotations

import json

import pytest

from seekless.contracts import StreamDelta
from seekless.ws.coalescer import Coalescer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def simulate(deltas: int, spacing: float, coalescer: Coalescer, clock: Clock) -> list[list[dict]]:
    """Feed deltas ``spacing`` apart, flushing exactly when the generator's loop would; return the frames."""
    frames: list[list[dict]] = []
    for i in range(deltas):
        arrival = i * spacing
        due = coalescer.due_in()
        if due is not None and clock.now + due <= arrival:  # the timer fires before this delta arrives
            clock.now += due
            frames.append(coalescer.drain())
        clock.now = arrival
        if coalescer.add(StreamDelta(content=f"token{i} ")):
            frames.append(coalescer.drain())
    frames.append(coalescer.drain())  # the end of the stream flushes the rest
    return [f for f in frames if f]


def test_first_delta_goes_out_at_once() -> None:
    clock = Clock()
    coalescer = Coalescer(clock=clock)
    assert coalescer.add(StreamDelta(content="hi")) is True
    assert coalescer.drain() == [{"content": "hi"}]
    assert coalescer.add(StreamDelta(content="there")) is False
    assert coalescer.due_in() == pytest.approx(0.1)


def test_a_64_delta_stream_at_20ms_needs_few_frames() -> None:
    clock = Clock()
    frames = simulate(64, 0.02, Coalescer(interval=0.1, clock=clock), clock)
    # The budget is 15 post_to_connection calls including start and done.
    assert len(frames) + 2 <= 15
    text = "".join(p.get("content", "") for batch in frames for p in batch)
    assert text == "".join(f"token{i} " for i in range(64))


def test_no_delta_waits_longer_than_the_interval() -> None:
    clock = Clock()
    coalescer = Coalescer(interval=0.1, clock=clock)
    coalescer.add(StreamDelta(content="first"))
    coalescer.drain()
    clock.now = 0.5
    coalescer.add(StreamDelta(content="late"))
    assert coalescer.due_in() == pytest.approx(0.1)  # from when this delta arrived, not from the last frame


def test_pending_bytes_force_an_early_flush() -> None:
    clock = Clock()
    coalescer = Coalescer(flush_bytes=100, clock=clock)
    coalescer.add(StreamDelta(content="x"))
    coalescer.drain()
    assert coalescer.add(StreamDelta(content="y" * 99)) is False
    assert coalescer.add(StreamDelta(content="y")) is True


def test_reasoning_and_content_stay_apart() -> None:
    coalescer = Coalescer(clock=Clock())
    coalescer.add(StreamDelta(reasoning_content="think "))
    coalescer.add(StreamDelta(content="answer"))
    assert coalescer.drain() == [{"reasoning_content": "think ", "content": "answer"}]


def test_large_text_is_split_into_frames_within_the_limit() -> None:
    coalescer = Coalescer(frame_max_bytes=32_768, overhead_bytes=200, clock=Clock())
    text = 'quote" back\\slash \u00e9\u4e2d\n' * 8000  # escapes and multi-byte characters
    coalescer.add(StreamDelta(reasoning_content="r" * 40_000))
    coalescer.add(StreamDelta(content=text))
    payloads = coalescer.drain()
    assert all(len(json.dumps(p, ensure_ascii=False).encode()) + 200 <= 32_768 + 40 for p in payloads)
    assert "".join(p.get("content", "") for p in payloads) == text
    assert "".join(p.get("reasoning_content", "") for p in payloads) == "r" * 40_000
