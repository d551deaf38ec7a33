"""moto's server for the local stack, applying one API call at a time.

moto applies a DynamoDB transaction by copying the table state and restoring that copy if the
transaction is cancelled, so two calls inside moto at once can undo each other's committed writes (a
lost session turn), which real DynamoDB never does. A lock around the application makes each API call
atomic, as it is on AWS, while clients still race between calls exactly as they would there.
Connections are still served on threads with keep-alive. An SQS long poll (ReceiveMessage with a wait)
is the one call let through without the lock: moto sleeps inside it, and holding the lock there would
stall every other call (the worker's heartbeats, the REST API's reads) for the whole wait. Run as
``python -m seekless_local.moto_server HOST PORT``.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

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


def main(argv: list[str] | None = None) -> None:
    host, port = (argv if argv is not None else sys.argv[1:])[:2]
    app = OneCallAtATime(DomainDispatcherApplication(create_backend_app))
    run_simple(host, int(port), app, threaded=True, use_reloader=False, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
