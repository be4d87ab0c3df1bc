"""Publish customer-path events: Avro value, pseudonym key, CloudEvents headers, acks=all.

A publish is complete only when the broker acknowledged it; callers count an event as
published only then. Keying by the person pseudonym puts every event of one person on one
partition, in order (the idempotent producer keeps that order across retries).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata

from hub.events import CustomerPathEvent
from hub.kafka.clients import make_producer
from hub.serde import ConfluentSerializer, EventSerializer, build_serializer, cloudevent_headers
from hub.settings import HubSettings

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class EncodedEvent:
    """An event as its Kafka record: pseudonym key, Avro value, CloudEvents headers."""

    key: bytes
    value: bytes
    headers: Sequence[tuple[str, bytes]]


def encode_event(serializer: EventSerializer, event: CustomerPathEvent) -> EncodedEvent:
    """The event's Kafka record; raises SerdeError (or ValueError) for an unwritable event.

    Separate from sending so that a transactional writer encodes before it begins.
    """
    envelope = event.envelope
    value = serializer.encode(event.full_name(), event.to_avro())
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
    def __init__(self, producer: AIOKafkaProducer, serializer: EventSerializer, topic: str) -> None:
        self._producer = producer
        self._serializer = serializer
        self._topic = topic

    async def send(self, record: EncodedEvent) -> asyncio.Future[RecordMetadata]:
        """Hand an encoded event to the producer; the future resolves on the broker's ack."""
        future: asyncio.Future[RecordMetadata] = await self._producer.send(
            self._topic, value=record.value, key=record.key, headers=list(record.headers)
        )
        return future

    async def enqueue(self, event: CustomerPathEvent) -> asyncio.Future[RecordMetadata]:
        """Hand the event to the producer; the returned future resolves on the broker's ack."""
        return await self.send(encode_event(self._serializer, event))

    async def publish(self, event: CustomerPathEvent) -> RecordMetadata:
        """Publish one event and wait for the acknowledgement of all in-sync replicas."""
        metadata = await (await self.enqueue(event))
        _log_ack(event, metadata)
        return metadata

    async def publish_all(
        self, events: Iterable[CustomerPathEvent], window: int = 2000
    ) -> AsyncIterator[tuple[CustomerPathEvent, RecordMetadata]]:
        """Publish many events with at most ``window`` unacknowledged; yield each on its ack."""
        pending: list[tuple[CustomerPathEvent, asyncio.Future[RecordMetadata]]] = []
        for event in events:
            pending.append((event, await self.enqueue(event)))
            if len(pending) >= window:
                for done_event, future in pending:
                    yield done_event, _log_ack(done_event, await future)
                pending.clear()
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
    settings: HubSettings, serializer: EventSerializer | None = None
) -> AsyncIterator[EventPublisher]:
    serializer = serializer or build_serializer(settings)
    if isinstance(serializer, ConfluentSerializer):
        # Fail before publishing anything when the schemas were not registered on deploy.
        await serializer.aprepare()
    producer = make_producer(settings)
    await producer.start()
    try:
        yield EventPublisher(producer, serializer, settings.topic_customer_path)
    finally:
        await producer.stop()
