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

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

from fastavro import parse_schema

from hub.events.sensitivity import Sensitivity
from hub.privacy.datakeys import Forgotten, Restricted
from hub.privacy.kek import KekError, KekUnavailable
from hub.privacy.sealing import (
    DataKey,
    KeyErased,
    KeyUnknown,
    SealBroken,
    SealError,
    is_sealed,
    sealed_key_id,
)
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


# -- sealed personal fields of routed records ------------------------------------------------------
#
# The outboxes are Kafka topics too: a granted personal field is copied into its outbox record
# as it is in the log (sealed bytes, or the plaintext of a record written before encryption).
# The router checks that the person's data key can still be had before it routes a record that
# a delivery worker will have to open; the worker opens the granted fields in memory, right
# before it builds the body. Both look keys up in batches and share these helpers.

KeyPair = tuple[str, UUID]
"""(person pseudonym, data key id)."""


class PersonKeys(Protocol):
    """What the router and the delivery workers need of the person keys: batch look-up, the
    forgotten marks and which keys are erased (``KafkaPersonKeys`` of
    :mod:`hub.privacy.keystore`, or a ``KeyDirectory``)."""

    def data_keys(self, pairs: Iterable[KeyPair]) -> dict[KeyPair, DataKey]: ...

    def forgotten(self, subject: str) -> Forgotten | None: ...

    def is_erased(self, subject: str, key_id: UUID) -> bool: ...


class KeysMisconfigured(KekUnavailable):
    """A data key cannot be unwrapped because of this process's own configuration (a keyring
    without the KEK id a key is wrapped by, a Vault token refused, a redirect, a CA bundle):
    the same for every person, so not a dead letter of each, but back-pressure like a keeper
    that does not answer, until an operator fixes it. The message names what is missing,
    never a key."""


#: What the keepers (:mod:`hub.privacy.kek`, :mod:`hub.privacy.vault`) say of a fault of the
#: caller's configuration, not of one stored key record.
_CONFIGURATION_FAULTS = (
    "which this keyring does not hold",
    "(403 permission denied)",
    "with a redirect",
    "HUB_VAULT_CA_BUNDLE",
    "holds no key-encryption key",
)


def configuration_fault(error: BaseException) -> KeysMisconfigured | None:
    """The :class:`KeysMisconfigured` a KekError (or the key store's KeyRecordBroken wrapping
    one) is, when it is a fault of this process's configuration; None otherwise (a tampered
    key record stays that record's dead letter)."""
    if isinstance(error, KekUnavailable) or not isinstance(error, KekError | SealBroken):
        return None
    text = str(error)
    if not any(marker in text for marker in _CONFIGURATION_FAULTS):
        return None
    problem = text.partition(" of the person cannot be used: ")[2] or text
    return KeysMisconfigured(
        f"the data keys cannot be unwrapped with this configuration: {problem}"
    )


def available_keys(
    keys: PersonKeys, pairs: Iterable[KeyPair]
) -> tuple[dict[KeyPair, DataKey], dict[KeyPair, SealError | KekError]]:
    """The data keys of ``pairs`` in as few batch calls as the answers allow, and why the others
    cannot be had (erased, unknown, a wrapping that does not open).

    ``data_keys`` raises for the first key it cannot give; that pair (or every pair of the
    person, when the error names no key id) is set aside and the rest asked again, so one
    forgotten person costs one more call, not one call per record. :class:`KekUnavailable`
    (the keeper does not answer) is raised: nothing is known about any key, retry later. Any
    other KekError of a batch is narrowed down to the pairs that fail on their own, unless it
    is a fault of this process's configuration (:class:`KeysMisconfigured`, raised: retry
    once it is fixed, never a dead letter of each person)."""
    pending = list(dict.fromkeys(pairs))
    found: dict[KeyPair, DataKey] = {}
    failed: dict[KeyPair, SealError | KekError] = {}
    while pending:
        try:
            found.update(keys.data_keys(pending))
            break
        except SealError as error:  # KeyErased, KeyUnknown, a key record that is broken
            misconfigured = configuration_fault(error)
            if misconfigured is not None:
                raise misconfigured from None
            subject = getattr(error, "subject", None)
            named = (subject, getattr(error, "key_id", None))
            culprits = (
                [named]
                if named in pending
                else [p for p in pending if p[0] == subject] or pending[:1]
            )
            for pair in culprits:
                failed[pair] = error
            pending = [p for p in pending if p not in culprits]
        except KekUnavailable:
            raise
        except KekError as error:
            misconfigured = configuration_fault(error)
            if misconfigured is not None:
                raise misconfigured from None
            if len(pending) == 1:
                failed[pending[0]] = error
                break
            for pair in pending:
                one, bad = available_keys(keys, [pair])
                found.update(one)
                failed.update(bad)
            break
    return found, failed


@dataclass(frozen=True, slots=True)
class SealedPaths:
    """What of one record a route's grant reaches: sealed values and their keys, plaintext
    personal values (records written before encryption)."""

    sealed: tuple[str, ...]
    pairs: tuple[KeyPair, ...]
    plain: tuple[str, ...]
    broken: tuple[str, ...] = ()
    """Sealed-looking values too short to carry a key id (tampered): never routed."""


def _at(record: Mapping[str, Any], parts: tuple[str, ...]) -> Any:
    node: Any = record
    for part in parts:
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
        if node is None:
            return None
    return node


def granted_values(
    record: Mapping[str, Any], subject: str, paths: Iterable[tuple[str, tuple[str, ...]]]
) -> SealedPaths | None:
    """The personal values at ``paths`` ((dotted, split) of the fields a route grants), or
    None when all of them are null or absent."""
    sealed: list[str] = []
    pairs: list[KeyPair] = []
    plain: list[str] = []
    broken: list[str] = []
    for path, parts in paths:
        value = _at(record, parts)
        if value is None:
            continue
        if is_sealed(value):
            try:
                pair = (subject, sealed_key_id(value))
            except SealBroken:
                broken.append(path)
                continue
            sealed.append(path)
            if pair not in pairs:
                pairs.append(pair)
        elif type(value) is bytes:
            broken.append(path)
        else:
            plain.append(path)
    if not (sealed or plain or broken):
        return None
    return SealedPaths(tuple(sealed), tuple(pairs), tuple(plain), tuple(broken))


def recorded_at(record: Mapping[str, Any]) -> datetime | None:
    """The envelope's recorded_at, read with or without logical types (int milliseconds)."""
    value = (record.get("envelope") or {}).get("recorded_at")
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, int):
        return datetime.fromtimestamp(value / 1000, UTC)
    return None


def restricted(mark: Forgotten | None, record: Mapping[str, Any]) -> bool:
    """Whether plaintext personal values of the record are held back: the person was forgotten
    after it was recorded (a record of unknown time counts as before)."""
    if mark is None:
        return False
    when = recorded_at(record)
    return when is None or when <= mark.forgotten_at


@dataclass(frozen=True, slots=True)
class Unavailable:
    """Why a route's record of a person is not sent: a dead letter's error class and reason."""

    error_class: str
    reason: str


def _when(moment: datetime | None) -> str:
    return "" if moment is None else f" on {moment.astimezone(UTC).isoformat(timespec='seconds')}"


def key_unavailable(
    route: str | None,
    destination: str,
    paths: Iterable[str],
    error: BaseException,
    forgotten: Forgotten | None = None,
) -> Unavailable:
    """The dead-letter error class and reason of personal fields that cannot be opened. The
    reason names the route, the destination, the field paths and when the person was
    forgotten; never a value, a key or the person."""
    fields = ", ".join(paths) or "personal fields"
    where = f"route {route}: destination {destination}" if route else f"destination {destination}"
    if isinstance(error, KeyErased):
        when = error.forgotten_at or (forgotten.forgotten_at if forgotten else None)
        return Unavailable(
            "PersonalDataErased",
            f"{where} needs {fields}, but the person's data key was erased{_when(when)} "
            "(person forgotten or retention expired): the fields can no longer be read, "
            "so the event is not sent",
        )
    if isinstance(error, KeyUnknown):
        return Unavailable(
            "DataKeyUnknown",
            f"{where} needs {fields}, sealed with data key {error.key_id}, which is not a "
            "key of the event's person in the person-keys topic (a lost key record, another "
            "cluster, or a value copied from another person's event)",
        )
    if isinstance(error, SealBroken) and getattr(error, "key_id", None) is not None:
        return Unavailable(  # the stored key record itself (KeyRecordBroken of the key store)
            "DataKeyUnreadable",
            f"{where} needs {fields}, but the person's data key record cannot be used: {error}",
        )
    if isinstance(error, SealBroken):
        return Unavailable(
            "SealBroken",
            f"{where} needs {fields}, which do not open: {error} (changed, or moved from "
            "another event or field)",
        )
    if isinstance(error, KekError):
        return Unavailable(
            "DataKeyUnreadable",
            f"{where} needs {fields}, but the person's data key does not unwrap: {error}",
        )
    return Unavailable(type(error).__name__, f"{where} needs {fields}: {type(error).__name__}")


def restriction_of(keys: object, subject: str) -> Restricted | None:
    """The person's restriction of processing in force (GDPR art. 18), if any: asked of the
    person keys (``restricted``) or their key directory; None for keys that know none."""
    ask = getattr(keys, "restricted", None)
    if ask is None:
        ask = getattr(getattr(keys, "directory", None), "restricted", None)
    if ask is None:
        return None
    mark = ask(subject)
    return mark if isinstance(mark, Restricted) else None


def processing_restricted(
    route: str | None, destination: str, paths: Iterable[str], mark: Restricted
) -> Unavailable:
    """The dead letter of a route's personal fields of a person whose processing is
    restricted: the basis and since when, never a value or the person. Lifting the
    restriction and replaying the letter delivers it."""
    where = f"route {route}: destination {destination}" if route else f"destination {destination}"
    return Unavailable(
        "PersonalDataRestricted",
        f"{where} needs {', '.join(paths) or 'personal fields'}, but the person's processing "
        f"is restricted (GDPR art. 18, basis: {mark.basis}) since"
        f"{_when(mark.restricted_at).removeprefix(' on')}: held back until the restriction "
        "is lifted (then replay the dead letter)",
    )


def plaintext_restricted(
    route: str | None, destination: str, paths: Iterable[str], mark: Forgotten
) -> Unavailable:
    where = f"route {route}: destination {destination}" if route else f"destination {destination}"
    return Unavailable(
        "PersonalDataRestricted",
        f"{where} needs {', '.join(paths)}, written in plaintext before encryption by a "
        f"person forgotten{_when(mark.forgotten_at)}: held back (forgetting also restricts "
        "what the log still holds in clear)",
    )


__all__ = [
    "HEADER_DESTINATION",
    "HEADER_ENDPOINT",
    "HEADER_ROUTE",
    "HEADER_SOURCE",
    "DerivedSchema",
    "KeyPair",
    "KeysMisconfigured",
    "OutboxCodec",
    "OutboxRecord",
    "PersonKeys",
    "RawWriter",
    "SealedPaths",
    "Unavailable",
    "available_keys",
    "configuration_fault",
    "granted_values",
    "key_unavailable",
    "plaintext_restricted",
    "processing_restricted",
    "restricted",
    "restriction_of",
    "single_object_dataschema",
]
