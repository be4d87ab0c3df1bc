"""A real Confluent-compatible schema registry for development and tests: Apicurio Registry.

The Confluent framing is only proven against a registry that others wrote, so the tests run
the real one: Apicurio Registry, a ready-built Quarkus app from Maven Central, started with the
local Java (21 or newer; another JDK than Kafka's 17 may be needed) and in-memory storage. Its
Confluent API lives under ``/apis/ccompat/v7``. Development only: nothing on a production path
imports this module. Everything lives under ``<cache>/<version>``::

    app/                the unpacked apicurio-registry-app-<version>-all.tar.gz (+ .complete)

and the running process writes its log to the ``log_file`` its caller chooses.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import structlog

from hub.broker.local import COMPLETE_MARKER, HOST, BrokerError, Progress, _parent_death_signal

log = structlog.get_logger(__name__)

APICURIO_VERSION = "3.3.3"
ARTIFACT = "io.apicurio:apicurio-registry-app:{version}:tar.gz:all"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
MIN_JAVA = 21
CCOMPAT_PATH = "/apis/ccompat/v7"
# Where JDKs are installed on Linux distributions, images and macOS; searched, never assumed.
JAVA_ROOTS = (
    "/usr/lib/jvm/*/bin/java",
    "/usr/java/*/bin/java",
    "/opt/*/bin/java",
    "/opt/java/*/bin/java",
    "/usr/local/*/bin/java",
    "/Library/Java/JavaVirtualMachines/*/Contents/Home/bin/java",
)
# A small heap and the C1 compiler only: the registry serves a test suite, not traffic, and
# shares two cores with Kafka and the tests.
JVM_OPTS = ("-Xms64m", "-Xmx512m", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true")
_VERSION = re.compile(r'version "(\d+)(?:\.(\d+))?')


class RegistryStartError(BrokerError):
    """The registry could not be fetched, started or reached; the message says why."""


def java_major(java: str) -> int | None:
    """The feature version of a ``java`` binary (8 for 1.8, 17, 25, ...), None if it fails."""
    try:
        result = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION.search(result.stderr + result.stdout)
    if match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def java_candidates() -> list[str]:
    """Every ``java`` this machine has in known places: JAVA_HOME, PATH, the alternatives
    system and the usual JDK roots (resolved, without duplicates)."""
    found: list[str] = []
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        found.append(str(Path(java_home) / "bin" / "java"))
    on_path = shutil.which("java")
    if on_path:
        found.append(on_path)
    alternatives = shutil.which("update-alternatives")
    if alternatives:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            listed = subprocess.run(
                [alternatives, "--list", "java"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
            found.extend(line.strip() for line in listed.stdout.splitlines() if line.strip())
    for pattern in JAVA_ROOTS:
        found.extend(sorted(glob.glob(pattern)))
    unique: dict[str, None] = {}
    for candidate in found:
        path = Path(candidate)
        if path.is_file() and os.access(path, os.X_OK):
            unique.setdefault(str(path.resolve()), None)
    return list(unique)


def find_java(min_version: int = MIN_JAVA) -> str:
    """The newest ``java`` of at least ``min_version`` among :func:`java_candidates`."""
    versions = {java: java_major(java) for java in java_candidates()}
    fit = {java: major for java, major in versions.items() if major and major >= min_version}
    if not fit:
        seen = ", ".join(f"{java} ({major})" for java, major in versions.items()) or "none"
        raise RegistryStartError(
            f"Apicurio Registry needs Java {min_version} or newer; found: {seen}. Install a "
            f"JDK {min_version}+ (e.g. Temurin) or point JAVA_HOME at one."
        )
    return max(fit, key=lambda java: fit[java])


@dataclass(frozen=True)
class RegistryStart:
    url: str
    """Base URL of the Confluent-compatible API (what ``HUB_SCHEMA_REGISTRY_URL`` takes)."""
    elapsed_s: float
    """From spawning the JVM to the first answered request."""
    fetched: bool
    java: str
    pid: int


class LocalRegistry:
    """Fetches, starts and stops one Apicurio Registry process on 127.0.0.1."""

    def __init__(
        self,
        cache_dir: Path,
        *,
        port: int,
        log_file: Path,
        version: str = APICURIO_VERSION,
        progress: Progress | None = None,
        tie_to_parent: bool = True,
    ) -> None:
        self.cache_dir = cache_dir.resolve()
        self.port = port
        self.log_file = log_file
        self.version = version
        self._progress = progress
        self._tie_to_parent = tie_to_parent
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def app_dir(self) -> Path:
        return self.cache_dir / self.version / "app"

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def url(self) -> str:
        return self.base_url + CCOMPAT_PATH

    # -- fetch ----------------------------------------------------------------------------

    def ensure_app(self) -> bool:
        """Fetch and unpack the app unless a completed copy is in the cache; True if fetched.

        Maven copies the archive into a private staging folder that is unpacked, marked
        complete and renamed into place, so an interrupted first run leaves nothing half-done.
        """
        if (self.app_dir / COMPLETE_MARKER).is_file():
            return False
        mvn = shutil.which("mvn")
        if mvn is None:
            raise RegistryStartError(
                f"Apicurio Registry {self.version} is not in {self.app_dir} and Maven (mvn) is "
                "not on PATH to fetch it; install Maven (e.g. apt-get install maven)."
            )
        parent = self.app_dir.parent
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="app.partial-", dir=parent))
        started = time.monotonic()
        self._say(f"Fetching Apicurio Registry {self.version} with Maven (first run only)…")
        try:
            archive_dir = staging / "archive"
            command = [
                mvn,
                "-B",
                "-q",
                f"{DEPENDENCY_PLUGIN}:copy",
                f"-Dartifact={ARTIFACT.format(version=self.version)}",
                f"-DoutputDirectory={archive_dir}",
            ]
            result = subprocess.run(
                command,
                cwd=staging,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
            archives = sorted(archive_dir.glob("*.tar.gz"))
            if result.returncode != 0 or not archives:
                tail = (result.stdout + result.stderr).strip()[-3000:]
                raise RegistryStartError(
                    f"Maven could not fetch {ARTIFACT.format(version=self.version)} "
                    f"(exit {result.returncode}):\n{tail}"
                )
            unpacked = staging / "app"
            with tarfile.open(archives[0]) as archive:
                archive.extractall(unpacked, filter="data")
            if not (unpacked / "quarkus-run.jar").is_file():
                raise RegistryStartError(f"{archives[0].name} holds no quarkus-run.jar")
            (unpacked / COMPLETE_MARKER).write_text(f"apicurio-registry {self.version}\n")
            try:
                unpacked.rename(self.app_dir)
            except OSError:
                if not (self.app_dir / COMPLETE_MARKER).is_file():
                    shutil.rmtree(self.app_dir, ignore_errors=True)  # an interrupted copy
                    unpacked.rename(self.app_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self._say(
            f"Apicurio Registry {self.version} in {self.app_dir} "
            f"({time.monotonic() - started:.1f} s)"
        )
        return True

    # -- process --------------------------------------------------------------------------

    def start(self, timeout_s: float = 120.0) -> RegistryStart:
        """Start the registry and return once its Confluent API answers.

        The compatibility rule is set to BACKWARD, the default of Confluent's registry (an
        empty Apicurio checks nothing), so registrations are checked as in production.
        """
        fetched = self.ensure_app()
        java = find_java()
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        command = [
            java,
            *JVM_OPTS,
            f"-Dquarkus.http.host={HOST}",
            f"-Dquarkus.http.port={self.port}",
            # The management interface (health, metrics) is on at build time and cannot be
            # switched off; by default it takes *:9000, so two registries (or anything else on
            # 9000) would collide: give it a free loopback port of its own.
            f"-Dquarkus.management.host={HOST}",
            f"-Dquarkus.management.port={_free_port()}",
            "-jar",
            str(self.app_dir / "quarkus-run.jar"),
        ]
        self._say(f"Starting Apicurio Registry {self.version} on {self.base_url} ({java})")
        started = time.monotonic()
        with self.log_file.open("ab") as out:
            self._proc = subprocess.Popen(
                command,
                cwd=self.app_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_parent_death_signal() if self._tie_to_parent else None,
            )
        try:
            self._wait_until_answering(timeout_s)
            self._put_json("/config", {"compatibility": "BACKWARD"})
        except BaseException:
            self.stop()
            raise
        elapsed = time.monotonic() - started
        log.info("registry.started", url=self.url, elapsed_s=round(elapsed, 2), java=java)
        return RegistryStart(self.url, elapsed, fetched, java, self._proc.pid)

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM (Quarkus shuts down cleanly), SIGKILL after ``timeout_s``."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def tail_log(self, lines: int = 30) -> str:
        if not self.log_file.is_file():
            return "(the registry wrote no log)"
        text = self.log_file.read_text(errors="replace").splitlines()[-lines:]
        return f"--- {self.log_file} (last {lines} lines) ---\n" + "\n".join(text)

    def _wait_until_answering(self, timeout_s: float) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + timeout_s
        while True:
            if self._proc.poll() is not None:
                raise RegistryStartError(
                    f"Apicurio Registry exited while starting (exit {self._proc.returncode})."
                    f"\n{self.tail_log()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/subjects", timeout=2).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RegistryStartError(
                    f"Apicurio Registry did not answer on {self.url} within {timeout_s:.0f} s."
                    f"\n{self.tail_log()}"
                )
            time.sleep(0.2)

    def _put_json(self, path: str, body: dict[str, str]) -> None:
        response = httpx.put(
            self.url + path,
            json=body,
            headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
            timeout=10,
        )
        if response.status_code >= 400:
            raise RegistryStartError(f"PUT {path} failed: {response.status_code} {response.text}")

    def _say(self, message: str) -> None:
        if self._progress is not None:
            self._progress(message)
        else:
            log.info("registry.progress", message=message)


def _free_port() -> int:
    """A loopback port the OS considers free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port
