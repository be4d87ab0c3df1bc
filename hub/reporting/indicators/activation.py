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

    * *in services* on D: a jobseeker (an active job-search spell on D, whatever the
      labour-market status) in a period of participation that covers D, in a service type
      that counts on D (``hub/rules/data/activation_service_types.csv``: pay subsidy, work
      trial, labour market training, coaching, self-motivated study, start-up grant; not
      career guidance). Participation is intervals (``ind_service``): each provider's
      ``START`` until the next ``INTERRUPTION`` (that day is out) or ``COMPLETION`` (that
      day is in), bounded by ``planned_end``; a later ``START`` restarts it; ``planned_start``
      stands in for a ``START`` the provider never reported. A person in a service without
      an active spell is not a jobseeker and counts nowhere (neither side of the rate);
    * *unemployed* on D, if not in services: an active job-search spell (started on or
      before D, not ended before D) registered as ``UNEMPLOYED`` or ``LAID_OFF``, with no job
      start in the spell on or before D (a job start has no end in the events, so it removes
      the person from the unemployed for the rest of the spell);
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
    "last day (TEM's employment service statistics; the counting services in "
    "hub/rules/data/activation_service_types.csv); only jobseekers count, the fully laid off "
    "as unemployed",
    PERSON_LEVELS,
    compute,
)
