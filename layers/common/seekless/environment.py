"""Execution-environment scope: what lives as long as one Lambda execution environment.

On Lambda that is the process (one thread). The local gateways run each emulated environment on a
thread of its own with its own event loop, so the scope is the thread: async clients must never cross
event loops, and a new local stack must never inherit clients aimed at the previous one. This module
imports nothing heavy, so even the $connect handler can use it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Coroutine
from functools import wraps
from typing import Any, TypeVar, cast

R = TypeVar("R")
_environment = threading.local()


def per_environment(factory: Callable[[], R]) -> Callable[[], R]:
    """Cache ``factory``'s result for the lifetime of this execution environment (thread)."""

    @wraps(factory)
    def cached() -> R:
        cache: dict[str, object] = _environment.__dict__.setdefault("cache", {})
        name = factory.__qualname__
        if name not in cache:
            cache[name] = factory()
        return cache[name]  # type: ignore[return-value]

    return cached


def reset_environment() -> None:
    """Forget every cached adapter of this thread (tests; a fresh 'cold start')."""
    _environment.__dict__.pop("cache", None)


def close_environment() -> None:
    """Close this environment's clients on its own event loop, then forget them (local stack shutdown)."""
    cache: dict[str, object] = _environment.__dict__.pop("cache", {})
    closers = [cast(Any, client).aclose for client in cache.values() if hasattr(client, "aclose")]
    if not closers:
        return
    import asyncio

    async def close_all() -> None:
        await asyncio.gather(*(close() for close in closers), return_exceptions=True)

    asyncio.get_event_loop().run_until_complete(close_all())


async def aclose_environment() -> None:
    """``close_environment`` from inside the running loop (a long-running process such as the worker)."""
    import asyncio

    cache: dict[str, object] = _environment.__dict__.pop("cache", {})
    closers = [cast(Any, client).aclose for client in cache.values() if hasattr(client, "aclose")]
    await asyncio.gather(*(close() for close in closers), return_exceptions=True)


def run(coroutine: Coroutine[Any, Any, R]) -> R:
    """Run a handler's coroutine on this environment's event loop, which lives as long as the
    environment, so the pooled async clients built on it are reused by every invocation."""
    import asyncio

    loop = _environment.__dict__.get("loop")
    if loop is None or loop.is_closed():
        try:
            loop = asyncio.get_event_loop_policy().get_event_loop()
        except RuntimeError:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
        _environment.loop = loop
    return loop.run_until_complete(coroutine)
