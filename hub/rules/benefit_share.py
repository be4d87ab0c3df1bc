"""The municipal share of unemployment benefit (from 1.1.2025) as effective-dated data.

A municipality pays a share of the benefit Kela and the funds pay its residents; the share of a
benefit day grows with the days the person had accrued *before* it (Kela bills from the 101st
day: days 1-100 are free, day 101 is the first at 10 %). The bands live in
``data/municipal_benefit_share.csv`` (one row per set of bands, lower edges and shares as
``;``-lists), the basic daily allowance for a euro estimate in ``data/basic_daily_allowance.csv``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from functools import cache

from hub.rules.effective import EffectiveDated, load_table


@dataclass(frozen=True)
class ShareBand:
    """Benefit days whose count of days accrued before them is ``days_from`` … ``days_to``."""

    days_from: int
    days_to: int | None
    """Inclusive; None for the open top band."""
    share_percent: int

    @property
    def label(self) -> str:
        """The benefit days of the band and its share: ``days 1 to 100 (0 %)``, ``days 101 to
        200 (10 %)``, …, ``days 701+ (50 %)`` (the law's ``100-199`` is the days accrued
        *before* a day, so its days are 101 … 200).

        ``to`` rather than a hyphen: ``101-200 (10`` is shaped like a phone number, which the
        report files redact; and the labels sort in band order as text.
        """
        first = self.days_from + 1
        days = f"{first}+" if self.days_to is None else f"{first} to {self.days_to + 1}"
        return f"days {days} ({self.share_percent} %)"

    @property
    def accrued_before(self) -> str:
        """``0-99``, …, ``700+``: the days accrued before the day, as the law states the bands."""
        return f"{self.days_from}+" if self.days_to is None else f"{self.days_from}-{self.days_to}"


def _bands(row: dict[str, str]) -> tuple[ShareBand, ...]:
    edges = [int(edge) for edge in row["band_lower_edges_days"].split(";")]
    shares = [int(share) for share in row["share_percent"].split(";")]
    if len(edges) != len(shares) or edges[0] != 0 or edges != sorted(set(edges)):
        raise ValueError(f"bad municipal share bands valid from {row['valid_from']}")
    uppers: list[int | None] = [edge - 1 for edge in edges[1:]]
    uppers.append(None)
    return tuple(
        ShareBand(lower, upper, share)
        for lower, upper, share in zip(edges, uppers, shares, strict=True)
    )


@cache
def municipal_share_bands_table() -> EffectiveDated[tuple[ShareBand, ...]]:
    return load_table("municipal_benefit_share", _bands)


@cache
def basic_daily_allowance_table() -> EffectiveDated[Decimal]:
    return load_table("basic_daily_allowance", lambda row: Decimal(row["euros_per_day"]))
