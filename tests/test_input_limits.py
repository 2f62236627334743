"""Input the server would mishandle, refused or reported before it does harm:
empty and oversized keys, batches the server takes only in part, and the
small defects of the C core's review (empty values with compression, numbers
with 2**31 digits, a tiny async timeout, a failed __init__ called again,
failing requests when memory runs out)."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from async_support import Runner, run  # noqa: F401

from redis_cache import (
    ConfigurationError,
    ConnectionError,
    PartialWriteError,
    RedisCache,
    ResponseError,
    SyncRedisCache,
    TimeoutError,
)
from redis_cache._core import json_loads
from redis_cache.testing import RedisServer
from redis_raw import raw

ServerFactory = Callable[..., RedisServer]


# --------------------------------------------------------------- keys


def key_calls(cache: Any, key: Any) -> list[Callable[[], Any]]:
    return [
        lambda: cache.get(key),
        lambda: cache.set(key, 1),
        lambda: cache.delete(key),
        lambda: cache.exists(key),
        lambda: cache.ttl(key),
        lambda: cache.expire(key, 10),
        lambda: cache.incr(key),
        lambda: cache.get_many(["ok", key]),
        lambda: cache.set_many({"ok": 1, key: 2}),
        lambda: cache.delete_many(["ok", key]),
    ]


@pytest.mark.parametrize("key", ["", b""], ids=["str", "bytes"])
def test_empty_keys_are_refused_and_nothing_is_written(redis: RedisServer, key: Any) -> None:
    with SyncRedisCache(port=redis.port, namespace="app") as cache:
        for call in key_calls(cache, key):
            with pytest.raises(ValueError, match="must not be empty"):
                call()
        assert raw(redis, "DBSIZE") == 0


def test_async_empty_keys_are_refused(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        async with RedisCache(port=redis.port) as cache:
            for call in key_calls(cache, ""):
                with pytest.raises(ValueError, match="must not be empty"):
                    call()  # refused at call time: no future, nothing queued
            assert await cache.ping() is True
        assert raw(redis, "DBSIZE") == 0

    run(main())


def test_keys_longer_than_max_key_size_are_refused(redis: RedisServer) -> None:
    with SyncRedisCache(port=redis.port, namespace="ns", max_key_size=100) as cache:
        assert cache.set("k" * 97, 1) is True  # 3 bytes of namespace + 97 = 100
        for call in key_calls(cache, "k" * 98):
            with pytest.raises(ValueError, match="longer than max_key_size=100"):
                call()
        assert cache.get("k" * 97) == 1
    with SyncRedisCache(port=redis.port) as cache:
        with pytest.raises(ValueError, match="max_key_size=65536"):
            cache.get("k" * 65537)
    with pytest.raises(ConfigurationError, match="max_key_size"):
        SyncRedisCache(port=redis.port, max_key_size=0)


def test_a_key_the_server_refuses_does_not_break_the_next_call(
    redis_server_factory: ServerFactory,
) -> None:
    """Above proto-max-bulk-len the server answers with a protocol error and
    closes the connection; the next call gets a working one."""
    server = redis_server_factory(extra_config={"proto-max-bulk-len": "1mb"})
    big = "k" * (1024 * 1024 + 10)
    with SyncRedisCache(port=server.port, max_key_size=4 * 1024 * 1024, max_connections=1) as cache:
        with pytest.raises((ResponseError, ConnectionError)):
            cache.get(big)
        assert cache.set("small", 1) is True
        assert cache.get("small") == 1


# --------------------------------------------------------------- partial batches


@pytest.fixture
def full_server(redis_server_factory: ServerFactory) -> Iterator[RedisServer]:
    """A server that refuses writes once it holds a few hundred KB."""
    server = redis_server_factory()
    used = int(
        next(
            line.split(":")[1]
            for line in server.cli("INFO", "memory").splitlines()
            if line.startswith("used_memory:")
        )
    )
    server.raw_command("CONFIG", "SET", "maxmemory-policy", "noeviction")
    server.raw_command("CONFIG", "SET", "maxmemory", str(used + 300_000))
    yield server
    server.close()


def check_partial(exc: PartialWriteError, server: RedisServer, keys: list[str]) -> None:
    assert exc.written and exc.failed, "the batch should be refused in part"
    assert sorted(exc.written + list(exc.failed)) == sorted(keys)
    assert all("OOM" in str(error) for error in exc.failed.values())
    assert isinstance(exc, ResponseError)
    assert f"refused {len(exc.failed)} of the {len(keys)} keys" in str(exc)
    for key in exc.written:
        assert raw(server, "EXISTS", f"batch:{key}") == 1
    for key in exc.failed:
        assert raw(server, "EXISTS", f"batch:{key}") == 0


def test_set_many_refused_in_part_says_which_keys(full_server: RedisServer) -> None:
    keys = [f"k{i}" for i in range(200)]
    with SyncRedisCache(port=full_server.port, namespace="batch") as cache:
        with pytest.raises(PartialWriteError) as info:
            cache.set_many({key: "x" * 4000 for key in keys})
        check_partial(info.value, full_server, keys)
        assert cache.get("missing", default="in step") == "in step"


def test_async_set_many_refused_in_part_says_which_keys(
    run: Runner, full_server: RedisServer
) -> None:
    keys = [f"k{i}" for i in range(200)]

    async def main() -> None:
        async with RedisCache(port=full_server.port, namespace="batch") as cache:
            with pytest.raises(PartialWriteError) as info:
                await cache.set_many({key: "x" * 4000 for key in keys})
            check_partial(info.value, full_server, keys)
            assert await cache.get("missing", default="in step") == "in step"

    run(main())


# --------------------------------------------------------------- the review's smaller defects


@pytest.mark.parametrize("compression", ["zlib", "zstd"])
@pytest.mark.parametrize("serializer", ["raw", "json"])
@pytest.mark.parametrize("value", [b"", b"x", "", "y"], ids=["b''", "b'x'", "''", "'y'"])
def test_empty_and_tiny_values_with_compression(
    redis: RedisServer, compression: str, serializer: str, value: Any
) -> None:
    """UBSan found memcpy(NULL, p, 0) storing b'' with compression on."""
    if serializer == "raw" and isinstance(value, str):
        value = value.encode()
    if serializer == "json" and isinstance(value, bytes):
        value = value.decode()
    with SyncRedisCache(
        port=redis.port, serializer=serializer, compression=compression, compression_threshold=0
    ) as cache:
        assert cache.set("v", value) is True
        assert cache.get("v") == value


@pytest.mark.slow
def test_a_number_with_more_than_2_31_digits_is_not_misread() -> None:
    """The decoder counted digits in an int: 2**31 + 16 digits wrapped
    around to a count under 18 and decoded to a wrong small number. Run in
    a process of its own: it needs 4 GB for a moment, which the test process
    would keep."""
    script = (
        "from redis_cache._core import json_loads\n"
        "try:\n"
        "    print(repr(json_loads(b'1' * (2**31 + 16))))\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True
    ).stdout
    assert out.startswith("SerializationError") and "too many digits" in out, out


def test_a_tiny_async_socket_timeout_is_at_least_one_ms(
    run: Runner, redis_server_factory: ServerFactory
) -> None:
    """1e-7 s was truncated to 0 ms; it is rounded up to 1 ms (as sync does).
    The server is stopped from the start: the kernel still accepts the
    connection, so the request goes out and its reply never comes."""
    server = redis_server_factory()
    server.pause()

    async def main() -> None:
        async with RedisCache(port=server.port, socket_timeout=1e-7) as cache:
            with pytest.raises(TimeoutError, match="within 1 ms"):
                await asyncio.wait_for(cache.get("k"), 10)

    try:
        run(main())
    finally:
        server.resume()
        server.close()


class Serializer:
    """dumps/loads as instance attributes: the same function objects on
    every lookup, so their reference counts show what the cache holds."""

    def __init__(self) -> None:
        self.dumps = lambda value: repr(value).encode()
        self.loads = lambda data: data.decode()


@pytest.mark.parametrize("kind", [SyncRedisCache, RedisCache])
def test_init_called_again_after_it_failed_leaks_nothing(kind: type) -> None:
    serializer = Serializer()
    before = sys.getrefcount(serializer.dumps), sys.getrefcount(serializer.loads)
    for _ in range(200):
        cache = kind.__new__(kind)
        with pytest.raises(ConfigurationError):
            kind.__init__(cache, serializer=serializer, namespace="ns", default_ttl=-1)
        kind.__init__(cache, serializer=serializer, namespace="ns", connect_wait=0)
        with pytest.raises(RuntimeError, match="already initialized"):
            _core_init(kind, cache, serializer)
        del cache
    gc.collect()
    assert (sys.getrefcount(serializer.dumps), sys.getrefcount(serializer.loads)) == before


def _core_init(kind: type, cache: Any, serializer: Any) -> None:
    # The C type's __init__, under the Python class's: refuses a second run.
    base = kind.__mro__[2]
    base.__init__(cache, serializer=serializer, namespace="ns")


def test_waiting_requests_complete_even_when_memory_runs_out(
    run: Runner, redis_server_factory: ServerFactory
) -> None:
    """Failing the requests of a connection must leave none pending, even if
    no exception object can be made for them."""
    _testcapi = pytest.importorskip("_testcapi")
    if not hasattr(_testcapi, "set_nomemory"):
        pytest.skip("_testcapi.set_nomemory is not available")
    server = redis_server_factory()

    async def main() -> None:
        cache = RedisCache(port=server.port)
        assert await cache.ping() is True
        server.pause()
        try:
            waiting = [cache.get(f"k{i}") for i in range(10)]
            await asyncio.sleep(0)
            (mux,) = cache._multiplexers
            close = mux.close
            _testcapi.set_nomemory(0, 0)
            try:
                close()
            except MemoryError:
                pass
            finally:
                _testcapi.remove_mem_hooks()
            assert all(future.done() for future in waiting)
            outcomes = await asyncio.gather(*waiting, return_exceptions=True)
            assert all(isinstance(o, BaseException) for o in outcomes), outcomes
        finally:
            server.resume()
            await cache.close()

    try:
        run(main())
    finally:
        server.close()
