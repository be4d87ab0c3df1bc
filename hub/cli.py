"""The ``hub`` command: one entry point for everything a person runs."""

from __future__ import annotations

import click

from hub.broker.cli import broker


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="te-hub")
def cli() -> None:
    """TE integration hub: customer-path events on Kafka."""


cli.add_command(broker)


def main() -> None:
    cli()
