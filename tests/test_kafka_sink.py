"""The Kafka sink writes each dedupe key's event once, across retries, restarts and outages."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from connectors.simulator import SimulationConfig, simulate
from hub.broker.local import LocalKafka
from hub.events import CustomerPathEvent
from hub.identity import Pseudonymizer
from hub.kafka.clients import make_producer
from hub.kafka.topics import ensure_topics
from hub.settings import HubSettings
from hub.sink import (
    EventIdTaken,
    EventNotWritable,
    IdempotencyConflict,
    Receipt,
    SinkUnavailable,
    SourcePosition,
    Submission,
)
from hub.sink.kafka import encode_receipt, open_kafka_sink
from hub.sink.receipt_store import SqliteReceipts, store_path
from tests.conftest import event_ids_in_log, hub_environment, settings_for

pytestmark = pytest.mark.kafka


def _events(count: int, seed: int = 3) -> list[CustomerPathEvent]:
    paths = simulate(SimulationConfig(jobseekers=count, seed=seed), Pseudonymizer("s" * 32))
    return [e for path in paths for e in path]


PSEUDONYMIZER = Pseudonymizer("s" * 32)


def _registrations(count: int) -> list[CustomerPathEvent]:
    """``count`` JobseekerRegistered events of different people."""
    return [e for e in _events(count) if e.event_type == "JobseekerRegistered"]


def _digest(event: CustomerPathEvent) -> str:
    """A real request digest (keyed, of the content), as the connectors compute them."""
    return PSEUDONYMIZER.keyed_digest(event.model_dump_json().encode())


def _submission(event: CustomerPathEvent, key: str | None = None) -> Submission:
    return Submission(
        dedupe_key=key or f"test:{event.envelope.event_id}",
        request_digest=_digest(event),
        event=event,
    )


def _changed(event: CustomerPathEvent, **payload: Any) -> CustomerPathEvent:
    """The same event (same id) with other content, unvalidated (as a bug or attack could)."""
    return event.model_copy(update={"payload": event.payload.model_copy(update=payload)})


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
        assert replay[0].request_digest == _digest(events[2])
    assert await event_ids_in_log(hub_settings) == Counter(e.envelope.event_id for e in events)


async def test_same_key_twice_in_one_call_writes_once(hub_settings: HubSettings) -> None:
    await ensure_topics(hub_settings)
    event = _events(1)[0]
    async with open_kafka_sink(hub_settings) as sink:
        receipts = await sink.submit([_submission(event, "k"), _submission(event, "k")])
    assert [r.duplicate for r in receipts] == [False, True]
    assert await event_ids_in_log(hub_settings) == Counter({event.envelope.event_id: 1})


async def test_a_conflict_on_kafka_writes_nothing_of_the_call(hub_settings: HubSettings) -> None:
    await ensure_topics(hub_settings)
    first, new = _registrations(2)
    async with open_kafka_sink(hub_settings) as sink:
        await sink.submit([_submission(first, "k:first")])
        changed = _submission(_changed(first, phone=None), "k:first")
        with pytest.raises(IdempotencyConflict) as raised:
            await sink.submit([_submission(new, "k:new"), changed])
        assert raised.value.indexes == (1,)
    async with open_kafka_sink(hub_settings) as restarted:  # the rule holds from the receipts
        with pytest.raises(IdempotencyConflict):
            await restarted.submit([changed, _submission(new, "k:new")])
        assert (await restarted.submit([_submission(first, "k:first")]))[0].duplicate
    assert await event_ids_in_log(hub_settings) == Counter({first.envelope.event_id: 1})


async def test_an_event_id_belongs_to_its_first_fact(hub_settings: HubSettings) -> None:
    """Another key (another client, the importer) cannot reuse an event id for another fact."""
    await ensure_topics(hub_settings)
    event, other = _registrations(2)
    async with open_kafka_sink(hub_settings) as sink:
        [original] = await sink.submit([_submission(event, "api:event-id")])
        hijack = _submission(_changed(event, first_name="Someone"), "import:event-id")
        with pytest.raises(EventIdTaken) as raised:
            await sink.submit([_submission(other, "import:other"), hijack])
        assert raised.value.indexes == (1,)
        # The same fact under another key is answered with the original: one event.
        [same] = await sink.submit([_submission(event, "import:event-id")])
        assert same.duplicate
        assert same.event_id == original.event_id
    async with open_kafka_sink(hub_settings) as restarted:
        with pytest.raises(EventIdTaken):
            await restarted.submit([hijack])
    assert await event_ids_in_log(hub_settings) == Counter({event.envelope.event_id: 1})


async def test_an_unwritable_event_fails_alone_and_the_sink_keeps_writing(
    hub_settings: HubSettings,
) -> None:
    """Submissions batched into one transaction with a bad one are written; so is the next."""
    await ensure_topics(hub_settings)
    good, bad_value, bad_header, next_one = _registrations(4)
    avro_bad = _changed(bad_value, age_at_registration="not a number")
    envelope = bad_header.envelope.model_copy(update={"source_system": "urn:x:\ud800"})
    header_bad = bad_header.model_copy(update={"envelope": envelope})
    async with open_kafka_sink(hub_settings) as sink:
        # Queued together, so the single writer takes them as one batch.
        results = await asyncio.gather(
            sink.submit([_submission(good)]),
            sink.submit([_submission(next_one, "other"), Submission("bad-1", "d1", avro_bad)]),
            sink.submit([Submission("bad-2", "d2", header_bad)]),
            return_exceptions=True,
        )
        assert not isinstance(results[0], BaseException)
        assert not results[0][0].duplicate
        assert isinstance(results[1], EventNotWritable)
        assert results[1].indexes == (1,)
        assert isinstance(results[2], EventNotWritable)
        assert results[2].indexes == (0,)
        assert "not a number" not in str(results[1])
        [written] = await sink.submit([_submission(next_one)])  # no restart needed
        assert not written.duplicate
        assert await sink.ready()
    assert await event_ids_in_log(hub_settings) == Counter(
        {good.envelope.event_id: 1, next_one.envelope.event_id: 1}
    )


async def test_receipts_are_kept_on_disk_and_a_restart_reads_only_what_is_new(
    hub_settings: HubSettings, tmp_path: Path
) -> None:
    await ensure_topics(hub_settings)
    events = _events(12)
    first, later = events[:8], events[8:]
    async with open_kafka_sink(hub_settings) as sink:
        await sink.submit([_submission(e) for e in first])
    path = store_path(hub_settings.state_dir, hub_settings.topic_ingest_receipts)
    store = SqliteReceipts(path)
    assert len(store) == len(first)
    assert sum(store.positions().values()) >= len(first)  # records and transaction markers
    store.close()
    # Another replica (own id, own state dir) writes more while this one is down.
    elsewhere = hub_settings.model_copy(
        update={"state_dir": tmp_path / "other", "ingest_transactional_id": "test-other-replica"}
    )
    async with open_kafka_sink(elsewhere) as other:
        await other.submit([_submission(e) for e in later])
    async with open_kafka_sink(hub_settings) as restarted:
        assert restarted.known_receipts == len(events)
        assert restarted._follower.records_read == len(later)  # only the new ones
        replay = await restarted.submit([_submission(e) for e in later])
        assert all(r.duplicate for r in replay)
    assert await event_ids_in_log(hub_settings) == Counter(e.envelope.event_id for e in events)


async def _fill_receipts(settings: HubSettings, count: int) -> list[Receipt]:
    """``count`` receipts written straight to the receipts topic, as years of traffic leave."""
    receipts = [
        Receipt(f"old:{i}", uuid.uuid4(), f"digest-{i}", duplicate=True) for i in range(count)
    ]
    producer = make_producer(settings, linger_ms=20)
    await producer.start()
    try:
        for receipt in receipts:
            await producer.send(
                settings.topic_ingest_receipts,
                key=receipt.dedupe_key.encode(),
                value=encode_receipt(receipt),
            )
        await producer.flush()
    finally:
        await producer.stop()
    return receipts


async def test_a_large_receipts_topic_never_livelocks_writes_after_an_outage(
    private_kafka: LocalKafka, tmp_path: Path
) -> None:
    """Reading the receipts takes longer than a write may; after a failed write the sink must
    not re-read them inside the write's timeout (every write would time out, forever)."""
    settings = settings_for(
        private_kafka.bootstrap, ingest_write_timeout_s=1, state_dir=tmp_path / "state"
    )
    await ensure_topics(settings)
    old = await _fill_receipts(settings, 150_000)
    events = _events(4)
    async with open_kafka_sink(settings) as sink:
        assert sink.known_receipts == len(old)
        await sink.submit([_submission(events[0])])
        await asyncio.to_thread(private_kafka.stop)
        with pytest.raises(SinkUnavailable):
            await sink.submit([_submission(events[1])])
        await asyncio.to_thread(private_kafka.start)
        written = None
        for _ in range(60):  # each try fails within about 1 s while Kafka comes back
            try:
                written = await sink.submit([_submission(e) for e in events[1:]])
                break
            except SinkUnavailable:
                await asyncio.sleep(0.5)
        assert written is not None, "no write got through after the outage"
        [again] = await sink.submit(
            [Submission(old[7].dedupe_key, old[7].request_digest, events[0])]
        )
        assert again.duplicate
        assert again.event_id == old[7].event_id


async def test_an_unreadable_receipt_record_does_not_stop_the_sink(
    hub_settings: HubSettings,
) -> None:
    await ensure_topics(hub_settings)
    [known] = await _fill_receipts(hub_settings, 1)
    producer = make_producer(hub_settings)
    await producer.start()
    try:
        await producer.send_and_wait(hub_settings.topic_ingest_receipts, b"{not json", key=b"x")
    finally:
        await producer.stop()
    event = _events(1)[0]
    async with open_kafka_sink(hub_settings) as sink:
        assert sink.known_receipts == 1
        [written] = await sink.submit([_submission(event)])
        assert not written.duplicate
        [again] = await sink.submit([Submission(known.dedupe_key, known.request_digest, event)])
        assert again.duplicate


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
from hub.sink.kafka import encode_receipt, open_kafka_sink
from hub.sink.receipt_store import SqliteReceipts, store_path
from hub.sink import Submission
from hub.logging import configure_logging
from hub.settings import HubSettings

async def main() -> None:
    settings = HubSettings()
    configure_logging(settings)
    pseudonymizer = Pseudonymizer("s" * 32)
    paths = simulate(SimulationConfig(jobseekers=300, seed=8), pseudonymizer)
    events = [e for path in paths for e in path]

    def digest(e):
        return pseudonymizer.keyed_digest(e.model_dump_json().encode())

    async with open_kafka_sink(settings) as sink:
        for start in range(0, len(events), 20):
            chunk = events[start:start + 20]
            await sink.submit(
                [Submission(f"w:{e.envelope.event_id}", digest(e), e) for e in chunk]
            )
            print(start + len(chunk), flush=True)

asyncio.run(main())
"""


async def test_writer_killed_mid_load_then_retried_writes_every_event_once(
    hub_settings: HubSettings, tmp_path: Path
) -> None:
    """The sender's view of a crash: no answer for some submissions, so it retries them all."""
    await ensure_topics(hub_settings)
    env = hub_environment(
        hub_settings, HUB_STATE_DIR=str(tmp_path / "writer-state"), HUB_LOG_LEVEL="WARNING"
    )
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
            [Submission(f"w:{e.envelope.event_id}", _digest(e), e) for e in events]
        )
    assert 600 <= committed_before_crash < len(events)
    assert sum(r.duplicate for r in receipts) == committed_before_crash
    assert await event_ids_in_log(hub_settings) == Counter(e.envelope.event_id for e in events)
