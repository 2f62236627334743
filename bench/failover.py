"""A Sentinel failover under load: redis_cache against redis-py's Sentinel
clients, on the same topology, one failover each, alternating.

    .venv/bin/python bench/failover.py [--rounds 3] [--kill]

One primary, two replicas and three Sentinels (redis_cache.testing's
SentinelTopology: down-after 500 ms). For each client, writers call SET of
numbered keys in a loop (8 threads for the blocking clients, 50 coroutines
for the asyncio ones), then ``SENTINEL FAILOVER`` (or, with --kill, SIGKILL
of the primary) runs, and the load goes on until writes have flowed to the
new primary for a while. Reported per client, medians over rounds:

* failed calls: every call that raised while the topology changed;
* gap: the longest time without an acknowledged write that the new primary
  holds afterwards (acknowledged writes the old primary took after the
  promotion are lost in any client: asynchronous replication), i.e. how long
  the service could not write;
* lost: acknowledged writes the new primary does not hold.

Targets from issue 11: fewer failed calls and a shorter gap than redis-py,
for both kinds of client.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.machine import describe_machine  # noqa: E402
from redis_cache import RedisCache, SyncRedisCache  # noqa: E402
from redis_cache.testing import SentinelTopology  # noqa: E402

SERVICE = "mymaster"
THREADS = 8
COROUTINES = 50
SETTLE = 1.0  # seconds of writes after the change


class Record:
    def __init__(self) -> None:
        self.acked: list[tuple[float, str]] = []
        self.failed = 0
        self.counter = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def next_key(self) -> str:
        with self.lock:
            self.counter += 1
            return f"w:{self.counter}"


def analyse(record: Record, topology: SentinelTopology, started: float) -> dict[str, float]:
    primary = topology.primary()
    keys = [key for _, key in record.acked]
    held: set[str] = set()
    for i in range(0, len(keys), 1000):
        chunk = keys[i:i + 1000]
        values = primary.command("MGET", *chunk)
        held.update(k for k, v in zip(chunk, values) if v is not None)
    times = sorted(t for t, key in record.acked if key in held and t >= started - 0.5)
    gap = max((b - a for a, b in zip(times, times[1:])), default=float("inf"))
    lost = sum(1 for key in keys if key not in held)
    return {"failed": record.failed, "gap_ms": gap * 1000, "lost": lost}


def sync_round(make: Callable[[], Any], topology: SentinelTopology, change: Callable[[], Any]) -> dict[str, float]:
    client = make()
    record = Record()

    def writer() -> None:
        while not record.stop.is_set():
            key = record.next_key()
            try:
                client.set(key, "1")
            except Exception:  # noqa: BLE001 - any failure counts
                record.failed += 1
                time.sleep(0.001)
            else:
                record.acked.append((time.monotonic(), key))

    threads = [threading.Thread(target=writer) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    started = time.monotonic()
    change()
    time.sleep(SETTLE)
    record.stop.set()
    for thread in threads:
        thread.join()
    client.close()
    topology.wait_healthy()
    return analyse(record, topology, started)


def async_round(make: Callable[[], Any], topology: SentinelTopology, change: Callable[[], Any]) -> dict[str, float]:
    record = Record()

    async def main() -> None:
        client = make()
        loop = asyncio.get_running_loop()

        async def writer() -> None:
            while not record.stop.is_set():
                key = record.next_key()
                try:
                    await client.set(key, "1")
                except Exception:  # noqa: BLE001 - any failure counts
                    record.failed += 1
                    await asyncio.sleep(0.001)
                else:
                    record.acked.append((time.monotonic(), key))

        tasks = [asyncio.ensure_future(writer()) for _ in range(COROUTINES)]
        await asyncio.sleep(0.3)
        nonlocal_started[0] = time.monotonic()
        await loop.run_in_executor(None, change)
        await asyncio.sleep(SETTLE)
        record.stop.set()
        await asyncio.gather(*tasks)
        close = getattr(client, "aclose", None) or client.close
        await close()

    nonlocal_started = [0.0]
    asyncio.run(main())
    topology.wait_healthy()
    return analyse(record, topology, nonlocal_started[0])


def clients(topology: SentinelTopology) -> dict[str, tuple[str, Callable[[], Any]]]:
    import redis
    import redis.asyncio.sentinel
    import redis.sentinel

    sentinels = topology.sentinel_addresses
    ours = {"sentinels": sentinels, "service_name": SERVICE, "serializer": "raw",
            "connect_wait": 10, "socket_timeout": 2}

    def peer_sync() -> Any:
        return redis.sentinel.Sentinel(sentinels, socket_timeout=2).master_for(
            SERVICE, socket_timeout=2
        )

    def peer_async() -> Any:
        return redis.asyncio.sentinel.Sentinel(sentinels, socket_timeout=2).master_for(
            SERVICE, socket_timeout=2
        )

    return {
        "redis_cache sync": ("sync", lambda: SyncRedisCache(**ours, max_connections=THREADS)),
        "redis-py sync (Sentinel.master_for)": ("sync", peer_sync),
        "redis_cache async": ("async", lambda: RedisCache(**ours)),
        "redis-py asyncio (Sentinel.master_for)": ("async", peer_async),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kill", action="store_true", help="SIGKILL the primary instead")
    args = parser.parse_args(argv)
    results: dict[str, list[dict[str, float]]] = {}
    with SentinelTopology(service_name=SERVICE) as topology:  # started by `with`
        change = topology.kill_primary if args.kill else topology.failover

        def do_change() -> None:
            change()

        for round_ in range(args.rounds):
            for name, (kind, make) in clients(topology).items():
                print(f"round {round_ + 1}: {name}", file=sys.stderr)
                run = sync_round if kind == "sync" else async_round
                results.setdefault(name, []).append(run(make, topology, do_change))
                if args.kill:
                    for node in topology.nodes:
                        if not node.running:
                            topology.restart_node(node)
    print("| | |\n|---|---|")
    for fact, value in describe_machine().items():
        print(f"| {fact} | {value} |")
    what = "SIGKILL of the primary" if args.kill else "SENTINEL FAILOVER"
    print(f"\n{what}, down-after 500 ms; medians over {args.rounds} rounds (range).\n")
    print("| client | failed calls | gap without a kept write (ms) | acknowledged writes lost |")
    print("|---|---|---|---|")
    for name, rounds in results.items():
        cells = []
        for field in ("failed", "gap_ms", "lost"):
            values = [r[field] for r in rounds]
            cells.append(f"{statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
