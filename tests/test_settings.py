"""Settings: empty variables, Kafka security completeness, and what production refuses."""

from __future__ import annotations

import base64
import os
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from hub.kafka.clients import security_options
from hub.settings import HubSettings
from tests.conftest import REPO_ROOT

REAL_SECRET = "an-employment-area-key-of-some-length"
REAL_KEK = "2026-12:" + base64.b64encode(bytes(range(32))).decode()


@pytest.fixture(autouse=True)
def _no_hub_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only what a test sets: no HUB_* from the caller's shell, no .env from the checkout."""
    for name in [n for n in os.environ if n.startswith("HUB_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_empty_variables_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_INGEST_CLIENTS_FILE", "")
    monkeypatch.setenv("HUB_SCHEMA_REGISTRY_URL", "")
    monkeypatch.setenv("HUB_XROAD_CA_BUNDLE", "")
    monkeypatch.setenv("HUB_KAFKA_BOOTSTRAP", "")

    settings = HubSettings()

    assert settings.ingest_clients_file is None
    assert settings.schema_registry_url is None
    assert settings.xroad_ca_bundle is None
    assert settings.kafka_bootstrap == "127.0.0.1:9092"


def test_empty_lines_in_dotenv_count_as_unset(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("HUB_INGEST_CLIENTS_FILE=\nHUB_KAFKA_SSL_CAFILE=\n")

    settings = HubSettings()

    assert settings.ingest_clients_file is None
    assert settings.kafka_ssl_cafile is None


def test_development_is_the_default_and_warns_about_the_secret() -> None:
    settings = HubSettings()

    assert settings.environment == "development"
    assert any("development secret" in w for w in settings.development_warnings())
    assert any("development key-encryption key" in w for w in settings.development_warnings())
    assert HubSettings(pseudonym_secret=REAL_SECRET, kek=REAL_KEK).development_warnings() == []


def test_production_refuses_the_development_key_encryption_key_where_keys_are_used() -> None:
    """A production reporting job holds no key access and needs no KEK; a process that builds
    the key-encryption keys with the development one is refused."""
    from hub.privacy.kek import KekError, build_kek

    production = HubSettings(environment="production", pseudonym_secret=REAL_SECRET, **_tls_scram())
    with pytest.raises(KekError, match="refuses the development key-encryption key"):
        build_kek(production)
    build_kek(production.model_copy(update={"kek": SecretStr(REAL_KEK)}))


def test_vault_needs_an_address_and_exactly_one_token_source(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="needs HUB_VAULT_ADDR"):
        HubSettings(kms="vault", vault_token="t")
    with pytest.raises(ValidationError, match="exactly one of HUB_VAULT_TOKEN"):
        HubSettings(
            kms="vault",
            vault_addr="http://127.0.0.1:8200",
            vault_token="t",
            vault_token_file=tmp_path / "token",
        )
    vault = HubSettings(kms="vault", vault_addr="http://127.0.0.1:8200", vault_token="t")
    assert not vault.uses_dev_kek


def test_development_warns_about_plaintext_kafka_off_this_machine() -> None:
    remote = HubSettings(pseudonym_secret=REAL_SECRET, kafka_bootstrap="kafka.example.fi:9092")

    assert any("not encrypted" in w for w in remote.development_warnings())


def test_production_refuses_the_development_secret() -> None:
    with pytest.raises(ValidationError, match="refuses the development pseudonym secret"):
        HubSettings(environment="production", **_tls_scram())


@pytest.mark.parametrize(
    "security",
    [
        {},
        {
            "kafka_security_protocol": "SASL_PLAINTEXT",
            "kafka_sasl_mechanism": "SCRAM-SHA-512",
            "kafka_sasl_username": "u",
            "kafka_sasl_password": "p",
        },
        {"kafka_security_protocol": "SSL"},  # encrypted, but no client identity
    ],
    ids=["plaintext", "sasl-without-tls", "tls-without-identity"],
)
def test_production_refuses_kafka_without_tls_and_identity(security: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match="refuses Kafka without TLS and a client identity"):
        HubSettings(environment="production", pseudonym_secret=REAL_SECRET, **security)


def test_production_accepts_tls_with_scram_or_a_client_certificate(tmp_path: Path) -> None:
    cert = tmp_path / "user.crt"
    cert.write_text("not read by the settings")

    HubSettings(
        environment="production", pseudonym_secret=REAL_SECRET, kek=REAL_KEK, **_tls_scram()
    )
    HubSettings(
        environment="production",
        pseudonym_secret=REAL_SECRET,
        kek=REAL_KEK,
        kafka_security_protocol="SSL",
        kafka_ssl_certfile=cert,
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "needs HUB_KAFKA_SASL_MECHANISM"),
        (
            {
                "kafka_security_protocol": "SASL_SSL",
                "kafka_sasl_mechanism": "PLAIN",
                "kafka_sasl_username": "u",
            },
            "exactly one of HUB_KAFKA_SASL_PASSWORD",
        ),
        ({"kafka_sasl_username": "u"}, "HUB_KAFKA_SASL_* settings need"),
        ({"kafka_ssl_cafile": "ca.pem"}, "HUB_KAFKA_SSL_* files need"),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_keyfile": "k.pem"},
            "HUB_KAFKA_SSL_KEYFILE needs HUB_KAFKA_SSL_CERTFILE",
        ),
    ],
)
def test_half_configured_kafka_security_is_an_error(settings: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("*", r"\*")):
        HubSettings(**settings)  # type: ignore[arg-type]


def test_security_options_carry_sasl_and_tls(tmp_path: Path) -> None:
    password_file = tmp_path / "password"
    password_file.write_text("from-the-file\n")
    options = security_options(
        HubSettings(**_tls_scram(password=None), kafka_sasl_password_file=password_file)
    )

    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "te-hub-ingest"
    assert options["sasl_plain_password"] == "from-the-file"
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert options["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    assert security_options(HubSettings()) == {"security_protocol": "PLAINTEXT"}


def test_a_command_in_production_with_the_development_secret_stops_with_one_line(
    tmp_path: Path,
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hub", "topics", "describe"],
        env={"PATH": str(Path(sys.executable).parent), "HUB_ENVIRONMENT": "production"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("Error: invalid configuration: HUB_ENVIRONMENT=production")
    assert "development pseudonym secret" in result.stderr
    assert "without TLS" in result.stderr
    assert str(REPO_ROOT) not in result.stderr


@pytest.mark.parametrize(
    "command", [["serve"], ["poll", "--once"], ["simulate", "--jobseekers", "1"]]
)
def test_long_running_commands_refuse_production_with_the_development_secret(
    tmp_path: Path, command: list[str]
) -> None:
    result = _hub(tmp_path, command, HUB_ENVIRONMENT="production")

    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert "refuses the development pseudonym secret" in result.stderr


def test_serve_in_development_warns_and_names_an_unreachable_kafka_in_one_line(
    tmp_path: Path,
) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = _hub(
        tmp_path, ["serve"], HUB_KAFKA_BOOTSTRAP=f"127.0.0.1:{port}", HUB_LOG_JSON="false"
    )

    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "pseudonyms use the built-in development secret" in output
    assert [line for line in result.stderr.splitlines() if line.startswith("Error:")] == [
        f"Error: cannot start the ingest API: 127.0.0.1:{port}: ConnectionRefusedError "
        f"[Errno 111] Connect call failed ('127.0.0.1', {port})"
    ]
    assert "Traceback" not in output


def test_hub_broker_says_in_one_line_that_it_serves_no_tls(tmp_path: Path) -> None:
    result = _hub(tmp_path, ["broker", "status"], HUB_KAFKA_SECURITY_PROTOCOL="SSL")

    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert "`hub broker` serves PLAINTEXT or SASL_PLAINTEXT" in result.stderr


def _hub(folder: Path, command: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub", *command],
        env={"PATH": str(Path(sys.executable).parent), **env},
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _tls_scram(password: str | None = "p") -> dict[str, str]:
    options = {
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": "SCRAM-SHA-512",
        "kafka_sasl_username": "te-hub-ingest",
    }
    if password is not None:
        options["kafka_sasl_password"] = password
    return options
