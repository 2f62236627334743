"""Input SyncRedisCache must refuse: each call fails with a clear error, and
nothing reaches the server (checked with DBSIZE / the raw protocol).

Every test runs on a cache with a single pooled connection and a short pool
timeout, so a refused call that forgot to give its connection back, or left
half a command in it, shows up as a PoolTimeout or a wrong reply in the
``assert_still_usable`` check that follows.
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from redis_raw import dbsize, keys, raw

from redis_cache import (
    ConfigurationError,
    RedisCacheError,
    SerializationError,
    SyncRedisCache,
)
from redis_cache.testing import RedisServer


@pytest.fixture
def cache(redis: RedisServer) -> Iterator[SyncRedisCache]:
    with SyncRedisCache(port=redis.port, max_connections=1, pool_timeout=0.5) as c:
        yield c


def assert_nothing_written(redis: RedisServer) -> None:
    assert dbsize(redis) == 0


def assert_still_usable(cache: SyncRedisCache) -> None:
    """The single connection came back to the pool with nothing left in it."""
    assert cache.set("probe", [1, "ok"]) is True
    assert cache.get("probe") == [1, "ok"]
    assert cache.delete("probe") is True


# ---------------------------------------------------------------------------
# keys
# ---------------------------------------------------------------------------

BAD_KEYS = [1, None, ("a", "b"), 1.5, ["k"], bytearray(b"k")]

KEY_CALLS: dict[str, Callable[[SyncRedisCache, Any], object]] = {
    "get": lambda c, k: c.get(k),
    "set": lambda c, k: c.set(k, 1),
    "delete": lambda c, k: c.delete(k),
    "exists": lambda c, k: c.exists(k),
    "expire": lambda c, k: c.expire(k, 10),
    "ttl": lambda c, k: c.ttl(k),
    "incr": lambda c, k: c.incr(k),
    "get_many": lambda c, k: c.get_many(["ok", k]),
    "delete_many": lambda c, k: c.delete_many(["ok", k]),
    "set_many": lambda c, k: c.set_many({"ok": 1, k: 2, "ok2": 3}),
}


def _hashable(value: object) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


@pytest.mark.parametrize(
    ("method", "key"),
    [
        pytest.param(method, key, id=f"{method}-{key!r}")
        for method in sorted(KEY_CALLS)
        for key in BAD_KEYS
        if method != "set_many" or _hashable(key)  # a dict cannot hold the others
    ],
)
def test_non_str_bytes_key_is_a_type_error(
    cache: SyncRedisCache, redis: RedisServer, method: str, key: object
) -> None:
    with pytest.raises(TypeError, match=f"keys must be str or bytes, not {type(key).__name__}"):
        KEY_CALLS[method](cache, key)
    assert_nothing_written(redis)
    assert_still_usable(cache)


def test_key_with_a_lone_surrogate_is_refused(cache: SyncRedisCache, redis: RedisServer) -> None:
    with pytest.raises(ValueError, match="surrogate"):  # UnicodeEncodeError
        cache.set("k\ud800", 1)
    assert_nothing_written(redis)
    assert_still_usable(cache)


@pytest.mark.parametrize("pattern", [1, None, ["*"]], ids=repr)
def test_clear_pattern_needs_str_or_bytes(
    cache: SyncRedisCache, redis: RedisServer, pattern: object
) -> None:
    redis.raw_command("SET", "k", "1")
    with pytest.raises(TypeError, match="pattern must be str or bytes"):
        cache.clear_pattern(pattern)  # type: ignore[arg-type]
    assert keys(redis) == [b"k"]


@pytest.mark.parametrize("keys_arg", ["abc", b"abc"], ids=repr)
@pytest.mark.parametrize("method", ["get_many", "delete_many"])
def test_a_single_key_instead_of_a_list_is_a_type_error(
    cache: SyncRedisCache, redis: RedisServer, method: str, keys_arg: object
) -> None:
    redis.raw_command("SET", "a", "1")  # would be deleted if "abc" were iterated
    with pytest.raises(TypeError, match="not a single"):
        getattr(cache, method)(keys_arg)
    assert keys(redis) == [b"a"]
    assert_still_usable(cache)


@pytest.mark.parametrize("keys_arg", [None, 5, 1.5], ids=repr)
@pytest.mark.parametrize("method", ["get_many", "delete_many"])
def test_keys_must_be_iterable(cache: SyncRedisCache, method: str, keys_arg: object) -> None:
    with pytest.raises(TypeError, match="iterable"):
        getattr(cache, method)(keys_arg)
    assert_still_usable(cache)


# ---------------------------------------------------------------------------
# values the JSON serializer cannot encode
# ---------------------------------------------------------------------------


class Opaque:
    pass


@pytest.mark.parametrize(
    ("value", "type_text", "path"),
    [
        (1 + 2j, "'complex'", None),
        (object(), "'object'", None),
        (Opaque(), "'Opaque'", None),
        (b"bytes", "'bytes'", None),
        (float("nan"), "float nan", None),
        (float("inf"), "float inf", None),
        ({1: "int key"}, "dict key of type 'int'", None),
        ("lone \ud800 surrogate", "lone surrogate", None),
        ({"a": [0, b"raw"]}, "'bytes'", "value['a'][1]"),
        ({"a": [0, {"b": float("-inf")}]}, "float -inf", "value['a'][1]['b']"),
        ([[0, 1], [2, {3: 4}]], "dict key of type 'int'", "value[1][1]"),
        ({"a": ("x", "\udc00")}, "lone surrogate", "value['a'][1]"),
        ({"it's": [object()]}, "'object'", "value[\"it's\"][0]"),
    ],
    ids=lambda v: repr(v)[:30],
)
def test_value_json_cannot_encode_is_a_serialization_error(
    cache: SyncRedisCache, redis: RedisServer, value: object, type_text: str, path: str | None
) -> None:
    with pytest.raises(SerializationError) as info:
        cache.set("k", value)
    message = str(info.value)
    assert type_text in message
    if path is None:
        assert "(at value" not in message
    else:
        assert message.endswith(f"(at {path})")
    assert isinstance(info.value, ValueError)
    assert_nothing_written(redis)
    assert_still_usable(cache)


def test_lone_surrogate_message_names_the_code_point_and_index(cache: SyncRedisCache) -> None:
    with pytest.raises(SerializationError) as info:
        cache.set("k", "ab\ud800")
    assert "%" not in str(info.value)
    assert "U+D800" in str(info.value).upper()
    assert "index 2" in str(info.value)


def test_int_too_long_for_str_is_a_serialization_error(
    cache: SyncRedisCache, redis: RedisServer
) -> None:
    with pytest.raises(SerializationError, match=r"at value\['n'\]"):
        cache.set("k", {"n": 10**5000})
    assert_nothing_written(redis)


def test_circular_reference_is_a_serialization_error(
    cache: SyncRedisCache, redis: RedisServer
) -> None:
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(SerializationError, match="circular reference"):
        cache.set("k", loop)
    cyclic: dict[str, object] = {}
    cyclic["self"] = cyclic
    with pytest.raises(SerializationError, match=r"circular reference.*value\['self'\]"):
        cache.set("k", cyclic)
    assert_nothing_written(redis)
    assert_still_usable(cache)


def test_raw_serializer_refuses_non_bytes(redis: RedisServer) -> None:
    with SyncRedisCache(port=redis.port, serializer="raw") as c:
        for value in (1, None, {"a": 1}, 1.5):
            with pytest.raises(SerializationError, match=type(value).__name__):
                c.set("k", value)
        assert c.ping() is True
    assert_nothing_written(redis)


def test_custom_serializer_dumps_returning_non_bytes(redis: RedisServer) -> None:
    class ToInt:
        dumps = staticmethod(lambda value: 42)
        loads = staticmethod(lambda data: data)

    with SyncRedisCache(port=redis.port, serializer=ToInt) as c:
        with pytest.raises(SerializationError, match="dumps.*'int'"):
            c.set("k", "v")
        assert c.ping() is True
    assert_nothing_written(redis)


@pytest.mark.parametrize(
    "serializer", ["yaml", "JSON", object(), None, 5], ids=repr
)
def test_unknown_serializer_is_a_configuration_error(
    redis: RedisServer, serializer: object
) -> None:
    with pytest.raises(ConfigurationError, match="serializer"):
        SyncRedisCache(port=redis.port, serializer=serializer)


@pytest.mark.parametrize("namespace", [5, b"ns", ["ns"]], ids=repr)
def test_non_str_namespace_is_a_configuration_error(
    redis: RedisServer, namespace: object
) -> None:
    with pytest.raises(ConfigurationError, match="namespace"):
        SyncRedisCache(port=redis.port, namespace=namespace)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# TTLs
# ---------------------------------------------------------------------------

BAD_TTLS = [
    (0, ValueError),
    (0.0, ValueError),
    (-1, ValueError),
    (-0.5, ValueError),
    (float("nan"), ValueError),
    (float("inf"), ValueError),
    (float("-inf"), ValueError),
    (timedelta(0), ValueError),
    (timedelta(seconds=-5), ValueError),
    (10**30, ValueError),
    (1e300, ValueError),
    (True, TypeError),
    (False, TypeError),
    ("10", TypeError),
    (b"10", TypeError),
    ([10], TypeError),
]


BAD_TTL_IDS = [repr(ttl) for ttl, _ in BAD_TTLS]


@pytest.mark.parametrize(("ttl", "error"), BAD_TTLS, ids=BAD_TTL_IDS)
def test_bad_ttl_is_refused_by_set_set_many_and_expire(
    cache: SyncRedisCache, redis: RedisServer, ttl: object, error: type[Exception]
) -> None:
    with pytest.raises(error, match="ttl"):
        cache.set("k", 1, ttl=ttl)
    with pytest.raises(error, match="ttl"):
        cache.set_many({"a": 1, "b": 2}, ttl=ttl)
    assert_nothing_written(redis)
    redis.raw_command("SET", "e", "1")
    with pytest.raises(error, match="ttl"):
        cache.expire("e", ttl)
    assert raw(redis, "PTTL", "e") == -1
    assert_still_usable(cache)


def test_expire_needs_a_ttl(cache: SyncRedisCache, redis: RedisServer) -> None:
    redis.raw_command("SET", "e", "1")
    with pytest.raises(ValueError, match="needs a ttl"):
        cache.expire("e", None)
    with pytest.raises(TypeError):
        cache.expire("e")  # type: ignore[call-arg]
    assert raw(redis, "PTTL", "e") == -1


@pytest.mark.parametrize(("ttl", "error"), BAD_TTLS, ids=BAD_TTL_IDS)
def test_bad_default_ttl_is_refused_at_construction(
    redis: RedisServer, ttl: object, error: type[Exception]
) -> None:
    # A setting, so a ConfigurationError whatever the ttl's own error would be.
    with pytest.raises(ConfigurationError, match="default_ttl"):
        SyncRedisCache(port=redis.port, default_ttl=ttl)


# ---------------------------------------------------------------------------
# set_many: all or nothing
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [1 + 2j, float("nan"), object(), {"deep": [1, {2: 3}]}],
    ids=["complex", "nan", "object", "nested-int-key"],
)
def test_set_many_with_one_bad_value_in_the_middle_writes_nothing(
    cache: SyncRedisCache, redis: RedisServer, bad: object
) -> None:
    batch = {f"k{i}": i for i in range(50)}
    batch["k25"] = bad
    with pytest.raises(SerializationError):
        cache.set_many(batch)
    assert_nothing_written(redis)
    assert_still_usable(cache)


def test_set_many_with_one_bad_key_in_the_middle_writes_nothing(
    cache: SyncRedisCache, redis: RedisServer
) -> None:
    with pytest.raises(TypeError):
        cache.set_many({"a": 1, 2: "b", "c": 3})
    assert_nothing_written(redis)
    assert_still_usable(cache)


@pytest.mark.parametrize("mapping", [[("a", 1)], "ab", 5, None], ids=repr)
def test_set_many_needs_a_mapping(
    cache: SyncRedisCache, redis: RedisServer, mapping: object
) -> None:
    with pytest.raises(TypeError, match="mapping"):
        cache.set_many(mapping)  # type: ignore[arg-type]
    assert_nothing_written(redis)
    assert_still_usable(cache)


def test_get_many_with_one_bad_key_sends_nothing(cache: SyncRedisCache) -> None:
    cache.set("a", 1)
    with pytest.raises(TypeError):
        cache.get_many(["a", None, "a"])
    assert cache.get_many(["a"]) == {"a": 1}


# ---------------------------------------------------------------------------
# incr / execute_command arguments
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "error"),
    [(1.5, TypeError), (1.0, TypeError), ("1", TypeError), (True, TypeError),
     (None, TypeError), (2**64, ValueError), (-(2**63) - 1, ValueError)],
    ids=repr,
)
def test_incr_amount_must_be_a_64_bit_int(
    cache: SyncRedisCache, redis: RedisServer, amount: object, error: type[Exception]
) -> None:
    with pytest.raises(error, match="amount"):
        cache.incr("n", amount)  # type: ignore[arg-type]
    assert_nothing_written(redis)
    assert_still_usable(cache)


def test_incr_accepts_the_64_bit_extremes(cache: SyncRedisCache) -> None:
    assert cache.incr("n", 2**63 - 1) == 2**63 - 1
    assert cache.incr("m", -(2**63)) == -(2**63)


@pytest.mark.parametrize("bad", [None, True, [1], {"a": 1}, object()], ids=repr)
def test_execute_command_refuses_other_argument_types(
    cache: SyncRedisCache, redis: RedisServer, bad: object
) -> None:
    with pytest.raises(TypeError, match="command arguments"):
        cache.execute_command("SET", "k", bad)
    assert_nothing_written(redis)
    assert_still_usable(cache)


def test_execute_command_needs_a_command(cache: SyncRedisCache) -> None:
    with pytest.raises(TypeError, match="at least the command name"):
        cache.execute_command()
    assert_still_usable(cache)


def test_wrong_call_signatures(cache: SyncRedisCache) -> None:
    with pytest.raises(TypeError, match="unexpected keyword"):
        cache.get("k", dflt=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="multiple values"):
        cache.set("k", 1, key="k")  # type: ignore[misc]
    with pytest.raises(TypeError, match="at most"):
        cache.set("k", 1, 2, 3)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="missing required"):
        cache.set("k")  # type: ignore[call-arg]
    assert_still_usable(cache)


# ---------------------------------------------------------------------------
# settings and URLs
# ---------------------------------------------------------------------------

SECRET = "Sup3r-S3cret"


@pytest.mark.parametrize(
    "url",
    [
        f"redis://user:{SECRET}",  # forgot @host: the password parses as a port
        f"redis://:{SECRET}",
        f"redis://user:{SECRET}@",
        f"redis://u:{SECRET}/x@localhost",  # unescaped '/' in the password
        f"redis://u:{SECRET}%zz@localhost",  # bad percent-escape
        f"redis://u:{SECRET}@local host:6379",
        f"redis://u:{SECRET}@localhost:99999",
        f"redis://u:{SECRET}@localhost/notadb",
        f"redis://u:{SECRET}@localhost/0?nosuchoption=1",
        f"redis://u:{SECRET}@[::1:6379",
        f"unix://u:{SECRET}@host/tmp/redis.sock",
        f"http://u:{SECRET}@localhost",
        f"rediss://u:{SECRET}@localhost?ssl_check_hostname=perhaps",
        f"{SECRET}",
    ],
)
def test_malformed_url_is_a_configuration_error_without_the_password(url: str) -> None:
    for build in (
        lambda: SyncRedisCache.from_url(url),
        lambda: SyncRedisCache.from_env({"REDIS_URL": url}),
    ):
        with pytest.raises(ConfigurationError) as info:
            build()
        exc = info.value
        assert isinstance(exc, RedisCacheError)
        rendered = "".join(traceback.format_exception(exc))
        for text in (str(exc), repr(exc), rendered):
            assert SECRET not in text


@pytest.mark.parametrize(
    "options",
    [
        {"port": 0},
        {"port": "6379"},
        {"db": -1},
        {"db": True},
        {"host": ""},
        {"max_connections": 0},
        {"socket_timeout": 0},
        {"socket_timeout": math.nan},
        {"client_name": "has space"},
        {"password": 12345},
    ],
    ids=repr,
)
def test_bad_settings_are_configuration_errors(options: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        SyncRedisCache(**options)  # type: ignore[arg-type]
