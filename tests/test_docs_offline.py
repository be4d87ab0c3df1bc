"""`hub serve` as deployed: its docs pages work offline, and it listens where HUB_API_HOST says.

The AsyncAPI page (/asyncapi, the Kafka channels) is held to the same rule as /docs and /redoc.

The docs pages used to load Swagger UI from a public CDN, so on an intranet (or here, with no
internet) /docs was a blank page. Now every asset comes from the hub itself: the first test
checks that without a browser (every URL /docs and /redoc reference is on the server and
answers), the second renders /docs in headless Chromium with every other host unresolvable and
looks for the API's operations in the rendered page.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from hub.settings import HubSettings
from tests.conftest import hub_environment

pytestmark = pytest.mark.kafka

# src="...", href="..." and the spec's url: '...' in FastAPI's docs pages ("url": "..." in the
# AsyncAPI page's JSON configuration).
REFERENCE = re.compile(
    r"""(?:src|href)\s*=\s*["']([^"']+)["']|["']?\burl["']?\s*:\s*["']([^"']+)["']"""
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@contextlib.contextmanager
def hub_serve(settings: HubSettings, folder: Path, **env: str) -> Iterator[int]:
    """A real `hub serve` subprocess on a free port; yields the port once /health answers."""
    port = _free_port()
    folder.mkdir(parents=True, exist_ok=True)
    environment = hub_environment(
        settings,
        HUB_STATE_DIR=str(folder / "state"),
        HUB_PSEUDONYM_SECRET="docs-test-secret-0123456789",
        HUB_LOG_LEVEL="WARNING",
        **env,
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "hub", "serve", "--port", str(port)],
        env=environment,
        cwd=folder,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"hub serve exited with {process.returncode}"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "hub serve did not answer /health in 60 s"
            time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def served(hub_settings: HubSettings, tmp_path: Path) -> Iterator[str]:
    with hub_serve(hub_settings, tmp_path) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("page", ["/docs", "/redoc", "/asyncapi"])
def test_docs_pages_reference_only_assets_the_hub_serves(served: str, page: str) -> None:
    html = httpx.get(served + page, timeout=10)
    assert html.status_code == 200
    # A data: URL (the AsyncAPI page's empty icon) loads nothing from anywhere.
    references = [
        r for a, b in REFERENCE.findall(html.text) if not (r := a or b).startswith("data:")
    ]
    assert len(references) >= 2, html.text  # the page's script and the OpenAPI document

    for reference in references:
        url = urljoin(served + page, reference)
        assert urlsplit(url).netloc == urlsplit(served).netloc, f"{page} loads {url}"
        asset = httpx.get(url, timeout=10)
        assert asset.status_code == 200, url
        assert len(asset.content) > 1000 or url.endswith(".png"), url
    if page == "/docs":  # no online validator badge (an image from validator.swagger.io)
        assert '"validatorUrl": null' in html.text


def _chromium() -> str | None:
    return next(
        (
            found
            for name in ("chromium", "chromium-browser", "google-chrome")
            if (found := shutil.which(name))
        ),
        None,
    )


@pytest.mark.skipif(
    _chromium() is None,
    reason="no Chromium installed (apt-get install chromium); the asset test above still runs",
)
def test_swagger_ui_renders_in_headless_chromium_without_internet(
    served: str, tmp_path: Path
) -> None:
    chromium = _chromium()
    assert chromium is not None
    offline = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
        # Every host but the hub's is unresolvable: a CDN reference cannot load.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--virtual-time-budget=15000",
        "--window-size=1280,1400",
    ]
    dom = subprocess.run(
        [*offline, "--dump-dom", served + "/docs"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    screenshot = Path(os.environ.get("HUB_DOCS_SCREENSHOT", tmp_path / "docs.png"))
    subprocess.run(
        [*offline, f"--screenshot={screenshot}", served + "/docs"],
        capture_output=True,
        timeout=120,
        check=False,
    )

    assert 'class="swagger-ui"' in dom.stdout, dom.stderr[-2000:]
    for operation_id in ("postJobseekerRegistered", "postServiceParticipationReported", "postBulk"):
        assert f"-{operation_id}" in dom.stdout, f"{operation_id} not rendered"
    assert "TE hub ingest API" in dom.stdout
    assert screenshot.stat().st_size > 10_000  # a rendered page, not a blank one


@pytest.mark.skipif(
    _chromium() is None,
    reason="no Chromium installed (apt-get install chromium); the asset test above still runs",
)
def test_asyncapi_page_renders_in_headless_chromium_without_internet(
    served: str, tmp_path: Path
) -> None:
    """The AsyncAPI React component (vendored) renders every channel from /asyncapi.json.

    The component parses the document with the AsyncAPI parser (and its Avro schema parser)
    first and shows an error panel instead when the document is not valid AsyncAPI.
    """
    chromium = _chromium()
    assert chromium is not None
    dom = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--virtual-time-budget=30000",
            "--window-size=1280,1400",
            "--dump-dom",
            served + "/asyncapi",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    document = httpx.get(served + "/asyncapi.json", timeout=30).json()

    assert 'id="introduction"' in dom.stdout, dom.stderr[-2000:]
    assert "TE integration hub: Kafka channels" in dom.stdout
    assert "there are errors in your asyncapi document" not in dom.stdout.lower()
    for operation_id, operation in document["operations"].items():
        assert f'id="operation-{operation["action"]}-{operation_id}"' in dom.stdout, operation_id
    for channel in document["channels"].values():
        # A webhook destination with an endpoint per key has no single address (null).
        assert channel["address"] is None or channel["address"] in dom.stdout, channel["address"]


@pytest.mark.parametrize(("host", "reachable"), [(None, False), ("0.0.0.0", True)])
def test_serve_listens_on_hub_api_host(
    hub_settings: HubSettings, tmp_path: Path, host: str | None, reachable: bool
) -> None:
    """127.0.0.2 is this machine too, but only a server on all addresses answers there."""
    env = {"HUB_API_HOST": host} if host else {}
    with hub_serve(hub_settings, tmp_path, **env) as port:
        try:
            answered = httpx.get(f"http://127.0.0.2:{port}/health", timeout=3).status_code == 200
        except httpx.ConnectError:
            answered = False

    assert answered is reachable
