"""The disclosure log: one tamper-evident receipt for every event the hub handed to a receiver.

Why it exists: a person may ask (GDPR art. 15) to whom their data went, when, which fields and on
what legal basis; an auditor may ask whether that record is complete. Every delivery (and every
event given up as a dead letter after reaching the receiver) writes a :class:`Disclosure` to the
disclosures topic. Entries hold the person pseudonym only, never an identity code or a name.

Hash chain. Entries form one chain per (destination, outbox partition), record key
``<destination>/<partition>``: each entry carries ``seq`` (0, 1, 2, ...), ``prev_hash`` (the
``hash`` of the entry before it, 64 zeros for seq 0) and ``hash`` = SHA-256 over the canonical
JSON (RFC 8785) of the entry without ``hash``, so ``prev_hash`` is covered. Changing an entry
breaks its hash, removing one breaks the next entry's ``seq`` and ``prev_hash``, reordering
breaks both; ``hub audit verify`` (:mod:`hub.delivery.audit`) walks every chain. One chain per
outbox partition because a partition is delivered by exactly one worker at a time: the chain
needs one writer, and per-partition chains let workers write in parallel.

Head recovery. The head of a chain (its last ``seq`` and ``hash``) is not kept anywhere else:
on the first record for a chain after start (or after :meth:`DisclosureLog.release`, which a
worker calls when its partition is revoked) the log reads the disclosures partition that the key
maps to *backwards from its end*, in windows that grow fourfold, until it meets the newest entry
of that key (or the partition's start: a new chain). Reading backwards costs what was written
since the chain's last entry, not the topic's whole history, and needs no second "heads" topic
that could disagree with the chain itself.

Ownership. A head this process knows is trusted only while it owns the chain's outbox partition
without a break: :meth:`DisclosureLog.release` (revoked) and :meth:`DisclosureLog.assign`
(assigned) start a new *ownership epoch* and forget the head, always, also while a receipt is
still being written. Every receipt is tagged with the epoch it was recorded in; a receipt of an
earlier epoch (in flight or queued at the release) is still written, after re-reading the head
from the topic, but its completion never makes a head current again. So the first write after an
assignment always re-reads the head, and a revoked worker's late receipt cannot leave behind a
head that a later write would extend after another worker extended the chain (which forked the
chain: the same ``seq`` twice, reported by ``hub audit verify`` as tampering). A ``record`` after
``release`` belongs to the next ownership (the worker writes no receipt of a revoked partition
once its drain is over), so its head, read after the release, may be cached.

Writes. Each chain has one writer task: entries that arrive while a batch is in flight wait and
go as the next batch (group commit), so hashing stays sequential per chain while many deliveries
await their receipts at once. :meth:`DisclosureLog.record` resolves only after the broker
acknowledged the entry (acks=all, idempotent producer). If a write fails the chain's head is
forgotten and recovered from the topic before the next entry, and the caller gets the error (the
delivery is then not settled and will be redone, writing a new receipt).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final
from uuid import UUID

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from hub.intake.convert import canonical_json
from hub.kafka.clients import make_consumer, make_producer
from hub.kafka.reading import settled_end
from hub.kafka.topics import partition_ids
from hub.logging import get_logger
from hub.settings import HubSettings

log = get_logger(__name__)

GENESIS_HASH: Final = "0" * 64
ENTRY_VERSION: Final = 1
#: Entries written as one batch of a chain at most (more wait for the next batch).
MAX_BATCH: Final = 500
#: First window of the backwards search for a chain's head; it grows fourfold per step.
HEAD_SEARCH_WINDOW: Final = 1000


class DisclosureStatus(StrEnum):
    DELIVERED = "delivered"
    """The receiver answered 2xx (or said it already had the event)."""
    DEAD_LETTERED = "dead-lettered"
    """The receiver saw the event but refused it, or the retries ran out; see the dead letters."""
    ERASED = "erased"
    """The person's data keys were deleted (``hub person forget``, a retention rule): the
    personal fields of ``fields`` (sensitivity classes) became unreadable everywhere; chain
    ``person-keys/<partition of the person-keys topic>`` (:mod:`hub.privacy.access_log`)."""
    REVEALED = "revealed"
    """An operator saw the person's personal fields in the clear (``hub tail --reveal``);
    chain ``reveal/<operator>``."""
    RESTRICTED = "restricted"
    """Processing of the person's data restricted (GDPR art. 18, ``hub person restrict``): the
    keys stay, no route gets the personal fields; chain ``person-keys/<partition>``."""
    RESTRICTION_LIFTED = "restriction-lifted"
    """The person's restriction of processing lifted (``hub person restrict --lift``)."""


@dataclass(frozen=True, slots=True)
class Disclosure:
    """What one delivery disclosed, to whom, on what basis: the content of one receipt."""

    destination: str
    event_id: str | UUID
    subject: str
    """The person pseudonym (never an identity code)."""
    event_type: str
    fields: Sequence[str]
    """Dotted paths of the fields sent (under ``payload.``)."""
    legal_basis: Mapping[str, str]
    """Sensitivity class → legal basis text, for the classes present in what was sent."""
    status: DisclosureStatus | str
    attempts: int
    first_attempt_at: datetime
    last_attempt_at: datetime
    route: str
    outbox_partition: int
    outbox_offset: int
    endpoint: str | None = None
    """The directory key of the receiver (fund code, business ID, area code), if any."""
    event_ids: Sequence[str] = ()
    """More events of the same entry (a reveal covers a batch); in the entry only when given,
    so the entries of deliveries keep their content and hash."""
    details: Mapping[str, Any] | None = None
    """What an erasure or a restriction receipt says beyond a delivery's (operator, basis,
    reason, the marker's place, recipients to notify); JSON values, in the entry only when
    given (member ``details``)."""

    def to_json(self) -> dict[str, Any]:
        """The entry's content as JSON values (times ISO 8601 UTC)."""
        extra: dict[str, Any] = {"event_ids": list(self.event_ids)} if self.event_ids else {}
        if self.details is not None:
            extra["details"] = dict(self.details)
        return {
            "destination": self.destination,
            "endpoint": self.endpoint,
            "event_id": str(self.event_id),
            "subject": self.subject,
            "event_type": self.event_type,
            "route": self.route,
            "fields": list(self.fields),
            "legal_basis": dict(self.legal_basis),
            "status": str(DisclosureStatus(self.status)),
            "attempts": self.attempts,
            "first_attempt_at": _iso(self.first_attempt_at),
            "last_attempt_at": _iso(self.last_attempt_at),
            "outbox_partition": self.outbox_partition,
            "outbox_offset": self.outbox_offset,
            **extra,
        }

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> Disclosure:
        """Read the content of an entry back (chain fields are ignored)."""
        return cls(
            destination=entry["destination"],
            endpoint=entry.get("endpoint"),
            event_id=entry["event_id"],
            subject=entry["subject"],
            event_type=entry["event_type"],
            route=entry["route"],
            fields=tuple(entry["fields"]),
            legal_basis=dict(entry["legal_basis"]),
            status=DisclosureStatus(entry["status"]),
            attempts=int(entry["attempts"]),
            first_attempt_at=datetime.fromisoformat(entry["first_attempt_at"]),
            last_attempt_at=datetime.fromisoformat(entry["last_attempt_at"]),
            outbox_partition=int(entry["outbox_partition"]),
            outbox_offset=int(entry["outbox_offset"]),
            event_ids=tuple(entry.get("event_ids") or ()),
            details=entry.get("details"),
        )


def _iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat()


def chain_key(destination: str, partition: int) -> str:
    """The record key (and name) of the chain of one destination's outbox partition."""
    return f"{destination}/{partition}"


def entry_hash(entry: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of *entry* without its ``hash`` member."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(canonical_json(body)).hexdigest()


def chained_entry(
    disclosure: Disclosure, chain: str, seq: int, prev_hash: str, recorded_at: datetime
) -> dict[str, Any]:
    """The full entry as written: content, chain position and its hash."""
    entry: dict[str, Any] = {
        "v": ENTRY_VERSION,
        "chain": chain,
        "seq": seq,
        "prev_hash": prev_hash,
        "recorded_at": _iso(recorded_at),
        **disclosure.to_json(),
    }
    entry["hash"] = entry_hash(entry)
    return entry


def encode_entry(entry: Mapping[str, Any]) -> bytes:
    """The record value: the canonical JSON of the entry (so its bytes are its hash input)."""
    return canonical_json(dict(entry))


def decode_entry(value: bytes | None) -> dict[str, Any]:
    """Parse a record value; ValueError when it is not a JSON object."""
    if value is None:
        raise ValueError("record has no value")
    parsed = json.loads(value)
    if not isinstance(parsed, dict):
        raise ValueError("record value is not a JSON object")
    return parsed


def partition_for_key(key: str, partitions: Sequence[int]) -> int:
    """The partition the producer's default (Java murmur2) partitioner picks for *key*."""
    chosen: int = DefaultPartitioner()(key.encode(), sorted(partitions), list(partitions))
    return chosen


@dataclass
class _Chain:
    key: str
    partition: int
    """The disclosures partition the chain lives in."""
    head: tuple[int, str] | None = None
    """(seq, hash) of the last entry written in the current epoch; None = not known (recover
    from the topic)."""
    epoch: int = 0
    """The ownership epoch: advanced by every release and assignment of the outbox partition."""
    pending: list[_Pending] = field(default_factory=list)
    writer: asyncio.Task[None] | None = None


@dataclass(frozen=True, slots=True)
class _Pending:
    disclosure: Disclosure
    done: asyncio.Future[None]
    epoch: int
    """The chain's epoch when the receipt was recorded."""


class DisclosureLog:
    """Writes disclosure receipts to ``settings.topic_disclosures``, chained per outbox partition.

    ``await record(entry, partition)`` resolves once the broker acknowledged the receipt.
    """

    def __init__(self, settings: HubSettings, producer: AIOKafkaProducer | None = None) -> None:
        self._settings = settings
        self._topic = settings.topic_disclosures
        self._producer = producer
        self._own_producer = producer is None
        self._chains: dict[str, _Chain] = {}
        self._partitions: list[int] = []
        self._started = False

    @property
    def topic(self) -> str:
        return self._topic

    async def start(self) -> None:
        """Connect; the disclosures topic must exist (``ensure_topics`` creates it)."""
        self._partitions = await partition_ids(self._settings, self._topic)
        if self._producer is None:
            self._producer = make_producer(self._settings, client_id="te-hub-disclosures")
            await self._producer.start()
        self._started = True

    async def stop(self) -> None:
        """Wait for the receipts being written, then close the producer."""
        writers = [c.writer for c in self._chains.values() if c.writer is not None]
        if writers:
            await asyncio.gather(*writers, return_exceptions=True)
        if self._producer is not None and self._own_producer:
            await self._producer.stop()
            self._producer = None
        self._started = False

    async def record(
        self, entry: Disclosure, partition: int, chain_name: str | None = None
    ) -> None:
        """Append *entry* to the chain of (its destination, outbox *partition*); acks=all.

        ``chain_name`` names another chain (the reveals of one operator, ``reveal/<operator>``).
        """
        if not self._started:
            raise RuntimeError("DisclosureLog.record before start()")
        chain = self._chain(entry.destination, partition, chain_name)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        chain.pending.append(_Pending(entry, done, chain.epoch))
        if chain.writer is None or chain.writer.done():
            chain.writer = asyncio.create_task(self._write(chain), name=f"disclosures {chain.key}")
        await asyncio.shield(done)

    def release(self, destination: str, partition: int) -> None:
        """Forget the head of a chain (its outbox partition was revoked from this worker).

        Always, also with a receipt still being written: another worker may extend the chain
        meanwhile, so no head known before now is trusted again; receipts still pending are
        written after re-reading the head and leave no head behind (see "Ownership" above).
        """
        self._new_epoch(destination, partition)

    def assign(self, destination: str, partition: int) -> None:
        """The chain's outbox partition was assigned to this worker: the first receipt after
        this re-reads the head from the topic (whatever this process knew before is stale)."""
        self._new_epoch(destination, partition)

    def _new_epoch(self, destination: str, partition: int) -> None:
        chain = self._chains.get(chain_key(destination, partition))
        if chain is not None:
            chain.epoch += 1
            chain.head = None

    def head(self, destination: str, partition: int) -> tuple[int, str] | None:
        """(seq, hash) of the chain's last entry as this process knows it (None: not yet read)."""
        chain = self._chains.get(chain_key(destination, partition))
        return None if chain is None else chain.head

    def _chain(self, destination: str, partition: int, name: str | None = None) -> _Chain:
        key = name if name is not None else chain_key(destination, partition)
        chain = self._chains.get(key)
        if chain is None:
            chain = _Chain(key, partition_for_key(key, self._partitions))
            self._chains[key] = chain
        return chain

    async def _write(self, chain: _Chain) -> None:
        """The chain's single writer: batches of pending entries, each after the last's acks."""
        assert self._producer is not None
        while chain.pending:
            # One batch is of one epoch: receipts of an earlier ownership never share a head
            # with those of the current one.
            epoch = chain.pending[0].epoch
            size = 0
            while size < min(MAX_BATCH, len(chain.pending)) and chain.pending[size].epoch == epoch:
                size += 1
            batch = chain.pending[:size]
            del chain.pending[:size]
            sends: list[asyncio.Future[Any]] = []
            stopped: BaseException | None = None
            seq, prev = -1, GENESIS_HASH
            try:
                head = chain.head if epoch == chain.epoch else None
                if head is None:
                    head = await recover_head(self._settings, chain.key, chain.partition)
                seq, prev = head
                now = datetime.now(UTC)
                for item in batch:
                    disclosure = item.disclosure
                    entry = chained_entry(disclosure, chain.key, seq + 1, prev, now)
                    sends.append(
                        await self._producer.send(
                            self._topic,
                            value=encode_entry(entry),
                            key=chain.key.encode(),
                            partition=chain.partition,
                        )
                    )
                    seq, prev = seq + 1, entry["hash"]
            except Exception as error:  # recovery or enqueueing failed: the rest of the batch did
                stopped = error
            # What was enqueued may still land: its callers learn its own outcome.
            results: list[Any] = list(await asyncio.gather(*sends, return_exceptions=True))
            results += [stopped] * (len(batch) - len(sends))
            failed = [r for r in results if isinstance(r, BaseException)]
            if failed:
                chain.head = None
                log.error(
                    "disclosures.write_failed",
                    chain=chain.key,
                    entries=len(batch),
                    failed=len(failed),
                    error=str(failed[0]),
                )
            elif epoch == chain.epoch:  # no release or assignment since the head was read
                chain.head = (seq, prev)
            # else: written for an earlier ownership; the head stays unknown (re-read next time)
            for item, result in zip(batch, results, strict=True):
                done = item.done
                if done.done():
                    continue
                if isinstance(result, BaseException):
                    done.set_exception(result)
                else:
                    done.set_result(None)


async def recover_head(settings: HubSettings, key: str, partition: int) -> tuple[int, str]:
    """(seq, hash) of the newest entry of chain *key*, read backwards from the partition's end.

    A new chain gives ``(-1, GENESIS_HASH)``, so its first entry is seq 0.
    """
    tp = TopicPartition(settings.topic_disclosures, partition)
    consumer = make_consumer(settings, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([tp])
        start = (await consumer.beginning_offsets([tp]))[tp]
        # Past any transaction of another chain that is open on the partition: the head may
        # have been committed after it.
        end = await settled_end(settings, consumer, tp)
        window = HEAD_SEARCH_WINDOW
        upper = end
        while upper > start:
            lower = max(start, upper - window)
            found = await _newest_of_key(consumer, tp, key.encode(), lower, upper)
            if found is not None:
                return found
            upper = lower
            window *= 4
        return (-1, GENESIS_HASH)
    finally:
        await consumer.stop()


async def _newest_of_key(
    consumer: Any, tp: TopicPartition, key: bytes, lower: int, upper: int
) -> tuple[int, str] | None:
    """The newest entry of *key* among offsets [lower, upper) of *tp*."""
    consumer.seek(tp, lower)
    newest: tuple[int, str] | None = None
    while await consumer.position(tp) < upper:
        batches = await consumer.getmany(tp, timeout_ms=1000, max_records=1000)
        for record in batches.get(tp, ()):
            if record.offset >= upper:
                return newest
            if record.key != key:
                continue
            try:
                entry = decode_entry(record.value)
                newest = (int(entry["seq"]), str(entry["hash"]))
            except (ValueError, KeyError, TypeError):
                log.warning(
                    "disclosures.unreadable_entry", chain=key.decode(), offset=record.offset
                )
    return newest


class MemoryDisclosureLog:
    """The same interface in memory, for unit tests of code that writes receipts."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self._heads: dict[str, tuple[int, str]] = {}

    async def start(self) -> None:
        """Nothing to connect."""

    async def stop(self) -> None:
        """Nothing to close."""

    async def record(
        self, entry: Disclosure, partition: int, chain_name: str | None = None
    ) -> None:
        key = chain_name if chain_name is not None else chain_key(entry.destination, partition)
        seq, prev = self._heads.get(key, (-1, GENESIS_HASH))
        chained = chained_entry(entry, key, seq + 1, prev, datetime.now(UTC))
        self._heads[key] = (seq + 1, chained["hash"])
        self.entries.append(chained)

    def release(self, destination: str, partition: int) -> None:
        """Nothing to forget: memory is the whole chain."""

    def assign(self, destination: str, partition: int) -> None:
        """Nothing to re-read: memory is the whole chain."""
