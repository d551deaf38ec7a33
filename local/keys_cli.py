"""`seekless keys`: an operator's API key commands (create, list, revoke, rotate). docs/CLI.md is the
user's guide.

Where the keys are managed:
- a REST API's admin routes (/v1/admin/keys) given `--url` (or SEEKLESS_URL) and the admin key
  (`--admin-key` or SEEKLESS_ADMIN_KEY): a deployed stack, or the local one;
- with neither `--url` nor `--table`: the running `seekless dev`'s admin routes, found with its admin
  key through its state file;
- a keys table given `--table` (a deployed stack's `ApiKeysTableName` output), straight through
  DynamoDB with the operator's own AWS credentials: the bootstrap path, before anyone holds the admin
  key, and the one left when the API is down.
Both ways end in the same ``KeyAdmin`` and the same API objects (``ApiKeyRecord.to_api``), so the
output is the same. A new key is printed once, on stdout, and never logged; the admin key is never
printed at all.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from seekless.errors import SeeklessError
from seekless_local.client_cli import ApiError, Rest

if TYPE_CHECKING:
    import httpx

    from seekless.keys import KeyAdmin
    from seekless_local.stack import LocalServices

Run = Callable[[argparse.Namespace], int]
LIMIT_OPTIONS = {
    "rpm": "requests per minute",
    "tpm": "tokens per minute (prompt estimate + max_tokens reserved, then reconciled)",
    "daily_tokens": "tokens per day",
    "monthly_tokens": "tokens per month",
}
PAGE_SIZE = 100  # the admin API's largest page


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
        "--url",
        metavar="URL",
        help="a REST API's base URL, /v1 included (default SEEKLESS_URL, else the running `seekless dev`)",
    )
    target.add_argument(
        "--admin-key",
        metavar="KEY",
        help="the admin key for --url (default SEEKLESS_ADMIN_KEY; prefer the variable: a command line is visible)",
    )
    target.add_argument(
        "--timeout", type=float, default=60.0, metavar="SECONDS", help="seconds to wait for the API (60)"
    )
    target.add_argument(
        "--table",
        metavar="NAME",
        help="manage a deployed stack's keys table (its ApiKeysTableName output) with your AWS credentials instead",
    )
    target.add_argument("--region", metavar="REGION", help="the table's region (with --table; default: AWS config)")
    target.add_argument("--endpoint-url", metavar="URL", help="a DynamoDB endpoint other than AWS's (with --table)")
    target.add_argument("--json", action="store_true", help="print machine-readable JSON")

    keys = commands.add_parser(
        "keys",
        help="manage API keys (operators)",
        description="Create, list, revoke and rotate API keys through a REST API's admin routes (the running "
        "`seekless dev` by default, a deployed stack with --url and its admin key), or straight in a keys table "
        "with --table and your AWS credentials.",
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
        parser.set_defaults(clock=time.time, client=None, transport=None)


def main(
    argv: list[str] | None = None,
    *,
    clock: Callable[[], float] | None = None,
    client: Any = None,
    transport: httpx.BaseTransport | None = None,
) -> int:
    """`keys` on its own parser. For tests: ``clock`` and ``client`` (a boto3 DynamoDB client) for
    --table, ``transport`` (httpx) for the REST API."""
    parser = argparse.ArgumentParser(prog="seekless")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    if clock is not None:
        args.clock = clock
    args.client = client
    args.transport = transport
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

        error: dict[str, Any]
        try:
            return run(args)
        except SeeklessError as failure:  # from the table: the object the admin API would answer with
            error = failure.to_body()["error"]
        except ApiError as failure:  # the admin API's own error object, or a connection error
            error = failure.error
        except ClientError as failure:
            error = _aws_error(failure, args).error
        except BotoCoreError as failure:  # no credentials, no region, endpoint unreachable...
            error = KeysError(f"AWS: {failure}", code="aws_error").error
        except KeysError as failure:
            error = failure.error
        if args.json:
            print(json.dumps({"error": error}))
        else:
            print(f"error: {error.get('message')}", file=sys.stderr)
        return 1

    return guarded


def _aws_error(error: Any, args: argparse.Namespace) -> KeysError:
    code = str(error.response.get("Error", {}).get("Code", ""))
    message = str(error.response.get("Error", {}).get("Message", error))
    if code == "ResourceNotFoundException":
        return KeysError(
            f"table {args.table!r} was not found ({message}); check --table and --region", code="table_not_found"
        )
    return KeysError(f"AWS {code}: {message}", code="aws_error")


# -- where the keys are -----------------------------------------------------------------------------


class Keys(Protocol):
    """Key management as the admin API offers it; every answer is the API's JSON object."""

    def create(self, tenant: str, name: str | None, limits: dict[str, int | None]) -> dict[str, Any]: ...

    def list(self, tenant: str | None) -> dict[str, Any]: ...

    def revoke(self, key_id: str) -> dict[str, Any]: ...

    def rotate(self, key_id: str, grace_seconds: int) -> dict[str, Any]: ...


class TableKeys:
    """Straight in the keys table (``--table``), through the same KeyAdmin as the admin routes."""

    def __init__(self, admin: KeyAdmin) -> None:
        self._admin = admin

    def create(self, tenant: str, name: str | None, limits: dict[str, int | None]) -> dict[str, Any]:
        from seekless.models import KeyLimits

        return self._admin.create(tenant, name=name, limits=KeyLimits(**limits)).to_api()

    def list(self, tenant: str | None) -> dict[str, Any]:
        from seekless.api.lists import list_page

        return list_page([record.to_api() for record in self._admin.list_keys(tenant).items], False)

    def revoke(self, key_id: str) -> dict[str, Any]:
        return self._admin.revoke(key_id).to_api()

    def rotate(self, key_id: str, grace_seconds: int) -> dict[str, Any]:
        return self._admin.rotate(key_id, grace_seconds=grace_seconds).to_api()


class ApiKeys:
    """Through a REST API's admin routes, with the admin key."""

    def __init__(self, rest: Rest) -> None:
        self._rest = rest

    def create(self, tenant: str, name: str | None, limits: dict[str, int | None]) -> dict[str, Any]:
        body = {"tenant": tenant, "name": name, **limits}
        return self._rest.call("POST", "/admin/keys", json={k: v for k, v in body.items() if v is not None})

    def list(self, tenant: str | None) -> dict[str, Any]:
        """Every page, as one list: the same object the table gives."""
        from seekless.api.lists import list_page

        records: list[dict[str, Any]] = []
        query: dict[str, Any] = {"limit": PAGE_SIZE, **({"tenant": tenant} if tenant is not None else {})}
        while True:
            page = self._rest.call("GET", "/admin/keys", params=query)
            records += page["data"]
            if not page["has_more"]:
                return list_page(records, False)
            query["after"] = page["last_id"]

    def revoke(self, key_id: str) -> dict[str, Any]:
        return self._rest.call("POST", f"/admin/keys/{quote(key_id, safe='')}/revoke")

    def rotate(self, key_id: str, grace_seconds: int) -> dict[str, Any]:
        return self._rest.call(
            "POST", f"/admin/keys/{quote(key_id, safe='')}/rotate", json={"grace_seconds": grace_seconds}
        )


@contextlib.contextmanager
def _keys(args: argparse.Namespace) -> Iterator[Keys]:
    if args.table:
        if args.url:
            raise KeysError("--url and --table name two different places: give one", code="usage")
        yield TableKeys(_table_admin(args))
        return
    if args.region or args.endpoint_url:
        raise KeysError("--region and --endpoint-url need --table (the keys table to use)", code="usage")
    url, admin_key = _api(args)
    with Rest(url, admin_key, timeout=args.timeout, transport=args.transport) as rest:
        yield ApiKeys(rest)


def _api(args: argparse.Namespace) -> tuple[str, str]:
    """The REST API's base URL and the admin key to call it with."""
    url = args.url or os.environ.get("SEEKLESS_URL")
    if not url:
        running = _running_stack()
        if not running.rest_url or not running.admin_api_key:
            raise KeysError(
                "the running `seekless dev` has no admin API (it predates it): restart it", code="no_local_admin_api"
            )
        return running.rest_url + "/v1", args.admin_key or running.admin_api_key
    admin_key = args.admin_key or os.environ.get("SEEKLESS_ADMIN_KEY") or _local_admin_key(url)
    if not admin_key:
        raise KeysError(
            f"{url} needs the admin key: set SEEKLESS_ADMIN_KEY (or --admin-key). A deployed stack's is in "
            "Secrets Manager: aws secretsmanager get-secret-value --secret-id <AdminApiKeySecretArn output> "
            "--query SecretString --output text",
            code="no_admin_key",
        )
    return url, admin_key


def _running_stack() -> LocalServices:
    from seekless_local.stack import default_state_file, running_stack

    running = running_stack()
    if running is None:
        raise KeysError(
            f"no `seekless dev` is running (no live state file at {default_state_file()}): start one with "
            "`make dev`, or name a deployed stack with --url (and its admin key) or --table",
            code="no_local_stack",
        )
    return running


def _local_admin_key(url: str) -> str | None:
    """The running `seekless dev`'s admin key, when ``url`` is that stack's."""
    from seekless_local.stack import running_stack

    running = running_stack()
    if running is None or not running.rest_url or not (url.rstrip("/") + "/").startswith(running.rest_url + "/"):
        return None
    return running.admin_api_key


def _table_admin(args: argparse.Namespace) -> KeyAdmin:
    import boto3

    from seekless.adapters.dynamodb import DynamoKeyStore
    from seekless.keys import KeyAdmin

    client = args.client or boto3.client("dynamodb", region_name=args.region, endpoint_url=args.endpoint_url)
    return KeyAdmin(DynamoKeyStore(args.table, client=client, clock=args.clock))


# -- the commands -----------------------------------------------------------------------------------


def _create(args: argparse.Namespace) -> int:
    limits = {option: getattr(args, option) for option in LIMIT_OPTIONS}
    with _keys(args) as keys:
        created = keys.create(args.tenant, args.name, limits)
    if args.json:
        _print_json(created)
        return 0
    print(f"API key for tenant {created['tenant']!r} (shown once; only its hash is stored):")
    print(created["key"])
    print(f"key id {created['id']}; limits: {_limits_text(created['limits'])}")
    return 0


def _list(args: argparse.Namespace) -> int:
    with _keys(args) as keys:
        listed = keys.list(args.tenant)
    if args.json:
        _print_json(listed)
        return 0
    records = listed["data"]
    if not records:
        print(f"no keys for tenant {args.tenant!r}" if args.tenant else "no keys")
        return 0
    rows = [("KEY ID", "TENANT", "NAME", "STATUS", "LIMITS", "CREATED")]
    rows += [
        (
            record["id"],
            record["tenant"],
            record["name"] or "-",
            _status_text(record),
            _limits_text(record["limits"]),
            _when(record["created_at"]),
        )
        for record in records
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])
    return 0


def _revoke(args: argparse.Namespace) -> int:
    with _keys(args) as keys:
        record = keys.revoke(args.key_id)
    if args.json:
        _print_json(record)
        return 0
    print(
        f"revoked {record['id']} (tenant {record['tenant']!r}). Running functions may accept it for up to "
        "SEEKLESS_KEY_CACHE_SECONDS more (60 by default)."
    )
    return 0


def _rotate(args: argparse.Namespace) -> int:
    with _keys(args) as keys:
        rotated = keys.rotate(args.key_id, args.grace_seconds)
    if args.json:
        _print_json(rotated)
        return 0
    old = rotated["previous"]
    print(f"New API key for tenant {rotated['tenant']!r} (shown once; only its hash is stored):")
    print(rotated["key"])
    print(f"new key id {rotated['id']} (same name and limits: {_limits_text(rotated['limits'])})")
    if old["status"] == "revoked":
        print(f"old key id {old['id']}: revoked now (gone within SEEKLESS_KEY_CACHE_SECONDS, 60 by default)")
    else:
        print(f"old key id {old['id']}: keeps working until {_when(old['expires_at'])} ({args.grace_seconds} s)")
    return 0


# -- output -----------------------------------------------------------------------------------------


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def _limits_text(limits: dict[str, int | None]) -> str:
    shown = [f"{option}={limits[option]}" for option in LIMIT_OPTIONS if limits.get(option)]
    return " ".join(shown) or "unlimited"


def _status_text(record: dict[str, Any]) -> str:
    if record["status"] == "active" and record["expires_at"] is not None:
        return f"active until {_when(record['expires_at'])}"
    return str(record["status"])


def _when(epoch: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(epoch)) if epoch is not None else "-"
