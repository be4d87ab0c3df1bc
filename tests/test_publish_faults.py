"""Publishing through a broker crash: every acknowledged event is in the log exactly once.

The broker is killed (SIGKILL, no controlled shutdown) while the publisher has thousands of
events in flight, then started again on the same data. The idempotent acks=all producer must
retry what was not acknowledged, write nothing twice and keep each person's order.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from uuid import UUID

import pytest

from connectors.simulator import SimulationConfig, simulate
from connectors.simulator.paths import in_time_order
from hub.broker.local import LocalKafka
from hub.identity import Pseudonymizer
from hub.kafka.publisher import open_publisher
from hub.kafka.reading import read_topic
from hub.kafka.topics import ensure_topics
from hub.serde import SingleObjectSerializer
from hub.settings import HubSettings
from tests.conftest import settings_for

pytestmark = pytest.mark.kafka


def _crash_and_restart(kafka: LocalKafka, acked: list[UUID], acked_at_crash: list[int]) -> None:
    assert kafka.kill()
    acked_at_crash.append(len(acked))
    kafka.start(timeout_s=120)


async def _log_contents(settings: HubSettings) -> list[tuple[str, UUID]]:
    """(key, event id) of every record, partition by partition in offset order."""
    serializer = SingleObjectSerializer()
    contents: dict[int, list[tuple[str, UUID]]] = defaultdict(list)
    async for record in read_topic(settings, settings.topic_customer_path):
        event_id = serializer.decode(record.value).record["envelope"]["event_id"]
        contents[record.partition].append((record.key.decode(), event_id))
    return [item for partition in sorted(contents) for item in contents[partition]]


async def test_publisher_survives_a_broker_crash_without_loss_or_duplicates(
    private_kafka: LocalKafka, tmp_path: object
) -> None:
    settings = settings_for(private_kafka.bootstrap, partitions=6)
    await ensure_topics(settings)
    paths = list(simulate(SimulationConfig(jobseekers=400, seed=21), Pseudonymizer("x" * 32)))
    expected_order = {
        path[0].envelope.subject: [e.envelope.event_id for e in path] for path in paths
    }
    total = sum(len(path) for path in paths)

    acked: list[UUID] = []
    acked_at_crash: list[int] = []
    restart: asyncio.Task[None] | None = None
    async with open_publisher(settings) as publisher:
        async for event, _metadata in publisher.publish_all(in_time_order(paths), window=500):
            acked.append(event.envelope.event_id)
            if len(acked) == total // 3:
                restart = asyncio.create_task(
                    asyncio.to_thread(_crash_and_restart, private_kafka, acked, acked_at_crash)
                )
    assert restart is not None
    await restart

    assert len(acked) == total
    assert acked_at_crash[0] < total * 2 // 3, "the crash must hit while events are in flight"
    log = await _log_contents(settings)
    counts = Counter(event_id for _, event_id in log)
    assert [event_id for event_id, n in counts.items() if n > 1] == []
    assert set(counts) == set(acked)
    by_key: dict[str, list[UUID]] = defaultdict(list)
    for key, event_id in log:
        by_key[key].append(event_id)
    assert by_key == expected_order
