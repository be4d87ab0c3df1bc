"""The person-keys topic as a key store: followed in a background thread, written with acks=all.

:class:`KafkaPersonKeys` keeps a :class:`~hub.privacy.datakeys.KeyDirectory` of the compacted
topic ``HUB_TOPIC_PERSON_KEYS`` (spec: :func:`hub.kafka.topics.person_keys_spec`). It runs on
confluent-kafka (librdkafka), sync and thread-safe: the router calls it from its own loop, the
sink and the delivery workers through :meth:`KafkaPersonKeys.aensure`, which runs off their
event loop.

* All records of one person go to the partition of the pseudonym (murmur2, as Java clients
  partition), so a person's key records, forgotten marker and tombstones are in one order.
* :meth:`~KafkaPersonKeys.ensure` returns a new key only after the broker acknowledged its
  record (idempotent producer, acks=all): nothing is sealed with a key that could be lost.
  Two processes creating a key for one new person at once both succeed: the record key holds
  the random key id, so both records survive compaction and both keys stay valid; new values
  are sealed with the newest.
* :meth:`~KafkaPersonKeys.data_key` on a miss catches up to the topic's current end once
  (bounded wait) before raising KeyUnknown: a router may read an event before its follower
  read the key record that was acknowledged before the event was written.
* :meth:`~KafkaPersonKeys.forget` writes the ``<pseudonym>/forgotten`` marker first, then a
  tombstone per key. A crash between them still leaves the person forgotten: every follower
  refuses keys recorded before the mark; :meth:`~KafkaPersonKeys.complete_forget` writes the
  missing tombstones without a new marker (so does ``hub keys rotate``). ``forget`` again
  would be a new erasure: it erases keys made since for new events too.
* :meth:`~KafkaPersonKeys.restrict` / :meth:`~KafkaPersonKeys.lift_restriction` write the
  ``<pseudonym>/restricted`` marker (GDPR art. 18) or its tombstone.
* :func:`open_person_keys_for` is the one way a command opens the store: the KEK built (or
  :class:`NoUnwrap` for work that only writes markers), started, any failure one line
  (:class:`PersonKeysUnavailable`).
* :meth:`~KafkaPersonKeys.rotate` rewraps every stored key that is not on the current KEK,
  writing the same record key again (the event log is never touched).
"""

from __future__ import annotations

import asyncio
import binascii
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final
from uuid import UUID

from aiokafka.partitioner import murmur2
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka import TopicPartition as KTopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from hub.kafka.clients import librdkafka_config
from hub.kafka.not_ready import ready_soon
from hub.kafka.topics import TopicSpec, person_keys_spec
from hub.logging import get_logger
from hub.privacy.datakeys import (
    FORGOTTEN,
    RESTRICTED,
    Forgotten,
    KeyDirectory,
    Restricted,
    StoredKey,
    context_of,
    encode_forgotten,
    encode_restricted,
    encode_stored,
    record_key,
)
from hub.privacy.kek import (
    KekError,
    KekUnavailable,
    KeyEncryptionKeys,
    WrappedKey,
    build_kek,
)
from hub.privacy.sealing import DataKey, KeyUnknown, SealBroken
from hub.settings import HubSettings

log = get_logger(__name__)

#: Seconds a miss of :meth:`KafkaPersonKeys.data_key` waits for the follower to reach the end.
CATCH_UP_S: Final = 10.0
#: Seconds a write waits for the broker's acknowledgement (librdkafka retries meanwhile).
WRITE_TIMEOUT_S: Final = 30.0
#: Keys rewrapped per batch by :meth:`KafkaPersonKeys.rotate` (one call to the KEK keeper).
ROTATE_BATCH: Final = 500
#: Unreadable records remembered (with partition and offset) for ``hub keys status``.
BAD_RECORDS_KEPT: Final = 100


class PersonKeysError(RuntimeError):
    """The person-keys topic cannot be used (wrong topic config, not reachable, write refused)."""


class KeyRecordBroken(SealBroken):
    """A stored key record does not unwrap: changed, or copied from another person or key."""

    def __init__(self, subject: str, key_id: UUID, problem: str) -> None:
        self.subject = subject
        self.key_id = key_id
        super().__init__(f"data key {key_id} of the person cannot be used: {problem}")


@dataclass(frozen=True, slots=True)
class ForgetResult:
    subject: str
    key_ids: tuple[UUID, ...]
    """The keys tombstoned now (a key tombstoned earlier is not repeated)."""
    forgotten_at: datetime
    partition: int
    marker_offset: int
    tombstone_offsets: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class RestrictionResult:
    """A restriction of processing written (``basis`` set) or lifted (``basis`` None)."""

    subject: str
    at: datetime
    partition: int
    offset: int
    basis: str | None
    earlier: Restricted | None
    """The restriction in force before (None: there was none)."""


@dataclass(frozen=True, slots=True)
class RotateResult:
    kek: str
    """The keeper (``local`` / ``vault``) whose current KEK now wraps every key."""
    rewrapped: int
    already_current: int
    erased: int
    """Keys of forgotten people tombstoned now (left over by a crash in the middle of forget)."""
    failed: tuple[tuple[str, UUID, str], ...] = ()
    """``(subject, key id, problem)`` of keys that could not be rewrapped."""


@dataclass(frozen=True, slots=True)
class BadRecord:
    partition: int
    offset: int
    problem: str


@dataclass(frozen=True, slots=True)
class KeyStatus:
    topic: str
    records_read: int
    people_with_keys: int
    keys: int
    keys_by_kek: dict[str, int]
    not_current: int
    forgotten: int
    awaiting_tombstone: int
    """Keys of forgotten people (created before the mark) still stored: refused by every
    reader; ``hub keys rotate`` or forgetting again tombstones them."""
    bad_records: int
    bad_examples: tuple[BadRecord, ...] = field(default=())


def _noop(done: int, total: int) -> None:
    return None


class KafkaPersonKeys:
    """The person keys of the compacted topic ``settings.topic_person_keys``."""

    def __init__(
        self,
        settings: HubSettings,
        kek: KeyEncryptionKeys | None = None,
        *,
        own_kek: bool | None = None,
    ) -> None:
        """``own_kek``: whether :meth:`close` closes the keeper (default: only one it built)."""
        self.settings = settings
        self.topic = settings.topic_person_keys
        self.kek = kek if kek is not None else build_kek(settings)
        self._own_kek = kek is None if own_kek is None else own_kek
        self.directory = KeyDirectory(self.kek)
        self._partitions: list[int] = []
        self._positions: dict[int, int] = {}
        self._cond = threading.Condition()
        self._failure: BaseException | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Consumer | None = None
        self._meta: Consumer | None = None
        self._meta_lock = threading.Lock()
        self._producer: Producer | None = None
        self._create_lock = threading.Lock()
        self.records_read = 0
        self.bad_records = 0
        self.bad_examples: list[BadRecord] = []
        self._marks: dict[str, tuple[int, int]] = {}
        self._tombstones: dict[str, list[tuple[int, UUID]]] = {}

    # -- life cycle ------------------------------------------------------------------------------

    def start(self, timeout_s: float = 30, progress: Callable[[str], None] | None = None) -> None:
        """Ensure the topic (compacted), start following it and read it to its current end.

        ``progress`` gets a line every 5 s while a big topic is read."""
        try:
            self._start(timeout_s, progress)
        except BaseException:
            self.close()
            raise

    def _start(self, timeout_s: float, progress: Callable[[str], None] | None) -> None:
        deadline = time.monotonic() + timeout_s
        base = librdkafka_config(self.settings)
        self._ensure_topic(base, person_keys_spec(self.settings), timeout_s)
        consumer_config: dict[str, Any] = {
            **base,
            # assign() only, never joins or commits; librdkafka wants a group id all the same.
            "group.id": f"{self.settings.writer_id_prefix}-person-keys",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
        self._meta = Consumer({**consumer_config, "enable.partition.eof": False})
        self._partitions = self._partition_ids(timeout_s)
        self._positions = dict.fromkeys(self._partitions, 0)
        self._producer = Producer(
            {
                **base,
                "client.id": "te-hub-person-keys",
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "message.timeout.ms": int(WRITE_TIMEOUT_S * 1000),
            }
        )
        self._consumer = Consumer(consumer_config)
        self._consumer.assign([KTopicPartition(self.topic, p, 0) for p in self._partitions])
        ends = self._end_offsets(max(1.0, deadline - time.monotonic()))
        self._thread = threading.Thread(
            target=self._follow, name=f"person-keys {self.topic}", daemon=True
        )
        self._thread.start()
        total = sum(ends.values())
        started = time.monotonic()
        last_said = started
        while not self._caught_up(ends, min(1.0, max(0.0, deadline - time.monotonic()))):
            now = time.monotonic()
            if now > deadline:
                raise PersonKeysError(
                    f"person-keys topic {self.topic} not read to its end in {timeout_s:.0f} s "
                    f"({self._read_so_far(ends)} of {total} offsets)"
                )
            if now - last_said >= 5:
                last_said = now
                message = (
                    f"person keys: {self._read_so_far(ends)} of {total} offsets of "
                    f"{self.topic} read"
                )
                if progress is not None:
                    progress(message)
                log.info("person_keys.loading", topic=self.topic, read=self._read_so_far(ends))
        log.info(
            "person_keys.loaded",
            topic=self.topic,
            records=self.records_read,
            bad_records=self.bad_records,
            seconds=round(time.monotonic() - started, 2),
        )

    def close(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        elif self._consumer is not None:
            self._consumer.close()
        self._consumer = None
        if self._producer is not None:
            self._producer.flush(WRITE_TIMEOUT_S)
            self._producer = None
        if self._meta is not None:
            self._meta.close()
            self._meta = None
        if self._own_kek:
            self.kek.close()

    def __enter__(self) -> KafkaPersonKeys:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ensure_topic(self, base: dict[str, Any], spec: TopicSpec, timeout_s: float) -> None:
        """Create the topic when the broker does not list it (a deployment's users have no
        Create ACL: an existing topic is never asked to be created), then check its policy."""
        admin = AdminClient(base)
        if not self._listed(admin, spec.name, timeout_s):
            self._create_topic(admin, spec, timeout_s)
        configs = self._topic_configs(admin, spec.name, timeout_s)
        policy = configs.get("cleanup.policy")
        value = "" if policy is None else str(policy.value)
        if "compact" not in value or "delete" in value:
            raise PersonKeysError(
                f"person-keys topic {spec.name} has cleanup.policy={value or '?'}: it must "
                "be compact alone (delete retention would lose every person's keys)"
            )

    @staticmethod
    def _listed(admin: AdminClient, name: str, timeout_s: float) -> bool:
        try:
            metadata = admin.list_topics(name, timeout=max(1.0, timeout_s))
        except KafkaException:
            return False  # creating it says what is wrong
        topic = metadata.topics.get(name)
        return topic is not None and topic.error is None and bool(topic.partitions)

    def _create_topic(self, admin: AdminClient, spec: TopicSpec, timeout_s: float) -> None:
        futures = admin.create_topics(
            [
                NewTopic(
                    spec.name,
                    num_partitions=spec.partitions,
                    replication_factor=spec.replication_factor,
                    config=dict(spec.configs),
                )
            ],
            operation_timeout=timeout_s,
            request_timeout=timeout_s,
        )
        try:
            futures[spec.name].result(timeout=timeout_s)
            log.info("person_keys.topic_created", topic=spec.name, partitions=spec.partitions)
        except KafkaException as exception:
            error = exception.args[0]
            if not isinstance(error, KafkaError) or error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise PersonKeysError(
                    f"creating person-keys topic {spec.name} failed: {error}"
                ) from None

    def _topic_configs(self, admin: AdminClient, name: str, timeout_s: float) -> dict[str, Any]:
        """The topic's configs; asked again (bounded by ``timeout_s``) while the broker does not
        know a topic it has just created (UNKNOWN_TOPIC_OR_PART and the other not-ready errors
        of :meth:`_end_offsets`), so no caller of :meth:`start` needs a retry loop of its own."""
        deadline = time.monotonic() + timeout_s
        delay = 0.1
        while True:
            try:
                [future] = admin.describe_configs([_topic_resource(name)]).values()
                configs: dict[str, Any] = future.result(
                    timeout=max(1.0, deadline - time.monotonic())
                )
                return configs
            except KafkaException as exception:
                error = exception.args[0]
                if not ready_soon(exception) or time.monotonic() + delay > deadline:
                    raise PersonKeysError(
                        f"configs of person-keys topic {name} not readable: {error}"
                    ) from None
                log.info("person_keys.topic_not_ready", topic=name, error=error.str())
                time.sleep(delay)
                delay = min(1.0, delay * 2)

    def _partition_ids(self, timeout_s: float) -> list[int]:
        assert self._meta is not None
        deadline = time.monotonic() + timeout_s
        while True:
            metadata = self._meta.list_topics(self.topic, timeout=max(1.0, timeout_s))
            topic = metadata.topics.get(self.topic)
            if topic is not None and topic.error is None and topic.partitions:
                return sorted(topic.partitions)
            if time.monotonic() > deadline:
                raise PersonKeysError(f"person-keys topic {self.topic} has no partitions yet")
            time.sleep(0.1)

    # -- following the topic -----------------------------------------------------------------------

    def _follow(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        try:
            while not self._stopping.is_set():
                messages = consumer.consume(1000, 0.2)
                if not messages:
                    continue
                advanced: dict[int, int] = {}
                for message in messages:
                    self._take(message, advanced)
                if advanced:
                    with self._cond:
                        for partition, offset in advanced.items():
                            if offset > self._positions.get(partition, 0):
                                self._positions[partition] = offset
                        self._cond.notify_all()
        except BaseException as failure:  # waiters raise it
            log.error("person_keys.follower_failed", topic=self.topic, error=str(failure))
            with self._cond:
                self._failure = failure
                self._cond.notify_all()
        finally:
            consumer.close()

    def _take(self, message: Message, advanced: dict[int, int]) -> None:
        partition = message.partition() or 0
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                advanced[partition] = max(advanced.get(partition, 0), message.offset() or 0)
                return
            if error.fatal():
                raise KafkaException(error)
            log.warning("person_keys.consume_error", topic=self.topic, error=error.str())
            return
        offset = message.offset() or 0
        advanced[partition] = max(advanced.get(partition, 0), offset + 1)
        self.records_read += 1
        key = message.key()
        try:
            if key is None:
                raise ValueError("a person-keys record without a key")
            value = message.value()
            self.directory.apply(key, value)
            self._note_position(key, value, partition, offset)
        except Exception as problem:
            self.bad_records += 1
            text = _problem_text(problem)
            if len(self.bad_examples) < BAD_RECORDS_KEPT:
                self.bad_examples.append(BadRecord(partition, offset, text))
            log.error(
                "person_keys.record_unreadable",
                topic=self.topic,
                partition=partition,
                offset=offset,
                problem=text,
            )

    def _note_position(self, key: bytes, value: bytes | None, partition: int, offset: int) -> None:
        """Where the person's forgotten marker is, and the tombstones of their keys (what an
        erasure receipt written later names)."""
        subject, _, name = key.decode().partition("/")
        with self._cond:
            if name == FORGOTTEN and value is not None:
                self._marks[subject] = (partition, offset)
            elif value is None and name not in (FORGOTTEN, RESTRICTED):
                self._tombstones.setdefault(subject, []).append((offset, UUID(name)))

    def _end_offsets(self, timeout_s: float) -> dict[int, int]:
        """The high watermark of every partition now (asked again while a leader is elected)."""
        assert self._meta is not None
        deadline = time.monotonic() + timeout_s
        ends: dict[int, int] = {}
        with self._meta_lock:
            for partition in self._partitions:
                while True:
                    try:
                        ends[partition] = self._meta.get_watermark_offsets(
                            KTopicPartition(self.topic, partition),
                            timeout=max(0.5, deadline - time.monotonic()),
                            cached=False,
                        )[1]
                        break
                    except KafkaException as exception:
                        error = exception.args[0]
                        if not ready_soon(exception) or time.monotonic() > deadline:
                            raise PersonKeysError(
                                f"end of {self.topic} partition {partition} unknown: {error}"
                            ) from None
                        time.sleep(0.1)
        return ends

    def _caught_up(self, ends: dict[int, int], wait_s: float) -> bool:
        """Wait up to ``wait_s`` until the follower is at ``ends``; whether it is."""
        deadline = time.monotonic() + wait_s
        with self._cond:
            while True:
                if self._failure is not None:
                    raise PersonKeysError(
                        f"the follower of {self.topic} stopped: {self._failure}"
                    ) from self._failure
                if all(self._positions.get(p, 0) >= end for p, end in ends.items()):
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)

    def _read_so_far(self, ends: dict[int, int]) -> int:
        with self._cond:
            return sum(min(self._positions.get(p, 0), end) for p, end in ends.items())

    def catch_up(self, timeout_s: float = CATCH_UP_S) -> bool:
        """Wait until everything written to the topic before this call was read; whether it was
        within ``timeout_s``."""
        self._check_started()
        deadline = time.monotonic() + timeout_s
        ends = self._end_offsets(timeout_s)
        return self._caught_up(ends, max(0.0, deadline - time.monotonic()))

    def _check_started(self) -> None:
        if self._thread is None or self._producer is None:
            raise PersonKeysError("KafkaPersonKeys used before start()")

    # -- writing -----------------------------------------------------------------------------------

    def partition_of(self, subject: str) -> int:
        """The partition of every record of the person: murmur2 of the pseudonym."""
        self._check_started()
        index: int = (murmur2(subject.encode()) & 0x7FFFFFFF) % len(self._partitions)
        return self._partitions[index]

    def _write(self, records: Sequence[tuple[str, bytes, bytes | None]]) -> list[tuple[int, int]]:
        """Produce ``(subject, record key, value)`` records; ``(partition, offset)`` of each once
        all are acknowledged (acks=all); PersonKeysError when one is not."""
        self._check_started()
        producer = self._producer
        assert producer is not None
        if not records:
            return []
        results: list[tuple[int, int] | KafkaError | None] = [None] * len(records)
        remaining = [len(records)]
        lock = threading.Lock()
        done = threading.Event()

        def report(index: int) -> Callable[[KafkaError | None, Message], None]:
            def delivered(error: KafkaError | None, message: Message) -> None:
                results[index] = (
                    error
                    if error is not None
                    else (message.partition() or 0, message.offset() or 0)
                )
                with lock:
                    remaining[0] -= 1
                    if remaining[0] == 0:
                        done.set()

            return delivered

        for index, (subject, key, value) in enumerate(records):
            while True:
                try:
                    producer.produce(
                        self.topic,
                        key=key,
                        value=value,
                        partition=self.partition_of(subject),
                        on_delivery=report(index),
                    )
                    break
                except BufferError:
                    producer.poll(0.1)
        deadline = time.monotonic() + WRITE_TIMEOUT_S + 5
        while not done.is_set():
            producer.poll(0.05)
            if time.monotonic() > deadline:
                raise PersonKeysError(f"no acknowledgement from {self.topic} in time")
        out: list[tuple[int, int]] = []
        for result in results:
            if not isinstance(result, tuple):
                text = result.str() if isinstance(result, KafkaError) else "no report"
                raise PersonKeysError(f"writing to {self.topic} failed: {text}")
            out.append(result)
        # Seen here at once (the follower applies the same records again: idempotent).
        for _, key, value in records:
            self.directory.apply(key, value)
        return out

    # -- the store ------------------------------------------------------------------------------

    def ensure(self, subjects: Iterable[str]) -> dict[str, DataKey]:
        """The key each person's new values are sealed with; made, stored and acknowledged by
        the broker when the person has none."""
        self._check_started()
        wanted = list(dict.fromkeys(subjects))
        out: dict[str, DataKey] = {}
        have = {s: self.directory.newest(s) for s in wanted}
        todo = [s for s in wanted if have[s] is None]
        if len(todo) < len(wanted):
            pairs = [(s, k.key_id) for s, k in have.items() if k is not None]
            found = self.data_keys(pairs)
            out.update({s: found[(s, k)] for s, k in pairs})
        if todo:
            with self._create_lock:  # one creation at a time per process: no needless twins
                again = {s: self.directory.newest(s) for s in todo}
                made_meanwhile = [(s, k.key_id) for s, k in again.items() if k is not None]
                if made_meanwhile:
                    found = self.data_keys(made_meanwhile)
                    out.update({s: found[(s, k)] for s, k in made_meanwhile})
                create = [s for s in todo if again[s] is None]
                made = self.directory.new_keys(create)
                self._write(
                    [
                        (key.subject, record_key(key.subject, key.key_id), encode_stored(stored))
                        for key, stored in made
                    ]
                )
                for key, _ in made:
                    self.directory.remember(key)
                    out[key.subject] = key
        return out

    async def aensure(self, subjects: Iterable[str]) -> dict[str, DataKey]:
        """:meth:`ensure` in a worker thread, so the caller's event loop keeps running."""
        wanted = list(subjects)
        return await asyncio.to_thread(self.ensure, wanted)

    def data_key(self, subject: str, key_id: UUID) -> DataKey:
        """The person's data key (:class:`~hub.privacy.fields.KeyLookup`); a miss catches up to
        the topic's end once; KeyErased, KeyUnknown or KeyRecordBroken."""
        return self.data_keys([(subject, key_id)])[(subject, key_id)]

    def data_keys(self, pairs: Iterable[tuple[str, UUID]]) -> dict[tuple[str, UUID], DataKey]:
        """Many keys at once (one call to the KEK keeper for those not cached)."""
        wanted = list(dict.fromkeys(pairs))
        if not wanted:
            return {}
        try:
            return self._unwrap(wanted)
        except KeyUnknown:
            pass
        if not self.catch_up(CATCH_UP_S):
            log.warning("person_keys.catch_up_timeout", topic=self.topic, seconds=CATCH_UP_S)
        return self._unwrap(wanted)

    def _unwrap(self, wanted: list[tuple[str, UUID]]) -> dict[tuple[str, UUID], DataKey]:
        try:
            return self.directory.data_keys(wanted)
        except KekUnavailable:
            raise
        except KekError:
            pass
        # Some record does not unwrap: find which, one by one, and name it.
        found: dict[tuple[str, UUID], DataKey] = {}
        for subject, key_id in wanted:
            try:
                found[(subject, key_id)] = self.directory.data_key(subject, key_id)
            except KekUnavailable:
                raise
            except KekError as problem:
                raise KeyRecordBroken(subject, key_id, str(problem)) from None
        return found

    def forgotten(self, subject: str) -> Forgotten | None:
        return self.directory.forgotten(subject)

    def is_erased(self, subject: str, key_id: UUID) -> bool:
        return self.directory.is_erased(subject, key_id)

    def forget(self, subject: str, reason: str) -> ForgetResult:
        """Mark the person forgotten, then tombstone every key they had; both acknowledged."""
        self._check_started()
        mark = Forgotten(subject, datetime.now(UTC), reason)
        [(partition, marker_offset)] = self._write(
            [(subject, record_key(subject, FORGOTTEN), encode_forgotten(mark))]
        )
        # Every key record acknowledged before the marker is in the partition before it.
        if not self._caught_up({partition: marker_offset + 1}, CATCH_UP_S):
            raise PersonKeysError(
                f"{self.topic} partition {partition} not read up to the forgotten marker in "
                f"{CATCH_UP_S:.0f} s: the person is forgotten, run forget again for the tombstones"
            )
        return self._tombstone(mark, partition, marker_offset)

    def marker_place(self, subject: str) -> tuple[int, int] | None:
        """``(partition, offset)`` of the person's forgotten marker as the follower read it."""
        with self._cond:
            return self._marks.get(subject)

    def live_keys(self, subject: str) -> list[StoredKey]:
        """The person's keys that are not erased: after a forgetting, those made since (for new
        events of the person), oldest first."""
        return [
            k
            for k in self.directory.stored(subject)
            if not self.directory.is_erased(subject, k.key_id)
        ]

    def complete_forget(self, subject: str) -> ForgetResult:
        """The person's existing forgetting, finished: tombstones for keys it erased that are
        still stored (a forget that crashed before them), no new marker, so keys made since the
        marker stay. The result has the marker's own time and place, and every key id whose
        tombstone after the marker the topic still holds. PersonKeysError without a marker."""
        self._check_started()
        self.catch_up(CATCH_UP_S)
        mark = self.directory.forgotten(subject)
        place = self.marker_place(subject)
        if mark is None or place is None:
            raise PersonKeysError(f"person {subject} has no forgotten marker in {self.topic}")
        partition, marker_offset = place
        result = self._tombstone(mark, partition, marker_offset)
        self.catch_up(CATCH_UP_S)
        key_ids = tuple(dict.fromkeys([*self.erased_key_ids(subject), *result.key_ids]))
        return ForgetResult(
            subject, key_ids, mark.forgotten_at, partition, marker_offset, result.tombstone_offsets
        )

    def erased_key_ids(self, subject: str) -> tuple[UUID, ...]:
        """Ids of the keys whose tombstones after the person's forgotten marker the topic still
        holds (as the follower read them): what that erasure deleted."""
        with self._cond:
            place = self._marks.get(subject)
            if place is None:
                return ()
            return tuple(
                dict.fromkeys(k for o, k in self._tombstones.get(subject, ()) if o > place[1])
            )

    def restrict(self, subject: str, basis: str) -> RestrictionResult:
        """Restrict the processing of the person's data (GDPR art. 18): the
        ``<pseudonym>/restricted`` marker, acknowledged (acks=all). The keys stay; routes and
        ``hub tail --reveal`` hold the personal fields back while it is in force."""
        self._check_started()
        if not basis.strip():
            raise ValueError("a restriction is recorded with its basis")
        earlier = self.directory.restricted(subject)
        mark = Restricted(subject, datetime.now(UTC), basis)
        [(partition, offset)] = self._write(
            [(subject, record_key(subject, RESTRICTED), encode_restricted(mark))]
        )
        log.info("person_keys.restricted", subject=subject, partition=partition, offset=offset)
        return RestrictionResult(subject, mark.restricted_at, partition, offset, basis, earlier)

    def lift_restriction(self, subject: str) -> RestrictionResult:
        """Lift the person's restriction: a tombstone of the marker, acknowledged (written
        also when none is in force: the result's ``earlier`` says which was)."""
        self._check_started()
        self.catch_up(CATCH_UP_S)
        earlier = self.directory.restricted(subject)
        [(partition, offset)] = self._write([(subject, record_key(subject, RESTRICTED), None)])
        log.info("person_keys.restriction_lifted", subject=subject, partition=partition)
        return RestrictionResult(subject, datetime.now(UTC), partition, offset, None, earlier)

    def _tombstone(self, mark: Forgotten, partition: int, marker_offset: int) -> ForgetResult:
        doomed = [k.key_id for k in self.directory.erased_stored(mark.subject)]
        written = self._write([(mark.subject, record_key(mark.subject, k), None) for k in doomed])
        log.info(
            "person_keys.forgotten",
            subject=mark.subject,
            keys=len(doomed),
            partition=partition,
            offset=marker_offset,
        )
        return ForgetResult(
            mark.subject,
            tuple(doomed),
            mark.forgotten_at,
            partition,
            marker_offset,
            tuple(offset for _, offset in written),
        )

    def rotate(self, progress: Callable[[int, int], None] | None = None) -> RotateResult:
        """Rewrap every stored key not on the current KEK (``progress(done, total)``), and
        tombstone keys of forgotten people still stored (a forget interrupted by a crash)."""
        self._check_started()
        self.catch_up(CATCH_UP_S)
        say = progress or _noop
        stale: list[StoredKey] = []
        leftovers: list[StoredKey] = []
        current = 0
        for key in self.directory.all_stored():
            if self.directory.is_erased(key.subject, key.key_id):
                leftovers.append(key)
            elif self.kek.is_current(key.wrapped):
                current += 1
            else:
                stale.append(key)
        if leftovers:
            self._write([(k.subject, record_key(k.subject, k.key_id), None) for k in leftovers])
        failed: list[tuple[str, UUID, str]] = []
        done = 0
        say(0, len(stale))
        for start in range(0, len(stale), ROTATE_BATCH):
            batch = stale[start : start + ROTATE_BATCH]
            rewrapped, problems = self._rewrap(batch)
            failed.extend(problems)
            self._write(
                [(k.subject, record_key(k.subject, k.key_id), encode_stored(k)) for k in rewrapped]
            )
            # A forget that ran meanwhile may have tombstoned a key before this batch wrote it
            # again: tombstone it once more, so no wrapped key of a forgotten person stays.
            self.catch_up(CATCH_UP_S)
            revived = [k for k in rewrapped if self.directory.is_erased(k.subject, k.key_id)]
            if revived:
                self._write([(k.subject, record_key(k.subject, k.key_id), None) for k in revived])
            done += len(batch)
            say(done, len(stale))
        log.info(
            "person_keys.rotated",
            topic=self.topic,
            rewrapped=len(stale) - len(failed),
            current=current,
            erased=len(leftovers),
            failed=len(failed),
        )
        return RotateResult(
            self.kek.name, len(stale) - len(failed), current, len(leftovers), tuple(failed)
        )

    def _rewrap(
        self, batch: list[StoredKey]
    ) -> tuple[list[StoredKey], list[tuple[str, UUID, str]]]:
        contexts = [context_of(k) for k in batch]
        try:
            wrapped = self.kek.rewrap([k.wrapped for k in batch], contexts)
            return [
                StoredKey(k.subject, k.key_id, w, k.created_at)
                for k, w in zip(batch, wrapped, strict=True)
            ], []
        except KekUnavailable:
            raise
        except KekError:
            pass
        good: list[StoredKey] = []
        bad: list[tuple[str, UUID, str]] = []
        for key, context in zip(batch, contexts, strict=True):
            try:
                [w] = self.kek.rewrap([key.wrapped], [context])
                good.append(StoredKey(key.subject, key.key_id, w, key.created_at))
            except KekUnavailable:
                raise
            except KekError as problem:
                bad.append((key.subject, key.key_id, str(problem)))
        return good, bad

    def status(self) -> KeyStatus:
        """Counts for ``hub keys status``."""
        stored = self.directory.all_stored()
        by_kek = Counter(kek_label(k.wrapped) for k in stored)
        subjects = {k.subject for k in stored}
        awaiting = 0
        not_current = 0
        for key in stored:
            if self.directory.is_erased(key.subject, key.key_id):
                awaiting += 1
            elif not self.kek.is_current(key.wrapped):
                not_current += 1
        return KeyStatus(
            topic=self.topic,
            records_read=self.records_read,
            people_with_keys=len(subjects),
            keys=len(stored),
            keys_by_kek=dict(sorted(by_kek.items())),
            not_current=not_current,
            forgotten=len(self.directory.all_forgotten()),
            awaiting_tombstone=awaiting,
            bad_records=self.bad_records,
            bad_examples=tuple(self.bad_examples),
        )


def kek_label(wrapped: WrappedKey) -> str:
    """What wrapped a key, with the version for Vault (``vault:transit/key:v2``)."""
    text = wrapped.ciphertext[:16]
    if wrapped.kek.startswith("vault:") and text.startswith(b"vault:v"):
        version = text[7:].split(b":", 1)[0]
        if version.isdigit():
            return f"{wrapped.kek}:v{version.decode()}"
    return wrapped.kek


def _topic_resource(name: str) -> Any:
    from confluent_kafka.admin import ConfigResource  # type: ignore[attr-defined]

    return ConfigResource("topic", name)


def _problem_text(problem: BaseException) -> str:
    """What is wrong with a record, without quoting its content."""
    text = str(problem)
    if isinstance(problem, KeyError):
        return f"member {problem.args[0]!r} missing" if problem.args else "a member is missing"
    if isinstance(problem, UnicodeDecodeError):
        return "record key or value is not UTF-8"
    if isinstance(problem, json.JSONDecodeError):
        return "value is not JSON"
    if isinstance(problem, binascii.Error):
        return "wrapped key is not base64"
    if "isoformat" in text:
        return "a time is not ISO 8601"
    if "UUID" in text or "hexadecimal" in text:
        return "the key id is not a UUID"
    if isinstance(problem, TypeError):
        return "a member has the wrong type"
    return text if len(text) <= 200 else text[:200]


@contextmanager
def open_person_keys(
    settings: HubSettings, kek: KeyEncryptionKeys | None = None, timeout_s: float = 30
) -> Iterator[KafkaPersonKeys]:
    """A started :class:`KafkaPersonKeys`, closed afterwards."""
    keys = KafkaPersonKeys(settings, kek)
    keys.start(timeout_s)
    try:
        yield keys
    finally:
        keys.close()


class NoUnwrap:
    """A key-encryption keeper that refuses everything: for work that writes markers and
    tombstones only (``hub person forget|restrict``, ``hub person expire``) and so must not hold
    a key that unwraps anybody's data key."""

    name = "none"

    def wrap(self, secrets: Sequence[bytes], contexts: Sequence[bytes]) -> list[WrappedKey]:
        raise KekError("this command holds no key-encryption key")

    def unwrap(self, wrapped: Sequence[WrappedKey], contexts: Sequence[bytes]) -> list[bytes]:
        raise KekError("this command holds no key-encryption key")

    def is_current(self, wrapped: WrappedKey) -> bool:
        return False

    def rewrap(self, wrapped: Sequence[WrappedKey], contexts: Sequence[bytes]) -> list[WrappedKey]:
        raise KekError("this command holds no key-encryption key")

    def rotate_primary(self) -> str:
        raise KekError("this command holds no key-encryption key")

    def close(self) -> None:
        return None


class PersonKeysUnavailable(PersonKeysError):
    """The person keys cannot be opened (no KEK, topic not reachable); the message is one line
    that quotes no value."""


@contextmanager
def open_person_keys_for(
    settings: HubSettings,
    *,
    needs_unwrap: bool,
    kek: KeyEncryptionKeys | None = None,
    timeout_s: float = 30,
    progress: Callable[[str], None] | None = None,
) -> Iterator[KafkaPersonKeys]:
    """The deployment's person keys, started, closed afterwards (with the keeper).

    ``needs_unwrap=False`` gives a keeper that refuses every wrap and unwrap (:class:`NoUnwrap`):
    forgetting and restricting write markers and tombstones only. ``kek`` is a keeper already
    built (closed with the store). Any failure to open is :class:`PersonKeysUnavailable` with a
    one-line message; a failure inside the ``with`` block is not touched."""
    keeper: KeyEncryptionKeys
    if kek is not None:
        keeper = kek
    elif not needs_unwrap:
        keeper = NoUnwrap()
    else:
        try:
            keeper = build_kek(settings)
        except KekError as error:
            raise PersonKeysUnavailable(
                f"the key-encryption key ({settings.kms}) is not available: {_one_line(error)}"
            ) from None
    store = KafkaPersonKeys(settings, keeper, own_kek=True)
    try:
        store.start(timeout_s, progress)
    except Exception as error:  # PersonKeysError, KafkaException, a timeout
        raise PersonKeysUnavailable(
            f"person-keys topic {settings.topic_person_keys} at {settings.kafka_bootstrap}: "
            f"{_one_line(error)}"
        ) from None
    try:
        yield store
    finally:
        store.close()


def _one_line(error: BaseException) -> str:
    from hub.logging import redact_text

    text = str(error).splitlines()[0] if str(error).strip() else type(error).__name__
    return redact_text(text)
