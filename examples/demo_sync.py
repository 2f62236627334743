"""The main job, shown end to end: a slow function cached through SyncRedisCache.

Starts a private redis-server (on a free loopback port, nothing persisted),
calls a slow function twice through the cache (a miss, then a hit), shows
that the stored value is plain JSON any other client can read, and stops
the server again.
"""

from __future__ import annotations

import time

from redis_cache import SyncRedisCache
from redis_cache.testing import RedisServer


def slow_report(user_id: int) -> dict[str, object]:
    """Stands in for a database query or a remote call."""
    time.sleep(0.5)
    return {"user_id": user_id, "orders": 42, "total": 1234.5, "tags": ["gold", "early"]}


def cached_report(cache: SyncRedisCache, user_id: int) -> tuple[dict[str, object], str]:
    key = f"report:{user_id}"
    missing = object()
    value = cache.get(key, missing)
    if value is not missing:
        return value, "hit"
    value = slow_report(user_id)
    cache.set(key, value, ttl=60)
    return value, "miss"


def timed(cache: SyncRedisCache, user_id: int) -> float:
    start = time.perf_counter()
    value, outcome = cached_report(cache, user_id)
    elapsed = time.perf_counter() - start
    print(f"  {outcome:<4} {elapsed * 1000:9.3f} ms  {value}")
    return elapsed


def main() -> None:
    server = RedisServer()
    with server:
        print(f"private redis-server on 127.0.0.1:{server.port} (pid {server.pid})")
        with SyncRedisCache(port=server.port, host="127.0.0.1", namespace="demo") as cache:
            print("calling slow_report(7) twice through the cache:")
            miss = timed(cache, 7)
            hit = timed(cache, 7)
            print(f"speed-up: {miss / hit:,.0f}x")
            print(f"ttl of demo:report:7: {cache.ttl('report:7')} s")
            print(f"redis-cli GET demo:report:7 -> {server.cli('GET', 'demo:report:7')}")
            rounds = 10_000
            start = time.perf_counter()
            for _ in range(rounds):
                cache.get("report:7")
            per_get = (time.perf_counter() - start) / rounds
            print(f"{rounds} cached reads: {per_get * 1e6:.1f} us each")
    print("private redis-server stopped" if not server.running else "server still running?")


if __name__ == "__main__":
    main()
