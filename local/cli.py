"""The `seekless` command: developer tooling for the local stack."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading


def _dev(args: argparse.Namespace) -> int:
    from seekless_local.stack import LocalStack, StackConfig

    config = StackConfig.from_environment()
    if args.port is not None:
        config.rest_port = args.port
    if args.ws_port is not None:
        config.ws_port = args.ws_port
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    print("starting the local stack...", flush=True)
    with LocalStack(config) as stack:
        print(stack.summary(), flush=True)
        try:
            while not stopping.wait(3600):
                pass
        except KeyboardInterrupt:
            pass
        print("\nstopping...", flush=True)
    print("stopped.", flush=True)
    return 0


def _worker(args: argparse.Namespace) -> int:
    from seekless.worker.__main__ import main as worker_main

    return worker_main(["--health"] if args.health else [])


def _emulator(args: argparse.Namespace) -> int:
    from seekless_local import emulator

    emulator.main(args.rest)
    return 0


def _invoke(args: argparse.Namespace) -> int:
    from seekless_local.invoke import run

    return run(args.function, args.event)


def _events(args: argparse.Namespace) -> int:
    from seekless_local.invoke import list_events

    return list_events(args.function, as_json=args.json)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="seekless", description="seekless developer tooling")
    commands = parser.add_subparsers(dest="command", required=True)
    dev = commands.add_parser("dev", help="run the whole stack locally (REST on :3000)")
    dev.add_argument("--port", type=int, default=None, help="REST port (default 3000 or SEEKLESS_REST_PORT)")
    dev.add_argument("--ws-port", type=int, default=None, help="WebSocket port (default 3001 or SEEKLESS_WS_PORT)")
    dev.set_defaults(run=_dev)
    work = commands.add_parser("worker", help="run the job worker (environment-configured, as in the container)")
    work.add_argument("--health", action="store_true", help="exit 0 when a running worker's heartbeat is fresh")
    work.set_defaults(run=_worker)
    emulate = commands.add_parser("emulator", help="run the DeepSeek emulator on its own", add_help=False)
    emulate.add_argument("rest", nargs=argparse.REMAINDER)
    emulate.set_defaults(run=_emulator)
    invoke = commands.add_parser(
        "invoke",
        help="run one function of template.yaml in-process, as `sam local invoke` does",
        description="Invoke a function against the running `seekless dev` stack, else against services started "
        "for the call. The result is printed as JSON on stdout; logs go to stderr.",
    )
    invoke.add_argument("function", help="the function's logical id, e.g. RestApiFunction")
    invoke.add_argument(
        "--event", "-e", default=None, help="a JSON file, a name under events/ (rest/get_healthz), or - for stdin"
    )
    invoke.set_defaults(run=_invoke)
    events = commands.add_parser("events", help="list the sample events under events/ for each function")
    events.add_argument("function", nargs="?", default=None, help="only this function's events")
    events.add_argument("--json", action="store_true", help="print machine-readable JSON")
    events.set_defaults(run=_events)
    from seekless_local import client_cli, decisions_cli, keys_cli

    keys_cli.register(commands)  # keys create/list/revoke/rotate: the operator's commands (docs/CLI.md)
    client_cli.register(commands)  # chat, batch: the user-facing clients (docs/CLI.md)
    decisions_cli.register(commands)  # rulesets push/get/list, decide: hybrid decisions (docs/CLI.md)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except BrokenPipeError:
        # The reader went away (`seekless events | head`): stop quietly, as Unix tools do, and keep
        # Python from complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
