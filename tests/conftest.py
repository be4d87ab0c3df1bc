"""Shared fixtures of the test suite.

Kafka tests (``@pytest.mark.kafka``) run against a real broker, found in this order:

1. ``HUB_KAFKA_BOOTSTRAP`` set in the environment: that broker (CI service, a running demo).
2. A Docker engine answers: a throwaway ``apache/kafka`` KRaft container via testcontainers.
3. Otherwise a private :class:`~hub.broker.local.LocalKafka` on two free ports, in its own state
   dir under ``.hub/test-broker/``, sharing the jar cache ``.hub/kafka/<version>/lib`` with
   ``hub broker start``. It never touches a demo broker on 9092, and concurrent test runs (two
   terminals, two worktrees) each get their own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

import pytest
from pydantic import SecretStr

from hub.broker.local import BrokerTls, LocalKafka, wait_for_kafka
from hub.kafka.reading import read_topic
from hub.serde import SingleObjectSerializer
from hub.settings import HubSettings
from tests.registry_fixture import apicurio, schema_registry  # noqa: F401  (fixtures)

REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_BROKERS_DIR = REPO_ROOT / ".hub" / "test-broker"
JAR_CACHE = REPO_ROOT / ".hub" / "kafka"


# -- Kafka ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KafkaForTests:
    """The broker of this test session and where it came from."""

    bootstrap: str
    kind: Literal["env", "testcontainers", "local"]
    local: LocalKafka | None = None


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaForTests]:
    """A real Kafka broker for the whole session (see the module docstring for the order)."""
    external = os.environ.get("HUB_KAFKA_BOOTSTRAP")
    if external:
        wait_for_kafka(HubSettings(kafka_bootstrap=external), timeout_s=30)
        yield KafkaForTests(external, "env")
    elif _docker_answers():
        yield from _testcontainers_kafka()
    else:
        yield from _local_kafka()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: KafkaForTests) -> str:
    """Bootstrap servers of the session's broker."""
    return kafka_broker.bootstrap


@pytest.fixture
def hub_settings(kafka_bootstrap: str, tmp_path: Path) -> HubSettings:
    """Settings pointing at the session broker, with topic names no other test uses."""
    return settings_for(kafka_bootstrap, partitions=6, state_dir=tmp_path / "hub-state")


def settings_for(bootstrap: str, partitions: int = 3, **overrides: Any) -> HubSettings:
    """Settings on ``bootstrap`` with topics (person keys included: tests use different
    key-encryption keys, and a writer refuses one that opens no stored key) and a
    transactional id of their own."""
    suffix = uuid.uuid4().hex[:12]
    fields: dict[str, Any] = {
        "kafka_bootstrap": bootstrap,
        "topic_customer_path": f"test.customer-path.{suffix}",
        "topic_dead_letter": f"test.dead-letter.{suffix}",
        "topic_ingest_receipts": f"test.ingest-receipts.{suffix}",
        "topic_source_positions": f"test.source-positions.{suffix}",
        "topic_outbox_prefix": f"test.outbox.{suffix}.",
        "topic_router_state": f"test.router-state.{suffix}",
        "topic_disclosures": f"test.disclosures.{suffix}",
        "topic_person_keys": f"test.person-keys.{suffix}",
        "router_transactional_id": f"test-router-{suffix}",
        "ingest_transactional_id": f"test-ingest-{suffix}",
        "writer_id_prefix": f"test-{suffix}",
        "topic_partitions": partitions,
        "topic_replication_factor": 1,
    }
    return HubSettings(**{**fields, **overrides})


def hub_environment(settings: HubSettings, **variables: str) -> dict[str, str]:
    """The environment of a ``hub`` subprocess that should see *settings*: this process's
    environment, every setting as its ``HUB_*`` variable, then *variables* (full names, e.g.
    ``HUB_LOG_LEVEL="DEBUG"``), so a test names only what differs from its settings."""
    environment = dict(os.environ)
    for name, value in settings.model_dump().items():
        variable = f"HUB_{name.upper()}"
        if value is None:
            environment.pop(variable, None)
        elif isinstance(value, SecretStr):
            environment[variable] = value.get_secret_value()
        elif isinstance(value, bool):
            environment[variable] = "true" if value else "false"
        elif isinstance(value, Enum):
            environment[variable] = str(value.value)
        else:
            environment[variable] = str(value)
    environment.update(variables)
    return environment


@contextlib.contextmanager
def duckdb_file_held_by_another_process(path: Path) -> Iterator[None]:
    """*path* opened for writing by another process (as a running ``hub replay`` holds the
    store) until the block ends; DuckDB lets no other process open it meanwhile."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
         "print('held', flush=True); time.sleep(60)", str(path)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        yield
    finally:
        holder.kill()
        holder.wait()


@pytest.fixture
def private_kafka() -> Iterator[LocalKafka]:
    """A local broker of this test alone, which it may stop, kill and restart.

    Always a private local broker, whatever kind the session broker is: a fault test must never
    be skipped because the session runs against a broker it may not stop.
    """
    with started_local_kafka() as kafka:
        yield kafka


async def event_ids_in_log(settings: HubSettings) -> Counter[UUID]:
    """How often each event id is in the customer-path log (read_committed)."""
    serializer = SingleObjectSerializer()
    return Counter(
        [
            serializer.decode(record.value).record["envelope"]["event_id"]
            async for record in read_topic(settings, settings.topic_customer_path)
        ]
    )


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env()
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # no SDK, no socket, no permission: no Docker
        return False


def _testcontainers_kafka() -> Iterator[KafkaForTests]:
    """An ``apache/kafka`` KRaft container.

    testcontainers' KafkaContainer drives Confluent images only (it rewrites
    /etc/confluent/docker scripts), so the official Apache image is configured through its
    KAFKA_* environment instead. The advertised listener must be the host-side address, so the
    host port is chosen up front and bound explicitly.
    """
    from testcontainers.core.container import DockerContainer

    container = DockerContainer(f"apache/kafka:{HubSettings().kafka_version}")
    host = container.get_docker_client().host()  # honours TC_HOST and remote DOCKER_HOST
    host_port = _free_ports(1)[0]
    container = (
        container.with_bind_ports(9092, host_port)
        .with_env("KAFKA_NODE_ID", "1")
        .with_env("KAFKA_PROCESS_ROLES", "broker,controller")
        .with_env("KAFKA_LISTENERS", "PLAINTEXT://:9092,CONTROLLER://:9093")
        .with_env("KAFKA_ADVERTISED_LISTENERS", f"PLAINTEXT://{host}:{host_port}")
        .with_env("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER")
        .with_env(
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
        )
        .with_env("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093")
        .with_env("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
        .with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
    )
    with container:
        bootstrap = f"{host}:{host_port}"
        wait_for_kafka(HubSettings(kafka_bootstrap=bootstrap), timeout_s=120)
        yield KafkaForTests(bootstrap, "testcontainers")


def _local_kafka() -> Iterator[KafkaForTests]:
    _remove_dead_test_brokers()
    with started_local_kafka() as kafka:
        yield KafkaForTests(kafka.bootstrap, "local", kafka)


@contextlib.contextmanager
def started_local_kafka(tls: BrokerTls | None = None, **security: Any) -> Iterator[LocalKafka]:
    """A private local broker on free ports, stopped and deleted afterwards.

    ``security``: ``kafka_security_protocol``, ``kafka_sasl_*`` and ``kafka_ssl_*`` settings the
    broker demands (see :class:`LocalKafka`; ``tls`` is its own certificate for TLS);
    ``kafka.client_settings`` then carry them.
    """
    state_dir = TEST_BROKERS_DIR / f"{os.getpid()}-{uuid.uuid4().hex[:6]}"
    port, controller_port = _free_ports(2)
    settings = HubSettings(
        state_dir=state_dir, kafka_port=port, kafka_controller_port=controller_port, **security
    )
    kafka = LocalKafka(
        settings, jar_cache=JAR_CACHE, tie_to_parent=True, progress=_progress, tls=tls
    )
    try:
        result = kafka.start(timeout_s=120)
        _progress(f"test broker {result.bootstrap} ready in {result.elapsed_s:.1f} s")
        yield kafka
    finally:
        kafka.stop()
        shutil.rmtree(state_dir, ignore_errors=True)


def _remove_dead_test_brokers() -> None:
    """Delete state dirs left by killed sessions. A dir is named after its pytest process, and
    one whose process or broker still runs belongs to a concurrent session: leave it alone."""
    if not TEST_BROKERS_DIR.is_dir():
        return
    for state_dir in TEST_BROKERS_DIR.iterdir():
        owner = state_dir.name.split("-", 1)[0]
        if not state_dir.is_dir() or (owner.isdigit() and _process_exists(int(owner))):
            continue
        if LocalKafka(HubSettings(state_dir=state_dir), jar_cache=JAR_CACHE).pid() is None:
            shutil.rmtree(state_dir, ignore_errors=True)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _free_ports(count: int) -> list[int]:
    """Ports the OS considers free now (all held open together, so they differ)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def _progress(message: str) -> None:
    """Broker start progress (pytest shows it with -s, or when the fixture fails)."""
    print(f"[kafka] {message}", flush=True)


# -- simulated customer paths ------------------------------------------------------------------

SIMULATION_SECRET = "test-secret-of-sufficient-length"


@pytest.fixture(scope="session")
def simulated_paths() -> list[list[Any]]:
    """Customer paths of 400 people over a window that crosses the 1.1.2026 rule change."""
    from connectors.simulator import SimulationConfig, simulate
    from hub.identity import Pseudonymizer

    config = SimulationConfig(jobseekers=400, seed=5)
    return list(simulate(config, Pseudonymizer(SIMULATION_SECRET)))
