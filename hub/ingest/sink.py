"""Where accepted events go: the contract between inbound connectors and the event log.

Every inbound connector (ingest API, batch files, register pollers) hands events to an
:class:`EventSink` together with a dedupe key that names the submission (an Idempotency-Key,
a file line, a source item id). The sink writes each event at most once per dedupe key and
answers only after the broker acknowledged the write, so a connector may simply retry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

from hub.events import CustomerPathEvent


@dataclass(frozen=True)
class Submission:
    """One event to write, named by its dedupe key.

    ``request_digest`` fingerprints what the sender sent (e.g. SHA-256 of the canonical request),
    so a repeated key with other content can be told apart from an honest retry.
    """

    dedupe_key: str
    request_digest: str
    event: CustomerPathEvent


@dataclass(frozen=True)
class Receipt:
    """The durable answer for one dedupe key.

    ``duplicate`` is true when the key had been written before: then ``event_id`` and
    ``request_digest`` are the ORIGINAL ones and nothing new was written.
    """

    dedupe_key: str
    event_id: UUID
    request_digest: str
    duplicate: bool


class SinkUnavailable(Exception):
    """The log cannot take writes now (broker down, not yet ready); retry after a while.

    Nothing of the failed call was written: a retry with the same dedupe keys is safe.
    """

    def __init__(self, message: str, retry_after_s: int = 5) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class EventSink(Protocol):
    async def submit(self, submissions: Sequence[Submission]) -> list[Receipt]:
        """Write the events not written before, atomically; receipts in submission order.

        Raises SinkUnavailable when nothing could be written.
        """
        ...

    async def ready(self) -> bool:
        """Whether a submit now would reach the broker (readiness probe)."""
        ...
