"""`seekless rulesets` and `seekless decide` against a real local stack over its sockets, found through its
state file as `make dev` leaves it: what the user types, what they read, and the exit codes."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from seekless_local.cli import main
from seekless_local.redis_server import RedisServer
from seekless_local.stack import LocalStack
from tests.stacks import clean_upstream, emulated_stack

ROOT = Path(__file__).resolve().parents[2]
CARD_RISK = ROOT / "examples/rulesets/card_risk.yaml"
# A card payment no rule of card_risk settles: DeepSeek is asked.
PAYMENT = {
    "transaction_id": "tx_1",
    "amount": 180.0,
    "currency": "EUR",
    "ip_country": "FR",
    "card": {"country": "FR", "present": False},
    "merchant": {"country": "FR", "mcc": "5732"},
    "customer": {"known": False, "account_age_days": 40, "chargebacks_90d": 0},
    "velocity": {"tx_1h": 1, "tx_24h": 2, "amount_24h": 90.0, "countries_24h": 1},
}


@pytest.fixture(scope="module")
def stack(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    state_dir = tmp_path_factory.mktemp("state")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SEEKLESS_STATE_DIR", str(state_dir))
        with emulated_stack(
            redis_url=redis_server.url, event_sources=False, state_file=state_dir / "local-stack.json"
        ) as running:
            yield running


@pytest.fixture(autouse=True)
def upstream(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("SEEKLESS_URL", "SEEKLESS_API_KEY", "SEEKLESS_DEV_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    with clean_upstream(stack):
        yield


@pytest.fixture
def ruleset_file(tmp_path: Path) -> Path:
    """card_risk under an id of this test's own (the stack lives as long as the module)."""
    spec = yaml.safe_load(CARD_RISK.read_text())
    spec["id"] = "card_risk_" + uuid.uuid4().hex[:8]
    path = tmp_path / "ruleset.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str, code: int = 0) -> str:
    assert main(list(argv)) == code, capsys.readouterr()
    captured = capsys.readouterr()
    return captured.out if code == 0 else captured.out + captured.err


def cli_lines(err: str) -> list[str]:
    """The command's own lines of stderr: the stack runs in this process, and a log handler it bound to an
    earlier test's (since closed) captured stream reports that failure on stderr too."""
    lines = err.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("error: "))
    return [line for line in lines[first:] if line.startswith(("error: ", "  "))]


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    return json.loads(run(capsys, *argv, "--json"))


def ruleset_id(path: Path) -> str:
    return str(yaml.safe_load(path.read_text())["id"])


def test_push_makes_a_version_and_get_prints_yaml_that_pushes_back_unchanged(
    stack: LocalStack, ruleset_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = ruleset_id(ruleset_file)
    rules = len(yaml.safe_load(ruleset_file.read_text())["rules"])
    assert run(capsys, "rulesets", "push", str(ruleset_file)) == f"pushed {name} version 1 ({rules} rules)\n"
    shown = run(capsys, "rulesets", "get", name)
    assert shown.startswith(f"# {name} version 1, pushed ")
    again = tmp_path / "again.yaml"
    again.write_text(shown)
    assert run_json(capsys, "rulesets", "push", str(again))["version"] == 2
    first, second = (run_json(capsys, "rulesets", "get", name, "--version", str(n)) for n in (1, 2))
    assert {k: v for k, v in first.items() if k not in ("version", "created_at")} == {
        k: v for k, v in second.items() if k not in ("version", "created_at")
    }
    listed = run(capsys, "rulesets", "list", "--limit", "100")
    assert any(line.split()[:3] == [name, "2", str(rules)] for line in listed.splitlines())


def test_decide_prints_what_decided_and_why_and_asks_deepseek_only_when_needed(
    stack: LocalStack, ruleset_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = ruleset_id(ruleset_file)
    run(capsys, "rulesets", "push", str(ruleset_file))
    sanctioned = {**PAYMENT, "merchant": {"country": "KP", "mcc": "5732"}}
    out = run(capsys, "decide", "--ruleset", name, "--input", json.dumps(sanctioned))
    assert out.startswith(f"deny by rule:sanctioned_country ({name} version 1)\n")
    assert "  - A party to the payment is in a comprehensively sanctioned country.\n" in out
    assert stack.emulator.stats()["calls"] == 0
    record = tmp_path / "payment.json"
    record.write_text(json.dumps(PAYMENT))
    decided = run_json(capsys, "decide", "--ruleset", name, "--version", "1", "--input", f"@{record}")
    assert decided["decided_by"] in ("model", "policy") and decided["model"]["attempts"] == 1
    assert stack.emulator.stats()["calls"] == 1
    again = run(capsys, "decide", "--ruleset", name, "--input", f"@{record}")
    assert f"cached: repeats {decided['id']}" in again and stack.emulator.stats()["calls"] == 1


def test_a_refused_rule_is_shown_with_its_line_and_a_caret(
    stack: LocalStack, ruleset_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = yaml.safe_load(ruleset_file.read_text())
    spec["rules"][1]["condition"] = 'input.customer.known\n  && input.merchant.mcc.lowerAscii() == "5411"'
    ruleset_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    err = run(capsys, "rulesets", "push", str(ruleset_file), code=1)
    lines = cli_lines(err)
    assert lines[0] == f"error: {ruleset_file}: the ruleset is invalid"
    assert lines[1].startswith("  rule 'tiny_amount_known_customer' condition, line 2, column ")
    assert lines[2] == "      " + '  && input.merchant.mcc.lowerAscii() == "5411"'  # the condition's second line
    column = int(lines[1].split("column ")[1].split(":")[0])
    assert lines[3] == "      " + " " * (column - 1) + "^"
    assert lines[-1].startswith("error: The ruleset is invalid: rule 'tiny_amount_known_customer' (line 2")
    assert main(["rulesets", "push", str(ruleset_file), "--json"]) == 1
    as_json = json.loads(capsys.readouterr().out)  # the error object, on stdout
    assert as_json["error"]["code"] == "ruleset_invalid" and as_json["error"]["details"][0]["line"] == 2


def test_a_record_the_schema_refuses_and_input_that_is_not_json_are_one_error_line(
    stack: LocalStack, ruleset_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = ruleset_id(ruleset_file)
    run(capsys, "rulesets", "push", str(ruleset_file))
    bad = {**PAYMENT, "currency": "euro"}
    (refused,) = cli_lines(run(capsys, "decide", "--ruleset", name, "--input", json.dumps(bad), code=1))
    assert refused.startswith("error: input.currency: ")
    (not_json,) = cli_lines(run(capsys, "decide", "--ruleset", name, "--input", "{nope", code=1))
    assert not_json.startswith("error: --input is not JSON")
    missing = cli_lines(run(capsys, "decide", "--ruleset", "no_such_ruleset", "--input", "{}", code=1))
    assert missing == ["error: No ruleset 'no_such_ruleset' found."]


def test_a_deployed_stack_is_reached_with_its_url_and_key(
    stack: LocalStack,
    ruleset_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SEEKLESS_STATE_DIR", str(tmp_path))  # no running stack to fall back on
    url = f"{stack.rest_url}/v1"
    pushed = run_json(capsys, "rulesets", "push", str(ruleset_file), "--url", url, "--api-key", stack.dev_api_key)
    assert pushed["version"] == 1
    (wrong,) = cli_lines(run(capsys, "rulesets", "list", "--url", url, "--api-key", "sk-wrong", code=1))
    assert wrong.startswith("error: ") and httpx.get(f"{stack.rest_url}/healthz").status_code == 200
