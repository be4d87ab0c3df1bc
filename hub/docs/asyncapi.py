"""The AsyncAPI 3.0 document of every Kafka channel the hub writes or reads.

Why generated: the channels are the hub's contract with payers, providers, municipal systems
and reporting, and a hand-kept document drifts. Everything here comes from the code that
writes the records: topic names and configs from :func:`hub.kafka.topics.topic_specs` and
:func:`~hub.kafka.topics.outbox_spec`, the log's payloads from the Avro schemas the pydantic
models in :mod:`hub.events` generate, each outbox's payloads from
:func:`hub.routing.projection.projected_schema` for the routes of
:func:`hub.routing.routes.load_routes` (the same derivation the router projects with), the
dead letters' headers from :class:`hub.kafka.dead_letters.DeadLetter`.

How: FastStream generates the document. :func:`declare_broker` builds a FastStream
``KafkaBroker`` (never started) with one publisher per writer and one subscriber per reader of
each topic, with titles, descriptions, consumer groups and the pydantic models of the JSON
channels; ``faststream.specification.AsyncAPI(...).to_specification()`` turns it into AsyncAPI
3.0 (servers, channels, operations, JSON Schemas of the models). :func:`asyncapi_document`
then post-processes what FastStream cannot express (each step says so where it is done):

* FastStream makes one channel per publisher/subscriber; AsyncAPI 3 has one channel per
  address with several operations, so channels of one topic are merged.
* FastStream puts every type a handler takes into one message (``oneOf``); the log and the
  outboxes get one message per event type instead, so each can name its own headers.
* FastStream only knows JSON Schema payloads; the log, the outboxes and the dead letters carry
  Avro, so their payloads become AsyncAPI multi-format schemas
  (``application/vnd.apache.avro+json;version=1.9.0``) holding the Avro schema itself.
* FastStream has no message headers, keys, Kafka message/operation bindings (key schema,
  consumer group) or topic configuration (partitions, replicas, retention): added here.
* FastStream documents no HTTP request the application sends: the webhook channels (what each
  destination's receivers are POSTed) come from :mod:`hub.docs.webhooks`.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal, Union
from urllib.parse import urlsplit
from uuid import UUID

from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter

from hub.delivery.disclosure import DisclosureStatus
from hub.delivery.dlq import (
    MARK_AT_HEADER,
    MARK_HEADER,
    MARK_NOTE_HEADER,
    MARK_OF_HEADER,
    LetterStatus,
    replay_transactional_id,
)
from hub.docs.webhooks import (
    HTTP_BINDING_VERSION,
    body_schema,
    endpoint_urls,
    server_of,
    webhook_headers,
    webhook_servers,
)
from hub.events import EVENT_TYPES
from hub.events.avro_schema import avro_schema
from hub.events.enums import PayerKind
from hub.events.sensitivity import sensitive_fields
from hub.identity import PseudonymStr
from hub.kafka.dead_letters import HEADER_PREFIX as DEAD_LETTER_PREFIX
from hub.kafka.dead_letters import DeadLetter, DeadLetterStage
from hub.kafka.topics import TopicSpec, outbox_spec, topic_specs
from hub.routing.outbox import HEADER_DESTINATION, HEADER_ENDPOINT, HEADER_ROUTE, HEADER_SOURCE
from hub.routing.projection import projected_schema
from hub.routing.routes import RoutesConfig, Transport, load_routes
from hub.serde.cloudevents import CONTENT_TYPE_HEADER, PREFIX
from hub.settings import HubSettings

ASYNCAPI_VERSION: Final = "3.0.0"
AVRO_SCHEMA_FORMAT: Final = "application/vnd.apache.avro+json;version=1.9.0"
KAFKA_BINDING_VERSION: Final = "0.5.0"
AVRO_CONTENT_TYPE: Final = "application/avro"
JSON_CONTENT_TYPE: Final = "application/json"

Action = Literal["send", "receive"]


# --- the JSON records (FastStream generates their JSON Schemas) -------------------------------
# These mirror encoders elsewhere (hub.sink.kafka, hub.routing.resolve, hub.delivery.disclosure);
# tests/test_asyncapi.py validates records those encoders write against the generated schemas,
# so a change there that the document misses fails a test.


class _Doc(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class IngestReceipt(_Doc):
    """Idempotency receipt of one accepted submission (key: the client-namespaced dedupe key)."""

    event_id: UUID = Field(description="The event the submission became (the original one).")
    request_digest: str = Field(description="Keyed HMAC of the canonical request (RFC 8785).")
    recorded_at: AwareDatetime = Field(description="When the receipt was written (UTC).")


class SourcePosition(_Doc):
    """Where a source connector has read up to (key: the source, e.g. poller:<service>)."""

    position: str = Field(description="The connector's cursor, opaque to the hub.")
    recorded_at: AwareDatetime = Field(description="When the position was written (UTC).")


class RouterPersonState(_Doc):
    """Who pays the person, as the router learnt it from their events (key: the pseudonym),
    the fund code in clear: a state without a fund code, or one written before field
    encryption (a person whose events are plaintext)."""

    v: Literal[1] = Field(description="Version of this record's format.")
    payer_kind: PayerKind | None = Field(description="KELA or UNEMPLOYMENT_FUND; null: unknown.")
    fund_code: str | None = Field(
        description="Hub code of the paying fund (membership data, GDPR art. 9, in clear only "
        "in states of before field encryption); null: none known."
    )


class RouterPersonStateSealed(_Doc):
    """Who pays the person, the fund code (membership data, GDPR art. 9) sealed with the
    person's data key, so that forgetting the person makes it unreadable here too."""

    v: Literal[2] = Field(description="Version of this record's format.")
    payer_kind: PayerKind | None = Field(description="KELA or UNEMPLOYMENT_FUND; null: unknown.")
    fund_sealed: str | None = Field(
        description="The fund's hub code as a sealed value (base64; A5 01, key id, nonce, "
        "AES-256-GCM), its associated data the state's id and router-state.fund_code; null: "
        "not kept, because the person's key could not be had (forgotten): their payer routes "
        "dead-letter with PersonalDataErased."
    )


class PersonDataKey(_Doc):
    """One wrapped data key of a person (record key ``<pseudonym>/<key id>``). No personal
    data: the secret is wrapped by the key-encryption key, bound to pseudonym, key id and time."""

    v: Literal[1] = Field(description="Version of the record format.")
    subject: PseudonymStr = Field(description="The person pseudonym, as in the record key.")
    key_id: UUID = Field(description="The data key's id, as in the record key and sealed values.")
    kek: str = Field(description="What wrapped it: local:<keyring id> or vault:<mount>/<key>.")
    wrapped: str = Field(description="The wrapped data key (base64); never the key in clear.")
    created_at: AwareDatetime = Field(description="When the key was made (UTC).")


class PersonForgottenMarker(_Doc):
    """The person was forgotten (record key ``<pseudonym>/forgotten``): every key recorded
    before it is erased; kept after compaction removed the keys' tombstones."""

    v: Literal[1] = Field(description="Version of the record format.")
    subject: PseudonymStr = Field(description="The person pseudonym, as in the record key.")
    forgotten_at: AwareDatetime = Field(description="When the person was forgotten (UTC).")
    reason: str = Field(
        description="The ground and its detail (e.g. 'order: <case>'); never personal data."
    )


class PersonRestrictedMarker(_Doc):
    """Processing of the person's data restricted, GDPR art. 18 (record key
    ``<pseudonym>/restricted``; a tombstone of it lifts the restriction). The keys stay."""

    v: Literal[1] = Field(description="Version of the record format.")
    subject: PseudonymStr = Field(description="The person pseudonym, as in the record key.")
    restricted_at: AwareDatetime = Field(description="When processing was restricted (UTC).")
    basis: str = Field(description="Why (GDPR art. 18(1)(a)-(d)); never personal data.")


class DisclosureEntry(_Doc):
    """One receipt of the disclosure log: a delivery, or an erasure, restriction or reveal of a
    person's data; hash-chained per chain (destination and outbox partition, ``person-keys/<p>``
    or ``reveal/<operator>``).

    ``hash`` is SHA-256 (hex) of the canonical JSON (RFC 8785) of the entry without ``hash``;
    ``hub audit verify`` walks every chain, ``hub audit person`` answers GDPR art. 15.
    """

    v: Literal[1] = Field(description="Version of the entry format.")
    chain: str = Field(
        description="<destination>/<outbox partition>, person-keys/<person-keys partition> or "
        "reveal/<operator>: also the record key."
    )
    seq: int = Field(ge=0, description="Position in the chain: 0, 1, 2, ...")
    prev_hash: str = Field(
        pattern="^[0-9a-f]{64}$", description="hash of the entry before (64 zeros for seq 0)."
    )
    recorded_at: AwareDatetime = Field(description="When the entry was written (UTC).")
    destination: str = Field(
        description="The destination the event was delivered to; person-keys for an erasure "
        "or restriction, reveal for a reveal."
    )
    endpoint: str | None = Field(
        description="Directory key of the receiver (fund code, business ID, area code); the "
        "operator of a reveal."
    )
    event_id: UUID = Field(
        description="The event delivered (its webhook-id); of an erasure or restriction a "
        "UUIDv5 of its marker's place, of a reveal one of the reveal and the person."
    )
    subject: PseudonymStr = Field(description="Person pseudonym; never an identity code.")
    event_type: str = Field(description="Short event type name, e.g. JobseekerRegistered.")
    route: str = Field(description="The route that sent it.")
    fields: list[str] = Field(
        description="Dotted paths of the fields sent or revealed; the sensitivity classes "
        "made unreadable or restricted."
    )
    legal_basis: dict[str, str] = Field(
        description="Sensitivity class -> legal basis, for the classes present in what was sent."
    )
    status: DisclosureStatus = Field(
        description="How a delivery ended (delivered, dead-lettered), or what was done with "
        "the person's data: erased (chain person-keys/<partition>), restricted and "
        "restriction-lifted (the same chains), revealed (chain reveal/<operator>)."
    )
    attempts: int = Field(ge=1, description="Delivery attempts made.")
    first_attempt_at: AwareDatetime = Field(description="First attempt (UTC).")
    last_attempt_at: AwareDatetime = Field(description="Last attempt (UTC).")
    outbox_partition: int = Field(
        ge=-1,
        description="Outbox partition of the record delivered; of an erasure or restriction "
        "the person-keys partition of its marker; -1 for a reveal.",
    )
    outbox_offset: int = Field(
        ge=-1, description="Outbox offset of the record delivered, or the marker's offset; -1."
    )
    event_ids: list[UUID] | None = Field(
        default=None,
        description="Only when given: the events a reveal showed, or the data keys an erasure "
        "deleted.",
    )
    details: dict[str, Any] | None = Field(
        default=None,
        description="Only in erasure and restriction receipts: operator, basis (null when "
        "none was given), reason, the data key ids erased, the marker's topic, partition, "
        "offset and time, whether a restriction was in force before, and the recipients to "
        "notify (GDPR art. 19).",
    )
    hash: str = Field(pattern="^[0-9a-f]{64}$", description="SHA-256 of this entry (see above).")


# --- declarations -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    """One process that writes (send) or reads (receive) a channel."""

    id: str
    action: Action
    title: str
    description: str
    group_id: str | None = None
    """The consumer group (receive); None: the reader takes partitions by assignment."""
    messages: tuple[str, ...] | None = None
    """Names of the channel's messages this operation handles; None: all of them."""


@dataclass(frozen=True)
class Message:
    """One kind of record on a channel, as it goes into ``components/messages``."""

    name: str
    title: str
    summary: str
    description: str
    content_type: str
    payload: dict[str, Any]
    headers: dict[str, Any] | None = None
    correlation_header: str | None = None


@dataclass(frozen=True)
class Channel:
    """One Kafka topic: its spec, its records and who writes and reads it."""

    id: str
    spec: TopicSpec
    title: str
    description: str
    key: dict[str, Any]
    messages: tuple[Message, ...]
    operations: tuple[Operation, ...]
    model: Any = None
    """The pydantic model (or Union) of a JSON channel's value; FastStream makes its schema."""
    extra: dict[str, Any] = field(default_factory=dict)


def _string(description: str, **more: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **more}


def _key_schema(description: str) -> dict[str, Any]:
    return _string(description)


def _pseudonym_key() -> dict[str, Any]:
    schema: dict[str, Any] = TypeAdapter(PseudonymStr).json_schema()
    schema["description"] = (
        "Person pseudonym (UTF-8): keyed HMAC of the identity code, so one person's records "
        "share a partition and stay in order. Never the identity code itself."
    )
    return schema


def cloudevent_header_properties(type_name: str | None) -> dict[str, Any]:
    """The CloudEvents Kafka binding headers (binary mode) of a hub event record."""
    ce_type = (
        _string("fi.te.hub.<Type>.", pattern=r"^fi\.te\.hub\.[A-Za-z]+$")
        if type_name is None
        else _string("The event type.", const=f"fi.te.hub.{type_name}")
    )
    return {
        f"{PREFIX}specversion": _string("CloudEvents version.", const="1.0"),
        f"{PREFIX}id": _string("The event id (envelope.event_id).", format="uuid"),
        f"{PREFIX}type": ce_type,
        f"{PREFIX}source": _string("URI of the reporting system (envelope.source_system)."),
        f"{PREFIX}subject": _string(
            "The person pseudonym, like the key.", pattern="^[0-9a-f]{32}$"
        ),
        f"{PREFIX}time": _string("envelope.occurred_at, RFC 3339 UTC, milliseconds."),
        f"{PREFIX}dataschema": _string(
            "The writer schema: urn:avro:schema:<CRC-64-AVRO fingerprint, hex> (single-object "
            "encoding) or urn:avro:schema:<registry id> (Confluent framing).",
            pattern="^urn:avro:schema:",
        ),
        f"{PREFIX}correlationid": _string("The job-search spell (envelope.correlation_id)."),
        f"{PREFIX}causationid": _string("The event that caused this one, when there is one."),
        CONTENT_TYPE_HEADER: _string("Always application/avro.", const=AVRO_CONTENT_TYPE),
    }


_CLOUDEVENT_REQUIRED: Final = (
    *(
        f"{PREFIX}{name}"
        for name in ("specversion", "id", "type", "source", "subject", "time", "correlationid")
    ),
    CONTENT_TYPE_HEADER,
)

OUTBOX_HEADERS: Final = {
    HEADER_ROUTE: "Name of the route that sent the record here.",
    HEADER_DESTINATION: "The destination (the outbox's own).",
    HEADER_ENDPOINT: "Directory key of the receiver (fund code, business ID, employment area "
    "code), on destinations with an endpoint per key; the worker picks the endpoint by it.",
    HEADER_SOURCE: "<topic>/<partition>/<offset> of the log record it was routed from.",
}

DEAD_LETTER_HEADERS: Final = {
    "stage": "decode, route or deliver: where it failed.",
    "error-class": "Class of the error (e.g. Unroutable, ReceiverRefused).",
    "reason": "What failed, redacted (no personal data), at most 1000 characters.",
    "attempts": "How often it was tried.",
    "first-attempt-at": "First attempt, ISO 8601 UTC.",
    "last-attempt-at": "Last attempt, ISO 8601 UTC.",
    "source-topic": "Topic of the original record.",
    "source-partition": "Partition of the original record.",
    "source-offset": "Offset of the original record.",
    "destination": "The destination it was for (route and deliver stages).",
    "event-id": "The event id, when it could be read.",
    "event-type": "The event type, when it could be read.",
}


def _dead_letter_header_names() -> tuple[list[str], list[str]]:
    """(every hub-dlq-* header, the ones always present), read from DeadLetter itself."""
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    minimal = DeadLetter(DeadLetterStage.DECODE, "E", "r", "t", 0, 0)
    full = DeadLetter(
        DeadLetterStage.DELIVER, "E", "r", "t", 0, 0, 1, moment, moment, "d", "id", "type"
    )
    return [k for k, _ in full.headers()], [k for k, _ in minimal.headers()]


def dead_letter_header_properties() -> tuple[dict[str, Any], list[str]]:
    names, required = _dead_letter_header_names()
    prefix_length = len(DEAD_LETTER_PREFIX)
    properties = {
        name: _string(
            DEAD_LETTER_HEADERS.get(name[prefix_length:], "See hub/kafka/dead_letters.py.")
        )
        for name in names
    }
    properties[f"{DEAD_LETTER_PREFIX}stage"]["enum"] = [stage.value for stage in DeadLetterStage]
    return properties, required


def _headers(properties: Mapping[str, Any], required: Iterable[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "description": "Kafka record headers (UTF-8 values).",
        "properties": dict(properties),
        "required": sorted(set(required)),
    }


def _avro_payload(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {"schemaFormat": AVRO_SCHEMA_FORMAT, "schema": dict(schema)}


def _summary(model: type) -> str:
    return (model.__doc__ or "").strip().splitlines()[0]


# --- the channels -----------------------------------------------------------------------------


def _json_message(model: type, title: str, description: str) -> Message:
    """The one JSON message of a hub-internal topic, named after *model* (its schema)."""
    return Message(
        name=model.__name__,
        title=title,
        summary=_summary(model),
        description=description,
        content_type=JSON_CONTENT_TYPE,
        payload={},
    )


def _log_messages() -> tuple[Message, ...]:
    return tuple(
        Message(
            name=name,
            title=name,
            summary=_summary(model),
            description=(
                "Avro, single-object encoding (C3 01 + CRC-64-AVRO fingerprint + body) or, with "
                "HUB_SCHEMA_REGISTRY_URL, the Confluent wire format (00 + schema id + body); a "
                "reader picks the framing by the first byte. Fields marked pii (direct, "
                "contact, health, membership) leave the hub only where a route grants their "
                "class with a legal basis."
            ),
            content_type=AVRO_CONTENT_TYPE,
            payload=_avro_payload(avro_schema(model)),
            headers=_headers(cloudevent_header_properties(name), _CLOUDEVENT_REQUIRED),
            correlation_header=f"{PREFIX}correlationid",
        )
        for name, model in EVENT_TYPES.items()
    )


@dataclass(frozen=True)
class OutboxType:
    """One projected type of one outbox: what a route lets its destination receive."""

    destination: str
    type_name: str
    routes: tuple[str, ...]
    schema: dict[str, Any]
    withheld: tuple[str, ...]
    """pii fields of the event type that this projection leaves out (dotted paths)."""
    granted: dict[str, str]
    basis: tuple[str, ...] = ()
    """The routes' legal basis of the disclosure as a whole (``basis`` of each route)."""


def outbox_types(routes: RoutesConfig) -> dict[str, list[OutboxType]]:
    """Per destination, the projected Avro schema of every type a route sends it.

    The derivation is routing's own (:func:`projected_schema` with the route's grants and
    fields). Two routes that send one type to one destination with different projections give
    two entries, named by route.
    """
    found: dict[tuple[str, str, str], OutboxType] = {}
    for route in routes.routes:
        grants = frozenset(route.grants)
        for destination in routes.destinations_of(route):
            for type_name in route.types:
                raw = avro_schema(EVENT_TYPES[type_name])
                schema = projected_schema(raw, grants, route.fields, destination)
                key = (destination, type_name, json.dumps(schema, sort_keys=True))
                if key in found:
                    known = found[key]
                    found[key] = OutboxType(
                        destination,
                        type_name,
                        (*known.routes, route.name),
                        schema,
                        known.withheld,
                        {**known.granted, **{str(k): v for k, v in route.grants.items()}},
                        (*known.basis, *([route.basis] if route.basis else [])),
                    )
                    continue
                kept = set(sensitive_fields(schema))
                withheld = tuple(p for p in sensitive_fields(raw) if p not in kept)
                found[key] = OutboxType(
                    destination,
                    type_name,
                    (route.name,),
                    schema,
                    withheld,
                    {str(k): v for k, v in route.grants.items()},
                    (route.basis,) if route.basis else (),
                )
    by_destination: dict[str, list[OutboxType]] = {name: [] for name in routes.destinations}
    for entry in found.values():
        by_destination.setdefault(entry.destination, []).append(entry)
    return by_destination


def _outbox_message_name(entry: OutboxType, ambiguous: bool) -> str:
    base = f"{entry.destination}.{entry.type_name}"
    return f"{base}.{entry.routes[0]}" if ambiguous else base


def _outbox_messages(
    destination: str, entries: Sequence[OutboxType], keyed: bool
) -> tuple[Message, ...]:
    per_type: dict[str, int] = {}
    for entry in entries:
        per_type[entry.type_name] = per_type.get(entry.type_name, 0) + 1
    header_properties = {
        **cloudevent_header_properties(None),
        **{name: _string(text) for name, text in OUTBOX_HEADERS.items()},
    }
    required = [*_CLOUDEVENT_REQUIRED, HEADER_ROUTE, HEADER_DESTINATION, HEADER_SOURCE]
    if keyed:
        required.append(HEADER_ENDPOINT)
    messages = []
    for entry in entries:
        properties = dict(header_properties)
        properties[f"{PREFIX}type"] = _string(
            "The event type.", const=f"fi.te.hub.{entry.type_name}"
        )
        properties[HEADER_ROUTE] = _string(OUTBOX_HEADERS[HEADER_ROUTE], enum=list(entry.routes))
        properties[HEADER_DESTINATION] = _string(
            OUTBOX_HEADERS[HEADER_DESTINATION], const=destination
        )
        granted = (
            "; ".join(f"{kind}: {basis}" for kind, basis in sorted(entry.granted.items())) or "none"
        )
        withheld = ", ".join(entry.withheld) or "none"
        messages.append(
            Message(
                name=_outbox_message_name(entry, per_type[entry.type_name] > 1),
                title=f"{entry.type_name} for {destination}",
                summary=f"{entry.type_name} projected for {destination} "
                f"(route {', '.join(entry.routes)}).",
                description=(
                    ("".join(f"Legal basis: {b.rstrip('.')}. " for b in entry.basis))
                    + "Derived Avro schema (namespace of the destination), single-object "
                    f"encoding. Classes granted, with their legal basis: {granted}. pii fields "
                    f"withheld: {withheld}."
                ),
                content_type=AVRO_CONTENT_TYPE,
                payload=_avro_payload(entry.schema),
                headers=_headers(properties, required),
                correlation_header=f"{PREFIX}correlationid",
            )
        )
    return tuple(messages)


def _topic(specs: Mapping[str, TopicSpec], name: str) -> TopicSpec:
    return specs[name]


def channels(settings: HubSettings, routes: RoutesConfig) -> list[Channel]:
    """Every channel of the hub with these settings and routes, in the order of the flow."""
    specs = {spec.name: spec for spec in topic_specs(settings)}
    prefix = settings.writer_id_prefix
    read_committed = " It reads read_committed: records of aborted transactions never show."
    log = Channel(
        id="customer-path",
        spec=_topic(specs, settings.topic_customer_path),
        title="Customer-path event log",
        description=(
            "Every customer-path event, once, keyed by person pseudonym, kept forever: the "
            "source of truth that the router, the enrolment directory and reporting replay. "
            "Inbound connectors write it in Kafka transactions, together with their receipts."
        ),
        key=_pseudonym_key(),
        messages=_log_messages(),
        operations=(
            Operation(
                "ingestApiPublishesEvents",
                "send",
                "hub serve: the ingest API",
                "Accepted requests, in one transaction with their receipts (transactional id "
                "HUB_INGEST_TRANSACTIONAL_ID, one per replica); 202 only after the commit.",
            ),
            Operation(
                "pollerPublishesEvents",
                "send",
                "hub poll: the register poller",
                "A feed page's events, its receipts and the feed's cursor in one transaction "
                f"(transactional id {prefix}-poll-<digest of the service>).",
            ),
            Operation(
                "importPublishesEvents",
                "send",
                "hub import: the batch importer",
                "A chunk's events and receipts in one transaction "
                f"(transactional id {prefix}-import-<digest of the file>).",
            ),
            Operation(
                "simulatorPublishesEvents",
                "send",
                "hub simulate (development)",
                "Simulated customer paths, idempotent producer, acks=all.",
            ),
            Operation(
                "routerConsumesLog",
                "receive",
                "hub route: the router",
                "Routes and projects each event and writes the outboxes, its state and dead "
                "letters in ONE transaction with the consumed offsets (KIP-447: zombies are "
                "fenced by the group generation)." + read_committed,
                group_id=f"{prefix}-router",
            ),
            Operation(
                "enrolmentDirectoryReadsLog",
                "receive",
                "hub serve: the enrolment directory",
                "Follows ServiceEnrolled events (by partition assignment) so the API knows "
                "which provider an enrolment belongs to.",
                messages=("ServiceEnrolled",),
            ),
        ),
    )
    found = outbox_types(routes)
    outboxes = []
    for name, destination in routes.destinations.items():
        spec = outbox_spec(settings, name)
        keyed = destination.transport != Transport.OUTBOX and destination.endpoint is None
        operations = [
            Operation(
                f"routerWritesOutbox-{name}",
                "send",
                "hub route: the router",
                "Projected records, in the router's transaction with the log offsets consumed.",
            ),
            Operation(
                f"dlqReplaysToOutbox-{name}",
                "send",
                "hub dlq replay",
                "Dead letters put back after a fix: a deliver-stage letter with its original key, "
                "value and headers (same event id, so the receiver drops a repeat), a decode- or "
                "route-stage letter routed again; in one transaction with its replay marker "
                f"(transactional id {replay_transactional_id(settings)}).",
            ),
        ]
        if destination.transport != Transport.OUTBOX:
            operations.append(
                Operation(
                    f"deliverFromOutbox-{name}",
                    "receive",
                    f"hub deliver --destination {name}",
                    f"Delivery workers ({destination.transport.value}): POST each record, "
                    "signed (Standard Webhooks), with Idempotency-Key = event id; retries per "
                    "the destination's schedule, a person's later records wait for the failing "
                    "one, a circuit breaker per endpoint; offsets are committed only up to the "
                    "lowest unsettled record." + read_committed,
                    group_id=f"{prefix}-deliver-{name}",
                )
            )
        description = (
            f"Outbox of destination {name}"
            + (f" ({destination.description.rstrip('.')})" if destination.description else "")
            + f", transport {destination.transport.value}: only the fields its routes grant, "
            "each type with a derived Avro schema. Keyed by person pseudonym like the log, so "
            "a person's records keep their order."
            + (
                " No delivery worker: the reader takes the records from this topic itself."
                if destination.transport == Transport.OUTBOX
                else ""
            )
        )
        outboxes.append(
            Channel(
                id=f"outbox-{name}",
                spec=spec,
                title=f"Outbox {name}",
                description=description,
                key=_pseudonym_key(),
                messages=_outbox_messages(name, found.get(name, []), keyed),
                operations=tuple(operations),
            )
        )
    dlq_properties, dlq_required = dead_letter_header_properties()
    original = cloudevent_header_properties(None)
    outbox_original = {**original, **{k: _string(v) for k, v in OUTBOX_HEADERS.items()}}
    binary = {
        "type": "string",
        "format": "binary",
        "description": "The original record's value, byte for byte (a replay sends it again).",
    }
    dead_letters = Channel(
        id="dead-letters",
        spec=_topic(specs, settings.topic_dead_letter),
        title="Dead letters",
        description=(
            "Records the hub could not decode, route or deliver, with the reason in hub-dlq-* "
            "headers (after Kafka Connect's error headers). Key and value are the original "
            "record's; hub dlq list|show|replay|purge reads them. Kept 30 days."
        ),
        key=_key_schema("The original record's key (a person pseudonym)."),
        messages=(
            Message(
                name="deadLetter.logRecord",
                title="Log record that could not be decoded or routed",
                summary="Stage decode or route: a record of the customer-path log.",
                description="Value and key of the log record; its CloudEvents headers stay.",
                content_type="application/octet-stream",
                payload=binary,
                headers=_headers({**original, **dlq_properties}, dlq_required),
            ),
            Message(
                name="deadLetter.outboxRecord",
                title="Outbox record a receiver refused or that ran out of retries",
                summary="Stage deliver: a record of an outbox.",
                description="Value, key and headers of the outbox record, plus hub-dlq-*.",
                content_type="application/octet-stream",
                payload=binary,
                headers=_headers(
                    {**outbox_original, **dlq_properties},
                    [*dlq_required, f"{DEAD_LETTER_PREFIX}destination"],
                ),
            ),
            Message(
                name="deadLetter.marker",
                title="Replay or purge marker",
                summary="A letter was replayed or purged (Kafka cannot delete one record).",
                description=(
                    "No value; key mark/<partition>/<offset>, on the partition of the letter it "
                    "marks. Readers of the topic skip records with a hub-dlq-mark header."
                ),
                content_type="application/octet-stream",
                payload={"type": "null", "description": "No value."},
                headers=_headers(
                    {
                        MARK_HEADER: _string(
                            "What was done to the letter.",
                            enum=[LetterStatus.REPLAYED.value, LetterStatus.PURGED.value],
                        ),
                        MARK_OF_HEADER: _string("<partition>/<offset> of the letter."),
                        MARK_AT_HEADER: _string("When, ISO 8601 UTC."),
                        MARK_NOTE_HEADER: _string("The operator's note (redacted, <= 500)."),
                    },
                    [MARK_HEADER, MARK_OF_HEADER, MARK_AT_HEADER, MARK_NOTE_HEADER],
                ),
            ),
        ),
        operations=(
            Operation(
                "routerWritesDeadLetters",
                "send",
                "hub route: the router",
                "Undecodable records and records no destination could be resolved for, in the "
                "router's transaction.",
                messages=("deadLetter.logRecord",),
            ),
            Operation(
                "deliveryWritesDeadLetters",
                "send",
                "hub deliver: the delivery workers",
                "A receiver's 4xx other than 408/409/429 at once, anything else when the retry "
                "schedule ran out.",
                messages=("deadLetter.outboxRecord",),
            ),
            Operation(
                "dlqWritesMarkers",
                "send",
                "hub dlq replay|purge",
                "A marker per letter replayed or purged, in the replay's transaction.",
                messages=("deadLetter.marker",),
            ),
            Operation(
                "dlqReadsDeadLetters",
                "receive",
                "hub dlq list|show|replay|purge",
                "Lists and replays dead letters (by partition assignment); a replay sends the "
                "same event id again, so receivers still drop duplicates.",
            ),
        ),
    )
    disclosures = Channel(
        id="disclosures",
        spec=_topic(specs, settings.topic_disclosures),
        title="Disclosure log",
        description=(
            "One receipt per settled delivery: to whom a person's data went, which fields, on "
            "what legal basis, when; and one per erasure, restriction and reveal of a person's "
            "data. Hash-chained per chain, so an altered or removed entry is detected; kept "
            "forever (GDPR art. 15)."
        ),
        key=_key_schema(
            "The chain of the entry: <destination>/<outbox partition>, "
            "person-keys/<partition> or reveal/<operator>."
        ),
        messages=(
            _json_message(
                DisclosureEntry,
                "Disclosure receipt",
                "Canonical JSON (RFC 8785): the value's bytes are its hash input.",
            ),
        ),
        operations=(
            Operation(
                "deliveryWritesDisclosures",
                "send",
                "hub deliver: the delivery workers",
                "A receipt per delivered or dead-lettered event, acks=all, before the outbox "
                "offset is committed.",
            ),
            Operation(
                "privacyWritesDisclosures",
                "send",
                "hub person forget|restrict|expire, hub tail --reveal",
                "An erased, restricted, restriction-lifted or revealed receipt, in a transaction "
                "of the chain's own transactional id (writers of one chain fence each other).",
            ),
            Operation(
                "auditReadsDisclosures",
                "receive",
                "hub audit verify|person",
                "Verifies every chain; lists to whom one person's data went.",
            ),
        ),
        model=DisclosureEntry,
    )
    router_state = Channel(
        id="router-state",
        spec=_topic(specs, settings.topic_router_state),
        title="Router state",
        description=(
            "The router's per-person state, compacted, on the partition number of the person's "
            "log partition, written in the router's transaction: a router taking a partition "
            "over restores it before routing."
        ),
        key=_pseudonym_key(),
        messages=(
            _record_message(
                RouterPersonStateSealed,
                "Person state, fund code sealed",
                "Compact JSON; what the router writes for a person whose fund is known.",
            ),
            _record_message(RouterPersonState, "Person state", "Compact JSON."),
            _tombstone_message(
                "RouterStateTombstone", "A null value: the router forgets the person's state."
            ),
        ),
        operations=(
            Operation(
                "routerWritesState",
                "send",
                "hub route: the router",
                "A person's changed state, in the transaction of the event that changed it.",
            ),
            Operation(
                "routerRestoresState",
                "receive",
                "hub route: the router",
                "Reads a partition it takes over to its end (by assignment, read_committed).",
            ),
        ),
    )
    receipts = Channel(
        id="ingest-receipts",
        spec=_topic(specs, settings.topic_ingest_receipts),
        title="Ingest receipts",
        description=(
            "Compacted idempotency receipts of the inbound connectors, one per accepted "
            "submission, written in the event's transaction: the durable memory of "
            "Idempotency-Keys that a restarted API replica reads back."
        ),
        key=_key_schema("The dedupe key, namespaced by client."),
        messages=(_json_message(IngestReceipt, "Ingest receipt", "JSON."),),
        operations=(
            Operation(
                "connectorsWriteReceipts",
                "send",
                "hub serve, hub poll, hub import",
                "In the same transaction as the events.",
            ),
            Operation(
                "receiptsFollower",
                "receive",
                "hub serve, hub poll, hub import: the receipts follower",
                "Reads the receipts back (by assignment) to answer retries as duplicates.",
            ),
        ),
        model=IngestReceipt,
    )
    positions = Channel(
        id="source-positions",
        spec=_topic(specs, settings.topic_source_positions),
        title="Source positions",
        description=(
            "Compacted cursors of source connectors, written in the same transaction as the "
            "events read up to them: a restart resumes exactly after what is in the log."
        ),
        key=_key_schema("The source, e.g. poller:<service id>."),
        messages=(_json_message(SourcePosition, "Source position", "JSON."),),
        operations=(
            Operation(
                "pollerWritesPosition",
                "send",
                "hub poll",
                "The feed's cursor, in the page's transaction.",
            ),
            Operation(
                "pollerReadsPosition",
                "receive",
                "hub poll",
                "Reads its cursor on start (by assignment).",
            ),
        ),
        model=SourcePosition,
    )
    person_keys = Channel(
        id="person-keys",
        spec=_topic(specs, settings.topic_person_keys),
        title="Person keys",
        description=(
            "Per-person data keys (crypto-shredding), compacted, every record of a person in "
            "the partition of the pseudonym (murmur2): wrapped keys, the forgotten marker and "
            "the restriction marker. No personal data: keys are wrapped by the key-encryption "
            "key (HUB_KMS), a tombstone of a key deletes it for good once compacted."
        ),
        key=_key_schema(
            "<pseudonym>/<key id> (a data key), <pseudonym>/forgotten or <pseudonym>/restricted."
        ),
        messages=(
            _record_message(PersonDataKey, "Wrapped data key", "Compact JSON."),
            _record_message(
                PersonForgottenMarker,
                "Forgotten marker",
                "Compact JSON, written before the tombstones of the person's keys.",
            ),
            _record_message(
                PersonRestrictedMarker,
                "Restriction marker",
                "Compact JSON; a tombstone of <pseudonym>/restricted lifts it.",
            ),
            _tombstone_message(
                "PersonKeyTombstone",
                "A null value: deletes the data key, or lifts the restriction.",
            ),
        ),
        operations=(
            Operation(
                "edgeWritesPersonKeys",
                "send",
                "hub serve, hub poll, hub import, hub simulate: the sealing writers",
                "A new person's data key, acks=all and idempotent, before anything is sealed "
                "with it.",
                messages=("PersonDataKey",),
            ),
            Operation(
                "privacyWritesMarkers",
                "send",
                "hub person forget|restrict|expire, hub keys rotate",
                "Forgotten and restriction markers and tombstones (holding no KEK that "
                "unwraps, except rotate, which writes rewrapped keys); each recorded in the "
                "disclosure log.",
            ),
            Operation(
                "keyFollowersRead",
                "receive",
                "hub route, hub deliver, the sealing writers, hub tail --reveal",
                "Follow the topic from the beginning (by assignment, read_committed) into an "
                "in-memory directory; unwrap only the keys a route may open.",
            ),
        ),
    )
    return [
        log,
        *outboxes,
        dead_letters,
        disclosures,
        router_state,
        receipts,
        positions,
        person_keys,
    ]


def _tombstone_message(name: str, summary: str) -> Message:
    """The null value of a compacted channel (a tombstone)."""
    return Message(
        name=name,
        title="Tombstone",
        summary=summary,
        description="No value (null).",
        content_type=JSON_CONTENT_TYPE,
        payload={"type": "null"},
    )


def _record_message(model: type[_Doc], title: str, description: str) -> Message:
    """A JSON message of a channel with several record shapes: its own payload schema."""
    return Message(
        name=model.__name__,
        title=title,
        summary=_summary(model),
        description=description,
        content_type=JSON_CONTENT_TYPE,
        payload=_inlined(model.model_json_schema()),
    )


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its ``$defs`` (an enum, say) put where they are referred to: a message's
    own payload cannot point into a ``$defs`` of its own inside the document."""
    defs = schema.pop("$defs", {})

    def put(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return put(defs[ref.removeprefix("#/$defs/")])
            return {k: put(v) for k, v in node.items()}
        if isinstance(node, list):
            return [put(v) for v in node]
        return node

    inlined: dict[str, Any] = put(schema)
    return inlined


# --- FastStream -------------------------------------------------------------------------------


def _payload_type(channel: Channel) -> Any:
    if channel.model is not None:
        return channel.model
    if channel.id == "customer-path":
        return Union[tuple(EVENT_TYPES.values())]  # noqa: UP007 (a runtime Union of classes)
    return bytes


def _handler(payload: Any) -> Callable[..., Any]:
    """A subscriber's handler whose annotation tells FastStream the payload type.

    It never runs: the broker only exists to be documented.
    """

    async def handler(message: Any) -> None:  # pragma: no cover - never called
        del message

    handler.__annotations__ = {"message": payload, "return": None}
    return handler


def declare_broker(settings: HubSettings, declared: Sequence[Channel]) -> KafkaBroker:
    """A FastStream KafkaBroker, never started: a publisher per writer, a subscriber per reader."""
    tls = settings.kafka_security_protocol in ("SSL", "SASL_SSL")
    broker = KafkaBroker(
        settings.kafka_bootstrap.split(","),
        description=(
            f"Kafka {settings.kafka_version} ({settings.kafka_security_protocol}"
            + (f", SASL {settings.kafka_sasl_mechanism}" if settings.kafka_sasl_mechanism else "")
            + "): every producer acks=all and idempotent, consumers of transactional topics "
            "read_committed."
        ),
        protocol="kafka-secure" if tls else "kafka",
        protocol_version=settings.kafka_version,
    )
    for channel in declared:
        payload = _payload_type(channel)
        for operation in channel.operations:
            if operation.action == "send":
                broker.publisher(
                    channel.spec.name,
                    title=operation.id,
                    description=operation.description,
                    schema=payload,
                )
            else:
                broker.subscriber(
                    channel.spec.name,
                    group_id=operation.group_id,
                    title=operation.id,
                    description=operation.description,
                    isolation_level="read_committed",
                    auto_offset_reset="earliest",
                )(_handler(payload))
    return broker


# --- post-processing --------------------------------------------------------------------------


def _channel_binding(spec: TopicSpec) -> dict[str, Any]:
    configuration: dict[str, Any] = {}
    for name, value in spec.configs.items():
        if name == "cleanup.policy":
            configuration[name] = value.split(",")
        else:
            configuration[name] = int(value) if value.lstrip("-").isdigit() else value
    return {
        "kafka": {
            "topic": spec.name,
            "partitions": spec.partitions,
            "replicas": spec.replication_factor,
            "topicConfiguration": configuration,
            "bindingVersion": KAFKA_BINDING_VERSION,
        }
    }


def _message_object(
    message: Message, channel: Channel, payload_ref: dict[str, Any] | None
) -> dict[str, Any]:
    # FastStream writes a message's payload only; headers, the key binding and the Avro
    # multi-format payload are added here.
    result: dict[str, Any] = {
        "name": message.name,
        "title": message.title,
        "summary": message.summary,
        "description": message.description,
        "contentType": message.content_type,
        "payload": payload_ref if payload_ref is not None else message.payload,
        "bindings": {"kafka": {"key": channel.key, "bindingVersion": KAFKA_BINDING_VERSION}},
    }
    if message.headers is not None:
        result["headers"] = message.headers
    if message.correlation_header is not None:
        result["correlationId"] = {
            "description": "The job-search spell: every event of one customer path shares it.",
            "location": f"$message.header#/{message.correlation_header}",
        }
    return result


def _security(settings: HubSettings) -> dict[str, dict[str, Any]]:
    # FastStream takes security from a live connection's security object (with an SSL
    # context); the document only needs what a client must present, so it is added here.
    schemes: dict[str, dict[str, Any]] = {}
    mechanism = settings.kafka_sasl_mechanism
    if mechanism is not None:
        kind = {"PLAIN": "plain", "SCRAM-SHA-256": "scramSha256", "SCRAM-SHA-512": "scramSha512"}
        schemes["sasl"] = {
            "type": kind[mechanism],
            "description": f"SASL {mechanism}; user HUB_KAFKA_SASL_USERNAME, password "
            "HUB_KAFKA_SASL_PASSWORD(_FILE).",
        }
    if settings.kafka_ssl_certfile is not None:
        schemes["mutualTls"] = {
            "type": "X509",
            "description": "Client certificate HUB_KAFKA_SSL_CERTFILE (mutual TLS).",
        }
    return schemes


DOCUMENT_DESCRIPTION: Final = """\
The Kafka channels of the TE integration hub. Events flow
**inbound connectors → customer-path log → router → one outbox per destination → delivery
workers → receivers** (Kela, unemployment funds, service providers, municipal systems);
reporting reads its outbox itself. What cannot be decoded, routed or delivered becomes a dead
letter with the reason; every delivery leaves a hash-chained receipt in the disclosure log.

Keys are person pseudonyms (never identity codes), so one person's records share a partition
and keep their order on every topic. Avro payloads are shown as their Avro schemas; the
`pii` attribute of a field names its sensitivity class (direct, contact, health, membership),
and an outbox's derived schema holds only the fields its routes grant with a legal basis.
Generated by `hub asyncapi` (FastStream, post-processed; see hub/docs/asyncapi.py).
"""


def asyncapi_document(settings: HubSettings, routes: RoutesConfig | None = None) -> dict[str, Any]:
    """The AsyncAPI 3.0 document (JSON form) of every channel, for these settings and routes."""
    config = routes if routes is not None else load_routes(settings)
    declared = channels(settings, config)
    broker = declare_broker(settings, declared)
    specification = AsyncAPI(
        broker,
        title="TE integration hub: Kafka channels",
        version=importlib.metadata.version("te-hub"),
        description=DOCUMENT_DESCRIPTION,
        schema_version=ASYNCAPI_VERSION,
        identifier="urn:fi:te-hub:asyncapi",
    ).to_specification()
    generated: dict[str, Any] = json.loads(specification.to_json())
    document = _post_process(generated, declared, settings)
    _add_webhooks(document, config)
    return document


def _post_process(
    generated: dict[str, Any], declared: Sequence[Channel], settings: HubSettings
) -> dict[str, Any]:
    """FastStream's document, reshaped: one channel per topic, its messages, bindings, security."""
    fs_channels: dict[str, Any] = generated["channels"]
    fs_operations: dict[str, Any] = generated["operations"]
    # FastStream's components/messages (one per handler, its types as oneOf) are not kept: each
    # type is a message of its own here (see the module docstring).
    schemas: dict[str, Any] = {
        name: schema
        for name, schema in generated["components"].get("schemas", {}).items()
        # FastStream's wrappers of one handler's types (<title>:Message:Payload) name no type.
        if ":" not in name
    }
    channels_out: dict[str, Any] = {}
    operations_out: dict[str, Any] = {}
    messages_out: dict[str, Any] = {}
    for channel in declared:
        first = fs_channels[channel.operations[0].id]
        json_payload = (
            {"$ref": f"#/components/schemas/{channel.model.__name__}"}
            if channel.model is not None
            else None
        )
        if json_payload is not None:
            assert channel.model.__name__ in schemas, f"FastStream made no schema of {channel.id}"
        for message in channel.messages:
            assert message.name not in messages_out, f"two messages named {message.name}"
            messages_out[message.name] = _message_object(message, channel, json_payload)
        # One channel per topic: FastStream made one per publisher/subscriber, all with this
        # address; their descriptions move to the operations.
        channels_out[channel.id] = {
            "address": channel.spec.name,
            "title": channel.title,
            "description": channel.description,
            "servers": first.get("servers", []),
            "messages": {
                m.name: {"$ref": f"#/components/messages/{m.name}"} for m in channel.messages
            },
            "bindings": _channel_binding(channel.spec),
        }
        for operation in channel.operations:
            fs_operation = fs_operations[operation.id]
            assert fs_channels[operation.id]["address"] == channel.spec.name
            names = operation.messages or tuple(m.name for m in channel.messages)
            result: dict[str, Any] = {
                "action": fs_operation["action"],
                "channel": {"$ref": f"#/channels/{channel.id}"},
                "title": operation.title,
                "summary": operation.title,
                "description": operation.description,
                "messages": [
                    {"$ref": f"#/channels/{channel.id}/messages/{name}"} for name in names
                ],
            }
            if operation.group_id is not None:
                result["bindings"] = {
                    "kafka": {
                        "groupId": {"type": "string", "enum": [operation.group_id]},
                        "bindingVersion": KAFKA_BINDING_VERSION,
                    }
                }
            operations_out[operation.id] = result
    document: dict[str, Any] = {
        "asyncapi": generated["asyncapi"],
        "id": generated.get("id"),
        "info": generated["info"],
        "defaultContentType": AVRO_CONTENT_TYPE,
        "servers": generated["servers"],
        "channels": channels_out,
        "operations": operations_out,
        "components": {"messages": messages_out, "schemas": schemas},
    }
    if document["id"] is None:
        del document["id"]
    security = _security(settings)
    if security:
        document["components"]["securitySchemes"] = security
        for server in document["servers"].values():
            server["security"] = [
                {"$ref": f"#/components/securitySchemes/{name}"} for name in security
            ]
    return document


def _add_webhooks(document: dict[str, Any], routes: RoutesConfig) -> None:
    """The HTTP side of each webhook destination: what its receivers get POSTed.

    Added after FastStream's part (see :mod:`hub.docs.webhooks`); the Kafka servers stay the
    only servers of the Kafka channels, which name theirs.
    """
    found = outbox_types(routes)
    destinations = [d for d in routes.destinations.values() if d.transport is Transport.WEBHOOK]
    document["servers"].update(webhook_servers(destinations))
    for destination in destinations:
        name = destination.name
        urls = endpoint_urls(destination)
        channel_id = f"webhook-{name}"
        messages: dict[str, Any] = {}
        for entry in found.get(name, []):
            message_name = f"{_outbox_message_name(entry, False)}.webhook"
            if message_name in document["components"]["messages"]:
                message_name = f"{_outbox_message_name(entry, True)}.webhook"
            document["components"]["messages"][message_name] = {
                "name": message_name,
                "title": f"{entry.type_name} to {name}",
                "summary": f"POST of {entry.type_name} to a receiver of {name}.",
                "description": (
                    "JSON body in Standard Webhooks' shape; data is the record of the outbox "
                    f"message {_outbox_message_name(entry, False)} as JSON (UUIDs, dates and "
                    "times as ISO strings, enums as symbols). Answer 2xx once applied (or "
                    '{"duplicate": true} for an event id already applied); 408/409/429/5xx are '
                    "retried on the destination's schedule, any other 4xx is a dead letter at "
                    "once with the problem text."
                ),
                "contentType": JSON_CONTENT_TYPE,
                "payload": body_schema(entry.type_name, entry.schema),
                "headers": webhook_headers(),
            }
            messages[message_name] = {"$ref": f"#/components/messages/{message_name}"}
        keyed = destination.endpoint is None
        document["channels"][channel_id] = {
            # One URL per directory key (from the routes file): no single address.
            "address": None if keyed else (urlsplit(urls[0]).path if urls else None),
            "title": f"Webhooks of {name}",
            "description": (
                f"What the receivers of {name} are sent"
                + (
                    f": one endpoint per directory key ({len(urls)} in the routes file, "
                    f"e.g. {urls[0]})."
                    if keyed and urls
                    else (f" at {urls[0]}." if urls else ".")
                )
            ),
            "servers": [
                {"$ref": f"#/servers/{server}"} for server in sorted({server_of(u) for u in urls})
            ],
            "messages": messages,
        }
        document["operations"][f"postWebhook-{name}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "title": f"hub deliver --destination {name}",
            "summary": f"hub deliver --destination {name}",
            "description": "One POST per attempt, signed when it is sent; timeout "
            "HUB_DELIVERY_TIMEOUT_S.",
            "messages": [{"$ref": f"#/channels/{channel_id}/messages/{m}"} for m in messages],
            "bindings": {"http": {"method": "POST", "bindingVersion": HTTP_BINDING_VERSION}},
        }


# --- output -----------------------------------------------------------------------------------


def to_json(document: Mapping[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def to_yaml(document: Any) -> str:
    """Block-style YAML of a JSON document, without a YAML library.

    PyYAML is not a runtime dependency of the hub. Every string is written as a JSON string,
    which is a valid YAML double-quoted scalar, so no value can be misread (``no``, ``1.0``,
    ``*``); numbers, booleans and null are the same in both.
    """
    lines: list[str] = []
    _yaml_node(document, 0, lines)
    return "\n".join(lines) + "\n"


_PLAIN: Final = re.compile(r"^[A-Za-z_$][A-Za-z0-9_.$/-]*( [A-Za-z0-9_.$/()-]+)*$")
_YAML_WORDS: Final = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null"})


def _scalar(value: Any) -> str:
    """A plain scalar when it cannot be misread, else a JSON (= YAML double-quoted) string."""
    if isinstance(value, str) and _PLAIN.match(value) and value.lower() not in _YAML_WORDS:
        return value
    return json.dumps(value, ensure_ascii=False)


def _yaml_node(value: Any, indent: int, lines: list[str]) -> None:
    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            lines.append(pad + "{}")
        for key, item in value.items():
            _yaml_entry(f"{pad}{_scalar(str(key))}:", item, indent, lines)
    elif isinstance(value, list):
        if not value:
            lines.append(pad + "[]")
        for item in value:
            _yaml_entry(f"{pad}-", item, indent, lines)
    else:
        lines.append(pad + _scalar(value))


def _yaml_entry(head: str, item: Any, indent: int, lines: list[str]) -> None:
    if isinstance(item, dict) and item and head.endswith("-"):
        # "- key: value" with the mapping's other keys under the first one.
        nested: list[str] = []
        _yaml_node(item, indent + 2, nested)
        nested[0] = f"{head} {nested[0].lstrip()}"
        lines.extend(nested)
    elif isinstance(item, dict | list) and item:
        lines.append(head)
        _yaml_node(item, indent + 2, lines)
    elif isinstance(item, dict):
        lines.append(f"{head} {{}}")
    elif isinstance(item, list):
        lines.append(f"{head} []")
    else:
        lines.append(f"{head} {_scalar(item)}")
