"""The shared machinery of the indicators: the as-of views, the calendar, and one aggregation.

Every indicator module writes a *facts* query: one row per fact (or per person and day for a
state), with the columns

* ``day`` (DATE): the day the fact is about; it places the fact in a period, and it picks the
  regional centre the municipality belonged to;
* ``municipality_code``, ``employment_area_code``, ``team_code``, ``expert_id`` (VARCHAR, the
  last two NULL where the fact has no case worker);
* ``bd_<key>`` (VARCHAR) for each breakdown key of the call (``bd_channel`` for
  ``channel=PHONE``);
* whatever its measures read.

:meth:`Context.aggregate` places the facts in the periods, joins the dated levels and computes
each measure at every level with one ``GROUPING SETS`` query (a median cannot be summed up from
the municipalities, so each level is aggregated from the facts themselves).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import duckdb
import pyarrow as pa

from hub.reporting.indicators.period import Period
from hub.reporting.levels import COUNTRY_CODE, LEVEL_TABLE, register_levels
from hub.reporting.tables import FACT_TABLES, live_sql
from hub.rules import NoRuleInForce, initial_interview_deadline, is_working_day

OUTPUT_SCHEMA = pa.schema(
    [
        ("indicator", pa.string()),
        ("measure", pa.string()),
        ("level", pa.string()),
        ("code", pa.string()),
        ("period", pa.string()),
        ("breakdown", pa.string()),
        ("value", pa.float64()),
        ("n", pa.int64()),
        ("as_of", pa.string()),
    ]
)
"""One row per value; see the contract of :func:`hub.reporting.indicators.compute_indicators`."""

OUTPUT_TABLE = "ind_out"

_LEVEL_COLUMNS = {
    "country": "lv_country",
    "regional_centre": "lv_regional_centre",
    "region": "lv_region",
    "employment_area": "lv_employment_area",
    "municipality": "lv_municipality",
    "team": "lv_team",
    "expert": "lv_expert",
}

UNEMPLOYED_STATUSES = ("UNEMPLOYED", "LAID_OFF")
"""Registration statuses counted as unemployed jobseekers (the fully laid off are unemployed in
the employment statistics, työ- ja elinkeinoministeriön työnvälitystilasto)."""


ACTIVE_SPELLS = """
SELECT d.day, s.*
FROM ind_eval_days d JOIN ind_spell s
  ON s.started_on <= d.day AND (s.ended_on IS NULL OR s.ended_on >= d.day)
"""
"""The spells active on each evaluation day: started on or before it, not ended before it
(``ended_on`` is the last day of job search, so a spell is still active on it)."""


def weighted_count(condition: str) -> str:
    """How many rows meet ``condition``, as a sum of ``weight`` (0, not NULL, for none)."""
    return f"coalesce(sum(weight) FILTER (WHERE {condition}), 0)"


def weighted_share(condition: str) -> str:
    """Per cent of the rows meeting ``condition`` (NULL when there are none)."""
    return f"100.0 * {weighted_count(condition)} / nullif(sum(weight), 0)"


@dataclass(frozen=True)
class Measure:
    """One figure of an indicator: SQL aggregates for its value and its ``n``."""

    name: str
    value: str
    n: str
    where: str = "TRUE"
    """A condition on ``breakdown`` (e.g. ``breakdown <> ''``) for measures of some rows only."""


@dataclass(frozen=True)
class Indicator:
    name: str
    description: str
    """One line: what it counts, its rule and its source (shown in ``INDICATORS``)."""
    levels: tuple[str, ...]
    compute: Callable[[Context], None]


def _as_of(as_of: datetime | date | None) -> tuple[str, str]:
    """The TIMESTAMP literal (UTC, naive) knowledge is cut at, and the label of the output.

    None: everything recorded (``'now'``). A datetime: recorded at or before it (naive = UTC).
    A date: recorded by the end of that day (UTC).
    """
    if as_of is None:
        return "TIMESTAMP '9999-12-31 23:59:59.999'", "now"
    if isinstance(as_of, datetime):
        if as_of.tzinfo is not None:
            as_of = as_of.astimezone(UTC).replace(tzinfo=None)
        return f"TIMESTAMP '{as_of.isoformat(sep=' ')}'", as_of.isoformat()
    end = datetime.combine(as_of, datetime.max.time())
    return f"TIMESTAMP '{end.isoformat(sep=' ')}'", as_of.isoformat()


class Context:
    """A computation on its own cursor: temporary views of the live facts as of one time."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        periods: Sequence[Period],
        as_of: datetime | date | None,
    ) -> None:
        self.cur = con.cursor()
        self.periods = tuple(sorted(set(periods)))
        self.as_of_sql, self.as_of_label = _as_of(as_of)
        for table in FACT_TABLES:
            self.cur.execute(
                f"CREATE OR REPLACE TEMP VIEW live_{table.name} AS "
                f"{live_sql(table.name, self.as_of_sql)}"
            )
        register_levels(self.cur)
        self._register_periods()
        self._register_calendar()
        self._register_spells()
        self.cur.execute(
            f"CREATE OR REPLACE TEMP TABLE {OUTPUT_TABLE} ("
            + ", ".join(f"{field.name} {_sql_type(field.type)}" for field in OUTPUT_SCHEMA)
            + ")"
        )

    def close(self) -> None:
        self.cur.close()

    # --- setup -------------------------------------------------------------------------------

    def _register_periods(self) -> None:
        table = pa.table(
            {
                "period": [str(p) for p in self.periods],
                "kind": [p.kind for p in self.periods],
                "start_day": pa.array([p.start for p in self.periods], pa.date32()),
                "end_day": pa.array([p.end for p in self.periods], pa.date32()),
                "eval_day": pa.array([p.evaluation_day for p in self.periods], pa.date32()),
            }
        )
        self.cur.register("ind_periods_arrow", table)
        self.cur.execute("CREATE OR REPLACE TEMP TABLE ind_periods AS FROM ind_periods_arrow")
        self.cur.unregister("ind_periods_arrow")
        self.cur.execute(
            "CREATE OR REPLACE TEMP TABLE ind_eval_days AS "
            "SELECT DISTINCT eval_day AS day FROM ind_periods"
        )

    def _register_calendar(self) -> None:
        """``ind_calendar``: every day the facts and periods touch, with its working-day number
        (working days up to and including it) and the initial-interview deadline of a job search
        started on it (NULL before the first rule in force)."""
        found = self.cur.execute(
            "SELECT min(d), max(d) FROM ("
            "SELECT job_search_started_on AS d FROM spells UNION ALL "
            "SELECT job_search_started_on FROM interviews UNION ALL "
            "SELECT held_on FROM interviews)"
        ).fetchall()[0]
        days = [p.start for p in self.periods] + [p.end for p in self.periods]
        days += [d for d in found if d is not None]
        low = min(days, default=date(2025, 1, 1)) - timedelta(days=1)
        high = max(days, default=date(2025, 1, 1)) + timedelta(days=1)
        calendar_days: list[date] = []
        working: list[bool] = []
        numbers: list[int] = []
        deadlines: list[date | None] = []
        number = 0
        day = low
        while day <= high:
            is_working = is_working_day(day)
            number += is_working
            calendar_days.append(day)
            working.append(is_working)
            numbers.append(number)
            try:
                deadlines.append(initial_interview_deadline(day))
            except NoRuleInForce:
                deadlines.append(None)
            day += timedelta(days=1)
        table = pa.table(
            {
                "day": pa.array(calendar_days, pa.date32()),
                "working": working,
                "working_day_number": pa.array(numbers, pa.int32()),
                "interview_deadline": pa.array(deadlines, pa.date32()),
            }
        )
        self.cur.register("ind_calendar_arrow", table)
        self.cur.execute("CREATE OR REPLACE TEMP TABLE ind_calendar AS FROM ind_calendar_arrow")
        self.cur.unregister("ind_calendar_arrow")

    def _register_spells(self) -> None:
        """``ind_spell``: one row per job-search spell (correlation id) known as of the time,
        from its registration (the earliest if several), with its end if one is recorded; and
        ``ind_population``: each person's state on each evaluation day, ``service`` (in a
        service that day) before ``unemployed`` (an active spell registered as unemployed or
        laid off, no job start in the spell by that day)."""
        self.cur.execute(
            """
            CREATE OR REPLACE TEMP TABLE ind_spell AS
            WITH registration AS (
                SELECT correlation_id, subject, job_search_started_on AS started_on,
                       labour_market_status AS status, age_at_registration,
                       municipality_code, employment_area_code
                FROM live_spells
                QUALIFY row_number() OVER (
                    PARTITION BY correlation_id ORDER BY job_search_started_on, event_id) = 1
            ), ending AS (
                SELECT correlation_id, ended_on, reason FROM live_spell_ends
                QUALIFY row_number() OVER (
                    PARTITION BY correlation_id ORDER BY ended_on, event_id) = 1
            )
            SELECT registration.*, ending.ended_on, ending.reason
            FROM registration LEFT JOIN ending USING (correlation_id)
            """
        )
        statuses = ", ".join(f"'{s}'" for s in UNEMPLOYED_STATUSES)
        self.cur.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE ind_population AS
            WITH enrolment AS (
                SELECT * FROM live_enrolments
                QUALIFY row_number() OVER (
                    PARTITION BY enrolment_id ORDER BY recorded_at, event_id) = 1
            ), reported AS (
                SELECT enrolment_id,
                       min(reported_for) FILTER (WHERE kind = 'START') AS started,
                       min(reported_for) FILTER (WHERE kind = 'INTERRUPTION') AS interrupted,
                       min(reported_for) FILTER (WHERE kind = 'COMPLETION') AS completed
                FROM live_participation GROUP BY enrolment_id
            ), in_service AS (
                SELECT e.subject, e.correlation_id, e.municipality_code, e.employment_area_code,
                       coalesce(r.started, e.planned_start) AS first_day,
                       least(e.planned_end, r.interrupted - 1, r.completed) AS last_day
                FROM enrolment e LEFT JOIN reported r USING (enrolment_id)
            ), states AS (
                SELECT d.day, s.subject, 1 AS priority, 'service' AS state,
                       NULL::DATE AS started_on, s.municipality_code, s.employment_area_code
                FROM ind_eval_days d JOIN in_service s
                  ON d.day BETWEEN s.first_day AND s.last_day
                UNION ALL
                SELECT d.day, s.subject, 2, 'unemployed', s.started_on,
                       s.municipality_code, s.employment_area_code
                FROM ind_eval_days d JOIN ind_spell s
                  ON s.started_on <= d.day AND (s.ended_on IS NULL OR s.ended_on >= d.day)
                WHERE s.status IN ({statuses})
                  AND NOT EXISTS (
                      SELECT 1 FROM live_job_starts j
                      WHERE j.correlation_id = s.correlation_id AND j.started_on <= d.day)
            )
            SELECT * EXCLUDE (priority) FROM states
            QUALIFY row_number() OVER (
                PARTITION BY day, subject
                ORDER BY priority, started_on, municipality_code, employment_area_code) = 1
            """
        )

    # --- the aggregation ---------------------------------------------------------------------

    def aggregate(
        self,
        indicator: Indicator,
        facts_sql: str,
        measures: Sequence[Measure],
        *,
        breakdowns: Sequence[tuple[str, ...]] = ((),),
        point_in_time: bool = False,
        compress: Sequence[str] | None = None,
    ) -> None:
        """Insert the measures of ``facts_sql`` at the indicator's levels into the output.

        A flow fact counts in every period that contains its ``day``; a state row
        (``point_in_time``) only in the periods whose evaluation day it is. ``breakdowns``
        lists the key combinations to break down by, ``()`` being the total: key ``channel``
        reads the facts' column ``bd_channel`` and gives ``channel=PHONE``; several keys join
        with ``;`` in the order they first appear in ``breakdowns``. A fact whose key value is
        NULL does not count in that breakdown (it still counts in the total). Every
        (level, breakdown) pair is one grouping set: no fact row is copied.

        Each placed row has ``weight`` 1. With ``compress`` (the fact columns the measures
        read), rows equal in period, levels, breakdown keys and those columns are first folded
        into one whose ``weight`` counts them: measures written as sums of ``weight`` give the
        same figures from far fewer rows (a median or a DISTINCT cannot be compressed).
        """
        placed_on = (
            "f.day = p.eval_day" if point_in_time else "f.day BETWEEN p.start_day AND p.end_day"
        )
        columns = [_LEVEL_COLUMNS[level] for level in indicator.levels]
        keys = list(dict.fromkeys(key for combination in breakdowns for key in combination))
        sets = ", ".join(
            "(" + ", ".join(["period", column, *(f"bd_{key}" for key in combination)]) + ")"
            for column in columns
            for combination in breakdowns
        )
        level_case = " ".join(
            f"WHEN grouping({_LEVEL_COLUMNS[level]}) = 0 THEN '{level}'"
            for level in indicator.levels
        )
        breakdown = (
            "coalesce(concat_ws(';', "
            + ", ".join(
                f"CASE WHEN grouping(bd_{key}) = 0 THEN '{key}=' || bd_{key} END" for key in keys
            )
            + "), '')"
            if keys
            else "''"
        )
        missing = (
            " OR ".join(f"(grouping(bd_{key}) = 0 AND bd_{key} IS NULL)" for key in keys)
            if keys
            else "FALSE"
        )
        source = ""
        if compress is not None:
            kept = ", ".join(
                [
                    "period",
                    *_LEVEL_COLUMNS.values(),
                    *(f"bd_{key}" for key in keys),
                    *compress,
                ]
            )
            source = (
                f"compressed AS (SELECT {kept}, sum(weight) AS weight FROM placed GROUP BY {kept}),"
            )
        aggregates = ",\n".join(
            f"{m.value} AS m{i}_value, {m.n} AS m{i}_n" for i, m in enumerate(measures)
        )
        unpivot = "\nUNION ALL\n".join(
            f"SELECT '{indicator.name}', '{m.name}', level, code, period, breakdown, "
            f"CAST(m{i}_value AS DOUBLE), CAST(m{i}_n AS BIGINT), '{self.as_of_label}' "
            f"FROM grouped WHERE code IS NOT NULL AND NOT missing_key AND ({m.where})"
            for i, m in enumerate(measures)
        )
        self.cur.execute(
            f"""
            INSERT INTO {OUTPUT_TABLE}
            WITH facts AS ({facts_sql}),
            placed AS (
                SELECT p.period, f.*,
                       '{COUNTRY_CODE}' AS lv_country,
                       lv.regional_centre_code AS lv_regional_centre,
                       lv.region_code AS lv_region,
                       f.employment_area_code AS lv_employment_area,
                       f.municipality_code AS lv_municipality,
                       f.team_code AS lv_team,
                       f.expert_id AS lv_expert,
                       1 AS weight
                FROM facts f JOIN ind_periods p ON {placed_on}
                LEFT JOIN {LEVEL_TABLE} lv
                  ON lv.municipality_code = f.municipality_code
                 AND f.day BETWEEN lv.valid_from AND lv.valid_to
            ),
            {source}
            grouped AS MATERIALIZED (
                SELECT period,
                       {breakdown} AS breakdown,
                       {missing} AS missing_key,
                       CASE {level_case} END AS level,
                       coalesce({", ".join(columns)}) AS code,
                       {aggregates}
                FROM {"compressed" if compress is not None else "placed"}
                GROUP BY GROUPING SETS ({sets})
            )
            {unpivot}
            """
        )

    def result(self) -> pa.Table:
        reader = self.cur.sql(
            f"SELECT * FROM {OUTPUT_TABLE} "
            "ORDER BY indicator, measure, level, code, period, breakdown"
        ).arrow()
        return reader.read_all().cast(OUTPUT_SCHEMA)


def _sql_type(arrow_type: pa.DataType) -> str:
    if arrow_type == pa.float64():
        return "DOUBLE"
    if arrow_type == pa.int64():
        return "BIGINT"
    return "VARCHAR"
