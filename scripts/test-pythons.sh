#!/usr/bin/env bash
# Runs the whole test suite on each CPython that requires-python admits, each
# in its own venv (.venv-3.10, .venv-3.12, ...; 3.11's is .venv, the default of
# scripts/test.sh), with set-up included. The wheel test (which builds and
# installs a wheel) is left to the default run: -m "not wheel".
#   scripts/test-pythons.sh                 every supported version but 3.11
#   scripts/test-pythons.sh 3.10 3.13 -- -x extra arguments after -- go to pytest
# An interpreter that is not on this machine is skipped with a message saying
# where it was looked for; a version whose suite fails fails the run, after
# every version had its turn. Prints a summary: result and minutes per version.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

#: Every minor version requires-python admits; 3.11 runs as scripts/test.sh.
SUPPORTED=(3.10 3.11 3.12 3.13)
DEFAULT=3.11

versions=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    versions+=("$1")
    shift
done
[ "${1:-}" = "--" ] && shift
if [ ${#versions[@]} -eq 0 ]; then
    for v in "${SUPPORTED[@]}"; do
        [ "$v" = "$DEFAULT" ] || versions+=("$v")
    done
fi

# The interpreter for a minor version: pyenv's newest patch release of it, else
# pythonX.Y on PATH. Prints nothing when there is none.
find_python() {
    local minor=$1 root="${PYENV_ROOT:-$HOME/.pyenv}" candidate
    candidate=$(ls -d "$root"/versions/"$minor".* 2>/dev/null |
        grep -E "/$minor\.[0-9]+$" | sort -V | tail -n 1 || true)
    if [ -n "$candidate" ] && [ -x "$candidate/bin/python$minor" ]; then
        echo "$candidate/bin/python$minor"
    elif command -v "python$minor" >/dev/null; then
        command -v "python$minor"
    fi
}

summary=()
failed=0
for v in "${versions[@]}"; do
    python=$(find_python "$v")
    if [ -z "$python" ]; then
        echo "==> SKIPPING Python $v: no interpreter (looked for ${PYENV_ROOT:-$HOME/.pyenv}/versions/$v.*/bin/python$v and python$v on PATH)" >&2
        summary+=("$v: skipped, no interpreter on this machine")
        continue
    fi
    echo "==> Python $v: $python ($("$python" -c 'import platform; print(platform.python_version())')), venv .venv-$v"
    start=$SECONDS
    status=0
    PYTHON="$python" REDIS_CACHE_VENV="$ROOT/.venv-$v" bash scripts/test.sh -m "not wheel" "$@" || status=$?
    took=$((SECONDS - start))
    minutes=$(printf '%d min %02d s' $((took / 60)) $((took % 60)))
    if [ "$status" -eq 0 ]; then
        summary+=("$v: passed in $minutes")
    else
        summary+=("$v: FAILED (pytest exit $status) after $minutes")
        failed=1
    fi
done

echo "==> per-Python results (set-up included):"
printf '    %s\n' "${summary[@]}"
exit "$failed"
