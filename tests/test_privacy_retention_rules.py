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


def test_facts_after_the_last_spell_extend_the_relationship() -> None:
    # The spell ended 30.6.2015; a statement issued 14.9.2016 and a service attended until
    # 2.3.2018 (the last fact): the relationship ended 2.3.2018, kept through 2.3.2023.
    spells = [Spell(date(2014, 2, 3), date(2015, 6, 30))]
    assert relationship_end(spells, last_fact=date(2018, 3, 2)) == date(2018, 3, 2)
    assert kept_until(spells, FIVE, last_fact=date(2018, 3, 2)) == date(2023, 3, 2)
    assert not is_expired(spells, date(2021, 1, 1), FIVE, last_fact=date(2018, 3, 2))
    assert not is_expired(spells, date(2023, 3, 2), FIVE, last_fact=date(2018, 3, 2))
    assert is_expired(spells, date(2023, 3, 3), FIVE, last_fact=date(2018, 3, 2))
    # A fact before the spell's end changes nothing; an open spell stays open whatever came.
    assert relationship_end(spells, last_fact=date(2015, 1, 5)) == date(2015, 6, 30)
    still = [Spell(date(2014, 2, 3), None)]
    assert relationship_end(still, last_fact=date(2016, 1, 1)) is None


def test_a_person_with_no_spell_but_other_facts_ended_on_their_last_fact() -> None:
    # Only a service enrolment (3.5.2017) and participation reported until 29.12.2017.
    assert relationship_end([], last_fact=date(2017, 12, 29)) == date(2017, 12, 29)
    assert not is_expired([], date(2022, 12, 29), FIVE, last_fact=date(2017, 12, 29))
    assert is_expired([], date(2022, 12, 30), FIVE, last_fact=date(2017, 12, 29))
    assert relationship_end([], last_fact=None) is None
