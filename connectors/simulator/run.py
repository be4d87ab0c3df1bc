"""Run a simulation against Kafka: generate, publish with acks=all, summarise what was acked.

Every event's personal fields are sealed with the person's data key before it is sent
(:class:`~hub.kafka.publisher.EventPublisher`, keys from the person-keys topic, one call per
window of events): the simulated log holds no name, identity code or contact in clear.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import structlog
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from connectors.simulator.config import SimulationConfig
from connectors.simulator.paths import in_time_order, simulate
from hub.codes import municipalities
from hub.identity import Pseudonymizer
from hub.kafka.publisher import open_publisher
from hub.kafka.topics import ensure_topics
from hub.settings import HubSettings

log = structlog.get_logger(__name__)


@dataclass
class PublishSummary:
    by_type: Counter[str] = field(default_factory=Counter)
    by_municipality: Counter[str] = field(default_factory=Counter)
    jobseekers: int = 0
    #: Of the events, corrections (retractions included) and retractions.
    corrections: int = 0
    retractions: int = 0

    @property
    def total(self) -> int:
        return sum(self.by_type.values())


async def run_simulation(
    settings: HubSettings, config: SimulationConfig, console: Console | None = None
) -> PublishSummary:
    console = console or Console(stderr=True)
    for warning in settings.development_warnings():
        log.warning(warning)
    created = await ensure_topics(settings)
    if created:
        console.print(f"created topics: {', '.join(created)}")
    pseudonymizer = Pseudonymizer.from_settings(settings)
    summary = PublishSummary(jobseekers=config.jobseekers)
    with _progress(console) as progress:
        generating = progress.add_task("generating customer paths", total=config.jobseekers)
        paths = []
        for path in simulate(config, pseudonymizer):
            paths.append(path)
            progress.advance(generating)
        total = sum(len(path) for path in paths)
        publishing = progress.add_task(
            f"publishing to {settings.topic_customer_path} (acks=all)", total=total
        )
        async with open_publisher(settings) as publisher:
            async for event, _metadata in publisher.publish_all(in_time_order(paths)):
                summary.by_type[event.event_type] += 1
                summary.by_municipality[event.envelope.municipality_code] += 1
                summary.corrections += event.envelope.corrects_event_id is not None
                summary.retractions += event.envelope.retracted
                progress.advance(publishing)
    log.info(
        "simulation published",
        events=summary.total,
        jobseekers=config.jobseekers,
        corrections=summary.corrections,
    )
    return summary


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def print_summary(summary: PublishSummary, console: Console, top: int = 25) -> None:
    by_type = Table(title=f"Events published per type ({summary.jobseekers} jobseekers)")
    by_type.add_column("event type")
    by_type.add_column("events", justify="right")
    for name, count in summary.by_type.most_common():
        by_type.add_row(name, str(count))
    by_type.add_row("[bold]total[/bold]", f"[bold]{summary.total}[/bold]")
    if summary.corrections:
        by_type.add_row("of which corrections", str(summary.corrections - summary.retractions))
        by_type.add_row("of which retractions", str(summary.retractions))
    console.print(by_type)

    names = municipalities()
    by_municipality = Table(
        title=f"Events per municipality ({len(summary.by_municipality)} municipalities, "
        f"top {min(top, len(summary.by_municipality))})"
    )
    for column in ("code", "municipality", "events"):
        by_municipality.add_column(column, justify="right" if column == "events" else "left")
    for code, count in summary.by_municipality.most_common(top):
        by_municipality.add_row(code, names[code].name_fi, str(count))
    console.print(by_municipality)
