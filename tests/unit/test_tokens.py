"""History trimming keeps a stable prefix: the cut moves in strides and never splits a tool exchange."""

from __future__ import annotations

import itertools

from seekless.tokens import estimate_message_tokens, estimate_text_tokens, trim_history


def turn(i: int, words: int = 40) -> list[dict]:
    return [
        {"role": "user", "content": f"q{i} " + "w " * words},
        {"role": "assistant", "content": f"a{i} " + "w " * words},
    ]


def test_estimates_count_cjk_characters_one_each() -> None:
    assert estimate_text_tokens("abcd" * 10) == 10
    assert estimate_text_tokens("你好世界") == 4
    assert estimate_text_tokens("") == 0


def test_history_within_budget_is_untouched() -> None:
    history = [m for i in range(3) for m in turn(i)]
    assert trim_history(history, budget=10_000) == history


def test_system_prompt_is_pinned_and_newest_messages_kept() -> None:
    history = [{"role": "system", "content": "rules"}] + [m for i in range(40) for m in turn(i)]
    kept = trim_history(history, budget=600)
    assert kept[0]["content"] == "rules"
    assert kept[-1] == history[-1]
    assert sum(estimate_message_tokens(m) for m in kept) <= 600


def test_cut_point_moves_rarely_as_the_conversation_grows() -> None:
    history = [m for i in range(40) for m in turn(i)]  # ~25 tokens a message, 50 a turn
    starts = []
    for extra in range(12):
        grown = history + [m for j in range(40, 40 + extra) for m in turn(j)]
        kept = trim_history(grown, budget=800)
        assert sum(estimate_message_tokens(m) for m in kept) <= 800
        starts.append(kept[0]["content"])
    # 12 consecutive turns of 50 tokens against boundaries every 200 tokens: the start moves at most
    # once every four turns, so DeepSeek sees the same prefix on most turns.
    changes = sum(1 for a, b in itertools.pairwise(starts) if a != b)
    assert changes <= 3


def test_never_starts_with_an_orphan_tool_result() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    history = [*turn(0, 200)] * 4
    history += [{"role": "assistant", "content": None, "tool_calls": [call]}]
    history += [{"role": "tool", "tool_call_id": "c", "content": "x"}] * 3
    history += turn(9)
    for budget in range(50, 1200, 25):
        kept = trim_history(history, budget=budget)
        assert not kept or kept[0]["role"] != "tool"
