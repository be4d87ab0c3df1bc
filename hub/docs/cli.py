"""``hub asyncapi``: write the AsyncAPI document of the hub's Kafka channels."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from hub.docs.asyncapi import asyncapi_document, to_json, to_yaml
from hub.routing.routes import RoutesError
from hub.settings import get_settings


@click.command("asyncapi")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Write the document to this file (default: standard output).",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["json", "yaml"]),
    default=None,
    help="json or yaml (default: from the file's extension, else json).",
)
def asyncapi_command(output: Path | None, output_format: str | None) -> None:
    """The AsyncAPI 3.0 document of every channel, for the settings and HUB_ROUTES_FILE.

    Needs no broker: the document is generated from the topic specs, the schemas and the
    routes. `hub serve` serves the same document at /asyncapi.json and its page at /asyncapi.
    """
    settings = get_settings()
    try:
        document = asyncapi_document(settings)
    except RoutesError as error:
        raise click.ClickException(f"the routes are not valid: {error}") from None
    if output_format is None:
        output_format = (
            "yaml" if output is not None and output.suffix in (".yaml", ".yml") else "json"
        )
    text = to_yaml(document) if output_format == "yaml" else to_json(document)
    if output is None:
        sys.stdout.write(text)
        return
    output.write_text(text, encoding="utf-8")
    click.echo(
        f"wrote {output} (AsyncAPI {document['asyncapi']}, {len(document['channels'])} channels, "
        f"{len(document['components']['messages'])} messages)",
        err=True,
    )
