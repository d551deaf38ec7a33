"""Waiting on a condition with a deadline, never sleeping for luck: the one helper every tier uses."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(
    condition: Callable[[], Any], *, timeout: float = 15.0, interval: float = 0.05, what: str = "condition"
) -> Any:
    """The first truthy value ``condition`` returns; AssertionError once ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
