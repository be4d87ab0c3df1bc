"""``hub replay`` on a real broker: from an offset, a time, until a time; twice the same; a log
holding the simulator's run twice counts every fact once; undecodable records are reported.

The log of this module: run A of the simulator, one value that is not Avro, (time T1) run B,
(time T2) run A again. What each replay must hold is worked out here from what was published
(event ids, partitions and offsets from the acknowledgements), never by the code under test.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from connectors.simulator import SimulationConfig, simulate
from connectors.simulator.paths import in_time_order
from hub.events import CustomerPathEvent
from hub.identity import Pseudonymizer
from hub.kafka.clients import make_admin, make_producer
from hub.kafka.publisher import open_publisher
from hub.kafka.topics import ensure_topics
from hub.reporting.replay import replay_archive, replay_kafka
from hub.reporting.store import ReportingStore
from hub.reporting.tables import TABLE_OF_TYPE
from hub.settings import HubSettings
from tests.conftest import (
    REPO_ROOT,
    SIMULATION_SECRET,
    duckdb_file_held_by_another_process,
    hub_environment,
    settings_for,
)

pytestmark = pytest.mark.kafka

PARTITIONS = 3
POISON = b"this is not an Avro value"


@dataclass
class Published:
    event_id: str
    table: str
    partition: int
    offset: int


@dataclass
class Log:
    settings: HubSettings
    run_a: list[Published]
    run_b: list[Published]
    again: list[Published]
    poison: tuple[int, int]
    t1: datetime
    t2: datetime


def _events(jobseekers: int, seed: int) -> list[CustomerPathEvent]:
    config = SimulationConfig(jobseekers=jobseekers, seed=seed)
    return list(in_time_order(list(simulate(config, Pseudonymizer(SIMULATION_SECRET)))))


async def _publish(settings: HubSettings, events: list[CustomerPathEvent]) -> list[Published]:
    done: list[Published] = []
    async with open_publisher(settings) as publisher:
        async for event, meta in publisher.publish_all(events):
            table = TABLE_OF_TYPE[event.event_type].name
            done.append(Published(str(event.envelope.event_id), table, meta.partition, meta.offset))
    return done


async def _pause_past_clock() -> datetime:
    """A moment strictly between the records before and after it (log timestamps are ms)."""
    await asyncio.sleep(0.05)
    moment = datetime.now(UTC)
    await asyncio.sleep(0.05)
    return moment


@pytest.fixture(scope="module")
async def log(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Log:
    settings = settings_for(
        kafka_bootstrap,
        partitions=PARTITIONS,
        state_dir=tmp_path_factory.mktemp("replay") / "hub-state",
        pseudonym_secret=SecretStr(SIMULATION_SECRET),
    )
    await ensure_topics(settings)
    first = _events(40, seed=81)
    run_a = await _publish(settings, first)
    producer = make_producer(settings)
    await producer.start()
    try:
        meta = await producer.send_and_wait(settings.topic_customer_path, POISON, partition=1)
    finally:
        await producer.stop()
    t1 = await _pause_past_clock()
    run_b = await _publish(settings, _events(30, seed=82))
    t2 = await _pause_past_clock()
    again = await _publish(settings, first)  # the simulator run A, published a second time
    return Log(settings, run_a, run_b, again, (meta.partition, meta.offset), t1, t2)


def _expected(published: list[Published]) -> dict[str, int]:
    """Rows per table: each event id once."""
    unique = {p.event_id: p.table for p in published}
    return dict(Counter(unique.values()))


def _counts(store: ReportingStore) -> dict[str, int]:
    return {name: count for name, count in store.counts().items() if count}


def _ids(store: ReportingStore) -> set[str]:
    ids: set[str] = set()
    for table in TABLE_OF_TYPE.values():
        ids |= {r[0] for r in store.con.execute(f"SELECT event_id FROM {table.name}").fetchall()}
    return ids


async def test_a_full_replay_counts_every_fact_once_and_reports_the_poison(log: Log) -> None:
    store = ReportingStore(":memory:")
    stats = await replay_kafka(log.settings, store, from_offset=0)
    everything = log.run_a + log.run_b + log.again
    assert _counts(store) == _expected(everything)
    assert stats.records == len(everything) + 1
    assert stats.added == len({p.event_id for p in everything})
    assert stats.undecodable == 1
    partition, offset = log.poison
    assert stats.first_undecodable == [f"{partition}:{offset} BadMagic"]
    store.close()


async def test_replaying_twice_gives_identical_stores_and_adds_nothing_the_second_time(
    log: Log, tmp_path: Path
) -> None:
    first, second = ReportingStore(tmp_path / "a.duckdb"), ReportingStore(tmp_path / "b.duckdb")
    await replay_kafka(log.settings, first, from_offset=0)
    await replay_kafka(log.settings, second, from_offset=0)
    exported = first.export()
    assert sum(len(rows) for rows in exported.values()) > 0
    assert exported == second.export()
    again = await replay_kafka(log.settings, first, from_offset=0)
    assert again.added == 0
    assert first.export() == exported
    first.close()
    second.close()


async def test_from_time_until_time_replays_exactly_what_was_logged_between(log: Log) -> None:
    store = ReportingStore(":memory:")
    stats = await replay_kafka(log.settings, store, from_time=log.t1, until=log.t2)
    assert _ids(store) == {p.event_id for p in log.run_b}
    assert _counts(store) == _expected(log.run_b)
    assert stats.records == len(log.run_b)
    assert stats.undecodable == 0
    store.close()


async def test_until_alone_stops_before_the_second_run(log: Log) -> None:
    store = ReportingStore(":memory:")
    stats = await replay_kafka(log.settings, store, from_offset=0, until=log.t2)
    assert _ids(store) == {p.event_id for p in log.run_a + log.run_b}
    assert stats.records == len(log.run_a) + len(log.run_b) + 1
    store.close()


async def test_from_offset_starts_every_partition_there(log: Log) -> None:
    start = 40
    everything = log.run_a + log.run_b + log.again
    wanted = [p for p in everything if p.offset >= start]
    poison_in = log.poison[1] >= start
    store = ReportingStore(":memory:")
    stats = await replay_kafka(log.settings, store, from_offset=start)
    assert _ids(store) == {p.event_id for p in wanted}
    assert stats.records == len(wanted) + int(poison_in)
    assert stats.ranges == {
        p: (start, 1 + max(x.offset for x in log.again if x.partition == p))
        for p in range(PARTITIONS)
    }
    store.close()


async def test_replay_joins_no_consumer_group(log: Log) -> None:
    """No group appears that reads this module's log (other tests may make groups meanwhile
    on a shared broker: those read other topics)."""
    admin = make_admin(log.settings)
    await admin.start()
    try:
        before = {g[0] for g in await admin.list_consumer_groups()}
        await replay_kafka(log.settings, ReportingStore(":memory:"), from_offset=0)
        new = {g[0] for g in await admin.list_consumer_groups()} - before
        readers = [
            group
            for group in sorted(new)
            if any(
                tp.topic == log.settings.topic_customer_path
                for tp in await admin.list_consumer_group_offsets(group)
            )
        ]
    finally:
        await admin.close()
    assert not readers, readers


def test_the_replay_command_fills_the_store_file_and_prints_a_summary(
    log: Log, tmp_path: Path
) -> None:
    path = tmp_path / "store.duckdb"
    command = [sys.executable, "-m", "hub", "replay", "--from-offset", "0", "--store", str(path)]
    env = hub_environment(log.settings, HUB_LOG_LEVEL="WARNING")
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    everything = log.run_a + log.run_b + log.again
    unique = len({p.event_id for p in everything})
    assert f"replayed {len(everything) + 1} record(s)" in done.stdout
    assert f"{unique} row(s) added" in done.stdout
    assert "1 undecodable" in done.stdout
    assert f"{log.poison[0]}:{log.poison[1]} BadMagic" in done.stdout
    assert "events/s" in done.stderr  # the progress bar
    with ReportingStore(path, read_only=True) as store:
        assert _counts(store) == _expected(everything)
    again = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "0 row(s) added" in again.stdout


def test_the_replay_command_wants_exactly_one_start(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "hub", "replay", "--store", str(tmp_path / "s.duckdb")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "exactly one of --from-offset, --from-time, --from-archive" in done.stderr


def test_a_wrong_or_damaged_archive_is_one_line_and_exit_2(tmp_path: Path) -> None:
    topic_folder = tmp_path / "archive" / "te.customer-path.v1"
    part = topic_folder / "date=2026-01-05" / "part-0-0.avro"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"Obj\x01 not really an Avro container file")
    store = tmp_path / "s.duckdb"

    def replay(archive: Path) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "hub", "replay", f"--from-archive={archive}"]
        return subprocess.run(
            [*command, f"--store={store}"], cwd=REPO_ROOT, capture_output=True, text=True
        )

    wrong = replay(topic_folder)  # the topic folder instead of the archive's root
    assert wrong.returncode == 2
    assert wrong.stderr.count("\n") == 1
    assert "give its parent" in wrong.stderr
    assert not store.exists()  # found before a store file is made
    damaged = replay(tmp_path / "archive")
    assert damaged.returncode == 2, damaged.stderr
    assert damaged.stderr.strip().splitlines()[-1].startswith(f"Error: {part}")
    assert "Traceback" not in damaged.stderr


def test_a_replay_from_the_archive_equals_the_replay_from_kafka(log: Log, tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    env = hub_environment(
        log.settings,
        HUB_LOG_LEVEL="WARNING",
        HUB_ARCHIVE_DIR=str(archive),
        HUB_ARCHIVE_GROUP=f"test-archive-{uuid.uuid4().hex[:8]}",
    )
    done = subprocess.run(
        [sys.executable, "-m", "hub", "archive", "--once"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    topic = log.settings.topic_customer_path
    for until in (None, log.t2):
        from_kafka, from_archive = ReportingStore(":memory:"), ReportingStore(":memory:")
        kafka_stats = asyncio.run(
            replay_kafka(log.settings, from_kafka, from_offset=0, until=until)
        )
        archive_stats = replay_archive(archive, from_archive, topic=topic, until=until)
        exported = from_kafka.export()
        assert sum(len(rows) for rows in exported.values()) > 0
        assert from_archive.export() == exported, until
        assert archive_stats.records == kafka_stats.records
        assert archive_stats.undecodable == kafka_stats.undecodable == 1
        assert archive_stats.first_undecodable[0].startswith(f"{log.poison[0]}:{log.poison[1]} ")
    path = tmp_path / "from-archive.duckdb"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "hub",
            "replay",
            "--from-archive",
            str(archive),
            "--store",
            str(path),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "1 undecodable" in done.stdout
    with ReportingStore(path, read_only=True) as store:
        assert _counts(store) == _expected(log.run_a + log.run_b + log.again)


def _registrations(n: int) -> list[CustomerPathEvent]:
    """The registration of each of the first ``n`` people of a small simulation."""
    from hub.events.customer_path import JobseekerRegistered

    found: dict[str, CustomerPathEvent] = {}
    for event in _events(10, seed=83):
        if isinstance(event, JobseekerRegistered):
            found.setdefault(event.envelope.subject, event)
    return list(found.values())[:n]


def test_a_retraction_of_another_persons_fact_replays_as_rejected(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The attack of issue 8: Helsinki's record retracting Tampere's registration by its event
    id. On the log it is (the log is the truth); the store refuses it and the replay says so."""
    settings = settings_for(kafka_bootstrap, partitions=PARTITIONS)
    tampere, helsinki = _registrations(2)
    envelope = helsinki.envelope.model_copy(
        update={
            "event_id": uuid.uuid4(),
            "corrects_event_id": tampere.envelope.event_id,
            "retracted": True,
            "recorded_at": helsinki.envelope.recorded_at.replace(year=2026, month=12),
        }
    )
    attack = helsinki.model_copy(update={"envelope": envelope})

    async def publish() -> None:
        await ensure_topics(settings)
        await _publish(settings, [tampere, helsinki, attack])

    asyncio.run(publish())
    path = tmp_path / "store.duckdb"
    command = [sys.executable, "-m", "hub", "replay", "--from-offset", "0", "--store", str(path)]
    env = hub_environment(settings, HUB_LOG_LEVEL="WARNING")
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "3 row(s) added" in done.stdout
    assert "rejected versions (counted nowhere, see rejected_versions): 1: other_subject 1" in (
        done.stdout
    )
    with ReportingStore(path, read_only=True) as store:
        live = store.con.execute(
            "SELECT event_id FROM spells WHERE NOT retracted ORDER BY event_id"
        ).fetchall()
        assert live == sorted(
            [(str(tampere.envelope.event_id),), (str(helsinki.envelope.event_id),)]
        )
        assert store.rejected() == {"other_subject": 1}


def _replay_into(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub", "replay", "--from-offset", "0", "--store", str(path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_store_of_another_layout_garbage_or_locked_is_one_line_and_exit_2(
    tmp_path: Path,
) -> None:
    """Refused before Kafka is asked: no broker needed."""
    import duckdb

    old = tmp_path / "old.duckdb"
    con = duckdb.connect(str(old))
    con.execute("CREATE TABLE spells (event_id VARCHAR)")  # layout 1: no store_meta
    con.close()
    zero = tmp_path / "zero.duckdb"
    zero.write_bytes(b"")
    garbage = tmp_path / "garbage.duckdb"
    garbage.write_bytes(b"\x00garbage" * 1000)
    for path in (old, zero, garbage):
        done = _replay_into(path)
        assert done.returncode == 2, (path, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith("Error: rebuild the store: "), lines
    locked = tmp_path / "locked.duckdb"
    ReportingStore(locked).close()
    with duckdb_file_held_by_another_process(locked):
        done = _replay_into(locked)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "in use by another process" in lines[0]
    assert "Traceback" not in done.stderr
