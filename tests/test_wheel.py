"""What gets published: the manylinux wheel installs and runs with no C library
and no compiler on the machine, and the sdist says what it lacks.

Marked ``wheel`` (deselect with ``-m "not wheel"``). The sdist and the wheel are
built once per test session by ``scripts/build-wheel.sh`` (about half a minute,
for the interpreter running the tests), or taken from ``REDIS_CACHE_WHEEL`` (the
path of a manylinux wheel built beforehand) with its sdist beside it.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = [
    pytest.mark.wheel,
    pytest.mark.skipif(sys.platform != "linux", reason="manylinux wheels are Linux only"),
]

ROOT = Path(__file__).resolve().parent.parent
DIST = "redis_native_cache"
#: The C libraries the wheel must carry; the manylinux policy's own set
#: (libc, libz, ...) is all the rest it may use.
#: Libraries outside the manylinux policy that the wheel carries: hiredis and
#: zstd, and OpenSSL (its ABI differs across systems; see docs/architecture.md).
BUNDLED = ("libhiredis", "libzstd", "libssl", "libcrypto")


@dataclass(frozen=True)
class Artifacts:
    sdist: Path
    wheel: Path  # the repaired, manylinux one
    tag: str  # its platform tag, e.g. manylinux_2_34_x86_64


@dataclass(frozen=True)
class FreshVenv:
    python: Path
    extension: Path  # redis_cache/_core*.so as installed there
    site_packages: Path


def run(*args: str | os.PathLike[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Runs a command, failing the test with its output if it fails."""
    kwargs.setdefault("timeout", 600)
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, args))} exited with {result.returncode}\n"
            f"--- stdout\n{result.stdout[-6000:]}\n--- stderr\n{result.stderr[-6000:]}"
        )
    return result


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    given = os.environ.get("REDIS_CACHE_WHEEL")
    if given:
        wheel = Path(given).resolve()
        sdists = sorted(wheel.parent.parent.glob(f"{DIST}-*.tar.gz")) + sorted(
            wheel.parent.glob(f"{DIST}-*.tar.gz")
        )
        assert wheel.is_file() and sdists, f"REDIS_CACHE_WHEEL={given}: no wheel or no sdist by it"
        sdist = sdists[0]
    else:
        if sys.prefix == sys.base_prefix:
            pytest.skip("builds with the venv running the tests; run it from one (scripts/test.sh)")
        out = tmp_path_factory.mktemp("dist")
        env = dict(os.environ, REDIS_CACHE_VENV=sys.prefix, PYTHON=sys.executable)
        result = run("bash", ROOT / "scripts" / "build-wheel.sh", "--outdir", out, env=env)
        wheel = Path(result.stdout.strip().splitlines()[-1])
        (sdist,) = out.glob(f"{DIST}-*.tar.gz")
    match = re.search(r"-((?:many|musl)linux_\w+)\.whl$", wheel.name)
    assert match, f"{wheel.name} has no manylinux platform tag"
    return Artifacts(sdist=sdist, wheel=wheel, tag=match.group(1))


@pytest.fixture(scope="session")
def fresh_venv(artifacts: Artifacts, tmp_path_factory: pytest.TempPathFactory) -> FreshVenv:
    """A new venv with nothing but the wheel, installed from the file alone."""
    home = tmp_path_factory.mktemp("fresh-venv")
    run(sys.executable, "-m", "venv", home / "venv")
    python = home / "venv" / "bin" / "python"
    # No index to fetch from and no compiler to build with: a wheel or nothing.
    env = dict(os.environ, CC="false", CXX="false", PIP_DISABLE_PIP_VERSION_CHECK="1")
    run(python, "-m", "pip", "install", "--no-index", artifacts.wheel, env=env, cwd=home)
    # -I: the checkout (tests run from it) is not on the path, nor PYTHONPATH.
    code = (
        "import redis_cache._core as c, sysconfig; "
        "print(c.__file__); print(sysconfig.get_paths()['purelib'])"
    )
    extension, site_packages = run(python, "-I", "-c", code, cwd=home).stdout.split()
    return FreshVenv(python=python, extension=Path(extension), site_packages=Path(site_packages))


def manylinux_system_libraries(tag: str) -> set[str]:
    """The libraries the manylinux policy of tag lets a wheel take from the system,
    as auditwheel (which made the wheel) knows them."""
    policy_name = tag.removesuffix(f"_{platform.machine()}")
    text = (importlib.resources.files("auditwheel.policy") / "manylinux-policy.json").read_text()
    for policy in json.loads(text):
        if policy["name"] == policy_name or policy_name in policy.get("aliases", []):
            return set(policy["lib_whitelist"])
    raise AssertionError(f"auditwheel has no policy {policy_name!r} (from the tag {tag})")


def test_wheel_carries_hiredis_and_zstd(artifacts: Artifacts) -> None:
    names = zipfile.ZipFile(artifacts.wheel).namelist()
    libs = [n for n in names if n.startswith(f"{DIST}.libs/")]
    for lib in BUNDLED:
        assert any(Path(n).name.startswith(f"{lib}-") for n in libs), (lib, libs)
    assert any(re.fullmatch(r"redis_cache/_core\.cpython-\d+-.*\.so", n) for n in names), names

    show = run(sys.executable, "-m", "auditwheel", "show", artifacts.wheel).stdout
    assert f'consistent with the following platform tag: "{artifacts.tag}"' in " ".join(
        show.split()
    ), show


def test_installed_extension_resolves_bundled_libraries(
    artifacts: Artifacts, fresh_venv: FreshVenv
) -> None:
    """ldd on the installed extension: hiredis and zstd come from the wheel's own
    folder, everything else from the manylinux policy's system set."""
    ldd = run("ldd", fresh_venv.extension).stdout
    allowed = manylinux_system_libraries(artifacts.tag)
    own_libs = (fresh_venv.site_packages / f"{DIST}.libs").resolve()
    resolved: dict[str, str] = {}
    for line in ldd.splitlines():
        line = line.strip()
        if "=>" in line:
            name, _, rest = line.partition("=>")
            resolved[name.strip()] = rest.strip().split(" (")[0]
        # Lines without "=>" are the vDSO and the dynamic loader.
    assert resolved, ldd
    assert not [n for n, p in resolved.items() if p == "not found"], ldd
    for lib in BUNDLED:
        found = [n for n in resolved if n.startswith(lib)]
        assert found, f"{lib} is not linked:\n{ldd}"
        for name in found:
            path = Path(resolved[name]).resolve()
            assert path.parent == own_libs, f"{name} resolves to {path}, not into {own_libs}"
    outside = {
        n: p
        for n, p in resolved.items()
        if not n.startswith(BUNDLED) and n not in allowed and not n.startswith("ld-linux")
    }
    assert not outside, f"needs libraries outside {artifacts.tag}'s system set: {outside}"


ROUND_TRIP = r"""
import asyncio, sys, sysconfig
import redis_cache
from redis_cache import RedisCache, SyncRedisCache
from redis_cache.testing import RedisServer

assert redis_cache.__file__.startswith(sysconfig.get_paths()["purelib"]), redis_cache.__file__
value = {"name": "Ada", "langs": ["en", "fr"], "score": 1.5, "blob": "x" * 5000}
with RedisServer() as server:
    with SyncRedisCache(port=server.port, namespace="wheel", compression="zstd",
                        compression_threshold=100) as cache:
        assert cache.set("user:1", value, ttl=60) is True
        assert cache.get("user:1") == value, cache.get("user:1")
        assert cache.get("absent", default="none") == "none"

    async def main():
        async with RedisCache(port=server.port, namespace="wheel") as cache:
            await cache.set("user:2", value)
            assert await cache.get("user:2") == value
            assert await cache.get("user:1") == value  # zstd-compressed above

    asyncio.run(main())
print("round trip ok", redis_cache.__version__)
"""


def test_round_trip_from_fresh_venv(fresh_venv: FreshVenv, tmp_path: Path) -> None:
    result = run(fresh_venv.python, "-I", "-c", ROUND_TRIP, cwd=tmp_path)
    assert "round trip ok" in result.stdout


OPTIMIZED = r"""
import json, time
from redis_cache._core import json_dumps
value = [{"id": i, "name": f"user {i}", "score": i / 7, "tags": ["a", "b"]} for i in range(500)]
def best(fn):
    times = []
    for _ in range(7):
        t = time.perf_counter()
        for _ in range(20):
            fn(value)
        times.append(time.perf_counter() - t)
    return min(times)
print(best(json.dumps) / best(json_dumps))
"""


def test_wheel_extension_is_optimized(fresh_venv: FreshVenv, tmp_path: Path) -> None:
    """A CFLAGS in the environment replaces Python's -O3 in setuptools; an -O0
    wheel encodes JSON at about the speed of Python's json, an optimized one
    several times faster (about 13x here)."""
    ratio = float(run(fresh_venv.python, "-I", "-c", OPTIMIZED, cwd=tmp_path).stdout)
    assert ratio > 3, f"json_dumps is only {ratio:.1f}x Python's json: built without -O?"


def test_sdist_has_the_sources_and_no_binaries(artifacts: Artifacts) -> None:
    with tarfile.open(artifacts.sdist) as tar:
        names = {Path(*Path(n).parts[1:]).as_posix() for n in tar.getnames()}
    for needed in ("setup.py", "pyproject.toml", "README.md", "redis_cache/__init__.py"):
        assert needed in names
    sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / "csrc").glob("*.[ch]")}
    assert sources <= names, sorted(sources - names)
    assert not [n for n in names if n.endswith(".so")]


def test_sdist_build_names_the_missing_system_packages(
    artifacts: Artifacts, tmp_path: Path
) -> None:
    """Built where hiredis is not installed (pkg-config finds the others only),
    the sdist stops with one message naming the package to install."""
    if shutil.which("pkg-config") is None:
        pytest.skip("pkg-config is not installed")
    with tarfile.open(artifacts.sdist) as tar:
        if hasattr(tarfile, "data_filter"):  # 3.10.12+: say what is safe to unpack
            tar.extractall(tmp_path, filter="data")
        else:
            tar.extractall(tmp_path)
    (source,) = tmp_path.glob(f"{DIST}-*")
    pc_dir = tmp_path / "pkgconfig"
    pc_dir.mkdir()
    for name in ("libzstd", "zlib", "openssl", "libssl", "libcrypto"):
        found = run("pkg-config", "--variable=pcfiledir", name).stdout.strip()
        shutil.copy(Path(found) / f"{name}.pc", pc_dir)
    env = dict(os.environ, PKG_CONFIG_LIBDIR=str(pc_dir), PKG_CONFIG_PATH="")
    result = subprocess.run(
        [sys.executable, "setup.py", "build_ext"],
        cwd=source,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    message = result.stderr
    assert "missing: hiredis." in message, message
    assert "sudo apt-get install libhiredis-dev\n" in message, message
    assert "libzstd-dev" not in message and "Traceback" not in message, message
