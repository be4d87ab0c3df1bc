"""The person-keys store on a real broker with HUB_KMS=vault: the KafkaPersonKeys of
hub/privacy/keystore.py, its KEK built from the settings (build_kek → VaultTransitKeys), against
the transit fake and a real OpenBao (fixtures of tests/test_privacy_vault.py)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from hub.privacy.datakeys import FORGOTTEN
from hub.privacy.kek import KekUnavailable
from hub.privacy.keystore import KafkaPersonKeys, open_person_keys
from hub.privacy.sealing import KeyErased, open_value, seal_value
from hub.privacy.vault import VaultTransitKeys, ciphertext_version
from hub.settings import HubSettings
from tests.conftest import hub_environment, settings_for
from tests.test_privacy_keystore_on_kafka import raw_records
from tests.test_privacy_vault import (  # noqa: F401  (fixtures)
    MOUNT,
    Transit,
    _transit_on,
    fake_engine,
    openbao,
    transit,
)
from tests.vault_transit_fake import VaultTransitFake

pytestmark = pytest.mark.kafka


def _settings(kafka_bootstrap: str, engine: Transit) -> HubSettings:
    base = settings_for(kafka_bootstrap, partitions=3)
    return base.model_copy(
        update={
            "topic_person_keys": f"test.person-keys.{uuid.uuid4().hex[:12]}",
            **engine.settings().model_dump(include={"kms", "vault_addr", "vault_token",
                                                    "vault_transit_mount", "vault_transit_key",
                                                    "vault_timeout_s", "vault_ca_bundle"}),
        }
    )  # fmt: skip


def _vault(store: KafkaPersonKeys) -> VaultTransitKeys:
    assert isinstance(store.kek, VaultTransitKeys)
    return store.kek


def test_ensure_forget_rotate_with_vault(kafka_bootstrap: str, transit: Transit) -> None:  # noqa: F811
    settings = _settings(kafka_bootstrap, transit)
    people = [uuid.uuid4().hex for _ in range(40)]
    event = uuid.uuid4()
    with open_person_keys(settings) as store:
        made = store.ensure(people)
        sealed = {p: seal_value(made[p], event, "person.name", p.encode()) for p in people}
        forgotten = people[0]
        store.forget(forgotten, "test: erasure request")

    # On the topic: Vault's ciphertexts only, never a data key.
    records = raw_records(settings)
    values = [v for _, _, k, v in records if v is not None and not k.endswith(FORGOTTEN.encode())]
    assert len(values) == 40
    for value in values:
        body = json.loads(value)
        assert body["kek"] == f"vault:{MOUNT}/{transit.key}"
        assert base64.b64decode(body["wrapped"]).startswith(b"vault:v1:")
    everything = b"".join(v or b"" for _, _, _, v in records)
    for key in made.values():
        assert key.secret not in everything
        assert base64.b64encode(key.secret) not in everything

    # The KEK rotated in Vault, every stored key rewrapped (in Vault), the old version retired.
    with open_person_keys(settings) as store:
        assert _vault(store).rotate_primary() == f"vault:{MOUNT}/{transit.key}:v2"
        status = store.status()
        assert status.keys_by_kek == {f"vault:{MOUNT}/{transit.key}:v1": 39}
        assert status.not_current == 39
        result = store.rotate()
        assert (result.kek, result.rewrapped, result.already_current, result.failed) == (
            "vault",
            39,
            0,
            (),
        )
        assert store.status().keys_by_kek == {f"vault:{MOUNT}/{transit.key}:v2": 39}
        assert store.rotate().rewrapped == 0
    transit.admin.set_min_decryption_version(MOUNT, transit.key, 2)

    with open_person_keys(settings) as store:  # a reader started after the retirement
        for person in people[1:]:
            key = store.data_key(person, made[person].key_id)
            assert key.secret == made[person].secret
            assert open_value(key, event, "person.name", sealed[person]) == person.encode()
        with pytest.raises(KeyErased):
            store.data_key(forgotten, made[forgotten].key_id)
        newcomer = store.ensure(["newcomer"])["newcomer"]
        stored = store.directory.newest("newcomer")
        assert stored is not None
        assert ciphertext_version(stored.wrapped) == 2
        assert store.data_key("newcomer", newcomer.key_id).secret == newcomer.secret


@pytest.fixture
def fake_transit(fake_engine: VaultTransitFake) -> Iterator[Transit]:  # noqa: F811
    engine = _transit_on("fake", fake_engine.url, fake_engine.root_token, fake=fake_engine)
    yield engine
    fake_engine.fail_status, fake_engine.hang = None, False
    engine.admin.close()


def test_vault_unavailable_during_rotation_then_rotation_completes(
    kafka_bootstrap: str, fake_transit: Transit
) -> None:
    settings = _settings(kafka_bootstrap, fake_transit)
    fake = fake_transit.fake
    assert fake is not None
    people = [uuid.uuid4().hex for _ in range(10)]
    with open_person_keys(settings) as store:
        made = store.ensure(people)
        _vault(store).rotate_primary()
        fake.fail_status = 503
        with pytest.raises(KekUnavailable, match="answered 503"):
            store.rotate()
        with pytest.raises(KekUnavailable):
            store.ensure([uuid.uuid4().hex])  # a new key cannot be made: unavailable, no record
        fake.fail_status = None
        result = store.rotate()
        assert (result.rewrapped, result.failed) == (10, ())
    with open_person_keys(settings) as store:
        assert store.status().keys_by_kek == {f"vault:{MOUNT}/{fake_transit.key}:v2": 10}
        for person in people:
            assert store.data_key(person, made[person].key_id).secret == made[person].secret


def test_hub_keys_rotate_new_version_with_vault(
    kafka_bootstrap: str, fake_transit: Transit
) -> None:
    """`hub keys rotate --new-version` and `hub keys status` as an operator runs them (the
    client's requests against OpenBao are the ones of the test above)."""
    engine = fake_transit
    settings = _settings(kafka_bootstrap, engine)
    people = [uuid.uuid4().hex for _ in range(5)]
    with open_person_keys(settings) as store:
        made = store.ensure(people)
    environment = hub_environment(settings)

    def hub(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hub", *args],
            env=environment, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    rotated = hub("keys", "rotate", "--new-version")
    assert rotated.returncode == 0, rotated.stderr
    ref = f"vault:{MOUNT}/{engine.key}"
    assert f"new KEK version {ref}:v2 wraps from now on" in rotated.stdout
    assert "rewrapped 5 key(s)" in rotated.stdout
    status = hub("keys", "status", "--json")
    assert status.returncode == 0, status.stderr
    counts = json.loads(status.stdout)
    assert counts["keys_by_kek"] == {f"{ref}:v2": 5}
    assert counts["keys_not_on_current_kek"] == 0
    assert counts["current_kek"] == f"{ref}:v2"
    for output in (rotated.stdout, rotated.stderr, status.stdout, status.stderr):
        assert engine.token not in output

    environment["HUB_VAULT_TOKEN"] = "hvs.wrong"
    refused = hub("keys", "rotate", "--new-version")
    assert refused.returncode != 0
    assert "403 permission denied" in refused.stderr
    assert "'update' capability" in refused.stderr
    assert "hvs.wrong" not in refused.stderr

    engine.admin.set_min_decryption_version(MOUNT, engine.key, 2)
    with open_person_keys(settings) as store:
        for person in people:
            assert store.data_key(person, made[person].key_id).secret == made[person].secret
