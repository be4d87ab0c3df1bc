"""``hub schemas register`` (the deploy step) against a real registry (Apicurio), as a person
runs it: every current schema gets an id, again and again the same, and a refusal or an
unreachable registry is one clear line, not a traceback."""

from __future__ import annotations

import copy
from pathlib import Path

import httpx

from hub.serde import default_catalog
from hub.serde.registry import SchemaRegistryClient
from tests.hub_process import hub_command, register_schemas

OFFER = "fi.te.hub.JobOfferMade"


def test_register_gives_every_current_schema_one_stable_id(
    schema_registry: str, tmp_path: Path
) -> None:
    catalog = default_catalog()
    ids = register_schemas(schema_registry, tmp_path)
    assert sorted(ids) == sorted(catalog.names())
    assert len(set(ids.values())) == len(ids)
    assert register_schemas(schema_registry, tmp_path) == ids  # idempotent on redeploy
    with SchemaRegistryClient(schema_registry) as client:
        for name, schema_id in ids.items():
            assert client.lookup(name, catalog.current(name).json) == schema_id
    subjects = httpx.get(f"{schema_registry}/subjects", timeout=10).json()
    assert sorted(subjects) == sorted(ids)  # RecordNameStrategy: one subject per record


def test_register_with_history_gives_the_registry_every_released_version(
    schema_registry: str, tmp_path: Path
) -> None:
    """The released versions go first, oldest first (the registry checks each step BACKWARD;
    the multi-version chain itself is tested in test_serde_confluent), and a current schema
    equal to its newest release is not registered as a second version."""
    result = hub_command(
        "schemas",
        "register",
        "--with-history",
        env={"HUB_SCHEMA_REGISTRY_URL": schema_registry},
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    catalog = default_catalog()
    with SchemaRegistryClient(schema_registry) as client:
        for event in catalog:
            versions = list(event.versions())
            path = f"{schema_registry}/subjects/{event.full_name}/versions"
            assert httpx.get(path, timeout=10).json() == list(range(1, len(versions) + 1))
            for version in versions:
                assert client.lookup(event.full_name, version.json) > 0


def test_a_schema_the_registry_refuses_is_one_clear_error(
    schema_registry: str, tmp_path: Path
) -> None:
    """Someone registered a JobOfferMade without one of our fields: ours adds a field without a
    default, which BACKWARD refuses."""
    older = copy.deepcopy(default_catalog().current(OFFER).raw)
    payload = next(f for f in older["fields"] if f["name"] == "payload")["type"]
    required = next(f for f in payload["fields"] if "default" not in f)
    payload["fields"].remove(required)
    with SchemaRegistryClient(schema_registry) as client:
        client.register(OFFER, older)

    result = hub_command(
        "schemas", "register", env={"HUB_SCHEMA_REGISTRY_URL": schema_registry}, cwd=tmp_path
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("Error: schema registry: ")
    assert "HTTP 409" in result.stderr
    assert OFFER in result.stderr


def test_an_unreachable_registry_is_one_clear_error(tmp_path: Path) -> None:
    result = hub_command(
        "schemas", "register", env={"HUB_SCHEMA_REGISTRY_URL": "http://127.0.0.1:9"}, cwd=tmp_path
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "no response, http://127.0.0.1:9" in result.stderr
