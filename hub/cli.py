"""The ``hub`` command: one entry point for everything a person runs."""

from __future__ import annotations

import click

from connectors.simulator.cli import simulate_command
from hub.broker.cli import broker
from hub.events.cli import schemas
from hub.inspect.cli import tail_command
from hub.kafka.cli import topics


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="te-hub")
def cli() -> None:
    """TE integration hub: customer-path events on Kafka."""


cli.add_command(broker)
cli.add_command(topics)
cli.add_command(schemas)
cli.add_command(simulate_command)
cli.add_command(tail_command)


def main() -> None:
    cli()
