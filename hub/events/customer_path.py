"""The customer-path events: one pydantic model per Avro schema in ``schemas/``.

These models are the single source of truth: ``hub schemas generate`` writes the .avsc files
from them and ``hub schemas check`` fails when the files drift or break compatibility.
Field descriptions become Avro ``doc`` and sensitivity metadata becomes the ``pii`` attribute.
"""

from __future__ import annotations

from datetime import date
from uuid import UUID

from pydantic import Field

from hub.codes import MunicipalityCodeStr, UnemploymentFundCodeStr
from hub.events.base import AvroRecord, CustomerPathEvent
from hub.events.enums import (
    BenefitType,
    Channel,
    ConversationType,
    EmploymentForm,
    InterruptionReason,
    JobOfferResult,
    JobSearchEndReason,
    LabourMarketStatus,
    ObligationReduction,
    ParticipationKind,
    PayerKind,
    PlanType,
    ServiceType,
    StatementOutcome,
    StatementRequestReason,
)
from hub.events.sensitivity import Sensitivity, pii
from hub.identity import BusinessIdStr, PersonalIdentityCodeStr

# --- shared parts -------------------------------------------------------------------------------


class CaseWorker(AvroRecord):
    """The employment-service expert who handled the step, for team and expert level reports."""

    team_code: str = Field(description="Team of the expert inside the employment area.")
    expert_id: str = Field(description="Staff id of the expert (not a personal identity code).")


class Payer(AvroRecord):
    """The benefit payer a statement is for or that reported feedback."""

    kind: PayerKind = Field(description="Kela or an unemployment fund.")
    fund_code: UnemploymentFundCodeStr | None = Field(
        default=None, description="Hub code of the unemployment fund; null when Kela pays."
    )


# --- registration and interview -----------------------------------------------------------------


class JobseekerRegisteredPayload(AvroRecord):
    """Registration as a jobseeker (työnhaun alkaminen); starts every statutory clock."""

    personal_identity_code: PersonalIdentityCodeStr = Field(
        description="Personal identity code (henkilötunnus); payers need it, reports never get it.",
        json_schema_extra=pii(Sensitivity.DIRECT),
    )
    first_name: str = Field(
        description="First name(s).", json_schema_extra=pii(Sensitivity.DIRECT), min_length=1
    )
    last_name: str = Field(
        description="Last name.", json_schema_extra=pii(Sensitivity.DIRECT), min_length=1
    )
    email: str | None = Field(
        default=None, description="E-mail address.", json_schema_extra=pii(Sensitivity.CONTACT)
    )
    phone: str | None = Field(
        default=None, description="Phone number.", json_schema_extra=pii(Sensitivity.CONTACT)
    )
    job_search_started_on: date = Field(description="Start of job search; the clocks start here.")
    registration_channel: Channel = Field(description="How the person registered.")
    labour_market_status: LabourMarketStatus = Field(description="Position at registration.")
    age_at_registration: int = Field(
        ge=15, le=75, description="Age in full years on the start day, for jobseeker groups."
    )
    unemployment_fund_code: UnemploymentFundCodeStr | None = Field(
        default=None,
        description="Hub code of the person's unemployment fund; null when not a member.",
        json_schema_extra=pii(Sensitivity.MEMBERSHIP),
    )
    reduced_work_ability: bool | None = Field(
        default=None,
        description="Whether the person reported reduced work ability; null when not asked.",
        json_schema_extra=pii(Sensitivity.HEALTH),
    )


class JobseekerRegistered(CustomerPathEvent):
    """A person registered as a jobseeker with the employment area."""

    payload: JobseekerRegisteredPayload = Field(description="Registration details.")


class InitialInterviewHeldPayload(AvroRecord):
    """Initial interview (alkuhaastattelu) with its statutory deadline."""

    job_search_started_on: date = Field(description="Start of the job search the interview is for.")
    held_on: date = Field(description="Day of the interview.")
    deadline: date = Field(
        description="Last day allowed by the rule in force on the start day (working days)."
    )
    within_deadline: bool = Field(description="Whether held_on is on or before the deadline.")
    channel: Channel = Field(description="How the interview was held.")
    remote_for_weighty_reason: bool = Field(
        default=False,
        description="Held remotely because of a weighty reason (face to face is the rule).",
    )
    handled_by: CaseWorker = Field(description="Expert who held the interview.")


class InitialInterviewHeld(CustomerPathEvent):
    """The initial interview of a job-search spell was held."""

    payload: InitialInterviewHeldPayload = Field(description="Interview details.")


# --- plan and conversations ---------------------------------------------------------------------


class EmploymentPlanAgreedPayload(AvroRecord):
    """An employment plan (työllistymissuunnitelma) or one of its variants, with the obligation."""

    plan_id: UUID = Field(description="Id of the plan; a later plan with a new id replaces it.")
    plan_type: PlanType = Field(description="Kind of plan.")
    agreed_on: date = Field(description="Day the plan was agreed.")
    valid_until: date | None = Field(default=None, description="Last valid day, if limited.")
    job_search_obligation_per_month: int = Field(
        default=4,
        ge=0,
        le=4,
        description="Job opportunities to apply for each month (työnhakuvelvollisuus), 0-4.",
    )
    obligation_reduction: ObligationReduction | None = Field(
        default=None, description="Why the obligation is below four; null when it is four."
    )
    reporting_period_months: int = Field(
        ge=1, le=3, description="Length of the period over which applications are reported."
    )
    agreed_in_initial_interview: bool = Field(
        description="Made in the initial interview (else in a later conversation)."
    )
    handled_by: CaseWorker = Field(description="Expert who agreed the plan.")


class EmploymentPlanAgreed(CustomerPathEvent):
    """A plan with a job-search obligation was agreed with the jobseeker."""

    payload: EmploymentPlanAgreedPayload = Field(description="Plan details.")


class JobSearchConversationHeldPayload(AvroRecord):
    """A job-search conversation (työnhakukeskustelu) after the initial interview."""

    conversation_type: ConversationType = Field(description="Kind of conversation.")
    held_on: date = Field(description="Day of the conversation.")
    channel: Channel = Field(description="How the conversation was held.")
    handled_by: CaseWorker = Field(description="Expert who held the conversation.")


class JobSearchConversationHeld(CustomerPathEvent):
    """A job-search conversation was held."""

    payload: JobSearchConversationHeldPayload = Field(description="Conversation details.")


# --- job offers ---------------------------------------------------------------------------------


class JobOfferMadePayload(AvroRecord):
    """A specific vacancy offered by the authority (työtarjous)."""

    offer_id: UUID = Field(description="Id of the offer; the outcome refers to it.")
    vacancy_id: str = Field(description="Vacancy id in Työmarkkinatori.")
    employer_business_id: BusinessIdStr = Field(description="Business ID (Y-tunnus) of employer.")
    workplace_municipality_code: MunicipalityCodeStr = Field(
        description="Municipality of the workplace (placements outside the area are reported)."
    )
    binding: bool = Field(description="Whether refusing the offer can affect benefit.")
    apply_by: date = Field(description="Last day to apply.")
    handled_by: CaseWorker = Field(description="Expert who made the offer.")


class JobOfferMade(CustomerPathEvent):
    """A job offer was made to the jobseeker."""

    payload: JobOfferMadePayload = Field(description="Offer details.")


class JobOfferOutcomeRecordedPayload(AvroRecord):
    """What came of a job offer."""

    offer_id: UUID = Field(description="The offer this outcome is for.")
    result: JobOfferResult = Field(description="Outcome of the offer.")
    recorded_on: date = Field(description="Day the outcome became known.")


class JobOfferOutcomeRecorded(CustomerPathEvent):
    """The outcome of a job offer was recorded."""

    payload: JobOfferOutcomeRecordedPayload = Field(description="Outcome details.")


# --- statements and payer feedback --------------------------------------------------------------


class StatementRequestedPayload(AvroRecord):
    """A payer's request for a labour-policy statement (lausuntopyyntö)."""

    request_id: UUID = Field(description="Id of the request; the statement answers it.")
    payer: Payer = Field(description="Payer asking.")
    benefit: BenefitType = Field(description="Benefit applied for.")
    reason: StatementRequestReason = Field(description="Why the payer asks.")
    requested_on: date = Field(description="Day of the request.")
    personal_identity_code: PersonalIdentityCodeStr = Field(
        description="Personal identity code as the payer sent it.",
        json_schema_extra=pii(Sensitivity.DIRECT),
    )


class StatementRequested(CustomerPathEvent):
    """A benefit payer asked for a labour-policy statement (payer to hub)."""

    payload: StatementRequestedPayload = Field(description="Request details.")


class LabourPolicyStatementIssuedPayload(AvroRecord):
    """A labour-policy statement (työvoimapoliittinen lausunto) sent to the payer."""

    statement_id: UUID = Field(description="Id of the statement.")
    request_id: UUID | None = Field(
        default=None, description="The payer's request it answers; null when issued unasked."
    )
    payer: Payer = Field(description="Payer the statement is for (Kela or the person's fund).")
    benefit: BenefitType = Field(description="Benefit the statement concerns.")
    outcome: StatementOutcome = Field(description="Labour-policy condition of the benefit.")
    effective_from: date = Field(description="First day the outcome applies.")
    sanction_days: int | None = Field(
        default=None, ge=0, description="Days without benefit for a sanction period."
    )
    issued_on: date = Field(description="Day the statement was issued.")
    personal_identity_code: PersonalIdentityCodeStr = Field(
        description="Personal identity code; the payer identifies the person by it.",
        json_schema_extra=pii(Sensitivity.DIRECT),
    )
    handled_by: CaseWorker = Field(description="Expert who issued the statement.")


class LabourPolicyStatementIssued(CustomerPathEvent):
    """A labour-policy statement was issued to the payer."""

    payload: LabourPolicyStatementIssuedPayload = Field(description="Statement details.")


class BenefitDaysAccruedPayload(AvroRecord):
    """Accrual data (kertymätiedot) reported by the payer for a payment period."""

    payer: Payer = Field(description="Payer reporting the accrual.")
    benefit: BenefitType = Field(description="Benefit paid.")
    period_start: date = Field(description="First day of the payment period.")
    period_end: date = Field(description="Last day of the payment period.")
    days_paid: int = Field(ge=0, le=31, description="Benefit days paid in the period.")
    accrued_days_total: int = Field(
        ge=0, description="Benefit days accrued in total; drives the municipal share band."
    )
    paying_municipality_code: MunicipalityCodeStr = Field(
        description="Home municipality on the payment day: the municipality billed for its share."
    )


class BenefitDaysAccrued(CustomerPathEvent):
    """A benefit payer reported accrued benefit days (payer to hub)."""

    payload: BenefitDaysAccruedPayload = Field(description="Accrual details.")


# --- services -----------------------------------------------------------------------------------


class ServiceEnrolledPayload(AvroRecord):
    """Enrolment in a service; the provider gets the name and contact details only."""

    enrolment_id: UUID = Field(description="Id of the enrolment; participation reports use it.")
    service_type: ServiceType = Field(description="Kind of service.")
    provider_business_id: BusinessIdStr = Field(description="Business ID of the provider.")
    planned_start: date = Field(description="Planned first day.")
    planned_end: date = Field(description="Planned last day.")
    participant_first_name: str = Field(
        description="First name for the provider.", json_schema_extra=pii(Sensitivity.DIRECT)
    )
    participant_last_name: str = Field(
        description="Last name for the provider.", json_schema_extra=pii(Sensitivity.DIRECT)
    )
    participant_email: str | None = Field(
        default=None,
        description="E-mail for the provider.",
        json_schema_extra=pii(Sensitivity.CONTACT),
    )
    participant_phone: str | None = Field(
        default=None,
        description="Phone for the provider.",
        json_schema_extra=pii(Sensitivity.CONTACT),
    )
    handled_by: CaseWorker = Field(description="Expert who enrolled the jobseeker.")


class ServiceEnrolled(CustomerPathEvent):
    """The jobseeker was enrolled in a service run by a provider."""

    payload: ServiceEnrolledPayload = Field(description="Enrolment details.")


class ServiceParticipationReportedPayload(AvroRecord):
    """Structured participation report from the service provider."""

    enrolment_id: UUID = Field(description="Enrolment the report is about.")
    provider_business_id: BusinessIdStr = Field(description="Business ID of the provider.")
    kind: ParticipationKind = Field(description="Start, absence, interruption or completion.")
    reported_for: date = Field(description="Day the reported fact applies to (first day).")
    absence_days: int | None = Field(
        default=None, ge=1, description="Length of an absence in days; null for other kinds."
    )
    interruption_reason: InterruptionReason | None = Field(
        default=None,
        description="Reason of an interruption; null for other kinds.",
        json_schema_extra=pii(Sensitivity.HEALTH),
    )


class ServiceParticipationReported(CustomerPathEvent):
    """A service provider reported participation (provider to hub)."""

    payload: ServiceParticipationReportedPayload = Field(description="Participation details.")


# --- job start and end --------------------------------------------------------------------------


class EmploymentStartedPayload(AvroRecord):
    """Notice of a job start."""

    started_on: date = Field(description="First working day.")
    employer_business_id: BusinessIdStr = Field(description="Business ID of the employer.")
    employment_form: EmploymentForm = Field(description="Form of employment.")
    workplace_municipality_code: MunicipalityCodeStr = Field(
        description="Municipality of the workplace."
    )
    job_offer_id: UUID | None = Field(
        default=None, description="The job offer that led to it, if any."
    )
    personal_identity_code: PersonalIdentityCodeStr | None = Field(
        default=None,
        description="Personal identity code for the payer, who matches the person by it to "
        "end benefit payment; null in events written before version 2.",
        json_schema_extra=pii(Sensitivity.DIRECT),
    )


class EmploymentStarted(CustomerPathEvent):
    """The jobseeker started a job."""

    payload: EmploymentStartedPayload = Field(description="Employment details.")


class JobSearchEndedPayload(AvroRecord):
    """End of the job-search spell; benefit payment ends with it."""

    ended_on: date = Field(description="Last day of job search.")
    reason: JobSearchEndReason = Field(description="Why job search ended.")
    personal_identity_code: PersonalIdentityCodeStr | None = Field(
        default=None,
        description="Personal identity code for the payer, who matches the person by it to "
        "end benefit payment; null in events written before version 2.",
        json_schema_extra=pii(Sensitivity.DIRECT),
    )


class JobSearchEnded(CustomerPathEvent):
    """The job-search spell ended."""

    payload: JobSearchEndedPayload = Field(description="End details.")


EVENT_TYPES: dict[str, type[CustomerPathEvent]] = {
    cls.__name__: cls
    for cls in (
        JobseekerRegistered,
        InitialInterviewHeld,
        EmploymentPlanAgreed,
        JobSearchConversationHeld,
        JobOfferMade,
        JobOfferOutcomeRecorded,
        StatementRequested,
        LabourPolicyStatementIssued,
        BenefitDaysAccrued,
        ServiceEnrolled,
        ServiceParticipationReported,
        EmploymentStarted,
        JobSearchEnded,
    )
}
