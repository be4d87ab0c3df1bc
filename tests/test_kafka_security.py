"""Every Kafka client the hub makes carries the security settings, on a broker that demands them.

The broker is a private local Kafka whose only listener for clients is SASL_PLAINTEXT with
SCRAM-SHA-512 and one user: a client built without the settings, or with a wrong password,
cannot get in, so a factory that forgot them fails here.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError

from hub.broker.local import BrokerTls, LocalKafka
from hub.kafka.clients import make_admin, make_consumer, make_producer
from hub.kafka.probe import broker_answers, connection_problem
from hub.kafka.reading import read_topic
from hub.kafka.topics import describe_topics, ensure_topics
from hub.settings import HubSettings
from tests.conftest import REPO_ROOT, settings_for, started_local_kafka

pytestmark = pytest.mark.kafka

USER = "te-hub-ingest"
PASSWORD = "scram-test-password-1"
SCRAM = {
    "kafka_security_protocol": "SASL_PLAINTEXT",
    "kafka_sasl_mechanism": "SCRAM-SHA-512",
    "kafka_sasl_username": USER,
}


@pytest.fixture(scope="module")
def scram_kafka() -> Iterator[LocalKafka]:
    with started_local_kafka(**SCRAM, kafka_sasl_password=PASSWORD) as kafka:
        yield kafka


def _settings(kafka: LocalKafka, **security: Any) -> HubSettings:
    return settings_for(kafka.bootstrap, **security)


async def test_producer_consumer_and_admin_work_with_scram_credentials(
    scram_kafka: LocalKafka, tmp_path: Path
) -> None:
    password_file = tmp_path / "kafka-password"
    password_file.write_text(PASSWORD + "\n")  # a mounted Secret ends with a newline
    settings = _settings(scram_kafka, **SCRAM, kafka_sasl_password_file=password_file)

    assert await broker_answers(settings)
    assert settings.topic_customer_path in await ensure_topics(settings)
    assert {t.name for t in await describe_topics(settings)} >= {settings.topic_customer_path}
    producer = make_producer(settings, transactional_id=f"test-scram-{uuid.uuid4().hex[:8]}")
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send(settings.topic_customer_path, b"value", key=b"person")
    finally:
        await producer.stop()
    records = [r async for r in read_topic(settings, settings.topic_customer_path)]
    assert [(r.key, r.value) for r in records] == [(b"person", b"value")]
    group_consumer = make_consumer(
        settings, settings.topic_customer_path, group_id=f"test-{uuid.uuid4().hex[:8]}"
    )
    await group_consumer.start()
    try:
        batch = await group_consumer.getmany(timeout_ms=10_000)
        assert [r.value for rs in batch.values() for r in rs] == [b"value"]
        await group_consumer.commit()
    finally:
        await group_consumer.stop()


async def test_a_client_without_the_settings_is_refused(scram_kafka: LocalKafka) -> None:
    plaintext = _settings(scram_kafka)

    assert not await broker_answers(plaintext, timeout_s=3)
    assert await connection_problem(plaintext, timeout_s=3) is not None
    assert (
        await connection_problem(_settings(scram_kafka, **SCRAM, kafka_sasl_password=PASSWORD))
        is None
    )


@pytest.mark.parametrize("factory", ["producer", "consumer", "admin"])
async def test_wrong_password_fails_with_an_authentication_error(
    scram_kafka: LocalKafka, factory: str
) -> None:
    settings = _settings(scram_kafka, **SCRAM, kafka_sasl_password="not-the-password")
    client: Any = {
        "producer": lambda: make_producer(settings),
        "consumer": lambda: make_consumer(settings, settings.topic_customer_path),
        "admin": lambda: make_admin(settings),
    }[factory]()
    with pytest.raises(KafkaConnectionError):
        await client.start()
    await client.close() if factory == "admin" else await client.stop()
    problem = await connection_problem(settings)

    assert problem is not None
    assert problem.refused
    assert f"refused the SASL login of user {USER} (SCRAM-SHA-512)" in problem.message
    assert "invalid credentials" in problem.message
    assert "not-the-password" not in problem.message
    assert not await broker_answers(settings, timeout_s=3)


@pytest.mark.parametrize("command", [["topics", "describe"], ["serve", "--port", "0"]])
def test_hub_command_with_wrong_password_says_authentication_failed(
    scram_kafka: LocalKafka, command: list[str]
) -> None:
    env = {
        "PATH": str(Path(sys.executable).parent),
        "HUB_KAFKA_BOOTSTRAP": scram_kafka.bootstrap,
        "HUB_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "HUB_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "HUB_KAFKA_SASL_USERNAME": USER,
        "HUB_KAFKA_SASL_PASSWORD": "not-the-password",
    }
    result = subprocess.run(
        [sys.executable, "-m", "hub", *command],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 1
    # One error line for the person (aiokafka's own log lines may precede it).
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    assert f"refused the SASL login of user {USER}" in errors[0]
    assert "not-the-password" not in result.stderr
    assert "Traceback" not in result.stderr


# -- TLS with client certificates (mutual TLS), certificates made by openssl here ---------------


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)


def _certificate_authority(folder: Path, name: str) -> tuple[Path, Path]:
    key, cert = folder / f"{name}.key", folder / f"{name}.crt"
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        key,
        "-out",
        cert,
        "-days",
        "2",
        "-subj",
        f"/CN={name}",
    )
    return key, cert


def _signed(folder: Path, ca: tuple[Path, Path], name: str, usage: str) -> tuple[Path, Path]:
    key, csr, cert = folder / f"{name}.key", folder / f"{name}.csr", folder / f"{name}.crt"
    extensions = folder / f"{name}.ext"
    extensions.write_text(
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        f"keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage={usage}\n"
    )
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", f"/CN={name}"
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        csr,
        "-CA",
        ca[1],
        "-CAkey",
        ca[0],
        "-CAcreateserial",
        "-out",
        cert,
        "-days",
        "2",
        "-extfile",
        extensions,
    )
    return key, cert


@dataclass(frozen=True)
class Pki:
    ca: Path
    broker_keystore: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is needed to make the test certificates")
    folder = tmp_path_factory.mktemp("pki")
    ca = _certificate_authority(folder, "te-hub-test-ca")
    server_key, server_cert = _signed(folder, ca, "broker", "serverAuth,clientAuth")
    client_key, client_cert = _signed(folder, ca, USER, "clientAuth")
    keystore = folder / "broker.pem"  # Kafka's PEM keystore: the key, then the chain
    keystore.write_text(server_key.read_text() + server_cert.read_text())
    other_ca = _certificate_authority(folder, "some-other-ca")[1]
    return Pki(ca[1], keystore, client_cert, client_key, other_ca)


@pytest.fixture(scope="module")
def tls_kafka(pki: Pki) -> Iterator[tuple[LocalKafka, Pki]]:
    with started_local_kafka(
        tls=BrokerTls(keystore=pki.broker_keystore, truststore=pki.ca),
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=pki.ca,
        kafka_ssl_certfile=pki.client_cert,
        kafka_ssl_keyfile=pki.client_key,
    ) as kafka:
        yield kafka, pki


async def test_clients_work_over_mutual_tls(tls_kafka: tuple[LocalKafka, Pki]) -> None:
    kafka, pki = tls_kafka
    settings = settings_for(
        kafka.bootstrap,
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=pki.ca,
        kafka_ssl_certfile=pki.client_cert,
        kafka_ssl_keyfile=pki.client_key,
    )

    assert await connection_problem(settings) is None
    assert settings.topic_customer_path in await ensure_topics(settings)
    producer = make_producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic_customer_path, b"over-tls", key=b"person")
    finally:
        await producer.stop()
    records = [r.value async for r in read_topic(settings, settings.topic_customer_path)]
    assert records == [b"over-tls"]


async def test_a_client_without_a_certificate_is_refused(
    tls_kafka: tuple[LocalKafka, Pki],
) -> None:
    kafka, pki = tls_kafka
    settings = settings_for(kafka.bootstrap, kafka_security_protocol="SSL", kafka_ssl_cafile=pki.ca)

    assert not await broker_answers(settings, timeout_s=3)
    problem = await connection_problem(settings, timeout_s=3)
    assert problem is not None
    assert problem.refused, problem.message
    assert "want a client certificate (HUB_KAFKA_SSL_CERTFILE)" in problem.message


async def test_a_broker_signed_by_another_ca_is_not_trusted(
    tls_kafka: tuple[LocalKafka, Pki],
) -> None:
    kafka, pki = tls_kafka
    settings = settings_for(
        kafka.bootstrap,
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=pki.other_ca,
        kafka_ssl_certfile=pki.client_cert,
        kafka_ssl_keyfile=pki.client_key,
    )

    assert not await broker_answers(settings, timeout_s=3)
    problem = await connection_problem(settings, timeout_s=3)
    assert problem is not None
    assert problem.refused
    assert "TLS handshake" in problem.message
    assert "CERTIFICATE_VERIFY_FAILED" in problem.message


@pytest.fixture(scope="module")
def sasl_ssl_kafka(pki: Pki) -> Iterator[LocalKafka]:
    """The production shape (deploy/k8s): TLS without client certificates, SCRAM-SHA-512 over it."""
    with started_local_kafka(
        tls=BrokerTls(keystore=pki.broker_keystore, truststore=pki.ca, client_auth=False),
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username=USER,
        kafka_sasl_password=PASSWORD,
        kafka_ssl_cafile=pki.ca,
    ) as kafka:
        yield kafka


@pytest.mark.parametrize(("password", "works"), [(PASSWORD, True), ("not-the-password", False)])
async def test_scram_over_tls_as_in_production(
    sasl_ssl_kafka: LocalKafka, pki: Pki, password: str, works: bool
) -> None:
    settings = settings_for(
        sasl_ssl_kafka.bootstrap,
        environment="production",
        pseudonym_secret="a-production-like-secret-0123456789",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username=USER,
        kafka_sasl_password=password,
        kafka_ssl_cafile=pki.ca,
    )

    problem = await connection_problem(settings)
    if not works:
        assert problem is not None
        assert f"refused the SASL login of user {USER}" in problem.message
        return
    assert problem is None
    await ensure_topics(settings)
    producer = make_producer(settings, transactional_id=f"test-sasl-ssl-{uuid.uuid4().hex[:8]}")
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send(settings.topic_customer_path, b"sasl-ssl", key=b"person")
    finally:
        await producer.stop()
    assert [r.value async for r in read_topic(settings, settings.topic_customer_path)] == [
        b"sasl-ssl"
    ]
