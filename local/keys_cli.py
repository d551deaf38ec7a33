"""`seekless keys`: an operator's API key commands (create, list, revoke, rotate), straight against the
keys table with the operator's own AWS credentials. docs/CLI.md is the user's guide.

The target is the running `seekless dev` stack (its state file names the moto endpoint and the table),
or a deployed stack's table given `--table` (its `ApiKeysTableName` output). A new key is printed once,
on stdout, and never logged; the table keeps only its SHA-256 hash. There is no admin REST API yet:
whoever may write the table manages keys.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from seekless.errors import Conflict, SeeklessError

if TYPE_CHECKING:
    from seekless.adapters.dynamodb import DynamoKeyStore
    from seekless.models import ApiKeyRecord, KeyLimits

Run = Callable[[argparse.Namespace], int]
MINT_ATTEMPTS = 3  # a new key whose id is taken (a 48-bit prefix collision) is minted again
LIMIT_OPTIONS = {
    "rpm": "requests per minute",
    "tpm": "tokens per minute (prompt estimate + max_tokens reserved, then reconciled)",
    "daily_tokens": "tokens per day",
    "monthly_tokens": "tokens per month",
}


class KeysError(Exception):
    """A failure to report as one message (or one JSON error object) and exit 1."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.error: dict[str, Any] = {"message": message, "type": "keys_error", "param": None, "code": code}


# -- commands and options ---------------------------------------------------------------------------


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `keys` (create, list, revoke, rotate) to the `seekless` parser."""
    target = argparse.ArgumentParser(add_help=False)
    target.add_argument(
        "--table",
        metavar="NAME",
        help="a deployed stack's keys table (its ApiKeysTableName output); default: the running `seekless dev`",
    )
    target.add_argument("--region", metavar="REGION", help="the table's region (with --table; default: AWS config)")
    target.add_argument("--endpoint-url", metavar="URL", help="a DynamoDB endpoint other than AWS's (with --table)")
    target.add_argument("--json", action="store_true", help="print machine-readable JSON")

    keys = commands.add_parser(
        "keys",
        help="manage API keys (operators)",
        description="Create, list, revoke and rotate API keys in the local stack's keys table, or a deployed "
        "stack's with --table and your AWS credentials.",
    ).add_subparsers(dest="keys_command", required=True)

    create = keys.add_parser("create", parents=[target], help="create a key for a tenant and print it once")
    create.add_argument("--tenant", required=True, metavar="TENANT", help="the tenant the key acts for")
    create.add_argument("--name", metavar="NAME", help="a label for the key")
    for option, meaning in LIMIT_OPTIONS.items():
        create.add_argument(
            "--" + option.replace("_", "-"), type=_positive, metavar="N", help=f"{meaning} (default: unlimited)"
        )
    create.set_defaults(run=_command(_create))

    listing = keys.add_parser("list", parents=[target], help="list keys (a tenant's, or all of them)")
    listing.add_argument("--tenant", metavar="TENANT", help="only this tenant's keys (else every key: a table scan)")
    listing.set_defaults(run=_command(_list))

    revoke = keys.add_parser("revoke", parents=[target], help="revoke a key by its id")
    revoke.add_argument("key_id", metavar="KEY_ID")
    revoke.set_defaults(run=_command(_revoke))

    rotate = keys.add_parser(
        "rotate", parents=[target], help="replace a key by a new one with the same tenant, name and limits"
    )
    rotate.add_argument("key_id", metavar="KEY_ID")
    rotate.add_argument(
        "--grace-seconds",
        type=_not_negative,
        default=0,
        metavar="N",
        help="how long the old key keeps working (default 0: revoked at once)",
    )
    rotate.set_defaults(run=_command(_rotate))
    for parser in (create, listing, revoke, rotate):
        parser.set_defaults(clock=time.time, client=None)


def main(argv: list[str] | None = None, *, clock: Callable[[], float] | None = None, client: Any = None) -> int:
    """`keys` on its own parser; ``clock`` and ``client`` (a boto3 DynamoDB client) are for tests."""
    parser = argparse.ArgumentParser(prog="seekless")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    if clock is not None:
        args.clock = clock
    args.client = client
    return int(args.run(args))


def _positive(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, not {text!r}")
    return value


def _not_negative(text: str) -> int:
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"cannot be negative ({text!r})")
    return value


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None


def _command(run: Run) -> Run:
    """Every failure ends as a message (or, with --json, an error object on stdout) and exit 1."""

    def guarded(args: argparse.Namespace) -> int:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return run(args)
        except SeeklessError as error:
            failure = KeysError(error.message, code=error.code)
        except ClientError as error:
            failure = _aws_error(error, args)
        except BotoCoreError as error:  # no credentials, no region, endpoint unreachable...
            failure = KeysError(f"AWS: {error}", code="aws_error")
        except KeysError as error:
            failure = error
        if args.json:
            print(json.dumps({"error": failure.error}))
        else:
            print(f"error: {failure.error['message']}", file=sys.stderr)
        return 1

    return guarded


def _aws_error(error: Any, args: argparse.Namespace) -> KeysError:
    code = str(error.response.get("Error", {}).get("Code", ""))
    message = str(error.response.get("Error", {}).get("Message", error))
    if code == "ResourceNotFoundException":
        where = f"table {args.table!r}" if args.table else "the local stack's keys table"
        return KeysError(f"{where} was not found ({message}); check --table and --region", code="table_not_found")
    return KeysError(f"AWS {code}: {message}", code="aws_error")


# -- the target -------------------------------------------------------------------------------------


def _store(args: argparse.Namespace) -> DynamoKeyStore:
    import boto3

    from seekless.adapters.dynamodb import DynamoKeyStore

    if args.table:
        client = args.client or boto3.client("dynamodb", region_name=args.region, endpoint_url=args.endpoint_url)
        return DynamoKeyStore(args.table, client=client, clock=args.clock)
    if args.region or args.endpoint_url:
        raise KeysError("--region and --endpoint-url need --table (the keys table to use)", code="usage")
    from seekless_local.stack import REGION, default_state_file, running_stack

    running = running_stack()
    if running is None or "ApiKeysTable" not in running.tables:
        raise KeysError(
            f"no `seekless dev` is running (no live state file at {default_state_file()}): start one with "
            "`make dev`, or name a deployed stack's keys table with --table",
            code="no_local_stack",
        )
    # moto takes any credentials; the operator's own must not be needed (or sent) for the local stack.
    client = args.client or boto3.client(
        "dynamodb",
        endpoint_url=running.moto_url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 - moto's placeholder, not a secret
    )
    return DynamoKeyStore(running.tables["ApiKeysTable"], client=client, clock=args.clock)


# -- the commands -----------------------------------------------------------------------------------


def _create(args: argparse.Namespace) -> int:
    from seekless.models import KeyLimits

    limits = KeyLimits(**{option: getattr(args, option) for option in LIMIT_OPTIONS})
    store = _store(args)
    key, record = _mint(
        lambda key_hash, key_id: store.create(
            key_hash, tenant_id=args.tenant, key_id=key_id, name=args.name, limits=limits
        )
    )
    if args.json:
        print(json.dumps({"key": key, **_record_json(record)}, indent=2))
        return 0
    print(f"API key for tenant {record.tenant_id!r} (shown once; only its hash is stored):")
    print(key)
    print(f"key id {record.key_id}; limits: {_limits_text(record.limits)}")
    return 0


def _list(args: argparse.Namespace) -> int:
    records = _store(args).list_keys(args.tenant)
    if args.json:
        print(json.dumps({"object": "list", "data": [_record_json(record) for record in records]}, indent=2))
        return 0
    if not records:
        print(f"no keys for tenant {args.tenant!r}" if args.tenant else "no keys")
        return 0
    rows = [("KEY ID", "TENANT", "NAME", "STATUS", "LIMITS", "CREATED")]
    rows += [
        (
            record.key_id,
            record.tenant_id,
            record.name or "-",
            _status_text(record),
            _limits_text(record.limits),
            _when(record.created_at),
        )
        for record in records
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])
    return 0


def _revoke(args: argparse.Namespace) -> int:
    record = _store(args).revoke(args.key_id)
    if args.json:
        print(json.dumps(_record_json(record), indent=2))
        return 0
    print(
        f"revoked {record.key_id} (tenant {record.tenant_id!r}). Running functions may accept it for up to "
        "SEEKLESS_KEY_CACHE_SECONDS more (60 by default)."
    )
    return 0


def _rotate(args: argparse.Namespace) -> int:
    store = _store(args)
    grace = args.grace_seconds
    key, (old, new) = _mint(
        lambda key_hash, key_id: store.rotate(args.key_id, key_hash, new_key_id=key_id, grace_seconds=grace)
    )
    if args.json:
        print(json.dumps({"key": key, **_record_json(new), "previous": _record_json(old)}, indent=2))
        return 0
    print(f"New API key for tenant {new.tenant_id!r} (shown once; only its hash is stored):")
    print(key)
    print(f"new key id {new.key_id} (same name and limits: {_limits_text(new.limits)})")
    if old.status == "revoked":
        print(f"old key id {old.key_id}: revoked now (gone within SEEKLESS_KEY_CACHE_SECONDS, 60 by default)")
    else:
        print(f"old key id {old.key_id}: keeps working until {_when(old.expires_at)} ({grace} s)")
    return 0


def _mint(write: Callable[[str, str], Any]) -> tuple[str, Any]:
    """A new key, stored by ``write(hash, key_id)``; minted again in the unlikely case its id is taken."""
    from seekless.auth import hash_key, new_key

    for attempt in range(MINT_ATTEMPTS):
        key = new_key()
        key_hash = hash_key(key)
        try:
            return key, write(key_hash, "key_" + key_hash[:12])
        except Conflict as error:
            if error.code != "key_exists" or attempt == MINT_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


# -- output -----------------------------------------------------------------------------------------


def _record_json(record: ApiKeyRecord) -> dict[str, Any]:
    return {
        "key_id": record.key_id,
        "tenant": record.tenant_id,
        "name": record.name,
        "status": record.status,
        "limits": {option: getattr(record.limits, option) for option in LIMIT_OPTIONS},
        "created_at": record.created_at,
        "expires_at": record.expires_at,
    }


def _limits_text(limits: KeyLimits) -> str:
    shown = [f"{option}={getattr(limits, option)}" for option in LIMIT_OPTIONS if getattr(limits, option)]
    return " ".join(shown) or "unlimited"


def _status_text(record: ApiKeyRecord) -> str:
    if record.status == "active" and record.expires_at is not None:
        return f"active until {_when(record.expires_at)}"
    return record.status


def _when(epoch: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(epoch)) if epoch is not None else "-"
