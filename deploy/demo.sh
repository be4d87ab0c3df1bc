#!/usr/bin/env bash
# The hub's main job end to end on its embedded defaults: install, start a real local Kafka
# (KRaft, jars from Maven Central), create the topics, simulate jobseekers and publish them, then
# route the log to the outboxes and deliver them to local receivers (Kela, funds, providers,
# municipal systems), and print per destination what was delivered, retried, dead-lettered and
# dropped as duplicate by the receiver. Then archive the log, replay the archive into the
# reporting store and write the report of January 2026 (CSV, Parquet, one offline HTML file).
# Then forget one simulated person (hub person forget: their data keys are deleted) while a
# statement of theirs waits in the log: its payer route dead-letters with the reason, the report
# rebuilt from the log counts their facts as before, and hub privacy scan reads every topic, the
# archive and the receipt store for identity codes, names, e-mails and phones in clear.
#   JOBSEEKERS=300 SEED=7 bash deploy/demo.sh
#   REPORT_PERIOD=2026-02 bash deploy/demo.sh   # another month of the simulated window
#   DEMO_FAULT=0 bash deploy/demo.sh      # no failing fund receivers at the start
#   DEMO_FRESH=0 bash deploy/demo.sh      # keep the broker's topics and the archive of earlier runs
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/setup-venv.sh

demo=.hub/demo
archive_dir="${HUB_ARCHIVE_DIR:-.hub/archive}"
store="${HUB_REPORTING_STORE:-.hub/reporting.duckdb}"
if [[ "${DEMO_FRESH:-1}" != 0 ]]; then
  # The privacy scan at the end reads everything the broker and the archive hold: records an
  # earlier run wrote before field encryption are in clear there, and it would find them.
  echo "==> starting from an empty broker, archive and store (DEMO_FRESH=0 keeps earlier runs)"
  hub broker stop --wipe-data >/dev/null
  rm -rf "$archive_dir" "$store" "$store.wal" "$demo" \
    "${HUB_STATE_DIR:-.hub}/receipts/${HUB_TOPIC_INGEST_RECEIPTS:-te.hub.ingest-receipts.v1}.sqlite3"*
fi

echo "==> starting the local Kafka broker"
hub broker start
echo "==> creating topics"
hub topics create
echo "==> simulating ${JOBSEEKERS:-300} jobseekers (seed ${SEED:-7})"
# A few facts are corrected later (a wrong channel or day) or withdrawn (job offers), as source
# systems do: the report counts the latest version known, an as-of report the one known then.
hub simulate --jobseekers "${JOBSEEKERS:-300}" --seed "${SEED:-7}" --correction-share 0.03

# --- route and deliver ---------------------------------------------------------------------------
# Processes started here are stopped on exit, whatever happens (Ctrl-C included: background jobs
# of a script ignore SIGINT, so they get SIGTERM, which each of them handles by finishing its
# work in flight). Their output goes to .hub/demo/.
mkdir -p "$demo"
receivers="http://${HUB_RECEIVERS_HOST:-127.0.0.1}:${HUB_RECEIVERS_PORT:-8700}"
metrics_port="${DELIVER_METRICS_PORT:-9402}"
started=()
stop_started() {
  local pid
  for pid in "${started[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${started[@]}"; do wait "$pid" 2>/dev/null || true; done
  started=()
}
trap stop_started EXIT

echo "==> starting the local receivers on $receivers (what they apply: $demo/receivers-applied.ndjson)"
hub receivers --record "$demo/receivers-applied.ndjson" >"$demo/receivers.out" 2>"$demo/receivers.log" &
started+=("$!")
python deploy/demo_delivery.py snapshot --receivers "$receivers" >"$demo/baseline.json"

echo "==> routing the log to the outboxes (hub route --until-idle) while delivering them (hub deliver --all)"
rm -f "$demo/router.done"
(
  trap 'kill -TERM "$router" 2>/dev/null' TERM
  hub route --until-idle >"$demo/router.out" 2>"$demo/router.log" &
  router=$!
  status=0
  wait "$router" || status=$?
  wait "$router" 2>/dev/null || true
  echo "$status" >"$demo/router.done"
) &
started+=("$!")
if [[ "${DEMO_FAULT:-1}" != 0 ]]; then
  echo "    (the fund receivers fail 30% of requests for their first 1.5 s: those are retried)"
  python deploy/demo_delivery.py fault --receivers "$receivers" --receiver fund --fail-share 0.3 --for 1.5 &
  started+=("$!")
fi
hub deliver --all --metrics-port "$metrics_port" --progress-interval 2 \
  >"$demo/deliver.out" 2>"$demo/deliver.log" &
deliver=$!
started+=("$deliver")
python deploy/demo_delivery.py wait --receivers "$receivers" \
  --deliver-pid "$deliver" --deliver-log "$demo/deliver.log" \
  --deliver-metrics "http://127.0.0.1:$metrics_port/metrics" \
  --router-done "$demo/router.done" --router-output "$demo/router.out" \
  --baseline "$demo/baseline.json" --timeout "${DEMO_TIMEOUT_S:-150}"
if [[ "$(cat "$demo/router.done" 2>/dev/null || echo 1)" != 0 ]]; then
  echo "hub route failed; see $demo/router.log" >&2
  exit 1
fi
echo "==> stopping the receivers and the delivery workers"
stop_started

# --- archive, replay, report ----------------------------------------------------------------------
echo "==> archiving the log into Avro files per day and partition (hub archive --once)"
hub archive --once --progress-every 5 2>"$demo/archive.log"
echo "==> rebuilding the reporting store from the archive (hub replay --from-archive)"
rm -f "$store" "$store.wal"
hub replay --from-archive "$archive_dir" --into store
period="${REPORT_PERIOD:-2026-01}"
echo "==> writing the report of $period (hub report)"
hub report --period "$period" --from 2025-11 2>"$demo/report.log"
echo "    open ${HUB_REPORT_DIR:-.hub/reports}/$period/report.html in a browser (one file, works offline); CSV and Parquet beside it"

# --- forget one person -----------------------------------------------------------------------
# A simulated person with a labour policy statement for their payer: their events are sent
# again (a source system re-sending a path; same event ids) and, before the router reaches
# them, the person asks to be forgotten. Their identity code goes from the simulator (same seed
# and secret) to hub person forget through a file readable by this user only, never a command
# line or the terminal, and is deleted at once.
forget="$demo/forget"
mkdir -p "$forget" && chmod 700 "$forget"
echo "==> choosing a simulated person with a statement for a payer and sending their path again"
python - "$forget" "${JOBSEEKERS:-300}" "${SEED:-7}" <<'PY'
import asyncio, os, sys
from pathlib import Path
from connectors.simulator import SimulationConfig, simulate
from hub.identity import Pseudonymizer
from hub.kafka.publisher import open_publisher
from hub.logging import configure_logging
from hub.settings import get_settings

folder, jobseekers, seed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
settings = get_settings()
configure_logging(settings.model_copy(update={"log_level": "WARNING"}))
config = SimulationConfig(jobseekers=jobseekers, seed=seed, correction_share=0.03)
path = next(
    p for p in simulate(config, Pseudonymizer.from_settings(settings))
    if any(e.event_type == "LabourPolicyStatementIssued" for e in p)
)
code = os.open(folder / "identity-code", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
os.write(code, path[0].payload.personal_identity_code.encode())
os.close(code)
(folder / "pseudonym").write_text(path[0].envelope.subject)

async def resend() -> int:
    async with open_publisher(settings) as publisher:
        return sum([1 async for _ in publisher.publish_all(path)])

print(f"    person {path[0].envelope.subject}: {asyncio.run(resend())} events sent again; "
      "their statement waits in the log for the router")
PY
pseudonym="$(cat "$forget/pseudonym")"
person_facts() {  # the person's rows in a reporting store (pseudonymous facts)
  python - "$1" "$pseudonym" <<'PY'
import sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
tables = [t for (t,) in con.execute(
    "SELECT DISTINCT c.table_name FROM information_schema.columns c "
    "JOIN information_schema.tables t USING (table_name) WHERE c.column_name = 'subject' "
    "AND t.table_type = 'BASE TABLE' AND c.table_name NOT LIKE '%rejected%'").fetchall()]
print(sum(con.execute(f'SELECT count(*) FROM "{t}" WHERE subject = ?', [sys.argv[2]]).fetchone()[0]
          for t in tables))
PY
}
facts_before="$(person_facts "$store")"
echo "==> forgetting them (hub person forget -, the identity code read from that file)"
hub person forget - --basis order --reason "demo: erasure ordered" <"$forget/identity-code" 2>"$demo/forget.log"
rm -f "$forget/identity-code"
echo "==> routing what waits in the log (hub route --until-idle): their statement's payer route dead-letters"
hub route --until-idle >"$demo/router-after-forget.out" 2>"$demo/router-after-forget.log"
hub dlq list --stage route --json >"$demo/dead-letters.json" 2>"$demo/dlq.log"
python - "$demo/dead-letters.json" <<'PY'
import json, sys
for line in open(sys.argv[1], encoding="utf-8"):
    if line.startswith("{"):
        letter = json.loads(line)
        print(f"    dead letter {letter['position']}: {letter['event_type']} to "
              f"{letter['destination']}: {letter['error_class']}: {letter['reason']}")
PY
echo "==> rebuilding the store from the log (hub replay) and the report: their facts still count"
after="$demo/after-forget"
rm -rf "$after" && mkdir -p "$after"
hub replay --from-offset 0 --into store --store "$after/reporting.duckdb" >"$after/replay.out" \
  2>"$after/replay.log"
hub report --period "$period" --from 2025-11 --store "$after/reporting.duckdb" --out "$after/report" \
  >"$after/report.out" 2>"$demo/report-after.log"
facts_after="$(person_facts "$after/reporting.duckdb")"
echo "    the forgotten person's facts in the store: $facts_before before, $facts_after after"
if diff -rq --exclude='*.html' "${HUB_REPORT_DIR:-.hub/reports}/$period" "$after/report" >/dev/null; then
  echo "    the report's CSV and Parquet files are byte-identical to the ones written before the forgetting"
else
  echo "    the report differs from the one written before the forgetting:" >&2
  diff -rq --exclude='*.html' "${HUB_REPORT_DIR:-.hub/reports}/$period" "$after/report" >&2 || true
  exit 1
fi

# --- personal data in clear? -------------------------------------------------------------------
echo "==> archiving the new records, then scanning every topic, the archive and the receipts (hub privacy scan)"
hub archive --once 2>>"$demo/archive.log" >/dev/null
# The names to look for are the simulator's (the hub has no list of its own): one a line.
python -c 'from connectors.simulator.names import FIRST_NAMES, LAST_NAMES; print(*FIRST_NAMES, *LAST_NAMES, sep="\n")' >"$demo/names.txt"
if ! hub privacy scan --names "$demo/names.txt"; then
  echo "hub privacy scan found personal data in clear (where, above; values masked)" >&2
  exit 1
fi

cat <<'NEXT'

The broker keeps running. Look at the log, the dead letters and the disclosure log, then stop it:
  .venv/bin/hub tail --from-beginning --limit 5
  .venv/bin/hub dlq list
  .venv/bin/hub audit verify
  .venv/bin/hub dlq show <partition/offset>    # a forgotten person's dead letter and its reason
  .venv/bin/hub privacy scan --names .hub/demo/names.txt --json   # where each match was (values masked)
  .venv/bin/hub report --period 2026-01 --as-of 2026-01-20   # what was known on 20.1.2026
  .venv/bin/hub broker stop
Each run starts from an empty broker. With DEMO_FRESH=0 the topics of earlier runs stay: the
same SEED publishes the same events again, the router routes them again (its consumer group
continues where it stopped) and the receivers drop every one as a duplicate by its event id
(the signed webhook-id); another SEED adds a new cohort. (Records an earlier run wrote before
field encryption are in clear: hub privacy scan then finds them.)
NEXT
