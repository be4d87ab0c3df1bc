"""A reporting period: one day or one calendar month, from 2000 to five years ahead."""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Final, Literal, Self

_MONTH = re.compile(r"(\d{4})-(\d{2})")
# Only the extended calendar form: date.fromisoformat also takes 20260115 and 2026-W03-4.
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")

#: The first day a period may cover: no record of the hub's registers is older.
FIRST_DAY: Final = date(2000, 1, 1)
#: How far ahead a period may reach (plans and accruals run into the future; more is a typo).
YEARS_AHEAD: Final = 5


class PeriodOutOfRange(ValueError):
    """A well-formed period outside :data:`FIRST_DAY` … :func:`last_day`."""


def last_day() -> date:
    """The last day a period may cover: 31 December, :data:`YEARS_AHEAD` years from today.

    The indicators build a calendar day by day over the periods asked, so an unbounded range
    (``1000-01,9999-11``) would cost minutes and end in an overflow.
    """
    return date(date.today().year + YEARS_AHEAD, 12, 31)


@dataclass(frozen=True, order=True)
class Period:
    """A day (``2026-01-15``) or a calendar month (``2026-01``), both ends inclusive.

    Flows (facts dated inside the period) count over the whole period; states (how many people
    are in services, unemployed, without a plan) are taken on :attr:`evaluation_day`, the last
    day: a month's activation rate is the rate on its last day.
    """

    kind: Literal["day", "month"]
    start: date
    end: date

    def __post_init__(self) -> None:
        if self.kind == "day" and self.start != self.end:
            raise ValueError("a day period starts and ends on the same day")
        if self.kind == "month" and (
            self.start.day != 1
            or (self.start.year, self.start.month) != (self.end.year, self.end.month)
            or self.end.day != calendar.monthrange(self.end.year, self.end.month)[1]
        ):
            raise ValueError("a month period runs from the first to the last day of one month")

    @classmethod
    def day(cls, day: date) -> Self:
        return cls("day", day, day)

    @classmethod
    def month(cls, year: int, month: int) -> Self:
        last = calendar.monthrange(year, month)[1]
        return cls("month", date(year, month, 1), date(year, month, last))

    @classmethod
    def parse(cls, text: str) -> Self:
        """``YYYY-MM`` for a month, ``YYYY-MM-DD`` for a day; ValueError otherwise."""
        text = text.strip()
        found = _MONTH.fullmatch(text)
        period: Self | None = None
        if found:
            year, month = int(found[1]), int(found[2])
            if 1 <= month <= 12:
                period = cls.month(year, month)
        elif _DAY.fullmatch(text):
            try:
                period = cls.day(date.fromisoformat(text))
            except ValueError:
                period = None
        if period is None:
            raise ValueError(f"a period is YYYY-MM or YYYY-MM-DD, not {text!r}")
        if period.start < FIRST_DAY or period.end > last_day():
            raise PeriodOutOfRange(
                f"a period is within {FIRST_DAY:%Y-%m} … {last_day():%Y-%m}, not {text!r}"
            )
        return period

    @property
    def evaluation_day(self) -> date:
        """The day a state indicator is taken on: the period's last day."""
        return self.end

    def __str__(self) -> str:
        # Zero-padded whatever the year (strftime writes year 1 as "1").
        if self.kind == "day":
            return f"{self.start.year:04d}-{self.start.month:02d}-{self.start.day:02d}"
        return f"{self.start.year:04d}-{self.start.month:02d}"


class AsOfOutOfRange(ValueError):
    """An as-of time of a well-formed shape but outside the years periods may cover."""


def as_of_value(text: str) -> date | datetime:
    """A knowledge time as the indicators take it: a day (the indicators read it as the end of
    that day in Finland) or a timezone-aware moment; ValueError for anything else (a moment
    without an offset too, and one outside the years periods may cover: a moment of year 1 or
    9999 overflows when the indicators convert it)."""
    moment: date | datetime
    if text.isascii() and _DAY.fullmatch(text):  # \d alone would take other scripts' digits
        moment = date.fromisoformat(text)
    elif "T" in text or " " in text:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            raise ValueError("a timestamp needs its offset")
    else:
        raise ValueError("a day YYYY-MM-DD or an ISO timestamp with its offset")
    # Checked on the local date first: converting year 1 or 9999 to UTC can overflow.
    local = moment.replace(tzinfo=None).date() if isinstance(moment, datetime) else moment
    if not FIRST_DAY <= local <= last_day():
        raise AsOfOutOfRange(f"an as-of time lies within {FIRST_DAY} … {last_day()}")
    return moment
