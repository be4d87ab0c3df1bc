"""A reporting period: one day or one calendar month."""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date
from typing import Literal, Self

_MONTH = re.compile(r"(\d{4})-(\d{2})")


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
        if found:
            year, month = int(found[1]), int(found[2])
            if not 1 <= month <= 12:
                raise ValueError(f"a period is YYYY-MM or YYYY-MM-DD, not {text!r}")
            return cls.month(year, month)
        try:
            return cls.day(date.fromisoformat(text))
        except ValueError:
            raise ValueError(f"a period is YYYY-MM or YYYY-MM-DD, not {text!r}") from None

    @property
    def evaluation_day(self) -> date:
        """The day a state indicator is taken on: the period's last day."""
        return self.end

    def __str__(self) -> str:
        return self.start.isoformat() if self.kind == "day" else self.start.strftime("%Y-%m")
