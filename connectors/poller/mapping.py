"""The change feed's item format and how an item becomes customer-path events.

An item is one row of the register's jobseeker extract: a job-search spell with the person's
details and, once agreed, the plan. The feed lists a row again whenever it changes, so ids are
derived from the row and the fact, never from the poll: the registration of row R is first
published as event ``uuid5(NS, "{service}:R:registered")`` and its plan P as ``...:R:plan:P``,
under the dedupe key ``poller:{service}:R:{fact}``. A new plan has a new plan id and becomes a
new event.

The request digest of a submission is a keyed digest of the fact's content, everything but
``recorded_at`` (the row's ``changed_at``): re-polling a page, or the row coming back because
another part of it changed (a plan was added), is then a duplicate that writes nothing. A row
whose fact itself changed (a corrected phone number, status or plan) comes with another digest
under the same key, which the sink refuses as a conflict; that is a correction of the register,
and it is published, never dropped: :meth:`ChangeMapper.correction_of` makes it a new event of
the same type, keyed by the fact and its new digest, whose ``corrects_event_id`` names the fact's
first event (its ``causation_id`` stays the first event's cause). Of a fact's versions the one
with the latest ``recorded_at`` wins (a tie: the greater event id). The one change this cannot
see is a row that returns to exactly the content first published: that repeats the first
event's digest and is answered as a duplicate.

A row the register withdraws (``withdrawn``: recorded in error) retracts its facts, and a plan
marked ``withdrawn`` its plan: the retraction is event ``...:R:<fact>:retracted`` under the key
``poller:{service}:R:<fact>:retracted``, with ``retracted`` true and ``corrects_event_id`` the
fact's first event id (derived, so the poller needs no memory of what it published).

``changed_at`` is the facts' knowledge time (``recorded_at``): a row whose ``changed_at`` is more
than the clock skew (``HUB_INGEST_CLOCK_SKEW_S``) ahead of the hub's clock is rejected, since a
future knowledge time would hide the fact from every as-of report until then and make it beat
every correction sent meanwhile.

Items are validated one by one: a bad item becomes a :class:`Rejection` (id and reason, never
the identity code) and the rest of the page flows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final, Self
from uuid import NAMESPACE_URL, UUID, uuid5
from zoneinfo import ZoneInfo

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from connectors.xroad.client import XRoadService
from hub.codes import MainlandMunicipalityCodeStr, UnemploymentFundCodeStr, employment_area_of
from hub.events import CustomerPathEvent, Envelope
from hub.events.customer_path import (
    CaseWorker,
    EmploymentPlanAgreed,
    EmploymentPlanAgreedPayload,
    JobseekerRegistered,
    JobseekerRegisteredPayload,
)
from hub.events.enums import Channel, LabourMarketStatus, ObligationReduction, PlanType
from hub.identity import (
    PersonalIdentityCodeStr,
    Pseudonymizer,
    contains_identity_code,
    parse_identity_code,
)
from hub.intake.dedupe import dedupe_key
from hub.intake.requests import content_violations
from hub.logging import redact_text
from hub.sink import Submission

#: Namespace of every poller event id. Changing it would re-mint all ids and defeat dedupe.
POLLER_NAMESPACE: Final = uuid5(NAMESPACE_URL, "urn:fi:te-hub:connectors:poller")
#: The register gives days only; an event happens at the start of its day in Finland.
HELSINKI: Final = ZoneInfo("Europe/Helsinki")
DEFAULT_CLOCK_SKEW: Final = timedelta(seconds=300)
"""How far ``changed_at`` may be ahead of the hub's clock (the default of
HUB_INGEST_CLOCK_SKEW_S; the poller passes the setting)."""

# Tolerant reader: the register may add fields. Errors never echo values (identity codes).
_ITEM_CONFIG: Final = ConfigDict(frozen=True, extra="ignore", hide_input_in_errors=True)


class PlanExtract(BaseModel):
    """The plan part of a register row; limits are checked when the event is built."""

    model_config = _ITEM_CONFIG

    plan_id: UUID
    plan_type: PlanType
    agreed_on: date
    valid_until: date | None = None
    job_search_obligation_per_month: int
    obligation_reduction: ObligationReduction | None = None
    reporting_period_months: int
    agreed_in_initial_interview: bool
    team_code: str
    expert_id: str
    withdrawn: bool = Field(
        default=False, description="The register withdrew the plan (recorded in error)."
    )


class JobseekerChange(BaseModel):
    """One item of the jobseeker change feed: a register row of one job-search spell."""

    model_config = _ITEM_CONFIG

    id: str = Field(min_length=1, description="Stable id of the register row (the spell).")
    changed_at: AwareDatetime = Field(description="When the register last changed the row.")
    personal_identity_code: PersonalIdentityCodeStr
    municipality_code: MainlandMunicipalityCodeStr
    job_search_started_on: date
    registration_channel: Channel
    labour_market_status: LabourMarketStatus
    first_name: str
    last_name: str
    email: str | None = None
    phone: str | None = None
    unemployment_fund_code: UnemploymentFundCodeStr | None = None
    reduced_work_ability: bool | None = None
    plan: PlanExtract | None = None
    withdrawn: bool = Field(
        default=False,
        description="The register withdrew the row (recorded in error): its facts are retracted.",
    )


class ChangePage(BaseModel):
    """One answer of the feed. Items stay raw here so that one bad item cannot sink the page."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    items: list[Any]
    next_cursor: str | None = None
    has_more: bool

    @model_validator(mode="after")
    def _more_needs_a_cursor(self) -> Self:
        if self.has_more and not self.next_cursor:
            raise ValueError("has_more is true but next_cursor is missing")
        return self


@dataclass(frozen=True)
class Rejection:
    """An item that could not become events, with a reason fit for logs (no personal data)."""

    item_id: str | None
    reason: str


@dataclass(frozen=True)
class Origin:
    """Where a submission comes from: the row and the fact, to correct or reject it later."""

    item_id: str
    kind: str


@dataclass(frozen=True)
class MappedPage:
    submissions: list[Submission]
    #: The origin of each submission, in the same order.
    origins: list[Origin]
    rejections: list[Rejection]


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=HELSINKI).astimezone(UTC)


def _age_on(birth: date, day: date) -> int:
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def _reason(error: ValueError | OverflowError) -> str:
    if isinstance(error, ValidationError):
        # The title names the model that failed: the feed item, or the event payload built from it.
        problems = "; ".join(
            ": ".join([*([".".join(map(str, e["loc"]))] if e["loc"] else []), e["msg"]])
            for e in error.errors(include_url=False, include_input=False)
        )
        text = f"{error.title}: {problems}"
    else:
        text = str(error)
    return redact_text(text)


def _raw_id(raw: object) -> str | None:
    """The item's id for the reject file and the log, whatever the item holds.

    A lone surrogate (``"\\ud800"`` in the JSON) is a Python str that no UTF-8 writer takes;
    it is kept as its escape so that the id still finds the row and the reject is recorded.
    """
    value = raw.get("id") if isinstance(raw, dict) else None
    if value is None:
        return None
    return redact_text(str(value).encode("utf-8", "backslashreplace").decode("utf-8"))


class ChangeMapper:
    """Turns feed items of one service into sink submissions with deterministic ids."""

    def __init__(
        self,
        service: XRoadService,
        pseudonymizer: Pseudonymizer,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
    ) -> None:
        self.service = service
        self._pseudonymizer = pseudonymizer
        self._clock = clock
        self._clock_skew = clock_skew

    def map_items(self, items: Sequence[object]) -> MappedPage:
        submissions: list[Submission] = []
        origins: list[Origin] = []
        rejections: list[Rejection] = []
        for raw in items:
            try:
                change = JobseekerChange.model_validate(raw)
                facts = self._facts(change)
            # ValueError: pydantic's ValidationError, the code lookups and the content rules;
            # OverflowError: a day such as 0001-01-01 has no start in UTC.
            except (ValueError, OverflowError) as error:
                rejections.append(Rejection(_raw_id(raw), _reason(error)))
                continue
            submissions.extend(submission for _, submission in facts)
            origins.extend(Origin(change.id, kind) for kind, _ in facts)
        return MappedPage(submissions, origins, rejections)

    def submissions_of(self, change: JobseekerChange) -> list[Submission]:
        """The registration, and the plan when the row has one (in causal order)."""
        return [submission for _, submission in self._facts(change)]

    def _facts(self, change: JobseekerChange) -> list[tuple[str, Submission]]:
        """The submissions of :meth:`submissions_of`, each with its fact (``kind``)."""
        self._check_knowledge_time(change)
        code = change.personal_identity_code
        birth = parse_identity_code(code).birth_date
        registered = JobseekerRegistered(
            envelope=self._envelope(
                change, "registered", JobseekerRegistered, change.job_search_started_on, None
            ),
            payload=JobseekerRegisteredPayload(
                personal_identity_code=code,
                first_name=change.first_name,
                last_name=change.last_name,
                email=change.email,
                phone=change.phone,
                job_search_started_on=change.job_search_started_on,
                registration_channel=change.registration_channel,
                labour_market_status=change.labour_market_status,
                age_at_registration=_age_on(birth, change.job_search_started_on),
                unemployment_fund_code=change.unemployment_fund_code,
                reduced_work_ability=change.reduced_work_ability,
            ),
        )
        events: list[tuple[str, CustomerPathEvent]] = [("registered", registered)]
        if (plan := change.plan) is not None:
            kind = f"plan:{plan.plan_id}"
            agreed = EmploymentPlanAgreed(
                envelope=self._envelope(
                    change, kind, EmploymentPlanAgreed, plan.agreed_on, registered
                ),
                payload=EmploymentPlanAgreedPayload(
                    plan_id=plan.plan_id,
                    plan_type=plan.plan_type,
                    agreed_on=plan.agreed_on,
                    valid_until=plan.valid_until,
                    job_search_obligation_per_month=plan.job_search_obligation_per_month,
                    obligation_reduction=plan.obligation_reduction,
                    reporting_period_months=plan.reporting_period_months,
                    agreed_in_initial_interview=plan.agreed_in_initial_interview,
                    handled_by=CaseWorker(team_code=plan.team_code, expert_id=plan.expert_id),
                ),
            )
            events.append((kind, agreed))
        self._check_content(change, [event for _, event in events])
        withdrawn = {kind for kind, _ in events if change.withdrawn}
        if change.plan is not None and change.plan.withdrawn:
            withdrawn.add(f"plan:{change.plan.plan_id}")
        return [
            (kind, self._retraction(change.id, kind, event))
            if kind in withdrawn
            else (
                kind,
                Submission(
                    dedupe_key=self.dedupe_key(change.id, kind),
                    request_digest=self.fact_digest(event),
                    event=event,
                ),
            )
            for kind, event in events
        ]

    def _retraction(self, item_id: str, kind: str, event: CustomerPathEvent) -> Submission:
        """*event* (a fact's first version, as built from the row) as the fact's retraction."""
        envelope = event.envelope.model_copy(
            update={
                "event_id": self.event_id(item_id, f"{kind}:retracted"),
                "corrects_event_id": event.envelope.event_id,
                "retracted": True,
            }
        )
        retraction = event.model_copy(update={"envelope": envelope})
        return Submission(
            dedupe_key=self.dedupe_key(item_id, kind, "retracted"),
            request_digest=self.fact_digest(retraction),
            event=retraction,
        )

    def fact_digest(self, event: CustomerPathEvent) -> str:
        """Keyed digest of what the fact says: all of the event but ``recorded_at``, which
        moves whenever any part of the row changes, also a part that is another fact."""
        content = event.model_dump_json(exclude={"envelope": {"recorded_at"}})
        return self._pseudonymizer.keyed_digest(content.encode())

    def correction_of(self, submission: Submission, origin: Origin) -> Submission:
        """*submission* as the correction of the fact first published under its key.

        Same type, content and cause, a new event id and key of the fact and this digest (so a
        re-polled correction is a duplicate), and the fact's first event in
        ``corrects_event_id`` (a retraction that is corrected stays a retraction of the fact).
        """
        digest = submission.request_digest
        built = submission.event.envelope
        envelope = built.model_copy(
            update={
                "event_id": self.event_id(origin.item_id, f"{origin.kind}:correction:{digest}"),
                "corrects_event_id": built.corrects_event_id or built.event_id,
            }
        )
        return Submission(
            dedupe_key=self.dedupe_key(origin.item_id, origin.kind, "correction", digest),
            request_digest=digest,
            event=submission.event.model_copy(update={"envelope": envelope}),
        )

    def _check_knowledge_time(self, change: JobseekerChange) -> None:
        """``changed_at`` becomes the events' ``recorded_at`` (knowledge time), so it may not be
        ahead of the hub's clock by more than the skew (HUB_INGEST_CLOCK_SKEW_S): a fact
        recorded "in 2030" would be invisible to every as-of report until then and would beat
        every correction sent before it. Such a row is rejected (ValueError), not clamped."""
        latest = self._clock() + self._clock_skew
        if change.changed_at > latest:
            seconds = int(self._clock_skew.total_seconds())
            raise ValueError(
                f"changed_at: changed_at_in_the_future (more than {seconds} s ahead of the "
                "hub's clock; it is the facts' knowledge time)"
            )

    def _check_content(self, change: JobseekerChange, events: list[CustomerPathEvent]) -> None:
        """The API's content rules (``content_violations``) on the events, and no identity code
        in the row id, which names the events' dedupe keys; raises ValueError naming them."""
        now = self._clock()
        problems = [
            f"{'.'.join(map(str, v.loc))}: {v.type}"
            for event in events
            for v in content_violations(event, event.envelope.occurred_at, now=now)
        ]
        if contains_identity_code(change.id):
            problems.insert(0, "id: identity_code_outside_pii_field")
        if problems:
            raise ValueError(f"content rules broken: {'; '.join(problems)}")

    def event_id(self, item_id: str, kind: str) -> UUID:
        return uuid5(POLLER_NAMESPACE, f"{self.service.id}:{item_id}:{kind}")

    def dedupe_key(self, item_id: str, kind: str, *more: str) -> str:
        return dedupe_key("poller", self.service.id, item_id, kind, *more)

    def _envelope(
        self,
        change: JobseekerChange,
        kind: str,
        event_type: type[CustomerPathEvent],
        day: date,
        cause: CustomerPathEvent | None,
    ) -> Envelope:
        return Envelope(
            event_id=self.event_id(change.id, kind),
            event_type=event_type.event_type,
            occurred_at=_day_start(day),
            recorded_at=change.changed_at,
            source_system=self.service.uri,
            subject=self._pseudonymizer.pseudonym(change.personal_identity_code),
            municipality_code=change.municipality_code,
            employment_area_code=employment_area_of(change.municipality_code).code,
            # The row is the job-search spell, so its id names the customer path.
            correlation_id=uuid5(POLLER_NAMESPACE, f"{self.service.id}:{change.id}"),
            causation_id=cause.envelope.event_id if cause is not None else None,
        )
