"""Plans made, plan debt, and the job-search obligation levels in force."""

from __future__ import annotations

from hub.reporting.indicators.frame import (
    Context,
    Indicator,
    Measure,
    weighted_count,
)
from hub.reporting.levels import LEVELS, PERSON_LEVELS

PLANS = """
SELECT agreed_on AS day, municipality_code, employment_area_code, team_code, expert_id,
       agreed_in_initial_interview,
       plan_type AS bd_type
FROM live_plans
"""


LATEST_PLAN = """
WITH latest AS (
    SELECT day, correlation_id, unnest(r) FROM (
        SELECT a.day, a.correlation_id,
               arg_max_null({
                   'team_code': p.team_code, 'expert_id': p.expert_id,
                   'valid_until': p.valid_until,
                   'per_month': p.job_search_obligation_per_month
               }, (p.agreed_on, p.event_id)) AS r
        FROM ind_active a JOIN live_plans p
          ON p.correlation_id = a.correlation_id AND p.agreed_on <= a.day
        GROUP BY a.day, a.correlation_id
    )
)
SELECT a.*, l.correlation_id IS NOT NULL AND (l.valid_until IS NULL OR l.valid_until >= a.day)
           AS has_plan,
       l.team_code AS plan_team_code, l.expert_id AS plan_expert_id, l.per_month
FROM ind_active a LEFT JOIN latest l USING (day, correlation_id)
"""
"""Each active spell on each evaluation day with the plan in force: the latest plan of the
spell agreed on or before the day (a later plan replaces an earlier one), valid if its
``valid_until`` is empty or not before the day."""

PLAN_DEBT = """
SELECT a.day, a.municipality_code, a.employment_area_code,
       NULL::VARCHAR AS team_code, NULL::VARCHAR AS expert_id,
       (c.interview_deadline IS NULL OR c.interview_deadline < a.day) AS due,
       a.has_plan,
       a.status AS bd_group
FROM ind_latest_plan a LEFT JOIN ind_calendar c ON c.day = a.started_on
"""

OBLIGATION = """
SELECT day, municipality_code, employment_area_code,
       plan_team_code AS team_code, plan_expert_id AS expert_id, per_month,
       status AS bd_group, CAST(per_month AS VARCHAR) AS bd_level
FROM ind_latest_plan
WHERE has_plan
"""


_DUE = weighted_count("due")
_WITHOUT = weighted_count("due AND NOT has_plan")


def compute_plans(ctx: Context) -> None:
    """Plans agreed in the period (by ``agreed_on``), by ``type=`` (plan_type): ``plans`` and
    ``share_in_initial_interview`` (per cent agreed in the initial interview)."""
    ctx.aggregate(
        PLANS_INDICATOR,
        PLANS,
        [
            Measure("plans", "sum(weight)", "sum(weight)"),
            Measure(
                "share_in_initial_interview",
                "100.0 * coalesce(sum(weight) FILTER (WHERE agreed_in_initial_interview), 0)"
                " / nullif(sum(weight), 0)",
                "sum(weight)",
            ),
        ],
        breakdowns=((), ("type",)),
        compress=("agreed_in_initial_interview",),
    )


def compute_plan_debt(ctx: Context) -> None:
    """On the evaluation day D (a month: its last day), over the active jobseekers (a spell
    started on or before D and not ended before D; ``ended_on`` is the last day of job search):

    * a plan is *due* once the initial-interview deadline of the spell (the rule in force on
      its start, as :mod:`hub.rules`) has passed, i.e. from the day after the deadline (the law
      has the plan made in the initial interview); a start with no rule in force counts as due;
    * the plan in force on D is the latest plan of the spell (correlation id) agreed on or
      before D (a later plan replaces an earlier one); it is *valid* when its ``valid_until``
      is empty or not before D (an expired latest plan is no plan, whatever came before it);
    * ``share_without_plan`` = 100 × due without a valid plan / due (``n`` = due);
      ``without_plan`` and ``active_jobseekers`` are the counts; breakdown ``group=`` the
      labour-market status at registration.

    Levels: the registration's municipality and employment area; no team or expert level, as
    a missing plan has no case worker.
    """
    ctx.table("ind_latest_plan", LATEST_PLAN)
    ctx.aggregate(
        PLAN_DEBT_INDICATOR,
        PLAN_DEBT,
        [
            Measure(
                "share_without_plan",
                f"100.0 * {_WITHOUT} / nullif({_DUE}, 0)",
                _DUE,
            ),
            Measure("without_plan", _WITHOUT, _DUE),
            Measure("active_jobseekers", "sum(weight)", "sum(weight)"),
        ],
        breakdowns=((), ("group",)),
        compress=("due", "has_plan"),
        point_in_time=True,
    )


def compute_obligation(ctx: Context) -> None:
    """On the evaluation day D, the active jobseekers with a valid plan (as in plan debt) and
    the job-search obligation (applications a month, 0-4) of the plan in force (the latest
    agreed on or before D, valid on D). ``jobseekers`` per ``group=`` (labour-market status at
    registration), ``level=`` (applications a month) and both; ``mean_per_month`` their mean.
    Team and expert: of the plan in force (who agreed it)."""
    ctx.table("ind_latest_plan", LATEST_PLAN)
    ctx.aggregate(
        OBLIGATION_INDICATOR,
        OBLIGATION,
        [
            Measure("jobseekers", "sum(weight)", "sum(weight)"),
            Measure(
                "mean_per_month",
                "sum(per_month * weight) / nullif(sum(weight), 0)",
                "sum(weight)",
            ),
        ],
        breakdowns=((), ("group",), ("level",), ("group", "level")),
        point_in_time=True,
        compress=("per_month",),
    )


PLANS_INDICATOR = Indicator(
    "plans",
    "Employment plans (and integration, activation, multi-sectoral plans) agreed in the "
    "period, by type",
    LEVELS,
    compute_plans,
)
PLAN_DEBT_INDICATOR = Indicator(
    "plan_debt",
    "Per cent of active jobseekers without a valid plan on the period's last day, of those "
    "whose initial-interview deadline (hub.rules, rule of the start day) has passed",
    PERSON_LEVELS,
    compute_plan_debt,
)
OBLIGATION_INDICATOR = Indicator(
    "job_search_obligation",
    "Active jobseekers with a valid plan on the period's last day by the job-search "
    "obligation in force (applications a month, 0-4, Act 380/2023) and labour-market status "
    "at registration",
    LEVELS,
    compute_obligation,
)
