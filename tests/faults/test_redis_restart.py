"""Redis killed and restarted while requests keep coming: served as cache misses, never failed."""

from __future__ import annotations

import threading
from collections.abc import Callable

from seekless_local.stack import LocalStack
from tests.faults.conftest import Tally
from tests.faults.drive import SUCCEEDED, Outcome, WsChats, chat_body, http_client, question, rest_chat
from tests.waiting import wait_for

REPEATED = "The one question everyone asks"  # cached while Redis is up


class Traffic:
    """REST (streamed and not) and WebSocket chats, one after another on each of three threads; half of
    them ask one question over and over, so the cache has something to hit."""

    def __init__(self, stack: LocalStack) -> None:
        self._stack = stack
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.outcomes: list[tuple[str, Outcome]] = []  # (phase, outcome)
        self.phase = "up"
        self.errors: list[BaseException] = []
        self._threads = [
            threading.Thread(target=self._guard, args=(self._rest, False), name="rest"),
            threading.Thread(target=self._guard, args=(self._rest, True), name="rest-stream"),
            threading.Thread(target=self._guard, args=(self._websocket,), name="websocket"),
        ]

    def _record(self, outcome: Outcome, phase: str) -> None:
        with self._lock:
            self.outcomes.append((phase, outcome))

    def _content(self, n: int) -> str:
        return REPEATED if n % 2 else question()

    def _guard(self, run: Callable[..., None], *args: object) -> None:
        try:
            run(*args)
        except BaseException as error:  # surfaced by the test, never lost in a thread
            self.errors.append(error)

    def _rest(self, stream: bool) -> None:
        with http_client(self._stack) as http:
            n = 0
            while not self._stop.is_set():
                phase = self.phase
                self._record(rest_chat(http, chat_body(self._content(n), stream=stream)), phase)
                n += 1

    def _websocket(self) -> None:
        with WsChats(self._stack) as ws:
            n = 0
            while not self._stop.is_set():
                phase = self.phase
                rid = ws.chat(self._content(n))
                ws.wait([rid], timeout=15)
                self._record(ws.outcome(rid), phase)
                n += 1
            ws.settle()
            for rid in ws.doubled():
                self._record(ws.outcome(rid), "after")  # a second terminal frame: unhandled

    def count(self, phase: str) -> int:
        with self._lock:
            return sum(1 for p, _ in self.outcomes if p == phase)

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


def test_redis_killed_and_restarted_mid_run_keeps_requests_served(
    stack: LocalStack, tally: Callable[[str], Tally]
) -> None:
    row = tally("Redis killed and restarted mid-run")
    assert stack.redis is not None and stack.redis.kind in ("redis-server", "fakeredis")  # ours to kill
    with Traffic(stack) as traffic:
        wait_for(lambda: traffic.count("up") >= 30, timeout=30, what="traffic with Redis up")
        traffic.phase = "down"
        stack.redis.kill()
        wait_for(lambda: traffic.count("down") >= 30, timeout=30, what="traffic with Redis down")
        traffic.phase = "restarted"
        stack.redis.start()
        wait_for(lambda: traffic.count("restarted") >= 30, timeout=30, what="traffic after the restart")
    assert not traffic.errors, traffic.errors
    for _, outcome in traffic.outcomes:
        row.count(outcome.kind, outcome.detail or str(outcome.code))
    row.assert_clean()
    by_phase = {phase: [o for p, o in traffic.outcomes if p == phase] for phase in ("up", "down", "restarted")}
    # Down, every request is still answered, from upstream: Redis is only a cache there.
    down = by_phase["down"]
    assert all(o.kind == SUCCEEDED for o in down), [o for o in down if o.kind != SUCCEEDED]
    assert all(o.cache == "miss" for o in down), [o.cache for o in down]
    assert any(o.cache == "hit" for o in by_phase["up"])
    assert any(o.cache == "hit" for o in by_phase["restarted"]), "the cache works again after the restart"
    for phase, outcomes in by_phase.items():
        hits = sum(1 for o in outcomes if o.cache == "hit")
        ok = sum(1 for o in outcomes if o.kind == SUCCEEDED)
        row.figure(f"{phase}: {ok}/{len(outcomes)} answered, {hits} cache hits")
