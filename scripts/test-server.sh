#!/usr/bin/env bash
# End-to-end tests of `medusa-worker serve`: the real server under `mpirun -np 2`, driven by the
# official `openai` Python package (Tests/Server). Needs the release build (`make test` builds it)
# and what `make setup` installs (Open MPI, the model, openai and pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
export MEDUSA_WORKER_BINARY="${MEDUSA_WORKER_BINARY:-$PWD/.build/release/medusa-worker}"
exec python3 -m pytest -q -p no:cacheprovider Tests/Server "$@"
