"""Conversations over /v1/sessions, and chat completions that continue them."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest

from seekless_local.stack import LocalStack
from tests.contract.conftest import (
    assert_openai_error_schema,
    make_http,
    unique_messages,
    upstream_calls,
    upstream_requests,
)

MODEL = "deepseek-flash"


def _create(http: httpx.Client, **body: Any) -> dict[str, Any]:
    response = http.post("/v1/sessions", json=body or None)
    assert response.status_code == 201, response.text
    return dict(response.json())


def _messages(http: httpx.Client, session_id: str) -> list[dict[str, Any]]:
    response = http.get(f"/v1/sessions/{session_id}", params={"limit": 1000})
    assert response.status_code == 200, response.text
    return list(response.json()["messages"]["data"])


def _turn(client: openai.OpenAI, session_id: str, text: str, **kwargs: Any) -> str:
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": text}], extra_body={"session_id": session_id}, **kwargs
    )
    return completion.choices[0].message.content or ""


@pytest.fixture
def fresh_tenant_http(stack: LocalStack, new_tenant_key: Callable[[str], str]) -> Iterator[httpx.Client]:
    """A tenant of its own, so listings hold only what the test created."""
    with make_http(stack, new_tenant_key(f"t-{uuid.uuid4().hex[:12]}")) as session:
        yield session


# -- the resource ------------------------------------------------------------------------------------


def test_create_session_returns_201_and_an_id(http: httpx.Client) -> None:
    response = http.post("/v1/sessions", json={"title": "Trip plans", "metadata": {"source": "contract"}})

    assert response.status_code == 201
    session = response.json()
    assert session["id"]
    assert session["object"] == "session"
    assert session["title"] == "Trip plans"
    assert session["metadata"] == {"source": "contract"}
    assert session["message_count"] == 0


def test_create_session_needs_no_body(http: httpx.Client) -> None:
    response = http.post("/v1/sessions")

    assert response.status_code == 201
    assert response.json()["id"]


def test_created_session_is_listed(fresh_tenant_http: httpx.Client) -> None:
    created = _create(fresh_tenant_http)

    listing = fresh_tenant_http.get("/v1/sessions").json()

    assert listing["object"] == "list"
    assert [s["id"] for s in listing["data"]] == [created["id"]]
    assert listing["has_more"] is False


def test_sessions_list_newest_first(fresh_tenant_http: httpx.Client) -> None:
    # Created back to back, as a script would: usually within one second of each other.
    created = [_create(fresh_tenant_http, title=f"session {i}")["id"] for i in range(5)]

    listing = fresh_tenant_http.get("/v1/sessions").json()

    assert [s["id"] for s in listing["data"]] == list(reversed(created))


def test_sessions_list_pages_with_limit_and_after(fresh_tenant_http: httpx.Client) -> None:
    created = {_create(fresh_tenant_http)["id"] for _ in range(5)}
    everything = [s["id"] for s in fresh_tenant_http.get("/v1/sessions", params={"limit": 100}).json()["data"]]

    pages: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        page = fresh_tenant_http.get("/v1/sessions", params=params).json()
        pages.append(page)
        if not page["has_more"]:
            break
        assert len(pages) < 10, "pagination does not end"
        params = {"limit": 2, "after": page["last_id"]}

    assert set(everything) == created
    assert [len(p["data"]) for p in pages] == [2, 2, 1]
    assert [p["has_more"] for p in pages] == [True, True, False]
    assert [s["id"] for p in pages for s in p["data"]] == everything
    assert all(p["last_id"] == p["data"][-1]["id"] for p in pages)


def test_get_session_shows_its_messages(http: httpx.Client, client: openai.OpenAI) -> None:
    session_id = _create(http)["id"]
    answer = _turn(client, session_id, "What is a session?")

    response = http.get(f"/v1/sessions/{session_id}")

    assert response.status_code == 200
    session = response.json()
    assert session["id"] == session_id
    assert session["message_count"] == 2
    messages = session["messages"]["data"]
    assert [(m["role"], m["content"]) for m in messages] == [("user", "What is a session?"), ("assistant", answer)]
    assert session["messages"]["has_more"] is False


def test_session_messages_page_with_limit_and_after(http: httpx.Client, client: openai.OpenAI) -> None:
    session_id = _create(http)["id"]
    _turn(client, session_id, "first question")
    _turn(client, session_id, "second question")
    every = _messages(http, session_id)

    first = http.get(f"/v1/sessions/{session_id}", params={"limit": 3}).json()["messages"]
    rest = http.get(f"/v1/sessions/{session_id}", params={"limit": 3, "after": first["last_id"]}).json()["messages"]

    assert len(every) == 4
    assert first["has_more"] is True
    assert [m["id"] for m in first["data"]] == [m["id"] for m in every[:3]]
    assert rest["has_more"] is False
    assert [m["id"] for m in rest["data"]] == [every[3]["id"]]


def test_deleted_session_is_not_found(http: httpx.Client, client: openai.OpenAI) -> None:
    session_id = _create(http)["id"]
    _turn(client, session_id, "something to delete")

    deleted = http.delete(f"/v1/sessions/{session_id}")
    after = http.get(f"/v1/sessions/{session_id}")

    assert deleted.status_code == 200
    assert deleted.json()["deleted"] is True
    assert after.status_code == 404
    assert_openai_error_schema(after.json())
    assert session_id not in {s["id"] for s in http.get("/v1/sessions", params={"limit": 100}).json()["data"]}


def test_deleting_twice_is_not_found(http: httpx.Client) -> None:
    session_id = _create(http)["id"]
    assert http.delete(f"/v1/sessions/{session_id}").status_code == 200

    again = http.delete(f"/v1/sessions/{session_id}")

    assert again.status_code == 404
    assert_openai_error_schema(again.json())


def test_deleted_session_cannot_be_continued(http: httpx.Client, client: openai.OpenAI, stack: LocalStack) -> None:
    session_id = _create(http)["id"]
    http.delete(f"/v1/sessions/{session_id}")

    with pytest.raises(openai.NotFoundError):
        _turn(client, session_id, "are you still there?")

    assert upstream_calls(stack) == 0


# -- continuing a conversation -----------------------------------------------------------------------


def test_session_id_in_body_continues_the_conversation(
    http: httpx.Client, client: openai.OpenAI, stack: LocalStack
) -> None:
    session_id = _create(http)["id"]
    first_answer = _turn(client, session_id, "My name is Ada.")

    second_answer = _turn(client, session_id, "What is my name?")

    sent = upstream_requests(stack)[-1]["body"]["messages"]
    assert [(m["role"], m["content"]) for m in sent] == [
        ("user", "My name is Ada."),
        ("assistant", first_answer),
        ("user", "What is my name?"),
    ]
    stored = _messages(http, session_id)
    assert [(m["role"], m["content"]) for m in stored] == [
        ("user", "My name is Ada."),
        ("assistant", first_answer),
        ("user", "What is my name?"),
        ("assistant", second_answer),
    ]


def test_session_header_continues_the_conversation(
    http: httpx.Client, client: openai.OpenAI, stack: LocalStack
) -> None:
    session_id = _create(http)["id"]

    def turn(text: str) -> str:
        completion = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": text}], extra_headers={"X-Session-Id": session_id}
        )
        return completion.choices[0].message.content or ""

    first_answer = turn("Remember the number 7.")
    turn("Which number?")

    sent = upstream_requests(stack)[-1]["body"]["messages"]
    assert [(m["role"], m["content"]) for m in sent] == [
        ("user", "Remember the number 7."),
        ("assistant", first_answer),
        ("user", "Which number?"),
    ]
    assert len(_messages(http, session_id)) == 4


def test_streamed_turn_is_stored_in_the_session(http: httpx.Client, client: openai.OpenAI) -> None:
    session_id = _create(http)["id"]

    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Stream it."}],
        stream=True,
        extra_body={"session_id": session_id},
    )
    with stream:
        content = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)

    assert [(m["role"], m["content"]) for m in _messages(http, session_id)] == [
        ("user", "Stream it."),
        ("assistant", content),
    ]


def test_session_history_is_a_stable_prefix_for_deepseeks_cache(http: httpx.Client, client: openai.OpenAI) -> None:
    session_id = _create(http)["id"]
    system = {"role": "system", "content": "You answer briefly and precisely. " * 100}
    client.chat.completions.create(
        model=MODEL, messages=[system, {"role": "user", "content": "Hello"}], extra_body={"session_id": session_id}
    )

    second = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "And again"}], extra_body={"session_id": session_id}
    )

    assert second.usage is not None
    assert getattr(second.usage, "prompt_cache_hit_tokens", 0) > 0


def test_failed_turn_is_not_stored(http: httpx.Client, client: openai.OpenAI, stack: LocalStack) -> None:
    session_id = _create(http)["id"]
    stack.emulator.configure(fault="503")

    with pytest.raises(openai.InternalServerError):
        _turn(client, session_id, "This will fail upstream.")

    assert _messages(http, session_id) == []


def test_stream_reset_mid_answer_is_not_stored(http: httpx.Client, client: openai.OpenAI, stack: LocalStack) -> None:
    session_id = _create(http)["id"]
    stack.emulator.configure(fault="reset")
    stream = client.chat.completions.create(
        model=MODEL, messages=unique_messages(), stream=True, extra_body={"session_id": session_id}
    )

    with pytest.raises(openai.APIError), stream:
        for _ in stream:
            pass

    assert _messages(http, session_id) == []


def test_concurrent_turns_on_one_session_both_land(http: httpx.Client, client: openai.OpenAI) -> None:
    """Two turns start together on each of several sessions: both read the same (empty) history, the
    second to finish finds the session moved on and appends after the first, losing nothing."""

    def turn(session_id: str, text: str, barrier: threading.Barrier) -> tuple[str, str]:
        barrier.wait(timeout=10)
        completion = client.chat.completions.create(
            model="deepseek-chat", messages=[{"role": "user", "content": text}], extra_body={"session_id": session_id}
        )
        return text, completion.choices[0].message.content or ""

    for _ in range(3):
        session_id = _create(http)["id"]
        barrier = threading.Barrier(2)
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = [pool.submit(turn, session_id, text, barrier) for text in ("turn A", "turn B")]
            answers = dict(future.result() for future in futures)
        stored = [(m["role"], m["content"]) for m in _messages(http, session_id)]
        assert len(stored) == 4
        turns = sorted([stored[0:2], stored[2:4]])  # each turn lands whole: its question, then its answer
        assert turns == [[("user", text), ("assistant", answers[text])] for text in sorted(answers)]


# -- tenancy -----------------------------------------------------------------------------------------


def test_other_tenant_cannot_read_the_session(http: httpx.Client, other_http: httpx.Client) -> None:
    session_id = _create(http)["id"]

    response = other_http.get(f"/v1/sessions/{session_id}")

    assert response.status_code == 404
    assert_openai_error_schema(response.json())


def test_other_tenant_cannot_delete_the_session(http: httpx.Client, other_http: httpx.Client) -> None:
    session_id = _create(http)["id"]

    response = other_http.delete(f"/v1/sessions/{session_id}")

    assert response.status_code == 404
    assert_openai_error_schema(response.json())
    assert http.get(f"/v1/sessions/{session_id}").status_code == 200


def test_other_tenant_cannot_continue_the_session(
    http: httpx.Client, client: openai.OpenAI, other_client: openai.OpenAI, stack: LocalStack
) -> None:
    session_id = _create(http)["id"]
    _turn(client, session_id, "Private note.")
    calls_before = upstream_calls(stack)

    with pytest.raises(openai.NotFoundError) as caught:
        _turn(other_client, session_id, "Tell me the private note.")

    assert_openai_error_schema(caught.value.response.json())
    assert upstream_calls(stack) == calls_before
    assert len(_messages(http, session_id)) == 2


def test_other_tenant_cannot_continue_the_session_by_header(
    http: httpx.Client, other_client: openai.OpenAI, stack: LocalStack
) -> None:
    session_id = _create(http)["id"]

    with pytest.raises(openai.NotFoundError):
        other_client.chat.completions.create(
            model=MODEL, messages=unique_messages(), extra_headers={"X-Session-Id": session_id}
        )

    assert upstream_calls(stack) == 0


def test_other_tenant_list_does_not_include_the_session(http: httpx.Client, other_http: httpx.Client) -> None:
    session_id = _create(http)["id"]
    mine = _create(other_http)["id"]

    listed = {s["id"] for s in other_http.get("/v1/sessions", params={"limit": 100}).json()["data"]}

    assert mine in listed
    assert session_id not in listed


def test_other_tenant_cannot_page_from_the_session(http: httpx.Client, other_http: httpx.Client) -> None:
    session_id = _create(http)["id"]

    response = other_http.get("/v1/sessions", params={"after": session_id})

    assert response.status_code == 404
    assert_openai_error_schema(response.json())
