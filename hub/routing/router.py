"""The router: consume the log → route → project → produce to the outboxes, exactly once.

Each batch of log records becomes ONE Kafka transaction holding the outbox records, the dead
letters, the changed person states and the consumed offsets. Readers of the outboxes use
read_committed, so a router that dies mid-batch leaves nothing visible; its successor routes
the batch again from the committed offsets and the committed state.

Why confluent-kafka (librdkafka) and not aiokafka for this loop: several routers share the
log's partitions as one consumer group (``<HUB_WRITER_ID_PREFIX>-router``), and a router that
was rebalanced away or paused must not commit late (a zombie). librdkafka implements KIP-447:
``send_offsets_to_transaction(offsets, consumer.consumer_group_metadata())`` sends the group
generation and member id with the offsets, and the broker refuses a transaction of a member
the group has moved past. One stable transactional id per router process
(``HUB_ROUTER_TRANSACTIONAL_ID``) is then enough, whatever partitions it gets. aiokafka's
``send_offsets_to_transaction`` takes only a group id, so it fences zombies only with one
transactional id per input partition (a producer per partition and a rebuild on every
rebalance). The transactional id doubles as the static group member id (KIP-345): a router
restarted within ``HUB_ROUTER_SESSION_TIMEOUT_S`` gets its partitions back without a
rebalance of the others, and the restart itself aborts the transaction the dead process left
open (``init_transactions`` bumps the id's epoch).

librdkafka's default partitioner (consistent_random, CRC32) is not Java's: the producer sets
``partitioner=murmur2_random``, the murmur2 of Java and aiokafka, so an outbox record of a
person lands on the partition number of the person's log record (outboxes have the log's
partition count). Router-state records are written to that partition explicitly.

The loop is synchronous, in the process's main thread (no asyncio): librdkafka's calls block,
and a Confluent-framed value whose writer id is not cached yet is fetched from the registry
with a blocking call, which stalls only this loop, that has nothing else to do meanwhile (ids
are few, and cached for good). A registry that cannot be reached is not a poison record: the
batch is dropped unproduced, rewound and tried again. One helper thread, the committer, runs
``send_offsets_to_transaction`` and ``commit_transaction`` of batch N (librdkafka waits for
the broker there without the GIL) while the main thread consumes and prepares batch N+1; N+1
is produced only after N committed (see :meth:`Router.run`). The rebalance callbacks run
inside ``consume()``: ``on_revoke`` first settles a transaction still committing (committed,
or aborted when the group has moved on), so partitions are never given up with one open.

Personal fields: the log holds them sealed with the person's data key (:mod:`hub.privacy`),
and the outboxes get them exactly so (the derived schemas keep the ``bytes`` member of a
granted field's union, so the raw path copies sealed bytes); the router opens none of them.
For the routes that grant a ``pii`` class to a destination a delivery worker serves, it checks
for the whole batch, in one ``data_keys`` call, that the data keys of the granted sealed
values can still be had: a record of a person whose key is erased (forgotten) or unknown
becomes that route's dead letter (``PersonalDataErased``, ``DataKeyUnknown``), the event's
other routes flow. Plaintext written before encryption by a person forgotten since is held
back the same way (``PersonalDataRestricted``, the value not copied). The person state opens
the one sealed field it learns from (a registration's fund membership) in memory. The key
keeper not answering (``KekUnavailable``) is handled as the registry not answering.

Failures: a record that cannot be decoded (stage ``decode``) or whose route cannot resolve
its destination (``Unroutable``, stage ``route``) becomes a dead letter with the original key
and value, in the same transaction; the rest of the batch flows. An abortable Kafka error
(the group moved on, a partition leader changed mid-commit) aborts the batch, rewinds the
consumer to the batch's first offsets and drops its state changes. A fatal one (this
transactional id was fenced by a newer process, an authorization error) ends ``hub route``
with a non-zero exit: the supervisor starts a fresh process, which is the same path as a
crash and the kill tests prove it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import FrameType
from typing import Any, NamedTuple, cast
from uuid import UUID

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from fastavro import parse_schema
from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge

from hub.identity.pseudonym import PSEUDONYM_LENGTH
from hub.kafka.clients import librdkafka_config
from hub.kafka.dead_letters import DeadLetter, DeadLetterStage, with_dead_letter_headers
from hub.kafka.topics import ensure_topics, outbox_spec, outbox_topic
from hub.logging import get_logger, redact_text
from hub.privacy.fields import SealedFields
from hub.privacy.kek import KekError, KekUnavailable
from hub.privacy.sealing import DataKey, KeyUnknown, SealBroken, SealError, sealed_key_id
from hub.routing.outbox import (
    KeyPair,
    KeysMisconfigured,
    OutboxCodec,
    PersonKeys,
    RawWriter,
    Unavailable,
    available_keys,
    granted_values,
    key_unavailable,
    plaintext_restricted,
    processing_restricted,
    restricted,
    restriction_of,
    single_object_dataschema,
)
from hub.routing.projection import encoding_shape, without_logical_types
from hub.routing.resolve import (
    STATE_FUND_PATH,
    PayerUnreadable,
    PersonState,
    Unroutable,
    next_state,
    router_for,
)
from hub.routing.routes import RoutesConfig
from hub.routing.routes import Transport as RouteTransport
from hub.routing.state import PersonStates, StateBatch, restore_partitions
from hub.serde import DecodedEvent, EventSerializer, SerdeError, build_serializer
from hub.serde.avro_body import BodyReader, decode_body
from hub.serde.catalog import SchemaCatalog, SchemaVersion
from hub.serde.framing import SINGLE_OBJECT_HEADER_SIZE, SINGLE_OBJECT_MAGIC
from hub.serde.registry import SchemaNotFound, SchemaRegistryError
from hub.settings import HubSettings

log = get_logger(__name__)

ROUTE_HEADER = "hub-route"
DESTINATION_HEADER = "hub-destination"
ENDPOINT_HEADER = "hub-endpoint"
SOURCE_HEADER = "hub-source"
DATASCHEMA_HEADER = "ce_dataschema"

#: The directory of the routes whose destination is the person's payer (learnt state).
PAYER_OF_PERSON = "payer_of_person"

#: Exit status of ``hub route`` after a fatal Kafka error (fenced, not authorized).
EXIT_FATAL = 3
#: Longest wait before a batch is tried again after the registry did not answer.
REGISTRY_BACKOFF_MAX_S = 60.0

ROUTED = PromCounter(
    "hub_router_routed", "Outbox records the router committed, per destination", ["destination"]
)
DEAD_LETTERS = PromCounter(
    "hub_router_dead_letters", "Log records the router dead-lettered, per stage", ["stage"]
)
CONSUMED = PromCounter("hub_router_records", "Log records the router committed as consumed")
TRANSACTIONS = PromCounter("hub_router_transactions", "Router transactions by outcome", ["outcome"])
REGISTRY_UNAVAILABLE = PromCounter(
    "hub_router_registry_unavailable",
    "Batches put back because the schema registry did not answer a writer-schema look-up",
)
KEYS_UNAVAILABLE = PromCounter(
    "hub_router_keys_unavailable",
    "Batches put back because the key-encryption key's keeper did not answer",
)
LAG = Gauge("hub_router_lag", "Log records not yet routed, per owned partition", ["partition"])


def _raw_readers(catalog: SchemaCatalog | None) -> dict[bytes, BodyReader]:
    """Fingerprint → reader of every shipped schema version, writer and reader schemas both
    without logical types (see :class:`RecordHandler`)."""
    if catalog is None:
        return {}
    stripped: dict[str, Any] = {}

    def parsed(version: SchemaVersion) -> Any:
        if version.canonical not in stripped:
            stripped[version.canonical] = parse_schema(
                without_logical_types(version.raw), named_schemas={}
            )
        return stripped[version.canonical]

    readers: dict[bytes, BodyReader] = {}
    for fingerprint, version in catalog.fingerprints().items():
        current = catalog.current(version.type_name)
        same = version.canonical == current.canonical
        readers[fingerprint] = BodyReader(
            type_name=current.type_name,
            writer=parsed(current if same else version),
            reader=None if same else parsed(current),
            ref=fingerprint.hex(),
        )
    return readers


def router_group_id(settings: HubSettings) -> str:
    """The one consumer group all routers of a deployment share."""
    return f"{settings.writer_id_prefix}-router"


# -- one record: decode → state → route → project (no Kafka) --------------------------------------


class LogRecord(NamedTuple):
    """A consumed log record, as the handler needs it (a tuple: made per record)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()


class OutRecord(NamedTuple):
    """A record to produce in the batch's transaction; ``partition`` None: by key (murmur2)."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()
    partition: int | None = None


@dataclass(frozen=True, slots=True)
class KeyNeed:
    """An outbox record (``index`` in its Outcome's records) whose granted sealed fields need
    the person's data keys: checked for the whole batch at once
    (:meth:`RecordHandler.handle_many`)."""

    index: int
    route: str
    destination: str
    paths: tuple[str, ...]
    pairs: tuple[KeyPair, ...]
    record: LogRecord
    event_type: str
    event_id: str | None
    subject: str
    state: PersonState | None = None
    """Not a route's record but the person's new state, whose fund code is sealed with the
    data key of ``pairs`` once the batch's keys are fetched (its value until then: the fund
    code not kept)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one log record became: outbox records (with their destinations) or a dead letter,
    plus a state change. A record whose one route cannot have the person's fields (forgotten)
    has that route's dead letter among outbox records of its other routes: ``dead_count``."""

    records: list[OutRecord]
    destinations: list[str] = field(default_factory=list)
    dead_letter: DeadLetterStage | None = None
    dead_count: int = 1
    needs: tuple[KeyNeed, ...] = ()


class RegistryUnavailable(RuntimeError):
    """The schema registry did not answer a writer-schema look-up: retry, not a poison record."""


def open_person_keys_for(settings: HubSettings) -> Any:
    """The person keys of the deployment (the person-keys topic, followed), started. The key
    store's start itself asks again while the broker does not know a topic it has just
    created; any failure is raised for the caller's one-line error."""
    from hub.privacy.keystore import KafkaPersonKeys  # the Kafka client only where needed

    keys = KafkaPersonKeys(settings)
    try:
        keys.start()
    except BaseException:
        with contextlib.suppress(Exception):
            keys.close()
        raise
    return keys


class RecordHandler:
    """Decode, update the person's state, route and project one log record.

    Pure apart from the registry look-up inside decoding: tests drive it without Kafka.

    The hot path (a single-object value of a shipped schema: every value of a log written
    without a registry) reads with the schemas stripped of their logical types, so uuids stay
    strings and times and dates ints, and writes each outbox value with the stripped derived
    schema straight from the whole record (:meth:`OutboxCodec.encode_raw`): no UUID or
    datetime objects made and turned back, no projected copy per destination. The bytes are
    those of :meth:`OutboxCodec.encode` of the projected record (tested). Other values (a
    Confluent-framed log) go through the serializer and the projection as before.
    """

    def __init__(
        self,
        settings: HubSettings,
        config: RoutesConfig,
        *,
        serializer: EventSerializer | None = None,
        codec: OutboxCodec | None = None,
        keys: PersonKeys | None = None,
    ) -> None:
        """``keys``: the person keys (data keys and forgotten marks); None opens the
        person-keys topic the first time a record needs them (:meth:`close` closes it)."""
        self.settings = settings
        self.config = config
        self.keys = keys
        self._opened_keys: Any = None
        self.serializer = serializer if serializer is not None else build_serializer(settings)
        self.codec = codec if codec is not None else OutboxCodec.for_routes(config)
        self._router = router_for(config)
        self._outbox_topics: dict[str, str] = {}
        self._routed_header_cache: dict[
            tuple[str, str, str | None, tuple[str, bytes] | None], tuple[tuple[str, bytes], ...]
        ] = {}
        self._kept_headers: dict[str, bool] = {}
        self._raw_writers: dict[tuple[str, str], tuple[RawWriter, bool]] = {}
        self._catalog: SchemaCatalog | None = getattr(self.serializer, "catalog", None)
        self._raw_readers = _raw_readers(self._catalog)
        self._state_topic = settings.topic_router_state
        self._dead_letter_topic = settings.topic_dead_letter
        self._sealed = SealedFields(self._catalog) if self._catalog is not None else SealedFields()
        self._guards: dict[tuple[str, str, str], tuple[tuple[str, tuple[str, ...]], ...]] = {}
        self._payer_types = frozenset(
            t for r in config.routes if r.to.directory == PAYER_OF_PERSON for t in r.types
        )
        self._state_fingerprints = frozenset(
            fingerprint
            for fingerprint, reader in self._raw_readers.items()
            if reader.type_name.rpartition(".")[2] in _STATE_FIELDS
        )

    # -- personal fields ---------------------------------------------------------------------

    def person_keys(self) -> PersonKeys:
        if self.keys is None:
            self._opened_keys = open_person_keys_for(self.settings)
            self.keys = self._opened_keys
        assert self.keys is not None
        return self.keys

    def close(self) -> None:
        """Close the person keys this handler opened itself."""
        if self._opened_keys is not None:
            with contextlib.suppress(Exception):
                self._opened_keys.close()
            self._opened_keys = None
            self.keys = None

    def needs_keys(self) -> bool:
        """Whether any route delivers personal fields (sealed ones are opened on delivery)."""
        return any(
            route.grants and self.config.destinations[d].transport is not RouteTransport.OUTBOX
            for route in self.config.routes
            for d in self.config.destinations_of(route)
        )

    def _guard(
        self, route: str, destination: str, type_name: str
    ) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """The personal fields a route sends a destination (dotted, split), when a delivery
        worker opens them: none for a route granting no class, or a destination whose reader
        pulls its outbox itself (reporting: it never gets keys, sealed values stay sealed)."""
        slot = (route, destination, type_name)
        found = self._guards.get(slot)
        if found is None:
            chosen = self.config.route(route)
            if not chosen.grants or (
                self.config.destinations[destination].transport is RouteTransport.OUTBOX
            ):
                found = ()
            else:
                sent = set(self._router.compiled(chosen, destination, type_name).fields)
                found = tuple(
                    (f.path, f.parts) for f in self._sealed.fields(type_name) if f.path in sent
                )
            self._guards[slot] = found
        return found

    def outbox(self, destination: str) -> str:
        topic = self._outbox_topics.get(destination)
        if topic is None:
            topic = self._outbox_topics[destination] = outbox_topic(self.settings, destination)
        return topic

    def _decode(self, value: bytes) -> tuple[DecodedEvent, BodyReader | None]:
        """The event, and the reader when it was read without logical types (the hot path)."""
        reader = self._raw_readers.get(value[2:10]) if value[:2] == SINGLE_OBJECT_MAGIC else None
        if reader is not None:
            return decode_body(value, SINGLE_OBJECT_HEADER_SIZE, reader), reader
        return self.serializer.decode(value), None

    def _raw_writer(self, destination: str, type_name: str) -> tuple[RawWriter, bool]:
        """The writer of a destination and type, and whether its derived schema encodes like
        the type's current schema (the projection drops nothing): then a log body written
        with the current schema IS the outbox body, copied, not encoded again."""
        slot = (destination, type_name)
        found = self._raw_writers.get(slot)
        if found is None:
            writer = self.codec.raw_writer(destination, type_name)
            assert self._catalog is not None  # the raw path needs the serializer's catalog
            current = self._catalog.current(type_name).raw
            found = (writer, encoding_shape(writer.raw) == encoding_shape(current))
            self._raw_writers[slot] = found
        return found

    def handle(self, record: LogRecord, states: StateBatch) -> Outcome:
        """One record's outcome, its data keys checked (see :meth:`handle_many`)."""
        return self.handle_many([record], states)[0]

    def handle_many(self, records: Sequence[LogRecord], states: StateBatch) -> list[Outcome]:
        """The outcomes of records in order; the data keys their granted sealed fields need are
        looked up once for all (one batch call to the key-encryption keeper for the keys not
        yet unwrapped). A route whose record needs a key that is erased or unknown gets a dead
        letter in its place; the record's other routes are untouched. KekUnavailable: the
        keeper did not answer, nothing is decided (the router retries the batch)."""
        state_keys = self._state_keys(records)
        outcomes = [self._handle(record, states, state_keys) for record in records]
        wanted = [pair for o in outcomes for need in o.needs for pair in need.pairs]
        if not wanted:
            return outcomes
        found, failed = available_keys(self.person_keys(), wanted)
        return [self._settle_needs(o, found, failed) for o in outcomes]

    def route_batch(
        self,
        records: Sequence[LogRecord],
        states: StateBatch,
        out: list[OutRecord],
        routed: Counter[str],
        dead: Counter[str],
    ) -> None:
        """:meth:`handle_many` for the router's loop: the records' outcomes appended to ``out``
        (destinations counted in ``routed``, dead letters per stage in ``dead``) as they are
        made, so that no per-record outcome is held for the batch (the collector's work grows
        with what stays alive); then the data keys of the batch, at once, and a dead letter in
        the place of each route's record whose key cannot be had."""
        state_keys = self._state_keys(records)
        needs: list[tuple[int, KeyNeed]] = []
        for record in records:
            outcome = self._handle(record, states, state_keys)
            at = len(out)
            out.extend(outcome.records)
            routed.update(outcome.destinations)
            if outcome.dead_letter is not None:
                dead[outcome.dead_letter.value] += outcome.dead_count
            for need in outcome.needs:
                needs.append((at + need.index, need))
        if not needs:
            return
        wanted = [pair for _, need in needs for pair in need.pairs]
        found, failed = available_keys(self.person_keys(), wanted)
        for position, need in needs:
            if need.state is not None:
                out[position] = self._state_record(out[position], need, found)
                continue
            problem = next((failed[p] for p in need.pairs if p in failed), None)
            if problem is None:
                continue
            out[position] = self._need_letter(need, problem)
            routed[need.destination] -= 1
            if routed[need.destination] <= 0:
                del routed[need.destination]
            dead[DeadLetterStage.ROUTE.value] += 1

    def _need_letter(self, need: KeyNeed, problem: SealError | KekError) -> OutRecord:
        mark = None
        with contextlib.suppress(Exception):
            mark = self.person_keys().forgotten(need.subject)
        why = key_unavailable(need.route, need.destination, need.paths, problem, mark)
        return self._route_letter(
            need.record, why, need.destination, need.event_type, need.event_id, need.subject
        )

    def _state_record(
        self, written: OutRecord, need: KeyNeed, found: Mapping[KeyPair, DataKey]
    ) -> OutRecord:
        """The person's state record with the fund code sealed, when the key was had."""
        assert need.state is not None
        key = found.get(need.pairs[0])
        if key is None:
            return written  # the fund code not kept (the person forgotten)
        return written._replace(value=need.state.to_bytes(key, need.subject))

    def _settle_needs(
        self,
        outcome: Outcome,
        found: Mapping[KeyPair, DataKey],
        failed: Mapping[KeyPair, SealError | KekError],
    ) -> Outcome:
        if not outcome.needs:
            return outcome
        records = list(outcome.records)
        destinations = list(outcome.destinations)
        dead = 0 if outcome.dead_letter is None else outcome.dead_count
        for need in outcome.needs:
            if need.state is not None:
                records[need.index] = self._state_record(records[need.index], need, found)
                continue
            problem = next((failed[p] for p in need.pairs if p in failed), None)
            if problem is None:
                continue
            records[need.index] = self._need_letter(need, problem)
            destinations.remove(need.destination)
            dead += 1
        if not dead:
            return Outcome(records, destinations, outcome.dead_letter)
        return Outcome(records, destinations, DeadLetterStage.ROUTE, dead)

    def _route_letter(
        self,
        record: LogRecord,
        why: Unavailable,
        destination: str,
        event_type: str,
        event_id: str | None,
        subject: str,
        *,
        keep_value: bool = True,
    ) -> OutRecord:
        """One route's dead letter for personal fields it may not have. ``keep_value`` False:
        the log value holds the fields in plaintext (written before encryption), so it is not
        copied once more; the letter points at it (its source offset)."""
        reason = why.reason
        if not keep_value:
            reason += "; the value is not copied (plaintext): the log keeps it at the source offset"
        outcome = self._dead_letter(
            record if keep_value else record._replace(value=None),
            DeadLetterStage.ROUTE,
            why.error_class,
            reason,
            event_type=event_type,
            event_id=event_id,
            subject=subject,
            destination=destination,
        )
        return outcome.records[0]

    def _decode_record(self, record: LogRecord) -> tuple[DecodedEvent, BodyReader | None] | Outcome:
        """The decoded event (and its raw reader), or the decode stage's dead letter."""
        if record.value is None:
            return self._dead_letter(
                record, DeadLetterStage.DECODE, "EmptyValue", "the log record has no value"
            )
        try:
            return self._decode(record.value)
        except SchemaRegistryError as error:
            if not schema_is_missing(error):
                raise RegistryUnavailable(str(error)) from error
            return self._dead_letter(record, DeadLetterStage.DECODE, type(error).__name__, error)
        except SerdeError as error:
            return self._dead_letter(record, DeadLetterStage.DECODE, type(error).__name__, error)

    def _state_keys(self, records: Sequence[LogRecord]) -> _BatchKeys:
        """The data keys of the sealed fields the person state is learnt from (a registration's
        fund membership: who pays the person), fetched for the batch in one call. Only the
        records whose ``ce_type`` names such a type are decoded for it (and not kept: a batch of
        decoded records held alive costs the collector more than the second decode of a few);
        a key missed here is looked up when the record is handled."""
        wanted: list[KeyPair] = []
        learning = self._state_fingerprints
        for record in records:
            value = record.value
            if value is None:
                continue
            if value[:2] == SINGLE_OBJECT_MAGIC and value[2:10] in self._raw_readers:
                if value[2:10] not in learning:  # the hot path: one look-up per record
                    continue
            else:
                kind = next((v for k, v in record.headers if k == "ce_type"), b"")
                if kind.rpartition(b".")[2].decode("utf-8", "replace") not in _STATE_FIELDS:
                    continue
            try:
                decoded, _ = self._decode(value)
            except (SchemaRegistryError, SerdeError):
                continue  # handled (and dead-lettered, or retried) with the record itself
            paths = _STATE_FIELDS.get(decoded.type_name.rpartition(".")[2])
            if not paths:
                continue
            event = decoded.record
            found = granted_values(event, str((event.get("envelope") or {}).get("subject")), paths)
            if found is not None:
                wanted.extend(found.pairs)
        if not wanted:
            return _BatchKeys(self, {}, {})
        keys, failed = available_keys(self.person_keys(), wanted)
        return _BatchKeys(self, keys, failed)

    def _state_view(
        self, type_name: str, event: dict[str, Any], keys: _BatchKeys | None
    ) -> dict[str, Any] | None:
        """The event as :func:`next_state` reads it: a sealed field the state is learnt from
        opened, in memory only (the outbox values are written from the sealed event). None: a
        field does not open (the person forgotten), so the event teaches nothing."""
        paths = _STATE_FIELDS.get(type_name)
        if not paths:
            return event
        keys = keys if keys is not None else _BatchKeys(self, {}, {})
        opened = self._sealed.open(type_name, event, keys, [p for p, _ in paths])
        return None if opened.failed else opened.record

    def _open_state(self, person: str, state: PersonState) -> PersonState:
        """The person's restored state with its sealed fund code opened (in memory), or marked
        unreadable with the reason (the key erased: the person forgotten) so that the payer
        routes dead-letter and the rest flows. KekUnavailable (KeysMisconfigured too) is
        raised: the batch is tried again."""
        assert state.sealed_fund is not None
        problem: BaseException
        try:
            pair = (person, sealed_key_id(state.sealed_fund))
        except SealBroken as broken:
            problem = broken
        else:
            found, failed = available_keys(self.person_keys(), [pair])
            data_key = found.get(pair)
            if data_key is not None:
                try:
                    return state.opened(data_key, person)
                except SealError as error:
                    problem = error
            else:
                problem = failed.get(pair) or KeyUnknown(person, pair[1])
        mark = None
        with contextlib.suppress(Exception):
            mark = self.person_keys().forgotten(person)
        why = key_unavailable(None, PAYER_OF_PERSON, (STATE_FUND_PATH,), problem, mark)
        return replace(state, fund_unreadable=(why.error_class, why.reason))

    def _handle(
        self, record: LogRecord, states: StateBatch, state_keys: _BatchKeys | None = None
    ) -> Outcome:
        result = self._decode_record(record)
        if isinstance(result, Outcome):
            return result
        decoded, raw = result
        type_name = decoded.type_name.rpartition(".")[2]
        event = decoded.record
        envelope = event.get("envelope") or {}
        event_id = str(envelope.get("event_id", "")) or None
        subject = envelope.get("subject")
        person = subject if isinstance(subject, str) and _PSEUDONYM.fullmatch(subject) else None
        problem = _key_problem(record.key, person)
        if problem is not None:
            return self._dead_letter(
                record,
                DeadLetterStage.ROUTE,
                "BadKey",
                problem,
                event_type=type_name,
                event_id=event_id,
                subject=person,
            )
        assert person is not None
        key = record.key
        before = states.get(record.partition, person)
        if (
            before is not None
            and before.sealed_fund is not None
            and before.fund_code is None
            and before.fund_unreadable is None
            and type_name in self._payer_types
        ):
            before = self._open_state(person, before)
            states.put(record.partition, person, before)  # opened in memory, nothing written
        if type_name in _STATE_FIELDS:
            learnt = self._state_view(type_name, event, state_keys)
            after = before if learnt is None else next_state(before, type_name, learnt)
        else:
            after = next_state(before, type_name, event)
        # (route, destination, endpoint, value, ce_dataschema header) per outbox record
        sends: list[tuple[str, str, str | None, bytes, tuple[str, bytes] | None]] = []
        blocked: list[PayerUnreadable] = []
        try:
            if raw is not None:
                # The log body as it is, when written with the current schema (no resolution).
                assert record.value is not None  # decoded
                body = record.value[SINGLE_OBJECT_HEADER_SIZE:] if raw.reader is None else None
                for target in self._router.targets(type_name, event, after, blocked):
                    writer, same = self._raw_writer(target.destination, type_name)
                    if same and body is not None:
                        value = writer.header + body
                    else:
                        value = self.codec.encode_raw(writer, type_name, event)
                    sends.append((*target, value, writer.dataschema))
            else:
                for r in self._router.route_event(type_name, event, after, blocked):
                    value = self.codec.encode(r, type_name)
                    dataschema = (
                        (DATASCHEMA_HEADER, single_object_dataschema(value))
                        if value[:2] == SINGLE_OBJECT_MAGIC
                        else None
                    )
                    sends.append((r.route, r.destination, r.endpoint, value, dataschema))
        except Unroutable as error:
            return self._dead_letter(
                record,
                DeadLetterStage.ROUTE,
                "Unroutable",
                f"route {error.route}: {error.reason}",
                event_type=type_name,
                event_id=event_id,
                subject=person,
            )
        except (SerdeError, ValueError, KeyError) as error:  # a projection the schema refuses
            return self._dead_letter(
                record,
                DeadLetterStage.ROUTE,
                type(error).__name__,
                error,
                event_type=type_name,
                event_id=event_id,
                subject=person,
            )
        out: list[OutRecord] = []
        routed: list[str] = []
        needs: list[KeyNeed] = []
        dead = 0
        for unreadable in blocked:
            error_class, reason = (
                after.fund_unreadable
                if after is not None and (after.fund_unreadable is not None)
                else ("PersonalDataErased", unreadable.reason)
            )
            out.append(
                self._route_letter(
                    record,
                    Unavailable(error_class, f"route {unreadable.route}: {reason}"),
                    PAYER_OF_PERSON,
                    type_name,
                    event_id,
                    person,
                )
            )
            dead += 1
        if sends:
            base = self._base_headers(record)
            for route, destination, endpoint, value, dataschema in sends:
                guard = self._guard(route, destination, type_name)
                found = granted_values(event, person, guard) if guard else None
                if found is not None:
                    why: Unavailable | None = None
                    plaintext = False
                    hold = restriction_of(self.person_keys(), person)
                    if hold is not None:
                        why = processing_restricted(
                            route,
                            destination,
                            (*found.sealed, *found.plain, *found.broken),
                            hold,
                        )
                        plaintext = bool(found.plain)
                    elif found.broken:
                        why = key_unavailable(
                            route,
                            destination,
                            found.broken,
                            SealBroken("a sealed value is cut short or not of format A5 01"),
                        )
                    elif found.plain:
                        mark = self.person_keys().forgotten(person)
                        if mark is not None and restricted(mark, event):
                            why = plaintext_restricted(route, destination, found.plain, mark)
                            plaintext = True
                    if why is not None:
                        out.append(
                            self._route_letter(
                                record,
                                why,
                                destination,
                                type_name,
                                event_id,
                                person,
                                keep_value=not plaintext,
                            )
                        )
                        dead += 1
                        continue
                    if found.pairs:
                        needs.append(
                            KeyNeed(
                                len(out),
                                route,
                                destination,
                                found.sealed,
                                found.pairs,
                                record,
                                type_name,
                                event_id,
                                person,
                            )
                        )
                headers = [*base, *self._routed_headers(route, destination, endpoint, dataschema)]
                out.append(OutRecord(self.outbox(destination), key, value, headers))
                routed.append(destination)
        if after != before:
            states.put(record.partition, person, after)
            state_value = None if after is None else after.to_bytes()
            if after is not None and after.fund_code is not None:
                # Sealed with the key of one of the event's own sealed values, fetched with
                # the batch's; an event in plaintext (before encryption) keeps it as written.
                key_id = min(self._sealed.key_ids(type_name, event), default=None)
                if key_id is not None:
                    state_value = after.to_bytes(None, person)  # not kept until the key is had
                    needs.append(
                        KeyNeed(
                            len(out),
                            "",
                            "",
                            (STATE_FUND_PATH,),
                            ((person, key_id),),
                            record,
                            type_name,
                            event_id,
                            person,
                            state=after,
                        )
                    )
            out.append(OutRecord(self._state_topic, key, state_value, partition=record.partition))
        if dead:
            return Outcome(out, routed, DeadLetterStage.ROUTE, dead, tuple(needs))
        return Outcome(out, routed, needs=tuple(needs))

    def _base_headers(self, record: LogRecord) -> tuple[tuple[str, bytes], ...]:
        """The log record's CloudEvents headers (``ce_dataschema`` is replaced: it names the
        projected schema of each outbox value) and ``hub-source``."""
        kept = self._kept_headers
        headers: list[tuple[str, bytes]] = []
        for header in record.headers:
            keep = kept.get(header[0])
            if keep is None:
                name = header[0]
                keep = (name.startswith("ce_") or name == "content-type") and (
                    name != DATASCHEMA_HEADER
                )
                if len(kept) < 256:  # header names are few; a producer inventing more: no cache
                    kept[name] = keep
            if keep:
                headers.append(header)
        headers.append(
            (SOURCE_HEADER, f"{record.topic}/{record.partition}/{record.offset}".encode())
        )
        return tuple(headers)

    def _routed_headers(
        self,
        route: str,
        destination: str,
        endpoint: str | None,
        dataschema: tuple[str, bytes] | None,
    ) -> tuple[tuple[str, bytes], ...]:
        """``hub-route``, ``hub-destination``, ``hub-endpoint`` and ``ce_dataschema`` (built
        once per combination)."""
        slot = (route, destination, endpoint, dataschema)
        headers = self._routed_header_cache.get(slot)
        if headers is None:
            headers = (
                (ROUTE_HEADER, route.encode()),
                (DESTINATION_HEADER, destination.encode()),
            )
            if endpoint is not None:
                headers += ((ENDPOINT_HEADER, endpoint.encode()),)
            if dataschema is not None:
                headers += (dataschema,)
            if len(self._routed_header_cache) < 65536:  # endpoints × types: bounded, but guard
                self._routed_header_cache[slot] = headers
        return headers

    def _dead_letter(
        self,
        record: LogRecord,
        stage: DeadLetterStage,
        error_class: str,
        reason: object,
        *,
        event_type: str | None = None,
        event_id: str | None = None,
        subject: str | None = None,
        destination: str | None = None,
    ) -> Outcome:
        """The original key and value with the reason in headers; a key that is not a
        pseudonym (an identity code, say) never reaches the dead-letter topic: the letter is
        keyed by the event's ``subject`` (``subject``: a validated pseudonym) or has no key,
        and its reason says so. A record without a key gets the subject's too, when known."""
        if event_id is None:
            event_id = next(
                (v.decode("utf-8", "replace") for k, v in record.headers if k == "ce_id"), None
            )
        key = record.key
        text = str(reason)
        if key is None or not _PSEUDONYM_KEY.fullmatch(key):
            key = subject.encode() if subject is not None else None
            if record.key is not None or key is not None:
                text += (
                    "; dead letter keyed by envelope.subject, not the log key"
                    if key is not None
                    else "; dead letter without a key: the log key is not a pseudonym"
                )
        letter = DeadLetter(
            stage=stage,
            error_class=error_class,
            reason=text,
            source_topic=record.topic,
            source_partition=record.partition,
            source_offset=record.offset,
            event_id=event_id,
            event_type=event_type,
            destination=destination,
        )
        out = OutRecord(
            self._dead_letter_topic,
            key,
            record.value,
            with_dead_letter_headers(list(record.headers), letter),
        )
        return Outcome([out], dead_letter=stage)


_STATE_FIELDS: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "JobseekerRegistered": (
        ("payload.unemployment_fund_code", ("payload", "unemployment_fund_code")),
    ),
}
"""Personal fields :func:`~hub.routing.resolve.next_state` learns the person's payer from."""


class _BatchKeys:
    """:class:`~hub.privacy.fields.KeyLookup` over the keys fetched for one batch; a key not
    fetched (a record whose ``ce_type`` header did not say what it is) is asked for alone."""

    def __init__(
        self,
        handler: RecordHandler,
        found: Mapping[KeyPair, DataKey],
        failed: Mapping[KeyPair, SealError | KekError],
    ) -> None:
        self._handler = handler
        self._found = found
        self._failed = failed

    def data_key(self, subject: str, key_id: UUID) -> DataKey:
        key = self._found.get((subject, key_id))
        if key is not None:
            return key
        problem = self._failed.get((subject, key_id))
        if problem is None:
            found, failed = available_keys(self._handler.person_keys(), [(subject, key_id)])
            key = found.get((subject, key_id))
            if key is not None:
                return key
            problem = failed.get((subject, key_id))
        if isinstance(problem, SealError):
            raise problem
        raise KeyUnknown(subject, key_id)


def schema_is_missing(error: SchemaRegistryError) -> bool:
    """Whether the registry said it has no such schema (404, unknown id): the record is
    poison. Anything else (401/403 credentials, 408/429, 5xx, no answer) says nothing about
    the record: the registry is unavailable and the batch is retried."""
    return isinstance(error, SchemaNotFound) or error.status_code == 404


_PSEUDONYM = re.compile(rf"[0-9a-f]{{{PSEUDONYM_LENGTH}}}")
_PSEUDONYM_KEY = re.compile(rf"[0-9a-f]{{{PSEUDONYM_LENGTH}}}".encode())


def _key_problem(key: bytes | None, subject: str | None) -> str | None:
    """Why a decoded record's log key cannot key its outbox and state records, or None.

    The log is keyed by the person's pseudonym (``envelope.subject``): that keeps a person on
    one partition, in order, and is the only person key allowed in a topic. A record without
    a key was spread at random (its person's order is lost), one keyed by anything else (an
    identity code) would copy that key into every outbox; neither is routed. The reason
    names no key or subject value."""
    if subject is None:
        return "envelope.subject is not a pseudonym (32 lowercase hex characters)"
    if key is None:
        return "the log record has no key: a person's records must be keyed by their pseudonym"
    if not _PSEUDONYM_KEY.fullmatch(key):
        return "the log key is not a pseudonym"
    if key != subject.encode():
        return "the log key is not the event's envelope.subject"
    return None


# -- the Kafka loop -------------------------------------------------------------------------------


@dataclass
class _Prepared:
    """A batch handled but not produced: its records, offsets and state changes."""

    batch: StateBatch
    first: dict[int, int]
    records: int
    next_offsets: dict[int, int] = field(default_factory=dict)
    out: list[OutRecord] = field(default_factory=list)
    routed: Counter[str] = field(default_factory=Counter)
    dead: Counter[str] = field(default_factory=Counter)


class _CommitThread:
    """Runs one transaction's offsets and commit; a daemon thread, so that a librdkafka call
    that never returns (seen when the broker goes away mid-commit) cannot keep the process
    from exiting."""

    def __init__(self, work: Callable[[], float]) -> None:
        self._work = work
        self._done = threading.Event()
        self._result: float | None = None
        self._error: BaseException | None = None
        threading.Thread(target=self._run, name="router-commit", daemon=True).start()

    def _run(self) -> None:
        try:
            self._result = self._work()
        except BaseException as error:  # handed to the main thread by wait()
            self._error = error
        finally:
            self._done.set()

    def wait(self, timeout_s: float) -> float:
        """When it committed; its exception; TimeoutError if it did not end in time."""
        if not self._done.wait(timeout_s):
            raise TimeoutError
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


@dataclass
class _Committing:
    """A produced batch whose offsets and commit run in a committer thread."""

    prepared: _Prepared
    thread: _CommitThread


class RouterFatal(RuntimeError):
    """A Kafka error the router cannot continue after (fenced, not authorized)."""


@dataclass
class RouterStats:
    """What a router run committed."""

    records: int = 0
    routed: Counter[str] = field(default_factory=Counter)
    dead_letters: Counter[str] = field(default_factory=Counter)
    transactions: int = 0
    aborted: int = 0
    first_record_at: float | None = None
    """``time.monotonic()`` when the first records arrived (benchmarks time from there)."""
    last_commit_at: float | None = None


class Router:
    """One router process: a consumer in the router group and a transactional producer."""

    PARTITIONER = "murmur2_random"
    """Java's and aiokafka's partitioner (murmur2 of the key), not librdkafka's default."""

    def __init__(
        self,
        settings: HubSettings,
        config: RoutesConfig,
        *,
        handler: RecordHandler | None = None,
        batch_size: int = 500,
        batch_timeout_s: float = 0.1,
        progress_every_s: float = 10.0,
    ) -> None:
        self.settings = settings
        self.config = config
        self.handler = handler if handler is not None else RecordHandler(settings, config)
        self.batch_size = batch_size
        self.batch_timeout_s = batch_timeout_s
        self.progress_every_s = progress_every_s
        self.states = PersonStates()
        self.stats = RouterStats()
        self._log_topic = settings.topic_customer_path
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._in_transaction = False
        self._committing: _Committing | None = None
        self._rewound: set[int] = set()
        self._sought: dict[int, int] = {}
        """Partitions rewound since the current ``consume()`` began, and where to."""
        self._registry_backoff_s = 0.0
        self._stop = threading.Event()
        self._producer_usable = True
        # Longer than librdkafka's own timeouts of the two calls (and a commit retry).
        self._settle_timeout_s = 3 * settings.router_transaction_timeout_s + 10

    # -- clients ------------------------------------------------------------------------------

    def producer_config(self) -> dict[str, Any]:
        return {
            **librdkafka_config(self.settings),
            "transactional.id": self.settings.router_transactional_id,
            "enable.idempotence": True,
            "acks": "all",
            "transaction.timeout.ms": int(self.settings.router_transaction_timeout_s * 1000),
            "partitioner": self.PARTITIONER,
            "linger.ms": 5,
            "batch.size": 1024 * 1024,
            "client.id": f"{self.settings.router_transactional_id}-producer",
        }

    def consumer_config(self) -> dict[str, Any]:
        return {
            **librdkafka_config(self.settings),
            "group.id": router_group_id(self.settings),
            "group.instance.id": self.settings.router_transactional_id,
            "session.timeout.ms": int(self.settings.router_session_timeout_s * 1000),
            "partition.assignment.strategy": "cooperative-sticky",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            "client.id": f"{self.settings.router_transactional_id}-consumer",
        }

    def start(self) -> None:
        """Take the transactional id (aborting what a dead predecessor left open), then join."""
        producer = Producer(self.producer_config())
        timeout = max(30.0, self.settings.router_transaction_timeout_s)
        try:
            producer.init_transactions(timeout)
        except KafkaException as error:
            raise RouterFatal(f"cannot take transactional id: {error.args[0]}") from error
        self._producer = producer
        self._check_state_partitions(producer)
        if self.handler.keys is None and self.handler.needs_keys():
            # The person-keys topic read to its end before routing (the router checks that the
            # data keys of the personal fields it routes to a receiver can still be had).
            try:
                self.handler.person_keys()
            except Exception as error:  # PersonKeysError, KekError: one line, no key material
                raise RouterFatal(f"person keys: {type(error).__name__}: {error}") from error
        consumer = Consumer(self.consumer_config())
        consumer.subscribe(
            [self._log_topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        self._consumer = consumer
        # The routes, schemas, codecs and clients live as long as the process: out of the
        # collector's generations, so the collections the per-record dicts trigger stop
        # scanning them again and again (a third of the hot path's CPU, measured).
        gc.collect()
        gc.freeze()
        log.info(
            "router.started",
            group=router_group_id(self.settings),
            transactional_id=self.settings.router_transactional_id,
            topic=self._log_topic,
            destinations=sorted(self.config.destinations),
        )

    def _check_state_partitions(self, producer: Producer) -> None:
        """State goes to the partition number of the log record: the state topic needs at
        least the log's partitions (a log grown later needs a new state topic version)."""
        metadata = producer.list_topics(timeout=30)
        counts = {
            name: len(metadata.topics[name].partitions)
            for name in (self._log_topic, self.settings.topic_router_state)
            if name in metadata.topics and metadata.topics[name].error is None
        }
        missing = {self._log_topic, self.settings.topic_router_state} - set(counts)
        if missing:
            raise RouterFatal(f"topic(s) {', '.join(sorted(missing))} do not exist")
        log_partitions = counts[self._log_topic]
        state_partitions = counts[self.settings.topic_router_state]
        if state_partitions < log_partitions:
            raise RouterFatal(
                f"router state {self.settings.topic_router_state} has {state_partitions} "
                f"partitions, the log {self._log_topic} {log_partitions}: the state of log "
                "partition p is kept on state partition p, so it needs at least as many"
            )

    def close(self) -> None:
        """Leave cleanly: finish the committing transaction (or abort an open one), close the
        consumer, flush the producer. After a fatal error only the clients are closed: the
        producer is fenced, whatever it holds is aborted by the broker."""
        try:
            if self._consumer is not None and self._committing is not None:
                self._settle(self._consumer)
            if self._producer is not None and self._in_transaction:
                self._abort("closing")
        except RouterFatal:
            self._producer_usable = False
            raise
        finally:
            if self._consumer is not None:
                with contextlib.suppress(KafkaException, RuntimeError):
                    self._consumer.close()
                self._consumer = None
            if self._producer is not None:
                if self._producer_usable:
                    with contextlib.suppress(KafkaException):
                        self._producer.flush(10)
                self._producer = None
            self.handler.close()

    # -- rebalance ----------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = [tp.partition for tp in partitions]
        if not numbers:
            return
        restored = restore_partitions(self.settings, numbers)
        for partition, persons in restored.items():
            self.states.load(partition, persons)
        log.info("router.assigned", partitions=numbers, owned=self.states.owned())

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # This runs inside consume(), while the previous batch's transaction may still be
        # committing in the committer thread: it is finished (committed, or aborted when the
        # group has moved on) before the partitions are given up. No other transaction is open
        # here: a batch is only produced after consume() returned.
        if self._committing is not None:
            self._settle(consumer)
        if self._in_transaction:
            self._abort("partitions revoked")
        numbers = [tp.partition for tp in partitions]
        self.states.drop(numbers)
        for number in numbers:
            with contextlib.suppress(KeyError):
                LAG.remove(str(number))
        log.info("router.revoked", partitions=numbers, owned=self.states.owned())

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning("router.partitions_lost", partitions=[tp.partition for tp in partitions])
        self._on_revoke(consumer, partitions)

    # -- the loop -----------------------------------------------------------------------------

    def run(
        self,
        stop: threading.Event,
        *,
        until_idle: bool = False,
        on_batch: Callable[[Router], None] | None = None,
    ) -> RouterStats:
        """Route until ``stop`` is set (or, with ``until_idle``, until every owned partition
        is routed to its end); the open batch is always committed or aborted first.

        Pipelined by one batch: while batch N's transaction commits in the committer thread
        (librdkafka waits for the broker there, without the GIL), the main thread consumes and
        prepares batch N+1 (decode, state, route, project: the CPU work) against N's state
        changes. N+1 is produced only after N committed, in its own transaction; if N aborts,
        N+1 is dropped unproduced and both are consumed again.
        """
        if self._consumer is None:
            self.start()
        consumer = self._consumer
        assert consumer is not None
        self._stop = stop
        last_progress = time.monotonic()
        progress_from = (self.stats.records, sum(self.stats.routed.values()))
        try:
            while not stop.is_set():
                self._sought = {}
                try:
                    messages = consumer.consume(self.batch_size, self.batch_timeout_s)
                except KafkaException as exception:
                    error = exception.args[0]
                    if isinstance(error, KafkaError) and not error.fatal():
                        raise
                    raise RouterFatal(f"consumer: {error}") from exception
                if self._sought:
                    messages = self._drop_stale(consumer, messages)
                if messages:
                    if self.stats.first_record_at is None:
                        self.stats.first_record_at = time.monotonic()
                    self._route_batch(consumer, messages)
                    if on_batch is not None:
                        on_batch(self)
                else:
                    if self._committing is not None:
                        self._settle(consumer)
                        if on_batch is not None:
                            on_batch(self)
                    if until_idle and self._caught_up(consumer):
                        break
                now = time.monotonic()
                if now - last_progress >= self.progress_every_s:
                    self._progress(consumer, now - last_progress, progress_from)
                    last_progress = now
                    progress_from = (self.stats.records, sum(self.stats.routed.values()))
        finally:
            if self._committing is not None:
                self._settle(consumer)
        return self.stats

    def _drop_stale(self, consumer: Consumer, messages: list[Message]) -> list[Message]:
        """The messages of a ``consume()`` inside which a batch aborted, without those of
        the partitions it rewound.

        A rebalance callback (``on_revoke``) runs inside ``consume()`` and settles the
        committing batch N; when N aborts, its partitions are rewound to N's first offsets,
        but this consume() may already hold their records after N's. Routed, they would be
        committed as batch N+1 and N's records skipped for good. They are dropped, and the
        partitions sought to the rewound positions again: records fetched after the seek came
        back in this call too, and the position has moved past them."""
        sought = self._sought
        kept = [m for m in messages if m.partition() not in sought]
        if len(kept) < len(messages):
            log.info(
                "router.dropped_after_rewind",
                records=len(messages) - len(kept),
                partitions=sorted(sought),
            )
            owned = {tp.partition for tp in consumer.assignment()}
            for partition, offset in sought.items():
                if partition in owned:
                    with contextlib.suppress(KafkaException):
                        consumer.seek(TopicPartition(self._log_topic, partition, offset))
        return kept

    def _route_batch(self, consumer: Consumer, messages: list[Message]) -> None:
        """Prepare the batch, let the previous transaction finish, then produce this one."""
        owned = {tp.partition for tp in consumer.assignment()}
        records: list[Message] = []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise RouterFatal(f"consumer: {error}")
                log.warning("router.consume_error", error=str(error))
                continue
            if message.partition() in owned:
                records.append(message)
        if not records:
            return
        first: dict[int, int] = {}
        for message in records:
            first.setdefault(message.partition() or 0, message.offset() or 0)
        try:
            prepared = self._prepare(records, first)
        except KekUnavailable as unavailable:
            # As a registry that does not answer: nothing about the records is known, so the
            # batch is put back and tried again (never a dead letter of a person's event).
            ok = self._settle(consumer) if self._committing is not None else True
            self._rewind(consumer, first, keep_earlier=not ok)
            delay = min(max(1.0, 2 * self._registry_backoff_s), REGISTRY_BACKOFF_MAX_S)
            self._registry_backoff_s = delay
            log.error(
                "router.keys_misconfigured"
                if isinstance(unavailable, KeysMisconfigured)
                else "router.keys_unavailable",
                error=redact_text(str(unavailable)),
                retry_in_s=delay,
            )
            KEYS_UNAVAILABLE.inc()
            self._stop.wait(delay)
            return
        except RegistryUnavailable as unavailable:
            ok = self._settle(consumer) if self._committing is not None else True
            self._rewind(consumer, first, keep_earlier=not ok)
            # Doubling up to a minute: a registry that refuses our credentials needs an
            # operator, so the error repeats (with the retry delay) until one acts.
            delay = min(max(1.0, 2 * self._registry_backoff_s), REGISTRY_BACKOFF_MAX_S)
            self._registry_backoff_s = delay
            log.error(
                "router.registry_unavailable",
                error=redact_text(str(unavailable)),
                retry_in_s=delay,
            )
            REGISTRY_UNAVAILABLE.inc()
            self._stop.wait(delay)
            return
        self._registry_backoff_s = 0.0
        if self._committing is not None and not self._settle(consumer):
            # The previous batch aborted and was rewound; this one was prepared on its state.
            self._rewind(consumer, first, keep_earlier=True)
            return
        self._begin(consumer, prepared)

    def _prepare(self, records: list[Message], first: dict[int, int]) -> _Prepared:
        """The CPU part: every record's outcome, nothing produced yet."""
        after = self._committing.prepared.batch if self._committing is not None else None
        batch = self.states.batch(after)
        prepared = _Prepared(batch=batch, first=first, records=len(records))
        log_topic = self._log_topic
        out = prepared.out
        logged: list[LogRecord] = []
        for message in records:
            partition = message.partition() or 0
            offset = message.offset() or 0
            prepared.next_offsets[partition] = offset + 1
            logged.append(
                LogRecord(
                    log_topic, partition, offset, message.key(), message.value(), _headers(message)
                )
            )
        self.handler.route_batch(logged, batch, out, prepared.routed, prepared.dead)
        return prepared

    def _begin(self, consumer: Consumer, prepared: _Prepared) -> None:
        """Open the batch's transaction, produce it, and hand the commit to the committer."""
        producer = self._producer
        assert producer is not None
        try:
            producer.begin_transaction()
            self._in_transaction = True
            for out in prepared.out:
                self._produce(producer, out)
            metadata = consumer.consumer_group_metadata()
        except KafkaException as exception:
            self._fail(exception)
            self._rewind(consumer, prepared.first)
            return
        offsets = [TopicPartition(self._log_topic, p, o) for p, o in prepared.next_offsets.items()]
        thread = _CommitThread(lambda: self._send_and_commit(producer, offsets, metadata))
        self._committing = _Committing(prepared, thread)

    def _send_and_commit(
        self, producer: Producer, offsets: list[TopicPartition], metadata: Any
    ) -> float:
        """In the committer thread: the offsets into the transaction, then commit it; returns
        when it committed (``time.monotonic()``)."""
        producer.send_offsets_to_transaction(
            offsets, metadata, self.settings.router_transaction_timeout_s
        )
        self._commit(producer)
        return time.monotonic()

    def _settle(self, consumer: Consumer) -> bool:
        """Wait for the committing transaction; True if it committed, else it was aborted and
        its records rewound (RouterFatal when the producer cannot go on)."""
        committing = self._committing
        assert committing is not None
        self._committing = None
        try:
            committed_at = committing.thread.wait(self._settle_timeout_s)
        except TimeoutError:
            # librdkafka did not return (its own timeouts passed): the producer's state is
            # unknown, so this process ends; a fresh one aborts what is open and goes on.
            self._in_transaction = False
            self._producer_usable = False
            raise RouterFatal(
                f"the transaction did not commit or fail in {self._settle_timeout_s:.0f} s"
            ) from None
        except KafkaException as exception:
            self._fail(exception)
            self._rewind(consumer, committing.prepared.first)
            return False
        self._in_transaction = False
        prepared = committing.prepared
        prepared.batch.commit()
        stats = self.stats
        stats.last_commit_at = committed_at
        stats.records += prepared.records
        stats.transactions += 1
        stats.routed.update(prepared.routed)
        stats.dead_letters.update(prepared.dead)
        CONSUMED.inc(prepared.records)
        TRANSACTIONS.labels("committed").inc()
        for destination, count in prepared.routed.items():
            ROUTED.labels(destination).inc(count)
        for stage, count in prepared.dead.items():
            DEAD_LETTERS.labels(stage).inc(count)
        return True

    def _fail(self, exception: KafkaException) -> None:
        """A transaction failed: abort it, or RouterFatal when the error is fatal."""
        error = exception.args[0]
        if not isinstance(error, KafkaError) or error.fatal():
            self._in_transaction = False
            self._producer_usable = False
            raise RouterFatal(f"producer: {error}") from exception
        self._abort(str(error))

    def _produce(self, producer: Producer, out: OutRecord) -> None:
        try:
            headers = cast(Any, out.headers) if out.headers else None
            if out.partition is None:
                producer.produce(out.topic, out.value, out.key, headers=headers)
            else:
                producer.produce(
                    out.topic, out.value, out.key, partition=out.partition, headers=headers
                )
        except BufferError:  # the local queue is full: let librdkafka send some, then retry
            producer.poll(0.05)
            self._produce(producer, out)

    def _commit(self, producer: Producer) -> None:
        """Commit; a retriable failure (e.g. a timeout) is retried, as librdkafka asks."""
        for attempt in range(5):
            try:
                producer.commit_transaction(self.settings.router_transaction_timeout_s)
                return
            except KafkaException as exception:
                error = exception.args[0]
                if attempt == 4 or not isinstance(error, KafkaError) or not error.retriable():
                    raise
                log.warning("router.commit_retry", error=str(error), attempt=attempt + 1)

    def _abort(self, why: str) -> None:
        producer = self._producer
        assert producer is not None
        log.warning("router.batch_aborted", reason=redact_text(why))
        try:
            producer.abort_transaction(self.settings.router_transaction_timeout_s)
        except KafkaException as exception:
            error = exception.args[0]
            self._producer_usable = False
            raise RouterFatal(f"abort failed: {error}") from exception
        finally:
            self._in_transaction = False
        self.stats.aborted += 1
        TRANSACTIONS.labels("aborted").inc()

    def _rewind(
        self, consumer: Consumer, first: dict[int, int], keep_earlier: bool = False
    ) -> None:
        """Back to an aborted batch's first records: they are routed again. ``keep_earlier``:
        only partitions not rewound already (to an earlier batch's first offsets)."""
        owned = {tp.partition for tp in consumer.assignment()}
        rewound = self._rewound if keep_earlier else set()
        for partition, offset in first.items():
            if partition in owned and partition not in rewound:
                with contextlib.suppress(KafkaException):  # a partition being revoked
                    consumer.seek(TopicPartition(self._log_topic, partition, offset))
                self._sought[partition] = offset
        self._rewound = set(first) | rewound

    def _lags(self, consumer: Consumer, cached: bool) -> dict[int, int]:
        assigned = consumer.assignment()
        if not assigned:
            return {}
        positions = {tp.partition: tp.offset for tp in consumer.position(assigned)}
        lags: dict[int, int] = {}
        for tp in assigned:
            try:
                _low, high = consumer.get_watermark_offsets(tp, timeout=5, cached=cached)
            except KafkaException:
                continue
            position = positions.get(tp.partition, -1)
            if high < 0:
                continue
            if position < 0:  # nothing fetched yet: the committed offset is not known here
                position = consumer.committed([tp], timeout=5)[0].offset
                position = max(position, 0)
            lags[tp.partition] = max(high - position, 0)
        return lags

    def _caught_up(self, consumer: Consumer) -> bool:
        if not consumer.assignment():
            return False
        return all(lag == 0 for lag in self._lags(consumer, cached=False).values())

    def _progress(self, consumer: Consumer, elapsed_s: float, since: tuple[int, int]) -> None:
        lags = self._lags(consumer, cached=True)
        for partition, lag in lags.items():
            LAG.labels(str(partition)).set(lag)
        records, routed = self.stats.records - since[0], sum(self.stats.routed.values()) - since[1]
        log.info(
            "router.progress",
            records_per_s=round(records / elapsed_s, 1),
            routed_per_s=round(routed / elapsed_s, 1),
            records=self.stats.records,
            routed=dict(self.stats.routed),
            dead_letters=dict(self.stats.dead_letters),
            aborted=self.stats.aborted,
            lag=sum(lags.values()),
            partitions=sorted(lags),
        )


def _headers(message: Message) -> list[tuple[str, bytes]]:
    headers = message.headers() or []
    pairs = list(headers.items()) if isinstance(headers, dict) else headers
    return [(k, v if isinstance(v, bytes) else (v or "").encode()) for k, v in pairs]


def stop_on_signals() -> threading.Event:
    """An event SIGTERM and SIGINT set: the loop finishes its batch and leaves."""
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("router.stopping", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def router_destinations(config: RoutesConfig) -> list[str]:
    """Every destination of the routes file: each has an outbox, created at start."""
    return sorted(config.destinations)


async def ensure_router_topics(settings: HubSettings, config: RoutesConfig) -> list[str]:
    """Create the hub topics and every destination's outbox that are missing."""
    return await ensure_topics(
        settings, extra=[outbox_spec(settings, d) for d in router_destinations(config)]
    )


def run_router(
    settings: HubSettings,
    config: RoutesConfig,
    *,
    stop: threading.Event | None = None,
    until_idle: bool = False,
    batch_size: int = 500,
    progress_every_s: float = 10.0,
    create_topics: bool = True,
) -> RouterStats:
    """Create the missing topics (unless told not to), then route until stopped (or idle)."""
    if create_topics:
        asyncio.run(ensure_router_topics(settings, config))
    router = Router(settings, config, batch_size=batch_size, progress_every_s=progress_every_s)
    try:
        router.start()
        return router.run(stop or threading.Event(), until_idle=until_idle)
    finally:
        router.close()
