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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Final
from zoneinfo import ZoneInfo

import duckdb
import pyarrow as pa

from hub.reporting.indicators.period import Period
from hub.reporting.levels import COUNTRY_CODE, LEVEL_TABLE, register_levels
from hub.reporting.tables import FACT_TABLES, live_sql
from hub.rules import NoRuleInForce, initial_interview_deadline, is_working_day
from hub.rules.activation import activation_service_types_table

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


ACTIVE_SPELLS = "SELECT * FROM ind_active"
"""The spells active on each evaluation day (``ind_active``: ``day`` and the columns of
``ind_spell``): started on or before it, not ended before it (``ended_on`` is the last day of
job search, so a spell is still active on it)."""

FINLAND: Final = ZoneInfo("Europe/Helsinki")

PERSON_KEY: Final = "hash(subject)"
"""How a distinct count tells people apart: a 64-bit hash of the pseudonym, which hashes and
compares faster than the 32-character text. Two of n people share a hash with a probability
of about n² / 2⁶⁵ (4·10⁻⁹ for the 400,000 jobseekers of a national year), so the count is
exact but for that chance of being one too low."""

_OPEN_TO: Final = date(9999, 12, 31)


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
    distinct: str | None = None
    """An expression over the facts whose distinct non-NULL values the measure counts
    (``value`` is then ignored; ``n`` is an aggregate as usual, or ``''`` for the same count):
    worked out once per placed row, then one plain GROUP BY per grouping set, several times
    cheaper than ``count(DISTINCT …)`` over GROUPING SETS. People are counted by
    :data:`PERSON_KEY`."""


@dataclass(frozen=True)
class Indicator:
    name: str
    description: str
    """One line: what it counts, its rule and its source (shown in ``INDICATORS``)."""
    levels: tuple[str, ...]
    compute: Callable[[Context], None]


def _as_of(as_of: datetime | date | None) -> tuple[str, str]:
    """The TIMESTAMP literal (UTC, naive) knowledge is cut at, and the label of the output.

    None: everything recorded (``'now'``). A datetime: recorded at or before it, taken as given
    (an offset is honoured; naive = UTC). A date: recorded by the end of that day *in Finland*
    (23:59:59.999999 Europe/Helsinki, i.e. before the next midnight there, as UTC: 21:59:59.999999
    in winter, 20:59:59.999999 in summer), so ``--as-of 2026-02-05`` does not see a record made
    at 00:30 on 6.2 Finnish time (22:30 UTC on 5.2).
    """
    if as_of is None:
        return "TIMESTAMP '9999-12-31 23:59:59.999'", "now"
    if isinstance(as_of, datetime):
        if as_of.tzinfo is not None:
            as_of = as_of.astimezone(UTC).replace(tzinfo=None)
        return f"TIMESTAMP '{as_of.isoformat(sep=' ')}'", as_of.isoformat()
    end = datetime.combine(as_of, time.max, FINLAND).astimezone(UTC).replace(tzinfo=None)
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
        self._tables: set[str] = set()
        self.periods = tuple(sorted(set(periods)))
        self.as_of_sql, self.as_of_label = _as_of(as_of)
        for table in FACT_TABLES:
            self._register_live(table.name)
        register_levels(self.cur)
        self._register_periods()
        self._register_calendar()
        self._register_activation_types()
        self._register_spells()
        self._register_services()
        self._register_population()
        self.cur.execute(
            f"CREATE OR REPLACE TEMP TABLE {OUTPUT_TABLE} ("
            + ", ".join(f"{field.name} {_sql_type(field.type)}" for field in OUTPUT_SCHEMA)
            + ")"
        )

    def close(self) -> None:
        self.cur.close()

    def table(self, name: str, sql: str) -> str:
        """A temporary table ``name`` of ``sql``, made on the first call only (for facts two
        indicators read, e.g. each spell's plan in force); its name."""
        if name not in self._tables:
            self.cur.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS {sql}")
            self._tables.add(name)
        return name

    # --- setup -------------------------------------------------------------------------------

    def _register_live(self, table: str) -> None:
        """``live_<table>``: a view of the facts as known at the as-of time
        (:func:`hub.reporting.tables.live_sql`): the store keeps on each version when the next
        version of the fact was recorded (``superseded_at``), so the winner is a filter, no
        window and no temporary table."""
        self.cur.execute(
            f"CREATE OR REPLACE TEMP VIEW live_{table} AS {live_sql(table, self.as_of_sql)}"
        )

    def _register_activation_types(self) -> None:
        """``ind_activation_types``: the service types that count as "in services" and the
        dates they do (``hub/rules/data/activation_service_types.csv``)."""
        rows = [
            (period.valid_from, period.valid_to or _OPEN_TO, str(service_type))
            for period in activation_service_types_table().periods
            for service_type in sorted(period.value)
        ]
        self.cur.register(
            "ind_activation_types_arrow",
            pa.table(
                {
                    "valid_from": pa.array([r[0] for r in rows], pa.date32()),
                    "valid_to": pa.array([r[1] for r in rows], pa.date32()),
                    "service_type": [r[2] for r in rows],
                }
            ),
        )
        self.cur.execute(
            "CREATE OR REPLACE TEMP TABLE ind_activation_types AS FROM ind_activation_types_arrow"
        )
        self.cur.unregister("ind_activation_types_arrow")

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
        ``ind_active``: the spells active on each evaluation day; ``ind_spell_end``: the end of
        each spell (the earliest recorded, with the municipality and area of its event)."""
        self.cur.execute(
            """
            CREATE OR REPLACE TEMP TABLE ind_spell_end AS
            SELECT correlation_id, ended_on, unnest(r) FROM (
                SELECT correlation_id, min(ended_on) AS ended_on,
                       arg_min_null({
                           'reason': reason, 'municipality_code': municipality_code,
                           'employment_area_code': employment_area_code
                       }, (ended_on, event_id)) AS r
                FROM live_spell_ends GROUP BY correlation_id
            )
            """
        )
        self.cur.execute(
            """
            CREATE OR REPLACE TEMP TABLE ind_spell AS
            WITH registration AS (
                SELECT correlation_id, min(job_search_started_on) AS started_on,
                       arg_min_null({
                           'subject': subject, 'status': labour_market_status,
                           'age': age_at_registration, 'municipality': municipality_code,
                           'area': employment_area_code
                       }, (job_search_started_on, event_id)) AS r
                FROM live_spells GROUP BY correlation_id
            )
            SELECT correlation_id, r.subject, started_on, r.status,
                   r.age AS age_at_registration, r.municipality AS municipality_code,
                   r.area AS employment_area_code, ending.ended_on, ending.reason
            FROM registration LEFT JOIN ind_spell_end ending USING (correlation_id)
            """
        )
        self.cur.execute(
            """
            CREATE OR REPLACE TEMP TABLE ind_active AS
            SELECT d.day, s.*
            FROM ind_eval_days d JOIN ind_spell s
              ON s.started_on <= d.day AND (s.ended_on IS NULL OR s.ended_on >= d.day)
            """
        )

    def _register_services(self) -> None:
        """``ind_service``: one row per period of participation in a service.

        Participation is intervals: each ``START`` report begins one, which lasts until the
        next ``INTERRUPTION`` (its day is out: the period ends the day before) or ``COMPLETION``
        (its day is in), and never past the enrolment's ``planned_end``. A ``START`` after an
        interruption begins a new period. The enrolment's ``planned_start`` counts as a
        ``START`` when no ``START`` report is dated on or before the first interruption or
        completion (a provider that reports only the end). Reports of one day are read in the
        order interruption, start, completion: an interruption and a restart on the same day
        keep the person in, a start and a completion on one day make a one-day period.
        ``ABSENCE`` reports do not end a period. The first recorded enrolment of an
        ``enrolment_id`` holds.
        """
        self.cur.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE ind_service AS
            WITH first_enrolment AS (
                SELECT enrolment_id,
                       arg_min_null({{
                           'subject': subject, 'correlation_id': correlation_id,
                           'municipality_code': municipality_code,
                           'employment_area_code': employment_area_code,
                           'service_type': service_type, 'planned_start': planned_start,
                           'planned_end': planned_end
                       }}, (recorded_at, event_id)) AS r
                FROM live_enrolments GROUP BY enrolment_id
            ), enrolment AS (
                SELECT enrolment_id, unnest(r) FROM first_enrolment
            ), report AS (
                SELECT enrolment_id, reported_for AS day, event_id,
                       CASE kind WHEN 'INTERRUPTION' THEN 0 WHEN 'START' THEN 1 ELSE 2 END
                           AS rank
                FROM live_participation WHERE kind IN ('START', 'INTERRUPTION', 'COMPLETION')
            ), first_report AS (
                SELECT enrolment_id,
                       min(day) FILTER (WHERE rank = 1) AS first_start,
                       min(day) FILTER (WHERE rank <> 1) AS first_stop
                FROM report GROUP BY enrolment_id
            ), mark AS (
                SELECT enrolment_id, day, rank, event_id FROM report
                UNION ALL
                SELECT e.enrolment_id, e.planned_start, 1, ''
                FROM enrolment e LEFT JOIN first_report f USING (enrolment_id)
                WHERE NOT coalesce(f.first_start <= coalesce(f.first_stop, DATE '{_OPEN_TO}'),
                                   FALSE)
            ), period AS (
                SELECT enrolment_id, rank, day AS first_day,
                       min(CASE rank WHEN 0 THEN day - 1 WHEN 2 THEN day END) OVER (
                           PARTITION BY enrolment_id ORDER BY day, rank, event_id
                           ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING) AS stop_day
                FROM mark
            )
            SELECT e.enrolment_id, e.subject, e.correlation_id, e.municipality_code,
                   e.employment_area_code, e.service_type, p.first_day,
                   least(e.planned_end, p.stop_day) AS last_day
            FROM period p JOIN enrolment e USING (enrolment_id)
            WHERE p.rank = 1 AND least(e.planned_end, p.stop_day) >= p.first_day
            """
        )

    def _register_population(self) -> None:
        """``ind_population``: each person's state on each evaluation day, counted once.

        * ``service``: a jobseeker (an active job-search spell on the day, any labour-market
          status) in a period of a service that counts on the day
          (``ind_activation_types``); a person in a service without an active spell is no
          jobseeker and counts nowhere;
        * ``unemployed``, if not in a service: an active spell registered unemployed or laid
          off, with no job start in the spell on or before the day (``EmploymentStarted`` has
          no end, so a job start removes the person from the unemployed for the rest of the
          spell); ``unemployed_since`` is when the continuous unemployment began: the later of
          the spell's start and the day after the person's last period in a counting service
          that ended inside the spell before the day.
        """
        statuses = ", ".join(f"'{s}'" for s in UNEMPLOYED_STATUSES)
        self.cur.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE ind_population AS
            WITH counted AS (
                SELECT d.day, v.subject, v.first_day, v.last_day,
                       v.municipality_code, v.employment_area_code
                FROM ind_eval_days d
                JOIN ind_service v ON v.first_day <= d.day
                JOIN ind_activation_types t
                  ON t.service_type = v.service_type AND d.day BETWEEN t.valid_from AND t.valid_to
            ), jobseeker AS (
                SELECT DISTINCT day, subject FROM ind_active
            ), serving AS (
                SELECT c.day, c.subject, c.municipality_code, c.employment_area_code
                FROM counted c SEMI JOIN jobseeker j USING (day, subject)
                WHERE c.last_day >= c.day
                QUALIFY row_number() OVER (
                    PARTITION BY c.day, c.subject
                    ORDER BY c.municipality_code, c.employment_area_code, c.first_day) = 1
            ), job_start AS (
                SELECT correlation_id, min(started_on) AS started_on
                FROM live_job_starts GROUP BY correlation_id
            ), unemployed AS (
                SELECT a.day, a.subject, a.correlation_id, a.started_on,
                       a.municipality_code, a.employment_area_code
                FROM ind_active a
                LEFT JOIN job_start j USING (correlation_id)
                WHERE a.status IN ({statuses})
                  AND (j.started_on IS NULL OR j.started_on > a.day)
                  AND NOT EXISTS (
                      SELECT 1 FROM serving s WHERE s.day = a.day AND s.subject = a.subject)
                QUALIFY row_number() OVER (
                    PARTITION BY a.day, a.subject
                    ORDER BY a.started_on, a.municipality_code, a.employment_area_code,
                             a.correlation_id) = 1
            ), service_break AS (
                SELECT u.day, u.subject, max(c.last_day) + 1 AS after_service
                FROM unemployed u JOIN counted c
                  ON c.day = u.day AND c.subject = u.subject
                 AND c.last_day >= u.started_on AND c.last_day < u.day
                GROUP BY u.day, u.subject
            )
            SELECT day, subject, 'service' AS state, NULL::DATE AS started_on,
                   NULL::DATE AS unemployed_since, municipality_code, employment_area_code
            FROM serving
            UNION ALL
            SELECT u.day, u.subject, 'unemployed', u.started_on,
                   greatest(u.started_on, b.after_service), u.municipality_code,
                   u.employment_area_code
            FROM unemployed u LEFT JOIN service_break b USING (day, subject)
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
        folded: Mapping[str, str] | None = None,
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
        ``folded`` (with ``compress``) names further columns of the folded rows and the
        aggregate that makes each (``{"days": "sum(days)"}``): a folded row is one line of the
        finest level and breakdown (e.g. an invoice line to round once).
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
            extra = "".join(f", {sql} AS {name}" for name, sql in (folded or {}).items())
            source = (
                f"compressed AS (SELECT {kept}, sum(weight) AS weight{extra} "
                f"FROM placed GROUP BY {kept}),"
            )
        counted = [m for m in measures if m.distinct is not None]
        measures = [m for m in measures if m.distinct is None]
        shared = bool(counted and measures)
        if shared:
            # Both kinds read the facts: work them out once.
            self.cur.execute(f"CREATE OR REPLACE TEMP TABLE ind_facts AS {facts_sql}")
            facts_sql = "SELECT * FROM ind_facts"
        aggregates = ",\n".join(
            f"{m.value} AS m{i}_value, {m.n} AS m{i}_n" for i, m in enumerate(measures)
        )
        unpivot = "\nUNION ALL\n".join(
            f"SELECT '{indicator.name}', '{m.name}', level, code, period, breakdown, "
            f"CAST(m{i}_value AS DOUBLE), CAST(m{i}_n AS BIGINT), '{self.as_of_label}' "
            f"FROM grouped WHERE code IS NOT NULL AND NOT missing_key AND ({m.where})"
            for i, m in enumerate(measures)
        )
        placed = f"""
            facts AS ({facts_sql}),
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
            )"""
        if measures:
            self.cur.execute(
                f"""
                INSERT INTO {OUTPUT_TABLE}
                WITH {placed},
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
        if counted:
            # A count of distinct values per grouping set: one plain GROUP BY per set over the
            # placed rows (worked out once), many times cheaper than count(DISTINCT) over
            # GROUPING SETS, whose per-set hash tables of distinct values dominate the time.
            # A value held by one placed row of its period only (most people have one fact a
            # month) counts 1 in every set the row is in, with nothing to deduplicate: only
            # the values on several rows go through the DISTINCT.
            values = ", ".join(f"{m.distinct} AS distinct_{i}" for i, m in enumerate(counted))
            multi = "".join(
                f", multi_{i} AS (SELECT period, distinct_{i} FROM base "
                f"GROUP BY period, distinct_{i} HAVING count(*) > 1)"
                for i in range(len(counted))
            )
            single = ", ".join(
                f"multi_{i}.distinct_{i} IS NULL AND base.distinct_{i} IS NOT NULL AS single_{i}"
                for i in range(len(counted))
            )
            joins = " ".join(
                f"LEFT JOIN multi_{i} ON multi_{i}.period = base.period "
                f"AND multi_{i}.distinct_{i} = base.distinct_{i}"
                for i in range(len(counted))
            )
            self.cur.execute(
                f"CREATE OR REPLACE TEMP TABLE ind_placed AS "
                f"WITH {placed}, base AS (SELECT *, {values} FROM placed){multi} "
                f"SELECT base.*, {single} FROM base {joins}"
            )
        for i, m in enumerate(counted):
            self.cur.execute(
                f"CREATE OR REPLACE TEMP TABLE ind_placed_multi AS "
                f"SELECT * FROM ind_placed WHERE NOT single_{i} AND distinct_{i} IS NOT NULL"
            )
            selects = []
            for level in indicator.levels:
                column = _LEVEL_COLUMNS[level]
                for combination in breakdowns:
                    label = (
                        "concat_ws(';', "
                        + ", ".join(f"'{key}=' || bd_{key}" for key in combination)
                        + ")"
                        if combination
                        else "''"
                    )
                    kept = ", ".join(["period", column, *(f"bd_{key}" for key in combination)])
                    present = " AND ".join(
                        [f"{column} IS NOT NULL", *(f"bd_{key} IS NOT NULL" for key in combination)]
                    )
                    head = (
                        f"SELECT '{level}' AS level, {column} AS code, period, {label} AS breakdown"
                    )
                    n = "0" if not m.n else _ungrouped(m.n, combination, keys)
                    selects.append(
                        f"{head}, count(*) FILTER (WHERE single_{i}) AS value, {n} AS n "
                        f"FROM ind_placed WHERE {present} GROUP BY {kept}"
                    )
                    selects.append(
                        f"{head}, count(DISTINCT distinct_{i}) AS value, 0 AS n "
                        f"FROM ind_placed_multi WHERE {present} GROUP BY {kept}"
                    )
            n_total = "sum(value)" if not m.n else "sum(n)"
            self.cur.execute(
                f"INSERT INTO {OUTPUT_TABLE} "
                f"SELECT '{indicator.name}', '{m.name}', level, code, period, breakdown, "
                f"CAST(sum(value) AS DOUBLE), CAST({n_total} AS BIGINT), '{self.as_of_label}' "
                "FROM ("
                + "\nUNION ALL\n".join(selects)
                + f") WHERE {m.where} GROUP BY level, code, period, breakdown"
            )
            self.cur.execute("DROP TABLE ind_placed_multi")
        if counted:
            self.cur.execute("DROP TABLE ind_placed")
        if shared:
            self.cur.execute("DROP TABLE ind_facts")

    def result(self) -> pa.Table:
        reader = self.cur.sql(
            f"SELECT * FROM {OUTPUT_TABLE} "
            "ORDER BY indicator, measure, level, code, period, breakdown"
        ).arrow()
        return reader.read_all().cast(OUTPUT_SCHEMA)


def _ungrouped(sql: str, combination: Sequence[str], keys: Sequence[str]) -> str:
    """``sql`` (a measure's ``n``) for a plain GROUP BY by ``combination``: each
    ``grouping(bd_<key>)`` becomes the constant it has in that grouping set."""
    for key in keys:
        sql = sql.replace(f"grouping(bd_{key})", "0" if key in combination else "1")
    return sql


def _sql_type(arrow_type: pa.DataType) -> str:
    if arrow_type == pa.float64():
        return "DOUBLE"
    if arrow_type == pa.int64():
        return "BIGINT"
    return "VARCHAR"
