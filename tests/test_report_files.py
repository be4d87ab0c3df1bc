"""The report's CSV and Parquet files: sorted, free of the time of the run, byte-identical.

Two renders of the same indicator table (in any row order) give the same bytes in every file:
what a replay twice, or last month's report against this one, is diffed with.
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from hub.reporting.render import INDICATOR_SCHEMA, ReportMeta, csv_bytes, normalise, write_report
from tests.test_report_html import sample_meta, sample_table


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_two_renders_of_the_same_table_are_byte_identical(tmp_path: Path) -> None:
    table, _ = sample_table()
    write_report(table, tmp_path / "first", sample_meta())
    # The same rows in reverse order: the files sort them.
    reversed_rows = table.take(pa.array(range(table.num_rows - 1, -1, -1)))
    write_report(reversed_rows, tmp_path / "second", sample_meta())
    first, second = _files(tmp_path / "first"), _files(tmp_path / "second")
    names = {name.rsplit(".", 1)[0] for name in first} - {"report"}
    assert set(first) == {
        "report.html",
        *(f"{n}.csv" for n in names),
        *(f"{n}.parquet" for n in names),
    }
    assert first == second


def test_a_different_as_of_changes_the_page(tmp_path: Path) -> None:
    table, _ = sample_table()
    now = write_report(table, tmp_path / "now", sample_meta()).html.read_bytes()
    meta = sample_meta()
    earlier = ReportMeta(meta.period, meta.periods, "2026-02-05", meta.descriptions)
    then = write_report(table, tmp_path / "then", earlier).html.read_text(encoding="utf-8")
    assert now != then.encode()
    assert "as recorded by 2026-02-05" in then


def test_csv_rows_are_sorted_with_shortest_floats_and_empty_nulls() -> None:
    rows = [
        ("b", "m", "country", "FI", "2026-01", "", 0.1 + 0.2, 3),
        ("a", "m", "region", "02", "2026-01", "", None, 0),
        ("a", "m", "country", "FI", "2026-01", "channel=PHONE", 12.0, 7),
        ("a", "m", "country", "FI", "2026-01", "", 1e-7, 1),
    ]
    names = INDICATOR_SCHEMA.names
    table = pa.Table.from_pylist([dict(zip(names, (*r, "now"), strict=True)) for r in rows])
    text = csv_bytes(normalise(table)).decode("utf-8")
    assert text.splitlines()[0] == ",".join(names)
    parsed = list(csv.reader(io.StringIO(text)))[1:]
    # By indicator, measure, level, code, period, breakdown ('' before 'channel=…').
    assert [(r[0], r[2], r[5]) for r in parsed] == [
        ("a", "country", ""),
        ("a", "country", "channel=PHONE"),
        ("a", "region", ""),
        ("b", "country", ""),
    ]
    assert [r[6] for r in parsed] == ["1e-07", "12.0", "", "0.30000000000000004"]
    assert "\r" not in text


def test_parquet_holds_the_rows_and_no_time_of_the_run(tmp_path: Path) -> None:
    table, _ = sample_table()
    files = write_report(table, tmp_path, sample_meta())
    for path in files.parquet:
        metadata = pq.read_metadata(path)
        # created_by names the writer's version only; the key-value metadata is the schema.
        assert metadata.created_by.startswith("parquet-cpp-arrow version ")
        assert set(metadata.metadata or {}) <= {b"ARROW:schema"}
        read = pq.read_table(path)
        assert read.schema.equals(INDICATOR_SCHEMA)
        expected = normalise(table).filter(
            pa.compute.equal(normalise(table)["indicator"], path.stem)
        )
        assert read.to_pylist() == expected.to_pylist()
        assert read.num_rows > 0


def test_a_render_in_another_process_gives_the_same_bytes(tmp_path: Path) -> None:
    """Another interpreter (another hash seed, a fresh Vega bundle) writes the same files."""
    table, _ = sample_table()
    write_report(table, tmp_path / "here", sample_meta())
    script = (
        "import sys; from pathlib import Path; "
        "from hub.reporting.render import write_report; "
        "from tests.test_report_html import sample_meta, sample_table; "
        "write_report(sample_table()[0], Path(sys.argv[1]), sample_meta())"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "there")],
        check=True,
        cwd=Path(__file__).parent.parent,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        capture_output=True,
    )
    assert _files(tmp_path / "here") == _files(tmp_path / "there")
