"""The report's files: per indicator a CSV and a Parquet file, and one offline HTML page.

Input is the table :func:`hub.reporting.indicators.compute_indicators` gives (one row per value:
indicator, measure, level, code, period, breakdown, value, n, as_of). The files are a pure
function of that table and the report's description (:class:`ReportMeta`): rows sorted by the
key columns, no time of the run inside any file, Parquet written with fixed options. So a
replay of the same log renders byte-identical files, and a finance officer can diff this
month's report against last month's.

Last line of defence for personal data: the store holds pseudonyms and codes only, but a code
column is free text where a source system chooses the value (an expert's staff id that is an
e-mail address, a team called by a phone number). Every code and breakdown that looks like an
identity code, an e-mail address or a phone number is replaced by ``[REDACTED:<kind>]`` before
anything is written, and the count is logged (see :func:`redact_codes`).

Statistical disclosure control (:func:`suppress_small_cells`): below the employment-area level
(municipality, team, expert) a value computed from 1 to ``HUB_REPORT_MIN_CELL`` - 1 people or
facts would single a person out (one integration plan by one expert, one member's statement
time in a small municipality); its value and n are NULL and ``suppressed`` is true in every
output (files, page, API), never in the store. The country, regional centres, regions and
employment areas are shown as computed.
"""

from __future__ import annotations

import csv
import io
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hub.identity import contains_identity_code
from hub.identity.contact import contact_kind
from hub.logging import get_logger
from hub.reporting.indicators.frame import OUTPUT_SCHEMA

log = get_logger(__name__)

#: The columns of the indicator table, in order, with their Arrow types: the indicators' own
#: columns and whether small-cell suppression hid the value.
INDICATOR_SCHEMA: Final = OUTPUT_SCHEMA.append(pa.field("suppressed", pa.bool_()))
#: The columns :func:`~hub.reporting.indicators.compute_indicators` gives (``suppressed`` is
#: the outputs' own).
COMPUTED_COLUMNS: Final = tuple(n for n in INDICATOR_SCHEMA.names if n != "suppressed")
#: Levels whose small cells are suppressed: below the employment area.
SUPPRESSED_LEVELS: Final = ("municipality", "team", "expert")
#: Default of ``HUB_REPORT_MIN_CELL``: fewer people or facts than this is a small cell.
DEFAULT_MIN_CELL: Final = 5
#: The row order of every file: the key of a value.
SORT_KEYS: Final = ("indicator", "measure", "level", "code", "period", "breakdown")
#: Indicator names become file names.
_INDICATOR_NAME: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")


def personal_data_kind(text: str) -> str | None:
    """What personal data *text* looks like (``identity-code``, ``e-mail``, ``phone``), or None.

    E-mail addresses and phone numbers as :mod:`hub.identity.contact` defines them (phone: any
    phone-shaped run of 7 to 15 digits). A business ID (``1234567-8``) and a date or month are
    not phone numbers; a code of a few digits (municipality ``091``, employment area ``0101``)
    is too short to be one.
    """
    if contains_identity_code(text):
        return "identity-code"
    return contact_kind(text)


def _redacted_code(text: str) -> str:
    kind = personal_data_kind(text)
    return text if kind is None else f"[REDACTED:{kind}]"


def _redacted_breakdown(text: str) -> str:
    """Each ``name=value`` part of a breakdown checked on its own (a value may be a code)."""
    if not text:
        return text
    parts = (part.partition("=") for part in text.split(";"))
    return ";".join(f"{name}{equals}{_redacted_code(value)}" for name, equals, value in parts)


def redact_codes(table: pa.Table) -> tuple[pa.Table, int]:
    """*table* with personal-data-shaped codes and breakdowns replaced; how many were."""
    replaced = 0
    columns = {}
    for name, redact in (("code", _redacted_code), ("breakdown", _redacted_breakdown)):
        values = table.column(name).to_pylist()
        # Few distinct values (areas, teams, experts): check each once.
        mapping = {v: redact(v) for v in set(values) if v is not None}
        replaced += sum(1 for v in values if v is not None and mapping[v] != v)
        columns[name] = pa.array(
            [None if v is None else mapping[v] for v in values], type=pa.string()
        )
    for name, column in columns.items():
        table = table.set_column(table.schema.get_field_index(name), name, column)
    return table, replaced


def suppress_small_cells(table: pa.Table, min_cell: int) -> tuple[pa.Table, int]:
    """*table* (with ``suppressed``) with every small cell below the employment area blanked.

    A row of :data:`SUPPRESSED_LEVELS` computed from 1 to *min_cell* - 1 people or facts gets
    NULL ``value`` and ``n`` and ``suppressed`` true; a row suppressed already stays so. An n
    of 0 is shown (a cell of nobody singles no one out, and a median of nothing is NULL
    anyway), as is a row without n. Returns the table and how many rows were newly suppressed.
    """
    n = table.column("n")
    small = pc.and_(
        pc.is_in(table.column("level"), pa.array(SUPPRESSED_LEVELS, pa.string())),
        pc.and_(pc.greater(n, 0), pc.less(n, min_cell)),
    )
    small = pc.fill_null(small, False)
    count = pc.sum(pc.cast(small, pa.int64())).as_py() or 0
    columns = {
        "value": pc.if_else(small, pa.scalar(None, pa.float64()), table.column("value")),
        "n": pc.if_else(small, pa.scalar(None, pa.int64()), table.column("n")),
        "suppressed": pc.or_(table.column("suppressed"), small),
    }
    for name, column in columns.items():
        table = table.set_column(table.schema.get_field_index(name), name, column)
    return table, count


def as_of_label(as_of: date | datetime | str | None) -> str:
    """The knowledge time as the outputs give it: ``now``, a day, or a UTC moment with ``Z``.

    The indicators label a moment as naive UTC (``2026-02-04T22:00:00``); a BI tool would
    read that as local time, so the outputs add its offset (``2026-02-04T22:00:00Z``).
    """
    if as_of is None:
        return "now"
    if isinstance(as_of, str):
        if as_of == "now" or not ("T" in as_of or " " in as_of):
            return as_of
        try:
            moment = datetime.fromisoformat(as_of)
        except ValueError:
            return as_of
        return as_of_label(moment)
    if not isinstance(as_of, datetime):
        return as_of.isoformat()
    if as_of.tzinfo is not None:
        as_of = as_of.astimezone(UTC).replace(tzinfo=None)
    return as_of.isoformat() + "Z"


def normalise(table: pa.Table, min_cell: int = DEFAULT_MIN_CELL) -> pa.Table:
    """The indicator table in the files' shape: schema order and types, redacted, small cells
    suppressed (:func:`suppress_small_cells`), the as-of label with its offset, sorted.

    Extra columns are dropped; a missing one is an error (a table from another version of the
    indicators would otherwise render half a report). Normalising twice changes nothing.
    """
    missing = [name for name in COMPUTED_COLUMNS if name not in table.column_names]
    if missing:
        raise ValueError(f"the indicator table lacks the columns {missing}")
    if "suppressed" not in table.column_names:
        table = table.append_column("suppressed", pa.repeat(False, table.num_rows))
    table = table.select(INDICATOR_SCHEMA.names).cast(INDICATOR_SCHEMA)
    table = table.set_column(
        table.schema.get_field_index("suppressed"),
        "suppressed",
        pc.fill_null(table.column("suppressed"), False),
    )
    table, replaced = redact_codes(table)
    if replaced:
        log.warning("report.codes_redacted", values=replaced)
    table, suppressed = suppress_small_cells(table, min_cell)
    if suppressed:
        log.info("report.small_cells_suppressed", rows=suppressed, min_cell=min_cell)
    labels = table.column("as_of").to_pylist()
    mapping = {v: as_of_label(v) for v in set(labels) if v is not None}
    table = table.set_column(
        table.schema.get_field_index("as_of"),
        "as_of",
        pa.array([None if v is None else mapping[v] for v in labels], type=pa.string()),
    )
    names = set(table.column("indicator").to_pylist())
    bad = sorted(str(n) for n in names if n is None or not _INDICATOR_NAME.fullmatch(n))
    if bad:
        raise ValueError(f"indicator names must match {_INDICATOR_NAME.pattern}: {bad}")
    # Nulls sort last, and every key column but value/n is a string: a total, stable order.
    return table.sort_by([(key, "ascending") for key in SORT_KEYS])


def indicator_names(table: pa.Table) -> list[str]:
    return sorted(set(table.column("indicator").to_pylist()))


def rows_of(table: pa.Table, indicator: str) -> pa.Table:
    return table.filter(pc.equal(table.column("indicator"), indicator))


# --- files ------------------------------------------------------------------------------------


def _format_value(value: object) -> str:
    """A CSV cell: floats as Python's shortest round-trip repr, NULL as an empty cell,
    booleans ``true``/``false``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def csv_bytes(table: pa.Table) -> bytes:
    """RFC 4180 CSV (UTF-8, ``\\n`` line ends), a header and the rows as they are."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(table.column_names)
    for row in zip(*(table.column(n).to_pylist() for n in table.column_names), strict=True):
        writer.writerow([_format_value(v) for v in row])
    return text.getvalue().encode("utf-8")


def parquet_bytes(table: pa.Table) -> bytes:
    """Parquet with fixed options; pyarrow writes no time into the file (only its version)."""
    sink = pa.BufferOutputStream()
    pq.write_table(
        table,
        sink,
        compression="zstd",
        compression_level=3,
        use_dictionary=True,
        write_statistics=True,
        data_page_version="2.0",
    )
    return bytes(sink.getvalue().to_pybytes())


def _write_atomically(path: Path, content: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, rename: never a half file."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class ReportMeta:
    """What the report is about, shown on the page (never the time of the run)."""

    period: str
    """The report's period (``2026-01`` or ``2026-01-15``)."""
    periods: tuple[str, ...]
    """Every period the table holds, ascending: the trend range, ending with :attr:`period`."""
    as_of: str
    """The knowledge time (ISO timestamp), or ``now``."""
    descriptions: Mapping[str, str] = field(default_factory=dict)
    """One line per indicator name (``INDICATORS`` of the indicators package)."""
    min_cell: int = DEFAULT_MIN_CELL
    """``HUB_REPORT_MIN_CELL``: smaller cells below the employment area are suppressed."""


@dataclass(frozen=True)
class ReportFiles:
    folder: Path
    html: Path
    csv: tuple[Path, ...]
    parquet: tuple[Path, ...]


def write_report(table: pa.Table, folder: Path, meta: ReportMeta) -> ReportFiles:
    """Write ``<indicator>.csv``, ``<indicator>.parquet`` and ``report.html`` into *folder*.

    Each file is written atomically; files of indicators this table does not hold are left
    alone (the folder is the report's own: see ``hub report``).
    """
    from hub.reporting.render_html import render_html

    table = normalise(table, meta.min_cell)
    folder.mkdir(parents=True, exist_ok=True)
    csvs: list[Path] = []
    parquets: list[Path] = []
    for name in indicator_names(table):
        rows = rows_of(table, name)
        csv_path, parquet_path = folder / f"{name}.csv", folder / f"{name}.parquet"
        _write_atomically(csv_path, csv_bytes(rows))
        _write_atomically(parquet_path, parquet_bytes(rows))
        csvs.append(csv_path)
        parquets.append(parquet_path)
    html_path = folder / "report.html"
    _write_atomically(html_path, render_html(table, meta).encode("utf-8"))
    log.info("report.written", folder=str(folder), indicators=len(csvs), rows=table.num_rows)
    return ReportFiles(folder, html_path, tuple(csvs), tuple(parquets))


def headline_rows(
    table: pa.Table, period: str, wanted: Sequence[tuple[str, str]]
) -> list[tuple[str, str, float | None, int | None]]:
    """The country's value of each (indicator, measure) in *wanted* for *period*, if present."""
    table = normalise(table)
    found: dict[tuple[str, str], tuple[float | None, int | None]] = {}
    country = table.filter(
        pc.and_(
            pc.and_(pc.equal(table.column("level"), "country"), pc.equal(table["period"], period)),
            pc.equal(table.column("breakdown"), ""),
        )
    )
    for row in country.to_pylist():
        found[(row["indicator"], row["measure"])] = (row["value"], row["n"])
    return [(i, m, *found[(i, m)]) for i, m in wanted if (i, m) in found]
