"""The session's real schema registry: Apicurio Registry, started once and only when needed.

A test asks for ``schema_registry`` (the Confluent API URL of an emptied registry) or
``apicurio`` (the running registry as it is). The first such request of a pytest process fetches
the app into the cache ``.hub/apicurio/<version>/app`` (Maven, first run only) and starts it on a
free port with Java 21+; every later test reuses it, so the JVM starts once per session (a few
seconds) and not at all in a session without registry tests. A registry that cannot be started
fails the tests that need it, loudly: it is never skipped.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from hub.broker.registry import (
    APICURIO_VERSION,
    LocalRegistry,
    RegistryStart,
    RegistryStartError,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
APP_CACHE = REPO_ROOT / ".hub" / "apicurio"


@dataclass(frozen=True)
class ApicurioForTests:
    url: str
    """The Confluent-compatible API (``.../apis/ccompat/v7``), for HUB_SCHEMA_REGISTRY_URL."""
    start_s: float
    """Seconds from spawning the JVM to the first answered request."""


@pytest.fixture(scope="session")
def apicurio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApicurioForTests]:
    """Apicurio Registry for the whole session (in-memory storage, compatibility BACKWARD)."""
    log_dir = tmp_path_factory.mktemp("apicurio")
    try:
        registry, started = _start(log_dir / "registry.log")
    except RegistryStartError as first:
        # A free port can be taken by another process before the JVM binds it: one more try.
        _progress(f"first start failed, trying another port: {first}")
        registry, started = _start(log_dir / "registry-2.log")
    _progress(
        f"Apicurio Registry {APICURIO_VERSION} on {started.url} ready in "
        f"{started.elapsed_s:.1f} s (java {started.java})"
    )
    try:
        yield ApicurioForTests(started.url, started.elapsed_s)
    finally:
        registry.stop()


@pytest.fixture
def schema_registry(apicurio: ApicurioForTests) -> str:
    """The session registry's Confluent API URL, emptied of every subject first, so each test
    starts as on a fresh registry (ids keep counting up, as on a real one)."""
    with httpx.Client(base_url=apicurio.url, timeout=10) as client:
        subjects = client.get("/subjects")
        subjects.raise_for_status()
        for subject in subjects.json():
            path = f"/subjects/{quote(subject, safe='')}"
            client.delete(path).raise_for_status()
            client.delete(path, params={"permanent": "true"}).raise_for_status()
        assert client.get("/subjects").json() == []
    return apicurio.url


def _start(log_file: Path) -> tuple[LocalRegistry, RegistryStart]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    registry = LocalRegistry(APP_CACHE, port=port, log_file=log_file, progress=_progress)
    return registry, registry.start(timeout_s=180)


def _progress(message: str) -> None:
    print(f"[registry] {message}", flush=True)
