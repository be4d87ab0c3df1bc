"""Where accepted events go: the contract between inbound connectors and the event log.

Every inbound connector (ingest API, batch files, register pollers) hands events to an
:class:`EventSink` together with a dedupe key that names the submission (an Idempotency-Key,
a file line, a source item id). The sink writes each event at most once per dedupe key and
answers only after the broker acknowledged the write, so a connector may simply retry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
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
class SourcePosition:
    """Where a source connector has read up to; written in the same transaction as its events."""

    source: str  # e.g. "poller:<service id>"
    position: str  # the connector's cursor, opaque to the sink


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


class ReceiptBook:
    """The dedupe rule of every sink: one write per key, the original receipt for a repeat.

    ``settle`` answers a call's submissions in order and lists the new ones to write (a key
    repeated inside the same write is written once); ``record`` remembers them once they
    are durably written.
    """

    def __init__(self) -> None:
        self._receipts: dict[str, Receipt] = {}

    def __len__(self) -> int:
        return len(self._receipts)

    def __contains__(self, dedupe_key: object) -> bool:
        return dedupe_key in self._receipts

    def answer(self, submissions: Sequence[Submission]) -> list[Receipt] | None:
        """The receipts when every key is known already (nothing to write), else None."""
        if all(s.dedupe_key in self._receipts for s in submissions):
            return [self._receipts[s.dedupe_key] for s in submissions]
        return None

    def settle(
        self, submissions: Sequence[Submission], fresh: dict[str, Receipt]
    ) -> tuple[list[Receipt], list[tuple[Submission, Receipt]]]:
        """Receipts in order and the submissions to write; ``fresh`` holds this write's new keys."""
        receipts: list[Receipt] = []
        to_write: list[tuple[Submission, Receipt]] = []
        for submission in submissions:
            known = self._receipts.get(submission.dedupe_key) or fresh.get(submission.dedupe_key)
            if known is not None:
                receipts.append(replace(known, duplicate=True))
                continue
            receipt = Receipt(
                dedupe_key=submission.dedupe_key,
                event_id=submission.event.envelope.event_id,
                request_digest=submission.request_digest,
                duplicate=False,
            )
            fresh[submission.dedupe_key] = receipt
            to_write.append((submission, receipt))
            receipts.append(receipt)
        return receipts, to_write

    def record(self, receipt: Receipt) -> None:
        """Remember a durably written receipt; later submissions of its key are duplicates."""
        self._receipts[receipt.dedupe_key] = replace(receipt, duplicate=True)


class SinkUnavailable(Exception):
    """The log cannot take writes now (broker down, not yet ready); retry after a while.

    Nothing of the failed call was written: a retry with the same dedupe keys is safe.
    """

    def __init__(self, message: str, retry_after_s: int = 5) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class EventSink(Protocol):
    async def submit(
        self, submissions: Sequence[Submission], position: SourcePosition | None = None
    ) -> list[Receipt]:
        """Write the events not written before, atomically; receipts in submission order.

        ``position`` (a source connector's cursor) is committed with the events, so a restart
        resumes exactly after what was written; a call may carry only a position. Raises
        SinkUnavailable when nothing could be written.
        """
        ...

    async def position_of(self, source: str) -> str | None:
        """The last committed position of ``source`` (None before its first)."""
        ...

    async def ready(self) -> bool:
        """Whether a submit now would reach the broker (readiness probe)."""
        ...
