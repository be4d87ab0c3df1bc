"""``hub clients new-key|check``: credentials of the ingest API's clients.

There is deliberately no command that edits the clients file: it is deployment configuration,
reviewed like any other, and the operator pastes the hash in.
"""

from __future__ import annotations

from pathlib import Path

import click

from connectors.rest_api.auth import IngestClients, new_api_key
from hub.settings import get_settings


@click.group()
def clients() -> None:
    """API keys and the clients file of the ingest API."""


@clients.command("new-key")
@click.option("--client-id", default="<client-id>", help="Shown in the TOML snippet.")
def new_key(client_id: str) -> None:
    """Print a fresh API key (give it to the client once) and the hash for the clients file."""
    key, digest = new_api_key()
    click.echo(f"API key (shown once; send it to the client over a secure channel):\n  {key}")
    click.echo("For the clients file (HUB_INGEST_CLIENTS_FILE):")
    click.echo(f'  [[clients]]\n  client_id = "{client_id}"\n  api_key_sha256 = "{digest}"')


@clients.command("check")
@click.argument(
    "path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=False
)
def check(path: Path | None) -> None:
    """Validate a clients file (default: HUB_INGEST_CLIENTS_FILE) and list its clients."""
    path = path or get_settings().ingest_clients_file
    if path is None:
        raise click.UsageError("no file given and HUB_INGEST_CLIENTS_FILE is not set")
    try:
        loaded = IngestClients.from_file(path)
    except ValueError as error:  # also pydantic.ValidationError and TOMLDecodeError
        # A click error, not an echo: hub's group passes its text through the redactor.
        raise click.ClickException(f"{path} is not a valid clients file:\n{error}") from error
    for client in loaded:
        scopes = ", ".join(sorted(client.event_types | client.read_scopes))
        click.echo(f"{client.client_id:<24} {client.kind:<17} {scopes}")
