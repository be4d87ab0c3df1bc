"""Per-person data keys: the record format of the person-keys topic and the key directory.

Topic records (compacted, JSON values):

* key ``<pseudonym>/<key id>``: one wrapped data key,
  ``{"v": 1, "subject", "key_id", "kek", "wrapped" (base64), "created_at"}``;
  a tombstone (null value) deletes it;
* key ``<pseudonym>/forgotten``: ``{"v": 1, "subject", "forgotten_at", "reason"}``, kept so
  that a reader started after compaction removed the tombstones still knows why a key is gone
  (and that records recorded before that moment lost their personal fields); a reader drops
  the unwrapped keys it erases as soon as it reads it;
* key ``<pseudonym>/restricted``: ``{"v": 1, "subject", "restricted_at", "basis"}``: processing
  restricted (GDPR art. 18), the keys stay but no route gets the personal fields; a tombstone
  lifts the restriction.

A person may have several keys (two writers creating one at once, a new key after being
forgotten); every key stays valid until the person is forgotten, and new values are sealed
with the newest. :class:`KeyDirectory` is the in-memory state of the topic shared by the
Kafka-backed store (:mod:`hub.privacy.keystore`) and :class:`MemoryPersonKeys` (tests of
handler logic).
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final
from uuid import UUID

from hub.privacy.kek import (
    KekError,
    KekUnavailable,
    KeyEncryptionKeys,
    WrappedKey,
    key_context,
)
from hub.privacy.sealing import DataKey, KeyErased, KeyUnknown, new_data_key

FORGOTTEN: Final = "forgotten"
RESTRICTED: Final = "restricted"
RECORD_VERSION: Final = 1
UNWRAPPED_CACHE: Final = 100_000
"""Data keys kept unwrapped in memory per process (about 150 B each)."""


@dataclass(frozen=True, slots=True)
class StoredKey:
    subject: str
    key_id: UUID
    wrapped: WrappedKey
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Forgotten:
    subject: str
    forgotten_at: datetime
    reason: str


MAX_RECORD_BYTES: Final = 16_384
"""A person-keys value is a few hundred bytes; a larger one is refused unparsed."""


def context_of(key: StoredKey) -> bytes:
    """What the wrapping of a stored key is bound to: person, key id and creation time (so a
    record with a changed time does not unwrap)."""
    return key_context(key.subject, key.key_id.bytes, key.created_at)


def _aware(body: dict[str, Any], name: str) -> datetime:
    value = datetime.fromisoformat(_text(body, name))
    if value.tzinfo is None:
        raise ValueError(f"{name} has no time zone")
    return value


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str):
        raise ValueError(f"{name} is missing or not text")
    return value


def record_key(subject: str, key_id: UUID | str) -> bytes:
    return f"{subject}/{key_id}".encode()


def encode_stored(key: StoredKey) -> bytes:
    return json.dumps(
        {
            "v": RECORD_VERSION,
            "subject": key.subject,
            "key_id": str(key.key_id),
            "kek": key.wrapped.kek,
            "wrapped": base64.b64encode(key.wrapped.ciphertext).decode(),
            "created_at": key.created_at.isoformat(),
        }
    ).encode()


def encode_forgotten(mark: Forgotten) -> bytes:
    return json.dumps(
        {
            "v": RECORD_VERSION,
            "subject": mark.subject,
            "forgotten_at": mark.forgotten_at.isoformat(),
            "reason": mark.reason,
        }
    ).encode()


def decode_record(key: bytes, value: bytes | None) -> tuple[str, str, dict[str, Any] | None]:
    """``(subject, key id or "forgotten", body or None for a tombstone)``; ValueError if bad."""
    subject, sep, name = key.decode().partition("/")
    if not sep or not subject or not name:
        raise ValueError("a person-keys record key is <pseudonym>/<key id>")
    if value is None:
        return subject, name, None
    if len(value) > MAX_RECORD_BYTES:
        raise ValueError(f"a person-keys value of {len(value)} bytes (at most {MAX_RECORD_BYTES})")
    try:
        body = json.loads(value)
    except RecursionError:
        raise ValueError("a person-keys value nested too deep") from None
    if not isinstance(body, dict) or body.get("subject") != subject:
        raise ValueError("a person-keys record names another subject than its key")
    return subject, name, body


@dataclass(frozen=True, slots=True)
class Restricted:
    """Processing restricted (GDPR art. 18): the keys stay, personal fields are not routed."""

    subject: str
    restricted_at: datetime
    basis: str


def encode_restricted(mark: Restricted) -> bytes:
    return json.dumps(
        {
            "v": RECORD_VERSION,
            "subject": mark.subject,
            "restricted_at": mark.restricted_at.isoformat(),
            "basis": mark.basis,
        }
    ).encode()


@dataclass
class _Person:
    keys: dict[UUID, StoredKey] = field(default_factory=dict)
    erased: set[UUID] = field(default_factory=set)
    """Key ids erased by a tombstone, or by a forgotten mark that came after their record:
    by position in the partition, never by comparing two hosts' clocks. An erased id is
    never live again, whatever record of it comes later."""
    forgotten: Forgotten | None = None
    restricted: Restricted | None = None


class KeyDirectory:
    """What the person-keys topic says, applied record by record; thread-safe.

    Unwrapped data keys are cached (LRU); a tombstone drops the cached key at once.
    """

    def __init__(self, kek: KeyEncryptionKeys) -> None:
        self.kek = kek
        self._people: dict[str, _Person] = {}
        self._clear: OrderedDict[tuple[str, UUID], DataKey] = OrderedDict()
        self._lock = threading.RLock()

    # -- applying topic records ----------------------------------------------------------------

    def apply(self, key: bytes, value: bytes | None) -> None:
        """Apply one topic record (raises ValueError for a record of another shape)."""
        subject, name, body = decode_record(key, value)
        with self._lock:
            person = self._people.setdefault(subject, _Person())
            if name == FORGOTTEN:
                if body is not None:
                    person.forgotten = Forgotten(
                        subject, _aware(body, "forgotten_at"), _text(body, "reason")
                    )
                    self._erase(subject, person, set(person.keys))
                return
            if name == RESTRICTED:
                person.restricted = (
                    None
                    if body is None
                    else Restricted(subject, _aware(body, "restricted_at"), _text(body, "basis"))
                )
                return
            key_id = UUID(name)
            if body is None:
                person.keys.pop(key_id, None)
                self._erase(subject, person, {key_id})
                return
            stored = StoredKey(
                subject,
                key_id,
                WrappedKey(_text(body, "kek"), base64.b64decode(_text(body, "wrapped"))),
                _aware(body, "created_at"),
            )
            person.keys[key_id] = stored  # present in the topic, live or not
            cached = self._clear.get((subject, key_id))
            if cached is not None and cached.created_at != stored.created_at:
                self._clear.pop((subject, key_id), None)

    def _erase(self, subject: str, person: _Person, key_ids: set[UUID]) -> None:
        """Erase key ids at once: unwrapped copies go from the cache too."""
        person.erased |= key_ids
        for key_id in key_ids:
            self._clear.pop((subject, key_id), None)

    # -- reading ---------------------------------------------------------------------------------

    def stored(self, subject: str) -> list[StoredKey]:
        """Every key record of the person still in the topic, live or erased, oldest first."""
        with self._lock:
            person = self._people.get(subject)
            return [] if person is None else sorted(person.keys.values(), key=_age)

    def erased_stored(self, subject: str) -> list[StoredKey]:
        """Key records still in the topic although erased: they want a tombstone."""
        return [k for k in self.stored(subject) if self.is_erased(subject, k.key_id)]

    def is_erased(self, subject: str, key_id: UUID) -> bool:
        """Erased by a tombstone or a later forgotten mark; or created before a mark by its
        (authenticated) creation time: a record written again after its tombstone was
        compacted away does not come back to life."""
        with self._lock:
            person = self._people.get(subject)
            if person is None:
                return False
            if key_id in person.erased:
                return True
            stored = person.keys.get(key_id)
            mark = person.forgotten
            return (
                stored is not None and mark is not None and stored.created_at <= mark.forgotten_at
            )

    def all_stored(self) -> list[StoredKey]:
        with self._lock:
            return [k for p in self._people.values() for k in p.keys.values()]

    def forgotten(self, subject: str) -> Forgotten | None:
        with self._lock:
            person = self._people.get(subject)
            return None if person is None else person.forgotten

    def restricted(self, subject: str) -> Restricted | None:
        """The person's restriction of processing in force, if any (a tombstone lifts it)."""
        with self._lock:
            person = self._people.get(subject)
            return None if person is None else person.restricted

    def all_forgotten(self) -> list[Forgotten]:
        """Every forgotten marker (``hub keys status``, retention jobs)."""
        with self._lock:
            return [p.forgotten for p in self._people.values() if p.forgotten is not None]

    def knows(self, subject: str, key_id: UUID) -> bool:
        """Whether the key is live (stored and not erased)."""
        with self._lock:
            person = self._people.get(subject)
            return (
                person is not None and key_id in person.keys and not self.is_erased(subject, key_id)
            )

    def newest(self, subject: str) -> StoredKey | None:
        """The key new values of the person are sealed with (created after any forgetting)."""
        live = [k for k in self.stored(subject) if not self.is_erased(subject, k.key_id)]
        return live[-1] if live else None

    def data_key(self, subject: str, key_id: UUID) -> DataKey:
        """The unwrapped key (:class:`~hub.privacy.fields.KeyLookup`); KeyErased / KeyUnknown."""
        return self.data_keys([(subject, key_id)])[(subject, key_id)]

    def data_keys(self, wanted: Iterable[tuple[str, UUID]]) -> dict[tuple[str, UUID], DataKey]:
        """Unwrap many keys at once (one batch call to a remote keeper for the misses)."""
        found: dict[tuple[str, UUID], DataKey] = {}
        missing: list[StoredKey] = []
        with self._lock:
            for subject, key_id in dict.fromkeys(wanted):
                person = self._people.get(subject)
                if self.is_erased(subject, key_id):
                    self._clear.pop((subject, key_id), None)
                    mark = None if person is None else person.forgotten
                    raise KeyErased(subject, key_id, mark.forgotten_at if mark else None)
                cached = self._clear.get((subject, key_id))
                if cached is not None:
                    self._clear.move_to_end((subject, key_id))
                    found[(subject, key_id)] = cached
                    continue
                stored = None if person is None else person.keys.get(key_id)
                if stored is None:
                    raise KeyUnknown(subject, key_id)
                missing.append(stored)
        if missing:
            secrets = self.kek.unwrap(
                [s.wrapped for s in missing],
                [context_of(s) for s in missing],
            )
            with self._lock:
                for stored, secret in zip(missing, secrets, strict=True):
                    if not self.knows(stored.subject, stored.key_id):  # deleted meanwhile
                        mark = self.forgotten(stored.subject)
                        raise KeyErased(
                            stored.subject, stored.key_id, mark.forgotten_at if mark else None
                        )
                    key = DataKey(stored.subject, stored.key_id, secret, stored.created_at)
                    found[(stored.subject, stored.key_id)] = key
                    self._clear[(stored.subject, stored.key_id)] = key
                while len(self._clear) > UNWRAPPED_CACHE:
                    self._clear.popitem(last=False)
        return found

    def check_kek(self, sample: int = 8) -> None:
        """Refuse a key-encryption key that opens none of the stored live data keys: a writer
        with a wrong KEK would otherwise wrap new people's keys with it, keys no reader can
        unwrap (their data lost), and every reader would fail on the rest."""
        with self._lock:
            live = [
                k
                for p in self._people.values()
                for k in p.keys.values()
                if not self.is_erased(k.subject, k.key_id)
            ]
        if not live:
            return
        live.sort(key=_age, reverse=True)  # the newest are on the KEK in use now
        for stored in live[:sample]:
            try:
                self.kek.unwrap([stored.wrapped], [context_of(stored)])
                return
            except KekUnavailable:
                raise
            except KekError:
                continue
        labels = sorted({k.wrapped.kek for k in live})
        raise KekError(
            f"the key-encryption key opens none of the {min(sample, len(live))} newest stored "
            f"data keys (wrapped by {', '.join(labels[:5])}): a wrong HUB_KEK or Vault key?"
        )

    def cached(self, subject: str, key_id: UUID) -> DataKey | None:
        with self._lock:
            return self._clear.get((subject, key_id))

    def remember(self, key: DataKey) -> None:
        """Cache a key this process just created (its record is acknowledged)."""
        with self._lock:
            self._clear[(key.subject, key.key_id)] = key
            while len(self._clear) > UNWRAPPED_CACHE:
                self._clear.popitem(last=False)

    def new_keys(self, subjects: Iterable[str]) -> list[tuple[DataKey, StoredKey]]:
        """Fresh data keys for ``subjects``, wrapped by the current KEK (not yet stored)."""
        now = datetime.now(UTC)
        made = [new_data_key(s, uuid.uuid4(), now) for s in dict.fromkeys(subjects)]
        if not made:
            return []
        wrapped = self.kek.wrap(
            [k.secret for k in made],
            [key_context(k.subject, k.key_id.bytes, k.created_at) for k in made],
        )
        return [
            (k, StoredKey(k.subject, k.key_id, w, k.created_at))
            for k, w in zip(made, wrapped, strict=True)
        ]


def _age(key: StoredKey) -> tuple[datetime, str]:
    return key.created_at, str(key.key_id)


class MemoryPersonKeys:
    """The person keys without Kafka, for tests of handler logic (the same directory code)."""

    def __init__(self, kek: KeyEncryptionKeys) -> None:
        self.directory = KeyDirectory(kek)
        self.records: list[tuple[bytes, bytes | None]] = []

    def _write(self, key: bytes, value: bytes | None) -> None:
        self.records.append((key, value))
        self.directory.apply(key, value)

    def ensure(self, subjects: Iterable[str]) -> dict[str, DataKey]:
        """The key each person's new values are sealed with, made and stored when missing."""
        out: dict[str, DataKey] = {}
        todo = []
        for subject in dict.fromkeys(subjects):
            stored = self.directory.newest(subject)
            if stored is None:
                todo.append(subject)
            else:
                out[subject] = self.directory.data_key(subject, stored.key_id)
        for key, stored in self.directory.new_keys(todo):
            self._write(record_key(key.subject, key.key_id), encode_stored(stored))
            self.directory.remember(key)
            out[key.subject] = key
        return out

    def data_key(self, subject: str, key_id: UUID) -> DataKey:
        return self.directory.data_key(subject, key_id)

    def restrict(self, subject: str, basis: str, at: datetime | None = None) -> None:
        self._write(
            record_key(subject, RESTRICTED),
            encode_restricted(Restricted(subject, at or datetime.now(UTC), basis)),
        )

    def lift_restriction(self, subject: str) -> None:
        self._write(record_key(subject, RESTRICTED), None)

    def forget(self, subject: str, reason: str, at: datetime | None = None) -> list[UUID]:
        """Tombstone every key of the person and mark them forgotten; the key ids deleted."""
        mark = Forgotten(subject, at or datetime.now(UTC), reason)
        self._write(record_key(subject, FORGOTTEN), encode_forgotten(mark))
        deleted = [k.key_id for k in self.directory.erased_stored(subject)]
        for key_id in deleted:
            self._write(record_key(subject, key_id), None)
        return deleted
