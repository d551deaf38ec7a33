"""The SSE decoder: what DeepSeek's event stream decodes to, however the socket splits it."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from seekless.adapters.sse import SSEDecoder
from seekless.errors import UpstreamError


def _chunk(delta: dict[str, Any], finish: str | None = None, usage: dict[str, Any] | None = None) -> bytes:
    event = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1_760_000_000,
        "model": "deepseek-flash",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        "usage": usage,
    }
    return b"data: " + json.dumps(event, ensure_ascii=False).encode() + b"\n\n"


# Shaped like a real DeepSeek stream under load: keep-alive comments, reasoning then content,
# multi-byte characters (2, 3 and 4 bytes in UTF-8), usage on the last content chunk.
REAL_STREAM = b"".join(
    [
        b": keep-alive\n\n",
        _chunk({"role": "assistant", "content": "", "reasoning_content": None}),
        b": keep-alive\n\n",
        _chunk({"reasoning_content": "Pens\u00e9e: \u601d\u8003"}),
        _chunk({"content": "Hello \u4e16\u754c \U0001f30d"}),
        _chunk(
            {"content": "!"},
            finish="stop",
            usage={"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
        ),
        b"data: [DONE]\n\n",
    ]
)


def _decode_pieces(pieces: list[bytes]) -> tuple[list[dict[str, Any]], bool]:
    decoder = SSEDecoder()
    events: list[dict[str, Any]] = []
    for piece in pieces:
        events += decoder.feed(piece)
    events += decoder.end()
    return events, decoder.done


EXPECTED, _ = _decode_pieces([REAL_STREAM])


def test_a_whole_stream_decodes_to_its_data_events() -> None:
    assert len(EXPECTED) == 4
    assert EXPECTED[1]["choices"][0]["delta"]["reasoning_content"] == "Pens\u00e9e: \u601d\u8003"
    assert EXPECTED[2]["choices"][0]["delta"]["content"] == "Hello \u4e16\u754c \U0001f30d"
    assert EXPECTED[3]["usage"]["total_tokens"] == 12


def test_a_split_at_any_byte_offset_decodes_the_same() -> None:
    for offset in range(len(REAL_STREAM) + 1):
        assert _decode_pieces([REAL_STREAM[:offset], REAL_STREAM[offset:]]) == (EXPECTED, True), offset


def test_one_byte_at_a_time_decodes_the_same() -> None:
    events, done = _decode_pieces([REAL_STREAM[i : i + 1] for i in range(len(REAL_STREAM))])
    assert events == EXPECTED
    assert done


def test_random_chunking_decodes_the_same() -> None:
    for seed in range(200):
        rng = random.Random(seed)
        pieces, start = [], 0
        while start < len(REAL_STREAM):
            end = start + rng.randint(1, 40)
            pieces.append(REAL_STREAM[start:end])
            start = end
        assert _decode_pieces(pieces) == (EXPECTED, True), seed


@pytest.mark.parametrize("eol", [b"\r\n", b"\r"])
def test_crlf_and_cr_line_endings_split_anywhere_decode_the_same(eol: bytes) -> None:
    stream = REAL_STREAM.replace(b"\n", eol)
    for offset in range(len(stream) + 1):
        assert _decode_pieces([stream[:offset], stream[offset:]]) == (EXPECTED, True), offset


def test_keep_alive_comments_and_blank_lines_yield_nothing() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b": keep-alive\n\n\n\n: keep-alive\r\n\r\n") == []
    assert decoder.end() == []
    assert not decoder.done


def test_done_ends_the_stream_and_later_input_is_ignored() -> None:
    decoder = SSEDecoder()
    events = decoder.feed(b'data: {"a": 1}\n\ndata: [DONE]\n\ndata: {"b": 2}\n\n')
    assert events == [{"a": 1}]
    assert decoder.done
    assert decoder.feed(b'data: {"c": 3}\n\n') == []
    assert decoder.end() == []


def test_data_without_a_space_after_the_colon_is_accepted() -> None:
    assert SSEDecoder().feed(b'data:{"a":1}\n\ndata:[DONE]\n\n') == [{"a": 1}]


def test_multi_line_data_is_joined_with_newlines() -> None:
    assert SSEDecoder().feed(b'data: {"a":\ndata: 1}\n\n') == [{"a": 1}]


def test_other_fields_are_ignored() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b'event: message\nid: 7\nretry: 100\ndata: {"a": 1}\n\n') == [{"a": 1}]


def test_invalid_json_raises_upstream_malformed() -> None:
    with pytest.raises(UpstreamError) as caught:
        SSEDecoder().feed(b"data: {not json\n\n")
    assert caught.value.code == "upstream_malformed"


def test_a_json_payload_that_is_not_an_object_is_malformed() -> None:
    with pytest.raises(UpstreamError) as caught:
        SSEDecoder().feed(b"data: [1, 2]\n\n")
    assert caught.value.code == "upstream_malformed"


def test_end_dispatches_an_event_still_waiting_for_its_blank_line() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"a": 1}\n') == []
    assert decoder.end() == [{"a": 1}]


def test_end_drops_a_truncated_last_line() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"a": 1}\n\ndata: {"b": ') == [{"a": 1}]
    assert decoder.end() == []
    assert not decoder.done


def test_end_accepts_an_unterminated_done() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"data: [DONE]")
    decoder.end()
    assert decoder.done


def test_an_event_over_the_size_limit_is_malformed() -> None:
    decoder = SSEDecoder(max_event_bytes=64)
    with pytest.raises(UpstreamError) as caught:
        decoder.feed(b"data: " + b"x" * 100)
    assert caught.value.code == "upstream_malformed"
