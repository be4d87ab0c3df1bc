"""Flows: started and ended job-search spells, spell lengths, job starts, long-term unemployed."""

from __future__ import annotations

from hub.reporting.indicators.frame import (
    Context,
    Indicator,
    Measure,
    weighted_count,
    weighted_share,
)
from hub.reporting.levels import PERSON_LEVELS

_OWN = "breakdown = '' OR breakdown LIKE '{}=%'"
"""A flow's measures only on the total and its own breakdown (not another flow's)."""

STARTED = """
SELECT started_on AS day, municipality_code, employment_area_code,
       NULL::VARCHAR AS team_code, NULL::VARCHAR AS expert_id,
       'started' AS flow, NULL::BIGINT AS length_days,
       status AS bd_group, NULL::VARCHAR AS bd_reason, NULL::VARCHAR AS bd_form
FROM ind_spell
"""

ENDED = """
WITH ending AS (SELECT * FROM ind_spell_end)
SELECT e.ended_on AS day, e.municipality_code, e.employment_area_code,
       NULL::VARCHAR AS team_code, NULL::VARCHAR AS expert_id,
       'ended' AS flow,
       CASE WHEN s.started_on <= e.ended_on THEN e.ended_on - s.started_on + 1 END AS length_days,
       NULL::VARCHAR AS bd_group, e.reason AS bd_reason, NULL::VARCHAR AS bd_form
FROM ending e LEFT JOIN ind_spell s USING (correlation_id)
"""

JOB_STARTS = """
SELECT started_on AS day, municipality_code, employment_area_code,
       NULL::VARCHAR AS team_code, NULL::VARCHAR AS expert_id,
       'job_start' AS flow, NULL::BIGINT AS length_days,
       NULL::VARCHAR AS bd_group, NULL::VARCHAR AS bd_reason, employment_form AS bd_form
FROM live_job_starts
"""

LONG_TERM = """
SELECT day, municipality_code, employment_area_code,
       NULL::VARCHAR AS team_code, NULL::VARCHAR AS expert_id,
       CAST(unemployed_since + INTERVAL 12 MONTH AS DATE) <= day AS long_term
FROM ind_population WHERE state = 'unemployed'
"""


def compute(ctx: Context) -> None:
    """In the period:

    * ``spells_started``: spells whose ``job_search_started_on`` is in it (``group=`` the
      labour-market status at registration);
    * ``spells_ended``: spells whose ``ended_on`` is in it (``reason=``);
    * ``median_spell_length_days``: of the ended ones whose registration is known, calendar
      days from the start to the end, both included (a one-day spell is 1);
    * ``employment_starts``: job starts whose ``started_on`` is in it (``form=``);

    and on the evaluation day D (a month: its last day), over the unemployed as in the
    activation rate (an active spell registered unemployed or laid off, no job start by D, not
    in a service on D):

    * ``long_term_unemployed``: those who have been continuously unemployed jobseekers for 12
      months or more: start of the continuous unemployment + 12 calendar months ≤ D (from
      15.1.2025 it is long-term from 15.1.2026, not on 14.1.2026; a start on 31 Jan or 29 Feb
      reaches 12 months on the last day of the month a year on); ``n`` = the unemployed;
      ``share_long_term_unemployed`` its per cent. A service breaks the continuity: the
      continuous unemployment starts at the later of the spell's start and the day after the
      end of the person's last period in a counting service (as in the activation rate) inside
      the spell. Source: Statistics Finland / TEM employment service statistics (table
      tyonv_902, footnote: "Pitkäaikaistyöttömät sisältää vähintään vuoden yhdenjaksoisesti
      työttömänä työnhakijana olleet": the long-term unemployed are those who have been
      unemployed jobseekers continuously for at least a year). A job start in the spell ends
      the unemployment for good (``EmploymentStarted`` has no end date).

    Levels: the envelope's municipality and area (the registration's for a started spell, the
    end's for an ended one); no team or expert level: none of these facts has a case worker.
    """
    ctx.aggregate(
        INDICATOR,
        f"({STARTED}) UNION ALL ({ENDED}) UNION ALL ({JOB_STARTS})",
        [
            Measure(
                "spells_started",
                "count_if(flow = 'started')",
                "count_if(flow = 'started')",
                _OWN.format("group"),
            ),
            Measure(
                "spells_ended",
                "count_if(flow = 'ended')",
                "count_if(flow = 'ended')",
                _OWN.format("reason"),
            ),
            Measure(
                "median_spell_length_days",
                "median(length_days) FILTER (WHERE flow = 'ended')",
                "count(length_days) FILTER (WHERE flow = 'ended')",
                _OWN.format("reason"),
            ),
            Measure(
                "employment_starts",
                "count_if(flow = 'job_start')",
                "count_if(flow = 'job_start')",
                _OWN.format("form"),
            ),
        ],
        breakdowns=((), ("group",), ("reason",), ("form",)),
    )
    ctx.aggregate(
        INDICATOR,
        LONG_TERM,
        [
            Measure(
                "long_term_unemployed",
                weighted_count("long_term"),
                "sum(weight)",
            ),
            Measure(
                "share_long_term_unemployed",
                weighted_share("long_term"),
                "sum(weight)",
            ),
        ],
        point_in_time=True,
        compress=("long_term",),
    )


INDICATOR = Indicator(
    "flows",
    "Started and ended job-search spells, lengths of the ended ones, employment starts; "
    "long-term unemployed on the period's last day (at least a year continuously an unemployed "
    "jobseeker, a service breaking it: Statistics Finland / TEM table tyonv_902)",
    PERSON_LEVELS,
    compute,
)
