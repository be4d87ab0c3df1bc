"""Publish customer-path events: Avro value, pseudonym key, CloudEvents headers, acks=all.

A publish is complete only when the broker acknowledged it; callers count an event as
published only then. Keying by the person pseudonym puts every event of one person on one
partition, in order (the idempotent producer keeps that order across retries).

Every personal field is sealed with the person's data key before it is encoded
(:func:`encode_event` with ``data_key``; :mod:`hub.sink.sealing`): :class:`EventPublisher`
gets the keys of each window of events in one call and never sends an event unsealed.
``encode_event`` without a key writes plaintext: only tests and tools that write the records
of before field encryption (which readers still read) call it so.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from functools import cache
from itertools import islice
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata

from hub.events import CustomerPathEvent
from hub.kafka.clients import make_producer
from hub.privacy.fields import SealedFields
from hub.privacy.sealing import DataKey
from hub.serde import ConfluentSerializer, EventSerializer, build_serializer, cloudevent_headers
from hub.settings import HubSettings
from hub.sink.sealing import (
    KeysRefused,
    KeysUnavailable,
    PersonKeys,
    ensure_keys,
    key_of,
    start_person_keys,
)

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class EncodedEvent:
    """An event as its Kafka record: pseudonym key, Avro value, CloudEvents headers."""

    key: bytes
    value: bytes
    headers: Sequence[tuple[str, bytes]]


@cache
def default_sealed_fields() -> SealedFields:
    """The personal fields of the shipped schemas (built once per process)."""
    return SealedFields()


def sealed_record(
    event: CustomerPathEvent, data_key: DataKey, fields: SealedFields | None = None
) -> dict[str, Any]:
    """The event's Avro record with every personal value sealed with ``data_key``.

    The key must be the key of the event's own subject (ValueError otherwise): a value is
    never sealed under another person's key.
    """
    if data_key.subject != event.envelope.subject:
        raise ValueError("the data key given is not the key of the event's person")
    return (fields or default_sealed_fields()).seal(event.full_name(), event.to_avro(), data_key)


def encode_event(
    serializer: EventSerializer,
    event: CustomerPathEvent,
    data_key: DataKey | None,
    fields: SealedFields | None = None,
) -> EncodedEvent:
    """The event's Kafka record; raises SerdeError (or ValueError) for an unwritable event.

    With ``data_key`` (the key of the event's subject) every personal field is sealed; ``None``
    writes plaintext, as before field encryption: never a default, so only a test or tool that
    means to write an old-style record says so. Separate from sending so a transactional writer
    encodes first.
    """
    envelope = event.envelope
    record = event.to_avro() if data_key is None else sealed_record(event, data_key, fields)
    value = serializer.encode(event.full_name(), record)
    extensions = {"correlationid": str(envelope.correlation_id)}
    if envelope.causation_id is not None:
        extensions["causationid"] = str(envelope.causation_id)
    headers = cloudevent_headers(
        event_id=str(envelope.event_id),
        event_type=event.full_name(),
        source=envelope.source_system,
        subject=envelope.subject,
        time=envelope.occurred_at,
        content_type=serializer.content_type,
        # The writer schema: CRC-64-AVRO fingerprint (hex) or registry id.
        dataschema=f"urn:avro:schema:{serializer.schema_ref(event.full_name())}",
        extensions=extensions,
    )
    return EncodedEvent(envelope.subject.encode(), value, headers)


class EventPublisher:
    """Sends events with their personal fields sealed by the keys of ``person_keys``."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        serializer: EventSerializer,
        topic: str,
        person_keys: PersonKeys,
        keys_timeout_s: float = 30.0,
    ) -> None:
        self._producer = producer
        self._serializer = serializer
        self._topic = topic
        self._person_keys = person_keys
        self._keys_timeout_s = keys_timeout_s

    async def keys_for(self, events: Sequence[CustomerPathEvent]) -> dict[str, DataKey]:
        """The data keys of the events' persons, in one call; asked again while the key store
        does not answer (a broker restarting: the producer waits for it too) until
        ``keys_timeout_s`` has passed, then KeysUnavailable. Nothing is sent meanwhile."""
        subjects = list(dict.fromkeys(e.envelope.subject for e in events))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._keys_timeout_s
        while True:
            left = deadline - loop.time()
            try:
                return await ensure_keys(self._person_keys, subjects, max(1.0, left))
            except KeysUnavailable as exc:
                if loop.time() + 1.0 >= deadline or isinstance(exc, KeysRefused):
                    raise
                log.warning("publisher.keys_retried", persons=len(subjects))
                await asyncio.sleep(1.0)

    async def send(self, record: EncodedEvent) -> asyncio.Future[RecordMetadata]:
        """Hand an encoded event to the producer; the future resolves on the broker's ack."""
        future: asyncio.Future[RecordMetadata] = await self._producer.send(
            self._topic, value=record.value, key=record.key, headers=list(record.headers)
        )
        return future

    async def enqueue(
        self, event: CustomerPathEvent, keys: dict[str, DataKey] | None = None
    ) -> asyncio.Future[RecordMetadata]:
        """Seal, encode and hand the event to the producer; the future resolves on the ack.

        ``keys``: the data keys already had for its person (else they are asked for).
        """
        keys = keys if keys is not None else await self.keys_for([event])
        key = key_of(keys, event.envelope.subject)
        return await self.send(encode_event(self._serializer, event, key))

    async def publish(self, event: CustomerPathEvent) -> RecordMetadata:
        """Publish one event and wait for the acknowledgement of all in-sync replicas."""
        metadata = await (await self.enqueue(event))
        _log_ack(event, metadata)
        return metadata

    async def publish_all(
        self, events: Iterable[CustomerPathEvent], window: int = 2000
    ) -> AsyncIterator[tuple[CustomerPathEvent, RecordMetadata]]:
        """Publish many events with at most ``window`` unacknowledged; yield each on its ack.

        The data keys of each window's persons are had in one call before any of it is sent.
        """
        iterator = iter(events)
        while chunk := list(islice(iterator, window)):
            keys = await self.keys_for(chunk)
            pending = [(event, await self.enqueue(event, keys)) for event in chunk]
            for done_event, future in pending:
                yield done_event, _log_ack(done_event, await future)


def _log_ack(event: CustomerPathEvent, metadata: RecordMetadata) -> RecordMetadata:
    log.debug(
        "event published",
        event_id=str(event.envelope.event_id),
        correlation_id=str(event.envelope.correlation_id),
        event_type=event.event_type,
        partition=metadata.partition,
        offset=metadata.offset,
    )
    return metadata


@asynccontextmanager
async def open_publisher(
    settings: HubSettings,
    serializer: EventSerializer | None = None,
    person_keys: PersonKeys | None = None,
) -> AsyncIterator[EventPublisher]:
    """A publisher on the log; it follows the person-keys topic itself unless given
    ``person_keys`` (started and closed with it)."""
    serializer = serializer or build_serializer(settings)
    if isinstance(serializer, ConfluentSerializer):
        # Fail before publishing anything when the schemas were not registered on deploy.
        await serializer.aprepare()
    async with AsyncExitStack() as stack:
        if person_keys is None:
            person_keys = await stack.enter_async_context(started_person_keys(settings))
        producer = make_producer(settings)
        await producer.start()
        stack.push_async_callback(producer.stop)
        yield EventPublisher(
            producer,
            serializer,
            settings.topic_customer_path,
            person_keys,
            # As patient as the producer (delivery.timeout of aiokafka: 120 s by default).
            keys_timeout_s=120.0,
        )


@asynccontextmanager
async def started_person_keys(settings: HubSettings) -> AsyncIterator[PersonKeys]:
    """The person-keys topic of ``settings`` followed (KafkaPersonKeys), closed afterwards."""
    keys = await start_person_keys(settings)
    try:
        yield keys
    finally:
        await asyncio.to_thread(keys.close)
