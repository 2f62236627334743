"""Pub/sub messages delivered per second against one private redis-server:
redis_cache's async and sync subscriptions, and redis-py's (asyncio and
blocking) when installed.

    .venv/bin/python bench/pubsub.py [--messages 50000] [--json out.json]

Each case subscribes to one channel, then publishes --messages JSON values
(``{"id": i, "name": "..."}``) from a second connection, 100 in flight at a
time, and counts until the subscriber has taken the last one decoded (redis-py
decodes with json.loads, which is what a user of it writes). The figure is
messages received and decoded per second, end to end (publish included). One
run of each case; the loop is uvloop when installed."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from redis_cache import RedisCache, SyncRedisCache  # noqa: E402
from redis_cache.testing import RedisServer  # noqa: E402

IN_FLIGHT = 100


def value(i: int) -> dict[str, Any]:
    return {"id": i, "name": "order", "total": 12.5}


async def ours_async(port: int, n: int) -> float:
    async with RedisCache(port=port) as cache, cache.subscribe("b", max_queued=n + 1) as sub:
        start = time.perf_counter()
        for first in range(0, n, IN_FLIGHT):
            await asyncio.gather(*(cache.publish("b", value(i))
                                   for i in range(first, min(first + IN_FLIGHT, n))))
        for _ in range(n):
            message = await sub.get()
            assert message is not None
        assert message.data["id"] == n - 1
        return n / (time.perf_counter() - start)


def ours_sync(port: int, n: int) -> float:
    with SyncRedisCache(port=port) as cache, cache.subscribe("b", max_queued=n + 1) as sub:
        got: list[Any] = []

        def consume() -> None:
            for message in sub:
                got.append(message.data)
                if len(got) == n:
                    return

        thread = threading.Thread(target=consume)
        start = time.perf_counter()
        thread.start()
        for i in range(n):
            cache.publish("b", value(i))
        thread.join()
        assert got[-1]["id"] == n - 1
        return n / (time.perf_counter() - start)


async def redis_py_async(port: int, n: int) -> float:
    import redis.asyncio as aredis

    client = aredis.Redis(port=port, max_connections=IN_FLIGHT + 10)
    pubsub = client.pubsub()
    await pubsub.subscribe("b")
    await pubsub.get_message(timeout=1.0)  # the confirmation
    start = time.perf_counter()
    for first in range(0, n, IN_FLIGHT):
        await asyncio.gather(*(client.publish("b", json.dumps(value(i)))
                               for i in range(first, min(first + IN_FLIGHT, n))))
    received = 0
    while received < n:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
        if message is not None:
            last = json.loads(message["data"])
            received += 1
    assert last["id"] == n - 1
    rate = n / (time.perf_counter() - start)
    await pubsub.aclose()
    await client.aclose()
    return rate


def redis_py_sync(port: int, n: int) -> float:
    import redis

    client = redis.Redis(port=port)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("b")
    got: list[Any] = []

    def consume() -> None:
        for message in pubsub.listen():
            if message["type"] == "message":
                got.append(json.loads(message["data"]))
                if len(got) == n:
                    return

    thread = threading.Thread(target=consume)
    start = time.perf_counter()
    thread.start()
    for i in range(n):
        client.publish("b", json.dumps(value(i)))
    thread.join()
    assert got[-1]["id"] == n - 1
    rate = n / (time.perf_counter() - start)
    pubsub.close()
    client.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    try:
        import uvloop

        new_loop = uvloop.new_event_loop
    except ImportError:
        new_loop = asyncio.new_event_loop
    try:
        import redis  # noqa: F401

        peers = True
    except ImportError:
        peers = False
    results: dict[str, float] = {}
    with RedisServer() as server:
        def run(coro: Any) -> float:
            loop = new_loop()
            try:
                return loop.run_until_complete(coro)  # type: ignore[no-any-return]
            finally:
                loop.close()

        results["redis_cache async"] = run(ours_async(server.port, args.messages))
        results["redis_cache sync"] = ours_sync(server.port, args.messages)
        if peers:
            results["redis-py asyncio"] = run(redis_py_async(server.port, args.messages))
            results["redis-py sync"] = redis_py_sync(server.port, args.messages)
        else:
            print("redis-py not installed: its cases are skipped")
    for name, rate in results.items():
        print(f"{name:20s} {rate:12,.0f} messages/s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
