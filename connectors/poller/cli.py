"""``hub poll``: pull a register's change feed over X-Road and publish it to the event log."""

from __future__ import annotations

import asyncio
import signal

import click

from connectors.poller.cursor import CursorFileError
from connectors.poller.poller import PollStats, RegisterPoller
from connectors.xroad.client import XRoadClient, XRoadMisconfigured, XRoadService
from hub.kafka.cli_support import run_kafka_command
from hub.logging import configure_logging, get_logger
from hub.privacy.kek import KekError
from hub.settings import HubSettings, get_settings
from hub.sink.kafka import open_kafka_sink, writer_settings


async def _poll(
    settings: HubSettings,
    client: XRoadClient,
    service: XRoadService,
    max_pages: int | None,
    until_idle: bool,
) -> PollStats:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # SIGTERM (a pod being stopped) ends the run between pages, never between ack and cursor.
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # A transactional id of this service's poller: never the API's (it would fence hub serve).
    sink_settings = writer_settings(settings, "poll", service.id)
    async with client, open_kafka_sink(sink_settings) as sink:
        poller = RegisterPoller.from_settings(settings, client=client, service=service, sink=sink)
        return await poller.run(max_pages=max_pages, until_idle=until_idle, stop_event=stop)


@click.command("poll")
@click.option(
    "--service",
    "service_id",
    metavar="INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE",
    default=None,
    help="X-Road service of the change feed (default: HUB_POLLER_SERVICE).",
)
@click.option("--once", is_flag=True, help="Publish one page, then exit.")
@click.option("--until-idle", is_flag=True, help="Publish until the feed has nothing more.")
def poll_command(service_id: str | None, once: bool, until_idle: bool) -> None:
    """Poll a register's change feed over X-Road and publish its events to Kafka.

    Without --once or --until-idle it runs until SIGINT/SIGTERM, pausing HUB_POLLER_INTERVAL_S
    whenever the feed is drained. It resumes from the cursor committed to Kafka with the events
    (HUB_TOPIC_SOURCE_POSITIONS); a cursor file of an earlier version is read once to migrate.
    """
    settings = get_settings()
    configure_logging(settings)
    for warning in settings.development_warnings():
        get_logger(__name__).warning(warning)
    if once and until_idle:
        raise click.UsageError("--once and --until-idle exclude each other")
    text = service_id or settings.poller_service
    if not text:
        raise click.UsageError("name the change feed with --service or HUB_POLLER_SERVICE")
    try:
        service = XRoadService.parse(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--service") from exc
    try:
        client = XRoadClient.from_settings(settings)
    except (ValueError, OSError) as exc:  # OSError: unreadable certificate, key or CA bundle
        raise click.ClickException(f"X-Road client: {exc}") from exc
    try:
        stats = run_kafka_command(
            settings, _poll(settings, client, service, 1 if once else None, until_idle)
        )
    except (XRoadMisconfigured, CursorFileError, KekError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"{service.id}: {stats.pages} page(s), {stats.items} item(s), {stats.written} event(s) "
        f"written ({stats.corrections} correction(s)), {stats.duplicates} already in the log, "
        f"{stats.rejected} rejected, "
        f"{stats.errors} error(s) retried"
    )
