"""All configuration of the hub in one validated place.

Every setting comes from an environment variable with the ``HUB_`` prefix (or a ``.env`` file in
the working directory); the README lists them. Defaults are the embedded local setup: a Kafka
broker on 127.0.0.1 started by ``hub broker start`` and no schema registry. The X-Road settings
have no defaults: they name a real security server and member, and only ``hub poll`` needs them.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, HttpUrl, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_PSEUDONYM_SECRET = "local-development-only-not-a-secret"


class HubSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HUB_", env_file=".env", extra="ignore")

    state_dir: Path = Field(
        default=Path(".hub"),
        description="Folder for local state: Kafka jars cache, broker data and logs.",
    )
    kafka_bootstrap: str = Field(
        default="127.0.0.1:9092", description="Kafka bootstrap servers, comma separated."
    )
    kafka_version: str = Field(
        default="4.2.0", description="Apache Kafka version the local broker runs (Maven Central)."
    )
    kafka_port: int = Field(default=9092, description="Client port of the local broker.")
    kafka_controller_port: int = Field(
        default=9093, description="KRaft controller port of the local broker."
    )
    topic_customer_path: str = Field(
        default="te.customer-path.v1", description="The customer-path event log topic."
    )
    topic_dead_letter: str = Field(
        default="te.hub.dead-letter.v1",
        description="Dead-letter topic: records that could not be decoded or delivered.",
    )
    topic_ingest_receipts: str = Field(
        default="te.hub.ingest-receipts.v1",
        description="Compacted topic of idempotency receipts of the inbound connectors.",
    )
    ingest_transactional_id: str = Field(
        default="te-hub-ingest-1",
        description="Kafka transactional id of this ingest process; unique per running replica.",
    )
    ingest_write_timeout_s: float = Field(
        default=10.0, gt=0, description="How long a write may wait for Kafka before a 503."
    )
    topic_partitions: int = Field(default=12, ge=1, description="Partitions of hub topics.")
    topic_replication_factor: int = Field(
        default=1, ge=1, description="Replication factor (3 in production)."
    )
    pseudonym_secret: SecretStr = Field(
        default=SecretStr(DEV_PSEUDONYM_SECRET),
        description="HMAC key of the employment area for person pseudonyms.",
    )
    schema_registry_url: str | None = Field(
        default=None,
        description="Confluent-compatible schema registry; when set, the Confluent wire format "
        "is used instead of Avro single-object encoding.",
    )
    xroad_security_server_url: HttpUrl | None = Field(
        default=None,
        description="Base URL of the hub's own X-Road security server (Suomi.fi-palveluväylä), "
        "e.g. https://ss.example.fi:8443; the REST path /r1/... is appended.",
    )
    xroad_client: str | None = Field(
        default=None,
        pattern=r"^[^/\s]+/[^/\s]+/[^/\s]+/[^/\s]+$",
        description="The hub's X-Road client subsystem, INSTANCE/CLASS/MEMBER/SUBSYSTEM "
        "(the X-Road-Client header).",
    )
    xroad_user_id: str | None = Field(
        default=None,
        description="X-Road-UserId header: the user or system account on whose behalf the hub "
        "asks, for the provider's audit log; not sent when unset.",
    )
    xroad_client_cert: Path | None = Field(
        default=None,
        description="PEM client certificate for mutual TLS with the security server.",
    )
    xroad_client_key: Path | None = Field(
        default=None,
        description="PEM private key of the client certificate (when not inside the cert file).",
    )
    xroad_ca_bundle: Path | None = Field(
        default=None,
        description="PEM CA bundle that signs the security server's certificate "
        "(system CAs when unset).",
    )
    xroad_timeout_s: float = Field(
        default=30.0, gt=0, description="Timeout of one X-Road request (connect, read, write)."
    )
    poller_service: str | None = Field(
        default=None,
        description="Default X-Road service polled by `hub poll`, "
        "INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE.",
    )
    poller_page_size: int = Field(
        default=100, ge=1, le=1000, description="Change-feed items asked for per request."
    )
    poller_interval_s: float = Field(
        default=30.0, gt=0, description="Pause between polls once the feed has nothing more."
    )
    poller_backoff_initial_s: float = Field(
        default=1.0, gt=0, description="First retry delay ceiling after an error (full jitter)."
    )
    poller_backoff_max_s: float = Field(
        default=60.0, gt=0, description="Largest retry delay; also the delay after a 4xx."
    )
    ingest_clients_file: Path | None = Field(
        default=None,
        description="TOML file of the ingest API's clients, their key hashes and scopes; "
        "unset: no client can authenticate.",
    )
    ingest_clock_skew_s: int = Field(
        default=300,
        ge=0,
        le=86_400,
        description="Seconds a client's clock may run ahead: occurred_at may be this far in the "
        "future, and payload dates this far past occurred_at.",
    )
    ingest_bulk_max_items: int = Field(
        default=5000, ge=1, description="Most events one bulk request may carry."
    )
    ingest_bulk_max_bytes: int = Field(
        default=16 * 1024 * 1024, ge=1024, description="Largest bulk request body in bytes."
    )
    log_level: str = Field(default="INFO", description="Log level of the structured logs.")
    log_json: bool = Field(default=True, description="JSON logs (false: console rendering).")

    @property
    def uses_dev_secret(self) -> bool:
        return self.pseudonym_secret.get_secret_value() == DEV_PSEUDONYM_SECRET


@lru_cache(maxsize=1)
def get_settings() -> HubSettings:
    return HubSettings()
