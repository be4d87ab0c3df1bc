"""Statutory clocks of the customer path as pure functions over the effective-dated tables."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache

import holidays

from hub.rules.effective import EffectiveDated, load_table


@dataclass(frozen=True)
class ConversationCadence:
    """Rhythm of job-search conversations (työnhakukeskustelut) in force on a start date."""

    intensified_interval_days: int | None
    intensified_period_months: int
    additional_period_after_months: int | None
    additional_period_conversations: int
    follow_up_interval_months: int


@dataclass(frozen=True)
class JobSearchObligation:
    """Job-search obligation (työnhakuvelvollisuus): applications a month and allowed range."""

    default_per_month: int
    minimum_per_month: int
    maximum_per_month: int


def _int_or_none(text: str) -> int | None:
    return int(text) if text else None


@cache
def initial_interview_deadline_table() -> EffectiveDated[int]:
    return load_table("initial_interview_deadline", lambda row: int(row["working_days"]))


@cache
def conversation_cadence_table() -> EffectiveDated[ConversationCadence]:
    return load_table(
        "conversation_cadence",
        lambda row: ConversationCadence(
            intensified_interval_days=_int_or_none(row["intensified_interval_days"]),
            intensified_period_months=int(row["intensified_period_months"]),
            additional_period_after_months=_int_or_none(row["additional_period_after_months"]),
            additional_period_conversations=int(row["additional_period_conversations"]),
            follow_up_interval_months=int(row["follow_up_interval_months"]),
        ),
    )


@cache
def job_search_obligation_table() -> EffectiveDated[JobSearchObligation]:
    return load_table(
        "job_search_obligation",
        lambda row: JobSearchObligation(
            default_per_month=int(row["default_per_month"]),
            minimum_per_month=int(row["minimum_per_month"]),
            maximum_per_month=int(row["maximum_per_month"]),
        ),
    )


@cache
def _finnish_holidays(year: int) -> holidays.HolidayBase:
    # The public category includes Midsummer Eve and Christmas Eve, which the Act on the
    # Calculation of Statutory Time Limits (150/1930) also treats as non-working days.
    return holidays.country_holidays("FI", years=year)


def is_working_day(day: date) -> bool:
    return day.weekday() < 5 and day not in _finnish_holidays(day.year)


def add_working_days(start: date, working_days: int) -> date:
    """The day on which ``working_days`` working days after ``start`` have passed."""
    day, remaining = start, working_days
    while remaining > 0:
        day += timedelta(days=1)
        if is_working_day(day):
            remaining -= 1
    return day


def initial_interview_deadline(job_search_started_on: date) -> date:
    """Last day for the initial interview under the rule in force on the start of job search."""
    working_days = initial_interview_deadline_table().on(job_search_started_on)
    return add_working_days(job_search_started_on, working_days)
