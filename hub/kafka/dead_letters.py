"""Dead letters: a record the hub could not decode, route or deliver, with the reason in headers.

Shaped after Kafka Connect's error headers (``__connect.errors.*``): the value and key are the
original record's, untouched, so a replay after the fix sends the same bytes (the same event
id, which receivers dedupe by); everything about the failure is in ``hub-dlq-*`` headers. The
reason passes through the log redactor: a receiver's problem text or a decoder's message may
quote a value, and the dead-letter topic is read by operators.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from hub.logging import redact_text

HEADER_PREFIX = "hub-dlq-"
REASON_MAX_CHARS = 1000


class DeadLetterStage(StrEnum):
    DECODE = "decode"
    """The log record could not be decoded (not Avro of a known schema)."""
    ROUTE = "route"
    """Decoded, but no destination could be decided (e.g. a provider the hub does not know)."""
    DELIVER = "deliver"
    """The receiver refused it, or the retry schedule ran out."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Why and where from: what the ``hub-dlq-*`` headers of one dead letter say."""

    stage: DeadLetterStage
    error_class: str
    reason: str
    source_topic: str
    source_partition: int
    source_offset: int
    attempts: int = 1
    first_attempt_at: datetime | None = None
    last_attempt_at: datetime | None = None
    destination: str | None = None
    event_id: str | None = None
    event_type: str | None = None

    def headers(self) -> list[tuple[str, bytes]]:
        """The ``hub-dlq-*`` headers; times are ISO 8601 UTC, the reason is redacted."""
        now = datetime.now(UTC)
        first = self.first_attempt_at or now
        last = self.last_attempt_at or first
        values: dict[str, str | None] = {
            "stage": self.stage.value,
            "error-class": self.error_class,
            "reason": redact_text(self.reason)[:REASON_MAX_CHARS],
            "attempts": str(self.attempts),
            "first-attempt-at": first.astimezone(UTC).isoformat(),
            "last-attempt-at": last.astimezone(UTC).isoformat(),
            "source-topic": self.source_topic,
            "source-partition": str(self.source_partition),
            "source-offset": str(self.source_offset),
            "destination": self.destination,
            "event-id": self.event_id,
            "event-type": self.event_type,
        }
        return [(HEADER_PREFIX + k, v.encode()) for k, v in values.items() if v is not None]

    @classmethod
    def from_headers(cls, headers: Iterable[tuple[str, bytes | None]]) -> DeadLetter:
        """Read the ``hub-dlq-*`` headers back; ValueError names a missing or bad header."""
        found = {
            k[len(HEADER_PREFIX) :]: (v or b"").decode("utf-8", "replace")
            for k, v in headers
            if k.startswith(HEADER_PREFIX)
        }
        try:
            return cls(
                stage=DeadLetterStage(found["stage"]),
                error_class=found["error-class"],
                reason=found["reason"],
                source_topic=found["source-topic"],
                source_partition=int(found["source-partition"]),
                source_offset=int(found["source-offset"]),
                attempts=int(found["attempts"]),
                first_attempt_at=datetime.fromisoformat(found["first-attempt-at"]),
                last_attempt_at=datetime.fromisoformat(found["last-attempt-at"]),
                destination=found.get("destination"),
                event_id=found.get("event-id"),
                event_type=found.get("event-type"),
            )
        except KeyError as missing:
            header = f"{HEADER_PREFIX}{missing.args[0]}"
            raise ValueError(f"dead letter without header {header}") from None


def with_dead_letter_headers(
    original: Sequence[tuple[str, bytes]] | None, letter: DeadLetter
) -> list[tuple[str, bytes]]:
    """The original record's headers (CloudEvents ones stay) with the ``hub-dlq-*`` ones set."""
    kept = [(k, v) for k, v in (original or ()) if not k.startswith(HEADER_PREFIX)]
    return [*kept, *letter.headers()]
