"""Reading a whole topic, partition by partition, without a consumer group.

Used where a process needs "everything up to now" (receipts on start-up, ``hub tail``, tests
that count events): the end offsets are taken when reading starts, and progress is judged by
the consumer position, which also moves past transaction markers that carry no record.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any, Final

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from hub.kafka.clients import make_consumer
from hub.kafka.topics import partition_ids
from hub.settings import HubSettings

#: How long :func:`settled_end` waits for transactions open on a partition to be decided: past
#: the producers' transaction timeout (aiokafka's 60 s), after which the broker aborts them.
SETTLE_TIMEOUT_S: Final = 90.0


async def settled_end(
    settings: HubSettings,
    consumer: Any,
    tp: TopicPartition,
    timeout_s: float = SETTLE_TIMEOUT_S,
) -> int:
    """The end of ``tp`` up to which a read_committed ``consumer`` sees every record written so
    far: the high watermark, once no transaction open below it is undecided.

    A read_committed consumer's end offset is the last stable offset, which stops at the first
    open transaction of *any* producer: a reader that stops there misses records committed
    after it (another writer's transaction on the same partition). KafkaError when a
    transaction stays open past ``timeout_s``."""
    probe = make_consumer(settings, group_id=None, isolation_level="read_uncommitted")
    await probe.start()
    try:
        high: int = (await probe.end_offsets([tp]))[tp]
    finally:
        await probe.stop()
    deadline = time.monotonic() + timeout_s
    while (stable := (await consumer.end_offsets([tp]))[tp]) < high:
        if time.monotonic() > deadline:
            raise KafkaError(
                f"{tp.topic} partition {tp.partition}: a transaction open for over "
                f"{timeout_s:.0f} s holds back offsets {stable}-{high}"
            )
        await asyncio.sleep(0.1)
    return high


async def read_topic(
    settings: HubSettings,
    topic: str,
    *,
    from_beginning: bool = True,
    follow: bool = False,
    on_caught_up: Callable[[], None] | None = None,
) -> AsyncGenerator[ConsumerRecord[bytes, bytes], None]:
    """Committed records of ``topic``; stops at the end seen at the start unless ``follow``.

    ``on_caught_up`` is called once, when that end is reached (a follower is then current).
    """
    partitions = [TopicPartition(topic, p) for p in await partition_ids(settings, topic)]
    consumer = make_consumer(settings, group_id=None)
    await consumer.start()
    try:
        consumer.assign(partitions)
        if from_beginning:
            await consumer.seek_to_beginning(*partitions)
        else:
            await consumer.seek_to_end(*partitions)
        end = await consumer.end_offsets(partitions)
        behind = [tp for tp in partitions if await consumer.position(tp) < end[tp]]
        while follow or behind:
            if not behind and on_caught_up is not None:
                on_caught_up()
                on_caught_up = None
            for records in (await consumer.getmany(timeout_ms=1000, max_records=500)).values():
                for record in records:
                    yield record
            behind = [tp for tp in behind if await consumer.position(tp) < end[tp]]
    finally:
        await consumer.stop()
