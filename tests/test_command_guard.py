"""execute_command refuses commands that would change the reply stream or the
state of a shared or pooled connection (issue 9, B).

Such commands belong on a connection of one's own (``RedisCache.dedicated()``):
``CLIENT REPLY OFF`` on the multiplexed connection would shift every later
reply to the wrong caller, ``SUBSCRIBE`` would turn it into a push stream,
``SELECT`` would move the next borrower to another database. On the async
cache blocking commands are refused too (they would stall everyone sharing
the connection); the sync pool lends a connection to one call at a time, so
it allows them.

Runs against a real redis-server. "Nothing was sent" is checked on the
server: the cache's connection carries a client name, and ``CLIENT LIST``
shows the last command it ran (and that it still exists, with that name).
Every cache has a short ``socket_timeout``, so a command that is sent and
never answered (``CLIENT REPLY OFF`` on code without the guard) fails in
half a second instead of hanging.
"""

from __future__ import annotations

from typing import Any

import pytest
from async_support import Runner, run  # noqa: F401  (fixture)

from redis_cache import RedisCache, ResponseError, SyncRedisCache
from redis_cache.testing import RedisServer

NAME = "guarded"
TIMEOUT = 0.5

#: Commands that change the reply stream or the connection's state.
STATEFUL: list[tuple[str, ...]] = [
    ("CLIENT", "REPLY", "ON"),
    ("CLIENT", "REPLY", "OFF"),
    ("CLIENT", "REPLY", "SKIP"),
    ("CLIENT", "TRACKING", "ON"),
    ("CLIENT", "CACHING", "YES"),
    ("CLIENT", "SETNAME", "x"),
    ("CLIENT", "NO-EVICT", "ON"),
    ("CLIENT", "NO-TOUCH", "ON"),
    ("HELLO", "3"),
    ("RESET",),
    ("MONITOR",),
    ("SUBSCRIBE", "ch"),
    ("PSUBSCRIBE", "ch*"),
    ("SSUBSCRIBE", "ch"),
    ("UNSUBSCRIBE",),
    ("PUNSUBSCRIBE",),
    ("SUNSUBSCRIBE",),
    ("READONLY",),
    ("READWRITE",),
    ("ASKING",),
    ("MULTI",),
    ("EXEC",),
    ("DISCARD",),
    ("WATCH", "k"),
    ("UNWATCH",),
    ("SELECT", "1"),
    ("AUTH", "secret"),
    ("QUIT",),
    ("SYNC",),
    ("PSYNC", "?", "-1"),
    ("REPLCONF", "listening-port", "6380"),
]

#: Commands that block the connection until something happens; each returns
#: at once here (10 ms timeouts, nothing to wait for).
BLOCKING: list[tuple[str, ...]] = [
    ("BLPOP", "q", "0.01"),
    ("BRPOP", "q", "0.01"),
    ("BLMOVE", "q", "q2", "LEFT", "RIGHT", "0.01"),
    ("BRPOPLPUSH", "q", "q2", "0.01"),
    ("BZPOPMIN", "z", "0.01"),
    ("BZPOPMAX", "z", "0.01"),
    ("BLMPOP", "0.01", "1", "q", "LEFT"),
    ("BZMPOP", "0.01", "1", "z", "MIN"),
    ("WAIT", "0", "10"),
    ("WAITAOF", "0", "0", "10"),
    ("XREAD", "BLOCK", "10", "STREAMS", "s", "$"),
    ("XREADGROUP", "GROUP", "g", "c", "BLOCK", "10", "STREAMS", "s", ">"),
]

#: CLIENT subcommands that only read: still allowed everywhere.
CLIENT_READS: list[tuple[str, ...]] = [
    ("CLIENT", "LIST"),
    ("CLIENT", "ID"),
    ("CLIENT", "GETNAME"),
    ("CLIENT", "INFO"),
]


def spelled(commands: list[tuple[str, ...]]) -> list[Any]:
    """Each command as written (upper-case str) and as lower-case bytes."""
    params = []
    for command in commands:
        label = " ".join(command)
        params.append(pytest.param(command, id=label))
        lowered = tuple(arg.lower().encode() for arg in command)
        params.append(pytest.param(lowered, id=f"b'{label.lower()}'"))
    return params


def ids(commands: list[tuple[str, ...]]) -> list[str]:
    return [" ".join(command) for command in commands]


def last_command(server: RedisServer) -> str | None:
    """The last command of the connection named NAME, from CLIENT LIST
    (None when no connection has that name)."""
    listing = server.raw_command("CLIENT", "LIST")
    assert listing.startswith(b"$"), listing
    for line in listing.split(b"\r\n", 1)[1].decode().splitlines():
        fields = dict(field.split("=", 1) for field in line.split(" ") if "=" in field)
        if fields.get("name") == NAME:
            return fields["cmd"]
    return None


def sync_cache(server: RedisServer) -> SyncRedisCache:
    return SyncRedisCache(
        host="127.0.0.1",
        port=server.port,
        client_name=NAME,
        max_connections=1,
        socket_timeout=TIMEOUT,
        pool_timeout=TIMEOUT,
    )


def async_cache(server: RedisServer) -> RedisCache:
    return RedisCache(
        host="127.0.0.1",
        port=server.port,
        client_name=NAME,
        socket_timeout=TIMEOUT,
        pool_timeout=TIMEOUT,
    )


# ---------------------------------------------------------------------------
# refused on the shared and pooled connections
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", spelled(STATEFUL))
def test_sync_cache_refuses_commands_that_change_the_connection(
    redis: RedisServer, command: tuple[Any, ...]
) -> None:
    with sync_cache(redis) as cache:
        assert cache.set("k", "v") is True
        assert last_command(redis) == "set"
        with pytest.raises(ValueError, match=r"dedicated\(\)"):
            cache.execute_command(*command)
        assert last_command(redis) == "set", "the refused command reached the server"
        # Same connection, same state: replies still come, from database 0.
        assert cache.get("k") == "v"
        assert last_command(redis) == "get"


@pytest.mark.parametrize("command", spelled(STATEFUL + BLOCKING))
def test_async_cache_refuses_commands_that_change_or_block_the_connection(
    run: Runner, redis: RedisServer, command: tuple[Any, ...]
) -> None:
    async def main() -> None:
        async with async_cache(redis) as cache:
            assert await cache.set("k", "v") is True
            assert last_command(redis) == "set"
            with pytest.raises(ValueError, match=r"dedicated\(\)"):
                await cache.execute_command(*command)
            assert last_command(redis) == "set", "the refused command reached the server"
            assert await cache.get("k") == "v"
            assert last_command(redis) == "get"

    run(main())


def test_async_cache_still_answers_every_caller_after_client_reply_off_was_refused(
    run: Runner, redis: RedisServer
) -> None:
    """The case that broke the shared connection: with CLIENT REPLY OFF (or
    SKIP) sent, every later reply would go to the wrong caller or never come."""

    async def main() -> None:
        async with async_cache(redis) as cache:
            await cache.set_many({"a": 1, "b": 2, "c": 3})
            for mode in ("OFF", "SKIP"):
                with pytest.raises(ValueError, match=r"dedicated\(\)"):
                    await cache.execute_command("CLIENT", "REPLY", mode)
            assert [await cache.get(key) for key in ("a", "b", "c")] == [1, 2, 3]

    run(main())


# ---------------------------------------------------------------------------
# still allowed
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", CLIENT_READS, ids=ids(CLIENT_READS))
def test_sync_cache_allows_client_subcommands_that_only_read(
    redis: RedisServer, command: tuple[str, ...]
) -> None:
    with sync_cache(redis) as cache:
        result = cache.execute_command(*command)
        assert result is not None and not isinstance(result, ResponseError)
        assert last_command(redis) == "client|" + command[1].lower()


@pytest.mark.parametrize("command", CLIENT_READS, ids=ids(CLIENT_READS))
def test_async_cache_allows_client_subcommands_that_only_read(
    run: Runner, redis: RedisServer, command: tuple[str, ...]
) -> None:
    async def main() -> None:
        async with async_cache(redis) as cache:
            result = await cache.execute_command(*command)
            assert result is not None and not isinstance(result, ResponseError)
            assert last_command(redis) == "client|" + command[1].lower()

    run(main())


def prepare_blocking(redis: RedisServer) -> None:
    """A consumer group for XREADGROUP; everything else waits on nothing."""
    assert redis.raw_command("XGROUP", "CREATE", "s", "g", "$", "MKSTREAM") == b"+OK\r\n"


def newer_than_the_server(exc: ResponseError) -> bool:
    """WAITAOF (Redis 7.2) on an older server: refused by the server, not by us."""
    return "unknown command" in str(exc).lower()


@pytest.mark.parametrize("command", BLOCKING, ids=ids(BLOCKING))
def test_sync_cache_allows_blocking_commands(redis: RedisServer, command: tuple[str, ...]) -> None:
    """A pooled connection is lent to one call at a time: a blocking
    command stalls only its caller."""
    prepare_blocking(redis)
    with sync_cache(redis) as cache:
        try:
            cache.execute_command(*command)
        except ResponseError as exc:
            assert newer_than_the_server(exc), exc
        assert cache.ping() is True


@pytest.mark.parametrize("command", BLOCKING, ids=ids(BLOCKING))
def test_dedicated_connections_allow_blocking_commands(
    run: Runner, redis: RedisServer, command: tuple[str, ...]
) -> None:
    prepare_blocking(redis)

    async def main() -> None:
        async with async_cache(redis) as cache, cache.dedicated() as conn:
            try:
                await conn.execute_command(*command)
            except ResponseError as exc:
                assert newer_than_the_server(exc), exc
            assert await conn.execute_command("PING") == "PONG"

    run(main())


def test_dedicated_connections_allow_commands_that_change_the_connection(
    run: Runner, redis: RedisServer
) -> None:
    async def main() -> None:
        async with async_cache(redis) as cache, cache.dedicated() as conn:
            assert await conn.execute_command("CLIENT", "SETNAME", "mine") == "OK"
            assert await conn.execute_command("CLIENT", "GETNAME") == b"mine"
            assert await conn.execute_command("SELECT", "1") == "OK"

    run(main())
