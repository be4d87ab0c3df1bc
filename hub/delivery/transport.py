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
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum, StrEnum
from typing import Any, Final, Protocol
from uuid import UUID

from hub.logging import redact_text

PROBLEM_MAX_CHARS: Final = 500
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

    ``problem`` is the receiver's own text about a failure, already redacted and cut to
    :data:`PROBLEM_MAX_CHARS`: it goes into dead-letter headers and logs. ``duplicate``: the
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


def problem_text(text: str | None) -> str | None:
    """A receiver's text as it may be kept: redacted, whitespace folded, cut."""
    if not text:
        return None
    folded = " ".join(text.split())
    return redact_text(folded)[:PROBLEM_MAX_CHARS] or None


def problem_from_body(content: bytes, content_type: str | None) -> str | None:
    """The human part of an RFC 9457 problem (``title: detail``), else the body's text."""
    if content_type and "json" in content_type:
        try:
            data = json.loads(content)
        except ValueError:
            data = None
        if isinstance(data, dict):
            parts = [str(data[k]) for k in ("title", "detail") if data.get(k)]
            if parts:
                return problem_text(": ".join(parts))
    return problem_text(content.decode("utf-8", "replace"))


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
