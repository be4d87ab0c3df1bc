"""BACKWARD-transitive compatibility: the current schema must read data of every release.

Uses the Apache Avro reference checker (``avro.compatibility``) and turns its JSON-pointer
locations into dotted field paths, so a failing check names the type and the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from hub.events.schema_files import released_versions


@dataclass(frozen=True)
class Incompatibility:
    type_name: str
    version: int
    field_paths: tuple[str, ...]
    reasons: tuple[str, ...]

    def __str__(self) -> str:
        return (
            f"{self.type_name}: the current schema cannot read v{self.version} data; "
            f"field(s) {', '.join(self.field_paths)}: {'; '.join(self.reasons)}"
        )


def check_backward_transitive(schemas_dir: Path) -> list[Incompatibility]:
    problems: list[Incompatibility] = []
    for current_path in sorted(schemas_dir.glob("*.avsc")):
        type_name = current_path.stem
        reader_json = json.loads(current_path.read_text(encoding="utf-8"))
        reader = avro.schema.parse(json.dumps(reader_json))
        for version, path in released_versions(schemas_dir, type_name):
            writer = avro.schema.parse(path.read_text(encoding="utf-8"))
            checker = ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]
            result = checker.get_compatibility(reader, writer)
            if result.compatibility is SchemaCompatibilityType.compatible:
                continue
            paths = sorted({field_path(reader_json, loc) for loc in result.locations})
            field_names = {path.rsplit(".", 1)[-1] for path in paths}
            problems.append(
                Incompatibility(
                    type_name=type_name,
                    version=version,
                    field_paths=tuple(p for p in paths if p != "<record>" or len(paths) == 1),
                    reasons=tuple(_reason(m, field_names) for m in sorted(result.messages)),
                )
            )
    return problems


def _reason(message: str, field_names: set[str]) -> str:
    """The checker reports a new field without a default by its bare name; say what it means."""
    if message in field_names:
        return f"'{message}' is new and has no default, so older data cannot fill it"
    return message


def field_path(schema: dict[str, Any], pointer: str) -> str:
    """Translate the checker's JSON pointer (``/fields/1/type/fields/0``) to ``payload.plan_id``."""
    named = _named_types(schema)
    node: Any = schema
    names: list[str] = []
    tokens = [token for token in pointer.split("/") if token]
    for index, token in enumerate(tokens):
        if isinstance(node, str):
            node = named.get(node, node)
        if isinstance(node, dict):
            if token == "fields" and index + 1 < len(tokens):
                continue
            if token.isdigit() and tokens[index - 1] == "fields":
                node = node["fields"][int(token)]
                names.append(node["name"])
                continue
            node = node.get(token, node)
        elif isinstance(node, list) and token.isdigit():
            node = node[int(token)]
    return ".".join(names) or "<record>"


def _named_types(node: Any, found: dict[str, Any] | None = None) -> dict[str, Any]:
    found = {} if found is None else found
    if isinstance(node, dict):
        if node.get("type") in ("record", "enum", "fixed"):
            full = (
                node["name"] if "." in node["name"] else f"{node.get('namespace')}.{node['name']}"
            )
            found[full] = node
        for value in node.values():
            _named_types(value, found)
    elif isinstance(node, list):
        for item in node:
            _named_types(item, found)
    return found
