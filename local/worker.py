"""The worker on a background thread with its own event loop: `make dev` runs one beside the stack.

Settings come from the environment the stack has set (queue URL, tables, Redis, DeepSeek), read on
the thread's first use of the wiring, as for any execution environment.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from seekless.worker.runner import Worker


class WorkerThread:
    def __init__(self, build: Callable[[], Worker] | None = None, *, name: str = "seekless-worker") -> None:
        self._build = build
        self._name = name
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self.worker: Worker | None = None
        self.error: BaseException | None = None

    def _main(self) -> None:
        from seekless import wiring

        async def serve() -> None:
            try:
                self.worker = self._build() if self._build is not None else wiring.worker()
            finally:
                self._ready.set()
            try:
                await self.worker.run()
            finally:
                await self.worker.aclose()
                await wiring.aclose_environment()

        try:
            asyncio.run(serve())
        except BaseException as error:  # surfaced by __enter__ or kept for the caller
            self.error = error

    def __enter__(self) -> WorkerThread:
        self._thread = threading.Thread(target=self._main, name=self._name, daemon=True)
        self._thread.start()
        if not self._ready.wait(30) or self.worker is None:
            raise RuntimeError("the worker did not start") from self.error
        return self

    def stop(self, timeout: float = 30.0) -> None:
        if self._thread is None:
            return
        if self.worker is not None:
            self.worker.stop()
        self._thread.join(timeout)
        self._thread = None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
