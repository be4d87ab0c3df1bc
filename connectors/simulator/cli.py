"""``hub simulate``: publish realistic customer paths for N jobseekers to the local log."""

from __future__ import annotations

from datetime import date, datetime

import click
from pydantic import ValidationError
from rich.console import Console

from connectors.simulator.config import SimulationConfig
from connectors.simulator.run import print_summary, run_simulation
from hub.kafka.cli_support import run_kafka_command
from hub.logging import configure_logging
from hub.privacy.kek import KekError
from hub.settings import get_settings
from hub.sink import SinkUnavailable


@click.command("simulate")
@click.option("--jobseekers", type=int, default=300, show_default=True, help="People to simulate.")
@click.option("--seed", type=int, default=7, show_default=True, help="Same seed, same events.")
@click.option(
    "--start",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="First registration day (default 2025-11-03, so 1.1.2026 rule changes are crossed).",
)
@click.option("--days", type=int, default=120, show_default=True, help="Simulated days.")
@click.option("--area", default=None, help="Only municipalities of this employment area.")
@click.option(
    "--correction-share",
    type=float,
    default=0.0,
    show_default=True,
    help="Share of interviews, conversations and job offers re-sent days later as a "
    "correction (wrong channel or day) or, for an offer, a retraction.",
)
def simulate_command(
    jobseekers: int,
    seed: int,
    start: datetime | None,
    days: int,
    area: str | None,
    correction_share: float,
) -> None:
    """Generate customer paths and publish them to Kafka keyed by person pseudonym."""
    settings = get_settings()
    configure_logging(settings)
    try:
        options: dict[str, object] = {
            "jobseekers": jobseekers,
            "seed": seed,
            "days": days,
            "correction_share": correction_share,
        }
        if start is not None:
            options["start"] = date(start.year, start.month, start.day)
        config = SimulationConfig.model_validate({**options, "area": area})
    except ValidationError as error:
        raise click.UsageError(
            "; ".join(f"--{str(e['loc'][0]).replace('_', '-')}: {e['msg']}" for e in error.errors())
        ) from error
    console = Console()
    try:
        summary = run_kafka_command(
            settings, run_simulation(settings, config, Console(stderr=True))
        )
    except (SinkUnavailable, KekError) as error:  # keys not had: nothing of that window sent
        raise click.ClickException(f"cannot seal the events' personal fields: {error}") from error
    print_summary(summary, console)
