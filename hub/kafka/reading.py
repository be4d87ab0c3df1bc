"""Reading a whole topic, partition by partition, without a consumer group.

Used where a process needs "everything up to now" (receipts on start-up, ``hub tail``, tests
that count events): the end offsets are taken when reading starts, and progress is judged by
the consumer position, which also moves past transaction markers that carry no record.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from hub.kafka.clients import make_consumer
from hub.kafka.topics import partition_ids
from hub.settings import HubSettings


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
