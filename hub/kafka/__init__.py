"""Kafka clients, topics and the local broker glue."""
