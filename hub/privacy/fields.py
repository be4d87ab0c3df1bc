"""Seal and open the personal fields of an event record, as the schema marks them.

Which fields: every field with a ``pii`` attribute in the event type's current schema (what
:func:`hub.events.sensitivity.sensitive_fields` reads), at its dotted path. Its Avro type is a
union of the plaintext type and ``bytes``; sealed values are the ``bytes`` member
(:mod:`hub.privacy.sealing`), plaintext written before encryption is the plaintext member and
reads as it always did. The plaintext of a sealed value is the UTF-8 text of a string or enum
symbol, or one byte for a boolean.

Records are the dicts fastavro reads and writes (with or without logical types: an event id
may be a UUID or its text). Sealing and opening return new dicts along the changed paths and
never change the caller's record.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final, Protocol
from uuid import UUID

from hub.events.sensitivity import Sensitivity
from hub.privacy.sealing import (
    DataKey,
    SealBroken,
    SealError,
    event_bytes,
    is_sealed,
    open_value,
    seal_value,
    sealed_key_id,
)
from hub.serde.catalog import SchemaCatalog, default_catalog

SEALED_PLACEHOLDER: Final = "<sealed>"
"""What readers without keys (``hub tail``) show in place of a sealed value."""


class KeyLookup(Protocol):
    """Finds a person's data key by id: raises KeyErased or KeyUnknown when it cannot."""

    def data_key(self, subject: str, key_id: UUID) -> DataKey: ...


@dataclass(frozen=True, slots=True)
class SealedField:
    path: str
    """Dotted path, e.g. ``payload.personal_identity_code``."""
    parts: tuple[str, ...]
    sensitivity: Sensitivity
    plain: str
    """The plaintext Avro type: ``string``, ``enum`` or ``boolean``."""


@dataclass(frozen=True, slots=True)
class Opened:
    """A record with its sealed fields opened, as far as the keys allowed."""

    record: dict[str, Any]
    opened: tuple[str, ...]
    failed: tuple[str, ...]
    """Paths whose value stayed sealed; ``error`` says why (the first failure)."""
    error: SealError | None


def _plain_type(field_type: Any, path: str) -> str:
    members = field_type if isinstance(field_type, list) else [field_type]
    plain = [m for m in members if m not in ("null", "bytes")]
    if "bytes" not in members or len(plain) != 1:
        raise ValueError(f"{path}: a pii field must be a union of one plaintext type and bytes")
    kind = plain[0]
    if isinstance(kind, dict):
        kind = kind.get("type")
    if kind == "string" or kind == "enum" or kind == "boolean":
        return str(kind)
    named = kind if isinstance(kind, str) else ""
    if named and named not in ("int", "long", "float", "double", "record", "array", "map"):
        return "enum"  # a reference to an enum defined earlier in the schema
    raise ValueError(f"{path}: a pii field of type {kind} cannot be sealed (string, enum, boolean)")


def _walk(schema: Any, parts: tuple[str, ...]) -> Iterator[SealedField]:
    if isinstance(schema, list):
        for member in schema:
            yield from _walk(member, parts)
        return
    if not isinstance(schema, dict) or schema.get("type") not in ("record", "error"):
        if isinstance(schema, dict) and schema.get("type") in ("array", "map") and parts:
            inner = list(_walk(schema.get("items", schema.get("values")), parts))
            if inner:
                raise ValueError(f"{'.'.join(parts)}: pii fields inside arrays or maps")
        return
    for field in schema["fields"]:
        here = (*parts, field["name"])
        if "pii" in field:
            path = ".".join(here)
            yield SealedField(
                path, here, Sensitivity(field["pii"]), _plain_type(field["type"], path)
            )
        else:
            yield from _walk(field["type"], here)


def _plaintext(field: SealedField, value: Any) -> bytes:
    if field.plain == "boolean":
        return b"\x01" if value else b"\x00"
    return str(value).encode() if not isinstance(value, str) else value.encode()


def _value(field: SealedField, plaintext: bytes) -> Any:
    if field.plain == "boolean":
        return plaintext == b"\x01"
    return plaintext.decode()


def _get(record: dict[str, Any], parts: tuple[str, ...]) -> Any:
    node: Any = record
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _set(record: dict[str, Any], parts: tuple[str, ...], value: Any, copied: set[int]) -> None:
    """Set a nested value, copying each dict on the way once per call (``copied``: ids)."""
    node = record
    for part in parts[:-1]:
        child = node[part]
        if id(child) not in copied:
            child = dict(child)
            node[part] = child
            copied.add(id(child))
        node = child
    node[parts[-1]] = value


class SealedFields:
    """The personal fields of every event type, from a schema catalog's current schemas."""

    def __init__(self, catalog: SchemaCatalog | None = None) -> None:
        catalog = catalog if catalog is not None else default_catalog()
        self._fields: dict[str, tuple[SealedField, ...]] = {}
        for event in catalog:
            found = tuple(_walk(event.current.raw, ()))
            self._fields[event.full_name] = found
            self._fields[event.short_name] = found

    def fields(self, type_name: str) -> tuple[SealedField, ...]:
        """The personal fields of a type (short or full name); none for an unknown type."""
        return self._fields.get(type_name, ())

    def paths(self, type_name: str) -> tuple[str, ...]:
        return tuple(field.path for field in self.fields(type_name))

    def seal(self, type_name: str, record: dict[str, Any], key: DataKey) -> dict[str, Any]:
        """The record with every plaintext personal value sealed; None and sealed values stay."""
        fields = self.fields(type_name)
        if not fields:
            return record
        event_id = event_bytes(record["envelope"]["event_id"])
        out = dict(record)
        copied = {id(out)}
        for field in fields:
            value = _get(record, field.parts)
            if value is None or is_sealed(value):
                continue
            sealed = seal_value(key, event_id, field.path, _plaintext(field, value))
            _set(out, field.parts, sealed, copied)
        return out

    def sealed_values(self, type_name: str, record: dict[str, Any]) -> Iterator[tuple[str, bytes]]:
        """``(path, sealed value)`` of every sealed value in the record."""
        for field in self.fields(type_name):
            value = _get(record, field.parts)
            if is_sealed(value):
                yield field.path, value

    def key_ids(self, type_name: str, record: dict[str, Any]) -> set[UUID]:
        """The data keys the record's sealed values need (a broken value is left out)."""
        found = set()
        for _, value in self.sealed_values(type_name, record):
            try:
                found.add(sealed_key_id(value))
            except SealBroken:
                continue
        return found

    def open(
        self,
        type_name: str,
        record: dict[str, Any],
        keys: KeyLookup,
        paths: Collection[str] | None = None,
    ) -> Opened:
        """Open the sealed values at ``paths`` (all when None) with the subject's keys.

        A value that cannot be opened stays sealed and is listed in ``failed``; the caller
        decides (a route dead-letters, ``hub tail --reveal`` shows it sealed).
        """
        subject = record["envelope"]["subject"]
        event: bytes | None = None
        out = record
        copied: set[int] = set()
        opened: list[str] = []
        failed: list[str] = []
        error: SealError | None = None
        found: dict[UUID, DataKey | SealError] = {}  # each key looked up once per record
        for field in self.fields(type_name):
            if paths is not None and field.path not in paths:
                continue
            value = _get(record, field.parts)
            if not is_sealed(value):
                continue
            try:
                key_id = sealed_key_id(value)
                key = found.get(key_id)
                if key is None:
                    try:
                        key = found[key_id] = keys.data_key(subject, key_id)
                    except SealError as problem:
                        key = found[key_id] = problem
                if isinstance(key, SealError):
                    raise key
                if event is None:
                    event = event_bytes(record["envelope"]["event_id"])
                plain = _value(field, open_value(key, event, field.path, value))
            except SealError as problem:
                failed.append(field.path)
                error = error or problem
                continue
            if out is record:
                out = dict(record)
                copied.add(id(out))
            _set(out, field.parts, plain, copied)
            opened.append(field.path)
        return Opened(out, tuple(opened), tuple(failed), error)

    def redact(self, type_name: str, record: dict[str, Any]) -> dict[str, Any]:
        """The record with every sealed value shown as :data:`SEALED_PLACEHOLDER`."""
        out = record
        copied: set[int] = set()
        for path, _ in list(self.sealed_values(type_name, record)):
            if out is record:
                out = dict(record)
                copied.add(id(out))
            _set(out, tuple(path.split(".")), SEALED_PLACEHOLDER, copied)
        return out


def subjects_of(records: Iterable[dict[str, Any]]) -> set[str]:
    """The person pseudonyms of records (for fetching their keys in one go)."""
    return {r["envelope"]["subject"] for r in records}
