"""One sealed field value: AES-256-GCM under the person's data key, bound to its place.

A sealed value is Avro ``bytes`` in the field's union (see :mod:`hub.events.avro_schema`):

    A5 01 | key id (16 bytes, UUID) | nonce (12 bytes) | ciphertext | tag (16 bytes)

``A5`` can never start a UTF-8 text, so a sealed value is never mistaken for plaintext (and
plaintext written before encryption stays a ``str``). The associated data is the event id
(16 bytes) and the field's dotted path: a sealed value copied into another event or another
field fails to open instead of disclosing a value under a wrong label.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SEALED_PREFIX: Final = b"\xa5\x01"
KEY_ID_SIZE: Final = 16
NONCE_SIZE: Final = 12
TAG_SIZE: Final = 16
HEADER_SIZE: Final = len(SEALED_PREFIX) + KEY_ID_SIZE + NONCE_SIZE
DATA_KEY_SIZE: Final = 32


class SealError(Exception):
    """A sealed value cannot be opened; the text never quotes a value."""


class KeyErased(SealError):
    """The person's data key was deleted (``hub person forget``, retention): gone for good."""

    def __init__(self, subject: str, key_id: UUID | None, forgotten_at: datetime | None) -> None:
        self.subject = subject
        self.key_id = key_id
        self.forgotten_at = forgotten_at
        which = f"data key {key_id}" if key_id else "data key"
        when = f" on {forgotten_at.isoformat()}" if forgotten_at else ""
        super().__init__(
            f"the person's {which} was deleted{when} (person forgotten or retention expired): "
            "their personal fields can no longer be read"
        )


class KeyUnknown(SealError):
    """No data key of that id is known for the person (a lost key record, another cluster)."""

    def __init__(self, subject: str, key_id: UUID) -> None:
        self.subject = subject
        self.key_id = key_id
        super().__init__(
            f"data key {key_id} of the person is not in the key topic: the value cannot be read"
        )


class SealBroken(SealError):
    """The bytes are not a sealed value this build reads, or fail authentication."""


@dataclass(frozen=True, slots=True)
class DataKey:
    """One person's data key in the clear: held in memory only, never logged or written.

    The AES-GCM object lives and dies with the key (building one costs about as much as
    sealing a value): when the key directory drops a forgotten person's key, nothing else in
    the process keeps its secret.
    """

    subject: str
    """The person pseudonym the key belongs to."""
    key_id: UUID
    secret: bytes = field(repr=False)
    created_at: datetime
    cipher: AESGCM = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.secret) != DATA_KEY_SIZE:
            raise ValueError(f"a data key has {DATA_KEY_SIZE} bytes, not {len(self.secret)}")
        object.__setattr__(self, "cipher", AESGCM(self.secret))


def new_data_key(subject: str, key_id: UUID, created_at: datetime) -> DataKey:
    return DataKey(subject, key_id, AESGCM.generate_key(bit_length=256), created_at)


def event_bytes(event_id: UUID | str) -> bytes:
    """The event id part of the associated data (parse it once per record, not per value)."""
    return (event_id if isinstance(event_id, UUID) else UUID(str(event_id))).bytes


def seal_value(key: DataKey, event_id: UUID | str | bytes, path: str, plaintext: bytes) -> bytes:
    """``event_id``: the id, its text, or :func:`event_bytes` of it."""
    event = event_id if isinstance(event_id, bytes) else event_bytes(event_id)
    nonce = os.urandom(NONCE_SIZE)
    sealed = key.cipher.encrypt(nonce, plaintext, event + path.encode())
    return SEALED_PREFIX + key.key_id.bytes + nonce + sealed


def is_sealed(value: object) -> bool:
    return type(value) is bytes and value[:2] == SEALED_PREFIX


def sealed_key_id(value: bytes) -> UUID:
    if not is_sealed(value) or len(value) < HEADER_SIZE + TAG_SIZE:
        raise SealBroken("not a sealed value of format A5 01 (or cut short)")
    return UUID(bytes=value[2 : 2 + KEY_ID_SIZE])


def open_value(key: DataKey, event_id: UUID | str | bytes, path: str, value: bytes) -> bytes:
    """``event_id``: the id, its text, or :func:`event_bytes` of it."""
    if sealed_key_id(value) != key.key_id:
        raise SealBroken(f"the value at {path} is sealed with another data key")
    event = event_id if isinstance(event_id, bytes) else event_bytes(event_id)
    nonce = value[2 + KEY_ID_SIZE : HEADER_SIZE]
    try:
        return key.cipher.decrypt(nonce, value[HEADER_SIZE:], event + path.encode())
    except InvalidTag:
        raise SealBroken(
            f"the sealed value at {path} fails authentication (changed, or moved from another "
            "event or field)"
        ) from None
