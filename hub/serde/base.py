"""The serializer interface shared by both wire framings, and the errors they raise.

Producers and consumers only see :class:`EventSerializer`. Whether new values carry an Avro
single-object header (no registry) or the Confluent magic byte and schema id (with a registry)
is a deployment choice made once in :func:`hub.serde.build_serializer`; reading never depends
on it: every serializer decodes by the value's marker byte, so a log that holds both framings
(a registry switched on in a running deployment) reads whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

AvroSchemaJson = dict[str, Any] | list[Any] | str
"""An Avro schema as JSON data (record/enum/... object, union list or primitive name)."""


@dataclass(frozen=True, slots=True)
class DecodedEvent:
    """One decoded Kafka value.

    ``record`` is always shaped by the *current* schema of ``type_name`` (the reader schema),
    whatever version the producer wrote, so consumers handle one shape per type.
    ``writer_schema_ref`` says which schema the bytes were written with: the CRC-64-AVRO
    fingerprint in hex for single-object encoding, the registry id (decimal) for Confluent.
    """

    type_name: str
    record: dict[str, Any]
    writer_schema_ref: str


_new_object = object.__new__
_set_type_name = DecodedEvent.__dict__["type_name"].__set__
_set_record = DecodedEvent.__dict__["record"].__set__
_set_ref = DecodedEvent.__dict__["writer_schema_ref"].__set__


def new_decoded_event(type_name: str, record: dict[str, Any], ref: str) -> DecodedEvent:
    """Build a DecodedEvent without the frozen ``__init__`` (which costs ~3 % of a decode)."""
    event: DecodedEvent = _new_object(DecodedEvent)
    _set_type_name(event, type_name)
    _set_record(event, record)
    _set_ref(event, ref)
    return event


@runtime_checkable
class EventSerializer(Protocol):
    """Encode event records to Kafka values and back; one interface, two framings."""

    content_type: str
    """The CloudEvents ``content-type`` of the values this serializer writes."""

    def encode(self, type_name: str, record: dict[str, Any]) -> bytes:
        """Avro-encode ``record`` with the current schema of ``type_name`` (short or full name)."""
        ...

    def decode(self, data: bytes) -> DecodedEvent:
        """Decode a value of either framing (chosen by its marker byte), resolving the writer
        schema to the current reader schema; a Confluent value without a registry raises
        :class:`RegistryRequired`."""
        ...

    async def adecode(self, data: bytes) -> DecodedEvent:
        """:meth:`decode` for consumers in an event loop (schema look-ups never block it)."""
        ...

    def schema_ref(self, type_name: str) -> str:
        """The reference ``encode`` writes for ``type_name`` (fingerprint hex or registry id)."""
        ...


class SerdeError(Exception):
    """Base of every serialization error: a value that cannot be encoded or decoded."""


class UnknownEventType(SerdeError, KeyError):
    """The catalog has no schema of that name."""

    def __init__(self, name: str, known: list[str] | None = None) -> None:
        self.name = name
        hint = f"; known types: {', '.join(known)}" if known else ""
        super().__init__(f"no schema for event type {name!r}{hint}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class UnknownSchemaFingerprint(SerdeError):
    """A single-object value names a schema fingerprint that no shipped schema version has."""

    def __init__(self, fingerprint: bytes) -> None:
        self.fingerprint = fingerprint
        super().__init__(
            f"unknown Avro schema fingerprint {fingerprint.hex()} (CRC-64-AVRO, little-endian): "
            "written with a schema this build does not ship (newer producer, or a schema "
            "version missing from schemas/history)"
        )


class BadMagic(SerdeError):
    """The value starts with neither framing's marker: it is not an Avro value of the hub."""

    def __init__(self, found: bytes) -> None:
        self.found = found
        super().__init__(
            "not an Avro event value: expected marker c3 01 (single-object) or 00 (Confluent "
            f"wire format), found {found.hex(' ') if found else 'an empty value'}"
        )


class RegistryRequired(SerdeError):
    """A Confluent wire-format value was read without a schema registry to resolve its id."""

    def __init__(self, schema_id: int) -> None:
        self.schema_id = schema_id
        super().__init__(
            f"Confluent wire-format value written with registry schema id {schema_id}: reading "
            "it needs the schema registry that assigned the id (set HUB_SCHEMA_REGISTRY_URL)"
        )


class TruncatedPayload(SerdeError):
    """The value ended before its header or its Avro body was complete."""


class TrailingBytes(SerdeError):
    """Bytes are left after the Avro body: the value is corrupt or uses another schema."""


class EncodeError(SerdeError):
    """A record does not fit the schema of its type."""


class DecodeError(SerdeError):
    """The Avro body cannot be read with the writer schema the header names."""
