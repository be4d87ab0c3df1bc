"""The router's per-person state, kept per log partition and restored from its changelog.

Some routes depend on who pays the person (Kela or a fund), which only earlier events of the
person say. The router keeps that as a :class:`~hub.routing.resolve.PersonState` per person
pseudonym and writes each change, in the same transaction as the outbox records and the
consumed offsets, to the compacted router-state topic, on the SAME partition number as the log
record: the log is keyed by pseudonym, so partition ``p`` of the state topic holds exactly the
persons of log partition ``p``. A router that takes partition ``p`` over (a restart, a
rebalance) reads state partition ``p`` to its end (read_committed) before it routes a record of
``p``, and so continues from what the committed outbox records were routed with; an aborted
transaction's state changes are never read, like its outbox records.

Changes of a batch go into a :class:`StateBatch` first and reach the store only once the
transaction committed: an aborted batch is routed again from the state before it. The batch
prepared while the previous transaction commits sees that one's changes (``after``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from prometheus_client import Counter as PromCounter

from hub.kafka.clients import librdkafka_config
from hub.kafka.not_ready import ready_soon
from hub.logging import get_logger
from hub.routing.resolve import PersonState
from hub.settings import HubSettings

log = get_logger(__name__)

CORRUPT_STATES = PromCounter(
    "hub_router_state_corrupt",
    "Router-state records skipped on restore because they could not be read",
)

#: Records asked for per consume call while restoring.
_RESTORE_BATCH = 5000


class RestoreTimeout(RuntimeError):
    """The router-state topic did not reach its end in time (an open transaction holds it)."""


class PersonStates:
    """PersonState by log partition and pseudonym, for the partitions this router owns."""

    def __init__(self) -> None:
        self._partitions: dict[int, dict[str, PersonState]] = {}

    def owned(self) -> list[int]:
        return sorted(self._partitions)

    def persons(self, partition: int) -> int:
        return len(self._partitions.get(partition, {}))

    def get(self, partition: int, key: str) -> PersonState | None:
        return self._partitions.get(partition, {}).get(key)

    def load(self, partition: int, states: dict[str, PersonState]) -> None:
        """Take a restored partition's states (replacing what was kept of it)."""
        self._partitions[partition] = states

    def drop(self, partitions: Iterable[int]) -> None:
        """Forget partitions given up: whoever owns them next restores them from the topic."""
        for partition in partitions:
            self._partitions.pop(partition, None)

    def batch(self, after: StateBatch | None = None) -> StateBatch:
        """A batch of changes; ``after``: the batch of a transaction still committing, whose
        changes this one sees (it is dropped too if that one aborts)."""
        return StateBatch(self, after)

    def _apply(self, changes: dict[tuple[int, str], PersonState | None]) -> None:
        for (partition, key), state in changes.items():
            persons = self._partitions.setdefault(partition, {})
            if state is None:
                persons.pop(key, None)
            else:
                persons[key] = state


class StateBatch:
    """The state changes of one transaction, seen by its later records, kept until commit."""

    def __init__(self, store: PersonStates, after: StateBatch | None = None) -> None:
        self._store = store
        self._after = after
        self._changes: dict[tuple[int, str], PersonState | None] = {}

    def get(self, partition: int, key: str) -> PersonState | None:
        slot = (partition, key)
        if slot in self._changes:
            return self._changes[slot]
        if self._after is not None:
            return self._after.get(partition, key)
        return self._store.get(partition, key)

    def put(self, partition: int, key: str, state: PersonState | None) -> None:
        self._changes[(partition, key)] = state

    def __len__(self) -> int:
        return len(self._changes)

    def commit(self) -> None:
        """The transaction committed: the changes are the store's now."""
        self._store._apply(self._changes)
        self._changes = {}
        self._after = None


def _high_watermark(consumer: Consumer, partition: TopicPartition, deadline: float) -> int:
    """The partition's high watermark, asked again while its leader is not ready yet."""
    while True:
        try:
            return consumer.get_watermark_offsets(partition, timeout=5)[1]
        except KafkaException as exception:
            if not ready_soon(exception) or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _restore_one(persons: dict[str, PersonState], key: bytes | None, value: bytes | None) -> None:
    """Apply one router-state record; ValueError if it is not one the router wrote. A corrupt
    record of a known person forgets their earlier state: it is superseded by something."""
    if key is None:
        raise ValueError("a router-state record without a key")
    person = key.decode("utf-8")  # UnicodeDecodeError is a ValueError
    if value is None:
        persons.pop(person, None)
        return
    try:
        persons[person] = PersonState.from_bytes(value)
    except ValueError:
        persons.pop(person, None)
        raise


def restore_partitions(
    settings: HubSettings, partitions: Iterable[int], *, timeout_s: float | None = None
) -> dict[int, dict[str, PersonState]]:
    """Read the committed router state of ``partitions`` up to the topic's current end.

    The end is the high watermark taken first; reading under read_committed stops at the
    last stable offset, so a transaction of another router still open there (one that was
    killed) is waited for until the broker aborts it (the transaction timeout): its changes
    may yet commit, and routing without them could send a person's event to the wrong payer.
    ``timeout_s`` (default: twice the transaction timeout plus 30 s) bounds the wait.
    """
    wanted = sorted(set(partitions))
    if not wanted:
        return {}
    topic = settings.topic_router_state
    limit = timeout_s if timeout_s is not None else 2 * settings.router_transaction_timeout_s + 30
    deadline = time.monotonic() + limit
    config: dict[str, Any] = {
        **librdkafka_config(settings),
        # Never joins or commits: assign() only; librdkafka wants a group id all the same.
        "group.id": f"{settings.writer_id_prefix}-router-restore",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        "fetch.max.bytes": 64 * 1024 * 1024,
    }
    consumer = Consumer(config)
    states: dict[int, dict[str, PersonState]] = {p: {} for p in wanted}
    read = 0
    skipped = 0
    started = time.monotonic()
    try:
        ends = {p: _high_watermark(consumer, TopicPartition(topic, p), deadline) for p in wanted}
        behind = [p for p in wanted if ends[p] > 0]
        if behind:
            consumer.assign([TopicPartition(topic, p, 0) for p in behind])
        while behind:
            if time.monotonic() > deadline:
                raise RestoreTimeout(
                    f"router state {topic} partitions {behind} not read to their end in "
                    f"{limit:.0f} s: a transaction is still open there"
                )
            for message in consumer.consume(_RESTORE_BATCH, 0.2):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(error)
                read += 1
                partition = message.partition() or 0
                try:
                    _restore_one(states[partition], message.key(), message.value())
                except ValueError as error:
                    # Raising here would fail on_assign, and again at every restart: a crash
                    # loop over one record. The person's state is unknown instead; their next
                    # payer event sets it again.
                    skipped += 1
                    CORRUPT_STATES.inc()
                    log.error(
                        "router.state_record_corrupt",
                        topic=topic,
                        partition=partition,
                        offset=message.offset(),
                        error=type(error).__name__,
                    )
            positions = consumer.position([TopicPartition(topic, p) for p in behind])
            behind = [tp.partition for tp in positions if tp.offset < ends[tp.partition]]
    finally:
        consumer.close()
    log.info(
        "router.state_restored",
        partitions=wanted,
        records=read,
        corrupt=skipped,
        persons=sum(len(s) for s in states.values()),
        elapsed_s=round(time.monotonic() - started, 3),
    )
    return states
