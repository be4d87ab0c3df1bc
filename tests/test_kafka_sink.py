"""The Kafka sink writes each dedupe key's event once, across retries, restarts and outages."""

from __future__ import annotations

import asyncio
import os
import sys
from collections import Counter
from pathlib import Path

import pytest

from connectors.simulator import SimulationConfig, simulate
from hub.broker.local import LocalKafka
from hub.events import CustomerPathEvent
from hub.identity import Pseudonymizer
from hub.kafka.topics import ensure_topics
from hub.settings import HubSettings
from hub.sink import SinkUnavailable, SourcePosition, Submission
from hub.sink.kafka import open_kafka_sink
from tests.conftest import event_ids_in_log, settings_for

pytestmark = pytest.mark.kafka


def _events(count: int, seed: int = 3) -> list[CustomerPathEvent]:
    paths = simulate(SimulationConfig(jobseekers=count, seed=seed), Pseudonymizer("s" * 32))
    return [e for path in paths for e in path]


def _submission(event: CustomerPathEvent, key: str | None = None) -> Submission:
    return Submission(
        dedupe_key=key or f"test:{event.envelope.event_id}",
        request_digest=f"digest-{event.envelope.event_id}",
        event=event,
    )


async def test_duplicates_are_answered_from_receipts_also_after_a_restart(
    hub_settings: HubSettings,
) -> None:
    await ensure_topics(hub_settings)
    events = _events(5)
    async with open_kafka_sink(hub_settings) as sink:
        first = await sink.submit([_submission(e) for e in events])
        assert not any(r.duplicate for r in first)
        again = await sink.submit([_submission(events[0]), _submission(events[1])])
        assert [r.duplicate for r in again] == [True, True]
        assert [r.event_id for r in again] == [first[0].event_id, first[1].event_id]
    async with open_kafka_sink(hub_settings) as restarted:
        assert restarted.known_receipts == len(events)
        replay = await restarted.submit([_submission(events[2])])
        assert replay[0].duplicate
        assert replay[0].request_digest == f"digest-{events[2].envelope.event_id}"
    assert await event_ids_in_log(hub_settings) == Counter(e.envelope.event_id for e in events)


async def test_same_key_twice_in_one_call_writes_once(hub_settings: HubSettings) -> None:
    await ensure_topics(hub_settings)
    event = _events(1)[0]
    async with open_kafka_sink(hub_settings) as sink:
        receipts = await sink.submit([_submission(event, "k"), _submission(event, "k")])
    assert [r.duplicate for r in receipts] == [False, True]
    assert await event_ids_in_log(hub_settings) == Counter({event.envelope.event_id: 1})


async def test_source_position_commits_with_the_events_and_alone(
    hub_settings: HubSettings,
) -> None:
    await ensure_topics(hub_settings)
    events = _events(3)
    async with open_kafka_sink(hub_settings) as sink:
        assert await sink.position_of("poller:a") is None
        await sink.submit([_submission(events[0])], SourcePosition("poller:a", "cursor-1"))
        await sink.submit([], SourcePosition("poller:b", "b-1"))
        # Known keys write no event, but the position still moves.
        await sink.submit([_submission(events[0])], SourcePosition("poller:a", "cursor-2"))
        assert await sink.position_of("poller:a") == "cursor-2"
    async with open_kafka_sink(hub_settings) as restarted:
        assert await restarted.position_of("poller:a") == "cursor-2"
        assert await restarted.position_of("poller:b") == "b-1"
        assert await restarted.position_of("poller:c") is None
    assert await event_ids_in_log(hub_settings) == Counter({events[0].envelope.event_id: 1})


async def test_unavailable_while_kafka_is_down_then_writes_after_restart(
    private_kafka: LocalKafka,
) -> None:
    settings = settings_for(private_kafka.bootstrap, ingest_write_timeout_s=3)
    await ensure_topics(settings)
    events = _events(6)
    async with open_kafka_sink(settings) as sink:
        await sink.submit([_submission(events[0])])
        private_kafka.stop()
        assert not await sink.ready()
        with pytest.raises(SinkUnavailable, match="nothing was written") as raised:
            await sink.submit([_submission(events[1])])
        assert raised.value.retry_after_s >= 1
        private_kafka.start()
        assert await sink.ready()
        receipts = await sink.submit([_submission(e) for e in events[1:]])
        assert not any(r.duplicate for r in receipts)
    expected = Counter(e.envelope.event_id for e in events)
    # A transaction the outage left open hides later records from read_committed readers until
    # the coordinator aborts it (transaction timeout): visibility may lag, duplicates never.
    for _ in range(40):
        seen = await event_ids_in_log(settings)
        assert max(seen.values()) == 1
        if seen == expected:
            break
        await asyncio.sleep(1)
    assert seen == expected


WRITER = """
import asyncio, sys
from connectors.simulator import SimulationConfig, simulate
from hub.identity import Pseudonymizer
from hub.sink.kafka import open_kafka_sink
from hub.sink import Submission
from hub.logging import configure_logging
from hub.settings import HubSettings

async def main() -> None:
    settings = HubSettings()
    configure_logging(settings)
    paths = simulate(SimulationConfig(jobseekers=300, seed=8), Pseudonymizer("s" * 32))
    events = [e for path in paths for e in path]
    async with open_kafka_sink(settings) as sink:
        for start in range(0, len(events), 20):
            chunk = events[start:start + 20]
            await sink.submit(
                [Submission(f"w:{e.envelope.event_id}", "d", e) for e in chunk]
            )
            print(start + len(chunk), flush=True)

asyncio.run(main())
"""


async def test_writer_killed_mid_load_then_retried_writes_every_event_once(
    hub_settings: HubSettings, tmp_path: Path
) -> None:
    """The sender's view of a crash: no answer for some submissions, so it retries them all."""
    await ensure_topics(hub_settings)
    env = {
        **os.environ,
        "HUB_KAFKA_BOOTSTRAP": hub_settings.kafka_bootstrap,
        "HUB_TOPIC_CUSTOMER_PATH": hub_settings.topic_customer_path,
        "HUB_TOPIC_INGEST_RECEIPTS": hub_settings.topic_ingest_receipts,
        "HUB_TOPIC_SOURCE_POSITIONS": hub_settings.topic_source_positions,
        "HUB_INGEST_TRANSACTIONAL_ID": hub_settings.ingest_transactional_id,
        "HUB_LOG_LEVEL": "WARNING",
    }
    writer = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WRITER, env=env, stdout=asyncio.subprocess.PIPE
    )
    assert writer.stdout is not None
    async for line in writer.stdout:
        if int(line) >= 600:
            writer.kill()  # SIGKILL: no clean shutdown, a transaction may be open
            break
    await writer.wait()

    events = _events(300, seed=8)
    async with open_kafka_sink(hub_settings) as sink:
        committed_before_crash = sink.known_receipts
        receipts = await sink.submit(
            [Submission(f"w:{e.envelope.event_id}", "d", e) for e in events]
        )
    assert 600 <= committed_before_crash < len(events)
    assert sum(r.duplicate for r in receipts) == committed_before_crash
    assert await event_ids_in_log(hub_settings) == Counter(e.envelope.event_id for e in events)
