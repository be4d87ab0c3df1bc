"""All configuration of the hub in one validated place.

Every setting comes from an environment variable with the ``HUB_`` prefix (or a ``.env`` file in
the working directory); the README lists them. Defaults are the embedded local setup: a Kafka
broker on 127.0.0.1 started by ``hub broker start`` and no schema registry.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
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
    log_level: str = Field(default="INFO", description="Log level of the structured logs.")
    log_json: bool = Field(default=True, description="JSON logs (false: console rendering).")

    @property
    def uses_dev_secret(self) -> bool:
        return self.pseudonym_secret.get_secret_value() == DEV_PSEUDONYM_SECRET


@lru_cache(maxsize=1)
def get_settings() -> HubSettings:
    return HubSettings()
