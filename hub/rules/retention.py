"""How long a person's personal data is kept after their customer relationship ends, as dated data.

The rule lives in ``data/personal_data_retention.csv``: one row per period of law, with the
rule id, what the period counts from (``customer_relationship_end``: the day the person's last
job-search spell ended, with no spell open), the period in years, whether the figure has been
verified against the statute, and the source. The rule applied is the one in force on the day
the check is made (``as_of``): the law in force then says how long data may still be kept.

A relationship has ended when the person has at least one spell and none is open; its end is
the latest end day. The data is kept *for* the period: on the day the period runs out (the
same calendar day ``years`` later; 29 February counts to 28 February) it is still kept, from
the next day on it has expired. A new spell reopens the relationship, and its end starts the
clock again. Pure functions only: :mod:`hub.privacy.expire_cli` reads the spells from the
reporting store and forgets the expired persons.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from functools import cache

from hub.rules.effective import EffectiveDated, Period, load_table

RELATIONSHIP_END = "customer_relationship_end"


@dataclass(frozen=True)
class RetentionRule:
    rule_id: str
    counts_from: str
    years: int
    verified: bool
    """Whether the period was checked against the statute (the source says which section)."""

    def reason(self) -> str:
        """What ``hub person expire`` records as the reason of a forgetting."""
        return f"retention: {self.rule_id} ({self.years} years after the {self.counts_from})"


@dataclass(frozen=True)
class Spell:
    """One job-search spell of a person: its start and end (None while open)."""

    started_on: date
    ended_on: date | None


def _rule(row: dict[str, str]) -> RetentionRule:
    if row["counts_from"] != RELATIONSHIP_END:
        raise ValueError(f"retention rule {row['rule_id']}: unknown counts_from")
    years = int(row["period_years"])
    if years < 1:
        raise ValueError(f"retention rule {row['rule_id']}: a period of at least one year")
    if row["verified"] not in ("yes", "no"):
        raise ValueError(f"retention rule {row['rule_id']}: verified is yes or no")
    return RetentionRule(row["rule_id"], row["counts_from"], years, row["verified"] == "yes")


@cache
def retention_table() -> EffectiveDated[RetentionRule]:
    return load_table("personal_data_retention", _rule)


def retention_rule(as_of: date) -> Period[RetentionRule]:
    """The rule (with its source) in force on ``as_of``; NoRuleInForce before the first row."""
    return retention_table().period_on(as_of)


def add_years(day: date, years: int) -> date:
    """The same calendar day ``years`` later; 29 February becomes 28 February."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return day.replace(year=day.year + years, day=28)


def relationship_end(spells: Iterable[Spell]) -> date | None:
    """The day the customer relationship ended: the latest spell end, None while a spell is
    open (or there is none, or a spell started after the last end)."""
    spells = list(spells)
    if not spells or any(s.ended_on is None for s in spells):
        return None
    end = max(s.ended_on for s in spells if s.ended_on is not None)
    if any(s.started_on > end for s in spells):  # a later spell without its end (data gap)
        return None
    return end


def kept_until(spells: Iterable[Spell], rule: RetentionRule) -> date | None:
    """The last day the person's data is kept, None while the relationship lasts."""
    end = relationship_end(spells)
    return None if end is None else add_years(end, rule.years)


def is_expired(spells: Iterable[Spell], as_of: date, rule: RetentionRule | None = None) -> bool:
    """Whether the person's personal data has outlived the rule in force on ``as_of``."""
    rule = rule if rule is not None else retention_rule(as_of).value
    last = kept_until(spells, rule)
    return last is not None and as_of > last
