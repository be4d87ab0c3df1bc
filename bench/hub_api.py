"""What the benches that run ``hub serve`` share: the clients file of their one sender, and
waiting until the ingest API answers ``/ready``."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import subprocess
import time
from collections.abc import Sequence

import httpx

from hub.codes import employment_areas


def clients_toml(key: str, event_type: str) -> str:
    """One municipal system, API key *key*, that may send *event_type* for every area."""
    digest = hashlib.sha256(key.encode()).hexdigest()
    areas = ", ".join(f'"{code}"' for code in sorted(employment_areas()))
    return f"""
[[clients]]
client_id = "bench-municipal-system"
kind = "municipal_system"
source_system = "urn:fi:te-hub:bench"
api_key_sha256 = "{digest}"
event_types = ["{event_type}"]
employment_areas = [{areas}]
"""


async def api_ready(
    http: httpx.AsyncClient,
    timeout_s: float,
    processes: Sequence[subprocess.Popen[bytes]] = (),
) -> bool:
    """Whether ``/ready`` of *http*'s ingest API answered 200 within *timeout_s*; stops early
    (``SystemExit``) when one of *processes* has exited."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in processes):
            raise SystemExit("a hub process of the end-to-end run exited early")
        with contextlib.suppress(httpx.HTTPError):
            if (await http.get("/ready")).status_code == 200:
                return True
        await asyncio.sleep(0.3)
    return False
