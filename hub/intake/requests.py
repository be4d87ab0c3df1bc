"""Request models of the ingest API: the public contract for municipal IT, providers and payers.

A request carries the person's identity code, home municipality and an event payload. The
payload is the very model the Avro schema is generated from (``hub.events.customer_path``), so
the API and the log cannot drift apart; the hub adds the envelope (see ``hub.intake.convert``).

Schema validation (types, formats, code lists, identity-code and business-ID checksums) is
pydantic's. The rules across fields, which need the hub's clock and the statutory tables, are in
:meth:`IngestRequest.violations` and :func:`bulk_violations`: each broken rule is one
:class:`RuleViolation` with a stable ``type`` and a detail that never repeats the sent value.
They are checked at the edge only, not in the event models, because the log must stay readable
whatever rules applied when an event was written.
"""

from __future__ import annotations

import typing
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, ClassVar, Final, Generic, Literal, TypeVar, Union
from uuid import UUID
from zoneinfo import ZoneInfo

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    PrivateAttr,
    TypeAdapter,
)
from pydantic.fields import FieldInfo

from hub.codes import MainlandMunicipalityCodeStr, fund
from hub.events.base import AvroRecord, CustomerPathEvent
from hub.events.customer_path import (
    EVENT_TYPES,
    BenefitDaysAccrued,
    BenefitDaysAccruedPayload,
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
from hub.events.enums import (
    BenefitType,
    Channel,
    ParticipationKind,
    PayerKind,
    StatementOutcome,
)
from hub.events.sensitivity import Sensitivity
from hub.identity import PersonalIdentityCodeStr, contains_identity_code, parse_identity_code
from hub.intake.examples import CORRECTIONS, EXAMPLES
from hub.rules import (
    NoRuleInForce,
    initial_interview_deadline,
    initial_interview_deadline_table,
    job_search_obligation_table,
)

#: Legal time of the services: a payload date is compared with occurred_at's day in Helsinki.
HELSINKI: Final = ZoneInfo("Europe/Helsinki")
#: Avro ``int`` is 32-bit signed; a larger number would pass pydantic but fail in the sink.
AVRO_INT_MAX: Final = 2**31 - 1
#: No fact before this is accepted: the hub's log starts with the 2025 TE reform and the planned
#: history reaches five years back, so 1.1.2000 leaves room for any migration of older spells
#: while it refuses the default and typing-error dates (0001-01-01, 1900-01-01, 1970-01-01).
EARLIEST_OCCURRED_AT: Final = datetime(2000, 1, 1, tzinfo=HELSINKI)
#: A payload date lies at most this many years before the day of occurred_at (a long job-search
#: spell's start, a retroactive statement) ...
PAYLOAD_YEARS_BEFORE: Final = 10
#: ... and at most this many after it (the end of a multi-year service, a plan's last day).
#: Outside that window a date is a typing error (9999-12-31 as "open", year 2206 for 2026).
PAYLOAD_YEARS_AFTER: Final = 5
#: Characters that look blank though Unicode does not class them as space or format characters.
_BLANK_LOOKING: Final = frozenset("\u115f\u1160\u3164\uffa0\u2800")

Loc = tuple[str | int, ...]
P = TypeVar("P", bound=AvroRecord)


@dataclass(frozen=True)
class RuleViolation:
    """One broken cross-field rule: where (pydantic-style loc), which rule, and why."""

    loc: Loc
    type: str
    detail: str


class IngestRequest(BaseModel, Generic[P]):
    """One customer-path fact about one person, as a client sends it.

    The hub derives the envelope: the pseudonym from the identity code, the employment area from
    the municipality, the event id and correlation id when the client leaves them out.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    #: The event type the request becomes.
    event_class: ClassVar[type[CustomerPathEvent]]

    event_id: UUID | None = Field(
        default=None,
        description="Id of the event if the client chooses it (then also the dedupe key when "
        "no Idempotency-Key is sent); otherwise derived from the dedupe key.",
    )
    occurred_at: AwareDatetime = Field(
        description="When the fact happened, with a UTC offset; at most the allowed clock skew "
        "ahead of the hub's clock."
    )
    personal_identity_code: PersonalIdentityCodeStr = Field(
        description="Personal identity code (henkilötunnus) of the person. The hub turns it "
        "into the pseudonym that keys the event; it travels on only in payload fields marked "
        "pii.",
        json_schema_extra={"pii": "direct"},
    )
    municipality_code: MainlandMunicipalityCodeStr = Field(
        description="Home municipality (3-digit Statistics Finland code, mainland only); the "
        "employment area is derived from it."
    )
    correlation_id: UUID | None = Field(
        default=None,
        description="Id of the job-search spell; default: one id per person, derived from the "
        "pseudonym, so a person's path correlates even when the client does not track spells.",
    )
    causation_id: UUID | None = Field(
        default=None, description="Event id of the event that caused this one, if known."
    )
    corrects_event_id: UUID | None = Field(
        default=None,
        description="Send a corrected version of a fact the hub already has as the same kind "
        "of request with the event id of the fact's first version here (a later version's id "
        "also works). Of a fact's versions the one recorded last wins, a tie broken by the "
        "greater event id. A correction is a new submission: it is never deduplicated against "
        "the version it corrects, and resending it is idempotent like any request.",
    )
    retracted: bool = Field(
        default=False,
        description="true withdraws the fact named by corrects_event_id (required then), e.g. "
        "one recorded in error: from now on it counts nowhere. The payload is the fact as "
        "last sent.",
    )
    payload: P = Field(description="The facts of this event type, exactly as in the Avro schema.")
    #: Canonical JSON of what the client sent, set by the connector that parsed it
    #: (``hub.intake.convert.record_sent``): the request digest is of this, not of the model.
    _sent_json: bytes | None = PrivateAttr(default=None)

    # --- rules ---------------------------------------------------------------------------------

    def violations(self, *, now: datetime, clock_skew: timedelta) -> list[RuleViolation]:
        """Every cross-field rule this request breaks (empty when it may be accepted)."""
        try:
            occurred = self.occurred_at.astimezone(UTC)
            latest_day = (occurred + clock_skew).astimezone(HELSINKI).date()
        except OverflowError:
            return [RuleViolation(("occurred_at",), "out_of_range", "occurred_at is out of range")]
        found: list[RuleViolation] = []
        if occurred > now + clock_skew:
            found.append(
                RuleViolation(
                    ("occurred_at",),
                    "occurred_in_future",
                    f"occurred_at is more than {_seconds(clock_skew)} ahead of the hub's clock",
                )
            )
        code = getattr(self.payload, "personal_identity_code", None)
        if code is not None and code != self.personal_identity_code:
            found.append(
                RuleViolation(
                    ("payload", "personal_identity_code"),
                    "identity_code_mismatch",
                    "payload.personal_identity_code differs from the top-level "
                    "personal_identity_code; one request is about one person",
                )
            )
        found.extend(correction_violations(self.event_id, self.corrects_event_id, self.retracted))
        found.extend(content_violations(self, self.occurred_at, now=now))
        found.extend(self.payload_violations(latest_day))
        return found

    def payload_violations(self, latest_day: date) -> Iterator[RuleViolation]:
        """Rules of one event type; *latest_day* is the last day a past fact may fall on."""
        return iter(())


def correction_violations(
    event_id: UUID | None, corrects_event_id: UUID | None, retracted: bool
) -> Iterator[RuleViolation]:
    """The envelope's rules on a correction (``hub.events.base.Envelope``), worded for a client.

    Checked here too, so that a client gets a rule violation naming the field rather than a
    failure when the hub builds the envelope.
    """
    if retracted and corrects_event_id is None:
        yield RuleViolation(
            ("retracted",),
            "retracted_without_corrects_event_id",
            "retracted is true but corrects_event_id is missing: a retraction names the event "
            "id of the fact it withdraws",
        )
    if corrects_event_id is not None and corrects_event_id == event_id:
        yield RuleViolation(
            ("corrects_event_id",),
            "corrects_itself",
            "corrects_event_id is this request's own event_id: a correction is a new event "
            "with a new id that names the fact's first version",
        )


def _seconds(skew: timedelta) -> str:
    return f"{int(skew.total_seconds())} s"


def _not_after(field: str, day: date, latest_day: date) -> Iterator[RuleViolation]:
    if day > latest_day:
        yield RuleViolation(
            ("payload", field),
            "date_after_occurred_at",
            f"{field} is after the day of occurred_at (Helsinki time, clock skew included); "
            "a reported fact cannot have happened later than the event",
        )


def _at_least(
    field: str, day: date, other: str, other_day: date, rule: str
) -> Iterator[RuleViolation]:
    if day < other_day:
        yield RuleViolation(("payload", field), rule, f"{field} is before {other}")


def content_violations(
    model: BaseModel, occurred_at: datetime, *, now: datetime
) -> list[RuleViolation]:
    """The rules on the content of every field that all inbound connectors apply.

    One definition for the API and the import (through :meth:`IngestRequest.violations`) and the
    poller (on the events it builds). It walks *model* with the schemas' ``pii`` metadata:

    * no identity code (see :func:`hub.identity.identity_code_spans`) in a field that is not
      ``pii``: such a field reaches reports, logs and ``hub tail`` unmasked;
    * an identity code's birth date is not after today in Helsinki;
    * a name (a ``direct`` text field that is not an identity code) has a visible character and
      no control character;
    * occurred_at is not before :data:`EARLIEST_OCCURRED_AT`, every date lies within
      :data:`PAYLOAD_YEARS_BEFORE` / :data:`PAYLOAD_YEARS_AFTER` years of its day;
    * text is valid Unicode (no lone surrogates) and numbers fit Avro ``int``: both pass JSON
      parsing and pydantic but would fail when the sink encodes the record.

    Locations are pydantic-style, relative to *model*; details never repeat the value.
    """
    found: list[RuleViolation] = []
    if occurred_at < EARLIEST_OCCURRED_AT:
        found.append(
            RuleViolation(
                _occurred_at_loc(model),
                "occurred_before_earliest",
                f"occurred_at is before {EARLIEST_OCCURRED_AT.date().isoformat()} (Helsinki "
                "time), earlier than any customer-path fact the hub records",
            )
        )
    occurred_day = occurred_at.astimezone(HELSINKI).date()
    days = _Days(
        earliest=_years_later(occurred_day, -PAYLOAD_YEARS_BEFORE),
        latest=_years_later(occurred_day, PAYLOAD_YEARS_AFTER),
        today=now.astimezone(HELSINKI).date(),
    )
    found.extend(_content(model, (), None, days))
    return found


@dataclass(frozen=True)
class _Days:
    earliest: date
    latest: date
    today: date


def _occurred_at_loc(model: BaseModel) -> Loc:
    return (
        ("occurred_at",)
        if "occurred_at" in type(model).model_fields
        else ("envelope", "occurred_at")
    )


def _years_later(day: date, years: int) -> date:
    """The same day *years* later (or earlier); 29 February becomes the 28th in other years."""
    year = min(max(day.year + years, date.min.year), date.max.year)
    return (
        day.replace(year=year, day=28)
        if (day.month, day.day) == (2, 29)
        else day.replace(year=year)
    )


def _content(
    value: object, loc: Loc, info: FieldInfo | None, days: _Days
) -> Iterator[RuleViolation]:
    if isinstance(value, BaseModel):
        for name, field in type(value).model_fields.items():
            yield from _content(getattr(value, name), (*loc, name), field, days)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _content(item, (*loc, index), info, days)
    elif isinstance(value, str):
        yield from _text(value, loc, info, days)
    elif isinstance(value, date) and not isinstance(value, datetime):
        name = _dotted(loc)
        if value < days.earliest:
            yield RuleViolation(
                loc,
                "date_too_early",
                f"{name} is more than {PAYLOAD_YEARS_BEFORE} years before the day of occurred_at",
            )
        elif value > days.latest:
            yield RuleViolation(
                loc,
                "date_too_late",
                f"{name} is more than {PAYLOAD_YEARS_AFTER} years after the day of occurred_at",
            )
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > AVRO_INT_MAX:
        yield RuleViolation(
            loc, "out_of_range", f"number is beyond the 32-bit range (±{AVRO_INT_MAX})"
        )


def _text(value: str, loc: Loc, info: FieldInfo | None, days: _Days) -> Iterator[RuleViolation]:
    name = _dotted(loc)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        yield RuleViolation(loc, "invalid_unicode", "text holds characters outside Unicode")
        return
    sensitivity = _sensitivity(info)
    if sensitivity is None:
        if contains_identity_code(value):
            yield RuleViolation(
                loc,
                "identity_code_outside_pii_field",
                f"{name} holds something shaped like a personal identity code, but it is not a "
                "field marked pii; identity codes go only in the fields meant for them",
            )
    elif _holds_identity_code(info):
        if parse_identity_code(value).birth_date > days.today:
            yield RuleViolation(
                loc,
                "identity_code_birth_date_in_future",
                f"the birth date in {name} is after today (Helsinki time)",
            )
    elif sensitivity == Sensitivity.DIRECT:
        yield from _name(value, loc, name)


def _name(value: str, loc: Loc, name: str) -> Iterator[RuleViolation]:
    """A person's name: something visible, and no control character (NUL, line breaks)."""
    if any(unicodedata.category(c) == "Cc" for c in value):
        yield RuleViolation(
            loc,
            "name_control_character",
            f"{name} holds a control character (such as NUL, a tab or a line break)",
        )
    if all(_invisible(c) for c in value):
        yield RuleViolation(
            loc,
            "name_empty",
            f"{name} is empty, or holds only whitespace or invisible characters",
        )


def _invisible(char: str) -> bool:
    return char.isspace() or unicodedata.category(char) in ("Cc", "Cf") or char in _BLANK_LOOKING


def _sensitivity(info: FieldInfo | None) -> Sensitivity | None:
    extra = info.json_schema_extra if info is not None else None
    return Sensitivity(str(extra["pii"])) if isinstance(extra, dict) and "pii" in extra else None


#: The validator every PersonalIdentityCodeStr field carries: it marks identity-code fields.
_IDENTITY_CODE_METADATA: Final = typing.get_args(PersonalIdentityCodeStr)[1:]


def _holds_identity_code(info: FieldInfo | None) -> bool:
    return info is not None and any(m in info.metadata for m in _IDENTITY_CODE_METADATA)


def _dotted(loc: Loc) -> str:
    return ".".join(map(str, loc))


def _payer_violations(payer: Payer, benefit: BenefitType, on: date) -> Iterator[RuleViolation]:
    """Kela pays basic allowance and labour market subsidy, a fund the earnings-related one."""
    if payer.kind == PayerKind.KELA and payer.fund_code is not None:
        yield RuleViolation(
            ("payload", "payer", "fund_code"),
            "fund_code_with_kela",
            "payer.fund_code must be null when Kela pays",
        )
    if payer.kind == PayerKind.UNEMPLOYMENT_FUND:
        if payer.fund_code is None:
            yield RuleViolation(
                ("payload", "payer", "fund_code"),
                "fund_code_missing",
                "payer.fund_code is required when an unemployment fund pays",
            )
        elif not fund(payer.fund_code).is_valid_on(on):
            yield RuleViolation(
                ("payload", "payer", "fund_code"),
                "fund_not_operating",
                "the fund in payer.fund_code does not operate on the day of the event; a fund "
                "that merged reports under its successor",
            )
    earnings_related = benefit == BenefitType.EARNINGS_RELATED_ALLOWANCE
    if earnings_related != (payer.kind == PayerKind.UNEMPLOYMENT_FUND):
        yield RuleViolation(
            ("payload", "benefit"),
            "benefit_not_paid_by_payer",
            "earnings-related allowance is paid by an unemployment fund, basic daily allowance "
            "and labour market subsidy by Kela",
        )


# --- one request model per event type --------------------------------------------------------


def examples_of(event_type: str) -> list[JsonValue]:
    """The OpenAPI examples of a request: the first version, and a correction for some types."""
    found: list[JsonValue] = [EXAMPLES[event_type]]
    if event_type in CORRECTIONS:
        found.append(CORRECTIONS[event_type])
    return found


def _examples(event_type: str) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": examples_of(event_type)})


class JobseekerRegisteredRequest(IngestRequest[JobseekerRegisteredPayload]):
    """Registration as a jobseeker (työnhaun alkaminen)."""

    model_config = _examples("JobseekerRegistered")
    event_class = JobseekerRegistered

    def payload_violations(self, latest_day: date) -> Iterator[RuleViolation]:
        started = self.payload.job_search_started_on
        yield from _not_after("job_search_started_on", started, latest_day)
        born = parse_identity_code(self.personal_identity_code).birth_date
        age = started.year - born.year - ((started.month, started.day) < (born.month, born.day))
        if age != self.payload.age_at_registration:
            yield RuleViolation(
                ("payload", "age_at_registration"),
                "age_mismatch",
                "age_at_registration is not the age in full years on job_search_started_on "
                "given by the birth date in personal_identity_code",
            )


class InitialInterviewHeldRequest(IngestRequest[InitialInterviewHeldPayload]):
    """Initial interview (alkuhaastattelu).

    ``deadline`` and ``within_deadline`` are part of the event so that reports need no rule
    lookups; the hub checks them against the rule in force on the start of job search instead of
    trusting each client's own calendar arithmetic.
    """

    model_config = _examples("InitialInterviewHeld")
    event_class = InitialInterviewHeld

    def payload_violations(self, latest_day: date) -> Iterator[RuleViolation]:
        p = self.payload
        yield from _not_after("held_on", p.held_on, latest_day)
        yield from _at_least(
            "held_on",
            p.held_on,
            "job_search_started_on",
            p.job_search_started_on,
            "held_before_job_search_started",
        )
        if p.remote_for_weighty_reason and p.channel == Channel.FACE_TO_FACE:
            yield RuleViolation(
                ("payload", "remote_for_weighty_reason"),
                "remote_reason_with_face_to_face",
                "remote_for_weighty_reason is true but the channel is FACE_TO_FACE",
            )
        if p.job_search_started_on > latest_day:
            return  # reported above via held_on; no deadline exists for a future start
        try:
            working_days = initial_interview_deadline_table().on(p.job_search_started_on)
            expected = initial_interview_deadline(p.job_search_started_on)
        except NoRuleInForce:
            yield RuleViolation(
                ("payload", "job_search_started_on"),
                "no_rule_in_force",
                "no initial-interview deadline rule is in force on job_search_started_on "
                "(the rules start on 2025-01-01, the TE reform)",
            )
            return
        if p.deadline != expected:
            yield RuleViolation(
                ("payload", "deadline"),
                "deadline_mismatch",
                f"deadline must be {expected.isoformat()}: {working_days} working days after "
                "job_search_started_on under the rule in force on that day (weekends and "
                "Finnish public holidays excluded)",
            )
        if p.within_deadline != (p.held_on <= expected):
            yield RuleViolation(
                ("payload", "within_deadline"),
                "within_deadline_mismatch",
                f"within_deadline must be {str(p.held_on <= expected).lower()}: whether held_on "
                "is on or before the statutory deadline",
            )


class EmploymentPlanAgreedRequest(IngestRequest[EmploymentPlanAgreedPayload]):
    """Employment plan (työllistymissuunnitelma) or a variant, with the job-search obligation."""

    model_config = _examples("EmploymentPlanAgreed")
    event_class = EmploymentPlanAgreed

    def payload_violations(self, latest_day: date) -> Iterator[RuleViolation]:
        p = self.payload
        yield from _not_after("agreed_on", p.agreed_on, latest_day)
        if p.valid_until is not None:
            yield from _at_least(
                "valid_until",
                p.valid_until,
                "agreed_on",
                p.agreed_on,
                "valid_until_before_agreed_on",
            )
        try:
            default = job_search_obligation_table().on(p.agreed_on).default_per_month
        except NoRuleInForce:
            return
        reduced = p.job_search_obligation_per_month < default
        if reduced and p.obligation_reduction is None:
            yield RuleViolation(
                ("payload", "obligation_reduction"),
                "obligation_reduction_missing",
                f"obligation_reduction is required when the obligation is below the default of "
                f"{default} a month",
            )
        if not reduced and p.obligation_reduction is not None:
            yield RuleViolation(
                ("payload", "obligation_reduction"),
                "obligation_reduction_without_reduction",
                f"obligation_reduction must be null when the obligation is the default of "
                f"{default} a month or more",
            )


class JobSearchConversationHeldRequest(IngestRequest[JobSearchConversationHeldPayload]):
    """Job-search conversation (työnhakukeskustelu)."""

    model_config = _examples("JobSearchConversationHeld")
    event_class = JobSearchConversationHeld

    def payload_violations(self, latest_day: date) -> Iterator[RuleViolation]:
        yield from _not_after("held_on", self.payload.held_on, latest_day)


class JobOfferMadeRequest(IngestRequest[JobOfferMadePayload]):
    """Job offer (työtarjous)."""

    model_config = _examples("JobOfferMade")
    event_class = JobOfferMade


class JobOfferOutcomeRecordedRequest(IngestRequest[JobOfferOutcomeRecordedPayload]):
    """What came of a job offer."""

    model_config = _examples("JobOfferOutcomeRecorded")
    event_class = JobOfferOutcomeRecorded

    def payload_violations(self, latest_day: date) -> Iterator[RuleViolation]:
        yield from _not_after("recorded_on", self.payload.recorded_on, latest_day)


class StatementRequestedRequest(IngestRequest[StatementRequestedPayload]):
    """A payer's request for a labour-policy statement (lausuntopyyntö)."""

    model_config = _examples("StatementRequested")
    event_class = StatementRequested

    def payload_violations(self, latest_day: date) -> Iterator[RuleViolation]:
        p = self.payload
        yield from _not_after("requested_on", p.requested_on, latest_day)
        yield from _payer_violations(p.payer, p.benefit, min(p.requested_on, latest_day))


class LabourPolicyStatementIssuedRequest(IngestRequest[LabourPolicyStatementIssuedPayload]):
    """Labour-policy statement (työvoimapoliittinen lausunto) to the payer."""

    model_config = _examples("LabourPolicyStatementIssued")
    event_class = LabourPolicyStatementIssued

    def payload_violations(self, latest_day: date) -> Iterator[RuleViolation]:
        p = self.payload
        yield from _not_after("issued_on", p.issued_on, latest_day)
        yield from _payer_violations(p.payer, p.benefit, min(p.issued_on, latest_day))
        sanction = p.outcome == StatementOutcome.SANCTION_PERIOD
        if sanction and p.sanction_days is None:
            yield RuleViolation(
                ("payload", "sanction_days"),
                "sanction_days_missing",
                "sanction_days is required when the outcome is SANCTION_PERIOD",
            )
        if not sanction and p.sanction_days is not None:
            yield RuleViolation(
                ("payload", "sanction_days"),
                "sanction_days_without_sanction",
                "sanction_days must be null unless the outcome is SANCTION_PERIOD",
            )


class BenefitDaysAccruedRequest(IngestRequest[BenefitDaysAccruedPayload]):
    """Accrual data (kertymätiedot) of one payment period, from the payer."""

    model_config = _examples("BenefitDaysAccrued")
    event_class = BenefitDaysAccrued

    def payload_violations(self, latest_day: date) -> Iterator[RuleViolation]:
        p = self.payload
        yield from _at_least(
            "period_end", p.period_end, "period_start", p.period_start, "period_end_before_start"
        )
        yield from _not_after("period_end", p.period_end, latest_day)
        yield from _payer_violations(p.payer, p.benefit, latest_day)
        if (
            p.period_end >= p.period_start
            and p.days_paid > (p.period_end - p.period_start).days + 1
        ):
            yield RuleViolation(
                ("payload", "days_paid"),
                "days_paid_exceed_period",
                "days_paid is more than the number of days from period_start to period_end",
            )
        if p.accrued_days_total < p.days_paid:
            yield RuleViolation(
                ("payload", "accrued_days_total"),
                "accrued_total_below_days_paid",
                "accrued_days_total must include the days_paid of this period",
            )


class ServiceEnrolledRequest(IngestRequest[ServiceEnrolledPayload]):
    """Enrolment in a service; the provider later gets the name and contact details only."""

    model_config = _examples("ServiceEnrolled")
    event_class = ServiceEnrolled

    def payload_violations(self, latest_day: date) -> Iterator[RuleViolation]:
        p = self.payload
        yield from _at_least(
            "planned_end",
            p.planned_end,
            "planned_start",
            p.planned_start,
            "planned_end_before_start",
        )


class ServiceParticipationReportedRequest(IngestRequest[ServiceParticipationReportedPayload]):
    """Participation report from the service provider (start, absence, interruption, completion)."""

    model_config = _examples("ServiceParticipationReported")
    event_class = ServiceParticipationReported

    def payload_violations(self, latest_day: date) -> Iterator[RuleViolation]:
        p = self.payload
        yield from _not_after("reported_for", p.reported_for, latest_day)
        for field, kind, value in (
            ("absence_days", ParticipationKind.ABSENCE, p.absence_days),
            ("interruption_reason", ParticipationKind.INTERRUPTION, p.interruption_reason),
        ):
            if p.kind == kind and value is None:
                yield RuleViolation(
                    ("payload", field),
                    f"{field}_missing",
                    f"{field} is required when kind is {kind.value}",
                )
            if p.kind != kind and value is not None:
                yield RuleViolation(
                    ("payload", field),
                    f"{field}_not_allowed",
                    f"{field} is only for kind {kind.value}; it must be null for {p.kind.value}",
                )


class EmploymentStartedRequest(IngestRequest[EmploymentStartedPayload]):
    """Notice of a job start."""

    model_config = _examples("EmploymentStarted")
    event_class = EmploymentStarted

    def payload_violations(self, latest_day: date) -> Iterator[RuleViolation]:
        yield from _not_after("started_on", self.payload.started_on, latest_day)


class JobSearchEndedRequest(IngestRequest[JobSearchEndedPayload]):
    """End of the job-search spell."""

    model_config = _examples("JobSearchEnded")
    event_class = JobSearchEnded

    def payload_violations(self, latest_day: date) -> Iterator[RuleViolation]:
        yield from _not_after("ended_on", self.payload.ended_on, latest_day)


#: The request model of every event type, by event type name.
REQUEST_TYPES: Final[Mapping[str, type[IngestRequest[Any]]]] = {
    cls.event_class.__name__: cls
    for cls in (
        JobseekerRegisteredRequest,
        InitialInterviewHeldRequest,
        EmploymentPlanAgreedRequest,
        JobSearchConversationHeldRequest,
        JobOfferMadeRequest,
        JobOfferOutcomeRecordedRequest,
        StatementRequestedRequest,
        LabourPolicyStatementIssuedRequest,
        BenefitDaysAccruedRequest,
        ServiceEnrolledRequest,
        ServiceParticipationReportedRequest,
        EmploymentStartedRequest,
        JobSearchEndedRequest,
    )
}
assert REQUEST_TYPES.keys() == EVENT_TYPES.keys(), "every event type needs a request model"


# --- bulk ---------------------------------------------------------------------------------------


def _bulk_item_model(
    event_type: str, request: type[IngestRequest[Any]]
) -> type[IngestRequest[Any]]:
    """``{"event_type": "<Type>", ...request}``: the request with its type as discriminator."""
    namespace: dict[str, Any] = {
        "__module__": __name__,
        "__doc__": f"A {event_type} request inside a bulk request.",
        "__annotations__": {"event_type": Literal[event_type]},
        "event_type": Field(description="Event type of this item (the discriminator)."),
        "model_config": ConfigDict(
            json_schema_extra={
                "examples": [
                    {"event_type": event_type, **EXAMPLES[event_type]},
                    *(
                        [{"event_type": event_type, **CORRECTIONS[event_type]}]
                        if event_type in CORRECTIONS
                        else []
                    ),
                ]
            }
        ),
    }
    model: type[IngestRequest[Any]] = type(f"{event_type}Item", (request,), namespace)
    return model


#: The item model of every event type inside a bulk request, by event type name.
BULK_ITEM_TYPES: Final[Mapping[str, type[IngestRequest[Any]]]] = {
    name: _bulk_item_model(name, request) for name, request in REQUEST_TYPES.items()
}
#: One bulk item: a union over the item models, discriminated by ``event_type``.
BulkItem: Any = Annotated[
    Union[tuple(BULK_ITEM_TYPES.values())],  # noqa: UP007 - a union built at run time
    Field(discriminator="event_type"),
]
BULK_ITEM_ADAPTER: Final[TypeAdapter[IngestRequest[Any]]] = TypeAdapter(BulkItem)
BULK_ADAPTER: Final[TypeAdapter[list[IngestRequest[Any]]]] = TypeAdapter(list[BulkItem])


def event_type_of(item: IngestRequest[Any]) -> str:
    """The event type name of a request or bulk item."""
    return item.event_class.__name__


def bulk_violations(
    items: Sequence[IngestRequest[Any]], *, now: datetime, clock_skew: timedelta
) -> list[RuleViolation]:
    """The rules of every item (loc starts with the item index) and the rules across items.

    Across items: a person's initial interview cannot have occurred before the same person's
    registration sent in the same request, which catches swapped or mis-dated batch exports.
    """
    found: list[RuleViolation] = []
    for index, item in enumerate(items):
        found.extend(
            RuleViolation((index, *v.loc), v.type, v.detail)
            for v in item.violations(now=now, clock_skew=clock_skew)
        )
    registered: dict[str, datetime] = {}
    for item in items:
        if isinstance(item, JobseekerRegisteredRequest):
            code = item.personal_identity_code
            first = registered.get(code)
            registered[code] = item.occurred_at if first is None else min(first, item.occurred_at)
    for index, item in enumerate(items):
        if not isinstance(item, InitialInterviewHeldRequest):
            continue
        registration = registered.get(item.personal_identity_code)
        if registration is not None and item.occurred_at < registration:
            found.append(
                RuleViolation(
                    (index, "occurred_at"),
                    "interview_before_registration",
                    "this initial interview occurred before the same person's JobseekerRegistered "
                    "in this request",
                )
            )
    return found
