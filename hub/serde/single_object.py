"""Avro single-object encoding: ``C3 01`` + 8-byte CRC-64-AVRO fingerprint (little-endian) + body.

The framing of the hub when no schema registry is configured (Avro specification, "Single-object
encoding"). The fingerprint names the writer schema exactly, and every version a producer may
have written with ships in ``schemas/history``, so a consumer resolves any value to the current
reader schema without any network call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hub.serde.avro_body import BodyReader, decode_body, encode_body
from hub.serde.base import (
    DecodedEvent,
    TruncatedPayload,
    UnknownEventType,
    UnknownSchemaFingerprint,
)
from hub.serde.catalog import SchemaCatalog, default_catalog
from hub.serde.framing import SINGLE_OBJECT_HEADER_SIZE as HEADER_SIZE
from hub.serde.framing import SINGLE_OBJECT_MAGIC as MAGIC
from hub.serde.framing import not_single_object

CONTENT_TYPE = "application/avro"


@dataclass(frozen=True, slots=True)
class _Writer:
    """What encoding one type needs, resolved once: the header and the parsed schema."""

    header: bytes
    schema: Any


class SingleObjectSerializer:
    """:class:`~hub.serde.base.EventSerializer` with Avro single-object framing.

    It has no registry, so a Confluent value raises :class:`~hub.serde.base.RegistryRequired`
    naming its schema id (reported, not mistaken for a corrupt value).
    """

    content_type = CONTENT_TYPE

    def __init__(self, catalog: SchemaCatalog | None = None) -> None:
        self.catalog = catalog if catalog is not None else default_catalog()
        self._writers: dict[str, _Writer] = {}
        self._readers: dict[bytes, BodyReader] = {}
        for event in self.catalog:
            current = event.current
            writer = _Writer(MAGIC + current.fingerprint, current.parsed)
            self._writers[event.full_name] = writer
            self._writers.setdefault(event.short_name, writer)
        for fp, version in self.catalog.fingerprints().items():
            current = self.catalog.current(version.type_name)
            self._readers[fp] = BodyReader.resolving(
                version.parsed, version.canonical, current, fp.hex()
            )

    def _writer(self, type_name: str) -> _Writer:
        writer = self._writers.get(type_name)
        if writer is None:
            raise UnknownEventType(type_name, self.catalog.names())
        return writer

    def schema_ref(self, type_name: str) -> str:
        """Hex CRC-64-AVRO fingerprint of the current schema of ``type_name``."""
        return self._writer(type_name).header[2:].hex()

    def encode(self, type_name: str, record: dict[str, Any]) -> bytes:
        writer = self._writers.get(type_name) or self._writer(type_name)
        return encode_body(writer.header, writer.schema, type_name, record)

    def decode(self, data: bytes) -> DecodedEvent:
        if type(data) is not bytes:  # bytearray/memoryview: dict keys and BytesIO need bytes
            data = bytes(data)
        fingerprint = self.fingerprint_of(data)
        reader = self._readers.get(fingerprint)
        if reader is None:
            raise UnknownSchemaFingerprint(fingerprint)
        return decode_body(data, HEADER_SIZE, reader)

    async def adecode(self, data: bytes) -> DecodedEvent:
        """Same as :meth:`decode`: every writer schema is local, nothing to wait for."""
        return self.decode(data)

    @staticmethod
    def fingerprint_of(data: bytes) -> bytes:
        """The writer fingerprint in a value's header, without decoding the body."""
        if data[:2] != MAGIC:
            raise not_single_object(data)
        if len(data) < HEADER_SIZE:
            raise TruncatedPayload(
                f"single-object value of {len(data)} bytes ends inside its 10-byte header"
            )
        return data[2:HEADER_SIZE]
