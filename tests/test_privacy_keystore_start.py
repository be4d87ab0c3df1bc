"""Opening the person keys: a topic the broker does not describe yet, one opener for every
command, keepers that refuse to unwrap, finishing an earlier forgetting, restriction records;
on the session broker."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from pydantic import SecretStr

from hub.privacy import keystore
from hub.privacy.kek import KekError, LocalKeyEncryptionKeys, WrappedKey
from hub.privacy.keystore import (
    KafkaPersonKeys,
    NoUnwrap,
    PersonKeysError,
    PersonKeysUnavailable,
    open_person_keys,
    open_person_keys_for,
)
from hub.privacy.sealing import KeyErased
from hub.settings import HubSettings
from tests.conftest import settings_for

pytestmark = pytest.mark.kafka

KEK = "k1:" + base64.b64encode(b"k" * 32).decode()


@pytest.fixture
def settings(kafka_bootstrap: str) -> HubSettings:
    base = settings_for(kafka_bootstrap, partitions=3, kek=SecretStr(KEK))
    return base.model_copy(
        update={"topic_person_keys": f"test.person-keys.{uuid.uuid4().hex[:12]}"}
    )


def _failed(code: int) -> Future[Any]:
    future: Future[Any] = Future()
    future.set_exception(KafkaException(KafkaError(code)))
    return future


class _NotYetDescribed(AdminClient):
    """A broker that does not know a topic it has just created for the first ``misses`` asks."""

    misses = 2
    code = KafkaError.UNKNOWN_TOPIC_OR_PART
    calls = 0

    def describe_configs(self, resources: Any, **kwargs: Any) -> dict[Any, Future[Any]]:
        type(self).calls += 1
        if type(self).calls <= type(self).misses:
            return {resource: _failed(type(self).code) for resource in resources}
        described: dict[Any, Future[Any]] = super().describe_configs(resources, **kwargs)
        return described


def test_start_on_a_topic_not_yet_described_asks_again(
    settings: HubSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """UNKNOWN_TOPIC_OR_PART right after creating the topic: start asks again, no caller loop."""
    monkeypatch.setattr(_NotYetDescribed, "calls", 0)
    monkeypatch.setattr(keystore, "AdminClient", _NotYetDescribed)
    with open_person_keys(settings) as store:
        person = uuid.uuid4().hex
        made = store.ensure([person])[person]
    assert _NotYetDescribed.calls == 3
    with open_person_keys(settings) as fresh:
        assert fresh.data_key(person, made.key_id).secret == made.secret


def test_start_does_not_ask_again_on_an_error_that_stays(
    settings: HubSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_NotYetDescribed, "calls", 0)
    monkeypatch.setattr(_NotYetDescribed, "code", KafkaError.TOPIC_AUTHORIZATION_FAILED)
    monkeypatch.setattr(keystore, "AdminClient", _NotYetDescribed)
    store = KafkaPersonKeys(settings)
    with pytest.raises(PersonKeysError, match="not readable"):
        store.start()
    assert _NotYetDescribed.calls == 1


def test_the_bounded_retry_gives_up(settings: HubSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_NotYetDescribed, "calls", 0)
    monkeypatch.setattr(_NotYetDescribed, "misses", 10**9)
    monkeypatch.setattr(keystore, "AdminClient", _NotYetDescribed)
    store = KafkaPersonKeys(settings)
    with pytest.raises(PersonKeysError, match=r"UNKNOWN_TOPIC_OR_PART|Unknown topic"):
        store.start(timeout_s=2)
    assert _NotYetDescribed.calls > 1


class _Counting(LocalKeyEncryptionKeys):
    closed = 0

    def close(self) -> None:
        type(self).closed += 1


def test_open_for_writing_only_holds_no_kek_and_forgets(settings: HubSettings) -> None:
    person = uuid.uuid4().hex
    with open_person_keys(settings) as store:
        key = store.ensure([person])[person]
    missing = settings.model_copy(update={"kek": None, "kek_file": Path("/nonexistent/kek")})
    with open_person_keys_for(missing, needs_unwrap=False) as writer:
        assert isinstance(writer.kek, NoUnwrap)
        with pytest.raises(KekError):
            writer.ensure([uuid.uuid4().hex])  # no wrapping either
        result = writer.forget(person, "order: test")
    assert result.key_ids == (key.key_id,)
    with (
        pytest.raises(PersonKeysUnavailable) as refused,
        open_person_keys_for(missing, needs_unwrap=True),
    ):
        pass
    assert "\n" not in str(refused.value)
    assert "HUB_KEK_FILE" in str(refused.value)


def test_open_for_closes_the_keeper_it_was_given(settings: HubSettings) -> None:
    _Counting.closed = 0
    keeper = _Counting.from_text(KEK)
    assert isinstance(keeper, _Counting)
    with open_person_keys_for(settings, needs_unwrap=True, kek=keeper) as store:
        assert store.kek is keeper
    assert _Counting.closed == 1


def test_open_for_an_unreachable_topic_is_one_line(settings: HubSettings) -> None:
    away = settings.model_copy(update={"kafka_bootstrap": "127.0.0.1:9"})
    with (
        pytest.raises(PersonKeysUnavailable) as refused,
        open_person_keys_for(away, needs_unwrap=False, timeout_s=3),
    ):
        pass
    text = str(refused.value)
    assert "\n" not in text
    assert away.topic_person_keys in text


def test_no_unwrap_refuses_everything() -> None:
    keeper = NoUnwrap()
    wrapped: Sequence[WrappedKey] = [WrappedKey("local:x", b"y")]
    for call in (
        lambda: keeper.wrap([b"s"], [b"c"]),
        lambda: keeper.unwrap(wrapped, [b"c"]),
        lambda: keeper.rewrap(wrapped, [b"c"]),
        keeper.rotate_primary,
    ):
        with pytest.raises(KekError):
            call()
    assert keeper.is_current(wrapped[0]) is False


def test_finishing_a_forgetting_keeps_keys_made_since(settings: HubSettings) -> None:
    person = uuid.uuid4().hex
    with open_person_keys(settings) as store:
        first = store.ensure([person])[person]
        erased = store.forget(person, "order: test")
        second = store.ensure([person])[person]
    with open_person_keys_for(settings, needs_unwrap=False) as writer:
        assert [k.key_id for k in writer.live_keys(person)] == [second.key_id]
        assert writer.marker_place(person) == (erased.partition, erased.marker_offset)
        again = writer.complete_forget(person)
    assert again.forgotten_at == erased.forgotten_at
    assert (again.partition, again.marker_offset) == (erased.partition, erased.marker_offset)
    assert again.key_ids == (first.key_id,)
    with open_person_keys(settings) as fresh:
        assert fresh.data_key(person, second.key_id).secret == second.secret
        with pytest.raises(KeyErased):
            fresh.data_key(person, first.key_id)
        assert fresh.forgotten(person) is not None
    nobody = uuid.uuid4().hex
    with (
        open_person_keys_for(settings, needs_unwrap=False) as writer,
        pytest.raises(PersonKeysError, match="no forgotten marker"),
    ):
        writer.complete_forget(nobody)


def test_restrict_and_lift_are_read_by_a_fresh_follower(settings: HubSettings) -> None:
    person = uuid.uuid4().hex
    with open_person_keys_for(settings, needs_unwrap=False) as writer:
        done = writer.restrict(person, "accuracy contested")
        assert done.earlier is None
        with pytest.raises(ValueError, match="basis"):
            writer.restrict(person, "  ")
    with open_person_keys(settings) as fresh:
        mark = fresh.directory.restricted(person)
        assert mark is not None
        assert mark.basis == "accuracy contested"
        assert fresh.partition_of(person) == done.partition
    with open_person_keys_for(settings, needs_unwrap=False) as writer:
        lifted = writer.lift_restriction(person)
        assert lifted.earlier is not None
        assert lifted.basis is None
    with open_person_keys(settings) as fresh:
        assert fresh.directory.restricted(person) is None
