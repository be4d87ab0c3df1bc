#!/usr/bin/env bash
# Refresh the locks: every package with its sha256 hashes, resolved for Python 3.11+ on every
# platform (uv's universal resolution).
#   requirements.lock               the hub, its test tools, the build backend and uv: what
#                                   deploy/setup-venv.sh installs (tests/run.sh, demo, CI)
#   deploy/requirements-image.lock  the hub's runtime and build backend only, at the same
#                                   versions: what deploy/Dockerfile installs
# Versions already locked are kept unless pyproject.toml no longer allows them; to move to the
# newest allowed versions: `bash deploy/lock.sh --upgrade` (or `--upgrade-package holidays`).
# Then `source deploy/setup-venv.sh` and run the tests.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
if [ ! -x .venv/bin/uv ]; then
  echo "error: .venv/bin/uv is missing; run 'source deploy/setup-venv.sh' first (the lock pins uv)" >&2
  exit 1
fi
compile=(.venv/bin/uv pip compile --quiet --generate-hashes --universal --python-version 3.11
  --custom-compile-command "bash deploy/lock.sh")
"${compile[@]}" pyproject.toml deploy/build.in deploy/tools.in --extra test \
  -o requirements.lock "$@"
"${compile[@]}" pyproject.toml deploy/build.in -c requirements.lock \
  -o deploy/requirements-image.lock
for lock in requirements.lock deploy/requirements-image.lock; do
  echo "$lock (sha256 $(sha256sum "$lock" | cut -c1-64))"
done
