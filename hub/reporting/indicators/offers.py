"""Job offers (työtarjoukset): binding or not, who got one, which led to a job, and where."""

from __future__ import annotations

from hub.reporting.indicators.frame import PERSON_KEY, Context, Indicator, Measure
from hub.reporting.levels import LEVEL_TABLE, LEVELS

FACTS = """
WITH offer AS (
    SELECT offer_id, occurred_at, unnest(r) FROM (
        SELECT offer_id, min(occurred_at) AS occurred_at,
               arg_min_null({
                   'municipality_code': municipality_code,
                   'employment_area_code': employment_area_code,
                   'team_code': team_code, 'expert_id': expert_id, 'subject': subject,
                   'binding': binding,
                   'workplace_municipality_code': workplace_municipality_code
               }, (occurred_at, event_id)) AS r
        FROM live_offers GROUP BY offer_id
    )
), hired AS (
    SELECT offer_id FROM live_offer_outcomes WHERE result = 'HIRED'
    UNION
    SELECT job_offer_id FROM live_job_starts WHERE job_offer_id IS NOT NULL
), job_start AS (
    SELECT job_offer_id AS offer_id,
           arg_min_null(workplace_municipality_code, (started_on, event_id))
               AS workplace_municipality_code
    FROM live_job_starts WHERE job_offer_id IS NOT NULL GROUP BY job_offer_id
), area_of AS (
    SELECT DISTINCT municipality_code, employment_area_code FROM $levels
)
SELECT CAST(timezone('Europe/Helsinki', o.occurred_at AT TIME ZONE 'UTC') AS DATE) AS day,
       o.municipality_code, o.employment_area_code, o.team_code, o.expert_id, o.subject,
       h.offer_id IS NOT NULL AS led_to_employment,
       CASE WHEN h.offer_id IS NOT NULL
            THEN area_of.employment_area_code IS DISTINCT FROM o.employment_area_code
       END AS outside_area,
       CASE WHEN o.binding THEN 'true' ELSE 'false' END AS bd_binding
FROM offer o
LEFT JOIN hired h ON h.offer_id = o.offer_id
LEFT JOIN job_start j ON j.offer_id = o.offer_id
LEFT JOIN area_of
  ON area_of.municipality_code = coalesce(j.workplace_municipality_code,
                                          o.workplace_municipality_code)
""".replace("$levels", LEVEL_TABLE)


def compute(ctx: Context) -> None:
    """Job offers made in the period (the offer's ``occurred_at`` as a Finnish date; one per
    ``offer_id``), by ``binding=true|false``:

    * ``offers``; ``jobseekers_with_offer``: distinct persons (pseudonyms) who got one;
    * ``share_led_to_employment``: per cent of the offers that led to employment, as known by
      the as-of time whenever it happened: an outcome ``HIRED`` or a job start naming the offer
      (``job_offer_id``); ``placements``: their count;
    * ``placements_outside_area``: placements whose workplace (the job start's, else the
      offer's) lies outside the person's employment area (the offer's envelope), by the code
      list (an Åland workplace is outside); ``n`` = placements.
    """
    ctx.aggregate(
        INDICATOR,
        FACTS,
        [
            Measure("offers", "count(*)", "count(*)"),
            Measure("jobseekers_with_offer", "", "", distinct=PERSON_KEY),
            Measure(
                "share_led_to_employment",
                "100.0 * count_if(led_to_employment) / nullif(count(*), 0)",
                "count(*)",
            ),
            Measure("placements", "count_if(led_to_employment)", "count(*)"),
            Measure(
                "placements_outside_area", "count_if(outside_area)", "count_if(led_to_employment)"
            ),
        ],
        breakdowns=((), ("binding",)),
    )


INDICATOR = Indicator(
    "job_offers",
    "Job offers made in the period by whether they bind; jobseekers who got one; per cent "
    "that led to employment (outcome HIRED or a job start naming the offer); placements outside "
    "the person's employment area",
    LEVELS,
    compute,
)
