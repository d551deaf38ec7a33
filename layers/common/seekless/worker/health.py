"""The worker's liveness signal for the container HEALTHCHECK: a file its event loop touches.

``python -m seekless.worker --health`` exits 0 while the file is younger than the allowed age. A
file, not an HTTP port: nothing to bind or secure, and it proves the event loop itself is turning
(a wedged loop stops touching it), which a port served from another thread would not.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

FILE_NAME = "seekless-worker.alive"


def health_path(configured: str | None) -> Path:
    return Path(configured) if configured else Path(tempfile.gettempdir()) / FILE_NAME


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    os.utime(path)


def is_fresh(path: Path, max_age_seconds: float, *, now: float | None = None) -> bool:
    try:
        age = (time.time() if now is None else now) - path.stat().st_mtime
    except OSError:
        return False
    return age <= max_age_seconds
