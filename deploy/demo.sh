#!/usr/bin/env bash
# The hub's main job end to end on its embedded defaults: install, start a real local Kafka
# (KRaft, jars from Maven Central), create the topics, simulate jobseekers and publish them.
#   JOBSEEKERS=300 SEED=7 bash deploy/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/setup-venv.sh

echo "==> starting the local Kafka broker"
hub broker start
echo "==> creating topics"
hub topics create
echo "==> simulating ${JOBSEEKERS:-300} jobseekers (seed ${SEED:-7})"
hub simulate --jobseekers "${JOBSEEKERS:-300}" --seed "${SEED:-7}"
cat <<'NEXT'

The broker keeps running. Look at the log, then stop it:
  .venv/bin/hub tail --from-beginning --limit 5
  .venv/bin/hub broker stop
NEXT
