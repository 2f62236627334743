"""Where redis_cache's async GET spends its time: a profile of a few workloads.

    .venv/bin/python bench/profile.py              # profile them all, write bench/profile.json
    .venv/bin/python bench/profile.py run seq      # just one workload (to run under any profiler)

Workloads, each against a private redis-server (see :data:`WORKLOADS`):
``seq`` (one coroutine awaiting ``RedisCache.get`` back to back, the
benchmark's sequential GET) and ``c100`` (100 such coroutines, its
concurrent-100 GET), on asyncio's loop; and, as references, the sequential
GET on uvloop and with the blocking ``SyncRedisCache``.

The project's benchmark brief asks for ``perf record`` where ``perf stat -e
instructions true`` counts, else callgrind or py-spy.  On this VM the counter
is not supported (no PMU), so this script measures without perf:

* ``getrusage`` around the timed loop: each GET's wall time split into user
  CPU, kernel CPU and off-CPU (waiting) time, plus context switches;
* ``strace -c``: syscalls per GET (counts only; strace's timings are inflated);
* ``py-spy record --native --idle`` (pip install py-spy, in
  bench/requirements.txt): C stacks with Python frames folded in, sorted into
  categories (:func:`categorize`) that split the user CPU time.  py-spy
  over-samples syscall leaves, so kernel and idle time come from getrusage.

The summary goes to bench/profile.json, which ``bench/run.py --write-docs``
renders as "Where the time goes" in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "profile.json"
KEY = "bench:value"
#: GETs made before the measured stretch.
WARMUP = 200
VALUE = {"id": 1234567, "name": "Ada Lovelace", "email": "ada@example.com"}

#: name -> (title, callers, event loop ("sync": SyncRedisCache, no loop), sampled by py-spy)
WORKLOADS: dict[str, tuple[str, int, str, bool]] = {
    "seq": ("Sequential GET, one coroutine (RedisCache on asyncio)", 1, "asyncio", True),
    "c100": ("Concurrent GET, 100 coroutines (RedisCache on asyncio)", 100, "asyncio", True),
    "seq-uvloop": ("Sequential GET, one coroutine (RedisCache on uvloop)", 1, "uvloop", False),
    "seq-sync": ("Sequential GET, one caller (SyncRedisCache)", 1, "sync", False),
}


# -- the workload ----------------------------------------------------------------


class _Usage:
    """Wall time, CPU time (user, kernel) and context switches of a stretch of code."""

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.rusage = resource.getrusage(resource.RUSAGE_SELF)

    def since(self, gets: int) -> dict[str, float]:
        """Per-GET costs of the ``gets`` GETs made since construction."""
        now = resource.getrusage(resource.RUSAGE_SELF)
        wall = time.perf_counter() - self.wall
        user = now.ru_utime - self.rusage.ru_utime
        system = now.ru_stime - self.rusage.ru_stime
        switches = (now.ru_nvcsw - self.rusage.ru_nvcsw) + (now.ru_nivcsw - self.rusage.ru_nivcsw)
        return {
            "gets": gets,
            # every call the process made (set + warm-up + timed), to count syscalls per call
            "calls": gets + WARMUP + 1,
            "gets_per_s": gets / wall,
            "wall_us": wall / gets * 1e6,
            "user_us": user / gets * 1e6,
            "kernel_us": system / gets * 1e6,
            "off_cpu_us": max(0.0, wall - user - system) / gets * 1e6,
            "context_switches": switches / gets,
        }


async def _async_workload(port: int, callers: int, seconds: float) -> dict[str, float]:
    from redis_cache import RedisCache

    cache = RedisCache(host="127.0.0.1", port=port)
    await cache.set(KEY, VALUE)
    for _ in range(WARMUP):  # warm: connection made, caches primed
        await cache.get(KEY)
    deadline = time.perf_counter() + seconds
    done = 0
    # How often asyncio's loop polls its selector (one trip through
    # _run_once each); uvloop's loop has no selector to count.
    selector = getattr(asyncio.get_running_loop(), "_selector", None)
    polls = 0
    if selector is not None:
        real_select = selector.select

        def counting_select(timeout: float | None = None) -> Any:
            nonlocal polls
            polls += 1
            return real_select(timeout)

        selector.select = counting_select

    async def caller() -> None:
        nonlocal done
        get = cache.get
        while time.perf_counter() < deadline:
            for _ in range(100):
                await get(KEY)
            done += 100

    usage = _Usage()
    await asyncio.gather(*(caller() for _ in range(callers)))
    result = usage.since(done)
    if selector is not None:
        selector.select = real_select
        result["loop_polls_per_get"] = polls / done
    await cache.close()
    return result


def _sync_workload(port: int, seconds: float) -> dict[str, float]:
    from redis_cache import SyncRedisCache

    with SyncRedisCache(host="127.0.0.1", port=port) as cache:
        cache.set(KEY, VALUE)
        for _ in range(WARMUP):
            cache.get(KEY)
        deadline = time.perf_counter() + seconds
        done = 0
        get = cache.get
        usage = _Usage()
        while time.perf_counter() < deadline:
            for _ in range(100):
                get(KEY)
            done += 100
        return usage.since(done)


def run_workload(name: str, seconds: float, port: int) -> dict[str, float]:
    """Runs one workload for ``seconds`` against the server on ``port``; prints and
    returns its per-GET costs (JSON on stdout, for :func:`profile_workload`)."""
    _, callers, loop, _ = WORKLOADS[name]
    if loop == "sync":
        result = _sync_workload(port, seconds)
    elif loop == "uvloop":
        import uvloop

        result = uvloop.run(_async_workload(port, callers, seconds))
    else:
        result = asyncio.run(_async_workload(port, callers, seconds))
    print(json.dumps(result))
    print(f"{name}: {result['gets_per_s']:,.0f} GET/s", file=sys.stderr)
    return result


# -- sorting samples into categories -----------------------------------------------

#: redis_cache's C sources (frames name them, e.g. ``flush (mux.c:370)``).
C_SOURCES = {p.name for p in (ROOT / "csrc").glob("*.c")} | {"libhiredis"}

WAIT = "waiting in epoll_wait for replies (idle: the server and the network's time)"
SEND = "send() syscall: loopback TCP write (the kernel also hands the bytes to redis-server)"
RECV = "recv() syscall"
GETPID = "getpid() syscall in asyncio.get_running_loop(), called per command"
OTHER_SYSCALL = "other syscalls (epoll_ctl, ...)"
OURS = "redis_cache C engine (command encoding, reply parsing, JSON decoding, hiredis)"
TASKS = "asyncio Future/Task machinery in C (_asyncio: Task step, set_result, callbacks)"
LOOP = "asyncio event loop Python code (_run_once, call_soon, Handle._run, selector)"
CALLER = "the calling coroutine's own Python code"
RUNTIME = "CPython runtime (interpreter, allocation, refcounting) not attributable above"

_SYSCALLS = {
    "epoll_wait": WAIT,
    "send": SEND,
    "__send": SEND,
    "__libc_send": SEND,
    "recv": RECV,
    "__recv": RECV,
    "__libc_recv": RECV,
    "getpid": GETPID,
    "epoll_ctl": OTHER_SYSCALL,
    "write": OTHER_SYSCALL,
    "read": OTHER_SYSCALL,
}
_LOOP_FILES = ("base_events.py", "selector_events.py", "selectors.py", "events.py", "selectmodule.c")


def _frame(frame: str) -> tuple[str, str]:
    """``name (file:line)`` -> (name, file)."""
    name, _, where = frame.partition(" (")
    return name, os.path.basename(where.rstrip(")").split(":", 1)[0])


def categorize(frames: list[str]) -> str:
    """The category of one sample; ``frames`` run from outermost to innermost.

    The innermost frame that says something decides: a syscall leaf, else the
    first frame (walking outwards) of redis_cache's C sources, ``_asyncio``,
    asyncio's Python event loop, or the caller; CPython's own helpers
    (``Py_DECREF``, the eval loop, allocation) are skipped over, so their time
    is charged to whoever called them.
    """
    name, _ = _frame(frames[-1])
    if name in _SYSCALLS:
        return _SYSCALLS[name]
    for frame in reversed(frames):
        name, where = _frame(frame)
        stem = where.split(".so", 1)[0]
        if where in C_SOURCES or stem in C_SOURCES:
            return OURS
        if where == "_asynciomodule.c" or where in ("futures.py", "tasks.py"):
            return TASKS
        if where in _LOOP_FILES:
            return LOOP
        if where == "profile.py":
            return CALLER
    return RUNTIME


def _self_name(frames: list[str]) -> str:
    name, where = _frame(frames[-1])
    return f"{name} ({where})" if where else name


def summarize(collapsed: str) -> tuple[list[tuple[str, float]], list[tuple[str, float]], int]:
    """Category shares and the top self-time frames of the event loop's samples.

    Only samples taken while the event loop ran (under ``run_forever``) are
    counted: interpreter start-up, imports and the idle thread of asyncio's
    default executor (used once, to resolve the host name) are not the GET path.
    """
    categories: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit() or "run_forever" not in stack:
            continue
        frames = stack.split(";")
        count = int(count_text)
        total += count
        categories[categorize(frames)] += count
        leaves[_self_name(frames)] += count
    if not total:
        raise RuntimeError("the profile holds no samples of the event loop")
    cats = [(c, n / total) for c, n in categories.most_common()]
    top = [(f, n / total) for f, n in leaves.most_common(8)]
    return cats, top, total


# -- profiling -------------------------------------------------------------------


def perf_usable() -> bool:
    """Whether perf can count instructions here (no PMU in most VMs)."""
    if not shutil.which("perf"):
        return False
    try:
        out = subprocess.run(
            ["perf", "stat", "-x,", "-e", "instructions", "true"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and "not supported" not in out.stderr and "not counted" not in out.stderr


def _tool(name: str) -> str | None:
    found = shutil.which(name) or str(Path(sys.executable).parent / name)
    return found if os.access(found, os.X_OK) else None


def _workload_command(name: str, seconds: float, port: int) -> list[str]:
    return [
        sys.executable, str(Path(__file__).resolve()), "run", name,
        "--seconds", str(seconds), "--port", str(port),
    ]  # fmt: skip


def _result_of(stdout: str) -> dict[str, float]:
    return json.loads([ln for ln in stdout.splitlines() if ln.startswith("{")][-1])


#: The syscalls counted per GET with strace (the rest are start-up).
_COUNTED = (
    "sendto",
    "recvfrom",
    "epoll_wait",
    "epoll_pwait",
    "getpid",
    "epoll_ctl",
    "poll",
    "write",
    "read",
)


def syscalls_per_get(name: str, port: int, seconds: float) -> dict[str, float] | None:
    """Syscalls per GET (counts only: strace slows every call down, so its
    timings say nothing; the counts do not change)."""
    strace = _tool("strace")
    if strace is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "strace.txt"
        result = subprocess.run(
            [strace, "-f", "-c", "-o", str(out), "-e", "trace=" + ",".join(_COUNTED)]
            + _workload_command(name, seconds, port),
            capture_output=True,
            text=True,
            timeout=seconds + 120,
            check=True,
        )
        calls = _result_of(result.stdout)["calls"]
        counts: dict[str, float] = {}
        for line in out.read_text().splitlines():
            fields = line.split()
            if len(fields) >= 5 and fields[-1] in _COUNTED and fields[3].isdigit():
                counts[fields[-1]] = int(fields[3]) / calls
    # start-up reads files: only the calls made at least once per 100 GETs count
    return {k: v for k, v in sorted(counts.items(), key=lambda kv: -kv[1]) if v >= 0.01}


#: Categories that are the kernel's or idle time: py-spy sees them as a syscall
#: leaf, and over-samples them (it stops the thread on its way out of the kernel),
#: so their share is taken from getrusage (kernel time, off-CPU time) instead.
_NOT_USER = {WAIT, SEND, RECV, GETPID, OTHER_SYSCALL}


def user_split(categories: list[tuple[str, float]], user_us: float) -> list[tuple[str, float]]:
    """The user-space CPU time per GET (µs), split by the user-space samples' shares."""
    user = [(c, share) for c, share in categories if c not in _NOT_USER]
    total = sum(share for _, share in user)
    return [(c, share / total * user_us) for c, share in user] if total else []


def sample_stacks(name: str, port: int, seconds: float, rate: int) -> dict[str, Any]:
    """py-spy --native --idle samples of the workload, sorted into categories."""
    py_spy = _tool("py-spy")
    if py_spy is None:
        raise SystemExit("py-spy is not installed: .venv/bin/pip install -r bench/requirements.txt")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "stacks.txt"
        command = [
            py_spy, "record", "--native", "--idle", "--rate", str(rate),
            "--format", "raw", "--output", str(out), "--",
        ] + _workload_command(name, seconds, port)  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120)
        if result.returncode != 0 or not out.exists():
            raise RuntimeError(f"py-spy failed:\n{result.stdout}\n{result.stderr}")
        cats, top, samples = summarize(out.read_text(encoding="utf-8", errors="replace"))
    return {
        "gets_per_s_under_py_spy": _result_of(result.stdout)["gets_per_s"],
        "samples": samples,
        "categories": cats,
        "top": top,
    }


def profile_workload(name: str, port: int, seconds: float, rate: int) -> dict[str, Any]:
    from redis_cache.testing import RedisServer  # noqa: F401 - the caller's server is used

    title, _, _, sampled = WORKLOADS[name]
    plain = subprocess.run(
        _workload_command(name, seconds, port),
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        check=True,
    )
    data: dict[str, Any] = {"name": name, "title": title, "costs": _result_of(plain.stdout)}
    data["syscalls_per_get"] = syscalls_per_get(name, port, min(seconds, 2.0))
    costs = data["costs"]
    if sampled:
        data.update(sample_stacks(name, port, seconds, rate))
        data["user_us_split"] = user_split(data["categories"], costs["user_us"])
    print(
        f"== {title}: {costs['gets_per_s']:,.0f} GET/s; per GET {costs['wall_us']:.1f} µs wall = "
        f"{costs['user_us']:.1f} user + {costs['kernel_us']:.1f} kernel + "
        f"{costs['off_cpu_us']:.1f} off-CPU; {costs['context_switches']:.2f} context switches",
        file=sys.stderr,
    )
    if data["syscalls_per_get"]:
        calls = ", ".join(f"{k} {v:.2f}" for k, v in data["syscalls_per_get"].items())
        print(f"   syscalls per GET: {calls}", file=sys.stderr)
    for category, share in data.get("categories", []):
        print(f"  {share:6.1%}  {category}", file=sys.stderr)
    for category, us in data.get("user_us_split", []):
        print(f"  {us:5.2f} µs user  {category}", file=sys.stderr)
    for frame, share in data.get("top", []):
        print(f"          {share:6.1%}  {frame}", file=sys.stderr)
    return data


def getpid_ns() -> float:
    """What one getpid() syscall costs here (glibc does not cache it), best of 5."""
    import timeit

    number = 200_000
    call = min(timeit.repeat(os.getpid, number=number, repeat=5))
    empty = min(timeit.repeat(int, number=number, repeat=5))
    return max(0.0, call - empty) / number * 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run one workload (for any profiler)")
    run.add_argument("workload", choices=sorted(WORKLOADS))
    run.add_argument("--seconds", type=float, default=5.0)
    run.add_argument("--port", type=int, help="an existing server's port (default: start one)")
    prof = sub.add_parser("profile", help="profile the workloads (the default)")
    prof.add_argument("--seconds", type=float, default=5.0)
    prof.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    args = parser.parse_args(argv)
    from redis_cache.testing import RedisServer

    if args.command == "run":
        if args.port:
            run_workload(args.workload, args.seconds, args.port)
        else:
            with RedisServer() as server:
                run_workload(args.workload, args.seconds, server.port)
        return 0
    seconds = getattr(args, "seconds", 5.0)
    rate = getattr(args, "rate", 250)
    perf = perf_usable()
    print(
        f"perf counts instructions here: {perf}; "
        + ("(perf record is not wired in; " if perf else "")
        + "sampling with py-spy --native --idle"
        + (")" if perf else ""),
        file=sys.stderr,
    )
    with RedisServer() as server:
        workloads = [profile_workload(name, server.port, seconds, rate) for name in WORKLOADS]
    summary = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "getpid_ns": getpid_ns(),
        "perf_counts_instructions": perf,
        "load_average_at_start": os.getloadavg()[0],
        "workloads": workloads,
    }
    OUT.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
