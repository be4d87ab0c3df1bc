"""The ``hub`` command: one entry point for everything a person runs."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import click
from pydantic import ValidationError

from connectors.batch.cli import import_command
from connectors.poller.cli import poll_command
from connectors.receivers.cli import receivers_command
from connectors.rest_api.cli import clients
from connectors.rest_api.serve import serve_command
from connectors.simulator.cli import simulate_command
from connectors.webhook.cli import deliver_command
from hub.broker.cli import broker
from hub.delivery.audit_cli import audit
from hub.delivery.dlq_cli import dlq
from hub.docs.cli import asyncapi_command
from hub.events.cli import schemas
from hub.inspect.cli import tail_command
from hub.kafka.cli import topics
from hub.logging import redact_text
from hub.privacy.person_cli import keys, person
from hub.privacy.scan_cli import privacy
from hub.reporting.archive_cli import archive_command
from hub.reporting.replay_cli import replay_command
from hub.reporting.report_cli import report_command
from hub.routing.cli import routes
from hub.routing.route_cli import route_command
from hub.settings import HubSettings


@contextmanager
def _redacted_click_errors() -> Iterator[None]:
    """Pass the text of a click error through the log redactor before click prints it."""
    try:
        yield
    except click.ClickException as error:
        # Final in click's type hints, but a plain attribute that show() reads.
        error.message = redact_text(error.message)  # type: ignore[misc]
        raise


class _HubGroup(click.Group):
    """The ``hub`` group: the one place where every CLI error text meets the redactor.

    Error texts quote what failed: a path, an option, a Kafka or pydantic message with the value
    it refused. Terminals and CI logs keep them, so an identity code in one is as bad as in a log.
    The group's own arguments are parsed in :meth:`make_context`, every subcommand's (and its
    work) in :meth:`invoke`; commands report failures as click errors, never print them.
    """

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        with _redacted_click_errors():
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        with _redacted_click_errors():
            return super().invoke(ctx)


@click.group(cls=_HubGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
cli.add_command(receivers_command)
cli.add_command(route_command)
cli.add_command(deliver_command)
cli.add_command(routes)
cli.add_command(audit)
cli.add_command(asyncapi_command)
cli.add_command(dlq)
cli.add_command(archive_command)
cli.add_command(replay_command)
cli.add_command(report_command)
cli.add_command(privacy)
cli.add_command(person)
cli.add_command(keys)


def main() -> None:
    """Run ``hub``; bad settings are one redacted line, an unexpected crash a redacted traceback."""
    try:
        cli()
    except ValidationError as error:
        if error.title != HubSettings.__name__:
            _crash()
        problems = "; ".join(
            f"HUB_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" if e["loc"] else e["msg"]
            for e in error.errors()
        )
        click.echo(redact_text(f"Error: invalid configuration: {problems}"), err=True)
        sys.exit(2)
    except Exception:
        _crash()


def _crash() -> NoReturn:
    """Print the traceback of the exception being handled through the redactor; exit 1."""
    click.echo(redact_text(traceback.format_exc()), err=True, nl=False)
    sys.exit(1)
