"""``hub archive`` on a real broker, into real files: layout, readers, poison, crashes, reruns.

Expected contents are computed here from what the test produced (each record's partition and
offset as the broker acknowledged it), never from the archiver.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import avro.datafile
import avro.io
import fastavro
import pytest
from aiokafka import TopicPartition
from aiokafka.admin import RecordsToDelete

from connectors.simulator import SimulationConfig, simulate
from connectors.simulator.paths import in_time_order
from hub.events import CustomerPathEvent
from hub.identity import Pseudonymizer
from hub.kafka.clients import make_admin, make_consumer, make_producer
from hub.kafka.publisher import encode_event
from hub.kafka.topics import ensure_topics
from hub.reporting.archive import (
    RECORD_NAME,
    ArchiveError,
    Archiver,
    RollPolicy,
    iter_archive,
    list_archive,
)
from hub.serde import SingleObjectSerializer
from hub.settings import HubSettings
from tests.conftest import REPO_ROOT, SIMULATION_SECRET, hub_environment, settings_for

pytestmark = pytest.mark.kafka

PARTITIONS = 3
DAY1 = datetime(2026, 1, 4, 23, 59, 0, tzinfo=UTC)
DAY2 = datetime(2026, 1, 5, 0, 0, 1, tzinfo=UTC)
POISON = b"not an avro value at all"
CONFLUENT_VALUE = b"\x00\x00\x00\x00\x07" + b"\x02abc"  # registry id 7, no registry configured


def _settings(bootstrap: str, tmp_path: Path, **overrides: Any) -> HubSettings:
    return settings_for(
        bootstrap,
        partitions=PARTITIONS,
        state_dir=tmp_path / "hub-state",
        archive_dir=tmp_path / "archive",
        archive_group=f"test-archive-{uuid.uuid4().hex[:8]}",
        **overrides,
    )


def _events(jobseekers: int, seed: int) -> list[CustomerPathEvent]:
    config = SimulationConfig(jobseekers=jobseekers, seed=seed)
    return list(in_time_order(list(simulate(config, Pseudonymizer(SIMULATION_SECRET)))))


Produced = dict[tuple[int, int], dict[str, Any]]
"""(partition, offset) → what the test sent there: event id (or raw value), timestamp."""


async def _produce(
    settings: HubSettings,
    events: list[CustomerPathEvent],
    *,
    timestamps: list[datetime] | None = None,
    raw: list[tuple[bytes, bytes, datetime]] = (),  # type: ignore[assignment]
    pause_every: int = 0,
    pause_s: float = 0.0,
    until: asyncio.Event | None = None,
) -> Produced:
    """Send ``events`` (then ``raw``), pausing ``pause_s`` after every ``pause_every``; stop
    early once ``until`` is set."""
    serializer = SingleObjectSerializer()
    produced: Produced = {}
    producer = make_producer(settings)
    await producer.start()
    try:
        for index, event in enumerate(events):
            encoded = encode_event(serializer, event, None)
            moment = timestamps[index] if timestamps else None
            meta = await producer.send_and_wait(
                settings.topic_customer_path,
                encoded.value,
                key=encoded.key,
                headers=list(encoded.headers),
                timestamp_ms=None if moment is None else int(moment.timestamp() * 1000),
            )
            produced[(meta.partition, meta.offset)] = {
                "event_id": event.envelope.event_id,
                "timestamp": meta.timestamp,
            }
            if pause_every and index % pause_every == pause_every - 1:
                await asyncio.sleep(pause_s)
            if until is not None and until.is_set():
                break
        for key, value, moment in raw:
            meta = await producer.send_and_wait(
                settings.topic_customer_path,
                value,
                key=key,
                timestamp_ms=int(moment.timestamp() * 1000),
            )
            produced[(meta.partition, meta.offset)] = {"raw": value, "timestamp": meta.timestamp}
    finally:
        await producer.stop()
    return produced


async def _committed(settings: HubSettings) -> dict[int, int | None]:
    consumer = make_consumer(settings, group_id=settings.archive_group)
    await consumer.start()
    try:
        return {
            p: await consumer.committed(TopicPartition(settings.topic_customer_path, p))
            for p in range(PARTITIONS)
        }
    finally:
        await consumer.stop()


def _end_offsets(produced: Produced) -> dict[int, int]:
    ends = {p: 0 for p in range(PARTITIONS)}
    for partition, offset in produced:
        ends[partition] = max(ends[partition], offset + 1)
    return ends


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


@pytest.mark.parametrize("codec", ["zstandard", "deflate"])
async def test_archive_layout_readers_poison_and_rerun(
    kafka_bootstrap: str, tmp_path: Path, codec: str
) -> None:
    settings = _settings(kafka_bootstrap, tmp_path, archive_codec=codec)
    await ensure_topics(settings)
    events = _events(12, seed=3)
    half = len(events) // 2
    stamps = [DAY1] * half + [DAY2] * (len(events) - half)
    produced = await _produce(
        settings,
        events,
        timestamps=stamps,
        raw=[(b"poison-key", POISON, DAY2), (b"confluent-key", CONFLUENT_VALUE, DAY2)],
    )

    stats = await Archiver(settings, progress_every_s=0.5).run(once=True)
    assert stats.records == len(produced)
    assert stats.poison == 2

    # The Hive layout: one file per day and partition, named by its first offset.
    topic_root = settings.archive_dir / settings.topic_customer_path
    expected_files: dict[str, list[tuple[int, int]]] = {}
    for (partition, offset), sent in sorted(produced.items()):
        day = datetime.fromtimestamp(sent["timestamp"] / 1000, UTC).date()
        expected_files.setdefault(f"{day}/{partition}", []).append((partition, offset))
    names = {
        f"date={key.split('/')[0]}/part-{offs[0][0]}-{offs[0][1]}.avro"
        for key, offs in expected_files.items()
    }
    found = {str(p.relative_to(topic_root)) for p in topic_root.rglob("*.avro")}
    assert found == names
    assert {p.name for p in topic_root.rglob("*") if p.name.endswith(".tmp")} == set()

    # fastavro and the Apache avro package read every file as it is, schema embedded.
    seen_fastavro: list[tuple[int, int]] = []
    seen_avro: list[tuple[int, int]] = []
    for path in sorted(topic_root.rglob("*.avro")):
        with path.open("rb") as fo:
            records = fastavro.reader(fo)
            assert records.metadata["avro.codec"] == codec
            assert cast(dict[str, Any], records.writer_schema)["name"] == RECORD_NAME
            rows = [cast(dict[str, Any], r) for r in records]
        match = re.match(r"part-(\d+)-(\d+)\.avro", path.name)
        assert match is not None
        assert (rows[0]["partition"], rows[0]["offset"]) == (
            int(match.group(1)),
            int(match.group(2)),
        )
        seen_fastavro += [(r["partition"], r["offset"]) for r in rows]
        with avro.datafile.DataFileReader(path.open("rb"), avro.io.DatumReader()) as reader:
            assert reader.get_meta("avro.codec") == codec.encode()
            seen_avro += [(r["partition"], r["offset"]) for r in reader]  # type: ignore[index]
    assert sorted(seen_fastavro) == sorted(produced)
    assert sorted(seen_avro) == sorted(produced)

    # The reader API: every record once, in offset order per partition, poison kept raw.
    archived = list(iter_archive(settings.archive_dir, settings.topic_customer_path))
    assert [(a.partition, a.offset) for a in archived] == sorted(produced)
    for item in archived:
        sent = produced[(item.partition, item.offset)]
        assert int(item.timestamp.timestamp() * 1000) == sent["timestamp"]
        if "raw" in sent:
            assert item.record is None
            assert item.type_name is None
            assert item.raw == sent["raw"]
        else:
            assert item.raw is None
            assert item.record is not None
            assert item.record["envelope"]["event_id"] == sent["event_id"]
            assert item.type_name == item.record["envelope"]["event_type"]
            assert item.headers["ce_id"] == str(sent["event_id"]).encode()
    event_ids = Counter(a.record["envelope"]["event_id"] for a in archived if a.record)
    assert event_ids == Counter(e.envelope.event_id for e in events)

    listed = list_archive(settings.archive_dir, settings.topic_customer_path)
    assert sum(f.records for f in listed) == len(produced)
    for f in listed:
        offsets = [o for (p, o), s in produced.items() if p == f.partition]
        in_file = [
            o
            for o in offsets
            if datetime.fromtimestamp(produced[(f.partition, o)]["timestamp"] / 1000, UTC).date()
            == f.day
        ]
        assert (f.first_offset, f.last_offset) == (min(in_file), max(in_file))

    # until: per partition, everything before the first record at or after it.
    before = list(iter_archive(settings.archive_dir, settings.topic_customer_path, until=DAY2))
    assert sorted((a.partition, a.offset) for a in before) == sorted(
        k for k, s in produced.items() if s["timestamp"] < int(DAY2.timestamp() * 1000)
    )

    assert await _committed(settings) == _end_offsets(produced)

    # A rerun with nothing new writes nothing new.
    snapshot = _snapshot(settings.archive_dir)
    again = await Archiver(settings).run(once=True)
    assert again.records == 0
    assert again.files == []
    assert _snapshot(settings.archive_dir) == snapshot


class _CommitRefused(Exception):
    pass


async def test_crash_between_rename_and_commit_never_duplicates(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(kafka_bootstrap, tmp_path)
    await ensure_topics(settings)
    events = _events(10, seed=11)
    produced = await _produce(settings, events)

    async def refuse(self: Archiver, consumer: Any, offsets: Any) -> None:
        raise _CommitRefused  # the process "dies" after the rename, before the commit

    monkeypatch.setattr(Archiver, "_commit", refuse)
    with pytest.raises(_CommitRefused):
        await Archiver(settings, policy=RollPolicy(max_records=7)).run(once=True)
    monkeypatch.undo()
    renamed = list_archive(settings.archive_dir, settings.topic_customer_path)
    assert [f.records for f in renamed] == [7]
    assert set((await _committed(settings)).values()) == {None}

    await Archiver(settings, policy=RollPolicy(max_records=7)).run(once=True)
    archived = list(iter_archive(settings.archive_dir, settings.topic_customer_path))
    assert Counter((a.partition, a.offset) for a in archived) == Counter(list(produced))
    assert Counter(a.record["envelope"]["event_id"] for a in archived if a.record) == Counter(
        e.envelope.event_id for e in events
    )
    assert await _committed(settings) == _end_offsets(produced)


def _archive_process(settings: HubSettings, log: Path, *args: str) -> subprocess.Popen[bytes]:
    """``hub archive`` as a subprocess, its output appended to ``log`` (never a pipe that could
    fill and stall it)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "hub", "archive", *args],
            cwd=REPO_ROOT,
            env=hub_environment(settings, HUB_LOG_LEVEL="INFO"),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def test_sigkill_mid_file_and_restart_archives_every_event_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = _settings(kafka_bootstrap, tmp_path)
    await ensure_topics(settings)
    events = _events(200, seed=21)  # more than it sends before the kills are done
    kills_done = asyncio.Event()
    producing = asyncio.create_task(
        _produce(settings, events, pause_every=20, pause_s=0.2, until=kills_done)
    )
    topic_root = settings.archive_dir / settings.topic_customer_path
    log = tmp_path / "archive.log"
    kills = 0
    killed_mid_file = 0
    killed_while_producing = 0
    files_before_kill: list[int] = []
    while kills < 3:
        process = _archive_process(settings, log, "--max-records", "25", "--idle", "5")
        deadline = time.monotonic() + 20
        # Kill once it has published at least one more file and has one open.
        published = len(list(topic_root.rglob("*.avro"))) if topic_root.is_dir() else 0
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            now_published = len(list(topic_root.rglob("*.avro"))) if topic_root.is_dir() else 0
            open_now = list(topic_root.rglob("*.tmp")) if topic_root.is_dir() else []
            if now_published > published and open_now:
                break
            if process.poll() is not None:
                break
        assert process.poll() is None, log.read_text()
        if list(topic_root.rglob("*.tmp")):
            killed_mid_file += 1
        killed_while_producing += not producing.done()
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        files_before_kill.append(len(list(topic_root.rglob("*.avro"))))
        kills += 1
    kills_done.set()
    produced = await producing
    assert len(produced) < len(events)
    assert killed_mid_file >= 2, files_before_kill
    assert killed_while_producing == 3, files_before_kill
    final = _archive_process(settings, log, "--once")
    assert final.wait(timeout=60) == 0, log.read_text()
    assert not list(topic_root.rglob("*.tmp"))

    archived = list(iter_archive(settings.archive_dir, settings.topic_customer_path))
    assert Counter((a.partition, a.offset) for a in archived) == Counter(list(produced))
    assert Counter(a.record["envelope"]["event_id"] for a in archived if a.record) == Counter(
        sent["event_id"] for sent in produced.values()
    )
    assert await _committed(settings) == _end_offsets(produced)
    # Every file's header covers exactly the offsets in it.
    for f in list_archive(settings.archive_dir, settings.topic_customer_path):
        with f.path.open("rb") as fo:
            offsets = [cast(dict[str, Any], r)["offset"] for r in fastavro.reader(fo)]
        assert (offsets[0], offsets[-1], len(offsets)) == (f.first_offset, f.last_offset, f.records)


async def test_live_archiver_publishes_idle_files_and_sigterm_commits(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = _settings(kafka_bootstrap, tmp_path)
    await ensure_topics(settings)
    events = _events(8, seed=5)
    produced = await _produce(settings, events)
    log = tmp_path / "archive.log"
    process = _archive_process(settings, log, "--idle", "0.3", "--max-age", "600")
    try:
        deadline = time.monotonic() + 20
        archived = 0
        while time.monotonic() < deadline and archived < len(produced):
            await asyncio.sleep(0.1)
            try:
                files = list_archive(settings.archive_dir, settings.topic_customer_path)
            except ArchiveError:  # no file published yet
                files = []
            archived = sum(f.records for f in files)
        # Published while it runs: the files closed after 0.3 s without a record.
        assert archived == len(produced)
        assert process.poll() is None
        more = await _produce(settings, _events(2, seed=6))
        await asyncio.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, log.read_text()
    assert "archived " in log.read_text()
    topic_root = settings.archive_dir / settings.topic_customer_path
    assert not list(topic_root.rglob("*.tmp"))
    every = {**produced, **more}
    items = list(iter_archive(settings.archive_dir, settings.topic_customer_path))
    assert Counter((a.partition, a.offset) for a in items) == Counter(list(every))
    assert await _committed(settings) == _end_offsets(every)


async def test_records_lost_to_retention_before_archiving_are_skipped_not_refused(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The archiver was down longer than retention: it goes on from the log start."""
    settings = _settings(kafka_bootstrap, tmp_path)
    await ensure_topics(settings)
    first = await _produce(settings, _events(4, seed=8))
    await Archiver(settings).run(once=True)
    second = await _produce(settings, _events(4, seed=9))
    # The partition with the most archived records loses the first two of the new ones.
    partition = Counter(p for p, _ in first).most_common(1)[0][0]
    tp = TopicPartition(settings.topic_customer_path, partition)
    archived_end = _end_offsets(first)[partition]
    cut = archived_end + 2
    assert archived_end > 0
    assert sum(1 for p, _ in second if p == partition) > 2
    admin = make_admin(settings)
    await admin.start()
    try:
        await admin.delete_records({tp: RecordsToDelete(before_offset=cut)})
    finally:
        await admin.close()

    await Archiver(settings).run(once=True)
    lost = {(partition, offset) for offset in range(archived_end, cut)}
    expected = [k for k in {**first, **second} if k not in lost]
    items = list(iter_archive(settings.archive_dir, settings.topic_customer_path))
    assert [(a.partition, a.offset) for a in items] == sorted(expected)


async def test_an_archive_ahead_of_the_log_is_refused(kafka_bootstrap: str, tmp_path: Path) -> None:
    """The folder holds a longer history than the topic has (a topic deleted and made anew)."""
    settings = _settings(kafka_bootstrap, tmp_path)
    await ensure_topics(settings)
    await _produce(settings, _events(3, seed=4))
    await Archiver(settings).run(once=True)
    again = settings.model_copy(
        update={"topic_customer_path": f"{settings.topic_customer_path}-new"}
    )
    await ensure_topics(again)
    old_dir = settings.archive_dir / settings.topic_customer_path
    old_dir.rename(again.archive_dir / again.topic_customer_path)
    with pytest.raises(ArchiveError, match="re-created"):
        await Archiver(again).run(once=True)
    assert set((await _committed(again)).values()) == {None}
