"""``hub dlq list|show|replay|purge``: the dead letters, for the person on call."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import click

from hub.delivery.dlq import (
    LetterFilter,
    LetterStatus,
    StoredLetter,
    find,
    parse_time,
    purge,
    read_letters,
    replay,
    safe_view,
    select,
)
from hub.kafka.cli_support import run_kafka_command
from hub.kafka.dead_letters import DeadLetterStage
from hub.logging import configure_logging, redact_text
from hub.settings import HubSettings, get_settings

F = TypeVar("F", bound=Callable[..., Any])
REASON_WIDTH = 70


def _time(_: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as error:
        raise click.BadParameter(str(error), param=param) from None


def filter_options(command: F) -> F:
    """The filters every subcommand shares."""
    options = [
        click.option("--destination", help="Only letters of this destination (e.g. kela)."),
        click.option(
            "--stage",
            type=click.Choice([s.value for s in DeadLetterStage]),
            help="Only letters of this stage.",
        ),
        click.option("--type", "event_type", help="Only this event type (short name)."),
        click.option(
            "--since",
            callback=_time,
            help="Dead-lettered at or after: ISO date/time (UTC) or a duration ago (30m, 2h, 7d).",
        ),
        click.option("--until", callback=_time, help="Dead-lettered at or before (as --since)."),
        click.option("--limit", type=click.IntRange(min=1), help="At most this many letters."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _filter(
    destination: str | None,
    stage: str | None,
    event_type: str | None,
    since: datetime | None,
    until: datetime | None,
    statuses: frozenset[LetterStatus],
) -> LetterFilter:
    return LetterFilter(
        destination=destination,
        stage=DeadLetterStage(stage) if stage else None,
        event_type=event_type,
        since=since,
        until=until,
        statuses=statuses,
    )


def _statuses(status: str) -> frozenset[LetterStatus]:
    return frozenset(LetterStatus) if status == "all" else frozenset({LetterStatus(status)})


@click.group("dlq")
def dlq() -> None:
    """Dead letters: list, show, replay after a fix, purge (mark resolved).

    Kafka cannot delete a single record: replay and purge write marker records to the
    dead-letter topic that list and replay honour; the letters themselves stay until the
    topic's retention (30 days) removes them.
    """


@dlq.command("list")
@filter_options
@click.option(
    "--status",
    type=click.Choice([*(s.value for s in LetterStatus), "all"]),
    default=LetterStatus.PENDING.value,
    show_default=True,
    help="Which letters: pending ones need attention; replayed and purged are resolved.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_command(
    destination: str | None,
    stage: str | None,
    event_type: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int | None,
    status: str,
    as_json: bool,
) -> None:
    """A table of dead letters: position (partition/offset), stage, destination, type, event
    id, attempts, reason."""
    settings = get_settings()
    configure_logging(settings)
    letters = run_kafka_command(settings, read_letters(settings))
    wanted = _filter(destination, stage, event_type, since, until, _statuses(status))
    chosen, _ = select(letters, [], wanted, limit)
    if as_json:
        for letter in chosen:
            click.echo(json.dumps(letter.summary(), ensure_ascii=False))
        return
    click.echo(letters_table(chosen, with_status=status != LetterStatus.PENDING.value))
    click.echo(f"{len(chosen)} letter(s) of {len(letters)} in {settings.topic_dead_letter}")


def letters_table(letters: list[StoredLetter], *, with_status: bool = False) -> str:
    header = ["offset", "stage", "destination", "type", "event id", "attempts", "reason"]
    if with_status:
        header.insert(1, "status")
    rows = []
    for letter in letters:
        summary = letter.summary()
        reason = str(summary["reason"] or "")
        if len(reason) > REASON_WIDTH:
            reason = reason[: REASON_WIDTH - 1] + "…"
        row = [
            letter.position,
            letter.stage,
            summary["destination"] or "-",
            summary["event_type"] or "-",
            summary["event_id"] or "-",
            str(summary["attempts"] or "-"),
            reason,
        ]
        if with_status:
            row.insert(1, letter.status.value)
        rows.append(row)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join([*(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)), row[-1]])
        for row in [header, *rows]
    )


@dlq.command("show")
@click.argument("letter")
@click.option("--json", "as_json", is_flag=True, help="As JSON.")
def show_command(letter: str, as_json: bool) -> None:
    """One letter (by PARTITION/OFFSET or event id) with all its headers.

    The value is shown only as its fields of no pii class (the router's projection with no
    grant); a letter that cannot be decoded shows no value at all.
    """
    settings = get_settings()
    configure_logging(settings)
    letters = run_kafka_command(settings, read_letters(settings))
    found = find(letters, letter)
    if not found:
        raise click.ClickException(f"no dead letter {letter} in {settings.topic_dead_letter}")
    shown = [_shown(settings, s) for s in found]
    if as_json:
        click.echo(json.dumps(shown if len(shown) > 1 else shown[0], indent=2, ensure_ascii=False))
        return
    for item in shown:
        click.echo(f"dead letter {item['position']} ({item['status']})")
        for key in ("dead_lettered_at", "key", "marked_at", "mark_note"):
            if item.get(key):
                click.echo(f"  {key}: {item[key]}")
        click.echo("  headers:")
        for key, value in item["headers"]:
            click.echo(f"    {key}: {value}")
        click.echo(f"  value ({item['value_note']}):")
        if item["value"] is not None:
            for line in json.dumps(item["value"], indent=2, ensure_ascii=False).splitlines():
                click.echo(f"    {line}")


def _shown(settings: HubSettings, letter: StoredLetter) -> dict[str, Any]:
    view, note = safe_view(settings, letter)
    return {
        "position": letter.position,
        "status": letter.status.value,
        "dead_lettered_at": letter.timestamp.isoformat(),
        "key": redact_text(letter.key.decode("utf-8", "replace")) if letter.key else None,
        "marked_at": letter.marked_at,
        "mark_note": letter.mark_note,
        "headers": [[k, redact_text(v.decode("utf-8", "replace"))] for k, v in letter.headers],
        "value": view,
        "value_note": note,
    }


def _chosen(
    settings: HubSettings,
    references: tuple[str, ...],
    wanted: LetterFilter,
    limit: int | None,
    everything: bool,
) -> list[StoredLetter]:
    if not references and not wanted.narrows and not everything:
        raise click.UsageError(
            "name letters (PARTITION/OFFSET or event id), give a filter, or --all for every "
            "pending letter"
        )
    letters = run_kafka_command(settings, read_letters(settings))
    chosen, unknown = select(letters, list(references), wanted, limit)
    if unknown:
        raise click.ClickException(
            f"no dead letter {', '.join(unknown)} in {settings.topic_dead_letter}"
        )
    named = {s.position for r in references for s in find(letters, r)}
    if references:
        # named letters that the status filter left out are reported, not silently ignored
        chosen_positions = {s.position for s in chosen}
        for position in sorted(named - chosen_positions):
            state = next(s for s in letters if s.position == position)
            click.echo(f"skipped {position}: already {state.status.value}", err=True)
    return chosen


@dlq.command("replay")
@click.argument("letters", nargs=-1)
@filter_options
@click.option(
    "--all", "everything", is_flag=True, help="Every pending letter (with filters: all matching)."
)
@click.option("--dry-run", is_flag=True, help="Say what would be replayed; write nothing.")
def replay_command(
    letters: tuple[str, ...],
    destination: str | None,
    stage: str | None,
    event_type: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int | None,
    everything: bool,
    dry_run: bool,
) -> None:
    """Send letters again after a fix: deliver-stage ones to their outbox (same event id, so
    receivers dedupe), decode/route-stage ones through the router's routing into the outboxes.

    Outbox records and "replayed" markers are written in one transaction; a letter already
    replayed or purged is skipped, so replaying twice never duplicates. Exit 1 when some letter
    could not be replayed (it stays pending).
    """
    settings = get_settings()
    configure_logging(settings)
    wanted = _filter(
        destination, stage, event_type, since, until, frozenset({LetterStatus.PENDING})
    )
    chosen = _chosen(settings, letters, wanted, limit, everything)
    report = run_kafka_command(settings, replay(settings, chosen, dry_run=dry_run))
    verb = "would replay" if dry_run else "replayed"
    for letter, topics in report.replayed:
        click.echo(
            f"{verb} {letter.position} ({letter.stage}, {letter.event_id}) to {', '.join(topics)}"
        )
    for letter, why in report.skipped:
        click.echo(
            f"skipped {letter.position} ({letter.stage}, {letter.event_id}): {why}", err=True
        )
    click.echo(f"{len(report.replayed)} {verb}, {len(report.skipped)} skipped")
    if any(not why.startswith("already ") for _, why in report.skipped):
        sys.exit(1)


@dlq.command("purge")
@click.argument("letters", nargs=-1)
@filter_options
@click.option(
    "--all", "everything", is_flag=True, help="Every pending letter (with filters: all matching)."
)
@click.option("--note", default="", help="Why (kept in the marker, e.g. a ticket number).")
def purge_command(
    letters: tuple[str, ...],
    destination: str | None,
    stage: str | None,
    event_type: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int | None,
    everything: bool,
    note: str,
) -> None:
    """Mark letters resolved: list no longer shows them, replay skips them.

    Kafka cannot delete single records: a "purged" marker record is written to the dead-letter
    topic beside each letter; the letter itself stays until the topic's retention removes it.
    """
    settings = get_settings()
    configure_logging(settings)
    wanted = _filter(
        destination,
        stage,
        event_type,
        since,
        until,
        frozenset({LetterStatus.PENDING, LetterStatus.REPLAYED}),
    )
    chosen = _chosen(settings, letters, wanted, limit, everything)
    purged, skipped = run_kafka_command(settings, purge(settings, chosen, note))
    for letter in purged:
        click.echo(f"purged {letter.position} ({letter.stage}, {letter.event_id})")
    for letter, why in skipped:
        click.echo(f"skipped {letter.position}: {why}", err=True)
    click.echo(f"{len(purged)} purged, {len(skipped)} skipped")
