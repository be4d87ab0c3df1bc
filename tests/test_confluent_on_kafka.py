"""The Confluent wire format end to end on a real registry (Apicurio) and a real broker.

Register on deploy with ``hub schemas register`` (run as a person runs it), publish, read back;
and check that the Confluent ecosystem's own deserializer (confluent-kafka's
``AvroDeserializer``) reads what the hub writes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient as ConfluentRegistryClient
from confluent_kafka.schema_registry import record_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from connectors.simulator import SimulationConfig, simulate
from connectors.simulator.paths import in_time_order
from hub.identity import Pseudonymizer
from hub.inspect.tail import read_log
from hub.kafka.publisher import open_publisher
from hub.kafka.reading import read_topic
from hub.kafka.topics import ensure_topics
from hub.serde import SingleObjectSerializer, build_serializer, default_catalog
from hub.serde.registry import SubjectNotFound
from hub.settings import HubSettings
from tests.hub_process import register_schemas

pytestmark = pytest.mark.kafka


async def test_events_published_in_confluent_framing_decode_by_registry_id(
    hub_settings: HubSettings, schema_registry: str, tmp_path: Path
) -> None:
    ids = register_schemas(schema_registry, tmp_path)
    assert len(ids) == len(default_catalog().names()) == 13

    settings = hub_settings.model_copy(update={"schema_registry_url": schema_registry})
    await ensure_topics(settings)
    paths = list(simulate(SimulationConfig(jobseekers=60, seed=4), Pseudonymizer("k" * 32)))
    async with open_publisher(settings) as publisher:
        published = [event async for event, _ in publisher.publish_all(in_time_order(paths))]

    entries = [
        entry
        async for entry in read_log(
            settings,
            build_serializer(settings),
            default_catalog(),
            from_beginning=True,
            limit=None,
            follow=False,
        )
    ]
    assert [e.error for e in entries if e.error] == []
    assert {e.event["envelope"]["event_id"] for e in entries if e.event} == {
        p.envelope.event_id for p in published
    }
    for entry in entries:
        assert entry.writer_schema == str(ids[str(entry.type_name)])
        assert entry.headers["ce_dataschema"] == f"urn:avro:schema:{ids[str(entry.type_name)]}"

    # The Confluent ecosystem's deserializer reads the same records from the same bytes.
    hub_serde = build_serializer(settings)
    theirs = AvroDeserializer(
        ConfluentRegistryClient({"url": schema_registry}),
        conf={"subject.name.strategy": record_subject_name_strategy},  # the hub's subjects
    )
    context = SerializationContext(settings.topic_customer_path, MessageField.VALUE)
    compared = 0
    async for record in read_topic(settings, settings.topic_customer_path):
        ours = hub_serde.decode(record.value)
        assert theirs(record.value, context) == ours.record, ours.type_name
        compared += 1
    assert compared == len(published) > 100

    # A reader without the registry names each record's schema id and what it needs.
    plain = [
        entry
        async for entry in read_log(
            settings,
            SingleObjectSerializer(),
            default_catalog(),
            from_beginning=True,
            limit=5,
            follow=False,
        )
    ]
    assert len(plain) == 5
    writers = {(e.partition, e.offset): e.writer_schema for e in entries}
    for entry in plain:
        assert entry.event is None
        assert f"schema id {writers[entry.partition, entry.offset]}: " in str(entry.error)
        assert "HUB_SCHEMA_REGISTRY_URL" in str(entry.error)


async def test_publisher_refuses_to_start_when_schemas_are_not_registered(
    hub_settings: HubSettings, schema_registry: str
) -> None:
    settings = hub_settings.model_copy(update={"schema_registry_url": schema_registry})
    with pytest.raises(SubjectNotFound, match=r"Subject .fi\.te\.hub\.\w+. not found"):
        async with open_publisher(settings):
            pass
