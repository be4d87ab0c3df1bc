"""The municipal share of unemployment benefit per paying municipality, month and band.

Built to be held against Kela's monthly invoice: one row per municipality × month × band (the
benefit days of the band and its share, ``band=days 101 to 200 (10 %)``) and the
municipality's totals.
"""

from __future__ import annotations

from datetime import date

import pyarrow as pa

from hub.reporting.indicators.frame import PERSON_KEY, Context, Indicator, Measure
from hub.reporting.levels import LEVEL_TABLE, PERSON_LEVELS
from hub.rules.benefit_share import basic_daily_allowance_table, municipal_share_bands_table

_OPEN_TO = date(9999, 12, 31)

FACTS = f"""
WITH accrual AS (
    SELECT *, greatest(accrued_days_total - days_paid, 0) AS days_before FROM live_accruals
), piece AS (
    SELECT a.fact_id, a.subject, a.benefit, a.period_end, a.paying_municipality_code,
           b.band, b.share_percent,
           a.days_before BETWEEN b.days_from AND coalesce(b.days_to, a.days_before)
               AS first_piece,
           greatest(0, least(a.accrued_days_total,
                             coalesce(b.days_to + 1, a.accrued_days_total))
                       - greatest(a.days_before, b.days_from)) AS days
    FROM accrual a JOIN ind_share_bands b
      ON a.period_end BETWEEN b.valid_from AND b.valid_to
)
SELECT p.period_end AS day, p.paying_municipality_code AS municipality_code,
       area.employment_area_code, NULL::VARCHAR AS team_code, NULL::VARCHAR AS expert_id,
       p.fact_id, p.subject, p.share_percent, p.days,
       CAST(p.first_piece AS INTEGER) AS first_piece,
       CAST(p.days * p.share_percent AS DECIMAL(18, 0)) * 0.01 AS weighted_days,
       CAST(p.days * p.share_percent AS DECIMAL(18, 0)) * 0.01 * allowance.euros_per_day
           AS euros,
       p.benefit AS bd_benefit, p.band AS bd_band
FROM piece p
LEFT JOIN ind_daily_allowance allowance
  ON p.period_end BETWEEN allowance.valid_from AND allowance.valid_to
LEFT JOIN (SELECT DISTINCT municipality_code, employment_area_code FROM {LEVEL_TABLE}) area
  ON area.municipality_code = p.paying_municipality_code
WHERE p.days > 0
"""

_BAND_ROWS = "breakdown LIKE '%band=%'"
_REPORTS = "CASE WHEN grouping(bd_band) = 0 THEN sum(weight) ELSE sum(first_piece) END"
"""The accrual reports behind a figure without a DISTINCT (which costs as much as the rest): a
report has one piece per band it reaches, so a band row counts pieces, a total row first ones
(the piece of the band holding the report's first day: the days accrued before it)."""

_LINES = {
    "days": "sum(days)",
    "weighted_days": "sum(weighted_days)",
    "first_piece": "sum(first_piece)",
    "euros": "CASE WHEN count(euros) = count(*) THEN round(sum(euros), 2) END",
}
"""The invoice lines: the placed pieces folded per period × paying municipality × benefit ×
band, each line's euros rounded to cents once."""


def _register_rules(ctx: Context) -> None:
    bands = [
        (period.valid_from, period.valid_to or _OPEN_TO, band)
        for period in municipal_share_bands_table().periods
        for band in period.value
    ]
    ctx.cur.register(
        "ind_share_bands_arrow",
        pa.table(
            {
                "valid_from": pa.array([b[0] for b in bands], pa.date32()),
                "valid_to": pa.array([b[1] for b in bands], pa.date32()),
                "band": [b[2].label for b in bands],
                "days_from": pa.array([b[2].days_from for b in bands], pa.int32()),
                "days_to": pa.array([b[2].days_to for b in bands], pa.int32()),
                "share_percent": pa.array([b[2].share_percent for b in bands], pa.int32()),
            }
        ),
    )
    ctx.cur.execute("CREATE OR REPLACE TEMP TABLE ind_share_bands AS FROM ind_share_bands_arrow")
    ctx.cur.unregister("ind_share_bands_arrow")
    amounts = basic_daily_allowance_table().periods
    ctx.cur.register(
        "ind_daily_allowance_arrow",
        pa.table(
            {
                "valid_from": pa.array([p.valid_from for p in amounts], pa.date32()),
                "valid_to": pa.array([p.valid_to or _OPEN_TO for p in amounts], pa.date32()),
                "euros_per_day": pa.array([p.value for p in amounts], pa.decimal128(9, 2)),
            }
        ),
    )
    ctx.cur.execute(
        "CREATE OR REPLACE TEMP TABLE ind_daily_allowance AS FROM ind_daily_allowance_arrow"
    )
    ctx.cur.unregister("ind_daily_allowance_arrow")


def compute(ctx: Context) -> None:
    """Accrual reports (``BenefitDaysAccrued``) placed in the month of their ``period_end``
    and billed to their ``paying_municipality_code`` (the home municipality on the payment day).
    The month is that of ``period_end`` because the event has no payment date: Kela pays (and
    bills) in arrears for the period reported, so a report for 17.11.-5.12. counts in December.

    A report's ``days_paid`` are the person's benefit days number ``accrued_days_total -
    days_paid + 1`` … ``accrued_days_total``; each day falls in the band of the days accrued
    *before* it (``hub/rules/data/municipal_benefit_share.csv``, the set in force on
    ``period_end``): day 100 is still 0 % (99 before it), day 101 the first at 10 %. A report
    whose ``days_paid`` exceed ``accrued_days_total`` counts only ``accrued_days_total`` days.
    The band's label gives its benefit days and share (``band=days 101 to 200 (10 %)``, from
    the data's edges).

    Per band (``band=…``, also ``benefit=…;band=…``): ``people`` (distinct persons with days in
    it), ``days_paid``, ``share_percent``, ``billable_days`` (days at a share above 0),
    ``weighted_days`` (days × share, exact to the hundredth), ``euro_estimate`` (weighted days
    × the basic daily allowance in force on ``period_end``, ``basic_daily_allowance.csv``; NULL
    for a month with no amount in the data: an upper estimate, Kela bills the benefit actually
    paid, which adjustment lowers). Totals (breakdown ``''``, or ``benefit=…``): the same
    without ``share_percent``. ``n`` = accrual reports. Levels: the paying municipality and, by
    the code lists, its employment area, region and regional centre on ``period_end``; no team
    or expert.

    Euros add up: an invoice line is one paying municipality × month × benefit × band; its
    euros are rounded to the cent once (half away from zero, in exact decimals), and every
    other row (a band over the benefits, a benefit, the total, a region, the country) is the
    sum of its rounded lines, so the band rows of a municipality add up to its total to the
    cent.
    """
    _register_rules(ctx)
    ctx.aggregate(
        INDICATOR,
        FACTS,
        [
            Measure("people", "", _REPORTS, distinct=PERSON_KEY),
            Measure("days_paid", "sum(days)", _REPORTS),
            Measure("share_percent", "max(share_percent)", _REPORTS, _BAND_ROWS),
            Measure(
                "billable_days",
                "coalesce(sum(days) FILTER (WHERE share_percent > 0), 0)",
                _REPORTS,
            ),
            Measure("weighted_days", "sum(weighted_days)", _REPORTS),
            Measure(
                "euro_estimate",
                "CASE WHEN count(euros) = count(*) THEN sum(euros) END",
                _REPORTS,
            ),
        ],
        breakdowns=((), ("benefit",), ("band",), ("benefit", "band")),
        compress=("share_percent",),
        folded=_LINES,
    )


INDICATOR = Indicator(
    "municipal_benefit_share",
    "Municipal share of unemployment benefit per paying municipality and month of period_end: "
    "days paid per band of days accrued before the day (days 1-100 0 %, 101-200 10 %, … 701+ "
    "50 %; hub/rules/data/municipal_benefit_share.csv), billable and share-weighted days, "
    "euros at the basic daily allowance where the data has it (each invoice line rounded "
    "to the cent once, totals the sum of the lines)",
    PERSON_LEVELS,
    compute,
)
