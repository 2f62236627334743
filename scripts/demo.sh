#!/usr/bin/env bash
# The main job: a slow function cached through SyncRedisCache against a private
# redis-server that this command starts and stops (set-up included).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup-env.sh"
cd "$ROOT"
exec "$VENV/bin/python" examples/demo_sync.py "$@"
