"""``hub broker start|stop|status``: the local single-node Kafka for development and demos."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from hub.broker.local import BrokerError, LocalKafka
from hub.logging import configure_logging
from hub.settings import get_settings


def _local_kafka() -> LocalKafka:
    settings = get_settings()
    configure_logging(settings)
    try:
        return LocalKafka(settings, progress=click.echo)
    except BrokerError as exc:  # security settings the local broker cannot serve
        raise click.ClickException(str(exc)) from exc


@click.group()
def broker() -> None:
    """Run a local single-node Apache Kafka (KRaft) from Maven Central jars."""


@broker.command()
@click.option(
    "--timeout",
    type=float,
    default=120.0,
    show_default=True,
    help="Seconds to wait for the broker to answer (the first-run jar download is not counted).",
)
def start(timeout: float) -> None:
    """Start the broker (fetching its jars on first run) and wait until it answers."""
    kafka = _local_kafka()
    try:
        result = kafka.start(timeout_s=timeout)
    except BrokerError as exc:
        raise click.ClickException(str(exc)) from exc
    state = "already running" if result.already_running else "started"
    click.echo(
        f"Kafka {kafka.version} {state} (pid {result.pid}) in {result.elapsed_s:.1f} s; "
        f"bootstrap {result.bootstrap}"
    )
    configured = get_settings().kafka_bootstrap
    if configured != result.bootstrap:
        click.echo(f"note: HUB_KAFKA_BOOTSTRAP is {configured}, not this broker", err=True)


@broker.command()
@click.option(
    "--timeout", type=float, default=30.0, show_default=True, help="Seconds before SIGKILL."
)
@click.option("--wipe-data", is_flag=True, help="Also delete all topics and the cluster id.")
def stop(timeout: float, wipe_data: bool) -> None:
    """Stop the broker with a clean shutdown."""
    kafka = _local_kafka()
    try:
        was_running = kafka.stop(timeout_s=timeout)
        if wipe_data:
            kafka.wipe_data()
    except BrokerError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo("Kafka stopped" if was_running else "Kafka was not running")
    if wipe_data:
        click.echo(f"Deleted {kafka.data_dir}")


@broker.command()
def status() -> None:
    """Show whether the broker runs and answers, and where its data and logs are."""
    kafka = _local_kafka()
    info = kafka.status()
    table = Table(show_header=False, box=None)
    table.add_row("state", "[green]running[/]" if info.running else "[red]stopped[/]")
    if info.running:
        table.add_row("answering", "yes" if info.answering else "[yellow]no[/]")
        table.add_row("pid", str(info.pid))
    table.add_row("bootstrap", info.bootstrap)
    table.add_row("version", info.version)
    table.add_row("data dir", str(info.data_dir))
    table.add_row("log", str(info.log_file))
    Console().print(table)
