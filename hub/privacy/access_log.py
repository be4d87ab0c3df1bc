"""Erasures and reveals in the disclosure log: the same hash-chained receipts as deliveries.

``hub audit person`` (GDPR art. 15) and ``hub audit verify`` read them like any receipt:

* an **erasure** (``hub person forget``, a retention rule of ``hub person expire``): status
  ``erased``, destination ``person-keys``, chain ``person-keys/<partition>`` (the partition of
  the person-keys topic that holds the person's keys), ``fields`` = the sensitivity classes
  whose values became unreadable, ``legal_basis`` = class → the ground and the reason,
  ``outbox_partition`` / ``outbox_offset`` = where the forgotten marker is, ``details`` = the
  operator, basis, reason, key ids, the marker and the recipients to tell (GDPR art. 19: the
  receivers of the person's data in this log); one receipt per marker;
* a **restriction** (``hub person restrict [--lift]``): status ``restricted`` /
  ``restriction-lifted`` on the same chain, ``details`` as above;
* a **reveal** (``hub tail --reveal``): status ``revealed``, destination ``reveal`` with the
  operator as endpoint, chain ``reveal/<operator>``, one entry per person with the revealed
  fields, the reason and the events of that person (all of the batch's when the caller does
  not say which are whose).

A chain needs one writer at a time (see :mod:`hub.delivery.disclosure`): two ``hub person
forget`` runs on one partition, or one operator's two terminals, would otherwise both read the
same head and fork the chain. Every write here is one Kafka transaction of a transactional
producer whose id is the chain's: starting it fences an earlier writer of the chain (its
transaction aborts, it retries after re-reading the head), and the head is read
(read_committed) only after that, so the chain stays one line.
"""

from __future__ import annotations

import asyncio
import getpass
import random
import uuid
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from uuid import UUID

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError, ProducerFenced

from hub.delivery.audit import person_disclosures, read_entries
from hub.delivery.disclosure import (
    Disclosure,
    DisclosureLog,
    DisclosureStatus,
    decode_entry,
    partition_for_key,
)
from hub.events.sensitivity import Sensitivity
from hub.kafka.clients import make_consumer, make_producer
from hub.kafka.reading import settled_end
from hub.kafka.topics import ensure_topics, partition_ids
from hub.logging import get_logger
from hub.privacy.keystore import ForgetResult, RestrictionResult
from hub.settings import HubSettings

log = get_logger(__name__)

ERASURE_DESTINATION: Final = "person-keys"
REVEAL_DESTINATION: Final = "reveal"
#: Tries of one chain's transaction when another writer of the chain fenced it (with a random
#: back-off that doubles, up to 3 s: writers that fence each other spread out).
FENCED_TRIES: Final = 12
_NAMESPACE: Final = UUID("5d1c3e52-3a4b-4e8e-9a43-6b1f0c6a9e11")


def erased_classes() -> list[str]:
    """The sensitivity classes sealed with the person's keys (all of them are)."""
    return [str(kind) for kind in Sensitivity]


@dataclass(frozen=True, slots=True, order=True)
class Recipient:
    """A receiver the disclosure log shows the person's data went to (GDPR art. 19: to be told
    of the erasure or restriction)."""

    destination: str
    endpoint: str | None

    def __str__(self) -> str:
        return f"{self.destination}/{self.endpoint}" if self.endpoint else self.destination

    def to_json(self) -> dict[str, str | None]:
        return {"destination": self.destination, "endpoint": self.endpoint}


#: Statuses of entries whose receiver got the person's data (a dead letter after reaching it too).
_RECEIVED: Final = frozenset({str(DisclosureStatus.DELIVERED), str(DisclosureStatus.DEAD_LETTERED)})
_OWN_CHAINS: Final = frozenset({ERASURE_DESTINATION, REVEAL_DESTINATION})


def recipients_in(entries: Iterable[Mapping[str, Any]]) -> list[Recipient]:
    """The receivers of a person's disclosure entries (:func:`person_disclosures`), sorted."""
    found = {
        Recipient(str(e["destination"]), e.get("endpoint"))
        for e in entries
        if str(e.get("status")) in _RECEIVED and e.get("destination") not in _OWN_CHAINS
    }
    return sorted(found, key=lambda r: (r.destination, r.endpoint or ""))


async def recipients_of(
    settings: HubSettings, subjects: Iterable[str]
) -> dict[str, list[Recipient]]:
    """Every person's receivers, from one read of the disclosure log (``hub audit person``)."""
    wanted = set(subjects)
    if len(wanted) == 1:
        [only] = wanted
        return {only: recipients_in(await person_disclosures(settings, only))}
    entries: dict[str, list[dict[str, Any]]] = {s: [] for s in wanted}
    async for item in read_entries(settings):
        if item.entry is not None and item.entry.get("subject") in wanted:
            entries[item.entry["subject"]].append(item.entry)
    return {s: recipients_in(e) for s, e in entries.items()}


def default_operator() -> str:
    """The OS user running the command (the operator of a receipt unless one is given)."""
    try:
        return getpass.getuser()
    except Exception:  # no user name in the environment or the password database
        return "unknown"


def erasure_id(topic: str, partition: int, marker_offset: int) -> UUID:
    """The receipt id of the erasure of one forgotten marker: one receipt per marker."""
    return uuid.uuid5(_NAMESPACE, f"{topic}/{partition}/{marker_offset}")


def erasure_entry(
    result: ForgetResult,
    reason: str,
    via: str,
    topic: str,
    *,
    operator: str | None = None,
    basis: str | None = None,
    basis_text: str | None = None,
    recipients: Sequence[Recipient] = (),
) -> Disclosure:
    """The receipt of one forgotten marker: who (``operator``), why (``basis``, its legal text
    and the ``reason``), which keys, where the marker is and whom to notify (art. 19)."""
    classes = erased_classes()
    ground = (basis_text or basis) if basis else None
    why = f"{ground}: {reason}" if ground and reason else (ground or reason)
    details: dict[str, Any] = {
        "operator": operator or default_operator(),
        "basis": basis,
        "reason": reason,
        "key_ids": [str(k) for k in result.key_ids],
        "marker": {
            "topic": topic,
            "partition": result.partition,
            "offset": result.marker_offset,
            "forgotten_at": result.forgotten_at.isoformat(),
        },
        "recipients": [r.to_json() for r in recipients],
    }
    return Disclosure(
        destination=ERASURE_DESTINATION,
        event_id=erasure_id(topic, result.partition, result.marker_offset),
        subject=result.subject,
        event_type="PersonForgotten",
        fields=classes,
        legal_basis=dict.fromkeys(classes, why),
        status=DisclosureStatus.ERASED,
        attempts=1,
        first_attempt_at=result.forgotten_at,
        last_attempt_at=result.forgotten_at,
        route=via,
        outbox_partition=result.partition,
        outbox_offset=result.marker_offset,
        endpoint=None,
        event_ids=tuple(str(k) for k in result.key_ids),
        details=details,
    )


@dataclass(frozen=True, slots=True)
class Recorded:
    """An erasure receipt of one marker: the one written now, or one written before."""

    entry: Disclosure
    recipients: tuple[Recipient, ...]
    written: bool
    """False: the log already held this marker's receipt (nothing written again)."""


async def record_erasures(
    settings: HubSettings,
    results: Sequence[ForgetResult],
    reason: str,
    via: str = "hub person forget",
    *,
    operator: str | None = None,
    basis: str | None = None,
    basis_text: str | None = None,
    recipients: Mapping[str, Sequence[Recipient]] | None = None,
    once: bool = False,
) -> list[Recorded]:
    """Write an ``erased`` receipt per forgotten marker (acks=all); each receipt, and whether
    it was written now.

    ``via`` says what forgot them (``hub person forget``, ``hub person expire: <rule>``);
    ``event_ids`` of a receipt are the ids of the data keys deleted. ``recipients`` (pseudonym →
    receivers) are read from the disclosure log when not given.

    ``once``: for markers written earlier (a receipt that may be there already): a marker whose
    receipt the chain already holds gets none again, checked by the chain's writer after it
    fenced the others (a marker written just now cannot have one: no check, no extra read)."""
    await _ensure_log(settings)
    whom = (
        dict(recipients)
        if recipients is not None
        else await recipients_of(settings, {r.subject for r in results})
    )
    topic = settings.topic_person_keys
    made = [
        erasure_entry(
            r,
            reason,
            via,
            topic,
            operator=operator,
            basis=basis,
            basis_text=basis_text,
            recipients=whom.get(r.subject, ()),
        )
        for r in results
    ]
    by_chain: dict[str, list[tuple[Disclosure, int]]] = {}
    for entry, result in zip(made, results, strict=True):
        by_chain.setdefault(f"{ERASURE_DESTINATION}/{result.partition}", []).append(
            (entry, result.partition)
        )
    skipped: set[str] = set()
    for chain, items in sorted(by_chain.items()):
        skipped |= await _write_chain(settings, chain, items, once=once)
    return [
        Recorded(e, tuple(whom.get(e.subject, ())), str(e.event_id) not in skipped) for e in made
    ]


async def record_restriction(
    settings: HubSettings,
    result: RestrictionResult,
    *,
    operator: str | None = None,
    reason: str = "",
    recipients: Sequence[Recipient] | None = None,
) -> Recorded:
    """The receipt of a restriction written (status ``restricted``) or lifted
    (``restriction-lifted``), on the chain ``person-keys/<partition>`` of the person's keys."""
    await _ensure_log(settings)
    whom = (
        list(recipients)
        if recipients is not None
        else (await recipients_of(settings, [result.subject]))[result.subject]
    )
    lifted = result.basis is None
    classes = erased_classes()
    basis = (
        result.basis
        if result.basis is not None
        else (result.earlier.basis if result.earlier is not None else "")
    )
    topic = settings.topic_person_keys
    entry = Disclosure(
        destination=ERASURE_DESTINATION,
        event_id=uuid.uuid5(_NAMESPACE, f"{topic}/{result.partition}/{result.offset}"),
        subject=result.subject,
        event_type="ProcessingRestrictionLifted" if lifted else "ProcessingRestricted",
        fields=classes,
        legal_basis=dict.fromkeys(classes, f"GDPR art. 18: {basis}" if basis else "GDPR art. 18"),
        status=DisclosureStatus.RESTRICTION_LIFTED if lifted else DisclosureStatus.RESTRICTED,
        attempts=1,
        first_attempt_at=result.at,
        last_attempt_at=result.at,
        route="hub person restrict --lift" if lifted else "hub person restrict",
        outbox_partition=result.partition,
        outbox_offset=result.offset,
        details={
            "operator": operator or default_operator(),
            "basis": basis,
            "reason": reason,
            "marker": {"topic": topic, "partition": result.partition, "offset": result.offset},
            "was_restricted": result.earlier is not None,
            "recipients": [r.to_json() for r in whom],
        },
    )
    skipped = await _write_chain(
        settings,
        f"{ERASURE_DESTINATION}/{result.partition}",
        [(entry, result.partition)],
        once=True,
    )
    return Recorded(entry, tuple(whom), str(entry.event_id) not in skipped)


async def record_reveal(
    settings: HubSettings,
    operator: str,
    subjects: Iterable[str],
    event_ids: Iterable[str | UUID],
    fields: Iterable[str],
    reason: str,
    *,
    events: Iterable[tuple[str, str | UUID]] | None = None,
    fields_of: Mapping[str, Iterable[str]] | None = None,
    at: datetime | None = None,
) -> list[Disclosure]:
    """Write a ``revealed`` receipt per person whose personal fields ``operator`` saw.

    ``events`` (``(subject, event id)`` pairs), when given, says which events are whose;
    otherwise every receipt lists all ``event_ids`` of the batch. ``fields_of``, when given,
    says which fields were revealed of whose events (a person it does not name gets
    ``fields``). Returns the receipts, each acknowledged (acks=all) before this returns: the
    caller shows the values only after.
    """
    if not operator.strip():
        raise ValueError("a reveal is recorded under an operator name")
    moment = at or datetime.now(UTC)
    batch_ids = [str(e) for e in event_ids]
    own: dict[str, list[str]] = {}
    if events is not None:
        for subject, event_id in events:
            own.setdefault(subject, []).append(str(event_id))
    shown = sorted(set(fields))
    people = sorted(set(subjects) | set(own))
    if not people:
        return []
    batch = uuid.uuid4()
    entries = []
    for subject in people:
        ids = own.get(subject, batch_ids) if events is not None else batch_ids
        entries.append(
            Disclosure(
                destination=REVEAL_DESTINATION,
                endpoint=operator,
                event_id=uuid.uuid5(batch, subject),
                subject=subject,
                event_type="PersonalFieldsRevealed",
                fields=shown
                if fields_of is None or subject not in fields_of
                else sorted(set(fields_of[subject])),
                legal_basis={"reveal": reason},
                status=DisclosureStatus.REVEALED,
                attempts=1,
                first_attempt_at=moment,
                last_attempt_at=moment,
                route="hub tail --reveal",
                outbox_partition=-1,
                outbox_offset=-1,
                event_ids=tuple(ids),
            )
        )
    await _ensure_log(settings)
    await _write_chain(settings, f"{REVEAL_DESTINATION}/{operator}", [(e, -1) for e in entries])
    return entries


async def _ensure_log(settings: HubSettings) -> None:
    """The disclosures topic must exist (made with the hub's topics when it does not)."""
    await ensure_topics(settings)


_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)


def _chain_lock(chain: str) -> asyncio.Lock:
    """Writers of one chain in this process take turns (no need to fence each other)."""
    locks = _LOCKS.setdefault(asyncio.get_running_loop(), {})
    return locks.setdefault(chain, asyncio.Lock())


async def _write_chain(
    settings: HubSettings,
    chain: str,
    items: Sequence[tuple[Disclosure, int]],
    *,
    once: bool = False,
) -> set[str]:
    """Append ``items`` to ``chain`` in one transaction of the chain's own transactional id.

    ``once``: an item whose event id the chain already holds is not written again; the ids
    left out are returned."""
    async with _chain_lock(chain):
        return await _write_chain_fenced(settings, chain, items, once)


async def _write_chain_fenced(
    settings: HubSettings, chain: str, items: Sequence[tuple[Disclosure, int]], once: bool
) -> set[str]:
    """One try after another until no other process's writer of the chain fenced this one.

    A commit that fails (fenced, or ``UNKNOWN_SERVER_ERROR`` from the coordinator when a new
    writer fences a commit under way) may still have landed: every later try reads the chain
    after fencing and leaves out what it holds."""
    last: BaseException | None = None
    uncertain: set[str] = set()  # ids of a commit that failed and may have been committed
    for attempt in range(FENCED_TRIES):
        producer = make_producer(
            settings,
            client_id="te-hub-access-log",
            transactional_id=f"{settings.writer_id_prefix}-disclosures-{chain}",
        )
        committing = False
        await producer.start()  # init: an earlier writer of this chain is fenced from here on
        try:
            disclosures = DisclosureLog(settings, producer)
            await disclosures.start()
            # Read after fencing (read_committed): a writer that committed before is seen.
            held = await _chain_event_ids(settings, chain) if once else set()
            todo = [(e, p) for e, p in items if str(e.event_id) not in held]
            if todo:
                async with producer.transaction():
                    await asyncio.gather(
                        *(disclosures.record(entry, p, chain_name=chain) for entry, p in todo)
                    )
                    committing = True
            await disclosures.stop()
            return {str(e.event_id) for e, _ in items if str(e.event_id) in held - uncertain}
        except KafkaError as error:
            if not (committing or isinstance(error, ProducerFenced)):
                raise  # not a race of this chain's writers
            last = error
            if committing:  # a commit whose answer was lost is fenced too: it may have landed
                once = True
                uncertain |= {str(e.event_id) for e, _ in todo}
        finally:
            await producer.stop()
        log.warning("access_log.fenced", chain=chain, attempt=attempt + 1, error=str(last))
        await asyncio.sleep(random.uniform(0, min(3.0, 0.1 * 2**attempt)))
    raise KafkaError(f"disclosure chain {chain}: fenced {FENCED_TRIES} times ({last})")


async def _chain_event_ids(settings: HubSettings, chain: str) -> set[str]:
    """The event ids of every committed entry of ``chain`` (its disclosures partition only)."""
    partitions = await partition_ids(settings, settings.topic_disclosures)
    tp = TopicPartition(settings.topic_disclosures, partition_for_key(chain, partitions))
    consumer = make_consumer(settings, group_id=None, enable_auto_commit=False)
    await consumer.start()
    found: set[str] = set()
    try:
        consumer.assign([tp])
        end = await settled_end(settings, consumer, tp)  # another chain's transaction decided
        await consumer.seek_to_beginning(tp)
        key = chain.encode()
        while await consumer.position(tp) < end:
            batches = await consumer.getmany(tp, timeout_ms=1000, max_records=5000)
            for record in batches.get(tp, ()):
                if record.key != key or record.value is None:
                    continue
                try:
                    found.add(str(decode_entry(record.value)["event_id"]))
                except (ValueError, KeyError, TypeError):
                    continue
    finally:
        await consumer.stop()
    return found


def describe(entry: Disclosure) -> dict[str, Any]:
    """The receipt's content as written (for ``--json`` output)."""
    return entry.to_json()
