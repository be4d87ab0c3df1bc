"""Forgetting a person end to end, as a person runs it, with real subprocesses on the real broker.

``hub simulate`` (personal fields sealed at the edge with each person's data key) → ``hub
route --until-idle`` and ``hub deliver --all`` to ``hub receivers`` → ``hub archive --once`` →
``hub replay`` + ``hub report`` → two people's paths sent again (a source system re-sending;
same event ids), then one of them forgotten (``hub person forget -``) before the router reaches
them → route and deliver again → archive again. What must show:

(a) ``hub privacy scan`` finds no identity code, name, e-mail or phone in clear in the raw
    bytes of any hub topic, the archive files and the receipt store; and, as a control that the
    scan can fail, it does find them in a file written with them in clear (exit 1, where and
    kind, never a value). Independently of the scanner's patterns, no exact personal value of
    any simulated person is in those raw bytes (or in the archive's decompressed blocks);
(b) every copy of the forgotten person's personal fields (log, outboxes, archive) is unreadable:
    opening with the key directory fails with KeyErased; the other re-sent person's open;
(c) their pseudonymous facts still count: the store rebuilt from the log has their rows, and
    the report files are byte-identical to the ones written before the forgetting;
(d) the route that needs their fields (their statement to the payer) dead-letters with the
    reason, and ``hub dlq list`` shows it;
(e) nothing else is disturbed: every other person's deliveries are what they were, the other
    re-sent person's events are delivered again (receivers drop them as duplicates).

The people's personal values come from the simulator run in this process with the same seed and
secret, never from the code under test.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pytest
from pydantic import SecretStr

from connectors.receivers.runner import ReceiversClient, receivers_subprocess
from connectors.simulator import SimulationConfig, simulate
from connectors.simulator.names import FIRST_NAMES, LAST_NAMES
from hub.events import CustomerPathEvent
from hub.identity import Pseudonymizer
from hub.kafka.publisher import open_publisher
from hub.kafka.reading import read_topic
from hub.kafka.topics import ensure_topics, outbox_topic, person_keys_spec
from hub.privacy.fields import SealedFields
from hub.privacy.keystore import open_person_keys
from hub.privacy.scan import avro_blocks
from hub.privacy.sealing import KeyErased
from hub.reporting.archive import iter_archive
from hub.routing.outbox import OutboxCodec
from hub.routing.router import ensure_router_topics
from hub.routing.routes import load_routes
from hub.serde import SingleObjectSerializer
from hub.settings import HubSettings
from tests.conftest import REPO_ROOT, SIMULATION_SECRET, hub_environment, settings_for

pytestmark = pytest.mark.kafka

JOBSEEKERS = 40
SEED = 23
KEK = "e2e:" + base64.b64encode(b"k" * 32).decode()
STATEMENT = "LabourPolicyStatementIssued"
WORKERS = ("kela", "funds", "providers", "municipal")
#: Receiver name prefix -> destination of the default routes.
DESTINATION_OF = {
    "kela": "kela",
    "fund": "funds",
    "provider": "providers",
    "municipal": "municipal",
}
ROUTED = re.compile(r"routed (\d+) log record\(s\) in \d+ transaction\(s\): (.*?); dead letters")
PERSONAL_KEYS = (
    "personal_identity_code",
    "first_name",
    "last_name",
    "email",
    "phone",
    "participant_first_name",
    "participant_last_name",
    "participant_email",
    "participant_phone",
)


# -- helpers -------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _routes_on(folder: Path, port: int) -> Path:
    """The packaged routes and provider directory, their receivers on ``port``."""
    folder.mkdir(parents=True, exist_ok=True)
    data = REPO_ROOT / "hub" / "routing" / "data"
    for name in ("routes.toml", "providers.toml"):
        text = (data / name).read_text(encoding="utf-8")
        (folder / name).write_text(text.replace("127.0.0.1:8700", f"127.0.0.1:{port}"))
    return folder / "routes.toml"


def _hub(
    env: dict[str, str], cwd: Path, *args: str, stdin: str | None = None, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "hub", *args],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if ok:
        assert done.returncode == 0, f"hub {' '.join(args)}: {done.stdout}\n{done.stderr}"
    return done


def _routed(output: str) -> Counter[str]:
    """Records routed per destination, from hub route's last line."""
    match = ROUTED.search(output)
    assert match, output
    counts: Counter[str] = Counter()
    for part in match.group(2).split(","):
        name, _, count = part.strip().rpartition(" ")
        if name:
            counts[name] = int(count)
    return counts


def _received(receivers: ReceiversClient) -> Counter[str]:
    """Applied plus dropped as duplicate, per destination: every 2xx answer once."""
    counts: Counter[str] = Counter()
    for receiver, c in receivers.stats()["receivers"].items():
        destination = DESTINATION_OF.get(receiver.split("/", 1)[0], receiver)
        counts[destination] += c["applied"] + c["duplicates"]
    return counts


def _applied(receivers: ReceiversClient) -> dict[str, set[tuple[str, str, str | None]]]:
    """Per person: (receiver, event id, body digest) of every event applied."""
    found: dict[str, set[tuple[str, str, str | None]]] = {}
    for receiver, entries in receivers.applied_all().items():
        for entry in entries:
            found.setdefault(entry["subject"], set()).add(
                (receiver, entry["event_id"], entry.get("body_sha256"))
            )
    return found


@contextmanager
def _delivering(env: dict[str, str], cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = (cwd / f"deliver-{uuid.uuid4().hex[:6]}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "hub", "deliver", "--all", "--commit-interval", "0.2"],
        cwd=cwd,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield process
    finally:
        process.terminate()
        code = process.wait(60)
        log.close()
        assert code == 0, Path(log.name).read_text(errors="replace")[-3000:]


def _until(condition: Callable[[], bool], what: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def _deliver_until(
    env: dict[str, str], cwd: Path, receivers: ReceiversClient, wanted: Counter[str]
) -> None:
    """``hub deliver --all`` until every worker destination has answered ``wanted`` more."""
    start = _received(receivers)
    with _delivering(env, cwd):
        _until(
            lambda: all(_received(receivers)[d] - start[d] >= wanted[d] for d in WORKERS),
            f"deliveries {dict(wanted)}",
        )


def _people() -> list[list[CustomerPathEvent]]:
    config = SimulationConfig(jobseekers=JOBSEEKERS, seed=SEED)
    return list(simulate(config, Pseudonymizer(SIMULATION_SECRET)))


def _personal_values(paths: list[list[CustomerPathEvent]]) -> set[bytes]:
    values: set[str] = set()
    for path in paths:
        for event in path:
            payload = event.payload.model_dump()
            values |= {str(payload[k]) for k in PERSONAL_KEYS if payload.get(k)}
    # Short first names ("Aino") occur inside other words; codes, e-mails, phones and last
    # names are specific enough to be searched as they are.
    return {v.encode() for v in values if len(v) >= 5}


async def _raw_topic(settings: HubSettings, topic: str) -> list[bytes]:
    found = []
    async for r in read_topic(settings, topic):
        headers = b"\n".join(k.encode() + b"=" + (v or b"") for k, v in (r.headers or ()))
        found.append((r.key or b"") + b"\n" + (r.value or b"") + b"\n" + headers)
    return found


def _facts(store: Path, subject: str) -> int:
    con = duckdb.connect(str(store), read_only=True)
    try:
        tables = [
            t
            for (t,) in con.execute(
                "SELECT DISTINCT c.table_name FROM information_schema.columns c "
                "JOIN information_schema.tables t USING (table_name) "
                "WHERE c.column_name = 'subject' AND t.table_type = 'BASE TABLE' "
                "AND c.table_name NOT LIKE '%rejected%'"
            ).fetchall()
        ]
        return sum(
            con.execute(f'SELECT count(*) FROM "{t}" WHERE subject = ?', [subject]).fetchone()[0]
            for t in tables
        )
    finally:
        con.close()


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _report(env: dict[str, str], cwd: Path, store: Path, out: Path) -> dict[str, bytes]:
    _hub(env, cwd, "replay", "--from-offset=0", f"--store={store}")
    _hub(
        env, cwd, "report", "--period=2026-01", "--from=2025-11", f"--store={store}", f"--out={out}"
    )
    return _files(out)


# -- the test ------------------------------------------------------------------------------------


@pytest.mark.timeout(1200)  # a dozen hub processes, each starting Python and a Kafka client
async def test_a_forgotten_person_is_unreadable_everywhere_counted_and_nothing_is_in_clear(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    port = _free_port()
    settings = settings_for(
        kafka_bootstrap,
        partitions=3,
        state_dir=tmp_path / "hub-state",
        pseudonym_secret=SecretStr(SIMULATION_SECRET),
        archive_dir=tmp_path / "archive",
        kek=SecretStr(KEK),
        topic_person_keys=f"test.person-keys.{uuid.uuid4().hex[:12]}",
        routes_file=_routes_on(tmp_path / "routes", port),
        receivers_port=port,
    )
    config = load_routes(settings)
    await ensure_router_topics(settings, config)
    await ensure_topics(settings, extra=[person_keys_spec(settings)])
    env = hub_environment(settings, HUB_LOG_LEVEL="WARNING", NO_COLOR="1", COLUMNS="200")

    paths = _people()
    with_statement = [p for p in paths if any(e.event_type == STATEMENT for e in p)]
    forgotten, kept = with_statement[0], with_statement[1]
    subject, kept_subject = forgotten[0].envelope.subject, kept[0].envelope.subject
    code = forgotten[0].payload.personal_identity_code

    with receivers_subprocess(env, port=port, cwd=tmp_path) as receivers:
        # -- simulate, route, deliver, archive, report --------------------------------------
        _hub(env, tmp_path, "simulate", f"--jobseekers={JOBSEEKERS}", f"--seed={SEED}")
        first = _routed(_hub(env, tmp_path, "route", "--until-idle").stdout)
        assert all(first[d] > 0 for d in WORKERS), first
        _deliver_until(env, tmp_path, receivers, first)
        applied_before = _applied(receivers)
        assert subject in applied_before
        assert any(r.startswith(("kela", "fund/")) for r, _, _ in applied_before[subject])
        _hub(env, tmp_path, "archive", "--once")
        report_before = _report(env, tmp_path, tmp_path / "before.duckdb", tmp_path / "r1")
        facts_before = _facts(tmp_path / "before.duckdb", subject)
        assert facts_before >= len({e.envelope.event_id for e in forgotten}) // 2

        # -- their paths sent again; one person forgotten before the router reaches them ----
        async with open_publisher(settings) as publisher:
            resent = [e async for e, _ in publisher.publish_all([*forgotten, *kept])]
        assert len(resent) == len(forgotten) + len(kept)
        forget = _hub(
            env, tmp_path, "person", "forget", "-", "--basis", "order", "--json", stdin=code + "\n"
        )
        assert code not in forget.stdout + forget.stderr
        routed = _hub(env, tmp_path, "route", "--until-idle").stdout
        second = _routed(routed)
        assert "dead letters: none" not in routed
        _deliver_until(env, tmp_path, receivers, second)
        applied_after = _applied(receivers)
        stats = receivers.stats()
        _hub(env, tmp_path, "archive", "--once")

    # (d) the forgotten person's routes that need their fields are dead letters, with why.
    listed = _hub(env, tmp_path, "dlq", "list", "--json").stdout
    letters = [json.loads(line) for line in listed.splitlines() if line.startswith("{")]
    assert letters, listed
    assert {(r["stage"], r["error_class"]) for r in letters} == {("route", "PersonalDataErased")}
    assert {r["event_id"] for r in letters} <= {str(e.envelope.event_id) for e in forgotten}
    payer_letters = [r for r in letters if r["destination"] in ("kela", "funds")]
    assert any(r["event_type"].endswith(STATEMENT) for r in payer_letters), letters
    for r in letters:
        assert "erased" in r["reason"]
        assert f"destination {r['destination']}" in r["reason"]
        assert code not in r["reason"]

    # (e) nobody else disturbed: the same deliveries for every other person; the kept person's
    # events re-sent were delivered again (as duplicates), none dead-lettered.
    others = {s: a for s, a in applied_before.items() if s != subject}
    assert {s: a for s, a in applied_after.items() if s != subject} == others
    assert applied_after[subject] == applied_before[subject]
    kept_routed = sum(second[d] for d in WORKERS)
    assert kept_routed > 0
    assert stats["total"]["conflicts"] == 0
    assert stats["total"]["duplicates"] >= kept_routed

    # (c) their pseudonymous facts still count; the report is byte-identical.
    report_after = _report(env, tmp_path, tmp_path / "after.duckdb", tmp_path / "r2")
    assert report_after == report_before
    assert _facts(tmp_path / "after.duckdb", subject) == facts_before > 0

    # (b) every copy of their personal fields is unreadable; the kept person's still open.
    fields = SealedFields()
    serializer = SingleObjectSerializer()
    codec = OutboxCodec.for_routes(config)
    copies: Counter[str] = Counter()
    with open_person_keys(settings) as keys:

        def check(where: str, type_name: str, record: dict[str, Any]) -> None:
            who = record["envelope"]["subject"]
            if who not in (subject, kept_subject) or not list(
                fields.sealed_values(type_name, record)
            ):
                return
            opened = fields.open(type_name, record, keys)
            if who == subject:
                assert opened.opened == (), where
                assert opened.failed, where
                assert isinstance(opened.error, KeyErased), (where, opened.error)
                copies[where] += 1
            else:
                assert opened.failed == (), (where, opened.error)

        async for r in read_topic(settings, settings.topic_customer_path):
            decoded = serializer.decode(r.value)
            check("log", decoded.type_name, decoded.record)
        for destination in WORKERS:
            async for r in read_topic(settings, outbox_topic(settings, destination)):
                if r.value is not None:
                    out = codec.decode(r.value)
                    check(f"outbox {destination}", out.type_name, out.record)
        for item in iter_archive(settings.archive_dir, settings.topic_customer_path):
            if item.record is not None and item.type_name is not None:
                check("archive", item.type_name, item.record)
    assert copies["log"] > 0
    assert copies["log"] % 2 == 0  # the first sending and the second
    assert copies["archive"] == copies["log"]
    assert sum(copies[f"outbox {d}"] for d in WORKERS) > 0  # routed before the forgetting

    # (a) nothing in clear: the scan, and every exact value of every simulated person.
    names = tmp_path / "names.txt"  # the simulator's names: the hub has no list of its own
    names.write_text("\n".join([*FIRST_NAMES, *LAST_NAMES]) + "\n", encoding="utf-8")
    scan = _hub(env, tmp_path, "privacy", "scan", "--json", f"--names={names}", ok=False)
    assert scan.returncode == 0, scan.stdout[-4000:] + scan.stderr[-2000:]
    result = json.loads(scan.stdout)
    assert result["found"] == 0
    assert result["names_searched"] is True
    assert result["names"] == len({*FIRST_NAMES, *LAST_NAMES})
    places = {p["place"]: p for p in result["places"]}
    log_place = places[settings.topic_customer_path]
    assert log_place["scanned"] == sum(len(p) for p in paths) + len(resent)
    assert log_place["sealed_skipped"] > 0
    for destination in WORKERS:
        assert places[outbox_topic(settings, destination)]["scanned"] > 0
    assert places[settings.topic_person_keys]["scanned"] > 0
    assert places[settings.topic_disclosures]["scanned"] > 0
    archive = next(p for p in result["places"] if p["what"] == "archive")
    assert archive["scanned"] >= 2
    assert archive["blocks"] >= 2
    receipts = next(p for p in result["places"] if p["what"] == "receipts")
    assert receipts["note"] in (None, "absent")  # hub simulate writes no ingest receipts

    personal = _personal_values(paths)
    assert len(personal) > JOBSEEKERS
    haystacks: dict[str, bytes] = {}
    topics = [
        settings.topic_customer_path,
        *(outbox_topic(settings, d) for d in (*WORKERS, "reporting")),
        settings.topic_dead_letter,
        settings.topic_ingest_receipts,
        settings.topic_source_positions,
        settings.topic_router_state,
        settings.topic_disclosures,
        settings.topic_person_keys,
    ]
    for topic in topics:
        haystacks[topic] = b"\x00".join(await _raw_topic(settings, topic))
    for path in sorted(settings.archive_dir.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            haystacks[str(path)] = data
            if data.startswith(b"Obj\x01"):
                haystacks[f"{path} (decompressed)"] = b"".join(b.data for b in avro_blocks(data))
    assert sum(len(h) for h in haystacks.values()) > 100_000
    found = {where: sum(v in h for v in personal) for where, h in haystacks.items()}
    assert not any(found.values()), {w: n for w, n in found.items() if n}

    # The control: the same scan fails on a file with the person's data in clear.
    email, phone = forgotten[0].payload.email, forgotten[0].payload.phone
    leak = tmp_path / "export" / "people.csv"
    leak.parent.mkdir()
    leak.write_text(
        f"code,first,last,email,phone\n{code},{forgotten[0].payload.first_name},"
        f"{forgotten[0].payload.last_name},{email},{phone}\n",
        encoding="utf-8",
    )
    control = _hub(
        env,
        tmp_path,
        "privacy",
        "scan",
        "--json",
        f"--names={names}",
        f"--path={leak.parent}",
        ok=False,
    )
    assert control.returncode == 1, control.stdout[-3000:] + control.stderr[-2000:]
    leaked = json.loads(control.stdout)
    [export] = [p for p in leaked["places"] if p["what"] == "path"]
    assert export["hits"] == {"identity-code": 1, "name": 2, "e-mail": 1, "phone": 1}
    assert leaked["found"] == 5
    assert {f["where"].split(" @ ")[0] for f in export["findings"]} == {"people.csv"}
    table = _hub(env, tmp_path, "privacy", "scan", f"--names={names}", f"--path={leak}", ok=False)
    assert table.returncode == 1
    assert "people.csv" in table.stdout
    for output in (control.stdout, control.stderr, table.stdout, table.stderr):
        for value in (code, email, phone, forgotten[0].payload.last_name):
            assert str(value) not in output
