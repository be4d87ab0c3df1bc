"""The hub's topics as data, and their idempotent creation.

Topic settings are part of the hub's contract, not broker defaults: the customer-path log keeps
every event forever (retention -1) because consumers rebuild their state by replaying it, and it
must refuse a write that fewer than ``min.insync.replicas`` replicas acknowledged (producers use
acks=all). Keeping the specs here lets ``hub topics create`` on a laptop and the Strimzi
KafkaTopic manifests in deploy/k8s describe the same topics.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError, for_code
from pydantic import BaseModel, ConfigDict, Field

from hub.kafka.clients import make_admin
from hub.settings import HubSettings

log = structlog.get_logger(__name__)

DEAD_LETTER_RETENTION_MS = 30 * 24 * 60 * 60 * 1000
DEAD_LETTER_PARTITIONS = 3
RECEIPT_PARTITIONS = 6
OUTBOX_RETENTION_MS = 7 * 24 * 60 * 60 * 1000
PERSON_KEY_PARTITIONS = 6
#: Person-keys topic: a segment is rolled (and so can be compacted) after an hour at most, any
#: record waits at most a day for compaction, and a tombstone stays readable for a day after
#: compaction (a follower offline longer still refuses the keys: the forgotten marker stays).
PERSON_KEY_SEGMENT_MS = 60 * 60 * 1000
PERSON_KEY_MAX_COMPACTION_LAG_MS = 24 * 60 * 60 * 1000
PERSON_KEY_DELETE_RETENTION_MS = 24 * 60 * 60 * 1000
# The configs `hub topics describe` shows: the ones the specs set, plus the size limit.
DESCRIBED_CONFIGS = (
    "cleanup.policy",
    "retention.ms",
    "retention.bytes",
    "min.insync.replicas",
    "message.timestamp.type",
    "max.message.bytes",
)


class TopicSpec(BaseModel):
    """What a hub topic must look like; ``configs`` are Kafka topic-level configs."""

    model_config = ConfigDict(frozen=True)

    name: str
    partitions: int = Field(ge=1)
    replication_factor: int = Field(ge=1)
    configs: dict[str, str] = Field(default_factory=dict)
    purpose: str


class TopicDescription(BaseModel):
    """A topic as the broker reports it."""

    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str]


class TopicMismatchError(RuntimeError):
    """An existing topic cannot serve as the spec says (e.g. too few partitions)."""


def topic_specs(settings: HubSettings) -> list[TopicSpec]:
    """The hub's topics for these settings (partition count and replication come from them)."""
    rf = settings.topic_replication_factor
    min_isr = str(min(2, rf))
    return [
        TopicSpec(
            name=settings.topic_customer_path,
            partitions=settings.topic_partitions,
            replication_factor=rf,
            configs={
                "cleanup.policy": "delete",
                "retention.ms": "-1",
                "retention.bytes": "-1",
                "min.insync.replicas": min_isr,
                "message.timestamp.type": "CreateTime",
            },
            purpose=(
                "Customer-path event log keyed by person pseudonym: the source of truth that "
                "consumers replay, so history is kept forever and per-person order is kept per "
                "partition."
            ),
        ),
        TopicSpec(
            name=settings.topic_dead_letter,
            partitions=min(DEAD_LETTER_PARTITIONS, settings.topic_partitions),
            replication_factor=rf,
            configs={
                "cleanup.policy": "delete",
                "retention.ms": str(DEAD_LETTER_RETENTION_MS),
                "min.insync.replicas": min_isr,
                "message.timestamp.type": "CreateTime",
            },
            purpose=(
                "Records a consumer could not process, with the reason in headers; kept 30 days "
                "for inspection and replay after a fix."
            ),
        ),
        TopicSpec(
            name=settings.topic_ingest_receipts,
            partitions=min(RECEIPT_PARTITIONS, settings.topic_partitions),
            replication_factor=rf,
            configs={
                "cleanup.policy": "compact",
                "min.insync.replicas": min_isr,
                "min.compaction.lag.ms": str(24 * 60 * 60 * 1000),
            },
            purpose=(
                "One receipt per accepted submission, keyed by its dedupe key and written in the "
                "same transaction as the event: the durable memory of idempotency keys."
            ),
        ),
        TopicSpec(
            name=settings.topic_source_positions,
            partitions=1,
            replication_factor=rf,
            configs={
                "cleanup.policy": "compact",
                "min.insync.replicas": min_isr,
            },
            purpose=(
                "The position (cursor) of each source connector, keyed by source and written in "
                "the same transaction as the events read up to it: a restart resumes exactly "
                "after what is in the log."
            ),
        ),
        TopicSpec(
            name=settings.topic_router_state,
            partitions=settings.topic_partitions,
            replication_factor=rf,
            configs={
                "cleanup.policy": "compact",
                "min.insync.replicas": min_isr,
            },
            purpose=(
                "The router's per-person state (who pays the person), one record per person, "
                "written to the partition of the person's log partition in the router's "
                "transaction: a router taking over a partition restores it from here."
            ),
        ),
        TopicSpec(
            name=settings.topic_disclosures,
            partitions=min(RECEIPT_PARTITIONS, settings.topic_partitions),
            replication_factor=rf,
            configs={
                "cleanup.policy": "delete",
                "retention.ms": "-1",
                "retention.bytes": "-1",
                "min.insync.replicas": min_isr,
            },
            purpose=(
                "Disclosure log: one receipt per delivery (destination, event, person pseudonym, "
                "fields, legal basis, status), hash-chained per destination and outbox partition "
                "so that an altered or removed entry is detected; kept forever (GDPR art. 15)."
            ),
        ),
        person_keys_spec(settings),
    ]


def person_keys_spec(settings: HubSettings) -> TopicSpec:
    """The compacted topic of the per-person data keys (see :mod:`hub.privacy.keystore`).

    Compaction is what forgets: a tombstone removes the wrapped key from the broker's log once
    the segment holding it is compacted, so segments roll hourly, any record is compacted
    within a day (``max.compaction.lag.ms``) and a tombstone itself is kept a day
    (``delete.retention.ms``) for followers that were away. Never ``delete`` retention: that
    would erase everybody's personal fields when the retention ran out.
    """
    rf = settings.topic_replication_factor
    return TopicSpec(
        name=settings.topic_person_keys,
        partitions=min(PERSON_KEY_PARTITIONS, settings.topic_partitions),
        replication_factor=rf,
        configs={
            "cleanup.policy": "compact",
            "min.insync.replicas": str(min(2, rf)),
            "segment.ms": str(PERSON_KEY_SEGMENT_MS),
            "min.cleanable.dirty.ratio": "0.01",
            "min.compaction.lag.ms": "0",
            "max.compaction.lag.ms": str(PERSON_KEY_MAX_COMPACTION_LAG_MS),
            "delete.retention.ms": str(PERSON_KEY_DELETE_RETENTION_MS),
        },
        purpose=(
            "Per-person data keys wrapped by the key-encryption key, record key "
            "<pseudonym>/<key id>, all of a person's records in the partition of the pseudonym; "
            "a tombstone deletes a key and <pseudonym>/forgotten marks the person forgotten "
            "(crypto-shredding: their sealed personal fields can no longer be read); "
            "<pseudonym>/restricted restricts processing (GDPR art. 18), a tombstone lifts it."
        ),
    )


def outbox_topic(settings: HubSettings, destination: str) -> str:
    """The outbox topic of one destination: what the router decided it may receive."""
    return f"{settings.topic_outbox_prefix}{destination}.v1"


def outbox_spec(settings: HubSettings, destination: str) -> TopicSpec:
    """An outbox is keyed by person pseudonym like the log, so a person's events stay in order.

    Kept 7 days: long enough for a receiver that is down over a long weekend; what was
    delivered is in the disclosure log, and the log itself can be routed again.
    """
    rf = settings.topic_replication_factor
    return TopicSpec(
        name=outbox_topic(settings, destination),
        partitions=settings.topic_partitions,
        replication_factor=rf,
        configs={
            "cleanup.policy": "delete",
            "retention.ms": str(OUTBOX_RETENTION_MS),
            "min.insync.replicas": str(min(2, rf)),
            "message.timestamp.type": "CreateTime",
        },
        purpose=f"Outbox of destination {destination}: projected events its workers deliver.",
    )


def _admin(settings: HubSettings) -> AIOKafkaAdminClient:
    return make_admin(settings)


async def ensure_topics(settings: HubSettings, extra: Sequence[TopicSpec] = ()) -> list[str]:
    """Create the hub topics that are missing; return the names created (empty if none).

    Safe to run on every deploy and from several processes at once: an existing topic, or one a
    concurrent run created first, is left as it is. ``extra`` adds specs beyond the fixed ones
    (the outboxes of the configured destinations). A topic with fewer partitions than its spec
    is an error, because keys would map to other partitions than the consumers were sized for.
    """
    # One spec per name (an ``extra`` may repeat a fixed one, e.g. the person-keys topic).
    specs = list({s.name: s for s in [*topic_specs(settings), *extra]}.values())
    admin = _admin(settings)
    await admin.start()
    try:
        existing = await _partition_counts(admin, [s.name for s in specs])
        _check_partitions(specs, existing)
        missing = [s for s in specs if s.name not in existing]
        if not missing:
            return []
        response = await admin.create_topics(
            [
                NewTopic(
                    name=s.name,
                    num_partitions=s.partitions,
                    replication_factor=s.replication_factor,
                    topic_configs=dict(s.configs),
                )
                for s in missing
            ]
        )
        created: list[str] = []
        raced: list[str] = []
        for topic_error in response.topic_errors:
            name, code = topic_error[0], topic_error[1]
            message = topic_error[2] if len(topic_error) > 2 else None
            if code == 0:
                created.append(name)
                continue
            error_type = for_code(code)
            if error_type is TopicAlreadyExistsError:
                raced.append(name)  # created concurrently, or not yet in this broker's metadata
                continue
            raise error_type(f"creating topic {name} failed: {message or error_type.__name__}")
        # The controller acknowledges a creation before brokers publish the topic: wait until
        # they do, so a producer started next finds it and a raced topic can be checked too.
        visible = await _wait_visible(admin, created + raced)
        _check_partitions(specs, visible)
        log.info("topics.created", topics=created, bootstrap=settings.kafka_bootstrap)
        return created
    finally:
        await admin.close()


def _check_partitions(specs: list[TopicSpec], existing: dict[str, int]) -> None:
    for spec in specs:
        have = existing.get(spec.name)
        if have is not None and have < spec.partitions:
            raise TopicMismatchError(
                f"topic {spec.name} exists with {have} partitions but the hub needs "
                f"{spec.partitions}; add partitions with kafka-topics --alter (this changes "
                "which partition a key maps to) or use a new topic version"
            )


async def _wait_visible(
    admin: AIOKafkaAdminClient, names: list[str], timeout_s: float = 15.0
) -> dict[str, int]:
    """Partition counts of ``names`` once all of them appear in the broker metadata."""
    async with asyncio.timeout(timeout_s):
        while True:
            counts = await _partition_counts(admin, names)
            if len(counts) == len(set(names)):
                return counts
            await asyncio.sleep(0.1)


async def describe_topics(settings: HubSettings) -> list[TopicDescription]:
    """Partitions, replication and the relevant configs of the hub topics that exist."""
    specs = topic_specs(settings)
    admin = _admin(settings)
    await admin.start()
    try:
        found = await _metadata(admin, [s.name for s in specs])
        if not found:
            return []
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in found]
        )
        configs = _configs_by_topic(responses)
        return [
            TopicDescription(
                name=name,
                partitions=len(found[name]["partitions"]),
                replication_factor=max(
                    (len(p["replicas"]) for p in found[name]["partitions"]), default=0
                ),
                configs={k: v for k, v in configs.get(name, {}).items() if k in DESCRIBED_CONFIGS},
            )
            for name in (s.name for s in specs)
            if name in found
        ]
    finally:
        await admin.close()


async def _metadata(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, dict[str, Any]]:
    """Metadata of those of ``names`` that exist.

    Only existing names are asked for: aiokafka's metadata request allows auto-creation, so on a
    broker with auto.create.topics.enable=true asking for a missing topic would create it with
    broker defaults instead of the spec.
    """
    present = set(await admin.list_topics()).intersection(names)
    if not present:
        return {}
    metadata = await admin.describe_topics(sorted(present))
    return {t["topic"]: t for t in metadata if t["error_code"] == 0}


async def _partition_counts(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    return {name: len(t["partitions"]) for name, t in (await _metadata(admin, names)).items()}


def _configs_by_topic(responses: list[Any]) -> dict[str, dict[str, str]]:
    """Flatten DescribeConfigs responses (resources of name + (key, value, ...) entries)."""
    result: dict[str, dict[str, str]] = {}
    for response in responses:
        for resource in response.to_object()["resources"]:
            entries = resource["config_entries"]
            result[resource["resource_name"]] = {
                e["config_names"]: e["config_value"] for e in entries
            }
    return result


async def partition_ids(settings: HubSettings, topic: str) -> list[int]:
    """Partition ids of an existing topic; LookupError naming the topic when it is missing."""
    admin = _admin(settings)
    await admin.start()
    try:
        found = await _metadata(admin, [topic])
    finally:
        await admin.close()
    if topic not in found:
        raise LookupError(f"topic {topic} does not exist on {settings.kafka_bootstrap}")
    return sorted(p["partition"] for p in found[topic]["partitions"])
