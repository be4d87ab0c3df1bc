"""Initial interviews and job-search conversations by type and channel."""

from __future__ import annotations

from hub.reporting.indicators.frame import Context, Indicator, Measure
from hub.reporting.levels import LEVELS

FACTS = """
WITH meeting AS (
    SELECT held_on, 'INITIAL_INTERVIEW' AS meeting_type, channel,
           municipality_code, employment_area_code, team_code, expert_id
    FROM live_interviews
    UNION ALL
    SELECT held_on, conversation_type, channel,
           municipality_code, employment_area_code, team_code, expert_id
    FROM live_conversations
)
SELECT held_on AS day, municipality_code, employment_area_code, team_code, expert_id,
       meeting_type AS bd_type, channel AS bd_channel
FROM meeting
"""


def compute(ctx: Context) -> None:
    """``meetings``: initial interviews (type ``INITIAL_INTERVIEW``) and job-search
    conversations (their ``conversation_type``) held in the period, by ``held_on``; breakdowns
    by ``type=``, ``channel=`` and both. Every recorded meeting counts (a second initial
    interview of a spell too, unlike the access time)."""
    ctx.aggregate(
        INDICATOR,
        FACTS,
        [Measure("meetings", "sum(weight)", "sum(weight)")],
        breakdowns=((), ("type",), ("channel",), ("type", "channel")),
        compress=(),
    )


INDICATOR = Indicator(
    "interviews_and_conversations",
    "Initial interviews and job-search conversations held in the period, by type and channel "
    "(face to face, phone, video, electronic)",
    LEVELS,
    compute,
)
