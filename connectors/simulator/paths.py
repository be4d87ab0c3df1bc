"""Customer paths as a day-by-day simulation of one person at a time.

Each person gets an agenda of dated actions (interview, statement request, conversations,
offers, services, accruals); running the agenda in date order emits events in causal order, and
every event names the event that caused it. The statutory deadlines and conversation rhythm come
from the effective-dated rules in force on the person's start of job search.
"""

from __future__ import annotations

import calendar
import heapq
import itertools
import random
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from uuid import UUID
from zoneinfo import ZoneInfo

from connectors.simulator.config import SimulationConfig
from connectors.simulator.corrections import sent_at, with_corrections
from connectors.simulator.population import Person, Population
from hub.codes import fund
from hub.events import AvroRecord, CustomerPathEvent, Envelope
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
from hub.identity import Pseudonymizer
from hub.rules import (
    add_working_days,
    conversation_cadence_table,
    initial_interview_deadline,
    is_working_day,
    job_search_obligation_table,
)

HELSINKI = ZoneInfo("Europe/Helsinki")
AUTHORITY_SOURCE = "urn:fi:keha:customer-information-system"
KELA_SOURCE = "urn:fi:kela:payer-interface"
BENEFIT_SEEKERS = {
    LabourMarketStatus.UNEMPLOYED,
    LabourMarketStatus.LAID_OFF,
    LabourMarketStatus.PART_TIME_EMPLOYED,
}

Action = Callable[[date], None]


def fund_source(fund_code: str) -> str:
    return f"urn:fi:unemployment-fund:{fund_code}"


def provider_source(business_id: str) -> str:
    return f"urn:fi:service-provider:{business_id}"


def simulate(
    config: SimulationConfig, pseudonymizer: Pseudonymizer
) -> Iterator[list[CustomerPathEvent]]:
    """Every simulated person's events, one list per person, in causal order (corrections,
    with ``config.correction_share``, where they are sent: see ``corrections.sent_at``)."""
    population = Population(config, pseudonymizer)
    for index in range(config.jobseekers):
        rng = random.Random(f"{config.seed}:person:{index}")
        registered_on = config.start + timedelta(days=rng.randrange(config.days))
        person = population.person(rng, registered_on)
        events = _PersonPath(rng, person, population, config).run(registered_on)
        # Their own stream: the first versions do not depend on the share.
        fixes = random.Random(f"{config.seed}:corrections:{index}")
        yield with_corrections(events, fixes, config.correction_share)


def in_time_order(paths: Iterable[list[CustomerPathEvent]]) -> Iterator[CustomerPathEvent]:
    """All events merged by when they are sent (occurred_at; a correction's recorded_at);
    stable, so each person's causal order is kept."""
    return heapq.merge(*paths, key=sent_at)


def _uuid(rng: random.Random) -> UUID:
    return UUID(int=rng.getrandbits(128), version=4)


def _month_end(day: date) -> date:
    return day.replace(day=calendar.monthrange(day.year, day.month)[1])


def _weekdays(first: date, last: date) -> int:
    """Benefit days are paid for five days a week."""
    return sum(
        1 for n in range((last - first).days + 1) if (first + timedelta(days=n)).weekday() < 5
    )


class _PersonPath:
    def __init__(
        self, rng: random.Random, person: Person, population: Population, config: SimulationConfig
    ) -> None:
        self.rng = rng
        self.person = person
        self.population = population
        self.config = config
        self.correlation_id = _uuid(rng)
        self.events: list[CustomerPathEvent] = []
        self.agenda: list[tuple[date, int, Action]] = []
        self.sequence = itertools.count()
        self.last_at: datetime | None = None
        self.ended = False
        self.ended_on: date | None = None
        self.interrupted = False
        self.case_worker = CaseWorker(team_code=person.team_code, expert_id=person.expert_id)
        self.payer: Payer | None = None
        self.benefit: BenefitType | None = None
        self.statement: CustomerPathEvent | None = None
        self.accrued_before = 0
        self.plan: CustomerPathEvent | None = None
        self.obligation = 4

    # --- machinery ------------------------------------------------------------------------

    def run(self, registered_on: date) -> list[CustomerPathEvent]:
        self.register(registered_on)
        day = registered_on
        while day <= self.config.end and (self.agenda or not self.ended):
            while self.agenda and self.agenda[0][0] <= day:
                _, _, action = heapq.heappop(self.agenda)
                action(day)
            if not self.ended and self.plan is not None and is_working_day(day):
                self.daily_chances(day)
            day += timedelta(days=1)
        return self.events

    def at(self, day: date, action: Action) -> None:
        heapq.heappush(self.agenda, (day, next(self.sequence), action))

    def emit(
        self,
        cls: type[CustomerPathEvent],
        payload: AvroRecord,
        day: date,
        source: str = AUTHORITY_SOURCE,
        caused_by: CustomerPathEvent | None = None,
    ) -> CustomerPathEvent:
        hour = self.rng.randint(8, 15) if source == AUTHORITY_SOURCE else self.rng.randint(0, 23)
        local = datetime.combine(day, time(hour, self.rng.randint(0, 59)), tzinfo=HELSINKI)
        occurred_at = local.astimezone(UTC)
        if self.last_at is not None and occurred_at <= self.last_at:
            occurred_at = self.last_at + timedelta(minutes=1)
        self.last_at = occurred_at
        lag = timedelta(minutes=self.rng.randint(0, 30) if source == AUTHORITY_SOURCE else 90)
        cause = caused_by or (self.events[-1] if self.events else None)
        envelope = Envelope(
            event_id=_uuid(self.rng),
            event_type=cls.__name__,
            occurred_at=occurred_at,
            recorded_at=occurred_at + lag,
            source_system=source,
            subject=self.person.pseudonym,
            municipality_code=self.person.municipality_code,
            employment_area_code=self.person.employment_area_code,
            correlation_id=self.correlation_id,
            causation_id=cause.envelope.event_id if cause else None,
        )
        event = cls(envelope=envelope, payload=payload)
        self.events.append(event)
        return event

    def channel(self, face_to_face_share: float) -> Channel:
        if self.rng.random() < face_to_face_share:
            return Channel.FACE_TO_FACE
        return self.rng.choices([Channel.PHONE, Channel.VIDEO, Channel.ELECTRONIC], [5, 3, 1])[0]

    def working_day_on_or_after(self, day: date) -> date:
        while not is_working_day(day):
            day += timedelta(days=1)
        return day

    # --- the path -------------------------------------------------------------------------

    def register(self, day: date) -> None:
        p = self.person
        self.emit(
            JobseekerRegistered,
            JobseekerRegisteredPayload(
                personal_identity_code=p.identity_code,
                first_name=p.first_name,
                last_name=p.last_name,
                email=p.email,
                phone=p.phone if self.rng.random() < 0.9 else None,
                job_search_started_on=day,
                registration_channel=self.channel(0.15),
                labour_market_status=p.status,
                age_at_registration=p.age,
                unemployment_fund_code=p.fund_code,
                reduced_work_ability=p.reduced_work_ability,
            ),
            day,
        )
        deadline = initial_interview_deadline(day)
        if self.rng.random() < 0.85:
            span = max(1, (deadline - day).days)
            held = self.working_day_on_or_after(day + timedelta(days=self.rng.randint(1, span)))
            held = min(held, deadline)
        else:
            held = add_working_days(deadline, self.rng.randint(1, 8))
        self.at(held, lambda d: self.interview(d, day, deadline))
        if p.status in BENEFIT_SEEKERS and self.rng.random() < 0.85:
            self.choose_payer()
            self.at(day + timedelta(days=self.rng.randint(1, 10)), self.statement_requested)
        # Days accrued in earlier spells, so that every municipal-share band occurs.
        self.accrued_before = self.rng.choice([0, 0, 0, 40, 95, 150, 260, 330, 420, 690])

    def choose_payer(self) -> None:
        if self.person.fund_code and self.person.status != LabourMarketStatus.PART_TIME_EMPLOYED:
            self.payer = Payer(kind=PayerKind.UNEMPLOYMENT_FUND, fund_code=self.person.fund_code)
            self.benefit = BenefitType.EARNINGS_RELATED_ALLOWANCE
        else:
            self.payer = Payer(kind=PayerKind.KELA)
            self.benefit = self.rng.choices(
                [BenefitType.LABOUR_MARKET_SUBSIDY, BenefitType.BASIC_DAILY_ALLOWANCE], [7, 3]
            )[0]

    def payer_on(self, day: date) -> Payer:
        """The payer on *day*: a fund that has merged away by then is replaced by its successor."""
        assert self.payer is not None
        code = self.payer.fund_code
        if self.payer.kind == PayerKind.KELA or code is None:
            return self.payer
        found = fund(code)
        while not found.is_valid_on(day) and found.successor_code is not None:
            found = fund(found.successor_code)
        return (
            self.payer if found.code == code else Payer(kind=self.payer.kind, fund_code=found.code)
        )

    def payer_source(self, day: date) -> str:
        payer = self.payer_on(day)
        if payer.kind == PayerKind.KELA or payer.fund_code is None:
            return KELA_SOURCE
        return fund_source(payer.fund_code)

    def interview(self, day: date, started_on: date, deadline: date) -> None:
        if self.ended:
            return
        channel = self.channel(0.7)
        interview = self.emit(
            InitialInterviewHeld,
            InitialInterviewHeldPayload(
                job_search_started_on=started_on,
                held_on=day,
                deadline=deadline,
                within_deadline=day <= deadline,
                channel=channel,
                remote_for_weighty_reason=channel != Channel.FACE_TO_FACE,
                handled_by=self.case_worker,
            ),
            day,
        )
        if self.rng.random() < 0.9:
            self.agree_plan(day, interview, in_interview=True)
        else:
            later = add_working_days(day, self.rng.randint(2, 7))
            self.at(later, lambda d: self.supplementary_plan(d))
        self.schedule_conversations(day, started_on)

    def supplementary_plan(self, day: date) -> None:
        if self.ended:
            return
        conversation = self.conversation(day, ConversationType.SUPPLEMENTARY)
        if conversation is not None:
            self.agree_plan(day, conversation, in_interview=False)

    def agree_plan(self, day: date, cause: CustomerPathEvent, in_interview: bool) -> None:
        rule = job_search_obligation_table().on(day)
        reduction: ObligationReduction | None = None
        obligation = rule.default_per_month
        if self.person.status in (
            LabourMarketStatus.LAID_OFF,
            LabourMarketStatus.PART_TIME_EMPLOYED,
        ):
            obligation, reduction = (
                self.rng.randint(0, 2),
                (
                    ObligationReduction.LAYOFF
                    if self.person.status == LabourMarketStatus.LAID_OFF
                    else ObligationReduction.PART_TIME_WORK
                ),
            )
        elif self.rng.random() < 0.15:
            obligation = self.rng.randint(rule.minimum_per_month, rule.default_per_month - 1)
            reduction = self.rng.choice(list(ObligationReduction))
        self.obligation = obligation
        plan_type = PlanType.EMPLOYMENT_PLAN
        if self.person.status == LabourMarketStatus.OUTSIDE_LABOUR_FORCE:
            plan_type = self.rng.choice([PlanType.ACTIVATION_PLAN, PlanType.MULTI_SECTORAL_PLAN])
        elif self.rng.random() < 0.08:
            plan_type = PlanType.INTEGRATION_PLAN
        self.plan = self.emit(
            EmploymentPlanAgreed,
            EmploymentPlanAgreedPayload(
                plan_id=_uuid(self.rng),
                plan_type=plan_type,
                agreed_on=day,
                valid_until=day + timedelta(days=180) if self.rng.random() < 0.5 else None,
                job_search_obligation_per_month=obligation,
                obligation_reduction=reduction,
                reporting_period_months=self.rng.choice([1, 1, 3]),
                agreed_in_initial_interview=in_interview,
                handled_by=self.case_worker,
            ),
            day,
            caused_by=cause,
        )
        if self.rng.random() < 0.35:
            self.at(day + timedelta(days=self.rng.randint(10, 60)), self.enrol)

    def schedule_conversations(self, interview_day: date, started_on: date) -> None:
        cadence = conversation_cadence_table().on(started_on)
        days: list[tuple[date, ConversationType]] = []
        if cadence.intensified_interval_days:
            intensified_until = interview_day + timedelta(
                days=30 * cadence.intensified_period_months
            )
            day = interview_day + timedelta(days=cadence.intensified_interval_days)
            while day <= intensified_until:
                days.append((day, ConversationType.INTENSIFIED))
                day += timedelta(days=cadence.intensified_interval_days)
        if cadence.additional_period_after_months:
            first = interview_day + timedelta(days=30 * cadence.additional_period_after_months)
            for n in range(cadence.additional_period_conversations):
                days.append((first + timedelta(days=14 * n), ConversationType.ADDITIONAL_PERIOD))
        follow_up = interview_day
        for _ in range(4):
            follow_up += timedelta(days=30 * cadence.follow_up_interval_months)
            days.append((follow_up, ConversationType.FOLLOW_UP))
        for day, kind in sorted(days):
            if self.rng.random() < 0.92:  # some conversations are missed and not rebooked
                self.at(self.working_day_on_or_after(day), self.conversation_action(kind))

    def conversation_action(self, kind: ConversationType) -> Action:
        def hold(day: date) -> None:
            self.conversation(day, kind)

        return hold

    def conversation(self, day: date, kind: ConversationType) -> CustomerPathEvent | None:
        if self.ended:
            return None
        return self.emit(
            JobSearchConversationHeld,
            JobSearchConversationHeldPayload(
                conversation_type=kind,
                held_on=day,
                channel=self.channel(0.5),
                handled_by=self.case_worker,
            ),
            day,
        )

    # --- statements and payer feedback ----------------------------------------------------

    def statement_requested(self, day: date) -> None:
        assert self.payer is not None
        assert self.benefit is not None
        request = self.emit(
            StatementRequested,
            StatementRequestedPayload(
                request_id=_uuid(self.rng),
                payer=self.payer_on(day),
                benefit=self.benefit,
                reason=StatementRequestReason.NEW_APPLICATION,
                requested_on=day,
                personal_identity_code=self.person.identity_code,
            ),
            day,
            source=self.payer_source(day),
        )
        slow = self.rng.random() < 0.1
        issue_on = add_working_days(
            day, self.rng.randint(8, 20) if slow else self.rng.randint(1, 6)
        )
        self.at(issue_on, lambda d: self.issue_statement(d, request))

    def issue_statement(self, day: date, request: CustomerPathEvent) -> None:
        assert self.payer is not None
        assert self.benefit is not None
        assert isinstance(request.payload, StatementRequestedPayload)
        outcome = self.rng.choices(list(StatementOutcome), [85, 8, 3, 4])[0]
        sanction = self.rng.choice([7, 14]) if outcome == StatementOutcome.SANCTION_PERIOD else None
        effective_from = request.payload.requested_on
        self.statement = self.emit(
            LabourPolicyStatementIssued,
            LabourPolicyStatementIssuedPayload(
                statement_id=_uuid(self.rng),
                request_id=request.payload.request_id,
                payer=self.payer_on(day),
                benefit=self.benefit,
                outcome=outcome,
                effective_from=effective_from,
                sanction_days=sanction,
                issued_on=day,
                personal_identity_code=self.person.identity_code,
                handled_by=self.case_worker,
            ),
            day,
            caused_by=request,
        )
        if outcome in (StatementOutcome.NO_OBSTACLE, StatementOutcome.SANCTION_PERIOD):
            first_paid = effective_from + timedelta(days=sanction or 0)
            self.schedule_accrual(first_paid, self.accrued_before)

    def schedule_accrual(self, period_start: date, accrued_before: int) -> None:
        period_end = _month_end(period_start)
        report_on = add_working_days(period_end, self.rng.randint(1, 5))
        self.at(report_on, lambda d: self.accrue(d, period_start, period_end, accrued_before))

    def accrue(self, day: date, period_start: date, period_end: date, accrued_before: int) -> None:
        assert self.payer is not None
        assert self.benefit is not None
        last_paid = min(period_end, self.ended_on) if self.ended_on else period_end
        if last_paid < period_start:
            return
        days_paid = _weekdays(period_start, last_paid)
        self.emit(
            BenefitDaysAccrued,
            BenefitDaysAccruedPayload(
                payer=self.payer_on(day),
                benefit=self.benefit,
                period_start=period_start,
                period_end=last_paid,
                days_paid=days_paid,
                accrued_days_total=accrued_before + days_paid,
                paying_municipality_code=self.person.municipality_code,
            ),
            day,
            source=self.payer_source(day),
            caused_by=self.statement,
        )
        if not self.ended:
            self.schedule_accrual(period_end + timedelta(days=1), accrued_before + days_paid)

    # --- services -------------------------------------------------------------------------

    def enrol(self, day: date) -> None:
        if self.ended:
            return
        day = self.working_day_on_or_after(day)
        p = self.person
        start = self.working_day_on_or_after(day + timedelta(days=self.rng.randint(7, 21)))
        end = start + timedelta(days=self.rng.randint(20, 120))
        provider = self.rng.choice(self.population.providers)
        enrolment = self.emit(
            ServiceEnrolled,
            ServiceEnrolledPayload(
                enrolment_id=_uuid(self.rng),
                service_type=self.rng.choices(list(ServiceType), [30, 25, 10, 15, 8, 4, 8])[0],
                provider_business_id=provider,
                planned_start=start,
                planned_end=end,
                participant_first_name=p.first_name,
                participant_last_name=p.last_name,
                participant_email=p.email,
                participant_phone=p.phone,
                handled_by=self.case_worker,
            ),
            day,
        )
        self.at(start, lambda d: self.participation(d, enrolment, ParticipationKind.START))
        if self.rng.random() < 0.2:
            absent = start + timedelta(days=self.rng.randint(1, (end - start).days - 1))
            self.at(absent, lambda d: self.participation(d, enrolment, ParticipationKind.ABSENCE))
        if self.rng.random() < 0.1:
            stop = start + timedelta(days=self.rng.randint(1, (end - start).days - 1))
            self.at(
                stop, lambda d: self.participation(d, enrolment, ParticipationKind.INTERRUPTION)
            )
        else:
            self.at(end, lambda d: self.participation(d, enrolment, ParticipationKind.COMPLETION))

    def participation(
        self, day: date, enrolment: CustomerPathEvent, kind: ParticipationKind
    ) -> None:
        assert isinstance(enrolment.payload, ServiceEnrolledPayload)
        if self.ended or self.interrupted:
            return
        if kind == ParticipationKind.INTERRUPTION:
            self.interrupted = True
        self.emit(
            ServiceParticipationReported,
            ServiceParticipationReportedPayload(
                enrolment_id=enrolment.payload.enrolment_id,
                provider_business_id=enrolment.payload.provider_business_id,
                kind=kind,
                reported_for=day,
                absence_days=self.rng.randint(1, 5) if kind == ParticipationKind.ABSENCE else None,
                interruption_reason=self.rng.choice(list(InterruptionReason))
                if kind == ParticipationKind.INTERRUPTION
                else None,
            ),
            day,
            source=provider_source(enrolment.payload.provider_business_id),
            caused_by=enrolment,
        )

    # --- offers, job start and other ends -------------------------------------------------

    def daily_chances(self, day: date) -> None:
        roll = self.rng.random()
        if roll < 0.025:
            self.offer(day)
        elif roll < 0.029:
            self.start_employment(day, offer=None)
        elif roll < 0.0305:
            reason = self.rng.choice(
                [
                    JobSearchEndReason.EDUCATION,
                    JobSearchEndReason.OUTSIDE_LABOUR_FORCE,
                    JobSearchEndReason.MOVED_OUT_OF_AREA,
                    JobSearchEndReason.NOT_RENEWED,
                ]
            )
            self.end(day, reason, caused_by=None)

    def offer(self, day: date) -> None:
        # 80% of workplaces are in the simulated area, 20% anywhere on the mainland; both picks
        # are weighted by municipality size.
        workplace = self.population.draw_municipality(self.rng, anywhere=self.rng.random() >= 0.8)
        offer = self.emit(
            JobOfferMade,
            JobOfferMadePayload(
                offer_id=_uuid(self.rng),
                vacancy_id=f"TMT-{self.rng.randrange(10**7):07d}",
                employer_business_id=self.rng.choice(self.population.employers),
                workplace_municipality_code=workplace,
                binding=self.obligation > 0,
                apply_by=day + timedelta(days=14),
                handled_by=self.case_worker,
            ),
            day,
        )
        self.at(
            day + timedelta(days=self.rng.randint(7, 21)), lambda d: self.offer_outcome(d, offer)
        )

    def offer_outcome(self, day: date, offer: CustomerPathEvent) -> None:
        assert isinstance(offer.payload, JobOfferMadePayload)
        if self.ended:
            return
        result = self.rng.choices(list(JobOfferResult), [30, 12, 38, 15, 5])[0]
        outcome = self.emit(
            JobOfferOutcomeRecorded,
            JobOfferOutcomeRecordedPayload(
                offer_id=offer.payload.offer_id, result=result, recorded_on=day
            ),
            day,
            caused_by=offer,
        )
        if result == JobOfferResult.HIRED:
            start = self.working_day_on_or_after(day + timedelta(days=self.rng.randint(3, 21)))
            self.at(start, lambda d: self.start_employment(d, offer=offer, cause=outcome))

    def start_employment(
        self,
        day: date,
        offer: CustomerPathEvent | None,
        cause: CustomerPathEvent | None = None,
    ) -> None:
        if self.ended:
            return
        employer = (
            offer.payload.employer_business_id
            if offer is not None and isinstance(offer.payload, JobOfferMadePayload)
            else self.rng.choice(self.population.employers)
        )
        workplace = (
            offer.payload.workplace_municipality_code
            if offer is not None and isinstance(offer.payload, JobOfferMadePayload)
            else self.person.municipality_code
        )
        started = self.emit(
            EmploymentStarted,
            EmploymentStartedPayload(
                started_on=day,
                employer_business_id=employer,
                employment_form=self.rng.choices(list(EmploymentForm), [30, 10, 30, 15, 10, 5])[0],
                workplace_municipality_code=workplace,
                job_offer_id=offer.payload.offer_id
                if offer is not None and isinstance(offer.payload, JobOfferMadePayload)
                else None,
                personal_identity_code=self.payer_identity_code(),
            ),
            day,
            caused_by=cause,
        )
        self.end(day, JobSearchEndReason.EMPLOYED, caused_by=started)

    def payer_identity_code(self) -> str | None:
        """The identity code for a payer paying the person; none when nobody pays them."""
        return self.person.identity_code if self.payer is not None else None

    def end(
        self, day: date, reason: JobSearchEndReason, caused_by: CustomerPathEvent | None
    ) -> None:
        self.emit(
            JobSearchEnded,
            JobSearchEndedPayload(
                ended_on=day, reason=reason, personal_identity_code=self.payer_identity_code()
            ),
            day,
            caused_by=caused_by,
        )
        self.ended = True
        self.ended_on = day
