#!/usr/bin/env bash
# The main job: a FastAPI service whose slow endpoints are cached in Redis, called
# over HTTP, against a private redis-server this command starts and stops
# (set-up included). `scripts/demo.sh sync` runs the blocking-API demo instead.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup-env.sh"
cd "$ROOT"
if [ "${1:-}" = "sync" ]; then
    exec "$VENV/bin/python" examples/demo_sync.py
fi
exec "$VENV/bin/python" examples/demo_fastapi.py
