"""``cache.get_or_set(key, factory, ttl=...)``: read-through without a
decorator, on the decorators' machinery (single flight, lock, early refresh,
stale_if_error, tags, fail-open), sync and async, single node and Cluster.
"""

import asyncio
import threading
from typing import Any

import pytest
from async_support import Runner, run  # noqa: F401  (run is a fixture)
from redis_raw import raw

import redis_cache
from redis_cache import RedisCache, SyncRedisCache
from redis_cache.cluster import RedisClusterCache
from redis_cache.decorators import FunctionStats, _stats
from redis_cache.testing import RedisServer

NS = "gs"


def test_sync_get_or_set(redis: RedisServer) -> None:
    with SyncRedisCache(port=redis.port, namespace=NS) as cache:
        calls: list[int] = []

        def load() -> dict[str, int]:
            calls.append(1)
            return {"n": len(calls)}

        assert cache.get_or_set("user:1", load, ttl=30) == {"n": 1}
        assert cache.get_or_set("user:1", load, ttl=30) == {"n": 1}
        assert calls == [1]
        assert 29_000 < raw(redis, "PTTL", f"{NS}:user:1") <= 30_000
        assert cache.get("user:1") == {"n": 1}  # a plain entry: any reader sees it
        # None is a value: cached, not recomputed.
        assert cache.get_or_set("none", lambda: None, ttl=30) is None
        assert cache.get_or_set("none", lambda: 1 / 0, ttl=30) is None
        stats = redis_cache.stats()["get_or_set:get_or_set"]
        assert stats["hits"] >= 2 and stats["computations"] >= 2


def test_async_get_or_set_with_sync_and_async_factories(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        async with RedisCache(port=redis.port, namespace=NS) as cache:
            async def load_async() -> str:
                return "from a coroutine"

            assert await cache.get_or_set("a", load_async, ttl=30) == "from a coroutine"
            assert await cache.get_or_set("b", lambda: "from a function", ttl=30) \
                == "from a function"
            assert await cache.get("a") == "from a coroutine"
            assert await cache.get_or_set("a", lambda: "not called", ttl=30) == "from a coroutine"

    run(main())


def test_concurrent_misses_share_one_computation(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        async with RedisCache(port=redis.port, namespace=NS) as cache:
            started, release = asyncio.Event(), asyncio.Event()
            calls: list[int] = []

            async def load() -> int:
                calls.append(1)
                started.set()
                await release.wait()
                return 42

            stats = _stats.setdefault("get_or_set:sf", FunctionStats("get_or_set:sf"))
            stats.misses = stats.computations = 0
            first = asyncio.ensure_future(cache.get_or_set("sf", load, ttl=30, name="sf"))
            await asyncio.wait_for(started.wait(), 10)
            others = [asyncio.ensure_future(cache.get_or_set("sf", load, ttl=30, name="sf"))
                      for _ in range(20)]
            # Each of them reads the key (a miss) before joining the computation:
            # hand the loop over (no time passes) until all 21 have missed.
            for _ in range(10_000):
                if stats.misses == 21:
                    break
                await asyncio.sleep(0)
            assert stats.misses == 21
            release.set()
            assert await first == 42
            assert await asyncio.gather(*others) == [42] * 20
            assert calls == [1]
            assert stats.computations == 1

    run(main())


@pytest.mark.parametrize("extra", [{}, {"stale_if_error": 60}, {"tags": ["t"]}],
                         ids=["plain", "stale", "tagged"])
def test_lock_across_processes_is_taken(redis: RedisServer, extra: dict[str, Any]) -> None:
    """With lock=True a second cache (another process's) waits for the holder
    and gets its value instead of computing (whatever the entry's kind)."""
    with SyncRedisCache(port=redis.port, namespace=NS) as one, \
            SyncRedisCache(port=redis.port, namespace=NS) as two:
        holding, release = threading.Event(), threading.Event()
        calls: list[str] = []

        def slow() -> str:
            calls.append("one")
            holding.set()
            assert release.wait(10)
            return "computed once"

        results: list[str] = []
        t = threading.Thread(target=lambda: results.append(
            one.get_or_set("locked", slow, ttl=30, lock=True, **extra)))
        t.start()
        assert holding.wait(10)
        assert raw(redis, "EXISTS", f"{{{NS}:locked}}:lock") == 1

        def other() -> str:
            calls.append("two")
            return "computed twice"

        waiter = threading.Thread(target=lambda: results.append(
            two.get_or_set("locked", other, ttl=30, lock=True, lock_wait=10, **extra)))
        waiter.start()
        release.set()
        t.join(10)
        waiter.join(10)
        assert results == ["computed once", "computed once"]
        assert calls == ["one"]


def test_tags_and_stale_if_error(redis: RedisServer) -> None:
    with SyncRedisCache(port=redis.port, namespace=NS) as cache:
        n = iter(range(1, 100))
        assert cache.get_or_set("t", lambda: next(n), ttl=30, tags=["user:5"]) == 1
        assert cache.get_or_set("t", lambda: next(n), ttl=30, tags=["user:5"]) == 1
        cache.invalidate_tags("user:5")
        assert cache.get_or_set("t", lambda: next(n), ttl=30, tags=["user:5"]) == 2

        def down() -> int:
            raise RuntimeError("down")

        assert cache.get_or_set("s", lambda: "last", ttl=30, stale_if_error=60) == "last"
        raw(redis, "PEXPIRE", f"{NS}:s", 59_000)  # 1 s past its expiry
        assert cache.get_or_set("s", down, ttl=30, stale_if_error=60) == "last"
        assert redis_cache.stats()["get_or_set:get_or_set"]["stale_served"] >= 1
        with pytest.raises(RuntimeError, match="down"):
            cache.get_or_set("never-stored", down, ttl=30, stale_if_error=60)


def test_fail_open_when_redis_is_down(redis: RedisServer) -> None:
    with SyncRedisCache(port=redis.port, namespace=NS, connect_wait=0) as cache:
        redis.stop()
        try:
            assert cache.get_or_set("k", lambda: "computed", ttl=30, name="fail-open") == "computed"
            assert redis_cache.stats()["get_or_set:fail-open"]["errors"] >= 1
        finally:
            redis.start()


def test_bad_arguments(redis: RedisServer) -> None:
    with SyncRedisCache(port=redis.port, namespace=NS) as cache:
        with pytest.raises(TypeError, match="callable factory"):
            cache.get_or_set("k", 5)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="non-empty str key"):
            cache.get_or_set(b"k", lambda: 1)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="non-empty str"):
            cache.get_or_set("k", lambda: 1, tags=[""])

        async def coroutine_factory() -> int:
            return 1

        with pytest.raises(TypeError, match="async factory"):
            cache.get_or_set("k", coroutine_factory)
    assert raw(redis, "DBSIZE") == 0


def test_get_or_set_on_a_cluster(run: Runner, healthy_cluster: Any) -> None:
    async def main() -> None:
        async with RedisClusterCache(list(healthy_cluster.seed_addresses),
                                     namespace=NS) as cache:
            values = await asyncio.gather(*(
                cache.get_or_set(f"k{i}", lambda i=i: i * i, ttl=30, tags=[f"t{i % 3}"])
                for i in range(30)
            ))
            assert values == [i * i for i in range(30)]
            await cache.invalidate_tags("t0")
            again = await asyncio.gather(*(
                cache.get_or_set(f"k{i}", lambda: -1, ttl=30, tags=[f"t{i % 3}"])
                for i in range(30)
            ))
            assert again == [-1 if i % 3 == 0 else i * i for i in range(30)]

    run(main())
