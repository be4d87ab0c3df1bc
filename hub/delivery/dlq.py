"""Dead letters for operators: list, show, replay and purge what the hub could not process.

A dead letter is the original record (key and value untouched) with ``hub-dlq-*`` headers
saying why (:mod:`hub.kafka.dead_letters`). This module reads the dead-letter topic and acts on
its letters:

- **Replay** puts a letter back where it failed. A ``deliver`` letter is the outbox record the
  receiver refused (or the retries gave up on): it is produced to its destination's outbox topic
  with the same key, value and headers (minus ``hub-dlq-*``), so it carries the same event id and
  a receiver that did apply it after all drops it by Idempotency-Key. A ``decode`` or ``route``
  letter is the log record: it is routed again with the router's own code
  (:class:`hub.routing.router.RecordHandler`: decode, the person's committed router state,
  ``route_event``, ``OutboxCodec``) into the outboxes; one that still fails stays pending, with
  the reason reported. Only outbox records are written (never router state: the running router
  owns it).
- **Purge** marks letters as resolved. Kafka cannot delete one record (the topic keeps letters
  for its retention, 30 days), so purging writes a marker; listing and replay honour it.

Markers. Replay and purge write a *marker record* to the dead-letter topic itself, on the
partition of the letter it marks: key ``mark/<partition>/<offset>``, no value, headers
``hub-dlq-mark`` (``replayed`` or ``purged``), ``hub-dlq-mark-of`` (``<partition>/<offset>`` of
the letter), ``hub-dlq-mark-at`` and ``hub-dlq-mark-note``. Being on the letter's partition
after it, a marker expires no earlier than its letter, and one read of the topic gives letters
and their state together, with no second topic to keep in step. A replay writes its outbox
records and its markers in ONE Kafka transaction (transactional id
``<HUB_WRITER_ID_PREFIX>-dlq-replay``, shared with purge): either both are visible or neither,
so a letter is never replayed without being marked nor marked without being replayed. The
letters' state is read *after* the producer's ``init_transactions``, which fences (aborts) any
other replay or purge still open under that id; so a second replay of the same letter, even a
concurrent one, sees the first's marker and skips it. Readers of the dead-letter topic must skip
marker records (:func:`is_marker`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final

from aiokafka import AIOKafkaProducer

from hub.kafka.clients import make_producer
from hub.kafka.dead_letters import HEADER_PREFIX, DeadLetter, DeadLetterStage
from hub.kafka.reading import read_topic
from hub.kafka.topics import outbox_topic
from hub.logging import get_logger, redact_text, redact_value
from hub.settings import HubSettings

log = get_logger(__name__)

MARK_HEADER: Final = "hub-dlq-mark"
MARK_OF_HEADER: Final = "hub-dlq-mark-of"
MARK_AT_HEADER: Final = "hub-dlq-mark-at"
MARK_NOTE_HEADER: Final = "hub-dlq-mark-note"
OUTBOX_DESTINATION_HEADER: Final = "hub-destination"
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class LetterStatus(StrEnum):
    PENDING = "pending"
    REPLAYED = "replayed"
    PURGED = "purged"


def is_marker(headers: Iterable[tuple[str, bytes | None]]) -> bool:
    """A replay/purge marker, not a dead letter (readers of the topic skip these)."""
    return any(k == MARK_HEADER for k, _ in headers)


@dataclass
class StoredLetter:
    """One dead letter as it is in the topic, with its state from the markers after it."""

    partition: int
    offset: int
    timestamp: datetime
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    letter: DeadLetter | None
    problem: str | None = None
    """Why the ``hub-dlq-*`` headers could not be read (then ``letter`` is None)."""
    status: LetterStatus = LetterStatus.PENDING
    marked_at: str | None = None
    mark_note: str | None = None

    @property
    def position(self) -> str:
        return f"{self.partition}/{self.offset}"

    @property
    def stage(self) -> str:
        return self.letter.stage.value if self.letter else "?"

    @property
    def destination(self) -> str | None:
        if self.letter is not None and self.letter.destination:
            return self.letter.destination
        return self.header(OUTBOX_DESTINATION_HEADER)

    @property
    def event_type(self) -> str | None:
        if self.letter is not None and self.letter.event_type:
            return self.letter.event_type
        ce_type = self.header("ce_type")
        return ce_type.rpartition(".")[2] if ce_type else None

    @property
    def event_id(self) -> str | None:
        if self.letter is not None and self.letter.event_id:
            return self.letter.event_id
        return self.header("ce_id")

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return (value or b"").decode("utf-8", "replace")
        return None

    def summary(self) -> dict[str, Any]:
        """The row of ``hub dlq list``: no value, no personal data."""
        letter = self.letter
        return {
            "position": self.position,
            "dead_lettered_at": self.timestamp.isoformat(),
            "stage": self.stage,
            "destination": self.destination,
            "event_type": self.event_type,
            "event_id": self.event_id,
            "attempts": letter.attempts if letter else None,
            "error_class": letter.error_class if letter else None,
            "reason": letter.reason if letter else self.problem,
            "status": self.status.value,
            "marked_at": self.marked_at,
            "mark_note": self.mark_note,
        }


@dataclass(frozen=True)
class LetterFilter:
    """What ``--destination``, ``--stage``, ``--type``, ``--since``, ``--until`` select."""

    destination: str | None = None
    stage: DeadLetterStage | None = None
    event_type: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    statuses: frozenset[LetterStatus] = frozenset({LetterStatus.PENDING})

    @property
    def narrows(self) -> bool:
        """True when some filter beyond the status is given."""
        return any(
            v is not None
            for v in (self.destination, self.stage, self.event_type, self.since, self.until)
        )

    def matches(self, letter: StoredLetter) -> bool:
        if letter.status not in self.statuses:
            return False
        if self.destination is not None and letter.destination != self.destination:
            return False
        if self.stage is not None and letter.stage != self.stage.value:
            return False
        if self.event_type is not None:
            wanted = self.event_type.rpartition(".")[2]
            if (letter.event_type or "").rpartition(".")[2] != wanted:
                return False
        if self.since is not None and letter.timestamp < self.since:
            return False
        return self.until is None or letter.timestamp <= self.until


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """An ISO 8601 date or date-time (UTC unless it says), or a duration ago: ``90m``, ``2h``,
    ``7d``. ValueError says what is accepted."""
    now = now or datetime.now(UTC)
    relative = _DURATION.match(text.strip())
    if relative:
        return now - timedelta(seconds=float(relative[1]) * _UNITS[relative[2]])
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: give an ISO date or date-time, or a duration ago "
            "such as 30m, 2h, 7d"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


async def read_letters(settings: HubSettings) -> list[StoredLetter]:
    """Every dead letter of the topic, oldest first per partition, with its state applied."""
    letters: dict[tuple[int, int], StoredLetter] = {}
    marks: list[tuple[int, str, str | None, str | None, str | None]] = []
    async for record in read_topic(settings, settings.topic_dead_letter):
        headers = [(k, bytes(v or b"")) for k, v in (record.headers or ())]
        if is_marker(headers):
            found = {k: v.decode("utf-8", "replace") for k, v in headers}
            marks.append(
                (
                    record.partition,
                    found.get(MARK_OF_HEADER, ""),
                    found.get(MARK_HEADER),
                    found.get(MARK_AT_HEADER),
                    found.get(MARK_NOTE_HEADER),
                )
            )
            continue
        try:
            letter: DeadLetter | None = DeadLetter.from_headers(headers)
            problem = None
        except ValueError as error:
            letter, problem = None, str(error)
        letters[(record.partition, record.offset)] = StoredLetter(
            partition=record.partition,
            offset=record.offset,
            timestamp=datetime.fromtimestamp(record.timestamp / 1000, UTC),
            key=record.key,
            value=record.value,
            headers=headers,
            letter=letter,
            problem=problem,
        )
    for partition, of, mark, at, note in marks:
        try:
            where = tuple(int(p) for p in of.split("/"))
        except ValueError:
            continue
        target = letters.get((where[0], where[1])) if len(where) == 2 else None
        if target is None or where[0] != partition:
            continue
        try:
            status = LetterStatus(mark or "")
        except ValueError:
            continue
        # purged wins over replayed; a letter is never made pending again by a marker
        if target.status is not LetterStatus.PURGED:
            target.status, target.marked_at, target.mark_note = status, at, note
    return sorted(letters.values(), key=lambda s: (s.timestamp, s.partition, s.offset))


def find(letters: Sequence[StoredLetter], reference: str) -> list[StoredLetter]:
    """Letters named by ``<partition>/<offset>`` (or ``<partition>:<offset>``) or an event id."""
    ref = reference.strip()
    position = re.fullmatch(r"(\d+)[/:](\d+)", ref)
    if position:
        p, o = int(position[1]), int(position[2])
        return [s for s in letters if s.partition == p and s.offset == o]
    return [s for s in letters if (s.event_id or "").lower() == ref.lower()]


def select(
    letters: Sequence[StoredLetter],
    references: Sequence[str],
    letter_filter: LetterFilter,
    limit: int | None = None,
) -> tuple[list[StoredLetter], list[str]]:
    """Letters matching the filter (and, if given, the references); references found nowhere."""
    if references:
        chosen: dict[str, StoredLetter] = {}
        unknown = []
        for reference in references:
            found = find(letters, reference)
            if not found:
                unknown.append(reference)
            for letter in found:
                chosen.setdefault(letter.position, letter)
        pool: list[StoredLetter] = list(chosen.values())
    else:
        pool, unknown = list(letters), []
    matched = [s for s in pool if letter_filter.matches(s)]
    return (matched if limit is None else matched[:limit]), unknown


# -- what a letter held, shown without personal data ---------------------------------------------


def safe_view(settings: HubSettings, letter: StoredLetter) -> tuple[dict[str, Any] | None, str]:
    """The letter's value as only its fields without a ``pii`` class, or None; and a note.

    A ``deliver`` letter is an outbox record (decoded with the routes' derived schemas), a
    ``decode`` or ``route`` letter a log record (decoded with the hub's serializer); either is
    projected with no grant, the router's own projection, so no field of any sensitivity class
    is shown. A ``decode`` letter could not be decoded in the first place: nothing is shown.
    """
    from hub.routing.outbox import OutboxCodec
    from hub.routing.projection import project
    from hub.routing.routes import load_routes
    from hub.serde import build_serializer, default_catalog

    if letter.value is None:
        return None, "no value"
    stage = letter.stage
    try:
        if stage == DeadLetterStage.DELIVER.value:
            codec = OutboxCodec.for_routes(load_routes(settings))
            outbox = codec.decode(letter.value)
            schema = codec.schema(outbox.destination, outbox.type_name)
            record = project(outbox.record, set(), None, schema)
        elif stage == DeadLetterStage.ROUTE.value:
            decoded = build_serializer(settings).decode(letter.value)
            schema = default_catalog().event(decoded.type_name).current.raw
            record = project(decoded.record, set(), None, schema)
        else:
            return None, f"{len(letter.value)} bytes, not shown (stage {stage}: not decodable)"
    except Exception as error:  # shown as a note: a letter is often one that does not decode
        return None, redact_text(f"value not decoded ({type(error).__name__})")
    view = redact_value(_jsonable(record))
    assert isinstance(view, dict)
    return view, "fields without a pii class only"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    return str(value)


# -- replay and purge ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutboxWrite:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    partition: int | None = None


@dataclass
class ReplayReport:
    replayed: list[tuple[StoredLetter, list[str]]] = field(default_factory=list)
    """Each replayed letter with the outbox topics it went to."""
    skipped: list[tuple[StoredLetter, str]] = field(default_factory=list)
    """Each letter not replayed, with why."""


def replay_transactional_id(settings: HubSettings) -> str:
    """One id for every replay and purge of a deployment: they fence each other."""
    return f"{settings.writer_id_prefix}-dlq-replay"


def _replay_producer(settings: HubSettings) -> AIOKafkaProducer:
    return make_producer(
        settings,
        transactional_id=replay_transactional_id(settings),
        client_id="te-hub-dlq",
        transaction_timeout_ms=60_000,
    )


def _marker_key(letter: StoredLetter) -> bytes:
    """Markers need a key (Kafka wants a key or a value); the partition is explicit."""
    return f"mark/{letter.position}".encode()


def _marker(letter: StoredLetter, status: LetterStatus, note: str) -> list[tuple[str, bytes]]:
    return [
        (MARK_HEADER, status.value.encode()),
        (MARK_OF_HEADER, letter.position.encode()),
        (MARK_AT_HEADER, datetime.now(UTC).isoformat().encode()),
        (MARK_NOTE_HEADER, redact_text(note)[:500].encode()),
    ]


async def _current(settings: HubSettings, chosen: Sequence[StoredLetter]) -> list[StoredLetter]:
    """The chosen letters as the topic has them now (read after the producer fenced others)."""
    now = {s.position: s for s in await read_letters(settings)}
    return [now.get(s.position, s) for s in chosen]


async def replay(
    settings: HubSettings, chosen: Sequence[StoredLetter], *, dry_run: bool = False
) -> ReplayReport:
    """Replay the chosen letters (see the module docstring); already replayed or purged
    letters are skipped, so a second replay never duplicates."""
    report = ReplayReport()
    router = _RouteAgain(settings)
    producer = None if dry_run else _replay_producer(settings)
    if producer is not None:
        await producer.start()
    try:
        letters = await _current(settings, chosen)
        plans: list[tuple[StoredLetter, list[OutboxWrite]]] = []
        for letter in letters:
            if letter.status is not LetterStatus.PENDING:
                report.skipped.append((letter, f"already {letter.status.value}"))
                continue
            try:
                writes = await _plan(settings, router, letter)
            except _NotReplayable as error:
                report.skipped.append((letter, str(error)))
                continue
            plans.append((letter, writes))
        if producer is not None and plans:
            async with producer.transaction():
                for letter, writes in plans:
                    for write in writes:
                        await producer.send(
                            write.topic,
                            value=write.value,
                            key=write.key,
                            headers=write.headers,
                            partition=write.partition,
                        )
                    to = ", ".join(sorted({w.topic for w in writes}))
                    await producer.send(
                        settings.topic_dead_letter,
                        value=None,
                        key=_marker_key(letter),
                        partition=letter.partition,
                        headers=_marker(letter, LetterStatus.REPLAYED, f"to {to}"),
                    )
        for letter, writes in plans:
            report.replayed.append((letter, [w.topic for w in writes]))
    finally:
        await asyncio.to_thread(router.close)  # joins the key follower's thread
        if producer is not None:
            await producer.stop()
    for letter, topics in report.replayed:
        log.info(
            "dlq.replayed",
            letter=letter.position,
            stage=letter.stage,
            event_id=letter.event_id,
            to=topics,
            dry_run=dry_run,
        )
    return report


async def purge(
    settings: HubSettings, chosen: Sequence[StoredLetter], note: str = ""
) -> tuple[list[StoredLetter], list[tuple[StoredLetter, str]]]:
    """Mark the chosen letters purged (resolved); those purged already are skipped."""
    producer = _replay_producer(settings)
    await producer.start()
    purged: list[StoredLetter] = []
    skipped: list[tuple[StoredLetter, str]] = []
    try:
        letters = await _current(settings, chosen)
        for letter in letters:
            if letter.status is LetterStatus.PURGED:
                skipped.append((letter, "already purged"))
            else:
                purged.append(letter)
        if purged:
            async with producer.transaction():
                for letter in purged:
                    await producer.send(
                        settings.topic_dead_letter,
                        value=None,
                        key=_marker_key(letter),
                        partition=letter.partition,
                        headers=_marker(letter, LetterStatus.PURGED, note or "purged"),
                    )
    finally:
        await producer.stop()
    for letter in purged:
        log.info("dlq.purged", letter=letter.position, event_id=letter.event_id)
    return purged, skipped


class _NotReplayable(Exception):
    """Why one letter cannot be replayed now (it stays pending)."""


def _without_dlq_headers(headers: Iterable[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    return [(k, v) for k, v in headers if not k.startswith(HEADER_PREFIX)]


async def _plan(
    settings: HubSettings, router: _RouteAgain, letter: StoredLetter
) -> list[OutboxWrite]:
    if letter.letter is None:
        raise _NotReplayable(f"unreadable dead-letter headers ({letter.problem})")
    if letter.letter.stage is DeadLetterStage.DELIVER:
        destination = letter.destination
        if not destination:
            raise _NotReplayable("a deliver letter without a destination header")
        return [
            OutboxWrite(
                outbox_topic(settings, destination),
                letter.key,
                letter.value,
                _without_dlq_headers(letter.headers),
            )
        ]
    return await router.route(letter)


class _RouteAgain:
    """Route decode/route letters again with the router's RecordHandler and committed state."""

    def __init__(self, settings: HubSettings) -> None:
        self._settings = settings
        self._handler: Any = None
        self._states: Any = None
        self._restored: set[int] = set()

    async def route(self, stored: StoredLetter) -> list[OutboxWrite]:
        from hub.routing.router import LogRecord, RecordHandler
        from hub.routing.routes import load_routes
        from hub.routing.state import PersonStates, restore_partitions

        assert stored.letter is not None
        letter = stored.letter
        if letter.source_topic != self._settings.topic_customer_path:
            raise _NotReplayable(
                f"source topic {letter.source_topic} is not the log "
                f"{self._settings.topic_customer_path}"
            )
        if self._handler is None:
            self._handler = RecordHandler(self._settings, load_routes(self._settings))
            self._states = PersonStates()
        if letter.source_partition not in self._restored:
            restored = await asyncio.to_thread(
                restore_partitions, self._settings, [letter.source_partition]
            )
            for partition, persons in restored.items():
                self._states.load(partition, persons)
            self._restored.add(letter.source_partition)
        record = LogRecord(
            topic=letter.source_topic,
            partition=letter.source_partition,
            offset=letter.source_offset,
            key=stored.key,
            value=stored.value,
            headers=_without_dlq_headers(stored.headers),
        )
        outcome = self._handler.handle(record, self._states.batch())
        if outcome.dead_letter is not None:
            failed = outcome.records[0] if outcome.records else None
            reason = "still fails"
            if failed is not None:
                again = DeadLetter.from_headers(failed.headers)
                reason = f"still fails at {again.stage.value}: {again.reason}"
            raise _NotReplayable(reason)
        outbox_prefix = self._settings.topic_outbox_prefix
        writes = [
            OutboxWrite(out.topic, out.key, out.value, list(out.headers), out.partition)
            for out in outcome.records
            if out.topic.startswith(outbox_prefix)  # never the router's state records
        ]
        if not writes:
            raise _NotReplayable("no route wants this event now (nothing to replay)")
        return writes

    def close(self) -> None:
        """Close the person keys the handler opened (a follower thread of the key topic)."""
        if self._handler is not None:
            self._handler.close()
