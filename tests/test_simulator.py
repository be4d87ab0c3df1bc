"""The simulator makes realistic, deterministic customer paths over the real code lists."""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import date, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from connectors.simulator import SimulationConfig, simulate
from connectors.simulator.population import Population
from hub.codes import employment_area, employment_area_of, fund
from hub.events.customer_path import (
    InitialInterviewHeld,
    JobseekerRegistered,
    LabourPolicyStatementIssued,
    StatementRequested,
)
from hub.events.enums import PayerKind
from hub.identity import Pseudonymizer, parse_identity_code
from hub.rules import initial_interview_deadline, is_working_day
from tests.conftest import SIMULATION_SECRET as SECRET

HELSINKI = ZoneInfo("Europe/Helsinki")


def test_same_seed_same_events_and_other_seed_other_events() -> None:
    config = SimulationConfig(jobseekers=40, seed=11)
    first = [e.to_avro() for p in simulate(config, Pseudonymizer(SECRET)) for e in p]
    again = [e.to_avro() for p in simulate(config, Pseudonymizer(SECRET)) for e in p]
    other = [
        e.to_avro()
        for p in simulate(config.model_copy(update={"seed": 12}), Pseudonymizer(SECRET))
        for e in p
    ]
    assert first == again
    assert first != other


def test_every_path_is_in_causal_order(simulated_paths: list[list[Any]]) -> None:
    for path in simulated_paths:
        assert isinstance(path[0], JobseekerRegistered)
        assert path[0].envelope.causation_id is None
        seen: set[Any] = set()
        subjects = {e.envelope.subject for e in path}
        correlations = {e.envelope.correlation_id for e in path}
        assert len(subjects) == 1
        assert len(correlations) == 1
        times = [e.envelope.occurred_at for e in path]
        assert times == sorted(times)
        assert len(set(times)) == len(times)
        for event in path:
            if event.envelope.causation_id is not None:
                assert event.envelope.causation_id in seen, event.event_type
            seen.add(event.envelope.event_id)
            assert event.envelope.recorded_at >= event.envelope.occurred_at


def test_identity_codes_are_test_range_and_keys_are_pseudonyms(
    simulated_paths: list[list[Any]],
) -> None:
    codes = set()
    for path in simulated_paths:
        registered = path[0]
        code = parse_identity_code(registered.payload.personal_identity_code)
        assert code.is_temporary
        assert 900 <= code.individual_number <= 999
        assert registered.envelope.subject == Pseudonymizer(SECRET).pseudonym(code.code)
        assert code.code not in registered.envelope.subject
        codes.add(code.code)
    assert len(codes) == len(simulated_paths), "identity codes are unique within a run"


def test_interviews_follow_the_deadline_of_the_start_day(simulated_paths: list[list[Any]]) -> None:
    late = on_time = 0
    for path in simulated_paths:
        for event in path:
            if isinstance(event, InitialInterviewHeld):
                started = event.payload.job_search_started_on
                assert event.payload.deadline == initial_interview_deadline(started)
                assert event.payload.within_deadline == (
                    event.payload.held_on <= event.payload.deadline
                )
                late += not event.payload.within_deadline
                on_time += event.payload.within_deadline
    assert on_time > late > 0


def test_rule_change_on_new_year_shows_in_deadlines(simulated_paths: list[list[Any]]) -> None:
    working_days: dict[int, set[int]] = {2025: set(), 2026: set()}
    for path in simulated_paths:
        for e in path:
            if isinstance(e, InitialInterviewHeld):
                started = e.payload.job_search_started_on
                span = (e.payload.deadline - started).days
                days = (started + timedelta(days=n + 1) for n in range(span))
                working_days[started.year].add(sum(is_working_day(d) for d in days))
    assert working_days == {2025: {5}, 2026: {10}}


def test_statements_go_to_the_right_payer(simulated_paths: list[list[Any]]) -> None:
    payers = Counter()
    for path in simulated_paths:
        registered = path[0].payload
        for event in path:
            if isinstance(event, LabourPolicyStatementIssued | StatementRequested):
                payer = event.payload.payer
                payers[payer.kind] += 1
                if payer.kind is PayerKind.UNEMPLOYMENT_FUND:
                    # The registered fund, or its successor once it has merged away.
                    registered_fund = fund(registered.unemployment_fund_code)
                    assert payer.fund_code in {
                        registered_fund.code,
                        registered_fund.successor_code,
                    }
                    local_day = event.envelope.occurred_at.astimezone(HELSINKI).date()
                    assert fund(payer.fund_code).is_valid_on(local_day)
                    assert event.envelope.source_system.endswith(payer.fund_code) or isinstance(
                        event, LabourPolicyStatementIssued
                    )
                else:
                    assert payer.fund_code is None
    assert payers[PayerKind.KELA] > 0
    assert payers[PayerKind.UNEMPLOYMENT_FUND] > 0


def test_every_event_type_occurs_and_municipalities_match_areas(
    simulated_paths: list[list[Any]],
) -> None:
    types = Counter(e.event_type for p in simulated_paths for e in p)
    assert len(types) == 13
    for path in simulated_paths:
        envelope = path[0].envelope
        assert employment_area_of(envelope.municipality_code).code == envelope.employment_area_code


def test_area_option_limits_municipalities() -> None:
    config = SimulationConfig(jobseekers=30, seed=3, area="08", start=date(2026, 2, 1), days=30)
    members = set(employment_area("08").municipality_codes)
    for path in simulate(config, Pseudonymizer(SECRET)):
        assert {e.envelope.municipality_code for e in path} <= members


def test_municipalities_are_drawn_by_size_and_deterministically() -> None:
    population = Population(SimulationConfig(jobseekers=1, seed=5), Pseudonymizer(SECRET))
    first_rng, second_rng = random.Random(7), random.Random(7)
    draws = [population.draw_municipality(first_rng) for _ in range(20_000)]
    assert draws == [population.draw_municipality(second_rng) for _ in range(20_000)]
    counts = Counter(draws)
    # Helsinki has about 12% of the mainland population, Hailuoto under 0.02%.
    assert 0.10 < counts["091"] / len(draws) < 0.14
    assert counts["091"] > counts["837"] > 10 * counts["072"]
    anywhere_rng = random.Random(8)
    anywhere = Counter(
        population.draw_municipality(anywhere_rng, anywhere=True) for _ in range(5_000)
    )
    assert anywhere.most_common(1)[0][0] == "091"


# --- corrections ---------------------------------------------------------------------------------

CORRECTED = SimulationConfig(jobseekers=300, seed=5, correction_share=0.3)


@pytest.fixture(scope="module")
def corrected_paths() -> list[list[Any]]:
    return list(simulate(CORRECTED, Pseudonymizer(SECRET)))


def _is_correction(event: Any) -> bool:
    return event.envelope.corrects_event_id is not None


def test_without_a_share_no_event_is_a_correction(simulated_paths: list[list[Any]]) -> None:
    assert SimulationConfig().correction_share == 0
    for path in simulated_paths:
        for event in path:
            assert event.envelope.corrects_event_id is None
            assert event.envelope.retracted is False


def test_corrections_leave_the_first_versions_as_they_were(
    corrected_paths: list[list[Any]],
) -> None:
    plain = simulate(CORRECTED.model_copy(update={"correction_share": 0.0}), Pseudonymizer(SECRET))
    for with_fixes, without in zip(corrected_paths, plain, strict=True):
        assert [e for e in with_fixes if not _is_correction(e)] == without
    again = [e.to_avro() for p in simulate(CORRECTED, Pseudonymizer(SECRET)) for e in p]
    assert again == [e.to_avro() for p in corrected_paths for e in p]
    other_seed = CORRECTED.model_copy(update={"seed": 6})
    other = [e.to_avro() for p in simulate(other_seed, Pseudonymizer(SECRET)) for e in p]
    assert other != again


def test_each_correction_follows_its_first_version_and_says_what_changed(
    corrected_paths: list[list[Any]],
) -> None:
    kinds: Counter[str] = Counter()
    correctable = corrected = 0
    for path in corrected_paths:
        seen: dict[Any, Any] = {}
        cited = {getattr(e.payload, "job_offer_id", None) for e in path}
        sent = [
            e.envelope.recorded_at if _is_correction(e) else e.envelope.occurred_at for e in path
        ]
        assert sent == sorted(sent), "a person's stream is in the order it is sent"
        for event in path:
            envelope = event.envelope
            if not _is_correction(event):
                correctable += event.event_type in (
                    "InitialInterviewHeld",
                    "JobSearchConversationHeld",
                    "JobOfferMade",
                )
                seen[envelope.event_id] = event
                continue
            original = seen[envelope.corrects_event_id]  # its first version came before
            assert envelope.event_id not in seen
            assert type(event) is type(original)
            assert original.envelope.corrects_event_id is None
            same = (
                "subject",
                "correlation_id",
                "causation_id",
                "municipality_code",
                "source_system",
            )
            for name in same:
                assert getattr(envelope, name) == getattr(original.envelope, name), name
            assert envelope.recorded_at - original.envelope.recorded_at >= timedelta(days=2)
            assert envelope.recorded_at >= envelope.occurred_at
            if envelope.retracted:
                assert event.event_type in ("JobOfferMade", "JobOfferOutcomeRecorded")
                assert event.payload == original.payload
                assert event.payload.offer_id not in cited, "no job start cites a retracted offer"
                kinds["retracted " + event.event_type] += 1
            elif event.payload.channel != original.payload.channel:
                assert event.payload.held_on == original.payload.held_on
                assert envelope.occurred_at == original.envelope.occurred_at
                kinds["channel " + event.event_type] += 1
            else:
                assert event.event_type == "InitialInterviewHeld"
                held = event.payload.held_on
                assert held != original.payload.held_on
                assert is_working_day(held)
                assert held > event.payload.job_search_started_on
                assert event.payload.within_deadline == (held <= event.payload.deadline)
                assert envelope.occurred_at.astimezone(HELSINKI).date() == held
                kinds["day InitialInterviewHeld"] += 1
            corrected += event.event_type != "JobOfferOutcomeRecorded"
            seen[envelope.event_id] = event
    assert set(kinds) == {
        "channel InitialInterviewHeld",
        "channel JobSearchConversationHeld",
        "day InitialInterviewHeld",
        "retracted JobOfferMade",
        "retracted JobOfferOutcomeRecorded",
    }
    # about 30 % of the correctable facts (offers cited by a job start are never retracted)
    assert 0.24 * correctable < corrected < 0.33 * correctable, (corrected, correctable)


def test_in_time_order_keeps_each_person_s_corrections_after_their_originals(
    corrected_paths: list[list[Any]],
) -> None:
    from connectors.simulator.paths import in_time_order

    merged = list(in_time_order(corrected_paths))
    assert len(merged) == sum(len(p) for p in corrected_paths)
    position = {e.envelope.event_id: i for i, e in enumerate(merged)}
    for path in corrected_paths:
        order = [position[e.envelope.event_id] for e in path]
        assert order == sorted(order)


def test_corrections_break_no_rule_of_the_ingest_api(corrected_paths: list[list[Any]]) -> None:
    """A correction is sent as the same request with corrects_event_id: the API takes them."""
    from datetime import UTC, datetime

    from hub.intake.requests import BULK_ADAPTER, bulk_violations

    now = datetime.combine(CORRECTED.end + timedelta(days=200), datetime.min.time(), UTC)
    checked = 0
    for path in corrected_paths[:120]:
        code = path[0].payload.personal_identity_code
        items = [
            {
                "event_type": e.event_type,
                "event_id": str(e.envelope.event_id),
                "occurred_at": e.envelope.occurred_at.isoformat(),
                "personal_identity_code": code,
                "municipality_code": e.envelope.municipality_code,
                "correlation_id": str(e.envelope.correlation_id),
                "causation_id": str(e.envelope.causation_id) if e.envelope.causation_id else None,
                "corrects_event_id": str(e.envelope.corrects_event_id),
                "retracted": e.envelope.retracted,
                "payload": e.payload.model_dump(mode="json"),
            }
            for e in path
            if _is_correction(e)
        ]
        parsed = BULK_ADAPTER.validate_json(json.dumps(items), strict=True)
        assert bulk_violations(parsed, now=now, clock_skew=timedelta(seconds=300)) == []
        checked += len(parsed)
    assert checked > 50


def test_the_command_refuses_a_share_outside_zero_to_one() -> None:
    from click.testing import CliRunner

    from hub.cli import cli

    result = CliRunner().invoke(cli, ["simulate", "--correction-share", "1.5"])
    assert result.exit_code == 2
    assert "--correction-share" in result.output
