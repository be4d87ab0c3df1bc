"""Activation rate: people in services against the unemployed and those in services."""

from __future__ import annotations

from hub.reporting.indicators.frame import (
    Context,
    Indicator,
    Measure,
    weighted_count,
    weighted_share,
)
from hub.reporting.levels import PERSON_LEVELS

FACTS = """
SELECT day, municipality_code, employment_area_code,
       NULL::VARCHAR AS team_code, NULL::VARCHAR AS expert_id, state
FROM ind_population
"""


def compute(ctx: Context) -> None:
    """On the evaluation day D (a month: its last day), each person counted once:

    * *in a service* on D: an enrolment whose first day (the provider's ``START`` report, else
      ``planned_start``) is on or before D and whose last day is on or after D; the last day is
      the earliest of ``planned_end``, the day before an ``INTERRUPTION`` report (the
      interruption day is out) and a ``COMPLETION`` report's day (the completion day is in);
    * *unemployed* on D, if not in a service: an active job-search spell (started on or before
      D, not ended before D) registered as ``UNEMPLOYED`` or ``LAID_OFF``, with no job start in
      the spell on or before D;
    * ``activation_rate`` = in services / (unemployed + in services) × 100 (``n`` = the
      denominator); ``in_services`` and ``unemployed`` the counts.

    Levels: the enrolment's (in services) or the registration's (unemployed) municipality and
    area; no team or expert level: the rate is of a population, and the unemployed have no
    case worker in the facts.
    """
    ctx.aggregate(
        INDICATOR,
        FACTS,
        [
            Measure(
                "activation_rate",
                weighted_share("state = 'service'"),
                "sum(weight)",
            ),
            Measure(
                "in_services",
                weighted_count("state = 'service'"),
                "sum(weight)",
            ),
            Measure(
                "unemployed",
                weighted_count("state = 'unemployed'"),
                "sum(weight)",
            ),
        ],
        point_in_time=True,
        compress=("state",),
    )


INDICATOR = Indicator(
    "activation_rate",
    "People in services / (unemployed jobseekers + people in services) × 100 on the period's "
    "last day (DOMAIN.md); the fully laid off count as unemployed",
    PERSON_LEVELS,
    compute,
)
