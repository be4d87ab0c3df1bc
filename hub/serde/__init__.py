"""Serialization of hub events: Avro bodies in one of two framings, plus CloudEvents headers.

* :class:`SingleObjectSerializer`: Avro single-object encoding against the shipped schemas
  (default, no registry needed);
* :class:`ConfluentSerializer`: Confluent wire format with a Confluent-compatible registry;
* :func:`build_serializer` picks the framing new values are written in from
  :class:`~hub.settings.HubSettings`; both serializers read values of either framing by their
  marker byte (a Confluent value without a registry raises :class:`RegistryRequired`).
"""

from hub.serde.base import (
    AvroSchemaJson,
    BadMagic,
    DecodedEvent,
    DecodeError,
    EncodeError,
    EventSerializer,
    RegistryRequired,
    SerdeError,
    TrailingBytes,
    TruncatedPayload,
    UnknownEventType,
    UnknownSchemaFingerprint,
)
from hub.serde.catalog import (
    EventSchemas,
    SchemaCatalog,
    SchemaCatalogError,
    SchemaVersion,
    default_catalog,
    default_schemas_dir,
)
from hub.serde.cloudevents import (
    CloudEventHeaderError,
    cloudevent_headers,
    parse_cloudevent_headers,
)
from hub.serde.confluent import ConfluentSerializer
from hub.serde.factory import build_serializer
from hub.serde.fingerprint import canonical_form, crc64_avro, schema_fingerprint
from hub.serde.registry import SchemaRegistryClient, SchemaRegistryError, register_all
from hub.serde.single_object import SingleObjectSerializer

__all__ = [
    "AvroSchemaJson",
    "BadMagic",
    "CloudEventHeaderError",
    "ConfluentSerializer",
    "DecodeError",
    "DecodedEvent",
    "EncodeError",
    "EventSchemas",
    "EventSerializer",
    "RegistryRequired",
    "SchemaCatalog",
    "SchemaCatalogError",
    "SchemaRegistryClient",
    "SchemaRegistryError",
    "SchemaVersion",
    "SerdeError",
    "SingleObjectSerializer",
    "TrailingBytes",
    "TruncatedPayload",
    "UnknownEventType",
    "UnknownSchemaFingerprint",
    "build_serializer",
    "canonical_form",
    "cloudevent_headers",
    "crc64_avro",
    "default_catalog",
    "default_schemas_dir",
    "parse_cloudevent_headers",
    "register_all",
    "schema_fingerprint",
]
