"""Where the figures were measured: numbers mean little without the machine.

Everything here is read from the system or the installed packages; a fact
that cannot be read is reported as "unknown" rather than failing the run.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata

__all__ = ["CpuSnapshot", "describe_machine", "other_cpu_use"]

UNKNOWN = "unknown"


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


def _cpu() -> str:
    """CPU model, and whether /proc/cpuinfo says we run under a hypervisor."""
    info = _read("/proc/cpuinfo")
    model = re.search(r"^model name\s*:\s*(.+)$", info, re.MULTILINE)
    name = model.group(1).strip() if model else platform.processor() or UNKNOWN
    flags = re.search(r"^flags\s*:\s*(.+)$", info, re.MULTILINE)
    if flags and "hypervisor" in flags.group(1).split():
        name += " (virtual machine)"
    return name


def _cores() -> str:
    total = os.cpu_count() or 0
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = total
    return f"{usable}" if usable == total else f"{usable} usable of {total}"


def _memory() -> str:
    match = re.search(r"^MemTotal:\s*(\d+) kB", _read("/proc/meminfo"), re.MULTILINE)
    return f"{int(match.group(1)) / 2**20:.1f} GiB" if match else UNKNOWN


def _redis_server_version() -> str:
    try:
        out = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN
    match = re.search(r"v=(\S+)", out)
    return match.group(1) if match else out.strip()


def _load() -> str:
    """Other work on the machine skews the figures; this shows how much there was."""
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return UNKNOWN
    return f"{one:.2f} (1 min), {five:.2f} (5 min)"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _hiredis_in_core() -> str:
    try:
        from redis_cache import _core
    except ImportError:
        return UNKNOWN
    return f"{_core.HIREDIS_MAJOR}.{_core.HIREDIS_MINOR}"


def _commit() -> str:
    """The checkout measured: its commit, and whether the work tree differed from it."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(
            ["git", "-C", root, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN
    return f"{head} (with uncommitted changes)" if dirty else head


def describe_machine() -> dict[str, str]:
    """Ordered facts about the machine and software, for the report and the JSON."""
    return {
        "CPU": _cpu(),
        "cores": _cores(),
        "memory": _memory(),
        "kernel": f"{platform.system()} {platform.release()}",
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "redis-server": _redis_server_version(),
        "hiredis (in redis_cache's C core)": _hiredis_in_core(),
        "hiredis-py (redis-py's parser)": _version("hiredis"),
        "redis-py": _version("redis"),
        "redis_cache": f"{_version('redis-native-cache')}, commit {_commit()}",
        "load average at start": _load(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU ticks so far: the whole machine's, the hypervisor's steal, and ours
    (the benchmark, its threads, its finished child processes, and the server).

    The machine is shared (other sessions run test suites on it); the
    difference of two snapshots says how much CPU went to processes other
    than the benchmark and its server while it measured.
    """

    busy: int
    steal: int
    ours: int

    @classmethod
    def take(cls, pids: Iterable[int]) -> CpuSnapshot | None:
        """Reads /proc; None where there is no /proc (the figure is then omitted)."""
        fields = _read("/proc/stat").split("\n", 1)[0].split()
        if len(fields) < 9 or fields[0] != "cpu":
            return None
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[1:9])
        ours = 0
        for pid in (os.getpid(), *pids):
            stat = _read(f"/proc/{pid}/stat").rsplit(")", 1)[-1].split()
            if len(stat) > 14:  # utime, stime are the 14th and 15th fields
                ours += int(stat[11]) + int(stat[12])
                if pid == os.getpid():
                    # cutime, cstime: the children we waited for (redis-benchmark's rounds)
                    ours += int(stat[13]) + int(stat[14])
        return cls(user + nice + system + irq + softirq, steal, ours)


def other_cpu_use(
    before: CpuSnapshot | None, after: CpuSnapshot | None, seconds: float
) -> tuple[float, float] | None:
    """Average cores used by other processes, and stolen by the hypervisor, in between."""
    if before is None or after is None or seconds <= 0:
        return None
    ticks = os.sysconf("SC_CLK_TCK") * seconds
    others = max(0, (after.busy - before.busy) - (after.ours - before.ours)) / ticks
    return others, (after.steal - before.steal) / ticks
