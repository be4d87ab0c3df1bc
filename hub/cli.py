"""The ``hub`` command: one entry point for everything a person runs."""

from __future__ import annotations

import sys

import click
from pydantic import ValidationError

from connectors.batch.cli import import_command
from connectors.poller.cli import poll_command
from connectors.rest_api.cli import clients
from connectors.rest_api.serve import serve_command
from connectors.simulator.cli import simulate_command
from hub.broker.cli import broker
from hub.events.cli import schemas
from hub.inspect.cli import tail_command
from hub.kafka.cli import topics
from hub.settings import HubSettings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="te-hub")
def cli() -> None:
    """TE integration hub: customer-path events on Kafka."""


cli.add_command(broker)
cli.add_command(topics)
cli.add_command(schemas)
cli.add_command(simulate_command)
cli.add_command(tail_command)
cli.add_command(poll_command)
cli.add_command(import_command)
cli.add_command(serve_command)
cli.add_command(clients)


def main() -> None:
    try:
        cli()
    except ValidationError as error:
        if error.title != HubSettings.__name__:
            raise
        problems = "; ".join(
            f"HUB_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in error.errors()
        )
        click.echo(f"Error: invalid configuration: {problems}", err=True)
        sys.exit(2)
