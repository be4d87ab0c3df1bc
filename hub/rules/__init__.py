"""Rules from the law as effective-dated data (``data/*.csv``) and pure functions over them."""

from hub.rules.customer_path import (
    ConversationCadence,
    JobSearchObligation,
    add_working_days,
    conversation_cadence_table,
    initial_interview_deadline,
    initial_interview_deadline_table,
    is_working_day,
    job_search_obligation_table,
)
from hub.rules.effective import EffectiveDated, NoRuleInForce, Period

__all__ = [
    "ConversationCadence",
    "EffectiveDated",
    "JobSearchObligation",
    "NoRuleInForce",
    "Period",
    "add_working_days",
    "conversation_cadence_table",
    "initial_interview_deadline",
    "initial_interview_deadline_table",
    "is_working_day",
    "job_search_obligation_table",
]
