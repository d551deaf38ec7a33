"""An answer that breaks: the connection reset mid-stream, a malformed chunk, a hang, 402 (out of
balance). Whatever the path (REST, REST streamed, WebSocket), the client gets exactly one error and
nothing of the broken answer stays behind: asked again with the fault gone, the same request is a cache
miss and its session holds only the new turn."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest

from seekless_local.stack import LocalStack
from tests.faults.conftest import WS_DEADLINE_SECONDS, Tally
from tests.faults.drive import (
    STRUCTURED,
    SUCCEEDED,
    Outcome,
    WsChats,
    chat_body,
    http_client,
    new_session,
    question,
    rest_chat,
    session_turns,
)

KINDS = ("rest", "rest-stream", "websocket")
# What each fault is, as DeepSeek shows it, and what the client is told.
FAULTS = {
    "reset": ("Reset mid-stream", {"upstream_stream_interrupted", "upstream_unavailable"}),
    "malformed": ("Malformed chunk", {"upstream_malformed"}),
    "hang": ("Hang", {"upstream_timeout"}),
    "402": ("402 out of balance", {"upstream_insufficient_balance"}),
}


@dataclass
class Case:
    kind: str
    session_id: str
    content: str


def _send(cases: list[Case], http: httpx.Client, ws: WsChats) -> list[Outcome]:
    """Every case at once (a hang costs one deadline, not one per case); outcomes in case order."""
    rids = {id(c): ws.chat(c.content, session_id=c.session_id) for c in cases if c.kind == "websocket"}
    rest = [c for c in cases if c.kind != "websocket"]
    with ThreadPoolExecutor(4) as pool:  # the REST function's four execution environments
        answers = dict(
            zip(
                (id(c) for c in rest),
                pool.map(
                    lambda c: rest_chat(
                        http, chat_body(c.content, stream=c.kind == "rest-stream", session_id=c.session_id)
                    ),
                    rest,
                ),
                strict=True,
            )
        )
    ws.wait(rids.values(), timeout=WS_DEADLINE_SECONDS * 3)
    ws.settle()
    return [answers[id(c)] if c.kind != "websocket" else ws.outcome(rids[id(c)]) for c in cases]


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_broken_answer_ends_in_one_error_and_leaves_no_trace(
    fault: str, stack: LocalStack, tally: Callable[[str], Tally]
) -> None:
    name, codes = FAULTS[fault]
    row = tally(name)
    # Rounds of one request per path at once; each round's retries without the fault succeed, so the
    # breaker (five failed calls in a row) stays closed. A hang costs a whole deadline: one round.
    rounds = 1 if fault == "hang" else 3
    seen: set[str] = set()
    with http_client(stack) as http, WsChats(stack) as ws:
        for _ in range(rounds):
            cases = [Case(kind, new_session(http), question()) for kind in KINDS]
            stack.emulator.configure(fault=fault)  # every call, retries included
            broken = _send(cases, http, ws)
            stack.emulator.configure(fault=None)
            for outcome in broken:
                row.count(outcome.kind, outcome.detail or str(outcome.code))
                seen.add(str(outcome.code))
            row.assert_clean()
            assert all(o.kind == STRUCTURED and o.code in codes for o in broken), broken
            assert all(session_turns(http, case.session_id) == [] for case in cases)

            again = _send(cases, http, ws)
            assert all(o.kind == SUCCEEDED for o in again), again
            assert all(o.cache == "miss" for o in again), [o.cache for o in again]
            for case, outcome in zip(cases, again, strict=True):
                turns = [(t["role"], t["content"]) for t in session_turns(http, case.session_id)]
                assert turns == [("user", case.content), ("assistant", outcome.content)]
    row.figure(f"{row.sent} asked again without the fault: {row.sent} cache misses, 1 turn in each session")
    row.figure("codes: " + ", ".join(sorted(seen)))
