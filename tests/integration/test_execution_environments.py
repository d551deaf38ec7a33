"""The local stack's execution environments: each function's warm environments run side by side."""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

from seekless_local.gateway import ExecutionEnvironments


def test_every_environment_of_a_function_runs_at_once_on_any_machine() -> None:
    # More environments than asyncio's default executor has threads (min(32, cores + 4)), where the REST
    # gateway used to wait for them: each invocation waits until all of them are in, so a gateway that
    # ran fewer at once would break the barrier instead (under load, requests queued for no reason).
    size = min(32, (os.cpu_count() or 1) + 4) + 2
    everyone_in = threading.Barrier(size, timeout=10)

    def handler(event: dict[str, Any], context: Any) -> int:
        return everyone_in.wait()

    environments = ExecutionEnvironments(lambda: handler, name="Parallel", timeout=10, size=size)

    async def invoke_all() -> list[int]:
        return list(await asyncio.gather(*(environments.invoke({}) for _ in range(size))))

    try:
        arrivals = asyncio.run(invoke_all())
    finally:
        environments.close()
    assert sorted(arrivals) == list(range(size))
