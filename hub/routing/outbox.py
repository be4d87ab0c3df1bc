"""Outbox values: a projected event in Avro single-object encoding with its derived schema.

The outbox topic of a destination holds only what its routes grant, so its values are written
with the derived schema of (destination, event type) (:func:`projected_schema`), framed as the
log is without a registry: ``C3 01`` + the CRC-64-AVRO fingerprint of the derived schema + body.
The fingerprint names the writer schema exactly; the codec knows the derived schema of every
released version of every routed type, so a delivery worker reads outbox records written before
an event schema evolved, resolved to the current derived schema.

Derived schemas are named ``fi.te.hub.outbox.<destination>.<Type>``, so a fingerprint also says
which destination a value was projected for; a value for another destination, or from a routes
file whose grants have since changed, is an :class:`UnknownSchemaFingerprint`, never misread.

Kafka record (written by the router): key = the log record's key (the person's pseudonym), value
= :meth:`OutboxCodec.encode`, headers = the log record's CloudEvents headers plus
``hub-route``, ``hub-destination``, ``hub-endpoint`` (when the destination has endpoints) and
``hub-source`` (``<topic>/<partition>/<offset>`` of the log record).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fastavro import parse_schema

from hub.events.sensitivity import Sensitivity
from hub.routing.projection import projected_schema, without_logical_types
from hub.routing.resolve import Routed
from hub.routing.routes import RoutesConfig
from hub.serde.avro_body import BodyReader, decode_body, encode_body
from hub.serde.base import EncodeError, UnknownSchemaFingerprint
from hub.serde.catalog import SchemaCatalog, SchemaVersion, default_catalog
from hub.serde.fingerprint import canonical_form, crc64_avro
from hub.serde.framing import SINGLE_OBJECT_HEADER_SIZE, SINGLE_OBJECT_MAGIC
from hub.serde.single_object import SingleObjectSerializer

HEADER_ROUTE = "hub-route"
HEADER_DESTINATION = "hub-destination"
HEADER_ENDPOINT = "hub-endpoint"
HEADER_SOURCE = "hub-source"


def single_object_dataschema(value: bytes) -> bytes:
    """``urn:avro:schema:<fingerprint hex>`` of a single-object value (or its header)."""
    return b"urn:avro:schema:" + value[2:SINGLE_OBJECT_HEADER_SIZE].hex().encode()


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """A decoded outbox value: always shaped by the current derived schema of its type."""

    type_name: str
    """Short event type name, e.g. ``ServiceEnrolled``."""
    destination: str
    record: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RawWriter:
    """Writes one (destination, event type) outbox value from a whole log record decoded
    without logical types (see :meth:`OutboxCodec.encode_raw`)."""

    header: bytes
    """``C3 01`` + the derived schema's fingerprint."""
    schema: Any
    """The current derived schema without logical types, parsed."""
    dataschema: tuple[str, bytes]
    """The ``ce_dataschema`` header of the values (``urn:avro:schema:<fingerprint hex>``)."""
    raw: dict[str, Any]
    """The current derived schema (JSON, with logical types)."""


@dataclass(frozen=True, slots=True)
class DerivedSchema:
    """One derived schema version of one (destination, event type)."""

    destination: str
    type_name: str
    version: int
    raw: dict[str, Any]
    parsed: Any
    canonical: str
    fingerprint: bytes


def _derive(
    destination: str,
    type_name: str,
    version: SchemaVersion,
    grants: frozenset[Sensitivity],
    fields: tuple[str, ...] | None,
) -> DerivedSchema:
    raw = projected_schema(version.raw, grants, fields, destination)
    parsed = parse_schema(raw, named_schemas={})
    canonical = canonical_form(parsed)
    return DerivedSchema(
        destination, type_name, version.version, raw, parsed, canonical, crc64_avro(canonical)
    )


class OutboxCodec:
    """Encode :class:`Routed` events for their outbox; decode any released derived version."""

    def __init__(self, derived: list[DerivedSchema]) -> None:
        self._writers: dict[tuple[str, str], tuple[bytes, DerivedSchema]] = {}
        self._raw_writers: dict[tuple[str, str], RawWriter] = {}
        self._readers: dict[bytes, tuple[DerivedSchema, BodyReader]] = {}
        current: dict[tuple[str, str], DerivedSchema] = {}
        for schema in derived:
            key = (schema.destination, schema.type_name)
            if key not in current or schema.version > current[key].version:
                current[key] = schema
        for key, schema in current.items():
            self._writers[key] = (SINGLE_OBJECT_MAGIC + schema.fingerprint, schema)
        for schema in derived:
            reader_schema = current[(schema.destination, schema.type_name)]
            other = self._readers.get(schema.fingerprint)
            if other is not None and (other[0].destination, other[0].type_name) != (
                schema.destination,
                schema.type_name,
            ):
                raise ValueError(
                    f"derived schemas {schema.destination}/{schema.type_name} and "
                    f"{other[0].destination}/{other[0].type_name} share a fingerprint"
                )
            same = schema.canonical == reader_schema.canonical
            reader = BodyReader(
                type_name=schema.type_name,
                writer=reader_schema.parsed if same else schema.parsed,
                reader=None if same else reader_schema.parsed,
                ref=schema.fingerprint.hex(),
            )
            if other is None or schema is reader_schema:
                self._readers[schema.fingerprint] = (schema, reader)

    @classmethod
    def for_routes(cls, config: RoutesConfig, catalog: SchemaCatalog | None = None) -> OutboxCodec:
        """The derived schemas of every route × type × destination × released version."""
        return cls.for_targets(
            (
                (destination, type_name, frozenset(route.grants), route.fields)
                for route in config.routes
                for type_name in route.types
                for destination in config.destinations_of(route)
            ),
            catalog,
        )

    @classmethod
    def for_targets(
        cls,
        targets: Iterable[tuple[str, str, frozenset[Sensitivity], tuple[str, ...] | None]],
        catalog: SchemaCatalog | None = None,
    ) -> OutboxCodec:
        """The codec of ``(destination, event type, grants, fields)`` targets (tools, tests)."""
        catalog = catalog if catalog is not None else default_catalog()
        derived: list[DerivedSchema] = []
        for destination, type_name, grants, fields in targets:
            event = catalog.event(type_name)
            for version in event.versions():
                derived.append(_derive(destination, event.short_name, version, grants, fields))
        return cls(derived)

    def schema(self, destination: str, type_name: str) -> dict[str, Any]:
        """The current derived schema (JSON) of a destination and type."""
        return self._writer(destination, type_name)[1].raw

    def schemas(self) -> list[DerivedSchema]:
        """Every derived schema version the codec reads."""
        return [schema for schema, _ in self._readers.values()]

    def _writer(self, destination: str, type_name: str) -> tuple[bytes, DerivedSchema]:
        short = type_name.rpartition(".")[2]
        writer = self._writers.get((destination, short))
        if writer is None:
            raise EncodeError(f"no route sends {short} to destination {destination}")
        return writer

    def encode(self, routed: Routed, type_name: str) -> bytes:
        """Avro single-object value of the projected record with the derived schema."""
        header, schema = self._writer(routed.destination, type_name)
        return encode_body(header, schema.parsed, schema.type_name, routed.record)

    def raw_writer(self, destination: str, type_name: str) -> RawWriter:
        """The :class:`RawWriter` of a destination and (short) type, compiled once."""
        found = self._raw_writers.get((destination, type_name))
        if found is None:
            header, schema = self._writer(destination, type_name)
            parsed = parse_schema(without_logical_types(schema.raw), named_schemas={})
            dataschema = ("ce_dataschema", single_object_dataschema(header))
            found = RawWriter(header, parsed, dataschema, schema.raw)
            self._raw_writers[(destination, type_name)] = found
        return found

    def encode_raw(self, writer: RawWriter, type_name: str, record: dict[str, Any]) -> bytes:
        """The outbox value of a WHOLE log record decoded without logical types (uuid as str,
        timestamp-millis and date as int): the bytes :meth:`encode` writes for the projected
        record. No projected copy is needed: the writer takes only the fields its derived
        schema has, at every level, so the fields a route does not grant are never written."""
        return encode_body(writer.header, writer.schema, type_name, record)

    def decode(self, data: bytes) -> OutboxRecord:
        """Decode any derived version this codec knows, shaped as the current derived schema."""
        if type(data) is not bytes:
            data = bytes(data)
        fingerprint = SingleObjectSerializer.fingerprint_of(data)
        found = self._readers.get(fingerprint)
        if found is None:
            raise UnknownSchemaFingerprint(fingerprint)
        schema, reader = found
        decoded = decode_body(data, SINGLE_OBJECT_HEADER_SIZE, reader)
        return OutboxRecord(schema.type_name, schema.destination, decoded.record)


__all__ = [
    "HEADER_DESTINATION",
    "HEADER_ENDPOINT",
    "HEADER_ROUTE",
    "HEADER_SOURCE",
    "DerivedSchema",
    "OutboxCodec",
    "OutboxRecord",
    "RawWriter",
    "single_object_dataschema",
]
