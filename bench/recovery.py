"""How clients come through a Redis restart: side by side, one private server.

    .venv/bin/python bench/recovery.py [--rounds N] [--outage SECONDS]

Two scenarios, each run for redis_cache and for redis-py (the peer most
services use), alternating, `--rounds` times:

* **stale pool** (blocking clients): 20 connections left idle in the pool,
  the server restarted (SIGKILL, started again on the same port), then 40
  calls: how many fail. Every pooled connection is dead at that point; a
  client that lends them out unchecked fails a call per connection.
* **outage under load** (asyncio clients): 20 coroutines call GET in a loop;
  the server is killed, stays down for `--outage` seconds (1 s by default),
  and is started again. Reported: the calls that failed while it was down,
  the calls that failed after it accepted connections again, and the time
  from it accepting to the first successful call.

Prints a markdown table of medians (and the range over rounds); `--json`
writes the raw figures. The server is private (loopback, free port).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.machine import describe_machine
from redis_cache import RedisCache, SyncRedisCache
from redis_cache.testing import RedisServer

IDLE = 20
CALLS_AFTER = 40
WORKERS = 20


# ------------------------------------------------------------------ stale pool


def _fill_pool(run_blocking: Callable[[int], None], server: RedisServer) -> None:
    """Leaves IDLE connections idle: IDLE threads block in BLPOP at once."""
    threads = [threading.Thread(target=run_blocking, args=(i,)) for i in range(IDLE)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while _blocked(server) < IDLE:
        if time.monotonic() > deadline:
            raise RuntimeError("the pool did not fill")
        time.sleep(0.005)
    for i in range(IDLE):
        server.raw_command("RPUSH", f"wake:{i}", "go")
    for thread in threads:
        thread.join()


def _blocked(server: RedisServer) -> int:
    for line in server.cli("INFO", "clients").splitlines():
        if line.startswith("blocked_clients:"):
            return int(line.split(":")[1])
    return 0


def _count_failures(call: Callable[[], Any]) -> int:
    failed = 0
    for _ in range(CALLS_AFTER):
        try:
            call()
        except Exception:  # noqa: BLE001 - any failure counts
            failed += 1
    return failed


def stale_pool_redis_cache(server: RedisServer) -> int:
    with SyncRedisCache(port=server.port, max_connections=IDLE) as cache:
        _fill_pool(lambda i: cache.execute_command("BLPOP", f"wake:{i}", 30), server)
        server.kill()
        server.start()
        return _count_failures(lambda: cache.get("k"))


def stale_pool_redis_py(server: RedisServer) -> int:
    import redis

    client = redis.Redis(port=server.port, max_connections=IDLE)
    try:
        _fill_pool(lambda i: client.blpop([f"wake:{i}"], 30), server)
        server.kill()
        server.start()
        return _count_failures(lambda: client.get("k"))
    finally:
        client.close()


# ------------------------------------------------------------------ outage


async def _outage(
    call: Callable[[], Awaitable[Any]], server: RedisServer, outage: float
) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    state = {"phase": "up", "ready_at": 0.0}
    during = after = 0
    first_success: list[float] = []
    stop = asyncio.Event()

    async def worker() -> None:
        nonlocal during, after
        while not stop.is_set():
            try:
                await call()
            except Exception:  # noqa: BLE001 - any failure counts
                if state["phase"] == "back":
                    after += 1
                else:
                    during += 1
                await asyncio.sleep(0)  # a failing call must not starve the loop
            else:
                if state["phase"] == "back" and not first_success:
                    first_success.append(time.monotonic())

    workers = [asyncio.ensure_future(worker()) for _ in range(WORKERS)]
    await asyncio.sleep(0.2)  # steady load first
    await loop.run_in_executor(None, server.kill)
    state["phase"] = "down"
    await asyncio.sleep(outage)
    await loop.run_in_executor(None, server.start)  # returns once it accepts
    state["ready_at"] = time.monotonic()
    state["phase"] = "back"
    deadline = time.monotonic() + 10
    while not first_success and time.monotonic() < deadline:
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.5)  # keep the load on: failures after recovery count
    stop.set()
    await asyncio.gather(*workers)
    gap = (first_success[0] - state["ready_at"]) * 1000 if first_success else float("inf")
    return {"failed_during": during, "failed_after": after, "first_success_ms": gap}


async def outage_redis_cache(server: RedisServer, outage: float) -> dict[str, float]:
    async with RedisCache(port=server.port) as cache:
        await cache.set("k", "v")
        return await _outage(lambda: cache.get("k"), server, outage)


async def outage_redis_py(server: RedisServer, outage: float) -> dict[str, float]:
    import redis.asyncio

    client = redis.asyncio.Redis(port=server.port, max_connections=WORKERS * 2)
    try:
        await client.set("k", "v")
        return await _outage(lambda: client.get("k"), server, outage)
    finally:
        await client.aclose()


# ------------------------------------------------------------------ report


def _median_range(values: list[float]) -> str:
    if any(v == float("inf") for v in values):
        return "never (within 10 s)"
    med = statistics.median(values)
    return f"{med:g} ({min(values):g}-{max(values):g})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--outage", type=float, default=1.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    results: dict[str, dict[str, list[float]]] = {}

    def note(client: str, name: str, value: float) -> None:
        results.setdefault(client, {}).setdefault(name, []).append(value)

    with RedisServer() as server:
        for round_ in range(args.rounds):
            print(f"round {round_ + 1}/{args.rounds}", file=sys.stderr)
            note("redis_cache", "stale_pool_failed", stale_pool_redis_cache(server))
            note("redis-py", "stale_pool_failed", stale_pool_redis_py(server))
            for client, scenario in (
                ("redis_cache", outage_redis_cache),
                ("redis-py", outage_redis_py),
            ):
                for name, value in asyncio.run(scenario(server, args.outage)).items():
                    note(client, name, value)

    print("| | |\n|---|---|")
    for fact, value in describe_machine().items():
        print(f"| {fact} | {value} |")
    print()
    print(f"Medians over {args.rounds} rounds (range in brackets); outage {args.outage} s.\n")
    print("| client | stale pool: calls failed of 40 | outage: calls failed while down | "
          "calls failed after it was back | first success after it accepted (ms) |")
    print("|---|---|---|---|---|")
    for client, figures in results.items():
        print(
            f"| {client} | {_median_range(figures['stale_pool_failed'])} | "
            f"{_median_range(figures['failed_during'])} | "
            f"{_median_range(figures['failed_after'])} | "
            f"{_median_range([round(v, 1) for v in figures['first_success_ms']])} |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
