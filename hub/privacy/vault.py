"""HashiCorp Vault's transit secrets engine (or OpenBao's, the same API) as the KEK keeper.

``HUB_KMS=vault``: the key-encryption key is a transit key (``HUB_VAULT_TRANSIT_MOUNT`` /
``HUB_VAULT_TRANSIT_KEY``) that never leaves Vault. A data key is wrapped with
``POST /v1/<mount>/encrypt/<key>``, unwrapped with ``.../decrypt/<key>`` and moved to the
newest key version with ``.../rewrap/<key>``, which re-encrypts inside Vault without
returning the data key. Every call sends a ``batch_input`` list, at most :data:`BATCH` items
a request. API: https://developer.hashicorp.com/vault/api-docs/secret/transit (OpenBao:
https://openbao.org/api-docs/secret/transit/).

**Binding the context.** Each wrapping is bound to :func:`~hub.privacy.kek.key_context`
(person pseudonym and key id), so a wrapped key copied into another person's record does not
unwrap. Transit offers two ways for an ``aes256-gcm96`` key:

* ``associated_data`` (AEAD additional data; Vault 1.13+, OpenBao) on encrypt and decrypt,
  but the ``rewrap`` endpoint takes no ``associated_data``: rewrapping such a ciphertext fails
  authentication, so rotation would have to decrypt each data key into the hub and encrypt it
  again.
* ``context`` with a **derived** key (``derived=true`` at creation; every Vault since 0.6):
  Vault derives a key per context (HKDF-SHA256) from the key version, so a ciphertext opens
  only with the context it was made with, and ``encrypt``, ``decrypt`` and ``rewrap`` all take
  the context.

The hub uses ``context`` with a derived key: rotation then never discloses a data key. A key
created *without* ``derived=true`` ignores the context silently (the binding would be lost),
so this client reads the key first and refuses one that is not derived or not an AEAD type.

The wrapped key is ``WrappedKey(kek="vault:<mount>/<key>", ciphertext=b"vault:v<N>:...")``;
``N`` is the transit key version, which :meth:`VaultTransitKeys.is_current` compares with the
key's ``latest_version`` (read and cached for :data:`VERSION_TTL_S`).

Failures: no answer, a timeout, 429 or 5xx (sealed, standby, overloaded) raise
:class:`~hub.privacy.kek.KekUnavailable` (retry later); 403 raises
:class:`~hub.privacy.kek.KekError` naming the policy capability the token lacks (after
re-reading ``HUB_VAULT_TOKEN_FILE`` once, for a token a Vault agent rotated); a refused batch
item raises KekError naming the item. No error or log line quotes a data key, a context, a
ciphertext or the token.
"""

from __future__ import annotations

import base64
import binascii
import re
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
from pydantic import SecretStr

from hub.http_errors import HTTP_FAILURES, tls_problem
from hub.logging import get_logger
from hub.privacy.kek import KekError, KekUnavailable, WrappedKey
from hub.settings import HubSettings

BATCH: Final = 200
"""Items in one transit request. Not more: OpenBao's listener refuses a JSON body of more than
``max_request_json_strings`` (1000 by default) strings, keys included, and an item is four
(``plaintext``/``ciphertext``, ``context`` and their values); a refused request is split in
halves until it passes (:meth:`VaultTransitKeys._batch`)."""
VERSION_TTL_S: Final = 30.0
"""How long the transit key's ``latest_version`` is trusted before it is read again."""
AEAD_TYPES: Final = frozenset(
    {"aes128-gcm96", "aes256-gcm96", "chacha20-poly1305", "xchacha20-poly1305"}
)
_CIPHERTEXT: Final = re.compile(r"^vault:v([1-9][0-9]{0,9}):[A-Za-z0-9+/]+={0,2}$")
_ERROR_CHARS: Final = 200

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class TransitKeyState:
    """What ``GET /v1/<mount>/keys/<key>`` says (the parts the hub uses)."""

    latest_version: int
    min_decryption_version: int
    derived: bool
    type: str
    versions: tuple[int, ...]


def ciphertext_version(wrapped: WrappedKey) -> int | None:
    """The transit key version in ``vault:v<N>:...``, None for another shape."""
    try:
        text = wrapped.ciphertext.decode("ascii")
    except UnicodeDecodeError:
        return None
    match = _CIPHERTEXT.fullmatch(text)
    return int(match.group(1)) if match else None


class VaultTransitKeys:
    """:class:`~hub.privacy.kek.KeyEncryptionKeys` on a Vault transit key (sync httpx)."""

    name = "vault"

    def __init__(
        self,
        addr: str,
        *,
        mount: str = "transit",
        key: str = "te-hub-person-keys",
        token: SecretStr | None = None,
        token_file: Path | None = None,
        namespace: str | None = None,
        ca_bundle: Path | None = None,
        timeout_s: float = 10.0,
        batch_size: int = BATCH,
        version_ttl_s: float = VERSION_TTL_S,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if (token is None) == (token_file is None):
            raise KekError("Vault needs exactly one of a token and a token file")
        if batch_size < 1:
            raise KekError("the Vault batch size must be at least 1")
        self.addr = addr.rstrip("/")
        self.mount = mount.strip("/")
        self.key = key
        self.ref = f"vault:{self.mount}/{self.key}"
        self.timeout_s = timeout_s
        self.batch_size = batch_size
        self.version_ttl_s = version_ttl_s
        self._token_file = token_file
        if token_file is not None:
            self._token = _read_token(token_file)
        else:
            assert token is not None
            self._token = token
        self._namespace = namespace
        self._state: TransitKeyState | None = None
        self._state_read_at = 0.0
        self._lock = threading.Lock()
        verify: ssl.SSLContext | bool = True
        if ca_bundle is not None:
            try:
                verify = ssl.create_default_context(cafile=str(ca_bundle))
            except (OSError, ssl.SSLError) as error:
                raise KekError(
                    f"HUB_VAULT_CA_BUNDLE {ca_bundle}: not a readable PEM CA bundle "
                    f"({getattr(error, 'strerror', None) or type(error).__name__})"
                ) from None
        self._client = httpx.Client(
            base_url=self.addr,
            timeout=httpx.Timeout(timeout_s),
            verify=verify,
            transport=transport,
            headers={"Accept": "application/json"},
        )

    @classmethod
    def from_settings(cls, settings: HubSettings) -> VaultTransitKeys:
        if settings.vault_addr is None:
            raise KekError("HUB_KMS=vault needs HUB_VAULT_ADDR")
        if (settings.vault_token is None) == (settings.vault_token_file is None):
            raise KekError(
                "HUB_KMS=vault needs exactly one of HUB_VAULT_TOKEN and HUB_VAULT_TOKEN_FILE"
            )
        return cls(
            str(settings.vault_addr),
            mount=settings.vault_transit_mount,
            key=settings.vault_transit_key,
            token=settings.vault_token,
            token_file=settings.vault_token_file,
            namespace=settings.vault_namespace,
            ca_bundle=settings.vault_ca_bundle,
            timeout_s=settings.vault_timeout_s,
        )

    def __repr__(self) -> str:
        return f"VaultTransitKeys({self.addr}, {self.mount}/{self.key})"

    # -- KeyEncryptionKeys -------------------------------------------------------------------

    def wrap(self, secrets: Sequence[bytes], contexts: Sequence[bytes]) -> list[WrappedKey]:
        _same_length(secrets, contexts)
        self._checked_state()
        items = [
            {"plaintext": _b64(secret), "context": _b64(context)}
            for secret, context in zip(secrets, contexts, strict=True)
        ]
        return [
            WrappedKey(self.ref, text.encode("ascii"))
            for text in self._batch("encrypt", items, "ciphertext")
        ]

    def unwrap(self, wrapped: Sequence[WrappedKey], contexts: Sequence[bytes]) -> list[bytes]:
        _same_length(wrapped, contexts)
        self._checked_state()
        items = self._ciphertext_items(wrapped, contexts, "unwrap")
        out = []
        for index, text in enumerate(self._batch("decrypt", items, "plaintext")):
            try:
                out.append(base64.b64decode(text, validate=True))
            except (binascii.Error, ValueError):
                raise KekError(
                    f"Vault answered item {index + 1} of {len(items)} of a decrypt on "
                    f"{self.mount}/{self.key} with a plaintext that is not base64"
                ) from None
        return out

    def is_current(self, wrapped: WrappedKey) -> bool:
        version = ciphertext_version(wrapped)
        if wrapped.kek != self.ref or version is None:
            return False
        return version >= self.state().latest_version

    def rewrap(self, wrapped: Sequence[WrappedKey], contexts: Sequence[bytes]) -> list[WrappedKey]:
        _same_length(wrapped, contexts)
        self._checked_state()
        items = self._ciphertext_items(wrapped, contexts, "rewrap")
        return [
            WrappedKey(self.ref, text.encode("ascii"))
            for text in self._batch("rewrap", items, "ciphertext")
        ]

    def rotate_primary(self) -> str:
        """A new version of the transit key (``POST .../keys/<key>/rotate``): new data keys
        are wrapped by it at once; stored ones move with :meth:`rewrap`. Returns
        ``vault:<mount>/<key>:v<N>``."""
        path = f"keys/{self.key}/rotate"
        self._call("POST", path, None, f"rotate of {self.mount}/{self.key}", "update")
        state = self.state(refresh=True)
        log.info("vault transit key rotated", key=f"{self.mount}/{self.key}",
                 version=state.latest_version)  # fmt: skip
        return f"{self.ref}:v{state.latest_version}"

    def close(self) -> None:
        self._client.close()

    # -- the transit key -----------------------------------------------------------------------

    def state(self, refresh: bool = False) -> TransitKeyState:
        """The transit key's versions (cached for ``version_ttl_s``)."""
        with self._lock:
            state, read_at = self._state, self._state_read_at
        if state is not None and not refresh and time.monotonic() - read_at < self.version_ttl_s:
            return state
        body = self._call(
            "GET", f"keys/{self.key}", None, f"read of key {self.mount}/{self.key}", "read"
        )
        state = _key_state(body, f"{self.mount}/{self.key}")
        with self._lock:
            self._state, self._state_read_at = state, time.monotonic()
        return state

    def _checked_state(self) -> TransitKeyState:
        state = self.state()
        where = f"{self.mount}/{self.key}"
        if state.type not in AEAD_TYPES:
            raise KekError(
                f"transit key {where} is of type {state.type}; the hub needs a symmetric AEAD "
                "key (aes256-gcm96)"
            )
        if not state.derived:
            raise KekError(
                f"transit key {where} was created without derived=true: Vault would ignore "
                "the per-person context and a wrapped key would open under any person; create "
                f"the key with `vault write {self.mount}/keys/{self.key} derived=true` (see "
                "the README, Vault transit)"
            )
        return state

    # -- requests ------------------------------------------------------------------------------

    def _ciphertext_items(
        self, wrapped: Sequence[WrappedKey], contexts: Sequence[bytes], verb: str
    ) -> list[dict[str, str]]:
        items = []
        for index, (item, context) in enumerate(zip(wrapped, contexts, strict=True)):
            if item.kek != self.ref:
                raise KekError(
                    f"cannot {verb} item {index + 1} of {len(wrapped)}: it is wrapped by "
                    f"{_printable(item.kek)}, and this keeper is {self.ref}"
                )
            if ciphertext_version(item) is None:
                raise KekError(
                    f"cannot {verb} item {index + 1} of {len(wrapped)}: its ciphertext is not "
                    "Vault's vault:v<N>:<base64> text (changed or damaged)"
                )
            items.append({"ciphertext": item.ciphertext.decode("ascii"), "context": _b64(context)})
        return items

    def _batch(self, op: str, items: list[dict[str, str]], field: str) -> list[str]:
        out: list[str] = []
        total = len(items)
        start = 0
        while start < total:
            chunk = items[start : start + self.batch_size]
            what = f"{op} of {len(chunk)} data keys on {self.mount}/{self.key}"
            try:
                body = self._call(
                    "POST", f"{op}/{self.key}", {"batch_input": chunk}, what, "update", batch=True
                )
            except _TooLarge:
                if len(chunk) == 1:
                    raise
                self.batch_size = max(1, len(chunk) // 2)
                log.warning("vault refused a batch as too large; halved", size=self.batch_size)
                continue
            results = _batch_results(body)
            if results is None or len(results) != len(chunk):
                raise KekError(f"Vault answered a {what} without one batch result per item")
            for offset, result in enumerate(results):
                number = start + offset + 1
                error = result.get("error") if isinstance(result, dict) else "no result"
                value = result.get(field) if isinstance(result, dict) else None
                if error or not isinstance(value, str) or not value:
                    reason = self._vault_text(str(error or f"no {field}"))
                    raise KekError(
                        f"Vault refused item {number} of {total} of a {op} on "
                        f"{self.mount}/{self.key}: {reason}{_hint(op, reason)}"
                    )
                if field == "ciphertext" and not _CIPHERTEXT.fullmatch(value):
                    raise KekError(
                        f"Vault answered item {number} of {total} of a {op} with a ciphertext "
                        "that is not vault:v<N>:<base64>"
                    )
                out.append(value)
            start += len(chunk)
        return out

    def _call(
        self,
        method: str,
        path: str,
        payload: dict[str, Any] | None,
        what: str,
        capability: str,
        batch: bool = False,
    ) -> dict[str, Any]:
        """One transit request; the JSON body of a usable answer (a 400 with batch results is
        one: the caller names the refused items)."""
        url = f"/v1/{self.mount}/{path}"
        reread = False
        while True:
            try:
                response = self._client.request(method, url, json=payload, headers=self._headers())
            except httpx.TimeoutException:
                raise KekUnavailable(
                    f"Vault at {self.addr} did not answer the {what} within "
                    f"{self.timeout_s:g} s; retry later"
                ) from None
            except HTTP_FAILURES as error:
                problem = tls_problem(error)
                if problem is not None:
                    raise KekError(
                        f"Vault at {self.addr}: {problem} (HUB_VAULT_CA_BUNDLE)"
                    ) from None
                raise KekUnavailable(
                    f"Vault at {self.addr} cannot be reached for the {what} "
                    f"({type(error).__name__}); retry later"
                ) from None
            if response.status_code == 403 and self._token_file is not None and not reread:
                reread = True
                if self._reload_token():
                    continue
            break
        status = response.status_code
        body = _json_body(response)
        if 200 <= status < 300:
            return body
        if status == 400 and batch and _batch_results(body) is not None:
            return body
        if status == 413 or (status == 400 and "high complexity" in self._errors_of(body)):
            raise _TooLarge(f"Vault refused the {what} as too large{self._errors_of(body)}")
        if status == 403:
            raise KekError(
                f"Vault refused the {what} (403 permission denied): the token is not valid or "
                f"has expired, or its policy lacks the '{capability}' capability on path "
                f'"{self.mount}/{path}"'
            )
        if status == 429 or status >= 500:
            raise KekUnavailable(
                f"Vault at {self.addr} answered {status} to the {what} (sealed, a standby, or "
                f"overloaded){self._errors_of(body)}; retry later"
            )
        if 300 <= status < 400:
            raise KekError(
                f"Vault answered the {what} with a redirect ({status}): set HUB_VAULT_ADDR to "
                "the active node or its load balancer (the token is never sent after a redirect)"
            )
        if status == 404:
            raise KekError(
                f"Vault answered 404 to the {what}: is a transit engine mounted at "
                f"{self.mount}/ and does its key {self.key} exist?"
            )
        raise KekError(f"Vault refused the {what} ({status}){self._errors_of(body)}")

    def _headers(self) -> dict[str, str]:
        with self._lock:
            token = self._token.get_secret_value()
        headers = {"X-Vault-Token": token}
        if self._namespace:
            headers["X-Vault-Namespace"] = self._namespace
        return headers

    def _reload_token(self) -> bool:
        """Re-read HUB_VAULT_TOKEN_FILE (an agent may have renewed the token); True if the
        token changed."""
        assert self._token_file is not None
        token = _read_token(self._token_file)
        with self._lock:
            changed = token.get_secret_value() != self._token.get_secret_value()
            self._token = token
        log.info("vault token re-read from its file after a 403", changed=changed)
        return changed

    def _errors_of(self, body: dict[str, Any]) -> str:
        errors = body.get("errors")
        if not isinstance(errors, list) or not errors:
            return ""
        return ": " + self._vault_text("; ".join(str(e) for e in errors))

    def _vault_text(self, text: str) -> str:
        """Vault's own error text, on one line, shortened, without the token."""
        with self._lock:
            token = self._token.get_secret_value()
        text = " ".join(text.replace("1 error occurred:", "").replace("*", "").split())
        if token:
            text = text.replace(token, "<token>")
        return text[:_ERROR_CHARS]


class _TooLarge(KekError):
    """The request was over a size or JSON-complexity limit of Vault's listener."""


def policy_hcl(mount: str = "transit", key: str = "te-hub-person-keys") -> str:
    """The Vault policy the hub's token needs (and nothing more): wrap, unwrap, rewrap, read
    the key's versions, rotate it (``hub keys rotate``)."""
    return (
        f"# te-hub: per-person data keys wrapped by the transit key {key}\n"
        f'path "{mount}/encrypt/{key}" {{\n  capabilities = ["update"]\n}}\n'
        f'path "{mount}/decrypt/{key}" {{\n  capabilities = ["update"]\n}}\n'
        f'path "{mount}/rewrap/{key}" {{\n  capabilities = ["update"]\n}}\n'
        f'path "{mount}/keys/{key}" {{\n  capabilities = ["read"]\n}}\n'
        f'path "{mount}/keys/{key}/rotate" {{\n  capabilities = ["update"]\n}}\n'
    )


def _read_token(path: Path) -> SecretStr:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise KekError(f"HUB_VAULT_TOKEN_FILE {path}: cannot be read ({error.strerror})") from None
    if not token:
        raise KekError(f"HUB_VAULT_TOKEN_FILE {path} is empty")
    return SecretStr(token)


def _key_state(body: dict[str, Any], where: str) -> TransitKeyState:
    data = body.get("data")
    if not isinstance(data, dict):
        raise KekError(f"Vault answered the read of key {where} without data")
    keys = data.get("keys")
    versions = tuple(sorted(int(v) for v in keys)) if isinstance(keys, dict) else ()
    latest = data.get("latest_version")
    if not isinstance(latest, int):  # older answers: the newest version in the keys map
        latest = versions[-1] if versions else 0
    minimum = data.get("min_decryption_version")
    return TransitKeyState(
        latest_version=latest,
        min_decryption_version=minimum if isinstance(minimum, int) else 1,
        derived=data.get("derived") is True,
        type=str(data.get("type", "")),
        versions=versions,
    )


def _batch_results(body: dict[str, Any]) -> list[Any] | None:
    data = body.get("data")
    results = data.get("batch_results") if isinstance(data, dict) else None
    return results if isinstance(results, list) else None


def _json_body(response: httpx.Response) -> dict[str, Any]:
    if not response.content:
        return {}
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _hint(op: str, reason: str) -> str:
    if "authentication failed" in reason:
        return " (the wrapped key was changed, or is stored under another person or key id)"
    if "too old" in reason:
        return (
            " (its transit key version is below min_decryption_version: it was not rewrapped "
            "before the old version was retired)"
        )
    return ""


def _printable(text: str) -> str:
    return text if re.fullmatch(r"[A-Za-z0-9:/._-]{1,200}", text) else "an unknown keeper"


def _same_length(a: Sequence[object], b: Sequence[object]) -> None:
    if len(a) != len(b):
        raise KekError(f"{len(a)} keys but {len(b)} contexts")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
