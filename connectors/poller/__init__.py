"""Register poller: pulls a register's change feed over X-Road (Suomi.fi-palveluväylä) and
publishes it as customer-path events through an :class:`~hub.sink.EventSink`."""

from connectors.poller.cursor import CursorFileError, LegacyCursorFile, RejectLog
from connectors.poller.mapping import (
    POLLER_NAMESPACE,
    ChangeMapper,
    ChangePage,
    JobseekerChange,
    PlanExtract,
    Rejection,
)
from connectors.poller.poller import Backoff, PageOutcome, PollStats, RegisterPoller

__all__ = [
    "POLLER_NAMESPACE",
    "Backoff",
    "ChangeMapper",
    "ChangePage",
    "CursorFileError",
    "JobseekerChange",
    "LegacyCursorFile",
    "PageOutcome",
    "PlanExtract",
    "PollStats",
    "RegisterPoller",
    "RejectLog",
    "Rejection",
]
