"""Every sample event under events/ through the function events/manifest.json gives it, with the code
`seekless invoke` runs (``invoke_function`` against local services: moto, a real Redis, the DeepSeek
emulator, every table, queue and bucket of template.yaml).

The manifest is held to the truth: every event file is in it exactly once, every function of the
template has an event, and every event runs without an unhandled exception (or raises exactly what
the manifest says it should), matching ``<name>_output.json`` where there is one.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from seekless_local.events import (
    EVENTS_DIR,
    ManifestEvent,
    event_files,
    event_name,
    expected_output,
    load_manifest,
    manifest_events,
    matches_output,
)
from seekless_local.invoke import HandlerError, invoke_function, local_services, seed_objects
from seekless_local.stack import LocalServices
from seekless_local.template import function_specs

MANIFEST = load_manifest()
ENTRIES = manifest_events(MANIFEST.values())
FUNCTION_EVENTS = [(consumer.name, event) for consumer, event in ENTRIES if consumer.kind == "function"]


def test_every_event_file_is_in_the_manifest_exactly_once() -> None:
    listed = Counter(event.file for _, event in ENTRIES)
    on_disk = {event_name(path) + ".json" for path in event_files()}
    assert [file for file, times in listed.items() if times > 1] == []
    assert sorted(on_disk - set(listed)) == []  # an event nobody would know what to invoke with


def test_every_event_in_the_manifest_exists() -> None:
    listed = {event.file for _, event in ENTRIES}
    assert sorted(file for file in listed if not (EVENTS_DIR / file).is_file()) == []


def test_every_function_of_the_template_has_an_event() -> None:
    with_events = {consumer.name for consumer in MANIFEST.values() if consumer.kind == "function" and consumer.events}
    assert sorted(set(function_specs()) - with_events) == []


def test_the_manifest_names_only_functions_of_the_template() -> None:
    functions = {consumer.name for consumer in MANIFEST.values() if consumer.kind == "function"}
    assert sorted(functions - set(function_specs())) == []


def test_the_job_messages_belong_to_the_worker_not_to_a_function() -> None:
    worker = MANIFEST["worker"]
    assert worker.kind == "other" and worker.name not in function_specs()
    assert {event.name for event in worker.events} >= {"sqs/job_message", "sqs/job_message_websocket"}
    for event in worker.events:  # what the worker long-polls: JobsQueue's messages
        records = json.loads(event.path.read_text(encoding="utf-8"))["Records"]
        assert all("JobsQueue" in record["eventSourceARN"] for record in records)


def test_the_objects_events_refer_to_have_their_content_here() -> None:
    missing = [file for _, event in ENTRIES for _, file in event.objects if not (EVENTS_DIR / file).is_file()]
    assert missing == []


@pytest.fixture(scope="module")
def services(redis_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServices]:
    # A state file of this module's own (there is none): never a developer's running `seekless dev`.
    nowhere = tmp_path_factory.mktemp("state") / "local-stack.json"
    with local_services(state_file=nowhere, redis_url=redis_server.url, announce=lambda _: None) as started:
        yield started


@pytest.mark.parametrize(
    ("function", "event"), FUNCTION_EVENTS, ids=[f"{function}:{event.name}" for function, event in FUNCTION_EVENTS]
)
def test_event_through_its_function(function: str, event: ManifestEvent, services: LocalServices) -> None:
    seed_objects(services, event, announce=lambda _: None)
    payload = json.loads(event.path.read_text(encoding="utf-8"))
    if event.raises is not None:
        with pytest.raises(HandlerError) as raised:
            invoke_function(function, payload, services)
        assert raised.value.payload["errorMessage"] == event.raises
        return
    try:
        result = invoke_function(function, payload, services)
    except HandlerError as error:
        pytest.fail(f"{function} raised on {event.name}: {error.payload['errorType']}: {error.payload['errorMessage']}")
    json.dumps(result)  # Lambda must be able to serialise it
    expected = expected_output(event.path)
    if expected is not None:
        assert matches_output(result, expected), result
