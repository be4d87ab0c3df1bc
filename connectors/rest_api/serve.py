"""``hub serve``: the ingest API on the Kafka sink, with its start and stop."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import click
import uvicorn
from fastapi import FastAPI

from connectors.rest_api.app import create_app
from connectors.rest_api.auth import IngestClients
from hub.intake.enrolments import KafkaEnrolmentDirectory
from hub.kafka.probe import connection_problem
from hub.kafka.topics import ensure_topics
from hub.logging import configure_logging, get_logger
from hub.privacy.kek import KekError, build_kek
from hub.settings import HubSettings, get_settings
from hub.sink.kafka import KafkaEventSink

log = get_logger(__name__)


def build_server_app(settings: HubSettings) -> FastAPI:
    """The API wired to Kafka; topics, receipts and the enrolment directory start with it."""
    try:
        clients = IngestClients.from_file(settings.ingest_clients_file)
    except (OSError, ValueError) as error:  # also pydantic's ValidationError, TOMLDecodeError
        raise click.ClickException(
            f"{settings.ingest_clients_file} is not a valid clients file "
            f"(check it with `hub clients check`):\n{error}"
        ) from error
    try:  # the key-encryption key the sink's person keys are wrapped with, checked up front
        build_kek(settings).close()
    except KekError as error:
        raise click.ClickException(f"cannot start the ingest API: {error}") from error
    # The sink follows the person-keys topic itself: every event is sealed before it is written.
    sink = KafkaEventSink(settings)
    enrolments = KafkaEnrolmentDirectory(settings)
    app = create_app(settings, sink, clients, enrolments)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await ensure_topics(settings)
        await sink.start()
        enrolments.start()
        log.info("ingest.started", clients=len(clients), receipts=sink.known_receipts)
        # What the start made lives as long as the process: frozen, a full collection that one
        # large request triggers scans only what requests made, not the whole app (150 ms
        # measured, every request waiting), so the event loop keeps answering.
        gc.freeze()
        try:
            yield
        finally:
            await enrolments.stop()
            await sink.stop()

    app.router.lifespan_context = lifespan
    return app


@click.command("serve")
@click.option("--host", default=None, help="Address to listen on.  [default: HUB_API_HOST]")
@click.option("--port", default=8080, show_default=True, type=int, help="Port to listen on.")
def serve_command(host: str | None, port: int) -> None:
    """Run the ingest API (OpenAPI at /docs) on the configured Kafka."""
    settings = get_settings()
    configure_logging(settings)
    for warning in settings.development_warnings():
        log.warning(warning)
    if settings.ingest_clients_file is None:
        log.warning("no HUB_INGEST_CLIENTS_FILE: every request will be refused (401)")
    app = build_server_app(settings)
    # Start-up needs Kafka (topics, receipts, enrolments): say in one line why it cannot be had
    # (down, a refused SASL login, a failed TLS handshake) instead of a traceback from uvicorn.
    problem = asyncio.run(connection_problem(settings))
    if problem is not None:
        raise click.ClickException(f"cannot start the ingest API: {problem.message}")
    uvicorn.run(
        app,
        host=host or settings.api_host,
        port=port,
        log_config=None,
        access_log=False,
    )
