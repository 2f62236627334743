"""Regression tests for bugs found reviewing the C core (csrc/).

Each test shows one bug from Python: what the C code did wrong is described
in the test's docstring.  Async tests run on asyncio and uvloop (``run``).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import uuid
from typing import Any

import pytest
from async_support import run  # noqa: F401  (run is a fixture)
from scripted_server import scripted_server  # noqa: F401  (a fixture)

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


# ---------------------------------------------------------------------------
# The second review (after the re-entrancy and hardening work)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("queued", [62, 63, 64, 126, 127])
def test_async_handshake_of_two_commands_with_a_full_ring(
    run: Any, redis: RedisServer, queued: int
) -> None:
    """attach() put n handshake slots in front of the ring after making room
    for one: with 62 or 63 requests queued while connecting (and SELECT plus
    CLIENT SETNAME), the ring wrapped, one request's future was never
    completed and a zeroed slot swallowed every later reply."""

    async def main() -> None:
        async with RedisCache(port=redis.port, db=1, client_name="ring", socket_timeout=5) as cache:
            futures = [cache.set(f"k{i}", i) for i in range(queued)]
            assert await asyncio.wait_for(asyncio.gather(*futures), 10) == [True] * queued
            assert await cache.get(f"k{queued - 1}") == queued - 1

    run(main())


def run_script(script: str, *args: str, timeout: float = 120, **env: str) -> str:
    """Runs a script in a process of its own (a crash must not take the test
    run with it) and returns its output; a non-zero exit fails the test."""
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_a_finalizer_replacing_the_connection_during_submit(redis: RedisServer) -> None:
    """The async transport submitted to a multiplexer the client only lent
    it: a finalizer run by the GC while the future was made closed that
    multiplexer and issued a command, the client replaced (and freed) it,
    and the submit went on in freed memory."""
    script = textwrap.dedent(
        """
        import asyncio, gc, sys
        from redis_cache import RedisCache

        armed = False
        class Trap:
            def __init__(self): self.me = self
            def __del__(self):
                if armed:
                    cache._multiplexers[0].close()
                    cache.get("other")

        async def main():
            global cache, armed
            cache = RedisCache(port=int(sys.argv[1]))
            await cache.ping()
            gc.collect(); gc.disable()
            Trap()
            armed = True
            gc.enable(); gc.set_threshold(1)
            try:
                future = cache.get("x")
            except Exception as exc:
                print("refused:", type(exc).__name__, exc)
            else:
                try:
                    print("answered:", await future)
                except Exception as exc:
                    print("failed:", type(exc).__name__, exc)
            gc.set_threshold(700)
            assert await cache.get("x", default="fine") == "fine"
            await cache.close()
            print("ok")

        asyncio.run(main())
        """
    )
    # PYTHONMALLOC=debug fills freed memory, so a use after free shows.
    out = run_script(script, str(redis.port), PYTHONMALLOC="debug")
    assert out.strip().endswith("ok"), out
    assert "MemoryError" not in out and "failed: ConnectionError \n" not in out


def test_reply_lists_never_show_python_a_null_item(run: Any, redis: RedisServer) -> None:
    """A batch's reply list was made with NULL items and filled as replies
    came: gc.get_objects() could hand it to Python code, and iterating it
    crashed. It is filled with None first now."""
    script = textwrap.dedent(
        """
        import asyncio, gc, sys, threading
        from redis_cache import RedisCache, SyncRedisCache

        async def main():
            cache = RedisCache(port=int(sys.argv[1]))
            await cache.ping()
            future = cache.set_many({k: 1 for k in "abcdefg"})
            seen = [o for o in gc.get_objects() if type(o) is list and len(o) == 7]
            for found in seen:
                for item in found:
                    pass
            assert await future is True
            await cache.close()

        asyncio.run(main())

        n = 50_000
        with SyncRedisCache(port=int(sys.argv[1])) as cache:
            batch = {f"k{i}": i for i in range(n)}
            stop = False
            def spy():
                while not stop:
                    for o in gc.get_objects():
                        if type(o) is list and len(o) == n:
                            for item in o:
                                pass
            thread = threading.Thread(target=spy)
            thread.start()
            try:
                for _ in range(10):
                    assert cache.set_many(batch) is True
            finally:
                stop = True
                thread.join()
        print("ok")
        """
    )
    assert run_script(script, str(redis.port)).strip() == "ok"


def test_connect_failures_from_many_threads_at_once() -> None:
    """The pool formatted the error of a failed connect while holding its
    lock, which it may hold without the GIL: with 16 threads failing to
    connect at once the process crashed within seconds."""
    script = textwrap.dedent(
        """
        import threading, time
        from redis_cache import SyncRedisCache, ConnectionError, PoolTimeout
        from redis_cache.testing import free_port

        cache = SyncRedisCache(host="127.0.0.1", port=free_port(), connect_wait=0,
                               max_connections=4, pool_timeout=5)
        stop = time.monotonic() + 3
        errors = []
        def work():
            while time.monotonic() < stop:
                try:
                    cache.get("k")
                except (ConnectionError, PoolTimeout) as exc:
                    errors.append(type(exc).__name__)
        threads = [threading.Thread(target=work) for _ in range(16)]
        for t in threads: t.start()
        for t in threads: t.join()
        assert errors and set(errors) <= {"ConnectionError", "PoolTimeout"}, set(errors)
        print("ok")
        """
    )
    assert run_script(script).strip() == "ok"


def test_set_many_of_one_key_refused_is_a_partial_write(redis_server_factory: Any) -> None:
    """A one-key batch took the single-reply path, so its refusal was a plain
    ResponseError, not the PartialWriteError set_many promises."""
    from redis_cache import PartialWriteError

    server = redis_server_factory()
    server.raw_command("CONFIG", "SET", "maxmemory", "1")
    server.raw_command("CONFIG", "SET", "maxmemory-policy", "noeviction")
    try:
        with SyncRedisCache(port=server.port) as cache:
            with pytest.raises(PartialWriteError) as info:
                cache.set_many({"only": "x" * 100})
            assert info.value.written == [] and list(info.value.failed) == ["only"]
    finally:
        server.close()


def test_sync_handshake_reply_of_the_wrong_type_is_a_protocol_error(scripted_server: Any) -> None:
    """The blocking client checked only that handshake replies were not
    errors: SELECT answered with an integer was taken as success."""
    from redis_cache import ProtocolError
    from scripted_server import default_handler, integer

    server = scripted_server(
        lambda command: integer(1) if command.name == "SELECT" else default_handler(command)
    )
    with SyncRedisCache(host=server.host, port=server.port, db=2, connect_wait=0) as cache:
        with pytest.raises(ProtocolError, match="SELECT"):
            cache.ping()
