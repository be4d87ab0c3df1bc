"""What librdkafka (confluent-kafka) says of a topic whose leaders are still being elected: a
topic just created, a broker restarting. The synchronous readers (the person keys, the router
state) ask again on these until their deadline instead of failing."""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException

_NOT_READY = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
    }
)


def ready_soon(exception: KafkaException) -> bool:
    """The error is retriable, or one of a partition whose leader is not ready yet."""
    error = exception.args[0] if exception.args else None
    return isinstance(error, KafkaError) and (error.retriable() or error.code() in _NOT_READY)
