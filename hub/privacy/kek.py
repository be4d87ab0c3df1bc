"""Key-encryption keys (envelope encryption): what wraps each person's data key.

A data key is stored only wrapped (:class:`WrappedKey`), in the person-keys topic; the
key-encryption key (KEK) never leaves its keeper. :class:`KeyEncryptionKeys` is the one
interface: the local keyring here (keys from ``HUB_KEK`` / ``HUB_KEK_FILE``) and HashiCorp
Vault's transit engine (:mod:`hub.privacy.vault`). Rotation never touches the event log: a new
KEK wraps new data keys, ``hub keys rotate`` rewraps the stored ones, and the old KEK can then
be retired. The context (the person pseudonym and the key id) is bound to each wrapping, so a
wrapped key copied to another person's record does not unwrap.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hub.settings import HubSettings

DEV_KEK: Final = "dev:" + base64.b64encode(b"local-development-kek-not-secret").decode()
"""The built-in development KEK (``HUB_KEK`` unset): refused with HUB_ENVIRONMENT=production."""

_KEK_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class KekError(Exception):
    """A key-encryption key is missing, misconfigured, refused or unreachable; never quotes
    key material."""


class KekUnavailable(KekError):
    """The keeper (Vault) did not answer: retry later, nothing is lost."""


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A data key as stored: ``kek`` names what wrapped it, ``ciphertext`` is opaque to all but
    that keeper (``local:<id>`` with nonce + AES-GCM output, or ``vault:<key>`` with Vault's
    ``vault:v<N>:...`` text as bytes)."""

    kek: str
    ciphertext: bytes


class KeyEncryptionKeys(Protocol):
    """Wraps and unwraps data keys; every call takes lists so a remote keeper can batch."""

    @property
    def name(self) -> str:
        """``local`` or ``vault``: for status lines and audit entries."""
        ...

    def wrap(self, secrets: Sequence[bytes], contexts: Sequence[bytes]) -> list[WrappedKey]: ...

    def unwrap(self, wrapped: Sequence[WrappedKey], contexts: Sequence[bytes]) -> list[bytes]:
        """The data keys; raises KekError naming the first that cannot be unwrapped."""
        ...

    def is_current(self, wrapped: WrappedKey) -> bool:
        """Whether ``wrapped`` is wrapped by the KEK that wraps new keys now."""
        ...

    def rewrap(self, wrapped: Sequence[WrappedKey], contexts: Sequence[bytes]) -> list[WrappedKey]:
        """The same data keys wrapped by the current KEK (Vault does it without disclosing them)."""
        ...

    def rotate_primary(self) -> str:
        """Make a new KEK the one that wraps new keys, where the keeper can (Vault: a new
        transit key version); the reference of the new primary. Stored keys then move with
        :meth:`rewrap`. KekError where rotation is configuration (the local keyring)."""
        ...

    def close(self) -> None: ...


def parse_keyring(text: str) -> list[tuple[str, bytes]]:
    """``id:base64`` entries, comma or newline separated; ``#`` starts a comment line."""
    entries: list[tuple[str, bytes]] = []
    for raw in re.split(r"[,\n]", text):
        item = raw.strip()
        if not item or item.startswith("#"):
            continue
        kek_id, sep, encoded = item.partition(":")
        if not sep or not _KEK_ID.fullmatch(kek_id):
            raise KekError(
                "a key-encryption key is written '<id>:<base64 of 32 bytes>' with an id of "
                "letters, digits, '.', '_' or '-'"
            )
        try:
            secret = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise KekError(f"key-encryption key {kek_id}: not base64") from None
        if len(secret) != 32:
            raise KekError(f"key-encryption key {kek_id}: {len(secret)} bytes, AES-256 needs 32")
        if any(kek_id == known for known, _ in entries):
            raise KekError(f"key-encryption key {kek_id} is given twice")
        entries.append((kek_id, secret))
    if not entries:
        raise KekError("no key-encryption key given")
    return entries


class LocalKeyEncryptionKeys:
    """A keyring of AES-256-GCM KEKs held in this process; the first one wraps."""

    name = "local"

    def __init__(self, keyring: Sequence[tuple[str, bytes]]) -> None:
        if not keyring:
            raise KekError("no key-encryption key given")
        self._ciphers = {kek_id: AESGCM(secret) for kek_id, secret in keyring}
        self.primary = keyring[0][0]

    @classmethod
    def from_text(cls, text: str) -> LocalKeyEncryptionKeys:
        return cls(parse_keyring(text))

    def _ref(self, kek_id: str) -> str:
        return f"local:{kek_id}"

    def wrap(self, secrets: Sequence[bytes], contexts: Sequence[bytes]) -> list[WrappedKey]:
        cipher = self._ciphers[self.primary]
        out = []
        for secret, context in zip(secrets, contexts, strict=True):
            nonce = os.urandom(12)
            out.append(
                WrappedKey(self._ref(self.primary), nonce + cipher.encrypt(nonce, secret, context))
            )
        return out

    def unwrap(self, wrapped: Sequence[WrappedKey], contexts: Sequence[bytes]) -> list[bytes]:
        out = []
        for item, context in zip(wrapped, contexts, strict=True):
            kind, _, kek_id = item.kek.partition(":")
            cipher = self._ciphers.get(kek_id) if kind == "local" else None
            if cipher is None:
                raise KekError(
                    f"data key wrapped by {item.kek}, which this keyring does not hold "
                    f"(it holds {', '.join(self._ref(k) for k in self._ciphers)})"
                )
            try:
                out.append(cipher.decrypt(item.ciphertext[:12], item.ciphertext[12:], context))
            except InvalidTag:
                raise KekError(
                    f"a data key wrapped by {item.kek} fails authentication (changed, or "
                    "stored under another person or key id)"
                ) from None
        return out

    def is_current(self, wrapped: WrappedKey) -> bool:
        return wrapped.kek == self._ref(self.primary)

    def rewrap(self, wrapped: Sequence[WrappedKey], contexts: Sequence[bytes]) -> list[WrappedKey]:
        return self.wrap(self.unwrap(wrapped, contexts), contexts)

    def rotate_primary(self) -> str:
        raise KekError(
            "a local keyring is rotated in its configuration: put a new '<id>:<base64>' first "
            "in HUB_KEK or HUB_KEK_FILE (keep the old one after it), restart, then rewrap"
        )

    def close(self) -> None:
        return None


def build_kek(settings: HubSettings) -> KeyEncryptionKeys:
    """The KEK keeper the settings name (a development keyring when nothing is set)."""
    if settings.kms == "vault":
        from hub.privacy.vault import VaultTransitKeys  # imported only where Vault is used

        return VaultTransitKeys.from_settings(settings)
    if settings.kek is not None:
        return LocalKeyEncryptionKeys.from_text(settings.kek.get_secret_value())
    if settings.kek_file is not None:
        try:
            text = settings.kek_file.read_text(encoding="utf-8")
        except OSError as error:
            raise KekError(
                f"HUB_KEK_FILE {settings.kek_file}: cannot be read ({error.strerror})"
            ) from None
        return LocalKeyEncryptionKeys.from_text(text)
    if settings.environment == "production":
        # Refused here, where keys are needed, not in the settings: a reporting job in
        # production never holds key access and needs no key-encryption key at all.
        raise KekError(
            "HUB_ENVIRONMENT=production refuses the development key-encryption key: set "
            "HUB_KEK or HUB_KEK_FILE, or HUB_KMS=vault"
        )
    return LocalKeyEncryptionKeys.from_text(DEV_KEK)


def key_context(subject: str, key_id: bytes, created_at: datetime | None = None) -> bytes:
    """What a wrapping is bound to: the person pseudonym, the data key's id and (for stored
    keys) its creation time, so a key record written again with another time fails."""
    context = subject.encode() + b"/" + key_id
    if created_at is not None:
        context += b"/" + created_at.isoformat().encode()
    return context
