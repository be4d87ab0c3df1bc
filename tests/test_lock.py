"""The environment is the one requirements.lock describes, and the lock covers what we declare.

`deploy/setup-venv.sh` (tests/run.sh, the demo and CI) and the container install from the lock
with `pip --require-hashes`; these tests prove, on whatever machine runs them, that the
installed versions are the locked ones and that no declared requirement is missing from it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
import subprocess
import tomllib
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO_ROOT

LOCK = REPO_ROOT / "requirements.lock"
PIN = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+?)"
    r"(?:\s*;\s*(?P<marker>[^\\]+?))?\s*\\?$"
)


def _pins(lock: Path = LOCK) -> dict[str, tuple[str, str | None, int]]:
    """name -> (version, marker, number of hashes) of every pin in the lock."""
    pins: dict[str, tuple[str, str | None, int]] = {}
    current: str | None = None
    for line in lock.read_text().splitlines():
        match = PIN.match(line)
        if match:
            current = canonicalize_name(match["name"])
            pins[current] = (match["version"], match["marker"], 0)
        elif current and line.strip().startswith("--hash=sha256:"):
            version, marker, hashes = pins[current]
            pins[current] = (version, marker, hashes + 1)
    return pins


def _applies(marker: str | None) -> bool:
    return marker is None or Marker(marker).evaluate()


def test_every_pin_has_a_hash() -> None:
    pins = _pins()

    assert len(pins) > 50
    assert [name for name, (_, _, hashes) in pins.items() if hashes == 0] == []


def test_installed_versions_are_the_locked_ones() -> None:
    wrong = {}
    for name, (version, marker, _) in _pins().items():
        if not _applies(marker):
            continue
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = "missing"
        if installed != version:
            wrong[name] = f"locked {version}, installed {installed}"

    assert wrong == {}, "run `source deploy/setup-venv.sh` (or `bash deploy/lock.sh`)"


def test_the_lock_satisfies_every_declared_requirement() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    tools = (REPO_ROOT / "deploy" / "tools.in").read_text().splitlines()
    declared = [
        *project["dependencies"],
        *project["optional-dependencies"]["test"],
        *(line for line in tools if line.strip() and not line.startswith("#")),
    ]
    pins = _pins()
    unmet = []
    for text in declared:
        requirement = Requirement(text)
        pin = pins.get(canonicalize_name(requirement.name))
        if pin is None or not requirement.specifier.contains(pin[0], prereleases=True):
            unmet.append(f"{text} (locked: {pin[0] if pin else 'nothing'})")

    assert unmet == [], "pyproject.toml changed: run `bash deploy/lock.sh`"


def test_setup_venv_says_which_lock_it_installed_from() -> None:
    lock_sha = hashlib.sha256(LOCK.read_bytes()).hexdigest()

    result = subprocess.run(
        ["bash", "-c", "source deploy/setup-venv.sh"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )

    assert f"installed from requirements.lock (sha256 {lock_sha})" in result.stdout
    stamps = list((REPO_ROOT / ".venv").glob(".installed-*"))
    assert [s.read_text().strip() for s in stamps] == [lock_sha]


def test_the_container_image_installs_from_the_lock_and_listens_on_all_addresses() -> None:
    dockerfile = (REPO_ROOT / "deploy" / "Dockerfile").read_text()
    ignored = (REPO_ROOT / "deploy" / "Dockerfile.dockerignore").read_text()

    assert "pip install --require-hashes -r requirements-image.lock" in dockerfile
    assert re.search(r"pip install --no-deps --no-build-isolation \S*\.", dockerfile)
    assert "!deploy/requirements-image.lock" in ignored
    assert not Path(REPO_ROOT / "requirements.txt").exists()  # no second, unlocked list
    assert "HUB_API_HOST=0.0.0.0" in dockerfile  # the laptop default 127.0.0.1 is unreachable


def test_the_image_lock_pins_the_same_versions() -> None:
    image = _pins(REPO_ROOT / "deploy" / "requirements-image.lock")
    full = _pins()

    assert "fastapi" in image
    assert "pytest" not in image  # the image carries the runtime, not the test tools
    assert {n: v for n, (v, _, _) in image.items()} == {n: full[n][0] for n in image}
