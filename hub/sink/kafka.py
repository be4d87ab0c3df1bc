"""The Kafka event sink: each submission's event and its receipt in one transaction.

Exactly once per dedupe key, across crashes and retries: the event goes to the customer-path
log and a receipt (dedupe key → event id, request digest) to a compacted receipts topic in the
same Kafka transaction. Readers use read_committed, so a transaction cut short by a crash shows
neither; a committed one shows both, and the receipt answers the sender's retry. On start the
sink reads the receipts topic back into memory.

Concurrent submissions are written together: a single writer task takes whatever is queued and
commits it as one transaction, so throughput does not pay one commit per request.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from hub.kafka.clients import make_producer
from hub.kafka.probe import broker_answers
from hub.kafka.publisher import EventPublisher
from hub.kafka.reading import read_topic
from hub.serde import EventSerializer, build_serializer
from hub.settings import HubSettings
from hub.sink import Receipt, ReceiptBook, SinkUnavailable, SourcePosition, Submission

log = structlog.get_logger(__name__)

MAX_TRANSACTION_SUBMISSIONS = 5000


@dataclass
class _Pending:
    submissions: Sequence[Submission]
    position: SourcePosition | None = None
    done: asyncio.Future[list[Receipt]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


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


class KafkaEventSink:
    """:class:`~hub.sink.EventSink` on Kafka transactions (see the module docstring)."""

    def __init__(self, settings: HubSettings, serializer: EventSerializer | None = None) -> None:
        self._settings = settings
        self._serializer = serializer or build_serializer(settings)
        self._receipts = ReceiptBook()
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._producer: AIOKafkaProducer | None = None
        self._writer: asyncio.Task[None] | None = None
        self._reload_receipts = False

    @property
    def known_receipts(self) -> int:
        return len(self._receipts)

    async def start(self) -> None:
        """Fence any earlier writer with this transactional id, then load the receipts.

        Fencing first matters: it makes Kafka finish (commit or abort) a transaction a killed
        predecessor left behind, so the receipts read next include a commit it had asked for.
        """
        self._reload_receipts = True
        await self._ready_producer()
        self._writer = asyncio.create_task(self._write_loop(), name="kafka-sink-writer")

    async def stop(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with suppress(asyncio.CancelledError):
                await self._writer
        await self._close_producer()

    async def ready(self) -> bool:
        return await broker_answers(self._settings, 2.0)

    async def submit(
        self, submissions: Sequence[Submission], position: SourcePosition | None = None
    ) -> list[Receipt]:
        if position is None:
            known = self._receipts.answer(submissions)
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

    # -- receipts ----------------------------------------------------------------------------

    async def _load_receipts(self) -> None:
        topic = self._settings.topic_ingest_receipts
        try:
            async for record in read_topic(self._settings, topic):
                if record.key is not None and record.value is not None:
                    self._receipts.record(decode_receipt(record.key, record.value))
        except (KafkaError, LookupError) as exc:
            raise SinkUnavailable(f"cannot read the receipts in {topic}: {exc}") from exc
        log.info("ingest.receipts_loaded", receipts=len(self._receipts), topic=topic)

    # -- the single writer ---------------------------------------------------------------------

    async def _write_loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            size = len(batch[0].submissions)
            while not self._queue.empty() and size < MAX_TRANSACTION_SUBMISSIONS:
                batch.append(self._queue.get_nowait())
                size += len(batch[-1].submissions)
            try:
                results = await self._write(batch)
            except Exception as exc:  # the writer must outlive any one failed batch
                if not isinstance(exc, SinkUnavailable):
                    log.exception("ingest.write_crashed")
                for pending in batch:
                    if not pending.done.done():
                        pending.done.set_exception(exc)
                continue
            for pending, receipts in zip(batch, results, strict=True):
                if not pending.done.done():
                    pending.done.set_result(receipts)

    async def _write(self, batch: list[_Pending]) -> list[list[Receipt]]:
        """One transaction for the whole batch; receipts per pending submission list."""
        fresh: dict[str, Receipt] = {}
        to_write: list[tuple[Submission, Receipt]] = []
        results: list[list[Receipt]] = []
        positions: dict[str, SourcePosition] = {}
        for pending in batch:
            receipts, new = self._receipts.settle(pending.submissions, fresh)
            results.append(receipts)
            to_write.extend(new)
            if pending.position is not None:
                positions[pending.position.source] = pending.position
        if to_write or positions:
            await self._commit(to_write, list(positions.values()))
            for _, receipt in to_write:
                self._receipts.record(receipt)
        return results

    async def _commit(
        self, to_write: list[tuple[Submission, Receipt]], positions: list[SourcePosition]
    ) -> None:
        """Write events and receipts, wait for the broker's ack of every record, then commit.

        Commit is asked for only when all data is acknowledged. If anything fails, the
        producer is dropped; the next one (same transactional id) fences it, which aborts an
        unfinished transaction, and the receipts are read again before the next write, so a
        commit that got through although its answer was lost is seen as written.
        """
        timeout = self._settings.ingest_write_timeout_s
        try:
            async with asyncio.timeout(timeout):
                producer = await self._ready_producer()
                publisher = EventPublisher(
                    producer, self._serializer, self._settings.topic_customer_path
                )
                await producer.begin_transaction()
                acks = []
                for submission, receipt in to_write:
                    acks.append(await publisher.enqueue(submission.event))
                    acks.append(
                        await producer.send(
                            self._settings.topic_ingest_receipts,
                            key=submission.dedupe_key.encode(),
                            value=encode_receipt(receipt),
                        )
                    )
                for position in positions:
                    acks.append(
                        await producer.send(
                            self._settings.topic_source_positions,
                            key=position.source.encode(),
                            value=encode_position(position),
                        )
                    )
                await asyncio.gather(*acks)
                await producer.commit_transaction()
        except (KafkaError, TimeoutError, OSError) as exc:
            await self._drop_producer()
            log.warning("ingest.write_failed", error=type(exc).__name__, events=len(to_write))
            raise SinkUnavailable(
                f"Kafka at {self._settings.kafka_bootstrap} did not take the write within "
                f"{timeout:g} s ({type(exc).__name__}); nothing was written, retry later",
                retry_after_s=max(1, round(timeout / 2)),
            ) from exc
        log.debug("ingest.committed", events=len(to_write))

    async def _ready_producer(self) -> AIOKafkaProducer:
        timeout_s = self._settings.ingest_write_timeout_s
        if self._producer is None:
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
            if self._reload_receipts:
                await self._load_receipts()
                self._reload_receipts = False
        return self._producer

    async def _drop_producer(self) -> None:
        self._reload_receipts = True
        await self._close_producer()

    async def _close_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with suppress(Exception):
                await asyncio.wait_for(producer.stop(), 5)


@asynccontextmanager
async def open_kafka_sink(settings: HubSettings, **options: Any) -> AsyncIterator[KafkaEventSink]:
    sink = KafkaEventSink(settings, **options)
    await sink.start()
    try:
        yield sink
    finally:
        await sink.stop()
