"""RedisCache.dedicated(): connections of one's own for stateful commands
(transactions, blocking pops), from a FIFO pool bounded by max_connections."""

from __future__ import annotations

import asyncio

import pytest
from async_support import Runner, run  # noqa: F401  (fixture)

from redis_cache import PoolTimeout, RedisCache
from redis_cache.testing import RedisServer


def make(redis: RedisServer, **options: object) -> RedisCache:
    return RedisCache(host="127.0.0.1", port=redis.port, **options)  # type: ignore[arg-type]


def test_a_transaction_runs_on_its_own_connection(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        async with make(redis) as cache:
            await cache.set("n", 1)
            shared_id = await cache.execute_command("CLIENT", "ID")
            async with cache.dedicated() as conn:
                assert await conn.execute_command("CLIENT", "ID") != shared_id
                assert await conn.execute_command("WATCH", "n") == "OK"
                assert await conn.execute_command("MULTI") == "OK"
                assert await conn.execute_command("INCR", "n") == "QUEUED"
                # The shared connection is not inside the transaction.
                assert await cache.get("n") == 1
                assert await conn.execute_command("EXEC") == [2]
            assert await cache.get("n") == 2

    run(main())


def test_a_watched_key_changed_elsewhere_aborts_the_transaction(
    run: Runner, redis: RedisServer
) -> None:
    async def main() -> None:
        async with make(redis) as cache:
            await cache.set("n", 1)
            async with cache.dedicated() as conn:
                await conn.execute_command("WATCH", "n")
                await cache.set("n", 10)  # another client changes it
                await conn.execute_command("MULTI")
                await conn.execute_command("INCR", "n")
                assert await conn.execute_command("EXEC") is None
            assert await cache.get("n") == 10

    run(main())


def test_a_blocking_pop_may_outlast_the_socket_timeout(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        async with make(redis, socket_timeout=0.2) as cache:
            async def pop() -> object:
                async with cache.dedicated() as conn:
                    return await conn.execute_command("BLPOP", "q", 0)

            popping = asyncio.ensure_future(pop())
            # The pop is queued on the server once BLPOP shows in CLIENT LIST.
            deadline = asyncio.get_running_loop().time() + 10
            while b"cmd=blpop" not in await cache.execute_command("CLIENT", "LIST"):
                assert asyncio.get_running_loop().time() < deadline, "BLPOP never started"
                await asyncio.sleep(0)
            # Wait past socket_timeout (the duration is what is tested, not a
            # synchronization): a shared connection would have failed by now.
            await asyncio.sleep(0.5)
            assert not popping.done()
            await cache.execute_command("RPUSH", "q", "x")
            assert await popping == [b"q", b"x"]

    run(main())


def test_callers_beyond_max_connections_wait_then_time_out(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        async with make(redis, max_connections=1, pool_timeout=0.2) as cache:
            async with cache.dedicated():
                with pytest.raises(PoolTimeout, match="dedicated connections"):
                    async with cache.dedicated():
                        pass
            # Given back: the next caller gets it.
            async with cache.dedicated() as conn:
                assert await conn.execute_command("PING") == "PONG"

    run(main())


def test_waiters_are_served_in_order(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        async with make(redis, max_connections=1, pool_timeout=5) as cache:
            order: list[int] = []
            release = asyncio.Event()

            async def user(n: int) -> None:
                async with cache.dedicated() as conn:
                    order.append(n)
                    if n == 0:
                        await release.wait()
                    await conn.execute_command("PING")

            tasks = [asyncio.ensure_future(user(n)) for n in range(5)]
            for _ in range(10):
                await asyncio.sleep(0)  # let every task queue up
            release.set()
            await asyncio.gather(*tasks)
            assert order == [0, 1, 2, 3, 4]

    run(main())


def test_a_connection_left_by_an_exception_is_not_reused(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        async with make(redis, max_connections=1) as cache:
            with pytest.raises(RuntimeError):
                async with cache.dedicated() as conn:
                    await conn.execute_command("MULTI")
                    first = conn
                    raise RuntimeError("left inside MULTI")
            assert first.closed
            async with cache.dedicated() as conn:
                assert conn is not first
                # A fresh connection: not inside the abandoned MULTI.
                assert await conn.execute_command("PING") == "PONG"

    run(main())


@pytest.mark.parametrize(
    "command",
    [("MULTI",), ("WATCH", "k"), ("SUBSCRIBE", "ch"), (b"monitor",), ("SELECT", 1), ("BLPOP", "q", 0),
     ("XREAD", "BLOCK", 0, "STREAMS", "s", "$")],
)
def test_shared_connections_refuse_stateful_and_blocking_commands(
    run: Runner, redis: RedisServer, command: tuple[object, ...]
) -> None:
    async def main() -> None:
        async with make(redis) as cache:
            with pytest.raises(ValueError, match="dedicated"):
                cache.execute_command(*command)
            assert await cache.ping() is True  # the shared connection is untouched

    run(main())


def test_the_sync_cache_refuses_stateful_but_allows_blocking_commands(redis: RedisServer) -> None:
    from redis_cache import SyncRedisCache

    with SyncRedisCache(host="127.0.0.1", port=redis.port) as cache:
        with pytest.raises(ValueError, match="one command at a time"):
            cache.execute_command("MULTI")
        cache.execute_command("RPUSH", "q", "x")
        # A blocking pop holds its pooled connection for the call only: allowed.
        assert cache.execute_command("BLPOP", "q", 1) == [b"q", b"x"]
