"""What the delivery loop hands a connector, and what it gets back.

The core (``hub/delivery``) never imports a connector: a connector (``connectors/webhook``,
``connectors/xroad``) implements :class:`Transport` for one endpoint, and the loop only sees
:class:`DeliveryResult`. Everything that decides what happens next (settle, retry, dead letter)
reads the status alone, so one classification serves every transport (:func:`classify`).

The body is the same for every transport: ``{"type", "timestamp", "data"}`` with the projected
record as JSON (:func:`json_body`). It is built once per record, not per attempt: a retry sends
the same bytes; only the signature's timestamp is new (a connector signs at send time, because
Standard Webhooks receivers refuse timestamps older than five minutes, and a retry may come a
day later).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum, StrEnum
from typing import Any, Final, Protocol
from uuid import UUID

from hub.identity.contact import redact_contacts
from hub.logging import redact_text

PROBLEM_MAX_CHARS: Final = 300
#: What stands where a receiver's text quoted something personal.
REDACTED_PROBLEM: Final = "[REDACTED]"
#: Shortest value of the sent body that is cut out of a problem text (shorter ones, a code
#: like "A" or "no", say nothing about a person and would shred the text).
_MIN_SCRUB_CHARS: Final = 3
#: Statuses that say "not now" rather than "never": timeout, conflict, throttled.
RETRYABLE_4XX: Final = frozenset({408, 409, 429})


@dataclass(frozen=True, slots=True)
class DeliveryRequest:
    """One attempt's input; ``headers`` are the static ones (Idempotency-Key, content type,
    ``webhook-id``); a connector adds its own (signature, X-Road-Client) when sending."""

    event_id: str
    type_name: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """A receiver's answer. ``status`` None: no answer (connection refused, timeout, reset).

    ``problem`` is the receiver's own text about a failure, already scrubbed (see
    :func:`problem_from_body`) and cut to :data:`PROBLEM_MAX_CHARS`: it goes into dead-letter
    headers, ``hub dlq show`` and logs. ``duplicate``: the
    receiver said it had applied this event id before (``{"duplicate": true}``).
    """

    status: int | None
    retry_after_s: float | None = None
    problem: str | None = None
    duplicate: bool = False

    @classmethod
    def no_answer(cls, error: BaseException) -> DeliveryResult:
        """A failure without a status; the exception's class name only (its text may quote
        a URL with an endpoint key, which is fine, but not a body, which may not be)."""
        return cls(status=None, problem=type(error).__name__)


class Outcome(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    REFUSED = "refused"


def classify(result: DeliveryResult) -> Outcome:
    """2xx delivers; 408/409/429/5xx and no answer retry; any other status is a refusal.

    409 retries: a receiver may answer it for "another request with this key is in progress"
    (IETF idempotency-key draft); one that has applied the event answers 2xx with
    ``{"duplicate": true}``. 1xx/3xx are refusals: a receiver that redirects is misconfigured.
    """
    status = result.status
    if status is None or status >= 500 or status in RETRYABLE_4XX:
        return Outcome.RETRY
    if 200 <= status < 300:
        return Outcome.DELIVERED
    return Outcome.REFUSED


def counts_against_breaker(result: DeliveryResult) -> bool:
    """Whether the answer says the receiver is unwell (not just this one event)."""
    status = result.status
    return status is None or status >= 500 or status in (408, 429)


class Transport(Protocol):
    """Sends one request to one endpoint; never raises for a receiver's or network's fault
    (that is a :class:`DeliveryResult`), only for a bug."""

    async def send(self, request: DeliveryRequest) -> DeliveryResult: ...

    async def aclose(self) -> None: ...


def _sent_values(body: bytes | None) -> tuple[list[str], list[str]]:
    """(values to cut out, values to keep) of a sent JSON body.

    Every string of the body (and every longer word of one, and every number of five digits
    or more) is cut: a receiver that echoes the body echoes names, e-mail addresses, phone
    numbers, whatever pii field the route granted. The event id and type are kept: they are
    not personal, the dead letter names them anyway, and they say which event was refused.
    """
    if not body:
        return [], []
    try:
        data = json.loads(body)
    except ValueError:
        return [], []
    keep: list[str] = []
    if isinstance(data, dict):
        keep.extend(v for v in (data.get("type"),) if isinstance(v, str) and v)
        inner = data.get("data")
        envelope = inner.get("envelope") if isinstance(inner, dict) else None
        if isinstance(envelope, dict):
            keep.extend(
                v for k in ("event_id", "event_type") if isinstance(v := envelope.get(k), str) and v
            )
    cut: set[str] = set()

    def walk(value: object) -> Iterator[str]:
        if isinstance(value, dict):
            for item in value.values():
                yield from walk(item)
        elif isinstance(value, list):
            for item in value:
                yield from walk(item)
        elif isinstance(value, str):
            yield value
            yield from value.split()
        elif isinstance(value, int | float) and not isinstance(value, bool):
            text = str(value)
            if sum(c.isdigit() for c in text) >= 5:
                yield text

    for value in walk(data):
        value = value.strip()
        if len(value) >= _MIN_SCRUB_CHARS and value not in keep:
            cut.add(value)
    return sorted(cut, key=len, reverse=True), keep


def problem_text(text: str | None, sent: bytes | None = None) -> str | None:
    """A receiver's text as it may be kept: whitespace folded; every value of the ``sent``
    body, e-mail addresses, phone numbers and identity codes cut out; at most
    :data:`PROBLEM_MAX_CHARS` characters."""
    if not text:
        return None
    folded = " ".join(text.split())
    cut, keep = _sent_values(sent)
    # The kept values are set aside first, so no pattern below can eat into them.
    marks = {f"\x00{i}\x00": value for i, value in enumerate(keep)}
    for mark, value in marks.items():
        folded = folded.replace(value, mark)
    if cut:
        pattern = re.compile("|".join(re.escape(v) for v in cut), re.IGNORECASE)
        folded = pattern.sub(REDACTED_PROBLEM, folded)
    folded = redact_text(folded)  # identity codes first: the phone pattern would split them
    folded = redact_contacts(folded, REDACTED_PROBLEM)
    for mark, value in marks.items():
        folded = folded.replace(mark, value)
    return folded[:PROBLEM_MAX_CHARS] or None


def problem_from_body(
    content: bytes, content_type: str | None, sent: bytes | None = None
) -> str | None:
    """An RFC 9457 problem's ``title: detail [type]``, scrubbed by :func:`problem_text`
    against the body that was ``sent``; None for any other body.

    Only a problem document's fields are kept: an HTML error page or a plain-text echo of
    the request is the receiver's noise and the likeliest place for a person's data."""
    if not content or not content_type or "json" not in content_type:
        return None
    try:
        data = json.loads(content)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    parts = [str(data[k]) for k in ("title", "detail") if isinstance(data.get(k), str | int)]
    text = ": ".join(p for p in parts if p)
    kind = data.get("type")
    if isinstance(kind, str) and kind and kind != "about:blank":
        text = f"{text} [{kind}]" if text else f"[{kind}]"
    return problem_text(text, sent)


def answered_duplicate(content: bytes) -> bool:
    """Whether a 2xx body is a receiver's ``{"duplicate": true}`` (cheap check first)."""
    if b"duplicate" not in content:
        return False
    try:
        data = json.loads(content)
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("duplicate") is True


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, date | UUID):
        return value.isoformat() if isinstance(value, date) else str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def json_body(type_name: str, record: dict[str, Any]) -> bytes:
    """The body every receiver gets: ``{"type", "timestamp", "data"}`` (Standard Webhooks'
    payload shape); ``timestamp`` is the event's occurred_at, ``data`` the projected record
    with UUIDs, dates and datetimes as ISO strings (datetimes in UTC, milliseconds, ``Z``)."""
    envelope = record.get("envelope") or {}
    occurred = envelope.get("occurred_at")
    body = {
        "type": type_name,
        "timestamp": _json_default(occurred) if occurred is not None else None,
        "data": record,
    }
    return json.dumps(body, default=_json_default, separators=(",", ":")).encode()


def static_headers(event_id: str) -> dict[str, str]:
    """Headers every attempt of one event carries, whatever the transport."""
    return {
        "Content-Type": "application/json",
        "Idempotency-Key": event_id,
        "webhook-id": event_id,
    }
