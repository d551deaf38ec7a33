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

    return list_events(args.function)


def _keys_create(args: argparse.Namespace) -> int:
    import json

    import boto3

    from seekless.adapters.dynamodb import DynamoKeyStore
    from seekless.auth import hash_key, new_key

    client = boto3.client("dynamodb", region_name=args.region, endpoint_url=args.endpoint_url)
    key = new_key()
    key_id = "key_" + hash_key(key)[:12]
    DynamoKeyStore(args.table, client=client).put(hash_key(key), tenant_id=args.tenant, key_id=key_id, name=args.name)
    if args.json:
        print(json.dumps({"key": key, "key_id": key_id, "tenant": args.tenant}))
    else:
        print(f"API key for tenant {args.tenant!r} (shown once; only its hash is stored):\n{key}")
    return 0


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
    events.set_defaults(run=_events)
    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(dest="keys_command", required=True)
    create = keys.add_parser("create", help="create an API key for a tenant and print it once")
    create.add_argument("--tenant", required=True)
    create.add_argument("--name", default=None, help="a label for the key")
    create.add_argument("--table", required=True, help="the ApiKeysTableName output of the stack")
    create.add_argument("--region", default=None)
    create.add_argument("--endpoint-url", default=None, help="e.g. the local stack's moto URL")
    create.add_argument("--json", action="store_true", help="print a JSON object")
    create.set_defaults(run=_keys_create)
    from seekless_local import client_cli

    client_cli.register(commands)  # chat, batch: the user-facing clients (docs/CLI.md)
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
