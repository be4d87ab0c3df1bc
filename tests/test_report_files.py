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

from hub.reporting.render import (
    COMPUTED_COLUMNS,
    INDICATOR_SCHEMA,
    ReportMeta,
    csv_bytes,
    normalise,
    write_report,
)
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
    names = COMPUTED_COLUMNS
    table = pa.Table.from_pylist([dict(zip(names, (*r, "now"), strict=True)) for r in rows])
    text = csv_bytes(normalise(table)).decode("utf-8")
    assert text.splitlines()[0] == ",".join(INDICATOR_SCHEMA.names)
    assert INDICATOR_SCHEMA.names == [*names, "suppressed"]
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


def _cells(text: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text.decode("utf-8"))))[1:]


def test_small_cells_below_the_employment_area_are_suppressed() -> None:
    """Worked out by hand with a minimum of 5: a cell of 1-4 at municipality, team or expert
    level is blanked; 5 is shown, and 0 (nobody to single out); every other level is shown
    whatever its n; a row with no n (nothing to judge it by) is left as it is."""
    rows = [
        # (level, code, value, n) -> (value, n, suppressed) in the CSV
        ("country", "FI", 1.0, 1),  # the country's headline: untouched
        ("regional_centre", "01", 2.0, 2),
        ("region", "01", 3.0, 3),
        ("employment_area", "0101", 4.0, 4),
        ("municipality", "091", 1.0, 1),  # one person: singled out
        ("municipality", "092", 4.0, 4),
        ("municipality", "235", 5.0, 5),  # the minimum: shown
        ("team", "T1", 0.0, 0),
        ("team", "T2", 12.5, 8),
        ("expert", "08-E608", 1.0, 1),  # one integration plan by one expert
        ("expert", "08-E609", None, None),
    ]
    table = pa.Table.from_pylist(
        [
            dict(
                zip(
                    COMPUTED_COLUMNS,
                    ("plans", "plans", level, code, "2026-01", "", value, n, "now"),
                    strict=True,
                )
            )
            for level, code, value, n in rows
        ]
    )
    cells = {(r[2], r[3]): (r[6], r[7], r[9]) for r in _cells(csv_bytes(normalise(table, 5)))}
    assert cells == {
        ("country", "FI"): ("1.0", "1", "false"),
        ("regional_centre", "01"): ("2.0", "2", "false"),
        ("region", "01"): ("3.0", "3", "false"),
        ("employment_area", "0101"): ("4.0", "4", "false"),
        ("municipality", "091"): ("", "", "true"),
        ("municipality", "092"): ("", "", "true"),
        ("municipality", "235"): ("5.0", "5", "false"),
        ("team", "T1"): ("0.0", "0", "false"),
        ("team", "T2"): ("12.5", "8", "false"),
        ("expert", "08-E608"): ("", "", "true"),
        ("expert", "08-E609"): ("", "", "false"),
    }
    # Normalising again (the API caches normalised tables) changes nothing.
    once = normalise(table, 5)
    assert normalise(once, 5).equals(once)
    # A minimum of 1 shows every cell.
    shown = {(r[2], r[3]): r[9] for r in _cells(csv_bytes(normalise(table, 1)))}
    assert set(shown.values()) == {"false"}


def test_the_as_of_moment_gets_its_utc_offset() -> None:
    rows = [("a", "m", "country", "FI", "2026-01", "", 1.0, 1, "2026-02-04T22:00:00")]
    table = pa.Table.from_pylist([dict(zip(COMPUTED_COLUMNS, r, strict=True)) for r in rows])
    assert normalise(table).column("as_of").to_pylist() == ["2026-02-04T22:00:00Z"]
    for label in ("now", "2026-02-05", "2026-02-04T22:00:00Z"):
        table = table.set_column(8, "as_of", pa.array([label]))
        assert normalise(table).column("as_of").to_pylist() == [label]
