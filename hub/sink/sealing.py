"""Encrypt at the edge: the data keys of a write's persons, had in one call before encoding.

Every customer-path event the hub writes to the log has its personal fields (``pii`` in the
schema) sealed with the person's data key (:class:`~hub.privacy.fields.SealedFields`) before it
is encoded. A writer first gets the keys of ALL persons of what it is about to write in one
call (:func:`ensure_keys`: the key store makes and durably stores the missing ones), then seals
and encodes each event with the key of its own subject. When keys cannot be had (the key topic
or the key-encryption keeper is down, a timeout) nothing is written: :class:`KeysUnavailable`
is a :class:`~hub.sink.SinkUnavailable` (503 with Retry-After at the API), never a plaintext
write.

Which key seals an event is decided by its envelope's subject only, and the subject is the
pseudonym of the identity code the event carries: a submission with another person's identity
code is that other person's event, sealed with that person's key (and erased with it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from contextlib import suppress
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import structlog

from hub.privacy.kek import KekError, KekUnavailable
from hub.privacy.sealing import DataKey
from hub.settings import HubSettings
from hub.sink.base import SinkUnavailable

if TYPE_CHECKING:
    from hub.privacy.keystore import KafkaPersonKeys

log = structlog.get_logger(__name__)


@runtime_checkable
class PersonKeys(Protocol):
    """What the edge needs of a key store (KafkaPersonKeys, MemoryPersonKeys in tests)."""

    def ensure(self, subjects: Iterable[str]) -> dict[str, DataKey]:
        """The key each person's new values are sealed with; made and stored when missing."""
        ...


class KeysUnavailable(SinkUnavailable):
    """The persons' data keys cannot be had now; nothing was written, retry later."""


class KeysRefused(KeysUnavailable):
    """The key-encryption keeper refused (misconfigured, no permission): an operator must act;
    still a 503 at the API (the request itself is fine), not retried by tools."""


async def ensure_keys(
    keys: PersonKeys, subjects: Iterable[str], timeout_s: float
) -> dict[str, DataKey]:
    """The data keys of ``subjects`` in ONE call of the key store, within ``timeout_s``.

    Raises :class:`KeysUnavailable` for any failure (and when a subject is missing from the
    answer): the caller writes nothing. Errors name their type only, never a value.
    """
    wanted = list(dict.fromkeys(subjects))
    if not wanted:
        return {}
    aensure = getattr(keys, "aensure", None)
    work = aensure(wanted) if aensure is not None else asyncio.to_thread(keys.ensure, wanted)
    try:
        found: dict[str, DataKey] = await asyncio.wait_for(work, timeout_s)
    except (TimeoutError, KekUnavailable, OSError) as exc:
        log.warning("edge.keys_unavailable", error=type(exc).__name__, persons=len(wanted))
        raise KeysUnavailable(
            f"the persons' data keys could not be had within {timeout_s:g} s "
            f"({type(exc).__name__}); nothing was written, retry later",
            retry_after_s=max(1, round(timeout_s / 2)),
        ) from exc
    except KekError as exc:  # misconfigured or refused: an operator must act, still no write
        log.error("edge.keys_refused", error=type(exc).__name__, persons=len(wanted))
        raise KeysRefused(
            f"the key-encryption key refused to wrap the persons' data keys "
            f"({type(exc).__name__}); nothing was written, retry later",
            retry_after_s=30,
        ) from exc
    except Exception as exc:  # the key topic (KafkaError) or anything else: never a plaintext write
        log.warning("edge.keys_unavailable", error=type(exc).__name__, persons=len(wanted))
        raise KeysUnavailable(
            f"the persons' data keys could not be had ({type(exc).__name__}); nothing was "
            "written, retry later",
            retry_after_s=max(1, round(timeout_s / 2)),
        ) from exc
    missing = [s for s in wanted if s not in found or found[s].subject != s]
    if missing:
        log.error("edge.keys_missing", persons=len(missing))
        raise KeysUnavailable(
            f"the key store answered without a data key for {len(missing)} person(s); "
            "nothing was written, retry later"
        )
    return found


def key_of(keys: Mapping[str, DataKey], subject: str) -> DataKey:
    """The key of ``subject`` among ``keys``; KeysUnavailable (never plaintext) if absent."""
    key = keys.get(subject)
    if key is None or key.subject != subject:
        raise KeysUnavailable("no data key of the event's person was had; nothing was written")
    return key


async def start_person_keys(settings: HubSettings) -> KafkaPersonKeys:
    """The person-keys topic of ``settings`` followed and read to its end (a writer's keys);
    a key-encryption key that opens none of the stored keys is refused (KekError): a writer
    with a wrong HUB_KEK would wrap new people's keys so no reader can open them."""
    from hub.privacy.keystore import KafkaPersonKeys  # needs Kafka: imported where used

    keys = KafkaPersonKeys(settings)
    try:
        await asyncio.to_thread(keys.start)  # waits itself for a topic it has just created
        await asyncio.to_thread(keys.directory.check_kek)
    except BaseException:
        with suppress(Exception):
            await asyncio.to_thread(keys.close)
        raise
    return keys
