"""Replay history into the reporting store: from the Kafka log or from the Avro archive.

From Kafka, replay reads with **no consumer group**: partitions assigned and seeked, nothing
committed, so a replay never moves or rebalances a live group (the router's, the archiver's).
Where it starts: an offset (every partition from offset N, clamped to what the log still holds),
or a time (``offsets_for_times``: per partition the first record at or after T). Where it
stops: per partition at the offset of ``until`` (the first record at or after it), or at the end
offsets seen when the replay starts (so a replay of a live log ends). Record timestamps are the
log's (when a record reached Kafka), not event or knowledge time.

From the archive it reads :func:`hub.reporting.archive.iter_archive` (files in offset order).

Either way each value goes through the reporting route's projection: the fast path reads a
single-object value straight into the route's derived schema
(:meth:`ReportingProjection.decoder`); any other value (Confluent framing, a schema this build
reads only through the registry) is decoded by :mod:`hub.serde` and projected by the router's
compiled projection. A value neither can read is counted with its partition and offset and
reported, never a crash and never dropped silently.

Deterministic: the store is idempotent by event id and resolves fact ids independently of load
order, so replaying the same log twice into fresh stores gives the same tables, and replaying
into a store that already holds the events adds nothing.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition

from hub.kafka.clients import make_consumer
from hub.kafka.topics import partition_ids
from hub.logging import get_logger
from hub.reporting.facts import DecodeMode, FactBatch
from hub.reporting.store import BATCH_ROWS, ReportingStore, paused_gc
from hub.serde import EventSerializer, SerdeError, build_serializer
from hub.settings import HubSettings

log = get_logger(__name__)

FIRST_UNDECODABLE = 10
"""How many undecodable records are reported by partition and offset (all are counted)."""


class Progress(Protocol):
    """What replay tells while it runs (a rich progress bar in the CLI; nothing in tests)."""

    def start(self, total: int | None) -> None: ...

    def advance(self, records: int) -> None: ...

    def finish(self) -> None: ...


class _Silent:
    def start(self, total: int | None) -> None:
        pass

    def advance(self, records: int) -> None:
        pass

    def finish(self) -> None:
        pass


@dataclass
class ReplayStats:
    """What a replay read and what it added."""

    source: str
    records: int = 0
    """Log (or archive) records read."""
    added: int = 0
    """Rows added to the store (0 for an event the store already held)."""
    skipped: int = 0
    """Events the reporting route does not carry (a type or area it filters out)."""
    undecodable: int = 0
    first_undecodable: list[str] = field(default_factory=list)
    """``partition:offset reason`` of the first :data:`FIRST_UNDECODABLE` of them."""
    ranges: dict[int, tuple[int, int]] = field(default_factory=dict)
    """Kafka: per partition the offsets read, ``[start, stop)``."""
    elapsed_s: float = 0.0

    @property
    def rate(self) -> float:
        return self.records / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def summary(self) -> str:
        known = self.records - self.added - self.skipped - self.undecodable
        text = (
            f"replayed {self.records} record(s) from {self.source} in {self.elapsed_s:.1f} s "
            f"({self.rate:,.0f}/s): {self.added} row(s) added, {known} already in the store "
            f"(or repeated in the log), {self.skipped} not for reporting, "
            f"{self.undecodable} undecodable"
        )
        if self.first_undecodable:
            text += "; first undecodable: " + ", ".join(self.first_undecodable)
        return text


class _Loader:
    """Decodes values, collects projected rows and loads them into the store in batches."""

    def __init__(
        self,
        store: ReportingStore,
        serializer: EventSerializer,
        stats: ReplayStats,
        mode: DecodeMode = "project",
    ) -> None:
        self.store = store
        self.projection = store.projection
        self.fast = self.projection.decoder(mode)
        self.serializer = serializer
        self.stats = stats
        self.batch = FactBatch()

    def value(self, partition: int, offset: int, value: bytes | None) -> None:
        self.stats.records += 1
        if value is None:
            self._undecodable(partition, offset, "EmptyValue")
            return
        try:
            found = self.fast(value)
        except Exception:  # not single-object, unknown fingerprint, or corrupt: the slow way
            try:
                decoded = self.serializer.decode(value)
            except SerdeError as error:
                self._undecodable(partition, offset, type(error).__name__)
                return
            self._decoded(decoded.type_name, decoded.record)
            return
        if found is None:
            self.stats.skipped += 1
            return
        self.batch.add(found[0], found[1])
        if len(self.batch) >= BATCH_ROWS:
            self.flush()

    def decoded(
        self, partition: int, offset: int, type_name: str | None, record: dict[str, Any] | None
    ) -> None:
        """A record the archive reader already decoded (with logical types)."""
        self.stats.records += 1
        if record is None or type_name is None:
            self._undecodable(partition, offset, "NotDecoded")
            return
        self._decoded(type_name, record)

    def _decoded(self, type_name: str, record: dict[str, Any]) -> None:
        short = type_name.rpartition(".")[2]
        projection = self.projection
        if short not in projection.types or not projection.accepts(short, record["envelope"]):
            self.stats.skipped += 1
            return
        self.batch.add(short, projection.project(short, record))
        if len(self.batch) >= BATCH_ROWS:
            self.flush()

    def _undecodable(self, partition: int, offset: int, reason: str) -> None:
        self.stats.undecodable += 1
        if len(self.stats.first_undecodable) < FIRST_UNDECODABLE:
            self.stats.first_undecodable.append(f"{partition}:{offset} {reason}")

    def flush(self) -> None:
        if len(self.batch):
            self.stats.added += self.store.load_batch(self.batch)
            self.batch = FactBatch()
            # The collector is paused while replaying (paused_gc): between batches, with no
            # rows held, a young-generation pass frees any cycle the Kafka client left.
            gc.collect(1)


def as_utc(moment: datetime) -> datetime:
    """A naive time is taken as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _millis(moment: datetime) -> int:
    return int(as_utc(moment).timestamp() * 1000)


async def replay_kafka(
    settings: HubSettings,
    store: ReportingStore,
    *,
    topic: str | None = None,
    from_offset: int | None = None,
    from_time: datetime | None = None,
    until: datetime | None = None,
    progress: Progress | None = None,
    serializer: EventSerializer | None = None,
) -> ReplayStats:
    """Replay ``topic`` (the customer-path log by default) into ``store``; see the module text.

    Give ``from_offset`` or ``from_time`` (neither: from the beginning).
    """
    if from_offset is not None and from_time is not None:
        raise ValueError("give from_offset or from_time, not both")
    if from_offset is not None and from_offset < 0:
        raise ValueError("from_offset must be 0 or more")
    topic = topic or settings.topic_customer_path
    progress = progress or _Silent()
    stats = ReplayStats(source=f"kafka topic {topic}")
    loader = _Loader(store, serializer or build_serializer(settings), stats)
    partitions = [TopicPartition(topic, p) for p in await partition_ids(settings, topic)]
    consumer = make_consumer(
        settings,
        group_id=None,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    try:
        consumer.assign(partitions)
        low = await consumer.beginning_offsets(partitions)
        end = await consumer.end_offsets(partitions)
        if from_time is not None:
            found = await consumer.offsets_for_times({tp: _millis(from_time) for tp in partitions})
            start = {tp: found[tp].offset if found.get(tp) else end[tp] for tp in partitions}
        else:
            first = from_offset or 0
            start = {tp: min(max(first, low[tp]), end[tp]) for tp in partitions}
        stop = dict(end)
        if until is not None:
            found = await consumer.offsets_for_times({tp: _millis(until) for tp in partitions})
            for tp in partitions:
                at = found.get(tp)
                if at is not None:
                    stop[tp] = min(at.offset, end[tp])
        for tp in partitions:
            stop[tp] = max(stop[tp], start[tp])
            stats.ranges[tp.partition] = (start[tp], stop[tp])
            consumer.seek(tp, start[tp])
        active = {tp for tp in partitions if start[tp] < stop[tp]}
        done = [tp for tp in partitions if tp not in active]
        if done:
            consumer.pause(*done)
        progress.start(sum(stop[tp] - start[tp] for tp in partitions))
        began = time.monotonic()
        with paused_gc():
            await _consume(consumer, loader, progress, active, stop)
            loader.flush()
        stats.elapsed_s = time.monotonic() - began
    finally:
        progress.finish()
        await consumer.stop()
    log.info(
        "replay.done",
        source=stats.source,
        records=stats.records,
        added=stats.added,
        undecodable=stats.undecodable,
    )
    return stats


async def _consume(
    consumer: AIOKafkaConsumer,
    loader: _Loader,
    progress: Progress,
    active: set[TopicPartition],
    stop: dict[TopicPartition, int],
) -> None:
    """Read the active partitions up to their stop offsets, each record into the loader."""
    while active:
        batches = await consumer.getmany(timeout_ms=500, max_records=20_000)
        for tp, records in batches.items():
            limit = stop[tp]
            read = 0
            for record in records:
                if record.offset >= limit:
                    break
                loader.value(tp.partition, record.offset, record.value)
                read += 1
            progress.advance(read)
        finished = [tp for tp in active if await consumer.position(tp) >= stop[tp]]
        if finished:
            consumer.pause(*finished)
            active.difference_update(finished)


def replay_archive(
    root: Path,
    store: ReportingStore,
    *,
    topic: str,
    until: datetime | None = None,
    progress: Progress | None = None,
    serializer: EventSerializer | None = None,
    settings: HubSettings | None = None,
) -> ReplayStats:
    """Replay the archive of ``topic`` under ``root`` into ``store`` (records before ``until``
    as the archive reader defines it)."""
    from hub.reporting.archive import iter_archive, list_archive

    progress = progress or _Silent()
    stats = ReplayStats(source=f"archive {root} ({topic})")
    loader = _Loader(store, serializer or build_serializer(settings or HubSettings()), stats)
    last_day = as_utc(until).date() if until is not None else None
    # The total from the files' headers (a file of until's day counts whole: an upper bound).
    progress.start(
        sum(f.records for f in list_archive(root, topic) if last_day is None or f.day <= last_day)
    )
    began = time.monotonic()
    try:
        with paused_gc():
            for archived in iter_archive(root, topic, as_utc(until) if until else None):
                raw = archived.raw
                if raw is not None:
                    loader.value(archived.partition, archived.offset, raw)
                else:
                    loader.decoded(
                        archived.partition, archived.offset, archived.type_name, archived.record
                    )
                progress.advance(1)
            loader.flush()
        stats.elapsed_s = time.monotonic() - began
    finally:
        progress.finish()
    return stats


def replay_values(
    store: ReportingStore,
    values: Iterable[tuple[int, int, bytes | None]],
    *,
    serializer: EventSerializer | None = None,
    source: str = "values",
    mode: DecodeMode = "project",
) -> ReplayStats:
    """Replay ``(partition, offset, Kafka value)`` triples held in memory (benchmarks);
    ``mode``: see :meth:`ReportingProjection.decoder`."""
    stats = ReplayStats(source=source)
    loader = _Loader(store, serializer or build_serializer(HubSettings()), stats, mode)
    began = time.monotonic()
    with paused_gc():
        for partition, offset, value in values:
            loader.value(partition, offset, value)
        loader.flush()
    stats.elapsed_s = time.monotonic() - began
    return stats


__all__ = [
    "FIRST_UNDECODABLE",
    "Progress",
    "ReplayStats",
    "as_utc",
    "replay_archive",
    "replay_kafka",
    "replay_values",
]
