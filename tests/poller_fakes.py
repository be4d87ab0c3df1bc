"""Test doubles and the fixture feed of the register poller tests.

:class:`MemorySink` keeps the EventSink contract (one write per dedupe key, receipts in order,
the original receipt for a repeat, nothing written when unavailable) without Kafka.
:func:`feed_fixture` builds a deterministic change feed of 250 items: valid register rows (some
with a plan), eight bad items of different kinds, and five rows that come back later with a plan.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from uuid import UUID

from hub.codes import municipalities, unemployment_funds
from hub.events import CustomerPathEvent
from hub.events.enums import Channel, LabourMarketStatus, ObligationReduction, PlanType
from hub.identity import make_test_identity_code
from hub.sink import Receipt, SourcePosition, Submission
from tests.ingest_fakes import FakeSink

SERVICE_ID = "FI-TEST/GOV/0245437-2/KEHA/jobseeker-changes"
CLIENT_ID = "FI-TEST/MUN/0201256-6/TEHUB"
FEED_START = date(2025, 11, 3)


class MemorySink(FakeSink):
    """The API tests' in-memory sink (same receipts rule and encoding as the Kafka sink) with
    the names these tests use; *unavailable_on* lists the submit attempts (1-based) that fail
    with SinkUnavailable, writing nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.retry_after_s = 1
        self.unavailable_on: set[int] = set()

    @property
    def attempts(self) -> int:
        return self.calls

    @property
    def log(self) -> list[CustomerPathEvent]:
        return self.events

    async def submit(
        self, submissions: Sequence[Submission], position: SourcePosition | None = None
    ) -> list[Receipt]:
        self.available = self.calls + 1 not in self.unavailable_on
        return await super().submit(submissions, position)

    def event_id_counts(self) -> Counter[UUID]:
        return Counter(event.envelope.event_id for event in self.log)


class FakeSleep:
    """Records the delays asked for instead of waiting; *on_sleep(n, delay)* runs on each."""

    def __init__(self, on_sleep: Callable[[int, float], None] | None = None) -> None:
        self.delays: list[float] = []
        self.on_sleep = on_sleep

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        if self.on_sleep is not None:
            self.on_sleep(len(self.delays), seconds)
        await asyncio.sleep(0)


@dataclass(frozen=True)
class FeedFixture:
    items: list[Any]
    #: (row id, kind) of every event the feed must yield once.
    expected: set[tuple[str, str]]
    #: Item ids of the bad items (None where the item has no id).
    bad_ids: list[str | None]
    identity_codes: set[str]
    #: Rows that come back with a plan: their registration is a duplicate the second time.
    returning: int
    #: Later versions of rows whose registration the register corrected (phone, status): each
    #: must become one correction event.
    corrections: list[dict[str, Any]]


_FIRST = ["Aino", "Matti", "Helmi", "Juhani", "Sofia", "Mikael", "Eino", "Aada"]
_LAST = ["Virtanen", "Korhonen", "Mäkinen", "Nieminen", "Hämäläinen", "Laine", "Koskinen"]


def _row(rng: random.Random, index: int, with_plan: bool) -> dict[str, Any]:
    birth = date(rng.randint(1955, 2006), rng.randint(1, 12), rng.randint(1, 28))
    started = FEED_START + timedelta(days=rng.randrange(120))
    changed = datetime.combine(started, time(7), tzinfo=UTC) + timedelta(minutes=index)
    mainland = sorted(code for code, m in municipalities().items() if m.is_mainland)
    funds = [f.code for f in unemployment_funds(started)]
    row: dict[str, Any] = {
        "id": f"row-{index:05d}",
        "changed_at": changed.isoformat(),
        "personal_identity_code": make_test_identity_code(
            birth, 900 + index % 100, modern_sign=index % 3 == 0
        ),
        "municipality_code": rng.choice(mainland),
        "job_search_started_on": started.isoformat(),
        "registration_channel": rng.choice(list(Channel)).value,
        "labour_market_status": rng.choice(list(LabourMarketStatus)).value,
        "first_name": rng.choice(_FIRST),
        "last_name": rng.choice(_LAST),
        "email": f"jobseeker{index}@example.fi",
        "phone": f"+35840{rng.randrange(10**7):07d}",
        "unemployment_fund_code": rng.choice([*funds, None]),
        "reduced_work_ability": rng.choice([None, False, True]),
        "register_internal_flag": "ignored by the tolerant reader",
        "plan": _plan(rng, started) if with_plan else None,
    }
    return row


def _plan(rng: random.Random, started: date) -> dict[str, Any]:
    obligation = rng.choice([4, 4, 4, 3, 2, 0])
    return {
        "plan_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "plan_type": rng.choice(list(PlanType)).value,
        "agreed_on": (started + timedelta(days=rng.randint(1, 9))).isoformat(),
        "valid_until": None,
        "job_search_obligation_per_month": obligation,
        "obligation_reduction": (
            None if obligation == 4 else rng.choice(list(ObligationReduction)).value
        ),
        "reporting_period_months": rng.choice([1, 1, 3]),
        "agreed_in_initial_interview": rng.random() < 0.7,
        "team_code": f"T{rng.randint(1, 9)}",
        "expert_id": f"E{rng.randint(100, 999)}",
    }


def _bad_items(rng: random.Random) -> list[Any]:
    """One item per kind of defect, each with the rest of the row valid."""

    def based(index: int, **changes: Any) -> dict[str, Any]:
        return {**_row(rng, index, with_plan=True), **changes}

    bad_code = based(9001)
    code = bad_code["personal_identity_code"]
    bad_code["personal_identity_code"] = code[:-1] + ("0" if code[-1] != "0" else "1")
    no_id = based(9004)
    del no_id["id"]
    bad_plan = based(9005)
    bad_plan["plan"] = {**bad_plan["plan"], "job_search_obligation_per_month": 7}
    child = make_test_identity_code(date(2013, 5, 5), 950)
    return [
        {**bad_code, "id": "bad-check-character"},
        based(9002, id="bad-aland", municipality_code="478"),
        based(9003, id="bad-channel", registration_channel="CARRIER_PIGEON"),
        no_id,
        {**bad_plan, "id": "bad-obligation"},
        based(9006, id="bad-age", personal_identity_code=child),
        "not an object at all",
        based(9008, id="bad-fund", unemployment_fund_code="no-such-fund"),
    ]


def feed_fixture(
    valid_rows: int = 237, returning: int = 5, corrected: int = 3, seed: int = 7
) -> FeedFixture:
    rng = random.Random(seed)
    rows = [_row(rng, i, with_plan=rng.random() < 0.6) for i in range(valid_rows)]
    expected = {(row["id"], "registered") for row in rows}
    expected |= {(row["id"], f"plan:{row['plan']['plan_id']}") for row in rows if row["plan"]}
    comebacks = []
    without_plan = [r for r in rows if r["plan"] is None]
    for row in without_plan[:returning]:
        later = datetime.fromisoformat(row["changed_at"]) + timedelta(days=5)
        started = date.fromisoformat(row["job_search_started_on"])
        again = {**row, "changed_at": later.isoformat()}  # only the plan is new
        again["plan"] = _plan(rng, started)
        expected.add((row["id"], f"plan:{again['plan']['plan_id']}"))
        comebacks.append(again)
    corrections = []
    for row in without_plan[returning : returning + corrected]:
        later = datetime.fromisoformat(row["changed_at"]) + timedelta(days=2)
        corrections.append(
            {
                **row,
                "changed_at": later.isoformat(),
                "phone": "+358501234567",
                "labour_market_status": LabourMarketStatus.UNEMPLOYED.value,
            }
        )
    bad = _bad_items(rng)
    items: list[Any] = list(rows)
    for n, item in enumerate(bad):
        items.insert(15 + n * 29, item)
    items += comebacks + corrections
    codes = {item["personal_identity_code"] for item in items if isinstance(item, dict)}
    return FeedFixture(
        items=items,
        expected=expected,
        bad_ids=[item.get("id") if isinstance(item, dict) else None for item in bad],
        identity_codes=codes,
        returning=returning,
        corrections=corrections,
    )
