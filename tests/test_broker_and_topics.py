"""The hub's topics and delivery guarantees on a real Kafka broker."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import defaultdict

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from hub.broker.local import LocalKafka
from hub.kafka.clients import make_consumer, make_producer
from hub.kafka.topics import (
    DEAD_LETTER_RETENTION_MS,
    TopicMismatchError,
    describe_topics,
    ensure_topics,
)
from hub.settings import HubSettings

pytestmark = pytest.mark.kafka


async def test_ensure_topics_creates_documented_topics(hub_settings: HubSettings) -> None:
    created = await ensure_topics(hub_settings)

    assert hub_settings.topic_customer_path in created
    topics = {t.name: t for t in await describe_topics(hub_settings)}
    log = topics[hub_settings.topic_customer_path]
    assert log.partitions == hub_settings.topic_partitions
    assert log.replication_factor == 1
    assert log.configs["retention.ms"] == "-1"
    assert log.configs["retention.bytes"] == "-1"
    assert log.configs["cleanup.policy"] == "delete"
    assert log.configs["min.insync.replicas"] == "1"
    assert log.configs["message.timestamp.type"] == "CreateTime"
    dead_letters = topics[hub_settings.topic_dead_letter]
    assert dead_letters.configs["retention.ms"] == str(DEAD_LETTER_RETENTION_MS)


async def test_ensure_topics_is_idempotent(hub_settings: HubSettings) -> None:
    await ensure_topics(hub_settings)

    assert await ensure_topics(hub_settings) == []


async def test_ensure_topics_refuses_topic_with_fewer_partitions(
    hub_settings: HubSettings,
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=hub_settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(hub_settings.topic_customer_path, 2, 1)])
    finally:
        await admin.close()

    with pytest.raises(TopicMismatchError, match="2 partitions"):
        await ensure_topics(hub_settings)


async def test_round_trip_keeps_per_key_order_across_partitions(
    hub_settings: HubSettings,
) -> None:
    await ensure_topics(hub_settings)
    topic = hub_settings.topic_customer_path
    keys = [f"person-{n:02d}" for n in range(24)]
    records = 480

    producer = make_producer(hub_settings)
    await producer.start()
    try:
        sends = [
            await producer.send(
                topic,
                key=keys[i % len(keys)].encode(),
                value=json.dumps({"seq": i}).encode(),
            )
            for i in range(records)
        ]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()

    consumer = make_consumer(hub_settings, topic, group_id=f"test-{uuid.uuid4().hex[:8]}")
    await consumer.start()
    seen: dict[str, list[int]] = defaultdict(list)
    partitions: dict[str, set[int]] = defaultdict(set)
    try:
        async with asyncio.timeout(30):
            received = 0
            while received < records:
                batches = await consumer.getmany(timeout_ms=1000)
                for partition, messages in batches.items():
                    for message in messages:
                        key = message.key.decode()
                        seen[key].append(json.loads(message.value)["seq"])
                        partitions[key].add(partition.partition)
                        received += 1
    finally:
        await consumer.stop()

    assert received == records
    for key in keys:
        assert seen[key] == sorted(seen[key]), f"{key} out of order"
        assert len(seen[key]) == records // len(keys)
        assert len(partitions[key]) == 1, f"{key} spread over partitions"
    assert len({p for ps in partitions.values() for p in ps}) > 1


def test_local_broker_reports_running(private_kafka: LocalKafka) -> None:
    status = private_kafka.status()

    assert status.running
    assert status.answering
    assert status.pid is not None
    assert status.bootstrap == private_kafka.bootstrap
    assert status.version == private_kafka.version
