"""``hub route``: run one router of the deployment's router group (see :mod:`hub.routing.router`).

Run as many as the log has partitions to spare, each with its own stable
``HUB_ROUTER_TRANSACTIONAL_ID`` (in Kubernetes the StatefulSet pod name): they share the
partitions as one consumer group. SIGTERM finishes the open batch (commit, or abort) and
leaves; a fatal Kafka error (this transactional id fenced by a newer process) exits with status
3 so the supervisor starts a fresh process.
"""

from __future__ import annotations

import os
import sys

import click
from prometheus_client import start_http_server

from hub.kafka.cli_support import run_kafka_command
from hub.logging import configure_logging, get_logger, redact_text
from hub.routing.router import (
    EXIT_FATAL,
    RouterFatal,
    ensure_router_topics,
    run_router,
    stop_on_signals,
)
from hub.routing.routes import RoutesError, load_routes
from hub.settings import get_settings


@click.command("route")
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve Prometheus metrics (routed per destination, dead letters per stage, lag per "
    "partition) on this port, at HUB_API_HOST.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 100_000),
    default=500,
    show_default=True,
    help="Most log records in one transaction.",
)
@click.option(
    "--progress-every",
    type=click.FloatRange(0.1),
    default=10.0,
    show_default=True,
    help="Seconds between progress log lines.",
)
@click.option(
    "--until-idle",
    is_flag=True,
    help="Exit once every partition this router owns is routed to its end (tests, replays).",
)
def route_command(
    metrics_port: int | None, batch_size: int, progress_every: float, until_idle: bool
) -> None:
    """Route the customer-path log to the destinations' outbox topics, exactly once.

    Reads the routes file (HUB_ROUTES_FILE, or the packaged default), creates the outbox topics
    that are missing, follows the person-keys topic when a route grants personal fields to a
    receiver (a forgotten person's record for it is a dead letter), joins the router group and
    routes until SIGINT/SIGTERM.
    """
    settings = get_settings()
    configure_logging(settings)
    log = get_logger(__name__)
    for warning in settings.development_warnings():
        log.warning(warning)
    try:
        config = load_routes(settings)
    except (RoutesError, OSError) as error:
        raise click.ClickException(f"routes: {error}") from error
    created = run_kafka_command(settings, ensure_router_topics(settings, config))
    if created:
        click.echo(f"created topics: {', '.join(created)}", err=True)
    if metrics_port is not None:
        start_http_server(metrics_port, addr=settings.api_host)
    stop = stop_on_signals()
    try:
        stats = run_router(
            settings,
            config,
            stop=stop,
            until_idle=until_idle,
            batch_size=batch_size,
            progress_every_s=progress_every,
            create_topics=False,
        )
    except RouterFatal as error:
        log.error("router.fatal", error=str(error))
        click.echo(redact_text(f"Error: router stopped: {error}"), err=True)
        sys.stdout.flush()
        sys.stderr.flush()
        # Not sys.exit: a librdkafka call that never returned (a commit cut off by a broker
        # going away) would hold the interpreter's shutdown; the broker aborts what is open.
        os._exit(EXIT_FATAL)
    routed = ", ".join(f"{d} {n}" for d, n in sorted(stats.routed.items())) or "none"
    dead = ", ".join(f"{s} {n}" for s, n in sorted(stats.dead_letters.items())) or "none"
    click.echo(
        f"routed {stats.records} log record(s) in {stats.transactions} transaction(s): "
        f"{routed}; dead letters: {dead}; {stats.aborted} batch(es) aborted and retried"
    )
