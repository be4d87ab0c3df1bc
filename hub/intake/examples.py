"""One realistic request per event type, shown in the OpenAPI document and used by the tests.

One person's path in Helsinki in spring 2026 (the 10-working-day interview rule is in force),
with the published test identity code 010594Y9032 (born 1.5.1994) and valid business IDs.
Every example passes all rules of ``hub.intake.requests``; a test keeps it that way.

:data:`CORRECTIONS` are second examples of some types: a corrected re-send (the interview was
held by phone, not face to face as first recorded) and a retraction (the job offer was recorded
in error), each naming the event id the hub answered for the first version.
"""

from __future__ import annotations

from typing import Any, Final

PERSON: Final = "010594Y9032"
HELSINKI: Final = "091"
ESPOO: Final = "049"
PROVIDER_BUSINESS_ID: Final = "1234567-1"
EMPLOYER_BUSINESS_ID: Final = "7654321-2"
ENROLMENT_ID: Final = "3f2b8c1e-5d4a-4e6b-9c7d-2a1b0c9d8e7f"
REGISTRATION_EVENT_ID: Final = "6a1d3c0e-8b7f-4d2a-9e51-0c4b7a2f9d13"
OFFER_ID: Final = "b4c2e8a1-7f3d-4c59-8a06-1e9d2b5f7c40"
STATEMENT_REQUEST_ID: Final = "e7a9c3d1-2b4f-4e8a-b6c5-9d0f1a2b3c4d"
#: Event ids of the first versions the correction examples name.
INTERVIEW_EVENT_ID: Final = "9e3b1f47-5a2c-4d8e-b071-3c6f2a9d4e15"
OFFER_EVENT_ID: Final = "2c7e5a19-8d3f-4b60-a4e2-71f0c9b3d856"

_EXPERT: Final = {"team_code": "HKI-ITA-3", "expert_id": "hki-e1042"}


def _person(occurred_at: str, **extra: Any) -> dict[str, Any]:
    return {
        "occurred_at": occurred_at,
        "personal_identity_code": PERSON,
        "municipality_code": HELSINKI,
        **extra,
    }


EXAMPLES: Final[dict[str, dict[str, Any]]] = {
    "JobseekerRegistered": _person(
        "2026-03-02T09:45:00+02:00",
        event_id=REGISTRATION_EVENT_ID,
        payload={
            "personal_identity_code": PERSON,
            "first_name": "Maija",
            "last_name": "Meikäläinen",
            "email": "maija.meikalainen@example.fi",
            "phone": "+358401234567",
            "job_search_started_on": "2026-03-02",
            "registration_channel": "ELECTRONIC",
            "labour_market_status": "UNEMPLOYED",
            "age_at_registration": 31,
            "unemployment_fund_code": "ote",
        },
    ),
    "InitialInterviewHeld": _person(
        "2026-03-09T10:00:00+02:00",
        causation_id=REGISTRATION_EVENT_ID,
        payload={
            "job_search_started_on": "2026-03-02",
            "held_on": "2026-03-09",
            "deadline": "2026-03-16",
            "within_deadline": True,
            "channel": "FACE_TO_FACE",
            "remote_for_weighty_reason": False,
            "handled_by": _EXPERT,
        },
    ),
    "EmploymentPlanAgreed": _person(
        "2026-03-09T10:40:00+02:00",
        payload={
            "plan_id": "0d5f6a7b-1c2d-4e3f-8a9b-6c7d8e9f0a1b",
            "plan_type": "EMPLOYMENT_PLAN",
            "agreed_on": "2026-03-09",
            "valid_until": "2026-09-05",
            "job_search_obligation_per_month": 4,
            "reporting_period_months": 1,
            "agreed_in_initial_interview": True,
            "handled_by": _EXPERT,
        },
    ),
    "JobSearchConversationHeld": _person(
        "2026-06-08T13:15:00+03:00",
        payload={
            "conversation_type": "FOLLOW_UP",
            "held_on": "2026-06-08",
            "channel": "PHONE",
            "handled_by": _EXPERT,
        },
    ),
    "JobOfferMade": _person(
        "2026-03-18T11:20:00+02:00",
        payload={
            "offer_id": OFFER_ID,
            "vacancy_id": "TMT-2026-118734",
            "employer_business_id": EMPLOYER_BUSINESS_ID,
            "workplace_municipality_code": ESPOO,
            "binding": True,
            "apply_by": "2026-03-31",
            "handled_by": _EXPERT,
        },
    ),
    "JobOfferOutcomeRecorded": _person(
        "2026-04-02T08:30:00+03:00",
        payload={"offer_id": OFFER_ID, "result": "APPLIED", "recorded_on": "2026-04-02"},
    ),
    "StatementRequested": _person(
        "2026-03-04T07:05:00+02:00",
        payload={
            "request_id": STATEMENT_REQUEST_ID,
            "payer": {"kind": "KELA"},
            "benefit": "LABOUR_MARKET_SUBSIDY",
            "reason": "NEW_APPLICATION",
            "requested_on": "2026-03-04",
            "personal_identity_code": PERSON,
        },
    ),
    "LabourPolicyStatementIssued": _person(
        "2026-03-06T14:10:00+02:00",
        payload={
            "statement_id": "5c6d7e8f-9a0b-4c1d-8e2f-3a4b5c6d7e8f",
            "request_id": STATEMENT_REQUEST_ID,
            "payer": {"kind": "KELA"},
            "benefit": "LABOUR_MARKET_SUBSIDY",
            "outcome": "NO_OBSTACLE",
            "effective_from": "2026-03-02",
            "issued_on": "2026-03-06",
            "personal_identity_code": PERSON,
            "handled_by": _EXPERT,
        },
    ),
    "BenefitDaysAccrued": _person(
        "2026-04-03T05:00:00+03:00",
        payload={
            "payer": {"kind": "KELA"},
            "benefit": "LABOUR_MARKET_SUBSIDY",
            "period_start": "2026-03-02",
            "period_end": "2026-03-31",
            "days_paid": 22,
            "accrued_days_total": 22,
            "paying_municipality_code": HELSINKI,
        },
    ),
    "ServiceEnrolled": _person(
        "2026-03-25T12:00:00+02:00",
        payload={
            "enrolment_id": ENROLMENT_ID,
            "service_type": "COACHING",
            "provider_business_id": PROVIDER_BUSINESS_ID,
            "planned_start": "2026-04-13",
            "planned_end": "2026-06-12",
            "participant_first_name": "Maija",
            "participant_last_name": "Meikäläinen",
            "participant_email": "maija.meikalainen@example.fi",
            "participant_phone": "+358401234567",
            "handled_by": _EXPERT,
        },
    ),
    "ServiceParticipationReported": _person(
        "2026-04-13T12:00:00+03:00",
        payload={
            "enrolment_id": ENROLMENT_ID,
            "provider_business_id": PROVIDER_BUSINESS_ID,
            "kind": "START",
            "reported_for": "2026-04-13",
        },
    ),
    "EmploymentStarted": _person(
        "2026-05-04T09:00:00+03:00",
        payload={
            "started_on": "2026-05-04",
            "employer_business_id": EMPLOYER_BUSINESS_ID,
            "employment_form": "PERMANENT_FULL_TIME",
            "workplace_municipality_code": ESPOO,
            "job_offer_id": OFFER_ID,
        },
    ),
    "JobSearchEnded": _person(
        "2026-05-04T09:05:00+03:00",
        payload={"ended_on": "2026-05-03", "reason": "EMPLOYED"},
    ),
}


def _corrected(event_type: str, **changes: Any) -> dict[str, Any]:
    example = EXAMPLES[event_type]
    payload = {**example["payload"], **changes.pop("payload", {})}
    return {**example, **changes, "payload": payload}


#: Second examples: a correction and a retraction (see the module docstring).
CORRECTIONS: Final[dict[str, dict[str, Any]]] = {
    "InitialInterviewHeld": _corrected(
        "InitialInterviewHeld",
        corrects_event_id=INTERVIEW_EVENT_ID,
        payload={"channel": "PHONE", "remote_for_weighty_reason": True},
    ),
    "JobOfferMade": _corrected("JobOfferMade", corrects_event_id=OFFER_EVENT_ID, retracted=True),
}
