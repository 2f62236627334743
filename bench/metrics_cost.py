"""What the C core's metrics cost on the hot path: metrics=True against
metrics=False, same build, same process, same server.

    .venv/bin/python bench/metrics_cost.py [--rounds 15] [--seconds 0.3] [--write]
                                           [--baseline TREE] [--instructions]

Each round times GET at 100 coroutines (async) and a sync GET loop, once with
each setting, alternating which goes first; prints the median calls per
CPU-second of the calling thread (the client's event loop, or the calling
thread for sync; time.thread_time) for each, on ÷ off, and each side's
spread ((max - min) / median). CPU time rather than wall time: the counters
cost client CPU, and on a shared machine wall time mostly measures the
neighbours (the server runs in its own process and is not counted). With
``--write`` the table goes into docs/benchmarks.md's kept block
``metrics-cost``. ``metrics=False`` leaves one predicted branch per request
in place of the counters, so this is the counters' cost (a build without
them at all differs from "off" by that branch only). The machine is shared:
read the spread before the ratio.

``--baseline TREE`` adds a comparison with another source tree holding a
built extension, one from before metrics existed (compiled out): each round
runs a fresh process per tree (``PYTHONPATH=TREE``, the timing code this
file's), alternating which goes first.

``--instructions`` adds a count that the neighbours cannot disturb: the
instructions executed inside the C entry points of a GET (``rc_client_get``,
which for sync is the whole round trip, and the multiplexer's read, write and
flush callbacks, which complete async GETs), under valgrind's callgrind,
for 2,000 GETs (20 x 100 coroutines; 2,000 sync calls) with metrics on and
off. It leaves out the Python-level work around each call, so the ratio is
an upper bound of the relative cost.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.kept_sections import replace_section  # noqa: E402
from redis_cache import RedisCache, SyncRedisCache  # noqa: E402
from redis_cache.testing import RedisServer  # noqa: E402

VALUE = {"id": 1, "name": "Ada Lovelace", "langs": ["en", "fr"], "score": 97.5}
KEYS = [f"k{i}" for i in range(100)]


async def async_rate(cache: RedisCache, seconds: float) -> float:
    """GETs per second, 100 coroutines at a time."""

    async def hundred() -> None:
        await asyncio.gather(*(cache.get(k) for k in KEYS))

    return await _timed(hundred, seconds, per_call=100)


async def _timed(make: Callable[[], Awaitable[None]], seconds: float, per_call: int) -> float:
    warm = time.perf_counter() + seconds / 4
    while time.perf_counter() < warm:
        await make()
    n, start, cpu = 0, time.perf_counter(), time.thread_time()
    end = start + seconds
    while time.perf_counter() < end:
        for _ in range(10):
            await make()
        n += 10
    return n * per_call / (time.thread_time() - cpu)


def sync_rate(cache: SyncRedisCache, seconds: float) -> float:
    warm = time.perf_counter() + seconds / 4
    while time.perf_counter() < warm:
        cache.get("k1")
    n, start, cpu = 0, time.perf_counter(), time.thread_time()
    end = start + seconds
    while time.perf_counter() < end:
        for _ in range(50):
            cache.get("k1")
        n += 50
    return n / (time.thread_time() - cpu)


WORKER = r'''
import asyncio, sys
from redis_cache import RedisCache, SyncRedisCache
sys.path.insert(0, sys.argv[3])
from bench.metrics_cost import async_rate, sync_rate
port, seconds = int(sys.argv[1]), float(sys.argv[2])

async def main():
    async with RedisCache(port=port) as cache:
        return await async_rate(cache, seconds)

with SyncRedisCache(port=port) as cache:
    print(asyncio.run(main()), sync_rate(cache, seconds))
'''


def tree_round(tree: Path, port: int, seconds: float) -> tuple[float, float]:
    """(async, sync) rates of the redis_cache found in tree, in a fresh process."""
    here = str(Path(__file__).resolve().parent.parent)
    out = subprocess.run(
        [sys.executable, "-c", WORKER, str(port), str(seconds), here],
        env=dict(os.environ, PYTHONPATH=str(tree)), cwd="/", capture_output=True, text=True,
        check=True, timeout=120,
    ).stdout.split()
    return float(out[-2]), float(out[-1])


INSTRUCTION_WORKER = r'''
import asyncio, sys
from redis_cache import RedisCache, SyncRedisCache
port, on, kind = int(sys.argv[1]), sys.argv[2] == "on", sys.argv[3]
KEYS = [f"k{i}" for i in range(100)]
if kind == "async":
    async def main():
        async with RedisCache(port=port, metrics=on) as cache:
            await cache.ping()
            for _ in range(20):
                await asyncio.gather(*(cache.get(k) for k in KEYS))
    asyncio.run(main())
else:
    with SyncRedisCache(port=port, metrics=on) as cache:
        for _ in range(20):
            for k in KEYS:
                cache.get(k)
'''
TOGGLES = ("rc_client_get", "mux_on_readable", "mux_on_writable", "mux_on_flush")


def instructions_per_get(port: int, on: bool, kind: str) -> float:
    """Instructions inside the C entry points, per GET, under callgrind."""
    out = Path(f"/tmp/metrics_cost.callgrind.{os.getpid()}")
    try:
        subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
             *(f"--toggle-collect={name}" for name in TOGGLES),
             sys.executable, "-c", INSTRUCTION_WORKER, str(port), "on" if on else "off", kind],
            env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent)),
            cwd="/", capture_output=True, text=True, check=True, timeout=300,
        )
        totals = [line for line in out.read_text().splitlines()
                  if line.startswith(("summary:", "totals:"))]
        return int(totals[-1].split()[1]) / 2000
    finally:
        out.unlink(missing_ok=True)


def table(figures: dict[str, dict[str, list[float]]], a: str, b: str) -> list[str]:
    lines = [f"| scenario | {a} | {b} | {a} ÷ {b} | paired ratio | spread {a} | spread {b} |",
             "|---|---|---|---|---|---|---|"]
    for scenario, by in figures.items():
        x, y = statistics.median(by[a]), statistics.median(by[b])
        paired = statistics.median(p / q for p, q in zip(by[a], by[b]))
        lines.append(f"| {scenario} | {x:,.0f} | {y:,.0f} | {x / y:.3f} | {paired:.3f} | "
                     f"{spread(by[a]):.0f}% | {spread(by[b]):.0f}% |")
    return lines


def spread(values: list[float]) -> float:
    return (max(values) - min(values)) / statistics.median(values) * 100


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--seconds", type=float, default=0.3)
    parser.add_argument("--write", action="store_true",
                        help="put the table into docs/benchmarks.md (kept block metrics-cost)")
    parser.add_argument("--instructions", action="store_true",
                        help="also count instructions per GET under callgrind (deterministic)")
    parser.add_argument("--baseline", type=Path,
                        help="also compare with this source tree (built, without metrics)")
    args = parser.parse_args(argv)
    figures: dict[str, dict[str, list[float]]] = {
        "async GET, 100 coroutines": {"on": [], "off": []},
        "sync GET, 1 thread": {"on": [], "off": []},
    }
    against: dict[str, dict[str, list[float]]] = {
        "async GET, 100 coroutines": {"this tree": [], "baseline": []},
        "sync GET, 1 thread": {"this tree": [], "baseline": []},
    }
    with RedisServer() as server:
        with SyncRedisCache(port=server.port) as setup:
            setup.set_many({k: VALUE for k in KEYS})

        async def run_async() -> None:
            caches = {on: RedisCache(port=server.port, metrics=on) for on in (True, False)}
            try:
                for round_ in range(args.rounds):
                    for on in ((True, False) if round_ % 2 == 0 else (False, True)):
                        rate = await async_rate(caches[on], args.seconds)
                        figures["async GET, 100 coroutines"]["on" if on else "off"].append(rate)
            finally:
                for cache in caches.values():
                    await cache.close()

        asyncio.run(run_async())
        caches = {on: SyncRedisCache(port=server.port, metrics=on) for on in (True, False)}
        try:
            for round_ in range(args.rounds):
                for on in ((True, False) if round_ % 2 == 0 else (False, True)):
                    rate = sync_rate(caches[on], args.seconds)
                    figures["sync GET, 1 thread"]["on" if on else "off"].append(rate)
        finally:
            for cache in caches.values():
                cache.close()
        if args.baseline is not None:
            trees = {"this tree": Path(__file__).resolve().parent.parent,
                     "baseline": args.baseline.resolve()}
            for round_ in range(args.rounds):
                for which in (("this tree", "baseline") if round_ % 2 == 0
                              else ("baseline", "this tree")):
                    rates = tree_round(trees[which], server.port, args.seconds)
                    for scenario, rate in zip(against, rates):
                        against[scenario][which].append(rate)
        counted: dict[str, dict[bool, float]] = {}
        if args.instructions:
            for kind in ("async", "sync"):
                counted[kind] = {on: instructions_per_get(server.port, on, kind)
                                 for on in (True, False)}
    lines = [
        "## Cost of metrics",
        "",
        f"`bench/metrics_cost.py`: medians of {args.rounds} alternating rounds of "
        f"~{args.seconds} s, `metrics=True` against `metrics=False` (same build, process and "
        "server; calls per CPU-second of the client's thread, which is what the counters "
        "cost and what the neighbours disturb least; paired ratio = median of each round's "
        "ratio, which cancels drift between rounds; spread = (max - min) / median). "
        "The machine (2 cores) is "
        "shared with other jobs, so differences smaller than the spread are noise.",
        "",
        *table(figures, "on", "off"),
    ]
    if args.baseline is not None:
        lines += [
            "",
            f"Against a build without metrics (`--baseline`, {args.baseline.name}), a fresh "
            "process per tree and round, same measure:",
            "",
            *table(against, "this tree", "baseline"),
        ]
    if counted:
        lines += [
            "",
            "Instructions per GET inside the C entry points (`--instructions`: callgrind, "
            "2,000 GETs; not disturbed by the neighbours; the Python-level work around each "
            "call is left out, so on ÷ off is an upper bound of the relative cost):",
            "",
            "| scenario | metrics on | metrics off | added | on ÷ off |",
            "|---|---|---|---|---|",
        ]
        for kind, label in (("async", "async GET, 100 coroutines"), ("sync", "sync GET")):
            on, off = counted[kind][True], counted[kind][False]
            lines.append(f"| {label} | {on:,.0f} | {off:,.0f} | {on - off:,.0f} | "
                         f"{on / off:.4f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        replace_section(Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md",
                        "metrics-cost", text)


if __name__ == "__main__":
    main()
