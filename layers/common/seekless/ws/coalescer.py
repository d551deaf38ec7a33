"""Coalescing deltas into frames. Pure: no I/O, the clock is injected.

API Gateway bills WebSocket messages per 32 KB and every ``post_to_connection`` is a round trip, so
deltas are batched: the first goes out at once (time to first token must not suffer); after that no
delta waits more than ``interval`` (a batch goes out ``interval`` after its first delta arrived), and
a batch goes out early once ``flush_bytes`` are pending. No frame is larger than ``frame_max_bytes``:
longer text is split across several frames.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from seekless.contracts import StreamDelta

_FIELDS = ("reasoning_content", "content")  # reasoning first: it comes first in every stream


def _encoded_size(text: str) -> int:
    return len(json.dumps(text, ensure_ascii=False).encode())


class Coalescer:
    def __init__(
        self,
        *,
        interval: float = 0.1,
        flush_bytes: int = 4096,
        frame_max_bytes: int = 32_768,
        overhead_bytes: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._interval = interval
        self._flush_bytes = flush_bytes
        self._budget = frame_max_bytes - overhead_bytes  # room for the text of one frame
        self._clock = clock
        self._pending: dict[str, list[str]] = {name: [] for name in _FIELDS}
        self._pending_bytes = 0
        self._pending_since: float | None = None  # when the oldest pending delta arrived
        self._flushed = False  # the first delta goes out at once

    @property
    def pending(self) -> bool:
        return self._pending_bytes > 0

    def add(self, delta: StreamDelta) -> bool:
        """Queue a delta; True when the caller should ``drain`` now."""
        for name in _FIELDS:
            text = getattr(delta, name)
            if text:
                if self._pending_since is None:
                    self._pending_since = self._clock()
                self._pending[name].append(text)
                self._pending_bytes += len(text.encode())
        if not self.pending:
            return False
        return not self._flushed or self._pending_bytes >= self._flush_bytes or self.due_in() == 0

    def due_in(self) -> float | None:
        """Seconds until pending text must go out; None when nothing is pending."""
        if self._pending_since is None:
            return None
        if not self._flushed:
            return 0.0
        return max(0.0, self._pending_since + self._interval - self._clock())

    def drain(self) -> list[dict[str, Any]]:
        """The pending text as frame payloads (``content`` / ``reasoning_content``), each within the limit."""
        payloads: list[dict[str, Any]] = []
        current: dict[str, Any] = {}
        room = self._budget
        for name in _FIELDS:
            text = "".join(self._pending[name])
            while text:
                piece = self._fit(text, room)
                if not piece:  # no room left in this frame: start another
                    payloads.append(current)
                    current, room = {}, self._budget
                    continue
                current[name] = piece
                room -= _encoded_size(piece)
                text = text[len(piece) :]
                if text:
                    payloads.append(current)
                    current, room = {}, self._budget
        if current:
            payloads.append(current)
        self._pending = {name: [] for name in _FIELDS}
        self._pending_bytes = 0
        self._pending_since = None
        self._flushed = True
        return payloads

    @staticmethod
    def _fit(text: str, room: int) -> str:
        """The longest prefix of ``text`` whose JSON encoding fits ``room`` bytes."""
        if room <= 2:
            return ""
        if _encoded_size(text) <= room:
            return text
        low, high = 0, min(len(text), room)  # a character encodes to at least one byte
        while low < high:
            middle = (low + high + 1) // 2
            if _encoded_size(text[:middle]) <= room:
                low = middle
            else:
                high = middle - 1
        return text[:low]
