"""The municipal share of unemployment benefit: both sides of every band edge, by hand.

A benefit day's band is set by the days accrued BEFORE it (Kela bills from the 101st day):
a report of ``days_paid`` with ``accrued_days_total`` T covers the person's days
T - days_paid + 1 … T, and day k is in the band of k - 1.
"""

from __future__ import annotations

from datetime import date

import pytest

from hub.reporting.indicators import Period, compute_indicators
from hub.rules.benefit_share import basic_daily_allowance_table, municipal_share_bands_table
from tests.test_indicators import Scenario, figures

NAME = "municipal_benefit_share"
NOV_2025 = Period.parse("2025-11")
DEC_2025 = Period.parse("2025-12")
JAN_2026 = Period.parse("2026-01")
JAN_2028 = Period.parse("2028-01")


def test_the_bands_are_data_with_a_source() -> None:
    bands = municipal_share_bands_table().on(date(2025, 1, 1))
    assert [(b.accrued_before, b.share_percent) for b in bands] == [
        ("0-99", 0),
        ("100-199", 10),
        ("200-299", 20),
        ("300-399", 30),
        ("400-699", 40),
        ("700+", 50),
    ]
    # The output's band label: the band's benefit days (one more than the days before) and
    # its share: 0-99 before → days 1 to 100; 100-199 → 101 to 200; 700+ → 701+.
    assert [b.label for b in bands] == [
        "days 1 to 100 (0 %)",
        "days 101 to 200 (10 %)",
        "days 201 to 300 (20 %)",
        "days 301 to 400 (30 %)",
        "days 401 to 700 (40 %)",
        "days 701+ (50 %)",
    ]
    assert municipal_share_bands_table().overlaps() == []
    assert all(p.source for p in municipal_share_bands_table().periods)
    assert all(p.source for p in basic_daily_allowance_table().periods)


def _scenario() -> Scenario:
    s = Scenario()
    nov = (date(2025, 11, 1), date(2025, 11, 30))
    # Residents of Helsinki (091) whose paying municipality on the payment day is Espoo (049).
    for days_paid, total in [
        (20, 99),  # a: days 80..99   → 20 in 0-99
        (20, 100),  # b: days 81..100  → 20 in 0-99 (day 100 has 99 before it)
        (20, 101),  # c: days 82..101  → 19 in 0-99, day 101 (100 before) in 100-199
        (10, 200),  # d: days 191..200 → 10 in 100-199 (day 200 has 199 before)
        (10, 201),  # e: days 192..201 → 9 in 100-199, day 201 (200 before) in 200-299
        (5, 401),  # f: days 397..401 → 397-400 (396..399 before) 4 in 300-399, 401 in 400-699
        (3, 701),  # g: days 699..701 → 699, 700 (698, 699 before) in 400-699, 701 in 700+
        (22, 120),  # h: days 99..120  → 99, 100 in 0-99, 101..120 = 20 in 100-199
    ]:
        s.person("091").accrual(*nov, days_paid=days_paid, total=total, paying="049")
    # i: a period from 17.11. to 5.12.2025 counts in December (the month of period_end).
    s.person("091").accrual(date(2025, 11, 17), date(2025, 12, 5), 15, 315, paying="049")
    # j: January 2026: 10 days at 10 % (days 151..160), 37.21 a day (index-frozen 2024-2027).
    s.person("049").accrual(date(2026, 1, 1), date(2026, 1, 31), 10, 160)
    # k: January 2028: 10 days at 10 %; no basic allowance in the data after 2027.
    s.person("049").accrual(date(2028, 1, 1), date(2028, 1, 31), 10, 160)
    return s


def test_days_split_across_the_bands_per_paying_municipality_and_month() -> None:
    table = compute_indicators(
        _scenario().store(), [NOV_2025, DEC_2025, JAN_2026, JAN_2028], indicators=[NAME]
    )

    def at(measure: str, period: str = "2025-11", code: str = "049") -> dict[str, float | None]:
        found = figures(table, NAME, measure, "municipality", code)
        return {b: v for (p, b), (v, _n) in found.items() if p == period and "benefit" not in b}

    # Band sums, November:
    # 0-99:    a 20 + b 20 + c 19 + h 2 = 61 days (a, b, c, h: 4 people)
    # 100-199: c 1 + d 10 + e 9 + h 20 = 40 days (c, d, e, h: 4 people) × 10 % = 4.0
    # 200-299: e 1 = 1 × 20 % = 0.2;  300-399: f 4 × 30 % = 1.2
    # 400-699: f 1 + g 2 = 3 × 40 % = 1.2;  700+: g 1 × 50 % = 0.5
    assert at("days_paid") == {
        "": 110.0,  # 20+20+20+10+10+5+3+22
        "band=days 1 to 100 (0 %)": 61.0,
        "band=days 101 to 200 (10 %)": 40.0,
        "band=days 201 to 300 (20 %)": 1.0,
        "band=days 301 to 400 (30 %)": 4.0,
        "band=days 401 to 700 (40 %)": 3.0,
        "band=days 701+ (50 %)": 1.0,
    }
    assert at("people") == {
        "": 8.0,
        "band=days 1 to 100 (0 %)": 4.0,
        "band=days 101 to 200 (10 %)": 4.0,
        "band=days 201 to 300 (20 %)": 1.0,
        "band=days 301 to 400 (30 %)": 1.0,
        "band=days 401 to 700 (40 %)": 2.0,
        "band=days 701+ (50 %)": 1.0,
    }
    assert at("share_percent") == {
        "band=days 1 to 100 (0 %)": 0.0,
        "band=days 101 to 200 (10 %)": 10.0,
        "band=days 201 to 300 (20 %)": 20.0,
        "band=days 301 to 400 (30 %)": 30.0,
        "band=days 401 to 700 (40 %)": 40.0,
        "band=days 701+ (50 %)": 50.0,
    }
    # Billable: every day above 0 %: 40 + 1 + 4 + 3 + 1 = 49.
    assert at("billable_days")[""] == 49.0
    assert at("billable_days")["band=days 1 to 100 (0 %)"] == 0.0
    weighted = at("weighted_days")
    assert weighted[""] == pytest.approx(7.1)  # 4.0 + 0.2 + 1.2 + 1.2 + 0.5
    assert weighted["band=days 101 to 200 (10 %)"] == pytest.approx(4.0)
    # Euros at the 2025 basic daily allowance 37.21: 7.1 × 37.21 = 264.191 → 264.19;
    # the 100-199 band: 4.0 × 37.21 = 148.84.
    euros = at("euro_estimate")
    assert euros[""] == pytest.approx(264.19)
    assert euros["band=days 101 to 200 (10 %)"] == pytest.approx(148.84)
    # n = the accrual reports behind a figure: all 8 in November.
    assert figures(table, NAME, "days_paid", "municipality", "049")[("2025-11", "")][1] == 8
    # December: i only: days 301..315 (300..314 before) → 15 in 300-399 × 30 % = 4.5.
    assert at("days_paid", "2025-12") == {"": 15.0, "band=days 301 to 400 (30 %)": 15.0}
    assert at("weighted_days", "2025-12")[""] == pytest.approx(4.5)
    # January 2026: j: 10 days at 10 % = 1.0 weighted × 37.21 = 37.21 euros.
    assert at("weighted_days", "2026-01")[""] == pytest.approx(1.0)
    assert at("euro_estimate", "2026-01")[""] == pytest.approx(37.21)
    # January 2028: k: the same days, but no amount in the data → no euros (NULL).
    assert at("weighted_days", "2028-01")[""] == pytest.approx(1.0)
    assert at("euro_estimate", "2028-01") == {"": None, "band=days 101 to 200 (10 %)": None}
    # The envelope's municipality (Helsinki) is not billed: nothing at 091.
    assert figures(table, NAME, "days_paid", "municipality", "091") == {}
    # Rolled up: Espoo is in Uusimaa (region 01), employment area Espoo-Kauniainen (01).
    assert figures(table, NAME, "days_paid", "region", "01")[("2025-11", "")] == (110.0, 8)
    assert figures(table, NAME, "days_paid", "employment_area", "01")[("2025-11", "")][0] == 110.0
    # No team or expert level: an accrual has no case worker.
    assert not {r["level"] for r in table.to_pylist()} & {"team", "expert"}


def test_a_benefit_breakdown_for_the_invoice_lines() -> None:
    s = Scenario()
    nov = (date(2025, 11, 1), date(2025, 11, 30))
    # Labour market subsidy: days 101..110 → 10 at 10 %; basic allowance: days 201..205 at 20 %.
    s.person("049").accrual(*nov, days_paid=10, total=110)
    s.person("049").accrual(*nov, days_paid=5, total=205, benefit="BASIC_DAILY_ALLOWANCE")
    table = compute_indicators(s.store(), [NOV_2025], indicators=[NAME])
    found = figures(table, NAME, "weighted_days", "municipality", "049")
    assert found[("2025-11", "benefit=LABOUR_MARKET_SUBSIDY")][0] == pytest.approx(1.0)
    assert found[("2025-11", "benefit=BASIC_DAILY_ALLOWANCE;band=days 201 to 300 (20 %)")][
        0
    ] == pytest.approx(1.0)
    assert found[("2025-11", "")][0] == pytest.approx(2.0)


def test_euro_rows_add_up_each_invoice_line_rounded_once() -> None:
    s = Scenario()
    nov = (date(2025, 11, 1), date(2025, 11, 30))
    # One benefit day in each billed band (day k has k - 1 days before it), Espoo, November:
    # day 101 → 10 %: 0.1 × 37.21 = 3.721  → 3.72
    # day 201 → 20 %: 0.2 × 37.21 = 7.442  → 7.44
    # day 301 → 30 %: 0.3 × 37.21 = 11.163 → 11.16
    # day 401 → 40 %: 0.4 × 37.21 = 14.884 → 14.88
    # day 701 → 50 %: 0.5 × 37.21 = 18.605 → 18.61 (half away from zero)
    for total in (101, 201, 301, 401, 701):
        s.person("049").accrual(*nov, days_paid=1, total=total)
    table = compute_indicators(s.store(), [NOV_2025], indicators=[NAME])
    euros = {
        b: v
        for (p, b), (v, _n) in figures(table, NAME, "euro_estimate", "municipality", "049").items()
    }
    lines = {b: v for b, v in euros.items() if b.startswith("band=")}
    assert lines == {
        "band=days 101 to 200 (10 %)": 3.72,
        "band=days 201 to 300 (20 %)": 7.44,
        "band=days 301 to 400 (30 %)": 11.16,
        "band=days 401 to 700 (40 %)": 14.88,
        "band=days 701+ (50 %)": 18.61,
    }
    # The total is the sum of the lines: 3.72 + 7.44 + 11.16 + 14.88 + 18.61 = 55.81, not the
    # rounded sum of the exact amounts (1.5 weighted days × 37.21 = 55.815 → 55.82).
    assert euros[""] == 55.81
    assert euros["benefit=LABOUR_MARKET_SUBSIDY"] == 55.81
    # Rolled up, the country is the sum of its municipalities' lines too.
    assert figures(table, NAME, "euro_estimate")[("2025-11", "")] == (55.81, 5)
    # Weighted days are exact hundredths: 0.1 + 0.2 + 0.3 + 0.4 + 0.5 = 1.5.
    assert figures(table, NAME, "weighted_days")[("2025-11", "")] == (1.5, 5)
