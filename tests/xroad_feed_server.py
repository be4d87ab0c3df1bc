"""A real HTTP server standing in for a security server in front of a register's change feed.

It answers ``GET /r1/{service}?after=&limit=`` with pages of a fixed item list, refuses requests
without ``X-Road-Client`` (400, as a security server does), records the X-Road headers of every
request, and can be told to fail: every Nth request 500 or 503 (with Retry-After), chosen
requests with a given status, or everything with a given status. ``stop()`` closes the listening
socket and every open keep-alive connection, so the poller meets a server that is really gone;
``start()`` brings it back on the same port. Optionally it speaks TLS and demands a client
certificate (mutual TLS, like a security server).

:func:`refusing_client_without_certificate` is a security server that refuses a client without
a certificate in the one way TLS 1.3 allows, every time: the alert comes after the handshake.
"""

from __future__ import annotations

import json
import select
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

CURSOR_PREFIX = "c"


@dataclass
class FeedState:
    """The feed, the failure plan, and what the server saw (read by the tests)."""

    service_path: str
    items: list[Any] = field(default_factory=list)
    #: Every Nth request fails, alternately 500 and 503 + Retry-After.
    fail_every: int | None = None
    #: Request number (1-based, over the server's life) -> status to answer instead.
    faults: dict[int, int] = field(default_factory=dict)
    #: Answer every request with this status (e.g. 403: no access rights).
    refuse_all: int | None = None
    retry_after_s: int = 2
    #: Hold a page request after this cursor until ``release`` is set (``held`` says it came),
    #: so a test can kill the poller at a known point (every earlier page acknowledged); the
    #: held request is then dropped unanswered and unrecorded.
    hold_after: str | None = None
    held: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    requests: int = 0
    x_road_ids: list[str] = field(default_factory=list)
    clients: list[str] = field(default_factory=list)
    user_ids: list[str | None] = field(default_factory=list)
    #: Status of every answer to a request with a client header, in order.
    statuses: list[int] = field(default_factory=list)
    #: The ``after`` parameter of every page served (None: from the top).
    pages_after: list[str | None] = field(default_factory=list)
    client_cert_subjects: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def offset_of(cursor: str | None) -> int:
    return int(cursor.removeprefix(CURSOR_PREFIX)) if cursor else 0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real clients and security servers use
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read the state, not the access log."""

    def do_GET(self) -> None:
        state = self.server.state
        url = urlsplit(self.path)
        if url.path != state.service_path:
            fault = "Server.ServerProxy.UnknownService"
            self._send(404, {"type": fault}, {"X-Road-Error": fault})
            return
        client = self.headers.get("X-Road-Client")
        if not client:
            self._send(400, {"type": "Client.InvalidClientIdentifier", "message": "no client"})
            return
        query = parse_qs(url.query)
        if state.hold_after is not None and query.get("after", [None])[0] == state.hold_after:
            state.held.set()
            state.release.wait(timeout=60)
            self.close_connection = True  # its client was killed meanwhile: nothing to answer
            return
        with state.lock:
            state.requests += 1
            number = state.requests
            state.x_road_ids.append(self.headers.get("X-Road-Id", ""))
            state.clients.append(client)
            state.user_ids.append(self.headers.get("X-Road-UserId"))
            if isinstance(self.connection, ssl.SSLSocket):
                peer = self.connection.getpeercert() or {}
                state.client_cert_subjects.append(str(peer.get("subject")))
            status = state.refuse_all or state.faults.get(number)
            if status is None and state.fail_every and number % state.fail_every == 0:
                status = 500 if number // state.fail_every % 2 else 503
            state.statuses.append(status or 200)
            if status is not None:
                retry = {"Retry-After": str(state.retry_after_s)} if status in (429, 503) else {}
                error = {"X-Road-Error": "Server.ServerProxy.ServiceFailed"}
                self._send(status, {"type": "fault", "request": number}, {**retry, **error})
                return
            after = query.get("after", [None])[0]
            limit = int(query.get("limit", ["100"])[0])
            start = offset_of(after)
            page = state.items[start : start + limit]
            end = start + len(page)
            state.pages_after.append(after)
            body = {
                "items": page,
                "next_cursor": f"{CURSOR_PREFIX}{end}",
                "has_more": end < len(state.items),
            }
        self._send(200, body)

    def _send(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, state: FeedState, tls: ssl.SSLContext | None) -> None:
        self.state = state
        self.connections: set[socket.socket] = set()
        super().__init__(("127.0.0.1", port), _Handler)
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        self.connections.discard(request)
        super().shutdown_request(request)


class FeedServer:
    """The feed on 127.0.0.1; the port stays the same across stop() and start()."""

    def __init__(self, state: FeedState, tls: ssl.SSLContext | None = None) -> None:
        self.state = state
        self.tls = tls
        self.port = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        server = _Server(self.port, self.state, self.tls)
        self.port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._server = server
        self._thread.start()

    def stop(self) -> None:
        """Go down hard: no listener, and every open connection is cut."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        for connection in list(server.connections):
            with suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()
        if self._thread is not None:
            self._thread.join(timeout=5)


@contextmanager
def running_feed(state: FeedState, tls: ssl.SSLContext | None = None) -> Iterator[FeedServer]:
    server = FeedServer(state, tls)
    server.start()
    try:
        yield server
    finally:
        server.stop()


#: Bound on every wait of the refusing server, so that a broken client cannot hang a test.
_REFUSER_WAIT_S = 5.0


def _refuse(connection: socket.socket, tls: ssl.SSLContext) -> None:
    """Run the server side of one handshake over memory BIOs and deliver the refusal.

    A plain ``wrap_socket`` server closes the socket right after the failed handshake, while
    the client's request is arriving: the kernel then answers with a reset that, depending on
    timing, overtakes the alert (the client sees a reset or the alert, not always the same).
    Here the alert is sent only once the client's request is in, the write side is shut, and
    the client is read to its end before closing, so no reset is ever sent and the client
    meets the alert on its first read, as it does from a real security server.
    """
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls_object = tls.wrap_bio(incoming, outgoing, server_side=True)
    connection.settimeout(_REFUSER_WAIT_S)
    try:
        while True:
            try:
                tls_object.do_handshake()
            except ssl.SSLWantReadError:
                connection.sendall(outgoing.read())
                data = connection.recv(65536)
                if not data:
                    return
                incoming.write(data)
                continue
            except ssl.SSLError:
                break  # no certificate: the alert waits in the outgoing BIO
            return  # a client with a certificate: not what this server is for
        if not incoming.pending:  # the request came in a later segment than the Finished
            select.select([connection], [], [], _REFUSER_WAIT_S)
        connection.sendall(outgoing.read())
        connection.shutdown(socket.SHUT_WR)
        while connection.recv(65536):
            pass
    except OSError:
        pass
    finally:
        connection.close()


@contextmanager
def refusing_client_without_certificate(tls: ssl.SSLContext) -> Iterator[str]:
    """An HTTPS URL on 127.0.0.1 whose server demands a client certificate (*tls* must require
    one, TLS 1.3) and refuses each connection without one, as described in :func:`_refuse`."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    stopping = threading.Event()

    def serve() -> None:
        while not stopping.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            _refuse(connection, tls)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stopping.set()
        thread.join(timeout=_REFUSER_WAIT_S * 2)
        listener.close()
