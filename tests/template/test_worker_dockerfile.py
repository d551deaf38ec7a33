"""worker/Dockerfile read as text, as a linter would: slim base, dependencies before code, only the
runtime package, a non-root user, a health check, and SIGTERM reaching Python. No image is built
here (no Docker engine in the test environment)."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

import pytest

from seekless_local.template import TEMPLATE_PATH, load_template

ROOT = Path(TEMPLATE_PATH).parent
DOCKERFILE = ROOT / "worker" / "Dockerfile"
# BuildKit reads <Dockerfile>.dockerignore beside the Dockerfile named with -f, before the context's.
DOCKERIGNORE = ROOT / "worker" / "Dockerfile.dockerignore"
ENTRYPOINT = ["python", "-m", "seekless.worker"]


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, with comments dropped and continuation lines joined."""
    parsed: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or (line.startswith("#") and not pending):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        parsed.append((keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued instruction"
    return parsed


@pytest.fixture(scope="module")
def steps() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text(encoding="utf-8"))


def _all(steps: list[tuple[str, str]], keyword: str) -> list[str]:
    return [arguments for name, arguments in steps if name == keyword]


def _index(steps: list[tuple[str, str]], keyword: str, needle: str) -> int:
    (index,) = [i for i, (name, arguments) in enumerate(steps) if name == keyword and needle in arguments]
    return index


def _exec_form(arguments: str) -> list[str]:
    """The JSON array of an exec-form instruction; fails for shell form."""
    value: Any = json.loads(arguments)
    assert isinstance(value, list) and all(isinstance(part, str) for part in value), arguments
    return list(value)


# ---------------------------------------------------------------- the parser itself


def test_parser_joins_continuations_and_drops_comments() -> None:
    text = "# c\nFROM a\nRUN one \\\n    # inside\n    two\n\nUSER 1\n"
    assert instructions(text) == [("FROM", "a"), ("RUN", "one two"), ("USER", "1")]


# ---------------------------------------------------------------- the Dockerfile


def test_single_slim_python_3_12_base(steps: list[tuple[str, str]]) -> None:
    (base,) = _all(steps, "FROM")
    image = base.split()[0]
    assert image.startswith("python:3.12-slim"), image
    assert steps[0][0] == "FROM"


def test_dependencies_install_before_the_code_is_copied(steps: list[tuple[str, str]]) -> None:
    requirements = _index(steps, "COPY", "layers/common/requirements.txt")
    install = _index(steps, "RUN", "pip install")
    code = _index(steps, "COPY", "layers/common/seekless")
    assert requirements < install < code
    assert "-r" in steps[install][1] and "requirements.txt" in steps[install][1]
    assert "--no-cache-dir" in steps[install][1]


def test_only_the_runtime_package_and_its_requirements_are_copied(steps: list[tuple[str, str]]) -> None:
    sources = sorted(arguments.split()[0] for arguments in _all(steps, "COPY") + _all(steps, "ADD"))
    assert sources == ["layers/common/requirements.txt", "layers/common/seekless"]
    # Files the image needs exist where the Dockerfile expects them (context = repository root).
    for source in sources:
        assert (ROOT / source).exists(), source


def test_runs_as_a_non_root_user(steps: list[tuple[str, str]]) -> None:
    users = _all(steps, "USER")
    assert users, "no USER: the worker would run as root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    # Nothing runs as root after the switch, and the switch comes after the last install.
    last_user = max(i for i, (name, _) in enumerate(steps) if name == "USER")
    assert all(name != "RUN" for name, _ in steps[last_user:])


def test_sigterm_is_the_stop_signal_and_reaches_python(steps: list[tuple[str, str]]) -> None:
    assert _all(steps, "STOPSIGNAL") == ["SIGTERM"]
    (entrypoint,) = _all(steps, "ENTRYPOINT")
    # Exec form: Python is the process, no /bin/sh in front swallowing the signal.
    assert _exec_form(entrypoint) == ENTRYPOINT
    for command in _all(steps, "CMD"):
        _exec_form(command)


def test_health_check_asks_the_worker_itself(steps: list[tuple[str, str]]) -> None:
    (check,) = _all(steps, "HEALTHCHECK")
    options, _, command = check.partition("CMD ")
    assert "--interval=" in options and "--timeout=" in options
    assert _exec_form(command) == [*ENTRYPOINT, "--health"]


def test_ecs_runs_the_same_health_check_as_the_image() -> None:
    # ECS ignores an image's HEALTHCHECK, so the task definition repeats it.
    (check,) = _all(instructions(DOCKERFILE.read_text(encoding="utf-8")), "HEALTHCHECK")
    image_command = _exec_form(check.partition("CMD ")[2])
    containers = load_template()["Resources"]["WorkerTaskDefinition"]["Properties"]["ContainerDefinitions"]
    (worker,) = [c for c in containers if c["Name"] == "worker"]
    assert worker["HealthCheck"]["Command"] == ["CMD", *image_command]


def test_python_output_is_unbuffered(steps: list[tuple[str, str]]) -> None:
    environment = " ".join(_all(steps, "ENV"))
    assert "PYTHONUNBUFFERED=1" in environment


def test_build_command_is_documented_with_the_repository_root_as_context() -> None:
    assert "docker build -f worker/Dockerfile" in DOCKERFILE.read_text(encoding="utf-8")


# ---------------------------------------------------------------- the build context


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a leading ! re-includes. A pattern matching a
    parent folder matches what is under it."""
    ignored = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern.removeprefix("!").rstrip("/")
        if body.startswith("**/"):
            matched = any(fnmatch.fnmatchcase(part, body.removeprefix("**/")) for part in parts)
        else:
            matched = any(fnmatch.fnmatchcase(prefix, body) for prefix in prefixes)
        if matched:
            ignored = not negate
    return ignored


def test_build_context_holds_only_what_the_image_copies() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    assert not _ignored("layers/common/requirements.txt", patterns)
    assert not _ignored("layers/common/seekless/__init__.py", patterns)
    for path in (
        ".venv/bin/python",
        ".git/config",
        "local/seekless_local/__init__.py",
        "tests/conftest.py",
        "functions/rest_api/app.py",
        "layers/common/seekless/__pycache__/config.cpython-312.pyc",
        "samconfig.toml",
    ):
        assert _ignored(path, patterns), path
