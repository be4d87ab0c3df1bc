"""Running the local receivers from tests and scripts: in-process or as a ``hub receivers`` child.

:class:`LocalReceivers` serves the app on a thread of this process (its own event loop), on a
port of its own (0 = a free one): a test reads ``.state`` directly or talks HTTP like anyone,
and can :meth:`~LocalReceivers.stop` and :meth:`~LocalReceivers.start` it again on the same port
to be really down (connection refused), keeping what it applied. :func:`receivers_subprocess`
runs ``python -m hub receivers`` as a person would, for tests that kill or restart it. Both give
a :class:`ReceiversClient` for ``/_control``, ``/_applied`` and ``/_stats``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import uvicorn

from connectors.receivers.app import ReceiversState, create_app
from hub.settings import HubSettings


class ReceiversClient:
    """The control and inspection endpoints of a running receivers server, over HTTP."""

    def __init__(self, base_url: str, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout_s = timeout_s

    def url(self, receiver: str) -> str:
        """The URL a webhook for *receiver* (``kela``, ``fund/1234``, ...) is POSTed to."""
        return f"{self.base_url}/{receiver}"

    def control(self, receiver: str = "*", **knobs: Any) -> dict[str, Any]:
        """Set knobs (``fail_share``, ``refuse_event_ids``, ``delay_s``, ``down``,
        ``retry_after_s``; None unsets) for a receiver, a kind or all (``*``)."""
        return self._call("POST", "/_control", json={"receiver": receiver, **knobs})

    def reset_control(self) -> dict[str, Any]:
        """Every receiver well again."""
        return self._call("POST", "/_control", json={"reset": True})

    def applied(self, receiver: str) -> list[dict[str, Any]]:
        """What *receiver* applied, in order."""
        body = self._call("GET", "/_applied", params={"receiver": receiver})
        result: list[dict[str, Any]] = body["applied"]
        return result

    def applied_all(self) -> dict[str, list[dict[str, Any]]]:
        """What every receiver applied, in order, by receiver name."""
        result: dict[str, list[dict[str, Any]]] = self._call("GET", "/_applied")
        return result

    def stats(self) -> dict[str, Any]:
        """``{"receivers": {name: counts}, "total": counts}``."""
        return self._call("GET", "/_stats")

    def reset(self) -> dict[str, Any]:
        """Forget what was applied and counted."""
        return self._call("POST", "/_reset")

    def ready(self) -> bool:
        try:
            self.stats()
        except httpx.HTTPError:
            return False
        return True

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = httpx.request(method, self.base_url + path, timeout=self._timeout_s, **kwargs)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body


class LocalReceivers(ReceiversClient):
    """The receivers served on a thread of this process; use as a context manager."""

    def __init__(
        self,
        settings: HubSettings,
        *,
        host: str | None = None,
        port: int = 0,
        record: Path | None = None,
    ) -> None:
        self.settings = settings
        self.host = host or settings.receivers_host
        self.state = ReceiversState(record_file=record)
        self.state.load()
        self.port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        super().__init__(f"http://{self.host}:{port}")

    def start(self) -> LocalReceivers:
        """Listen (on the same port as before after a stop) and wait until it answers."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self.base_url = f"http://{self.host}:{self.port}"
        config = uvicorn.Config(
            create_app(self.settings, self.state),
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        server = self._server
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="receivers", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 15
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("local receivers did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop listening (clients then get connection refused); the state is kept."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None

    def __enter__(self) -> LocalReceivers:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ReceiversProcess(ReceiversClient):
    """A ``hub receivers`` child process."""

    def __init__(self, process: subprocess.Popen[str], base_url: str) -> None:
        super().__init__(base_url)
        self.process = process

    def stop(self, timeout_s: float = 15) -> str:
        """SIGTERM, wait; the summary it printed (stdout)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            out, _ = self.process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, _ = self.process.communicate()
        return out


@contextmanager
def receivers_subprocess(
    env: Mapping[str, str],
    *,
    port: int,
    host: str = "127.0.0.1",
    record: Path | None = None,
    cwd: Path | None = None,
    start_timeout_s: float = 30,
) -> Iterator[ReceiversProcess]:
    """``python -m hub receivers`` with environment *env* (HUB_* settings) until the block ends."""
    args = [sys.executable, "-m", "hub", "receivers", "--host", host, "--port", str(port)]
    if record is not None:
        args += ["--record", str(record)]
    repo_root = Path(__file__).resolve().parents[2]
    environment = {
        **env,
        "PYTHONPATH": os.pathsep.join([str(repo_root), env.get("PYTHONPATH", "")]),
    }
    process = subprocess.Popen(
        args,
        env=environment,
        cwd=cwd,
        stdout=subprocess.PIPE,
        text=True,
    )
    receivers = ReceiversProcess(process, f"http://{host}:{port}")
    try:
        deadline = time.monotonic() + start_timeout_s
        while not receivers.ready():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"hub receivers did not start (exit {process.poll()})")
            time.sleep(0.1)
        yield receivers
    finally:
        receivers.stop()
