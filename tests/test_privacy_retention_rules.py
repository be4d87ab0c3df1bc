"""Retention of personal data after the relationship ends: dated rule, hand-counted days."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest

from hub.rules import NoRuleInForce
from hub.rules.retention import (
    RetentionRule,
    Spell,
    add_years,
    is_expired,
    kept_until,
    relationship_end,
    retention_rule,
    retention_table,
)

FIVE = RetentionRule("test-5y", "customer_relationship_end", 5, verified=True)


def test_the_table_has_sources_no_overlaps_and_says_whether_verified() -> None:
    table = retention_table()
    assert table.overlaps() == []
    assert all(period.source for period in table.periods)
    for period in table.periods:
        if not period.value.verified:  # an unverified figure says so where it is cited
            assert period.source.startswith("NOT VERIFIED")
        assert "http" in period.source


def test_the_rule_in_force_follows_the_reform() -> None:
    assert retention_rule(date(2025, 1, 1)).value.rule_id == "customer-data-380-2023"
    assert retention_rule(date(2024, 12, 31)).value.rule_id == "customer-data-916-2012"
    with pytest.raises(NoRuleInForce):
        retention_rule(date(2000, 1, 1))


def test_add_years_keeps_the_calendar_day_and_28_february_for_a_leap_day() -> None:
    assert add_years(date(2020, 3, 15), 5) == date(2025, 3, 15)
    assert add_years(date(2024, 2, 29), 5) == date(2029, 2, 28)
    assert add_years(date(2024, 2, 29), 4) == date(2028, 2, 29)


def test_kept_on_the_last_day_expired_the_day_after() -> None:
    # Ended Tue 10.3.2020; five years: kept through Mon 10.3.2025, expired from 11.3.2025.
    spells = [Spell(date(2019, 1, 7), date(2020, 3, 10))]
    assert kept_until(spells, FIVE) == date(2025, 3, 10)
    assert not is_expired(spells, date(2025, 3, 9), FIVE)
    assert not is_expired(spells, date(2025, 3, 10), FIVE)
    assert is_expired(spells, date(2025, 3, 11), FIVE)


def test_the_latest_end_counts_and_an_open_spell_is_never_expired() -> None:
    first = Spell(date(2010, 1, 4), date(2011, 6, 30))
    second = Spell(date(2018, 2, 1), date(2019, 8, 15))
    assert relationship_end([second, first]) == date(2019, 8, 15)
    assert not is_expired([first, second], date(2024, 8, 15), FIVE)
    assert is_expired([first, second], date(2024, 8, 16), FIVE)
    reopened = Spell(date(2024, 8, 1), None)  # a new spell before the clock ran out
    assert relationship_end([first, second, reopened]) is None
    assert not is_expired([first, second, reopened], date(2040, 1, 1), FIVE)


def test_a_new_spell_resets_the_clock() -> None:
    old = Spell(date(2012, 1, 2), date(2013, 5, 31))
    assert is_expired([old], date(2018, 6, 1), FIVE)
    new = Spell(date(2016, 9, 1), date(2017, 2, 28))  # ended later: counts from 28.2.2017
    assert not is_expired([old, new], date(2018, 6, 1), FIVE)
    assert not is_expired([old, new], date(2022, 2, 28), FIVE)
    assert is_expired([old, new], date(2022, 3, 1), FIVE)


def test_no_spell_or_a_start_after_the_last_end_keeps_the_data() -> None:
    assert relationship_end([]) is None
    assert not is_expired([], date(2030, 1, 1), FIVE)
    gap = [Spell(date(2010, 1, 4), date(2011, 1, 4)), Spell(date(2012, 1, 2), date(2011, 12, 1))]
    assert relationship_end(gap) is None  # a spell started after the latest end known


def test_the_period_comes_from_the_rule_not_the_code() -> None:
    spells = [Spell(date(2019, 1, 7), date(2020, 3, 10))]
    ten = replace(FIVE, years=10)
    assert is_expired(spells, date(2025, 3, 11), FIVE)
    assert not is_expired(spells, date(2025, 3, 11), ten)
    assert is_expired(spells, date(2030, 3, 11), ten)
    in_force = retention_rule(date(2026, 6, 1)).value
    assert is_expired(spells, date(2026, 6, 1)) == (
        date(2026, 6, 1) > add_years(date(2020, 3, 10), in_force.years)
    )


def test_the_reason_names_the_rule() -> None:
    assert FIVE.reason().startswith("retention: test-5y")
