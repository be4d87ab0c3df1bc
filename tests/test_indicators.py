"""Indicators over scripted customer paths, every expected figure worked out by hand.

Each scenario is a list of CustomerPathEvent models loaded with the reporting store's
``load_events`` (through the reporting route's projection, as replay does); the comments show
the arithmetic, with the Finnish holidays spelt out where working days are counted.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any
from uuid import UUID

import duckdb
import pyarrow as pa
import pytest

from hub.codes import employment_area_of
from hub.events.base import CustomerPathEvent, Envelope
from hub.events.customer_path import (
    BenefitDaysAccrued,
    BenefitDaysAccruedPayload,
    CaseWorker,
    EmploymentPlanAgreed,
    EmploymentPlanAgreedPayload,
    EmploymentStarted,
    EmploymentStartedPayload,
    InitialInterviewHeld,
    InitialInterviewHeldPayload,
    JobOfferMade,
    JobOfferMadePayload,
    JobOfferOutcomeRecorded,
    JobOfferOutcomeRecordedPayload,
    JobSearchConversationHeld,
    JobSearchConversationHeldPayload,
    JobSearchEnded,
    JobSearchEndedPayload,
    JobseekerRegistered,
    JobseekerRegisteredPayload,
    LabourPolicyStatementIssued,
    LabourPolicyStatementIssuedPayload,
    Payer,
    ServiceEnrolled,
    ServiceEnrolledPayload,
    ServiceParticipationReported,
    ServiceParticipationReportedPayload,
    StatementRequested,
    StatementRequestedPayload,
)
from hub.reporting.indicators import INDICATORS, OUTPUT_SCHEMA, Period, compute_indicators
from hub.reporting.levels import LEVELS, municipality_levels
from hub.reporting.store import ReportingStore

IDENTITY_CODE = "131052-308T"
BUSINESS_ID = "2345678-0"
_ids = itertools.count(1)


def _uuid() -> UUID:
    return UUID(int=next(_ids))


def _at(day: date, hour: int = 9) -> datetime:
    return datetime.combine(day, time(hour), UTC)


@dataclass
class Person:
    """One jobseeker's spell; every method returns the event it adds to the scenario."""

    scenario: Scenario
    municipality: str
    subject: str
    spell: UUID = field(default_factory=_uuid)

    def envelope(
        self,
        event_type: type[CustomerPathEvent],
        on: date,
        recorded: datetime | None = None,
        corrects: UUID | None = None,
        retracted: bool = False,
    ) -> Envelope:
        return Envelope(
            event_id=_uuid(),
            event_type=event_type.__name__,
            occurred_at=_at(on),
            recorded_at=recorded or _at(on, 10),
            source_system="urn:test:indicators",
            subject=self.subject,
            municipality_code=self.municipality,
            employment_area_code=employment_area_of(self.municipality).code,
            correlation_id=self.spell,
            corrects_event_id=corrects,
            retracted=retracted,
        )

    def add(self, event: CustomerPathEvent) -> CustomerPathEvent:
        self.scenario.events.append(event)
        return event

    def register(self, started: date, status: str = "UNEMPLOYED", **kw: Any) -> Any:
        return self.add(
            JobseekerRegistered(
                envelope=self.envelope(JobseekerRegistered, started, **kw),
                payload=JobseekerRegisteredPayload(
                    personal_identity_code=IDENTITY_CODE,
                    first_name="Testi",
                    last_name="Henkilö",
                    job_search_started_on=started,
                    registration_channel="ELECTRONIC",
                    labour_market_status=status,
                    age_at_registration=40,
                ),
            )
        )

    def interview(
        self,
        started: date,
        held: date,
        channel: str = "FACE_TO_FACE",
        team: str = "T1",
        expert: str = "E1",
        deadline: date | None = None,
        weighty_reason: bool = False,
        **kw: Any,
    ) -> Any:
        # The event's own deadline fields are deliberately wrong unless given: the indicator
        # must recompute the deadline from hub.rules, never read them.
        return self.add(
            InitialInterviewHeld(
                envelope=self.envelope(InitialInterviewHeld, held, **kw),
                payload=InitialInterviewHeldPayload(
                    job_search_started_on=started,
                    held_on=held,
                    deadline=deadline or started,
                    within_deadline=False,
                    channel=channel,
                    remote_for_weighty_reason=weighty_reason,
                    handled_by=CaseWorker(team_code=team, expert_id=expert),
                ),
            )
        )

    def conversation(self, held: date, kind: str, channel: str, **kw: Any) -> Any:
        return self.add(
            JobSearchConversationHeld(
                envelope=self.envelope(JobSearchConversationHeld, held, **kw),
                payload=JobSearchConversationHeldPayload(
                    conversation_type=kind,
                    held_on=held,
                    channel=channel,
                    handled_by=CaseWorker(team_code="T1", expert_id="E1"),
                ),
            )
        )

    def plan(
        self,
        agreed: date,
        valid_until: date | None = None,
        per_month: int = 4,
        plan_type: str = "EMPLOYMENT_PLAN",
        team: str = "T1",
        **kw: Any,
    ) -> Any:
        return self.add(
            EmploymentPlanAgreed(
                envelope=self.envelope(EmploymentPlanAgreed, agreed, **kw),
                payload=EmploymentPlanAgreedPayload(
                    plan_id=_uuid(),
                    plan_type=plan_type,
                    agreed_on=agreed,
                    valid_until=valid_until,
                    job_search_obligation_per_month=per_month,
                    obligation_reduction=None if per_month == 4 else "PART_TIME_WORK",
                    reporting_period_months=1,
                    agreed_in_initial_interview=True,
                    handled_by=CaseWorker(team_code=team, expert_id="E1"),
                ),
            )
        )

    def offer(self, made: date, binding: bool, workplace: str | None = None) -> UUID:
        offer_id = _uuid()
        self.add(
            JobOfferMade(
                envelope=self.envelope(JobOfferMade, made),
                payload=JobOfferMadePayload(
                    offer_id=offer_id,
                    vacancy_id="V-1",
                    employer_business_id=BUSINESS_ID,
                    workplace_municipality_code=workplace or self.municipality,
                    binding=binding,
                    apply_by=made,
                    handled_by=CaseWorker(team_code="T1", expert_id="E1"),
                ),
            )
        )
        return offer_id

    def outcome(self, offer_id: UUID, result: str, on: date) -> Any:
        return self.add(
            JobOfferOutcomeRecorded(
                envelope=self.envelope(JobOfferOutcomeRecorded, on),
                payload=JobOfferOutcomeRecordedPayload(
                    offer_id=offer_id, result=result, recorded_on=on
                ),
            )
        )

    def job_start(
        self, on: date, offer_id: UUID | None = None, workplace: str | None = None
    ) -> Any:
        return self.add(
            EmploymentStarted(
                envelope=self.envelope(EmploymentStarted, on),
                payload=EmploymentStartedPayload(
                    started_on=on,
                    employer_business_id=BUSINESS_ID,
                    employment_form="PERMANENT_FULL_TIME",
                    workplace_municipality_code=workplace or self.municipality,
                    job_offer_id=offer_id,
                ),
            )
        )

    def end(self, on: date, reason: str = "EMPLOYED") -> Any:
        return self.add(
            JobSearchEnded(
                envelope=self.envelope(JobSearchEnded, on),
                payload=JobSearchEndedPayload(ended_on=on, reason=reason),
            )
        )

    def enrol(self, start: date, end: date, service_type: str = "COACHING") -> UUID:
        enrolment_id = _uuid()
        self.add(
            ServiceEnrolled(
                envelope=self.envelope(ServiceEnrolled, start),
                payload=ServiceEnrolledPayload(
                    enrolment_id=enrolment_id,
                    service_type=service_type,
                    provider_business_id=BUSINESS_ID,
                    planned_start=start,
                    planned_end=end,
                    participant_first_name="Testi",
                    participant_last_name="Henkilö",
                    handled_by=CaseWorker(team_code="T1", expert_id="E1"),
                ),
            )
        )
        return enrolment_id

    def participation(self, enrolment_id: UUID, kind: str, on: date) -> Any:
        return self.add(
            ServiceParticipationReported(
                envelope=self.envelope(ServiceParticipationReported, on),
                payload=ServiceParticipationReportedPayload(
                    enrolment_id=enrolment_id,
                    provider_business_id=BUSINESS_ID,
                    kind=kind,
                    reported_for=on,
                    interruption_reason="OTHER" if kind == "INTERRUPTION" else None,
                ),
            )
        )

    def request(self, on: date, payer: str = "KELA") -> UUID:
        request_id = _uuid()
        self.add(
            StatementRequested(
                envelope=self.envelope(StatementRequested, on),
                payload=StatementRequestedPayload(
                    request_id=request_id,
                    payer=Payer(kind=payer, fund_code=None if payer == "KELA" else "jhl"),
                    benefit="LABOUR_MARKET_SUBSIDY",
                    reason="NEW_APPLICATION",
                    requested_on=on,
                    personal_identity_code=IDENTITY_CODE,
                ),
            )
        )
        return request_id

    def statement(
        self, request_id: UUID | None, on: date, payer: str = "KELA", team: str = "T1"
    ) -> Any:
        return self.add(
            LabourPolicyStatementIssued(
                envelope=self.envelope(LabourPolicyStatementIssued, on),
                payload=LabourPolicyStatementIssuedPayload(
                    statement_id=_uuid(),
                    request_id=request_id,
                    payer=Payer(kind=payer, fund_code=None if payer == "KELA" else "jhl"),
                    benefit="LABOUR_MARKET_SUBSIDY",
                    outcome="NO_OBSTACLE",
                    effective_from=on,
                    issued_on=on,
                    personal_identity_code=IDENTITY_CODE,
                    handled_by=CaseWorker(team_code=team, expert_id="E1"),
                ),
            )
        )

    def accrual(
        self,
        start: date,
        end: date,
        days_paid: int,
        total: int,
        paying: str | None = None,
        benefit: str = "LABOUR_MARKET_SUBSIDY",
        **kw: Any,
    ) -> Any:
        return self.add(
            BenefitDaysAccrued(
                envelope=self.envelope(BenefitDaysAccrued, end, **kw),
                payload=BenefitDaysAccruedPayload(
                    payer=Payer(kind="KELA"),
                    benefit=benefit,
                    period_start=start,
                    period_end=end,
                    days_paid=days_paid,
                    accrued_days_total=total,
                    paying_municipality_code=paying or self.municipality,
                ),
            )
        )


@dataclass
class Scenario:
    events: list[CustomerPathEvent] = field(default_factory=list)
    _people: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def person(self, municipality: str = "091") -> Person:
        return Person(self, municipality, f"{next(self._people):032x}")

    def store(self) -> duckdb.DuckDBPyConnection:
        store = ReportingStore(":memory:")
        assert store.load_events(self.events) == len(self.events)
        return store.con


def figures(
    table: pa.Table, indicator: str, measure: str, level: str = "country", code: str = "FI"
) -> dict[tuple[str, str], tuple[float | None, int]]:
    """``{(period, breakdown): (value, n)}`` of one measure at one level and code."""
    return {
        (row["period"], row["breakdown"]): (row["value"], row["n"])
        for row in table.to_pylist()
        if (row["indicator"], row["measure"], row["level"], row["code"])
        == (indicator, measure, level, code)
    }


def codes(table: pa.Table, indicator: str, level: str) -> set[tuple[str, str]]:
    return {
        (row["period"], row["code"])
        for row in table.to_pylist()
        if row["indicator"] == indicator and row["level"] == level
    }


JAN_2026 = Period.parse("2026-01")
DEC_2025 = Period.parse("2025-12")


# --- periods and the output ---------------------------------------------------------------------


def test_periods_parse_and_print_back() -> None:
    assert Period.parse("2026-01") == Period("month", date(2026, 1, 1), date(2026, 1, 31))
    assert Period.parse("2024-02").end == date(2024, 2, 29)
    assert Period.parse("2026-01-15") == Period("day", date(2026, 1, 15), date(2026, 1, 15))
    assert [str(Period.parse(text)) for text in ("2026-01", "2026-01-15")] == [
        "2026-01",
        "2026-01-15",
    ]
    for bad in ("2026-13", "2026-1", "January", "2026-02-30"):
        with pytest.raises(ValueError, match="a period is"):
            Period.parse(bad)


def test_unknown_indicator_is_refused_and_every_indicator_is_described() -> None:
    con = Scenario().store()
    with pytest.raises(ValueError, match="no_such"):
        compute_indicators(con, [JAN_2026], indicators=["no_such"])
    assert all(len(text) > 40 for text in INDICATORS.values())
    empty = compute_indicators(con, [JAN_2026])
    assert empty.schema == OUTPUT_SCHEMA
    assert empty.num_rows == 0


# --- access time to the initial interview across Christmas and New Year ------------------------


def test_access_time_and_deadline_across_christmas_2025_and_new_year_2026() -> None:
    # Non-working days: Wed 24, Thu 25, Fri 26 Dec 2025 (Christmas Eve, Christmas, St Stephen),
    # the weekends, Thu 1 Jan 2026 (New Year) and Tue 6 Jan 2026 (Epiphany).
    # The rule of the START day: 5 working days for a 2025 start, 10 for a 2026 start.
    s = Scenario()
    # F: start Mon 15.12.2025, held Tue 23.12: 16,17,18,19,22,23 = 6 wd; deadline 22.12 → late
    s.person().interview(date(2025, 12, 15), date(2025, 12, 23), team="T1")
    # A: start Fri 19.12.2025, held Fri 2.1.2026: 22,23,29,30,31,2 = 6 wd;
    #    deadline (5 wd) 22,23,29,30,31 → 31.12.2025 → late
    s.person().interview(date(2025, 12, 19), date(2026, 1, 2), team="T1", channel="PHONE")
    # B: start Mon 22.12.2025, held Fri 2.1.2026: 23,29,30,31,2 = 5 wd; deadline 2.1.2026 → within
    s.person().interview(date(2025, 12, 22), date(2026, 1, 2), team="T1")
    # C: start Wed 31.12.2025 (2025 rule: 5), held Mon 12.1.2026: 2,5,7,8,9,12 = 6 wd;
    #    deadline 2,5,7,8,9 → 9.1.2026 → late (a 10-day rule would have said within)
    s.person().interview(date(2025, 12, 31), date(2026, 1, 12), team="T1", channel="PHONE")
    # D: start Thu 1.1.2026 (a holiday; 2026 rule: 10), held Fri 16.1.2026:
    #    2,5,7,8,9,12,13,14,15,16 = 10 wd; deadline 16.1.2026 → within (on the last day)
    s.person().interview(date(2026, 1, 1), date(2026, 1, 16), team="T2")
    # E: start Fri 2.1.2026, held Wed 7.1.2026: 5, 7 = 2 wd (6.1 Epiphany) → within
    s.person().interview(date(2026, 1, 2), date(2026, 1, 7), team="T2")
    day = Period.parse("2026-01-02")
    table = compute_indicators(
        s.store(), [DEC_2025, JAN_2026, day], indicators=["initial_interview_access"]
    )
    median = figures(table, "initial_interview_access", "median_working_days")
    share = figures(table, "initial_interview_access", "share_within_deadline")
    # December (by the interview day): F only: 6 wd, late.
    assert median[("2025-12", "")] == (6.0, 1)
    assert share[("2025-12", "")] == (0.0, 1)
    # January: A 6, B 5, C 6, D 10, E 2 → sorted 2,5,6,6,10 → median 6; within B, D, E = 3/5.
    assert median[("2026-01", "")] == (6.0, 5)
    assert share[("2026-01", "")] == (60.0, 5)
    # By channel in January: PHONE A 6 late, C 6 late → median 6, 0 %;
    # FACE_TO_FACE B 5, D 10, E 2 → median 5, 100 %.
    assert median[("2026-01", "channel=PHONE")] == (6.0, 2)
    assert share[("2026-01", "channel=PHONE")] == (0.0, 2)
    assert median[("2026-01", "channel=FACE_TO_FACE")] == (5.0, 3)
    assert share[("2026-01", "channel=FACE_TO_FACE")] == (100.0, 3)
    # The day 2.1.2026: A 6 and B 5 → median (5 + 6) / 2 = 5.5; 1 of 2 within.
    assert median[("2026-01-02", "")] == (5.5, 2)
    assert share[("2026-01-02", "")] == (50.0, 2)
    # Team level, January: T1 = A, B, C → 6, 5, 6 → median 6, 1/3 within;
    # T2 = D, E → 10, 2 → median (2 + 10) / 2 = 6, 2/2 within.
    team1 = figures(table, "initial_interview_access", "share_within_deadline", "team", "T1")
    assert team1[("2026-01", "")][0] == pytest.approx(100 / 3)
    assert team1[("2026-01", "")][1] == 3
    team2 = figures(table, "initial_interview_access", "median_working_days", "team", "T2")
    assert team2[("2026-01", "")] == (6.0, 2)
    interviews = figures(table, "initial_interview_access", "interviews", "expert", "E1")
    assert interviews[("2026-01", "")] == (5.0, 5)


# --- the regional centre of the day -------------------------------------------------------------


def test_a_municipality_changes_regional_centre_on_1_january_2026() -> None:
    # Asikkala (016, Päijät-Häme, region 07) belonged to Häme ELY centre (04) up to 31.12.2025
    # and to the Kaakkois-Suomi elinvoimakeskus (03) from 1.1.2026 (hub/codes/data); the level
    # codes carry the kind of centre: ELY04 and EVK03 (never a bare 04 that could be either).
    s = Scenario()
    s.person("016").interview(date(2025, 12, 29), date(2025, 12, 30))
    s.person("016").interview(date(2026, 1, 1), date(2026, 1, 2))
    s.person("016").interview(date(2026, 1, 1), date(2026, 1, 5))
    table = compute_indicators(
        s.store(), [DEC_2025, JAN_2026], indicators=["initial_interview_access"]
    )
    assert codes(table, "initial_interview_access", "regional_centre") == {
        ("2025-12", "ELY04"),
        ("2026-01", "EVK03"),
    }
    assert codes(table, "initial_interview_access", "region") == {
        ("2025-12", "07"),
        ("2026-01", "07"),
    }
    # Päijät-Häme employment area (31) and the municipality itself, both months.
    assert codes(table, "initial_interview_access", "employment_area") == {
        ("2025-12", "31"),
        ("2026-01", "31"),
    }
    jan = figures(table, "initial_interview_access", "interviews", "regional_centre", "EVK03")
    dec = figures(table, "initial_interview_access", "interviews", "regional_centre", "ELY04")
    assert (dec[("2025-12", "")], jan[("2026-01", "")]) == ((1.0, 1), (2.0, 2))


def test_the_level_dimension_has_two_dated_rows_per_municipality() -> None:
    rows = {(r.municipality_code, r.valid_to.year): r for r in municipality_levels()}
    assert len(rows) == 2 * 308
    ely, evk = rows[("016", 2025)], rows[("016", 9999)]
    assert (ely.valid_to, ely.regional_centre_code) == (date(2025, 12, 31), "ELY04")
    assert (evk.valid_from, evk.regional_centre_code) == (date(2026, 1, 1), "EVK03")
    assert (ely.region_code, ely.employment_area_code) == ("07", "31")
    # Åland (Maarianhamina 478): no ELY centre, no employment area (outside the TE services).
    assert rows[("478", 2025)].regional_centre_code is None
    assert rows[("478", 9999)].employment_area_code is None
    assert LEVELS == (
        "country",
        "regional_centre",
        "region",
        "employment_area",
        "municipality",
        "team",
        "expert",
    )


# --- long-term unemployment: exactly 12 months ------------------------------------------------


def test_a_spell_of_exactly_twelve_months_is_long_term_on_the_anniversary() -> None:
    # Long-term on day D when start + 12 calendar months <= D.
    s = Scenario()
    s.person().register(date(2025, 1, 15))  # P: 12 months on 15.1.2026
    s.person().register(date(2025, 1, 31))  # Q: 12 months on 31.1.2026
    days = [Period.parse(text) for text in ("2026-01-14", "2026-01-15", "2026-01-30")]
    table = compute_indicators(s.store(), [*days, DEC_2025, JAN_2026], indicators=["flows"])
    long_term = figures(table, "flows", "long_term_unemployed")
    share = figures(table, "flows", "share_long_term_unemployed")
    assert long_term[("2026-01-14", "")] == (0.0, 2)  # P at 12 months minus one day
    assert long_term[("2026-01-15", "")] == (1.0, 2)  # P exactly 12 months
    assert long_term[("2026-01-30", "")] == (1.0, 2)  # Q one day short
    assert long_term[("2025-12", "")] == (0.0, 2)  # taken on 31.12.2025
    assert long_term[("2026-01", "")] == (2.0, 2)  # taken on 31.1.2026: Q exactly 12 months
    assert share[("2026-01-30", "")] == (50.0, 2)


# --- knowledge time: a late correction ---------------------------------------------------------


def test_a_late_correction_changes_the_current_figure_but_not_an_earlier_as_of() -> None:
    s = Scenario()
    person = s.person()
    # Start Fri 2.1.2026, interview recorded on Wed 7.1.2026 as held that day by phone:
    # 5, 7 = 2 working days (6.1 Epiphany), within the 10-day deadline (19.1.2026).
    first = person.interview(date(2026, 1, 2), date(2026, 1, 7), channel="PHONE")
    # Corrected on 10.2.2026: held on Tue 20.1.2026 face to face:
    # 5,7,8,9,12,13,14,15,16,19,20 = 11 working days, after the deadline 19.1.2026.
    person.interview(
        date(2026, 1, 2),
        date(2026, 1, 20),
        channel="FACE_TO_FACE",
        recorded=datetime(2026, 2, 10, 8, tzinfo=UTC),
        corrects=first.envelope.event_id,
    )
    # A plan agreed 8.1.2026, withdrawn on 10.2.2026.
    plan = person.plan(date(2026, 1, 8))
    person.plan(
        date(2026, 1, 8),
        recorded=datetime(2026, 2, 10, 9, tzinfo=UTC),
        corrects=plan.envelope.event_id,
        retracted=True,
    )
    con = s.store()
    names = ["initial_interview_access", "interviews_and_conversations", "plans"]
    before = compute_indicators(con, [JAN_2026], as_of=date(2026, 2, 5), indicators=names)
    now = compute_indicators(con, [JAN_2026], indicators=names)
    assert set(before.column("as_of").to_pylist()) == {"2026-02-05"}
    assert set(now.column("as_of").to_pylist()) == {"now"}
    median = "median_working_days"
    assert figures(before, "initial_interview_access", median)[("2026-01", "")] == (2.0, 1)
    assert figures(now, "initial_interview_access", median)[("2026-01", "")] == (11.0, 1)
    within = "share_within_deadline"
    assert figures(before, "initial_interview_access", within)[("2026-01", "")] == (100.0, 1)
    assert figures(now, "initial_interview_access", within)[("2026-01", "")] == (0.0, 1)
    meetings_before = figures(before, "interviews_and_conversations", "meetings")
    meetings_now = figures(now, "interviews_and_conversations", "meetings")
    assert meetings_before[("2026-01", "channel=PHONE")] == (1.0, 1)
    assert ("2026-01", "channel=FACE_TO_FACE") not in meetings_before
    assert meetings_now[("2026-01", "channel=FACE_TO_FACE")] == (1.0, 1)
    assert ("2026-01", "channel=PHONE") not in meetings_now
    # The corrected version is one fact: one interview either way.
    assert meetings_now[("2026-01", "")] == (1.0, 1)
    assert figures(before, "plans", "plans")[("2026-01", "")] == (1.0, 1)
    assert figures(now, "plans", "plans") == {}
    # An as-of instant on the correction day before it was recorded (08:00 UTC) sees the old.
    early = compute_indicators(
        con,
        [JAN_2026],
        as_of=datetime(2026, 2, 10, 7, 59, tzinfo=UTC),
        indicators=["initial_interview_access"],
    )
    assert figures(early, "initial_interview_access", median)[("2026-01", "")] == (2.0, 1)


# --- the start of job search is the spell's --------------------------------------------------


def test_access_time_counts_from_the_spells_registration_as_known_at_the_as_of_time() -> None:
    s = Scenario()
    # L: registered Wed 31.12.2025 (2025 rule: 5 working days → 2, 5, 7, 8, 9 → 9.1.2026);
    #    its interview event says the job search started 2.1.2026 (which would give 10 days).
    #    Held Wed 14.1.2026: 2, 5, 7, 8, 9, 12, 13, 14 = 8 working days after 31.12 → late.
    late = s.person()
    late.register(date(2025, 12, 31))
    late.interview(date(2026, 1, 2), date(2026, 1, 14))
    # N: no registration known: the interview's own start, Fri 2.1.2026 (10 days → 19.1);
    #    held Wed 7.1.2026: 5, 7 = 2 working days → within.
    s.person().interview(date(2026, 1, 2), date(2026, 1, 7))
    # M: registered Mon 5.1.2026, interview 21.1 (the event says 5.1); the registration is
    #    corrected on 10.2.2026 to Fri 2.1.2026. From 5.1: 7,8,9,12,13,14,15,16,19,20,21 = 11
    #    working days, deadline 20.1 → late (as of 5.2). From 2.1: 5,7,8,9,12,13,14,15,16,19,
    #    20,21 = 12, deadline 19.1 → late too (now), but the days differ.
    corrected = s.person()
    first = corrected.register(date(2026, 1, 5))
    corrected.add(
        JobseekerRegistered(
            envelope=corrected.envelope(
                JobseekerRegistered,
                date(2026, 1, 2),
                recorded=datetime(2026, 2, 10, 8, tzinfo=UTC),
                corrects=first.envelope.event_id,
            ),
            payload=first.payload.model_copy(update={"job_search_started_on": date(2026, 1, 2)}),
        )
    )
    corrected.interview(date(2026, 1, 5), date(2026, 1, 21))
    con = s.store()
    names = ["initial_interview_access"]
    now = compute_indicators(con, [JAN_2026], indicators=names)
    before = compute_indicators(con, [JAN_2026], as_of=date(2026, 2, 5), indicators=names)
    median = "median_working_days"
    within = "share_within_deadline"
    # Now: L 8, N 2, M 12 → sorted 2, 8, 12 → median 8; within N only = 1 / 3.
    assert figures(now, "initial_interview_access", median)[("2026-01", "")] == (8.0, 3)
    assert figures(now, "initial_interview_access", within)[("2026-01", "")][0] == pytest.approx(
        100 / 3
    )
    # As of 5.2: M from 5.1 = 11 → 2, 8, 11 → median 8 still; the day 21.1 holds M alone.
    assert figures(before, "initial_interview_access", median)[("2026-01", "")] == (8.0, 3)
    day = Period.parse("2026-01-21")
    now_day = compute_indicators(con, [day], indicators=names)
    before_day = compute_indicators(con, [day], as_of=date(2026, 2, 5), indicators=names)
    assert figures(now_day, "initial_interview_access", median)[("2026-01-21", "")] == (12.0, 1)
    assert figures(before_day, "initial_interview_access", median)[("2026-01-21", "")] == (
        11.0,
        1,
    )


def test_the_share_held_face_to_face_and_remote_for_a_weighty_reason() -> None:
    s = Scenario()
    # Four initial interviews in January 2026: two face to face, one by phone for a weighty
    # reason, one by video without one → face to face 2 / 4 = 50 %, weighty reason 1 / 4 = 25 %.
    s.person().interview(date(2026, 1, 2), date(2026, 1, 7))
    s.person().interview(date(2026, 1, 2), date(2026, 1, 8))
    s.person().interview(date(2026, 1, 2), date(2026, 1, 9), channel="PHONE", weighty_reason=True)
    s.person().interview(date(2026, 1, 2), date(2026, 1, 12), channel="VIDEO")
    table = compute_indicators(s.store(), [JAN_2026], indicators=["initial_interview_access"])
    face = figures(table, "initial_interview_access", "share_face_to_face")
    weighty = figures(table, "initial_interview_access", "share_remote_for_weighty_reason")
    assert face == {("2026-01", ""): (50.0, 4)}  # totals only, no channel rows
    assert weighty == {("2026-01", ""): (25.0, 4)}


# --- as of a day: the end of that day in Finland --------------------------------------------


def test_as_of_a_day_is_the_end_of_that_day_in_finland() -> None:
    s = Scenario()
    # Two spells from 2.1.2026; one ends 20.1, recorded 5.2.2026 at 21:30 UTC (23:30 in
    # Helsinki, UTC+2 in winter: still 5.2), the other ends 21.1, recorded 5.2 at 22:30 UTC
    # (00:30 on 6.2 in Helsinki). As of the day 5.2.2026: one end known, not two.
    for ended, recorded in [
        (date(2026, 1, 20), datetime(2026, 2, 5, 21, 30, tzinfo=UTC)),
        (date(2026, 1, 21), datetime(2026, 2, 5, 22, 30, tzinfo=UTC)),
    ]:
        person = s.person()
        person.register(date(2026, 1, 2))
        person.add(
            JobSearchEnded(
                envelope=person.envelope(JobSearchEnded, ended, recorded=recorded),
                payload=JobSearchEndedPayload(ended_on=ended, reason="EMPLOYED"),
            )
        )
    con = s.store()
    ended_by = {
        label: figures(compute_indicators(con, [JAN_2026], as_of=as_of), "flows", "spells_ended")
        for label, as_of in [
            ("day", date(2026, 2, 5)),
            # An instant with an offset is taken as given: 5.2 23:59 at +02:00 = 21:59 UTC.
            ("instant", datetime.fromisoformat("2026-02-05T23:59:00+02:00")),
            ("utc", datetime(2026, 2, 5, 23, 59, tzinfo=UTC)),
        ]
    }
    assert ended_by["day"][("2026-01", "")] == (1.0, 1)
    assert ended_by["instant"][("2026-01", "")] == (1.0, 1)
    assert ended_by["utc"][("2026-01", "")] == (2.0, 2)
    # In summer (UTC+3) the day 5.6.2026 ends at 20:59:59.999999 UTC.
    from hub.reporting.indicators.frame import _as_of

    assert _as_of(date(2026, 6, 5)) == ("TIMESTAMP '2026-06-05 20:59:59.999999'", "2026-06-05")
    assert _as_of(date(2026, 2, 5)) == ("TIMESTAMP '2026-02-05 21:59:59.999999'", "2026-02-05")
