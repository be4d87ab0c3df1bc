"""Meetings, plans, plan debt, obligation, offers, activation, statements and flows over one
scripted January 2026 in Helsinki (091, employment area 08), every figure by hand.

Initial-interview deadlines (2026 rule: 10 working days; 1.1. and 6.1. are holidays):
start Fri 2.1 → 19.1; start Mon 5.1 → 20.1; start Mon 26.1 → 9.2.
"""

from __future__ import annotations

from datetime import date

import pyarrow as pa
import pytest

from hub.reporting.indicators import Period, compute_indicators
from tests.test_indicators import Scenario, figures

JAN = Period.parse("2026-01")
DEC = Period.parse("2025-12")
FEB = Period.parse("2026-02")
JAN_30 = Period.parse("2026-01-30")


def _january() -> Scenario:
    s = Scenario()
    p1, p2, p3, p4, p5, p6, p7, p9 = (s.person("091") for _ in range(8))
    # P1: unemployed from 2.1; plans 7.1 (4 a month) and 20.1 (2 a month, the one in force).
    p1.register(date(2026, 1, 2))
    p1.interview(date(2026, 1, 2), date(2026, 1, 7), channel="FACE_TO_FACE")
    p1.plan(date(2026, 1, 7), per_month=4)
    p1.plan(date(2026, 1, 20), per_month=2)
    hired = p1.offer(date(2026, 1, 8), binding=True)
    p1.outcome(hired, "HIRED", date(2026, 1, 20))
    p1.statement(p1.request(date(2026, 1, 5)), date(2026, 1, 12))  # 7 days, team T1
    # P2: laid off from 5.1, no plan; in coaching 20.1-28.2.
    p2.register(date(2026, 1, 5), status="LAID_OFF")
    p2.enrol(date(2026, 1, 20), date(2026, 2, 28))
    fund = p2.request(date(2026, 1, 8), payer="UNEMPLOYMENT_FUND")
    p2.statement(fund, date(2026, 1, 9), payer="UNEMPLOYMENT_FUND")  # 1 day, team T1
    # P3: unemployed from 26.1 (deadline 9.2: no plan due yet); interview 28.1 by phone;
    # an offer in Espoo (049, area 01) that led to a job starting 2.2; a refused binding one.
    p3.register(date(2026, 1, 26))
    p3.interview(date(2026, 1, 26), date(2026, 1, 28), channel="PHONE")
    outside = p3.offer(date(2026, 1, 27), binding=False, workplace="049")
    p3.job_start(date(2026, 2, 2), offer_id=outside, workplace="049")
    refused = p3.offer(date(2026, 1, 28), binding=True)
    p3.outcome(refused, "REFUSED", date(2026, 1, 29))
    # P4: part-time employed from 2.1; an open-ended plan on 5.1 replaced on 8.1 by an
    # integration plan valid only to 20.1 (so no valid plan after 20.1).
    p4.register(date(2026, 1, 2), status="PART_TIME_EMPLOYED")
    p4.plan(date(2026, 1, 5))
    p4.plan(
        date(2026, 1, 8), valid_until=date(2026, 1, 20), per_month=2, plan_type="INTEGRATION_PLAN"
    )
    p4.statement(p4.request(date(2026, 1, 20)), date(2026, 2, 2))  # February: 13 days
    # P5: unemployed 1.12.2025-14.1.2026 (45 days: 31 + 14), a job from 15.1.
    p5.register(date(2025, 12, 1))
    p5.end(date(2026, 1, 14), reason="EMPLOYED")
    p5.job_start(date(2026, 1, 15))
    # P6: unemployed 10.1-20.1.2026 (11 days), to education.
    p6.register(date(2026, 1, 10))
    p6.end(date(2026, 1, 20), reason="EDUCATION")
    # P7: unemployed from 2.1; plan 5.1 (3 a month, team T2); coaching from 10.1, interrupted
    # from 31.1 (the interruption day is out); conversations 20.1 by phone and 27.1 by video.
    p7.register(date(2026, 1, 2))
    p7.plan(date(2026, 1, 5), per_month=3, team="T2")
    enrolment = p7.enrol(date(2026, 1, 10), date(2026, 2, 28))
    p7.participation(enrolment, "INTERRUPTION", date(2026, 1, 31))
    p7.conversation(date(2026, 1, 20), "FOLLOW_UP", "PHONE")
    p7.conversation(date(2026, 1, 27), "FOLLOW_UP", "VIDEO")
    p7.offer(date(2026, 1, 9), binding=True)
    p7.statement(None, date(2026, 1, 15))  # unasked: not in the processing time
    # P9: unemployed from 2.1; coaching 5.1-15.2 completed on 31.1 (the completion day is in).
    p9.register(date(2026, 1, 2))
    coaching = p9.enrol(date(2026, 1, 5), date(2026, 2, 15))
    p9.participation(coaching, "COMPLETION", date(2026, 1, 31))
    p9.statement(p9.request(date(2026, 1, 10)), date(2026, 1, 20), team="T2")  # 10 days
    return s


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return compute_indicators(_january().store(), [DEC, JAN, FEB, JAN_30])


def _jan(
    table: pa.Table, indicator: str, measure: str, level: str = "country", code: str = "FI"
) -> dict[str, tuple[float | None, int]]:
    return {
        b: v
        for (p, b), v in figures(table, indicator, measure, level, code).items()
        if p == "2026-01"
    }


def test_meetings_by_type_and_channel(table: pa.Table) -> None:
    # P1 interview face to face, P3 interview by phone, P7 follow-ups by phone and video.
    assert _jan(table, "interviews_and_conversations", "meetings") == {
        "": (4.0, 4),
        "type=INITIAL_INTERVIEW": (2.0, 2),
        "type=FOLLOW_UP": (2.0, 2),
        "channel=FACE_TO_FACE": (1.0, 1),
        "channel=PHONE": (2.0, 2),
        "channel=VIDEO": (1.0, 1),
        "type=INITIAL_INTERVIEW;channel=FACE_TO_FACE": (1.0, 1),
        "type=INITIAL_INTERVIEW;channel=PHONE": (1.0, 1),
        "type=FOLLOW_UP;channel=PHONE": (1.0, 1),
        "type=FOLLOW_UP;channel=VIDEO": (1.0, 1),
    }


def test_spells_still_waiting_for_the_initial_interview_past_the_deadline(table: pa.Table) -> None:
    # 31.1: active P1, P2, P3, P4, P7, P9; past the deadline all but P3 (9.2) = 5; of them only
    # P1 had the interview (7.1) → 4 waiting.
    waiting = _jan(table, "initial_interview_access", "waiting_past_deadline")
    assert waiting[""] == (4.0, 5)
    # 30.1 the same people: 4 of 5.
    day = figures(table, "initial_interview_access", "waiting_past_deadline")
    assert day[("2026-01-30", "")] == (4.0, 5)


def test_plans_plan_debt_and_obligation(table: pa.Table) -> None:
    # Plans agreed in January: P1 7.1 and 20.1, P4 5.1 and 8.1 (integration), P7 5.1.
    plans = _jan(table, "plans", "plans")
    assert plans == {
        "": (5.0, 5),
        "type=EMPLOYMENT_PLAN": (4.0, 4),
        "type=INTEGRATION_PLAN": (1.0, 1),
    }
    # On 31.1: active P1, P2, P3, P4, P7, P9 (P5 ended 14.1, P6 20.1) = 6.
    # Due (deadline passed): all but P3 (9.2) = 5. Without a valid plan: P2 (none), P4 (its
    # latest plan expired 20.1; the open-ended one of 5.1 was replaced), P9 (none) = 3
    # → 3 / 5 = 60 %.
    assert _jan(table, "plan_debt", "share_without_plan")[""] == (60.0, 5)
    assert _jan(table, "plan_debt", "without_plan")[""] == (3.0, 5)
    assert _jan(table, "plan_debt", "active_jobseekers")[""] == (6.0, 6)
    # By group: LAID_OFF P2 due, no plan → 100 %; UNEMPLOYED P1, P7, P9 due, P9 without → 1/3.
    assert _jan(table, "plan_debt", "share_without_plan")["group=LAID_OFF"] == (100.0, 1)
    assert _jan(table, "plan_debt", "share_without_plan")["group=UNEMPLOYED"][0] == pytest.approx(
        100 / 3
    )
    # Obligation on 31.1: P1 (plan of 20.1: 2 a month), P7 (3) → mean 2.5; P4's latest plan
    # has expired, so P4 is not there with the replaced plan's 4.
    obligation = _jan(table, "job_search_obligation", "jobseekers")
    assert obligation == {
        "": (2.0, 2),
        "group=UNEMPLOYED": (2.0, 2),
        "level=2": (1.0, 1),
        "level=3": (1.0, 1),
        "group=UNEMPLOYED;level=2": (1.0, 1),
        "group=UNEMPLOYED;level=3": (1.0, 1),
    }
    assert _jan(table, "job_search_obligation", "mean_per_month")[""] == (2.5, 2)
    # Team of the plan in force: T1 for P1, T2 for P7.
    assert _jan(table, "job_search_obligation", "mean_per_month", "team", "T2")[""] == (3.0, 1)
    # No team level for plan debt.
    levels = {r["level"] for r in table.to_pylist() if r["indicator"] == "plan_debt"}
    assert levels == {"country", "regional_centre", "region", "employment_area", "municipality"}


def test_job_offers(table: pa.Table) -> None:
    # Offers in January: P1 8.1 binding (HIRED), P3 27.1 not binding (job start 2.2 in Espoo
    # naming it), P3 28.1 binding (REFUSED), P7 9.1 binding (no outcome) = 4.
    assert _jan(table, "job_offers", "offers") == {
        "": (4.0, 4),
        "binding=true": (3.0, 3),
        "binding=false": (1.0, 1),
    }
    assert _jan(table, "job_offers", "jobseekers_with_offer")[""] == (3.0, 3)  # P1, P3, P7
    # Led to employment: P1's (HIRED) and P3's first (a job start names it) = 2 / 4.
    led = _jan(table, "job_offers", "share_led_to_employment")
    assert led[""] == (50.0, 4)
    assert led["binding=true"][0] == pytest.approx(100 / 3)
    assert led["binding=false"] == (100.0, 1)
    # Outside the area: P3's placement in Espoo (area 01), not Helsinki's (08): 1 of 2.
    assert _jan(table, "job_offers", "placements_outside_area")[""] == (1.0, 2)


def test_activation_rate_on_the_last_day_and_on_a_day(table: pa.Table) -> None:
    # 31.1: in services P2 (20.1-28.2) and P9 (completed 31.1: in); P7 interrupted from 31.1.
    # Unemployed: P1, P3, P7 (P4 part-time employed, P5 and P6 ended) → 2 / (3 + 2) = 40 %.
    assert _jan(table, "activation_rate", "activation_rate")[""] == (40.0, 5)
    assert _jan(table, "activation_rate", "in_services")[""] == (2.0, 5)
    # 30.1: in services P2, P7, P9; unemployed P1, P3 → 3 / 5 = 60 %.
    day = figures(table, "activation_rate", "activation_rate")[("2026-01-30", "")]
    assert day == (60.0, 5)
    assert not {r["level"] for r in table.to_pylist() if r["indicator"] == "activation_rate"} & {
        "team",
        "expert",
    }


def test_statement_processing_time(table: pa.Table) -> None:
    # January: P1 7 days, P2 1 day, P9 10 days (P7's unasked one left out) → median 7.
    median = _jan(table, "statement_processing_time", "median_days")
    assert median[""] == (7.0, 3)
    assert median["payer=KELA"] == (8.5, 2)  # (7 + 10) / 2
    assert median["payer=UNEMPLOYMENT_FUND"] == (1.0, 1)
    assert _jan(table, "statement_processing_time", "median_days", "team", "T1")[""] == (4.0, 2)
    feb = figures(table, "statement_processing_time", "median_days")[("2026-02", "")]
    assert feb == (13.0, 1)  # P4: 20.1 → 2.2


def test_flows(table: pa.Table) -> None:
    # Started in January: P1, P2, P3, P4, P6, P7, P9 = 7 (P5 in December).
    started = _jan(table, "flows", "spells_started")
    assert started == {
        "": (7.0, 7),
        "group=UNEMPLOYED": (5.0, 5),  # P1, P3, P6, P7, P9
        "group=LAID_OFF": (1.0, 1),
        "group=PART_TIME_EMPLOYED": (1.0, 1),
    }
    assert figures(table, "flows", "spells_started")[("2025-12", "")] == (1.0, 1)
    # Ended: P5 (45 days) and P6 (11 days) → median (11 + 45) / 2 = 28.
    assert _jan(table, "flows", "spells_ended")[""] == (2.0, 2)
    lengths = _jan(table, "flows", "median_spell_length_days")
    assert lengths == {"": (28.0, 2), "reason=EMPLOYED": (45.0, 1), "reason=EDUCATION": (11.0, 1)}
    # Job starts in January: P5 on 15.1 (P3's is on 2.2).
    assert _jan(table, "flows", "employment_starts") == {
        "": (1.0, 1),
        "form=PERMANENT_FULL_TIME": (1.0, 1),
    }
    # Long-term unemployed on 31.1: none of P1, P3, P7.
    assert _jan(table, "flows", "long_term_unemployed")[""] == (0.0, 3)


def test_output_is_sorted_and_repeatable(table: pa.Table) -> None:
    keys = [
        (r["indicator"], r["measure"], r["level"], r["code"], r["period"], r["breakdown"])
        for r in table.to_pylist()
    ]
    assert keys == sorted(keys)
    assert len(keys) == len(set(keys))
    again = compute_indicators(_january().store(), [JAN_30, FEB, JAN, DEC])
    assert again.equals(table)


# --- participation as intervals; only jobseekers count; which services count ----------------


def test_a_restarted_service_counts_and_a_service_without_a_spell_does_not() -> None:
    s = Scenario()
    # V: unemployed from 2.1.2026; coaching 5.1-28.2: START 5.1, INTERRUPTION 12.1 (out from
    #    12.1), START 19.1 again → in a service 5.1-11.1 and 19.1-28.2.
    v = s.person("091")
    v.register(date(2026, 1, 2))
    coaching = v.enrol(date(2026, 1, 5), date(2026, 2, 28))
    v.participation(coaching, "START", date(2026, 1, 5))
    v.participation(coaching, "INTERRUPTION", date(2026, 1, 12))
    v.participation(coaching, "START", date(2026, 1, 19))
    # W: registered 2.1, job search ended 3.1; coaching 10.1-28.2 → no jobseeker, counts nowhere.
    w = s.person("091")
    w.register(date(2026, 1, 2))
    w.end(date(2026, 1, 3))
    w.enrol(date(2026, 1, 10), date(2026, 2, 28))
    days = [Period.parse(d) for d in ("2026-01-11", "2026-01-12", "2026-01-18", "2026-01-31")]
    table = compute_indicators(s.store(), days, indicators=["activation_rate"])
    rate = figures(table, "activation_rate", "activation_rate")
    in_services = figures(table, "activation_rate", "in_services")
    unemployed = figures(table, "activation_rate", "unemployed")
    # 11.1: V in (5.1-11.1) → 1 / (0 + 1) = 100 %.
    assert rate[("2026-01-11", "")] == (100.0, 1)
    # 12.1 and 18.1: V interrupted → unemployed → 0 / (1 + 0) = 0 %.
    assert rate[("2026-01-12", "")] == (0.0, 1)
    assert unemployed[("2026-01-18", "")] == (1.0, 1)
    # 31.1: V restarted 19.1 → in; W not a jobseeker → 1 / (0 + 1) = 100 % (not 1 / 2).
    assert rate[("2026-01-31", "")] == (100.0, 1)
    assert in_services[("2026-01-31", "")] == (1.0, 1)
    assert unemployed[("2026-01-31", "")] == (0.0, 1)


def test_career_guidance_is_not_a_service_of_the_activation_rate() -> None:
    from hub.rules.activation import activation_service_types_table, counts_as_service

    assert counts_as_service("PAY_SUBSIDY", date(2026, 1, 15))
    assert counts_as_service("START_UP_GRANT", date(2025, 1, 1))
    assert not counts_as_service("CAREER_GUIDANCE", date(2026, 1, 15))
    assert activation_service_types_table().overlaps() == []
    assert all(p.source for p in activation_service_types_table().periods)
    s = Scenario()
    # T: unemployed from 2.1.2026, in career guidance 10.1-20.1 → still unemployed on 15.1.
    t = s.person("091")
    t.register(date(2026, 1, 2))
    t.enrol(date(2026, 1, 10), date(2026, 1, 20), service_type="CAREER_GUIDANCE")
    # X: unemployed from 2.1.2026, in a work trial 10.1-20.1 → in services on 15.1.
    x = s.person("091")
    x.register(date(2026, 1, 2))
    x.enrol(date(2026, 1, 10), date(2026, 1, 20), service_type="WORK_TRIAL")
    day = Period.parse("2026-01-15")
    table = compute_indicators(s.store(), [day], indicators=["activation_rate"])
    # In services X = 1, unemployed T = 1 → 1 / (1 + 1) = 50 %.
    assert figures(table, "activation_rate", "activation_rate")[("2026-01-15", "")] == (50.0, 2)
    assert figures(table, "activation_rate", "unemployed")[("2026-01-15", "")] == (1.0, 2)


def test_a_service_breaks_long_term_unemployment_and_a_job_start_ends_it() -> None:
    s = Scenario()
    # P: unemployed from 15.1.2025, coaching 1.3.-31.5.2025 → continuously unemployed again
    #    from 1.6.2025 → long-term only from 1.6.2026.
    p = s.person("091")
    p.register(date(2025, 1, 15))
    p.enrol(date(2025, 3, 1), date(2025, 5, 31))
    # Q: unemployed from 15.1.2025, no service → exactly 12 months on 15.1.2026.
    s.person("091").register(date(2025, 1, 15))
    # R: unemployed from 15.1.2025, a job from 1.6.2025 (no end in the events) → not unemployed.
    r = s.person("091")
    r.register(date(2025, 1, 15))
    r.job_start(date(2025, 6, 1))
    # T: unemployed from 15.1.2025, career guidance 1.3.-31.5.2025 (not a counting service)
    #    → the 12 months run from 15.1.2025.
    t = s.person("091")
    t.register(date(2025, 1, 15))
    t.enrol(date(2025, 3, 1), date(2025, 5, 31), service_type="CAREER_GUIDANCE")
    days = [Period.parse(d) for d in ("2026-01-15", "2026-05-31", "2026-06-01")]
    table = compute_indicators(s.store(), days, indicators=["flows"])
    long_term = figures(table, "flows", "long_term_unemployed")
    # 15.1.2026: unemployed P, Q, T (R has a job) = 3; long-term Q, T = 2 (P from 1.6.2025).
    assert long_term[("2026-01-15", "")] == (2.0, 3)
    # 31.5.2026: P at 12 months minus a day → still 2; 1.6.2026: P too → 3.
    assert long_term[("2026-05-31", "")] == (2.0, 3)
    assert long_term[("2026-06-01", "")] == (3.0, 3)
