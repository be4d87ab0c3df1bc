"""Erasures and reveals in the disclosure log: the same hash-chained receipts as deliveries.

``hub audit person`` (GDPR art. 15) and ``hub audit verify`` read them like any receipt:

* an **erasure** (``hub person forget``, a retention rule of ``hub person expire``): status
  ``erased``, destination ``person-keys``, chain ``person-keys/<partition>`` (the partition of
  the person-keys topic that holds the person's keys), ``fields`` = the sensitivity classes
  whose values became unreadable, ``legal_basis`` = class → the reason (e.g. "GDPR art. 17
  request"), ``outbox_partition`` / ``outbox_offset`` = where the forgotten marker is;
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
import random
import uuid
import weakref
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final
from uuid import UUID

from aiokafka.errors import KafkaError, ProducerFenced

from hub.delivery.disclosure import Disclosure, DisclosureLog, DisclosureStatus
from hub.events.sensitivity import Sensitivity
from hub.kafka.clients import make_producer
from hub.kafka.topics import ensure_topics
from hub.logging import get_logger
from hub.privacy.keystore import ForgetResult
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


def erasure_entry(result: ForgetResult, reason: str, via: str, topic: str) -> Disclosure:
    """The receipt of one forgetting."""
    classes = erased_classes()
    return Disclosure(
        destination=ERASURE_DESTINATION,
        event_id=uuid.uuid5(_NAMESPACE, f"{topic}/{result.partition}/{result.marker_offset}"),
        subject=result.subject,
        event_type="PersonForgotten",
        fields=classes,
        legal_basis=dict.fromkeys(classes, reason),
        status=DisclosureStatus.ERASED,
        attempts=1,
        first_attempt_at=result.forgotten_at,
        last_attempt_at=result.forgotten_at,
        route=via,
        outbox_partition=result.partition,
        outbox_offset=result.marker_offset,
        endpoint=None,
        event_ids=tuple(str(k) for k in result.key_ids),
    )


async def record_erasures(
    settings: HubSettings,
    results: Sequence[ForgetResult],
    reason: str,
    via: str = "hub person forget",
) -> list[Disclosure]:
    """Write an ``erased`` receipt per forgotten person (acks=all); the receipts written.

    ``via`` says what forgot them (``hub person forget``, ``hub person expire: <rule>``);
    ``event_ids`` of a receipt are the ids of the data keys deleted.
    """
    entries = [erasure_entry(r, reason, via, settings.topic_person_keys) for r in results]
    by_chain: dict[str, list[tuple[Disclosure, int]]] = {}
    for entry, result in zip(entries, results, strict=True):
        chain = f"{ERASURE_DESTINATION}/{result.partition}"
        by_chain.setdefault(chain, []).append((entry, result.partition))
    await _ensure_log(settings)
    for chain, items in sorted(by_chain.items()):
        await _write_chain(settings, chain, items)
    return entries


async def record_erasure(
    settings: HubSettings, result: ForgetResult, reason: str, via: str = "hub person forget"
) -> Disclosure:
    """:func:`record_erasures` of one person."""
    [entry] = await record_erasures(settings, [result], reason, via)
    return entry


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
    settings: HubSettings, chain: str, items: Sequence[tuple[Disclosure, int]]
) -> None:
    """Append ``items`` to ``chain`` in one transaction of the chain's own transactional id."""
    async with _chain_lock(chain):
        await _write_chain_fenced(settings, chain, items)


async def _write_chain_fenced(
    settings: HubSettings, chain: str, items: Sequence[tuple[Disclosure, int]]
) -> None:
    """One try after another until no other process's writer of the chain fenced this one."""
    last: BaseException | None = None
    for attempt in range(FENCED_TRIES):
        producer = make_producer(
            settings,
            client_id="te-hub-access-log",
            transactional_id=f"{settings.writer_id_prefix}-disclosures-{chain}",
        )
        await producer.start()  # init: an earlier writer of this chain is fenced from here on
        try:
            disclosures = DisclosureLog(settings, producer)
            await disclosures.start()
            async with producer.transaction():
                await asyncio.gather(
                    *(disclosures.record(entry, p, chain_name=chain) for entry, p in items)
                )
            await disclosures.stop()
            return
        except ProducerFenced as error:  # another writer of the chain started meanwhile
            last = error
            log.warning("access_log.fenced", chain=chain, attempt=attempt + 1)
            await asyncio.sleep(random.uniform(0, min(3.0, 0.1 * 2**attempt)))
        finally:
            await producer.stop()
    raise KafkaError(f"disclosure chain {chain}: fenced {FENCED_TRIES} times ({last})")


def describe(entry: Disclosure) -> dict[str, Any]:
    """The receipt's content as written (for ``--json`` output)."""
    return entry.to_json()
