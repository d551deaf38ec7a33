"""Unit tests are pure logic: no network sockets (unix socketpairs stay allowed for asyncio's loop)."""

from __future__ import annotations

import pytest
import pytest_socket


@pytest.fixture(autouse=True)
def _no_network() -> None:
    pytest_socket.disable_socket(allow_unix_socket=True)
