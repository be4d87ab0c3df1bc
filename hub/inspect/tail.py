"""Read the customer-path log back: decoded events with key, headers and position.

``hub tail`` never holds a key. A sealed personal value (:mod:`hub.privacy.sealing`) is shown
as ``<sealed>`` (:meth:`~hub.privacy.fields.SealedFields.redact`); a personal field written in
plaintext before field encryption is masked (``***``); so is anything shaped like an identity
code elsewhere (a field that is not ``pii``, a header, a decoding error quoting the record's
bytes): the edge refuses those, but older records or other writers may hold them.

``reveal`` is the exception an operator asks for with ``hub tail --reveal --reason``: the
caller passes a :class:`~hub.privacy.fields.KeyLookup` (the person keys, see
:mod:`hub.inspect.cli`), sealed values are opened with it, a value of a forgotten person shows
``<erased>``, one that cannot be opened for another reason ``<sealed>``; the caller records
every revealed entry (:attr:`LogEntry.revealed`) in the disclosure log before printing it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Final
from uuid import UUID

from hub.events.sensitivity import sensitive_fields
from hub.kafka.reading import read_topic
from hub.logging import redact_text
from hub.privacy.fields import SEALED_PLACEHOLDER, KeyLookup, SealedFields
from hub.privacy.sealing import KeyErased, is_sealed
from hub.serde import EventSerializer, SchemaCatalog, SerdeError
from hub.settings import HubSettings

MASK = "***"
ERASED_PLACEHOLDER: Final = "<erased>"
"""What ``hub tail --reveal`` shows for a value whose person was forgotten (key deleted)."""
BYTES_PLACEHOLDER: Final = "<bytes>"
"""Bytes that are not a sealed value (never printed: they may hold anything)."""


@dataclass(frozen=True)
class LogEntry:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: str | None
    headers: dict[str, str]
    type_name: str | None
    writer_schema: str | None
    event: dict[str, Any] | None
    error: str | None
    revealed: tuple[str, ...] = field(default=(), compare=False)
    """With ``reveal``: the personal fields shown in the clear (opened, or plaintext of before
    field encryption): what the disclosure log records. Not printed."""
    unopened: tuple[str, ...] = field(default=(), compare=False)
    """With ``reveal``: the sealed fields that stayed closed (erased, unknown key, broken)."""

    def to_json(self) -> str:
        body = {k: v for k, v in self.__dict__.items() if k not in ("revealed", "unopened")}
        return json.dumps(body, default=_json_default, ensure_ascii=False)

    @property
    def subject(self) -> str | None:
        envelope = (self.event or {}).get("envelope") or {}
        subject = envelope.get("subject")
        return str(subject) if subject is not None else None

    @property
    def event_id(self) -> str | None:
        envelope = (self.event or {}).get("envelope") or {}
        event_id = envelope.get("event_id")
        return str(event_id) if event_id is not None else None


def _json_default(value: object) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, bytes | bytearray):
        return SEALED_PLACEHOLDER if is_sealed(bytes(value)) else BYTES_PLACEHOLDER
    raise TypeError(f"cannot serialise {type(value).__name__}")


def mask_identity_codes(value: Any) -> Any:
    """*value* with identity-code-shaped text masked wherever it is: keys, values, nested."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {mask_identity_codes(k): mask_identity_codes(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_identity_codes(v) for v in value]
    return value


def _plaintext_paths(record: dict[str, Any], paths: dict[str, Any]) -> list[str]:
    """The pii paths that hold a value which is not sealed (plaintext of before encryption)."""
    found = []
    for path in paths:
        node: Any = record
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None and not is_sealed(node):
            found.append(path)
    return found


def mask_sensitive(record: dict[str, Any], paths: dict[str, Any]) -> dict[str, Any]:
    """The record with every pii value that is not sealed masked (sealed ones stay for
    :meth:`SealedFields.redact`, which shows them as ``<sealed>``)."""
    masked = dict(record)
    for path in paths:
        node = masked
        *parents, leaf = path.split(".")
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                break
            node[part] = child = dict(child)
            node = child
        else:
            if node.get(leaf) is not None and not is_sealed(node.get(leaf)):
                node[leaf] = MASK
    return masked


def _set(record: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = dict(record)
    node = out
    *parents, leaf = path.split(".")
    for part in parents:
        node[part] = dict(node[part])
        node = node[part]
    node[leaf] = value
    return out


async def read_log(
    settings: HubSettings,
    serializer: EventSerializer,
    catalog: SchemaCatalog,
    *,
    from_beginning: bool,
    limit: int | None,
    follow: bool,
    reveal: bool = False,
    keys: KeyLookup | None = None,
    fields: SealedFields | None = None,
) -> AsyncIterator[LogEntry]:
    """Entries of the customer-path topic, partition by partition order preserved.

    Without ``follow`` reading stops at the end offsets seen when it started. ``reveal``
    needs ``keys`` (ValueError otherwise): nothing is opened without explicit key access.
    """
    if reveal and keys is None:
        raise ValueError("revealing personal fields needs the person keys")
    masks = {name: sensitive_fields(catalog.event(name).current.raw) for name in catalog.names()}
    sealed = fields if fields is not None else SealedFields(catalog)
    records = read_topic(
        settings, settings.topic_customer_path, from_beginning=from_beginning, follow=follow
    )
    async with aclosing(records):  # stop the consumer also when the limit ends reading early
        seen = 0
        async for record in records:
            entry = await _entry(record, serializer, masks, sealed, keys if reveal else None)
            yield _with_stray_codes(entry) if reveal else _masked(entry)
            seen += 1
            if limit is not None and seen >= limit:
                return


STRAY_CODES: Final = "(identity codes outside the personal fields)"
"""What a revealed entry lists when it shows identity-code-shaped text elsewhere (a field that
is not ``pii``, a header, the key): unmasked by ``--reveal`` and so recorded too."""


def _with_stray_codes(entry: LogEntry) -> LogEntry:
    event = entry.event
    for path in entry.revealed:  # the personal fields are recorded as such already
        if event is not None:
            event = _set(event, path, None)
    plain = dataclasses.asdict(dataclasses.replace(entry, event=event))
    del plain["revealed"], plain["unopened"]
    if mask_identity_codes(plain) == plain:
        return entry
    return dataclasses.replace(entry, revealed=(*entry.revealed, STRAY_CODES))


def _masked(entry: LogEntry) -> LogEntry:
    plain = dataclasses.asdict(entry)
    del plain["revealed"], plain["unopened"]
    return LogEntry(**mask_identity_codes(plain))


async def _entry(
    record: Any,
    serializer: EventSerializer,
    masks: dict[str, Any],
    sealed: SealedFields,
    keys: KeyLookup | None,
) -> LogEntry:
    """One record as an entry; a value that cannot be decoded (a Confluent value without a
    registry, an unknown schema, a corrupt body) is an entry with the reason, not a crash."""
    headers = {key: value.decode("utf-8", "replace") for key, value in record.headers}
    base = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp_ms": record.timestamp,
        "key": record.key.decode("utf-8", "replace") if record.key is not None else None,
        "headers": headers,
    }
    try:
        decoded = await serializer.adecode(record.value)  # registry look-ups never block
    except SerdeError as error:
        return LogEntry(**base, type_name=None, writer_schema=None, event=None, error=str(error))
    paths = masks.get(decoded.type_name, {})
    type_name = decoded.type_name
    revealed: tuple[str, ...] = ()
    unopened: tuple[str, ...] = ()
    if keys is None:
        event = sealed.redact(type_name, mask_sensitive(decoded.record, paths))
    else:
        plaintext = _plaintext_paths(decoded.record, paths)
        # A key look-up may wait for the key topic (bounded): off the event loop.
        opened = await asyncio.to_thread(sealed.open, type_name, decoded.record, keys)
        event = opened.record
        shown = ERASED_PLACEHOLDER if isinstance(opened.error, KeyErased) else SEALED_PLACEHOLDER
        for path in opened.failed:
            event = _set(event, path, shown)
        event = sealed.redact(type_name, event)  # anything else still sealed
        revealed = tuple(sorted({*opened.opened, *plaintext}))
        unopened = opened.failed
    return LogEntry(
        **base,
        type_name=type_name,
        writer_schema=decoded.writer_schema_ref,
        event=event,
        error=None,
        revealed=revealed,
        unopened=unopened,
    )
