"""Effective-dated rule tables: rows with valid_from / valid_to read from CSV package data."""

from __future__ import annotations

import csv
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from functools import cache
from importlib import resources
from typing import Generic, TypeVar

T = TypeVar("T")


class NoRuleInForce(LookupError):
    """No row of a rule table covers the date asked about."""


@dataclass(frozen=True)
class Period(Generic[T]):
    valid_from: date
    valid_to: date | None
    value: T
    source: str

    def covers(self, day: date) -> bool:
        return self.valid_from <= day and (self.valid_to is None or day <= self.valid_to)


@dataclass(frozen=True)
class EffectiveDated(Generic[T]):
    name: str
    periods: tuple[Period[T], ...]

    def on(self, day: date) -> T:
        return self.period_on(day).value

    def period_on(self, day: date) -> Period[T]:
        for period in self.periods:
            if period.covers(day):
                return period
        raise NoRuleInForce(f"no {self.name} rule in force on {day.isoformat()}")

    def overlaps(self) -> list[tuple[Period[T], Period[T]]]:
        ordered = sorted(self.periods, key=lambda p: p.valid_from)
        return [
            (a, b)
            for a, b in itertools.pairwise(ordered)
            if a.valid_to is None or a.valid_to >= b.valid_from
        ]


def _optional_date(text: str) -> date | None:
    return date.fromisoformat(text) if text else None


@cache
def _rows(table: str) -> tuple[dict[str, str], ...]:
    text = resources.files("hub.rules").joinpath("data", f"{table}.csv").read_text("utf-8")
    return tuple(csv.DictReader(text.splitlines()))


def load_table(table: str, parse: Callable[[dict[str, str]], T]) -> EffectiveDated[T]:
    periods = tuple(
        Period(
            valid_from=date.fromisoformat(row["valid_from"]),
            valid_to=_optional_date(row["valid_to"]),
            value=parse(row),
            source=row["source"],
        )
        for row in _rows(table)
    )
    return EffectiveDated(name=table.replace("_", " "), periods=periods)
