"""``hub topics create|describe``: the hub's topics on the configured Kafka."""

from __future__ import annotations

import click
from rich import box
from rich.console import Console
from rich.table import Table

from hub.kafka.cli_support import run_kafka_command
from hub.kafka.topics import describe_topics, ensure_topics, topic_specs
from hub.logging import configure_logging
from hub.settings import get_settings


@click.group()
def topics() -> None:
    """Create and inspect the hub's topics (customer-path log, dead letters)."""


@topics.command()
def create() -> None:
    """Create missing hub topics with their specs; existing topics are left as they are."""
    settings = get_settings()
    configure_logging(settings)
    created = run_kafka_command(settings, ensure_topics(settings))
    for spec in topic_specs(settings):
        state = "created" if spec.name in created else "exists"
        click.echo(
            f"{state:>8}  {spec.name}  partitions={spec.partitions} "
            f"replication={spec.replication_factor}"
        )


@topics.command()
def describe() -> None:
    """Show partitions, replication and key configs of the hub topics on the broker."""
    settings = get_settings()
    configure_logging(settings)
    found = {t.name: t for t in run_kafka_command(settings, describe_topics(settings))}
    table = Table(title=f"Hub topics on {settings.kafka_bootstrap}", box=box.SIMPLE_HEAD)
    table.add_column("topic", no_wrap=True)
    table.add_column("parts", justify="right")
    table.add_column("rf", justify="right")
    table.add_column("config", no_wrap=True)
    table.add_column("value", no_wrap=True)
    for spec in topic_specs(settings):
        topic = found.get(spec.name)
        if topic is None:
            table.add_row(spec.name, "[red]missing[/]", "", "", "", end_section=True)
            continue
        rows = sorted(topic.configs.items()) or [("", "")]
        for index, (key, value) in enumerate(rows):
            first = index == 0
            table.add_row(
                topic.name if first else "",
                str(topic.partitions) if first else "",
                str(topic.replication_factor) if first else "",
                key,
                value,
                end_section=index == len(rows) - 1,
            )
    console = Console()
    console.print(table)
    for spec in topic_specs(settings):
        console.print(f"[bold]{spec.name}[/]: {spec.purpose}", highlight=False)
