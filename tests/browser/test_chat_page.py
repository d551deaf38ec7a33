"""The reference chat page, end to end: Chromium → REST ticket → WebSocket gateway → generator → emulator.

Every wait is a condition with a deadline (playwright's ``expect`` and ``wait_for_function``), never a
sleep. The emulator is deterministic for a given model and messages, so the page's streamed answer can
be checked against the REST API's non-stream answer to the identical request.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Page, WebSocketRoute, expect

from seekless_local.stack import LocalStack
from tests.browser.conftest import ConsoleErrors, chat_url

PAGE_FILE = Path(__file__).parents[2] / "layers/common/seekless/api/static/chat.html"
SCREENSHOT = "/tmp/seekless-chat.png"
DONE_TIMEOUT = 15_000

# The newest turn's answer while it is still streaming (null otherwise): what a user sees mid-stream.
PARTIAL_ANSWER = """() => {
  const turns = document.querySelectorAll('[data-testid=turn]');
  const turn = turns[turns.length - 1];
  if (!turn || turn.dataset.state !== 'running') return null;
  const text = turn.querySelector('[data-testid=answer]').textContent;
  return text.length >= 8 ? text : null;
}"""


def unique_prompt(text: str) -> str:
    """A prompt no other test sends, so no answer comes from another test's cache entry."""
    return f"{text} ({uuid.uuid4().hex[:12]})"


def ask(page: Page, prompt: str) -> None:
    page.get_by_test_id("message").fill(prompt)
    page.get_by_test_id("send").click()


def last_turn(page: Page) -> Any:
    return page.get_by_test_id("turn").last


def rest_answer(stack: LocalStack, prompt: str, *, thinking: bool = True) -> dict[str, Any]:
    """The REST API's non-stream answer to the request the page sends for ``prompt`` (same body)."""
    body = {
        "model": "deepseek-flash",
        "messages": [{"role": "user", "content": prompt}],
        "thinking": {"type": "enabled" if thinking else "disabled"},
    }
    response = httpx.post(
        f"{stack.rest_url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {stack.dev_api_key}"},
        timeout=30,
    )
    response.raise_for_status()
    message: dict[str, Any] = response.json()["choices"][0]["message"]
    return message


def test_page_is_served_with_a_strict_content_security_policy(stack: LocalStack) -> None:
    response = httpx.get(stack.rest_url + "/", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert re.search(r"script-src 'sha256-[A-Za-z0-9+/=]+'", policy)
    assert "connect-src 'self' ws: wss:" in policy
    assert "seekless chat" in response.text


def test_page_writes_model_output_as_text_only() -> None:
    source = PAGE_FILE.read_text(encoding="utf-8")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in source, f"the page must never use {sink}"
    assert not re.search(r"""(?:src|href)\s*=\s*["'](?!data:)""", source), "no external resources: it works offline"


def test_answer_streams_with_reasoning_apart_from_it(
    page: Page, stack: LocalStack, console_errors: ConsoleErrors
) -> None:
    stack.emulator.configure(ttft_ms=0, tps=40, tokens=30, reasoning_tokens=8)
    page.goto(chat_url(stack, key=stack.dev_api_key))
    prompt = unique_prompt("Tell me about streams")
    ask(page, prompt)

    partial = page.wait_for_function(PARTIAL_ANSWER, timeout=DONE_TIMEOUT).json_value()
    turn = last_turn(page)
    expect(turn).to_have_attribute("data-state", "done", timeout=DONE_TIMEOUT)
    expect(turn.get_by_test_id("status")).to_contain_text("finish: stop")
    expect(turn.get_by_test_id("status")).to_contain_text("tokens")
    expect(page.get_by_test_id("conn-state")).to_have_attribute("data-state", "connected")

    answer = turn.get_by_test_id("answer").text_content() or ""
    reasoning = turn.get_by_test_id("reasoning-text").text_content() or ""
    assert answer.startswith(partial) and len(answer) > len(partial), "the answer grew while streaming"
    expect(turn.get_by_test_id("reasoning")).to_be_visible()
    assert reasoning.strip(), "thinking was on: the reasoning shows"
    assert reasoning not in answer and answer not in reasoning, "reasoning and answer are kept apart"
    expect(turn.get_by_test_id("user")).to_have_text(prompt)

    page.screenshot(path=SCREENSHOT, full_page=True)
    assert not console_errors, console_errors


def test_cancel_stops_the_answer_and_shows_cancelled(page: Page, stack: LocalStack) -> None:
    stack.emulator.configure(ttft_ms=0, tps=25, tokens=400, reasoning_tokens=4)
    page.goto(chat_url(stack, key=stack.dev_api_key))
    prompt = unique_prompt("Write at length")
    ask(page, prompt)

    page.wait_for_function(PARTIAL_ANSWER, timeout=DONE_TIMEOUT)
    expect(page.get_by_test_id("cancel")).to_be_enabled()
    page.get_by_test_id("cancel").click()
    turn = last_turn(page)
    expect(turn).to_have_attribute("data-state", "cancelled", timeout=5_000)
    expect(turn.get_by_test_id("status")).to_contain_text("cancelled")
    expect(page.get_by_test_id("send")).to_be_enabled()
    expect(page.get_by_test_id("cancel")).to_be_disabled()

    shown = turn.get_by_test_id("answer").text_content() or ""
    state = page.evaluate("window.seekless.state()")
    assert state["requests"][-1]["finishReason"] == "cancelled"
    assert state["requests"][-1]["content"] == shown, "nothing was added after the cancellation"

    stack.emulator.configure(tps=0)  # same text, all at once: the full answer for comparison
    full = rest_answer(stack, prompt)["content"]
    assert shown and full.startswith(shown), "what was shown is the start of the real answer"
    assert len(shown) < len(full), "the answer stopped before its end"


def test_answer_resumes_after_a_dropped_connection(page: Page, stack: LocalStack) -> None:
    stack.emulator.configure(ttft_ms=0, tps=40, tokens=80, reasoning_tokens=8)
    page.goto(chat_url(stack, key=stack.dev_api_key))
    prompt = unique_prompt("Keep going after a drop")
    ask(page, prompt)

    page.wait_for_function(PARTIAL_ANSWER, timeout=DONE_TIMEOUT)
    page.evaluate("window.seekless.dropConnection()")
    turn = last_turn(page)
    expect(turn).to_have_attribute("data-state", "done", timeout=DONE_TIMEOUT)
    expect(turn.get_by_test_id("status")).to_contain_text("finish: stop")
    expect(page.get_by_test_id("conn-state")).to_have_attribute("data-state", "connected")
    state = page.evaluate("window.seekless.state()")
    assert state["reconnects"] >= 1, "the page reconnected"

    answer = turn.get_by_test_id("answer").text_content()
    reasoning = turn.get_by_test_id("reasoning-text").text_content()
    expected = rest_answer(stack, prompt)
    assert answer == expected["content"], "no text missing or repeated across the reconnect"
    assert reasoning == expected.get("reasoning_content")


def test_repeated_frames_show_once(page: Page, stack: LocalStack) -> None:
    """A resume may replay frames the page has seen: here every server frame arrives twice."""
    stack.emulator.configure(ttft_ms=0, tps=0, tokens=40, reasoning_tokens=8)

    forwarded: list[str | bytes] = []

    def twice(route: WebSocketRoute) -> None:
        server = route.connect_to_server()

        def forward(message: str | bytes) -> None:
            forwarded.append(message)
            route.send(message)
            route.send(message)

        server.on_message(forward)

    page.route_web_socket(re.compile(r"[?&]ticket="), twice)
    page.goto(chat_url(stack, key=stack.dev_api_key))
    prompt = unique_prompt("Say it once")
    ask(page, prompt)
    turn = last_turn(page)
    expect(turn).to_have_attribute("data-state", "done")

    assert len(forwarded) >= 3, "the frames went through the doubling route"
    expected = rest_answer(stack, prompt)
    expect(turn.get_by_test_id("answer")).to_have_text(expected["content"])
    expect(turn.get_by_test_id("reasoning-text")).to_have_text(expected["reasoning_content"])


def test_wrong_key_shows_an_error(page: Page, stack: LocalStack) -> None:
    page.goto(chat_url(stack, key="sk-seekless-wrong"))
    page.get_by_test_id("connect").click()
    expect(page.get_by_test_id("notice")).to_contain_text("401")
    expect(page.get_by_test_id("notice")).to_contain_text("invalid_api_key")
    expect(page.get_by_test_id("conn-state")).to_have_attribute("data-state", "disconnected")

    ask(page, unique_prompt("Hello"))  # sending with the wrong key fails the message visibly too
    expect(last_turn(page)).to_have_attribute("data-state", "error")
    expect(last_turn(page).get_by_test_id("status")).to_contain_text("401")
