"""What the C core's metrics cost on the hot path: metrics=True against
metrics=False, same build, same process, same server.

    .venv/bin/python bench/metrics_cost.py [--rounds 15] [--seconds 0.3] [--write]

Each round times GET at 100 coroutines (async) and a sync GET loop, once with
each setting, alternating which goes first; prints the median calls per
CPU-second of this (client) process for each, on ÷ off, and each side's
spread ((max - min) / median). CPU time rather than wall time: the counters
cost client CPU, and on a shared machine wall time mostly measures the
neighbours (the server runs in its own process and is not counted). With
``--write`` the table goes into docs/benchmarks.md's kept block
``metrics-cost``. ``metrics=False`` leaves one predicted branch per request
in place of the counters, so this is the counters' cost (a build without
them at all differs from "off" by that branch only). The machine is shared:
read the spread before the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
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
    n, start, cpu = 0, time.perf_counter(), time.process_time()
    end = start + seconds
    while time.perf_counter() < end:
        for _ in range(10):
            await make()
        n += 10
    return n * per_call / (time.process_time() - cpu)


def sync_rate(cache: SyncRedisCache, seconds: float) -> float:
    warm = time.perf_counter() + seconds / 4
    while time.perf_counter() < warm:
        cache.get("k1")
    n, start, cpu = 0, time.perf_counter(), time.process_time()
    end = start + seconds
    while time.perf_counter() < end:
        for _ in range(50):
            cache.get("k1")
        n += 50
    return n / (time.process_time() - cpu)


def spread(values: list[float]) -> float:
    return (max(values) - min(values)) / statistics.median(values) * 100


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--seconds", type=float, default=0.3)
    parser.add_argument("--write", action="store_true",
                        help="put the table into docs/benchmarks.md (kept block metrics-cost)")
    args = parser.parse_args(argv)
    figures: dict[str, dict[bool, list[float]]] = {
        "async GET, 100 coroutines": {True: [], False: []},
        "sync GET, 1 thread": {True: [], False: []},
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
                        figures["async GET, 100 coroutines"][on].append(rate)
            finally:
                for cache in caches.values():
                    await cache.close()

        asyncio.run(run_async())
        caches = {on: SyncRedisCache(port=server.port, metrics=on) for on in (True, False)}
        try:
            for round_ in range(args.rounds):
                for on in ((True, False) if round_ % 2 == 0 else (False, True)):
                    figures["sync GET, 1 thread"][on].append(sync_rate(caches[on], args.seconds))
        finally:
            for cache in caches.values():
                cache.close()
    lines = [
        "## Cost of metrics",
        "",
        f"`bench/metrics_cost.py`: medians of {args.rounds} alternating rounds of "
        f"~{args.seconds} s, `metrics=True` against `metrics=False` (same build, process and "
        "server; calls per CPU-second of the client process, which is what the counters "
        "cost and what the neighbours disturb least; paired ratio = median of each round's on ÷ off, which cancels "
        "drift between rounds; spread = (max - min) / median). The machine (2 cores) is "
        "shared with other jobs, so differences smaller than the spread are noise.",
        "",
        "| scenario | metrics on | metrics off | on ÷ off | paired ratio | spread on | spread off |",
        "|---|---|---|---|---|---|---|",
    ]
    for scenario, by in figures.items():
        on, off = statistics.median(by[True]), statistics.median(by[False])
        paired = statistics.median(a / b for a, b in zip(by[True], by[False]))
        lines.append(f"| {scenario} | {on:,.0f} | {off:,.0f} | {on / off:.3f} | {paired:.3f} | "
                     f"{spread(by[True]):.0f}% | {spread(by[False]):.0f}% |")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.write:
        replace_section(Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md",
                        "metrics-cost", table)


if __name__ == "__main__":
    main()
