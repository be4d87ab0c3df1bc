"""The README is the newcomer's entry point: it must match the code it describes."""

from __future__ import annotations

from pathlib import Path

from hub.cli import cli
from hub.settings import HubSettings

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_documented() -> None:
    missing = [
        f"HUB_{name.upper()}"
        for name in HubSettings.model_fields
        if f"`HUB_{name.upper()}`" not in README
    ]
    assert missing == []


def test_every_cli_command_is_documented() -> None:
    assert all(f"hub {name}" in README for name in cli.commands)


def test_ci_runs_the_readme_test_command() -> None:
    assert "bash deploy/demo.sh" in README
    assert "bash tests/run.sh" in README
    assert "bash tests/run.sh" in (ROOT / ".ci" / "run").read_text()
