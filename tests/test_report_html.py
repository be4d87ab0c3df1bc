"""report.html in a real browser: headless Chromium (Debian's package), with no network.

The page is rendered from an indicator table built here by hand, so the test knows how many
points each chart must draw: it counts the drawn marks (the SVG paths vega draws with
``role="graphics-symbol"``) of each chart in the DOM Chromium dumps after running the page's
scripts, and reads ``data-charts-rendered`` and ``data-errors`` that the page sets. Every host is
unresolvable for the browser, so a reference to a CDN would leave the charts undrawn.

A screenshot and the page are kept in ``tests/artifacts/`` (ignored by git) for a person to look
at; the path is printed (``pytest -s``) and attached to the test report.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable
from datetime import date
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hub.identity import make_test_identity_code
from hub.reporting.render import ReportMeta, write_report
from hub.reporting.render_html import AREA_LEVEL, CHART_PLAN

KEY = ("indicator", "measure", "level", "code", "period", "breakdown")
ARTIFACTS = Path(__file__).parent / "artifacts"
MONTHS = ("2025-08", "2025-09", "2025-10", "2025-11", "2025-12", "2026-01")
PERIOD = MONTHS[-1]
AREAS = ("01", "02", "03", "04", "05")
BANDS = ("0", "10", "20", "30", "40", "50")

#: Personal data in the places where a source system chooses free text: an expert's staff id,
#: a team code, a breakdown value. None of it may reach a file.
EMAIL = "maija.meikalainen@kunta.example.fi"
PHONE = "+358 40 765 4321"
IDENTITY_CODE = make_test_identity_code(date(1985, 3, 14), 912)


def row(
    indicator: str,
    measure: str,
    level: str,
    code: str,
    period: str,
    value: float | None,
    n: int = 10,
    breakdown: str = "",
) -> dict[str, Any]:
    return {
        "indicator": indicator,
        "measure": measure,
        "level": level,
        "code": code,
        "period": period,
        "breakdown": breakdown,
        "value": value,
        "n": n,
        "as_of": "now",
    }


def sample_table() -> tuple[pa.Table, dict[str, Counter[str]]]:
    """Rows for every chart of the plan, and the marks each chart must draw, by mark kind.

    A trend gets a value for each month but one (a NULL, e.g. a median of nothing, draws no
    point); an areas chart a bar per regional centre with a value and the country's rule; a
    breakdown chart a bar per band.
    """
    rows: dict[tuple[str, ...], dict[str, Any]] = {}

    def add(*args: Any, **kwargs: Any) -> None:
        new = row(*args, **kwargs)
        rows.setdefault(tuple(str(new[k]) for k in KEY), new)

    expected: dict[str, Counter[str]] = {}
    for index, plan in enumerate(CHART_PLAN):
        chart_id = f"chart-{plan.kind}-{plan.indicator}-{plan.measure}".replace("_", "-")
        i, m = plan.indicator, plan.measure
        if plan.kind == "trend":
            for month_index, month in enumerate(MONTHS):
                missing = month_index == index % len(MONTHS)
                add(i, m, "country", "FI", month, None if missing else 10.0 + month_index)
            expected[chart_id] = Counter(symbol=len(MONTHS) - 1, line=1)
        elif plan.kind == "areas":
            add(i, m, "country", "FI", PERIOD, 50.0, 100)
            for area_index, area in enumerate(AREAS):
                add(i, m, AREA_LEVEL, area, PERIOD, 40.0 + 5 * area_index)
            add(i, m, AREA_LEVEL, "06", PERIOD, None, 0)  # nothing to draw
            country = rows[(i, m, "country", "FI", PERIOD, "")]["value"]  # a trend's NULL?
            expected[chart_id] = Counter(rect=len(AREAS), rule=int(country is not None))
        else:
            for band_index, band in enumerate(BANDS):
                value = 100.0 - 10 * band_index
                add(i, m, "country", "FI", PERIOD, value, breakdown=f"band={band}")
            expected[chart_id] = Counter(rect=len(BANDS))
    first = CHART_PLAN[0]
    add(first.indicator, first.measure, "expert", EMAIL, PERIOD, 3.0, 4)
    add(first.indicator, first.measure, "team", PHONE, PERIOD, 3.0, 4)
    add(
        first.indicator, first.measure, "country", "FI", PERIOD, 1.0, 1, f"provider={IDENTITY_CODE}"
    )
    return pa.Table.from_pylist(list(rows.values())), expected


def sample_meta() -> ReportMeta:
    return ReportMeta(PERIOD, MONTHS, "now", {CHART_PLAN[0].indicator: "The first indicator."})


_VOID = frozenset({"meta", "link", "br", "hr", "img", "input", "source", "wbr"})


class _Marks(HTMLParser):
    """Per chart container (``id="chart-…"``), the marks vega drew, by kind (``symbol``…)."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, str | None, str | None]] = []  # tag, chart id, mark kind
        self.marks: dict[str, Counter[str]] = {}
        self.body: dict[str, str | None] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "body":
            self.body = found
        chart, kind = (self.stack[-1][1], self.stack[-1][2]) if self.stack else (None, None)
        element_id = found.get("id") or ""
        if element_id.startswith("chart-") and tag == "div":
            chart = element_id
        classes = (found.get("class") or "").split()
        if tag == "g" and "role-mark" in classes:
            kind = next((c.removeprefix("mark-") for c in classes if c.startswith("mark-")), None)
        if chart and kind and found.get("role") == "graphics-symbol":
            self.marks.setdefault(chart, Counter())[kind] += 1
        if tag not in _VOID:
            self.stack.append((tag, chart, kind))

    def handle_endtag(self, tag: str) -> None:
        while self.stack:
            if self.stack.pop()[0] == tag:
                break


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _browser(profile: Path) -> list[str]:
    chromium = _chromium()
    assert chromium is not None
    return [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        # No network at all for the page: a CDN reference would stay unloaded.
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--virtual-time-budget=20000",
        "--window-size=1100,3600",
    ]


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)


@pytest.mark.skipif(
    _chromium() is None, reason="no Chromium installed (tests/run.sh installs Debian's chromium)"
)
def test_report_renders_in_headless_chromium_with_every_chart_drawn(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    table, expected = sample_table()
    files = write_report(table, tmp_path / "report", sample_meta())
    url = files.html.resolve().as_uri()

    dom = _run([*_browser(tmp_path / "profile"), "--dump-dom", url])
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "report.png"
    screenshot.unlink(missing_ok=True)
    _run([*_browser(tmp_path / "profile"), f"--screenshot={screenshot}", url])
    shutil.copyfile(files.html, ARTIFACTS / "report.html")
    record_property("screenshot", str(screenshot))
    print(f"report screenshot: {screenshot}")

    parsed = _Marks()
    parsed.feed(dom.stdout)
    assert parsed.body, dom.stderr[-2000:]
    assert parsed.body.get("data-errors") == "", parsed.body.get("data-errors")
    assert parsed.body.get("data-charts") == str(len(CHART_PLAN))
    assert parsed.body.get("data-charts-rendered") == str(len(CHART_PLAN))
    assert set(parsed.marks) == set(expected)
    for chart_id, marks in expected.items():
        drawn = parsed.marks[chart_id]
        assert {k: drawn[k] for k in marks} == dict(marks), chart_id
    assert screenshot.stat().st_size > 20_000  # a drawn page, not a blank one


def test_report_html_loads_nothing_from_another_host(tmp_path: Path) -> None:
    """No src/href to any URL but the page's own files (the CSV/Parquet links, in-page anchors)."""
    table, _ = sample_table()
    page = write_report(table, tmp_path, sample_meta()).html.read_text(encoding="utf-8")
    markup = re.sub(r"<script[^>]*>.*?</script>", "", page, flags=re.DOTALL)
    references = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", markup)
    assert references
    for reference in references:
        assert reference.startswith(("#", "data:")) or re.fullmatch(
            r"[a-z0-9_]+\.(csv|parquet)", reference
        ), reference
    assert "<script src" not in page
    for cdn in ("cdn.jsdelivr.net", "unpkg.com", "cdnjs"):
        assert cdn not in page
    assert "vegaEmbed" in page  # the bundle is inside the page


def test_personal_data_shaped_codes_reach_no_file(tmp_path: Path) -> None:
    table, _ = sample_table()
    files = write_report(table, tmp_path, sample_meta())
    written = [files.html, *files.csv, *files.parquet]
    for path in written:
        data = path.read_bytes()
        texts = [data.decode("utf-8", errors="replace")]
        if path.suffix == ".parquet":
            texts.append(str(pq.read_table(path).to_pylist()))
        for text in texts:
            for secret in (EMAIL, PHONE, IDENTITY_CODE, "765 4321", "maija"):
                assert secret not in text, (path.name, secret)
    first = (tmp_path / f"{CHART_PLAN[0].indicator}.csv").read_text(encoding="utf-8")
    assert "[REDACTED:e-mail]" in first
    assert "[REDACTED:phone]" in first
    assert "provider=[REDACTED:identity-code]" in first


@pytest.mark.skipif(
    _chromium() is None, reason="no Chromium installed (tests/run.sh installs Debian's chromium)"
)
def test_a_report_of_the_simulated_population_renders_every_chart(tmp_path: Path) -> None:
    """The real indicators of 400 simulated people: every trend draws one point per month
    whose country value the Parquet file holds (NULLs draw none)."""
    from connectors.simulator import SimulationConfig, simulate
    from hub.identity import Pseudonymizer
    from hub.reporting.indicators import INDICATORS, Period, compute_indicators
    from hub.reporting.store import ReportingStore

    people = simulate(SimulationConfig(jobseekers=400, seed=5), Pseudonymizer("x" * 32))
    months = ("2025-11", "2025-12", "2026-01")
    with ReportingStore(":memory:") as store:
        store.load_events(event for path in people for event in path)
        table = compute_indicators(store.con, [Period.parse(m) for m in months])
    meta = ReportMeta("2026-01", months, "now", INDICATORS)
    files = write_report(table, tmp_path / "report", meta)

    dom = _run([*_browser(tmp_path / "profile"), "--dump-dom", files.html.as_uri()])
    parsed = _Marks()
    parsed.feed(dom.stdout)
    assert parsed.body.get("data-errors") == "", parsed.body.get("data-errors")
    drawn_charts = parsed.body.get("data-charts")
    assert drawn_charts == parsed.body.get("data-charts-rendered")
    assert int(drawn_charts or 0) >= 8
    for plan in CHART_PLAN:
        if plan.kind != "trend":
            continue
        chart_id = f"chart-{plan.kind}-{plan.indicator}-{plan.measure}".replace("_", "-")
        rows = pq.read_table(files.folder / f"{plan.indicator}.parquet").to_pylist()
        points = [
            r
            for r in rows
            if (r["measure"], r["level"], r["breakdown"]) == (plan.measure, "country", "")
            and r["value"] is not None
        ]
        assert parsed.marks.get(chart_id, Counter())["symbol"] == len(points), chart_id
