"""Local receivers that play Kela, the funds, providers and municipal systems (demo, tests)."""

from connectors.receivers.app import Applied, Knobs, ReceiversState, create_app
from connectors.receivers.runner import (
    LocalReceivers,
    ReceiversClient,
    ReceiversProcess,
    receivers_subprocess,
)
from connectors.receivers.secrets import endpoint_id_of, receiver_secret

__all__ = [
    "Applied",
    "Knobs",
    "LocalReceivers",
    "ReceiversClient",
    "ReceiversProcess",
    "ReceiversState",
    "create_app",
    "endpoint_id_of",
    "receiver_secret",
    "receivers_subprocess",
]
