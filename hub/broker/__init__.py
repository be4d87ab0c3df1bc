"""The local Apache Kafka broker the hub runs for development, demos and tests."""

from hub.broker.local import BrokerError, BrokerStatus, LocalKafka, StartResult

__all__ = ["BrokerError", "BrokerStatus", "LocalKafka", "StartResult"]
