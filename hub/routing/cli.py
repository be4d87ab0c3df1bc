"""``hub routes``: check a routes file, and explain who gets an event type and which fields.

``check`` is what an operator runs before pointing ``HUB_ROUTES_FILE`` at a new file: it loads it
as the router would (every refusal, one per line, naming the route or destination), then checks
that the derived outbox schema of every route reads the data of every released event schema
version. ``explain`` answers the data-protection question for one event type from the same
file: which destinations receive it, exactly which fields (dotted paths), on what legal basis per
class, and which ``pii`` fields are withheld.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from hub.events.sensitivity import Sensitivity, sensitive_fields
from hub.logging import redact_text
from hub.routing.projection import check_derived_compatibility, leaf_paths, projected_schema
from hub.routing.routes import (
    DEFAULT_ROUTES_FILE,
    Route,
    RoutesConfig,
    RoutesError,
    Transport,
    load_routes_file,
)
from hub.serde.catalog import SchemaCatalog, default_catalog
from hub.settings import HubSettings

_DIRECTORY_TEXT = {
    "payer_named": (
        "the payer the event names (payload.payer): Kela → {kela}; a fund → {funds}, endpoint = "
        "the fund code valid on the issue date in the fund code list (a merged fund: its "
        "successor); a fund not in the list or not valid then → dead letter"
    ),
    "payer_of_person": (
        "the payer that pays the person (learnt from JobseekerRegistered's fund, else Kela, and "
        "the payer of StatementRequested / LabourPolicyStatementIssued / BenefitDaysAccrued): "
        "Kela → {kela}; a fund → {funds} (merged: its successor). A person with no known payer "
        "is sent to no payer: nobody pays them a benefit, so no payer is told"
    ),
    "provider_of_enrolment": (
        "the provider of the service, by payload.provider_business_id in the provider directory "
        "→ {providers}; a provider not in the directory → dead letter"
    ),
    "municipal_system_of_area": (
        "the employment area's own system, by envelope.employment_area_code → {municipal}; an "
        "area without a system in the routes → dead letter"
    ),
}


def _config_path(file: Path | None) -> Path:
    if file is not None:
        return file
    return HubSettings().routes_file or DEFAULT_ROUTES_FILE


def missing_secrets(config: RoutesConfig, settings: HubSettings) -> list[str]:
    """Endpoints whose signing secret delivery could not use: in production any absent secret;
    in every environment a configured one that is unusable (a secret_file that is a directory
    or unreadable, a key too short), where development does not fall back either."""
    problems = []
    for destination in config.destinations.values():
        if destination.transport is not Transport.WEBHOOK:
            continue
        endpoints = [destination.endpoint, *(destination.endpoints or {}).values()]
        for endpoint in endpoints:
            if endpoint is None:
                continue
            try:
                endpoint.check_secret(settings)
            except RoutesError as error:
                problems.append(str(error))
    return problems


def _load_or_exit(path: Path, catalog: SchemaCatalog) -> RoutesConfig:
    try:
        return load_routes_file(path, catalog)
    except RoutesError as error:
        click.echo(redact_text(f"FAIL {path}"), err=True)
        for problem in error.problems:
            click.echo(redact_text(f"  {problem}"), err=True)
        sys.exit(1)


DerivedTarget = tuple[str, str, frozenset[Sensitivity], tuple[str, ...] | None]


def derived_targets(config: RoutesConfig) -> list[DerivedTarget]:
    """``(destination, type, grants, fields)`` of every route: what has a derived schema."""
    return [
        (destination, type_name, frozenset(route.grants), route.fields)
        for route in config.routes
        for type_name in route.types
        for destination in config.destinations_of(route)
    ]


@click.group()
def routes() -> None:
    """Check the routes file and explain who gets which fields."""


@routes.command()
@click.argument(
    "file", required=False, type=click.Path(dir_okay=False, path_type=Path), default=None
)
def check(file: Path | None) -> None:
    """Validate FILE (default: HUB_ROUTES_FILE or the packaged routes); exit 1 on any problem.

    Every configured signing secret must be usable; with HUB_ENVIRONMENT=production every webhook
    endpoint must have one.
    """
    catalog = default_catalog()
    path = _config_path(file)
    config = _load_or_exit(path, catalog)
    targets = derived_targets(config)
    problems = [f"derived schema {p}" for p in check_derived_compatibility(catalog, targets)]
    problems += missing_secrets(config, HubSettings())
    if problems:
        click.echo(redact_text(f"FAIL {path}"), err=True)
        for problem in problems:
            click.echo(redact_text(f"  {problem}"), err=True)
        sys.exit(1)
    endpoints = sum(
        len(d.endpoints or {}) + (d.endpoint is not None) for d in config.destinations.values()
    )
    types = {t for route in config.routes for t in route.types}
    click.echo(
        f"OK {path}: {len(config.routes)} routes, {len(config.destinations)} destinations "
        f"({endpoints} endpoints), {len(types)} event types routed; {len(targets)} derived "
        "schemas read every released version"
    )


@routes.command()
@click.argument("type_name", metavar="TYPE")
@click.option(
    "--file",
    "file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Routes file (default: HUB_ROUTES_FILE or the packaged routes).",
)
def explain(type_name: str, file: Path | None) -> None:
    """Which destinations get event type TYPE, exactly which fields, on what legal basis."""
    catalog = default_catalog()
    if type_name not in catalog:
        known = ", ".join(event.short_name for event in catalog)
        raise click.BadParameter(f"unknown event type {type_name} (known: {known})")
    config = _load_or_exit(_config_path(file), catalog)
    click.echo(explain_text(config, catalog, type_name))


def explain_text(config: RoutesConfig, catalog: SchemaCatalog, type_name: str) -> str:
    """The text ``hub routes explain`` prints (also used by the tests)."""
    event = catalog.event(type_name)
    short = event.short_name
    matching = [route for route in config.routes if short in route.types]
    reached = {d for route in matching for d in config.destinations_of(route)}
    others = sorted(set(config.destinations) - reached)
    lines = [f"{short}: {len(matching)} route(s); not sent to: {', '.join(others) or '-'}"]
    if not matching:
        lines.append("  no route sends it: it stays in the log only")
    for route in matching:
        lines += _explain_route(config, route, event.current.raw)
    return "\n".join(lines)


def _explain_route(config: RoutesConfig, route: Route, schema: dict[str, object]) -> list[str]:
    destinations = config.destinations_of(route)
    if route.to.destination is not None:
        destination = config.destinations[route.to.destination]
        target = f"{destination.name} ({destination.transport})"
    else:
        assert route.to.directory is not None
        target = _DIRECTORY_TEXT[route.to.directory].format(**config.directories.model_dump())
    lines = ["", f"route {route.name} → {target}"]
    if route.municipalities is not None:
        lines.append(f"  only municipalities: {', '.join(sorted(route.municipalities))}")
    if route.employment_areas is not None:
        lines.append(f"  only employment areas: {', '.join(sorted(route.employment_areas))}")
    if route.basis:
        lines.append(f"  legal basis: {route.basis}")
    derived = projected_schema(schema, frozenset(route.grants), route.fields, destinations[0])
    sent = leaf_paths(derived)
    classes = sensitive_fields(schema)
    lines.append(f"  sends {len(sent)} fields to {', '.join(destinations)}:")
    envelope = [p.removeprefix("envelope.") for p in sent if p.startswith("envelope.")]
    if envelope and not any(p.startswith("envelope.") for p in classes):
        lines.append(f"    envelope.{{{', '.join(envelope)}}}")
        sent_lines = [p for p in sent if not p.startswith("envelope.")]
    else:
        sent_lines = sent
    for path in sent_lines:
        kind = classes.get(path)
        suffix = f"   [{kind}: {route.grants[kind]}]" if kind is not None else ""
        lines.append(f"    {path}{suffix}")
    withheld = sorted(path for path in classes if path not in sent)
    if withheld:
        lines.append("  withheld (pii):")
        for path in withheld:
            kind = classes[path]
            why = (
                "not in the route's fields"
                if kind in route.grants
                else f"no legal basis for {kind} in this route"
            )
            lines.append(f"    {path}   [{kind}: {why}]")
    else:
        lines.append("  withheld (pii): none")
    all_paths = leaf_paths(projected_schema(schema, frozenset(classes.values()), None, "x"))
    dropped = [p for p in all_paths if p not in sent and p not in classes]
    if dropped:
        lines.append(f"  left out by the route's fields: {', '.join(dropped)}")
    return lines
