"""The Confluent ecosystem's own client (confluent-kafka) and the hub speak the same bytes.

Against the real registry (Apicurio): for every event type, what the hub's ConfluentSerializer
writes, confluent-kafka's ``AvroDeserializer`` reads to the same fields; and what confluent-kafka's
``AvroSerializer`` writes under the hub's subjects (record names), the hub reads back.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient as ConfluentRegistryClient
from confluent_kafka.schema_registry import record_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from hub.serde import ConfluentSerializer, SchemaRegistryClient, default_catalog, register_all
from hub.serde.fake import fake_record

CONTEXT = SerializationContext("te.customer-path", MessageField.VALUE)
# How a Confluent client is configured for the hub's subjects (one per record name).
RECORD_NAMES = {"subject.name.strategy": record_subject_name_strategy}


@pytest.fixture
def registered(schema_registry: str) -> Iterator[tuple[ConfluentSerializer, dict[str, int]]]:
    """The hub's Confluent serializer with every current schema registered as on deploy."""
    with SchemaRegistryClient(schema_registry) as client:
        ids = register_all(default_catalog(), client)
        serde = ConfluentSerializer(client)
        serde.prepare()
        yield serde, ids


def samples(name: str, count: int = 5) -> list[dict[str, Any]]:
    """Random records that fit the current schema of ``name`` (every branch gets a turn)."""
    schema = default_catalog().current(name).parsed
    rng = random.Random(name)
    return [fake_record(schema, rng) for _ in range(count)]


def test_confluent_kafka_reads_what_the_hub_writes(
    schema_registry: str, registered: tuple[ConfluentSerializer, dict[str, int]]
) -> None:
    serde, ids = registered
    theirs = AvroDeserializer(ConfluentRegistryClient({"url": schema_registry}), conf=RECORD_NAMES)
    for name in default_catalog().names():
        for record in samples(name):
            data = serde.encode(name, record)
            assert int.from_bytes(data[1:5], "big") == ids[name]
            assert theirs(data, CONTEXT) == record == serde.decode(data).record, name


def test_the_hub_reads_what_confluent_kafka_writes(
    schema_registry: str, registered: tuple[ConfluentSerializer, dict[str, int]]
) -> None:
    serde, ids = registered
    client = ConfluentRegistryClient({"url": schema_registry})
    conf = {"auto.register.schemas": False, **RECORD_NAMES}
    for name in default_catalog().names():
        theirs = AvroSerializer(client, default_catalog().current(name).json, conf=conf)
        for record in samples(name):
            data = theirs(record, CONTEXT)
            assert data is not None
            assert data[:1] == b"\x00"
            assert int.from_bytes(data[1:5], "big") == ids[name], name  # the hub's subject
            decoded = serde.decode(data)
            assert decoded.type_name == name
            assert decoded.record == record
