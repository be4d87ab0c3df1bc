"""Processing time of labour-policy statements (lausunnot), request to statement."""

from __future__ import annotations

from hub.reporting.indicators.frame import Context, Indicator, Measure
from hub.reporting.levels import LEVELS

FACTS = """
WITH statement AS (
    SELECT request_id, issued_on, unnest(r) FROM (
        SELECT request_id, min(issued_on) AS issued_on,
               arg_min_null({
                   'municipality_code': municipality_code,
                   'employment_area_code': employment_area_code,
                   'team_code': team_code, 'expert_id': expert_id, 'payer_kind': payer_kind
               }, (issued_on, event_id)) AS r
        FROM live_statements WHERE request_id IS NOT NULL GROUP BY request_id
    )
), request AS (
    SELECT request_id, min(requested_on) AS requested_on
    FROM live_statement_requests GROUP BY request_id
)
SELECT s.issued_on AS day, s.municipality_code, s.employment_area_code,
       s.team_code, s.expert_id,
       greatest(s.issued_on - r.requested_on, 0) AS days,
       s.payer_kind AS bd_payer
FROM statement s JOIN request r USING (request_id)
"""


def compute(ctx: Context) -> None:
    """Statements issued in the period (by ``issued_on``) that answer a known request (by
    ``request_id``; the first statement of a request only): ``statements`` and
    ``median_days``, the median of calendar days from ``requested_on`` to ``issued_on`` (same
    day = 0; an even count takes the mean of the middle two); breakdown ``payer=KELA`` or
    ``payer=UNEMPLOYMENT_FUND``. Statements issued unasked (no request id) or whose request
    is not known are left out."""
    ctx.aggregate(
        INDICATOR,
        FACTS,
        [
            Measure("statements", "count(*)", "count(*)"),
            Measure("median_days", "median(days)", "count(days)"),
        ],
        breakdowns=((), ("payer",)),
    )


INDICATOR = Indicator(
    "statement_processing_time",
    "Labour-policy statements issued in the period: median calendar days from the payer's "
    "request to the statement (matched by request_id)",
    LEVELS,
    compute,
)
