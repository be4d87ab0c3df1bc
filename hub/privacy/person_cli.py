"""``hub person forget|restrict`` and ``hub keys status`` / ``hub keys rotate``: the person keys
by hand.

``hub person forget`` deletes a person's data keys (crypto-shredding): the forgotten marker,
then a tombstone per key in the person-keys topic, then an ``erased`` receipt in the
disclosure log naming the operator, the ground (``--basis``, one of :data:`ERASURE_BASES`: a
public employment authority processes under a legal obligation and a public task, so a request
alone does not erase, GDPR art. 17(3)(b)), the keys deleted, the marker's place and the
receivers to tell (art. 19). From then on every copy of the person's sealed personal fields
(the log, the archive, backups of either) is unreadable; their pseudonymous facts stay.
Forgetting a forgotten person again writes no new marker (that would erase keys made since for
new events) unless ``--new-erasure``; ``--record-only`` writes a missing receipt of the
existing marker. ``hub person restrict`` writes or lifts the restriction of processing (art.
18). Neither holds a key-encryption key that unwraps. The identity code is turned into the
pseudonym and never printed, logged or kept.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Final

import click

from hub.identity import InvalidIdentityCode, Pseudonymizer
from hub.kafka.cli_support import run_kafka_command
from hub.logging import configure_logging, redact_text
from hub.privacy.expire_cli import expire_command
from hub.settings import HubSettings, get_settings

if TYPE_CHECKING:
    from hub.privacy.kek import KeyEncryptionKeys
    from hub.privacy.keystore import ForgetResult, KafkaPersonKeys

_PSEUDONYM = re.compile(r"^[0-9a-f]{32}$")

#: Why a public employment authority erases before the retention period ends, or at its end.
#: It processes under a legal obligation and a public task (GDPR art. 6(1)(c), (e)), so a
#: request alone does not erase (art. 17(3)(b)): one of these grounds must hold.
ERASURE_BASES: Final = {
    "retention-expired": "GDPR art. 17(1)(a): no longer necessary, the retention period ended",
    "unlawful-processing": "GDPR art. 17(1)(d): the personal data were processed unlawfully",
    "order": "GDPR art. 17(1)(e): erasure ordered by an authority or a court",
    "objection-upheld": "GDPR art. 17(1)(c) with art. 21(1): an objection upheld",
}


@click.group("person")
def person() -> None:
    """One person's personal data: forget them (delete their data keys), restrict processing."""


@contextmanager
def _keys_store(
    settings: HubSettings, *, needs_unwrap: bool, kek: KeyEncryptionKeys | None = None
) -> Iterator[KafkaPersonKeys]:
    """The person keys, started; one line when the KEK or the topic cannot be had."""
    from hub.privacy.keystore import PersonKeysUnavailable, open_person_keys_for

    with ExitStack() as stack:
        try:
            store = stack.enter_context(
                open_person_keys_for(
                    settings,
                    needs_unwrap=needs_unwrap,
                    kek=kek,
                    progress=lambda line: click.echo(line, err=True),
                )
            )
        except PersonKeysUnavailable as error:
            raise click.ClickException(str(error)) from None
        yield store


def _operator(operator: str | None) -> str:
    from hub.privacy.access_log import default_operator

    name = (operator or default_operator()).strip()
    if not name or redact_text(name) != name or len(name) > 100:
        raise click.BadParameter("an operator name (no personal data)", param_hint="--operator")
    return name


def _detail(text: str | None, hint: str) -> str:
    detail = (text or "").strip()
    if redact_text(detail) != detail:
        raise click.BadParameter(
            "must not hold an identity code or other personal data", param_hint=hint
        )
    return detail


def _marker_basis(reason: str) -> tuple[str | None, str]:
    """``(basis, detail)`` of a forgotten marker's reason written by this command."""
    head, sep, rest = reason.partition(": ")
    if head in ERASURE_BASES:
        return head, rest if sep else ""
    return None, reason


@person.command("forget")
@click.argument("identity_code", metavar="IDENTITY_CODE", required=False)
@click.option(
    "--pseudonym",
    help="Forget the person of this pseudonym (32 hex characters) instead of an identity code "
    "(for retention jobs and requests handled by pseudonym).",
)
@click.option(
    "--basis",
    type=click.Choice(sorted(ERASURE_BASES)),
    help="The ground of the erasure (required): "
    + "; ".join(f"{k}: {v}" for k, v in sorted(ERASURE_BASES.items())),
)
@click.option("--reason", help="Detail of the ground: the case number, the rule, the order.")
@click.option("--operator", help="Who erases (default: the OS user), written to the receipt.")
@click.option(
    "--record-only",
    is_flag=True,
    help="Touch no key: write the missing erasure receipt of the person's existing forgotten "
    "marker (its own time; nothing when the log already holds it).",
)
@click.option(
    "--new-erasure",
    is_flag=True,
    help="The person was forgotten before and has keys made since: erase those too (a new "
    "forgotten marker and its own receipt).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def forget_command(
    identity_code: str | None,
    pseudonym: str | None,
    basis: str | None,
    reason: str | None,
    operator: str | None,
    record_only: bool,
    new_erasure: bool,
    as_json: bool,
) -> None:
    """Delete a person's data keys: their personal fields become unreadable everywhere.

    IDENTITY_CODE is the person's identity code, or - to read it from standard input (so it
    stays out of the shell history and the process list). It is turned into the person
    pseudonym (HUB_PSEUDONYM_SECRET) and never printed or logged. Irreversible: the keys are
    tombstoned in the person-keys topic and compacted away; the erasure is recorded in the
    disclosure log (status erased) with the operator, the basis, the keys deleted and the
    receivers the person's data went to (to be told of it, GDPR art. 19).

    Run again on a forgotten person it finishes that erasure (tombstones a crash left, the
    receipt if missing) and erases no key made since, unless --new-erasure.
    """
    settings = get_settings()
    configure_logging(settings)
    subject = _subject(settings, identity_code, pseudonym)
    if record_only and new_erasure:
        raise click.UsageError("--record-only writes no marker; --new-erasure writes one")
    if basis is None and not record_only:
        raise click.BadParameter(
            "give the ground of the erasure (a request alone does not erase what the "
            "authority must keep, GDPR art. 17(3)(b))",
            param_hint="--basis",
        )
    detail = _detail(reason, "--reason")
    who = _operator(operator)

    result: ForgetResult
    fresh = False
    with _keys_store(settings, needs_unwrap=False) as store:
        store.catch_up()
        mark = store.forgotten(subject)
        if record_only:
            if mark is None:
                raise click.ClickException(
                    f"person {subject} has no forgotten marker: nothing to record"
                )
            result = _existing(store, subject)
        elif mark is not None and not new_erasure:
            since = store.live_keys(subject)
            if since:
                raise click.ClickException(
                    f"person {subject} was forgotten at {mark.forgotten_at.isoformat()}; "
                    f"{len(since)} data key(s) were made since then for new events and are "
                    "left alone: pass --new-erasure to erase them too (a new erasure), or "
                    "--record-only to record the earlier one"
                )
            result = store.complete_forget(subject)
        else:
            text = f"{basis}: {detail}" if detail else str(basis)
            result = store.forget(subject, text)
            fresh = True
    marked_basis, marked_detail = _marker_basis(mark.reason) if mark is not None else (None, "")
    if not fresh:
        basis = basis or marked_basis
        detail = detail or marked_detail
        if basis is None:
            raise click.ClickException(
                f"the forgotten marker of person {subject} names no basis of this command: "
                "give --basis (and --reason) to record it"
            )
    assert basis is not None
    from hub.privacy.access_log import record_erasures

    via = "hub person forget" + (" --record-only" if record_only else "")
    try:
        [recorded] = run_kafka_command(
            settings,
            record_erasures(
                settings,
                [result],
                detail,
                via,
                operator=who,
                basis=basis,
                basis_text=ERASURE_BASES[basis],
                once=not fresh,
            ),
        )
    except click.ClickException as error:
        raise click.ClickException(
            f"person {subject} forgotten (keys deleted, marker at partition {result.partition} "
            f"offset {result.marker_offset}) but the erasure was not recorded in the disclosure "
            f"log: {error.message}; record it (no key touched) with: hub person forget "
            f"--pseudonym {subject} --record-only --basis {basis}"
        ) from None
    recipients = [str(r) for r in recorded.recipients]
    if as_json:
        click.echo(
            json.dumps(
                {
                    "subject": subject,
                    "forgotten_at": result.forgotten_at.isoformat(),
                    "new_marker": fresh,
                    "key_ids": [str(k) for k in result.key_ids],
                    "partition": result.partition,
                    "marker_offset": result.marker_offset,
                    "recorded_now": recorded.written,
                    "recipients": [r.to_json() for r in recorded.recipients],
                    "disclosure": recorded.entry.to_json(),
                },
                indent=2,
            )
        )
        return
    if fresh:
        click.echo(f"person {subject} forgotten at {result.forgotten_at.isoformat()}")
    else:
        click.echo(
            f"person {subject} was forgotten at {result.forgotten_at.isoformat()} (marker at "
            f"partition {result.partition} offset {result.marker_offset}); no new marker"
        )
    if result.key_ids:
        click.echo(f"data keys deleted: {', '.join(str(k) for k in result.key_ids)}")
    else:
        click.echo("data keys deleted: none (no key of this person was stored)")
    state = "recorded" if recorded.written else "already recorded"
    click.echo(
        f"{state} in {settings.topic_disclosures} (chain person-keys/{result.partition}, "
        f"status erased, basis {basis}, operator {who})"
    )
    _echo_recipients(recipients, "the erasure")


def _existing(store: KafkaPersonKeys, subject: str) -> ForgetResult:
    """The person's existing erasure as it stands: its marker, the tombstones after it."""
    from hub.privacy.keystore import ForgetResult

    mark = store.forgotten(subject)
    place = store.marker_place(subject)
    if mark is None or place is None:
        raise click.ClickException(f"person {subject} has no forgotten marker: nothing to record")
    partition, offset = place
    return ForgetResult(
        subject, store.erased_key_ids(subject), mark.forgotten_at, partition, offset, ()
    )


def _echo_recipients(recipients: list[str], what: str) -> None:
    if recipients:
        click.echo(
            f"tell the receivers of the person's data of {what} (GDPR art. 19): "
            + ", ".join(recipients)
        )
    else:
        click.echo("receivers to tell (GDPR art. 19): none in the disclosure log")


@person.command("restrict")
@click.argument("identity_code", metavar="IDENTITY_CODE", required=False)
@click.option("--pseudonym", help="The person of this pseudonym instead of an identity code.")
@click.option(
    "--basis",
    help="Why processing is restricted (GDPR art. 18(1)(a)-(d), e.g. 'accuracy contested, "
    "case 123'): required to restrict.",
)
@click.option("--lift", is_flag=True, help="Lift the person's restriction instead.")
@click.option("--reason", help="With --lift: why it is lifted.")
@click.option("--operator", help="Who does it (default: the OS user), written to the receipt.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def restrict_command(
    identity_code: str | None,
    pseudonym: str | None,
    basis: str | None,
    lift: bool,
    reason: str | None,
    operator: str | None,
    as_json: bool,
) -> None:
    """Restrict the processing of a person's data (GDPR art. 18), or lift it with --lift.

    The keys stay; while restricted no route gets the person's personal fields and hub tail
    --reveal holds them back. Recorded in the disclosure log (status restricted /
    restriction-lifted) with the receivers to tell (art. 19). IDENTITY_CODE as for forget.
    """
    settings = get_settings()
    configure_logging(settings)
    subject = _subject(settings, identity_code, pseudonym)
    if lift == (basis is not None):
        raise click.UsageError("give --basis to restrict, or --lift (without --basis) to lift")
    text = _detail(basis, "--basis")
    if not lift and not text:
        raise click.BadParameter("give the ground of the restriction", param_hint="--basis")
    detail = _detail(reason, "--reason")
    who = _operator(operator)
    with _keys_store(settings, needs_unwrap=False) as store:
        result = store.lift_restriction(subject) if lift else store.restrict(subject, text)
    from hub.privacy.access_log import record_restriction

    what = "the lifting of the restriction" if lift else "the restriction"
    try:
        recorded = run_kafka_command(
            settings, record_restriction(settings, result, operator=who, reason=detail)
        )
    except click.ClickException as error:
        raise click.ClickException(
            f"{what} of person {subject} is in force but not recorded in the disclosure log: "
            f"{error.message}"
        ) from None
    if as_json:
        click.echo(
            json.dumps(
                {
                    "subject": subject,
                    "lifted": lift,
                    "at": result.at.isoformat(),
                    "partition": result.partition,
                    "offset": result.offset,
                    "was_restricted": result.earlier is not None,
                    "recipients": [r.to_json() for r in recorded.recipients],
                    "disclosure": recorded.entry.to_json(),
                },
                indent=2,
            )
        )
        return
    if lift:
        before = "" if result.earlier is not None else " (none was in force)"
        click.echo(f"person {subject}: restriction of processing lifted{before}")
    else:
        click.echo(f"person {subject}: processing restricted at {result.at.isoformat()}")
    click.echo(
        f"recorded in {settings.topic_disclosures} (chain person-keys/{result.partition}, status "
        f"{recorded.entry.status}, operator {who})"
    )
    _echo_recipients([str(r) for r in recorded.recipients], what)


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
    with _keys_store(settings, needs_unwrap=True) as store:
        status = store.status()
        current = _current_kek_name(store)
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


def _current_kek_name(store: KafkaPersonKeys) -> str:
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

    def progress(done: int, total: int) -> None:
        if total and (done == total or done % 5000 == 0):
            click.echo(f"rewrapped {done} of {total}", err=True)

    with _keys_store(settings, needs_unwrap=True, kek=kek) as store:
        try:
            result = store.rotate(progress=progress)
            status = store.status()
        except KekError as error:
            raise click.ClickException(f"rotation stopped: {error}") from None
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
