"""The shipped Avro schemas: current version of every event type plus its released history.

Layout (produced from ``hub.events``)::

    schemas/<Name>.avsc                 current schema of each event type
    schemas/history/<Name>/v<N>.avsc    released versions, v1 oldest

Everything is parsed and fingerprinted once at load, so the hot encode/decode paths only do
dictionary look-ups. Decoding needs the history: a consumer must read values that producers
wrote with any released version, and single-object encoding names the writer schema only by
its fingerprint.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastavro import parse_schema

import hub
from hub.serde.base import SerdeError, UnknownEventType
from hub.serde.fingerprint import canonical_form, crc64_avro

_VERSION_FILE = re.compile(r"^v(\d+)\.avsc$")


class SchemaCatalogError(SerdeError):
    """The schemas folder is missing or holds a schema that cannot be used."""


def default_schemas_dir() -> Path:
    """Where the shipped schemas are: ``hub/_schemas`` in a wheel, ``<repo>/schemas`` otherwise."""
    package_dir = Path(hub.__file__).parent
    for candidate in (package_dir / "_schemas", package_dir.parent / "schemas"):
        if candidate.is_dir():
            return candidate
    raise SchemaCatalogError(
        f"no schemas folder: looked for {package_dir / '_schemas'} and "
        f"{package_dir.parent / 'schemas'}"
    )


def full_name_of(schema: dict[str, Any]) -> str:
    """Full name of a named schema: its ``name`` if dotted, else ``namespace.name``."""
    name = schema.get("name")
    if not isinstance(name, str) or not name:
        raise SchemaCatalogError(f"schema has no name: {str(schema)[:120]}")
    namespace = schema.get("namespace")
    if "." in name or not namespace:
        return name
    return f"{namespace}.{name}"


@dataclass(frozen=True, slots=True)
class SchemaVersion:
    """One version of one event type's schema, parsed and fingerprinted."""

    type_name: str
    """Full name of the record, e.g. ``fi.te.hub.JobseekerRegistered``."""
    version: int
    """1 for the oldest released version; the current schema gets the number of the released
    version it equals, or one more than the newest released version if it is unreleased."""
    raw: dict[str, Any] = field(repr=False)
    """The JSON as written in the .avsc file, custom attributes (``pii``) included."""
    parsed: Any = field(repr=False)
    """``fastavro.parse_schema`` of ``raw``, ready for the fastavro readers and writers."""
    canonical: str = field(repr=False)
    fingerprint: bytes
    """8-byte CRC-64-AVRO of ``canonical``, little-endian as on the wire."""
    source: Path | None = None

    @property
    def fingerprint_hex(self) -> str:
        return self.fingerprint.hex()

    @property
    def json(self) -> str:
        """The raw schema as compact JSON text (what a schema registry is sent)."""
        return json.dumps(self.raw, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class EventSchemas:
    """The current schema of one event type and its released versions (oldest first)."""

    full_name: str
    short_name: str
    current: SchemaVersion
    history: tuple[SchemaVersion, ...]

    def versions(self) -> Iterator[SchemaVersion]:
        """Released versions, then the current one if it is not released yet."""
        yield from self.history
        if not any(v.fingerprint == self.current.fingerprint for v in self.history):
            yield self.current


def load_schema_version(
    raw: dict[str, Any], version: int, source: Path | None = None
) -> SchemaVersion:
    """Parse and fingerprint one schema; every version gets its own named-type namespace."""
    if not isinstance(raw, dict) or raw.get("type") != "record":
        raise SchemaCatalogError(f"{source or 'schema'}: an event schema must be an Avro record")
    name = full_name_of(raw)
    try:
        parsed = parse_schema(raw, named_schemas={})
        canonical = canonical_form(parsed)
    except Exception as exc:  # fastavro raises several unrelated types
        raise SchemaCatalogError(f"{source or name}: invalid Avro schema: {exc}") from exc
    return SchemaVersion(
        type_name=name,
        version=version,
        raw=raw,
        parsed=parsed,
        canonical=canonical,
        fingerprint=crc64_avro(canonical),
        source=source,
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SchemaCatalogError(f"cannot read schema {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise SchemaCatalogError(f"{path}: an event schema must be a JSON object")
    return data


class SchemaCatalog:
    """All event schemas, looked up by name (short or full) or by writer fingerprint."""

    def __init__(self, types: list[EventSchemas], root: Path | None = None) -> None:
        self.root = root
        self._types: dict[str, EventSchemas] = {}
        self._by_short: dict[str, EventSchemas] = {}
        self._by_fingerprint: dict[bytes, SchemaVersion] = {}
        for event in types:
            if event.full_name in self._types:
                raise SchemaCatalogError(f"event type {event.full_name} defined twice")
            self._types[event.full_name] = event
            # A short name that two namespaces share is ambiguous: only full names work for it.
            if event.short_name in self._by_short:
                self._by_short[event.short_name] = _AMBIGUOUS
            else:
                self._by_short[event.short_name] = event
            for version in (*event.history, event.current):
                other = self._by_fingerprint.get(version.fingerprint)
                if other is not None and other.type_name != version.type_name:
                    raise SchemaCatalogError(
                        f"{version.type_name} and {other.type_name} share fingerprint "
                        f"{version.fingerprint_hex}"
                    )
                # Versions with one canonical form are interchangeable for reading; prefer the
                # current one so that decoding skips schema resolution.
                if other is None or version is event.current:
                    self._by_fingerprint[version.fingerprint] = version

    @classmethod
    def from_directory(cls, root: Path | str) -> SchemaCatalog:
        """Load ``<root>/*.avsc`` and ``<root>/history/<Name>/v<N>.avsc``."""
        root = Path(root)
        if not root.is_dir():
            raise SchemaCatalogError(f"schemas folder {root} does not exist")
        types: list[EventSchemas] = []
        for path in sorted(root.glob("*.avsc")):
            raw = _read_json(path)
            short = path.stem
            history_dir = root / "history" / short
            history: list[SchemaVersion] = []
            if history_dir.is_dir():
                numbered: list[tuple[int, Path]] = []
                for version_path in history_dir.glob("*.avsc"):
                    match = _VERSION_FILE.match(version_path.name)
                    if match is None:
                        raise SchemaCatalogError(f"{version_path}: expected a name like v1.avsc")
                    numbered.append((int(match.group(1)), version_path))
                numbered.sort()
                for number, version_path in numbered:
                    history.append(
                        load_schema_version(_read_json(version_path), number, version_path)
                    )
            current = load_schema_version(raw, 0, path)
            types.append(_assemble(current, history))
        return cls(types, root)

    @classmethod
    def from_schemas(
        cls,
        current: list[dict[str, Any]],
        history: dict[str, list[dict[str, Any]]] | None = None,
    ) -> SchemaCatalog:
        """Build a catalog from JSON data (tests, tools); ``history`` is keyed by full name."""
        history = history or {}
        types = []
        for raw in current:
            cur = load_schema_version(raw, 0)
            old = [
                load_schema_version(h, i) for i, h in enumerate(history.get(cur.type_name, []), 1)
            ]
            types.append(_assemble(cur, old))
        return cls(types)

    # -- look-ups --------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Full names of all event types, sorted."""
        return sorted(self._types)

    def __len__(self) -> int:
        return len(self._types)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._lookup(name) is not None

    def _lookup(self, name: str) -> EventSchemas | None:
        event = self._types.get(name)
        if event is None:
            event = self._by_short.get(name)
            if event is _AMBIGUOUS:
                return None
        return event

    def event(self, name: str) -> EventSchemas:
        """Current schema and history of a type, by short or full name."""
        event = self._lookup(name)
        if event is None:
            raise UnknownEventType(name, self.names())
        return event

    def full_name(self, name: str) -> str:
        return self.event(name).full_name

    def current(self, name: str) -> SchemaVersion:
        """The current (reader and writer) schema of a type, by short or full name."""
        return self.event(name).current

    def history(self, name: str) -> tuple[SchemaVersion, ...]:
        return self.event(name).history

    def version_for_fingerprint(self, fp: bytes) -> SchemaVersion | None:
        """The schema version (current or released) whose fingerprint is ``fp``, if any."""
        return self._by_fingerprint.get(fp)

    def writer_for_fingerprint(self, fp: bytes) -> tuple[str, Any]:
        """``(full type name, parsed writer schema)`` for a fingerprint; KeyError if unknown."""
        version = self._by_fingerprint.get(fp)
        if version is None:
            raise KeyError(fp.hex())
        return version.type_name, version.parsed

    def fingerprints(self) -> dict[bytes, SchemaVersion]:
        """Every known fingerprint (a copy)."""
        return dict(self._by_fingerprint)

    def __iter__(self) -> Iterator[EventSchemas]:
        return iter(self._types[name] for name in self.names())


def _assemble(current: SchemaVersion, history: list[SchemaVersion]) -> EventSchemas:
    """Number the current schema and check the history belongs to the same type."""
    for old in history:
        if old.type_name != current.type_name:
            raise SchemaCatalogError(
                f"{old.source}: history of {current.type_name} holds a schema of {old.type_name}"
            )
    released = next((v.version for v in history if v.fingerprint == current.fingerprint), None)
    number = released if released is not None else (history[-1].version + 1 if history else 1)
    current = SchemaVersion(
        type_name=current.type_name,
        version=number,
        raw=current.raw,
        parsed=current.parsed,
        canonical=current.canonical,
        fingerprint=current.fingerprint,
        source=current.source,
    )
    return EventSchemas(
        full_name=current.type_name,
        short_name=current.type_name.rsplit(".", 1)[-1],
        current=current,
        history=tuple(history),
    )


_AMBIGUOUS: Any = object()


@lru_cache(maxsize=1)
def default_catalog() -> SchemaCatalog:
    """The catalog of the shipped schemas, loaded once per process."""
    return SchemaCatalog.from_directory(default_schemas_dir())
