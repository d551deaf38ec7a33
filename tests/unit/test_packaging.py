"""What ships: the layer's requirements match the package's, handlers build nothing at import, and local
tooling never leaks into the layer."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def requirement_lines(text: str) -> set[str]:
    return {line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")}


def test_layer_requirements_match_the_package_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    layer = requirement_lines((ROOT / "layers/common/requirements.txt").read_text())
    assert layer == set(project["dependencies"])


def test_runtime_package_never_imports_local_tooling() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "layers/common/seekless").rglob("*.py")
        if "seekless_local" in path.read_text()
    ]
    handlers = (ROOT / "functions").rglob("*.py")
    offenders += [str(path.relative_to(ROOT)) for path in handlers if "seekless_local" in path.read_text()]
    assert offenders == []


def test_rest_handler_import_builds_no_client_and_reads_no_settings() -> None:
    """Nothing runs at import: building a boto3, httpx or Redis client, or the settings, fails the probe."""
    probe = f"""
import importlib.util, os, sys
import boto3, httpx, redis.asyncio
def refuse(*a, **k): raise SystemExit("client built at import")
boto3.client = boto3.resource = refuse
httpx.AsyncClient.__init__ = refuse
redis.asyncio.Redis.from_url = refuse
import seekless.wiring
seekless.wiring.Settings = refuse
spec = importlib.util.spec_from_file_location("rest_app", {str(ROOT / "functions/rest_api/app.py")!r})
module = importlib.util.module_from_spec(spec)
sys.modules["rest_app"] = module
spec.loader.exec_module(module)
assert callable(module.handler)
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr + result.stdout


def imported_by(handler: str) -> set[str]:
    probe = f"""
import importlib.util, sys, json
spec = importlib.util.spec_from_file_location("handler", {str(ROOT / handler)!r})
module = importlib.util.module_from_spec(spec)
sys.modules["handler"] = module
spec.loader.exec_module(module)
print(json.dumps(sorted(sys.modules)))
"""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    import json

    return set(json.loads(result.stdout))


def test_connect_and_disconnect_handlers_stay_light() -> None:
    """They run on every handshake and hang-up: no HTTP client, Redis, pydantic or boto3 at import
    (boto3 loads on first use), so their cold start stays a fraction of `import boto3`."""
    # Powertools imports the bare botocore package (for its version string, ~1 ms); a botocore client
    # or session would be the real cost.
    forbidden = {"httpx", "redis", "pydantic", "pydantic_settings", "boto3", "fastapi", "botocore.session"}
    for handler in ("functions/ws_connect/app.py", "functions/ws_disconnect/app.py"):
        modules = imported_by(handler)
        heavy = {name for name in modules if name in forbidden or name.split(".")[0] in forbidden}
        assert heavy == set(), f"{handler} imports {sorted(heavy)[:10]}"


def test_rest_handler_loads_the_decisions_code_only_when_a_decision_or_ruleset_is_asked_for() -> None:
    """The decisions service, the rules' models, the CEL engine and the JSON Schema validator are imported
    by the first ruleset or decision request (the engines by the first compile), never by a cold start that
    serves chats."""
    modules = imported_by("functions/rest_api/app.py")
    assert "seekless.api.routes.decisions" in modules  # the routes are served, but nothing behind them loaded
    loaded = {name for name in modules if name.split(".")[0] in {"cel_expr_python", "jsonschema_rs"}}
    assert loaded | ({"seekless.rules", "seekless.decisions"} & modules) == set()
