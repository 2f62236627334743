"""The public lock against one private redis-server: uncontended acquire +
release pairs per second (sync and async), and the hand-off time from a
release to the blocked waiter holding the lock (the wake-up path: BLPOP woken
by the release's push, then the acquire script).

    .venv/bin/python bench/locks.py [--seconds 2] [--handoffs 200]

A hand-off is timed from just before ``release()`` in one thread to just
after ``acquire()`` returns in a waiter that the server shows blocked in
BLPOP, so every acquisition is a wake-up (a polling lock would show its poll
interval here). Medians and 99th percentiles are printed."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from redis_cache import RedisCache, SyncRedisCache  # noqa: E402
from redis_cache.testing import RedisServer  # noqa: E402


def sync_pairs(port: int, seconds: float) -> float:
    with SyncRedisCache(port=port, namespace="bench") as cache:
        lock = cache.lock("pairs", renew=False)
        done, deadline = 0, time.perf_counter() + seconds
        start = time.perf_counter()
        while time.perf_counter() < deadline:
            lock.acquire()
            lock.release()
            done += 1
        return done / (time.perf_counter() - start)


async def async_pairs(port: int, seconds: float) -> float:
    async with RedisCache(port=port, namespace="bench") as cache:
        lock = cache.lock("pairs", renew=False)
        done, deadline = 0, time.perf_counter() + seconds
        start = time.perf_counter()
        while time.perf_counter() < deadline:
            await lock.acquire()
            await lock.release()
            done += 1
        return done / (time.perf_counter() - start)


def handoffs(port: int, count: int) -> list[float]:
    """``count`` times: this thread holds the lock until a waiter thread is
    blocked on it (the server's blocked_clients), then releases it."""
    times: list[float] = []
    with SyncRedisCache(port=port, namespace="bench", socket_timeout=None) as cache:
        for _ in range(count):
            holder = cache.lock("handoff", lease=30, wait=0, renew=False).acquire()
            got = threading.Event()
            acquired_at: list[float] = []

            def waiter() -> None:
                with cache.lock("handoff", lease=30, wait=30, renew=False):
                    acquired_at.append(time.perf_counter())
                got.set()

            thread = threading.Thread(target=waiter)
            thread.start()
            while _blocked(cache) == 0:
                pass
            released_at = time.perf_counter()
            holder.release()
            got.wait(30)
            thread.join()
            times.append(acquired_at[0] - released_at)
    return times


def _blocked(cache: SyncRedisCache) -> int:
    info = cache.execute_command("INFO", "clients").decode()
    return int(info.split("blocked_clients:")[1].split()[0])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--handoffs", type=int, default=200)
    args = parser.parse_args()
    server = RedisServer()
    server.start()
    try:
        print(f"sync  acquire+release: {sync_pairs(server.port, args.seconds):8.0f} pairs/s")
        print(f"async acquire+release: {asyncio.run(async_pairs(server.port, args.seconds)):8.0f} pairs/s")
        times = sorted(handoffs(server.port, args.handoffs))
        p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
        print(f"hand-off release -> waiter holds it: median {statistics.median(times) * 1e3:.3f} ms, "
              f"p99 {p99 * 1e3:.3f} ms over {len(times)}")
    finally:
        server.close()


if __name__ == "__main__":
    main()
