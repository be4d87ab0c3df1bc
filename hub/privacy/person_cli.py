"""``hub person forget`` and ``hub keys status`` / ``hub keys rotate``: the person keys by hand.

``hub person forget`` deletes a person's data keys (crypto-shredding): the forgotten marker,
then a tombstone per key in the person-keys topic, then an ``erased`` receipt in the
disclosure log. From then on every copy of the person's sealed personal fields (the log, the
archive, backups of either) is unreadable; their pseudonymous facts stay. The identity code is
turned into the pseudonym and never printed, logged or kept.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from typing import Any

import click

from hub.identity import InvalidIdentityCode, Pseudonymizer
from hub.kafka.cli_support import run_kafka_command
from hub.logging import configure_logging
from hub.privacy.expire_cli import expire_command
from hub.settings import HubSettings, get_settings

DEFAULT_REASON = "GDPR art. 17 request (right to erasure)"
_PSEUDONYM = re.compile(r"^[0-9a-f]{32}$")


@click.group("person")
def person() -> None:
    """One person's personal data: forget them (delete their data keys)."""


def _keys_store(settings: HubSettings, kek: Any = None) -> Any:
    """The person keys, started; one line when the KEK or the topic cannot be had."""
    from hub.privacy.kek import KekError, build_kek
    from hub.privacy.keystore import KafkaPersonKeys

    try:
        keeper = kek if kek is not None else build_kek(settings)
    except KekError as error:
        raise click.ClickException(
            f"the key-encryption key ({settings.kms}) is not available: {error}"
        ) from None
    store = KafkaPersonKeys(settings, keeper)
    try:
        store.start(progress=lambda line: click.echo(line, err=True))
    except Exception as error:  # PersonKeysError, KafkaException: one line
        keeper.close()
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise click.ClickException(
            f"person-keys topic {settings.topic_person_keys} at {settings.kafka_bootstrap}: {text}"
        ) from None
    store._own_kek = True  # closed with the store
    return store


@person.command("forget")
@click.argument("identity_code", metavar="IDENTITY_CODE", required=False)
@click.option(
    "--pseudonym",
    help="Forget the person of this pseudonym (32 hex characters) instead of an identity code "
    "(for retention jobs and requests handled by pseudonym).",
)
@click.option(
    "--reason",
    default=DEFAULT_REASON,
    show_default=True,
    help="Why: the legal basis written to the disclosure log (a request, a retention rule).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def forget_command(
    identity_code: str | None, pseudonym: str | None, reason: str, as_json: bool
) -> None:
    """Delete a person's data keys: their personal fields become unreadable everywhere.

    IDENTITY_CODE is the person's identity code, or - to read it from standard input (so it
    stays out of the shell history and the process list). It is turned into the person
    pseudonym (HUB_PSEUDONYM_SECRET) and never printed or logged. Irreversible: the keys are
    tombstoned in the person-keys topic and compacted away; the erasure is recorded in the
    disclosure log (status erased).
    """
    settings = get_settings()
    configure_logging(settings)
    subject = _subject(settings, identity_code, pseudonym)
    reason = reason.strip()
    if not reason:
        raise click.BadParameter(
            "give the reason (legal basis) of the erasure", param_hint="--reason"
        )
    from hub.logging import redact_text

    if redact_text(reason) != reason:
        raise click.BadParameter(
            "the reason must not hold an identity code or other personal data",
            param_hint="--reason",
        )
    from hub.privacy.access_log import record_erasure

    store = _keys_store(settings)
    try:
        result = store.forget(subject, reason)
    finally:
        store.close()
    try:
        entry = run_kafka_command(settings, record_erasure(settings, result, reason))
    except click.ClickException as error:
        raise click.ClickException(
            f"person {subject} forgotten (keys deleted) but the erasure was not recorded in the "
            f"disclosure log: {error.message}; run the same command again to record it"
        ) from None
    if as_json:
        click.echo(
            json.dumps(
                {
                    "subject": subject,
                    "forgotten_at": result.forgotten_at.isoformat(),
                    "key_ids": [str(k) for k in result.key_ids],
                    "partition": result.partition,
                    "marker_offset": result.marker_offset,
                    "disclosure": entry.to_json(),
                },
                indent=2,
            )
        )
        return
    click.echo(f"person {subject} forgotten at {result.forgotten_at.isoformat()}")
    if result.key_ids:
        click.echo(f"data keys deleted: {', '.join(str(k) for k in result.key_ids)}")
    else:
        click.echo("data keys deleted: none (no key of this person was stored)")
    click.echo(
        f"recorded in {settings.topic_disclosures} (chain person-keys/{result.partition}, "
        f"status erased)"
    )


def _subject(settings: HubSettings, identity_code: str | None, pseudonym: str | None) -> str:
    if (identity_code is None) == (pseudonym is None):
        raise click.UsageError("give either IDENTITY_CODE (or -) or --pseudonym")
    if pseudonym is not None:
        if not _PSEUDONYM.fullmatch(pseudonym.strip()):
            raise click.BadParameter(
                "a pseudonym is 32 lowercase hex characters", param_hint="--pseudonym"
            )
        return pseudonym.strip()
    assert identity_code is not None
    if identity_code == "-":
        identity_code = sys.stdin.readline()
    try:
        return Pseudonymizer.from_settings(settings).pseudonym(identity_code)
    except InvalidIdentityCode as error:
        raise click.BadParameter(str(error), param_hint="IDENTITY_CODE") from None
    finally:
        del identity_code


@click.group("keys")
def keys() -> None:
    """The per-person data keys and the key-encryption key that wraps them."""


@keys.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def status_command(as_json: bool) -> None:
    """Counts of the person-keys topic: people with keys, keys by KEK, forgotten people."""
    settings = get_settings()
    configure_logging(settings)
    store = _keys_store(settings)
    try:
        status = store.status()
        current = _current_kek_name(store)
    finally:
        store.close()
    if as_json:
        click.echo(
            json.dumps(
                {
                    "topic": status.topic,
                    "kms": settings.kms,
                    "current_kek": current,
                    "records_read": status.records_read,
                    "people_with_keys": status.people_with_keys,
                    "keys": status.keys,
                    "keys_by_kek": status.keys_by_kek,
                    "keys_not_on_current_kek": status.not_current,
                    "forgotten": status.forgotten,
                    "keys_awaiting_tombstone": status.awaiting_tombstone,
                    "unreadable_records": status.bad_records,
                    "unreadable_examples": [
                        {"partition": b.partition, "offset": b.offset, "problem": b.problem}
                        for b in status.bad_examples
                    ],
                },
                indent=2,
            )
        )
        return
    click.echo(f"person keys in {status.topic} ({status.records_read} records read)")
    click.echo(f"  people with keys:         {status.people_with_keys}")
    click.echo(f"  keys:                     {status.keys}")
    for kek, count in status.keys_by_kek.items():
        click.echo(f"    wrapped by {kek}: {count}")
    click.echo(f"  current KEK:              {current}")
    click.echo(f"  keys not on current KEK:  {status.not_current}")
    click.echo(f"  forgotten people:         {status.forgotten}")
    if status.awaiting_tombstone:
        click.echo(
            f"  keys of forgotten people still stored: {status.awaiting_tombstone} (refused by "
            "every reader; `hub keys rotate` tombstones them)"
        )
    if status.bad_records:
        click.echo(f"  unreadable records:       {status.bad_records}")
        for bad in status.bad_examples[:10]:
            click.echo(f"    partition {bad.partition} offset {bad.offset}: {bad.problem}")
    if status.not_current:
        click.echo("run `hub keys rotate` to rewrap the keys not on the current KEK")


def _current_kek_name(store: Any) -> str:
    """``local:<id>`` of the keyring's first key, ``vault:<mount>/<key>:v<N>`` of Vault."""
    kek = store.kek
    primary = getattr(kek, "primary", None)
    if primary is not None:
        return f"{kek.name}:{primary}"
    ref, state = getattr(kek, "ref", None), getattr(kek, "state", None)
    if ref is not None and callable(state):
        try:
            return f"{ref}:v{state().latest_version}"
        except Exception as error:  # KekError: Vault not answering; status still prints
            return f"{ref} (version unknown: {error})"
    return str(kek.name)


@keys.command("rotate")
@click.option(
    "--new-version",
    is_flag=True,
    help="First make the keeper start a new KEK version (Vault transit key rotation); the "
    "local keyring refuses: put the new key first in HUB_KEK instead.",
)
def rotate_command(new_version: bool) -> None:
    """Rewrap every stored data key with the current key-encryption key.

    The event log is never rewritten: only the person-keys records get the new wrapping. With
    the local keyring: put the new key first in HUB_KEK (or HUB_KEK_FILE), keep the old one
    after it, run this, check `hub keys status` shows no key on the old one, then remove it.
    Keys of forgotten people that a crashed forget left stored are tombstoned too.
    """
    settings = get_settings()
    configure_logging(settings)
    from hub.privacy.kek import KekError, build_kek

    try:
        kek = build_kek(settings)
    except KekError as error:
        raise click.ClickException(
            f"the key-encryption key ({settings.kms}) is not available: {error}"
        ) from None
    if new_version:
        rotate_primary: Callable[[], str] | None = getattr(kek, "rotate_primary", None)
        if rotate_primary is None:
            kek.close()
            raise click.ClickException(
                f"the {kek.name} keyring cannot make a new KEK version itself: put a new key "
                "first in HUB_KEK (id:base64 of 32 bytes, then the old key after a comma), run "
                "`hub keys rotate` (without --new-version), then remove the old key"
            )
        try:
            version = rotate_primary()
        except KekError as error:
            kek.close()
            raise click.ClickException(
                f"no new {kek.name} KEK version made: {error}; without --new-version, "
                "`hub keys rotate` rewraps the stored keys with the current KEK"
            ) from None
        click.echo(f"{kek.name}: new KEK version {version} wraps from now on")
    store = _keys_store(settings, kek)

    def progress(done: int, total: int) -> None:
        if total and (done == total or done % 5000 == 0):
            click.echo(f"rewrapped {done} of {total}", err=True)

    try:
        result = store.rotate(progress=progress)
        status = store.status()
    except KekError as error:
        raise click.ClickException(f"rotation stopped: {error}") from None
    finally:
        store.close()
    click.echo(
        f"rewrapped {result.rewrapped} key(s), {result.already_current} already on the current "
        f"KEK; keys now by KEK: "
        + (", ".join(f"{k} {n}" for k, n in status.keys_by_kek.items()) or "none")
    )
    if result.erased:
        click.echo(f"tombstoned {result.erased} key(s) of forgotten people left by a forget")
    if result.failed:
        for subject, key_id, problem in result.failed[:20]:
            click.echo(f"NOT rewrapped: person {subject} key {key_id}: {problem}", err=True)
        click.echo(f"{len(result.failed)} key(s) could not be rewrapped", err=True)
        sys.exit(1)


person.add_command(expire_command)
