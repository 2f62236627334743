"""Build script for the redis_cache C extension.

hiredis, zstd, zlib and OpenSSL are found with pkg-config. Environment switches:

* ``REDIS_CACHE_STRICT=1``: compile with ``-Wall -Wextra -Werror`` (development and CI).
* ``REDIS_CACHE_SANITIZE=1``: build with AddressSanitizer and UBSan (``make sanitize``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup

#: The C libraries, as pkg-config names them, with the oldest version that works.
LIBRARIES = {"hiredis": "0.14.1", "libzstd": "1.4.0", "zlib": "1.2.8", "openssl": "1.1.1"}

MISSING_LIBRARIES = """
redis_cache needs the C libraries hiredis (0.14.1 or newer), zstd, zlib and
OpenSSL (1.1.1 or newer), and pkg-config to find them. Install them, then build
again:

    Debian / Ubuntu:  sudo apt-get install libhiredis-dev libzstd-dev zlib1g-dev libssl-dev pkg-config
    Fedora / RHEL:    sudo dnf install hiredis-devel libzstd-devel zlib-devel openssl-devel pkgconf-pkg-config
    macOS (Homebrew): brew install hiredis zstd openssl pkg-config
"""


def pkg_config(*args: str) -> list[str]:
    """Runs pkg-config, stopping the build with one clear message if it fails."""
    if shutil.which("pkg-config") is None:
        sys.exit(MISSING_LIBRARIES)
    try:
        out = subprocess.run(["pkg-config", *args], check=True, capture_output=True, text=True).stdout
    except subprocess.CalledProcessError:
        sys.exit(MISSING_LIBRARIES)
    return out.split()


def library_build_flags() -> tuple[list[str], list[str], list[str], list[str]]:
    for name, version in LIBRARIES.items():
        pkg_config(f"--atleast-version={version}", name)
    include_dirs, defines, lib_dirs, libs = [], [], [], []
    for flag in pkg_config("--cflags", *LIBRARIES):
        if flag.startswith("-I"):
            # pkg-config names .../include/hiredis; the sources include
            # <hiredis/read.h>, so the parent directory is what is needed.
            include_dirs.append(str(Path(flag[2:]).parent))
        else:
            defines.append(flag)
    for flag in pkg_config("--libs", *LIBRARIES):
        if flag.startswith("-L"):
            lib_dirs.append(flag[2:])
        elif flag.startswith("-l"):
            libs.append(flag[2:])
    return include_dirs, defines, lib_dirs, libs


def extension() -> Extension:
    include_dirs, extra_compile, lib_dirs, libs = library_build_flags()
    extra_link: list[str] = []
    extra_compile += ["-std=c11", "-D_GNU_SOURCE", "-fvisibility=hidden"]
    if os.environ.get("REDIS_CACHE_STRICT") == "1":
        extra_compile += ["-Wall", "-Wextra", "-Werror", "-Wno-missing-field-initializers"]
    if os.environ.get("REDIS_CACHE_SANITIZE") == "1":
        sanitize = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-O1", "-g"]
        # -UNDEBUG: Python's flags define NDEBUG; the sanitized build keeps
        # the C core's assert()s (mux.c's re-entrancy rule, among others).
        extra_compile += sanitize + ["-fno-sanitize-recover=undefined", "-UNDEBUG"]
        extra_link += sanitize
    sources = sorted(str(p) for p in Path("csrc").glob("*.c"))
    return Extension(
        "redis_cache._core",
        sources=sources,
        depends=sorted(str(p) for p in Path("csrc").glob("*.h")),
        include_dirs=include_dirs,
        library_dirs=lib_dirs,
        libraries=libs,
        extra_compile_args=extra_compile,
        extra_link_args=extra_link,
    )


setup(ext_modules=[extension()])
