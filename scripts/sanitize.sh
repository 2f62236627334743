#!/usr/bin/env bash
# Builds the C extension with AddressSanitizer + UndefinedBehaviorSanitizer
# into build/sanitize/ (next to a copy of the Python package) and runs the
# test suite against that build. Extra arguments go to pytest, e.g.
#     scripts/sanitize.sh -k pool -x
# Any sanitizer report fails the run; ASan reports are kept in
# build/sanitize/reports/, the whole test output in build/sanitize/pytest.log.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup-env.sh"
cd "$ROOT"

OUT="$ROOT/build/sanitize"
TEMP="$ROOT/build/sanitize-temp"
REPORTS="$OUT/reports"
LOG="$ROOT/build/sanitize_build.log"

# --- build: a fresh tree, separate object files (never reuse the normal build's)
rm -rf "$OUT"
mkdir -p "$OUT/redis_cache" "$REPORTS"
cp redis_cache/*.py redis_cache/py.typed "$OUT/redis_cache/"
echo "==> building the sanitized extension into $OUT (log: $LOG)"
if ! REDIS_CACHE_SANITIZE=1 "$VENV/bin/python" setup.py build_ext --force \
        --build-lib "$OUT" --build-temp "$TEMP" >"$LOG" 2>&1; then
    cat "$LOG" >&2
    echo "==> building the sanitized extension failed" >&2
    exit 1
fi
SO=$(find "$OUT/redis_cache" -maxdepth 1 -name '_core*.so' | head -n 1)
if [ -z "$SO" ]; then
    echo "==> no _core*.so in $OUT/redis_cache after the build" >&2
    exit 1
fi

# --- runtimes: the .so links libasan/libubsan; an uninstrumented python needs
# them preloaded (ASan must come first in the library list).
ASAN_LIB=$(gcc -print-file-name=libasan.so)
UBSAN_LIB=$(gcc -print-file-name=libubsan.so)
for lib in "$ASAN_LIB" "$UBSAN_LIB"; do
    if [ ! -e "$lib" ]; then
        echo "==> sanitizer runtime not found: '$lib' (install gcc's libasan/libubsan)" >&2
        exit 1
    fi
done
for needed in libasan libubsan; do
    if ! readelf -d "$SO" | grep -q "NEEDED.*$needed"; then
        echo "==> $SO does not link $needed: it was not built with sanitizers" >&2
        exit 1
    fi
done

# A pytest plugin (loaded with -p before any conftest) that refuses to run
# unless redis_cache and its _core come from $OUT.
cat >"$OUT/sanitize_check.py" <<'PY'
"""Loaded by scripts/sanitize.sh: checks that the sanitized build is in use."""
import os

import pytest

import redis_cache
import redis_cache._core
import redis_cache.testing

_OUT = os.path.realpath(os.environ["REDIS_CACHE_SANITIZE_DIR"])

# A sanitizer report aborts pytest before the fixtures stop their servers
# (which run in sessions of their own), so each server started here is noted
# for the script to stop if it outlives this process.
_start = redis_cache.testing.RedisServer.start


def _noting_start(self, *args, **kwargs):
    result = _start(self, *args, **kwargs)
    if self.pid is not None:
        with open(os.path.join(_OUT, "servers.pids"), "a") as fh:
            fh.write(f"{self.pid}\n")
    return result


redis_cache.testing.RedisServer.start = _noting_start


def _check(module):
    path = os.path.realpath(module.__file__)
    if not path.startswith(_OUT + os.sep):
        raise pytest.UsageError(f"{module.__name__} was imported from {path}, not from {_OUT}")
    return path


def pytest_configure(config):
    _check(redis_cache)
    _check(redis_cache._core)
    # Lets the script tell reports of this process from those of the
    # processes the tests start (crash reproductions run with python -c).
    with open(os.path.join(_OUT, "pytest.pid"), "w") as fh:
        fh.write(str(os.getpid()))


def pytest_report_header(config):
    return f"redis_cache._core (ASan+UBSan): {_check(redis_cache._core)}"
PY

export REDIS_CACHE_SANITIZE_DIR="$OUT"
export PYTHONPATH="$OUT"
export PYTHONMALLOC=malloc  # every Python object through malloc: ASan sees them all
# ASan writes its reports to files; UBSan (whose handlers live in the ASan
# runtime here) ignores log_path and prints to stderr, so pytest runs with
# --capture=sys (C-level stderr is not swallowed) and its output is kept in
# $OUT/pytest.log to be searched afterwards. abort_on_error: faulthandler
# then also prints the Python stack of the test that was running.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:log_path=$REPORTS/asan"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:abort_on_error=1"
PRELOAD="$ASAN_LIB:$UBSAN_LIB"

# -P: no script directory / current directory on sys.path, so the checkout's
# redis_cache/ (with the unsanitized .so) cannot shadow $OUT. The editable
# install's finder comes after the path finder, so PYTHONPATH wins over it.
echo "==> redis_cache._core loads from: $(LD_PRELOAD="$PRELOAD" "$VENV/bin/python" -P -c \
    'import redis_cache._core as c; print(c.__file__)')"

status=0
LD_PRELOAD="$PRELOAD" "$VENV/bin/python" -P -m pytest -p sanitize_check --capture=sys "$@" 2>&1 \
    | tee "$OUT/pytest.log" || status=$?

# Servers left behind by an aborted pytest: orphans (parent 1) it started.
if [ -f "$OUT/servers.pids" ]; then
    while read -r pid; do
        if [ "$(ps -o ppid= -p "$pid" 2>/dev/null | tr -d ' ')" = 1 ] &&
            grep -q redis-server "/proc/$pid/cmdline" 2>/dev/null; then
            echo "==> stopping redis-server $pid left behind by the aborted test run" >&2
            kill "$pid" 2>/dev/null || true
        fi
    done <"$OUT/servers.pids"
fi

shopt -s nullglob
reports=("$REPORTS"/*)
found=0
main_pid=$(cat "$OUT/pytest.pid" 2>/dev/null || echo unknown)
for report in "${reports[@]}"; do
    pid=${report##*.}
    if [ "$pid" = "$main_pid" ]; then
        origin="the pytest process"
    else
        origin="process $pid, started by a test (pytest is $main_pid)"
    fi
    echo "==> sanitizer report $report ($origin):" >&2
    cat "$report" >&2
    found=$((found + 1))
done
if [ "$found" -gt 0 ]; then
    echo "==> summary of the sanitizer reports:" >&2
    for report in "${reports[@]}"; do
        pid=${report##*.}
        where=$(grep -m1 -Eo 'in [A-Za-z_0-9]+ csrc/[a-z_]+\.c:[0-9]+' "$report" || echo "(no csrc frame)")
        what=$(grep -m1 '^SUMMARY:' "$report" || echo "(no summary)")
        echo "    pid $pid$([ "$pid" = "$main_pid" ] && echo " (pytest)"): ${what#SUMMARY: } -- first csrc frame: $where" >&2
    done
fi
if grep -Eq 'runtime error:|ERROR: (Address|UndefinedBehavior)Sanitizer|SUMMARY: [A-Za-z]+Sanitizer' "$OUT/pytest.log"; then
    echo "==> sanitizer output in the test log ($OUT/pytest.log):" >&2
    grep -En -A40 'runtime error:|ERROR: (Address|UndefinedBehavior)Sanitizer' "$OUT/pytest.log" | head -n 120 >&2
    found=$((found + 1))
fi
if [ "$found" -gt 0 ]; then
    echo "==> the sanitizers reported problems (see above)" >&2
    exit 1
fi
if [ "$status" -ne 0 ]; then
    echo "==> the test suite failed under the sanitizers (exit $status)" >&2
    exit "$status"
fi
echo "==> sanitized run clean: no ASan/UBSan reports"
