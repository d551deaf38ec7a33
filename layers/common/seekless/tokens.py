"""Token estimates and history trimming. No tokenizer ships in the layer: estimates are conservative.

Trimming keeps DeepSeek's prefix cache warm: it cuts history only at boundaries fixed by the history
itself, so the prefix sent upstream stays byte-identical for many turns and the cut moves rarely.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# Four ASCII characters per token is the usual English average; CJK and other non-ASCII text runs close
# to one token per character, so those count one each. Overestimating only trims a little early.
_MESSAGE_OVERHEAD = 4


def estimate_text_tokens(text: str | None) -> int:
    if not text:
        return 0
    non_ascii = sum(1 for ch in text if ord(ch) > 127)
    ascii_chars = len(text) - non_ascii
    return -(-ascii_chars // 4) + non_ascii


def estimate_message_tokens(message: dict[str, Any]) -> int:
    tokens = _MESSAGE_OVERHEAD + estimate_text_tokens(message.get("content"))
    tokens += estimate_text_tokens(message.get("reasoning_content"))
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        tokens += estimate_text_tokens(function.get("name")) + estimate_text_tokens(function.get("arguments"))
    return tokens


def estimate_prompt_tokens(messages: Sequence[dict[str, Any]]) -> int:
    return sum(estimate_message_tokens(m) for m in messages)


def trim_history(history: Sequence[dict[str, Any]], *, budget: int, reserved: int = 0) -> list[dict[str, Any]]:
    """The newest part of ``history`` that fits ``budget - reserved`` tokens.

    Leading system messages are pinned (they are the conversation's instructions). The rest may only be
    cut at boundaries fixed by the history itself: each time the running token count from the start
    crosses another quarter of the budget. History is append-only, so those boundaries never move, and
    a cut, once made, stays put for about a quarter of the budget's worth of new turns: the prefix sent
    upstream stays byte-identical and DeepSeek's prefix cache keeps hitting. A cut never lands between
    an assistant's tool call and its tool results (that is a 400 upstream).
    """
    pinned_end = 0
    while pinned_end < len(history) and history[pinned_end].get("role") == "system":
        pinned_end += 1
    pinned, rest = list(history[:pinned_end]), list(history[pinned_end:])
    room = budget - reserved - estimate_prompt_tokens(pinned)
    sizes = [estimate_message_tokens(m) for m in rest]
    if sum(sizes) <= room:
        return pinned + rest
    stride = max(1, budget // 4)
    suffix = sum(sizes)  # tokens of rest[cut:]
    running = 0
    for cut, size in enumerate(sizes):
        on_boundary = cut > 0 and (running // stride) != ((running - sizes[cut - 1]) // stride)
        if on_boundary and rest[cut].get("role") != "tool" and suffix <= room:
            return pinned + rest[cut:]
        running += size
        suffix -= size
    return pinned
