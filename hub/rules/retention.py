"""How long a person's personal data is kept after their customer relationship ends, as dated data.

The rule lives in ``data/personal_data_retention.csv``: one row per period of law, with the
rule id, what the period counts from (``customer_relationship_end``), the period in years,
whether the figure has been verified against the statute, and the source. The rule applied is
the one in force on the day the check is made (``as_of``): the law in force then says how long
data may still be kept.

The customer relationship is the person's job-search spells *and* everything else the hub
holds of them (service enrolments and participation, statements, offers, plans...): a
relationship has ended when no spell is open, and it ended on the later of the last spell's end
and the day of the person's last other fact (``last_fact``; a person with no spell at all but
other facts ended on that day). A statement issued, or a service attended, after the last
spell ended keeps the relationship going until then. The data is kept *for* the period: on the
day the period runs out (the same calendar day ``years`` later; 29 February counts to 28
February) it is still kept, from the next day on it has expired. A new spell reopens the
relationship, and its end (or a later fact) starts the clock again. Pure functions only:
:mod:`hub.privacy.expire_cli` reads the spells and the last facts from the reporting store and
forgets the expired persons.
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


def relationship_end(spells: Iterable[Spell], last_fact: date | None = None) -> date | None:
    """The day the customer relationship ended: the later of the latest spell end and
    ``last_fact`` (the day of the person's last fact that is not a spell); None while a spell is
    open (or a spell started after the last end), or when there is neither a spell nor a fact."""
    spells = list(spells)
    if any(s.ended_on is None for s in spells):
        return None
    ends = [s.ended_on for s in spells if s.ended_on is not None]
    if ends:
        spell_end = max(ends)
        if any(s.started_on > spell_end for s in spells):  # a later spell without its end
            return None
        ends = [spell_end]
    if last_fact is not None:
        ends.append(last_fact)
    return max(ends) if ends else None


def kept_until(
    spells: Iterable[Spell], rule: RetentionRule, last_fact: date | None = None
) -> date | None:
    """The last day the person's data is kept, None while the relationship lasts."""
    end = relationship_end(spells, last_fact)
    return None if end is None else add_years(end, rule.years)


def is_expired(
    spells: Iterable[Spell],
    as_of: date,
    rule: RetentionRule | None = None,
    last_fact: date | None = None,
) -> bool:
    """Whether the person's personal data has outlived the rule in force on ``as_of``."""
    rule = rule if rule is not None else retention_rule(as_of).value
    last = kept_until(spells, rule, last_fact)
    return last is not None and as_of > last
