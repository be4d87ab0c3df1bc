"""The ingest API as deployed (`hub serve`) on the real broker: killed mid-load, Kafka down.

A client that retries until it gets an answer, with the same Idempotency-Key, must see every
accepted request in Kafka exactly once, whatever happened to the API process or the broker.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.simulator import SimulationConfig, simulate
from connectors.simulator.api_requests import registration_request
from hub.broker.local import LocalKafka
from hub.events.customer_path import JobseekerRegistered
from hub.identity import Pseudonymizer
from hub.kafka.topics import ensure_topics
from hub.settings import HubSettings
from tests.conftest import event_ids_in_log, hub_environment, settings_for

pytestmark = pytest.mark.kafka
API_KEY = "tehub_test-" + "k" * 40
SECRET = "ingest-on-kafka-secret-0123456789"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _clients_file(folder: Path) -> Path:
    path = folder / "clients.toml"
    path.write_text(
        f"""
[[clients]]
client_id = "test-municipal-system"
kind = "municipal_system"
source_system = "urn:fi:te-hub:test"
api_key_sha256 = "{hashlib.sha256(API_KEY.encode()).hexdigest()}"
event_types = ["JobseekerRegistered"]
employment_areas = [{", ".join(f'"{n:02d}"' for n in range(1, 46))}]
"""
    )
    return path


def _requests(count: int) -> list[tuple[str, dict[str, Any]]]:
    paths = simulate(SimulationConfig(jobseekers=count, seed=31), Pseudonymizer(SECRET))
    return [
        (str(uuid.uuid4()), registration_request(path[0]))
        for path in paths
        if isinstance(path[0], JobseekerRegistered)
    ]


class Api:
    def __init__(self, settings: HubSettings, clients_file: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._env = hub_environment(
            settings,
            HUB_INGEST_CLIENTS_FILE=str(clients_file),
            HUB_PSEUDONYM_SECRET=SECRET,
            HUB_LOG_LEVEL="WARNING",
        )
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hub", "serve", "--port", str(self.port), env=self._env
        )
        async with httpx.AsyncClient(base_url=self.url) as http:
            for _ in range(300):
                try:
                    if (await http.get("/health")).status_code == 200:
                        return
                except httpx.HTTPError:
                    await asyncio.sleep(0.1)
        raise TimeoutError("hub serve did not start")

    async def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            await self.process.wait()


@asynccontextmanager
async def running_api(settings: HubSettings, folder: Path) -> AsyncIterator[Api]:
    api = Api(settings, _clients_file(folder))
    await api.start()
    try:
        yield api
    finally:
        await api.stop()


async def _post(http: httpx.AsyncClient, key: str, body: dict[str, Any]) -> httpx.Response | None:
    try:
        return await http.post(
            "/v1/events/jobseeker-registered",
            json=body,
            headers={"Idempotency-Key": key, "Authorization": f"Bearer {API_KEY}"},
            timeout=30,
        )
    except httpx.HTTPError:
        return None


async def test_api_killed_mid_load_then_restarted_loses_and_duplicates_nothing(
    hub_settings: HubSettings, tmp_path: Path
) -> None:
    await ensure_topics(hub_settings)
    requests = _requests(600)
    accepted: dict[str, str] = {}
    async with running_api(hub_settings, tmp_path) as api:
        async with httpx.AsyncClient(base_url=api.url) as http:
            semaphore = asyncio.Semaphore(20)
            third_accepted = asyncio.Event()

            async def send(key: str, body: dict[str, Any]) -> None:
                async with semaphore:
                    response = await _post(http, key, body)
                if response is not None and response.status_code == 202:
                    accepted[key] = response.json()["event_id"]
                    if len(accepted) >= len(requests) // 3:
                        third_accepted.set()

            load = asyncio.gather(*(send(k, b) for k, b in requests))
            await third_accepted.wait()
            await api.kill()
            await load
        answered_before_crash = len(accepted)
        assert answered_before_crash < len(requests)

        await api.start()
        async with httpx.AsyncClient(base_url=api.url) as http:
            for key, body in requests:  # the client retries everything, answered or not
                response = await _post(http, key, body)
                assert response is not None
                assert response.status_code == 202, response.text
                event_id = response.json()["event_id"]
                assert accepted.setdefault(key, event_id) == event_id
    in_kafka = await event_ids_in_log(hub_settings)
    assert max(in_kafka.values()) == 1
    assert set(map(str, in_kafka)) == set(accepted.values())
    assert len(in_kafka) == len(requests)


async def test_503_while_kafka_is_down_then_accepted_after_restart(
    private_kafka: LocalKafka, tmp_path: Path
) -> None:
    settings = settings_for(private_kafka.bootstrap, ingest_write_timeout_s=3)
    await ensure_topics(settings)
    requests = _requests(20)
    async with running_api(settings, tmp_path) as api, httpx.AsyncClient(base_url=api.url) as http:
        first = await _post(http, *requests[0])
        assert first is not None
        assert first.status_code == 202
        await asyncio.to_thread(private_kafka.stop)
        assert (await http.get("/ready")).status_code == 503
        refused = await _post(http, *requests[1])
        assert refused is not None
        assert refused.status_code == 503
        assert int(refused.headers["Retry-After"]) >= 1
        assert refused.headers["content-type"].startswith("application/problem+json")
        await asyncio.to_thread(private_kafka.start)
        for _ in range(60):
            if (await http.get("/ready")).status_code == 200:
                break
            await asyncio.sleep(0.5)
        for key, body in requests[1:]:
            response = await _post(http, key, body)
            assert response is not None
            assert response.status_code == 202, response.text
    for _ in range(40):  # an aborted transaction may hide later records for a while
        in_kafka = await event_ids_in_log(settings)
        assert max(in_kafka.values()) == 1
        if len(in_kafka) == len(requests):
            break
        await asyncio.sleep(1)
    assert len(in_kafka) == len(requests)
