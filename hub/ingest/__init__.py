"""Inbound side: how municipal systems, providers and payers put events into the hub."""
