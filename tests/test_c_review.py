"""Regression tests for bugs found reviewing the C core (csrc/).

Each test shows one bug from Python: what the C code did wrong is described
in the test's docstring.  Async tests run on asyncio and uvloop (``run``).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from async_support import run  # noqa: F401  (run is a fixture)

from redis_cache import ConnectionError, RedisCache, SerializationError, SyncRedisCache
from redis_cache.testing import RedisServer

U = uuid.UUID(int=5)


# ---------------------------------------------------------------------------
# Python code run by the JSON encoder (a value's __str__, isoformat(),
# model_dump(), ...) that uses the cache itself
# ---------------------------------------------------------------------------


def test_async_json_hook_using_the_cache_during_set(run: Any, redis: RedisServer) -> None:
    """The JSON encoder ran a value's __str__ while the SET was half-written
    into the multiplexer's buffer; a command issued from there landed in the
    middle of it (and flushing it could move the buffer under the writer)."""

    async def main() -> None:
        async with RedisCache(port=redis.port) as cache:
            assert await cache.ping() is True  # connected: commands go out at once
            inner: list[Any] = []

            class Sneaky(uuid.UUID):
                def __str__(self) -> str:
                    inner.append(cache.set("inner", "x" * 100))
                    inner.append(cache.get("missing", default="dflt"))
                    return super().__str__()

            assert await cache.set("outer", {"id": Sneaky(int=5), "n": 1}) is True
            assert await inner[0] is True
            assert await inner[1] == "dflt"
            assert await cache.get("outer") == {"id": str(U), "n": 1}
            assert await cache.get("inner") == "x" * 100
            assert await cache.ping() is True

    run(main())


def test_sync_json_hook_using_the_cache_with_one_connection(redis: RedisServer) -> None:
    """The sync client held its only pooled connection while the JSON encoder
    ran a value's __str__; the cache used from there waited for that very
    connection (PoolTimeout, or forever without a pool_timeout)."""
    with SyncRedisCache(port=redis.port, max_connections=1, pool_timeout=1) as cache:

        class Sneaky(uuid.UUID):
            def __str__(self) -> str:
                assert cache.set("inner", 1) is True
                return super().__str__()

        assert cache.set("outer", [Sneaky(int=5)]) is True
        assert cache.get("inner") == 1
        assert cache.get("outer") == [str(U)]


def test_set_many_mapping_grown_by_a_hook(redis: RedisServer) -> None:
    """set_many counted the dict's items, then wrote one SET per item it still
    found while a hook added items: more SETs than replies expected, so the
    next command on the connection read a stale reply. Now the batch is a
    snapshot taken at the call: the hook's item is not part of it."""
    with SyncRedisCache(port=redis.port, max_connections=1, socket_timeout=2) as cache:
        mapping: dict[str, Any] = {}

        class Grower(uuid.UUID):
            def __str__(self) -> str:
                mapping["c"] = 3
                return super().__str__()

        mapping["a"] = Grower(int=5)
        mapping["b"] = 2
        assert cache.set_many(mapping) is True
        assert "c" in mapping  # the hook ran
        assert cache.get_many(["a", "b", "c"]) == {"a": str(uuid.UUID(int=5)), "b": 2}
        # The connection is in step: each reply reaches its own command.
        assert cache.get("missing", default="dflt") == "dflt"
        assert cache.set("k", "v") is True
        assert cache.get("k") == "v"


def test_set_many_mapping_cleared_by_a_hook(redis: RedisServer) -> None:
    """A hook that empties the mapping freed the value being encoded (it was
    borrowed from the dict) and left fewer SETs than replies expected."""
    with SyncRedisCache(port=redis.port, max_connections=1, socket_timeout=2) as cache:
        mapping: dict[str, Any] = {}

        class Clearer(uuid.UUID):
            def __str__(self) -> str:
                mapping.clear()
                return super().__str__()

        mapping["a"] = [Clearer(int=5), {"deep": [1, 2, 3]}]
        mapping["b"] = 2
        assert cache.set_many(mapping) is True
        assert mapping == {}  # the hook ran
        assert cache.get("a") == [str(uuid.UUID(int=5)), {"deep": [1, 2, 3]}]
        assert cache.get("b") == 2
        assert cache.get("missing", default="dflt") == "dflt"


def test_async_set_many_mapping_grown_by_a_hook(run: Any, redis: RedisServer) -> None:
    """The async form: an extra SET's reply went to the next caller."""

    async def main() -> None:
        async with RedisCache(port=redis.port) as cache:
            assert await cache.ping() is True
            mapping: dict[str, Any] = {}

            class Grower(uuid.UUID):
                def __str__(self) -> str:
                    mapping["c"] = 3
                    return super().__str__()

            mapping["a"] = Grower(int=5)
            mapping["b"] = 2
            assert await cache.set_many(mapping) is True
            assert await cache.get_many(["a", "b", "c"]) == {"a": str(uuid.UUID(int=5)), "b": 2}
            assert await cache.get("missing", default="dflt") == "dflt"
            assert await cache.ping() is True

    run(main())


# ---------------------------------------------------------------------------
# get_many keys
# ---------------------------------------------------------------------------


def test_async_get_many_keys_list_changed_before_the_reply(run: Any, redis: RedisServer) -> None:
    """get_many kept the caller's list (not a copy) to pair the MGET reply with
    keys: changing the list before awaiting paired values with the wrong
    keys, or failed the request."""

    async def main() -> None:
        async with RedisCache(port=redis.port) as cache:
            assert await cache.set_many({"a": 1, "b": 2}) is True
            keys = ["a", "b"]
            pending = cache.get_many(keys)
            keys[0], keys[1] = "b", "a"
            assert await pending == {"a": 1, "b": 2}
            keys = ["a", "b"]
            pending = cache.get_many(keys)
            keys.append("c")
            assert await pending == {"a": 1, "b": 2}

    run(main())


def test_typed_get_many_model_mutating_keys(redis: RedisServer) -> None:
    """With model=, converting a value runs Python code; one that shrank the
    caller's keys list made mget_dict read past its end."""
    keys = ["a", "b", "c"]

    class Model:
        @classmethod
        def model_validate(cls, value: Any) -> Any:
            keys.clear()
            return value

    with SyncRedisCache(port=redis.port) as cache:
        assert cache.set_many({"a": 1, "b": 2, "c": 3}) is True
        got = cache.get_many(keys, model=Model)
        assert got == {"a": 1, "b": 2, "c": 3}


# ---------------------------------------------------------------------------
# Python code run while replies are dispatched
# ---------------------------------------------------------------------------


def test_async_loads_closing_the_connection_mid_dispatch(run: Any, redis: RedisServer) -> None:
    """A serializer's loads() runs inside the reply parser; one that closed the
    connection (failing and clearing every request) left the dispatcher to
    hand the reply it was building to a request slot that no longer existed
    (the ring's count underflowed, and a NULL future was completed)."""

    async def main() -> None:
        holder: dict[str, Any] = {}

        class Closing:
            def dumps(self, value: Any) -> bytes:
                return repr(value).encode()

            def loads(self, data: bytes) -> Any:
                if data == b"'close'":
                    holder["cache"]._multiplexers[0].close()
                return data.decode()

        with SyncRedisCache(port=redis.port, serializer=Closing()) as sync:
            assert sync.set_many({"a": "close", "b": "x"}) is True
        async with RedisCache(port=redis.port, serializer=Closing()) as cache:
            holder["cache"] = cache
            # The first requests of a connection: the reply of "a" is read
            # while its slot (the ring's first) still counts one reply due.
            first, second = cache.get("a"), cache.get("b")
            for pending in (first, second):
                with pytest.raises(ConnectionError):
                    await pending
            # A new connection replaces the closed one.
            assert await cache.get("b") == "'x'"

    run(main())
