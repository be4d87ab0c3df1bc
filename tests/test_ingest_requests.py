"""Request models, their rules and the conversion to events (pure functions, no HTTP)."""

from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID, uuid5

import pytest
from pydantic import ValidationError

from connectors.simulator.config import SimulationConfig
from connectors.simulator.paths import simulate
from hub.events.customer_path import JobseekerRegisteredPayload
from hub.identity import Pseudonymizer, make_test_identity_code
from hub.intake.convert import (
    CORRELATION_NAMESPACE,
    EVENT_ID_NAMESPACE,
    derived_event_id,
    to_event,
)
from hub.intake.dedupe import request_dedupe_key, versioned_key
from hub.intake.examples import CORRECTIONS, EXAMPLES, PERSON
from hub.intake.requests import (
    BULK_ADAPTER,
    REQUEST_TYPES,
    IngestRequest,
    bulk_violations,
)

SECRET = "test-secret-for-ingest-requests"
SKEW = timedelta(seconds=300)
NOW = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
#: A valid code of a person born the day after NOW (in Helsinki).
FUTURE_BORN = make_test_identity_code(date(2026, 7, 2), 950, modern_sign=True)


def request(event_type: str, **changes: Any) -> IngestRequest[Any]:
    """The example of *event_type*, with top-level changes and ``payload__field`` changes."""
    body = copy.deepcopy(EXAMPLES[event_type])
    for key, value in changes.items():
        if key.startswith("payload__"):
            body["payload"][key.removeprefix("payload__")] = value
        else:
            body[key] = value
    return REQUEST_TYPES[event_type].model_validate(body)


def rules(item: IngestRequest[Any], now: datetime = NOW) -> list[tuple[tuple[Any, ...], str]]:
    return [(v.loc, v.type) for v in item.violations(now=now, clock_skew=SKEW)]


@pytest.mark.parametrize("event_type", sorted(EXAMPLES))
def test_every_example_is_valid_and_breaks_no_rule(event_type: str) -> None:
    assert rules(request(event_type)) == []
    item = BULK_ADAPTER.validate_python([{"event_type": event_type, **EXAMPLES[event_type]}])[0]
    assert type(item).__name__ == f"{event_type}Item"
    assert item.event_class.__name__ == event_type


def test_simulated_paths_break_no_rule() -> None:
    """The simulator follows the law's rules; the API must accept everything it produces."""
    config = SimulationConfig(jobseekers=120, seed=3)
    end = datetime.combine(config.start + timedelta(days=config.days + 200), datetime.min.time())
    checked = 0
    for path in simulate(config, Pseudonymizer(SECRET)):
        first = path[0].payload
        assert isinstance(first, JobseekerRegisteredPayload)
        items = []
        for event in path:
            envelope = event.envelope
            body = {
                "event_type": event.event_type,
                "occurred_at": envelope.occurred_at.isoformat(),
                "personal_identity_code": first.personal_identity_code,
                "municipality_code": envelope.municipality_code,
                "correlation_id": str(envelope.correlation_id),
                "causation_id": str(envelope.causation_id) if envelope.causation_id else None,
                "payload": event.payload.model_dump(mode="json"),
            }
            items.append(body)
        parsed = BULK_ADAPTER.validate_json(json.dumps(items), strict=True)
        assert bulk_violations(parsed, now=end.replace(tzinfo=UTC), clock_skew=SKEW) == []
        checked += len(parsed)
    assert checked > 1000


# --- one test per rule -------------------------------------------------------------------------

RULES: list[tuple[str, dict[str, Any], tuple[Any, ...], str]] = [
    (
        "JobseekerRegistered",
        {"payload__personal_identity_code": "010516B903X"},
        ("payload", "personal_identity_code"),
        "identity_code_mismatch",
    ),
    (
        "JobseekerRegistered",
        {"occurred_at": "2026-07-01T12:05:01Z"},
        ("occurred_at",),
        "occurred_in_future",
    ),
    (
        "JobseekerRegistered",
        {"payload__job_search_started_on": "2026-03-03"},
        ("payload", "job_search_started_on"),
        "date_after_occurred_at",
    ),
    (
        "JobseekerRegistered",
        {"payload__age_at_registration": 32},
        ("payload", "age_at_registration"),
        "age_mismatch",
    ),
    (
        "InitialInterviewHeld",
        {"payload__held_on": "2026-03-10"},
        ("payload", "held_on"),
        "date_after_occurred_at",
    ),
    (
        "InitialInterviewHeld",
        {"payload__job_search_started_on": "2026-03-10", "payload__deadline": "2026-03-24"},
        ("payload", "held_on"),
        "held_before_job_search_started",
    ),
    (
        "InitialInterviewHeld",
        {"payload__deadline": "2026-03-09"},
        ("payload", "deadline"),
        "deadline_mismatch",
    ),
    (
        "InitialInterviewHeld",
        {"payload__within_deadline": False},
        ("payload", "within_deadline"),
        "within_deadline_mismatch",
    ),
    (
        "InitialInterviewHeld",
        {"payload__remote_for_weighty_reason": True},
        ("payload", "remote_for_weighty_reason"),
        "remote_reason_with_face_to_face",
    ),
    (
        "InitialInterviewHeld",
        {"payload__job_search_started_on": "2024-12-30", "payload__deadline": "2025-01-07"},
        ("payload", "job_search_started_on"),
        "no_rule_in_force",
    ),
    (
        "EmploymentPlanAgreed",
        {"payload__agreed_on": "2026-03-10"},
        ("payload", "agreed_on"),
        "date_after_occurred_at",
    ),
    (
        "EmploymentPlanAgreed",
        {"payload__valid_until": "2026-03-08"},
        ("payload", "valid_until"),
        "valid_until_before_agreed_on",
    ),
    (
        "EmploymentPlanAgreed",
        {"payload__job_search_obligation_per_month": 2},
        ("payload", "obligation_reduction"),
        "obligation_reduction_missing",
    ),
    (
        "EmploymentPlanAgreed",
        {"payload__obligation_reduction": "LAYOFF"},
        ("payload", "obligation_reduction"),
        "obligation_reduction_without_reduction",
    ),
    (
        "JobSearchConversationHeld",
        {"payload__held_on": "2026-06-09"},
        ("payload", "held_on"),
        "date_after_occurred_at",
    ),
    (
        "JobOfferOutcomeRecorded",
        {"payload__recorded_on": "2026-04-03"},
        ("payload", "recorded_on"),
        "date_after_occurred_at",
    ),
    (
        "StatementRequested",
        {"payload__requested_on": "2026-03-05"},
        ("payload", "requested_on"),
        "date_after_occurred_at",
    ),
    (
        "StatementRequested",
        {"payload__payer": {"kind": "KELA", "fund_code": "ote"}},
        ("payload", "payer", "fund_code"),
        "fund_code_with_kela",
    ),
    (
        "StatementRequested",
        {
            "payload__payer": {"kind": "UNEMPLOYMENT_FUND"},
            "payload__benefit": "EARNINGS_RELATED_ALLOWANCE",
        },
        ("payload", "payer", "fund_code"),
        "fund_code_missing",
    ),
    (
        "StatementRequested",
        {
            "payload__payer": {"kind": "UNEMPLOYMENT_FUND", "fund_code": "erko"},
            "payload__benefit": "EARNINGS_RELATED_ALLOWANCE",
        },
        ("payload", "payer", "fund_code"),
        "fund_not_operating",
    ),
    (
        "StatementRequested",
        {"payload__benefit": "EARNINGS_RELATED_ALLOWANCE"},
        ("payload", "benefit"),
        "benefit_not_paid_by_payer",
    ),
    (
        "LabourPolicyStatementIssued",
        {"payload__issued_on": "2026-03-07"},
        ("payload", "issued_on"),
        "date_after_occurred_at",
    ),
    (
        "LabourPolicyStatementIssued",
        {"payload__outcome": "SANCTION_PERIOD"},
        ("payload", "sanction_days"),
        "sanction_days_missing",
    ),
    (
        "LabourPolicyStatementIssued",
        {"payload__sanction_days": 7},
        ("payload", "sanction_days"),
        "sanction_days_without_sanction",
    ),
    (
        "BenefitDaysAccrued",
        {"payload__period_end": "2026-03-01"},
        ("payload", "period_end"),
        "period_end_before_start",
    ),
    (
        "BenefitDaysAccrued",
        {"payload__period_end": "2026-04-04"},
        ("payload", "period_end"),
        "date_after_occurred_at",
    ),
    (
        "BenefitDaysAccrued",
        {"payload__period_end": "2026-03-10", "payload__days_paid": 10},
        ("payload", "days_paid"),
        "days_paid_exceed_period",
    ),
    (
        "BenefitDaysAccrued",
        {"payload__accrued_days_total": 21},
        ("payload", "accrued_days_total"),
        "accrued_total_below_days_paid",
    ),
    (
        "BenefitDaysAccrued",
        {"payload__accrued_days_total": 2**31},
        ("payload", "accrued_days_total"),
        "out_of_range",
    ),
    (
        "ServiceEnrolled",
        {"payload__planned_end": "2026-04-12"},
        ("payload", "planned_end"),
        "planned_end_before_start",
    ),
    (
        "ServiceParticipationReported",
        {"payload__reported_for": "2026-04-14"},
        ("payload", "reported_for"),
        "date_after_occurred_at",
    ),
    (
        "ServiceParticipationReported",
        {"payload__kind": "ABSENCE"},
        ("payload", "absence_days"),
        "absence_days_missing",
    ),
    (
        "ServiceParticipationReported",
        {"payload__absence_days": 2},
        ("payload", "absence_days"),
        "absence_days_not_allowed",
    ),
    (
        "ServiceParticipationReported",
        {"payload__kind": "INTERRUPTION"},
        ("payload", "interruption_reason"),
        "interruption_reason_missing",
    ),
    (
        "ServiceParticipationReported",
        {"payload__interruption_reason": "ILLNESS"},
        ("payload", "interruption_reason"),
        "interruption_reason_not_allowed",
    ),
    (
        "EmploymentStarted",
        {"payload__started_on": "2026-05-05"},
        ("payload", "started_on"),
        "date_after_occurred_at",
    ),
    (
        "JobSearchEnded",
        {"payload__ended_on": "2026-05-05"},
        ("payload", "ended_on"),
        "date_after_occurred_at",
    ),
    (
        "JobSearchEnded",
        {"occurred_at": "0001-01-01T00:00:00+05:00"},
        ("occurred_at",),
        "out_of_range",
    ),
    # --- content rules, the same for every connector (content_violations) ---
    (
        "JobOfferMade",
        {"payload__handled_by": {"team_code": "HKI-ITA-3", "expert_id": "010594Y9032"}},
        ("payload", "handled_by", "expert_id"),
        "identity_code_outside_pii_field",
    ),
    (
        "JobOfferMade",
        {"payload__vacancy_id": "TMT010594Y9032x"},
        ("payload", "vacancy_id"),
        "identity_code_outside_pii_field",
    ),
    (
        "JobOfferMade",
        {"payload__vacancy_id": "tmt 131052-308t"},
        ("payload", "vacancy_id"),
        "identity_code_outside_pii_field",
    ),
    (
        "JobSearchEnded",
        {"occurred_at": "0001-01-01T00:00:00Z", "payload__ended_on": "0001-01-01"},
        ("occurred_at",),
        "occurred_before_earliest",
    ),
    (
        "JobSearchEnded",
        {"occurred_at": "1999-12-31T21:59:59Z", "payload__ended_on": "1999-12-31"},
        ("occurred_at",),
        "occurred_before_earliest",
    ),
    (
        "JobOfferMade",
        {"payload__apply_by": "9999-12-31"},
        ("payload", "apply_by"),
        "date_too_late",
    ),
    (
        "ServiceEnrolled",
        {"payload__planned_end": "2031-03-26"},
        ("payload", "planned_end"),
        "date_too_late",
    ),
    (
        "EmploymentPlanAgreed",
        {"payload__agreed_on": "2016-03-01"},
        ("payload", "agreed_on"),
        "date_too_early",
    ),
    (
        "JobSearchConversationHeld",
        {"personal_identity_code": FUTURE_BORN},
        ("personal_identity_code",),
        "identity_code_birth_date_in_future",
    ),
    (
        "StatementRequested",
        {"personal_identity_code": FUTURE_BORN, "payload__personal_identity_code": FUTURE_BORN},
        ("payload", "personal_identity_code"),
        "identity_code_birth_date_in_future",
    ),
    (
        "JobseekerRegistered",
        {"payload__first_name": " \t "},
        ("payload", "first_name"),
        "name_empty",
    ),
    (
        "JobseekerRegistered",
        {"payload__last_name": "\u200b\u2060\ufeff"},
        ("payload", "last_name"),
        "name_empty",
    ),
    (
        "JobseekerRegistered",
        {"payload__last_name": "\u3164"},
        ("payload", "last_name"),
        "name_empty",
    ),
    (
        "JobseekerRegistered",
        {"payload__first_name": "Ai\x00no"},
        ("payload", "first_name"),
        "name_control_character",
    ),
    (
        "ServiceEnrolled",
        {"payload__participant_first_name": ""},
        ("payload", "participant_first_name"),
        "name_empty",
    ),
    (
        "ServiceEnrolled",
        {"payload__participant_last_name": "Meikäläinen\n"},
        ("payload", "participant_last_name"),
        "name_control_character",
    ),
]


@pytest.mark.parametrize(
    ("event_type", "changes", "loc", "rule"),
    RULES,
    ids=[f"{t}-{rule}" for t, _, _, rule in RULES],
)
def test_each_rule_names_its_field(
    event_type: str, changes: dict[str, Any], loc: tuple[Any, ...], rule: str
) -> None:
    assert (loc, rule) in rules(request(event_type, **changes))


def test_the_skew_allows_a_client_clock_a_little_ahead() -> None:
    at_limit = request("JobSearchEnded", occurred_at=(NOW + SKEW).isoformat())
    assert rules(at_limit) == []
    beyond = request("JobSearchEnded", occurred_at=(NOW + SKEW + timedelta(seconds=1)).isoformat())
    assert rules(beyond) == [(("occurred_at",), "occurred_in_future")]


def test_payload_days_are_helsinki_days() -> None:
    """22:30 UTC on 1.3. is 00:30 on 2.3. in Helsinki: an interview held on 2.3. is fine."""
    late_evening_utc = request(
        "JobSearchConversationHeld",
        occurred_at="2026-03-01T22:30:00Z",
        payload__held_on="2026-03-02",
    )
    assert rules(late_evening_utc) == []


def test_deadline_follows_the_rule_in_force_on_the_start_day() -> None:
    # 2025: 5 working days (3.11.2025 -> 10.11.2025); 2026: 10 (2.3.2026 -> 16.3.2026).
    in_2025 = request(
        "InitialInterviewHeld",
        occurred_at="2025-11-07T10:00:00+02:00",
        payload__job_search_started_on="2025-11-03",
        payload__held_on="2025-11-07",
        payload__deadline="2025-11-10",
    )
    assert rules(in_2025) == []
    late = request(
        "InitialInterviewHeld",
        occurred_at="2026-03-17T10:00:00+02:00",
        payload__held_on="2026-03-17",
        payload__within_deadline=False,
    )
    assert rules(late) == []
    detail = request("InitialInterviewHeld", payload__deadline="2026-03-09").violations(
        now=NOW, clock_skew=SKEW
    )[0]
    assert "2026-03-16" in detail.detail
    assert "10 working days" in detail.detail


def test_rule_details_never_repeat_the_identity_code() -> None:
    found = request(
        "JobseekerRegistered", payload__personal_identity_code="010516B903X"
    ).violations(now=NOW, clock_skew=SKEW)
    assert found
    assert all(PERSON not in v.detail and "010516B903X" not in v.detail for v in found)


def test_bulk_interview_before_registration_of_the_same_person() -> None:
    registration = {"event_type": "JobseekerRegistered", **EXAMPLES["JobseekerRegistered"]}
    early = {
        "event_type": "InitialInterviewHeld",
        **EXAMPLES["InitialInterviewHeld"],
        "occurred_at": "2026-03-02T09:00:00+02:00",
        "payload": {**EXAMPLES["InitialInterviewHeld"]["payload"], "held_on": "2026-03-02"},
    }
    items = BULK_ADAPTER.validate_python([registration, early])
    assert [(v.loc, v.type) for v in bulk_violations(items, now=NOW, clock_skew=SKEW)] == [
        ((1, "occurred_at"), "interview_before_registration")
    ]
    someone_else = {**early, "personal_identity_code": "010516B903X"}
    items = BULK_ADAPTER.validate_python([registration, someone_else])
    assert bulk_violations(items, now=NOW, clock_skew=SKEW) == []


def test_strict_json_refuses_lax_conversions() -> None:
    model = REQUEST_TYPES["JobSearchEnded"]
    body = {**EXAMPLES["JobSearchEnded"], "payload": {"ended_on": 0, "reason": "EMPLOYED"}}
    with pytest.raises(ValidationError) as error:
        model.model_validate_json(json.dumps(body), strict=True)
    assert error.value.errors()[0]["loc"] == ("payload", "ended_on")


# --- conversion --------------------------------------------------------------------------------


def test_to_event_builds_the_envelope() -> None:
    pseudonymizer = Pseudonymizer(SECRET)
    item = request("InitialInterviewHeld")
    event = to_event(
        item,
        source_system="urn:fi:kunta:091:crm",
        pseudonymizer=pseudonymizer,
        recorded_at=NOW,
        dedupe_key="helsinki-crm:digest:abc",
    )
    envelope = event.envelope
    pseudonym = pseudonymizer.pseudonym(PERSON)
    assert event.event_type == "InitialInterviewHeld"
    assert envelope.subject == pseudonym
    assert envelope.employment_area_code == "08"
    assert envelope.municipality_code == "091"
    assert envelope.source_system == "urn:fi:kunta:091:crm"
    assert envelope.recorded_at == NOW
    assert envelope.occurred_at == datetime(2026, 3, 9, 8, 0, tzinfo=UTC)
    assert envelope.event_id == uuid5(EVENT_ID_NAMESPACE, "helsinki-crm:digest:abc")
    assert envelope.event_id == derived_event_id("helsinki-crm:digest:abc")
    assert envelope.correlation_id == uuid5(CORRELATION_NAMESPACE, pseudonym)
    assert envelope.causation_id == UUID(EXAMPLES["InitialInterviewHeld"]["causation_id"])
    assert event.payload == item.payload
    assert PERSON not in json.dumps(envelope.model_dump(mode="json"))


def test_event_ids_client_derived_or_random() -> None:
    pseudonymizer = Pseudonymizer(SECRET)
    chosen = UUID("00000000-0000-4000-8000-000000000001")
    own = request("JobSearchEnded", event_id=str(chosen), correlation_id=str(chosen))
    common = {"source_system": "urn:x:y", "pseudonymizer": pseudonymizer, "recorded_at": NOW}
    event = to_event(own, dedupe_key="k", **common)
    assert event.envelope.event_id == chosen
    assert event.envelope.correlation_id == chosen
    plain = request("JobSearchEnded")
    assert to_event(plain, dedupe_key="k", **common).envelope.event_id == derived_event_id("k")
    randoms = {to_event(plain, **common).envelope.event_id for _ in range(3)}
    assert len(randoms) == 3


def test_deadline_example_is_the_statutory_one() -> None:
    from hub.rules import initial_interview_deadline

    payload = EXAMPLES["InitialInterviewHeld"]["payload"]
    started = date.fromisoformat(payload["job_search_started_on"])
    assert initial_interview_deadline(started).isoformat() == payload["deadline"]


CONTENT_RULES = {
    "identity_code_outside_pii_field",
    "occurred_before_earliest",
    "date_too_early",
    "date_too_late",
    "identity_code_birth_date_in_future",
    "name_empty",
    "name_control_character",
}


def _sent_values(changes: dict[str, Any]) -> list[str]:
    values = [json.dumps(v) if isinstance(v, dict) else str(v) for v in changes.values()]
    return [v.strip() for v in values if v.strip()]


def test_content_rule_details_never_repeat_the_value() -> None:
    checked = 0
    for event_type, changes, _, rule in RULES:
        if rule not in CONTENT_RULES:
            continue
        for violation in request(event_type, **changes).violations(now=NOW, clock_skew=SKEW):
            text = f"{violation.loc} {violation.detail}"
            for value in _sent_values(changes):
                assert value not in text, (rule, value)
            assert "010594Y9032" not in text
            assert FUTURE_BORN not in text
            checked += 1
    assert checked >= len(CONTENT_RULES)


def test_content_rules_at_their_limits() -> None:
    def found(event_type: str, **changes: Any) -> set[str]:
        return {rule for _, rule in rules(request(event_type, **changes))}

    earliest = found(
        "JobSearchEnded", occurred_at="2000-01-01T00:00:00+02:00", payload__ended_on="2000-01-01"
    )
    assert "occurred_before_earliest" not in earliest
    # The offer of 18.3.2026: apply_by five years on is fine, a day later not.
    assert "date_too_late" not in found("JobOfferMade", payload__apply_by="2031-03-18")
    assert "date_too_late" in found("JobOfferMade", payload__apply_by="2031-03-19")
    # Ten years back from the plan of 2026-03-02 (agreed_on is the plan's day).
    plan = EXAMPLES["EmploymentPlanAgreed"]["payload"]["agreed_on"]
    ten_years_back = date.fromisoformat(plan).replace(year=2016).isoformat()
    assert "date_too_early" not in found("EmploymentPlanAgreed", payload__agreed_on=ten_years_back)
    born_today = make_test_identity_code(date(2026, 7, 1), 951)
    assert found("JobSearchConversationHeld", personal_identity_code=born_today) == set()
    for name in ("Anna-Liisa", "O'Brien", "Zoë", " Aino ", "\u200dX"):
        assert found("JobseekerRegistered", payload__first_name=name) == set(), name
    # A code in a pii field is where it belongs; a name field is pii too.
    assert found("ServiceEnrolled", payload__participant_email="010594Y9032@example.fi") == set()


# --- corrections -------------------------------------------------------------------------------

FIRST = "9e3b1f47-5a2c-4d8e-b071-3c6f2a9d4e15"


@pytest.mark.parametrize("event_type", sorted(CORRECTIONS))
def test_every_correction_example_breaks_no_rule(event_type: str) -> None:
    item = REQUEST_TYPES[event_type].model_validate(CORRECTIONS[event_type])
    assert item.corrects_event_id is not None
    assert rules(item) == []
    assert EXAMPLES[event_type].get("corrects_event_id") is None


def test_the_correction_rules_name_their_field() -> None:
    assert rules(request("JobSearchEnded", retracted=True)) == [
        (("retracted",), "retracted_without_corrects_event_id")
    ]
    assert rules(request("JobSearchEnded", event_id=FIRST, corrects_event_id=FIRST)) == [
        (("corrects_event_id",), "corrects_itself")
    ]
    assert rules(request("JobSearchEnded", corrects_event_id=FIRST, retracted=True)) == []
    found = bulk_violations(
        [request("JobOfferMade"), request("JobSearchEnded", retracted=True)],
        now=NOW,
        clock_skew=SKEW,
    )
    assert [(v.loc, v.type) for v in found] == [
        ((1, "retracted"), "retracted_without_corrects_event_id")
    ]


def test_to_event_carries_the_correction_fields() -> None:
    def envelope(item: IngestRequest[Any]) -> Any:
        return to_event(
            item,
            source_system="urn:x:y",
            pseudonymizer=Pseudonymizer(SECRET),
            recorded_at=NOW,
            dedupe_key="k",
        ).envelope

    plain = envelope(request("JobSearchEnded"))
    assert (plain.corrects_event_id, plain.retracted) == (None, False)
    gone = envelope(request("JobSearchEnded", corrects_event_id=FIRST, retracted=True))
    assert (gone.corrects_event_id, gone.retracted) == (UUID(FIRST), True)


def test_a_corrections_dedupe_key_ends_in_what_it_corrects() -> None:
    pseudonymizer = Pseudonymizer(SECRET)
    hashed = pseudonymizer.keyed_digest(b"idempotency-key:crm-1")
    first = UUID(FIRST)

    def key(**fields: Any) -> str:
        return request_dedupe_key(
            "crm", event_id=None, digest="d1", pseudonymizer=pseudonymizer, **fields
        )

    assert key(idempotency_key="crm-1") == f"crm:idempotency-key:{hashed}"
    assert key(idempotency_key="crm-1", corrects_event_id=first) == (
        f"crm:idempotency-key:{hashed}:corrects:{FIRST}"
    )
    assert key(idempotency_key="crm-1", corrects_event_id=first, retracted=True) == (
        f"crm:idempotency-key:{hashed}:corrects:{FIRST}:retracted"
    )
    assert key(idempotency_key=None) == "crm:digest:d1"
    assert key(idempotency_key=None, corrects_event_id=first) == f"crm:digest:d1:corrects:{FIRST}"
    assert versioned_key("import:event-id:x", None, False) == "import:event-id:x"
    assert versioned_key("import:event-id:x", first, True) == (
        f"import:event-id:x:corrects:{FIRST}:retracted"
    )
