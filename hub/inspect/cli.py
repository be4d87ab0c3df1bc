"""``hub tail``: print decoded events of the customer-path log as JSON lines."""

from __future__ import annotations

import sys

import click

from hub.inspect.tail import read_log
from hub.kafka.cli_support import run_kafka_command
from hub.logging import configure_logging
from hub.serde import build_serializer, default_catalog
from hub.settings import get_settings


@click.command("tail")
@click.option("--from-beginning", is_flag=True, help="Start at the oldest retained event.")
@click.option("--limit", type=int, default=None, help="Stop after this many records.")
@click.option("--follow", is_flag=True, help="Keep waiting for new events.")
@click.option(
    "--reveal",
    is_flag=True,
    help="Show fields the schemas mark sensitive (pii) and identity codes anywhere else.",
)
def tail_command(from_beginning: bool, limit: int | None, follow: bool, reveal: bool) -> None:
    """One JSON line per record: position, key, headers and the decoded event."""
    settings = get_settings()
    configure_logging(settings)
    failed = run_kafka_command(settings, _tail(from_beginning, limit, follow, reveal))
    if failed:
        click.echo(f"{failed} record(s) could not be decoded", err=True)
        sys.exit(1)


async def _tail(from_beginning: bool, limit: int | None, follow: bool, reveal: bool) -> int:
    settings = get_settings()
    failed = 0
    entries = read_log(
        settings,
        build_serializer(settings),
        default_catalog(),
        from_beginning=from_beginning,
        limit=limit,
        follow=follow,
        reveal=reveal,
    )
    async for entry in entries:
        failed += entry.error is not None
        sys.stdout.write(entry.to_json() + "\n")
    return failed
