"""Token estimates and history trimming. No tokenizer ships in the layer: estimates are conservative.

Trimming keeps DeepSeek's prefix cache warm: it cuts history only at fixed strides of messages, so the
prefix sent upstream stays byte-identical for many turns and the cut moves rarely.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# Four ASCII characters per token is the usual English average; CJK and other non-ASCII text runs close
# to one token per character, so those count one each. Overestimating only trims a little early.
_MESSAGE_OVERHEAD = 4
TRIM_STRIDE = 8


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


def trim_history(
    history: Sequence[dict[str, Any]], *, budget: int, reserved: int = 0, stride: int = TRIM_STRIDE
) -> list[dict[str, Any]]:
    """The newest part of ``history`` that fits ``budget - reserved`` tokens.

    Leading system messages are pinned (they are the conversation's instructions). The rest is cut at
    the first multiple of ``stride`` messages that fits, never between an assistant tool call and its
    tool results, so consecutive turns share the same prefix until the cut has to move.
    """
    pinned_end = 0
    while pinned_end < len(history) and history[pinned_end].get("role") == "system":
        pinned_end += 1
    pinned, rest = list(history[:pinned_end]), list(history[pinned_end:])
    room = budget - reserved - estimate_prompt_tokens(pinned)
    if estimate_prompt_tokens(rest) <= room:
        return pinned + rest
    suffix = [0] * (len(rest) + 1)  # suffix[i] = tokens of rest[i:]
    for i in range(len(rest) - 1, -1, -1):
        suffix[i] = suffix[i + 1] + estimate_message_tokens(rest[i])
    for cut in range(stride, len(rest) + stride, stride):
        cut = min(cut, len(rest))
        while cut < len(rest) and rest[cut].get("role") == "tool":
            cut += 1  # a tool result without its call is a 400 upstream
        if suffix[cut] <= room:
            return pinned + rest[cut:]
    return pinned
