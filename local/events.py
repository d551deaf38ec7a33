"""The one event loader: the files under events/ feed `sam local invoke -e`, the tests and the tooling."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

EVENTS_DIR = Path(__file__).resolve().parent.parent / "events"

# `<name>_output.json` beside an event holds the response expected for it, not an event.
OUTPUT_SUFFIX = "_output.json"


def event_path(name_or_path: str | Path) -> Path:
    """Where an event lives: a path to an existing file, else a name under events/ (".json" optional)."""
    candidate = Path(name_or_path)
    if candidate.is_file():
        return candidate
    relative = candidate if candidate.suffix == ".json" else candidate.with_name(candidate.name + ".json")
    path = EVENTS_DIR / relative
    if not path.is_file():
        raise FileNotFoundError(f"no event {str(name_or_path)!r} (looked for {path})")
    return path


def load_event(name_or_path: str | Path) -> dict[str, Any]:
    """A fresh copy of the event, e.g. ``load_event("rest/post_chat")``: callers may mutate it."""
    event = json.loads(event_path(name_or_path).read_text(encoding="utf-8"))
    if not isinstance(event, dict):
        raise ValueError(f"event {str(name_or_path)!r} is not a JSON object")
    return event


def event_files(folder: str | None = None, *, include_outputs: bool = False) -> list[Path]:
    """Every event file under events/ (or under events/<folder>), sorted; expected outputs left out."""
    root = EVENTS_DIR / folder if folder else EVENTS_DIR
    return sorted(path for path in root.rglob("*.json") if include_outputs or not path.name.endswith(OUTPUT_SUFFIX))
