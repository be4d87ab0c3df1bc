#!/usr/bin/env bash
# The hub's main job end to end on its embedded defaults: install, start a real local Kafka
# (KRaft, jars from Maven Central), create the topics, simulate jobseekers and publish them, then
# route the log to the outboxes and deliver them to local receivers (Kela, funds, providers,
# municipal systems), and print per destination what was delivered, retried, dead-lettered and
# dropped as duplicate by the receiver. Then archive the log, replay the archive into the
# reporting store and write the report of January 2026 (CSV, Parquet, one offline HTML file).
#   JOBSEEKERS=300 SEED=7 bash deploy/demo.sh
#   REPORT_PERIOD=2026-02 bash deploy/demo.sh   # another month of the simulated window
#   DEMO_FAULT=0 bash deploy/demo.sh      # no failing fund receivers at the start
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/setup-venv.sh

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
demo=.hub/demo
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
rm -f "${HUB_REPORTING_STORE:-.hub/reporting.duckdb}" "${HUB_REPORTING_STORE:-.hub/reporting.duckdb}.wal"
hub replay --from-archive "${HUB_ARCHIVE_DIR:-.hub/archive}" --into store
period="${REPORT_PERIOD:-2026-01}"
echo "==> writing the report of $period (hub report)"
hub report --period "$period" --from 2025-11 2>"$demo/report.log"
echo "    open ${HUB_REPORT_DIR:-.hub/reports}/$period/report.html in a browser (one file, works offline); CSV and Parquet beside it"

cat <<'NEXT'

The broker keeps running. Look at the log, the dead letters and the disclosure log, then stop it:
  .venv/bin/hub tail --from-beginning --limit 5
  .venv/bin/hub dlq list
  .venv/bin/hub audit verify
  .venv/bin/hub report --period 2026-01 --as-of 2026-01-20   # what was known on 20.1.2026
  .venv/bin/hub broker stop
Running it again with the same SEED publishes the same events again: the router routes them
again (its consumer group continues where it stopped) and the receivers drop every one as a
duplicate by its event id (the signed webhook-id). Another SEED adds a new cohort.
NEXT
