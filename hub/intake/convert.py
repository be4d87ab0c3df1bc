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
import math
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Final, TypeVar
from uuid import UUID, uuid4, uuid5

from pydantic import JsonValue
from pydantic_core import from_json

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
        corrects_event_id=request.corrects_event_id,
        retracted=request.retracted,
    )
    return request.event_class(envelope=envelope, payload=request.payload)


def canonical_json(value: JsonValue) -> bytes:
    """RFC 8785 (JCS) canonical JSON of a parsed JSON value: equal JSON gives equal bytes.

    Object keys sorted by their UTF-16 code units, no whitespace, strings as UTF-8 with only
    the escapes JSON requires, numbers as ECMAScript prints IEEE 754 doubles (``1.0`` and ``1``
    are both ``1``, ``1e-7`` stays ``1e-7``). Raises :class:`ValueError` for what I-JSON cannot
    hold: a non-finite number or one beyond the range of a double, a lone surrogate.
    """
    if _plain(value):  # the common case, in C: then json.dumps writes exactly JCS
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return _jcs(value).encode("utf-8")


def _plain(value: JsonValue) -> bool:
    """No floats, no integers beyond 2**53, no keys outside the BMP: then Python's key order
    (code points) is UTF-16's and its numbers are ECMAScript's."""
    if isinstance(value, dict):
        return all(max(key, default="") < "\U00010000" and _plain(v) for key, v in value.items())
    if isinstance(value, list):
        return all(_plain(item) for item in value)
    if isinstance(value, float):
        return False
    return not isinstance(value, int) or abs(value) <= 2**53


def _jcs(value: JsonValue) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if abs(value) <= 2**53 else _jcs_number(_as_double(value))
    if isinstance(value, float):
        return _jcs_number(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ",".join(_jcs(item) for item in value) + "]"
    if isinstance(value, dict):
        keys = sorted(value, key=lambda key: key.encode("utf-16-be", "surrogatepass"))
        return "{" + ",".join(f"{_jcs(key)}:{_jcs(value[key])}" for key in keys) + "}"
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def _as_double(value: int) -> float:
    try:
        return float(value)
    except OverflowError:
        raise ValueError("a number is beyond the range of IEEE 754 doubles") from None


def _jcs_number(value: float) -> str:
    """ECMAScript's Number::toString, from the shortest digits that round-trip (``repr``)."""
    if not math.isfinite(value):
        raise ValueError("a number is not finite")
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    exact = Decimal(repr(abs(value))).normalize().as_tuple()
    digits = "".join(map(str, exact.digits))
    k = len(digits)
    n = int(exact.exponent) + k  # the value is 0.<digits> * 10**n
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = f"{digits[:n]}.{digits[n:]}"
    elif -6 < n <= 0:
        text = "0." + "0" * -n + digits
    else:
        mantissa = digits if k == 1 else f"{digits[0]}.{digits[1:]}"
        text = f"{mantissa}e{'+' if n > 0 else '-'}{abs(n - 1)}"
    return sign + text


R = TypeVar("R", bound=IngestRequest[Any])


def record_sent(request: R, sent: JsonValue) -> R:
    """Keep on *request* the canonical JSON of what the client sent for it, for its digest.

    *sent* is the client's parsed JSON of the request (a bulk item with its ``event_type``
    tag, which is dropped: the digest names the event type itself). Raises :class:`ValueError`
    when *sent* is not I-JSON (see :func:`canonical_json`): a connector answers that as a
    parse failure.
    """
    if isinstance(sent, dict) and "event_type" in sent:
        sent = {key: item for key, item in sent.items() if key != "event_type"}
    request._sent_json = canonical_json(sent)
    return request


class NotJson(ValueError):
    """Text that is not JSON the hub takes: bad syntax, not UTF-8, nested too deeply, or a
    number out of range (5,000 digits, ``1e400``). The message names a place, never a value."""


def parse_request(validate_json: Callable[..., R], raw: str | bytes) -> R:
    """The request in JSON text *raw*, validated strictly, with what was sent kept for its digest.

    The one JSON parse of every inbound connector that takes JSON (API bodies, bulk items,
    import lines), so that all accept the same text: pydantic's parser (no ``NaN``, no lone
    surrogates, numbers within range) and strict JSON mode, which takes exactly what the JSON
    schema says and refuses lax conversions such as ``"22"`` for a number. Raises
    :class:`NotJson` or pydantic's ``ValidationError``.
    """
    try:
        sent = from_json(raw, allow_inf_nan=False)
    except ValueError as error:
        raise NotJson(str(error)) from None
    request = validate_json(raw, strict=True)
    try:
        return record_sent(request, sent)
    except ValueError as error:  # JSON may hold it, I-JSON (and so the digest) not
        raise NotJson(str(error)) from None


def _digest_document(item: IngestRequest[Any]) -> bytes:
    if item._sent_json is None:
        raise ValueError("the request has no record of what was sent (see record_sent)")
    # The canonical JSON of {"event_type": ..., "request": <as sent>}: keys in JCS order.
    return (
        b'{"event_type":'
        + canonical_json(event_type_of(item))
        + b',"request":'
        + (item._sent_json + b"}")
    )


def request_digest(
    body: IngestRequest[Any] | Sequence[IngestRequest[Any]], pseudonymizer: Pseudonymizer
) -> str:
    """Keyed digest of what the client sent: one request, or a whole bulk in order.

    The digest is of the canonical JSON (RFC 8785) of the client's parsed JSON as kept by
    :func:`record_sent`, never of the validated model: defaults the schema fills in, and any
    normalisation a validator does, are not part of it, so a release that adds an optional
    field or a validation rule does not turn an honest retry into a conflict. What JSON itself
    says is the same value is the same: key order, whitespace, escapes (``\u00e4`` or ``ä``),
    number spelling (``1E2`` or ``100``). What only the schema says is the same is NOT
    normalised: a lower-case identity code, another UTC offset for the same instant, an
    explicit ``null`` for an omitted field. A retry resends the request it sent; normalising
    those would tie the digest to the schema of one release (the fault above) and would make
    receipts written by one release disagree with the next. A client that re-renders a request
    under the same key gets a clear ``idempotency-conflict``, never a silent second meaning.

    The event type is part of it, so equal bodies sent to two endpoints differ; a bulk item's
    ``event_type`` tag is not, so an item has the digest of the same request sent alone (the
    import's NDJSON lines are bulk items: the same item gives the same digest there).
    Keyed (``Pseudonymizer.keyed_digest``) because receipts keep it and requests hold identity
    codes and names.
    """
    if isinstance(body, IngestRequest):
        document = _digest_document(body)
    else:
        document = b"[" + b",".join(_digest_document(item) for item in body) + b"]"
    return pseudonymizer.keyed_digest(document)
