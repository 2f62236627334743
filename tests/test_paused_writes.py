"""A write paused by CLIENT PAUSE WRITE (what a failover does to the old
primary) must not hold up the reads issued after it on the shared
multiplexed connection: once the write has gone unanswered for
stall_timeout, new commands take a fresh connection."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from async_support import Runner, run  # noqa: F401

from redis_cache import ConfigurationError, ConnectionError, RedisCache, SyncRedisCache
from redis_cache.testing import RedisServer


def test_reads_are_not_held_hostage_by_a_paused_write(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        async with RedisCache(port=redis.port, socket_timeout=0.5, stall_timeout=0.05) as cache:
            assert await cache.set("k", "v") is True
            redis.raw_command("CLIENT", "PAUSE", "1500", "WRITE")
            try:
                write = asyncio.ensure_future(cache.set("w", 1))
                await asyncio.sleep(0.1)  # the write has now waited past stall_timeout
                started = time.monotonic()
                reads = await asyncio.gather(*(cache.get("k") for _ in range(20)))
                took = time.monotonic() - started
                assert reads == ["v"] * 20
                assert took < 0.5  # answered, not timed out behind the write
                assert not write.done()
            finally:
                redis.raw_command("CLIENT", "UNPAUSE")
            assert await asyncio.wait_for(write, 5) is True
            assert await cache.get("w") == 1
            # The held-up connection closed once its write was answered.
            for _ in range(100):
                if len([m for m in cache._multiplexers if not m.closed]) == 1:
                    break
                await asyncio.sleep(0.01)
            assert len([m for m in cache._multiplexers if not m.closed]) == 1

    run(main())


def test_without_rerouting_the_reads_wait_behind_the_write(run: Runner, redis: RedisServer) -> None:
    """stall_timeout=None keeps one connection: the reads then time out
    behind the paused write, which is what rerouting prevents."""

    async def main() -> None:
        async with RedisCache(port=redis.port, socket_timeout=0.5, stall_timeout=None) as cache:
            assert await cache.set("k", "v") is True
            redis.raw_command("CLIENT", "PAUSE", "1500", "WRITE")
            try:
                write = asyncio.ensure_future(cache.set("w", 1))
                await asyncio.sleep(0.1)
                reads = await asyncio.gather(*(cache.get("k") for _ in range(5)), return_exceptions=True)
                assert all(isinstance(r, Exception) for r in reads), reads
                await asyncio.gather(write, return_exceptions=True)
            finally:
                redis.raw_command("CLIENT", "UNPAUSE")

    run(main())


def test_a_stuck_server_does_not_multiply_connections(run: Runner, redis_server_factory: Any) -> None:
    """A server that answers nothing (SIGSTOP) stalls every connection: one
    extra connection is tried, not one per stall_timeout."""
    server = redis_server_factory()

    async def main() -> None:
        async with RedisCache(port=server.port, socket_timeout=1, stall_timeout=0.02) as cache:
            assert await cache.ping() is True
            server.pause()
            try:
                pending, seen = [], set()
                for _ in range(20):
                    pending.append(asyncio.ensure_future(cache.get("k")))
                    seen.add(id(cache._multiplexers[0]))
                    await asyncio.sleep(0.03)
                await asyncio.gather(*pending, return_exceptions=True)
            finally:
                server.resume()
            assert await cache.ping() is True
            assert len(seen) <= 2, len(seen)

    run(main())
    server.close()


def test_stall_timeout_must_be_positive() -> None:
    with pytest.raises(ConfigurationError, match="stall_timeout"):
        RedisCache(stall_timeout=0)


def test_the_blocking_client_is_unaffected(redis: RedisServer) -> None:
    with SyncRedisCache(port=redis.port, socket_timeout=0.5) as cache:
        assert cache.set("k", "v") is True
        redis.raw_command("CLIENT", "PAUSE", "1000", "WRITE")
        try:
            assert cache.get("k") == "v"
        finally:
            redis.raw_command("CLIENT", "UNPAUSE")


def test_close_closes_the_held_up_connection_too(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        cache = RedisCache(port=redis.port, socket_timeout=5, stall_timeout=0.05)
        assert await cache.set("k", "v") is True
        redis.raw_command("CLIENT", "PAUSE", "3000", "WRITE")
        try:
            write = asyncio.ensure_future(cache.set("w", 1))
            await asyncio.sleep(0.1)
            assert await cache.get("k") == "v"  # on a second connection
            held = [m for m in cache._retired_multiplexers if not m.closed]
            assert len(held) == 1
            await cache.close()
            assert held[0].closed
            with pytest.raises(ConnectionError, match="closed"):
                await write
        finally:
            redis.raw_command("CLIENT", "UNPAUSE")

    run(main())
