"""The delivery loop: read one destination's outbox, hand each event to its receiver, settle.

One :class:`DeliveryWorker` per destination, in the consumer group
``<writer_id_prefix>-deliver-<destination>`` on the destination's outbox topic, reading
``read_committed`` (the router writes the outbox in transactions) with manual commits. Four
tasks share the state, on one event loop:

* **fetch**: takes records from the consumer, decodes them (:class:`OutboxDecoder`), builds the
  JSON body once, and registers them with the partition's :class:`PartitionProgress`; a
  record whose person has nothing unsettled before it is due at once. When more than
  ``max_buffered`` records are unsettled, every partition is paused (the consumer keeps its
  group membership) until the backlog halves.
* **dispatch**: one timer heap of due times; among records due now the one fetched first goes
  first (a person's next record, released when their previous one settles, takes its fetch-time
  place), which keeps each partition's lowest unsettled offset, and so what a crash sends
  again, close behind the records delivered. A record waiting for its next retry is an entry in
  the heap, not a sleeping task, so a schedule of seconds to a day holds no task and no
  connection; only ``max_in_flight`` requests run at once. An endpoint whose breaker is open
  parks its due records (no attempt is used); one heap entry per endpoint wakes it for the
  half-open probe, and the probe's success releases everything parked.
* **commit**: every ``commit_interval_s``, each partition's lowest unsettled offset (see
  :mod:`hub.delivery.tracker`). On a rebalance, the revoked partitions' requests in flight
  get a few seconds to finish, their settled progress is committed and their state dropped; a
  request that outlives that wait finishes, but its result is ignored, and the new owner sends
  it again (the receiver drops it by Idempotency-Key).
* **progress**: a structured log line every ``progress_interval_s`` seconds.

Settling: a 2xx delivers. No answer, 408, 409, 429 and 5xx are retried on the destination's
schedule (:class:`~hub.delivery.schedule.RetrySchedule`, Retry-After honoured); any other
status is a dead letter at once, with the receiver's problem text (redacted), as is an event
whose schedule ran out. A dead letter is acknowledged by the broker before its record counts
as settled, and so is the disclosure entry (``disclosures``), so a crash in between sends
the event again rather than losing either.

Personal fields: an outbox record holds the granted ones sealed, as the log does. The
fetch loop gets the data keys of a batch's records in one call (off the loop), and opens
exactly the sealed fields the record holds, in memory, right before it builds the body: the
plaintext exists only there. A key erased or unknown, or a value that does not open (changed,
moved from another event), is a dead letter at once; before every attempt the worker checks
that the person was not forgotten meanwhile. The key keeper not answering is waited out (the
record is asked for again, doubling to a minute), never a dead letter.

Stopping (:meth:`DeliveryWorker.stop`, SIGTERM in ``hub deliver``): no new record is taken or
sent, requests in flight get ``drain_s`` to finish, settled progress is committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import (
    KafkaError,
    KafkaTimeoutError,
    ProducerClosed,
    UnknownTopicOrPartitionError,
)
from aiokafka.structs import ConsumerRecord

from hub.delivery.breaker import BreakerState, CircuitBreaker
from hub.delivery.disclosure import Disclosure, DisclosureLog, DisclosureStatus
from hub.delivery.metrics import DeliveryMetrics
from hub.delivery.schedule import RetrySchedule
from hub.delivery.tracker import PartitionProgress
from hub.delivery.transport import (
    DeliveryRequest,
    DeliveryResult,
    Outcome,
    Transport,
    classify,
    counts_against_breaker,
    json_body,
    static_headers,
)
from hub.kafka.clients import make_consumer, make_producer
from hub.kafka.dead_letters import DeadLetter, DeadLetterStage, with_dead_letter_headers
from hub.kafka.topics import outbox_topic
from hub.logging import get_logger, redact_text
from hub.privacy.fields import SealedFields
from hub.privacy.kek import KekError, KekUnavailable
from hub.privacy.sealing import DataKey, KeyErased, KeyUnknown, SealBroken, SealError
from hub.routing.outbox import (
    KeyPair,
    KeysMisconfigured,
    PersonKeys,
    available_keys,
    granted_values,
    key_unavailable,
    plaintext_restricted,
    processing_restricted,
    restricted,
    restriction_of,
)
from hub.routing.resolve import router_for
from hub.routing.routes import RoutesConfig
from hub.settings import HubSettings

log = get_logger(__name__)

ENDPOINT_HEADER: Final = "hub-endpoint"
ROUTE_HEADER: Final = "hub-route"
#: Label of the one endpoint of a destination without a directory.
SINGLE_ENDPOINT: Final = "-"
_KAFKA_RETRY_S: Final = 1.0
#: Longest a rebalance waits for the revoked partitions' requests in flight.
REVOKE_WAIT_S: Final = 3.0
#: Longest back-off between two tries of a dead letter's write that failed retriably.
_KAFKA_RETRY_MAX_S: Final = 30.0
#: Longest the dispatch loop sleeps without looking at the heap again (a guard, not a tick).
_MAX_WAIT_S: Final = 60.0
#: Longest wait before the data keys of a record are asked for again (the keeper was away).
_KEYS_RETRY_MAX_S: Final = 60.0


class DeliveryFatal(RuntimeError):
    """The worker cannot go on without an operator (e.g. the dead-letter topic refuses
    writes); the message is one line naming the cause, without personal data."""


class DecodedOutbox(Protocol):
    """What the worker reads of a decoded outbox value (``OutboxRecord`` has more)."""

    @property
    def type_name(self) -> str: ...

    @property
    def record(self) -> dict[str, Any]: ...


class OutboxDecoder(Protocol):
    """``OutboxCodec`` of :mod:`hub.routing.outbox`; any decoder of the outbox values."""

    def decode(self, data: bytes) -> DecodedOutbox: ...


@dataclass(frozen=True, slots=True)
class DeliveryTarget:
    """What the loop needs of one destination; the CLI builds it from the routes' Destination.

    ``transport_for(endpoint_key)`` gives the transport of one endpoint (None: the
    destination's single endpoint); KeyError when the destination has no such endpoint.
    """

    name: str
    schedule: RetrySchedule
    breaker_failures: int
    breaker_open_s: float
    transport_for: Callable[[str | None], Transport]

    def __post_init__(self) -> None:
        # The breaker's retry time is a due time of the timer heap: refuse what would make it
        # NaN or infinite here, at start-up, rather than per endpoint at the first record.
        if not math.isfinite(self.breaker_open_s) or self.breaker_open_s < 0:
            raise ValueError(f"{self.name}: breaker_open_s must be finite and >= 0")
        if self.breaker_failures < 1:
            raise ValueError(f"{self.name}: breaker_failures must be at least 1")


@dataclass(frozen=True, slots=True)
class Settlement:
    """A settled record, for the disclosure log: what went (or did not) to whom, and why."""

    destination: str
    endpoint: str | None
    event_id: str
    event_type: str
    subject: str | None
    route: str | None
    status: str
    """``delivered`` or ``dead-lettered``."""
    attempts: int
    first_attempt_at: datetime | None
    last_attempt_at: datetime | None
    partition: int
    offset: int
    record: dict[str, Any] | None
    """The projected record that was sent (None when it could not be decoded)."""
    headers: Sequence[tuple[str, bytes]]


class DisclosureSink(Protocol):
    """Where settled records go for the disclosure log (:class:`RoutedDisclosures`)."""

    async def record(self, settlement: Settlement) -> None:
        """Resolves once the entry is durable; raises when it could not be written."""
        ...

    def release(self, partition: int) -> None:
        """The worker lost the partition: forget what is cached about its chain."""
        ...

    def assign(self, partition: int) -> None:
        """The worker got the partition: its chain's head is re-read before the next entry."""
        ...


class RoutedDisclosures:
    """:class:`DisclosureSink` onto the :class:`~hub.delivery.disclosure.DisclosureLog`.

    The fields and legal bases of an entry are those the route granted for the (route,
    destination, type), taken from the same compiled projection the router used, so the
    receipt names exactly what the derived schema lets through. A record that never left the
    hub (undecodable, unknown endpoint: no attempt) discloses nothing and writes no entry; its
    dead letter is its record.
    """

    def __init__(self, log: DisclosureLog, config: RoutesConfig, destination: str) -> None:
        self.log = log
        self.config = config
        self.destination = destination
        self._router = router_for(config)

    async def record(self, settlement: Settlement) -> None:
        if settlement.attempts == 0:
            return
        fields: tuple[str, ...] = ()
        basis: dict[str, str] = {}
        if settlement.route is not None:
            try:
                route = self.config.route(settlement.route)
                compiled = self._router.compiled(
                    route, settlement.destination, settlement.event_type
                )
                fields, basis = tuple(compiled.fields), dict(compiled.legal_basis)
            except (KeyError, ValueError):
                log.warning(
                    "delivery.disclosure_route_unknown",
                    destination=settlement.destination,
                    route=settlement.route,
                )
        now = datetime.now(UTC)
        entry = Disclosure(
            destination=settlement.destination,
            endpoint=settlement.endpoint,
            event_id=settlement.event_id,
            subject=settlement.subject or "",
            event_type=settlement.event_type,
            fields=fields,
            legal_basis=basis,
            status=DisclosureStatus(settlement.status),
            attempts=settlement.attempts,
            first_attempt_at=settlement.first_attempt_at or now,
            last_attempt_at=settlement.last_attempt_at or now,
            route=settlement.route or "",
            outbox_partition=settlement.partition,
            outbox_offset=settlement.offset,
        )
        await self.log.record(entry, settlement.partition)

    def release(self, partition: int) -> None:
        self.log.release(self.destination, partition)

    def assign(self, partition: int) -> None:
        self.log.assign(self.destination, partition)


@dataclass
class DeliveryStats:
    """Counts of one worker since it started (the progress and summary lines)."""

    taken: int = 0
    delivered: int = 0
    duplicates: int = 0
    retried: int = 0
    dead_letters: int = 0
    commits: int = 0


@dataclass(slots=True)
class _Failure:
    stage: DeadLetterStage
    error_class: str
    reason: str
    metric_reason: str
    keep_value: bool = True
    """False: the outbox value holds personal fields in plaintext (a person forgotten since):
    the dead letter points at it (source offset) instead of copying it."""


class _Found:
    """:class:`~hub.privacy.fields.KeyLookup` over keys fetched for a batch."""

    def __init__(self, found: dict[KeyPair, DataKey]) -> None:
        self._found = found

    def data_key(self, subject: str, key_id: Any) -> DataKey:
        key = self._found.get((subject, key_id))
        if key is None:
            raise KeyUnknown(subject, key_id)
        return key


@dataclass(slots=True, eq=False)
class _Pending:
    """One outbox record from fetch until settled."""

    progress: PartitionProgress[_Pending]
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: Sequence[tuple[str, bytes]]
    event_id: str
    type_name: str
    endpoint: str | None
    route: str | None
    subject: str | None
    record: dict[str, Any] | None
    request: DeliveryRequest | None
    recorded_at: float | None
    failure: _Failure | None = None
    fetched_at: float = 0.0
    """Clock time it was fetched: its place in the queue whenever it is due (oldest first)."""
    attempts: int = 0
    first_attempt_at: datetime | None = None
    last_attempt_at: datetime | None = None
    sealed_paths: tuple[str, ...] = ()
    """Granted personal fields that are sealed in the outbox record: opened for the body."""
    pairs: tuple[KeyPair, ...] = ()
    """The data keys they need: (person, key id)."""
    keys_wait_s: float = 0.0
    personal: bool = False
    """The record holds granted personal fields (checked for a restriction before each
    attempt)."""


@dataclass(eq=False)
class _Channel:
    """One endpoint: its transport, its breaker, the records parked while it is open."""

    label: str
    transport: Transport
    breaker: CircuitBreaker
    parked: deque[_Pending] = field(default_factory=deque)
    wake_scheduled: bool = False


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: DeliveryWorker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._worker._on_revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self._worker._on_assigned(list(assigned))


def delivery_group(settings: HubSettings, destination: str) -> str:
    return f"{settings.writer_id_prefix}-deliver-{destination}"


class DeliveryWorker:
    def __init__(
        self,
        settings: HubSettings,
        target: DeliveryTarget,
        decoder: OutboxDecoder,
        *,
        metrics: DeliveryMetrics | None = None,
        disclosures: DisclosureSink | None = None,
        max_in_flight: int | None = None,
        max_buffered: int | None = None,
        commit_interval_s: float = 1.0,
        progress_interval_s: float = 10.0,
        drain_s: float = 10.0,
        instance_id: str | None = None,
        rng: random.Random | None = None,
        keys: PersonKeys | None = None,
        sealed: SealedFields | None = None,
    ) -> None:
        """``disclosures``: every settled record is recorded there (and awaited) before its
        offset may be committed; None writes no disclosure log (tests of the loop alone).
        ``instance_id``: static group membership (KIP-345), so a restarted process with the
        same id gets its partitions back without waiting for the session timeout.
        ``keys``: the person keys the granted sealed fields are opened with, in memory, right
        before the body is built (None: a record with sealed fields is a dead letter)."""
        self.settings = settings
        self.keys = keys
        self._sealed = sealed if sealed is not None else SealedFields()
        self.target = target
        self.decoder = decoder
        self.metrics = metrics or DeliveryMetrics()
        self.disclosures = disclosures
        self.max_in_flight = max_in_flight or settings.delivery_max_in_flight
        self.max_buffered = max_buffered or max(1000, 16 * self.max_in_flight)
        self.commit_interval_s = commit_interval_s
        self.progress_interval_s = progress_interval_s
        self.drain_s = drain_s
        self.instance_id = instance_id
        self.topic = outbox_topic(settings, target.name)
        self.group = delivery_group(settings, target.name)
        self.stats = DeliveryStats()
        self._rng = rng or random.Random()
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._progress: dict[int, PartitionProgress[_Pending]] = {}
        self._channels: dict[str | None, _Channel] = {}
        self._heap: list[tuple[float, int, _Pending | _Channel]] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._task_partition: dict[asyncio.Task[None], int] = {}
        self._revoking: set[int] = set()
        self._paused = False
        self._started_at = time.monotonic()
        self._fatal: str | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to finish (safe from a signal handler via the loop)."""
        self._stopping.set()
        self._wake.set()

    async def run(self) -> DeliveryStats:
        """Deliver until :meth:`stop`; returns the counts. Commits settled progress on the way
        out; raises only when the consumer cannot start at all."""
        group_instance = f"{self.instance_id}-{self.target.name}" if self.instance_id else None
        self._consumer = make_consumer(
            self.settings,
            group_id=self.group,
            group_instance_id=group_instance,
            max_poll_records=500,
            client_id=f"hub-deliver-{self.target.name}",
        )
        self._producer = make_producer(self.settings, client_id=f"hub-deliver-{self.target.name}")
        await self._producer.start()
        try:
            await self._consumer.start()
            self._consumer.subscribe([self.topic], listener=_Rebalance(self))
            log.info(
                "delivery.started",
                destination=self.target.name,
                topic=self.topic,
                group=self.group,
                max_in_flight=self.max_in_flight,
            )
            loops = [
                asyncio.create_task(self._fetch_loop(), name="fetch"),
                asyncio.create_task(self._dispatch_loop(), name="dispatch"),
                asyncio.create_task(self._commit_loop(), name="commit"),
                asyncio.create_task(self._progress_loop(), name="progress"),
            ]
            stopper = asyncio.create_task(self._stopping.wait())
            done, _ = await asyncio.wait([*loops, stopper], return_when=asyncio.FIRST_COMPLETED)
            self._stopping.set()
            self._wake.set()
            for task in loops:
                if task in done and task.exception() is not None:
                    log.error(
                        "delivery.loop_failed",
                        destination=self.target.name,
                        loop=task.get_name(),
                        error=repr(task.exception()),
                    )
            await asyncio.gather(*loops, return_exceptions=True)
            stopper.cancel()
            await self._drain()
            await self._commit()
            self._log_progress("delivery.stopped")
        finally:
            for channel in self._channels.values():
                await channel.transport.aclose()
            await self._consumer.stop()
            await self._producer.stop()
        if self._fatal is not None:
            raise DeliveryFatal(self._fatal)
        return self.stats

    def _fail(self, reason: str) -> None:
        """Stop the worker for good (settled progress is still committed on the way out):
        for a fault that waiting cannot heal, where going on would spin or hold the commit."""
        if self._fatal is None:
            self._fatal = reason
            log.error("delivery.fatal", destination=self.target.name, reason=reason)
        self.stop()

    async def _drain(self) -> None:
        if not self._tasks:
            return
        _, pending = await asyncio.wait(list(self._tasks), timeout=self.drain_s)
        for task in pending:
            task.cancel()
        if pending:
            log.warning(
                "delivery.drain_timeout", destination=self.target.name, abandoned=len(pending)
            )
            await asyncio.gather(*pending, return_exceptions=True)

    # -- rebalance ----------------------------------------------------------------------------

    def _on_assigned(self, assigned: list[TopicPartition]) -> None:
        for tp in assigned:
            self._progress[tp.partition] = PartitionProgress()
            if self.disclosures is not None:
                self.disclosures.assign(tp.partition)
        log.info(
            "delivery.assigned",
            destination=self.target.name,
            partitions=sorted(tp.partition for tp in assigned),
        )

    async def _on_revoked(self, revoked: list[TopicPartition]) -> None:
        """Let the revoked partitions' requests in flight finish (a few seconds at most, the
        group waits meanwhile), commit what is settled, drop the rest: every record past the
        commit is sent again by the new owner, so finishing first saves duplicates."""
        partitions = {tp.partition for tp in revoked}
        self._revoking |= partitions
        busy = [task for task, partition in self._task_partition.items() if partition in partitions]
        if busy:
            await asyncio.wait(busy, timeout=min(self.drain_s, REVOKE_WAIT_S))
        self._revoking -= partitions
        await self._commit(sorted(partitions))
        for tp in revoked:
            self._progress.pop(tp.partition, None)
            if self.disclosures is not None:
                self.disclosures.release(tp.partition)
        self._purge_stale()
        self._paused = False  # the new assignment starts unpaused
        log.info(
            "delivery.revoked",
            destination=self.target.name,
            partitions=sorted(tp.partition for tp in revoked),
        )

    def _is_current(self, item: _Pending) -> bool:
        return self._progress.get(item.partition) is item.progress

    def _purge_stale(self) -> None:
        """Drop the records of partitions no longer owned from the heap and the parked
        queues: a retry entry can be due hours away and holds its body, and backpressure
        (which counts owned partitions only) would not see them pile up over rebalances."""
        kept = [e for e in self._heap if isinstance(e[2], _Channel) or self._is_current(e[2])]
        if len(kept) != len(self._heap):
            self._heap[:] = kept  # the dispatch loop holds this very list
            heapq.heapify(self._heap)
        for channel in self._channels.values():
            if channel.parked:
                channel.parked = deque(i for i in channel.parked if self._is_current(i))
            self._schedule_wake(channel)  # a dropped wake candidate must not strand the rest

    # -- fetch --------------------------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while not self._stopping.is_set():
            self._apply_backpressure()
            try:
                batches = await consumer.getmany(timeout_ms=200, max_records=500)
            except KafkaError as error:
                log.warning(
                    "delivery.fetch_failed", destination=self.target.name, error=repr(error)
                )
                await asyncio.sleep(_KAFKA_RETRY_S)
                continue
            prepared: list[tuple[PartitionProgress[_Pending], int, _Pending]] = []
            for tp, records in batches.items():
                progress = self._progress.get(tp.partition)
                if progress is None:
                    continue  # revoked while the batch was on its way
                for record in records:
                    prepared.append((progress, tp.partition, self._prepare(progress, record)))
            sealed = [item for _, _, item in prepared if item.pairs and item.failure is None]
            if sealed:
                await self._open_sealed(sealed)  # one look-up for the batch's data keys
            now = time.monotonic()
            for progress, partition, item in prepared:
                if self._progress.get(partition) is not progress:
                    continue  # revoked while the keys were fetched
                item.fetched_at = now
                self.stats.taken += 1
                if progress.take(item.offset, item.key, item):
                    self._push(now, item)
            if batches:
                self._wake.set()

    def _buffered(self) -> int:
        return sum(p.buffered for p in self._progress.values())

    def _apply_backpressure(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        buffered = self._buffered()
        if not self._paused and buffered >= self.max_buffered:
            consumer.pause(*consumer.assignment())
            self._paused = True
        elif self._paused and buffered <= self.max_buffered // 2:
            consumer.resume(*consumer.assignment())
            self._paused = False

    def _prepare(
        self, progress: PartitionProgress[_Pending], record: ConsumerRecord[bytes, bytes]
    ) -> _Pending:
        headers = list(record.headers or ())
        found = {k: v for k, v in headers}
        endpoint = _text(found.get(ENDPOINT_HEADER))
        item = _Pending(
            progress=progress,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value or b"",
            headers=headers,
            event_id=_text(found.get("ce_id")) or "",
            type_name=_text(found.get("ce_type")) or "",
            endpoint=endpoint,
            route=_text(found.get(ROUTE_HEADER)),
            subject=None if record.key is None else record.key.decode("utf-8", "replace"),
            record=None,
            request=None,
            recorded_at=None,
        )
        try:
            decoded = self.decoder.decode(item.value)
        except Exception as error:
            item.failure = _Failure(
                DeadLetterStage.DECODE,
                type(error).__name__,
                f"outbox record of {self.topic} could not be decoded: {error}",
                "undecodable",
            )
            return item
        envelope = decoded.record.get("envelope") or {}
        item.record = decoded.record
        item.type_name = decoded.type_name.rsplit(".", 1)[-1]
        item.event_id = str(envelope.get("event_id") or item.event_id)
        recorded = envelope.get("recorded_at")
        if isinstance(recorded, datetime):
            item.recorded_at = recorded.timestamp()
        try:
            self._channel(endpoint)
        except KeyError:
            item.failure = _Failure(
                DeadLetterStage.DELIVER,
                "UnknownEndpoint",
                f"destination {self.target.name} has no endpoint {endpoint!r}",
                "unknown-endpoint",
            )
            return item
        except Exception as error:
            # One endpoint's broken configuration (a secret the signer refuses, say) must not
            # stop the fetch loop, and with it every endpoint of the destination. Its records
            # become dead letters, replayable once it is fixed; the error's class only, since
            # its text may quote the secret.
            log.error(
                "delivery.endpoint_unusable",
                destination=self.target.name,
                endpoint=endpoint or SINGLE_ENDPOINT,
                error_class=type(error).__name__,
            )
            item.failure = _Failure(
                DeadLetterStage.DELIVER,
                "EndpointUnusable",
                f"destination {self.target.name} endpoint {endpoint or SINGLE_ENDPOINT}: "
                f"transport could not be built ({type(error).__name__})",
                "endpoint-unusable",
            )
            return item
        subject = envelope.get("subject")
        fields = self._sealed.fields(item.type_name)
        values = (
            granted_values(decoded.record, str(subject), [(f.path, f.parts) for f in fields])
            if fields
            else None
        )
        if values is not None:
            item.personal = True
            hold = self._restriction(item)
            if hold is not None:
                item.failure = hold
                return item
            if values.broken:
                broken = SealBroken("a sealed value is cut short or not of format A5 01")
                item.failure = self._key_failure(item, values.broken, broken)
                return item
            if values.plain and self.keys is not None:
                mark = self.keys.forgotten(str(subject))
                if mark is not None and restricted(mark, decoded.record):
                    why = plaintext_restricted(item.route, self.target.name, values.plain, mark)
                    item.failure = _Failure(
                        DeadLetterStage.DELIVER,
                        why.error_class,
                        why.reason + "; the value is not copied (plaintext): the outbox keeps "
                        "it at the source offset",
                        "personal-data-restricted",
                        keep_value=False,
                    )
                    return item
            if values.pairs:
                item.sealed_paths, item.pairs = values.sealed, values.pairs
                return item  # the body is built once the keys are here (_open_sealed)
        item.request = self._request(item, decoded.record)
        return item

    def _request(self, item: _Pending, record: dict[str, Any]) -> DeliveryRequest:
        return DeliveryRequest(
            event_id=item.event_id,
            type_name=item.type_name,
            body=json_body(item.type_name, record),
            headers=static_headers(item.event_id),
        )

    def _key_failure(
        self,
        item: _Pending,
        paths: Iterable[str],
        error: BaseException,
    ) -> _Failure:
        mark = None
        if self.keys is not None and item.subject is not None:
            with contextlib.suppress(Exception):
                mark = self.keys.forgotten(item.subject)
        why = key_unavailable(item.route, self.target.name, tuple(paths), error, mark)
        metric = {
            "PersonalDataErased": "personal-data-erased",
            "DataKeyUnknown": "data-key-unknown",
            "SealBroken": "seal-broken",
        }.get(why.error_class, "data-key-unreadable")
        return _Failure(DeadLetterStage.DELIVER, why.error_class, why.reason, metric)

    async def _open_sealed(self, items: Sequence[_Pending]) -> None:
        """Fetch the data keys of ``items`` in one batch (off the loop: a remote keeper may
        answer slowly), open exactly their granted sealed fields in memory and build the
        bodies; the plaintext exists only in the body. A key erased or unknown: a dead
        letter with the reason. The keeper unreachable: the items wait (no request yet) and
        are tried again later, never dead-lettered for it."""
        if self.keys is None:
            for item in items:
                item.failure = self._key_failure(
                    item,
                    item.sealed_paths,
                    KekError("this delivery worker was started without access to the keys"),
                )
            return
        pairs = [pair for item in items for pair in item.pairs]
        try:
            found, failed = await asyncio.to_thread(available_keys, self.keys, pairs)
        except KeysMisconfigured as error:
            # This worker's own configuration (a keyring without the KEK id, a token refused):
            # waited out like the keeper away, one error line naming what is missing.
            log.error(
                "delivery.keys_misconfigured",
                destination=self.target.name,
                records=len(items),
                error=redact_text(str(error)),
            )
            return
        except KekUnavailable as error:
            log.warning(
                "delivery.keys_unavailable",
                destination=self.target.name,
                records=len(items),
                error_class=type(error).__name__,
            )
            return
        lookup = _Found(found)
        for item in items:
            problem = next((failed[p] for p in item.pairs if p in failed), None)
            if problem is not None:
                item.failure = self._key_failure(item, item.sealed_paths, problem)
                continue
            assert item.record is not None
            opened = self._sealed.open(item.type_name, item.record, lookup, item.sealed_paths)
            if opened.failed:
                why: SealError = opened.error or SealBroken("a sealed value does not open")
                item.failure = self._key_failure(item, opened.failed, why)
                continue
            item.request = self._request(item, opened.record)

    async def _await_keys(self, item: _Pending) -> None:
        """A record whose keys the keeper did not give (unreachable): ask again, later."""
        await self._open_sealed([item])
        if not self._is_current(item):
            return
        if item.request is None and item.failure is None:
            item.keys_wait_s = min(max(1.0, 2 * item.keys_wait_s), _KEYS_RETRY_MAX_S)
            self._push(time.monotonic() + item.keys_wait_s, item)
        else:
            self._push(item.fetched_at, item)

    def _erased_since(self, item: _Pending) -> KeyErased | None:
        """A key the body was opened with was erased since (a record waiting for its retry):
        the body is not sent. Erased as the key directory says, by the key record's place
        before the forgotten marker, not by comparing two hosts' clocks."""
        if self.keys is None:
            return None
        for subject, key_id in item.pairs:
            if self.keys.is_erased(subject, key_id):
                mark = self.keys.forgotten(subject)
                return KeyErased(subject, key_id, mark.forgotten_at if mark else None)
        return None

    def _channel(self, endpoint: str | None) -> _Channel:
        channel = self._channels.get(endpoint)
        if channel is None:
            channel = _Channel(
                label=endpoint or SINGLE_ENDPOINT,
                transport=self.target.transport_for(endpoint),
                breaker=CircuitBreaker(self.target.breaker_failures, self.target.breaker_open_s),
            )
            self._channels[endpoint] = channel
            self._breaker_gauge(channel)
        return channel

    # -- dispatch -----------------------------------------------------------------------------

    def _push(self, due: float, entry: _Pending | _Channel) -> None:
        if not math.isfinite(due):
            # Cannot come from a validated schedule or breaker; if it ever does, a NaN at
            # the heap's top would stop the whole destination, so try again in a minute.
            log.error("delivery.non_finite_due", destination=self.target.name)
            due = time.monotonic() + _MAX_WAIT_S
        if not self._heap or due < self._heap[0][0]:
            self._wake.set()
        heapq.heappush(self._heap, (due, next(self._seq), entry))

    async def _dispatch_loop(self) -> None:
        heap = self._heap
        while not self._stopping.is_set():
            now = time.monotonic()
            while heap and heap[0][0] <= now and len(self._tasks) < self.max_in_flight:
                _, _, entry = heapq.heappop(heap)
                if isinstance(entry, _Channel):
                    self._wake_channel(entry, now)
                elif self._is_current(entry) and entry.partition not in self._revoking:
                    self._dispatch(entry)
            self.metrics.in_flight.labels(self.target.name).set(len(self._tasks))
            timeout: float | None = None
            if heap and len(self._tasks) < self.max_in_flight:
                # Finite and positive: the top was just popped if due, so it lies ahead; the
                # floor and the ceiling guard against a busy spin whatever is in the heap.
                timeout = heap[0][0] - time.monotonic()
                timeout = min(max(timeout, 0.001), _MAX_WAIT_S) if math.isfinite(timeout) else 1.0
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _dispatch(self, item: _Pending) -> None:
        if item.failure is not None:
            self._start(self._dead_letter(item), item.partition)
            return
        if item.request is None:
            self._start(self._await_keys(item), item.partition)
            return
        channel = self._channels[item.endpoint]
        if not channel.breaker.allow():
            channel.parked.append(item)
            self._schedule_wake(channel)
            self._breaker_gauge(channel)
            return
        self._breaker_gauge(channel)
        self._start(self._attempt(item, channel), item.partition)

    def _schedule_wake(self, channel: _Channel) -> None:
        """One heap entry per channel with parked records, at the breaker's retry time.

        Called whenever a record parks and whenever the breaker (re)opens: a failed probe
        re-opens it with records parked, and they must wait ``breaker_open_s``, not the
        probe's own next retry step (hours, or never when the probe is dead-lettered)."""
        if channel.parked and not channel.wake_scheduled:
            channel.wake_scheduled = True
            self._push(channel.breaker.retry_at(), channel)

    def _wake_channel(self, channel: _Channel, now: float) -> None:
        """The breaker's open time is over: let the first parked record go as the probe."""
        channel.wake_scheduled = False
        while channel.parked and not self._is_current(channel.parked[0]):
            channel.parked.popleft()
        if channel.parked:
            probe = channel.parked.popleft()
            self._push(min(now, probe.fetched_at), probe)
        # The candidate either goes as the probe (its answer closes the breaker or re-opens
        # it, which schedules the next wake) or finds it taken and parks again (which does).
        if channel.breaker.state is BreakerState.OPEN:
            self._schedule_wake(channel)

    def _release_parked(self, channel: _Channel) -> None:
        while channel.parked:
            item = channel.parked.popleft()
            if self._is_current(item):
                self._push(item.fetched_at, item)

    def _start(self, work: Awaitable[None], partition: int) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._tasks.add(task)
        self._task_partition[task] = partition
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._task_partition.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "delivery.task_failed", destination=self.target.name, error=repr(task.exception())
            )
        self._wake.set()

    def _breaker_gauge(self, channel: _Channel) -> None:
        self.metrics.breaker_state.labels(self.target.name, channel.label).set(
            int(channel.breaker.state)
        )

    # -- one attempt --------------------------------------------------------------------------

    def _restriction(self, item: _Pending) -> _Failure | None:
        """The dead letter of a record of a person whose processing is restricted (GDPR art.
        18), or None. Its value (sealed, or plaintext: then not copied) is held back; lifting
        the restriction and replaying the letter delivers it."""
        if self.keys is None or item.subject is None or item.record is None:
            return None
        mark = restriction_of(self.keys, item.subject)
        if mark is None:
            return None
        fields = self._sealed.fields(item.type_name)
        values = granted_values(item.record, item.subject, [(f.path, f.parts) for f in fields])
        paths = () if values is None else (*values.sealed, *values.plain, *values.broken)
        why = processing_restricted(item.route, self.target.name, paths, mark)
        return _Failure(
            DeadLetterStage.DELIVER,
            why.error_class,
            why.reason
            + (
                "; the value is not copied (plaintext): the outbox keeps it at the source offset"
                if values is not None and values.plain
                else ""
            ),
            "personal-data-restricted",
            keep_value=values is None or not values.plain,
        )

    async def _attempt(self, item: _Pending, channel: _Channel) -> None:
        assert item.request is not None
        if item.personal:
            hold = self._restriction(item)
            if hold is not None:  # restricted while the record waited (after routing)
                item.request = None  # the opened body goes with it
                item.failure = hold
                await self._dead_letter(item)
                return
        erased = self._erased_since(item)
        if erased is not None:
            item.request = None  # the opened body goes with it
            item.failure = self._key_failure(item, item.sealed_paths, erased)
            await self._dead_letter(item)
            return
        item.attempts += 1
        item.last_attempt_at = datetime.now(UTC)
        if item.first_attempt_at is None:
            item.first_attempt_at = item.last_attempt_at
        try:
            result = await channel.transport.send(item.request)
        except Exception as error:  # a transport bug must not stop the loop
            log.error("delivery.transport_error", destination=self.target.name, error=repr(error))
            result = DeliveryResult.no_answer(error)
        outcome = classify(result)
        breaker = channel.breaker
        labels = (self.target.name, channel.label)
        if outcome is Outcome.RETRY and counts_against_breaker(result):
            was = breaker.state
            breaker.record_failure()
            if breaker.state is BreakerState.OPEN and was is not BreakerState.OPEN:
                log.warning(
                    "delivery.breaker_open",
                    destination=self.target.name,
                    endpoint=channel.label,
                    status=result.status,
                    open_s=breaker.open_s,
                )
            if breaker.state is BreakerState.OPEN:
                self._schedule_wake(channel)
        else:
            was = breaker.state
            breaker.record_success()
            if was is not BreakerState.CLOSED:
                log.info(
                    "delivery.breaker_closed", destination=self.target.name, endpoint=channel.label
                )
            self._release_parked(channel)
        self._breaker_gauge(channel)
        if outcome is Outcome.DELIVERED:
            self.stats.delivered += 1
            self.metrics.delivered.labels(*labels).inc()
            if result.duplicate:
                self.stats.duplicates += 1
                self.metrics.duplicates.labels(*labels).inc()
            if item.recorded_at is not None:
                self.metrics.latency.labels(*labels).observe(
                    max(0.0, time.time() - item.recorded_at)
                )
            await self._settle(item, "delivered")
            return
        reason = "no-answer" if result.status is None else str(result.status)
        if outcome is Outcome.REFUSED:
            item.failure = _Failure(
                DeadLetterStage.DELIVER,
                f"HTTP{result.status}",
                f"receiver answered {result.status}: {result.problem or 'no problem text'}",
                "refused",
            )
            await self._dead_letter(item)
            return
        delay = self.target.schedule.delay_after(item.attempts, result.retry_after_s, self._rng)
        if delay is None:
            item.failure = _Failure(
                DeadLetterStage.DELIVER,
                "RetriesExhausted",
                f"no 2xx after {item.attempts} attempts; last answer "
                f"{result.status if result.status is not None else 'none'}: "
                f"{result.problem or 'no problem text'}",
                "exhausted",
            )
            await self._dead_letter(item)
            return
        self.stats.retried += 1
        self.metrics.retried.labels(*labels, reason).inc()
        if self._is_current(item):
            self._push(time.monotonic() + delay, item)

    async def _dead_letter(self, item: _Pending) -> None:
        if not self._is_current(item):
            return  # the partition moved on: its new owner decides again, from the same record
        failure = item.failure
        assert failure is not None
        assert self._producer is not None
        letter = DeadLetter(
            stage=failure.stage,
            error_class=failure.error_class,
            reason=failure.reason,
            source_topic=self.topic,
            source_partition=item.partition,
            source_offset=item.offset,
            attempts=item.attempts,
            first_attempt_at=item.first_attempt_at,
            last_attempt_at=item.last_attempt_at,
            destination=self.target.name,
            event_id=item.event_id or None,
            event_type=item.type_name or None,
        )
        headers = with_dead_letter_headers(list(item.headers), letter)
        value = item.value if failure.keep_value else None
        backoff = _KAFKA_RETRY_S
        while True:
            try:
                await self._producer.send_and_wait(
                    self.settings.topic_dead_letter, value=value, key=item.key, headers=headers
                )
                break
            except KafkaError as error:
                if self._stopping.is_set() and isinstance(error, ProducerClosed):
                    return  # shutting down: the record is sent again after the restart
                if not await self._dead_letter_retriable(error):
                    # Waiting cannot heal it (no such topic, not authorized, too large): a
                    # retry loop would hold the slot and the partition's commit for good.
                    self._fail(
                        f"dead letter of {self.topic}/{item.partition}/{item.offset} cannot be "
                        f"written to {self.settings.topic_dead_letter}: {type(error).__name__}"
                    )
                    return
                if not self._is_current(item) or self._stopping.is_set():
                    return  # the new owner of the partition (or the restart) will do it
                log.warning(
                    "delivery.dead_letter_write_failed",
                    destination=self.target.name,
                    error=repr(error),
                    retry_in_s=backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _KAFKA_RETRY_MAX_S)
        self.stats.dead_letters += 1
        self.metrics.dead_letters.labels(
            self.target.name, item.endpoint or SINGLE_ENDPOINT, failure.metric_reason
        ).inc()
        log.warning(
            "delivery.dead_letter",
            destination=self.target.name,
            event_id=item.event_id,
            event_type=item.type_name,
            reason=failure.metric_reason,
            error_class=failure.error_class,
            attempts=item.attempts,
            partition=item.partition,
            offset=item.offset,
        )
        await self._settle(item, "dead-lettered")

    async def _dead_letter_retriable(self, error: KafkaError) -> bool:
        """Whether a failed dead-letter write may succeed later.

        Kafka's own flag, except: a delivery timeout (``KafkaTimeoutError``) is the broker
        being away, so it is worth waiting for; an unknown topic is flagged retriable (its
        metadata may be on the way), so ask the broker whether the topic exists at all."""
        if isinstance(error, KafkaTimeoutError):
            return True
        if isinstance(error, UnknownTopicOrPartitionError):
            consumer = self._consumer
            if consumer is None:
                return True
            try:
                topics = await consumer.topics()
            except KafkaError:
                return True  # the broker is away: wait for it
            return self.settings.topic_dead_letter in topics
        return bool(getattr(error, "retriable", False))

    async def _settle(self, item: _Pending, status: str) -> None:
        if not self._is_current(item):
            return  # revoked meanwhile: the new owner sends it again and writes the receipt
        if self.disclosures is not None:
            settlement = Settlement(
                destination=self.target.name,
                endpoint=item.endpoint,
                event_id=item.event_id,
                event_type=item.type_name,
                subject=item.subject,
                route=item.route,
                status=status,
                attempts=item.attempts,
                first_attempt_at=item.first_attempt_at,
                last_attempt_at=item.last_attempt_at,
                partition=item.partition,
                offset=item.offset,
                record=item.record,
                headers=item.headers,
            )
            while True:
                try:
                    await self.disclosures.record(settlement)
                    break
                except Exception as error:  # the log's write failed: settle only once it is in
                    if not self._is_current(item):
                        return
                    log.warning(
                        "delivery.disclosure_write_failed",
                        destination=self.target.name,
                        error=repr(error),
                    )
                    await asyncio.sleep(_KAFKA_RETRY_S)
        if not self._is_current(item):
            return
        following = item.progress.settle(item.offset, item.key)
        if following is not None:
            # Due since it was fetched: it goes before records fetched after it, so the
            # partition's lowest unsettled offset (what a crash sends again) stays close behind.
            self._push(following.fetched_at, following)

    # -- commit and progress ------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(self._stopping.wait(), self.commit_interval_s)
            except TimeoutError:
                await self._commit()

    async def _commit(self, partitions: Iterable[int] | None = None) -> None:
        consumer = self._consumer
        assert consumer is not None
        chosen = self._progress.keys() if partitions is None else partitions
        due: dict[TopicPartition, int] = {}
        for partition in list(chosen):
            progress = self._progress.get(partition)
            offset = None if progress is None else progress.commit_due()
            if offset is not None:
                due[TopicPartition(self.topic, partition)] = offset
        if not due:
            return
        try:
            await consumer.commit(due)
        except KafkaError as error:
            # Rebalancing, or the broker is away: the next commit carries the same offsets.
            log.warning("delivery.commit_failed", destination=self.target.name, error=repr(error))
            return
        self.stats.commits += 1
        for tp, offset in due.items():
            progress = self._progress.get(tp.partition)
            if progress is not None:
                progress.mark_committed(offset)

    async def _progress_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(self._stopping.wait(), self.progress_interval_s)
            except TimeoutError:
                self._log_progress("delivery.progress")

    def lag(self) -> dict[int, int]:
        """Per assigned partition: log end (high watermark) minus the committable offset."""
        consumer = self._consumer
        result: dict[int, int] = {}
        if consumer is None:
            return result
        for partition, progress in self._progress.items():
            end = consumer.highwater(TopicPartition(self.topic, partition))
            if end is None:
                continue
            at = progress.committable()
            result[partition] = max(0, end - (at if at is not None else end))
        return result

    def _log_progress(self, event: str) -> None:
        lag = self.lag()
        for partition, behind in lag.items():
            self.metrics.consumer_lag.labels(self.target.name, str(partition)).set(behind)
        buffered = self._buffered()
        self.metrics.buffered.labels(self.target.name).set(buffered)
        stats = self.stats
        log.info(
            event,
            destination=self.target.name,
            taken=stats.taken,
            delivered=stats.delivered,
            duplicates=stats.duplicates,
            retried=stats.retried,
            dead_letters=stats.dead_letters,
            in_flight=len(self._tasks),
            buffered=buffered,
            scheduled=len(self._heap),
            parked=sum(len(c.parked) for c in self._channels.values()),
            open_breakers=sum(
                1 for c in self._channels.values() if c.breaker.state is not BreakerState.CLOSED
            ),
            partitions=sorted(self._progress),
            lag=sum(lag.values()),
            paused=self._paused,
            uptime_s=round(time.monotonic() - self._started_at, 1),
        )


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "replace")
