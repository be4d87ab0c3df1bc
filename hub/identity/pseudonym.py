"""Person pseudonyms: the only person key that travels in hub events and logs.

A pseudonym is HMAC-SHA256, keyed with the employment area's secret, over the normalised
(stripped, upper-case) personal identity code, written as the first 32 lowercase hex characters
(128 bits). It has no prefix: it is a fixed-length opaque key (also used as the Kafka message key),
and the bare hex form keeps it from ever matching the identity-code pattern of the log redaction.

Keyed rather than a plain hash because identity codes are few enough (about 10^8 plausible
values) to brute-force any unkeyed hash. Different secrets give unrelated pseudonyms, so the
same person is not linkable across employment areas without the secrets.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING, Annotated, Final

from pydantic import StringConstraints

from hub.identity.hetu import IdentityCode, parse_identity_code

if TYPE_CHECKING:
    from hub.settings import HubSettings

PSEUDONYM_LENGTH: Final = 32
MIN_SECRET_BYTES: Final = 16

#: A ``str`` field holding a pseudonym (32 lowercase hex characters).
PseudonymStr = Annotated[str, StringConstraints(pattern=rf"^[0-9a-f]{{{PSEUDONYM_LENGTH}}}$")]


class Pseudonymizer:
    """Turns personal identity codes into stable pseudonyms with one secret key."""

    __slots__ = ("_key",)

    def __init__(self, secret: bytes | str) -> None:
        key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
        if len(key) < MIN_SECRET_BYTES:
            # A short key makes the pseudonyms brute-forceable, the thing the HMAC is there to stop.
            raise ValueError(f"pseudonym secret must be at least {MIN_SECRET_BYTES} bytes")
        self._key = key

    @classmethod
    def from_settings(cls, settings: HubSettings | None = None) -> Pseudonymizer:
        """Use ``HUB_PSEUDONYM_SECRET`` (the default settings when *settings* is None)."""
        if settings is None:
            from hub.settings import get_settings

            settings = get_settings()
        return cls(settings.pseudonym_secret.get_secret_value())

    def pseudonym(self, identity_code: str | IdentityCode) -> str:
        """Pseudonym of a person; raises InvalidIdentityCode rather than hashing garbage.

        Hashing an invalid code would silently create a "person" nobody can ever match again.
        """
        # An IdentityCode can be constructed directly, so it is re-validated too.
        code = parse_identity_code(str(identity_code)).code
        digest = hmac.new(self._key, code.encode("ascii"), hashlib.sha256).hexdigest()
        return digest[:PSEUDONYM_LENGTH]

    def keyed_digest(self, data: bytes) -> str:
        """HMAC-SHA256 (hex) of *data* under the same secret, for fingerprints of content.

        Idempotency receipts keep a fingerprint of each request, and requests hold identity
        codes and names: a plain hash of them could be confirmed by guessing, a keyed one not.
        The ``digest:`` prefix keeps these apart from pseudonyms made with the same key.
        """
        return hmac.new(self._key, b"digest:" + data, hashlib.sha256).hexdigest()

    def __repr__(self) -> str:
        return "Pseudonymizer(<secret>)"
