"""Encoding a call's new events before anything is written, shared by every sink.

A sink encodes all events of a call first, so an event that cannot be written (a value the
Avro schema refuses, a header that is not UTF-8) refuses its own call with
:class:`~hub.sink.EventNotWritable`, naming the indexes but never the values, and nothing else.

Every event is sealed with its person's data key (``keys``, had for the whole write in one
call: :func:`~hub.sink.sealing.ensure_keys`) before it is encoded; an event whose person has no
key in ``keys`` fails the call with :class:`~hub.sink.sealing.KeysUnavailable`, never in
plaintext.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import structlog

from hub.kafka.publisher import EncodedEvent, encode_event
from hub.privacy.fields import SealedFields
from hub.privacy.sealing import DataKey
from hub.serde import EventSerializer, SerdeError
from hub.serde.registry import SchemaRegistryError
from hub.sink.base import EventNotWritable, Receipt, SinkUnavailable, Submission
from hub.sink.sealing import key_of

log = structlog.get_logger(__name__)


def encode_new(
    serializer: EventSerializer,
    submissions: Sequence[Submission],
    new: Sequence[tuple[Submission, Receipt]],
    keys: Mapping[str, DataKey],
    fields: SealedFields | None = None,
) -> list[EncodedEvent]:
    """The records of ``new`` (a settled part of ``submissions``), sealed, in order.

    ``keys``: the data key of every subject of ``new`` (KeysUnavailable when one is missing).
    Raises EventNotWritable naming every submission whose event cannot be encoded, and
    SinkUnavailable when the schema registry does not answer (not the submission's fault).
    """
    encoded: list[EncodedEvent] = []
    unwritable: list[int] = []
    for submission, _ in new:
        key = key_of(keys, submission.event.envelope.subject)
        try:
            encoded.append(encode_event(serializer, submission.event, key, fields))
        except SchemaRegistryError as exc:
            raise SinkUnavailable(
                f"the schema registry did not answer ({type(exc).__name__}); nothing was "
                "written, retry later"
            ) from exc
        except (SerdeError, ValueError, TypeError) as exc:
            index = next(i for i, s in enumerate(submissions) if s is submission)
            log.warning(
                "ingest.event_not_writable",
                index=index,
                event_type=submission.event.event_type,
                error=type(exc).__name__,
            )
            unwritable.append(index)
    if unwritable:
        raise EventNotWritable(
            unwritable,
            f"{len(unwritable)} event(s) cannot be encoded for the log (schema or header "
            "rules); nothing of this submission was written",
        )
    return encoded


def subjects_to_seal(submissions: Iterable[Submission], known_keys: Iterable[str] = ()) -> set[str]:
    """The persons whose data keys a write of ``submissions`` needs: every subject of a
    submission whose dedupe key is not ``known`` (answered, not written)."""
    known = set(known_keys)
    return {s.event.envelope.subject for s in submissions if s.dedupe_key not in known}
