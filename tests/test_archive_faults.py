"""Faults of an archive folder: each is one short ArchiveError naming the file or folder.

A replay from the archive (``hub replay --from-archive``) reads whatever is in the folder: a
copy cut short, a stray file named like a part, an empty file, an Avro file of another schema,
or the topic folder given instead of the root. None may end in a reader library's traceback
(or click's bare ``Aborted!`` for an EOFError), and none may silently replay nothing.
"""

from __future__ import annotations

import io
from datetime import UTC, date, datetime
from pathlib import Path

import fastavro
import pytest

from hub.reporting.archive import ArchiveError, iter_archive, list_archive
from tests.test_archive import TOPIC, _record, _write

DAY = date(2026, 1, 5)
MOMENT = datetime(2026, 1, 5, 12, tzinfo=UTC)
#: An ArchiveError is one line a person reads: no schema dump.
MAX_MESSAGE = 400


def _good_file(
    root: Path, partition: int = 0, records: int = 3000, codec: str = "zstandard"
) -> Path:
    return _write(
        root, partition, DAY, [_record(partition, i, MOMENT) for i in range(records)], codec=codec
    )


def _fails(root: Path, *needles: str) -> str:
    """The message of the ArchiveError that list_archive or iter_archive raise for *root*."""
    with pytest.raises(ArchiveError) as caught:
        list(iter_archive(root, TOPIC))
    message = str(caught.value)
    assert "\n" not in message
    assert len(message) <= MAX_MESSAGE, message
    for needle in needles:
        assert needle in message, message
    return message


@pytest.mark.parametrize("codec", ["zstandard", "deflate"])
def test_a_file_cut_short_names_the_file(tmp_path: Path, codec: str) -> None:
    path = _good_file(tmp_path, codec=codec)
    content = path.read_bytes()
    with path.open("rb") as fo:
        fastavro.reader(fo)
        header = fo.tell()
    path.write_bytes(content[: header + (len(content) - header) // 2])
    # Its header is whole: listed, but not readable to the end.
    assert [f.records for f in list_archive(tmp_path, TOPIC)] == [3000]
    _fails(tmp_path, str(path))


def test_garbage_named_like_a_part_names_the_file(tmp_path: Path) -> None:
    _good_file(tmp_path)
    garbage = tmp_path / TOPIC / f"date={DAY}" / "part-0-5000.avro"
    garbage.write_bytes(bytes(range(256)) * 40)
    message = _fails(tmp_path, str(garbage), "not an Avro file")
    with pytest.raises(ArchiveError, match="not an Avro file"):
        list_archive(tmp_path, TOPIC)
    assert "UnicodeDecodeError" in message or "ValueError" in message


def test_an_empty_file_names_the_file(tmp_path: Path) -> None:
    _good_file(tmp_path)
    empty = tmp_path / TOPIC / f"date={DAY}" / "part-1-0.avro"
    empty.write_bytes(b"")
    _fails(tmp_path, str(empty), "is empty")


def test_an_avro_file_of_another_schema_is_named_without_its_schema(tmp_path: Path) -> None:
    _good_file(tmp_path)
    foreign = tmp_path / TOPIC / f"date={DAY}" / "part-2-0.avro"
    schema = {
        "type": "record",
        "name": "Other",
        "namespace": "com.example",
        "fields": [{"name": f"field_{i}", "type": "string"} for i in range(200)],
    }
    buffer = io.BytesIO()
    metadata = {"hub.last_offset": "0", "hub.records": "1"}
    fastavro.writer(buffer, schema, [{f"field_{i}": "x" for i in range(200)}], metadata=metadata)
    foreign.write_bytes(buffer.getvalue())
    _fails(tmp_path, str(foreign), "com.example.Other")


def test_the_topic_folder_given_as_the_root_hints_at_its_parent(tmp_path: Path) -> None:
    _good_file(tmp_path)
    topic_folder = tmp_path / TOPIC
    for reader in (iter_archive, list_archive):
        with pytest.raises(ArchiveError) as caught:
            list(reader(topic_folder, TOPIC))
        assert f"give its parent {tmp_path}" in str(caught.value)
    # A root whose folders are date=…: a topic folder of another name, the same hint.
    other = tmp_path / "copy"
    (tmp_path / TOPIC).rename(other)
    with pytest.raises(ArchiveError, match=f"give its parent {tmp_path}"):
        list(iter_archive(other, TOPIC))


def test_a_missing_or_empty_topic_folder_is_an_error_not_nothing(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="does not exist"):
        list(iter_archive(tmp_path, TOPIC))
    (tmp_path / TOPIC / f"date={DAY}").mkdir(parents=True)
    (tmp_path / TOPIC / f"date={DAY}" / ".part-0-0.avro.tmp").write_bytes(b"unfinished")
    with pytest.raises(ArchiveError, match="holds no part"):
        list(iter_archive(tmp_path, TOPIC))
    with pytest.raises(ArchiveError, match="holds no part"):
        list_archive(tmp_path, TOPIC)


def test_records_before_a_damaged_file_are_read(tmp_path: Path) -> None:
    _good_file(tmp_path, partition=0, records=10)
    bad = _good_file(tmp_path, partition=1, records=3000)
    bad.write_bytes(bad.read_bytes()[:-2000])
    seen: list[tuple[int, int]] = []

    def read_all() -> None:
        seen.extend((item.partition, item.offset) for item in iter_archive(tmp_path, TOPIC))

    with pytest.raises(ArchiveError, match=r"part-1-0\.avro"):
        read_all()
    assert seen[:10] == [(0, i) for i in range(10)]
