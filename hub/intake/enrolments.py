"""Who owns each enrolment, learnt from the log's ServiceEnrolled events.

A service provider may report participation only in enrolments made with it, only about the
person enrolled; a municipal client may not re-send someone else's enrolment id. The API asks
this directory, which follows the customer-path topic from the beginning. Only ServiceEnrolled
records are decoded: the CloudEvents ``ce_type`` header tells them apart without touching the
others' bodies.

**An enrolment id belongs to its first fact.** The first ServiceEnrolled record of an id in the
log decides, for good, its provider, its person (pseudonym), the enrolling client's
``source_system`` and the municipality. "First" is the order ``(record timestamp, partition,
offset)``: records of different people lie on different partitions, so the order in which a
consumer happens to meet them cannot be the rule; this order is the same on every rebuild. A
later record that names another provider, person or client is ignored with a warning (the API
refuses to write one, but a race between two replicas or a writer that bypasses the API could).

**Answers are about the log as it is now.** A look-up of an id the directory does not know asks
the broker for the end of the log (its high watermark) and waits (at most ``sync_timeout_s``)
until the directory has read past it, i.e. until every transaction written before the question
is committed or aborted and read, so an enrolment acknowledged a moment ago, by any replica, is
known. A directory
that cannot get there (still reading the log after a start, or the broker unreachable) raises
:class:`DirectoryCatchingUp`: the API answers 503 with Retry-After, never a refusal it would
have to take back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Final
from uuid import UUID

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from hub.events.customer_path import ServiceEnrolled
from hub.kafka.clients import make_consumer
from hub.kafka.topics import partition_ids
from hub.serde import EventSerializer, SerdeError, build_serializer
from hub.settings import HubSettings

log = structlog.get_logger(__name__)

_ENROLLED_TYPE = ServiceEnrolled.full_name().encode()
#: How long a look-up waits for the directory to reach the end of the log.
SYNC_TIMEOUT_S: Final = 5.0
#: Retry-After of a look-up the directory could not answer.
RETRY_AFTER_S: Final = 5
_POLL_MS: Final = 250
_RESTART_S: Final = 2.0

#: Where a record lies in the ownership order: (timestamp ms, partition, offset).
Order = tuple[int, int, int]


@dataclass(frozen=True)
class Enrolment:
    """The facts of an enrolment's first ServiceEnrolled record that decide who may use it."""

    provider_business_id: str
    subject: str
    """Pseudonym of the person enrolled."""
    source_system: str
    """The enrolling client's system (the event's ``source_system``)."""
    municipality_code: str

    def conflicts(self, other: Enrolment) -> list[str]:
        """Which owning facts *other* changes (empty for the same enrolment, e.g. a retry)."""
        return [
            name
            for name, mine, theirs in (
                ("source_system", self.source_system, other.source_system),
                ("person", self.subject, other.subject),
                ("provider", self.provider_business_id, other.provider_business_id),
            )
            if mine != theirs
        ]


class DirectoryCatchingUp(Exception):
    """The directory cannot answer for the log as it is now; ask again after a while."""

    def __init__(self, reason: str, retry_after_s: int = RETRY_AFTER_S) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class EnrolmentBook:
    """The ownership rule without Kafka: per enrolment id, the record first in the order wins."""

    def __init__(self) -> None:
        self._first: dict[UUID, tuple[Order, Enrolment]] = {}

    def __len__(self) -> int:
        return len(self._first)

    def get(self, enrolment_id: UUID) -> Enrolment | None:
        found = self._first.get(enrolment_id)
        return None if found is None else found[1]

    def learn(self, enrolment_id: UUID, enrolment: Enrolment, order: Order) -> None:
        """Take a record; it wins only if it comes before the one known (same on every replay)."""
        known = self._first.get(enrolment_id)
        if known is None:
            self._first[enrolment_id] = (order, enrolment)
            return
        earlier, (later_at, later) = sorted([known, (order, enrolment)], key=lambda e: e[0])
        self._first[enrolment_id] = earlier
        first = earlier[1]
        differs = first.conflicts(later)
        if differs:
            log.warning(
                "enrolments.conflict_ignored",
                enrolment_id=str(enrolment_id),
                differs=differs,
                partition=later_at[1],
                offset=later_at[2],
                rule="an enrolment id belongs to its first ServiceEnrolled record",
            )


class KafkaEnrolmentDirectory:
    """:class:`~connectors.rest_api.auth.EnrolmentDirectory` that follows the customer-path log."""

    def __init__(
        self,
        settings: HubSettings,
        serializer: EventSerializer | None = None,
        *,
        sync_timeout_s: float = SYNC_TIMEOUT_S,
    ) -> None:
        self._settings = settings
        self._serializer = serializer or build_serializer(settings)
        self._sync_timeout_s = sync_timeout_s
        self._book = EnrolmentBook()
        self._task: asyncio.Task[None] | None = None
        self._offsets: AIOKafkaConsumer | None = None
        self._positions: dict[TopicPartition, int] = {}
        self._progress = asyncio.Condition()
        #: Set once the directory has read the whole log as it was when it started.
        self.caught_up = asyncio.Event()

    def __len__(self) -> int:
        return len(self._book)

    def start(self) -> None:
        self._task = asyncio.create_task(self._follow(), name="enrolment-directory")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task

    def ready(self) -> bool:
        return self.caught_up.is_set()

    async def enrolments(self, enrolment_ids: Collection[UUID]) -> dict[UUID, Enrolment]:
        """The first enrolment of each id in the log as it is now; unknown ids are absent.

        Raises :class:`DirectoryCatchingUp` when the directory cannot read that far in time.
        """
        found = self._known(enrolment_ids)
        if self.caught_up.is_set() and len(found) == len(set(enrolment_ids)):
            return found  # an owner never changes once the directory is current
        await self._sync()
        return self._known(enrolment_ids)

    def _known(self, enrolment_ids: Collection[UUID]) -> dict[UUID, Enrolment]:
        return {i: e for i in enrolment_ids if (e := self._book.get(i)) is not None}

    async def _sync(self) -> None:
        """Wait until the directory has read every record committed before this call."""
        try:
            async with asyncio.timeout(self._sync_timeout_s):
                offsets = self._offsets
                while offsets is None:  # (re)starting: wait for the follower
                    async with self._progress:
                        await self._progress.wait()
                    offsets = self._offsets
                end = await offsets.end_offsets(list(self._positions))
                async with self._progress:
                    await self._progress.wait_for(
                        lambda: all(self._positions.get(tp, 0) >= end[tp] for tp in end)
                    )
        except (TimeoutError, KafkaError) as error:
            log.warning("enrolments.not_current", error=type(error).__name__)
            raise DirectoryCatchingUp(
                "the enrolment directory has not read the log up to now"
            ) from None
        if not self.caught_up.is_set():
            raise DirectoryCatchingUp("the enrolment directory is still reading the log")

    def _learn(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """Take one ServiceEnrolled record of the log."""
        if record.value is None:
            return
        try:
            decoded = self._serializer.decode(record.value)
        except SerdeError as exc:
            log.warning("enrolments.undecodable", reason=str(exc))
            return
        envelope: dict[str, Any] = decoded.record["envelope"]
        payload: dict[str, Any] = decoded.record["payload"]
        enrolment = Enrolment(
            provider_business_id=payload["provider_business_id"],
            subject=envelope["subject"],
            source_system=envelope["source_system"],
            municipality_code=envelope["municipality_code"],
        )
        order = (record.timestamp, record.partition, record.offset)
        self._book.learn(UUID(str(payload["enrolment_id"])), enrolment, order)

    async def _follow(self) -> None:
        """Follow the log; after an error carry on from where reading stopped."""
        while True:
            try:
                await self._read()
            except (KafkaError, LookupError, OSError) as exc:
                log.warning("enrolments.follow_failed", error=str(exc))
                await asyncio.sleep(_RESTART_S)

    async def _read(self) -> None:
        topic = self._settings.topic_customer_path
        partitions = [TopicPartition(topic, p) for p in await partition_ids(self._settings, topic)]
        reader = make_consumer(self._settings, group_id=None)
        # The end a look-up waits for is the high watermark (read_uncommitted), not the last
        # stable offset: a transaction's commit returns to the sink before its markers are on
        # the partitions, so just after a 202 the stable end may not yet include the record.
        # Asked on a connection of its own: on the reader's, a question would queue behind its
        # long-polling fetch (up to fetch_max_wait_ms, 500 ms, per look-up).
        offsets = make_consumer(self._settings, group_id=None, isolation_level="read_uncommitted")
        await reader.start()
        try:
            await offsets.start()
            reader.assign(partitions)
            for tp in partitions:
                if tp in self._positions:
                    reader.seek(tp, self._positions[tp])
                else:
                    await reader.seek_to_beginning(tp)
            start_end = await reader.end_offsets(partitions)  # committed as of the start
            for tp in partitions:
                self._positions[tp] = await reader.position(tp)
            self._offsets = offsets
            while True:
                batches = await reader.getmany(timeout_ms=_POLL_MS, max_records=500)
                for records in batches.values():
                    for record in records:
                        if ("ce_type", _ENROLLED_TYPE) in record.headers:
                            self._learn(record)
                for tp in partitions:
                    self._positions[tp] = await reader.position(tp)
                if not self.caught_up.is_set() and all(
                    self._positions[tp] >= start_end[tp] for tp in partitions
                ):
                    self.caught_up.set()
                    log.info("enrolments.caught_up", enrolments=len(self._book))
                async with self._progress:
                    self._progress.notify_all()
        finally:
            self._offsets = None
            await offsets.stop()
            await reader.stop()
