"""Property: whatever the record, no field of a class without a legal basis in the route is ever in
the projected record or its derived schema; reporting never gets ``direct``, ``contact`` or
``health``; every projected record round-trips through the OutboxCodec.

Records are drawn from the Avro schemas themselves (every type, every optional branch), so the
property covers shapes the simulator never produces. Two sweeps: every event type × every
default route, and every type with random grant subsets and random ``fields`` allow-lists.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.events.sensitivity import Sensitivity, sensitive_fields
from hub.routing.outbox import OutboxCodec
from hub.routing.projection import leaf_paths, project, projected_schema
from hub.routing.resolve import Routed
from hub.routing.routes import Route, field_paths
from hub.serde.catalog import default_catalog
from tests.test_routes import default_routes

_FORBIDDEN_FOR_REPORTING = {Sensitivity.DIRECT, Sensitivity.CONTACT, Sensitivity.HEALTH}
_EPOCH = datetime(2020, 1, 1, tzinfo=UTC)


def _strategy(node: Any, named: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values fastavro writes for an Avro schema node (JSON form)."""
    if isinstance(node, str):
        if node in named:
            return _strategy(named[node], named)
        return {
            "null": st.none(),
            "boolean": st.booleans(),
            "int": st.integers(-(2**31), 2**31 - 1),
            "long": st.integers(-(2**63), 2**63 - 1),
            "string": st.text(max_size=12),
            "bytes": st.binary(max_size=8),
            "double": st.floats(allow_nan=False),
            "float": st.floats(allow_nan=False, width=32),
        }[node]
    if isinstance(node, list):
        return st.one_of(*(_strategy(member, named) for member in node))
    kind = node["type"]
    logical = node.get("logicalType")
    if logical == "uuid":
        return st.uuids()
    if logical == "date":
        return st.dates()
    if logical == "timestamp-millis":
        return st.integers(0, 10**11).map(lambda ms: _EPOCH + timedelta(milliseconds=ms))
    if kind == "record":
        full = f"{node.get('namespace', '')}.{node['name']}".lstrip(".")
        named.setdefault(full, node)
        named.setdefault(node["name"], node)
        return st.fixed_dictionaries(
            {field["name"]: _strategy(field["type"], named) for field in node["fields"]}
        )
    if kind == "enum":
        return st.sampled_from(node["symbols"])
    if kind == "array":
        return st.lists(_strategy(node["items"], named), max_size=3)
    if kind == "map":
        return st.dictionaries(st.text(max_size=4), _strategy(node["values"], named), max_size=3)
    return _strategy(kind, named)


@cache
def _records(type_name: str) -> st.SearchStrategy[dict[str, Any]]:
    return _strategy(default_catalog().current(type_name).raw, {})


def _value_at(record: Any, path: str) -> list[Any]:
    """Every value at a dotted path (through lists and maps); [] when the path is absent."""
    found = [record]
    for part in path.split("."):
        next_found = []
        for value in found:
            if isinstance(value, list):
                next_found += [v[part] for v in value if isinstance(v, dict) and part in v]
            elif isinstance(value, dict) and part in value:
                next_found.append(value[part])
        found = next_found
    return found


def _check(
    type_name: str,
    destination: str,
    grants: frozenset[Sensitivity],
    fields: tuple[str, ...] | None,
    record: dict[str, Any],
    codec: OutboxCodec,
) -> None:
    schema = default_catalog().current(type_name).raw
    projected = project(record, grants, fields, schema)
    derived = projected_schema(schema, grants, fields, destination)
    derived_paths = field_paths(derived)
    for path, kind in sensitive_fields(schema).items():
        if kind not in grants:
            assert path not in derived_paths, (type_name, destination, path)
            assert _value_at(projected, path) == [], (type_name, destination, path)
    assert projected["envelope"] == record["envelope"]
    if destination == "reporting":
        assert not set(sensitive_fields(derived).values()) & _FORBIDDEN_FOR_REPORTING
    routed = Routed("r", destination, None, projected, tuple(leaf_paths(derived)), {})
    assert codec.decode(codec.encode(routed, type_name)).record == projected


_DEFAULT_PAIRS = [
    (type_name, route.name, destination)
    for route in default_routes().routes
    for type_name in route.types
    for destination in default_routes().destinations_of(route)
]


@cache
def _default_codec() -> OutboxCodec:
    return OutboxCodec.for_routes(default_routes())


@pytest.mark.parametrize(("type_name", "route_name", "destination"), _DEFAULT_PAIRS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_default_routes_never_leak_a_class_without_a_legal_basis(
    type_name: str, route_name: str, destination: str, data: st.DataObject
) -> None:
    route: Route = default_routes().route(route_name)
    record = data.draw(_records(type_name))
    _check(type_name, destination, frozenset(route.grants), route.fields, record, _default_codec())


def test_every_event_type_has_a_default_route() -> None:
    assert {pair[0] for pair in _DEFAULT_PAIRS} == {e.short_name for e in default_catalog()}


_TYPES = sorted(event.short_name for event in default_catalog())


@st.composite
def _random_route(draw: st.DrawFn) -> tuple[str, frozenset[Sensitivity], tuple[str, ...] | None]:
    type_name = draw(st.sampled_from(_TYPES))
    grants = frozenset(draw(st.sets(st.sampled_from(list(Sensitivity)))))
    payload = sorted(
        p for p in field_paths(default_catalog().current(type_name).raw) if p.startswith("payload.")
    )
    fields = draw(st.none() | st.lists(st.sampled_from(payload), unique=True).map(tuple))
    return type_name, grants, fields


@cache
def _codec_for(
    type_name: str, grants: frozenset[Sensitivity], fields: tuple[str, ...] | None
) -> OutboxCodec:
    return OutboxCodec.for_targets([("random", type_name, grants, fields)])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(route=_random_route(), data=st.data())
def test_random_grants_and_fields_never_leak_a_class_without_a_legal_basis(
    route: tuple[str, frozenset[Sensitivity], tuple[str, ...] | None], data: st.DataObject
) -> None:
    type_name, grants, fields = route
    record = data.draw(_records(type_name))
    _check(type_name, "random", grants, fields, record, _codec_for(type_name, grants, fields))
    if fields is not None:
        projected = project(record, grants, fields, default_catalog().current(type_name).raw)
        for path in field_paths(default_catalog().current(type_name).raw):
            outside = path.startswith("payload.") and not any(
                path == f or path.startswith(f + ".") or f.startswith(path + ".") for f in fields
            )
            if outside:
                assert _value_at(projected, path) == [], path
