"""Incremental decoder for DeepSeek's server-sent events: bytes in as they arrive, JSON payloads out.

Pure (no I/O): the HTTP adapter feeds it whatever chunks the socket gives, split anywhere, even inside
a line or a UTF-8 character. Lines end with LF, CRLF or CR (a CR at the end of one chunk and an LF at
the start of the next are one line ending). An event is dispatched at a blank line, its ``data:``
lines joined with LF, as the SSE spec and the OpenAI SDK do. ``: keep-alive`` comments, blank lines
without data and fields other than ``data`` are ignored; ``data: [DONE]`` ends the stream.
"""

from __future__ import annotations

import json
import re
from typing import Any

from seekless.errors import UpstreamError

DONE = "[DONE]"
_EOL = re.compile(rb"\r\n|\r|\n")
_DONE_LINE = b"data: " + DONE.encode()


def malformed(detail: str) -> UpstreamError:
    return UpstreamError(f"DeepSeek sent a malformed response: {detail}", code="upstream_malformed")


class SSEDecoder:
    """Feed bytes with :meth:`feed`, call :meth:`end` at end of input; both return the JSON objects of
    the events completed so far. After ``[DONE]`` :attr:`done` is true and further input is ignored.
    """

    def __init__(self, *, max_event_bytes: int = 8 * 1024 * 1024) -> None:
        self.done = False
        self._buffer = b""  # the unterminated tail of the input so far
        self._data: list[str] = []
        self._data_bytes = 0
        self._skip_lf = False  # the last chunk ended with CR: a leading LF belongs to that line ending
        self._max_event_bytes = max_event_bytes

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if self.done or not chunk:
            return events
        buffer = self._buffer + chunk if self._buffer else chunk
        if self._skip_lf:
            self._skip_lf = False
            if buffer[:1] == b"\n":
                buffer = buffer[1:]
        start = 0
        for match in _EOL.finditer(buffer):
            line = buffer[start : match.start()]
            start = match.end()
            if start == len(buffer) and match.group() == b"\r":
                self._skip_lf = True
            self._line(line, events)
            if self.done:
                self._buffer = b""
                return events
        self._buffer = buffer[start:]
        if len(self._buffer) + self._data_bytes > self._max_event_bytes:
            raise malformed(f"event larger than {self._max_event_bytes} bytes")
        return events

    def end(self) -> list[dict[str, Any]]:
        """End of input. Data lines still waiting for their blank line are dispatched; an unterminated
        last line is a truncated one and is dropped, unless it is ``data: [DONE]``."""
        events: list[dict[str, Any]] = []
        if self.done:
            return events
        tail = self._buffer.strip()
        self._buffer = b""
        self._dispatch(events)
        if tail == _DONE_LINE or tail == b"data:" + DONE.encode():
            self.done = True
        return events

    def _line(self, line: bytes, events: list[dict[str, Any]]) -> None:
        if not line:
            self._dispatch(events)
            return
        if line.startswith(b":"):  # comment, e.g. ": keep-alive"
            return
        name, _, value = line.partition(b":")
        if name != b"data":  # event:, id:, retry: carry nothing DeepSeek uses
            return
        if value.startswith(b" "):
            value = value[1:]
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            raise malformed("invalid UTF-8") from None
        self._data.append(text)
        self._data_bytes += len(value) + 1
        if self._data_bytes > self._max_event_bytes:
            raise malformed(f"event larger than {self._max_event_bytes} bytes")

    def _dispatch(self, events: list[dict[str, Any]]) -> None:
        if not self._data:
            return
        data = "\n".join(self._data)
        self._data.clear()
        self._data_bytes = 0
        if data.strip() == DONE:
            self.done = True
            return
        try:
            payload = json.loads(data)
        except ValueError:
            raise malformed("an event is not valid JSON") from None
        if not isinstance(payload, dict):
            raise malformed("an event is not a JSON object")
        events.append(payload)
