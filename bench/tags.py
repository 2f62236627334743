"""What tags, stale_if_error and get_or_set cost on a hit, against one private
redis-server: calls per second of a decorated async function that always hits,
plain and with each option, and of get_or_set, get_tagged and plain get.

    .venv/bin/python bench/tags.py [--seconds 2]

Each case runs for --seconds with one caller (each call awaited before the
next), then with 100 coroutines on one event loop (uvloop when installed)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from redis_cache import RedisCache  # noqa: E402
from redis_cache.testing import RedisServer  # noqa: E402


async def measure(call: Callable[[], Awaitable[Any]], callers: int, seconds: float) -> float:
    await call()
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await call()
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(callers)))
    return done / (time.perf_counter() - start)


async def main(port: int, seconds: float) -> None:
    async with RedisCache(port=port, namespace="bench") as cache:
        @cache.cached(ttl=600, key="plain:{x}")
        async def plain(x: int) -> int:
            return x

        @cache.cached(ttl=600, key="tagged:{x}", tags=["user:{x}"])
        async def tagged(x: int) -> int:
            return x

        @cache.cached(ttl=600, key="stale:{x}", stale_if_error=600)
        async def stale(x: int) -> int:
            return x

        await cache.set_tagged("gt", 1, ["user:1"], ttl=600)
        await cache.set("g", 1, ttl=600)
        cases: dict[str, Callable[[], Awaitable[Any]]] = {
            "plain get": lambda: cache.get("g"),
            "get_tagged (1 tag)": lambda: cache.get_tagged("gt"),
            "@cached hit": lambda: plain(1),
            "@cached(tags=[1 tag]) hit": lambda: tagged(1),
            "@cached(stale_if_error=) hit": lambda: stale(1),
            "get_or_set hit": lambda: cache.get_or_set("gos", lambda: 1, ttl=600),
            "get_or_set(tags=[1 tag]) hit": lambda: cache.get_or_set(
                "gost", lambda: 1, ttl=600, tags=["user:1"]),
        }
        print(f"{'case':34} {'1 caller':>12} {'100 coroutines':>16}")
        for name, call in cases.items():
            one = await measure(call, 1, seconds)
            many = await measure(call, 100, seconds)
            print(f"{name:34} {one:12,.0f} {many:16,.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    try:
        import uvloop
        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    with RedisServer() as server:
        runner(main(server.port, args.seconds))
