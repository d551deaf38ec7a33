"""`seekless invoke`: one function of template.yaml, run in this process as `sam local invoke` runs it.

The handler is imported from its folder (``template.load_handler``) and invoked once on a fresh
execution environment with a Lambda context, its environment being the one the template gives it,
resolved against local services:

- those of a running `seekless dev`, found through its state file (``stack.running_stack``), so an
  invocation sees the same tables, queues, Redis and WebSocket connections as the running stack;
- else moto, Redis, the DeepSeek emulator and every table, queue and bucket of the template, started
  for the duration of the call (a services-only ``LocalStack``), which it says on stderr.

The result is JSON on stdout and everything else (logs included) goes to stderr, so the output can be
piped. A handler that raises gives Lambda's error object (errorMessage, errorType, stackTrace) on
stdout and a non-zero exit status.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import sys
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

from seekless_local.events import ManifestEvent
from seekless_local.stack import REGION, LocalServices, LocalStack, StackConfig, running_stack
from seekless_local.template import DEFAULT_FUNCTION_TIMEOUT, TEMPLATE_PATH, function_specs, load_template

Announce = Callable[[str], None]


class HandlerError(Exception):
    """The handler raised; ``payload`` is what Lambda answers with for an unhandled error."""

    def __init__(self, payload: dict[str, Any]) -> None:
        super().__init__(payload["errorMessage"])
        self.payload = payload


class UnknownFunction(LookupError):
    pass


_LOCAL_DIR = str(Path(__file__).resolve().parent)
_EXECUTOR_DIR = str(Path(concurrent.futures.__file__).resolve().parent)


def error_payload(error: BaseException) -> dict[str, Any]:
    """Lambda's answer to an unhandled error, as `sam local invoke` prints it: the stack trace from the
    handler down, without the frames of the local machinery that called it."""
    frames = [
        frame
        for frame in traceback.extract_tb(error.__traceback__)
        if not frame.filename.startswith((_LOCAL_DIR, _EXECUTOR_DIR))
    ]
    return {
        "errorMessage": str(error),
        "errorType": type(error).__name__,
        "requestId": str(uuid.uuid4()),
        "stackTrace": traceback.format_list(frames),
    }


def read_event(source: str | None, *, stdin: TextIO | None = None) -> Any:
    """The event for ``--event``: none → ``{}``; ``-`` → JSON from stdin; else a file or an events/ name."""
    from seekless_local.events import event_path

    if source is None:
        return {}
    if source == "-":
        return json.load(stdin or sys.stdin)
    return json.loads(event_path(source).read_text(encoding="utf-8"))


def _announce_to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def local_services(
    *,
    state_file: Path | None = None,
    redis_url: str | None = None,
    announce: Announce = _announce_to_stderr,
) -> Iterator[LocalServices]:
    """The services of a running `seekless dev`, else services started for as long as this lasts."""
    running = running_stack(state_file)
    if running is not None:
        announce(f"using the local stack of `seekless dev` (pid {running.pid}, AWS at {running.moto_url})")
        if not running.deepseek_emulated and not os.environ.get("DEEPSEEK_API_KEY"):
            # The state file holds no secret: the key must come from this shell, as it did for the stack.
            announce("  the stack calls the real DeepSeek API: set DEEPSEEK_API_KEY here too, or calls to it fail")
        yield running
        return
    announce("no `seekless dev` running: starting moto, Redis and DeepSeek for this call (services only)")
    config = StackConfig(
        rest_port=0,
        ws_port=0,
        rest_gateway=False,
        event_sources=False,  # one function runs, as `sam local invoke` runs one: nothing else reacts
        worker=False,
        redis_url=redis_url or os.environ.get("REDIS_URL") or None,
        deepseek_api_key=os.environ.get("DEEPSEEK_API_KEY") or None,
        deepseek_base_url=os.environ.get("DEEPSEEK_BASE_URL") or None,
    )
    with LocalStack(config) as stack:
        redis = stack.redis.describe if stack.redis else "no Redis"
        announce(f"  AWS (moto) at {stack.moto_url}; {redis}; {stack.deepseek_description}")
        yield stack.services()


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def invoke_function(
    logical_id: str,
    event: Any,
    services: LocalServices,
    *,
    template_path: Path | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> Any:
    """Invoke ``logical_id``'s handler once with ``event`` against ``services``; its result, or
    HandlerError carrying Lambda's error object when the handler raises."""
    from seekless_local.gateway import ExecutionEnvironments
    from seekless_local.template import load_handler

    path = template_path or TEMPLATE_PATH
    template = load_template(path)
    specs = function_specs(template, base_dir=Path(path).resolve().parent)
    if logical_id not in specs:
        raise UnknownFunction(f"no function {logical_id!r} in {path}; the functions are: {', '.join(specs)}")
    spec = specs[logical_id]
    env = {
        **services.function_environment(spec, template),
        **services.infrastructure_environment(deepseek_api_key=os.environ.get("DEEPSEEK_API_KEY")),
        **(extra_env or {}),
    }
    with _environment(env):
        # A fresh environment per call: a cold start, with settings read from this environment.
        environments = ExecutionEnvironments(
            lambda: load_handler(spec),
            name=logical_id,
            timeout=float(spec.timeout or DEFAULT_FUNCTION_TIMEOUT),
            size=1,
        )
        try:
            return environments.invoke_sync(event)
        except Exception as error:
            raise HandlerError(error_payload(error)) from error
        finally:
            environments.close()


def manifest_entry(logical_id: str, source: str | None) -> tuple[bool, ManifestEvent | None]:
    """Whether ``source`` is a file under events/, and the manifest's entry for it under ``logical_id``."""
    from seekless_local.events import EVENTS_DIR, event_name, event_path, load_manifest

    if source is None or source == "-":
        return False, None
    try:
        path = event_path(source).resolve()
        if not path.is_relative_to(EVENTS_DIR):
            return False, None
        consumer = load_manifest().get(logical_id)
    except (OSError, ValueError):
        return False, None
    name = event_name(path)
    events = consumer.events if consumer is not None else ()
    return True, next((event for event in events if event.name == name), None)


def seed_objects(services: LocalServices, event: ManifestEvent, announce: Announce = _announce_to_stderr) -> None:
    """Put the S3 objects the event refers to (its manifest ``objects``) where they are missing, as a user
    would upload the file before S3 sent the event."""
    import boto3
    from botocore.exceptions import ClientError

    from seekless_local.events import EVENTS_DIR

    if not event.objects:
        return
    s3 = boto3.client(
        "s3",
        endpoint_url=services.moto_url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 - moto takes any credentials
    )
    for uri, file in event.objects:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        try:
            s3.head_object(Bucket=bucket, Key=key)
            continue
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                raise
        s3.put_object(Bucket=bucket, Key=key, Body=(EVENTS_DIR / file).read_bytes())
        announce(f"put {uri} (from events/{file}): the event refers to it")


def run(logical_id: str, event_source: str | None, *, stdout: TextIO | None = None) -> int:
    """`seekless invoke`: 0 with the result on stdout; 1 with Lambda's error object when the handler
    raised; 2 when the function or the event cannot be found."""
    out = stdout or sys.stdout
    # Handlers log (Powertools) and print to stdout; stdout is for the result alone, as with sam.
    with contextlib.redirect_stdout(sys.stderr):
        try:
            event = read_event(event_source)
        except (OSError, ValueError) as error:
            print(f"seekless invoke: {error}", file=sys.stderr)
            return 2
        if logical_id not in function_specs(load_template()):
            print(f"seekless invoke: no function {logical_id!r} in template.yaml", file=sys.stderr)
            print(f"  the functions are: {', '.join(function_specs(load_template()))}", file=sys.stderr)
            return 2
        in_events, entry = manifest_entry(logical_id, event_source)
        if in_events and entry is None:
            print(f"note: {event_source} is not listed for {logical_id} in events/manifest.json", file=sys.stderr)
        try:
            with local_services() as services:
                if entry is not None:
                    seed_objects(services, entry)
                result = invoke_function(logical_id, event, services)
        except HandlerError as error:
            print(json.dumps(error.payload), file=out, flush=True)
            return 1
        try:
            text = json.dumps(result)
        except (TypeError, ValueError) as error:
            # Lambda cannot serialise such a result either.
            payload = {"errorMessage": f"Unable to marshal response: {error}", "errorType": "Runtime.MarshalError"}
            print(json.dumps(payload), file=out, flush=True)
            return 1
    print(text, file=out, flush=True)
    return 0


def list_events(logical_id: str | None = None, *, stdout: TextIO | None = None, as_json: bool = False) -> int:
    """`seekless events`: every function of the template with its sample events, then the other
    consumers (the worker); a function with none says so. ``as_json``: the same as one JSON list."""
    from seekless_local.events import load_manifest

    out = stdout or sys.stdout
    consumers = load_manifest()
    specs = function_specs(load_template())
    names = [*specs, *(name for name, c in consumers.items() if c.kind != "function")]
    names += [name for name in consumers if name not in names]  # in the manifest, not in the template
    if logical_id is not None:
        if logical_id not in names:
            print(f"seekless events: no function {logical_id!r}; known: {', '.join(names)}", file=sys.stderr)
            return 2
        names = [logical_id]
    listing: list[dict[str, Any]] = []
    for name in names:
        consumer = consumers.get(name)
        entry: dict[str, Any] = {"name": name, "kind": "function" if name in specs else None, "events": []}
        if name in specs:
            entry["handler"] = f"{Path(specs[name].code_uri).relative_to(TEMPLATE_PATH.parent)}/{specs[name].handler}"
        elif consumer is not None and consumer.kind != "function":
            entry.update(kind=consumer.kind, description=consumer.description)
        else:
            entry["note"] = "listed in events/manifest.json but not a function of template.yaml"
        for event in consumer.events if consumer is not None else ():
            output = event.path.with_name(event.path.stem + "_output.json")
            entry["events"].append(
                {
                    "name": event.name,
                    "file": event.file,
                    "missing": not event.path.is_file(),
                    "expected_output": f"{event.name}_output.json" if output.is_file() else None,
                    "raises": event.raises,
                    "puts": [uri for uri, _ in event.objects],
                }
            )
        listing.append(entry)
    if as_json:
        print(json.dumps(listing, indent=2), file=out)
        return 0
    for entry in listing:
        if entry.get("handler"):
            header = f"{entry['name']}  ({entry['handler']})"
        elif entry.get("description"):
            header = f"{entry['name']}  (not a Lambda)\n  {entry['description']}"
        else:
            header = f"{entry['name']}  ({entry['note']})"
        print(header, file=out)
        if not entry["events"]:
            print("  (no sample events)", file=out)
        for event in entry["events"]:
            notes = ["missing"] if event["missing"] else []
            if event["expected_output"]:
                notes.append(f"expected output: {event['expected_output']}")
            if event["raises"] is not None:
                notes.append(f"raises {event['raises']!r}")
            notes += [f"puts {uri} first" for uri in event["puts"]]
            print(f"  {event['name']}" + (f"   ({'; '.join(notes)})" if notes else ""), file=out)
    if logical_id is None:
        print("\nRun one: seekless invoke <FunctionLogicalId> --event <name>", file=out)
    return 0
