"""The ingest API on a real uvicorn server, for tests that need real HTTP and a real event loop.

``python -m tests.ingest_http_server FD`` serves the app (in-memory sink, the test clients) on
the listening socket inherited as file descriptor FD; settings come from ``HUB_*`` variables.
A separate process, so that the test's clients do not share the server's interpreter (GIL).
"""

from __future__ import annotations

import gc
import socket
import sys

import uvicorn

from connectors.rest_api.app import create_app, utc_now
from hub.logging import configure_logging
from hub.settings import HubSettings
from tests.ingest_fakes import FakeEnrolments, FakeSink, make_clients


def main(fd: int) -> None:
    settings = HubSettings()
    configure_logging(settings)  # as `hub serve` does
    app = create_app(settings, FakeSink(), make_clients(), FakeEnrolments(), utc_now)
    gc.freeze()  # as `hub serve` does once started (see connectors.rest_api.serve)
    listener = socket.socket(fileno=fd)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    server.run(sockets=[listener])


if __name__ == "__main__":
    main(int(sys.argv[1]))
