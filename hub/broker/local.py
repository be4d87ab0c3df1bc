"""A real single-node Apache Kafka 4 (KRaft) that the hub runs itself.

Development, demos and the test suite need the real broker (its delivery guarantees, configs and
admin API are what the hub relies on), but not Docker: the broker runs straight from the Maven
Central jars with the local ``java``. Everything lives under ``<state_dir>/kafka``::

    <version>/lib/      jars copied by Maven from deploy/kafka/pom.xml (+ .complete marker)
    server.properties   generated on every start from HubSettings (ports may change)
    cluster.id          KRaft cluster id, generated once and kept
    data/               log.dirs (metadata log and topic partitions)
    logs/server.log     the broker's log4j2 log; logs/kafka.out its stdout/stderr
    broker.pid          pid of the detached broker process

The jar cache can live elsewhere (``jar_cache``) so the test broker reuses the demo broker's jars.

The client listener speaks the settings' ``HUB_KAFKA_SECURITY_PROTOCOL``. With SASL (a SCRAM
mechanism) the settings' user is the one SCRAM credential, written when the storage is formatted
(``StorageTool format --add-scram``); with TLS the broker needs a :class:`BrokerTls` (its PEM key
and certificate, and the CA whose client certificates it requires). The same settings then let
the hub's clients in, and other credentials are refused: that is how the tests prove that every
hub client carries the security settings.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import ctypes.util
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import structlog

from hub.kafka.probe import kafka_answers
from hub.settings import HubSettings

log = structlog.get_logger(__name__)

T = TypeVar("T")
Progress = Callable[[str], None]

_PACKAGE_DIR = Path(__file__).resolve().parents[1]
# In a wheel the pom and logging config ship as hub/_deploy/kafka; in a checkout, deploy/kafka.
DEPLOY_DIR = next(
    (
        candidate
        for candidate in (
            _PACKAGE_DIR / "_deploy" / "kafka",
            _PACKAGE_DIR.parent / "deploy" / "kafka",
        )
        if candidate.is_dir()
    ),
    _PACKAGE_DIR.parent / "deploy" / "kafka",
)
POM_FILE = DEPLOY_DIR / "pom.xml"
LOG4J_CONFIG = DEPLOY_DIR / "log4j2.yaml"
COMPLETE_MARKER = ".complete"
HOST = "127.0.0.1"
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
HEAP_OPTS = ("-Xms256m", "-Xmx1g")
# The JVM flags of Kafka's own kafka-run-class.sh: short G1 pauses keep produce latency flat.
JVM_OPTS = (
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
)
_DOWNLOADED = re.compile(r"Downloaded from \S+: \S+/([^/\s]+\.jar)\s*(\([^)]*\))?")


class BrokerError(RuntimeError):
    """The local broker could not be prepared, started or stopped; the message says why."""


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    pid: int | None
    bootstrap: str
    version: str
    data_dir: Path
    log_file: Path
    answering: bool | None = None


@dataclass(frozen=True)
class BrokerTls:
    """The broker's side of TLS: a PEM file with its unencrypted key and certificate chain, and
    the PEM CA whose certificates clients must present (mutual TLS) unless ``client_auth`` is off.
    """

    keystore: Path
    truststore: Path
    client_auth: bool = True


@dataclass(frozen=True)
class StartResult:
    bootstrap: str
    elapsed_s: float
    already_running: bool
    fetched_jars: bool
    pid: int


class LocalKafka:
    """Owns one broker directory: fetches jars, formats storage, starts, stops and reports.

    All methods are synchronous (the CLI and session fixtures call them); they are safe to call
    from inside a running event loop too, because the readiness probe then runs in a thread.
    """

    def __init__(
        self,
        settings: HubSettings,
        *,
        jar_cache: Path | None = None,
        progress: Progress | None = None,
        tie_to_parent: bool = False,
        tls: BrokerTls | None = None,
    ) -> None:
        """``jar_cache`` holds ``<version>/lib`` (default ``<state_dir>/kafka``). ``progress``
        receives human-readable lines (the CLI echoes them). ``tie_to_parent`` makes the broker
        get SIGTERM when this process dies (Linux), so a killed test run leaves no broker behind.
        ``tls``: the broker's certificate, needed with an SSL or SASL_SSL protocol.
        """
        self.settings = settings
        self.home = settings.state_dir.resolve() / "kafka"
        self.jar_cache = (jar_cache or self.home).resolve()
        self.version = settings.kafka_version
        self.port = settings.kafka_port
        self.controller_port = settings.kafka_controller_port
        self._progress = progress
        self._tie_to_parent = tie_to_parent
        self._proc: subprocess.Popen[bytes] | None = None
        self.tls = tls
        if settings.kafka_uses_sasl and settings.kafka_sasl_mechanism not in SCRAM_MECHANISMS:
            raise BrokerError(
                "the local broker authenticates SASL with SCRAM-SHA-256 or SCRAM-SHA-512, not "
                f"{settings.kafka_sasl_mechanism}"
            )
        if settings.kafka_uses_tls and tls is None:
            raise BrokerError(
                f"HUB_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol}: `hub broker` "
                "serves PLAINTEXT or SASL_PLAINTEXT; TLS needs the broker's own certificate "
                "(LocalKafka(tls=BrokerTls(...)), as the tests do)"
            )
        # What the hub's own clients (and the readiness probe) use to reach this broker.
        self.client_settings = settings.model_copy(update={"kafka_bootstrap": self.bootstrap})

    # -- layout ---------------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def lib_dir(self) -> Path:
        return self.jar_cache / self.version / "lib"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def server_log(self) -> Path:
        return self.logs_dir / "server.log"

    @property
    def out_file(self) -> Path:
        return self.logs_dir / "kafka.out"

    @property
    def config_file(self) -> Path:
        return self.home / "server.properties"

    @property
    def pid_file(self) -> Path:
        return self.home / "broker.pid"

    @property
    def cluster_id_file(self) -> Path:
        return self.home / "cluster.id"

    # -- public API -----------------------------------------------------------------------------

    def start(self, timeout_s: float = 120.0) -> StartResult:
        """Start the broker (or find it running) and return once it answers metadata requests.

        ``timeout_s`` bounds the wait for the broker to answer, not the one-off jar download.
        """
        started = time.monotonic()
        self.home.mkdir(parents=True, exist_ok=True)
        with self._lock():
            pid = self.pid()
            if pid is not None:
                if self.config_file.read_text() != self._render_config():
                    raise BrokerError(
                        f"a broker (pid {pid}) already runs from {self.home} with other settings "
                        f"(ports?); run `hub broker stop` first to start it on {self.bootstrap}"
                    )
                self._wait_until_answering(pid, timeout_s)
                elapsed = time.monotonic() - started
                log.info("broker.already_running", pid=pid, bootstrap=self.bootstrap)
                return StartResult(self.bootstrap, elapsed, True, False, pid)

            self._check_ports_free()
            fetched = self.ensure_jars()
            java = find_java()
            self._write_config()
            self._ensure_formatted(java)
            proc = self._spawn(java)
            try:
                self._wait_until_answering(proc.pid, timeout_s)
            except BrokerError:
                self.stop(timeout_s=10)
                raise
            elapsed = time.monotonic() - started
            log.info(
                "broker.started",
                pid=proc.pid,
                bootstrap=self.bootstrap,
                version=self.version,
                elapsed_s=round(elapsed, 2),
                fetched_jars=fetched,
            )
            return StartResult(self.bootstrap, elapsed, False, fetched, proc.pid)

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop the broker cleanly (SIGTERM runs Kafka's controlled shutdown); SIGKILL only after
        ``timeout_s``. Returns whether a broker was running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        log.info("broker.stopping", pid=pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not self._wait_exit(pid, timeout_s):
            log.warning("broker.kill", pid=pid, after_s=timeout_s)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self._wait_exit(pid, 10.0)
        self.pid_file.unlink(missing_ok=True)
        self._proc = None
        log.info("broker.stopped", pid=pid)
        return True

    def kill(self) -> bool:
        """Crash the broker: SIGKILL, no controlled shutdown, for fault drills and tests.

        Returns once the process is gone (its ports are free), whether one was running.
        """
        pid = self.pid()
        if pid is None:
            return False
        log.warning("broker.killing", pid=pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        self._wait_exit(pid, 10.0)
        self.pid_file.unlink(missing_ok=True)
        self._proc = None
        return True

    def status(self, probe: bool = True) -> BrokerStatus:
        """Whether the broker process runs and, with ``probe``, whether it answers clients."""
        pid = self.pid()
        answering = kafka_answers(self.client_settings) if pid is not None and probe else None
        return BrokerStatus(
            running=pid is not None,
            pid=pid,
            bootstrap=self.bootstrap,
            version=self.version,
            data_dir=self.data_dir,
            log_file=self.server_log,
            answering=answering,
        )

    def pid(self) -> int | None:
        """The pid of this directory's running broker, or None (missing or stale pid file)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if self._is_our_broker(pid) else None

    def wipe_data(self) -> None:
        """Delete all topics and the cluster identity (the broker must be stopped)."""
        if self.pid() is not None:
            raise BrokerError("stop the broker before wiping its data")
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.cluster_id_file.unlink(missing_ok=True)

    def tail_logs(self, lines: int = 40) -> str:
        """The last lines of the broker's stdout/stderr and log4j log, for error messages."""
        parts = []
        for path in (self.out_file, self.server_log):
            if path.is_file() and path.stat().st_size:
                with path.open(errors="replace") as fh:
                    tail = "".join(deque(fh, maxlen=lines)).rstrip()
                parts.append(f"--- {path} (last {lines} lines) ---\n{tail}")
        return "\n".join(parts) or "(the broker wrote no log)"

    # -- jars -----------------------------------------------------------------------------------

    def ensure_jars(self) -> bool:
        """Copy the broker's runtime jars into the cache unless a completed copy is there.

        Maven writes into a private staging folder that is renamed into place and marked complete
        only on success, so an interrupted download or two concurrent first runs never leave a
        half-filled lib/ that would fail later with a ClassNotFoundException.
        """
        if (self.lib_dir / COMPLETE_MARKER).is_file():
            return False
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError(
                f"Kafka {self.version} jars are not in {self.lib_dir} and Maven (mvn) is not on "
                "PATH to fetch them; install Maven (e.g. apt-get install maven)."
            )
        if not POM_FILE.is_file():
            raise BrokerError(f"{POM_FILE} is missing: run the hub from its source checkout")
        parent = self.lib_dir.parent
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="lib.partial-", dir=parent))
        command = [
            mvn,
            "-B",
            "-f",
            str(POM_FILE),
            "dependency:copy-dependencies",
            f"-Dkafka.version={self.version}",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={staging}",
        ]
        self._say(f"Fetching Apache Kafka {self.version} jars with Maven (first run only)…")
        started = time.monotonic()
        try:
            self._run_maven(command, parent)
            jars = sorted(staging.glob("*.jar"))
            if not any(j.name.startswith(f"kafka_2.13-{self.version}") for j in jars):
                raise BrokerError(f"Maven finished but kafka_2.13-{self.version}.jar is missing")
            (staging / COMPLETE_MARKER).write_text(f"kafka {self.version}\njars {len(jars)}\n")
            self._install_staging(staging)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        elapsed = time.monotonic() - started
        self._say(f"Kafka {self.version}: {len(jars)} jars in {self.lib_dir} ({elapsed:.1f} s)")
        log.info(
            "broker.jars_fetched", version=self.version, jars=len(jars), elapsed_s=round(elapsed, 2)
        )
        return True

    def _run_maven(self, command: list[str], cwd: Path) -> None:
        tail: deque[str] = deque(maxlen=30)
        errors: deque[str] = deque(maxlen=20)
        downloaded = 0
        with subprocess.Popen(
            command,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ) as proc:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.rstrip()
                tail.append(line)
                if line.startswith("[ERROR]"):
                    errors.append(line)
                match = _DOWNLOADED.search(line)
                if match:
                    downloaded += 1
                    size = f" {match.group(2)}" if match.group(2) else ""
                    self._say(f"  [{downloaded:>2}] {match.group(1)}{size}")
            code = proc.wait()
        if code != 0:
            detail = "\n".join(errors or tail)
            raise BrokerError(
                f"Maven could not fetch Kafka {self.version} (exit {code}):\n{detail}"
            )

    def _install_staging(self, staging: Path) -> None:
        try:
            staging.rename(self.lib_dir)
        except OSError:
            if (self.lib_dir / COMPLETE_MARKER).is_file():
                return  # a concurrent first run finished first; its copy is as good as ours
            shutil.rmtree(self.lib_dir, ignore_errors=True)  # leftover of an interrupted copy
            staging.rename(self.lib_dir)

    # -- broker process -------------------------------------------------------------------------

    def _write_config(self) -> None:
        """Regenerate server.properties so port and path changes in the settings take effect."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(self._render_config())

    def _render_config(self) -> str:
        controller = f"{HOST}:{self.controller_port}"
        protocol = self.settings.kafka_security_protocol
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": controller,
            "listeners": f"{protocol}://{self.bootstrap},CONTROLLER://{controller}",
            "advertised.listeners": f"{protocol}://{self.bootstrap},CONTROLLER://{controller}",
            "inter.broker.listener.name": protocol,
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": f"CONTROLLER:PLAINTEXT,{protocol}:{protocol}",
            **self._sasl_config(),
            **self._tls_config(),
            "log.dirs": str(self.data_dir),
            # One node: every internal topic has exactly one replica.
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            # Hub topics are created explicitly with their specs (hub topics create).
            "auto.create.topics.enable": "false",
            "num.partitions": "1",
            # Consumers in demos and tests join a group once; do not wait 3 s for more members.
            "group.initial.rebalance.delay.ms": "0",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "log.retention.hours": "168",
            "log.segment.bytes": str(256 * 1024 * 1024),
        }
        body = "".join(f"{key}={value}\n" for key, value in props.items())
        header = "# Generated by `hub broker start` from HubSettings; edits are overwritten.\n"
        return header + body

    def _sasl_config(self) -> dict[str, str]:
        """SASL/SCRAM on the client listener; the broker talks to itself as the settings' user."""
        if not self.settings.kafka_uses_sasl:
            return {}
        mechanism = str(self.settings.kafka_sasl_mechanism)
        protocol = self.settings.kafka_security_protocol
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f"username={_jaas_quote(self._scram_user()[0])} "
            f"password={_jaas_quote(self._scram_user()[1])};"
        )
        return {
            "sasl.enabled.mechanisms": mechanism,
            "sasl.mechanism.inter.broker.protocol": mechanism,
            f"listener.name.{protocol.lower()}.{mechanism.lower()}.sasl.jaas.config": jaas,
        }

    def _tls_config(self) -> dict[str, str]:
        """TLS on the client listener from PEM files; the broker is its own client inside."""
        if not self.settings.kafka_uses_tls or self.tls is None:
            return {}
        return {
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self.tls.keystore.resolve()),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.tls.truststore.resolve()),
            "ssl.client.auth": "required" if self.tls.client_auth else "none",
        }

    def _scram_user(self) -> tuple[str, str]:
        username = self.settings.kafka_sasl_username
        password = self.settings.kafka_sasl_password_value()
        # The settings' validation requires both with a SASL protocol.
        assert username is not None
        assert password is not None
        return username, password

    def _scram_format_args(self) -> list[str]:
        if not self.settings.kafka_uses_sasl:
            return []
        username, password = self._scram_user()
        mechanism = self.settings.kafka_sasl_mechanism
        return ["--add-scram", f"{mechanism}=[name={username},password={password}]"]

    def _ensure_formatted(self, java: str) -> None:
        """Format KRaft storage once; a formatted log dir has meta.properties."""
        if (self.data_dir / "meta.properties").is_file():
            return
        cluster_id = self._cluster_id()
        command = [
            java,
            "-Xmx256m",
            *self._log_opts(),
            "-cp",
            self._classpath(),
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "-t",
            cluster_id,
            "-c",
            str(self.config_file),
            *self._scram_format_args(),
        ]
        self._say(f"Formatting KRaft storage in {self.data_dir} (cluster id {cluster_id})")
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            raise BrokerError(
                f"kafka.tools.StorageTool format failed (exit {result.returncode}):\n"
                f"{result.stdout}{result.stderr}"
            )
        log.info("broker.formatted", data_dir=str(self.data_dir), cluster_id=cluster_id)

    def _cluster_id(self) -> str:
        if self.cluster_id_file.is_file():
            return self.cluster_id_file.read_text().strip()
        cluster_id = new_cluster_id()
        self.cluster_id_file.write_text(cluster_id + "\n")
        return cluster_id

    def _spawn(self, java: str) -> subprocess.Popen[bytes]:
        command = [
            java,
            *HEAP_OPTS,
            *JVM_OPTS,
            *self._log_opts(),
            "-cp",
            self._classpath(),
            "kafka.Kafka",
            str(self.config_file),
        ]
        self._say(f"Starting Kafka {self.version} on {self.bootstrap} (logs: {self.logs_dir})")
        with self.out_file.open("ab") as out:
            out.write(f"\n=== start {time.strftime('%Y-%m-%dT%H:%M:%S')} ===\n".encode())
            out.flush()
            proc = subprocess.Popen(
                command,
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # ctrl-C in the terminal must not kill the broker
                preexec_fn=_parent_death_signal() if self._tie_to_parent else None,
            )
        self._proc = proc
        self.pid_file.write_text(f"{proc.pid}\n")
        return proc

    def _classpath(self) -> str:
        return str(self.lib_dir / "*")  # the JVM expands the wildcard itself

    def _log_opts(self) -> list[str]:
        return [
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            f"-Dkafka.logs.dir={self.logs_dir}",
        ]

    def _wait_until_answering(self, pid: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if not self._alive(pid):
                raise BrokerError(
                    f"the Kafka broker (pid {pid}) exited while starting.\n{self.tail_logs()}"
                )
            if _port_open(HOST, self.port) and kafka_answers(self.client_settings):
                return
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"the Kafka broker (pid {pid}) did not answer on {self.bootstrap} within "
                    f"{timeout_s:.0f} s.\n{self.tail_logs()}"
                )
            time.sleep(0.2)

    def _check_ports_free(self) -> None:
        for port in (self.port, self.controller_port):
            if _port_open(HOST, port):
                raise BrokerError(
                    f"port {port} on {HOST} is in use by another process (another Kafka?); "
                    "stop it or choose other ports with HUB_KAFKA_PORT / "
                    "HUB_KAFKA_CONTROLLER_PORT"
                )

    def _is_our_broker(self, pid: int) -> bool:
        if not self._alive(pid):
            return False
        cmdline = Path(f"/proc/{pid}/cmdline")
        if not cmdline.parent.is_dir():
            return True  # no procfs (macOS): a live pid from our pid file is the best we know
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            return False
        # A recycled pid belongs to another program: only our broker runs with our config file.
        return b"kafka.Kafka" in args and str(self.config_file).encode() in args

    def _alive(self, pid: int) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.poll() is None  # also reaps our own child, so no zombie lingers
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        stat = Path(f"/proc/{pid}/stat")
        with contextlib.suppress(OSError, IndexError):
            if stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return False
        return True

    def _wait_exit(self, pid: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self._alive(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialise start() of the same directory across processes (two terminals, two tests)."""
        with (self.home / ".lock").open("w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _say(self, message: str) -> None:
        if self._progress is not None:
            self._progress(message)
        else:
            log.info("broker.progress", message=message)


def find_java() -> str:
    """``$JAVA_HOME/bin/java`` when JAVA_HOME is set and valid, else ``java`` on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("java")
    if found is None:
        raise BrokerError("Java 17+ is needed for Kafka 4: set JAVA_HOME or put java on PATH")
    return found


def new_cluster_id() -> str:
    """A KRaft cluster id as Kafka's ``Uuid.randomUuid`` makes it: 16 random bytes, base64url.

    Like Kafka, avoid ids starting with '-', which command-line parsers take for an option.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def wait_for_kafka(settings: HubSettings, timeout_s: float = 60.0) -> None:
    """Block until the settings' brokers answer (for brokers the hub did not start itself)."""
    bootstrap = settings.kafka_bootstrap
    deadline = time.monotonic() + timeout_s
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    while not (_port_open(host, int(port)) and kafka_answers(settings)):
        if time.monotonic() > deadline:
            raise BrokerError(f"no Kafka broker answered on {bootstrap} within {timeout_s:.0f} s")
        time.sleep(0.5)


def _jaas_quote(value: str) -> str:
    """A JAAS option value in double quotes (backslash escapes quotes and backslashes)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _parent_death_signal() -> Callable[[], None] | None:
    """A preexec hook asking Linux to SIGTERM the child when its parent dies (PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)  # loaded before fork
    pr_set_pdeathsig = 1

    def hook() -> None:
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)

    return hook
