"""Browser tier: the reference chat page in headless Chromium against the running local stack.

One ``LocalStack`` (REST and WebSocket gateways, moto, Redis, the DeepSeek emulator) and one browser
serve the whole module; each test gets a fresh browser context (no shared storage) and a clean
upstream. Debian's Chromium is used as installed (``SEEKLESS_CHROMIUM`` overrides the path):
playwright drives it, nothing is downloaded.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from seekless_local.stack import LocalStack
from tests.stacks import clean_upstream, emulated_stack


def chromium_path() -> str | None:
    configured = os.environ.get("SEEKLESS_CHROMIUM")
    if configured:
        return configured
    for name in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if os.path.exists(name):
            return name
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with emulated_stack() as running:
        yield running


@pytest.fixture(autouse=True)
def _clean_upstream(stack: LocalStack) -> Iterator[None]:
    with clean_upstream(stack):
        yield


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium_path()
    if executable is None:
        pytest.fail("no Chromium found: run `make browser-deps` (Debian's chromium) or set SEEKLESS_CHROMIUM")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"], headless=True)
        yield launched
        launched.close()


class ConsoleErrors(list[str]):
    """Console errors and uncaught exceptions of a page (a CSP violation shows up here)."""


@pytest.fixture
def console_errors() -> ConsoleErrors:
    return ConsoleErrors()


@pytest.fixture
def page(browser: Browser, console_errors: ConsoleErrors) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    context.set_default_timeout(15_000)
    tab = context.new_page()

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            console_errors.append(message.text)

    tab.on("console", on_console)
    tab.on("pageerror", lambda error: console_errors.append(f"uncaught: {error}"))
    yield tab
    context.close()


def chat_url(stack: LocalStack, **params: Any) -> str:
    """The page as the stack serves it, with the WebSocket URL (and anything else) prefilled."""
    query = {"ws": stack.ws_url, **params}
    return f"{stack.rest_url}/?{urlencode(query)}"
