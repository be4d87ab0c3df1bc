"""``hub report`` on a real store: its folder, its headline figures, as of a day, its errors.

The figures are worked out by hand from a scripted scenario (a late correction, as in
tests/test_indicators.py); the personal-data scan runs on a report of the simulator's 400
people, whose events carry names, identity codes, e-mail addresses and phone numbers.
"""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

from connectors.simulator import SimulationConfig, simulate
from hub.cli import cli
from hub.events.customer_path import EVENT_TYPES
from hub.events.sensitivity import pii_field_names
from hub.identity import Pseudonymizer, contains_identity_code
from hub.reporting.render import personal_data_kind
from hub.reporting.report_cli import trend_periods
from hub.reporting.store import ReportingStore
from hub.settings import get_settings
from tests.conftest import duckdb_file_held_by_another_process
from tests.test_indicators import Scenario

SECRET = "test-secret-of-sufficient-length"


def late_correction(path: Path, *, reverse: bool = False) -> None:
    """Two interviews in January 2026 (hand-computed as in tests/test_indicators_api.py).

    P1: start Fri 2.1.2026, held Wed 7.1 (2 working days; 6.1 Epiphany), corrected on
    10.2.2026 to Tue 20.1 (11 working days, after the 10-day deadline of Mon 19.1).
    P2: start Mon 5.1.2026, held Fri 9.1 (3 working days), within its deadline.
    As of 5.2.2026: median (2 + 3) / 2 = 2.5, both within → 100 %.
    Now: median (3 + 11) / 2 = 7, one of two within → 50 %.
    """
    s = Scenario()
    p1 = s.person()
    original = p1.interview(date(2026, 1, 2), date(2026, 1, 7))
    p1.interview(
        date(2026, 1, 2),
        date(2026, 1, 20),
        recorded=datetime(2026, 2, 10, 8, tzinfo=UTC),
        corrects=original.envelope.event_id,
    )
    s.person().interview(date(2026, 1, 5), date(2026, 1, 9))
    events = s.events[::-1] if reverse else s.events
    with ReportingStore(path) as store:
        assert store.load_events(events) == 3


def hub_report(*args: str, **env: str) -> Result:
    get_settings.cache_clear()  # the settings of this call's environment
    try:
        return CliRunner().invoke(cli, ["report", *args], env=env, catch_exceptions=False)
    finally:
        get_settings.cache_clear()


def test_writes_the_files_and_prints_the_folder_and_headline_figures(tmp_path: Path) -> None:
    store = tmp_path / "store.duckdb"
    late_correction(store)
    result = hub_report(
        "--period",
        "2026-01",
        "--months",
        "3",
        HUB_REPORTING_STORE=str(store),
        HUB_REPORT_DIR=str(tmp_path / "reports"),
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    folder = tmp_path / "reports" / "2026-01"
    assert lines[0] == str(folder)
    assert "  access time to the initial interview, median: 7 working days (n=2)" in lines
    assert "  interviews within the deadline: 50 % (n=2)" in lines
    names = {p.name for p in folder.iterdir()}
    assert "report.html" in names
    assert {"initial_interview_access.csv", "initial_interview_access.parquet"} <= names
    rows = pq.read_table(folder / "initial_interview_access.parquet").to_pylist()
    periods = {r["period"] for r in rows}
    assert periods == {"2026-01"} or periods <= {"2025-11", "2025-12", "2026-01"}
    country = {
        (r["measure"], r["period"]): r["value"]
        for r in rows
        if r["level"] == "country" and r["breakdown"] == ""
    }
    assert country[("median_working_days", "2026-01")] == 7.0


def test_as_of_an_earlier_day_has_its_own_folder_and_figures(tmp_path: Path) -> None:
    store = tmp_path / "store.duckdb"
    late_correction(store)
    result = hub_report(
        "--period",
        "2026-01",
        "--as-of",
        "2026-02-05",
        "--store",
        str(store),
        HUB_REPORT_DIR=str(tmp_path / "reports"),
    )
    assert result.exit_code == 0, result.output
    folder = tmp_path / "reports" / "2026-01-asof-2026-02-05"
    assert result.stdout.splitlines()[0] == str(folder)
    assert "  access time to the initial interview, median: 2.5 working days (n=2)" in (
        result.stdout.splitlines()
    )
    assert "  interviews within the deadline: 100 % (n=2)" in result.stdout.splitlines()
    page = (folder / "report.html").read_text(encoding="utf-8")
    assert "as recorded by 2026-02-05" in page
    csv = (folder / "initial_interview_access.csv").read_text(encoding="utf-8")
    assert csv.splitlines()[0].endswith(",as_of,suppressed")
    assert csv.splitlines()[1].endswith(",2026-02-05,false")


def test_two_stores_of_the_same_facts_give_byte_identical_reports(tmp_path: Path) -> None:
    """Loaded in another order, into another file: the same report, byte for byte."""
    late_correction(tmp_path / "a.duckdb")
    late_correction(tmp_path / "b.duckdb", reverse=True)
    for name in ("a", "b"):
        result = hub_report(
            "--period",
            "2026-01",
            "--from",
            "2025-12",
            "--store",
            str(tmp_path / f"{name}.duckdb"),
            "--out",
            str(tmp_path / f"report-{name}"),
        )
        assert result.exit_code == 0, result.output
    first = {p.name: p.read_bytes() for p in (tmp_path / "report-a").iterdir()}
    second = {p.name: p.read_bytes() for p in (tmp_path / "report-b").iterdir()}
    assert len(first) >= 3
    assert first == second


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--period", "2026-13"], "--period must be a month YYYY-MM or a day YYYY-MM-DD"),
        (["--period", "January"], "--period must be a month"),
        (["--period", "2026-01", "--as-of", "yesterday"], "--as-of must be a day"),
        (["--period", "2026-01", "--as-of", "2026-02-05T12:00"], "ISO timestamp with an offset"),
        (["--period", "2026-01", "--from", "2026-02"], "is after --period"),
        (["--period", "2026-01", "--from", "2025-12-01"], "of the same kind"),
        (["--period", "2026-01", "--months", "3", "--from", "2025-11"], "not both"),
        (["--period", "2026-01-15", "--months", "3"], "--months is for a month"),
        (["--period", "2026-01"], "no reporting store at"),
        # Periods and as-of times outside 2000 … five years ahead (they overflowed or took
        # minutes), and day shapes date.fromisoformat takes but a period is not.
        (["--period", "0001-01"], "--period must lie within 2000-01"),
        (["--period", "1999-12-31"], "--period must lie within 2000-01"),
        (["--period", "9999-12", "--months", "1"], "--period must lie within"),
        (["--period", "2026-01", "--from", "1000-01"], "--from must lie within"),
        (["--period", "20260115"], "--period must be a month"),
        (["--period", "2026-W03-4"], "--period must be a month"),
        (["--period", "2026-01", "--as-of", "0001-01-01T00:00:00+14:00"], "as-of time lies"),
        (["--period", "2026-01", "--as-of", "9999-12-31"], "as-of time lies within"),
        (["--period", "2026-01", "--as-of", "2026-W06-4"], "--as-of must be a day"),
    ],
)
def test_bad_input_and_a_missing_store_are_one_line_exit_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = hub_report(*args, "--store", str(tmp_path / "missing.duckdb"))
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "missing.duckdb").exists()


def test_a_store_being_written_by_another_process_is_one_line_exit_2(tmp_path: Path) -> None:
    store = tmp_path / "store.duckdb"
    late_correction(store)
    with duckdb_file_held_by_another_process(store):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "hub",
                "report",
                "--period",
                "2026-01",
                "--store",
                str(store),
                "--out",
                str(tmp_path / "out"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 2, result.stderr
    assert "being written by another process" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


# --- no personal data in any file -----------------------------------------------------------


def _personal_values(value: Any, sensitive: frozenset[str], key: str = "") -> set[str]:
    if isinstance(value, dict):
        return {v for k, item in value.items() for v in _personal_values(item, sensitive, k)}
    if isinstance(value, list):
        return {v for item in value for v in _personal_values(item, sensitive, key)}
    return {value} if key in sensitive and isinstance(value, str) and value else set()


def test_a_report_of_the_simulated_population_holds_no_personal_data(tmp_path: Path) -> None:
    """400 simulated people, whose events carry names, identity codes, e-mails and phones."""
    paths = list(simulate(SimulationConfig(jobseekers=400, seed=5), Pseudonymizer(SECRET)))
    events = [event for path in paths for event in path]
    sensitive = pii_field_names(EVENT_TYPES.values()) | {"personal_identity_code"}
    personal = set()
    for event in events:
        personal |= _personal_values(event.model_dump(mode="json"), sensitive)
    kinds = {personal_data_kind(v) for v in personal}
    assert {"identity-code", "e-mail", "phone"} <= kinds  # the data has them all
    assert any(v.isalpha() for v in personal)  # and names
    store = tmp_path / "store.duckdb"
    with ReportingStore(store) as loaded:
        loaded.load_events(events)
    result = hub_report(
        "--period",
        "2026-01",
        "--from",
        "2025-11",
        "--store",
        str(store),
        "--out",
        str(tmp_path / "report"),
    )
    assert result.exit_code == 0, result.output

    files = sorted((tmp_path / "report").iterdir())
    assert len(files) == 21  # ten indicators' CSV and Parquet, and the page
    # Values are compared as tokens of the text (a name, an e-mail, an identity code), phone
    # numbers by their digits: a substring search of every value in every file takes minutes.
    tokens_of = re.compile(r"[\w.@+-]+")
    phones = {re.sub(r"[^0-9]", "", v) for v in personal if personal_data_kind(v) == "phone"}
    whole = {v for v in personal if tokens_of.fullmatch(v)}
    parts = {t for v in personal - whole for t in tokens_of.findall(v) if len(t) > 3}
    for path in files:
        if path.suffix == ".parquet":
            text = "\n".join(map(str, pq.read_table(path).to_pylist()))
        else:
            text = path.read_text(encoding="utf-8")
        assert not contains_identity_code(text), path.name
        # The page's Vega bundle is code (the same for every report): the page without it.
        shown = re.sub(r"<script>.*?</script>", "", text, flags=re.DOTALL)
        for cell in set(re.split(r"[,\n<>\"'()]", shown)):
            kind = personal_data_kind(cell)
            # A long number (a float's digits) looks like a phone; phones are checked by value.
            assert kind in (None, "phone") or "REDACTED" in cell, (path.name, cell)
        tokens = set(tokens_of.findall(shown))
        assert not whole & tokens, (path.name, sorted(whole & tokens)[:5])
        assert not parts & tokens, (path.name, sorted(parts & tokens)[:5])
        numbers = {re.sub(r"[^0-9]", "", n) for n in re.findall(r"\+?[0-9][0-9 ()-]{5,}", shown)}
        assert not phones & numbers, path.name


def test_a_trend_reaching_back_before_2000_starts_in_january_2000() -> None:
    assert trend_periods("2000-03", None, None) == ["2000-01", "2000-02", "2000-03"]
    assert trend_periods("2000-01", 12, None) == ["2000-01"]


def test_the_as_of_moment_is_labelled_in_utc_with_z(tmp_path: Path) -> None:
    store = tmp_path / "store.duckdb"
    late_correction(store)
    out = tmp_path / "report"
    result = hub_report(
        "--period", "2026-01", "--as-of", "2026-02-10T09:59:00+02:00", "--store", str(store),
        "--out", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    csv = (out / "initial_interview_access.csv").read_text(encoding="utf-8")
    assert csv.splitlines()[1].endswith(",2026-02-10T07:59:00Z,false")
    assert "as recorded by 2026-02-10T07:59:00Z" in (out / "report.html").read_text("utf-8")


def _rows(path: Path, level: str, measure: str) -> list[dict[str, str]]:
    import csv

    with path.open(encoding="utf-8", newline="") as file:
        return [
            r
            for r in csv.DictReader(file)
            if r["level"] == level and r["measure"] == measure and r["breakdown"] == ""
        ]


@pytest.mark.parametrize(("min_cell", "shown"), [(None, False), ("3", False), ("2", True)])
def test_small_cells_below_the_employment_area_are_suppressed_in_every_file(
    tmp_path: Path, min_cell: str | None, shown: bool
) -> None:
    """Two interviews (late_correction), both in one municipality by one expert: n = 2 at
    every level. Below
    the employment area (municipality, expert) a cell of n < HUB_REPORT_MIN_CELL (default 5)
    is blank; the country and the employment area are not."""
    store = tmp_path / "store.duckdb"
    late_correction(store)
    out = tmp_path / "report"
    env = {} if min_cell is None else {"HUB_REPORT_MIN_CELL": min_cell}
    result = hub_report("--period", "2026-01", "--store", str(store), "--out", str(out), **env)
    assert result.exit_code == 0, result.output
    assert "access time to the initial interview, median: 7 working days (n=2)" in result.stdout
    path = out / "initial_interview_access.csv"
    for level in ("country", "employment_area"):
        (row,) = _rows(path, level, "median_working_days")
        assert (row["value"], row["n"], row["suppressed"]) == ("7.0", "2", "false")
    (municipality,) = _rows(path, "municipality", "median_working_days")
    experts = _rows(path, "expert", "interviews")
    assert experts
    expected = ("7.0", "2", "false") if shown else ("", "", "true")
    assert (municipality["value"], municipality["n"], municipality["suppressed"]) == expected
    for row in experts:  # both by the scenario's one expert: n = 2 as well
        assert (row["value"], row["n"], row["suppressed"]) == (
            ("2.0", "2", "false") if shown else ("", "", "true")
        )
    parquet = pq.read_table(out / "initial_interview_access.parquet").to_pylist()
    hidden = [r for r in parquet if r["suppressed"]]
    assert bool(hidden) is not shown
    assert all(r["value"] is None and r["n"] is None for r in hidden)
    assert {r["level"] for r in hidden} <= {"municipality", "team", "expert"}
    page = (out / "report.html").read_text(encoding="utf-8")
    assert f"fewer than {min_cell or 5} people or facts is suppressed" in page


def test_a_period_prints_its_year_with_four_digits() -> None:
    from hub.reporting.indicators import Period

    # strftime writes year 1 as "1": the API once asked the store for period '1-03'.
    assert str(Period.month(1, 3)) == "0001-03"
    assert str(Period.day(date(999, 12, 31))) == "0999-12-31"
