"""The Kafka event sink: each submission's event and its receipt in one transaction.

Exactly once per dedupe key, across crashes, retries and replicas: the event goes to the
customer-path log and a receipt (dedupe key → event id, request digest) to a compacted receipts
topic in the same Kafka transaction, together with a source connector's position when it sends
one. Readers use read_committed, so a transaction cut short by a crash shows none of it.

Receipts. Every sink FOLLOWS the receipts topic (read_committed) into a SQLite file under
``HUB_STATE_DIR`` (:mod:`hub.sink.receipt_store`): memory stays bounded, and a restart reads
only the records after the position the file remembers. Following happens in a task of its own,
never inside a write's timeout, so a large topic cannot livelock writes.

Replicas. Several processes may write side by side, each with its own transactional id (two
with one id fence each other). A retry that lands on another replica must be answered, not
written again, so before a write that holds a key it does not know, a sink takes the receipts
topic's high watermark and waits until its follower has read past it: every receipt committed
before, including one of a transaction still open on another replica when the retry arrived,
is then known. A write never goes out before that catch-up succeeded (else 503, nothing
written). The one window left is two replicas receiving the same new key at the same instant,
neither's write committed yet: both write it, with the same event id (derived from the key or
sent by the client), which receivers drop by event id. Routing each key to one owner would close
it, at the price of a forwarding hop per request and of ownership hand-over on failures.

Concurrent submissions are written together: a single writer task takes whatever is queued and
commits it as one transaction. Every call is settled and encoded BEFORE the transaction begins,
so a call that is refused (conflict, taken event id) or whose event cannot be encoded fails
alone with its own error while the others of the batch are written; any failure inside the
transaction drops the producer, and the next one (same id) fences it, aborting what was open.

Encryption at the edge. Before a batch is encoded, the data keys of the persons of every
submission the receipts do not answer are had in ONE call of the person-keys store
(:func:`~hub.sink.sealing.ensure_keys`; a new key is acknowledged in its compacted topic before
the call returns), and every event's personal fields are sealed with its own person's key. Keys
that cannot be had (key topic down, the key-encryption keeper down, a timeout) fail the whole
batch with :class:`~hub.sink.sealing.KeysUnavailable` (a SinkUnavailable): nothing is written,
never in plaintext. A crash after a key was stored and before the events were committed leaves
the key without values (harmless); the retry finds and reuses it. The sink follows the
person-keys topic itself (``KafkaPersonKeys``, started with it) unless given ``person_keys``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Coroutine, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from hub.kafka.clients import make_consumer, make_producer
from hub.kafka.probe import broker_answers
from hub.kafka.reading import read_topic
from hub.kafka.topics import partition_ids
from hub.privacy.sealing import DataKey
from hub.serde import ConfluentSerializer, EventSerializer, build_serializer
from hub.settings import HubSettings
from hub.sink.base import (
    Receipt,
    ReceiptBook,
    Settled,
    SinkUnavailable,
    SourcePosition,
    Submission,
    SubmissionRefused,
    Unrecorded,
)
from hub.sink.encoding import encode_new, subjects_to_seal
from hub.sink.receipt_store import SqliteReceipts, store_path
from hub.sink.sealing import PersonKeys, ensure_keys, start_person_keys

log = structlog.get_logger(__name__)

MAX_TRANSACTION_SUBMISSIONS = 5000
#: How long the follower's fetch waits for new receipts (bounds the catch-up latency).
_FOLLOW_WAIT_MS = 100

T = TypeVar("T")


@dataclass
class _Pending:
    submissions: Sequence[Submission]
    position: SourcePosition | None = None
    done: asyncio.Future[list[Receipt]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def fail(self, error: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(error)


@dataclass(frozen=True)
class _Record:
    topic: str
    key: bytes
    value: bytes
    headers: Sequence[tuple[str, bytes]] = ()


def encode_receipt(receipt: Receipt) -> bytes:
    return json.dumps(
        {
            "event_id": str(receipt.event_id),
            "request_digest": receipt.request_digest,
            "recorded_at": datetime.now(UTC).isoformat(),
        }
    ).encode()


def encode_position(position: SourcePosition) -> bytes:
    return json.dumps(
        {"position": position.position, "recorded_at": datetime.now(UTC).isoformat()}
    ).encode()


def decode_receipt(key: bytes, value: bytes) -> Receipt:
    body = json.loads(value)
    return Receipt(
        dedupe_key=key.decode(),
        event_id=UUID(body["event_id"]),
        request_digest=body["request_digest"],
        duplicate=True,
    )


def _decoded(records: Iterable[ConsumerRecord[bytes, bytes]]) -> list[Receipt]:
    """The receipts among ``records``; one that cannot be read is logged (by offset) and skipped.

    Only the hub writes the topic, so such a record is a bug or tampering, not a reason to stop
    following (every write would then be refused).
    """
    receipts = []
    for record in records:
        if record.key is None or record.value is None:
            continue
        try:
            receipts.append(decode_receipt(record.key, record.value))
        except (ValueError, KeyError, TypeError):
            log.error("ingest.receipt_unreadable", partition=record.partition, offset=record.offset)
    return receipts


async def _bounded(work: Coroutine[Any, Any, T], timeout_s: float) -> T:
    """``work`` within ``timeout_s``, else TimeoutError once it has really stopped.

    Unlike ``asyncio.timeout`` this survives aiokafka's shielded waits: a transaction context
    that aborts on cancellation waits (shielded) for the broker, so it is cancelled again until
    it gives up.
    """
    task = asyncio.ensure_future(work)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if done:
        return task.result()
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
    with suppress(BaseException):
        task.result()
    raise TimeoutError(f"not done within {timeout_s:g} s")


class ReceiptFollower:
    """Reads the receipts topic (read_committed) into the store, and says how far it has read."""

    def __init__(self, settings: HubSettings, store: SqliteReceipts) -> None:
        self._settings = settings
        self._store = store
        self._positions: dict[int, int] = {}
        self._moved = asyncio.Condition()
        self._latest: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []
        self._task: asyncio.Task[None] | None = None
        self.caught_up_once = asyncio.Event()
        self.following = False
        #: Receipt records read from the topic by this follower (a restart reads only new ones).
        self.records_read = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="kafka-sink-receipts")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task

    async def catch_up(self, timeout_s: float) -> None:
        """Return once every receipt up to the topic's current high watermark is read.

        The high watermark includes transactions still open: waiting for them makes a retry of
        a write still under way on another replica a duplicate, not a second event.
        """
        latest = self._latest
        if latest is None or not self.following:
            raise SinkUnavailable(
                f"the receipts in {self._settings.topic_ingest_receipts} are not being read "
                "(Kafka not reachable); nothing was written, retry later"
            )
        try:
            async with asyncio.timeout(timeout_s):
                target = await latest.end_offsets(self._partitions)
                async with self._moved:
                    await self._moved.wait_for(
                        lambda: all(
                            self._positions.get(tp.partition, -1) >= offset
                            for tp, offset in target.items()
                        )
                    )
        except (KafkaError, TimeoutError, OSError) as exc:
            raise SinkUnavailable(
                f"the receipts in {self._settings.topic_ingest_receipts} could not be caught "
                f"up within {timeout_s:g} s ({type(exc).__name__}; still reading, or another "
                "writer's transaction is open); nothing was written, retry later",
                retry_after_s=_retry_after(timeout_s),
            ) from exc

    async def _run(self) -> None:
        while True:
            try:
                await self._follow()
            except (KafkaError, OSError, LookupError) as exc:
                log.warning("ingest.receipts_follow_failed", error=type(exc).__name__)
            except Exception:  # a bug must not end following for good: writes would stay 503
                log.exception("ingest.receipts_follow_crashed")
            await asyncio.sleep(1.0)

    async def _follow(self) -> None:
        topic = self._settings.topic_ingest_receipts
        partitions = [TopicPartition(topic, p) for p in await partition_ids(self._settings, topic)]
        consumer = make_consumer(self._settings, group_id=None, fetch_max_wait_ms=_FOLLOW_WAIT_MS)
        latest = make_consumer(self._settings, group_id=None, isolation_level="read_uncommitted")
        try:
            await consumer.start()
            await latest.start()
            consumer.assign(partitions)
            end = await consumer.end_offsets(partitions)
            stored = self._store.positions()
            ids = {tp.partition for tp in partitions}
            if set(stored) - ids or any(stored.get(tp.partition, 0) > end[tp] for tp in end):
                log.warning("ingest.receipts_store_reset", topic=topic, store=str(self._store.path))
                self._store.clear()
                stored = {}
            for tp in partitions:
                if tp.partition in stored:
                    consumer.seek(tp, stored[tp.partition])
                else:
                    await consumer.seek_to_beginning(tp)
            self._partitions, self._latest, self.following = partitions, latest, True
            while True:
                batches = await consumer.getmany(timeout_ms=_FOLLOW_WAIT_MS, max_records=5000)
                receipts = _decoded(record for records in batches.values() for record in records)
                positions = {tp.partition: await consumer.position(tp) for tp in partitions}
                self._store.add(receipts, positions)
                self.records_read += len(receipts)
                async with self._moved:
                    self._positions = positions
                    self._moved.notify_all()
                if not self.caught_up_once.is_set() and all(
                    positions[tp.partition] >= end[tp] for tp in partitions
                ):
                    log.info("ingest.receipts_caught_up", receipts=len(self._store), topic=topic)
                    self.caught_up_once.set()
        finally:
            self._latest, self.following = None, False
            for client in (consumer, latest):
                with suppress(Exception):
                    await client.stop()


class KafkaEventSink:
    """:class:`~hub.sink.EventSink` on Kafka transactions (see the module docstring)."""

    def __init__(
        self,
        settings: HubSettings,
        serializer: EventSerializer | None = None,
        person_keys: PersonKeys | None = None,
    ) -> None:
        self._settings = settings
        self._serializer = serializer or build_serializer(settings)
        #: The data keys events are sealed with; None until start() when the sink owns them.
        self._person_keys = person_keys
        self._owns_keys = person_keys is None
        self._store = SqliteReceipts(store_path(settings.state_dir, settings.topic_ingest_receipts))
        self._receipts = ReceiptBook(self._store)
        self._follower = ReceiptFollower(settings, self._store)
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._producer: AIOKafkaProducer | None = None
        self._writer: asyncio.Task[None] | None = None

    @property
    def known_receipts(self) -> int:
        return len(self._receipts)

    async def start(self) -> None:
        """Fence any earlier writer with this transactional id, then read the receipts up to now.

        Fencing first makes Kafka finish (commit or abort) a transaction a killed predecessor
        left open, so it does not hold the receipts back. Reading is not bounded by the write
        timeout: it makes progress, and after a restart reads only what the store lacks.
        """
        if isinstance(self._serializer, ConfluentSerializer):
            await self._serializer.aprepare()  # encoding never waits for the registry
        if self._person_keys is None:
            self._person_keys = await start_person_keys(self._settings)
        await self._ready_producer()  # unbounded: a new cluster creates its transaction log
        self._follower.start()
        self._writer = asyncio.create_task(self._write_loop(), name="kafka-sink-writer")
        await self._follower.caught_up_once.wait()

    async def stop(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with suppress(asyncio.CancelledError):
                await self._writer
        with suppress(SinkUnavailable):  # store this sink's own last writes' position too
            await self._follower.catch_up(2.0)
        await self._follower.stop()
        await self._close_producer()
        self._store.close()
        keys, owned = self._person_keys, self._owns_keys
        if owned and keys is not None and hasattr(keys, "close"):
            self._person_keys = None
            with suppress(Exception):
                await asyncio.to_thread(keys.close)

    async def ready(self) -> bool:
        """The broker answers, the receipts are read up to (about) now and keys can be had."""
        if not (self._follower.caught_up_once.is_set() and self._follower.following):
            return False
        if self._person_keys is None:
            return False
        return await broker_answers(self._settings, 2.0)

    async def submit(
        self, submissions: Sequence[Submission], position: SourcePosition | None = None
    ) -> list[Receipt]:
        if position is None:
            known = self._receipts.answer(submissions)  # a known key is final: no catch-up
            if known is not None:
                return known
        pending = _Pending(submissions, position)
        await self._queue.put(pending)
        return await pending.done

    async def position_of(self, source: str) -> str | None:
        topic = self._settings.topic_source_positions
        found: str | None = None
        try:
            async for record in read_topic(self._settings, topic):
                if record.key == source.encode():
                    found = None if record.value is None else json.loads(record.value)["position"]
        except (KafkaError, LookupError) as exc:
            raise SinkUnavailable(f"cannot read the source positions in {topic}: {exc}") from exc
        return found

    # -- the single writer ---------------------------------------------------------------------

    async def _write_loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            size = len(batch[0].submissions)
            while not self._queue.empty() and size < MAX_TRANSACTION_SUBMISSIONS:
                batch.append(self._queue.get_nowait())
                size += len(batch[-1].submissions)
            try:
                await self._write(batch)
            except Exception as exc:  # the writer must outlive any one failed batch
                if not isinstance(exc, SinkUnavailable):
                    log.exception("ingest.write_crashed")
                for pending in batch:
                    pending.fail(exc)

    async def _write(self, batch: list[_Pending]) -> None:
        """Settle and encode every call, then one transaction for those that can be written."""
        timeout = self._settings.ingest_write_timeout_s
        await self._bounded_producer()
        # Never write before the receipts are current; caught up AFTER every call of the batch
        # arrived, so a receipt another replica committed before a retry came is known.
        await self._follower.catch_up(timeout)
        # The data keys of every person this batch may write, in one call (nothing written
        # when they cannot be had: KeysUnavailable fails every call of the batch).
        assert self._person_keys is not None, "the sink is not started"
        submissions = [s for pending in batch for s in pending.submissions]
        known = self._store.by_keys({s.dedupe_key for s in submissions})
        keys = await ensure_keys(
            self._person_keys, sorted(subjects_to_seal(submissions, known)), timeout
        )
        unrecorded = Unrecorded()
        staged: list[tuple[_Pending, Settled]] = []
        records: list[_Record] = []
        for pending in batch:
            try:
                settled = self._receipts.settle(pending.submissions, unrecorded)
                call_records = self._records(pending, settled, keys)
            except (SubmissionRefused, SinkUnavailable) as exc:  # this call alone fails
                log.info("ingest.submission_refused", reason=type(exc).__name__)
                pending.fail(exc)
                continue
            except Exception as exc:  # a bug: this call alone fails, the others are written
                log.exception("ingest.submission_crashed")
                pending.fail(exc)
                continue
            unrecorded.add(receipt for _, receipt in settled.new)
            staged.append((pending, settled))
            records.extend(call_records)
        if records:
            await self._commit(records)
            self._receipts.record(r for _, settled in staged for _, r in settled.new)
        for pending, settled in staged:
            if not pending.done.done():
                pending.done.set_result(settled.receipts)

    def _records(
        self, pending: _Pending, settled: Settled, keys: dict[str, DataKey]
    ) -> list[_Record]:
        """The call's records: each event (sealed) and its receipt, then the position if any."""
        records: list[_Record] = []
        events = encode_new(self._serializer, pending.submissions, settled.new, keys)
        for event, (submission, receipt) in zip(events, settled.new, strict=True):
            records.append(
                _Record(self._settings.topic_customer_path, event.key, event.value, event.headers)
            )
            records.append(
                _Record(
                    self._settings.topic_ingest_receipts,
                    submission.dedupe_key.encode(),
                    encode_receipt(receipt),
                )
            )
        if pending.position is not None:
            records.append(
                _Record(
                    self._settings.topic_source_positions,
                    pending.position.source.encode(),
                    encode_position(pending.position),
                )
            )
        return records

    async def _commit(self, records: list[_Record]) -> None:
        """Send every record in one transaction, wait for every ack, then commit.

        Commit is asked for only when all data is acknowledged. On any failure the producer is
        dropped; the next one (same transactional id) fences it, which aborts an unfinished
        transaction, and the catch-up before the next write shows whether a commit whose answer
        was lost got through.
        """
        timeout = self._settings.ingest_write_timeout_s
        producer = self._producer
        assert producer is not None

        async def transact() -> None:
            async with producer.transaction():
                acks = [
                    await producer.send(r.topic, key=r.key, value=r.value, headers=list(r.headers))
                    for r in records
                ]
                await asyncio.gather(*acks)

        try:
            await _bounded(transact(), timeout)
        except BaseException as exc:
            await self._close_producer()
            if not isinstance(exc, (KafkaError, TimeoutError, OSError)):
                raise
            log.warning("ingest.write_failed", error=type(exc).__name__, records=len(records))
            raise SinkUnavailable(
                f"Kafka at {self._settings.kafka_bootstrap} did not take the write within "
                f"{timeout:g} s ({type(exc).__name__}); nothing was written, retry later",
                retry_after_s=_retry_after(timeout),
            ) from exc
        log.debug("ingest.committed", records=len(records))

    async def _bounded_producer(self) -> AIOKafkaProducer:
        """The producer, started (and its predecessor fenced) within the write timeout."""
        timeout = self._settings.ingest_write_timeout_s
        try:
            return await _bounded(self._ready_producer(), timeout)
        except (KafkaError, TimeoutError, OSError) as exc:
            await self._close_producer()
            raise SinkUnavailable(
                f"Kafka at {self._settings.kafka_bootstrap} did not start a transactional "
                f"producer within {timeout:g} s ({type(exc).__name__}); nothing was written, "
                "retry later",
                retry_after_s=_retry_after(timeout),
            ) from exc

    async def _ready_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            timeout_s = self._settings.ingest_write_timeout_s
            producer = make_producer(
                self._settings,
                transactional_id=self._settings.ingest_transactional_id,
                # A transaction left open by a crashed writer hides everything after it from
                # read_committed consumers until the coordinator aborts it: keep that short.
                transaction_timeout_ms=int(max(10.0, 3 * timeout_s) * 1000),
                linger_ms=2,
            )
            try:
                await producer.start()  # fences an earlier producer with the same id
            except BaseException:
                with suppress(Exception):
                    await producer.stop()
                raise
            self._producer = producer
        return self._producer

    async def _close_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with suppress(Exception):
                await asyncio.wait_for(producer.stop(), 5)


def _retry_after(timeout_s: float) -> int:
    """What a 503 tells the sender to wait after a write timed out: half the timeout."""
    return max(1, round(timeout_s / 2))


def writer_settings(settings: HubSettings, role: str, name: str) -> HubSettings:
    """Settings whose transactional id is ``<prefix>-<role>-<digest of name>``, stable per name.

    For writers other than ``hub serve`` (whose id is ``HUB_INGEST_TRANSACTIONAL_ID``, one per
    replica): ``hub poll`` per polled service, ``hub import`` per file. Never the API's id, so
    they never fence an API replica; stable, so a restart fences what its killed predecessor
    left open. The prefix (``HUB_WRITER_ID_PREFIX``) keeps two deployments on one cluster
    from fencing each other's writers of the same feed.
    """
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    transactional_id = f"{settings.writer_id_prefix}-{role}-{digest}"
    return settings.model_copy(update={"ingest_transactional_id": transactional_id})


@asynccontextmanager
async def open_kafka_sink(settings: HubSettings, **options: Any) -> AsyncIterator[KafkaEventSink]:
    sink = KafkaEventSink(settings, **options)
    try:
        await sink.start()
        yield sink
    finally:
        await sink.stop()
