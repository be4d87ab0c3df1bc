"""From a validated request to the event the log stores: pure functions, clock injected.

Ids the client leaves out are derived, never random, wherever a retry must map to the same
event:

* ``event_id``: the client's, else ``uuid5(EVENT_ID_NAMESPACE, dedupe_key)``. The dedupe key
  starts with the client id, so two clients never collide and a retry of the same submission
  (same Idempotency-Key, or same content) gets the same event id.
* ``correlation_id``: the client's, else ``uuid5(CORRELATION_NAMESPACE, pseudonym)``: all events of
  one person correlate by default. A client that knows the job-search spell (the customer path
  proper) should send the spell's id; the default cannot tell one spell from the next.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final
from uuid import UUID, uuid4, uuid5

from hub.codes import employment_area_of
from hub.events import CustomerPathEvent, Envelope
from hub.identity import Pseudonymizer
from hub.intake.requests import IngestRequest, event_type_of

#: Namespace of derived event ids (fixed forever: changing it would change every derived id).
EVENT_ID_NAMESPACE: Final = UUID("5b0c8f7e-2d4a-5e61-9f3b-7a1c0d2e4f68")
#: Namespace of default correlation ids (one per person pseudonym).
CORRELATION_NAMESPACE: Final = UUID("c3e1a9d2-6f70-5b84-a2c5-1d8e9f0b3a47")


def derived_event_id(dedupe_key: str) -> UUID:
    """The event id of a submission whose client chose none."""
    return uuid5(EVENT_ID_NAMESPACE, dedupe_key)


def default_correlation_id(pseudonym: str) -> UUID:
    """One correlation id per person when the client sends none."""
    return uuid5(CORRELATION_NAMESPACE, pseudonym)


def to_event(
    request: IngestRequest[Any],
    *,
    source_system: str,
    pseudonymizer: Pseudonymizer,
    recorded_at: datetime,
    dedupe_key: str | None = None,
) -> CustomerPathEvent:
    """The customer-path event for *request*, sent by the client whose URI is *source_system*.

    Without a client event id and without a dedupe key (only callers outside the API, which
    always has one) the event id is random.
    """
    pseudonym = pseudonymizer.pseudonym(request.personal_identity_code)
    if request.event_id is not None:
        event_id = request.event_id
    elif dedupe_key is not None:
        event_id = derived_event_id(dedupe_key)
    else:
        event_id = uuid4()
    envelope = Envelope(
        event_id=event_id,
        event_type=event_type_of(request),
        occurred_at=request.occurred_at,
        recorded_at=recorded_at,
        source_system=source_system,
        subject=pseudonym,
        municipality_code=request.municipality_code,
        employment_area_code=employment_area_of(request.municipality_code).code,
        correlation_id=request.correlation_id or default_correlation_id(pseudonym),
        causation_id=request.causation_id,
    )
    return request.event_class(envelope=envelope, payload=request.payload)


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, ASCII: equal content gives equal bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _digest_document(item: IngestRequest[Any]) -> dict[str, Any]:
    # A bulk item's own event_type field is left out so that the same content has the same
    # digest whether it came alone or in a bulk; the event type is named once, outside.
    request = item.model_dump(mode="json", exclude={"event_type"})
    request["occurred_at"] = item.occurred_at.astimezone(UTC).isoformat()
    return {"event_type": event_type_of(item), "request": request}


def request_digest(
    body: IngestRequest[Any] | Sequence[IngestRequest[Any]], pseudonymizer: Pseudonymizer
) -> str:
    """Keyed digest of the canonical JSON of a validated request (or of a whole bulk, in order).

    Keyed (``Pseudonymizer.keyed_digest``) because receipts keep it and requests hold identity
    codes and names.

    Computed on the validated model, not the raw bytes, so key order, whitespace, a lower-case
    identity code or another UTC offset for the same instant do not make an honest retry look
    different. The event type is part of it, so equal bodies sent to two endpoints differ.
    """
    if isinstance(body, IngestRequest):
        document: Any = _digest_document(body)
    else:
        document = [_digest_document(item) for item in body]
    return pseudonymizer.keyed_digest(canonical_json(document))
