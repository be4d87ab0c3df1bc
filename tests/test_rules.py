"""Statutory clocks come from effective-dated tables; both sides of every edge are tested."""

from __future__ import annotations

from datetime import date

import pytest

from hub.rules import (
    NoRuleInForce,
    add_working_days,
    conversation_cadence_table,
    initial_interview_deadline,
    initial_interview_deadline_table,
    is_working_day,
    job_search_obligation_table,
)


def test_interview_deadline_is_five_working_days_in_2025() -> None:
    # Mon 3.11.2025 + 5 working days = Mon 10.11.2025
    assert initial_interview_deadline(date(2025, 11, 3)) == date(2025, 11, 10)


def test_interview_deadline_is_ten_working_days_from_2026() -> None:
    # Mon 12.1.2026 + 10 working days = Mon 26.1.2026
    assert initial_interview_deadline(date(2026, 1, 12)) == date(2026, 1, 26)


def test_the_rule_of_the_start_day_applies_across_new_year() -> None:
    # Started on the last day of 2025: 5 working days, counted over the 2026 holidays
    # (1.1. New Year, 6.1. Epiphany): 2, 5, 7, 8, 9 January.
    assert initial_interview_deadline(date(2025, 12, 31)) == date(2026, 1, 9)
    # Started on the first day of 2026: 10 working days.
    assert initial_interview_deadline(date(2026, 1, 1)) == date(2026, 1, 16)


def test_christmas_and_midsummer_eves_are_not_working_days() -> None:
    assert not is_working_day(date(2025, 12, 24))
    assert not is_working_day(date(2025, 6, 20))
    assert not is_working_day(date(2025, 12, 6))
    assert is_working_day(date(2025, 12, 23))
    # Fri 19.12.2025 + 5: 22, 23, (24-26 holidays), 29, 30, 31
    assert add_working_days(date(2025, 12, 19), 5) == date(2025, 12, 31)


def test_no_rule_before_the_reform() -> None:
    with pytest.raises(NoRuleInForce, match="2024-12-31"):
        initial_interview_deadline(date(2024, 12, 31))


@pytest.mark.parametrize(
    "table",
    [initial_interview_deadline_table, conversation_cadence_table, job_search_obligation_table],
)
def test_tables_have_sources_and_no_overlapping_periods(table: object) -> None:
    rules = table()  # type: ignore[operator]
    assert rules.overlaps() == []
    assert all(period.source for period in rules.periods)


def test_conversation_rhythm_changes_in_2026() -> None:
    assert conversation_cadence_table().on(date(2025, 12, 31)).intensified_interval_days == 14
    assert conversation_cadence_table().on(date(2026, 1, 1)).intensified_interval_days is None
    assert conversation_cadence_table().on(date(2026, 1, 1)).follow_up_interval_months == 3


def test_job_search_obligation_default_and_range() -> None:
    rule = job_search_obligation_table().on(date(2026, 6, 1))
    assert (rule.default_per_month, rule.minimum_per_month, rule.maximum_per_month) == (4, 0, 4)
