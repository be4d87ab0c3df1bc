"""``hub audit verify`` and ``hub audit person``: the disclosure log for auditors and for people."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from hub.delivery.audit import person_disclosures, read_anchors, verify_chains
from hub.identity import InvalidIdentityCode, Pseudonymizer
from hub.kafka.cli_support import run_kafka_command
from hub.logging import configure_logging
from hub.settings import get_settings


@click.group("audit")
def audit() -> None:
    """The disclosure log: verify its hash chains; list what was disclosed about a person."""


@audit.command("verify")
@click.option(
    "--anchors",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Heads noted earlier (--write-anchors): each must still be there, unchanged "
    "(detects the removal of a chain's newest entries).",
)
@click.option(
    "--write-anchors",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write every chain's head (seq, hash) to this JSON file, to check against later.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def verify_command(anchors: Path | None, write_anchors: Path | None, as_json: bool) -> None:
    """Walk every hash chain of the disclosure log; exit 1 naming each broken entry.

    An entry is named by its chain (<destination>/<outbox partition>), seq and its place in
    the disclosures topic (partition, offset).
    """
    settings = get_settings()
    configure_logging(settings)
    try:
        expected = read_anchors(anchors) if anchors is not None else None
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    report = run_kafka_command(settings, verify_chains(settings, expected))
    if write_anchors is not None:
        write_anchors.write_text(json.dumps(report.heads(), indent=2) + "\n", "utf-8")
    if as_json:
        click.echo(
            json.dumps(
                {
                    "ok": report.ok,
                    "chains": report.heads(),
                    "entries": report.entries,
                    "problems": [
                        {
                            "chain": p.chain,
                            "seq": p.seq,
                            "partition": p.partition,
                            "offset": p.offset,
                            "problem": p.problem,
                        }
                        for p in report.problems
                    ],
                },
                indent=2,
            )
        )
    else:
        for name, state in sorted(report.chains.items()):
            click.echo(
                f"chain {name}: {state.entries} entries, head seq {state.seq} {state.hash[:16]}"
            )
        for problem in report.problems:
            click.echo(f"BROKEN: {problem}", err=True)
    if not report.ok:
        click.echo(
            f"disclosure log {settings.topic_disclosures}: {len(report.problems)} problem(s) "
            f"in {len({p.chain for p in report.problems})} chain(s)",
            err=True,
        )
        sys.exit(1)
    if not as_json:
        click.echo(
            f"ok: {len(report.chains)} chain(s), {report.entries} entries in "
            f"{settings.topic_disclosures}"
        )


@audit.command("person")
@click.argument("identity_code", metavar="IDENTITY_CODE")
@click.option("--json", "as_json", is_flag=True, help="One JSON array of the entries.")
def person_command(identity_code: str, as_json: bool) -> None:
    """To whom a person's data went, when, which fields, on what legal basis (GDPR art. 15).

    IDENTITY_CODE is the person's identity code, or - to read it from standard input (so it
    stays out of the shell history and the process list). It is turned into the person
    pseudonym and never printed or logged.
    """
    settings = get_settings()
    configure_logging(settings)
    if identity_code == "-":
        identity_code = sys.stdin.readline()
    try:
        pseudonym = Pseudonymizer.from_settings(settings).pseudonym(identity_code)
    except InvalidIdentityCode as error:
        raise click.BadParameter(str(error), param_hint="IDENTITY_CODE") from None
    del identity_code
    entries = run_kafka_command(settings, person_disclosures(settings, pseudonym))
    if as_json:
        click.echo(json.dumps(entries, indent=2, ensure_ascii=False))
        return
    click.echo(f"person {pseudonym}: {len(entries)} disclosure(s)")
    if entries:
        click.echo(person_table(entries))


def _recipient(entry: dict[str, Any]) -> str:
    endpoint = entry.get("endpoint")
    return f"{entry['destination']}/{endpoint}" if endpoint else str(entry["destination"])


def _basis(entry: dict[str, Any]) -> str:
    basis = entry.get("legal_basis") or {}
    return "; ".join(f"{k}: {v}" for k, v in sorted(basis.items())) or "-"


def person_table(entries: list[dict[str, Any]]) -> str:
    """When, to whom, which event, status, fields and legal basis; one line per delivery."""
    header = ("when", "to", "event type", "status", "attempts", "fields", "legal basis")
    rows = [
        (
            str(e.get("last_attempt_at", "")),
            _recipient(e),
            str(e.get("event_type", "")),
            str(e.get("status", "")),
            str(e.get("attempts", "")),
            ", ".join(e.get("fields") or ()) or "-",
            _basis(e),
        )
        for e in entries
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    lines = [
        "  ".join([*(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)), row[-1]])
        for row in [header, *rows]
    ]
    return "\n".join(lines)
