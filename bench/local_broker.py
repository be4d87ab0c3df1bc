"""The broker a benchmark runs against: ``HUB_KAFKA_BOOTSTRAP`` if set, else a private one.

A private broker is a :class:`~hub.broker.local.LocalKafka` on two free ports in a temporary
state folder (sharing the jar cache of ``hub broker start``), stopped when the bench ends.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from hub.broker.local import LocalKafka
from hub.settings import HubSettings

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@contextlib.contextmanager
def kafka_broker() -> Iterator[str]:
    external = os.environ.get("HUB_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    with tempfile.TemporaryDirectory(prefix="bench-kafka-") as state:
        settings = HubSettings(
            state_dir=Path(state), kafka_port=free_port(), kafka_controller_port=free_port()
        )
        kafka = LocalKafka(settings, jar_cache=REPO / ".hub" / "kafka", tie_to_parent=True)
        print(f"starting a local Kafka broker on {kafka.bootstrap} …", file=sys.stderr)
        kafka.start()
        try:
            yield kafka.bootstrap
        finally:
            kafka.stop()
