"""Who ``hub person expire`` checks and when their relationship ended, read from a real
reporting store (DuckDB, no broker): every person with any fact, not only those with a spell;
facts after the last spell's end extend the relationship.

Five people, check day 1.12.2026, a five-year rule: A's spell ended 30.6.2015 (expired); B's
spell ended then too, but a statement was issued on 15.9.2024 in Finland (kept); C has no
spell, only a service enrolment of 3.5.2016 (expired); D has no spell, only a service
enrolment of 2.2.2025 (kept); E's spell is open (kept). The dates are chosen by the test, the
days counted by hand.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from connectors.simulator import SimulationConfig, simulate
from hub.events import CustomerPathEvent
from hub.events.customer_path import (
    JobSearchEnded,
    JobseekerRegistered,
    LabourPolicyStatementIssued,
    ServiceEnrolled,
)
from hub.identity import Pseudonymizer
from hub.privacy.datakeys import Forgotten
from hub.privacy.expire_cli import Summary, _expire, persons_with_spells
from hub.reporting.store import ReportingStore
from hub.rules.retention import RetentionRule, Spell
from hub.settings import HubSettings
from tests.conftest import SIMULATION_SECRET

AS_OF = date(2026, 12, 1)
FIVE = RetentionRule("test-5y", "customer_relationship_end", 5, verified=True)


def _moved(event: CustomerPathEvent, subject: str, day: date, hour: int = 9) -> CustomerPathEvent:
    at = datetime(day.year, day.month, day.day, hour, tzinfo=UTC)
    envelope = event.envelope.model_copy(
        update={"event_id": uuid.uuid4(), "subject": subject, "occurred_at": at, "recorded_at": at}
    )
    return event.model_copy(update={"envelope": envelope})


def _spell(
    registration: JobseekerRegistered,
    template: JobSearchEnded,
    subject: str,
    started: date,
    ended: date | None,
) -> list[CustomerPathEvent]:
    correlation = uuid.uuid4()
    first = _moved(registration, subject, started)
    first = first.model_copy(
        update={
            "envelope": first.envelope.model_copy(update={"correlation_id": correlation}),
            "payload": registration.payload.model_copy(update={"job_search_started_on": started}),
        }
    )
    events = [first]
    if ended is not None:
        end = _moved(template, subject, ended)
        end = end.model_copy(
            update={
                "envelope": end.envelope.model_copy(update={"correlation_id": correlation}),
                "payload": template.payload.model_copy(update={"ended_on": ended}),
            }
        )
        events.append(end)
    return events


@dataclass
class FakeKeys:
    """What the check reads of the key store in a dry run: nobody forgotten, no keys."""

    forgotten_people: dict[str, Forgotten] = field(default_factory=dict)

    def forgotten(self, subject: str) -> Forgotten | None:
        return self.forgotten_people.get(subject)

    @property
    def directory(self) -> FakeKeys:
        return self

    def newest(self, subject: str) -> None:
        return None

    def stored(self, subject: str) -> list[object]:
        return []


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    events = [
        e
        for p in simulate(
            SimulationConfig(jobseekers=40, seed=98), Pseudonymizer(SIMULATION_SECRET)
        )
        for e in p
    ]
    registration = next(e for e in events if isinstance(e, JobseekerRegistered))
    ended = next(e for e in events if isinstance(e, JobSearchEnded))
    statement = next(e for e in events if isinstance(e, LabourPolicyStatementIssued))
    enrolment = next(e for e in events if isinstance(e, ServiceEnrolled))
    who = {name: f"test-expire-{name}-{uuid.uuid4().hex[:8]}" for name in "ABCDE"}
    loaded = [
        *_spell(registration, ended, who["A"], date(2014, 2, 3), date(2015, 6, 30)),
        *_spell(registration, ended, who["B"], date(2014, 2, 3), date(2015, 6, 30)),
        # 14.9.2024 22:00 UTC is 15.9 01:00 in Finland: the day counts in Finland.
        _moved(statement, who["B"], date(2024, 9, 14), hour=22),
        _moved(enrolment, who["C"], date(2016, 5, 3)),
        _moved(enrolment, who["D"], date(2025, 2, 2)),
        *_spell(registration, ended, who["E"], date(2020, 5, 4), None),
    ]
    path = tmp_path_factory.mktemp("expire") / "store.duckdb"
    with ReportingStore(path) as opened:
        assert opened.load_events(loaded) == len(loaded)
    return path, who


def test_every_person_with_a_fact_is_read_with_their_last_other_fact(
    store: tuple[Path, dict[str, str]],
) -> None:
    path, who = store
    with ReportingStore(path, read_only=True) as opened:
        people = {
            s: (spells, last) for s, spells, last in persons_with_spells(opened, datetime.now(UTC))
        }
    assert people.keys() == set(who.values())
    assert people[who["A"]] == ([Spell(date(2014, 2, 3), date(2015, 6, 30))], None)
    assert people[who["B"]] == ([Spell(date(2014, 2, 3), date(2015, 6, 30))], date(2024, 9, 15))
    assert people[who["C"]] == ([], date(2016, 5, 3))
    assert people[who["D"]] == ([], date(2025, 2, 2))
    assert people[who["E"]] == ([Spell(date(2020, 5, 4), None)], None)


def test_a_dry_run_counts_the_people_without_spells_and_the_later_facts(
    store: tuple[Path, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, who = store
    summary = Summary()
    with ReportingStore(path, read_only=True) as opened:
        people = persons_with_spells(opened, datetime.now(UTC))
        _expire(HubSettings(), FakeKeys(), people, AS_OF, FIVE, True, None, summary)  # type: ignore[arg-type]
    assert summary.checked == 5
    assert summary.expired == 2  # A and C
    assert summary.open_spell == 1  # E
    assert summary.within_period == 2  # B (statement of 2024) and D (enrolment of 2025)
    assert summary.forgotten == 0  # dry
    for subject in who.values():
        assert subject not in capsys.readouterr().out


def test_a_day_to_come_is_refused_unless_dry_run(store: tuple[Path, dict[str, str]]) -> None:
    """Forgetting cannot be undone: --as-of 2099-01-01 would erase people whose retention still
    runs. The refusal comes before the store or the keys are touched."""
    from click.testing import CliRunner

    from hub.privacy.expire_cli import expire_command

    path, _ = store
    result = CliRunner().invoke(
        expire_command, ["--as-of", "2099-01-01", "--store", str(path), "--accept-unverified-rule"]
    )
    assert result.exit_code == 2
    assert "after today" in result.output
    assert "--dry-run only" in result.output
