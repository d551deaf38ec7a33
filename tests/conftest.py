"""Suite-wide fixtures: a real Redis server on a free port, started by the suite itself.

REDIS_URL, when set, points the suite at an existing server instead. When redis-server is not on
PATH the Redis-backed tests run against fakeredis and the run says so in its header.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from seekless_local.redis_server import RedisServer, find_redis_server


def pytest_report_header(config: pytest.Config) -> str:
    import os

    if os.environ.get("REDIS_URL"):
        return "redis: REDIS_URL from the environment"
    if find_redis_server():
        return "redis: a redis-server started by the suite on a free port"
    return "redis: redis-server not on PATH; Redis tests use fakeredis (embedded fake)"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer.for_tests() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A clean database per test: flushed before use, so no test sees another's keys."""
    redis_server.flush()
    return redis_server.url
