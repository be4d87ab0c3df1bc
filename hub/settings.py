"""All configuration of the hub in one validated place.

Every setting comes from an environment variable with the ``HUB_`` prefix (or a ``.env`` file in
the working directory); the README lists them. Defaults are the embedded local setup: a Kafka
broker on 127.0.0.1 started by ``hub broker start`` and no schema registry. The X-Road settings
have no defaults: they name a real security server and member, and only ``hub poll`` needs them.

``HUB_ENVIRONMENT=production`` turns the development conveniences into start-up errors: the
built-in pseudonym secret and a Kafka connection without TLS and a client identity are refused
(:meth:`HubSettings.development_warnings` lists what a development run only warns about). An
empty variable counts as unset, so ``HUB_INGEST_CLIENTS_FILE=`` is no file, not the path ``.``.
"""

from __future__ import annotations

from functools import lru_cache
from ipaddress import ip_address
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, HttpUrl, SecretStr, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_PSEUDONYM_SECRET = "local-development-only-not-a-secret"

Environment = Literal["development", "production"]
KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
KafkaSaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class HubSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="HUB_", env_file=".env", extra="ignore", env_ignore_empty=True
    )

    environment: Environment = Field(
        default="development",
        description="development: the embedded local setup, with warnings; production: refuse "
        "the development pseudonym secret and Kafka without TLS and a client identity.",
    )

    state_dir: Path = Field(
        default=Path(".hub"),
        description="Folder for local state: Kafka jars cache, broker data and logs.",
    )
    kafka_bootstrap: str = Field(
        default="127.0.0.1:9092", description="Kafka bootstrap servers, comma separated."
    )
    kafka_security_protocol: KafkaSecurityProtocol = Field(
        default="PLAINTEXT",
        description="How every hub Kafka client connects: PLAINTEXT, SSL, SASL_PLAINTEXT or "
        "SASL_SSL.",
    )
    kafka_sasl_mechanism: KafkaSaslMechanism | None = Field(
        default=None, description="SASL mechanism (with a SASL_* protocol)."
    )
    kafka_sasl_username: str | None = Field(default=None, description="SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(default=None, description="SASL password.")
    kafka_sasl_password_file: Path | None = Field(
        default=None,
        description="File holding the SASL password (a mounted Secret), instead of the password.",
    )
    kafka_ssl_cafile: Path | None = Field(
        default=None,
        description="PEM CA bundle that signs the brokers' certificates (system CAs when unset).",
    )
    kafka_ssl_certfile: Path | None = Field(
        default=None, description="PEM client certificate for mutual TLS (SSL protocol)."
    )
    kafka_ssl_keyfile: Path | None = Field(
        default=None, description="PEM key of the client certificate, when not in the certfile."
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
    topic_source_positions: str = Field(
        default="te.hub.source-positions.v1",
        description="Compacted topic of source connectors' positions (cursors), keyed by source "
        "and written in the same transaction as the events read up to there.",
    )
    topic_outbox_prefix: str = Field(
        default="te.hub.outbox.",
        pattern=r"^[A-Za-z0-9._-]{1,200}$",
        description="Start of the outbox topic names: the router writes what a destination may "
        "receive to <prefix><destination>.v1, its delivery workers read it from there.",
    )
    topic_router_state: str = Field(
        default="te.hub.router-state.v1",
        description="Compacted changelog of the router's per-person state (who pays the person), "
        "partitioned like the log and written in the router's transaction.",
    )
    topic_disclosures: str = Field(
        default="te.hub.disclosures.v1",
        description="Disclosure log: one hash-chained receipt per delivery (to whom, which "
        "fields, on what legal basis).",
    )
    topic_person_keys: str = Field(
        default="te.hub.person-keys.v1",
        description="Compacted topic of the per-person data keys, each wrapped by the "
        "key-encryption key (record key <pseudonym>/<key id>); a tombstone forgets a person.",
    )
    routes_file: Path | None = Field(
        default=None,
        description="TOML routes file (destinations, directories, routes); unset: the default "
        "routes shipped in the package.",
    )
    router_transactional_id: str = Field(
        default="te-hub-router-1",
        pattern=r"^[A-Za-z0-9._-]{1,200}$",
        description="Kafka transactional id of one hub route process; unique per running "
        "router, stable across its restarts (zombies are fenced by the consumer group "
        "generation, KIP-447).",
    )
    router_transaction_timeout_s: float = Field(
        default=30.0,
        ge=1,
        le=900,
        description="Kafka transaction timeout of the router: how long a killed router's open "
        "transaction can hold back read_committed readers of its outboxes.",
    )
    router_session_timeout_s: float = Field(
        default=20.0,
        ge=6,
        le=300,
        description="Consumer group session timeout of hub route: how long the group waits for a "
        "router that stopped answering before its partitions go to the others (a router "
        "restarted within it keeps its partitions, as a static member).",
    )
    delivery_max_in_flight: int = Field(
        default=64,
        ge=1,
        le=10_000,
        description="Most deliveries one hub deliver process has outstanding at once.",
    )
    delivery_timeout_s: float = Field(
        default=10.0, gt=0, description="Timeout of one delivery request to a receiver."
    )
    archive_dir: Path = Field(
        default=Path(".hub/archive"),
        description="Root of the Avro archive (hub archive): <dir>/<topic>/date=YYYY-MM-DD/"
        "part-<partition>-<first offset>.avro, read by hub replay --from-archive, DuckDB, Spark "
        "or Trino.",
    )
    archive_codec: Literal["deflate", "zstandard"] = Field(
        default="zstandard", description="Compression codec of the archive files."
    )
    archive_group: str = Field(
        default="te-hub-archive",
        pattern=r"^[A-Za-z0-9._-]{1,200}$",
        description="Consumer group of hub archive (its committed offsets are the archive's "
        "progress).",
    )
    reporting_store: Path = Field(
        default=Path(".hub/reporting.duckdb"),
        description="DuckDB file of the reporting store (hub replay --into store, hub report, "
        "GET /v1/indicators).",
    )
    report_dir: Path = Field(
        default=Path(".hub/reports"),
        description="Folder where hub report writes its CSV, Parquet and HTML files.",
    )
    report_min_cell: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="Smallest cell shown below the employment-area level (municipality, team, "
        "expert) in hub report's files and GET /v1/indicators: a value computed from 1 to this "
        "- 1 people or facts is suppressed (value and n empty, suppressed true); a 0 is shown; "
        "never in the store.",
    )
    receivers_host: str = Field(
        default="127.0.0.1", description="Address the local receivers (hub receivers) listen on."
    )
    receivers_port: int = Field(
        default=8700, ge=1, le=65535, description="Port of the local receivers (hub receivers)."
    )
    ingest_transactional_id: str = Field(
        default="te-hub-ingest-1",
        description="Kafka transactional id of this ingest process; unique per running replica.",
    )
    writer_id_prefix: str = Field(
        default="te-hub",
        pattern=r"^[A-Za-z0-9._-]{1,100}$",
        description="Start of the transactional ids that hub poll and hub import derive "
        "(<prefix>-poll-<digest>, <prefix>-import-<digest>): transactional ids are global in a "
        "Kafka cluster, so each hub deployment sharing one needs its own prefix.",
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
    kms: Literal["local", "vault"] = Field(
        default="local",
        description="Where the key-encryption key lives: local (HUB_KEK or HUB_KEK_FILE) or "
        "vault (HashiCorp Vault's transit engine, HUB_VAULT_*).",
    )
    kek: SecretStr | None = Field(
        default=None,
        description="Local key-encryption keys, '<id>:<base64 of 32 bytes>' separated by commas; "
        "the first wraps new data keys, the others only unwrap (rotation). Unset (and no "
        "HUB_KEK_FILE): a built-in development key, refused with HUB_ENVIRONMENT=production.",
    )
    kek_file: Path | None = Field(
        default=None,
        description="File holding the local key-encryption keys in the HUB_KEK format (one per "
        "line or comma separated); used when HUB_KEK is unset.",
    )
    vault_addr: HttpUrl | None = Field(
        default=None, description="Vault address, e.g. https://vault.example.fi:8200."
    )
    vault_token: SecretStr | None = Field(
        default=None, description="Vault token with the transit encrypt/decrypt/rewrap policy."
    )
    vault_token_file: Path | None = Field(
        default=None,
        description="File holding the Vault token (used when HUB_VAULT_TOKEN is "
        "unset; e.g. written by a Vault agent).",
    )
    vault_namespace: str | None = Field(
        default=None, description="Vault Enterprise namespace (X-Vault-Namespace), if any."
    )
    vault_transit_mount: str = Field(
        default="transit",
        pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$",
        description="Mount path of the transit secrets engine.",
    )
    vault_transit_key: str = Field(
        default="te-hub-person-keys",
        pattern=r"^[A-Za-z0-9_.-]{1,128}$",
        description="Name of the transit key that wraps the per-person data keys.",
    )
    vault_ca_bundle: Path | None = Field(
        default=None, description="PEM CA bundle for Vault's TLS certificate."
    )
    vault_timeout_s: float = Field(default=10.0, gt=0, description="Timeout of one Vault request.")
    schema_registry_url: str | None = Field(
        default=None,
        description="Confluent-compatible schema registry (its Confluent API root); when set, "
        "new values are written in the Confluent wire format instead of Avro single-object "
        "encoding. Values of both framings are always read, by their marker byte.",
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
    ingest_body_read_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Seconds a request body may take to arrive, from the first read: a slower "
        "body is answered 408 and its connection closed.",
    )
    api_host: str = Field(
        default="127.0.0.1",
        description="Address `hub serve` listens on (the container image sets 0.0.0.0).",
    )
    log_level: str = Field(default="INFO", description="Log level of the structured logs.")
    log_json: bool = Field(default=True, description="JSON logs (false: console rendering).")

    @property
    def uses_dev_kek(self) -> bool:
        return self.kms == "local" and self.kek is None and self.kek_file is None

    @property
    def uses_dev_secret(self) -> bool:
        return self.pseudonym_secret.get_secret_value() == DEV_PSEUDONYM_SECRET

    @property
    def kafka_uses_tls(self) -> bool:
        return self.kafka_security_protocol in ("SSL", "SASL_SSL")

    @property
    def kafka_uses_sasl(self) -> bool:
        return self.kafka_security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def kafka_sasl_password_value(self) -> str | None:
        """The SASL password, read from its file when one is named (so a rotated Secret counts)."""
        if self.kafka_sasl_password_file is not None:
            return self.kafka_sasl_password_file.read_text().strip()
        return (
            None
            if self.kafka_sasl_password is None
            else self.kafka_sasl_password.get_secret_value()
        )

    @model_validator(mode="after")
    def _kafka_security_is_complete(self) -> Self:
        """A half-configured security setting is an error, not silently ignored."""
        problems: list[str] = []
        if self.kafka_uses_sasl:
            if self.kafka_sasl_mechanism is None or self.kafka_sasl_username is None:
                problems.append(
                    f"HUB_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                    "HUB_KAFKA_SASL_MECHANISM and HUB_KAFKA_SASL_USERNAME"
                )
            if (self.kafka_sasl_password is None) == (self.kafka_sasl_password_file is None):
                problems.append(
                    "give exactly one of HUB_KAFKA_SASL_PASSWORD and HUB_KAFKA_SASL_PASSWORD_FILE"
                )
        elif any(
            v is not None
            for v in (
                self.kafka_sasl_mechanism,
                self.kafka_sasl_username,
                self.kafka_sasl_password,
                self.kafka_sasl_password_file,
            )
        ):
            problems.append(
                "HUB_KAFKA_SASL_* settings need HUB_KAFKA_SECURITY_PROTOCOL SASL_PLAINTEXT or "
                f"SASL_SSL, not {self.kafka_security_protocol}"
            )
        tls_files = (self.kafka_ssl_cafile, self.kafka_ssl_certfile, self.kafka_ssl_keyfile)
        if not self.kafka_uses_tls and any(f is not None for f in tls_files):
            problems.append(
                "HUB_KAFKA_SSL_* files need HUB_KAFKA_SECURITY_PROTOCOL SSL or SASL_SSL, not "
                f"{self.kafka_security_protocol}"
            )
        if self.kafka_ssl_keyfile is not None and self.kafka_ssl_certfile is None:
            problems.append("HUB_KAFKA_SSL_KEYFILE needs HUB_KAFKA_SSL_CERTFILE")
        if self.kms == "vault":
            if self.vault_addr is None:
                problems.append("HUB_KMS=vault needs HUB_VAULT_ADDR")
            if (self.vault_token is None) == (self.vault_token_file is None):
                problems.append(
                    "HUB_KMS=vault needs exactly one of HUB_VAULT_TOKEN and HUB_VAULT_TOKEN_FILE"
                )
        if self.environment == "production":
            problems.extend(self._production_refusals())
        if problems:
            raise PydanticCustomError("hub_settings", "; ".join(problems))
        return self

    def _production_refusals(self) -> list[str]:
        refusals = []
        if self.uses_dev_secret:
            refusals.append(
                "HUB_ENVIRONMENT=production refuses the development pseudonym secret: set "
                "HUB_PSEUDONYM_SECRET to the employment area's key"
            )
        has_identity = self.kafka_uses_sasl or self.kafka_ssl_certfile is not None
        if not (self.kafka_uses_tls and has_identity):
            refusals.append(
                "HUB_ENVIRONMENT=production refuses Kafka without TLS and a client identity "
                f"(HUB_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol}): use SASL_SSL, or "
                "SSL with HUB_KAFKA_SSL_CERTFILE"
            )
        return refusals

    def development_warnings(self) -> list[str]:
        """What a development run does that production refuses (logged at start)."""
        warnings = []
        if self.uses_dev_secret:
            warnings.append(
                "pseudonyms use the built-in development secret; set HUB_PSEUDONYM_SECRET "
                "(refused with HUB_ENVIRONMENT=production)"
            )
        if self.uses_dev_kek:
            warnings.append(
                "personal data keys are wrapped with the built-in development key-encryption "
                "key; set HUB_KEK or HUB_KEK_FILE, or HUB_KMS=vault (refused with "
                "HUB_ENVIRONMENT=production)"
            )
        if not self.kafka_uses_tls and not _all_loopback(self.kafka_bootstrap):
            warnings.append(
                f"Kafka traffic to {self.kafka_bootstrap} is not encrypted "
                f"(HUB_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol}); "
                "refused with HUB_ENVIRONMENT=production"
            )
        return warnings


def _all_loopback(bootstrap: str) -> bool:
    """Whether every bootstrap server is on this machine (plaintext never leaves it then)."""
    for server in bootstrap.split(","):
        host = server.strip().rpartition(":")[0].strip("[]")
        if host == "localhost":
            continue
        try:
            if not ip_address(host).is_loopback:
                return False
        except ValueError:
            return False
    return True


@lru_cache(maxsize=1)
def get_settings() -> HubSettings:
    return HubSettings()
