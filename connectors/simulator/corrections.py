"""Late corrections and retractions of simulated facts, as source systems send them.

Records are wrong sometimes and put right days later: an initial interview or a job-search
conversation entered with the wrong channel, an interview entered on the wrong day, a job offer
recorded for the wrong person (retracted, with its outcome). :func:`with_corrections` re-sends
a share of a person's facts as corrections: the same type, fact and cause, a new event id,
``corrects_event_id`` naming the first version, and a ``recorded_at`` 2-10 days after the last
version it knows of. The corrections come from their own random stream (seeded per person), so
the first versions are the same whatever the share, and a share of 0 changes nothing.

A person's stream stays in causal order: a correction is placed where it is sent, at its
``recorded_at`` (:func:`sent_at`), which is after its first version.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from uuid import UUID
from zoneinfo import ZoneInfo

from hub.events import AvroRecord, CustomerPathEvent
from hub.events.customer_path import (
    InitialInterviewHeldPayload,
    JobOfferMadePayload,
    JobOfferOutcomeRecordedPayload,
    JobSearchConversationHeldPayload,
)
from hub.events.enums import Channel
from hub.rules import is_working_day

HELSINKI = ZoneInfo("Europe/Helsinki")


def sent_at(event: CustomerPathEvent) -> datetime:
    """When the source sends a version: a first version when it happens, a correction when it
    is recorded (days later)."""
    envelope = event.envelope
    return envelope.recorded_at if envelope.corrects_event_id is not None else envelope.occurred_at


def with_corrections(
    events: list[CustomerPathEvent], rng: random.Random, share: float
) -> list[CustomerPathEvent]:
    """*events* (one person's, in causal order) with a *share* of the correctable facts
    corrected or retracted, each correction where it is sent (:func:`sent_at`)."""
    if share <= 0:
        return events
    corrections: list[CustomerPathEvent] = []
    outcomes = {
        e.payload.offer_id: e
        for e in events
        if isinstance(e.payload, JobOfferOutcomeRecordedPayload)
    }
    cited = {getattr(e.payload, "job_offer_id", None) for e in events}
    for event in events:
        payload = event.payload
        if isinstance(payload, JobOfferMadePayload):
            if rng.random() < share and payload.offer_id not in cited:
                corrections.extend(_retract_offer(event, outcomes.get(payload.offer_id), rng))
        elif (
            isinstance(payload, InitialInterviewHeldPayload | JobSearchConversationHeldPayload)
            and rng.random() < share
        ):
            corrections.append(_corrected_meeting(event, rng))
    # Stable: the first versions keep their order, each correction comes after its original.
    return sorted([*events, *corrections], key=sent_at)


def _later(after: datetime, rng: random.Random) -> datetime:
    """When a correction is recorded: 2-10 days (and some hours) after *after*."""
    return after + timedelta(days=rng.randint(2, 10), minutes=rng.randint(0, 600))


def _new_version(
    event: CustomerPathEvent,
    rng: random.Random,
    *,
    recorded_at: datetime,
    retracted: bool = False,
    occurred_at: datetime | None = None,
    payload: AvroRecord | None = None,
) -> CustomerPathEvent:
    envelope = event.envelope.model_copy(
        update={
            "event_id": UUID(int=rng.getrandbits(128), version=4),
            "corrects_event_id": event.envelope.event_id,
            "retracted": retracted,
            "recorded_at": recorded_at,
            **({"occurred_at": occurred_at} if occurred_at is not None else {}),
        }
    )
    return event.model_copy(update={"envelope": envelope, "payload": payload or event.payload})


def _corrected_meeting(event: CustomerPathEvent, rng: random.Random) -> CustomerPathEvent:
    """The channel was entered wrongly; for an initial interview sometimes the day instead."""
    payload = event.payload
    assert isinstance(payload, InitialInterviewHeldPayload | JobSearchConversationHeldPayload)
    if isinstance(payload, InitialInterviewHeldPayload) and rng.random() < 0.4:
        day = _another_day(payload.held_on, payload.job_search_started_on, rng)
        if day is not None:
            local = event.envelope.occurred_at.astimezone(HELSINKI)
            occurred_at = datetime.combine(day, local.time(), tzinfo=HELSINKI).astimezone(UTC)
            fixed = payload.model_copy(
                update={"held_on": day, "within_deadline": day <= payload.deadline}
            )
            recorded_at = _later(max(event.envelope.recorded_at, occurred_at), rng)
            return _new_version(
                event, rng, recorded_at=recorded_at, occurred_at=occurred_at, payload=fixed
            )
    channel = rng.choice([c for c in Channel if c != payload.channel])
    changes: dict[str, object] = {"channel": channel}
    if isinstance(payload, InitialInterviewHeldPayload):
        changes["remote_for_weighty_reason"] = channel != Channel.FACE_TO_FACE
    fixed_channel = payload.model_copy(update=changes)
    recorded_at = _later(event.envelope.recorded_at, rng)
    return _new_version(event, rng, recorded_at=recorded_at, payload=fixed_channel)


def _another_day(held_on: date, started_on: date, rng: random.Random) -> date | None:
    """A working day next to *held_on*, after the start of job search (none if there is none)."""
    step = rng.choice([-1, 1])
    for direction in (step, -step):
        day = held_on + timedelta(days=direction)
        while not is_working_day(day):
            day += timedelta(days=direction)
        if day > started_on:
            return day
    return None


def _retract_offer(
    offer: CustomerPathEvent, outcome: CustomerPathEvent | None, rng: random.Random
) -> Iterator[CustomerPathEvent]:
    """The offer was recorded in error: it is retracted, and its outcome a minute later."""
    last = max(e.envelope.recorded_at for e in (offer, outcome) if e is not None)
    retraction = _new_version(offer, rng, recorded_at=_later(last, rng), retracted=True)
    yield retraction
    if outcome is not None:
        at = retraction.envelope.recorded_at + timedelta(minutes=1)
        yield _new_version(outcome, rng, recorded_at=at, retracted=True)
