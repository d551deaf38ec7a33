"""The one event loader: the files under events/ feed `sam local invoke -e`, the tests and the tooling.

events/manifest.json says which function (or other consumer) each event is for; ``load_manifest``
reads it, `seekless events` prints it, and tests/integration/test_every_event.py holds it to the truth.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EVENTS_DIR = Path(__file__).resolve().parent.parent / "events"
MANIFEST_PATH = EVENTS_DIR / "manifest.json"

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
    """Every event file under events/ (or under events/<folder>), sorted; expected outputs (and the
    manifest) left out."""
    root = EVENTS_DIR / folder if folder else EVENTS_DIR
    return sorted(
        path
        for path in root.rglob("*.json")
        if path != MANIFEST_PATH and (include_outputs or not path.name.endswith(OUTPUT_SUFFIX))
    )


def event_name(path: Path) -> str:
    """``events/rest/post_chat.json`` → ``rest/post_chat`` (what `seekless invoke --event` takes)."""
    return path.resolve().relative_to(EVENTS_DIR).with_suffix("").as_posix()


def expected_output(path: Path) -> Any:
    """The content of ``<name>_output.json`` beside the event, or None when there is none."""
    output = path.with_name(path.stem + OUTPUT_SUFFIX)
    return json.loads(output.read_text(encoding="utf-8")) if output.is_file() else None


def matches_output(result: Any, expected: Any) -> bool:
    """Whether a function's result is the expected output: equal, or, for an API Gateway proxy response,
    its JSON body equal (the REST outputs hold the body, as Powertools' examples do)."""
    if result == expected:
        return True
    if isinstance(result, dict) and "statusCode" in result and isinstance(result.get("body"), str):
        try:
            return bool(json.loads(result["body"]) == expected)
        except ValueError:
            return False
    return False


# ---------------------------------------------------------------- events/manifest.json


@dataclass(frozen=True)
class ManifestEvent:
    """One event of the manifest: a file under events/ and what invoking it should come to."""

    file: str  # relative to events/, e.g. "rest/post_chat.json"
    raises: str | None = None  # the errorMessage the handler is expected to raise with, if it should
    why: str | None = None
    # S3 objects the event refers to, which must exist before it is invoked: (s3://bucket/key, a file
    # under events/ holding the content).
    objects: tuple[tuple[str, str], ...] = ()

    @property
    def path(self) -> Path:
        return EVENTS_DIR / self.file

    @property
    def name(self) -> str:
        return self.file.removesuffix(".json")


@dataclass(frozen=True)
class Consumer:
    """A function of template.yaml (``kind == "function"``), or something else that reads these events
    (``kind == "other"``: the GPU worker is an ECS task polling JobsQueue itself, not a Lambda)."""

    name: str
    kind: str
    events: tuple[ManifestEvent, ...]
    description: str = ""


_ENTRY_KEYS = {"event", "raises", "why", "objects"}


def _entry(raw: Any, where: str) -> ManifestEvent:
    if isinstance(raw, str):
        return ManifestEvent(file=raw)
    if isinstance(raw, dict) and isinstance(raw.get("event"), str) and set(raw) <= _ENTRY_KEYS:
        objects = raw.get("objects") or {}
        if not all(isinstance(uri, str) and uri.startswith("s3://") for uri in objects):
            raise ValueError(f"{where}: objects maps s3://bucket/key to a file under events/")
        return ManifestEvent(
            file=raw["event"], raises=raw.get("raises"), why=raw.get("why"), objects=tuple(sorted(objects.items()))
        )
    raise ValueError(f"{where}: an entry is a file name or {{event, raises?, why?, objects?}}, not {raw!r}")


def load_manifest(path: Path | None = None) -> dict[str, Consumer]:
    """Consumer name → its events, functions first (in the manifest's order)."""
    data = json.loads((path or MANIFEST_PATH).read_text(encoding="utf-8"))
    consumers: dict[str, Consumer] = {}
    for name, entries in data.get("functions", {}).items():
        events = tuple(_entry(raw, name) for raw in entries)
        consumers[name] = Consumer(name=name, kind="function", events=events)
    for name, other in data.get("other", {}).items():
        events = tuple(_entry(raw, name) for raw in other.get("events", []))
        consumers[name] = Consumer(name=name, kind="other", events=events, description=other.get("description", ""))
    return consumers


def manifest_events(consumers: Iterable[Consumer]) -> list[tuple[Consumer, ManifestEvent]]:
    return [(consumer, event) for consumer in consumers for event in consumer.events]
