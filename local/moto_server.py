"""moto's server for the local stack, applying one API call at a time.

moto applies a DynamoDB transaction by copying the table state and restoring that copy if the
transaction is cancelled, so two calls inside moto at once can undo each other's committed writes (a
lost session turn), which real DynamoDB never does. A lock around the application makes each API call
atomic, as it is on AWS, while clients still race between calls exactly as they would there.
Connections are still served on threads with keep-alive. An SQS long poll (ReceiveMessage with a wait)
is the one call let through without the lock: moto sleeps inside it, and holding the lock there would
stall every other call (the worker's heartbeats, the REST API's reads) for the whole wait.

moto's S3 event notifications leave out fields real S3 always sends (userIdentity, requestParameters,
responseElements, the bucket's ownerIdentity, the object's sequencer), which Powertools' S3 model
requires, and encode the slashes of the key, which S3 keeps: a handler could work here and fail on
AWS, or the other way round. The events are put in real S3's shape here.

Run as ``python -m seekless_local.moto_server HOST PORT``.
"""

from __future__ import annotations

import itertools
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote_plus

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple

_UNLOCKED = frozenset({"AmazonSQS.ReceiveMessage"})


class OneCallAtATime:
    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        if environ.get("HTTP_X_AMZ_TARGET") in _UNLOCKED:
            return list(self._app(environ, start_response))
        with self._lock:
            return list(self._app(environ, start_response))


_sequencer = itertools.count(time.time_ns())


def _real_s3_event(build: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    def event(event_name: str, bucket: Any, key: Any, notification_id: str) -> dict[str, Any]:
        built = build(event_name, bucket, key, notification_id)
        records = []
        for record in built["Records"]:
            s3 = record["s3"]
            s3["bucket"] = {
                "name": s3["bucket"]["name"],
                "ownerIdentity": {"principalId": "A3LOCALOWNER"},
                **s3["bucket"],
            }
            # S3 form-encodes the key but keeps its slashes ("in/red+flower.jpg"); moto encodes those too.
            s3["object"]["key"] = quote_plus(key.name, safe="/")
            if getattr(key, "version_id", None):
                s3["object"].setdefault("versionId", key.version_id)
            s3["object"].setdefault("sequencer", f"{next(_sequencer):018X}")
            records.append(
                {
                    **{k: record[k] for k in ("eventVersion", "eventSource", "awsRegion", "eventTime", "eventName")},
                    "userIdentity": {"principalId": "AWS:AIDALOCALUSER"},
                    "requestParameters": {"sourceIPAddress": "127.0.0.1"},
                    "responseElements": {
                        "x-amz-request-id": secrets.token_hex(8).upper(),
                        "x-amz-id-2": secrets.token_urlsafe(48),
                    },
                    **record,
                }
            )
        return {"Records": records}

    return event


def main(argv: list[str] | None = None) -> None:
    from moto.s3 import notifications

    host, port = (argv if argv is not None else sys.argv[1:])[:2]
    notifications._get_s3_event = _real_s3_event(notifications._get_s3_event)
    app = OneCallAtATime(DomainDispatcherApplication(create_backend_app))
    run_simple(host, int(port), app, threaded=True, use_reloader=False, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
