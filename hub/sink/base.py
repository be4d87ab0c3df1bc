"""Where accepted events go: the contract between inbound connectors and the event log.

Every inbound connector (ingest API, batch files, register pollers) hands events to an
:class:`EventSink` together with a dedupe key that names the submission (an Idempotency-Key,
a file line, a source item id). The sink writes each event at most once per dedupe key and
answers only after the broker acknowledged the write, so a connector may simply retry.

The rules every sink keeps (:class:`ReceiptBook` holds them, so no sink has its own copy):

* a known key with the same request digest is answered with its ORIGINAL receipt;
* a known key with another digest is an :class:`IdempotencyConflict`;
* an event id the log already holds for another fact (another key, another digest) is
  :class:`EventIdTaken`, whoever sends it: receivers drop duplicates by event id, so writing it
  would make the first fact vanish downstream;
* one ``submit`` call is atomic: when any of its submissions is refused, nothing of the call is
  written, and the exception names the refused indexes.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import ClassVar, Protocol, TypeVar
from uuid import UUID

from hub.events import CustomerPathEvent

_K = TypeVar("_K")


@dataclass(frozen=True)
class Submission:
    """One event to write, named by its dedupe key.

    ``request_digest`` fingerprints what the sender sent (a keyed digest of the canonical
    request), so a repeated key with other content can be told apart from an honest retry.
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


class SubmissionRefused(Exception):
    """Nothing of the ``submit`` call was written: the submissions at ``indexes`` are refused.

    The message never holds a submitted value. The other submissions of the call may be sent
    again on their own.
    """

    reason: ClassVar[str] = "refused"

    def __init__(self, indexes: Sequence[int], message: str | None = None) -> None:
        self.indexes = tuple(indexes)
        super().__init__(message or f"{self.reason}: submission(s) {list(self.indexes)}")


class IdempotencyConflict(SubmissionRefused):
    """The dedupe key was written before for a request with another digest."""

    reason = "idempotency-conflict"


class EventIdTaken(SubmissionRefused):
    """The event id is in the log already for another fact (another key and digest)."""

    reason = "event-id-taken"


class EventNotWritable(SubmissionRefused):
    """The event cannot be encoded for the log (schema, header): its submission is at fault."""

    reason = "event-not-writable"


class SinkUnavailable(Exception):
    """The log cannot take writes now (broker down, not yet ready); retry after a while.

    Nothing of the failed call was written: a retry with the same dedupe keys is safe.
    """

    def __init__(self, message: str, retry_after_s: int = 5) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ReceiptStore(Protocol):
    """Where a sink keeps the receipts it knows; the first receipt of a key wins."""

    def by_keys(self, dedupe_keys: Collection[str]) -> dict[str, Receipt]: ...

    def by_event_ids(self, event_ids: Collection[UUID]) -> dict[UUID, Receipt]: ...

    def add(self, receipts: Iterable[Receipt]) -> None: ...

    def __len__(self) -> int: ...


class MemoryReceipts:
    """:class:`ReceiptStore` in two dicts (in-memory sinks of tests and tools)."""

    def __init__(self) -> None:
        self._by_key: dict[str, Receipt] = {}
        self._by_event: dict[UUID, Receipt] = {}

    def by_keys(self, dedupe_keys: Collection[str]) -> dict[str, Receipt]:
        return {k: self._by_key[k] for k in dedupe_keys if k in self._by_key}

    def by_event_ids(self, event_ids: Collection[UUID]) -> dict[UUID, Receipt]:
        return {e: self._by_event[e] for e in event_ids if e in self._by_event}

    def add(self, receipts: Iterable[Receipt]) -> None:
        for receipt in receipts:
            kept = replace(receipt, duplicate=True)
            self._by_key.setdefault(receipt.dedupe_key, kept)
            self._by_event.setdefault(receipt.event_id, kept)

    def __len__(self) -> int:
        return len(self._by_key)


@dataclass
class Unrecorded:
    """Receipts settled in the current write but not yet recorded (several calls, one commit)."""

    by_key: dict[str, Receipt] = field(default_factory=dict)
    by_event: dict[UUID, Receipt] = field(default_factory=dict)

    def add(self, receipts: Iterable[Receipt]) -> None:
        for receipt in receipts:
            self.by_key.setdefault(receipt.dedupe_key, receipt)
            self.by_event.setdefault(receipt.event_id, receipt)


@dataclass(frozen=True)
class Settled:
    """A call's receipts in submission order, and the submissions it has to write."""

    receipts: list[Receipt]
    new: list[tuple[Submission, Receipt]]


class ReceiptBook:
    """The dedupe rules of every sink (see the module docstring) over a :class:`ReceiptStore`."""

    def __init__(self, store: ReceiptStore | None = None) -> None:
        self.store: ReceiptStore = store if store is not None else MemoryReceipts()

    def __len__(self) -> int:
        return len(self.store)

    def __contains__(self, dedupe_key: object) -> bool:
        return isinstance(dedupe_key, str) and bool(self.store.by_keys([dedupe_key]))

    def answer(self, submissions: Sequence[Submission]) -> list[Receipt] | None:
        """The receipts when every key is known (nothing to write), else None.

        Raises :class:`IdempotencyConflict` when a known key comes with another digest: that
        refuses the whole call whatever the rest holds.
        """
        known = self.store.by_keys({s.dedupe_key for s in submissions})
        conflicts = [
            i
            for i, s in enumerate(submissions)
            if s.dedupe_key in known and known[s.dedupe_key].request_digest != s.request_digest
        ]
        if conflicts:
            raise IdempotencyConflict(conflicts)
        if len(known) < len({s.dedupe_key for s in submissions}):
            return None
        return [known[s.dedupe_key] for s in submissions]

    def settle(
        self, submissions: Sequence[Submission], unrecorded: Unrecorded | None = None
    ) -> Settled:
        """Apply the rules to one call; raises :class:`SubmissionRefused` for the whole call.

        A key repeated inside the call (or inside ``unrecorded``, the same write's earlier
        calls) is written once; the repeat gets the first one's receipt as a duplicate.
        """
        pending = unrecorded or Unrecorded()
        known = self.store.by_keys({s.dedupe_key for s in submissions})
        holders = self.store.by_event_ids({s.event.envelope.event_id for s in submissions})
        here = Unrecorded()
        receipts: list[Receipt] = []
        new: list[tuple[Submission, Receipt]] = []
        conflicts: list[int] = []
        taken: list[int] = []
        for index, submission in enumerate(submissions):
            key, digest = submission.dedupe_key, submission.request_digest
            event_id = submission.event.envelope.event_id
            earlier = _first(key, known, pending.by_key, here.by_key)
            if earlier is None:
                # The key is new; its event id must not name another fact already.
                earlier = _first(event_id, holders, pending.by_event, here.by_event)
                if earlier is not None and earlier.request_digest != digest:
                    taken.append(index)
                    continue
            elif earlier.request_digest != digest:
                conflicts.append(index)
                continue
            if earlier is not None:
                receipts.append(replace(earlier, duplicate=True))
                continue
            receipt = Receipt(key, event_id, digest, duplicate=False)
            here.add([receipt])
            new.append((submission, receipt))
            receipts.append(receipt)
        if conflicts:
            raise IdempotencyConflict(conflicts)
        if taken:
            raise EventIdTaken(taken)
        return Settled(receipts, new)

    def record(self, receipts: Iterable[Receipt]) -> None:
        """Remember durably written receipts; later submissions of their keys are duplicates."""
        self.store.add(receipts)


def _first(key: _K, *maps: Mapping[_K, Receipt]) -> Receipt | None:
    for found in maps:
        receipt = found.get(key)
        if receipt is not None:
            return receipt
    return None


class EventSink(Protocol):
    async def submit(
        self, submissions: Sequence[Submission], position: SourcePosition | None = None
    ) -> list[Receipt]:
        """Write the events not written before, atomically; receipts in submission order.

        ``position`` (a source connector's cursor) is committed with the events, so a restart
        resumes exactly after what was written; a call may carry only a position. Raises
        :class:`SubmissionRefused` (nothing written; see the module docstring) or
        :class:`SinkUnavailable` when nothing could be written.
        """
        ...

    async def position_of(self, source: str) -> str | None:
        """The last committed position of ``source`` (None before its first)."""
        ...

    async def ready(self) -> bool:
        """Whether a submit now would reach the broker (readiness probe)."""
        ...
