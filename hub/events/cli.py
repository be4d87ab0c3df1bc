"""``hub schemas``: keep the .avsc files, the models and the released versions in step."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from hub.events.compatibility import check_backward_transitive
from hub.events.schema_files import drifted, release, released_versions, write_current
from hub.serde import default_schemas_dir

_DIR_OPTION = click.option(
    "--dir",
    "schemas_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Schemas folder (default: the shipped schemas/).",
)


@click.group()
def schemas() -> None:
    """Generate, check, release and register the Avro schemas."""


@schemas.command()
@_DIR_OPTION
def generate(schemas_dir: Path | None) -> None:
    """Write schemas/<Type>.avsc from the pydantic event models."""
    target = schemas_dir or default_schemas_dir()
    changed = write_current(target)
    click.echo(f"{len(changed)} schema(s) written to {target}: {', '.join(changed) or '-'}")


@schemas.command()
@_DIR_OPTION
def check(schemas_dir: Path | None) -> None:
    """Fail on drift from the models or on a change that breaks BACKWARD-transitive reading."""
    target = schemas_dir or default_schemas_dir()
    failures = [
        f"{name}: schemas/{name}.avsc differs from the models; run `hub schemas generate`"
        for name in drifted(target)
    ]
    failures += [str(problem) for problem in check_backward_transitive(target)]
    failures += [
        f"{path.stem}: never released; run `hub schemas release`"
        for path in sorted(target.glob("*.avsc"))
        if not released_versions(target, path.stem)
    ]
    for failure in failures:
        click.echo(f"FAIL {failure}", err=True)
    if failures:
        sys.exit(1)
    types = len(list(target.glob("*.avsc")))
    click.echo(f"ok: {types} event types match the models and read all their released versions")


@schemas.command("release")
@_DIR_OPTION
def release_command(schemas_dir: Path | None) -> None:
    """Freeze each changed schema as a new version under schemas/history/ (after a check)."""
    target = schemas_dir or default_schemas_dir()
    problems = check_backward_transitive(target)
    if problems:
        for problem in problems:
            click.echo(f"FAIL {problem}", err=True)
        sys.exit(1)
    for name, version in release(target):
        click.echo(f"released {name} v{version}")


@schemas.command()
@click.option("--url", envvar="HUB_SCHEMA_REGISTRY_URL", required=True, help="Registry URL.")
@click.option("--with-history", is_flag=True, help="Register released versions first.")
def register(url: str, with_history: bool) -> None:
    """Register every current schema in a Confluent-compatible registry (a deploy step)."""
    from hub.serde import SchemaRegistryClient, SchemaRegistryError, default_catalog, register_all

    try:
        with SchemaRegistryClient(url) as client:
            ids = register_all(default_catalog(), client, include_history=with_history)
    except SchemaRegistryError as exc:  # unreachable, refused or incompatible: say which
        raise click.ClickException(str(exc)) from exc
    for name, schema_id in sorted(ids.items()):
        click.echo(f"{name}: id {schema_id}")
