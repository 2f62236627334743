"""RedisCache (asyncio) against a real, private redis-server.

Every public method, the same behaviours as SyncRedisCache, and what is
particular to the async engine: every call returns an awaitable, commands of
one loop iteration are pipelined over one connection, errors are raised when
awaited (server errors) or at call time (bad input), closing, reuse across
event loops, and the ResourceWarning of a cache dropped unclosed.

Every test runs twice, on the default asyncio loop and on uvloop (the ``run``
fixture of ``async_support``).  What the server really holds is read back
with ``redis_raw`` (raw RESP over a separate socket, not this library) or
redis-cli.  No test sleeps: TTLs are checked through PTTL ranges and the exact
commands the server executed (SLOWLOG with a zero threshold).
"""

from __future__ import annotations

import asyncio
import builtins
import gc
import inspect
import json
import pathlib
import pickle
import subprocess
import sys
import time
import types
import warnings
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Mapping
from datetime import timedelta
from typing import Any

import pytest
from async_support import (  # noqa: F401  (run is a fixture)
    LOOP_KINDS,
    Runner,
    gather_strict,
    loop_factory,
    run,
)
from conftest import ACL_PASSWORD, ACL_USER, PASSWORD
from redis_raw import dbsize, keys, pttl, raw

from redis_cache import (
    AuthenticationError,
    ConfigurationError,
    ConnectionError,
    RedisCache,
    RedisCacheError,
    ResponseError,
    SerializationError,
    SyncRedisCache,
)
from redis_cache.testing import RedisServer, free_port

CommandLog = Callable[[], list[list[bytes]]]


# ---------------------------------------------------------------------------
# fixtures and helpers
# ---------------------------------------------------------------------------


@pytest.fixture
def command_log(redis: RedisServer) -> Iterator[CommandLog]:
    """Every command the server ran since the fixture started, oldest first
    (SLOWLOG with a 0 µs threshold); the server's settings are restored after."""
    old = {
        name: raw(redis, "CONFIG", "GET", name)[1]  # type: ignore[index]
        for name in ("slowlog-log-slower-than", "slowlog-max-len")
    }
    assert raw(redis, "CONFIG", "SET", "slowlog-max-len", "10000") == "OK"
    assert raw(redis, "CONFIG", "SET", "slowlog-log-slower-than", "0") == "OK"
    assert raw(redis, "SLOWLOG", "RESET") == "OK"

    def commands() -> list[list[bytes]]:
        entries = raw(redis, "SLOWLOG", "GET", "-1")
        assert isinstance(entries, list)
        return [
            entry[3]
            for entry in reversed(entries)
            if entry[3][0].upper() not in (b"SLOWLOG", b"CONFIG")
        ]

    try:
        yield commands
    finally:
        for name, value in old.items():
            redis.raw_command("CONFIG", "SET", name, value)  # type: ignore[arg-type]
        redis.raw_command("SLOWLOG", "RESET")


@pytest.fixture
def pw_server(password_server: RedisServer) -> RedisServer:
    password_server.flushall()
    return password_server


@pytest.fixture
def acl(acl_server: RedisServer) -> RedisServer:
    acl_server.flushall()
    return acl_server


def dead_port_cache(**options: Any) -> RedisCache:
    """A cache pointed at a port nobody listens on: any round trip fails (at
    once: connect_wait=0, unless the test says otherwise)."""
    options.setdefault("connect_wait", 0)
    return RedisCache(host="127.0.0.1", port=free_port(), **options)


def clients_named(server: RedisServer, name: str) -> int:
    listing = raw(server, "CLIENT", "LIST")
    assert isinstance(listing, bytes)
    return listing.count(f" name={name} ".encode())


async def wait_for_clients(server: RedisServer, name: str, count: int) -> None:
    """The server notices a closed socket asynchronously: poll CLIENT LIST."""
    deadline = time.monotonic() + 10
    while clients_named(server, name) != count:
        assert time.monotonic() < deadline, f"{clients_named(server, name)} clients named {name}"
        await asyncio.sleep(0.01)


async def client_id(cache: RedisCache) -> int:
    """The server's id for the connection the next command uses."""
    value = await cache.execute_command("CLIENT", "ID")
    assert isinstance(value, int)
    return value


# ---------------------------------------------------------------------------
# the shape of the API
# ---------------------------------------------------------------------------


def test_every_method_returns_an_awaitable(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        c = RedisCache(port=redis.port)
        futures = {
            "set": c.set("k", 1),
            "get": c.get("k"),
            "exists": c.exists("k"),
            "expire": c.expire("k", 100),
            "ttl": c.ttl("k"),
            "incr": c.incr("n"),
            "set_many": c.set_many({"a": 1}),
            "get_many": c.get_many(["a", "k"]),
            "delete_many": c.delete_many(["a"]),
            "delete": c.delete("k"),
            "ping": c.ping(),
            "execute_command": c.execute_command("ECHO", "x"),
        }
        # The C methods hand back real futures (the command is already queued),
        # the Python ones coroutines.
        for name, fut in futures.items():
            assert asyncio.isfuture(fut), name
        results = dict(zip(futures, await asyncio.gather(*futures.values())))
        assert results == {
            "set": True,
            "get": 1,
            "exists": True,
            "expire": True,
            "ttl": 100,
            "incr": 1,
            "set_many": True,
            "get_many": {"a": 1, "k": 1},
            "delete_many": 1,
            "delete": True,
            "ping": True,
            "execute_command": b"x",
        }
        for name, call in {
            "connect": c.connect,
            "clear_pattern": lambda: c.clear_pattern("*"),
            "close": c.close,
        }.items():
            aw = call()
            assert inspect.isawaitable(aw), name
            await aw
        assert c.closed

    run(main())


def test_commands_leave_in_call_order_even_without_await(run: Runner, redis: RedisServer) -> None:
    """One connection, one FIFO: a fire-and-forget set is seen by the next get."""

    async def main() -> None:
        async with RedisCache(port=redis.port) as c:
            for i in range(50):
                c.set("k", i)  # not awaited: the command is queued anyway
                assert await c.get("k") == i
            pending = [c.incr("n") for _ in range(100)]
            assert await c.get("n") == 100  # all 100 INCRs went first
            assert sorted(await asyncio.gather(*pending)) == list(range(1, 101))

    run(main())


# ---------------------------------------------------------------------------
# get / set
# ---------------------------------------------------------------------------


def test_get_missing_key_returns_default(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        async with RedisCache(port=redis.port) as c:
            assert await c.get("nope") is None
            assert await c.get("nope", "dflt") == "dflt"
            assert await c.get("nope", default=0) == 0
            marker = object()
            assert await c.get(key="nope", default=marker) is marker

    run(main())


def test_stored_none_is_not_a_missing_key(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        async with RedisCache(port=redis.port) as c:
            assert await c.set("k", None) is True
            assert raw(redis, "GET", "k") == b"null"
            assert await c.get("k", "dflt") is None
            assert await c.exists("k") is True
            assert await c.get_many(["k", "missing"]) == {"k": None}

    run(main())


@pytest.mark.parametrize("value", [0, 0.0, False, "", [], {}], ids=repr)
def test_falsy_values_are_found(run: Runner, redis: RedisServer, value: object) -> None:
    async def main() -> None:
        async with RedisCache(port=redis.port) as c:
            await c.set("k", value)
            got = await c.get("k", "dflt")
            assert got == value and type(got) is type(value)

    run(main())


def test_set_returns_true_and_overwrites(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        async with RedisCache(port=redis.port) as c:
            assert await c.set("k", "first") is True
            assert await c.set("k", {"second": 2}) is True
            assert await c.get("k") == {"second": 2}

    run(main())
    assert raw(redis, "GET", "k") == b'{"second":2}'
    assert dbsize(redis) == 1


def test_set_accepts_keywords_and_bytes_keys(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        async with RedisCache(port=redis.port) as c:
            assert await c.set(key=b"bk", value=[1], ttl=30) is True
            assert await c.get("bk") == [1]
            assert await c.get(b"bk") == [1]

    run(main())
    assert 29_000 < pttl(redis, "bk") <= 30_000


def test_set_without_ttl_never_expires(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        async with RedisCache(port=redis.port) as c:
            await c.set("k", 1)
            await c.set("n", 2, ttl=None)
            assert await c.ttl("k") == -1

    run(main())
    assert pttl(redis, "k") == -1
    assert pttl(redis, "n") == -1


@pytest.mark.parametrize(
    ("ttl", "sent", "max_ms"),
    [
        (10, [b"EX", b"10"], 10_000),
        (1.5, [b"PX", b"1500"], 1_500),
        (0.05, [b"PX", b"50"], 50),
        (2.0, [b"EX", b"2"], 2_000),
        (0.0001, [b"PX", b"1"], 1),  # below a millisecond rounds up, never to 0
        (timedelta(seconds=3), [b"EX", b"3"], 3_000),
        (timedelta(milliseconds=250), [b"PX", b"250"], 250),
        (timedelta(minutes=2), [b"EX", b"120"], 120_000),
    ],
    ids=repr,
)
def test_set_ttl_int_float_timedelta(
    run: Runner,
    redis: RedisServer,
    command_log: CommandLog,
    ttl: object,
    sent: list[bytes],
    max_ms: int,
) -> None:
    async def main() -> None:
        async with RedisCache(port=redis.port, namespace="app") as c:
            assert await c.set("k", "v", ttl=ttl) is True
            remaining = pttl(redis, "app:k")
            if remaining == -2:  # a TTL of a few ms may be over already
                assert max_ms < 1000
            else:
                assert max(0, max_ms - 1000) <= remaining <= max_ms

    run(main())
    assert [b"SET", b"app:k", b'"v"', *sent] in command_log()


def test_default_ttl_applies_when_ttl_is_none(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        async with RedisCache(port=redis.port, default_ttl=60) as c:
            assert c.default_ttl == 60
            await c.set("a", 1)
            await c.set("b", 1, ttl=None)
            await c.set("c", 1, ttl=5)  # an explicit ttl wins
            await c.set_many({"d": 1, "e": 2})
            await c.set_many({"f": 1}, ttl=100)
        async with RedisCache(port=redis.port, default_ttl=timedelta(seconds=40)) as c:
            await c.set("td", 1)
        async with RedisCache(port=redis.port, default_ttl=30.5) as c:
            await c.set("fl", 1)

    run(main())
    for key in ("a", "b", "d", "e"):
        assert 59_000 < pttl(redis, key) <= 60_000, key
    assert 4_000 < pttl(redis, "c") <= 5_000
    assert 99_000 < pttl(redis, "f") <= 100_000
    assert 39_000 < pttl(redis, "td") <= 40_000
    assert 29_500 < pttl(redis, "fl") <= 30_500


# ---------------------------------------------------------------------------
# delete / exists / expire / ttl
# ---------------------------------------------------------------------------


def test_delete_reports_whether_the_key_existed(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        async with RedisCache(port=redis.port) as c:
            await c.set("k", 1)
            await c.set("other", 2)
            assert await c.delete("k") is True
            assert await c.delete("k") is False
            assert await c.delete("never") is False

    run(main())
    assert keys(redis) == [b"other"]


def test_exists(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        async with RedisCache(port=redis.port) as c:
            assert await c.exists("k") is False
            await c.set("k", None)
            assert await c.exists("k") is True
            await c.delete("k")
            assert await c.exists("k") is False

    run(main())


def test_expire_and_ttl(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        async with RedisCache(port=redis.port) as c:
            assert await c.ttl("missing") == -2
            await c.set("k", 1)
            assert await c.ttl("k") == -1
            assert await c.expire("k", 100) is True
            assert 99_000 < pttl(redis, "k") <= 100_000
            assert await c.expire("k", 2.5) is True
            assert 1_500 < pttl(redis, "k") <= 2_500
            assert await c.expire("k", timedelta(seconds=7)) is True
            assert 6_000 < pttl(redis, "k") <= 7_000
            assert await c.expire(key="k", ttl=30) is True
            ttl = await c.ttl("k")
            assert 29 <= ttl <= 30 and type(ttl) is int
            assert await c.expire("missing", 10) is False

    run(main())
    assert keys(redis) == [b"k"]


# ---------------------------------------------------------------------------
# get_many / set_many / delete_many
# ---------------------------------------------------------------------------


def test_get_many_returns_only_found_keys(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        async with RedisCache(port=redis.port) as c:
            await c.set("a", 1)
            await c.set("b", None)
            await c.set("c", {"x": [1]})
            got = await c.get_many(["a", "missing", "b", "c"])
            assert got == {"a": 1, "b": None, "c": {"x": [1]}}
            assert await c.get_many(["missing", "also-missing"]) == {}
            assert await c.get_many(("a", "b")) == {"a": 1, "b": None}
            assert await c.get_many(k for k in ["a", "c"]) == {"a": 1, "c": {"x": [1]}}
            assert await c.get_many(["a", "a", "c", "a"]) == {"a": 1, "c": {"x": [1]}}
            # Keys come back exactly as given: bytes stay bytes.
            assert await c.get_many([b"a", "c"]) == {b"a": 1, "c": {"x": [1]}}

    run(main())


def test_empty_batches_need_no_server(run: Runner) -> None:
    async def main() -> None:
        async with dead_port_cache() as c:  # any round trip would fail
            assert await c.get_many([]) == {}
            assert await c.get_many(()) == {}
            assert await c.delete_many([]) == 0
            assert await c.set_many({}) is True
            with pytest.raises(ConnectionError):
                await c.ping()  # the proof that the port is dead

    run(main())


def test_get_many_in_a_namespace(run: Runner, redis: RedisServer) -> None:
    redis.raw_command("SET", "b", "2")  # outside the namespace

    async def main() -> None:
        async with RedisCache(port=redis.port, namespace="app") as c:
            await c.set("a", 1)
            assert await c.get_many(["a", "b"]) == {"a": 1}

    run(main())


class FrozenMapping(Mapping[str, object]):
    """A Mapping that is not a dict."""

    def __init__(self, data: dict[str, object]) -> None:
        self._data = dict(data)

    def __getitem__(self, key: str) -> object:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


@pytest.mark.parametrize(
    "make",
    [dict, FrozenMapping, types.MappingProxyType, OrderedDict],
    ids=["dict", "Mapping", "MappingProxyType", "OrderedDict"],
)
def test_set_many(
    run: Runner, redis: RedisServer, make: Callable[[dict[str, object]], Mapping[str, object]]
) -> None:
    items: dict[str, object] = {"a": 1, "b": "two", "c": None, "d": [1, {"e": 2.5}]}

    async def main() -> None:
        async with RedisCache(port=redis.port, namespace="app") as c:
            assert await c.set_many(make(items)) is True
            assert await c.get_many(list(items)) == items

    run(main())
    assert keys(redis) == [b"app:a", b"app:b", b"app:c", b"app:d"]
    assert all(pttl(redis, f"app:{k}") == -1 for k in items)


@pytest.mark.parametrize(
    ("ttl", "sent", "max_ms"),
    [
        (50, [b"EX", b"50"], 50_000),
        (0.75, [b"PX", b"750"], 750),
        (timedelta(seconds=9), [b"EX", b"9"], 9_000),
    ],
    ids=repr,
)
def test_set_many_applies_the_ttl_to_every_key(
    run: Runner,
    redis: RedisServer,
    command_log: CommandLog,
    ttl: object,
    sent: list[bytes],
    max_ms: int,
) -> None:
    names = [f"k{i}" for i in range(20)]

    async def main() -> None:
        async with RedisCache(port=redis.port, namespace="app") as c:
            assert await c.set_many({name: i for i, name in enumerate(names)}, ttl=ttl) is True
            for name in names:
                remaining = pttl(redis, f"app:{name}")
                if remaining == -2:  # expired already: only for a sub-second TTL
                    assert max_ms < 1000, name
                else:
                    assert max(0, max_ms - 1000) <= remaining <= max_ms, name

    run(main())
    sets = [cmd for cmd in command_log() if cmd[0] == b"SET"]
    assert sets == [
        [b"SET", f"app:{n}".encode(), str(i).encode(), *sent] for i, n in enumerate(names)
    ]


def test_delete_many_counts_existing_keys(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        async with RedisCache(port=redis.port) as c:
            await c.set_many({"a": 1, "b": 2, "c": 3, "keep": 4})
            assert await c.delete_many(["a", "b", "missing"]) == 2
            assert await c.delete_many(("c", "c")) == 1  # a duplicate is one key
            assert await c.delete_many(["a"]) == 0

    run(main())
    assert keys(redis) == [b"keep"]


def test_delete_many_in_a_namespace(run: Runner, redis: RedisServer) -> None:
    redis.raw_command("SET", "a", "1")

    async def main() -> None:
        async with RedisCache(port=redis.port, namespace="app") as c:
            await c.set("a", 1)
            assert await c.delete_many(["a"]) == 1

    run(main())
    assert keys(redis) == [b"a"]


# ---------------------------------------------------------------------------
# clear_pattern
# ---------------------------------------------------------------------------


def test_clear_pattern_stays_inside_the_namespace(run: Runner, redis: RedisServer) -> None:
    for key in ("app:a1", "app:a2", "app:b1", "other:a1", "a1", "app", "apple:a1", "xapp:a1"):
        redis.raw_command("SET", key, "1")

    async def main() -> None:
        async with RedisCache(port=redis.port, namespace="app") as c:
            assert await c.clear_pattern("a*") == 2
            assert await c.clear_pattern("a*") == 0
            assert await c.exists("b1") is True
            assert await c.clear_pattern(b"*") == 1

    run(main())
    assert keys(redis) == [b"a1", b"app", b"apple:a1", b"other:a1", b"xapp:a1"]


def test_clear_pattern_without_namespace(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        async with RedisCache(port=redis.port) as c:
            await c.set_many({"user:1": 1, "user:2": 2, "session:1": 3})
            assert await c.clear_pattern("user:*") == 2

    run(main())
    assert keys(redis) == [b"session:1"]


@pytest.mark.parametrize(
    ("namespace", "mine", "others"),
    [
        ("a*", [b"a*:x", b"a*:y"], [b"ab:x", b"a:x", b"a*b:x", b"aa*:x"]),
        ("q?", [b"q?:x"], [b"qq:x", b"q:x"]),
        ("[ab]", [b"[ab]:x"], [b"a:x", b"b:x"]),
        ("back\\slash", [b"back\\slash:x"], [b"backslash:x"]),
    ],
    ids=["star", "question", "brackets", "backslash"],
)
def test_clear_pattern_escapes_glob_characters_of_the_namespace(
    run: Runner, redis: RedisServer, namespace: str, mine: list[bytes], others: list[bytes]
) -> None:
    for key in mine + others:
        redis.raw_command("SET", key, "1")

    async def main() -> None:
        async with RedisCache(port=redis.port, namespace=namespace) as c:
            assert await c.clear_pattern("*") == len(mine)

    run(main())
    assert keys(redis) == sorted(others)


def test_clear_pattern_over_several_scan_batches(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        async with RedisCache(port=redis.port, namespace="big") as c, RedisCache(
            port=redis.port, namespace="keep"
        ) as other:
            for start in range(0, 5000, 1000):
                await c.set_many({f"k{i}": i for i in range(start, start + 1000)})
            await other.set_many({f"k{i}": i for i in range(10)})
            # Runs concurrently with other traffic on the same connection.
            cleared, pings = await asyncio.gather(
                c.clear_pattern("k*"), asyncio.gather(*(c.ping() for _ in range(100)))
            )
            assert cleared == 5000
            assert pings == [True] * 100
            assert await c.clear_pattern("*") == 0

    run(main())
    assert dbsize(redis) == 10
    assert keys(redis, "big:*") == []


def test_clear_pattern_needs_str_or_bytes(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        async with RedisCache(port=redis.port) as c:
            await c.set("k", 1)
            with pytest.raises(TypeError, match="pattern"):
                await c.clear_pattern(1)  # type: ignore[arg-type]

    run(main())
    assert dbsize(redis) == 1


# ---------------------------------------------------------------------------
# incr
# ---------------------------------------------------------------------------


def test_incr(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        async with RedisCache(port=redis.port, namespace="app") as c:
            assert await c.incr("n") == 1
            assert await c.incr("n") == 2
            assert await c.incr("n", 10) == 12
            assert await c.incr("n", amount=-20) == -8
            assert await c.get("n") == -8
            await c.set("j", 41, ttl=60)
            assert await c.incr("j") == 42
            assert 59 <= await c.ttl("j") <= 60  # INCRBY keeps the expiry
            # Concurrent increments are atomic on the server.
            results = await asyncio.gather(*(c.incr("many") for _ in range(500)))
            assert sorted(results) == list(range(1, 501))

    run(main())
    assert raw(redis, "GET", "app:n") == b"-8"


@pytest.mark.parametrize("value", ["abc", 1.5, [1], 10**40], ids=repr)
def test_incr_on_a_non_integer_is_a_response_error_at_await(
    run: Runner, redis: RedisServer, value: object
) -> None:
    async def main() -> None:
        async with RedisCache(port=redis.port) as c:
            await c.set("k", value)
            fut = c.incr("k")
            assert asyncio.isfuture(fut)
            with pytest.raises(ResponseError, match="not an integer"):
                await fut
            assert await c.get("k") == value
            assert await c.ping() is True

    run(main())


def test_incr_overflow_is_a_response_error(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        async with RedisCache(port=redis.port) as c:
            await c.set("k", 2**63 - 1)
            with pytest.raises(ResponseError, match="overflow"):
                await c.incr("k")
            assert await c.get("k") == 2**63 - 1

    run(main())


# ---------------------------------------------------------------------------
# ping / execute_command / server errors
# ---------------------------------------------------------------------------


def test_ping(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        async with RedisCache(port=redis.port) as c:
            assert await c.ping() is True

    run(main())


def test_execute_command_returns_raw_reply_types(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        async with RedisCache(port=redis.port, namespace="app") as c:
            status = await c.execute_command("SET", "plain", "v")
            assert status == "OK" and type(status) is str
            assert await c.execute_command("GET", "plain") == b"v"
            assert await c.execute_command(b"GET", b"missing") is None
            assert await c.execute_command("INCRBY", "n", 5) == 5
            assert await c.execute_command("INCRBYFLOAT", "f", 0.5) == b"0.5"
            assert await c.execute_command("RPUSH", "l", "a", b"b\x00", 3) == 3
            assert await c.execute_command("LRANGE", "l", 0, -1) == [b"a", b"b\x00", b"3"]
            assert await c.execute_command("LRANGE", "empty", 0, -1) == []
            assert await c.execute_command("PING") == "PONG"
            # No namespace and no codec: what was written is what comes back.
            await c.set("k", {"a": 1})
            assert await c.execute_command("GET", "app:k") == b'{"a":1}'

    run(main())
    assert keys(redis) == [b"app:k", b"f", b"l", b"n", b"plain"]


def test_wrongtype_is_raised_at_await_and_spares_the_pipeline(
    run: Runner, redis: RedisServer
) -> None:
    async def main() -> None:
        async with RedisCache(port=redis.port) as c:
            await c.execute_command("HSET", "h", "f", "v")
            await c.set("s", "string")
            # Issued in one loop iteration: one pipelined write; only the
            # commands on the hash fail.
            futures = [c.get("s"), c.get("h"), c.incr("h"), c.expire("h", 100), c.get("s")]
            assert all(asyncio.isfuture(f) for f in futures)
            results = await asyncio.gather(*futures, return_exceptions=True)
            assert results[0] == "string" and results[3] is True and results[4] == "string"
            for exc in results[1:3]:
                assert isinstance(exc, ResponseError), exc
                assert str(exc).startswith("WRONGTYPE")
                assert isinstance(exc, RedisCacheError)
            # MGET answers nil for a key of another type: not found.
            assert await c.get_many(["s", "h"]) == {"s": "string"}
            with pytest.raises(ResponseError, match="^ERR unknown command"):
                await c.execute_command("NOSUCHCOMMAND", "x")
            assert await c.execute_command("HGET", "h", "f") == b"v"

    run(main())


def test_a_cancelled_request_does_not_shift_the_replies(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        async with RedisCache(port=redis.port) as c:
            await c.set_many({f"k{i}": i for i in range(10)})
            futures = [c.get(f"k{i}") for i in range(10)]
            for i in range(0, 10, 3):
                futures[i].cancel()
            for i, fut in enumerate(futures):
                if i % 3 == 0:
                    with pytest.raises(asyncio.CancelledError):
                        await fut
                else:
                    assert await fut == i
            assert await c.get("k9") == 9

    run(main())


# ---------------------------------------------------------------------------
# bad input: refused at call time (or at await), nothing written
# ---------------------------------------------------------------------------

def circular() -> list[Any]:
    value: list[Any] = []
    value.append(value)
    return value


BAD_CALLS: dict[str, tuple[type[BaseException], Callable[[RedisCache], Awaitable[Any]]]] = {
    "get-int-key": (TypeError, lambda c: c.get(1)),  # type: ignore[arg-type]
    "set-none-key": (TypeError, lambda c: c.set(None, 1)),  # type: ignore[arg-type]
    "set-float-key": (TypeError, lambda c: c.set(1.5, 1)),  # type: ignore[arg-type]
    "delete-int-key": (TypeError, lambda c: c.delete(1)),  # type: ignore[arg-type]
    "set-object": (SerializationError, lambda c: c.set("x", object())),
    "set-bytes": (SerializationError, lambda c: c.set("x", b"not JSON")),
    "set-tuple-dict-key": (SerializationError, lambda c: c.set("x", {(1, 2): 3})),
    "set-nan": (SerializationError, lambda c: c.set("x", float("nan"))),
    "set-circular": (SerializationError, lambda c: c.set("x", circular())),
    "set-ttl-0": (ValueError, lambda c: c.set("x", 1, ttl=0)),
    "set-ttl-neg": (ValueError, lambda c: c.set("x", 1, ttl=-1)),
    "set-ttl-0.0": (ValueError, lambda c: c.set("x", 1, ttl=0.0)),
    "set-ttl-neg-float": (ValueError, lambda c: c.set("x", 1, ttl=-0.5)),
    "set-ttl-td-0": (ValueError, lambda c: c.set("x", 1, ttl=timedelta(0))),
    "set-ttl-td-neg": (ValueError, lambda c: c.set("x", 1, ttl=timedelta(seconds=-3))),
    "set-ttl-str": (TypeError, lambda c: c.set("x", 1, ttl="10")),  # type: ignore[arg-type]
    "set-ttl-bool": (TypeError, lambda c: c.set("x", 1, ttl=True)),
    "expire-0": (ValueError, lambda c: c.expire("x", 0)),
    "expire-none": (ValueError, lambda c: c.expire("x", None)),  # type: ignore[arg-type]
    "incr-float": (TypeError, lambda c: c.incr("x", 1.5)),  # type: ignore[arg-type]
    "incr-huge": (ValueError, lambda c: c.incr("x", 2**64)),
    "get_many-str": (TypeError, lambda c: c.get_many("abc")),
    "get_many-bad-key": (TypeError, lambda c: c.get_many(["a", 2])),  # type: ignore[list-item]
    "delete_many-bad-key": (TypeError, lambda c: c.delete_many(["a", None])),  # type: ignore[list-item]
    "set_many-bad-value": (SerializationError, lambda c: c.set_many({"a": 1, "b": object(), "c": 3})),
    "set_many-bad-key": (TypeError, lambda c: c.set_many({"a": 1, 2: 2, "c": 3})),  # type: ignore[dict-item]
    "set_many-ttl-0": (ValueError, lambda c: c.set_many({"a": 1}, ttl=0)),
    "set_many-list": (TypeError, lambda c: c.set_many([("a", 1)])),  # type: ignore[arg-type]
    "execute-none-arg": (TypeError, lambda c: c.execute_command("SET", "x", None)),  # type: ignore[arg-type]
    "execute-nothing": (TypeError, lambda c: c.execute_command()),
}


@pytest.mark.parametrize("fresh", [False, True], ids=["connected", "fresh"])
@pytest.mark.parametrize("name", list(BAD_CALLS))
def test_bad_input_is_refused_and_nothing_is_written(
    run: Runner, redis: RedisServer, name: str, fresh: bool
) -> None:
    error, call = BAD_CALLS[name]

    async def main() -> None:
        async with RedisCache(port=redis.port) as c:
            if not fresh:
                assert await c.ping() is True
            # Good commands queued before and after the bad one in the same
            # loop iteration: the refused command must leave no bytes behind.
            before = c.set("before", [1, "b"])
            with pytest.raises(error):
                await call(c)
            after = c.set("after", {"a": 2})
            assert await gather_strict(before, after) == [True, True]
            assert await c.get_many(["before", "after", "x", "a"]) == {
                "before": [1, "b"],
                "after": {"a": 2},
            }
            assert await c.ping() is True

    run(main())
    assert dbsize(redis) == 2
    assert keys(redis) == [b"after", b"before"]


def test_bad_input_raises_at_call_time(run: Runner, redis: RedisServer) -> None:
    """Nothing to wait for: the mistake is reported where it is made."""

    async def main() -> None:
        async with RedisCache(port=redis.port) as c:
            with pytest.raises(TypeError):
                c.get(1)  # type: ignore[arg-type]
            with pytest.raises(SerializationError):
                c.set("k", object())
            with pytest.raises(ValueError):
                c.set("k", 1, ttl=0)

    run(main())
    assert dbsize(redis) == 0


def test_undecodable_stored_value_raises_at_await(run: Runner, redis: RedisServer) -> None:
    redis.raw_command("SET", "junk", "not json")

    async def main() -> None:
        async with RedisCache(port=redis.port) as c:
            await c.set("good", [1])
            results = await asyncio.gather(
                c.get("good"), c.get("junk"), c.get_many(["good", "junk"]), c.get("good"),
                return_exceptions=True,
            )
            assert results[0] == [1] and results[3] == [1]
            for exc in results[1:3]:
                assert isinstance(exc, SerializationError) and "invalid JSON" in str(exc), exc
            assert await c.get_many(["good"]) == {"good": [1]}

    run(main())


def test_custom_serializer(run: Runner, redis: RedisServer) -> None:
    value = {"set": {1, 2}, "tuple": (1, "a"), b"bytes-key": 3.5}

    class BadLoads:
        dumps = staticmethod(pickle.dumps)

        @staticmethod
        def loads(data: bytes) -> object:
            raise KeyError("cannot load")

    async def main() -> None:
        async with RedisCache(port=redis.port, serializer=pickle, namespace="p") as c:
            assert await c.set("k", value) is True
            assert await c.get("k") == value
            assert await c.get_many(["k", "missing"]) == {"k": value}
        async with RedisCache(port=redis.port, serializer=BadLoads, namespace="p") as c:
            with pytest.raises(SerializationError, match="loads") as info:
                await c.get("k")
            assert isinstance(info.value.__cause__, KeyError)
            assert await c.get("missing", 7) == 7  # loads is not called for a miss

    run(main())
    stored = raw(redis, "GET", "p:k")
    assert isinstance(stored, bytes) and pickle.loads(stored) == value


def test_configuration_errors(redis: RedisServer) -> None:
    for options in (
        {"connections": 0},
        {"connections": 65},
        {"max_in_flight": 0},
        {"socket_timeout": 0},
        {"namespace": 1},
    ):
        with pytest.raises(ConfigurationError):
            RedisCache(port=redis.port, **options)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# ways of connecting
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("as_path", [False, True], ids=["str", "Path"])
def test_unix_socket(run: Runner, redis: RedisServer, as_path: bool) -> None:
    path = pathlib.Path(redis.unix_socket_path) if as_path else redis.unix_socket_path

    async def main() -> None:
        async with RedisCache(unix_socket_path=path, client_name="async-unix") as c:
            assert await c.set("k", "over unix") is True
            info = await c.execute_command("CLIENT", "INFO")
            assert b"flags=U" in info and b"name=async-unix" in info
        async with RedisCache.from_url(redis.unix_url) as c:
            assert await c.get("k") == "over unix"

    run(main())
    assert raw(redis, "GET", "k") == b'"over unix"'


def test_password_auth(run: Runner, pw_server: RedisServer) -> None:
    async def main() -> None:
        async with RedisCache(port=pw_server.port, password=PASSWORD, db=1) as c:
            assert await c.set("k", "secret-ok") is True
            assert await c.get("k") == "secret-ok"
        async with RedisCache.from_url(pw_server.unix_url + "?db=1") as c:
            assert await c.get("k") == "secret-ok"

    run(main())
    assert pw_server.cli("-n", "1", "GET", "k") == '"secret-ok"'


def test_acl_user_auth(run: Runner, acl: RedisServer) -> None:
    async def main() -> None:
        async with RedisCache(port=acl.port, username=ACL_USER, password=ACL_PASSWORD) as c:
            assert await c.execute_command("ACL", "WHOAMI") == ACL_USER.encode()
            assert await c.set("k", 1) is True
        async with RedisCache.from_url(acl.url) as c:
            assert await c.get("k") == 1

    run(main())
    assert raw(acl, "GET", "k") == b"1"


@pytest.mark.parametrize(
    "options",
    [
        {"password": "wrong-Pa55word"},
        {"username": ACL_USER, "password": "wrong-Pa55word"},
    ],
    ids=["password", "acl-user"],
)
def test_wrong_credentials_raise_authentication_error(
    run: Runner, password_server: RedisServer, acl_server: RedisServer, options: dict[str, Any]
) -> None:
    server = acl_server if "username" in options else password_server
    server.flushall()

    async def main() -> list[BaseException]:
        async with RedisCache(port=server.port, **options) as c:
            # Everything queued behind the failed handshake fails the same way.
            return await asyncio.gather(
                c.set("k", 1), c.get("k"), c.ping(), return_exceptions=True
            )

    results = run(main())
    for exc in results:
        assert isinstance(exc, AuthenticationError), exc
        assert isinstance(exc, ConnectionError) and isinstance(exc, builtins.ConnectionError)
        assert "WRONGPASS" in str(exc)
        assert "wrong-Pa55word" not in str(exc) + repr(exc)
    assert dbsize(server) == 0


def test_missing_password_is_refused(run: Runner, pw_server: RedisServer) -> None:
    async def main() -> None:
        async with RedisCache(port=pw_server.port) as c:
            with pytest.raises(RedisCacheError, match="NOAUTH"):
                await c.set("k", 1)

    run(main())
    assert dbsize(pw_server) == 0


def test_db_selection_isolates_databases(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        async with RedisCache(port=redis.port, db=3) as c3, RedisCache(port=redis.port) as c0:
            await c3.set("k", "in3")
            assert await c0.get("k") is None
            await c0.set("k", "in0")
            assert await c3.get("k") == "in3"
            assert b"db=3" in await c3.execute_command("CLIENT", "INFO")
        async with RedisCache.from_url(f"redis://127.0.0.1:{redis.port}/5") as c5:
            await c5.set("k", "in5")

    run(main())
    assert redis.cli("-n", "3", "GET", "k") == '"in3"'
    assert redis.cli("-n", "5", "GET", "k") == '"in5"'
    assert raw(redis, "GET", "k") == b'"in0"'


def test_client_name_is_visible_in_client_list(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        async with RedisCache(port=redis.port, client_name="async-cache-1") as c:
            await c.ping()  # connections open lazily
            assert await c.execute_command("CLIENT", "GETNAME") == b"async-cache-1"
            assert "name=async-cache-1 " in redis.cli("CLIENT", "LIST")
            assert clients_named(redis, "async-cache-1") == 1

    run(main())


def test_from_env(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        async with RedisCache.from_env({"REDIS_URL": redis.url, "REDIS_DB": "6"}) as c:
            await c.set("k", "env")
        async with RedisCache.from_env({"REDIS_SOCKET_PATH": redis.unix_socket_path}) as c:
            assert b"flags=U" in await c.execute_command("CLIENT", "INFO")

    run(main())
    assert redis.cli("-n", "6", "GET", "k") == '"env"'


def test_connect_now(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        async with RedisCache(port=redis.port, client_name="eager") as c:
            assert clients_named(redis, "eager") == 0  # lazy until asked
            await c.connect()
            assert clients_named(redis, "eager") == 1
        async with dead_port_cache() as c:
            with pytest.raises(ConnectionError, match="cannot connect"):
                await c.connect()

    run(main())


def test_connection_refused_is_a_connection_error(run: Runner) -> None:
    async def main() -> None:
        async with dead_port_cache(socket_connect_timeout=30) as c:
            with pytest.raises(ConnectionError, match="cannot connect to redis at .*refused") as info:
                # Refused is immediate; the deadline only detects a wait for
                # the (long) connect timeout instead.
                await asyncio.wait_for(c.ping(), 10)
            assert f":{c.settings.port}" in str(info.value)
            assert isinstance(info.value, builtins.ConnectionError)
            assert isinstance(info.value, OSError)

    run(main())


def test_connection_refused_says_refused(run: Runner) -> None:
    # Regression: the message was asyncio's "Connect call failed (address)".
    async def main() -> None:
        async with dead_port_cache() as c:
            with pytest.raises(ConnectionError, match="[Rr]efused"):
                await c.ping()

    run(main())


def test_missing_unix_socket_is_a_connection_error(run: Runner, tmp_path: pathlib.Path) -> None:
    async def main() -> None:
        async with RedisCache(unix_socket_path=tmp_path / "nothing.sock") as c:
            with pytest.raises(ConnectionError, match="nothing.sock"):
                await c.ping()

    run(main())


# ---------------------------------------------------------------------------
# pipelining
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("connections", [1, 4])
def test_thousand_gathered_sets_then_gets(
    run: Runner, redis: RedisServer, connections: int
) -> None:
    name = f"pipelined-{connections}"

    async def main() -> None:
        async with RedisCache(port=redis.port, connections=connections, client_name=name, stall_timeout=None) as c:
            sets = [c.set(f"k{i}", {"i": i, "s": "v" * (i % 7)}) for i in range(1000)]
            # Queued, not yet answered: nothing has run on the loop since.
            assert not any(f.done() for f in sets)
            assert await asyncio.gather(*sets) == [True] * 1000
            gets = [c.get(f"k{i}") for i in range(1000)]
            assert await asyncio.gather(*gets) == [{"i": i, "s": "v" * (i % 7)} for i in range(1000)]
            # Interleaved writes and reads of the same key, still in order.
            mixed = []
            for i in range(200):
                mixed.append(c.set("same", i))
                mixed.append(c.get("same"))
            if connections == 1:
                results = await asyncio.gather(*mixed)
                assert results[1::2] == list(range(200))
            else:
                await asyncio.gather(*mixed)
            # Every command went over the configured number of connections.
            assert clients_named(redis, name) == connections

    run(main())
    assert dbsize(redis) == 1001


def test_big_values_alongside_small_requests(run: Runner, redis: RedisServer) -> None:
    """Megabytes through the non-blocking socket: partial writes and reads
    must keep the small replies in step."""
    blob = bytes(range(256)) * (40 * 1024)  # 10 MiB
    text = "x\u00e9\U0001f600\"\\" * (512 * 1024)

    async def main() -> None:
        async with RedisCache(port=redis.port, serializer="raw") as raw_c, RedisCache(
            port=redis.port
        ) as c:
            small = [raw_c.set(f"s{i}", str(i)) for i in range(100)]
            big = raw_c.set("blob", blob)
            more = [raw_c.get(f"s{i}") for i in range(100)]
            assert await asyncio.gather(*small, big) == [True] * 101
            assert await asyncio.gather(*more) == [str(i).encode() for i in range(100)]
            got, again = await asyncio.gather(raw_c.get("blob"), raw_c.get("s7"))
            assert got == blob and again == b"7"
            assert await c.set("text", text) is True
            assert await asyncio.gather(c.get("text"), c.ping()) == [text, True]

    run(main())
    assert raw(redis, "STRLEN", "blob") == len(blob)


# ---------------------------------------------------------------------------
# close / async with / reuse across loops / repr
# ---------------------------------------------------------------------------


def test_async_with_closes_and_use_after_close_raises(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        async with RedisCache(port=redis.port) as c:
            assert c.closed is False
            assert await c.set("k", 1) is True
        assert c.closed is True
        calls: list[Callable[[], Awaitable[Any]]] = [
            lambda: c.get("k"),
            lambda: c.set("k", 2),
            c.ping,
            lambda: c.get_many(["k"]),
            lambda: c.execute_command("GET", "k"),
            c.connect,
        ]
        for call in calls:
            with pytest.raises(ConnectionError, match="closed"):
                await call()
        await c.close()  # closing twice is harmless
        assert c.closed is True

    run(main())
    assert raw(redis, "GET", "k") == b"1"


def test_close_without_any_use(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        c = RedisCache(port=redis.port)
        await c.close()
        assert c.closed is True
        with pytest.raises(ConnectionError):
            await c.ping()

    run(main())


def test_close_fails_requests_still_waiting(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        c = RedisCache(port=redis.port)
        await c.ping()
        waiting = [c.get(f"k{i}") for i in range(100)]
        await c.close()
        results = await asyncio.gather(*waiting, return_exceptions=True)
        for exc in results:
            assert isinstance(exc, ConnectionError) and "closed" in str(exc), exc

    run(main())


def test_close_while_connecting(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        c = RedisCache(port=redis.port)
        first = c.get("k")  # starts connecting
        await c.close()
        with pytest.raises(ConnectionError, match="closed"):
            await first

    run(main())


def test_close_releases_the_server_connection(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        c = RedisCache(port=redis.port, client_name="closing", connections=3)
        await asyncio.gather(*(c.ping() for _ in range(3)))
        assert clients_named(redis, "closing") == 3
        await c.close()
        await wait_for_clients(redis, "closing", 0)

    run(main())


def test_a_cache_is_reused_across_event_loops(run: Runner, redis: RedisServer) -> None:
    """The usual test-suite pattern: one cache, one asyncio.run per test."""
    cache = RedisCache(port=redis.port, client_name="reused")

    async def first() -> int:
        assert await cache.set("k", "from first loop") is True
        return await client_id(cache)

    async def second() -> int:
        assert await cache.get("k") == "from first loop"
        return await client_id(cache)

    async def last() -> None:
        await cache.close()

    first_id = run(first())
    second_id = run(second())
    assert second_id != first_id  # a new connection on the new loop
    # The old loop's connection was let go, not leaked.
    run(wait_for_clients(redis, "reused", 1))
    run(last())
    run(wait_for_clients(redis, "reused", 0))


@pytest.mark.parametrize("kind", LOOP_KINDS)
def test_a_cache_is_reused_across_two_asyncio_run_calls(redis: RedisServer, kind: str) -> None:
    """Literally ``asyncio.run`` twice (an ``asyncio.Runner`` with the uvloop factory)."""
    factory = loop_factory(kind)
    if kind != "asyncio" and not hasattr(asyncio, "Runner"):
        pytest.skip("asyncio.Runner(loop_factory=...) needs Python 3.11")
    cache = RedisCache(port=redis.port)

    def asyncio_run(coro: Any) -> Any:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(coro)

    async def first() -> None:
        assert await cache.set("k", "first") is True

    async def second() -> str:
        value = await cache.get("k")
        await cache.close()
        return value  # type: ignore[no-any-return]

    if kind == "asyncio":
        asyncio.run(first())
        assert asyncio.run(second()) == "first"
    else:
        asyncio_run(first())
        assert asyncio_run(second()) == "first"
    assert cache.closed


@pytest.mark.uvloop
@pytest.mark.parametrize("kinds", [("asyncio", "uvloop"), ("uvloop", "asyncio")], ids="->".join)
def test_a_cache_moves_between_loop_kinds(redis: RedisServer, kinds: tuple[str, str]) -> None:
    cache = RedisCache(port=redis.port)

    async def use(i: int) -> None:
        assert await cache.set("k", i) is True
        assert await cache.get("k") == i

    for i, kind in enumerate(kinds * 2):
        Runner(kind)(use(i))
    Runner(kinds[0])(cache.close())


def test_dropping_an_open_cache_warns(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        c = RedisCache(port=redis.port)
        assert await c.ping() is True
        with pytest.warns(ResourceWarning, match="unclosed cache"):
            del c
            gc.collect()

    run(main())


def test_closed_or_unused_caches_do_not_warn(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            unused = RedisCache(port=redis.port)
            del unused
            async with RedisCache(port=redis.port) as closed:
                await closed.ping()
            del closed
            gc.collect()
        assert [w for w in caught if "unclosed cache" in str(w.message)] == []

    run(main())


DROPPED_SCRIPT = r"""
import asyncio, gc, json, sys, warnings
from redis_cache import ConnectionError, RedisCache

warnings.simplefilter("ignore", ResourceWarning)
port, kind = int(sys.argv[1]), sys.argv[2]

class Serializer:
    def dumps(self, value):
        return json.dumps(value).encode()
    def loads(self, data):
        return json.loads(data)

async def main():
    async with RedisCache(port=port) as c:
        await c.set("k", [1, 2, 3])
    for _ in range(50):
        # The cache is a temporary: gone as soon as get() returned its future.
        fut = RedisCache(port=port, serializer=Serializer()).get("k")
        gc.collect()
        junk = [bytearray(64) for _ in range(1000)]  # reuse the freed memory
        try:
            got = await asyncio.wait_for(fut, 10)
        except ConnectionError:
            continue  # failing the orphaned request would be fine too
        assert got == [1, 2, 3], got
    print("ok")

if kind == "uvloop":
    import uvloop
    uvloop.install()
asyncio.run(main())
"""


def test_a_cache_dropped_with_requests_in_flight_does_not_crash(
    run: Runner, redis: RedisServer
) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", DROPPED_SCRIPT, str(redis.port), run.kind],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"exit status {proc.returncode}:\n{proc.stderr[-2000:]}"
    assert proc.stdout.strip() == "ok"


def test_repr_shows_state_without_the_password(run: Runner, pw_server: RedisServer) -> None:
    async def main() -> None:
        c = RedisCache(port=pw_server.port, password=PASSWORD, namespace="ns")
        assert await c.ping() is True
        assert "open" in repr(c) and "namespace='ns'" in repr(c)
        assert PASSWORD not in repr(c)
        await c.close()
        assert "closed" in repr(c)
        assert c.namespace == "ns" and c.default_ttl is None
        assert c.settings.port == pw_server.port

    run(main())


# ---------------------------------------------------------------------------
# a serializer that uses the cache
# ---------------------------------------------------------------------------


class CountingSerializer:
    """JSON, but dumps() also bumps a counter in the cache it serializes for
    (a serializer with a side effect on the same cache)."""

    def __init__(self) -> None:
        self.cache: Any = None
        self.side_effects: list[Awaitable[Any]] = []

    def dumps(self, value: Any) -> bytes:
        if self.cache is not None:
            self.side_effects.append(self.cache.incr("dumps-calls"))
        return json.dumps(value).encode()

    def loads(self, data: bytes) -> Any:
        return json.loads(data)


def test_sync_serializer_may_use_its_own_cache(redis: RedisServer) -> None:
    """The reference behaviour, for the async test below."""
    serializer = CountingSerializer()
    with SyncRedisCache(port=redis.port, serializer=serializer) as c:
        serializer.side_effects = []
        serializer.cache = type("Proxy", (), {"incr": lambda _self, key: c.incr(key)})()
        assert c.set("k", "v") is True
        serializer.cache = None
        assert c.get("k") == "v"
        assert c.get("dumps-calls") == 1


# A reentrant serializer corrupts memory (heap corruption, a segfault), so the
# async cases run in a child interpreter: a crash fails the test, not the run.
REENTRANT_SCRIPT = r"""
import asyncio, json, sys
from redis_cache import RedisCache

port, kind, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]

class Serializer:
    cache = None
    nested = []
    def dumps(self, value):
        cache, self.cache = self.cache, None
        if cache is not None:
            self.nested.append(cache.get("a"))
            if mode == "raise":
                raise ValueError("refuse this value")
        return json.dumps(value).encode()
    def loads(self, data):
        return json.loads(data)

async def main():
    s = Serializer()
    async with RedisCache(port=port, serializer=s, socket_timeout=1, stall_timeout=None) as c:
        await c.set_many({"a": "A", "b": "B", "c": "C"})
        connection = await c.execute_command("CLIENT", "ID")
        first = c.get("b")  # in flight: what follows is buffered
        s.cache = c
        try:
            stored = [c.set("k", "v")]
        except Exception as exc:
            stored = [type(exc).__name__]
        later = [c.get("b"), c.get("c")]
        results = await asyncio.wait_for(
            asyncio.gather(first, *s.nested, *later, return_exceptions=True), 10)
        if stored and asyncio.isfuture(stored[0]):
            stored = [await asyncio.wait_for(asyncio.gather(stored[0], return_exceptions=True), 10)]
        same = await c.execute_command("CLIENT", "ID") == connection
        print(repr([stored, results, same]))

if kind == "uvloop":
    import uvloop
    uvloop.install()
asyncio.run(main())
"""


def run_reentrant(kind: str, port: int, mode: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", REENTRANT_SCRIPT, str(port), kind, mode],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"exit status {proc.returncode}:\n{proc.stderr[-2000:]}"
    return proc.stdout.strip()


def test_serializer_may_use_its_own_cache(run: Runner, redis: RedisServer) -> None:
    # Expected: [[True], [first get(b), nested get(a), get(b), get(c)], same connection]
    assert run_reentrant(run.kind, redis.port, "ok") == repr([[[True]], ["B", "A", "B", "C"], True])


def test_serializer_that_uses_its_cache_then_fails(run: Runner, redis: RedisServer) -> None:
    assert run_reentrant(run.kind, redis.port, "raise") == repr(
        [["SerializationError"], ["B", "A", "B", "C"], True]
    )
