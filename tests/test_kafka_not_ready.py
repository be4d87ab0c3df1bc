"""Which librdkafka errors the synchronous readers wait out (a topic's leaders being elected)."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from hub.kafka.not_ready import ready_soon


@pytest.mark.parametrize(
    "code",
    [KafkaError.LEADER_NOT_AVAILABLE, KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._TRANSPORT],
)
def test_a_partition_without_a_leader_yet_is_waited_out(code: int) -> None:
    assert ready_soon(KafkaException(KafkaError(code)))


def test_a_refusal_is_not_waited_out() -> None:
    assert not ready_soon(KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)))
    assert not ready_soon(KafkaException("no error object"))
    assert ready_soon(
        KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, retriable=True))
    )
