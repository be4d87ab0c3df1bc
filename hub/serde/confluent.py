"""Confluent wire format: ``00`` + 4-byte big-endian schema id + Avro binary body.

Used when a Confluent-compatible registry is configured, so that Kafka tooling of that
ecosystem (Connect, ksqlDB, kafka-avro-console-consumer) reads the hub's topics. The id names
the writer schema in the registry; decoding fetches it once per id and resolves it to the
current reader schema of the same record name from the shipped catalog.

Values are read by their marker byte: a single-object value (``C3 01``, written before the
registry was switched on) decodes from the shipped schemas, so a log with both framings reads
whole. Network calls happen only on a cache miss: :meth:`ConfluentSerializer.prepare` (or
``aprepare`` in an event loop) fills the encode side at start-up, and
:meth:`ConfluentSerializer.adecode` fetches unknown writer ids without blocking the loop.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fastavro import parse_schema

from hub.serde.avro_body import BodyReader, decode_body, encode_body
from hub.serde.base import DecodedEvent, SerdeError, UnknownEventType
from hub.serde.catalog import SchemaCatalog, default_catalog, full_name_of
from hub.serde.fingerprint import canonical_form
from hub.serde.framing import CONFLUENT_HEADER_SIZE as HEADER_SIZE
from hub.serde.framing import CONFLUENT_MAGIC as MAGIC
from hub.serde.framing import confluent_schema_id
from hub.serde.registry import (
    SchemaNotFound,
    SchemaRegistryClient,
    SubjectNotFound,
    subject_for,
)
from hub.serde.single_object import SingleObjectSerializer

CONTENT_TYPE = "application/avro"


def confluent_header(schema_id: int) -> bytes:
    """The 5-byte prefix of a value written with registry id ``schema_id``."""
    return MAGIC + schema_id.to_bytes(4, "big")


class ConfluentSerializer:
    """:class:`~hub.serde.base.EventSerializer` with Confluent framing and a schema registry."""

    content_type = CONTENT_TYPE

    def __init__(
        self,
        client: SchemaRegistryClient,
        catalog: SchemaCatalog | None = None,
        *,
        auto_register: bool = False,
    ) -> None:
        """``auto_register``: register a missing current schema on first encode (dev setups);
        in production ``hub schemas register`` does it on deploy and producers only look up."""
        self.client = client
        self.catalog = catalog if catalog is not None else default_catalog()
        self.auto_register = auto_register
        self._headers: dict[str, bytes] = {}
        self._schemas: dict[str, Any] = {}
        self._readers: dict[int, BodyReader] = {}
        self._single_object = SingleObjectSerializer(self.catalog)

    # -- id cache -------------------------------------------------------------------------

    def prime(self, ids: Mapping[str, int]) -> None:
        """Set the registry id of the current schema of types (name → id), e.g. after
        :func:`~hub.serde.registry.register_all`; no network."""
        for name, schema_id in ids.items():
            event = self.catalog.event(name)
            header = confluent_header(schema_id)
            for key in (event.full_name, event.short_name):
                self._headers[key] = header
                self._schemas[key] = event.current.parsed
            self._readers.setdefault(
                schema_id,
                BodyReader(event.full_name, event.current.parsed, None, str(schema_id)),
            )

    def _id_for(self, full_name: str) -> int:
        current = self.catalog.current(full_name)
        subject = subject_for(full_name)
        try:
            return self.client.lookup(subject, current.json)
        except (SchemaNotFound, SubjectNotFound):
            if not self.auto_register:
                raise
            return self.client.register(subject, current.json)

    async def _aid_for(self, full_name: str) -> int:
        current = self.catalog.current(full_name)
        subject = subject_for(full_name)
        try:
            return await self.client.alookup(subject, current.json)
        except (SchemaNotFound, SubjectNotFound):
            if not self.auto_register:
                raise
            return await self.client.aregister(subject, current.json)

    def prepare(self) -> dict[str, int]:
        """Look up (or register) the id of every current schema; call once at start-up."""
        ids = {name: self._id_for(name) for name in self.catalog.names()}
        self.prime(ids)
        return ids

    async def aprepare(self) -> dict[str, int]:
        """:meth:`prepare` for an event loop."""
        ids = {name: await self._aid_for(name) for name in self.catalog.names()}
        self.prime(ids)
        return ids

    def _header(self, type_name: str) -> bytes:
        header = self._headers.get(type_name)
        if header is None:
            full_name = self.catalog.full_name(type_name)  # UnknownEventType if not ours
            self.prime({full_name: self._id_for(full_name)})
            header = self._headers[type_name]
        return header

    def schema_ref(self, type_name: str) -> str:
        """Registry id (decimal) of the current schema of ``type_name``."""
        return str(int.from_bytes(self._header(type_name)[1:], "big"))

    # -- encode ---------------------------------------------------------------------------

    def encode(self, type_name: str, record: dict[str, Any]) -> bytes:
        header = self._headers.get(type_name) or self._header(type_name)
        return encode_body(header, self._schemas[type_name], type_name, record)

    # -- decode ---------------------------------------------------------------------------

    def _reader_for(self, schema_id: int, writer_text: str) -> BodyReader:
        try:
            writer_json = json.loads(writer_text)
        except ValueError as exc:
            raise SerdeError(f"registry schema {schema_id} is not JSON: {exc}") from exc
        if not isinstance(writer_json, dict):
            raise SerdeError(f"registry schema {schema_id} is not a record schema")
        name = full_name_of(writer_json)
        try:
            current = self.catalog.current(name)
        except UnknownEventType as exc:
            raise UnknownEventType(
                f"{name} (writer schema id {schema_id})", self.catalog.names()
            ) from exc
        try:
            writer = parse_schema(writer_json, named_schemas={})
            writer_canonical = canonical_form(writer)
        except Exception as exc:
            raise SerdeError(f"registry schema {schema_id} is not valid Avro: {exc}") from exc
        reader = BodyReader.resolving(writer, writer_canonical, current, str(schema_id))
        self._readers[schema_id] = reader
        return reader

    def decode(self, data: bytes) -> DecodedEvent:
        """Decode either framing; an unknown writer id is fetched with a blocking call (see
        :meth:`adecode`)."""
        if type(data) is not bytes:
            data = bytes(data)
        if data[:1] != MAGIC:
            return self._single_object.decode(data)  # or BadMagic naming both markers
        schema_id = confluent_schema_id(data)
        reader = self._readers.get(schema_id)
        if reader is None:
            reader = self._reader_for(schema_id, self.client.get_by_id(schema_id))
        return decode_body(data, HEADER_SIZE, reader)

    async def adecode(self, data: bytes) -> DecodedEvent:
        """Decode in an event loop: an unknown writer id is fetched with the async client."""
        if data[:1] == MAGIC:
            schema_id = confluent_schema_id(data)
            if schema_id not in self._readers:
                self._reader_for(schema_id, await self.client.aget_by_id(schema_id))
        return self.decode(data)
