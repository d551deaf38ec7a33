"""moto's server for the local stack, applying one API call at a time.

moto applies a DynamoDB transaction by copying the table state and restoring that copy if the
transaction is cancelled, so two calls inside moto at once can undo each other's committed writes (a
lost session turn), which real DynamoDB never does. A lock around the application makes each API call
atomic, as it is on AWS, while clients still race between calls exactly as they would there. Each
connection is served on a thread of its own, and there is no keep-alive: werkzeug's development server
answers every request with ``Connection: close``, so every API call is a connection of its own. An SQS
long poll (ReceiveMessage with a wait) is the one call let through without the lock: moto sleeps inside
it, and holding the lock there would stall every other call (the worker's heartbeats, the REST API's
reads) for the whole wait.

moto's S3 event notifications leave out fields real S3 always sends (userIdentity, requestParameters,
responseElements, the bucket's ownerIdentity, the object's sequencer), which Powertools' S3 model
requires, and encode the slashes of the key, which S3 keeps: a handler could work here and fail on
AWS, or the other way round. The events are put in real S3's shape here.

moto's SQS sends cost time in proportion to the queue's depth, so sending N messages to one queue
costs N squared (a 50,000-line batch file's ingest would take hours); ``patch_moto_sends`` makes them
cost the same at any depth, and ``--stock-sqs`` leaves them as moto has them (to measure that cost:
bench/batch_split.py does).

Run as ``python -m seekless_local.moto_server HOST PORT [--stock-sqs]``.
"""

from __future__ import annotations

import argparse
import contextvars
import functools
import itertools
import secrets
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


_COUNTS = (
    "approximate_number_of_messages",
    "approximate_number_of_messages_delayed",
    "approximate_number_of_messages_not_visible",
)
_SENDS = ("send_message", "send_message_batch")
_PATCHED = "_seekless_depth_free_sends"  # set on moto's SQSBackend once patch_moto_sends has run
_sending: contextvars.ContextVar[bool] = contextvars.ContextVar("seekless_moto_sending", default=False)


def patch_moto_sends() -> None:
    """Make moto's SendMessage and SendMessageBatch cost the same at any queue depth (in this process).

    moto 5's ``send_message`` reads one queue attribute (``ContentBasedDeduplication``) through
    ``Queue.attributes``, which computes every attribute, the three approximate message counts among
    them, each a scan of every message in the queue: each send costs time in proportion to the depth,
    and sending N messages to one queue costs N squared (``send_message_batch`` sends each entry through
    ``send_message``, and a FIFO queue's batch reads the attributes again to check every entry). While
    a send runs, the counts read 0 (no send looks at them); at any other time (GetQueueAttributes) they
    are computed as before, so they stay exact. "A send runs" is a context variable, so a call on
    another thread at the same time (a long poll, let through without the lock) still counts.

    Idempotent: calling it again (a test process may) changes nothing.
    """
    from moto.sqs import models

    if getattr(models.SQSBackend, _PATCHED, False):
        return
    for name in _COUNTS:
        setattr(models.Queue, name, _uncounted_while_sending(getattr(models.Queue, name)))
    for name in _SENDS:
        setattr(models.SQSBackend, name, _flagged_as_sending(getattr(models.SQSBackend, name)))
    setattr(models.SQSBackend, _PATCHED, True)


def _uncounted_while_sending(stock: property) -> property:
    count = stock.fget
    assert count is not None

    def lazy(queue: Any) -> int:
        return 0 if _sending.get() else int(count(queue))

    return property(functools.wraps(count)(lazy))


def _flagged_as_sending(send: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(send)
    def sending(backend: Any, *args: Any, **kwargs: Any) -> Any:
        token = _sending.set(True)
        try:
            return send(backend, *args, **kwargs)
        finally:
            _sending.reset(token)

    return sending


def moto_sends_patched() -> bool:
    """Whether ``patch_moto_sends`` has run in this process."""
    from moto.sqs import models

    return bool(getattr(models.SQSBackend, _PATCHED, False))


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

    parser = argparse.ArgumentParser(prog="python -m seekless_local.moto_server", description=__doc__.splitlines()[0])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument(
        "--stock-sqs",
        action="store_true",
        help="leave moto's SQS sends as they are (each one scans the whole queue); to measure that cost",
    )
    args = parser.parse_args(argv)
    if not args.stock_sqs:
        patch_moto_sends()
    notifications._get_s3_event = _real_s3_event(notifications._get_s3_event)
    app = OneCallAtATime(DomainDispatcherApplication(create_backend_app))
    run_simple(args.host, args.port, app, threaded=True, use_reloader=False, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
