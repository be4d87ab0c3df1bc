"""``report.html``: one static page that works offline, with Vega-Lite charts drawn in it.

Charts where a person would rather look than read (:data:`CHART_PLAN`): trends per month, the
regional centres against the country, the share within the deadline, the municipal benefit-share
bands; tables of the headline figures and of each indicator by regional centre. The charts are
altair (Vega-Lite) specifications; the Vega, Vega-Lite and vega-embed JavaScript is inlined from
vl-convert's bundle, so the page loads nothing from anywhere (an intranet, a laptop on a train,
a file attached to an e-mail) and shows the same in ten years.

The page is a pure function of its input: no time of the run, specifications serialised with
sorted keys. When every chart is drawn it sets ``data-charts-rendered`` on ``<body>`` to the
number drawn, and it records any JavaScript error in ``data-errors`` (the headless browser test
reads both).
"""

from __future__ import annotations

import functools
import html
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any, Final, Literal

import altair as alt
import pyarrow as pa
import pyarrow.compute as pc
import vl_convert

from hub.reporting.render import ReportMeta, indicator_names, rows_of

#: The Vega-Lite version of the inlined bundle; altair 6 writes Vega-Lite 6 specifications.
VEGA_LITE_VERSION: Final = "6.4"
#: Level of the "areas against the country" charts and of the per-indicator tables.
AREA_LEVEL: Final = "regional_centre"
#: Most rows of one table on the page; the CSV holds them all.
MAX_TABLE_ROWS: Final = 40
CHART_WIDTH: Final = 560


@dataclass(frozen=True)
class ChartPlan:
    """One chart: what it shows and of which indicator's measure."""

    kind: Literal["trend", "areas", "breakdown"]
    indicator: str
    measure: str
    title: str
    unit: str = ""
    breakdown_prefix: str = ""
    """For ``breakdown``: which breakdown (``band=``) the bars are."""


#: The charts of the report, in page order; a chart whose data the table lacks is left out.
CHART_PLAN: Final[tuple[ChartPlan, ...]] = (
    ChartPlan(
        "trend",
        "initial_interview_access",
        "median_working_days",
        "Access time to the initial interview, median (working days)",
        "working days",
    ),
    ChartPlan(
        "trend",
        "initial_interview_access",
        "share_within_deadline",
        "Initial interviews within the statutory deadline (%)",
        "%",
    ),
    ChartPlan(
        "areas",
        "initial_interview_access",
        "share_within_deadline",
        "Within the deadline by regional centre, against the country (%)",
        "%",
    ),
    ChartPlan("trend", "activation_rate", "activation_rate", "Activation rate (%)", "%"),
    ChartPlan(
        "areas",
        "activation_rate",
        "activation_rate",
        "Activation rate by regional centre, against the country (%)",
        "%",
    ),
    ChartPlan(
        "trend",
        "plan_debt",
        "share_without_plan",
        "Plan debt: active jobseekers due a plan without one (%)",
        "%",
    ),
    ChartPlan("trend", "flows", "spells_started", "Job-search spells started", "spells"),
    ChartPlan(
        "trend", "flows", "long_term_unemployed", "Long-term unemployed (≥ 12 months)", "people"
    ),
    ChartPlan(
        "breakdown",
        "municipal_benefit_share",
        "days_paid",
        "Benefit days paid by band of days accrued before them (0 % … 50 % municipal share)",
        "days",
        "band=",
    ),
    ChartPlan(
        "trend",
        "municipal_benefit_share",
        "euro_estimate",
        "Municipal share of unemployment benefit, estimate (EUR)",
        "EUR",
    ),
)


# --- the charts -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chart:
    chart_id: str
    title: str
    spec: dict[str, Any]
    points: int
    """Data points drawn as marks (points or bars): what a test counts in the SVG."""


def _data(values: list[dict[str, Any]]) -> alt.Data:
    """Inline data of a chart (altair's ``Data`` has no type hints)."""
    return alt.Data(values=values)  # type: ignore[no-untyped-call]


def _where(table: pa.Table, **equal: str) -> pa.Table:
    mask = None
    for column, value in equal.items():
        condition = pc.equal(table.column(column), value)
        mask = condition if mask is None else pc.and_(mask, condition)
    return table if mask is None else table.filter(mask)


def _trend(plan: ChartPlan, rows: pa.Table, meta: ReportMeta) -> Chart | None:
    found = _where(rows, measure=plan.measure, level="country", breakdown="")
    months = set(meta.periods)
    values = [
        {"period": r["period"], "value": r["value"], "n": r["n"]}
        for r in found.to_pylist()
        if r["period"] in months and r["value"] is not None
    ]
    if not values:
        return None
    axis = alt.Axis(labelAngle=0)
    base = alt.Chart(_data(values)).encode(
        # Every period of the trend on the axis: a month with no value is a visible gap.
        x=alt.X("period:O", title=None, scale=alt.Scale(domain=list(meta.periods)), axis=axis),
        y=alt.Y("value:Q", title=plan.unit or None),
        tooltip=[
            alt.Tooltip("period:O", title="period"),
            alt.Tooltip("value:Q", title=plan.unit or "value", format=",.2~f"),
            alt.Tooltip("n:Q", title="n"),
        ],
    )
    chart = alt.layer(base.mark_line(), base.mark_point(filled=True, size=60)).properties(
        width=CHART_WIDTH, height=200, title=plan.title
    )
    return Chart(_chart_id(plan), plan.title, chart.to_dict(), len(values))


def _areas(plan: ChartPlan, rows: pa.Table, meta: ReportMeta) -> Chart | None:
    this = _where(rows, measure=plan.measure, period=meta.period, breakdown="")
    on = _period_start(meta.period)
    values = [
        {"area": area_label(AREA_LEVEL, r["code"], on), "value": r["value"], "n": r["n"]}
        for r in _where(this, level=AREA_LEVEL).to_pylist()
        if r["value"] is not None
    ]
    country = [r["value"] for r in _where(this, level="country").to_pylist()]
    if not values:
        return None
    bars = (
        alt.Chart(_data(values))
        .mark_bar()
        .encode(
            y=alt.Y("area:N", title=None, sort="-x"),
            x=alt.X("value:Q", title=plan.unit or None),
            tooltip=[
                alt.Tooltip("area:N"),
                alt.Tooltip("value:Q", format=",.2~f"),
                alt.Tooltip("n:Q"),
            ],
        )
    )
    layers: list[alt.Chart] = [bars]
    if country and country[0] is not None:
        rule = (
            alt.Chart(_data([{"country": country[0]}]))
            .mark_rule(color="#b22", strokeWidth=2)
            .encode(x="country:Q", tooltip=[alt.Tooltip("country:Q", title="country")])
        )
        layers.append(rule)
    chart = alt.layer(*layers).properties(
        width=CHART_WIDTH - 160, height=alt.Step(16), title=plan.title + f", {meta.period}"
    )
    return Chart(_chart_id(plan), plan.title, chart.to_dict(), len(values))


def _breakdown(plan: ChartPlan, rows: pa.Table, meta: ReportMeta) -> Chart | None:
    this = _where(rows, measure=plan.measure, period=meta.period, level="country")
    values = [
        {"part": r["breakdown"].removeprefix(plan.breakdown_prefix), "value": r["value"]}
        for r in this.to_pylist()
        if r["breakdown"].startswith(plan.breakdown_prefix)
        and ";" not in r["breakdown"]
        and r["breakdown"]
        and r["value"] is not None
    ]
    if not values:
        return None
    chart = (
        alt.Chart(_data(values))
        .mark_bar()
        .encode(
            x=alt.X("part:O", title=plan.breakdown_prefix.rstrip("=") or None, sort=None),
            y=alt.Y("value:Q", title=plan.unit or None),
            tooltip=[alt.Tooltip("part:O"), alt.Tooltip("value:Q", format=",.2~f")],
        )
        .properties(width=CHART_WIDTH, height=200, title=plan.title + f", {meta.period}")
    )
    return Chart(_chart_id(plan), plan.title, chart.to_dict(), len(values))


_BUILDERS: Final[dict[str, Callable[[ChartPlan, pa.Table, ReportMeta], Chart | None]]] = {
    "trend": _trend,
    "areas": _areas,
    "breakdown": _breakdown,
}


def _chart_id(plan: ChartPlan) -> str:
    return f"chart-{plan.kind}-{plan.indicator}-{plan.measure}".replace("_", "-")


def charts(table: pa.Table, meta: ReportMeta) -> list[Chart]:
    """The charts of :data:`CHART_PLAN` that *table* (normalised) has data for."""
    found = []
    present = set(indicator_names(table))
    for plan in CHART_PLAN:
        if plan.indicator not in present:
            continue
        chart = _BUILDERS[plan.kind](plan, rows_of(table, plan.indicator), meta)
        if chart is not None:
            found.append(chart)
    return found


# --- labels and numbers -----------------------------------------------------------------------


def _period_start(period: str) -> date:
    return date.fromisoformat(period if len(period) == 10 else f"{period}-01")


def area_label(level: str, code: str, on: date) -> str:
    """``Name (code)`` for a known area code, else the code (teams, experts)."""
    from hub.codes import lookup
    from hub.reporting.levels import regional_centre_level_code

    name: str | None = None
    try:
        if level == "country":
            name = "Suomi"
        elif level == "regional_centre":
            name = next(
                (
                    c.name_fi
                    for c in lookup.regional_centres(on)
                    if regional_centre_level_code(c.code, on) == code
                ),
                None,
            )
        elif level == "region":
            name = lookup.region(code).name_fi
        elif level == "employment_area":
            name = lookup.employment_area(code).name_fi
        elif level == "municipality":
            name = lookup.municipality(code).name_fi
    except LookupError:
        name = None
    return f"{name} ({code})" if name else code


def format_number(value: float | None) -> str:
    if value is None:
        return "–"
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}".replace(",", "\u202f")
    return f"{value:,.2f}".replace(",", "\u202f")


# --- the page ---------------------------------------------------------------------------------


@functools.cache
def vega_bundle() -> str:
    """Vega, Vega-Lite and vega-embed as one classic script (globals ``vegaEmbed`` …)."""
    bundle: str = vl_convert.javascript_bundle(vl_version=VEGA_LITE_VERSION)  # type: ignore[call-arg]
    # Code cannot be escaped blindly (``/</g`` is a regular expression); it must simply not
    # hold what would end the <script> element or switch the parser's script state.
    lowered = bundle.lower()
    if "</script" in lowered or "<!--" in lowered:
        raise RuntimeError("the Vega bundle cannot be inlined in a <script> element")
    return bundle


def _json_script_safe(text: str) -> str:
    """JSON text that cannot end or comment out the ``<script>`` element it sits in."""
    return text.replace("</", "<\\/").replace("<!--", "\\u003c!--")


def _table_html(header: Iterable[str], rows: Iterable[Iterable[str]], numeric_from: int) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{html.escape(c)}</td>' if i >= numeric_from else f"<td>{c}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _headline_table(table: pa.Table, meta: ReportMeta) -> str:
    rows = _where(table, level="country", period=meta.period, breakdown="").to_pylist()
    if not rows:
        return "<p>No figures for the country in this period.</p>"
    return _table_html(
        ("indicator", "measure", "value", "n"),
        (
            (
                f'<a href="#{html.escape(r["indicator"])}">{html.escape(r["indicator"])}</a>',
                html.escape(r["measure"]),
                format_number(r["value"]),
                format_number(r["n"]),
            )
            for r in rows
        ),
        numeric_from=2,
    )


def _pivot(rows: list[dict[str, Any]], key: Callable[[dict[str, Any]], str]) -> str:
    """Rows of one indicator as a table: one line per *key*, one column per measure."""
    measures = sorted({r["measure"] for r in rows})
    lines: dict[str, dict[str, Any]] = {}
    for r in rows:
        lines.setdefault(key(r), {})[r["measure"]] = r
    shown = list(lines.items())[:MAX_TABLE_ROWS]
    more = len(lines) - len(shown)
    body = _table_html(
        ("", *measures),
        (
            (
                html.escape(label),
                *(format_number(cells[m]["value"]) if m in cells else "–" for m in measures),
            )
            for label, cells in shown
        ),
        numeric_from=1,
    )
    return body + (f'<p class="note">… and {more} more in the CSV file.</p>' if more else "")


def _indicator_section(name: str, rows: pa.Table, meta: ReportMeta) -> str:
    description = meta.descriptions.get(name, "")
    on = _period_start(meta.period)
    this = _where(rows, period=meta.period)
    parts = [
        f'<section id="{html.escape(name)}"><h3>{html.escape(name)}</h3>',
        f"<p>{html.escape(description)}</p>" if description else "",
        f'<p class="files">Every level and period: <a href="{name}.csv">{name}.csv</a>, '
        f'<a href="{name}.parquet">{name}.parquet</a>.</p>',
    ]
    levels = [
        r
        for r in this.to_pylist()
        if r["breakdown"] == "" and r["level"] in ("country", AREA_LEVEL)
    ]
    if levels:
        parts.append(_pivot(levels, lambda r: area_label(r["level"], r["code"], on)))
    split = [r for r in _where(this, level="country").to_pylist() if r["breakdown"] != ""]
    if split:
        parts.append("<h4>Country, by breakdown</h4>")
        parts.append(_pivot(split, lambda r: str(r["breakdown"])))
    parts.append("</section>")
    return "".join(parts)


_STYLE: Final = """
body { font-family: ui-sans-serif, system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       margin: 2rem auto; max-width: 980px; padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; }
.meta { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: .5rem 0 1rem; font-size: .9rem; }
th, td { border-bottom: 1px solid #ddd; padding: .2rem .6rem; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1.2rem 0; }
.note, .files { color: #555; font-size: .85rem; }
"""

_ERROR_RECORDER: Final = """
(function () {
  var errors = [];
  function record(message) {
    errors.push(String(message));
    document.documentElement.dataset.errors = errors.join(" | ");
    if (document.body) { document.body.dataset.errors = errors.join(" | "); }
  }
  window.reportErrors = record;
  window.addEventListener("error", function (e) { record(e.message || "error"); });
  window.addEventListener("unhandledrejection", function (e) { record(e.reason); });
})();
"""

_EMBED: Final = """
(function () {
  var specs = JSON.parse(document.getElementById("chart-specs").textContent);
  var drawn = 0;
  var ids = Object.keys(specs);
  if (typeof vegaEmbed !== "function") { window.reportErrors("vegaEmbed is missing"); return; }
  Promise.all(ids.map(function (id) {
    return vegaEmbed("#" + id, specs[id], { renderer: "svg", actions: false })
      .then(function () { drawn += 1; document.body.dataset.chartsRendered = String(drawn); })
      .catch(function (e) { window.reportErrors(id + ": " + e); });
  })).then(function () { document.body.dataset.chartsDone = "true"; });
})();
"""


def render_html(table: pa.Table, meta: ReportMeta) -> str:
    """The page for the normalised *table* (see :func:`hub.reporting.render.normalise`)."""
    drawn = charts(table, meta)
    specs = json.dumps(
        {c.chart_id: c.spec for c in drawn}, sort_keys=True, ensure_ascii=False, allow_nan=False
    )
    as_of = "everything known now" if meta.as_of == "now" else f"as recorded by {meta.as_of}"
    span = f"{meta.periods[0]} – {meta.periods[-1]}" if len(meta.periods) > 1 else meta.period
    figures = "".join(
        f'<figure><div id="{c.chart_id}" class="chart" data-points="{c.points}"></div></figure>'
        for c in drawn
    )
    sections = "".join(
        _indicator_section(name, rows_of(table, name), meta) for name in indicator_names(table)
    )
    title = f"TE hub report {meta.period}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<link rel="icon" href="data:,">
<style>{_STYLE}</style>
<script>{_ERROR_RECORDER}</script>
</head>
<body data-charts="{len(drawn)}" data-charts-rendered="0" data-errors="">
<h1>{html.escape(title)}</h1>
<p class="meta">Period {html.escape(meta.period)}, {html.escape(as_of)}. Trends {html.escape(span)}.
Figures from the hub's reporting store (pseudonymised facts); n is how many facts or people a
value was computed from. Below the employment-area level (municipality, team, expert) a value
computed from fewer than {meta.min_cell} people or facts is suppressed, so that no one can be
singled out: in the CSV and Parquet files its value and n are empty and suppressed is true.</p>
<h2>Headline figures, whole country</h2>
{_headline_table(table, meta)}
<h2>Charts</h2>
{figures or "<p>No chart has data for this period.</p>"}
<noscript>The charts need JavaScript; the tables and the CSV files do not.</noscript>
<h2>Indicators</h2>
{sections}
<script type="application/json" id="chart-specs">{_json_script_safe(specs)}</script>
<script>{vega_bundle()}</script>
<script>{_EMBED}</script>
</body>
</html>
"""
