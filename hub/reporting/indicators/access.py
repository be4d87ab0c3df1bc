"""Access time to the initial interview (alkuhaastattelu), and the share within the deadline."""

from __future__ import annotations

from hub.reporting.indicators.frame import (
    ACTIVE_SPELLS,
    Context,
    Indicator,
    Measure,
    weighted_count,
)
from hub.reporting.levels import LEVELS

FACTS = """
WITH interview AS (
    SELECT correlation_id, held_on, unnest(r) FROM (
        SELECT correlation_id, min(held_on) AS held_on,
               arg_min_null({
                   'job_search_started_on': job_search_started_on,
                   'municipality_code': municipality_code,
                   'employment_area_code': employment_area_code,
                   'team_code': team_code, 'expert_id': expert_id, 'channel': channel,
                   'remote_for_weighty_reason': remote_for_weighty_reason
               }, (held_on, event_id)) AS r
        FROM live_interviews GROUP BY correlation_id
    )
)
SELECT i.held_on AS day, i.municipality_code, i.employment_area_code, i.team_code, i.expert_id,
       greatest(held.working_day_number - started.working_day_number, 0) AS working_days,
       CASE WHEN started.interview_deadline IS NOT NULL
            THEN i.held_on <= started.interview_deadline END AS within_deadline,
       i.channel = 'FACE_TO_FACE' AS face_to_face,
       i.channel <> 'FACE_TO_FACE' AND coalesce(i.remote_for_weighty_reason, FALSE)
           AS remote_for_weighty_reason,
       i.channel AS bd_channel
FROM interview i
LEFT JOIN ind_spell s USING (correlation_id)
LEFT JOIN ind_calendar started
  ON started.day = coalesce(s.started_on, i.job_search_started_on)
LEFT JOIN ind_calendar held ON held.day = i.held_on
"""

WAITING = f"""
WITH active AS ({ACTIVE_SPELLS})
SELECT a.day, a.municipality_code, a.employment_area_code,
       NULL::VARCHAR AS team_code, NULL::VARCHAR AS expert_id,
       NOT EXISTS (
           SELECT 1 FROM live_interviews i
           WHERE i.correlation_id = a.correlation_id AND i.held_on <= a.day
       ) AS waiting
FROM active a JOIN ind_calendar c ON c.day = a.started_on
WHERE c.interview_deadline < a.day
"""


def compute(ctx: Context) -> None:
    """Initial interviews held in the period (by ``held_on``), the first one of each spell.

    * ``interviews``: how many;
    * ``median_working_days``: median of the working days from the start of job search to the
      interview: the working days *after* the start up to and including the interview day
      (Finnish public holidays, Christmas and Midsummer Eve off, as :mod:`hub.rules`), so an
      interview on the start day is 0 and one on the next working day is 1; an interview dated
      before the start counts 0; an even count takes the mean of the middle two;
    * ``share_within_deadline``: per cent of them held on or before the deadline of the rule in
      force on the start of job search (5 working days in 2025, 10 from 1.1.2026,
      ``hub/rules/data/initial_interview_deadline.csv``), recomputed from the start day (the
      event's own ``deadline`` and ``within_deadline`` are not read); a start with no rule in
      force (before 2025) is left out of the share (its ``n``).

    * ``share_face_to_face``: per cent of them held face to face (the rule of Act 380/2023);
      ``share_remote_for_weighty_reason``: per cent held remotely (phone, video, electronic)
      for a weighty reason (``remote_for_weighty_reason``); the rest were remote without one.
      Totals only (a channel breakdown of a channel share says nothing).

    The start of job search is the spell's: the registration (``JobseekerRegistered``) of the
    interview's spell (correlation id), as known at the as-of time, so a corrected registration
    moves the deadline; the interview's own ``job_search_started_on`` only when the
    registration is not known. And on the
    evaluation day D (a month: its last day), of the active spells whose deadline has passed
    (deadline < D):

    * ``waiting_past_deadline``: those with no initial interview held on or before D (``n`` =
      the spells past their deadline); registration levels only, as nobody has handled them.
    """
    ctx.aggregate(
        INDICATOR,
        FACTS,
        [
            Measure("interviews", "count(*)", "count(*)"),
            Measure("median_working_days", "median(working_days)", "count(working_days)"),
            Measure(
                "share_within_deadline",
                "100.0 * count_if(within_deadline) / nullif(count(within_deadline), 0)",
                "count(within_deadline)",
            ),
            Measure(
                "share_face_to_face",
                "100.0 * count_if(face_to_face) / nullif(count(*), 0)",
                "count(*)",
                "breakdown = ''",
            ),
            Measure(
                "share_remote_for_weighty_reason",
                "100.0 * count_if(remote_for_weighty_reason) / nullif(count(*), 0)",
                "count(*)",
                "breakdown = ''",
            ),
        ],
        breakdowns=((), ("channel",)),
    )
    ctx.aggregate(
        INDICATOR,
        WAITING,
        [
            Measure(
                "waiting_past_deadline",
                weighted_count("waiting"),
                "sum(weight)",
            )
        ],
        point_in_time=True,
        compress=("waiting",),
    )


INDICATOR = Indicator(
    "initial_interview_access",
    "Initial interviews held in the period: median working days from the start of job search "
    "(the spell's registration; Finnish holidays) and per cent within the deadline in force on "
    "the start day (5 working days in 2025, 10 from 2026; "
    "hub/rules/data/initial_interview_deadline.csv, Act 380/2023); per cent face to face and "
    "remote for a weighty reason; active spells past the deadline still waiting on the "
    "period's last day",
    LEVELS,
    compute,
)
