"""Leak checks: the hot paths and the error paths, run many times, must not
grow Python's memory or object count, nor keep references to the caller's
objects."""

from __future__ import annotations

import gc
import json
import sys
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from redis_cache import (
    ConnectionError,
    ResponseError,
    SerializationError,
    SyncRedisCache,
)
from redis_cache.testing import RedisServer, free_port

N = 20_000
WARMUP = 500
MAX_GROWTH_BYTES = 200_000
MAX_GROWTH_OBJECTS = 100
REFCOUNT_CALLS = 10_000


@pytest.fixture(scope="module")
def server(redis_server_factory: Callable[..., RedisServer]) -> RedisServer:
    return redis_server_factory()


@pytest.fixture
def cache(server: RedisServer) -> Iterator[SyncRedisCache]:
    server.flushall()
    with SyncRedisCache(port=server.port, namespace="leak", max_connections=2) as c:
        c.set("hit", {"a": [1, 2.5, "three", None, True]})
        c.set("text", "not a number")
        c.execute_command("SET", "leak:bad-json", b"{not json")
        yield c


class FailingSerializer:
    def dumps(self, value: Any) -> bytes:
        raise RuntimeError("no")

    def loads(self, data: bytes) -> Any:
        raise RuntimeError("no")


def _expect(exc_type: type[BaseException], fn: Callable[[], Any]) -> Callable[[], None]:
    def run() -> None:
        try:
            fn()
        except exc_type:
            return
        raise AssertionError(f"{exc_type.__name__} not raised")

    return run


def _paths(cache: SyncRedisCache) -> dict[str, Callable[[], Any]]:
    missing = object()
    return {
        "get_hit": lambda: cache.get("hit"),
        "get_missing_default": lambda: cache.get("nope", missing),
        "set": lambda: cache.set("k", {"x": [1, 2, 3], "y": "z" * 50}),
        "set_ttl": lambda: cache.set("k", "v", ttl=60),
        "get_many": lambda: cache.get_many(["hit", "nope", b"k", "text"]),
        "set_many": lambda: cache.set_many({"a": 1, "b": [2], "c": {"d": None}}),
        "delete_exists_incr": lambda: (cache.delete("n"), cache.exists("hit"), cache.incr("n")),
        "bad_key": _expect(TypeError, lambda: cache.get(42)),  # type: ignore[arg-type]
        "bad_key_in_get_many": _expect(TypeError, lambda: cache.get_many(["a", 1.5])),
        "bad_ttl": _expect(ValueError, lambda: cache.set("k", 1, ttl=-5)),
        "serialization_error": _expect(SerializationError, lambda: cache.set("k", {"o": object()})),
        "set_many_serialization_error": _expect(
            SerializationError, lambda: cache.set_many({"a": 1, "b": 1 + 2j})
        ),
        "decode_error": _expect(SerializationError, lambda: cache.get("bad-json")),
        "decode_error_in_get_many": _expect(
            SerializationError, lambda: cache.get_many(["hit", "bad-json"])
        ),
        "response_error": _expect(ResponseError, lambda: cache.incr("text")),
        "response_error_raw": _expect(ResponseError, lambda: cache.execute_command("NOPE", "x")),
    }


PATHS = [
    "get_hit",
    "get_missing_default",
    "set",
    "set_ttl",
    "get_many",
    "set_many",
    "delete_exists_incr",
    "bad_key",
    "bad_key_in_get_many",
    "bad_ttl",
    "serialization_error",
    "set_many_serialization_error",
    "decode_error",
    "decode_error_in_get_many",
    "response_error",
    "response_error_raw",
]


def assert_no_growth(fn: Callable[[], Any], n: int = N) -> None:
    """Runs ``fn`` n times after a warm-up; traced memory and the number of
    gc-tracked objects must stay (nearly) flat."""
    tracemalloc.start()
    try:
        for _ in range(WARMUP):
            fn()
        gc.collect()
        mem_before = tracemalloc.get_traced_memory()[0]
        objects_before = len(gc.get_objects())
        for _ in range(n):
            fn()
        gc.collect()
        mem_growth = tracemalloc.get_traced_memory()[0] - mem_before
        object_growth = len(gc.get_objects()) - objects_before
    finally:
        tracemalloc.stop()
    assert mem_growth < MAX_GROWTH_BYTES, f"memory grew by {mem_growth} bytes over {n} calls"
    assert object_growth < MAX_GROWTH_OBJECTS, f"{object_growth} more objects after {n} calls"


def test_path_list_is_complete(cache: SyncRedisCache) -> None:
    assert sorted(_paths(cache)) == sorted(PATHS)


@pytest.mark.parametrize("path", PATHS)
def test_no_leak(cache: SyncRedisCache, path: str) -> None:
    assert_no_growth(_paths(cache)[path])


def test_no_leak_with_a_failing_custom_serializer(server: RedisServer) -> None:
    with SyncRedisCache(port=server.port, serializer=FailingSerializer()) as cache:
        cache.execute_command("SET", "stored", b"data")
        assert_no_growth(_expect(SerializationError, lambda: cache.set("k", 1)))
        assert_no_growth(_expect(SerializationError, lambda: cache.get("stored")))


def test_no_leak_when_the_server_refuses_connections() -> None:
    with SyncRedisCache(port=free_port(), socket_connect_timeout=5, connect_wait=0) as cache:
        assert_no_growth(_expect(ConnectionError, lambda: cache.get("k")), n=5_000)


# ---------------------------------------------------------------- refcounts


def test_set_keeps_no_reference_to_the_value_or_key(cache: SyncRedisCache) -> None:
    value = {"nested": [1, 2, {"x": "y"}]}
    key = "".join(["dyn", "amic"])  # not interned
    before = sys.getrefcount(value), sys.getrefcount(key)
    for _ in range(REFCOUNT_CALLS):
        cache.set(key, value)
    assert (sys.getrefcount(value), sys.getrefcount(key)) == before


def test_get_keeps_no_reference_to_the_default(cache: SyncRedisCache) -> None:
    default = object()
    before = sys.getrefcount(default)
    for _ in range(REFCOUNT_CALLS):
        assert cache.get("missing", default) is default  # returned: the miss path
        assert cache.get("hit", default) is not default  # not returned: the hit path
    assert sys.getrefcount(default) == before


def test_failed_calls_keep_no_reference_to_their_arguments(cache: SyncRedisCache) -> None:
    unserializable = {"o": object()}
    ttl = -1.5
    mapping = {"a": 1, "b": unserializable}
    keys = ["hit", "nope"]
    objects = [unserializable, mapping, keys]
    before = [sys.getrefcount(o) for o in objects]
    for _ in range(REFCOUNT_CALLS):
        with pytest.raises(SerializationError):
            cache.set("k", unserializable)
        with pytest.raises(ValueError):
            cache.set("k", 1, ttl=ttl)
        with pytest.raises(SerializationError):
            cache.set_many(mapping)
        cache.get_many(keys)
    assert [sys.getrefcount(o) for o in objects] == before


def test_custom_serializer_values_are_not_kept(server: RedisServer) -> None:
    class Counting:
        def dumps(self, value: Any) -> bytes:
            return json.dumps(value).encode()

        def loads(self, data: bytes) -> Any:
            return json.loads(data)

    with SyncRedisCache(port=server.port, serializer=Counting()) as cache:
        value = ["custom", 1]
        before = sys.getrefcount(value)
        for _ in range(REFCOUNT_CALLS):
            cache.set("c", value)
        assert sys.getrefcount(value) == before
        assert cache.get("c") == value
