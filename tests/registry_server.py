"""A real HTTP server that fails the way a registry behind a proxy or under load fails.

Everything a working registry does is tested against a real one (Apicurio Registry, see
tests/registry_fixture.py). What it cannot be made to show is here: server errors (5xx, with a
JSON error body or a proxy's HTML page) and answers that come too late (timeouts). Every
request gets the same configured answer, after the configured delay.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Fault:
    status: int = 503
    body: bytes = b"<html><body><h1>503 Service Unavailable</h1></body></html>"
    content_type: str = "text/html"
    delay_s: float = 0.0


@dataclass
class FaultyRegistry:
    url: str
    requests: list[str] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def _answer(self) -> None:
        self.server.registry.requests.append(f"{self.command} {self.path}")
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        fault = self.server.fault
        if fault.delay_s:
            time.sleep(fault.delay_s)
        try:
            self.send_response(fault.status)
            self.send_header("Content-Type", fault.content_type)
            self.send_header("Content-Length", str(len(fault.body)))
            self.end_headers()
            self.wfile.write(fault.body)
        except OSError:  # the client gave up waiting (the timeout case)
            pass

    do_GET = do_POST = do_PUT = _answer


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fault: Fault, registry: FaultyRegistry) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fault = fault
        self.registry = registry


@contextmanager
def faulty_registry(fault: Fault) -> Iterator[FaultyRegistry]:
    """Serve ``fault`` to every request on a free port for the duration of the block."""
    registry = FaultyRegistry(url="")
    server = _Server(fault, registry)
    host, port = server.server_address[:2]
    registry.url = f"http://{host!s}:{port}"
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="faulty-registry", daemon=True
    )
    thread.start()
    try:
        yield registry
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
