"""The fact tables of the reporting store, as data: one table per event type.

Every row carries the event id, the fact id (the first version's event id: corrections share
it), whether the version retracts the fact, the person pseudonym, the spell (correlation id),
event time (``occurred_at``) and knowledge time (``recorded_at``), the home municipality and the
employment area. The other columns come from the reporting route's projection of the event, by
dotted path; a path the projection does not hold (a field without legal basis for reporting)
cannot be named here, and a test checks that (so no identity code, name, contact or health
value can reach a table).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str
    """DuckDB type: VARCHAR, DATE, TIMESTAMP (UTC), INTEGER, BOOLEAN."""
    path: str
    """Dotted path in the reporting projection of the event (``payload.held_on``)."""


@dataclass(frozen=True)
class FactTable:
    name: str
    event_type: str
    columns: tuple[Column, ...]
    """The columns after the common ones (:data:`COMMON_COLUMNS`)."""

    @property
    def all_columns(self) -> tuple[Column, ...]:
        return COMMON_COLUMNS + self.columns


def _c(name: str, sql_type: str, path: str | None = None) -> Column:
    return Column(name, sql_type, path or f"payload.{name}")


COMMON_COLUMNS: tuple[Column, ...] = (
    _c("event_id", "VARCHAR", "envelope.event_id"),
    # fact_id and retracted are derived from envelope.corrects_event_id / envelope.retracted.
    Column("fact_id", "VARCHAR", "envelope.corrects_event_id"),
    Column("retracted", "BOOLEAN", "envelope.retracted"),
    _c("subject", "VARCHAR", "envelope.subject"),
    _c("correlation_id", "VARCHAR", "envelope.correlation_id"),
    _c("occurred_at", "TIMESTAMP", "envelope.occurred_at"),
    _c("recorded_at", "TIMESTAMP", "envelope.recorded_at"),
    _c("municipality_code", "VARCHAR", "envelope.municipality_code"),
    _c("employment_area_code", "VARCHAR", "envelope.employment_area_code"),
)

_TEAM = (
    _c("team_code", "VARCHAR", "payload.handled_by.team_code"),
    _c("expert_id", "VARCHAR", "payload.handled_by.expert_id"),
)
_PAYER = (
    _c("payer_kind", "VARCHAR", "payload.payer.kind"),
    _c("fund_code", "VARCHAR", "payload.payer.fund_code"),
)

FACT_TABLES: tuple[FactTable, ...] = (
    FactTable(
        "spells",
        "JobseekerRegistered",
        (
            _c("job_search_started_on", "DATE"),
            _c("registration_channel", "VARCHAR"),
            _c("labour_market_status", "VARCHAR"),
            _c("age_at_registration", "INTEGER"),
            _c("unemployment_fund_code", "VARCHAR"),
        ),
    ),
    FactTable("spell_ends", "JobSearchEnded", (_c("ended_on", "DATE"), _c("reason", "VARCHAR"))),
    FactTable(
        "interviews",
        "InitialInterviewHeld",
        (
            _c("job_search_started_on", "DATE"),
            _c("held_on", "DATE"),
            _c("deadline", "DATE"),
            _c("within_deadline", "BOOLEAN"),
            _c("channel", "VARCHAR"),
            _c("remote_for_weighty_reason", "BOOLEAN"),
            *_TEAM,
        ),
    ),
    FactTable(
        "conversations",
        "JobSearchConversationHeld",
        (
            _c("conversation_type", "VARCHAR"),
            _c("held_on", "DATE"),
            _c("channel", "VARCHAR"),
            *_TEAM,
        ),
    ),
    FactTable(
        "plans",
        "EmploymentPlanAgreed",
        (
            _c("plan_id", "VARCHAR"),
            _c("plan_type", "VARCHAR"),
            _c("agreed_on", "DATE"),
            _c("valid_until", "DATE"),
            _c("job_search_obligation_per_month", "INTEGER"),
            _c("obligation_reduction", "VARCHAR"),
            _c("reporting_period_months", "INTEGER"),
            _c("agreed_in_initial_interview", "BOOLEAN"),
            *_TEAM,
        ),
    ),
    FactTable(
        "offers",
        "JobOfferMade",
        (
            _c("offer_id", "VARCHAR"),
            _c("vacancy_id", "VARCHAR"),
            _c("employer_business_id", "VARCHAR"),
            _c("workplace_municipality_code", "VARCHAR"),
            _c("binding", "BOOLEAN"),
            _c("apply_by", "DATE"),
            *_TEAM,
        ),
    ),
    FactTable(
        "offer_outcomes",
        "JobOfferOutcomeRecorded",
        (_c("offer_id", "VARCHAR"), _c("result", "VARCHAR"), _c("recorded_on", "DATE")),
    ),
    FactTable(
        "statement_requests",
        "StatementRequested",
        (
            _c("request_id", "VARCHAR"),
            *_PAYER,
            _c("benefit", "VARCHAR"),
            _c("reason", "VARCHAR"),
            _c("requested_on", "DATE"),
        ),
    ),
    FactTable(
        "statements",
        "LabourPolicyStatementIssued",
        (
            _c("statement_id", "VARCHAR"),
            _c("request_id", "VARCHAR"),
            *_PAYER,
            _c("benefit", "VARCHAR"),
            _c("outcome", "VARCHAR"),
            _c("effective_from", "DATE"),
            _c("sanction_days", "INTEGER"),
            _c("issued_on", "DATE"),
            *_TEAM,
        ),
    ),
    FactTable(
        "accruals",
        "BenefitDaysAccrued",
        (
            *_PAYER,
            _c("benefit", "VARCHAR"),
            _c("period_start", "DATE"),
            _c("period_end", "DATE"),
            _c("days_paid", "INTEGER"),
            _c("accrued_days_total", "INTEGER"),
            _c("paying_municipality_code", "VARCHAR"),
        ),
    ),
    FactTable(
        "enrolments",
        "ServiceEnrolled",
        (
            _c("enrolment_id", "VARCHAR"),
            _c("service_type", "VARCHAR"),
            _c("provider_business_id", "VARCHAR"),
            _c("planned_start", "DATE"),
            _c("planned_end", "DATE"),
            *_TEAM,
        ),
    ),
    FactTable(
        "participation",
        "ServiceParticipationReported",
        (
            _c("enrolment_id", "VARCHAR"),
            _c("provider_business_id", "VARCHAR"),
            _c("kind", "VARCHAR"),
            _c("reported_for", "DATE"),
            _c("absence_days", "INTEGER"),
        ),
    ),
    FactTable(
        "job_starts",
        "EmploymentStarted",
        (
            _c("started_on", "DATE"),
            _c("employer_business_id", "VARCHAR"),
            _c("employment_form", "VARCHAR"),
            _c("workplace_municipality_code", "VARCHAR"),
            _c("job_offer_id", "VARCHAR"),
        ),
    ),
)

TABLE_OF_TYPE: dict[str, FactTable] = {table.event_type: table for table in FACT_TABLES}
TABLES: dict[str, FactTable] = {table.name: table for table in FACT_TABLES}


STORE_COLUMNS: tuple[Column, ...] = (
    Column("corrects_event_id", "VARCHAR", "envelope.corrects_event_id"),
    Column("superseded_at", "TIMESTAMP", ""),
    Column("superseded_by", "VARCHAR", ""),
)
"""Columns the store keeps after the fact columns (not read from the event by path):
``corrects_event_id`` as the version named it (``fact_id`` is where its chain ends), and, per
version, the ``recorded_at`` and event id of the next version of the same fact in the order
(``recorded_at``, ``event_id``), NULL for the latest. The store maintains them after each load
(:mod:`hub.reporting.store`), so the facts as of a time are a filter (:func:`live_sql`)."""


def create_table_sql(table: FactTable) -> str:
    columns = ",\n  ".join(f"{c.name} {c.sql_type}" for c in table.all_columns + STORE_COLUMNS)
    return f"CREATE TABLE IF NOT EXISTS {table.name} (\n  {columns}\n)"


def live_sql(table: str, as_of: str = "$as_of") -> str:
    """The facts of ``table`` as known at ``as_of`` (a TIMESTAMP expression, UTC).

    A fact's versions share its fact id; the version recorded last by ``as_of`` wins (a tie:
    the greater event id), and a winning version that retracts the fact removes it. The store
    keeps, per version, when the next version in that order was recorded (``superseded_at``),
    so the winner is the version recorded by ``as_of`` and not yet superseded then: a filter,
    no window. A tie is exact: the version a tie beats has ``superseded_at`` equal to its own
    ``recorded_at``, never later than an ``as_of`` it is visible at. Versions the store refused
    (another person's or type's fact, a cycle, an unknown target) are not in the fact tables.
    """
    return (
        f"SELECT * FROM {TABLES[table].name} WHERE recorded_at <= {as_of} "
        f"AND (superseded_at IS NULL OR superseded_at > {as_of}) AND NOT retracted"
    )


def live_window_sql(table: str, as_of: str = "$as_of") -> str:
    """:func:`live_sql` the old way, a window over every version (the rule as written; the
    tests check the filter against it)."""
    return (
        f"SELECT * EXCLUDE (version_rank) FROM ("
        f"SELECT *, row_number() OVER (PARTITION BY fact_id "
        f"ORDER BY recorded_at DESC, event_id DESC) AS version_rank "
        f"FROM {TABLES[table].name} WHERE recorded_at <= {as_of}"
        f") WHERE version_rank = 1 AND NOT retracted"
    )
