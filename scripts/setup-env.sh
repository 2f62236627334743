#!/usr/bin/env bash
# Makes this checkout ready to run: system packages (hiredis headers, a C
# compiler, redis-server), a .venv with the project installed in development
# mode, and a fresh build of the C extension with warnings as errors.
# Sourced by the other scripts; safe to run again (it only adds what is missing).
#   PYTHON=python3.12 REDIS_CACHE_VENV=.venv-3.12   another interpreter, its own venv
#   REDIS_CACHE_NO_INPLACE=1                        no in-place build (the wheel build)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${REDIS_CACHE_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

need_debian_packages() {
    local missing=()
    command -v pkg-config >/dev/null || missing+=(pkg-config)
    pkg-config --exists hiredis 2>/dev/null || missing+=(libhiredis-dev)
    pkg-config --exists libzstd 2>/dev/null || missing+=(libzstd-dev)
    pkg-config --exists zlib 2>/dev/null || missing+=(zlib1g-dev)
    pkg-config --exists openssl 2>/dev/null || missing+=(libssl-dev)
    command -v openssl >/dev/null || missing+=(openssl)
    command -v redis-server >/dev/null || missing+=(redis-server)
    command -v cc >/dev/null || missing+=(gcc)
    "$PYTHON" -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
        || missing+=(python3-dev)
    "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
    printf '%s\n' "${missing[@]}"
}

install_system_packages() {
    local missing
    missing=$(need_debian_packages)
    [ -z "$missing" ] && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "==> installing Debian packages: $missing"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        # shellcheck disable=SC2086
        apt-get install -y -qq --no-install-recommends $missing >/dev/null
    else
        cat >&2 <<MSG
redis_cache needs these system packages, which are missing: $missing
Install them, then run this command again:
    Debian / Ubuntu:  sudo apt-get install $missing
    Fedora:           sudo dnf install hiredis-devel libzstd-devel zlib-devel openssl-devel openssl redis gcc python3-devel pkgconf-pkg-config
    macOS (Homebrew): brew install hiredis zstd openssl redis pkg-config
MSG
        exit 1
    fi
}

make_venv() {
    if [ ! -x "$VENV/bin/python" ]; then
        echo "==> creating $VENV"
        "$PYTHON" -m venv "$VENV"
    fi
    local stamp="$VENV/.redis_cache-deps"
    local wanted
    wanted=$(cat "$ROOT/pyproject.toml" "$ROOT/scripts/requirements-dev.txt" | sha1sum)
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
        echo "==> installing Python packages into $VENV"
        # --prefer-binary: an older release's wheel over a newer one's sdist
        # (atheris 3 has no wheel for 3.10 and would need clang's libFuzzer).
        local log="$ROOT/build/pip.log"
        mkdir -p "$ROOT/build"
        if ! {
            "$VENV/bin/python" -m pip install --upgrade pip 'setuptools>=77' wheel &&
                "$VENV/bin/python" -m pip install --prefer-binary -r "$ROOT/scripts/requirements-dev.txt" &&
                "$VENV/bin/python" -m pip install --no-build-isolation -e "$ROOT"
        } >"$log" 2>&1; then
            tail -n 40 "$log" >&2
            echo "==> installing Python packages failed (log: $log)" >&2
            exit 1
        fi
        echo "$wanted" >"$stamp"
    fi
}

build_extension() {
    # Rebuilt in place on every run so the tests always see the current C code.
    local log="$ROOT/build/build_ext.log"
    mkdir -p "$ROOT/build"
    if ! (cd "$ROOT" && REDIS_CACHE_STRICT=1 "$VENV/bin/python" setup.py build_ext --inplace >"$log" 2>&1); then
        cat "$log" >&2
        echo "==> building the C extension failed (log: $log)" >&2
        exit 1
    fi
}

install_system_packages
make_venv
[ "${REDIS_CACHE_NO_INPLACE:-0}" = 1 ] || build_extension
