"""The README's configuration table lists every setting, so docs and code cannot drift apart."""

from __future__ import annotations

import re
from pathlib import Path

from seekless.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def settings_env_names() -> set[str]:
    names = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        choices = getattr(alias, "choices", None)
        names.add(str(choices[0]) if choices else "SEEKLESS_" + name.upper())
    return names


def test_readme_configuration_table_lists_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", readme, flags=re.M))
    assert settings_env_names() <= documented
    assert documented - settings_env_names() == set()


def test_readme_shows_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make dev" in readme and "make test" in readme
    assert "sam build" in readme and "sam deploy --guided" in readme
