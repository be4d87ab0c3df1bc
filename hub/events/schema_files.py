"""The .avsc files in ``schemas/``: generation from the models, drift detection, releases.

Layout: ``schemas/<Type>.avsc`` is the current schema of each event type and
``schemas/history/<Type>/v<N>.avsc`` are its released versions, oldest first. Released files are
never edited; the compatibility check reads them all.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from hub.events.avro_schema import avro_schema
from hub.events.customer_path import EVENT_TYPES

_VERSION_FILE = re.compile(r"^v(\d+)\.avsc$")


def render(type_name: str) -> str:
    return json.dumps(avro_schema(EVENT_TYPES[type_name]), indent=2, ensure_ascii=False) + "\n"


def write_current(schemas_dir: Path) -> list[str]:
    """Write every current schema; return the types whose file changed."""
    schemas_dir.mkdir(parents=True, exist_ok=True)
    changed = []
    for name in EVENT_TYPES:
        path = schemas_dir / f"{name}.avsc"
        text = render(name)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(name)
    return changed


def drifted(schemas_dir: Path) -> list[str]:
    """Types whose .avsc file is missing or differs from what the models generate."""
    drift = [
        name
        for name in EVENT_TYPES
        if not (path := schemas_dir / f"{name}.avsc").exists()
        or path.read_text(encoding="utf-8") != render(name)
    ]
    strays = {p.stem for p in schemas_dir.glob("*.avsc")} - set(EVENT_TYPES)
    return drift + sorted(strays)


def released_versions(schemas_dir: Path, type_name: str) -> list[tuple[int, Path]]:
    folder = schemas_dir / "history" / type_name
    versions = [
        (int(match.group(1)), path)
        for path in folder.glob("v*.avsc")
        if (match := _VERSION_FILE.match(path.name))
    ]
    return sorted(versions)


def release(schemas_dir: Path) -> list[tuple[str, int]]:
    """Copy each current schema that differs from its latest release into a new version."""
    released = []
    for name in EVENT_TYPES:
        current = (schemas_dir / f"{name}.avsc").read_text(encoding="utf-8")
        versions = released_versions(schemas_dir, name)
        if versions and json.loads(versions[-1][1].read_text(encoding="utf-8")) == json.loads(
            current
        ):
            continue
        number = versions[-1][0] + 1 if versions else 1
        target = schemas_dir / "history" / name / f"v{number}.avsc"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(current, encoding="utf-8")
        released.append((name, number))
    return released
