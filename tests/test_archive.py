"""The archive's record schema and reader, on real files without Kafka.

Files are written here with the archiver's own file writer (its Kafka side is covered by
tests/test_archive_on_kafka.py); what a reader must see is computed by hand in each test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import avro.schema
import fastavro
import pytest

from connectors.simulator import SimulationConfig, simulate
from connectors.simulator.paths import in_time_order
from hub.identity import Pseudonymizer
from hub.reporting.archive import (
    RECORD_NAME,
    ArchiveError,
    _Lock,
    _OpenFile,
    _schema_for,
    archive_schema,
    iter_archive,
    list_archive,
)
from hub.serde import SchemaCatalog, default_catalog
from tests.conftest import SIMULATION_SECRET

TOPIC = "customer-path"


def _record(partition: int, offset: int, moment: datetime, event: Any = None) -> dict[str, Any]:
    return {
        "partition": partition,
        "offset": offset,
        "timestamp": int(moment.timestamp() * 1000),
        "key": f"key-{offset}",
        "raw_key": None,
        "event_type": None if event is None else event.event_type,
        "writer_schema": None,
        "event": None if event is None else (event.full_name(), event.to_avro()),
        "raw": None if event is not None else f"raw {partition}/{offset}".encode(),
        "error": None if event is not None else "BadMagic: test",
        "headers": {"ce_id": b"x"},
    }


def _write(
    root: Path,
    partition: int,
    day: date,
    records: list[dict[str, Any]],
    catalog: SchemaCatalog | None = None,
    codec: str = "zstandard",
) -> Path:
    schema = _schema_for(catalog or default_catalog())
    file = _OpenFile(root, TOPIC, partition, day, records[0]["offset"], schema, codec)
    for record in records:
        file.write(record, record["offset"])
    return file.close()


def test_schema_holds_every_event_type_once_and_parses_in_both_libraries() -> None:
    schema = archive_schema()
    assert schema["name"] == RECORD_NAME
    union = next(f["type"] for f in schema["fields"] if f["name"] == "event")
    names = {e.full_name for e in default_catalog()}
    assert len(names) == 13
    assert union[0] == "null"
    assert {branch["name"] for branch in union[1:]} == {n.rsplit(".", 1)[1] for n in names}
    text = json.dumps(schema)
    assert text.count('"name": "Envelope"') == 1  # defined once, referred to by name after
    fastavro.parse_schema(schema, named_schemas={})
    parsed = avro.schema.parse(text)
    assert isinstance(parsed, avro.schema.RecordSchema)
    assert parsed.fullname == RECORD_NAME


def test_reader_orders_by_partition_and_offset_skips_temp_files_and_stops_at_until(
    tmp_path: Path,
) -> None:
    d1 = datetime(2026, 1, 4, 12, tzinfo=UTC)
    d2 = datetime(2026, 1, 5, 0, 0, 0, 500_000, tzinfo=UTC)
    # Written out of order on purpose: partition 1 first, a later file of day 1 after day 2.
    _write(tmp_path, 1, d2.date(), [_record(1, 40, d2), _record(1, 41, d2)])
    _write(tmp_path, 1, d1.date(), [_record(1, 3, d1), _record(1, 7, d1)])
    _write(tmp_path, 0, d1.date(), [_record(0, 0, d1)])
    _write(tmp_path, 0, d1.date(), [_record(0, 5, d1), _record(0, 6, d1)])
    unfinished = tmp_path / TOPIC / "date=2026-01-05" / ".part-0-7.avro.tmp"
    unfinished.write_bytes(b"half a file")
    (tmp_path / TOPIC / "date=2026-01-05" / "notes.txt").write_text("not an archive file")

    items = list(iter_archive(tmp_path, TOPIC))
    assert [(a.partition, a.offset) for a in items] == [
        (0, 0),
        (0, 5),
        (0, 6),
        (1, 3),
        (1, 7),
        (1, 40),
        (1, 41),
    ]
    assert items[0].raw == b"raw 0/0"
    assert items[0].record is None
    assert items[0].key == "key-0"
    assert items[0].timestamp == d1
    assert items[0].headers == {"ce_id": b"x"}

    until = datetime(2026, 1, 5, 0, 0, 0, 500_000, tzinfo=UTC)  # the day-2 records' time
    assert [(a.partition, a.offset) for a in iter_archive(tmp_path, TOPIC, until=until)] == [
        (0, 0),
        (0, 5),
        (0, 6),
        (1, 3),
        (1, 7),
    ]
    naive = datetime(2026, 1, 4, 12, 0, 0, 1000)  # UTC, one millisecond after d1
    assert len(list(iter_archive(tmp_path, TOPIC, until=naive))) == 5

    listed = [
        (f.partition, f.first_offset, f.last_offset, f.records)
        for f in list_archive(tmp_path, TOPIC)
    ]
    assert listed == [(0, 0, 0, 1), (0, 5, 6, 2), (1, 3, 7, 2), (1, 40, 41, 2)]
    with pytest.raises(ArchiveError, match="does not exist"):
        list(iter_archive(tmp_path, "no-such-topic"))  # a replay of nothing is a mistake


def test_header_carries_partition_offsets_and_codec(tmp_path: Path) -> None:
    moment = datetime(2026, 3, 1, 8, tzinfo=UTC)
    path = _write(
        tmp_path,
        2,
        moment.date(),
        [_record(2, 10, moment), _record(2, 12, moment)],
        codec="deflate",
    )
    assert path == tmp_path / TOPIC / "date=2026-03-01" / "part-2-10.avro"
    with path.open("rb") as fo:
        meta = fastavro.reader(fo).metadata
    assert meta["avro.codec"] == "deflate"
    assert (meta["hub.topic"], meta["hub.partition"], meta["hub.date"]) == (
        TOPIC,
        "2",
        "2026-03-01",
    )
    assert int(meta["hub.first_offset"]) == 10
    assert int(meta["hub.last_offset"]) == 12
    assert int(meta["hub.records"]) == 2
    assert not list(path.parent.glob(".*.tmp"))


def test_a_file_of_an_older_schema_reads_as_the_current_one(tmp_path: Path) -> None:
    """Archived before the envelope had corrects_event_id/retracted: read with both defaults."""
    current = default_catalog()
    first_versions = [event.history[0].raw for event in current]
    old = SchemaCatalog.from_schemas(first_versions)
    assert "corrects_event_id" not in json.dumps(old.current("JobseekerRegistered").raw)
    paths = list(simulate(SimulationConfig(jobseekers=3, seed=1), Pseudonymizer(SIMULATION_SECRET)))
    events = [e for e in in_time_order(paths) if e.event_type == "JobseekerRegistered"]
    moment = datetime(2025, 11, 3, tzinfo=UTC)
    records = [_record(0, i, moment, e) for i, e in enumerate(events)]
    _write(tmp_path, 0, moment.date(), records, catalog=old)

    items = list(iter_archive(tmp_path, TOPIC))
    assert len(items) == len(events)
    for item, event in zip(items, events, strict=True):
        assert item.type_name == "JobseekerRegistered"
        assert item.record is not None
        envelope = item.record["envelope"]
        assert envelope["event_id"] == event.envelope.event_id
        assert envelope["corrects_event_id"] is None
        assert envelope["retracted"] is False


def test_a_second_archiver_on_the_same_folder_is_refused(tmp_path: Path) -> None:
    first = _Lock(tmp_path / TOPIC)
    try:
        with pytest.raises(ArchiveError, match="another process"):
            _Lock(tmp_path / TOPIC)
    finally:
        first.release()
    _Lock(tmp_path / TOPIC).release()


def _avro_tools_jar() -> Path | None:
    configured = os.environ.get("HUB_AVRO_TOOLS_JAR")
    if configured:
        return Path(configured)
    found = sorted(Path.home().glob(".m2/repository/org/apache/avro/avro-tools/*/avro-tools-*.jar"))
    return found[-1] if found else None


@pytest.mark.skipif(
    shutil.which("java") is None or _avro_tools_jar() is None,
    reason="needs java and Apache avro-tools (mvn dependency:get "
    "-Dartifact=org.apache.avro:avro-tools:1.12.0 -Dtransitive=false, or HUB_AVRO_TOOLS_JAR)",
)
def test_the_java_avro_library_reads_a_zstandard_file(tmp_path: Path) -> None:
    """avro-tools is the Java Avro library that Spark and Trino read Avro with; zstandard is
    the codec at risk (deflate is in every Avro implementation), and its blocks are what the
    ``zstandard`` package wrote for fastavro here."""
    paths = list(simulate(SimulationConfig(jobseekers=4, seed=2), Pseudonymizer(SIMULATION_SECRET)))
    events = list(in_time_order(paths))
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    records = [_record(0, i, moment, e) for i, e in enumerate(events)]
    records.append(_record(0, len(events), moment))  # a poison record, kept raw
    path = _write(tmp_path, 0, moment.date(), records, codec="zstandard")
    jar = str(_avro_tools_jar())
    out = subprocess.run(
        ["java", "-jar", jar, "tojson", str(path)], capture_output=True, check=True, timeout=120
    ).stdout.decode()
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["offset"] for r in rows] == list(range(len(events) + 1))
    ids = [next(iter(r["event"].values()))["envelope"]["event_id"] for r in rows[:-1]]
    assert ids == [str(e.envelope.event_id) for e in events]
    assert rows[-1]["raw"] == {"bytes": f"raw 0/{len(events)}"}
