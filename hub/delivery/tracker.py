"""Which offsets of a partition may be committed, and which records may be sent now.

Deliveries finish out of order: other people's events flow past a person whose event is
waiting for a retry. Kafka keeps one committed offset per partition, so (as Confluent's
parallel consumer does) the offset committed is the lowest one not yet *settled* (delivered
with a 2xx, or dead-lettered): after a crash everything from there is read again, including
records that were delivered past it, and receivers drop those by Idempotency-Key. Nothing
unsettled is ever skipped.

Per-person order: records of one key (the person pseudonym) go one at a time, in offset
order; a later record of the person waits until the earlier one settles, however long its
retries take. Records of other keys do not wait. A record without a key has no order to keep.

Pure bookkeeping, no I/O and no clock: the worker owns the timing, this owns the rules.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class PartitionProgress(Generic[T]):
    """Offsets taken from one partition, settled or not, and the per-key queues."""

    def __init__(self) -> None:
        self._pending: deque[int] = deque()
        self._settled: set[int] = set()
        self._next: int | None = None
        self._queues: dict[bytes, deque[T]] = {}
        self.committed: int | None = None
        """The offset last committed (set by :meth:`mark_committed`)."""

    @property
    def buffered(self) -> int:
        """Records taken and not settled yet."""
        return len(self._pending) - len(self._settled)

    def take(self, offset: int, key: bytes | None, item: T) -> bool:
        """Register a fetched record; True when it may be sent now (its key has nothing
        unsettled before it). Offsets must come in increasing order, as a partition gives them."""
        if self._next is not None and offset < self._next:
            raise ValueError(f"offset {offset} taken after {self._next - 1}")
        self._pending.append(offset)
        self._next = offset + 1
        if key is None:
            return True
        queue = self._queues.get(key)
        if queue is None:
            self._queues[key] = deque([item])
            return True
        queue.append(item)
        return False

    def settle(self, offset: int, key: bytes | None) -> T | None:
        """Mark a record settled; returns the key's next record, which may be sent now.

        Only the head of a key's queue (the one sent) can settle, so the queue's head is it.
        """
        pending = self._pending
        if offset in self._settled or not pending or offset < pending[0]:
            raise ValueError(f"offset {offset} settled twice (or never taken)")
        self._settled.add(offset)
        while pending and pending[0] in self._settled:
            self._settled.discard(pending.popleft())
        if key is None:
            return None
        queue = self._queues.get(key)
        if not queue:
            return None
        queue.popleft()
        if queue:
            return queue[0]
        del self._queues[key]
        return None

    def committable(self) -> int | None:
        """The offset to commit: the lowest unsettled one, or the next after all taken; None
        when nothing was taken yet."""
        if self._pending:
            return self._pending[0]
        return self._next

    def commit_due(self) -> int | None:
        """:meth:`committable` when it is past what was last committed, else None."""
        offset = self.committable()
        if offset is None or (self.committed is not None and offset <= self.committed):
            return None
        return offset

    def mark_committed(self, offset: int) -> None:
        self.committed = offset if self.committed is None else max(self.committed, offset)

    def waiting_keys(self) -> int:
        """Keys with at least one record waiting behind an unsettled one."""
        return sum(1 for queue in self._queues.values() if len(queue) > 1)
