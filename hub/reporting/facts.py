"""From an event to a fact row: the reporting route's projection, then columns, then Arrow.

The store is fed only through the projection the router itself applies to the destination
``reporting`` (:meth:`hub.routing.resolve.Router.compiled`): a field the route grants no legal
basis for (identity code, name, contact, health) is gone before a column is read, so no table
can hold it whatever :mod:`hub.reporting.tables` names. Two ways in, one result:

* :meth:`ReportingProjection.project`: a record decoded with logical types (as
  :mod:`hub.serde` gives it, or :meth:`CustomerPathEvent.to_avro`) through the compiled
  projection: UUID, datetime and date objects, enums as symbols;
* :meth:`ReportingProjection.decoder`: the fast path of replay, a single-object value read
  without logical types as the router's hot path reads (uuids stay strings, times int
  milliseconds, dates int days), then the same compiled projection; or read straight into the
  route's *derived* schema (:func:`projected_schema`) as the Avro reader schema.

:class:`FactBatch` collects rows of either shape per table and turns each column into one Arrow
array (UUID → canonical text, datetime → naive UTC, enum → symbol), never a row at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from io import BytesIO
from typing import Any, Literal

import pyarrow as pa
from fastavro import parse_schema, schemaless_reader

from hub.reporting.tables import FACT_TABLES, TABLE_OF_TYPE, FactTable
from hub.routing.projection import Projection, projected_schema, without_logical_types
from hub.routing.resolve import Router, router_for
from hub.routing.routes import Route, RoutesConfig
from hub.serde.catalog import SchemaCatalog, default_catalog
from hub.serde.framing import SINGLE_OBJECT_HEADER_SIZE, SINGLE_OBJECT_MAGIC

REPORTING_DESTINATION = "reporting"
"""The outbox destination of the packaged routes whose projection feeds the store."""

_ARROW_TYPES: dict[str, pa.DataType] = {
    "VARCHAR": pa.string(),
    "DATE": pa.date32(),
    "TIMESTAMP": pa.timestamp("ms"),
    "INTEGER": pa.int32(),
    "BOOLEAN": pa.bool_(),
}


DecodeMode = Literal["project", "derived"]
_Reader = tuple[str, Any, Any, Projection | None, Route | None]
"""Per writer fingerprint: short type, writer schema, reader schema (None: the writer's), the
projection to apply after reading (None: the reader schema already projects), the route when
its filters must be asked."""


class NotReported(ValueError):
    """An event type no route sends to the reporting destination, or no fact table takes."""


@dataclass(frozen=True)
class _TypeProjection:
    route: Route
    projection: Projection
    derived: dict[str, Any]
    """The derived Avro schema (JSON form) of the route for the type's current schema."""


class ReportingProjection:
    """The reporting route's projection of every event type it carries, compiled once."""

    def __init__(
        self,
        config: RoutesConfig,
        destination: str = REPORTING_DESTINATION,
        catalog: SchemaCatalog | None = None,
    ) -> None:
        if destination not in config.destinations:
            raise NotReported(f"the routes have no destination {destination}")
        self.destination = destination
        self.catalog = catalog if catalog is not None else default_catalog()
        router: Router = router_for(config) if catalog is None else Router(config, catalog)
        self._types: dict[str, _TypeProjection] = {}
        for route in config.routes:
            if destination not in config.destinations_of(route):
                continue
            for type_name in route.types:
                compiled = router.compiled(route, destination, type_name)
                schema = self.catalog.current(type_name).raw
                derived = projected_schema(schema, route.grants, route.fields, destination)
                self._types[type_name] = _TypeProjection(route, compiled.projection, derived)
        self._readers: dict[str, dict[bytes, _Reader]] = {}

    @property
    def types(self) -> frozenset[str]:
        """Short names of the event types the destination receives."""
        return frozenset(self._types)

    def _of(self, type_name: str) -> _TypeProjection:
        found = self._types.get(type_name)
        if found is None:
            raise NotReported(f"no route sends {type_name} to {self.destination}")
        return found

    def accepts(self, type_name: str, envelope: dict[str, Any]) -> bool:
        """Whether the route's municipality / area filters let the event through."""
        return self._of(type_name).route.accepts(envelope)

    def project(self, type_name: str, record: dict[str, Any]) -> dict[str, Any]:
        """The record as the reporting destination gets it (the router's projection)."""
        return self._of(type_name).projection.apply(record)

    def derived_schema(self, type_name: str) -> dict[str, Any]:
        return self._of(type_name).derived

    def decoder(
        self, mode: DecodeMode = "project"
    ) -> Callable[[bytes], tuple[str, dict[str, Any]] | None]:
        """A function from a single-object value to ``(short type, projected raw record)``,
        None for an event the route's municipality / area filters refuse.

        Every schema without its logical types, as the router's hot path reads (uuids stay
        strings, times int milliseconds, dates int days: no objects made to be turned back):

        * ``project`` (the default, the faster): read with the writer version the fingerprint
          names, resolved to the type's current schema only when they differ, then the
          router's compiled :class:`Projection` of the route;
        * ``derived``: read straight into the route's derived schema
          (:func:`projected_schema`) as the Avro reader schema, so resolution skips the dropped
          fields (fastavro's resolving reader is slower than its plain one: measured in
          ``bench/replay.py``).

        KeyError for a value that is not single-object or names an unknown fingerprint (the
        caller then decodes it through :mod:`hub.serde`), other errors for a corrupt body.
        """
        readers = self._reader_table(mode)
        empty: dict[str, Any] = {}

        def decode(value: bytes) -> tuple[str, dict[str, Any]] | None:
            if value[:2] != SINGLE_OBJECT_MAGIC:
                raise KeyError("not single-object")
            short, writer, reader, projection, route = readers[value[2:SINGLE_OBJECT_HEADER_SIZE]]
            buffer = BytesIO(value)
            buffer.seek(SINGLE_OBJECT_HEADER_SIZE)
            record: dict[str, Any] = schemaless_reader(buffer, writer, reader)  # type: ignore[assignment]
            if buffer.tell() != len(value):
                raise ValueError(f"{short}: {len(value) - buffer.tell()} bytes after the body")
            if route is not None and not route.accepts(record.get("envelope", empty)):
                return None
            return short, record if projection is None else projection.apply(record)

        return decode

    def _reader_table(self, mode: DecodeMode) -> dict[bytes, _Reader]:
        found = self._readers.get(mode)
        if found is not None:
            return found
        parsed: dict[str, Any] = {}

        def parse(key: str, schema: dict[str, Any]) -> Any:
            if key not in parsed:
                parsed[key] = parse_schema(without_logical_types(schema), named_schemas={})
            return parsed[key]

        readers: dict[bytes, _Reader] = {}
        for fingerprint, version in self.catalog.fingerprints().items():
            short = version.type_name.rpartition(".")[2]
            if short not in self._types:
                continue
            typed = self._types[short]
            current = self.catalog.current(short)
            route = typed.route
            filtered = route.municipalities is not None or route.employment_areas is not None
            if mode == "derived":
                writer = parse(version.canonical, version.raw)
                reader = parse(f"derived:{short}", typed.derived)
                readers[fingerprint] = (short, writer, reader, None, route if filtered else None)
            else:
                same = version.canonical == current.canonical
                writer = parse(version.canonical, version.raw)
                reader = None if same else parse(current.canonical, current.raw)
                readers[fingerprint] = (
                    short,
                    writer,
                    reader,
                    typed.projection,
                    route if filtered else None,
                )
        self._readers[mode] = readers
        return readers


# --- rows and columns ----------------------------------------------------------------------------


def _getter_source(path: str) -> str:
    """Python expression reading a dotted path of record ``r`` (None where a level is missing)."""
    head, *rest = path.split(".")
    expression = f"r.get({head!r})"
    for part in rest:
        expression = f"({expression} or _EMPTY).get({part!r})"
    return expression


def _row_function(table: FactTable) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """One compiled function from a projected record to the table's column values.

    Generated once per table (a tuple of dict look-ups): the store reads millions of records,
    and a loop over paths per record costs several times as much.
    """
    body = ", ".join(_getter_source(column.path) for column in table.all_columns)
    namespace: dict[str, Any] = {"_EMPTY": {}}
    exec(f"def row(r):\n    return ({body},)\n", namespace)  # the paths are our own data
    function: Callable[[dict[str, Any]], tuple[Any, ...]] = namespace["row"]
    return function


_ROW_FUNCTIONS: dict[str, Callable[[dict[str, Any]], tuple[Any, ...]]] = {
    table.name: _row_function(table) for table in FACT_TABLES
}


def _text(value: Any) -> Any:
    if value is None or type(value) is str:
        return value
    if type(value) is bytes:  # a sealed personal value: reporting holds no key, so unknown
        return None
    if isinstance(value, Enum):
        return str(value.value)
    return str(value)  # UUID: canonical lower-case hex with dashes


def arrow_column(values: Sequence[Any], sql_type: str) -> pa.Array:
    """One column as Arrow, from either record shape (logical objects or raw Avro values)."""
    if sql_type == "VARCHAR":
        try:  # str and StrEnum symbols convert as they are
            return pa.array(values, pa.string())
        except (pa.ArrowTypeError, pa.ArrowInvalid):  # UUID objects, other enums
            return pa.array([_text(v) for v in values], pa.string())
    if sql_type == "TIMESTAMP":
        # Int milliseconds and aware datetimes alike, to UTC (a naive one is taken as UTC),
        # then the zone dropped: the store's TIMESTAMPs are naive UTC.
        return pa.array(values, pa.timestamp("ms", tz="UTC")).cast(pa.timestamp("ms"))
    if sql_type == "DATE":  # int days since 1970-01-01 or date objects
        return pa.array(values, pa.date32())
    if sql_type == "INTEGER":
        return pa.array(values, pa.int32())
    if sql_type == "BOOLEAN":
        return pa.array(values, pa.bool_())
    raise ValueError(f"no Arrow type for {sql_type}")


class FactBatch:
    """Rows collected per fact table, turned into Arrow tables column by column."""

    def __init__(self) -> None:
        self._rows: dict[str, list[tuple[Any, ...]]] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, type_name: str, projected: dict[str, Any]) -> None:
        """One projected record of ``type_name``; NotReported if no table takes the type."""
        table = TABLE_OF_TYPE.get(type_name)
        if table is None:
            raise NotReported(f"no fact table for {type_name}")
        self._rows.setdefault(table.name, []).append(_ROW_FUNCTIONS[table.name](projected))
        self._size += 1

    def add_all(self, type_name: str, projected: Iterable[dict[str, Any]]) -> None:
        table = TABLE_OF_TYPE.get(type_name)
        if table is None:
            raise NotReported(f"no fact table for {type_name}")
        row = _ROW_FUNCTIONS[table.name]
        rows = self._rows.setdefault(table.name, [])
        before = len(rows)
        rows.extend(row(r) for r in projected)
        self._size += len(rows) - before

    def tables(self) -> Iterable[tuple[FactTable, pa.Table]]:
        """``(table, Arrow table)`` per fact table with rows, in :data:`FACT_TABLES` order;
        ``_seq`` numbers the rows in the order they were added (the first of two with one
        event id wins)."""
        for table in FACT_TABLES:
            rows = self._rows.get(table.name)
            if not rows:
                continue
            columns = list(zip(*rows, strict=True))
            arrays = [
                arrow_column(values, column.sql_type)
                for column, values in zip(table.all_columns, columns, strict=True)
            ]
            names = [column.name for column in table.all_columns]
            arrays.append(pa.array(range(len(rows)), pa.int64()))
            names.append("_seq")
            yield table, pa.Table.from_arrays(arrays, names=names)

    def clear(self) -> None:
        self._rows.clear()
        self._size = 0


__all__ = [
    "REPORTING_DESTINATION",
    "FactBatch",
    "NotReported",
    "ReportingProjection",
    "arrow_column",
]
