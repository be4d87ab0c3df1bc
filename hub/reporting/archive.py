"""The Avro archive of the customer-path log: history that outlives Kafka retention.

Layout (Hive-style, so Spark, Trino, Hive or any Avro tool read the folders as they are)::

    <HUB_ARCHIVE_DIR>/<topic>/date=YYYY-MM-DD/part-<partition>-<first offset>.avro

One Avro object container file per UTC day (of the Kafka record timestamp) and partition, the
schema embedded, every block compressed with ``HUB_ARCHIVE_CODEC`` (deflate or zstandard, both
in the Avro specification). A day and partition may have several files (an archiver that
publishes while the day runs, a restart): each is named by its own first offset.

**Record schema** ``fi.te.hub.archive.LogRecord``: one Avro record per Kafka record —
``partition``, ``offset``, ``timestamp`` (timestamp-millis), ``key`` (the pseudonym),
``event_type`` (short name), ``writer_schema`` (the fingerprint or registry id the producer wrote
with), ``event`` (a union of null and the *current* schema of all 13 event types: the value is
decoded with schema resolution, so every released version is archived as the current one and a
SQL engine sees typed columns, not bytes), ``headers`` (the CloudEvents ``ce_*`` headers, map of
bytes) and, only for a value that cannot be decoded (a poison record), ``raw`` (the value's bytes)
with ``error`` (why): nothing of the log is lost, not even what the hub cannot read. The event
schemas share named types (``Envelope``, enums); the union defines each once and refers to it by
full name afterwards (:func:`archive_schema`). A later schema version gives later files a newer
embedded schema; :func:`iter_archive` reads every file with the current one (Avro resolution, as
the hub's evolution rules are BACKWARD), so old files read as the current shape.

**Exactly once per file across restarts.** A file is written as a hidden temp file
(``.part-….avro.tmp``, which Spark, Trino and Hive skip as hidden and :func:`iter_archive` skips
too), then its header is completed (an Avro file's metadata comes before its blocks, so
``hub.last_offset`` and ``hub.records`` are written as fixed-width placeholders and patched in
place: same length, same header bytes otherwise), the file fsynced, renamed to its final
name, the folder fsynced, and only then the offset after its last record committed for
``HUB_ARCHIVE_GROUP``. On start the archive folder is the source of truth: every partition
resumes from max(committed offset, last archived offset + 1), the last archived offset read
from the header of the partition's newest file, so a crash between rename and commit never
duplicates; leftover temp files are deleted and their records written again (same first
offset, same name).

**One process owns the topic.** The archiver assigns itself every partition (no group
rebalance: a restart after a crash is immediate, and no file is ever cut by a revocation; the
group only keeps the committed offsets, which also show the archive's lag in every Kafka tool)
and holds an exclusive lock on ``<dir>/<topic>/.lock``, so a second archiver on the same folder
fails at once. One process is enough: it archives about 10,000 records/s (decode, check,
Avro append) on a developer machine, against a national log's average of under one event a
second; a second archiver only ever writes into another folder.

A file closes when the day of its records changes, when it holds ``max_records``, when no record
came for ``idle_s`` or it has been open ``max_age_s`` (a live archiver publishes files while the
day runs), on ``--once`` end (everything up to the end offsets seen at start) and on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import fcntl
import json
import os
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import OffsetOutOfRangeError
from aiokafka.structs import ConsumerRecord
from fastavro import parse_schema
from fastavro import reader as avro_reader
from fastavro.read import SchemaResolutionError
from fastavro.write import Writer

from hub.kafka.clients import make_consumer
from hub.kafka.topics import partition_ids
from hub.logging import get_logger
from hub.serde import (
    EventSerializer,
    SchemaCatalog,
    SerdeError,
    SingleObjectSerializer,
    build_serializer,
)
from hub.serde import default_catalog as default_schema_catalog
from hub.serde.fingerprint import canonical_form
from hub.serde.framing import SINGLE_OBJECT_HEADER_SIZE, SINGLE_OBJECT_MAGIC
from hub.serde.registry import SchemaNotFound, SchemaRegistryError
from hub.settings import HubSettings

log = get_logger(__name__)

RECORD_NAME = "fi.te.hub.archive.LogRecord"
SYNC_INTERVAL = 256 * 1024
"""Uncompressed bytes per Avro block: large enough for zstandard/deflate to find repeats."""

META_TOPIC = "hub.topic"
META_PARTITION = "hub.partition"
META_DATE = "hub.date"
META_FIRST_OFFSET = "hub.first_offset"
META_LAST_OFFSET = "hub.last_offset"
META_RECORDS = "hub.records"
_PLACEHOLDER_WIDTH = 20  # digits of the largest offset (2**63 - 1 has 19)
_PLACEHOLDERS = {
    META_LAST_OFFSET: "L" * _PLACEHOLDER_WIDTH,
    META_RECORDS: "N" * _PLACEHOLDER_WIDTH,
}

_FILE_NAME = re.compile(r"^part-(\d+)-(\d+)\.avro$")
_DATE_DIR = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
LOCK_NAME = ".lock"


class ArchiveError(Exception):
    """The archive folder cannot be used (locked by another archiver, a broken file, no files
    where the topic's should be): the message names the file or folder and the fault in one
    line, fit for a command to print as it is."""


#: Longest quote of a reader library's own message in an :class:`ArchiveError`.
_FAULT_CHARS = 120


def _fault(path: Path, what: str, error: BaseException | None = None) -> ArchiveError:
    """An ArchiveError naming *path* and the fault, the library's message cut short (a schema
    resolution error quotes both schemas: kilobytes)."""
    if error is None:
        return ArchiveError(f"{path}: {what}")
    detail = " ".join(str(error).split())
    if len(detail) > _FAULT_CHARS:
        detail = detail[: _FAULT_CHARS - 1] + "…"
    return ArchiveError(f"{path}: {what} ({type(error).__name__}: {detail})")


# -- the record schema ---------------------------------------------------------------------


def archive_schema(catalog: SchemaCatalog | None = None) -> dict[str, Any]:
    """The ``LogRecord`` schema (JSON) over the current schema of every event type of
    ``catalog``; a named type shared by several event schemas is defined once."""
    catalog = catalog if catalog is not None else default_schema_catalog()
    defined: dict[str, str] = {}
    branches: list[Any] = ["null"]
    for event in catalog:
        branches.append(_define_once(copy.deepcopy(event.current.raw), None, defined))
    return {
        "type": "record",
        "name": RECORD_NAME,
        "doc": "One record of the customer-path log, as hub archive wrote it.",
        "fields": [
            {"name": "partition", "type": "int", "doc": "Kafka partition."},
            {"name": "offset", "type": "long", "doc": "Kafka offset in the partition."},
            {
                "name": "timestamp",
                "type": {"type": "long", "logicalType": "timestamp-millis"},
                "doc": "Kafka record timestamp (UTC); its date names the file's folder.",
            },
            {
                "name": "key",
                "type": ["null", "string"],
                "default": None,
                "doc": "Kafka key as UTF-8: the person pseudonym.",
            },
            {
                "name": "raw_key",
                "type": ["null", "bytes"],
                "default": None,
                "doc": "The key's bytes, only when they are not UTF-8.",
            },
            {
                "name": "event_type",
                "type": ["null", "string"],
                "default": None,
                "doc": "Short name of the event type; null for an undecodable value.",
            },
            {
                "name": "writer_schema",
                "type": ["null", "string"],
                "default": None,
                "doc": "Schema the producer wrote with: CRC-64-AVRO fingerprint (hex) or "
                "registry id (decimal).",
            },
            {
                "name": "event",
                "type": branches,
                "default": None,
                "doc": "The decoded event, in the current schema of its type.",
            },
            {
                "name": "raw",
                "type": ["null", "bytes"],
                "default": None,
                "doc": "The value's bytes, only when it could not be decoded.",
            },
            {
                "name": "error",
                "type": ["null", "string"],
                "default": None,
                "doc": "Why the value could not be decoded.",
            },
            {
                "name": "headers",
                "type": {"type": "map", "values": ["null", "bytes"]},
                "default": {},
                "doc": "Kafka headers (CloudEvents ce_* attributes, content-type).",
            },
        ],
    }


def _define_once(schema: Any, namespace: str | None, defined: dict[str, str]) -> Any:
    """``schema`` with every named type already in ``defined`` replaced by its full name."""
    if isinstance(schema, list):
        return [_define_once(s, namespace, defined) for s in schema]
    if not isinstance(schema, dict):
        return schema
    kind = schema.get("type")
    if kind in ("record", "enum", "fixed", "error"):
        name = schema["name"]
        space = schema.get("namespace", namespace)
        full = name if "." in name or not space else f"{space}.{name}"
        if "." in name:
            space = name.rsplit(".", 1)[0]
        text = json.dumps(schema, sort_keys=True)
        if full in defined:
            if defined[full] != text:
                raise ArchiveError(f"two event schemas define {full} differently")
            return full
        defined[full] = text
        if kind in ("record", "error"):
            for field_ in schema["fields"]:
                field_["type"] = _define_once(field_["type"], space, defined)
        return schema
    if kind == "array":
        schema["items"] = _define_once(schema["items"], namespace, defined)
    elif kind == "map":
        schema["values"] = _define_once(schema["values"], namespace, defined)
    elif isinstance(kind, (dict, list)):
        schema["type"] = _define_once(kind, namespace, defined)
    return schema


def _without_logical_types(schema: Any) -> Any:
    """``schema`` with every uuid/date/timestamp logical type reduced to its Avro type."""
    if isinstance(schema, list):
        return [_without_logical_types(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    if "logicalType" in schema and schema.get("type") in ("string", "int", "long"):
        return schema["type"]
    return {k: _without_logical_types(v) for k, v in schema.items()}


@lru_cache(maxsize=4)
def _plain_catalog(catalog: SchemaCatalog) -> SchemaCatalog | None:
    """The catalog with its logical types reduced to plain Avro types, for the archiver.

    It decodes a value to strings and numbers where the hub's serde makes UUIDs, dates and
    datetimes, which the archive's writer would only turn back into the same strings and
    numbers: about 1.8 times the archiving rate, the same bytes in the file. Logical types are
    not part of the Parsing Canonical Form, so every fingerprint stays the same (checked: None
    when one does not, and the archiver decodes as the rest of the hub).
    """
    plain = SchemaCatalog.from_schemas(
        [_without_logical_types(e.current.raw) for e in catalog],
        {e.full_name: [_without_logical_types(v.raw) for v in e.history] for e in catalog},
    )
    if set(plain.fingerprints()) != set(catalog.fingerprints()):
        return None
    return plain


@dataclass(frozen=True)
class _Schema:
    json: dict[str, Any]
    parsed: Any
    canonical: str


@lru_cache(maxsize=4)
def _schema_for(catalog: SchemaCatalog) -> _Schema:
    raw = archive_schema(catalog)
    parsed = parse_schema(raw, named_schemas={})
    return _Schema(raw, parsed, canonical_form(parsed))


# -- reading ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ArchivedRecord:
    """One archived log record; ``record`` is the decoded event (None for a poison value, whose
    bytes are in ``raw``)."""

    partition: int
    offset: int
    timestamp: datetime
    key: str | None
    type_name: str | None
    record: dict[str, Any] | None
    raw: bytes | None
    writer_schema: str | None = None
    headers: dict[str, bytes | None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ArchiveFile:
    """One closed archive file (what its name and header say)."""

    path: Path
    topic: str
    day: date
    partition: int
    first_offset: int
    last_offset: int
    records: int


def topic_dir(root: Path | str, topic: str) -> Path:
    return Path(root) / topic


def file_name(partition: int, first_offset: int) -> str:
    return f"part-{partition}-{first_offset}.avro"


def _named_files(root: Path | str, topic: str) -> list[tuple[int, int, date, Path]]:
    """``(partition, first offset, day, path)`` of every closed file, from the names alone."""
    base = topic_dir(root, topic)
    found: list[tuple[int, int, date, Path]] = []
    if not base.is_dir():
        return found
    for day_dir in base.iterdir():
        day_match = _DATE_DIR.match(day_dir.name)
        if day_match is None or not day_dir.is_dir():
            continue
        day = date.fromisoformat(day_match.group(1))
        for path in day_dir.iterdir():
            match = _FILE_NAME.match(path.name)
            if match is not None:
                found.append((int(match.group(1)), int(match.group(2)), day, path))
    found.sort(key=lambda f: (f[0], f[1]))
    return found


def read_header(path: Path) -> dict[str, str]:
    """The ``hub.*`` and ``avro.*`` metadata of an archive file (only its header is read);
    an :class:`ArchiveError` when it is not an Avro file (empty, cut short, something else)."""
    try:
        with path.open("rb") as fo:
            return {k: v for k, v in avro_reader(fo).metadata.items()}
    except OSError as error:
        raise _fault(path, "cannot be read", error) from None
    except Exception as error:  # fastavro: ValueError, EOFError, UnicodeDecodeError, …
        size = _size(path)
        what = "is empty" if size == 0 else "is not an Avro file or its header is damaged"
        raise _fault(path, what, None if size == 0 else error) from None


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _archived_files(root: Path | str, topic: str) -> list[tuple[int, int, date, Path]]:
    """:func:`_named_files`, or an ArchiveError when ``<root>/<topic>`` is missing or holds no
    file: a replay of nothing is a mistake (most often the topic folder given as the root)."""
    root = Path(root)
    base = topic_dir(root, topic)
    found = _named_files(root, topic)
    if found:
        return found
    hint = ""
    if root.name == topic or any(_DATE_DIR.match(p.name) for p in _children(root)):
        hint = f"; {root} looks like a topic folder itself: give its parent {root.parent}"
    if not base.is_dir():
        raise ArchiveError(f"no archive of {topic} under {root}: {base} does not exist{hint}")
    raise ArchiveError(
        f"no archive of {topic} under {root}: {base} holds no part-*.avro file in a date=* "
        f"folder{hint}"
    )


def _children(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError:
        return []


def _archive_file(topic: str, partition: int, first: int, day: date, path: Path) -> ArchiveFile:
    meta = read_header(path)
    try:
        last = int(meta[META_LAST_OFFSET])
        records = int(meta[META_RECORDS])
    except (KeyError, ValueError) as exc:
        raise ArchiveError(f"{path}: no {META_LAST_OFFSET}/{META_RECORDS} in its header") from exc
    return ArchiveFile(path, topic, day, partition, first, last, records)


def list_archive(root: Path | str, topic: str) -> list[ArchiveFile]:
    """Every closed file of ``topic``, by partition then first offset (temp files skipped);
    an ArchiveError when there is none or a header cannot be read."""
    return [_archive_file(topic, p, o, d, path) for p, o, d, path in _archived_files(root, topic)]


def iter_archive(
    root: Path | str,
    topic: str,
    until: datetime | None = None,
    catalog: SchemaCatalog | None = None,
) -> Iterator[ArchivedRecord]:
    """The archived records of ``topic``: partition by partition (ascending), each in offset
    order. ``until``: per partition, stop at the first record whose Kafka timestamp is at or
    after it (what reading a partition up to ``offsets_for_times(until)`` gives); naive means
    UTC. Every file is read with the current record schema (older files resolve to it).

    A missing or empty topic folder, or a file that cannot be read to its end (cut short,
    damaged, not Avro, another schema), raises one :class:`ArchiveError` naming the file and
    the fault; the records before it have been yielded."""
    schema = _schema_for(catalog if catalog is not None else default_schema_catalog())
    until_ms = None if until is None else _epoch_ms(until)
    stopped: set[int] = set()
    for partition, _, day, path in _archived_files(root, topic):
        if partition in stopped:
            continue
        if until is not None and day > _utc(until).date():
            stopped.add(partition)  # all its records are at or after until
            continue
        for item in _read_file(path, schema):
            if until_ms is not None and _epoch_ms(item.timestamp) >= until_ms:
                stopped.add(partition)
                break
            yield item


def _read_file(path: Path, schema: _Schema) -> Iterator[ArchivedRecord]:
    """The records of one file; an ArchiveError naming it for any fault of the file."""
    try:
        fo = path.open("rb")
    except OSError as error:
        raise _fault(path, "cannot be read", error) from None
    with fo:
        read_header(path)  # an empty or foreign file: one clear fault, before anything else
        try:
            records = avro_reader(fo)
            embedded = records.metadata.get("avro.schema", "")
            if _canonical_of(embedded) != schema.canonical:
                name = _schema_name(embedded)
                if name != RECORD_NAME:
                    raise _fault(path, f"is not an archive file (its records are {name})")
                records = avro_reader(_rewound(fo), reader_schema=schema.parsed)
            yield from _records(records)
        except ArchiveError:
            raise
        except SchemaResolutionError as error:
            raise _fault(
                path, "was written with a schema that cannot be read as the current one", error
            ) from None
        except EOFError as error:
            raise _fault(path, "is cut short (a truncated copy?)", error) from None
        except Exception as error:  # zstandard/zlib errors, ValueError, UnicodeDecodeError, …
            raise _fault(path, "is cut short or damaged", error) from None


def _schema_name(schema_text: str) -> str:
    """The full name of a file's embedded record schema, or what it is instead."""
    try:
        parsed = json.loads(schema_text)
    except ValueError:
        return "of an unreadable schema"
    if isinstance(parsed, dict) and isinstance(parsed.get("name"), str):
        name = str(parsed["name"])
        space = parsed.get("namespace")
        return name if "." in name or not isinstance(space, str) else f"{space}.{name}"
    return "not records"


def _records(records: Any) -> Iterator[ArchivedRecord]:
    for r in records:
        assert isinstance(r, dict)
        yield ArchivedRecord(
            partition=r["partition"],
            offset=r["offset"],
            timestamp=r["timestamp"],
            key=r["key"],
            type_name=r["event_type"],
            record=r["event"],
            raw=r["raw"],
            writer_schema=r["writer_schema"],
            headers=r["headers"],
        )


@lru_cache(maxsize=64)
def _canonical_of(schema_text: str) -> str:
    """Parsing Canonical Form of a file's embedded schema: equal to the reader's, the file is
    read without resolution (several times faster)."""
    try:
        return canonical_form(parse_schema(json.loads(schema_text), named_schemas={}))
    except (ValueError, TypeError, KeyError):
        return ""


def _rewound(fo: IO[bytes]) -> IO[bytes]:
    fo.seek(0)
    return fo


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _epoch_ms(moment: datetime) -> int:
    return int(_utc(moment).timestamp() * 1000)


# -- writing ---------------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _OpenFile:
    """One archive file being written: a hidden temp file until :meth:`close`."""

    def __init__(
        self,
        root: Path,
        topic: str,
        partition: int,
        day: date,
        first_offset: int,
        schema: _Schema,
        codec: str,
    ) -> None:
        self.partition = partition
        self.day = day
        self.first_offset = first_offset
        self.last_offset = first_offset
        self.records = 0
        self.opened = time.monotonic()
        self.last_write = self.opened
        self.folder = topic_dir(root, topic) / f"date={day.isoformat()}"
        if not self.folder.is_dir():
            self.folder.mkdir(parents=True, exist_ok=True)
            _fsync_dir(self.folder.parent)
        self.path = self.folder / file_name(partition, first_offset)
        self.temp = self.folder / f".{self.path.name}.tmp"
        self._fo: IO[bytes] = self.temp.open("wb")
        metadata = {
            META_TOPIC: topic,
            META_PARTITION: str(partition),
            META_DATE: day.isoformat(),
            META_FIRST_OFFSET: str(first_offset),
            **_PLACEHOLDERS,
        }
        self._writer = Writer(
            self._fo, schema.parsed, codec=codec, sync_interval=SYNC_INTERVAL, metadata=metadata
        )
        self._fo.flush()
        self._header_size = self._fo.tell()

    def write(self, record: dict[str, Any], offset: int) -> None:
        self._writer.write(record)
        self.last_offset = offset
        self.records += 1
        self.last_write = time.monotonic()

    def close(self) -> Path:
        """Flush, complete the header, fsync, rename to the final name, fsync the folder."""
        self._writer.flush()
        self._fo.flush()
        with self.temp.open("rb") as fo:
            header = fo.read(self._header_size)
        patches = {
            META_LAST_OFFSET: self.last_offset,
            META_RECORDS: self.records,
        }
        for key, value in patches.items():
            placeholder = _PLACEHOLDERS[key].encode()
            at = header.find(placeholder)
            if at < 0 or header.find(placeholder, at + 1) >= 0:
                raise ArchiveError(f"{self.temp}: placeholder of {key} not found once")
            self._fo.seek(at)
            self._fo.write(f"{value:0{_PLACEHOLDER_WIDTH}d}".encode())
        self._fo.seek(0, os.SEEK_END)
        self._fo.flush()
        os.fsync(self._fo.fileno())
        self._fo.close()
        os.replace(self.temp, self.path)
        _fsync_dir(self.folder)
        return self.path

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self._fo.close()
        with contextlib.suppress(OSError):
            self.temp.unlink()


@dataclass
class ArchiveStats:
    """What one run of the archiver did."""

    records: int = 0
    poison: int = 0
    files: list[Path] = field(default_factory=list)
    resumed_from: dict[int, int] = field(default_factory=dict)
    elapsed_s: float = 0.0


@dataclass(frozen=True)
class RollPolicy:
    """When an open file is closed besides a change of day."""

    max_records: int = 500_000
    idle_s: float = 30.0
    max_age_s: float = 600.0


class _Lock:
    """An exclusive ``flock`` on ``<dir>/<topic>/.lock`` for the archiver's lifetime."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / LOCK_NAME
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise ArchiveError(
                f"{folder} is being archived by another process (lock {self.path})"
            ) from None

    def release(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)


class Archiver:
    """Archive ``settings.topic_customer_path`` into ``settings.archive_dir``."""

    def __init__(
        self,
        settings: HubSettings,
        *,
        policy: RollPolicy | None = None,
        serializer: EventSerializer | None = None,
        catalog: SchemaCatalog | None = None,
        progress_every_s: float = 10.0,
    ) -> None:
        self.settings = settings
        self.topic = settings.topic_customer_path
        self.root = Path(settings.archive_dir)
        self.policy = policy or RollPolicy()
        self.catalog = catalog if catalog is not None else default_schema_catalog()
        self.serializer = serializer or build_serializer(settings, self.catalog)
        plain = _plain_catalog(self.catalog)
        self._plain = None if plain is None else SingleObjectSerializer(plain)
        self.schema = _schema_for(self.catalog)
        self.short_names = {e.full_name: e.short_name for e in self.catalog}
        self.progress_every_s = progress_every_s
        self.stats = ArchiveStats()
        self._open: dict[int, _OpenFile] = {}

    async def run(self, *, once: bool = False, stop: asyncio.Event | None = None) -> ArchiveStats:
        """Archive until ``stop`` is set, or (``once``) up to the end offsets seen at start."""
        stop = stop or asyncio.Event()
        started = time.monotonic()
        lock = _Lock(topic_dir(self.root, self.topic))
        try:
            ids = await partition_ids(self.settings, self.topic)
            consumer = make_consumer(
                self.settings,
                group_id=self.settings.archive_group,
                auto_offset_reset="none",
                max_partition_fetch_bytes=4 * 1024 * 1024,
            )
            await consumer.start()
            try:
                partitions = [TopicPartition(self.topic, p) for p in ids]
                consumer.assign(partitions)
                await self._resume(consumer, partitions)
                end = await consumer.end_offsets(partitions) if once else {}
                await self._loop(consumer, partitions, end, once, stop)
                await self._close_all(consumer, commit_positions=True)
            finally:
                for open_file in self._open.values():
                    open_file.discard()
                self._open.clear()
                await consumer.stop()
        finally:
            lock.release()
        self.stats.elapsed_s = time.monotonic() - started
        log.info(
            "archive.stopped",
            records=self.stats.records,
            poison=self.stats.poison,
            files=len(self.stats.files),
            elapsed_s=round(self.stats.elapsed_s, 3),
        )
        return self.stats

    async def _resume(self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> None:
        """Seek every partition to max(committed, last archived + 1); delete temp files."""
        base = topic_dir(self.root, self.topic)
        for temp in base.glob("date=*/.part-*.avro.tmp"):
            log.info("archive.unfinished_file_removed", file=str(temp))
            temp.unlink()
        newest: dict[int, tuple[int, date, Path]] = {}
        for p, first, day, path in _named_files(self.root, self.topic):
            newest[p] = (first, day, path)  # sorted by first offset: the last one wins
        beginnings = await consumer.beginning_offsets(partitions)
        ends = await consumer.end_offsets(partitions)
        for tp in partitions:
            committed = await consumer.committed(tp)
            archived = None
            if tp.partition in newest:
                first, day, path = newest[tp.partition]
                archived = _archive_file(self.topic, tp.partition, first, day, path).last_offset
            resumes = (committed, None if archived is None else archived + 1)
            candidates = [o for o in resumes if o is not None]
            resume = max(candidates) if candidates else beginnings[tp]
            if resume > ends[tp]:
                raise ArchiveError(
                    f"{tp.topic}[{tp.partition}] ends at offset {ends[tp]}, but the archive "
                    f"under {self.root} (or the group's commit) continues from {resume}: was "
                    "the topic re-created? Archive it into another HUB_ARCHIVE_DIR"
                )
            if resume < beginnings[tp]:
                log.warning(
                    "archive.records_lost_to_retention",
                    partition=tp.partition,
                    first_missing=resume,
                    log_start=beginnings[tp],
                )
                resume = beginnings[tp]
            consumer.seek(tp, resume)
            self.stats.resumed_from[tp.partition] = resume
        log.info("archive.resumed", topic=self.topic, positions=self.stats.resumed_from)

    async def _loop(
        self,
        consumer: AIOKafkaConsumer,
        partitions: list[TopicPartition],
        end: dict[TopicPartition, int],
        once: bool,
        stop: asyncio.Event,
    ) -> None:
        behind = list(partitions)
        if once:
            behind = [tp for tp in partitions if await consumer.position(tp) < end[tp]]
        next_progress = time.monotonic() + self.progress_every_s
        last_count, last_time = 0, time.monotonic()
        poll_ms = int(max(50, min(1000, self.policy.idle_s * 1000 / 2)))
        while not stop.is_set() and (behind or not once):
            try:
                batches = await consumer.getmany(timeout_ms=poll_ms, max_records=5000)
            except OffsetOutOfRangeError as error:
                await self._out_of_range(consumer, error)
                continue
            for tp, records in batches.items():
                for record in records:
                    await self._append(consumer, tp, record)
            await self._roll_idle(consumer)
            if once:
                behind = [tp for tp in behind if await consumer.position(tp) < end[tp]]
            now = time.monotonic()
            if now >= next_progress:
                rate = (self.stats.records - last_count) / (now - last_time)
                log.info(
                    "archive.progress",
                    records=self.stats.records,
                    records_per_s=round(rate, 1),
                    files=len(self.stats.files),
                    open_files=len(self._open),
                    poison=self.stats.poison,
                )
                last_count, last_time = self.stats.records, now
                next_progress = now + self.progress_every_s

    async def _out_of_range(self, consumer: AIOKafkaConsumer, error: OffsetOutOfRangeError) -> None:
        """Retention deleted records before they were archived: say which, go on from the log
        start. A position past the end (the topic deleted and made anew) is refused: the folder
        holds another topic's history."""
        positions: dict[TopicPartition, int] = error.args[0] if error.args else {}
        beginnings = await consumer.beginning_offsets(list(positions))
        for tp, offset in positions.items():
            if offset >= beginnings[tp]:
                raise ArchiveError(
                    f"{tp.topic}[{tp.partition}] has no offset {offset}, which the archive "
                    f"under {self.root} continues from: was the topic re-created? Archive it "
                    "into another HUB_ARCHIVE_DIR"
                ) from error
            log.warning(
                "archive.records_lost_to_retention",
                partition=tp.partition,
                first_missing=offset,
                log_start=beginnings[tp],
            )
            consumer.seek(tp, beginnings[tp])

    async def _append(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, record: ConsumerRecord[Any, Any]
    ) -> None:
        day = datetime.fromtimestamp(record.timestamp / 1000, UTC).date()
        open_file = self._open.get(tp.partition)
        if open_file is not None and (
            open_file.day != day or open_file.records >= self.policy.max_records
        ):
            await self._close(consumer, tp.partition)
            open_file = None
        if open_file is None:
            open_file = _OpenFile(
                self.root,
                self.topic,
                tp.partition,
                day,
                record.offset,
                self.schema,
                self.settings.archive_codec,
            )
            self._open[tp.partition] = open_file
        open_file.write(await self._log_record(record), record.offset)
        self.stats.records += 1

    async def _log_record(self, record: ConsumerRecord[Any, Any]) -> dict[str, Any]:
        key: str | None = None
        raw_key: bytes | None = None
        if record.key is not None:
            try:
                key = bytes(record.key).decode("utf-8")
            except UnicodeDecodeError:
                raw_key = bytes(record.key)
        out: dict[str, Any] = {
            "partition": record.partition,
            "offset": record.offset,
            "timestamp": record.timestamp,
            "key": key,
            "raw_key": raw_key,
            "event_type": None,
            "writer_schema": None,
            "event": None,
            "raw": None,
            "error": None,
            "headers": {k: (None if v is None else bytes(v)) for k, v in record.headers or ()},
        }
        value = record.value
        if value is None:
            out["error"] = "the record has no value"
            self.stats.poison += 1
            return out
        value = bytes(value)
        try:
            if self._plain is not None and value[:2] == SINGLE_OBJECT_MAGIC:
                decoded = self._plain.decode(value)
            else:
                decoded = await self.serializer.adecode(value)
            short = self.short_names[decoded.type_name]
        except (SerdeError, KeyError) as exc:
            if _transient(exc):
                raise  # a registry that does not answer now: retried by a restart, not raw
            out["raw"] = value
            out["error"] = f"{type(exc).__name__}: {exc}"[:1000]
            if value[:2] == SINGLE_OBJECT_MAGIC and len(value) >= SINGLE_OBJECT_HEADER_SIZE:
                out["writer_schema"] = value[2:SINGLE_OBJECT_HEADER_SIZE].hex()
            self.stats.poison += 1
            log.warning(
                "archive.undecodable_record",
                partition=record.partition,
                offset=record.offset,
                error=type(exc).__name__,
            )
            return out
        out["event_type"] = short
        out["writer_schema"] = decoded.writer_schema_ref
        out["event"] = (decoded.type_name, decoded.record)
        return out

    async def _roll_idle(self, consumer: AIOKafkaConsumer) -> None:
        now = time.monotonic()
        for partition, open_file in list(self._open.items()):
            if (
                now - open_file.last_write >= self.policy.idle_s
                or now - open_file.opened >= self.policy.max_age_s
            ):
                await self._close(consumer, partition)

    async def _close(self, consumer: AIOKafkaConsumer, partition: int) -> None:
        open_file = self._open.pop(partition)
        path = open_file.close()
        self.stats.files.append(path)
        log.info(
            "archive.file_closed",
            file=str(path),
            records=open_file.records,
            first_offset=open_file.first_offset,
            last_offset=open_file.last_offset,
        )
        await self._commit(
            consumer, {TopicPartition(self.topic, partition): open_file.last_offset + 1}
        )

    async def _commit(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        await consumer.commit(offsets)

    async def _close_all(self, consumer: AIOKafkaConsumer, *, commit_positions: bool) -> None:
        """Close every open file; then commit each position (past transaction markers too)."""
        for partition in sorted(self._open):
            await self._close(consumer, partition)
        if commit_positions:
            positions = {tp: await consumer.position(tp) for tp in consumer.assignment()}
            ahead: dict[TopicPartition, int] = {}
            for tp, position in positions.items():
                committed = await consumer.committed(tp)
                if committed is None or position > committed:
                    ahead[tp] = position
            if ahead:
                await self._commit(consumer, ahead)


def _transient(exc: Exception) -> bool:
    """A registry that could not be reached or failed (5xx), not one that lacks the id."""
    return (
        isinstance(exc, SchemaRegistryError)
        and not isinstance(exc, SchemaNotFound)
        and (exc.status_code is None or exc.status_code >= 500)
    )


async def run_archive(
    settings: HubSettings,
    *,
    once: bool = False,
    policy: RollPolicy | None = None,
    progress_every_s: float = 10.0,
    handle_signals: bool = False,
) -> ArchiveStats:
    """Run one :class:`Archiver`; ``handle_signals``: SIGTERM/SIGINT close, commit and leave."""
    stop = asyncio.Event()
    if handle_signals:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
    archiver = Archiver(settings, policy=policy, progress_every_s=progress_every_s)
    return await archiver.run(once=once, stop=stop)
