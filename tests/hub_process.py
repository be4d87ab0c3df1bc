"""Run the ``hub`` command in a subprocess, as a person runs it from a shell."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def hub_command(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``hub ARGS`` with only the given HUB_* settings, this checkout's code, and ``cwd`` (so
    no .env of the checkout is read)."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith("HUB_")}
    return subprocess.run(
        [sys.executable, "-m", "hub", *args],
        env={**clean, "PYTHONPATH": str(REPO_ROOT), **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def register_schemas(registry_url: str, cwd: Path) -> dict[str, int]:
    """``hub schemas register`` against ``registry_url``; type name → id from its output."""
    result = hub_command(
        "schemas", "register", env={"HUB_SCHEMA_REGISTRY_URL": registry_url}, cwd=cwd
    )
    assert result.returncode == 0, result.stderr
    ids = dict(line.split(": id ") for line in result.stdout.splitlines())
    return {name: int(schema_id) for name, schema_id in ids.items()}
