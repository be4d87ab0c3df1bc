"""``hub deliver``: the delivery workers of one or more destinations, in one process.

Each destination named (``--destination``, repeatable; ``--all``: every destination that has a
delivery worker, i.e. not ``transport = "outbox"``) gets its own :class:`DeliveryWorker` and
consumer group; they share one X-Road client, one disclosure log and one metrics registry, and
each has an HTTP connection pool of its own. The transport of a destination comes from the
routes file: webhook (:class:`~connectors.webhook.transport.WebhookTransport`) or X-Road REST
(:class:`~connectors.xroad.transport.XRoadTransport`).

Personal fields: the outbox holds them as the log does (sealed with the person's data key).
The process follows the person-keys topic (:class:`~hub.privacy.keystore.KafkaPersonKeys`,
one for all its workers) when a destination named gets personal fields; a worker opens exactly
the granted sealed fields of a record in memory, right before it builds the body.

SIGTERM or SIGINT: every worker stops taking records, waits up to ``--drain`` seconds for the
requests in flight, commits what is settled and the command exits 0, printing one summary line
per destination (delivered, duplicates the receivers reported, retried, dead letters).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import Any

import click
import httpx
from prometheus_client import start_http_server
from standardwebhooks.webhooks import Webhook

from connectors.webhook.transport import WebhookTransport, http_client
from connectors.xroad.client import XRoadClient, XRoadService
from connectors.xroad.transport import XRoadTransport
from hub.delivery.disclosure import DisclosureLog
from hub.delivery.metrics import DeliveryMetrics
from hub.delivery.schedule import RetrySchedule
from hub.delivery.transport import Transport
from hub.delivery.worker import (
    DeliveryFatal,
    DeliveryStats,
    DeliveryTarget,
    DeliveryWorker,
    RoutedDisclosures,
)
from hub.kafka.cli_support import run_kafka_command
from hub.kafka.topics import ensure_topics, outbox_spec
from hub.logging import configure_logging, get_logger
from hub.routing.outbox import OutboxCodec
from hub.routing.routes import Destination, RoutesConfig, RoutesError, load_routes
from hub.routing.routes import Transport as RouteTransport
from hub.settings import HubSettings, get_settings

log = get_logger(__name__)


def _transport_factory(
    settings: HubSettings,
    destination: Destination,
    http: httpx.AsyncClient,
    xroad: Callable[[], XRoadClient],
) -> Callable[[str | None], Transport]:
    def transport_for(key: str | None) -> Transport:
        endpoint = destination.endpoint_for(key)  # KeyError: no such endpoint
        if destination.transport is RouteTransport.XROAD:
            assert endpoint.xroad_service is not None
            return XRoadTransport(xroad(), XRoadService.parse(endpoint.xroad_service))
        assert endpoint.url is not None
        return WebhookTransport(
            str(endpoint.url),
            endpoint.signing_secret(settings),
            http,
            deadline_s=settings.delivery_timeout_s,
        )

    return transport_for


def _gets_personal_fields(config: RoutesConfig, names: list[str]) -> bool:
    """Whether a route grants a pii class to one of the destinations (its workers open keys)."""
    return any(
        route.grants and name in config.destinations_of(route)
        for route in config.routes
        for name in names
    )


def _open_keys(settings: HubSettings) -> Any:
    """The person-keys topic followed for this process (read to its end), started."""
    from hub.routing.router import open_person_keys_for

    return open_person_keys_for(settings)


def _check_secrets(settings: HubSettings, destination: Destination) -> None:
    """In production every endpoint's secret must be readable and usable before the first
    record: a missing one, or one the Standard Webhooks signer refuses (``whsec_`` alone, not
    base64), is a start-up error naming the endpoint and where its secret comes from, never
    the secret, not a stream of failures (or a crash) at the first record."""
    if settings.environment != "production" or destination.transport is not RouteTransport.WEBHOOK:
        return
    named = [(None, destination.endpoint), *(destination.endpoints or {}).items()]
    for key, endpoint in named:
        if endpoint is None:
            continue
        secret = endpoint.signing_secret(settings)
        try:
            Webhook(secret)
        except Exception as exc:  # the signer's errors quote nothing we may print
            where = endpoint.secret_env or endpoint.secret_file or "its secret"
            label = destination.name if key is None else f"{destination.name}/{key}"
            raise RoutesError(
                f"endpoint {label}: the signing secret from {where} is not a usable "
                f"whsec_ secret ({type(exc).__name__})"
            ) from None


async def _deliver(
    settings: HubSettings,
    config: RoutesConfig,
    names: list[str],
    metrics_port: int | None,
    instance_id: str | None,
    drain_s: float,
    progress_s: float,
    commit_s: float = 1.0,
) -> dict[str, DeliveryStats]:
    await ensure_topics(settings, extra=[outbox_spec(settings, name) for name in names])
    metrics = DeliveryMetrics()
    if metrics_port is not None:
        start_http_server(metrics_port, addr=settings.api_host, registry=metrics.registry)
        log.info("delivery.metrics", url=f"http://{settings.api_host}:{metrics_port}/metrics")
    codec = OutboxCodec.for_routes(config)
    clients: list[httpx.AsyncClient] = []
    xroad_client: list[XRoadClient] = []

    def xroad() -> XRoadClient:
        if not xroad_client:
            xroad_client.append(XRoadClient.from_settings(settings))
        return xroad_client[0]

    person_keys = None
    if _gets_personal_fields(config, names):
        try:
            person_keys = await asyncio.to_thread(_open_keys, settings)
        except Exception as error:  # PersonKeysError, KekError: one line, no key material
            raise click.ClickException(f"person keys: {type(error).__name__}: {error}") from None
    disclosure_log = DisclosureLog(settings)
    try:
        await disclosure_log.start()
    except BaseException:
        if person_keys is not None:
            person_keys.close()
        raise
    workers: list[DeliveryWorker] = []
    try:
        for name in names:
            destination = config.destination(name)
            http = http_client(settings.delivery_timeout_s)
            clients.append(http)
            target = DeliveryTarget(
                name=name,
                schedule=RetrySchedule(tuple(destination.retry_schedule_s)),
                breaker_failures=destination.breaker_failures,
                breaker_open_s=destination.breaker_open_s,
                transport_for=_transport_factory(settings, destination, http, xroad),
            )
            workers.append(
                DeliveryWorker(
                    settings,
                    target,
                    codec,
                    metrics=metrics,
                    disclosures=RoutedDisclosures(disclosure_log, config, name),
                    instance_id=instance_id,
                    drain_s=drain_s,
                    progress_interval_s=progress_s,
                    commit_interval_s=commit_s,
                    keys=person_keys,
                )
            )

        def stop_all() -> None:
            for worker in workers:
                worker.stop()

        async def run_one(worker: DeliveryWorker) -> DeliveryStats:
            try:
                return await worker.run()
            except DeliveryFatal:
                stop_all()  # one worker cannot go on: the process exits, every worker drains
                raise

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop_all)
        outcomes = await asyncio.gather(*(run_one(w) for w in workers), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, DeliveryFatal):
                raise click.ClickException(str(outcome))
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        results = [o for o in outcomes if isinstance(o, DeliveryStats)]
    finally:
        await disclosure_log.stop()
        if person_keys is not None:
            await asyncio.to_thread(person_keys.close)
        for http in clients:
            await http.aclose()
        for client in xroad_client:
            await client.aclose()
    return {w.target.name: stats for w, stats in zip(workers, results, strict=True)}


@click.command("deliver")
@click.option(
    "--destination",
    "destinations",
    multiple=True,
    metavar="NAME",
    help="Destination of the routes file to deliver (repeatable).",
)
@click.option(
    "--all", "deliver_all", is_flag=True, help="Every destination with a delivery worker."
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Serve Prometheus metrics on this port (address HUB_API_HOST).",
)
@click.option(
    "--instance-id",
    default=None,
    help="Static consumer-group membership (KIP-345): a restarted process with the same id "
    "gets its partitions back at once, without waiting for the session timeout.",
)
@click.option(
    "--drain",
    "drain_s",
    type=click.FloatRange(0, 600),
    default=10.0,
    show_default=True,
    help="Seconds to let requests in flight finish after SIGTERM.",
)
@click.option(
    "--progress-interval",
    "progress_s",
    type=click.FloatRange(0.1, 3600),
    default=10.0,
    show_default=True,
    help="Seconds between progress log lines.",
)
@click.option(
    "--commit-interval",
    "commit_s",
    type=click.FloatRange(0.05, 60),
    default=1.0,
    show_default=True,
    help="Seconds between offset commits: what a crash sends again is at most about this "
    "much delivery (the receivers drop it by Idempotency-Key).",
)
def deliver_command(
    destinations: tuple[str, ...],
    deliver_all: bool,
    metrics_port: int | None,
    instance_id: str | None,
    drain_s: float,
    progress_s: float,
    commit_s: float,
) -> None:
    """Deliver the outbox of destinations to their receivers until SIGTERM/SIGINT.

    Webhooks are POSTed as JSON signed per Standard Webhooks, with Idempotency-Key = event id;
    failures are retried on the destination's schedule, a receiver's refusal (4xx other than
    408/409/429) or a used-up schedule is a dead letter, and every settled event writes a
    disclosure receipt. Offsets are committed up to the lowest unsettled record per partition.
    """
    settings = get_settings()
    configure_logging(settings)
    for warning in settings.development_warnings():
        log.warning(warning)
    try:
        config = load_routes(settings)
    except RoutesError as exc:
        raise click.ClickException(str(exc)) from exc
    workable = [
        name for name, d in config.destinations.items() if d.transport is not RouteTransport.OUTBOX
    ]
    if deliver_all == bool(destinations):
        raise click.UsageError("name destinations with --destination, or give --all")
    names = workable if deliver_all else list(dict.fromkeys(destinations))
    for name in names:
        if name not in config.destinations:
            known = ", ".join(sorted(config.destinations))
            raise click.BadParameter(
                f"no destination {name} in the routes (known: {known})",
                param_hint="--destination",
            )
        if name not in workable:
            raise click.BadParameter(
                f"destination {name} has transport outbox: its reader pulls the outbox topic",
                param_hint="--destination",
            )
        try:
            _check_secrets(settings, config.destination(name))
        except RoutesError as exc:
            raise click.ClickException(str(exc)) from exc
    results = run_kafka_command(
        settings,
        _deliver(settings, config, names, metrics_port, instance_id, drain_s, progress_s, commit_s),
    )
    for name, stats in results.items():
        click.echo(
            f"{name}: {stats.delivered} delivered ({stats.duplicates} duplicate(s) dropped by "
            f"the receiver), {stats.retried} retried, {stats.dead_letters} dead letter(s)"
        )
