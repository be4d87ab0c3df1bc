"""``hub report``: the indicators of a period from the reporting store, as files and a page.

Reads the store (HUB_REPORTING_STORE, read-only: a running replay keeps writing elsewhere, or
the command says the store is busy), computes every indicator for the period and the months of
its trend (:func:`hub.reporting.indicators.compute_indicators`), and writes per indicator
``<name>.csv`` and ``<name>.parquet`` and one ``report.html`` (:mod:`hub.reporting.render`) into
``HUB_REPORT_DIR/<period>`` (``<period>-asof-<date>`` for an as-of report) or ``--out``. It prints
the folder and a few headline figures of the whole country.

``--as-of 2026-02-05`` answers with what had been recorded by the end of that day in Finland
(Europe/Helsinki; the indicators convert it to the store's UTC knowledge time); an ISO
timestamp with an offset names the moment itself. Without it, everything known now.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Final

import click

from hub.logging import configure_logging, get_logger
from hub.settings import get_settings

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

#: Exit status of a bad period, as-of or store: the caller's input, as click's usage errors.
EXIT_USAGE: Final = 2
#: Longest trend: ten years of months, or a quarter of days.
MAX_MONTHS: Final = 120
MAX_DAYS: Final = 92
DEFAULT_MONTHS: Final = 6

#: The figures printed after the path: (indicator, measure, label, unit).
HEADLINES: Final[tuple[tuple[str, str, str, str], ...]] = (
    (
        "initial_interview_access",
        "median_working_days",
        "access time to the initial interview, median",
        "working days",
    ),
    ("initial_interview_access", "share_within_deadline", "interviews within the deadline", "%"),
    ("activation_rate", "activation_rate", "activation rate", "%"),
    ("plan_debt", "share_without_plan", "plan debt (due a plan, without one)", "%"),
    ("flows", "long_term_unemployed", "long-term unemployed", "people"),
    ("municipal_benefit_share", "euro_estimate", "municipal share of benefit, estimate", "EUR"),
)

_MONTH: Final = re.compile(r"[0-9]{4}-[0-9]{2}")

log = get_logger(__name__)


class ReportError(click.ClickException):
    """One line on stderr, exit status 2 (bad input, missing or busy store)."""

    exit_code = EXIT_USAGE


def parse_period(text: str, option: str = "--period") -> date:
    """The first day of a month (``2026-01``) or the day (``2026-01-15``), within the range
    periods may cover (:data:`~hub.reporting.indicators.period.FIRST_DAY` to five years
    ahead)."""
    from hub.reporting.indicators.period import FIRST_DAY, Period, PeriodOutOfRange, last_day

    try:
        return Period.parse(text).start
    except PeriodOutOfRange:
        raise ReportError(
            f"{option} must lie within {FIRST_DAY:%Y-%m} … {last_day():%Y-%m}, not {text!r}"
        ) from None
    except ValueError:
        raise ReportError(
            f"{option} must be a month YYYY-MM or a day YYYY-MM-DD, not {text!r}"
        ) from None


def trend_periods(period: str, months: int | None, start: str | None) -> list[str]:
    """The periods to compute, ascending, ending with *period*: months, or days for a day."""
    from hub.reporting.indicators.period import FIRST_DAY

    if months is not None and start is not None:
        raise ReportError("give either --months or --from, not both")
    end = parse_period(period)
    monthly = bool(_MONTH.fullmatch(period))
    if start is not None:
        first = parse_period(start, "--from")
        if bool(_MONTH.fullmatch(start)) != monthly:
            raise ReportError("--from must be of the same kind as --period (both months or days)")
        if first > end:
            raise ReportError(f"--from {start} is after --period {period}")
    if monthly:
        count = months if months is not None else DEFAULT_MONTHS
        if start is not None:
            count = (end.year - first.year) * 12 + end.month - first.month + 1
        if count > MAX_MONTHS:
            raise ReportError(f"the trend may span at most {MAX_MONTHS} months")
        index = end.year * 12 + end.month - 1
        # A trend reaching back past the first month periods may cover starts there.
        count = min(count, index - (FIRST_DAY.year * 12 + FIRST_DAY.month - 1) + 1)
        return [f"{(i // 12):04d}-{(i % 12) + 1:02d}" for i in range(index - count + 1, index + 1)]
    if months is not None:
        raise ReportError("--months is for a month's report; for a day give --from a day")
    first = date.fromisoformat(start) if start is not None else end
    days = (end - first).days + 1
    if days > MAX_DAYS:
        raise ReportError(f"a daily trend may span at most {MAX_DAYS} days")
    return [(first + timedelta(days=i)).isoformat() for i in range(days)]


def parse_as_of(text: str) -> date | datetime:
    from hub.reporting.indicators.period import AsOfOutOfRange, as_of_value

    try:
        return as_of_value(text)
    except AsOfOutOfRange as error:
        raise ReportError(f"--as-of: {error}, not {text!r}") from None
    except ValueError:
        raise ReportError(
            "--as-of must be a day YYYY-MM-DD or an ISO timestamp with an offset "
            f"(2026-02-05T12:00:00+02:00), not {text!r}"
        ) from None


def folder_name(period: str, as_of: str | None) -> str:
    """``2026-01`` or ``2026-01-asof-2026-02-05`` (a timestamp with ``:`` made file-safe)."""
    if as_of is None:
        return period
    return f"{period}-asof-" + re.sub(r"[^0-9A-Za-z.+-]", "-", as_of)


def open_store_read_only(path: Path) -> duckdb.DuckDBPyConnection:
    """The store's DuckDB connection, read-only; a ReportError when it is missing or busy, of
    another layout or not a DuckDB file (``rebuild the store: …``)."""
    from hub.reporting.store import ReportingStore, StoreBusyError, StoreError

    if not path.is_file():
        raise ReportError(
            f"no reporting store at {path}: fill it with hub replay --into store "
            "(or point HUB_REPORTING_STORE / --store at it)"
        )
    try:
        return ReportingStore(path, read_only=True).con
    except StoreBusyError:
        raise ReportError(
            f"the reporting store {path} is being written by another process (a replay?); "
            "try again when it has finished"
        ) from None
    except StoreError as error:  # another layout, not a DuckDB file: rebuild the store
        raise ReportError(str(error)) from None


def headline_lines(table: pa.Table, period: str) -> list[str]:
    from hub.reporting.render import headline_rows

    wanted = [(indicator, measure) for indicator, measure, _, _ in HEADLINES]
    labels = {(i, m): (label, unit) for i, m, label, unit in HEADLINES}
    lines = []
    for indicator, measure, value, n in headline_rows(table, period, wanted):
        label, unit = labels[(indicator, measure)]
        if value is None:
            shown = "no value"
        else:
            number = f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"
            shown = f"{number.replace(',', ' ')} {unit}"
        lines.append(f"  {label}: {shown} (n={n})")
    return lines


@click.command("report")
@click.option("--period", required=True, help="Month (2026-01) or day (2026-01-15) to report.")
@click.option(
    "--as-of",
    "as_of_text",
    default=None,
    help="What had been recorded by then: a day (its end in Finland) or an ISO timestamp with "
    "an offset. Default: everything known now.",
)
@click.option(
    "--months",
    type=click.IntRange(1, MAX_MONTHS),
    default=None,
    help=f"Months of the trend charts, ending with --period.  [default: {DEFAULT_MONTHS}]",
)
@click.option(
    "--from", "start", default=None, help="First period of the trend (instead of --months)."
)
@click.option(
    "--store",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="DuckDB file of the reporting store.  [default: HUB_REPORTING_STORE]",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the files.  [default: HUB_REPORT_DIR/<period>[-asof-<date>]]",
)
def report_command(
    period: str,
    as_of_text: str | None,
    months: int | None,
    start: str | None,
    store: Path | None,
    out: Path | None,
) -> None:
    """Write the indicators of a period as CSV, Parquet and one offline HTML page."""
    settings = get_settings()
    configure_logging(settings)
    periods = trend_periods(period, months, start)
    as_of = parse_as_of(as_of_text) if as_of_text is not None else None
    store_path = store or settings.reporting_store
    folder = out or settings.report_dir / folder_name(period, as_of_text)

    from hub.reporting.indicators import INDICATORS, Period, compute_indicators
    from hub.reporting.render import ReportMeta, as_of_label, write_report

    con = open_store_read_only(store_path)
    try:
        table = compute_indicators(con, [Period.parse(p) for p in periods], as_of)
    finally:
        con.close()
    # The label the indicators give the knowledge time (the files' as_of column, with its
    # offset: see as_of_label).
    labels = table.column("as_of").unique().to_pylist() if table.num_rows else []
    meta = ReportMeta(
        period=period,
        periods=tuple(periods),
        as_of=as_of_label(labels[0] if labels else as_of),
        descriptions=dict(INDICATORS),
        min_cell=settings.report_min_cell,
    )
    files = write_report(table, folder, meta)
    click.echo(str(files.folder))
    for line in headline_lines(table, period):
        click.echo(line)
