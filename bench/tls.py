"""TLS: redis_cache against redis-py over TLS, and against its own plaintext
figures, side by side on one private server that listens both ways.

    .venv/bin/python bench/tls.py [--rounds 5] [--seconds 0.3]

Scenarios (GET and SET of a 114-byte JSON value):

* one caller, blocking: SyncRedisCache over TLS, over plain TCP, redis-py over TLS;
* one caller, asyncio: RedisCache over TLS and plain, redis-py asyncio over TLS;
* 100 coroutines: the same async clients, 100 calls in flight.

Rounds are interleaved across clients (order rotated each round); figures
are medians of calls/s, with the spread of the rounds. The certificates are
generated for the run (redis_cache.testing's test PKI). Targets from issue
11: async at 100 coroutines over TLS at least 80% of our plaintext rate and
at least 5x redis-py asyncio over TLS; sync one caller at least 2x redis-py
over TLS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.machine import describe_machine  # noqa: E402
from redis_cache import RedisCache, SyncRedisCache  # noqa: E402
from redis_cache._testing_tls import generate_tls_certificates  # noqa: E402
from redis_cache.testing import RedisServer  # noqa: E402

VALUE = {"id": 1, "name": "Ada Lovelace", "langs": ["en", "fr"], "score": 97.5, "active": True,
         "tags": ["math", "engines"]}
TEXT = json.dumps(VALUE, separators=(",", ":"))
COROUTINES = 100


def timed_sync(call: Callable[[], Any], seconds: float) -> float:
    end = time.perf_counter() + seconds / 4
    while time.perf_counter() < end:
        call()
    n = 0
    start = time.perf_counter()
    end = start + seconds
    while time.perf_counter() < end:
        for _ in range(20):
            call()
        n += 20
    return n / (time.perf_counter() - start)


async def timed_async(call: Callable[[], Awaitable[Any]], seconds: float, width: int) -> float:
    async def batch() -> None:
        if width == 1:
            await call()
        else:
            await asyncio.gather(*(call() for _ in range(width)))

    end = time.perf_counter() + seconds / 4
    while time.perf_counter() < end:
        await batch()
    n = 0
    start = time.perf_counter()
    end = start + seconds
    while time.perf_counter() < end:
        await batch()
        n += width
    return n / (time.perf_counter() - start)


def sync_clients(server: RedisServer, ca: str) -> dict[str, tuple[Callable[[], Any], Callable[[], Any], Any]]:
    import redis

    ours_tls = SyncRedisCache(host="localhost", port=server.tls_port, ssl=True, ssl_ca_certs=ca)
    ours_plain = SyncRedisCache(host="127.0.0.1", port=server.port)
    peer = redis.Redis(host="localhost", port=server.tls_port, ssl=True, ssl_ca_certs=ca)
    return {
        "redis_cache sync, TLS": (lambda: ours_tls.get("k"), lambda: ours_tls.set("k", VALUE), ours_tls),
        "redis_cache sync, plain": (lambda: ours_plain.get("k"), lambda: ours_plain.set("k", VALUE), ours_plain),
        "redis-py, TLS": (lambda: json.loads(peer.get("k")), lambda: peer.set("k", TEXT), peer),
    }


def async_clients(server: RedisServer, ca: str) -> dict[str, tuple[Any, Any, Any]]:
    import redis.asyncio

    ours_tls = RedisCache(host="localhost", port=server.tls_port, ssl=True, ssl_ca_certs=ca)
    ours_plain = RedisCache(host="127.0.0.1", port=server.port)
    peer = redis.asyncio.Redis(
        host="localhost", port=server.tls_port, ssl=True, ssl_ca_certs=ca, max_connections=200
    )

    async def peer_get() -> Any:
        return json.loads(await peer.get("k"))

    return {
        "redis_cache async, TLS": (lambda: ours_tls.get("k"), lambda: ours_tls.set("k", VALUE), ours_tls),
        "redis_cache async, plain": (lambda: ours_plain.get("k"), lambda: ours_plain.set("k", VALUE), ours_plain),
        "redis-py asyncio, TLS": (peer_get, lambda: peer.set("k", TEXT), peer),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.3)
    args = parser.parse_args(argv)
    results: dict[str, list[float]] = {}

    def note(name: str, value: float) -> None:
        results.setdefault(name, []).append(value)

    with tempfile.TemporaryDirectory() as tmp:
        certs = generate_tls_certificates(tmp)
        with RedisServer(tls=certs.server_tls()) as server:
            sync = sync_clients(server, certs.ca.cert)
            for _, set_, _ in sync.values():
                set_()
            for round_ in range(args.rounds):
                names = list(sync)
                names = names[round_ % len(names):] + names[: round_ % len(names)]
                for name in names:
                    get, set_, _ = sync[name]
                    note(f"GET, one caller | {name}", timed_sync(get, args.seconds))
                    note(f"SET, one caller | {name}", timed_sync(set_, args.seconds))
            for _, _, client in sync.values():
                client.close()

            async def run_async() -> None:
                clients = async_clients(server, certs.ca.cert)
                for _, set_, _ in clients.values():
                    await set_()
                for round_ in range(args.rounds):
                    names = list(clients)
                    names = names[round_ % len(names):] + names[: round_ % len(names)]
                    for name in names:
                        get, set_, _ = clients[name]
                        note(f"GET, one caller | {name}", await timed_async(get, args.seconds, 1))
                        note(f"SET, one caller | {name}", await timed_async(set_, args.seconds, 1))
                        note(f"GET, {COROUTINES} coroutines | {name}",
                             await timed_async(get, args.seconds, COROUTINES))
                        note(f"SET, {COROUTINES} coroutines | {name}",
                             await timed_async(set_, args.seconds, COROUTINES))
                for name, (_, _, client) in clients.items():
                    if name.startswith("redis-py"):
                        await client.aclose()
                    else:
                        await client.close()

            asyncio.run(run_async())

    print("| | |\n|---|---|")
    for fact, value in describe_machine().items():
        print(f"| {fact} | {value} |")
    print(f"\nMedians of {args.rounds} interleaved rounds of ~{args.seconds} s (calls/s); spread = "
          "(max - min) / median.\n")
    scenarios = sorted({key.split(" | ")[0] for key in results})
    for scenario in scenarios:
        rows = {key.split(" | ")[1]: values for key, values in results.items()
                if key.startswith(scenario + " | ")}
        ours = "redis_cache sync, TLS" if "redis_cache sync, TLS" in rows else "redis_cache async, TLS"
        print(f"#### {scenario}\n")
        print(f"| client | calls/s | spread | {ours} ÷ this |")
        print("|---|---|---|---|")
        best = statistics.median(rows[ours])
        for name, values in rows.items():
            med = statistics.median(values)
            spread = (max(values) - min(values)) / med * 100
            print(f"| {name} | {med:,.0f} | {spread:.0f}% | {best / med:.2f}x |")
        print()


if __name__ == "__main__":
    main()
