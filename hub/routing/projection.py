"""Projection by legal basis: a destination gets only the fields its route grants.

What a field is comes from the schema alone: its ``pii`` attribute (``direct``, ``contact``,
``health``, ``membership``) as :mod:`hub.events.sensitivity` reads it. A field of a class the
route grants no legal basis for is dropped, wherever it sits; a route's ``fields`` allow-list
(dotted paths under ``payload.``) narrows the payload further. The envelope is kept whole (ids,
times, the person's pseudonym, the municipality and area), since every receiver needs it to
deduplicate, order and attribute an event.

Each (destination, event type) has a derived Avro schema: the event's schema with the dropped
fields removed and every named type moved into the namespace
``fi.te.hub.outbox.<destination>``, so a derived schema never shares a full name (and so never a
fingerprint) with the log's schema or another destination's. Derived schemas evolve with the
event schemas: :func:`check_derived_compatibility` asks, for every route, whether the derived
schema of the current version reads data written with the derived schema of every released
version (BACKWARD transitive, the Apache Avro checker as in :mod:`hub.events.compatibility`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from hub.events.compatibility import Incompatibility, field_path
from hub.events.sensitivity import Sensitivity
from hub.serde.catalog import SchemaCatalog

OUTBOX_NAMESPACE = "fi.te.hub.outbox"
_EVENT_NAMESPACE = "fi.te.hub"
_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})


def outbox_namespace(destination: str) -> str:
    """``fi.te.hub.outbox.<destination>`` with ``-`` as ``_`` (Avro names allow no dash)."""
    return f"{OUTBOX_NAMESPACE}.{destination.replace('-', '_')}"


# --- the decision per field ----------------------------------------------------------------------


def _selected(path: str, fields: tuple[str, ...] | None) -> tuple[bool, bool]:
    """``(keep, whole)`` of a payload path under an allow-list: whole = every child is selected."""
    if fields is None or not (path == "payload" or path.startswith("payload.")):
        return True, True
    if path == "payload":
        return True, False
    for allowed in fields:
        if path == allowed or path.startswith(allowed + "."):
            return True, True
    if any(allowed.startswith(path + ".") for allowed in fields):
        return True, False
    return False, False


def _allowed(field: Mapping[str, Any], grants: frozenset[Sensitivity]) -> bool:
    kind = field.get("pii")
    return kind is None or Sensitivity(kind) in grants


# --- derived schema ------------------------------------------------------------------------------


class _SchemaProjector:
    """Walks an Avro schema, dropping fields and renaming named types into one namespace."""

    def __init__(
        self,
        root: dict[str, Any],
        grants: frozenset[Sensitivity],
        fields: tuple[str, ...] | None,
        namespace: str,
    ) -> None:
        self.grants = grants
        self.fields = fields
        self.namespace = namespace
        self.index: dict[str, Any] = {}
        self._index(root, None)
        self.defined: set[str] = set()
        self.uses: dict[str, int] = {}

    def _full(self, node: Mapping[str, Any], enclosing: str | None) -> str:
        name = str(node["name"])
        if "." in name:
            return name
        namespace = node.get("namespace", enclosing)
        return f"{namespace}.{name}" if namespace else name

    def _index(self, node: Any, enclosing: str | None) -> None:
        if isinstance(node, list):
            for member in node:
                self._index(member, enclosing)
        elif isinstance(node, dict):
            kind = node.get("type")
            if kind in ("record", "enum", "fixed", "error"):
                full = self._full(node, enclosing)
                self.index.setdefault(full, (node, full.rpartition(".")[0] or None))
                enclosing = full.rpartition(".")[0] or None
                for field in node.get("fields", ()):
                    self._index(field["type"], enclosing)
            elif kind in ("array", "map"):
                self._index(node.get("items", node.get("values")), enclosing)

    def rename(self, full: str) -> tuple[str, str]:
        """``(namespace, name)`` of a named type in the derived schema."""
        namespace, _, name = full.rpartition(".")
        if namespace == _EVENT_NAMESPACE or namespace.startswith(_EVENT_NAMESPACE + "."):
            namespace = self.namespace + namespace[len(_EVENT_NAMESPACE) :]
        elif namespace:
            namespace = f"{self.namespace}.{namespace}"
        else:
            namespace = self.namespace
        return namespace, name

    def type_of(self, node: Any, path: str, whole: bool, enclosing: str | None) -> Any:
        if isinstance(node, str):
            if node in _PRIMITIVES:
                return node
            full = node if "." in node or not enclosing else f"{enclosing}.{node}"
            if full not in self.index and node in self.index:
                full = node
            definition, def_enclosing = self.index[full]
            if full in self.defined and definition.get("type") not in ("record", "error"):
                return ".".join(self.rename(full))
            # A record is projected at each path it is used at (a route's fields may select
            # differently there), and an enum defined in a dropped field is defined here instead.
            return self.type_of(definition, path, whole, def_enclosing)
        if isinstance(node, list):
            return [self.type_of(member, path, whole, enclosing) for member in node]
        kind = node.get("type")
        if kind in ("record", "error"):
            full = self._full(node, enclosing)
            self.uses[full] = uses = self.uses.get(full, 0) + 1
            self.defined.add(full)
            namespace, name = self.rename(full)
            if uses > 1:  # a second use of a named record: its own name, its own projection
                name = f"{name}_{uses}"
            inner = full.rpartition(".")[0] or None
            out = {k: v for k, v in node.items() if k not in ("fields", "name", "namespace")}
            out["name"], out["namespace"] = name, namespace
            out["fields"] = []
            for field in node.get("fields", ()):
                child = f"{path}.{field['name']}" if path else field["name"]
                if not _allowed(field, self.grants):
                    continue
                keep, child_whole = (
                    (True, True) if whole and path else _selected(child, self.fields)
                )
                if not keep:
                    continue
                new_field = dict(field)
                new_field["type"] = self.type_of(field["type"], child, child_whole, inner)
                out["fields"].append(new_field)
            return out
        if kind in ("enum", "fixed"):
            full = self._full(node, enclosing)
            if full in self.defined:
                return ".".join(self.rename(full))
            self.defined.add(full)
            out = dict(node)
            out["namespace"], out["name"] = self.rename(full)
            return out
        if kind == "array":
            return {**node, "items": self.type_of(node["items"], path, whole, enclosing)}
        if kind == "map":
            return {**node, "values": self.type_of(node["values"], path, whole, enclosing)}
        return copy.deepcopy(node)


def projected_schema(
    schema_raw: dict[str, Any],
    grants: Iterable[Sensitivity],
    fields: tuple[str, ...] | None,
    destination: str,
) -> dict[str, Any]:
    """The derived Avro schema of one event schema for one destination (JSON form)."""
    projector = _SchemaProjector(
        schema_raw, frozenset(grants), fields, outbox_namespace(destination)
    )
    result: dict[str, Any] = projector.type_of(schema_raw, "", False, None)
    return result


def without_logical_types(schema: Any) -> Any:
    """The schema with every ``logicalType`` removed: uuid reads as its string, timestamp-millis
    as int milliseconds, date as int days since 1970-01-01.

    The router reads and writes with such schemas: the bytes are the same (a logical type only
    annotates its primitive, and the Parsing Canonical Form, so the fingerprint, leaves it out),
    and no UUID, datetime or date object is made on decode just to be turned back on encode."""
    if isinstance(schema, dict):
        return {k: without_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [without_logical_types(member) for member in schema]
    return schema


def encoding_shape(schema: Any) -> Any:
    """What of a schema decides its binary encoding, with named types written out in full:
    field order and types, union member order, enum symbols, fixed sizes; no names, docs,
    defaults or logical types. Two schemas of equal shape encode a datum to the same bytes
    (the router then copies a log body into an outbox value instead of encoding it again)."""
    named: dict[str, Any] = {}

    def walk(node: Any, enclosing: str | None, depth: int) -> Any:
        if depth > 64:
            raise ValueError("schema nested too deep (recursive?)")
        if isinstance(node, list):
            return ["union", *(walk(member, enclosing, depth + 1) for member in node)]
        if isinstance(node, str):
            if node in _PRIMITIVES:
                return node
            full = node if "." in node or not enclosing else f"{enclosing}.{node}"
            return named.get(full, named.get(node, ["unknown", node]))
        kind = node.get("type")
        if isinstance(kind, (list, dict)) or kind in _PRIMITIVES:
            return walk(kind, enclosing, depth + 1)
        if kind in ("record", "error", "enum", "fixed"):
            name = str(node["name"])
            namespace = node.get("namespace", enclosing)
            full = name if "." in name or not namespace else f"{namespace}.{name}"
            inner = full.rpartition(".")[0] or None
            if kind == "enum":
                shape: Any = ["enum", *node["symbols"]]
            elif kind == "fixed":
                shape = ["fixed", node["size"]]
            else:
                fields = [[f["name"], walk(f["type"], inner, depth + 1)] for f in node["fields"]]
                shape = ["record", *fields]
            named[full] = named[name] = shape
            return shape
        if kind == "array":
            return ["array", walk(node["items"], enclosing, depth + 1)]
        if kind == "map":
            return ["map", walk(node["values"], enclosing, depth + 1)]
        return ["unknown", kind]

    return walk(schema, None, 0)


def leaf_paths(schema: Any, prefix: str = "") -> list[str]:
    """Dotted paths of the non-record fields of a (derived) schema: what a receiver is sent."""
    found: list[str] = []
    if isinstance(schema, list):
        for member in schema:
            found += leaf_paths(member, prefix)
    elif isinstance(schema, dict):
        if schema.get("type") in ("record", "error"):
            for field in schema.get("fields", ()):
                path = f"{prefix}{field['name']}"
                inner = leaf_paths(field["type"], f"{path}.")
                found += inner if inner else [path]
        elif schema.get("type") in ("array", "map"):
            found += leaf_paths(schema.get("items", schema.get("values")), prefix)
    # A union of null and a record lists the record's paths once.
    return list(dict.fromkeys(found))


# --- record projection ---------------------------------------------------------------------------

_Plan = tuple[tuple[str, Any], ...]
"""Per record: ``(field name, sub-plan or None)``; None copies the value as it is."""


@dataclass(frozen=True, slots=True)
class _Union:
    members: tuple[tuple[frozenset[str], Any], ...]
    """Record members of a union: their field names in the source schema and their plans."""


@dataclass(frozen=True, slots=True)
class _Each:
    plan: Any
    is_map: bool


def _compile(
    node: Any,
    path: str,
    whole: bool,
    grants: frozenset[Sensitivity],
    fields: tuple[str, ...] | None,
    index: dict[str, Any],
) -> Any:
    """The plan of one schema node, or None when nothing inside it is ever dropped."""
    if isinstance(node, str):
        if node in index:
            return _compile(index[node], path, whole, grants, fields, index)
        return None
    if isinstance(node, list):
        members = []
        for member in node:
            target = index.get(member, member) if isinstance(member, str) else member
            if isinstance(target, dict) and target.get("type") in ("record", "error"):
                names = frozenset(f["name"] for f in target["fields"])
                members.append((names, _compile(target, path, whole, grants, fields, index)))
        if all(plan is None for _, plan in members):
            return None
        return _Union(tuple(members))
    kind = node.get("type")
    if kind in ("record", "error"):
        plan: list[tuple[str, Any]] = []
        changed = False
        for field in node["fields"]:
            child = f"{path}.{field['name']}" if path else field["name"]
            if not _allowed(field, grants):
                changed = True
                continue
            keep, child_whole = (True, True) if whole and path else _selected(child, fields)
            if not keep:
                changed = True
                continue
            sub = _compile(field["type"], child, child_whole, grants, fields, index)
            changed = changed or sub is not None
            plan.append((field["name"], sub))
        return tuple(plan) if changed else None
    if kind in ("array", "map"):
        sub = _compile(node.get("items", node.get("values")), path, whole, grants, fields, index)
        return None if sub is None else _Each(sub, kind == "map")
    return None


def _apply(plan: Any, value: Any) -> Any:
    if plan is None or value is None:
        return value
    if isinstance(plan, tuple):
        return {name: _apply(sub, value[name]) for name, sub in plan if name in value}
    if isinstance(plan, _Union):
        if not isinstance(value, dict):
            return value
        keys = value.keys()
        for names, sub in plan.members:
            if names >= keys or keys >= names:
                return _apply(sub, value)
        raise ValueError("a record in a union matches none of its record members")
    if isinstance(plan, _Each):
        if plan.is_map:
            return {k: _apply(plan.plan, v) for k, v in value.items()}
        return [_apply(plan.plan, v) for v in value]
    raise TypeError(f"unknown plan {plan!r}")


def _full_name_index(schema: dict[str, Any]) -> dict[str, Any]:
    projector = _SchemaProjector(schema, frozenset(), None, OUTBOX_NAMESPACE)
    index: dict[str, Any] = {}
    for full, (node, _) in projector.index.items():
        index[full] = node
        index.setdefault(full.rpartition(".")[2], node)
    return index


class Projection:
    """A compiled projection of one event schema: apply it to records of that schema."""

    def __init__(
        self,
        schema: dict[str, Any],
        grants: Iterable[Sensitivity],
        fields: tuple[str, ...] | None,
    ) -> None:
        self.grants = frozenset(grants)
        self.fields = fields
        self._plan = _compile(schema, "", False, self.grants, fields, _full_name_index(schema))

    def apply(self, record: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = _apply(self._plan, record)
        return dict(result) if result is record else result


_MAX_CACHED = 4096
_PROJECTIONS: dict[tuple[int, frozenset[Sensitivity], tuple[str, ...] | None], Any] = {}


def project(
    record: dict[str, Any],
    grants: set[Sensitivity] | frozenset[Sensitivity],
    fields: tuple[str, ...] | None,
    schema: dict[str, Any],
) -> dict[str, Any]:
    """The record with only the granted fields (``schema``: the raw Avro schema it has).

    Compiled once per (schema, grants, fields) and cached: the router calls this per event.
    """
    key = (id(schema), frozenset(grants), fields)
    cached = _PROJECTIONS.get(key)
    if cached is None or cached[0] is not schema:
        if len(_PROJECTIONS) >= _MAX_CACHED:  # callers passing a fresh schema dict each time
            _PROJECTIONS.clear()
        cached = (schema, Projection(schema, grants, fields))
        _PROJECTIONS[key] = cached
    projection: Projection = cached[1]
    return projection.apply(record)


# --- compatibility of derived schemas ------------------------------------------------------------


def check_derived_compatibility(
    catalog: SchemaCatalog,
    targets: Iterable[tuple[str, str, frozenset[Sensitivity], tuple[str, ...] | None]],
) -> list[Incompatibility]:
    """BACKWARD-transitive check of derived schemas.

    ``targets``: ``(destination, event type, grants, fields)``. For each, the derived schema of
    the type's current schema must read data written with the derived schema of every released
    version; a problem is reported with the type named ``<destination>/<type>``.
    """
    problems: list[Incompatibility] = []
    for destination, type_name, grants, fields in targets:
        event = catalog.event(type_name)
        reader_json = projected_schema(event.current.raw, grants, fields, destination)
        reader = avro.schema.parse(json.dumps(reader_json))
        for version in event.history:
            writer_json = projected_schema(version.raw, grants, fields, destination)
            writer = avro.schema.parse(json.dumps(writer_json))
            checker = ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]
            result = checker.get_compatibility(reader, writer)
            if result.compatibility is SchemaCompatibilityType.compatible:
                continue
            paths = sorted({field_path(reader_json, loc) for loc in result.locations})
            problems.append(
                Incompatibility(
                    type_name=f"{destination}/{event.short_name}",
                    version=version.version,
                    field_paths=tuple(paths),
                    reasons=tuple(sorted(result.messages)),
                )
            )
    return problems
