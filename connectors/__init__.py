"""Connectors: the ways events enter and leave the hub (simulator, inbound APIs, delivery)."""
