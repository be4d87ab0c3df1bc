"""``hub tail``: print decoded events of the customer-path log as JSON lines.

Without ``--reveal`` the command holds no key: sealed personal values print as ``<sealed>``.
``--reveal --reason TEXT`` opens them with the person keys (the configured key-encryption
key and the person-keys topic; it refuses with one line when either cannot be had), says on
stderr that the access is recorded, and records every revealed event in the disclosure log
(:func:`hub.privacy.access_log.record_reveal`) before the event is printed: one receipt per
person of whom something was shown, listing the fields shown of that person's events. What
the routes hold back (a restricted person, plaintext of a person forgotten since) is shown
``<restricted>`` and recorded for nobody.
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final

import click

from hub.identity.contact import personal_data_kind
from hub.inspect.tail import ERASED_PLACEHOLDER, LogEntry, read_log
from hub.kafka.cli_support import run_kafka_command
from hub.logging import configure_logging, redact_text
from hub.serde import build_serializer, default_catalog
from hub.settings import HubSettings, get_settings

if TYPE_CHECKING:
    from hub.privacy.keystore import KafkaPersonKeys

REVEAL_BATCH: Final = 500
"""Revealed events recorded in the disclosure log in one entry (before they are printed)."""


@click.command("tail")
@click.option("--from-beginning", is_flag=True, help="Start at the oldest retained event.")
@click.option("--limit", type=int, default=None, help="Stop after this many records.")
@click.option("--follow", is_flag=True, help="Keep waiting for new events.")
@click.option(
    "--reveal",
    is_flag=True,
    help="Open the sealed personal fields with the person keys (needs --reason; every "
    "revealed event is recorded in the disclosure log).",
)
@click.option("--reason", default=None, help="Why the personal fields are revealed (recorded).")
@click.option(
    "--operator", default=None, help="Who reveals, for the disclosure log (default: OS user)."
)
@click.option(
    "--keys-timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds to wait for the person-keys topic with --reveal.",
)
def tail_command(
    from_beginning: bool,
    limit: int | None,
    follow: bool,
    reveal: bool,
    reason: str | None,
    operator: str | None,
    keys_timeout: float,
) -> None:
    """One JSON line per record: position, key, headers and the decoded event."""
    settings = get_settings()
    configure_logging(settings)
    if not reveal:
        if reason is not None or operator is not None:
            raise click.UsageError("--reason and --operator go with --reveal")
        failed, _ = run_kafka_command(settings, _tail(from_beginning, limit, follow, None, None))
    else:
        from hub.privacy.kek import KekError

        access = _reveal_access(reason, operator)
        record = _disclosure_recorder()
        with _person_keys(settings, keys_timeout) as keys:
            click.echo(
                f"hub tail --reveal: personal fields are opened with the person keys; every "
                f"revealed event is recorded in the disclosure log {settings.topic_disclosures} "
                f"(operator {access[0]})",
                err=True,
            )
            reveal_with = (keys, lambda entries: record(settings, *access, entries))
            try:
                failed, shown = run_kafka_command(
                    settings, _tail(from_beginning, limit, follow, *reveal_with)
                )
            except KekError as error:  # the keeper stopped answering while the log was read
                raise click.ClickException(
                    f"cannot reveal further: the key-encryption key is not available ({error})"
                ) from None
        click.echo(
            f"{shown.revealed} event(s) revealed and recorded; {shown.erased} value(s) of "
            f"forgotten persons erased, {shown.closed} other value(s) left sealed, "
            f"{shown.withheld} value(s) held back as <restricted> (processing restricted, or "
            "plaintext of a person forgotten since)",
            err=True,
        )
    if failed:
        click.echo(f"{failed} record(s) could not be decoded", err=True)
        sys.exit(1)


def _reveal_access(reason: str | None, operator: str | None) -> tuple[str, str]:
    """``(operator, reason)`` of a reveal, checked: a reason is required, and neither may hold
    an identity code, an e-mail address or a phone number (both are written to the disclosure
    log, for good)."""
    if reason is None or not reason.strip():
        raise click.UsageError(
            "--reveal needs --reason: why the personal fields are opened (it is recorded in "
            "the disclosure log)"
        )
    if operator is None:
        try:
            operator = getpass.getuser()
        except (KeyError, OSError):  # no user name in the environment or the password database
            raise click.UsageError("no OS user name found: give --operator") from None
    for name, text in (("--reason", reason), ("--operator", operator)):
        kind = personal_data_kind(text)
        if kind is not None:  # kept for good in the disclosure log: no copy of personal data
            raise click.UsageError(f"{name} must not hold personal data ({kind} found)")
    return operator.strip(), reason.strip()


def _disclosure_recorder() -> Callable[[HubSettings, str, str, list[LogEntry]], Any]:
    """The disclosure log's ``record_reveal`` as a coroutine function over entries; a build
    without it refuses to reveal (nothing is shown that cannot be recorded)."""
    try:
        from hub.privacy.access_log import record_reveal
    except ImportError:
        raise click.ClickException(
            "cannot reveal: the disclosure log of reveals (hub.privacy.access_log) is not in "
            "this build, and nothing is revealed that cannot be recorded"
        ) from None

    async def record(
        settings: HubSettings, operator: str, reason: str, entries: list[LogEntry]
    ) -> None:
        shown = [e for e in entries if e.revealed]  # nothing shown of a person: no receipt
        fields_of = revealed_fields(shown)
        event_ids = [e.event_id for e in shown if e.event_id is not None]
        fields = sorted({path for e in shown for path in e.revealed})
        whose = [(e.subject, e.event_id) for e in shown if e.subject and e.event_id]
        await record_reveal(
            settings,
            operator,
            sorted(fields_of),
            event_ids,
            fields,
            reason,
            events=whose,
            fields_of=fields_of,
        )

    return record


def revealed_fields(entries: Iterable[LogEntry]) -> dict[str, list[str]]:
    """Person → the fields revealed of that person's own events (their receipt's fields)."""
    found: dict[str, set[str]] = {}
    for entry in entries:
        if entry.subject is not None and entry.revealed:
            found.setdefault(entry.subject, set()).update(entry.revealed)
    return {subject: sorted(paths) for subject, paths in sorted(found.items())}


@contextmanager
def _person_keys(settings: HubSettings, timeout_s: float) -> Iterator[KafkaPersonKeys]:
    """The person keys, started, with a KEK that opens the stored keys (a wrong HUB_KEK is
    refused before the log is read); one line and exit when they cannot be had."""
    from hub.privacy.kek import KekError, KekUnavailable
    from hub.privacy.keystore import PersonKeysUnavailable, open_person_keys_for

    try:
        with open_person_keys_for(settings, needs_unwrap=True, timeout_s=timeout_s) as keys:
            try:
                keys.directory.check_kek()
            except KekUnavailable:
                raise click.ClickException(
                    f"cannot reveal: the key-encryption key keeper ({keys.kek.name}) is not "
                    "reachable; try again when it answers"
                ) from None
            except KekError as error:
                raise click.ClickException(f"cannot reveal: {error}") from None
            yield keys
    except PersonKeysUnavailable as error:
        raise click.ClickException(f"cannot reveal: {redact_text(str(error))}") from None


class _Shown:
    def __init__(self) -> None:
        self.revealed = 0
        self.erased = 0
        self.closed = 0
        self.withheld = 0


async def _tail(
    from_beginning: bool,
    limit: int | None,
    follow: bool,
    keys: KafkaPersonKeys | None,
    record: Callable[[list[LogEntry]], Any] | None,
) -> tuple[int, _Shown]:
    settings = get_settings()
    failed = 0
    shown = _Shown()
    entries = read_log(
        settings,
        build_serializer(settings),
        default_catalog(),
        from_beginning=from_beginning,
        limit=limit,
        follow=follow,
        reveal=keys is not None,
        keys=keys,
    )
    pending: list[LogEntry] = []

    async def flush() -> None:
        revealed = [e for e in pending if e.revealed]
        if revealed and record is not None:
            await record(revealed)  # recorded before anything of it is printed
        shown.revealed += len(revealed)
        for entry in pending:
            sys.stdout.write(entry.to_json() + "\n")
        sys.stdout.flush()
        pending.clear()

    async for entry in entries:
        failed += entry.error is not None
        if keys is None:
            sys.stdout.write(entry.to_json() + "\n")
            continue
        for path in entry.unopened:
            erased = _value_at(entry.event, path) == ERASED_PLACEHOLDER
            shown.erased += erased
            shown.closed += not erased
        shown.withheld += len(entry.withheld)
        pending.append(entry)
        if follow or len(pending) >= REVEAL_BATCH:
            await flush()
    if pending:
        await flush()
    return failed, shown


def _value_at(record: dict[str, Any] | None, path: str) -> Any:
    node: Any = record
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node
