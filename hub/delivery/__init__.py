"""Delivery: outbox records to receivers, with retries, dead letters and the disclosure log.

The loop (:mod:`hub.delivery.worker`) is transport-neutral: connectors (``connectors/webhook``,
``connectors/xroad``) implement :class:`~hub.delivery.transport.Transport`. The rules live in
small pure modules the tests exercise without a broker: the retry schedule
(:mod:`~hub.delivery.schedule`), the circuit breaker (:mod:`~hub.delivery.breaker`) and the
offset and per-person bookkeeping (:mod:`~hub.delivery.tracker`). Nothing is imported here, so
importing one of them (or the disclosure log) does not pull in the Kafka loop.
"""
