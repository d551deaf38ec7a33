"""`seekless rulesets` and `seekless decide`: hybrid decisions from the terminal (docs/CLI.md), through a
REST API: the running `seekless dev` by default (found through its state file, with its dev API key), a
deployed stack given `--url` and `--api-key`.

A ruleset file is YAML or JSON (YAML reads both); this client turns it into the JSON body of
POST /v1/rulesets, so the API itself takes one format. When the API refuses a rule it names the rule
and the line and column inside its condition; the client shows that line of the condition with a caret.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from seekless_local.client_cli import DEFAULT_URL, ApiError, Rest, _command
from seekless_local.stack import DEFAULT_DEV_API_KEY


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `rulesets` (push, get, list) and `decide` to the `seekless` parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        metavar="URL",
        help="REST base URL, /v1 included (default SEEKLESS_URL, else the running `seekless dev`)",
    )
    common.add_argument(
        "--api-key",
        metavar="KEY",
        help="API key (default SEEKLESS_API_KEY, else the local stack's dev key, SEEKLESS_DEV_API_KEY)",
    )
    common.add_argument("--json", action="store_true", help="print machine-readable JSON")
    common.add_argument(
        "--timeout", type=float, default=60.0, metavar="SECONDS", help="seconds to wait for the server (60)"
    )

    rulesets = commands.add_parser("rulesets", help="rulesets of hybrid decisions (docs/DECISIONS.md)")
    actions = rulesets.add_subparsers(dest="rulesets_command", required=True)
    push = actions.add_parser(
        "push", parents=[common], help="upload a ruleset file (YAML or JSON) as its id's next version"
    )
    push.add_argument("file", type=Path, metavar="FILE")
    push.set_defaults(run=_command(_push), transport=None)
    get = actions.add_parser("get", parents=[common], help="show a ruleset as YAML (the latest version by default)")
    get.add_argument("id")
    get.add_argument("--version", type=int, metavar="N", help="this version instead of the latest")
    get.set_defaults(run=_command(_get), transport=None)
    listing = actions.add_parser("list", parents=[common], help="list rulesets (the latest version of each)")
    listing.add_argument("--limit", type=int, default=20, metavar="N", help="rulesets per page (20)")
    listing.add_argument("--after", metavar="ID", help="the page after this ruleset id")
    listing.set_defaults(run=_command(_list), transport=None)

    decide = commands.add_parser("decide", parents=[common], help="decide on one record with a stored ruleset")
    decide.add_argument("--ruleset", required=True, metavar="ID", help="the ruleset's id")
    decide.add_argument("--version", type=int, metavar="N", help="this version of it (default: the latest)")
    decide.add_argument(
        "--input", required=True, metavar="JSON|@FILE", help="the record: JSON, @file.json, or @- for stdin"
    )
    decide.add_argument("--model", metavar="NAME", help="the model asked when no rule decides (default: the ruleset's)")
    decide.set_defaults(run=_command(_decide), transport=None)


def main(argv: list[str] | None = None, *, transport: httpx.BaseTransport | None = None) -> int:
    """`rulesets` and `decide` on their own parser; ``transport`` replaces the network (tests)."""
    parser = argparse.ArgumentParser(prog="seekless")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    args.transport = transport
    return int(args.run(args))


def _rest(args: argparse.Namespace) -> Rest:
    url = args.url or os.environ.get("SEEKLESS_URL") or _local_url() or DEFAULT_URL
    key = (
        args.api_key
        or os.environ.get("SEEKLESS_API_KEY")
        or os.environ.get("SEEKLESS_DEV_API_KEY")
        or DEFAULT_DEV_API_KEY
    )
    return Rest(url, key, timeout=args.timeout, transport=args.transport)


def _local_url() -> str | None:
    """The running `seekless dev`'s REST API, wherever its port is."""
    from seekless_local.stack import running_stack

    running = running_stack()
    return running.rest_url + "/v1" if running is not None and running.rest_url else None


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


# -- rulesets ---------------------------------------------------------------------------------------


def read_ruleset(path: Path) -> dict[str, Any]:
    """The ruleset file as the JSON object the API takes."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ApiError(f"{path}: {error.strerror or error}") from error
    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ApiError(f"{path} is not YAML or JSON: {error}") from error
    if not isinstance(spec, dict):
        raise ApiError(f"{path}: a ruleset is a mapping (id, description, input_schema, rules)")
    try:
        json.dumps(spec, allow_nan=False)
    except (TypeError, ValueError) as error:
        # YAML has dates, sets and infinities that JSON does not: say so here, not as a 400 later.
        raise ApiError(f"{path}: a ruleset must be plain JSON data ({error})") from error
    return spec


def _push(args: argparse.Namespace) -> int:
    spec = read_ruleset(args.file)
    with _rest(args) as rest:
        try:
            stored = rest.call("POST", "/rulesets", json=spec)
        except ApiError as error:
            if not args.json:
                _explain(error, spec, args.file)
            raise
    if args.json:
        _print_json(stored)
    else:
        print(f"pushed {stored['id']} version {stored['version']} ({_rules(stored['rule_count'])})")
    return 0


def _explain(error: ApiError, spec: dict[str, Any], path: Path) -> None:
    """Each problem of a refused ruleset, with the condition's line and a caret where the API says."""
    details = error.error.get("details")
    if not isinstance(details, list):
        return
    rules = {rule.get("id"): rule for rule in spec.get("rules", []) if isinstance(rule, dict)}
    print(f"error: {path}: the ruleset is invalid", file=sys.stderr)
    for problem in details:
        where = f"rule '{problem['rule']}' {problem['field']}" if problem.get("rule") else str(problem.get("field"))
        line, column = problem.get("line"), problem.get("column")
        if line is not None and column is not None:
            where += f", line {line}, column {column}"
        print(f"  {where}: {problem.get('message')}", file=sys.stderr)
        condition = (rules.get(problem.get("rule")) or {}).get(problem.get("field") or "")
        if isinstance(condition, str) and line is not None and column is not None:
            lines = condition.splitlines()
            if 0 < line <= len(lines):
                print(f"      {lines[line - 1]}", file=sys.stderr)
                print(f"      {' ' * (column - 1)}^", file=sys.stderr)
    # The summary line follows (the command's usual "error: ..."), so the details come first.


def _get(args: argparse.Namespace) -> int:
    params = {"version": args.version} if args.version is not None else None
    with _rest(args) as rest:
        stored = rest.call("GET", f"/rulesets/{args.id}", params=params)
    if args.json:
        _print_json(stored)
        return 0
    import yaml

    spec = {name: stored[name] for name in ("id", "description", "model", "input_schema", "rules")}
    if spec["model"] is None:
        del spec["model"]
    print(
        f"# {stored['id']} version {stored['version']}, pushed {_when(stored['created_at'])} "
        f"with key {stored['created_by']} ({_rules(stored['rule_count'])})"
    )
    print(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True, width=110), end="")
    return 0


def _list(args: argparse.Namespace) -> int:
    params = {"limit": args.limit, **({"after": args.after} if args.after else {})}
    with _rest(args) as rest:
        page = rest.call("GET", "/rulesets", params=params)
    if args.json:
        _print_json(page)
        return 0
    if not page["data"]:
        print("no rulesets")
        return 0
    rows = [("ID", "VERSION", "RULES", "MODEL", "PUSHED", "DESCRIPTION")]
    rows += [
        (
            summary["id"],
            str(summary["version"]),
            str(summary["rule_count"]),
            summary["model"] or "-",
            _when(summary["created_at"]),
            _short(summary["description"]),
        )
        for summary in page["data"]
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])
    if page.get("has_more"):
        print(f"more: seekless rulesets list --after {page['last_id']}")
    return 0


# -- decide -----------------------------------------------------------------------------------------


def read_record(value: str) -> Any:
    """``--input``: JSON itself, ``@file``, or ``@-`` for stdin."""
    source = "--input"
    if value.startswith("@"):
        name = value[1:]
        source = name if name != "-" else "stdin"
        try:
            value = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
        except OSError as error:
            raise ApiError(f"{name}: {error.strerror or error}") from error
    try:
        return json.loads(value)
    except ValueError as error:
        raise ApiError(f"{source} is not JSON: {error}") from error


def _decide(args: argparse.Namespace) -> int:
    record = read_record(args.input)
    body: dict[str, Any] = {"ruleset": args.ruleset, "input": record}
    if args.version is not None:
        body["version"] = args.version
    if args.model:
        body["model"] = args.model
    with _rest(args) as rest:
        decision = rest.call("POST", "/decisions", json=body)
    if args.json:
        _print_json(decision)
        return 0
    print(describe(decision))
    return 0


def describe(decision: dict[str, Any]) -> str:
    """What a person reads: the decision, who decided, why, and what it cost."""
    ruleset = decision["ruleset"]
    lines = [f"{decision['decision']} by {decision['decided_by']} ({ruleset['id']} version {ruleset['version']})"]
    lines += [f"  - {reason}" for reason in decision["reasons"]]
    if decision["rules_fired"]:
        fired = ", ".join(f"{rule['id']} ({rule['outcome']})" for rule in decision["rules_fired"])
        lines.append(f"  rules fired: {fired}")
    for error in decision["rule_errors"]:
        lines.append(f"  rule {error['id']} could not be evaluated: {error['message']}")
    facts = [decision["id"], f"{decision['latency_ms']} ms"]
    model = decision.get("model")
    if model is not None:
        attempts = model["attempts"]
        asked = f"{attempts} attempt{'s' if attempts != 1 else ''}" if attempts else "no model call"
        facts.append(f"{model['model']}, {asked}, {decision['usage']['total_tokens']} tokens")
    if decision.get("cache") == "hit":
        facts.append(f"cached: repeats {decision['cached_from']}")
    lines.append("  " + "; ".join(facts))
    return "\n".join(lines)


# -- output -----------------------------------------------------------------------------------------


def _rules(count: int) -> str:
    return f"{count} rule{'s' if count != 1 else ''}"


def _when(epoch: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(epoch))


def _short(text: str, most: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= most else text[: most - 1] + "…"
