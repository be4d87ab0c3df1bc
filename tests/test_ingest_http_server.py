"""The ingest API on a real uvicorn server: one client's body never stalls the others.

Each test starts ``hub``'s app under uvicorn in a subprocess on 127.0.0.1 and talks to it over
real sockets: the bulk is sent as HTTP/1.1 chunked transfer coding in small pieces, while
another client polls ``/health`` on its own connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.rest_api.app import create_app, utc_now
from hub.intake.examples import EXAMPLES
from hub.settings import HubSettings
from tests.ingest_fakes import MUNICIPAL_KEY, FakeEnrolments, FakeSink, bearer, make_clients

ROOT = Path(__file__).resolve().parent.parent
#: Every /health must answer within this while another client's bulk is read (the issue's bound).
HEALTH_BOUND_S = 0.100
PIECE = 1024


@dataclass
class Server:
    port: int
    process: subprocess.Popen[bytes]

    def connect(self) -> socket.socket:
        conn = socket.create_connection(("127.0.0.1", self.port), timeout=60)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn


def start_server(**env: str) -> Server:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.ingest_http_server", str(listener.fileno())],
        cwd=ROOT,
        env={**os.environ, "HUB_LOG_LEVEL": "WARNING", **env},
        pass_fds=[listener.fileno()],
    )
    port = listener.getsockname()[1]
    listener.close()
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return Server(port, process)
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("the ingest API server did not start")
        time.sleep(0.05)


@pytest.fixture
def server() -> Iterator[Server]:
    running = start_server()
    yield running
    running.process.terminate()
    running.process.wait(timeout=10)


@dataclass
class HealthPoller:
    """Polls /health on its own keep-alive connection, noting how long each answer took."""

    port: int
    took: list[float] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30) as client:
            while not self.stop.is_set():
                started = time.perf_counter()
                assert client.get("/health").status_code == 200
                self.took.append(time.perf_counter() - started)
                time.sleep(0.01)


def post_chunked(server: Server, path: str, pieces: Iterator[bytes], media: str) -> bytes:
    """POST *pieces* as chunked transfer coding, one write per piece; the raw response."""
    with server.connect() as conn:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: hub.test\r\nAuthorization: Bearer {MUNICIPAL_KEY}\r\n"
            f"Content-Type: {media}\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        conn.sendall(head.encode())
        for piece in pieces:
            conn.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        conn.sendall(b"0\r\n\r\n")
        return read_response(conn)


def read_response(conn: socket.socket) -> bytes:
    """Everything the server sends until it has sent the whole response (or closes)."""
    data = b""
    while True:
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            if len(body) >= length:
                return data
        more = conn.recv(65536)
        if not more:
            return data
        data += more


def status_and_json(response: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


def while_polling(server: Server, action: Callable[[], bytes]) -> tuple[bytes, list[float]]:
    poller = HealthPoller(server.port)
    thread = threading.Thread(target=poller.run)
    thread.start()
    try:
        time.sleep(0.1)  # the poller's connection is open and answered
        result = action()
    finally:
        poller.stop.set()
        thread.join(timeout=30)
    return result, poller.took


def pieces_of(data: bytes, size: int = PIECE) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_an_8_mib_ndjson_line_in_small_pieces_is_read_while_health_answers(
    server: Server,
) -> None:
    """The line arrives in 8,192 pieces of 1 KiB, paced so that the server reads each on its
    own. Read in linear time, the answer follows the last piece at once; read with a growing
    buffer copied per piece (the fault), the server falls seconds behind the client."""
    item: dict[str, Any] = {"event_type": "JobseekerRegistered", **EXAMPLES["JobseekerRegistered"]}
    del item["municipality_code"]
    item["payload"] = {**item["payload"], "first_name": "A" * (8 * 1024 * 1024)}
    item["municipality_code"] = "12"  # wrong after the long name: the answer shows all was read
    line = json.dumps(item).encode()
    assert len(line) > 8 * 1024 * 1024
    sent: list[float] = []

    def paced() -> Iterator[bytes]:
        for piece in pieces_of(line):
            time.sleep(0.0001)
            yield piece
        sent.append(time.perf_counter())

    started = time.perf_counter()
    response, took = while_polling(
        server, lambda: post_chunked(server, "/v1/bulk", paced(), "application/x-ndjson")
    )
    answered = time.perf_counter()

    status, problem = status_and_json(response)
    assert status == 422, problem
    errors = problem["errors"]
    assert isinstance(errors, list)
    assert ("#/0/municipality_code", 1) in [(e["pointer"], e["line"]) for e in errors]
    behind = answered - sent[0]
    print(
        f"8 MiB line in {PIECE}-byte pieces: sent in {sent[0] - started:.2f} s, answered "
        f"{behind:.3f} s after the last piece; /health max {max(took) * 1000:.1f} ms of {len(took)}"
    )
    assert behind < 1.0, f"the server read {behind:.1f} s behind the client"
    assert len(took) >= 5, took
    assert max(took) < HEALTH_BOUND_S, f"slowest /health {sorted(took)[-5:]} of {len(took)}"


@pytest.mark.parametrize("media", ["application/x-ndjson", "application/json"])
def test_thousands_of_bulk_items_are_validated_while_health_answers(
    server: Server, media: str
) -> None:
    """5,000 items: a JSON array is validated only once it is whole, all at once before."""
    bad = {"event_type": "JobSearchEnded", **EXAMPLES["JobSearchEnded"]}
    bad["payload"] = {**bad["payload"], "ended_on": "not a date"}
    items = [json.dumps(bad).encode()] * 5000
    body = b"\n".join(items) if media != "application/json" else b"[" + b",".join(items) + b"]"

    response, took = while_polling(
        server, lambda: post_chunked(server, "/v1/bulk", pieces_of(body, 64 * 1024), media)
    )

    status, problem = status_and_json(response)
    assert status == 422
    assert len(problem["errors"]) == 200  # type: ignore[arg-type]
    assert problem["errors_truncated"] is True
    assert max(took) < HEALTH_BOUND_S, f"slowest /health {sorted(took)[-5:]} of {len(took)}"


def test_a_body_that_trickles_in_gets_408_and_the_connection_is_closed() -> None:
    slow = start_server(HUB_INGEST_BODY_READ_TIMEOUT_S="1")
    try:
        body = json.dumps(EXAMPLES["JobSearchEnded"]).encode()
        with slow.connect() as conn:
            head = (
                "POST /v1/events/job-search-ended HTTP/1.1\r\nHost: hub.test\r\n"
                f"Authorization: Bearer {MUNICIPAL_KEY}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            conn.sendall(head.encode())
            started = time.monotonic()
            for byte in body[:25]:  # a byte every 0.2 s: each piece is quick, the body is not
                conn.sendall(bytes([byte]))
                if select.select([conn], [], [], 0.2)[0]:
                    break
            waited = time.monotonic() - started
            conn.settimeout(5)
            response = read_response(conn)
            status, problem = status_and_json(response)
            assert status == 408, response
            assert problem["type"] == "https://te-hub.example/problems/request-timeout"
            assert b"connection: close" in response.lower()
            with contextlib.suppress(ConnectionResetError):  # reset: the rest was never read
                assert conn.recv(1) == b""  # closed by the server
        assert 1 <= waited < 3, waited
        # the server still serves others
        assert httpx.get(f"http://127.0.0.1:{slow.port}/health").status_code == 200
    finally:
        slow.process.terminate()
        slow.process.wait(timeout=10)


async def test_a_long_line_in_queued_pieces_is_read_in_linear_time_in_process() -> None:
    """The same line handed to the app in 8,192 ASGI messages that are all ready at once (as
    httpx's ASGI transport, or a server with a full buffer, hands them over): the reader must
    be linear and must let /health run meanwhile. With a growing buffer copied per piece (the
    fault) this took 12 s, and /health waited all of it."""
    app = create_app(HubSettings(), FakeSink(), make_clients(), FakeEnrolments(), utc_now)
    item: dict[str, Any] = {"event_type": "JobseekerRegistered", **EXAMPLES["JobseekerRegistered"]}
    item["payload"] = {**item["payload"], "first_name": "A" * (8 * 1024 * 1024)}
    item["municipality_code"] = "12"
    line = json.dumps(item).encode()

    async def queued() -> AsyncIterator[bytes]:
        for piece in pieces_of(line):
            yield piece

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://hub.test"
    ) as client:
        answers: list[float] = []
        done = asyncio.Event()

        async def poll_health() -> None:
            while not done.is_set():
                assert (await client.get("/health")).status_code == 200
                answers.append(time.perf_counter())
                await asyncio.sleep(0.01)

        poller = asyncio.create_task(poll_health())
        gc.freeze()  # as `hub serve` does once started: no full collection over pytest's heap
        try:
            started = time.perf_counter()
            response = await client.post(
                "/v1/bulk",
                content=queued(),
                headers={**bearer(MUNICIPAL_KEY), "Content-Type": "application/x-ndjson"},
            )
            finished = time.perf_counter()
        finally:
            gc.unfreeze()
        done.set()
        await poller

    assert response.status_code == 422
    times = [started, *[t for t in answers if t < finished], finished]
    longest = max(b - a for a, b in itertools.pairwise(times))
    print(f"in process: {finished - started:.2f} s; longest /health gap {longest * 1000:.1f} ms")
    assert finished - started < 2.0
    assert longest < HEALTH_BOUND_S
