"""SyncRedisCache against a real, private redis-server.

Every public method, every way of connecting, value round trips, namespaces
and clearing.  What the server really holds is read back with
``redis_raw`` (raw RESP, not this library) or redis-cli.  Refused input lives
in test_sync_bad_input.py, redis-cli interoperability in test_interop.py.

No test sleeps: TTLs are checked through PTTL ranges and through the exact
commands the server executed (SLOWLOG with a zero threshold, see
``command_log``).
"""

from __future__ import annotations

import builtins
import os
import pathlib
import pickle
import time
import types
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from datetime import timedelta
from typing import Any

import pytest
from conftest import ACL_PASSWORD, ACL_USER, PASSWORD
from redis_raw import dbsize, keys, pttl, raw

from redis_cache import (
    AuthenticationError,
    ConfigurationError,
    ConnectionError,
    RedisCacheError,
    ResponseError,
    SerializationError,
    SyncRedisCache,
)
from redis_cache.testing import RedisServer, free_port

CommandLog = Callable[[], list[list[bytes]]]


# ---------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------


@pytest.fixture
def cache(redis: RedisServer) -> Iterator[SyncRedisCache]:
    """A cache without namespace on the (flushed) shared server."""
    with SyncRedisCache(port=redis.port) as c:
        yield c


@pytest.fixture
def ns_cache(redis: RedisServer) -> Iterator[SyncRedisCache]:
    """A cache in namespace ``app`` on the (flushed) shared server."""
    with SyncRedisCache(port=redis.port, namespace="app") as c:
        yield c


@pytest.fixture
def command_log(redis: RedisServer) -> Iterator[CommandLog]:
    """Returns a function giving every command the server ran since the fixture
    started, oldest first, as lists of bytes (SLOWLOG with a 0 µs threshold).
    The shared server's settings are restored afterwards."""
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


@pytest.fixture(scope="module")
def debug_server(redis_server_factory: Callable[..., RedisServer]) -> RedisServer:
    """A server that allows DEBUG from local clients (DEBUG POPULATE fills it fast);
    the shared servers refuse DEBUG, as Redis 7 does by default."""
    return redis_server_factory(extra_config={"enable-debug-command": "local"})


@pytest.fixture
def pw_server(password_server: RedisServer) -> RedisServer:
    """The password-protected session server, emptied first."""
    password_server.flushall()
    return password_server


@pytest.fixture
def acl(acl_server: RedisServer) -> RedisServer:
    """The ACL session server (user alice, default user off), emptied first."""
    acl_server.flushall()
    return acl_server


def dead_port_cache(**options: Any) -> SyncRedisCache:
    """A cache pointed at a port nobody listens on: any round trip fails (at
    once: connect_wait=0, unless the test says otherwise)."""
    options.setdefault("connect_wait", 0)
    return SyncRedisCache(host="127.0.0.1", port=free_port(), **options)


# ---------------------------------------------------------------------------
# get / set
# ---------------------------------------------------------------------------


def test_get_missing_key_returns_default(cache: SyncRedisCache) -> None:
    assert cache.get("nope") is None
    assert cache.get("nope", "dflt") == "dflt"
    assert cache.get("nope", default=0) == 0
    marker = object()
    assert cache.get(key="nope", default=marker) is marker


def test_stored_none_is_not_a_missing_key(cache: SyncRedisCache, redis: RedisServer) -> None:
    assert cache.set("k", None) is True
    assert raw(redis, "GET", "k") == b"null"
    assert cache.get("k", "dflt") is None
    assert cache.exists("k") is True
    assert cache.get_many(["k", "missing"]) == {"k": None}


@pytest.mark.parametrize("value", [0, 0.0, False, "", [], {}], ids=repr)
def test_falsy_values_are_found(cache: SyncRedisCache, value: object) -> None:
    cache.set("k", value)
    got = cache.get("k", "dflt")
    assert got == value and type(got) is type(value)


def test_set_returns_true_and_overwrites(cache: SyncRedisCache, redis: RedisServer) -> None:
    assert cache.set("k", "first") is True
    assert cache.set("k", {"second": 2}) is True
    assert cache.get("k") == {"second": 2}
    assert raw(redis, "GET", "k") == b'{"second":2}'
    assert dbsize(redis) == 1


def test_set_accepts_keywords_and_bytes_keys(cache: SyncRedisCache, redis: RedisServer) -> None:
    assert cache.set(key=b"bk", value=[1], ttl=30) is True
    assert cache.get("bk") == [1]  # the same Redis key, whether str or bytes
    assert cache.get(b"bk") == [1]
    assert 29_000 < pttl(redis, "bk") <= 30_000


def test_set_without_ttl_or_default_never_expires(
    cache: SyncRedisCache, redis: RedisServer
) -> None:
    cache.set("k", 1)
    cache.set("n", 2, ttl=None)
    assert pttl(redis, "k") == -1
    assert pttl(redis, "n") == -1
    assert cache.ttl("k") == -1


@pytest.mark.parametrize(
    ("ttl", "sent", "max_ms"),
    [
        (10, [b"EX", b"10"], 10_000),
        (1.5, [b"PX", b"1500"], 1_500),
        (0.05, [b"PX", b"50"], 50),
        (2.0, [b"EX", b"2"], 2_000),
        (timedelta(seconds=3), [b"EX", b"3"], 3_000),
        (timedelta(milliseconds=250), [b"PX", b"250"], 250),
        (timedelta(minutes=2), [b"EX", b"120"], 120_000),
    ],
    ids=repr,
)
def test_set_ttl_int_float_timedelta(
    ns_cache: SyncRedisCache,
    redis: RedisServer,
    command_log: CommandLog,
    ttl: object,
    sent: list[bytes],
    max_ms: int,
) -> None:
    assert ns_cache.set("k", "v", ttl=ttl) is True
    assert max(0, max_ms - 1000) < pttl(redis, "app:k") <= max_ms
    assert [b"SET", b"app:k", b'"v"', *sent] in command_log()


def test_set_short_ttl_in_milliseconds(cache: SyncRedisCache, redis: RedisServer) -> None:
    cache.set("k", 1, ttl=0.05)
    assert 0 < pttl(redis, "k") <= 50
    # TTL (seconds) rounds to the nearest second, so 50 ms reads as 0.
    assert cache.ttl("k") == 0


@pytest.mark.parametrize("ttl", [0.0001, 1e-7, timedelta(microseconds=1)], ids=repr)
def test_sub_millisecond_ttl_rounds_up_to_one_ms(
    cache: SyncRedisCache, command_log: CommandLog, ttl: object
) -> None:
    assert cache.set("k", 1, ttl=ttl) is True
    assert [b"SET", b"k", b"1", b"PX", b"1"] in command_log()


@pytest.mark.parametrize("ttl", [1e-10, 5e-324], ids=repr)
def test_tiny_positive_float_ttl_never_becomes_zero(
    cache: SyncRedisCache, redis: RedisServer, command_log: CommandLog, ttl: float
) -> None:
    cache.set("e", 1)
    cache.expire("e", ttl)
    assert [b"PEXPIRE", b"e", b"1"] in command_log()
    assert cache.set("k", 1, ttl=ttl) is True
    assert [b"SET", b"k", b"1", b"PX", b"1"] in command_log()


@pytest.mark.parametrize(
    ("ttl", "sent"),
    [
        (2.007, [b"PX", b"2007"]),  # 2.007 * 1000.0 == 2007.0000000000002
        (65.534, [b"PX", b"65534"]),
        (timedelta(milliseconds=2011), [b"PX", b"2011"]),
        (123456.789, [b"PX", b"123456789"]),
        (1.0005, [b"PX", b"1001"]),  # a real fraction of a millisecond still rounds up
    ],
    ids=repr,
)
def test_float_ttl_is_not_rounded_past_the_requested_millisecond(
    cache: SyncRedisCache, command_log: CommandLog, ttl: object, sent: list[bytes]
) -> None:
    # Regression: ceil(seconds * 1000.0) turned binary noise into an extra ms.
    cache.set("k", 1, ttl=ttl)
    assert [b"SET", b"k", b"1", *sent] in command_log()


def test_default_ttl_applies_when_ttl_is_none(redis: RedisServer) -> None:
    with SyncRedisCache(port=redis.port, default_ttl=60) as c:
        assert c.default_ttl == 60
        c.set("a", 1)
        c.set("b", 1, ttl=None)
        c.set("c", 1, ttl=5)  # explicit ttl wins
        c.set_many({"d": 1, "e": 2})
        c.set_many({"f": 1}, ttl=0.5)
    for key in ("a", "b", "d", "e"):
        assert 59_000 < pttl(redis, key) <= 60_000, key
    assert 4_000 < pttl(redis, "c") <= 5_000
    assert 0 < pttl(redis, "f") <= 500


def test_default_ttl_as_timedelta_and_float(redis: RedisServer) -> None:
    with SyncRedisCache(port=redis.port, default_ttl=timedelta(milliseconds=400)) as c:
        c.set("td", 1)
    with SyncRedisCache(port=redis.port, default_ttl=0.3) as c:
        c.set("fl", 1)
    assert 0 < pttl(redis, "td") <= 400
    assert 0 < pttl(redis, "fl") <= 300


# ---------------------------------------------------------------------------
# delete / exists / expire / ttl
# ---------------------------------------------------------------------------


def test_delete_reports_whether_the_key_existed(cache: SyncRedisCache, redis: RedisServer) -> None:
    cache.set("k", 1)
    cache.set("other", 2)
    assert cache.delete("k") is True
    assert cache.delete("k") is False
    assert cache.delete("never") is False
    assert keys(redis) == [b"other"]


def test_exists(cache: SyncRedisCache) -> None:
    assert cache.exists("k") is False
    cache.set("k", None)
    assert cache.exists("k") is True
    cache.delete("k")
    assert cache.exists("k") is False


def test_expire_sets_a_new_ttl(cache: SyncRedisCache, redis: RedisServer) -> None:
    cache.set("k", 1)
    assert pttl(redis, "k") == -1
    assert cache.expire("k", 0.05) is True
    assert 0 < pttl(redis, "k") <= 50
    assert cache.expire("k", 100) is True
    assert 99_000 < pttl(redis, "k") <= 100_000
    assert cache.expire("k", timedelta(seconds=7)) is True
    assert 6_000 < pttl(redis, "k") <= 7_000
    assert cache.expire(key="k", ttl=30) is True
    assert 29 <= cache.ttl("k") <= 30


def test_expire_missing_key_is_false_and_creates_nothing(
    cache: SyncRedisCache, redis: RedisServer
) -> None:
    assert cache.expire("missing", 10) is False
    assert dbsize(redis) == 0


def test_ttl_values(cache: SyncRedisCache) -> None:
    assert cache.ttl("missing") == -2
    cache.set("forever", 1)
    assert cache.ttl("forever") == -1
    cache.set("timed", 1, ttl=100)
    assert 99 <= cache.ttl("timed") <= 100
    assert isinstance(cache.ttl("timed"), int)


# ---------------------------------------------------------------------------
# get_many / set_many / delete_many
# ---------------------------------------------------------------------------


def test_get_many_returns_only_found_keys(cache: SyncRedisCache) -> None:
    cache.set("a", 1)
    cache.set("b", None)
    cache.set("c", {"x": [1]})
    assert cache.get_many(["a", "missing", "b", "c"]) == {"a": 1, "b": None, "c": {"x": [1]}}
    assert cache.get_many(["missing", "also-missing"]) == {}


def test_get_many_accepts_tuples_iterables_and_duplicates(cache: SyncRedisCache) -> None:
    cache.set("a", 1)
    cache.set("b", 2)
    assert cache.get_many(("a", "b")) == {"a": 1, "b": 2}
    assert cache.get_many(k for k in ["a", "b"]) == {"a": 1, "b": 2}
    assert cache.get_many(["a", "a", "b", "a"]) == {"a": 1, "b": 2}
    # Keys come back exactly as given: bytes stay bytes.
    assert cache.get_many([b"a", "b"]) == {b"a": 1, "b": 2}


def test_get_many_empty_sends_nothing() -> None:
    with dead_port_cache() as c:  # any round trip would raise ConnectionError
        assert c.get_many([]) == {}
        assert c.get_many(()) == {}


def test_get_many_in_a_namespace(ns_cache: SyncRedisCache, redis: RedisServer) -> None:
    ns_cache.set("a", 1)
    redis.raw_command("SET", "b", "2")  # outside the namespace
    assert ns_cache.get_many(["a", "b"]) == {"a": 1}


def test_set_many_with_a_dict(ns_cache: SyncRedisCache, redis: RedisServer) -> None:
    items = {"a": 1, "b": "two", "c": None, "d": [1, {"e": 2.5}]}
    assert ns_cache.set_many(items) is True
    assert ns_cache.get_many(list(items)) == items
    assert keys(redis) == [b"app:a", b"app:b", b"app:c", b"app:d"]
    assert all(pttl(redis, f"app:{k}") == -1 for k in items)


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
    [FrozenMapping, types.MappingProxyType, OrderedDict],
    ids=["Mapping", "MappingProxyType", "OrderedDict"],
)
def test_set_many_with_other_mappings(
    cache: SyncRedisCache, make: Callable[[dict[str, object]], Mapping[str, object]]
) -> None:
    items = {"x": 1, "y": [2], "z": {"w": None}}
    assert cache.set_many(make(items)) is True
    assert cache.get_many(list(items)) == items


def test_set_many_applies_the_ttl_to_every_key(
    ns_cache: SyncRedisCache, redis: RedisServer, command_log: CommandLog
) -> None:
    names = [f"k{i}" for i in range(20)]
    assert ns_cache.set_many({name: i for i, name in enumerate(names)}, ttl=0.05) is True
    for name in names:
        assert 0 < pttl(redis, f"app:{name}") <= 50, name
    sets = [cmd for cmd in command_log() if cmd[0] == b"SET"]
    assert sets == [[b"SET", f"app:{n}".encode(), str(i).encode(), b"PX", b"50"]
                    for i, n in enumerate(names)]


def test_set_many_ttl_as_timedelta(cache: SyncRedisCache, redis: RedisServer) -> None:
    cache.set_many({"a": 1, "b": 2}, ttl=timedelta(seconds=9))
    assert 8_000 < pttl(redis, "a") <= 9_000
    assert 8_000 < pttl(redis, "b") <= 9_000


def test_set_many_empty_is_true_and_sends_nothing(
    cache: SyncRedisCache, redis: RedisServer, command_log: CommandLog
) -> None:
    assert cache.set_many({}) is True
    assert cache.set_many(types.MappingProxyType({})) is True
    assert command_log() == []
    assert dbsize(redis) == 0


def test_set_many_empty_dict_needs_no_connection() -> None:
    # Regression: it used to check a connection out before seeing the batch was empty.
    with dead_port_cache() as c:
        assert c.set_many({}) is True


@pytest.mark.parametrize(
    "make", [FrozenMapping, types.MappingProxyType], ids=["Mapping", "MappingProxyType"]
)
def test_set_many_empty_mapping_needs_no_connection(
    make: Callable[[dict[str, object]], Mapping[str, object]],
) -> None:
    with dead_port_cache() as c:
        assert c.set_many(make({})) is True


def test_delete_many_counts_existing_keys(cache: SyncRedisCache, redis: RedisServer) -> None:
    cache.set_many({"a": 1, "b": 2, "c": 3, "keep": 4})
    assert cache.delete_many(["a", "b", "missing"]) == 2
    assert cache.delete_many(("c", "c")) == 1  # a duplicate is one key
    assert cache.delete_many(["a"]) == 0
    assert keys(redis) == [b"keep"]


def test_delete_many_empty_sends_nothing() -> None:
    with dead_port_cache() as c:
        assert c.delete_many([]) == 0


def test_delete_many_in_a_namespace(ns_cache: SyncRedisCache, redis: RedisServer) -> None:
    ns_cache.set("a", 1)
    redis.raw_command("SET", "a", "1")
    assert ns_cache.delete_many(["a"]) == 1
    assert keys(redis) == [b"a"]


# ---------------------------------------------------------------------------
# clear_pattern
# ---------------------------------------------------------------------------


def test_clear_pattern_stays_inside_the_namespace(redis: RedisServer) -> None:
    for key in ("app:a1", "app:a2", "app:b1", "other:a1", "a1", "app", "apple:a1", "xapp:a1"):
        redis.raw_command("SET", key, "1")
    with SyncRedisCache(port=redis.port, namespace="app") as c:
        assert c.clear_pattern("a*") == 2
        assert c.clear_pattern("a*") == 0
        assert c.exists("b1") is True
        assert c.clear_pattern(b"*") == 1  # bytes patterns work too
    assert keys(redis) == [b"a1", b"app", b"apple:a1", b"other:a1", b"xapp:a1"]


def test_clear_pattern_without_namespace_uses_the_plain_pattern(
    cache: SyncRedisCache, redis: RedisServer
) -> None:
    cache.set_many({"user:1": 1, "user:2": 2, "session:1": 3})
    assert cache.clear_pattern("user:*") == 2
    assert keys(redis) == [b"session:1"]


@pytest.mark.parametrize(
    ("namespace", "mine", "others"),
    [
        ("a*", [b"a*:x", b"a*:y"], [b"ab:x", b"a:x", b"a*b:x", b"aa*:x"]),
        ("q?", [b"q?:x"], [b"qq:x", b"q:x"]),
        ("[ab]", [b"[ab]:x"], [b"a:x", b"b:x"]),
        ("back\\slash", [b"back\\slash:x"], [b"backslash:x"]),
        ("n\u00e9", ["n\u00e9:x".encode()], [b"n:x"]),
    ],
    ids=["star", "question", "brackets", "backslash", "non-ascii"],
)
def test_clear_pattern_escapes_glob_characters_of_the_namespace(
    redis: RedisServer, namespace: str, mine: list[bytes], others: list[bytes]
) -> None:
    for key in mine + others:
        redis.raw_command("SET", key, "1")
    with SyncRedisCache(port=redis.port, namespace=namespace) as c:
        assert c.clear_pattern("*") == len(mine)
    assert keys(redis) == sorted(others)


def test_clear_pattern_over_100k_keys(debug_server: RedisServer) -> None:
    debug_server.flushall()
    assert raw(debug_server, "DEBUG", "POPULATE", "100000", "ns:key") == "OK"
    assert raw(debug_server, "DEBUG", "POPULATE", "50", "other:key") == "OK"
    assert dbsize(debug_server) == 100_050
    started = time.monotonic()
    with SyncRedisCache(port=debug_server.port, namespace="ns") as c:
        assert c.clear_pattern("*") == 100_000
        assert c.clear_pattern("*") == 0
    assert time.monotonic() - started < 5
    assert keys(debug_server, "ns:*") == []
    assert dbsize(debug_server) == 50


# ---------------------------------------------------------------------------
# incr
# ---------------------------------------------------------------------------


def test_incr(ns_cache: SyncRedisCache, redis: RedisServer) -> None:
    assert ns_cache.incr("n") == 1
    assert ns_cache.incr("n") == 2
    assert ns_cache.incr("n", 10) == 12
    assert ns_cache.incr("n", amount=-20) == -8
    assert ns_cache.incr("n", 0) == -8
    assert raw(redis, "GET", "app:n") == b"-8"
    assert ns_cache.get("n") == -8


def test_incr_on_a_json_int_written_by_set(cache: SyncRedisCache) -> None:
    cache.set("n", 41, ttl=60)
    assert cache.incr("n") == 42
    assert cache.get("n") == 42
    assert 59 <= cache.ttl("n") <= 60  # INCRBY keeps the expiry
    cache.set("big", 2**62)
    assert cache.incr("big", 2**62 - 1) == 2**63 - 1


@pytest.mark.parametrize("value", ["abc", 1.5, 5.0, [1], 10**40], ids=repr)
def test_incr_on_a_non_integer_value_is_a_response_error(
    cache: SyncRedisCache, value: object
) -> None:
    cache.set("k", value)
    with pytest.raises(ResponseError, match="not an integer"):
        cache.incr("k")
    assert cache.get("k") == value  # untouched
    assert cache.ping() is True  # and the connection is still usable


def test_incr_overflow_is_a_response_error(cache: SyncRedisCache) -> None:
    cache.set("k", 2**63 - 1)
    with pytest.raises(ResponseError, match="overflow"):
        cache.incr("k")
    assert cache.get("k") == 2**63 - 1


# ---------------------------------------------------------------------------
# ping / execute_command
# ---------------------------------------------------------------------------


def test_ping(cache: SyncRedisCache) -> None:
    assert cache.ping() is True


def test_execute_command_returns_raw_reply_types(ns_cache: SyncRedisCache) -> None:
    status = ns_cache.execute_command("SET", "plain", "v")
    assert status == "OK" and type(status) is str
    assert ns_cache.execute_command("GET", "plain") == b"v"
    assert ns_cache.execute_command(b"GET", b"missing") is None
    assert ns_cache.execute_command("INCRBY", "n", 5) == 5
    assert ns_cache.execute_command("INCRBYFLOAT", "f", 0.5) == b"0.5"
    assert ns_cache.execute_command("RPUSH", "l", "a", b"b\x00", 3) == 3
    assert ns_cache.execute_command("LRANGE", "l", 0, -1) == [b"a", b"b\x00", b"3"]
    assert ns_cache.execute_command("LRANGE", "empty", 0, -1) == []
    assert ns_cache.execute_command("PING") == "PONG"


def test_execute_command_applies_no_namespace_and_no_codec(
    ns_cache: SyncRedisCache, redis: RedisServer
) -> None:
    ns_cache.set("k", {"a": 1})
    assert ns_cache.execute_command("GET", "app:k") == b'{"a":1}'
    ns_cache.execute_command("SET", "k", "raw")
    assert keys(redis) == [b"app:k", b"k"]
    assert ns_cache.get("k") == {"a": 1}


def test_execute_command_error_reply_raises_and_keeps_the_connection(
    cache: SyncRedisCache,
) -> None:
    with pytest.raises(ResponseError, match="^ERR unknown command") as info:
        cache.execute_command("NOSUCHCOMMAND", "x")
    assert isinstance(info.value, RedisCacheError)
    cache.execute_command("HSET", "h", "f", "v")
    with pytest.raises(ResponseError, match="^WRONGTYPE"):
        cache.get("h")
    assert cache.ping() is True
    assert cache.execute_command("HGET", "h", "f") == b"v"


# ---------------------------------------------------------------------------
# close / with / repr
# ---------------------------------------------------------------------------


def test_with_block_closes_and_use_after_close_raises(redis: RedisServer) -> None:
    with SyncRedisCache(port=redis.port) as c:
        assert c.closed is False
        assert c.set("k", 1) is True
    assert c.closed is True
    for call in (lambda: c.get("k"), lambda: c.set("k", 2), c.ping, lambda: c.get_many(["k"])):
        with pytest.raises(ConnectionError, match="closed"):
            call()
    assert raw(redis, "GET", "k") == b"1"
    c.close()  # closing twice is harmless
    assert c.closed is True


def test_close_without_any_use(redis: RedisServer) -> None:
    c = SyncRedisCache(port=redis.port)
    c.close()
    assert c.closed is True
    with pytest.raises(ConnectionError):
        c.ping()


def test_close_releases_server_connections(redis: RedisServer) -> None:
    def clients_named(name: str) -> int:
        listing = raw(redis, "CLIENT", "LIST")
        assert isinstance(listing, bytes)
        return listing.count(f"name={name} ".encode())

    c = SyncRedisCache(port=redis.port, client_name="closing-test")
    c.ping()
    assert clients_named("closing-test") == 1
    c.close()
    # The server notices the closed socket asynchronously; poll briefly.
    deadline = time.monotonic() + 5
    while clients_named("closing-test") and time.monotonic() < deadline:
        pass
    assert clients_named("closing-test") == 0


def test_repr(redis: RedisServer) -> None:
    with SyncRedisCache(host="127.0.0.1", port=redis.port, db=2, namespace="app") as c:
        assert repr(c) == f"<SyncRedisCache redis://127.0.0.1:{redis.port}/2 namespace='app' open>"
        assert c.namespace == "app"
    assert repr(c).endswith(" closed>")


def test_repr_never_shows_the_password(pw_server: RedisServer) -> None:
    for c in (
        SyncRedisCache(port=pw_server.port, password=PASSWORD),
        SyncRedisCache.from_url(pw_server.url),
    ):
        with c:
            assert c.ping() is True
            for text in (repr(c), str(c), repr(c.settings), c.settings.describe()):
                assert PASSWORD not in text
        assert PASSWORD not in repr(c)


# ---------------------------------------------------------------------------
# connections
# ---------------------------------------------------------------------------


def test_tcp_host_and_port(redis: RedisServer) -> None:
    with SyncRedisCache(host="127.0.0.1", port=redis.port) as c:
        assert c.set("k", "tcp") is True
    assert raw(redis, "GET", "k") == b'"tcp"'


def test_ipv6(redis: RedisServer) -> None:
    if not redis.ipv6:
        pytest.skip("::1 is not available on this machine")
    with SyncRedisCache(host="::1", port=redis.port, client_name="over-v6") as c:
        assert c.set("k", "v6") is True
        listing = c.execute_command("CLIENT", "INFO")
    assert b"addr=[::1]:" in listing and b"name=over-v6" in listing
    assert raw(redis, "GET", "k") == b'"v6"'
    with SyncRedisCache.from_url(redis.url6) as c:  # type: ignore[arg-type]
        assert c.get("k") == "v6"


def test_unix_socket(redis: RedisServer) -> None:
    for path in (redis.unix_socket_path, pathlib.Path(redis.unix_socket_path)):
        with SyncRedisCache(unix_socket_path=path, client_name="over-unix") as c:
            assert c.set("k", str(path)) is True
            listing = c.execute_command("CLIENT", "INFO")
            assert b"flags=U" in listing  # U: a unix socket client
    assert raw(redis, "GET", "k") == f'"{redis.unix_socket_path}"'.encode()


def test_from_url_redis_and_unix(redis: RedisServer) -> None:
    with SyncRedisCache.from_url(redis.url) as c:
        c.set("k", "tcp")
    with SyncRedisCache.from_url(redis.unix_url) as c:
        assert c.get("k") == "tcp"
        assert b"flags=U" in c.execute_command("CLIENT", "INFO")
    with SyncRedisCache.from_url(f"redis://127.0.0.1:{redis.port}/4?client_name=from-url") as c:
        c.set("in4", 1)
        info = c.execute_command("CLIENT", "INFO")
        assert b"db=4" in info and b"name=from-url" in info
    with SyncRedisCache.from_url(f"unix://{redis.unix_socket_path}?db=5") as c:
        c.set("in5", 1)
    assert redis.cli("-n", "4", "GET", "in4") == "1"
    assert redis.cli("-n", "5", "GET", "in5") == "1"
    assert raw(redis, "EXISTS", "in4", "in5") == 0


def test_from_url_keyword_options_override_the_url(redis: RedisServer) -> None:
    with SyncRedisCache.from_url(f"redis://127.0.0.1:{redis.port}/4", db=0, namespace="u") as c:
        assert c.namespace == "u"
        c.set("k", 1)
    assert keys(redis) == [b"u:k"]


def test_from_env(redis: RedisServer) -> None:
    with SyncRedisCache.from_env({"REDIS_URL": redis.url, "REDIS_DB": "6"}) as c:
        c.set("k", "env")
    assert redis.cli("-n", "6", "GET", "k") == '"env"'
    env = {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(redis.port)}
    with SyncRedisCache.from_env(env, namespace="e") as c:
        c.set("k", 1)
    with SyncRedisCache.from_env({"REDIS_SOCKET_PATH": redis.unix_socket_path}) as c:
        assert c.get("e:k") == 1
        assert b"flags=U" in c.execute_command("CLIENT", "INFO")


def test_from_env_ignores_os_environ_when_a_mapping_is_given(
    redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens there
    with SyncRedisCache.from_env({"REDIS_URL": redis.url}) as c:
        assert c.ping() is True


def test_db_selection_isolates_databases(redis: RedisServer) -> None:
    with SyncRedisCache(port=redis.port, db=3) as c3, SyncRedisCache(port=redis.port) as c0:
        c3.set("k", "in3")
        assert c0.get("k") is None
        assert c0.exists("k") is False
        c0.set("k", "in0")
        assert c3.get("k") == "in3"
    assert redis.cli("-n", "3", "GET", "k") == '"in3"'
    assert raw(redis, "GET", "k") == b'"in0"'


def test_client_name_is_visible_in_client_list(redis: RedisServer) -> None:
    with SyncRedisCache(port=redis.port, client_name="my-cache-1") as c:
        c.ping()  # connections open lazily
        assert c.execute_command("CLIENT", "GETNAME") == b"my-cache-1"
        assert "name=my-cache-1 " in redis.cli("CLIENT", "LIST")


def test_password_auth(pw_server: RedisServer) -> None:
    with SyncRedisCache(port=pw_server.port, password=PASSWORD, db=1) as c:
        assert c.set("k", "secret-ok") is True
        assert c.get("k") == "secret-ok"
    assert pw_server.cli("-n", "1", "GET", "k") == '"secret-ok"'
    with SyncRedisCache.from_url(pw_server.unix_url + "?db=1") as c:
        assert c.get("k") == "secret-ok"


def test_acl_user_auth(acl: RedisServer) -> None:
    with SyncRedisCache(port=acl.port, username=ACL_USER, password=ACL_PASSWORD) as c:
        assert c.execute_command("ACL", "WHOAMI") == ACL_USER.encode()
        assert c.set("k", 1) is True
    with SyncRedisCache.from_url(acl.url) as c:
        assert c.get("k") == 1
    assert raw(acl, "GET", "k") == b"1"


def test_auth_select_and_client_name_together(acl: RedisServer) -> None:
    with SyncRedisCache(
        port=acl.port, username=ACL_USER, password=ACL_PASSWORD, db=2, client_name="alice-app"
    ) as c:
        c.set("k", "in2")
        info = c.execute_command("CLIENT", "INFO")
    assert b"user=alice" in info and b"db=2" in info and b"name=alice-app" in info
    assert acl.cli("-n", "2", "GET", "k") == '"in2"'
    assert dbsize(acl) == 0


def test_db_out_of_range_is_a_connection_error(redis: RedisServer) -> None:
    with SyncRedisCache(port=redis.port, db=99) as c:
        with pytest.raises(ConnectionError, match="SELECT.*out of range") as info:
            c.set("k", 1)
    assert not isinstance(info.value, AuthenticationError)
    assert dbsize(redis) == 0


def test_failed_select_with_client_name_is_a_connection_error(redis: RedisServer) -> None:
    with SyncRedisCache(port=redis.port, db=99, client_name="after-select") as c:
        with pytest.raises(ConnectionError, match="SELECT"):
            c.ping()


@pytest.mark.parametrize(
    "options",
    [{"db": 3}, {"client_name": "named"}, {"db": 1, "client_name": "both"}],
    ids=["db", "client_name", "both"],
)
def test_wrong_password_with_db_or_client_name_is_an_authentication_error(
    pw_server: RedisServer, acl: RedisServer, options: dict[str, object]
) -> None:
    with SyncRedisCache(port=pw_server.port, password="wrong-Pa55word", **options) as c:
        with pytest.raises(AuthenticationError, match="WRONGPASS"):
            c.ping()
    with SyncRedisCache(port=acl.port, username=ACL_USER, password="wrong", **options) as c:
        with pytest.raises(AuthenticationError, match="WRONGPASS"):
            c.ping()


@pytest.mark.parametrize(
    "options",
    [
        {"password": "wrong-Pa55word"},
        {"username": ACL_USER, "password": "wrong-Pa55word"},
    ],
    ids=["password", "acl-user"],
)
def test_wrong_credentials_raise_authentication_error_without_the_password(
    password_server: RedisServer, acl_server: RedisServer, options: dict[str, str]
) -> None:
    server = acl_server if "username" in options else password_server
    with SyncRedisCache(port=server.port, **options) as c:
        with pytest.raises(AuthenticationError) as info:
            c.ping()
    exc = info.value
    assert isinstance(exc, ConnectionError) and isinstance(exc, builtins.ConnectionError)
    assert "WRONGPASS" in str(exc)
    for text in (str(exc), repr(exc), repr(exc.args)):
        assert "wrong-Pa55word" not in text
    assert exc.__cause__ is None and exc.__context__ is None


def test_wrong_password_in_url(password_server: RedisServer) -> None:
    url = f"redis://:wrong-Pa55word@127.0.0.1:{password_server.port}/0"
    with SyncRedisCache.from_url(url) as c:
        with pytest.raises(AuthenticationError) as info:
            c.get("k")
    assert "wrong-Pa55word" not in str(info.value) + repr(info.value)


def test_missing_password_is_refused(pw_server: RedisServer) -> None:
    with SyncRedisCache(port=pw_server.port) as c:
        with pytest.raises(RedisCacheError, match="NOAUTH"):
            c.set("k", 1)
    assert dbsize(pw_server) == 0


def test_connection_refused_fails_fast() -> None:
    started = time.monotonic()
    with dead_port_cache() as c:
        with pytest.raises(ConnectionError, match="refused") as info:
            c.ping()
    assert time.monotonic() - started < 1.0
    assert isinstance(info.value, builtins.ConnectionError)
    assert isinstance(info.value, OSError)


def test_unknown_host_is_a_connection_error() -> None:
    with SyncRedisCache(host="no-such-host.invalid", port=6379) as c:
        with pytest.raises(ConnectionError, match="no-such-host.invalid"):
            c.ping()


def test_missing_unix_socket_is_a_connection_error(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "nothing.sock"
    with SyncRedisCache(unix_socket_path=path) as c:
        with pytest.raises(ConnectionError, match="nothing.sock"):
            c.ping()


def test_tls_settings_openssl_refuses_are_configuration_errors(tmp_path: Any) -> None:
    missing = tmp_path / "no-such-ca.pem"
    with pytest.raises(ConfigurationError, match="cannot load ssl_ca_certs"):
        SyncRedisCache.from_url(f"rediss://localhost:6380/0?ssl_ca_certs={missing}")
    with pytest.raises(ConfigurationError, match="ssl_ca_data holds no PEM certificate"):
        SyncRedisCache(ssl=True, ssl_ca_data="not a certificate")


# ---------------------------------------------------------------------------
# values
# ---------------------------------------------------------------------------


@pytest.fixture
def raw_cache(redis: RedisServer) -> Iterator[SyncRedisCache]:
    with SyncRedisCache(port=redis.port, serializer="raw") as c:
        yield c


@pytest.mark.parametrize(
    "value",
    [
        bytes(range(256)),
        b"\x00",
        b"a\r\nb\r\n",
        b"\r\n$3\r\nfoo\r\n",  # looks like RESP framing
        b"*1\r\n$4\r\nPING\r\n",
        b"",
        b"\xff\xfe\x00\x00",
    ],
    ids=["all-bytes", "nul", "crlf", "bulk-lookalike", "command-lookalike", "empty", "bom"],
)
def test_raw_serializer_is_binary_safe(
    raw_cache: SyncRedisCache, redis: RedisServer, value: bytes
) -> None:
    assert raw_cache.set("k", value) is True
    got = raw_cache.get("k")
    assert got == value and type(got) is bytes
    assert raw(redis, "GET", "k") == value
    assert raw(redis, "STRLEN", "k") == len(value)
    assert raw_cache.get_many(["k"]) == {"k": value}


def test_raw_serializer_accepts_bytes_like_and_str(raw_cache: SyncRedisCache) -> None:
    raw_cache.set("ba", bytearray(b"\x00ba"))
    raw_cache.set("mv", memoryview(b"\x00mv"))
    raw_cache.set("s", "caf\u00e9")
    assert raw_cache.get_many(["ba", "mv", "s"]) == {
        "ba": b"\x00ba",
        "mv": b"\x00mv",
        "s": "caf\u00e9".encode(),
    }


def test_binary_keys(raw_cache: SyncRedisCache, redis: RedisServer) -> None:
    key = bytes(range(256))
    raw_cache.set(key, b"v")
    assert raw_cache.get(key) == b"v"
    assert keys(redis) == [key]


@pytest.mark.parametrize(
    "key",
    ["\U0001f511", "\u952e", "\u30ad\u30fc \U0001f600", "caf\u00e9", "a b\tc\nd"],
    ids=["emoji", "cjk", "mixed", "latin1", "whitespace"],
)
def test_unicode_keys_and_values(redis: RedisServer, key: str) -> None:
    value = {"\u540d\u524d": "\U0001f600" + key, "list": ["\u00e9", "\u2028"]}
    with SyncRedisCache(port=redis.port, namespace="\u540d") as c:
        assert c.set(key, value) is True
        assert c.get(key) == value
        assert c.exists(key) is True
        assert c.get_many([key]) == {key: value}
    # Stored as the UTF-8 of "namespace:key".
    assert keys(redis) == [f"\u540d:{key}".encode()]


JSON_VALUES = [
    {"a": {"b": [1, 2, {"c": None}]}, "d": []},
    [1, "two", 3.0, None, True, False, [], {}],
    10**40,
    -(10**40),
    2**63,
    -(2**63) - 1,
    2**63 - 1,
    -5,
    0,
    1e-300,
    0.1,
    -2.5,
    1e300,
    5e-324,
    1.0,
    -0.0,
    True,
    False,
    None,
    {},
    [],
    "",
    'quotes " and \' and `',
    "back\\slash \\u0041 \\n",
    "".join(map(chr, range(32))) + "\x7f",
    "\u2028\u2029",
    "emoji \U0001f600 cjk \u4e2d\u6587 \u00e9 \U0010ffff",
    "\ufeffbom",
    {"": "", "\u00e9": {"\U0001f511": ["x"]}},
]


@pytest.mark.parametrize("value", JSON_VALUES, ids=[f"v{i}" for i in range(len(JSON_VALUES))])
def test_json_round_trip(cache: SyncRedisCache, value: object) -> None:
    assert cache.set("k", value) is True
    got = cache.get("k")
    assert got == value
    assert type(got) is type(value)
    assert repr(got) == repr(value)  # -0.0 stays -0.0, 1.0 stays a float


def test_json_tuples_come_back_as_lists(cache: SyncRedisCache) -> None:
    cache.set("k", (1, (2, 3), {"t": ()}))
    assert cache.get("k") == [1, [2, 3], {"t": []}]


def test_json_deep_but_finite_nesting(cache: SyncRedisCache) -> None:
    value: list[object] = []
    for _ in range(200):
        value = [value]
    cache.set("k", value)
    assert cache.get("k") == value


def test_ten_megabyte_values(
    cache: SyncRedisCache, raw_cache: SyncRedisCache, redis: RedisServer
) -> None:
    blob = os.urandom(10 * 1024 * 1024)
    assert raw_cache.set("blob", blob) is True
    assert raw_cache.get("blob") == blob
    text = "x\u00e9\U0001f600\"\\" * (2 * 1024 * 1024)  # ~19 MB of escaped UTF-8 JSON
    assert cache.set("text", text) is True
    assert cache.get("text") == text
    ascii_text = "a" * (10 * 1024 * 1024)
    assert cache.set("ascii", ascii_text) is True
    assert cache.get("ascii") == ascii_text
    assert raw(redis, "STRLEN", "ascii") == 10 * 1024 * 1024 + 2
    assert cache.ping() is True  # the stream is still in step


def test_custom_serializer_object(redis: RedisServer) -> None:
    value = {"set": {1, 2}, "tuple": (1, "a"), b"bytes-key": 3.5, "none": None}
    with SyncRedisCache(port=redis.port, serializer=pickle, namespace="p") as c:
        assert c.set("k", value) is True
        got = c.get("k")
        assert got == value and isinstance(got["tuple"], tuple)
        assert c.get_many(["k", "missing"]) == {"k": value}
        assert c.get("missing", "dflt") == "dflt"
    stored = raw(redis, "GET", "p:k")
    assert isinstance(stored, bytes) and pickle.loads(stored) == value


def test_custom_serializer_whose_dumps_raises(redis: RedisServer) -> None:
    class Exploding:
        @staticmethod
        def dumps(value: object) -> bytes:
            raise RuntimeError("dumps exploded")

        @staticmethod
        def loads(data: bytes) -> object:
            return data

    with SyncRedisCache(port=redis.port, serializer=Exploding()) as c:
        with pytest.raises(SerializationError, match="dumps exploded") as info:
            c.set("k", 1)
        assert isinstance(info.value.__cause__, RuntimeError)
        with pytest.raises(SerializationError):
            c.set_many({"a": 1, "b": 2})
        assert c.ping() is True
    assert dbsize(redis) == 0


def test_custom_serializer_whose_loads_raises(redis: RedisServer) -> None:
    class BadLoads:
        dumps = staticmethod(lambda value: b"stored")

        @staticmethod
        def loads(data: bytes) -> object:
            raise KeyError("cannot load")

    with SyncRedisCache(port=redis.port, serializer=BadLoads) as c:
        c.set("k", 1)
        with pytest.raises(SerializationError, match="loads") as info:
            c.get("k")
        assert isinstance(info.value.__cause__, KeyError)
        assert c.get("missing", 7) == 7  # loads is not called for a missing key
        assert c.execute_command("GET", "k") == b"stored"


def test_undecodable_stored_value_raises_and_keeps_the_connection(
    cache: SyncRedisCache, redis: RedisServer
) -> None:
    redis.raw_command("SET", "junk", "not json")
    cache.set("good", [1])
    with pytest.raises(SerializationError, match="invalid JSON"):
        cache.get("junk")
    with pytest.raises(SerializationError, match="invalid JSON"):
        cache.get_many(["good", "junk"])
    assert cache.get("good") == [1]  # replies stay in step
    assert cache.get_many(["good"]) == {"good": [1]}


# ---------------------------------------------------------------------------
# namespaces
# ---------------------------------------------------------------------------


def test_namespaces_are_isolated(redis: RedisServer) -> None:
    with (
        SyncRedisCache(port=redis.port, namespace="one") as one,
        SyncRedisCache(port=redis.port, namespace="two") as two,
        SyncRedisCache(port=redis.port) as bare,
    ):
        one.set("k", "from-one")
        two.set("k", "from-two")
        assert one.get("k") == "from-one"
        assert two.get("k") == "from-two"
        assert bare.get("k") is None
        assert bare.get("one:k") == "from-one"
        assert one.delete("k") is True
        assert two.exists("k") is True
        assert two.get_many(["k", "one:k"]) == {"k": "from-two"}
        assert one.incr("n") == 1 and two.get("n") is None
    assert keys(redis) == [b"one:n", b"two:k"]
    assert redis.cli("GET", "two:k") == '"from-two"'


def test_empty_namespace_means_none(redis: RedisServer) -> None:
    with SyncRedisCache(port=redis.port, namespace="") as c:
        assert c.namespace is None
        c.set("k", 1)
    assert keys(redis) == [b"k"]


def test_key_prefix_is_namespace_colon(redis: RedisServer) -> None:
    with SyncRedisCache(port=redis.port, namespace="a:b") as c:
        c.set("c", 1)
        assert c._key_prefix == b"a:b:"
    assert keys(redis) == [b"a:b:c"]


def test_default_ttl_is_per_cache(redis: RedisServer) -> None:
    with (
        SyncRedisCache(port=redis.port, namespace="short", default_ttl=5) as short,
        SyncRedisCache(port=redis.port, namespace="long") as long,
    ):
        short.set("k", 1)
        long.set("k", 1)
    assert 4_000 < pttl(redis, "short:k") <= 5_000
    assert pttl(redis, "long:k") == -1

