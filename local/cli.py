"""The `seekless` command: developer tooling for the local stack."""

from __future__ import annotations

import argparse
import signal
import sys
import threading


def _dev(args: argparse.Namespace) -> int:
    from seekless_local.stack import LocalStack, StackConfig

    config = StackConfig.from_environment()
    if args.port is not None:
        config.rest_port = args.port
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


def _emulator(args: argparse.Namespace) -> int:
    from seekless_local import emulator

    emulator.main(args.rest)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="seekless", description="seekless developer tooling")
    commands = parser.add_subparsers(dest="command", required=True)
    dev = commands.add_parser("dev", help="run the whole stack locally (REST on :3000)")
    dev.add_argument("--port", type=int, default=None, help="REST port (default 3000 or SEEKLESS_REST_PORT)")
    dev.set_defaults(run=_dev)
    emulate = commands.add_parser("emulator", help="run the DeepSeek emulator on its own", add_help=False)
    emulate.add_argument("rest", nargs=argparse.REMAINDER)
    emulate.set_defaults(run=_emulator)
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
