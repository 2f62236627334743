#!/usr/bin/env bash
# Runs the test suite against private redis-server processes (set-up included).
# Extra arguments go to pytest, e.g. scripts/test.sh -k pool -x
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup-env.sh"
cd "$ROOT"
exec "$VENV/bin/python" -m pytest "$@"
