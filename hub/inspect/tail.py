"""Read the customer-path log back: decoded events with key, headers and position.

``hub tail`` never holds a key. A sealed personal value (:mod:`hub.privacy.sealing`) is shown
as ``<sealed>`` (:meth:`~hub.privacy.fields.SealedFields.redact`); a personal field written in
plaintext before field encryption is masked (``***``); so is anything shaped like an identity
code elsewhere (a field that is not ``pii``, a header, a decoding error quoting the record's
bytes): the edge refuses those, but older records or other writers may hold them.

``reveal`` is the exception an operator asks for with ``hub tail --reveal --reason``: the
caller passes the person keys (:class:`RevealKeys`, see :mod:`hub.inspect.cli`), sealed values
are opened with them, a value of a forgotten person shows ``<erased>``, one that cannot be
opened for another reason ``<sealed>``; the caller records every revealed entry
(:attr:`LogEntry.revealed`) in the disclosure log before printing it.

What the router and delivery hold back (PersonalDataRestricted) a reveal holds back too, as
``<restricted>``: every personal value, sealed or plaintext, of a person whose processing is
restricted (GDPR art. 18, :meth:`KeyDirectory.restricted`), and the plaintext personal values
of a forgotten person in records written before encryption and recorded before they were
forgotten (:func:`hub.routing.outbox.restricted`). Such an entry is masked like one without
``--reveal`` (identity-code-shaped text elsewhere included), so a reveal that shows nothing of
a person records nothing for them. The keys of a page of records (up to :data:`PAGE`) are
looked up in one batch (one call to the KEK keeper for the keys not yet unwrapped), never
once per record.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Sequence
from contextlib import aclosing, suppress
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Final, Protocol
from uuid import UUID

from hub.events.sensitivity import sensitive_fields
from hub.kafka.reading import read_topic
from hub.logging import redact_text
from hub.privacy.fields import SEALED_PLACEHOLDER, SealedFields
from hub.privacy.sealing import DataKey, KeyErased, SealError, is_sealed, sealed_key_id
from hub.serde import EventSerializer, SchemaCatalog, SerdeError
from hub.settings import HubSettings

if TYPE_CHECKING:  # plain hub tail loads no key code (the directory and the router's rules)
    from hub.privacy.datakeys import KeyDirectory

MASK = "***"
ERASED_PLACEHOLDER: Final = "<erased>"
"""What ``hub tail --reveal`` shows for a value whose person was forgotten (key deleted)."""
BYTES_PLACEHOLDER: Final = "<bytes>"
"""Bytes that are not a sealed value (never printed: they may hold anything)."""
RESTRICTED_PLACEHOLDER: Final = "<restricted>"
"""What ``hub tail --reveal`` shows for a value the routes hold back (PersonalDataRestricted):
any personal value of a person whose processing is restricted, and plaintext of before field
encryption of a person forgotten after it was recorded."""
PAGE: Final = 500
"""Records whose data keys ``--reveal`` looks up in one batch."""
PAGE_WAIT_S: Final = 0.2
"""How long a page that has records waits for the next one before it is shown (a follower
shows what came without waiting for a full page)."""


class RevealKeys(Protocol):
    """The person keys a reveal needs: the directory (forgotten and restricted marks, which
    keys are stored) and :meth:`data_key`; ``data_keys`` (a batch) and ``catch_up`` are used
    when the store has them (:class:`~hub.privacy.keystore.KafkaPersonKeys` does)."""

    directory: KeyDirectory

    def data_key(self, subject: str, key_id: UUID) -> DataKey: ...


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
    withheld: tuple[str, ...] = field(default=(), compare=False)
    """With ``reveal``: the personal fields held back (shown ``<restricted>``)."""

    def to_json(self) -> str:
        body = {k: v for k, v in self.__dict__.items() if k not in _NOT_PRINTED}
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


_NOT_PRINTED: Final = ("revealed", "unopened", "withheld")


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
    keys: RevealKeys | None = None,
    fields: SealedFields | None = None,
) -> AsyncIterator[LogEntry]:
    """Entries of the customer-path topic, partition by partition order preserved.

    Without ``follow`` reading stops at the end offsets seen when it started. ``reveal``
    needs ``keys`` (ValueError otherwise): nothing is opened without explicit key access.
    """
    if reveal and keys is None:
        raise ValueError("revealing personal fields needs the person keys")
    records = read_topic(
        settings, settings.topic_customer_path, from_beginning=from_beginning, follow=follow
    )
    async with aclosing(records):  # stop the consumer also when the limit ends reading early
        entries = entries_of(
            records, serializer, catalog, limit=limit, keys=keys if reveal else None, fields=fields
        )
        async with aclosing(entries):
            async for entry in entries:
                yield entry


async def entries_of(
    records: AsyncIterator[Any],
    serializer: EventSerializer,
    catalog: SchemaCatalog,
    *,
    limit: int | None = None,
    keys: RevealKeys | None = None,
    fields: SealedFields | None = None,
) -> AsyncGenerator[LogEntry, None]:
    """The entries of ``records`` (Kafka records); with ``keys`` revealed, page by page."""
    masks = {name: sensitive_fields(catalog.event(name).current.raw) for name in catalog.names()}
    sealed = fields if fields is not None else SealedFields(catalog)
    if keys is None:
        seen = 0
        async for record in records:
            yield _masked(_without_keys(await _entry(record, serializer), masks, sealed))
            seen += 1
            if limit is not None and seen >= limit:
                return
        return
    pages = _pages(records, PAGE, limit)
    async with aclosing(pages):
        async for page in pages:
            decoded = [await _entry(record, serializer) for record in page]
            # Key look-ups may wait for the key topic or the KEK keeper (bounded): off the loop.
            shown = await asyncio.to_thread(_reveal_page, decoded, masks, sealed, keys)
            for entry in shown:
                yield entry


async def _next(records: AsyncIterator[Any]) -> Any:
    return await anext(records)


async def _pages(
    records: AsyncIterator[Any], size: int, limit: int | None
) -> AsyncGenerator[list[Any], None]:
    """``records`` in pages of up to ``size`` (``limit`` records in all): a page ends when it is
    full, the records end, or the next record is not there within :data:`PAGE_WAIT_S`."""
    taken = 0
    waiting: asyncio.Task[Any] | None = None
    try:
        while limit is None or taken < limit:
            want = size if limit is None else min(size, limit - taken)
            page: list[Any] = []
            ended = False
            while len(page) < want:
                if waiting is None:
                    waiting = asyncio.ensure_future(_next(records))
                if page:
                    done, _ = await asyncio.wait({waiting}, timeout=PAGE_WAIT_S)
                    if not done:
                        break  # show what came; the look-up of the next record goes on
                try:
                    page.append(await waiting)
                except StopAsyncIteration:
                    ended = True
                    break
                finally:
                    if waiting.done():
                        waiting = None
            if page:
                taken += len(page)
                yield page
            if ended:
                return
    finally:
        if waiting is not None:
            waiting.cancel()
            with suppress(BaseException):
                await waiting


STRAY_CODES: Final = "(identity codes outside the personal fields)"
"""What a revealed entry lists when it shows identity-code-shaped text elsewhere (a field that
is not ``pii``, a header, the key): unmasked by ``--reveal`` and so recorded too."""


def _with_stray_codes(entry: LogEntry) -> LogEntry:
    event = entry.event
    for path in entry.revealed:  # the personal fields are recorded as such already
        if event is not None:
            event = _set(event, path, None)
    plain = dataclasses.asdict(dataclasses.replace(entry, event=event))
    for name in _NOT_PRINTED:
        del plain[name]
    if mask_identity_codes(plain) == plain:
        return entry
    return dataclasses.replace(entry, revealed=(*entry.revealed, STRAY_CODES))


def _masked(entry: LogEntry) -> LogEntry:
    """The entry with identity-code-shaped text masked everywhere (what it records is kept)."""
    plain = dataclasses.asdict(entry)
    for name in _NOT_PRINTED:
        del plain[name]
    masked = LogEntry(**mask_identity_codes(plain))
    return dataclasses.replace(
        masked, revealed=entry.revealed, unopened=entry.unopened, withheld=entry.withheld
    )


async def _entry(record: Any, serializer: EventSerializer) -> LogEntry:
    """One record as an entry, personal values as they are in the log (sealed bytes, plaintext
    of before encryption): :func:`_masked` or :func:`_reveal_page` make it showable. A value
    that cannot be decoded (a Confluent value without a registry, an unknown schema, a corrupt
    body) is an entry with the reason, not a crash."""
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
    return LogEntry(
        **base,
        type_name=decoded.type_name,
        writer_schema=decoded.writer_schema_ref,
        event=decoded.record,
        error=None,
    )


def _without_keys(entry: LogEntry, masks: dict[str, Any], sealed: SealedFields) -> LogEntry:
    """Plaintext personal values masked, sealed ones ``<sealed>``."""
    if entry.event is None or entry.type_name is None:
        return entry
    paths = masks.get(entry.type_name, {})
    event = sealed.redact(entry.type_name, mask_sensitive(entry.event, paths))
    return dataclasses.replace(entry, event=event)


def _reveal_page(
    entries: Sequence[LogEntry],
    masks: dict[str, Any],
    sealed: SealedFields,
    keys: RevealKeys,
) -> list[LogEntry]:
    """The page's entries revealed as far as the keys and the marks allow (runs in a thread:
    the keys of the whole page are looked up in one batch first)."""
    directory = keys.directory
    wanted: list[tuple[str, UUID]] = []
    for entry in entries:
        subject = entry.subject
        if entry.event is None or entry.type_name is None or subject is None:
            continue
        if directory.restricted(subject) is not None:
            continue  # nothing of theirs is opened: their keys are not even unwrapped
        for _, value in sealed.sealed_values(entry.type_name, entry.event):
            try:
                wanted.append((subject, sealed_key_id(value)))
            except SealError:
                continue  # broken: open() says so
    found = _page_keys(keys, wanted)
    shown = []
    for entry in entries:
        if entry.event is None or entry.type_name is None:
            shown.append(_masked(entry))
        else:
            shown.append(_revealed(entry, entry.type_name, entry.event, masks, sealed, found))
    return shown


def _revealed(
    entry: LogEntry,
    type_name: str,
    record: dict[str, Any],
    masks: dict[str, Any],
    sealed: SealedFields,
    found: _FoundKeys,
) -> LogEntry:
    paths = masks.get(type_name, {})
    subject = entry.subject
    directory = found.keys.directory
    plaintext = _plaintext_paths(record, paths)
    if subject is not None and directory.restricted(subject) is not None:  # GDPR art. 18
        held = sorted({*plaintext, *(path for path, _ in sealed.sealed_values(type_name, record))})
        event = record
        for path in held:
            event = _set(event, path, RESTRICTED_PLACEHOLDER)
        return _masked(dataclasses.replace(entry, event=event, withheld=tuple(held)))
    from hub.routing.outbox import restricted as held_back_after_forgetting

    mark = directory.forgotten(subject) if subject is not None else None
    forgotten_before = held_back_after_forgetting(mark, record)
    opened = sealed.open(type_name, record, found)
    event = opened.record
    shown = ERASED_PLACEHOLDER if isinstance(opened.error, KeyErased) else SEALED_PLACEHOLDER
    for path in opened.failed:
        event = _set(event, path, shown)
    event = sealed.redact(type_name, event)  # anything else still sealed
    if forgotten_before:  # plaintext of before encryption, of a person forgotten since
        for path in plaintext:
            event = _set(event, path, RESTRICTED_PLACEHOLDER)
        held_entry = dataclasses.replace(
            entry,
            event=event,
            revealed=tuple(sorted(opened.opened)),
            unopened=opened.failed,
            withheld=tuple(sorted(plaintext)),
        )
        return _masked(held_entry)
    revealed = dataclasses.replace(
        entry,
        event=event,
        revealed=tuple(sorted({*opened.opened, *plaintext})),
        unopened=opened.failed,
    )
    return _with_stray_codes(revealed)


class _FoundKeys:
    """The page's keys (:class:`~hub.privacy.fields.KeyLookup`): each found key or the reason it
    cannot be had; a pair not looked up (none should be) is asked of the store."""

    def __init__(self, keys: RevealKeys, found: dict[tuple[str, UUID], DataKey | SealError]):
        self.keys = keys
        self.found = found

    def data_key(self, subject: str, key_id: UUID) -> DataKey:
        got = self.found.get((subject, key_id))
        if got is None:
            got = self.keys.data_key(subject, key_id)
        if isinstance(got, SealError):
            raise got
        return got


def _page_keys(keys: RevealKeys, wanted: Iterable[tuple[str, UUID]]) -> _FoundKeys:
    """Look the page's keys up in one batch: keys the directory knows and has not erased are
    unwrapped together; the others get their error without a KEK call (a key the
    directory does not know after one catch-up of the topic is unknown)."""
    directory = keys.directory
    pairs = list(dict.fromkeys(wanted))
    found: dict[tuple[str, UUID], DataKey | SealError] = {}
    unknown = [p for p in pairs if not directory.knows(*p)]
    catch_up: Callable[[], object] | None = getattr(keys, "catch_up", None)
    if unknown and catch_up is not None:
        catch_up()  # once per page, not once per record
    live = []
    for subject, key_id in pairs:
        if directory.knows(subject, key_id):  # stored and not erased (by its marker's place)
            live.append((subject, key_id))
        else:
            found[(subject, key_id)] = _failure(directory, subject, key_id)
    if live:
        batch: Callable[[list[tuple[str, UUID]]], dict[tuple[str, UUID], DataKey]] = getattr(
            keys, "data_keys", directory.data_keys
        )
        try:
            found.update(batch(live))
        except SealError:  # one of them erased or broken meanwhile: each on its own
            for pair in live:
                try:
                    found[pair] = keys.data_key(*pair)
                except SealError as problem:
                    found[pair] = problem
    return _FoundKeys(keys, found)


def _failure(directory: KeyDirectory, subject: str, key_id: UUID) -> SealError:
    """Why the directory has no such key (KeyErased or KeyUnknown), without unwrapping."""
    try:
        directory.data_key(subject, key_id)  # raises before any unwrap: the key is not stored
    except SealError as problem:
        return problem
    raise AssertionError("a key the directory does not know opened")
