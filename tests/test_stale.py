"""``@cached(stale_if_error=...)``: when recomputing an expired entry raises,
the last value is served for up to that long past its expiry, and counted
in ``fn.stats.stale_served``.

Expiry is brought forward by shortening the entry's PTTL on the server
(the stored stale window is what is left beyond the fresh part), never by
sleeping. Sync and async (asyncio and uvloop).
"""

import asyncio
import inspect
import logging
from typing import Any, Callable

import pytest
from async_support import Runner, run  # noqa: F401  (run is a fixture)
from redis_raw import raw

from redis_cache import RedisCache, SyncRedisCache
from redis_cache.cluster import SyncRedisClusterCache
from redis_cache.testing import RedisServer

NS = "st"
TTL, STALE = 60, 300


async def call(fn: Callable[..., Any], *args: Any) -> Any:
    result = fn(*args)
    return await result if inspect.isawaitable(result) else result


def expire_now(redis: RedisServer, key: str, past_expiry: float) -> None:
    """Leaves the entry `past_expiry` seconds past its logical expiry."""
    assert raw(redis, "PEXPIRE", key, int((STALE - past_expiry) * 1000)) == 1


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def run_flavor(kind: str, redis: RedisServer, body: Callable[[Any, bool], Any]) -> None:
    async def main() -> None:
        if kind == "sync":
            with SyncRedisCache(port=redis.port, namespace=NS) as cache:
                await body(cache, False)
        else:
            async with RedisCache(port=redis.port, namespace=NS) as cache:
                await body(cache, True)

    Runner("asyncio")(main())


def make(cache: Any, is_async: bool, impl: Callable[[int], Any], **options: Any) -> Any:
    if is_async:
        async def fn(x: int) -> Any:
            return impl(x)
    else:
        def fn(x: int) -> Any:
            return impl(x)
    fn.__qualname__ = f"stale_{impl.__name__}_{'a' if is_async else 's'}"
    return cache.cached(ttl=TTL, key="f:{x}", stale_if_error=STALE, **options)(fn)


def test_stale_value_served_when_recomputing_raises(kind: str, redis: RedisServer,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    async def body(cache: Any, is_async: bool) -> None:
        state = {"fail": False, "n": 0}

        def impl(x: int) -> str:
            if state["fail"]:
                raise RuntimeError("database down")
            state["n"] += 1
            return f"v{state['n']}"

        fn = make(cache, is_async, impl)
        fn.stats.stale_served = 0
        assert await call(fn, 1) == "v1"
        # Stored for ttl + stale window in Redis, as a plain value any get reads.
        assert (TTL + STALE - 1) * 1000 < raw(redis, "PTTL", f"{NS}:f:1") <= (TTL + STALE) * 1000
        assert raw(redis, "TYPE", f"{NS}:f:1") == "string"
        got = cache.get("f:1")
        assert (await got if is_async else got) == "v1"
        assert await call(fn, 1) == "v1"  # fresh hit
        expire_now(redis, f"{NS}:f:1", past_expiry=10)
        state["fail"] = True
        with caplog.at_level(logging.WARNING, logger="redis_cache"):
            assert await call(fn, 1) == "v1"
        assert fn.stats.stale_served == 1
        assert fn.stats.as_dict()["stale_served"] == 1
        assert "serving its last value" in caplog.text
        # Recomputing succeeds again: the new value replaces the stale one.
        state["fail"] = False
        assert await call(fn, 1) == "v2"
        assert await call(fn, 1) == "v2"
        assert fn.stats.stale_served == 1

    run_flavor(kind, redis, body)


def test_nothing_stale_once_the_window_is_over(kind: str, redis: RedisServer) -> None:
    async def body(cache: Any, is_async: bool) -> None:
        def impl(x: int) -> str:
            raise RuntimeError("always down")

        ok = make(cache, is_async, lambda x: "v")
        failing = make(cache, is_async, impl)
        assert await call(ok, 2) == "v"  # same key template as failing
        raw(redis, "DEL", f"{NS}:f:2")  # the window ran out: Redis dropped it
        with pytest.raises(RuntimeError, match="always down"):
            await call(failing, 2)

    run_flavor(kind, redis, body)


def test_a_fresh_entry_never_calls_the_function(kind: str, redis: RedisServer) -> None:
    async def body(cache: Any, is_async: bool) -> None:
        calls: list[int] = []

        def impl(x: int) -> int:
            calls.append(x)
            return x

        fn = make(cache, is_async, impl)
        for _ in range(3):
            assert await call(fn, 3) == 3
        assert calls == [3]

    run_flavor(kind, redis, body)


def test_an_invalidated_entry_is_never_served_stale(kind: str, redis: RedisServer) -> None:
    async def body(cache: Any, is_async: bool) -> None:
        state = {"fail": False}

        def impl(x: int) -> str:
            if state["fail"]:
                raise RuntimeError("down")
            return "v"

        fn = make(cache, is_async, impl, tags=["x:{x}"])
        assert await call(fn, 4) == "v"
        expire_now(redis, f"{NS}:f:4", past_expiry=1)
        invalidated = cache.invalidate_tags("x:4")
        if is_async:
            await invalidated
        state["fail"] = True
        with pytest.raises(RuntimeError, match="down"):
            await call(fn, 4)

    run_flavor(kind, redis, body)


def test_early_refresh_counts_from_the_logical_expiry(redis: RedisServer) -> None:
    async def main() -> None:
        async with RedisCache(port=redis.port, namespace=NS) as cache:
            calls: list[int] = []
            refreshed = asyncio.Event()

            @cache.cached(ttl=TTL, key="er:{x}", stale_if_error=STALE, early_refresh=1e9)
            async def fn(x: int) -> int:
                calls.append(x)
                if len(calls) > 1:
                    refreshed.set()
                return len(calls)

            assert await fn(1) == 1
            # 50 ms of freshness left (of the PTTL, STALE s are the stale window).
            raw(redis, "PEXPIRE", f"{NS}:er:1", STALE * 1000 + 50)
            assert await fn(1) == 1  # a hit, with a refresh started behind it
            await asyncio.wait_for(refreshed.wait(), 10)

    Runner("asyncio")(main())


def test_bad_stale_if_error(redis: RedisServer) -> None:
    with SyncRedisCache(port=redis.port, namespace=NS) as cache:
        for bad in (-1, "10", float("nan"), float("inf")):
            with pytest.raises(ValueError, match="stale_if_error must be a number of seconds"):
                cache.cached(ttl=10, stale_if_error=bad)


def test_stale_on_a_cluster(healthy_cluster: Any) -> None:
    with SyncRedisClusterCache(list(healthy_cluster.seed_addresses), namespace=NS) as cache:
        state = {"fail": False}

        @cache.cached(ttl=TTL, key="c:{x}", stale_if_error=STALE)
        def fn(x: int) -> str:
            if state["fail"]:
                raise RuntimeError("down")
            return f"value {x}"

        values = [fn(x) for x in range(8)]
        for x in range(8):
            cache.execute_command("PEXPIRE", f"{NS}:c:{x}", (STALE - 1) * 1000)
        state["fail"] = True
        assert [fn(x) for x in range(8)] == values
