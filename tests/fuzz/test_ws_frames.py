"""A WebSocket frame fuzzer against the local stack's WebSocket API (docs/WEBSOCKET.md).

Each family sends its messages one after another on one connection, waiting for each answer: a message
that is not a valid request gets exactly one ``error`` frame; one that happens to be valid gets the
frames of a valid request (``start`` … ``done``, ``queued``, ``pong``). Every frame is a well-formed
server frame, nothing is logged as an unexpected exception, and after the burst the same connection
still answers a ping: bad input never crashes a route nor costs the client its connection.

Messages stay within API Gateway's limits (32 KB a frame, 128 KB a message: larger ones are API
Gateway's to refuse, by closing the connection with 1009); messages over 32 KB go as fragments.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import ClientConnection, connect

from seekless_local.stack import LocalStack
from tests.fuzz.conftest import ErrorRecords, fuzz_examples

FRAME_BYTES = 32 * 1024
MESSAGE_BYTES = 128 * 1024
ANSWER_SECONDS = 15.0
FRAME_TYPES = {"start", "delta", "done", "error", "queued", "pong"}
REQUEST_ID = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")
FUZZ = settings(
    max_examples=fuzz_examples(),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


@pytest.fixture
def ws(stack: LocalStack) -> Iterator[ClientConnection]:
    headers = {"Authorization": f"Bearer {stack.dev_api_key}"}
    with connect(stack.ws_url, additional_headers=headers, max_size=None) as socket:
        yield socket


def fragments(text: str, limit: int = FRAME_BYTES - 1024) -> Iterator[str]:
    """``text`` in pieces of at most ``limit`` UTF-8 bytes, cut between characters."""
    piece: list[str] = []
    size = 0
    for char in text:
        width = len(char.encode())
        if size + width > limit:
            yield "".join(piece)
            piece, size = [], 0
        piece.append(char)
        size += width
    yield "".join(piece)


def send(ws: ClientConnection, message: str | bytes) -> None:
    if isinstance(message, str) and len(message.encode()) > FRAME_BYTES - 1024:
        ws.send(fragments(message))
    else:
        ws.send(message)


def check_frame(frame: Any) -> dict[str, Any]:
    """A frame the protocol allows, or AssertionError naming what is wrong with it."""
    assert isinstance(frame, dict), frame
    assert frame.get("type") in FRAME_TYPES, frame  # never API Gateway's {"message": "Internal server error"}
    assert isinstance(frame.get("seq"), int) and frame["seq"] >= 0, frame
    assert frame.get("request_id") is None or isinstance(frame["request_id"], str), frame
    if frame["type"] == "error":
        assert isinstance(frame.get("code"), str) and frame["code"], frame
        assert isinstance(frame.get("message"), str) and frame["message"], frame
        assert frame["code"] != "internal_error", frame  # the route's last resort: an exception it did not expect
    return frame


def answer(ws: ClientConnection, message: str | bytes) -> list[dict[str, Any]]:
    """Send one message; its frames, up to the one that ends its answer."""
    send(ws, message)
    frames = [check_frame(json.loads(ws.recv(timeout=ANSWER_SECONDS)))]
    first = frames[0]
    if first["type"] == "start":  # a valid chat: read on to its one terminal frame
        while frames[-1]["type"] not in ("done", "error"):
            frames.append(check_frame(json.loads(ws.recv(timeout=ANSWER_SECONDS))))
            assert frames[-1]["request_id"] == first["request_id"], frames
    return frames


def still_open(ws: ClientConnection) -> None:
    ws.send(json.dumps({"action": "ping"}))
    assert json.loads(ws.recv(timeout=ANSWER_SECONDS)) == {"type": "pong", "request_id": None, "seq": 0}


def burst(ws: ClientConnection, messages: st.SearchStrategy[Any], encode: Callable[[Any], str | bytes]) -> None:
    @FUZZ
    @given(messages)
    def exchange(message: Any) -> None:
        answer(ws, encode(message))

    exchange()
    still_open(ws)


# --- what the fuzzer sends

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=64)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=16,
)
ACTIONS = st.sampled_from(["chat", "cancel", "resume", "ping", "$default", "$connect", "CHAT", "", "dance"])


def fresh_id() -> str:
    return f"fz-{uuid.uuid4().hex[:12]}"


def valid_frames() -> st.SearchStrategy[dict[str, Any]]:
    """Valid requests of every action (request ids are made fresh per message, in ``encode_frame``)."""
    chat = st.fixed_dictionaries(
        {"action": st.just("chat"), "request_id": st.just("ID"), "message": st.text(min_size=1, max_size=40)},
        optional={
            "model": st.sampled_from(["deepseek-flash", "deepseek-v4-pro", "deepseek-chat", "deepseek-reasoner"]),
            "max_tokens": st.integers(min_value=1, max_value=64),
            "temperature": st.floats(min_value=0, max_value=2),
            "thinking": st.sampled_from([{"type": "enabled"}, {"type": "disabled"}]),
            "mode": st.sampled_from(["stream", "job"]),  # a job answers queued (nothing runs it here)
        },
    )
    return st.one_of(
        chat,
        st.just({"action": "cancel", "request_id": "ID"}),
        st.fixed_dictionaries(
            {"action": st.just("resume"), "request_id": st.just("ID"), "after_seq": st.integers(0, 5)}
        ),
        st.just({"action": "ping"}),
    )


@dataclass(frozen=True)
class Nested:
    """Arrays nested ``depth`` deep: written by ``to_json`` itself (json.dumps stops near 1000 levels)."""

    depth: int


def to_json(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=lambda nested: f"\0nested:{nested.depth}\0")
    return re.sub(r'"\\u0000nested:(\d+)\\u0000"', lambda m: "[" * int(m[1]) + "]" * int(m[1]), text)


REPLACEMENTS = st.one_of(
    JSON_SCALARS,
    st.integers(min_value=-(2**64), max_value=2**64) | st.sampled_from([-1, 0, 2**31, 2**63, 10**30, -(10**30)]),
    st.sampled_from([1e308, -1e308, float("inf"), float("nan"), 1e-320]),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=200),  # any unicode, surrogates aside
    st.integers(min_value=FRAME_BYTES - 4096, max_value=FRAME_BYTES - 1200).map(lambda n: "x" * n),  # one full frame
    st.integers(min_value=40 * 1024, max_value=MESSAGE_BYTES - 2048).map(lambda n: "é" * (n // 2)),  # fragmented
    (st.sampled_from([999, 1000, 1500, 3000]) | st.integers(min_value=1, max_value=3000)).map(Nested),
    JSON_VALUES,
)


@st.composite
def mutated_frames(draw: st.DrawFn) -> dict[str, Any]:
    """A valid frame with one to three of: a field dropped, a field's value replaced (type swaps, huge,
    unicode, nested, negative or huge numbers), an unknown field added, the action swapped."""
    frame = dict(draw(valid_frames()))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        mutation = draw(st.sampled_from(["replace", "drop", "replace", "add", "replace", "action"]))
        if mutation == "drop" and frame:
            frame.pop(draw(st.sampled_from(sorted(frame))))
        elif mutation == "replace" and frame:
            frame[draw(st.sampled_from(sorted(frame)))] = draw(REPLACEMENTS)
        elif mutation == "add":
            name = draw(
                st.sampled_from(["messages", "session_id", "after_seq", "stop", "top_p", "x"]) | st.text(max_size=8)
            )
            frame[name] = draw(REPLACEMENTS)
        else:
            frame["action"] = draw(ACTIONS)
    return frame


def encode_frame(frame: dict[str, Any]) -> str:
    """JSON, with a fresh request id wherever the id is a usable one: an id used before on this
    connection would make ``cancel`` act on an earlier request, which answers no frame of its own."""
    if isinstance(frame.get("request_id"), str) and REQUEST_ID.fullmatch(frame["request_id"]):
        frame = {**frame, "request_id": fresh_id()}
    text = to_json(frame)
    # Two large values can pass the message limit together: cut the message (it is then invalid JSON).
    return text.encode()[: MESSAGE_BYTES - 1024].decode(errors="ignore")


# Every field of every valid frame gets each of these, whatever the example budget.
EDGE_VALUES: list[Any] = [
    None,
    True,
    -1,
    2**64,
    -(10**30),
    1e308,
    float("nan"),
    float("inf"),
    "",
    "\u0000",
    "😀é\u202e\ufeff" * 8,
    "x" * (FRAME_BYTES - 1500),  # just under one frame
    "é" * ((MESSAGE_BYTES - 4096) // 2),  # just under one message, in fragments
    [],
    {},
    Nested(100),
    Nested(3000),  # deeper than Python's json will parse
]
EDGE_FRAMES: list[dict[str, Any]] = [
    {
        "action": "chat",
        "request_id": "ID",
        "message": "hi",
        "model": "deepseek-flash",
        "max_tokens": 8,
        "temperature": 0.5,
        "thinking": {"type": "disabled"},
        "session_id": "sess-x",
        "mode": "stream",
    },
    {"action": "chat", "request_id": "ID", "messages": [{"role": "user", "content": "hi"}], "stop": ["x"]},
    {"action": "cancel", "request_id": "ID"},
    {"action": "resume", "request_id": "ID", "after_seq": 0},
    {"action": "ping"},
]


# --- the families


def test_valid_frames_get_valid_answers(ws: ClientConnection, server_errors: ErrorRecords) -> None:
    burst(ws, valid_frames(), encode_frame)
    assert not server_errors.records, server_errors.describe()


def test_random_bytes_get_error_frames(ws: ClientConnection, server_errors: ErrorRecords) -> None:
    burst(ws, st.binary(max_size=4096), lambda data: data)
    assert not server_errors.records, server_errors.describe()


def test_random_text_gets_error_frames(ws: ClientConnection, server_errors: ErrorRecords) -> None:
    burst(ws, st.text(alphabet=st.characters(codec="utf-8"), max_size=4096), lambda text: text)
    assert not server_errors.records, server_errors.describe()


def test_random_json_gets_error_frames(ws: ClientConnection, server_errors: ErrorRecords) -> None:
    objects = st.dictionaries(st.sampled_from(["action", "request_id", "message"]) | st.text(max_size=8), JSON_VALUES)
    with_action = st.builds(lambda action, rest: {**rest, "action": action}, ACTIONS | JSON_SCALARS, objects)
    burst(ws, JSON_VALUES | objects | with_action, lambda value: json.dumps(value, ensure_ascii=False))
    assert not server_errors.records, server_errors.describe()


def test_mutated_frames_get_error_frames_or_a_valid_answer(ws: ClientConnection, server_errors: ErrorRecords) -> None:
    burst(ws, mutated_frames(), encode_frame)
    assert not server_errors.records, server_errors.describe()


def test_edge_values_in_every_field_get_error_frames_or_a_valid_answer(
    ws: ClientConnection, server_errors: ErrorRecords
) -> None:
    sent = 0
    for frame in EDGE_FRAMES:
        for field in frame:
            for value in EDGE_VALUES:
                answer(ws, encode_frame({**frame, field: value}))
                sent += 1
    still_open(ws)
    assert sent == sum(len(frame) for frame in EDGE_FRAMES) * len(EDGE_VALUES)
    assert not server_errors.records, server_errors.describe()
