"""Python code that uses the cache from inside the cache's own calls.

A garbage collection can start at almost any allocation and run finalizers
(``__del__``, ``weakref.finalize``); a ``__repr__`` or a serializer hook is
user code too. Any of them may use the very cache whose call is running. The
C core writes each command in a window that runs no Python code (mux.c's
rule): these tests make collections happen at nearly every allocation, with
finalizers and reprs that use the cache, and check that every caller still
gets its own reply. Under ``make sanitize`` the window's assert is live, so a
re-entry into an open window aborts the run.
"""

from __future__ import annotations

import asyncio
import gc
import math
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from async_support import Runner, run  # noqa: F401

from redis_cache import RedisCache, SerializationError, SyncRedisCache
from redis_cache.testing import RedisServer

ROUNDS = 150
READS = 20


@pytest.fixture
def collect_often() -> Iterator[None]:
    """A collection at (nearly) every allocation of a tracked object."""
    old = gc.get_threshold()
    gc.collect()
    gc.set_threshold(1, 1, 1)
    try:
        yield
    finally:
        gc.set_threshold(*old)
        gc.collect()


class Cycle:
    """Garbage only a collection frees: it refers to itself."""

    def __init__(self) -> None:
        self.me = self


class UsesCacheWhenDeleted:
    """A __del__ that writes through the cache (in a cycle: run by the GC)."""

    def __init__(self, cache: Any, key: str) -> None:
        self.me = self
        self.cache = cache
        self.key = key

    def __del__(self) -> None:
        self.cache.set(self.key, "from __del__", ttl=60)


def make_garbage(cache: Any, tag: str) -> None:
    for j in range(3):
        weakref.finalize(Cycle(), cache.delete, f"finalized:{tag}:{j}")
        UsesCacheWhenDeleted(cache, f"deleted:{tag}:{j}")


def expected_prices() -> dict[str, int]:
    return {f"price:{i}": 100 + i for i in range(READS)}


def test_async_finalizers_using_the_cache_never_get_a_callers_reply(
    run: Runner, redis: RedisServer, collect_often: None
) -> None:
    async def main() -> None:
        async with RedisCache(port=redis.port) as cache:
            assert await cache.set_many(expected_prices()) is True
            for round_ in range(ROUNDS):
                make_garbage(cache, str(round_))
                got = await asyncio.gather(*(cache.get(key) for key in expected_prices()))
                assert got == list(expected_prices().values()), round_
                make_garbage(cache, f"{round_}b")
                assert await cache.get_many(list(expected_prices())) == expected_prices()
                assert await cache.set(f"own:{round_}", round_) is True
                assert await cache.incr(f"counter:{round_}") == 1
            gc.collect()
            # The finalizers' commands went out whole, each with its own reply.
            assert await cache.get(f"deleted:{ROUNDS - 1}:0") == "from __del__"
            assert await cache.ping() is True

    run(main())


def test_sync_finalizers_using_the_cache_never_get_a_callers_reply(
    redis: RedisServer, collect_often: None
) -> None:
    with SyncRedisCache(port=redis.port, max_connections=4) as cache:
        assert cache.set_many(expected_prices()) is True
        for round_ in range(ROUNDS):
            make_garbage(cache, str(round_))
            assert [cache.get(key) for key in expected_prices()] == list(expected_prices().values())
            make_garbage(cache, f"{round_}b")
            assert cache.get_many(list(expected_prices())) == expected_prices()
            assert cache.incr(f"counter:{round_}") == 1
        gc.collect()
        assert cache.get(f"deleted:{ROUNDS - 1}:0") == "from __del__"


class ReprUsesCache(float):
    """A float whose repr (shown in an encoding error) writes through the cache."""

    cache: Any = None
    calls = 0

    def __repr__(self) -> str:
        type(self).calls += 1
        result = self.cache.set("from-repr", type(self).calls)
        if asyncio.isfuture(result):
            result.add_done_callback(lambda f: f.exception())
        return "ReprUsesCache(nan)"


class KeyReprUsesCache:
    """A dict key (not a str) whose repr writes through the cache."""

    cache: Any = None

    def __repr__(self) -> str:
        result = self.cache.set("from-key-repr", 1)
        if asyncio.isfuture(result):
            result.add_done_callback(lambda f: f.exception())
        return "KeyReprUsesCache()"

    def __hash__(self) -> int:
        return 7


def test_async_error_messages_built_with_user_reprs_outside_the_write(
    run: Runner, redis: RedisServer
) -> None:
    async def main() -> None:
        async with RedisCache(port=redis.port) as cache:
            ReprUsesCache.cache = KeyReprUsesCache.cache = cache
            assert await cache.set("price", 100) is True
            pending = cache.get("price")  # queued before the failing set
            with pytest.raises(SerializationError, match="NaN"):
                cache.set("bad", [ReprUsesCache(math.nan)])
            with pytest.raises(SerializationError, match="KeyReprUsesCache"):
                cache.set("bad", {KeyReprUsesCache(): 1})
            after = cache.get("price")
            assert await pending == 100
            assert await after == 100
            assert await cache.get("bad", default="absent") == "absent"
            assert await cache.get("from-repr") == ReprUsesCache.calls >= 1
            assert await cache.get("from-key-repr") == 1

    run(main())


def test_sync_error_messages_built_with_user_reprs(redis: RedisServer) -> None:
    with SyncRedisCache(port=redis.port, max_connections=1) as cache:
        ReprUsesCache.cache = KeyReprUsesCache.cache = cache
        ReprUsesCache.calls = 0
        assert cache.set("price", 100) is True
        with pytest.raises(SerializationError, match="NaN"):
            cache.set("bad", [ReprUsesCache(math.nan)])
        with pytest.raises(SerializationError, match="KeyReprUsesCache"):
            cache.set_many({"a": 1, "bad": {KeyReprUsesCache(): 1}})
        assert cache.get("price") == 100
        assert cache.get_many(["a", "bad"]) == {}  # nothing of the failed batch written
        assert cache.get("from-repr") == ReprUsesCache.calls >= 1
        assert cache.get("from-key-repr") == 1


def test_sync_finalizer_needing_a_connection_while_the_thread_holds_the_only_one(
    redis: RedisServer,
) -> None:
    """With max_connections=1 a finalizer that runs during a call (its thread
    holding the only connection) cannot get one: it fails at once with a
    message that says why, instead of waiting pool_timeout for itself."""
    from redis_cache import PoolTimeout

    errors: list[BaseException] = []

    with SyncRedisCache(port=redis.port, max_connections=1, pool_timeout=30) as cache:

        class Decoder:
            @staticmethod
            def dumps(value: Any) -> bytes:
                return str(value).encode()

            @staticmethod
            def loads(data: bytes) -> Any:
                # Runs while the reply is read, with the connection held.
                try:
                    cache_b.get("x")
                except PoolTimeout as exc:
                    errors.append(exc)
                return data.decode()

        cache_b = cache
        with SyncRedisCache(port=redis.port, max_connections=1, serializer=Decoder()) as other:
            assert other.set("k", "v") is True
            cache_b = other
            assert other.get("k") == "v"
    assert len(errors) == 1
    assert "already holds all 1 connections" in str(errors[0])
