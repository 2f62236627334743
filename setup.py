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
from typing import NoReturn

from setuptools import Extension, setup

#: The C libraries, as pkg-config names them, with the oldest version that works,
#: and the system packages that provide them (Debian/Ubuntu, Fedora/RHEL, Homebrew).
LIBRARIES = {
    "hiredis": ("0.14.1", "libhiredis-dev", "hiredis-devel", "hiredis"),
    "libzstd": ("1.4.0", "libzstd-dev", "libzstd-devel", "zstd"),
    "zlib": ("1.2.8", "zlib1g-dev", "zlib-devel", None),
    "openssl": ("1.1.1", "libssl-dev", "openssl-devel", "openssl"),
}
PKG_CONFIG = ("pkg-config", "pkgconf-pkg-config", "pkg-config")

MISSING_LIBRARIES = """
redis_cache is building from source (no wheel fits this platform or pip was told
not to use one), and the C libraries it links are missing: {missing}.
Install these system packages, then install again:

    Debian / Ubuntu:  sudo apt-get install {debian}
    Fedora / RHEL:    sudo dnf install {fedora}
    macOS (Homebrew): brew install {brew}
"""


def stop_missing(names: list[str]) -> NoReturn:
    """Stops the build with one message naming the system packages to install."""
    rows = [PKG_CONFIG] if "pkg-config" in names else []
    rows += [LIBRARIES[n][1:] for n in names if n in LIBRARIES]
    sys.exit(
        MISSING_LIBRARIES.format(
            missing=", ".join(names),
            debian=" ".join(r[0] for r in rows),
            fedora=" ".join(r[1] for r in rows),
            brew=" ".join(r[2] for r in rows if r[2]) or "(nothing: the SDK has it)",
        )
    )


def pkg_config(*args: str) -> list[str]:
    """Runs pkg-config (known to be there); its output split into flags."""
    result = subprocess.run(["pkg-config", *args], capture_output=True, text=True)
    if result.returncode != 0:
        stop_missing(list(LIBRARIES))
    return result.stdout.split()


def library_build_flags() -> tuple[list[str], list[str], list[str], list[str]]:
    """Include dirs, other compile flags, library dirs and libraries, from
    pkg-config, after checking every library is there at a version that works."""
    if shutil.which("pkg-config") is None:
        stop_missing(["pkg-config", *LIBRARIES])
    missing = [
        name
        for name, (version, *_packages) in LIBRARIES.items()
        if subprocess.run(["pkg-config", f"--atleast-version={version}", name]).returncode != 0
    ]
    if missing:
        stop_missing(missing)
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
    # Every function on a 64-byte boundary: the JSON encoder's hot loops
    # otherwise run up to 10% slower or faster depending on where an
    # unrelated change elsewhere in the library moves them (measured on
    # github.json and twitter.json, identical code at other addresses).
    extra_compile += ["-falign-functions=64"]
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
