"""Delivery: outbox records to receivers, with retries, dead letters and the disclosure log."""
