"""One adapter per client: how that client does each scenario's call.

The harness knows nothing about any client library; it asks each adapter for
a zero-argument callable per scenario (a coroutine function for async
adapters) and times calls of it.  Every adapter's callables therefore carry
the same harness overhead (one Python call), and what differs is only the
client's own work.

Adding a client:

1. subclass :class:`SyncAdapter` or :class:`AsyncAdapter` (set ``event_loop =
   "uvloop"`` on an async adapter to run it on uvloop instead of asyncio's loop);
2. import the library inside :meth:`~Adapter.unavailable` and ``setup`` so a
   missing package skips the client instead of breaking the run;
3. return callables for the scenarios it can do (names from
   ``bench.scenarios.SCENARIOS``; the concurrent scenarios take the same
   single-GET callable, the harness runs it from many coroutines);
4. append the class to :data:`ADAPTERS`, and the client's package (if it is
   not a dependency of the project) to ``bench/requirements.txt``.

Every async callable is one ``async def`` around the client's call, whatever
the client returns (coroutine, Future or awaitable), so each pays the same
one coroutine frame of harness overhead.

Fairness rules the adapters follow: the same keys and bytes for everyone (see
``bench.scenarios``), each library's default connection settings (both
redis-py and redis_cache default to 5 s socket timeouts) except where a
default cannot run a scenario (said in the adapter's docstring and
``describe()``), and for the peers the
JSON work a user would do around it: ``json.loads`` of the reply, and a
reused compact ``JSONEncoder`` (as fast as ``json.dumps``'s default encoder,
but writing the compact bytes redis_cache stores).
"""

from __future__ import annotations

import asyncio
import json
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from importlib import metadata
from typing import Any, ClassVar

from .scenarios import CLEAR_PATTERN, SCAN_COUNT, TTL_SECONDS, VALUE, VALUE_BYTES, Keys

__all__ = [
    "ADAPTERS",
    "Adapter",
    "AsyncAdapter",
    "CoredisAdapter",
    "GlideAdapter",
    "RedisCacheAsyncAdapter",
    "RedisCacheSyncAdapter",
    "RedisCacheUvloopAdapter",
    "RedisPyAsyncAdapter",
    "RedisPySyncAdapter",
    "SyncAdapter",
]

SyncOp = Callable[[], object]
AsyncOp = Callable[[], Awaitable[object]]


class Adapter(ABC):
    """What sync and async adapters share: a name, a description, availability."""

    #: The client's name in tables and ratios ("redis_cache / redis-py = 2.3x").
    name: ClassVar[str]
    #: True for adapters whose callables are coroutine functions.
    is_async: ClassVar[bool]

    @classmethod
    def unavailable(cls) -> str | None:
        """Why this client cannot run here (e.g. its package is missing), or None."""
        return None

    @abstractmethod
    def describe(self) -> str:
        """Library, version and the settings that matter, for the report."""


class SyncAdapter(Adapter):
    """A blocking client: its callables are timed in a plain loop."""

    is_async = False

    @abstractmethod
    def setup(self, host: str, port: int) -> None:
        """Connects; called once before any scenario."""

    @abstractmethod
    def operations(self) -> Mapping[str, SyncOp]:
        """Scenario name -> a zero-argument callable doing one call."""

    @abstractmethod
    def teardown(self) -> None:
        """Closes connections; called once after the last scenario."""


class AsyncAdapter(Adapter):
    """An asyncio client: the harness awaits its callables in its event loop.

    ``setup``/``teardown`` run in the same loop as the measurements, because
    asyncio clients bind their connections to the loop that opened them.
    """

    is_async = True
    #: The event loop the harness runs this adapter in: "asyncio" or "uvloop".
    event_loop: ClassVar[str] = "asyncio"

    @abstractmethod
    async def setup(self, host: str, port: int) -> None:
        """Connects; awaited once before any scenario."""

    @abstractmethod
    def operations(self) -> Mapping[str, AsyncOp]:
        """Scenario name -> a zero-argument coroutine function doing one call."""

    @abstractmethod
    async def teardown(self) -> None:
        """Closes connections; awaited once after the last scenario."""


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"


#: Encodes JSON exactly as redis_cache stores it.  Built once: ``json.dumps``
#: with non-default arguments would build a new encoder on every call, a cost
#: no careful redis-py user pays.
_compact_json = json.JSONEncoder(separators=(",", ":")).encode


class RedisCacheSyncAdapter(SyncAdapter):
    """This project's SyncRedisCache: JSON (the default) or ``serializer="raw"``."""

    name = "redis_cache sync"

    def __init__(self) -> None:
        self._json: Any = None
        self._raw: Any = None

    def describe(self) -> str:
        from redis_cache import __version__, _core

        return (
            f"redis_cache {__version__} SyncRedisCache (C core, hiredis "
            f'{_core.HIREDIS_MAJOR}.{_core.HIREDIS_MINOR}), JSON in C / serializer="raw"'
        )

    def setup(self, host: str, port: int) -> None:
        from redis_cache import SyncRedisCache

        self._json = SyncRedisCache(host=host, port=port)
        self._raw = SyncRedisCache(host=host, port=port, serializer="raw")

    def operations(self) -> Mapping[str, SyncOp]:
        as_json, as_raw = self._json, self._raw
        key, many, set_key = Keys.GET, list(Keys.MANY), Keys.SET
        json_items = dict.fromkeys(Keys.SET_MANY, VALUE)
        raw_items = dict.fromkeys(Keys.SET_MANY, VALUE_BYTES)
        ttl = TTL_SECONDS

        def get_json() -> object:
            return as_json.get(key)

        def get_raw() -> object:
            return as_raw.get(key)

        def set_json() -> object:
            return as_json.set(set_key, VALUE, ttl=ttl)

        def set_raw() -> object:
            return as_raw.set(set_key, VALUE_BYTES, ttl=ttl)

        def get_many_json() -> object:
            return as_json.get_many(many)

        def get_many_raw() -> object:
            return as_raw.get_many(many)

        def set_many_json() -> object:
            return as_json.set_many(json_items, ttl=ttl)

        def set_many_raw() -> object:
            return as_raw.set_many(raw_items, ttl=ttl)

        def clear_pattern() -> object:
            return as_raw.clear_pattern(CLEAR_PATTERN)

        return {
            "get_json": get_json,
            "get_raw": get_raw,
            "set_json": set_json,
            "set_raw": set_raw,
            "get_many_json": get_many_json,
            "get_many_raw": get_many_raw,
            "set_many_json": set_many_json,
            "set_many_raw": set_many_raw,
            "clear_pattern": clear_pattern,
        }

    def teardown(self) -> None:
        for cache in (self._json, self._raw):
            if cache is not None:
                cache.close()


def _redis_py_unavailable() -> str | None:
    try:
        import redis  # noqa: F401
    except ImportError:
        return "redis-py is not installed (pip install 'redis[hiredis]')"
    return None


def _redis_py_parser(module: Any) -> str:
    """The parser class redis-py's connections use by default (hiredis or pure Python)."""
    parser = getattr(module, "DefaultParser", None)
    return parser.__name__ if parser is not None else "unknown parser"


class RedisPySyncAdapter(SyncAdapter):
    """redis-py's blocking ``redis.Redis`` (hiredis parser when hiredis is installed)."""

    name = "redis-py"

    def __init__(self) -> None:
        self._client: Any = None

    @classmethod
    def unavailable(cls) -> str | None:
        return _redis_py_unavailable()

    def describe(self) -> str:
        import redis.connection

        return (
            f"redis-py {_package_version('redis')} redis.Redis, "
            f"{_redis_py_parser(redis.connection)} (hiredis-py {_package_version('hiredis')}), "
            "json.loads / JSONEncoder around it"
        )

    def setup(self, host: str, port: int) -> None:
        import redis

        self._client = redis.Redis(host=host, port=port)

    def operations(self) -> Mapping[str, SyncOp]:
        client = self._client
        key, many, set_key = Keys.GET, list(Keys.MANY), Keys.SET
        set_many_keys = Keys.SET_MANY
        ttl = TTL_SECONDS
        loads, encode = json.loads, _compact_json

        def get_json() -> object:
            return loads(client.get(key))

        def get_raw() -> object:
            return client.get(key)

        def set_json() -> object:
            return client.set(set_key, encode(VALUE), ex=ttl)

        def set_raw() -> object:
            return client.set(set_key, VALUE_BYTES, ex=ttl)

        # get_many returns only the keys found, as redis_cache's does.
        def get_many_json() -> object:
            return {
                k: loads(v) for k, v in zip(many, client.mget(many), strict=True) if v is not None
            }

        def get_many_raw() -> object:
            return {k: v for k, v in zip(many, client.mget(many), strict=True) if v is not None}

        def set_many_json() -> object:
            pipe = client.pipeline(transaction=False)
            for k in set_many_keys:
                pipe.set(k, encode(VALUE), ex=ttl)
            return all(pipe.execute())

        def set_many_raw() -> object:
            pipe = client.pipeline(transaction=False)
            for k in set_many_keys:
                pipe.set(k, VALUE_BYTES, ex=ttl)
            return all(pipe.execute())

        # redis_cache's clear_pattern loop, written with redis-py's API.
        def clear_pattern() -> object:
            removed, cursor = 0, 0
            while True:
                cursor, keys = client.scan(cursor, match=CLEAR_PATTERN, count=SCAN_COUNT)
                if keys:
                    removed += client.unlink(*keys)
                if cursor == 0:
                    return removed

        return {
            "get_json": get_json,
            "get_raw": get_raw,
            "set_json": set_json,
            "set_raw": set_raw,
            "get_many_json": get_many_json,
            "get_many_raw": get_many_raw,
            "set_many_json": set_many_json,
            "set_many_raw": set_many_raw,
            "clear_pattern": clear_pattern,
        }

    def teardown(self) -> None:
        if self._client is not None:
            self._client.close()


def _async_operations(
    get: Callable[[str], Awaitable[Any]],
    get_raw: Callable[[str], Awaitable[Any]],
    set_json: AsyncOp,
    set_raw: AsyncOp,
    get_many_json: AsyncOp,
    get_many_raw: AsyncOp,
    set_many_json: AsyncOp,
    set_many_raw: AsyncOp,
    clear_pattern: AsyncOp,
) -> dict[str, AsyncOp]:
    """The scenario table every async adapter returns; ``get`` is the JSON GET."""
    key = Keys.GET

    async def get_json_op() -> object:
        return await get(key)

    async def get_raw_op() -> object:
        return await get_raw(key)

    return {
        "get_json": get_json_op,
        "get_raw": get_raw_op,
        "set_json": set_json,
        "set_raw": set_raw,
        "get_many_json": get_many_json,
        "get_many_raw": get_many_raw,
        "set_many_json": set_many_json,
        "set_many_raw": set_many_raw,
        # The concurrent scenarios run the one-caller GET from N coroutines.
        "get_json_c10": get_json_op,
        "get_json_c100": get_json_op,
        "get_json_c1000": get_json_op,
        "clear_pattern": clear_pattern,
    }


class RedisCacheAsyncAdapter(AsyncAdapter):
    """This project's RedisCache on asyncio's own event loop.

    Defaults (``connections=1``): every coroutine's commands are pipelined
    over one multiplexed connection by the C engine.
    """

    name = "redis_cache async"

    def __init__(self) -> None:
        self._json: Any = None
        self._raw: Any = None

    def describe(self) -> str:
        from redis_cache import __version__, _core

        return (
            f"redis_cache {__version__} RedisCache on {self._loop_name()} (C engine, "
            f"hiredis {_core.HIREDIS_MAJOR}.{_core.HIREDIS_MINOR}), defaults: one "
            'multiplexed connection (connections=1), JSON in C / serializer="raw"'
        )

    def _loop_name(self) -> str:
        return "asyncio's event loop"

    async def setup(self, host: str, port: int) -> None:
        from redis_cache import RedisCache

        self._json = RedisCache(host=host, port=port)
        self._raw = RedisCache(host=host, port=port, serializer="raw")
        await self._json.connect()
        await self._raw.connect()

    def operations(self) -> Mapping[str, AsyncOp]:
        as_json, as_raw = self._json, self._raw
        set_key, many = Keys.SET, list(Keys.MANY)
        json_items = dict.fromkeys(Keys.SET_MANY, VALUE)
        raw_items = dict.fromkeys(Keys.SET_MANY, VALUE_BYTES)
        ttl = TTL_SECONDS

        async def set_json() -> object:
            return await as_json.set(set_key, VALUE, ttl=ttl)

        async def set_raw() -> object:
            return await as_raw.set(set_key, VALUE_BYTES, ttl=ttl)

        async def get_many_json() -> object:
            return await as_json.get_many(many)

        async def get_many_raw() -> object:
            return await as_raw.get_many(many)

        async def set_many_json() -> object:
            return await as_json.set_many(json_items, ttl=ttl)

        async def set_many_raw() -> object:
            return await as_raw.set_many(raw_items, ttl=ttl)

        async def clear_pattern() -> object:
            return await as_raw.clear_pattern(CLEAR_PATTERN)

        return _async_operations(
            as_json.get,
            as_raw.get,
            set_json,
            set_raw,
            get_many_json,
            get_many_raw,
            set_many_json,
            set_many_raw,
            clear_pattern,
        )

    async def teardown(self) -> None:
        for cache in (self._json, self._raw):
            if cache is not None:
                await cache.close()


class RedisCacheUvloopAdapter(RedisCacheAsyncAdapter):
    """The same RedisCache, with the harness running it on a uvloop event loop."""

    name = "redis_cache async+uvloop"
    event_loop = "uvloop"

    @classmethod
    def unavailable(cls) -> str | None:
        try:
            import uvloop  # noqa: F401
        except ImportError:
            return "uvloop is not installed (pip install uvloop)"
        return None

    def _loop_name(self) -> str:
        return f"uvloop {_package_version('uvloop')}"


class RedisPyAsyncAdapter(AsyncAdapter):
    """redis-py's ``redis.asyncio.Redis`` with ``max_connections=1000``.

    Its pool opens one connection per concurrent caller and, by default, raises
    MaxConnectionsError past 100; 1000 (the largest concurrency measured) lets
    every caller have its own connection, so N callers use N connections, which
    is how redis-py asyncio serves concurrency.
    """

    name = "redis-py asyncio"
    MAX_CONNECTIONS = 1000

    def __init__(self) -> None:
        self._client: Any = None

    @classmethod
    def unavailable(cls) -> str | None:
        return _redis_py_unavailable()

    def describe(self) -> str:
        import redis.asyncio.connection

        return (
            f"redis-py {_package_version('redis')} redis.asyncio.Redis, "
            f"{_redis_py_parser(redis.asyncio.connection)}, "
            f"max_connections={self.MAX_CONNECTIONS} (one connection per concurrent caller; "
            "the default 100 fails at 1000 callers), json.loads / JSONEncoder around it"
        )

    async def setup(self, host: str, port: int) -> None:
        import redis.asyncio

        self._client = redis.asyncio.Redis(
            host=host, port=port, max_connections=self.MAX_CONNECTIONS
        )

    def operations(self) -> Mapping[str, AsyncOp]:
        client = self._client
        many, set_key = list(Keys.MANY), Keys.SET
        set_many_keys = Keys.SET_MANY
        ttl = TTL_SECONDS
        loads, encode = json.loads, _compact_json

        async def get_json(key: str) -> object:
            return loads(await client.get(key))

        async def set_json() -> object:
            return await client.set(set_key, encode(VALUE), ex=ttl)

        async def set_raw() -> object:
            return await client.set(set_key, VALUE_BYTES, ex=ttl)

        async def get_many_json() -> object:
            values = await client.mget(many)
            return {k: loads(v) for k, v in zip(many, values, strict=True) if v is not None}

        async def get_many_raw() -> object:
            values = await client.mget(many)
            return {k: v for k, v in zip(many, values, strict=True) if v is not None}

        async def set_many_json() -> object:
            pipe = client.pipeline(transaction=False)
            for k in set_many_keys:
                pipe.set(k, encode(VALUE), ex=ttl)
            return all(await pipe.execute())

        async def set_many_raw() -> object:
            pipe = client.pipeline(transaction=False)
            for k in set_many_keys:
                pipe.set(k, VALUE_BYTES, ex=ttl)
            return all(await pipe.execute())

        async def clear_pattern() -> object:
            removed, cursor = 0, 0
            while True:
                cursor, keys = await client.scan(cursor, match=CLEAR_PATTERN, count=SCAN_COUNT)
                if keys:
                    removed += await client.unlink(*keys)
                if cursor == 0:
                    return removed

        return _async_operations(
            get_json,
            client.get,
            set_json,
            set_raw,
            get_many_json,
            get_many_raw,
            set_many_json,
            set_many_raw,
            clear_pattern,
        )

    async def teardown(self) -> None:
        if self._client is not None:
            await self._client.aclose()


class CoredisAdapter(AsyncAdapter):
    """coredis's ``coredis.Redis`` with its defaults.

    Its default pool holds up to 64 connections and multiplexes: a command
    goes out on a leased connection that is handed back before the reply is
    awaited.  coredis 6 (on anyio) must be entered with ``async with`` in the
    task that later leaves it, so a background task holds the client open
    from setup to teardown; coredis 5 has nothing to enter.
    """

    name = "coredis"

    def __init__(self) -> None:
        self._client: Any = None
        self._stop: asyncio.Event | None = None
        self._holder: asyncio.Task[None] | None = None

    @classmethod
    def unavailable(cls) -> str | None:
        try:
            import coredis  # noqa: F401
        except ImportError:
            return "coredis is not installed (pip install -r bench/requirements.txt)"
        return None

    def describe(self) -> str:
        import coredis

        client = self._client if self._client is not None else coredis.Redis()
        size = getattr(client.connection_pool, "max_connections", "?")
        return (
            f"coredis {_package_version('coredis')} coredis.Redis, defaults "
            f"(pool of up to {size} multiplexed connections), json.loads / JSONEncoder around it"
        )

    async def setup(self, host: str, port: int) -> None:
        import coredis

        self._client = coredis.Redis(host=host, port=port)
        if not hasattr(self._client, "__aenter__"):
            # coredis before its anyio rewrite (5.x): no context to enter,
            # connections open on first use.
            return
        ready, stop = asyncio.Event(), asyncio.Event()
        self._stop = stop

        async def hold() -> None:
            async with self._client:
                ready.set()
                await stop.wait()

        self._holder = asyncio.ensure_future(hold())
        waiter = asyncio.ensure_future(ready.wait())
        await asyncio.wait({self._holder, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.is_set():
            waiter.cancel()
            await self._holder  # raises what made entering fail

    def operations(self) -> Mapping[str, AsyncOp]:
        client = self._client
        many, set_key = list(Keys.MANY), Keys.SET
        set_many_keys = Keys.SET_MANY
        ttl = TTL_SECONDS
        loads, encode = json.loads, _compact_json

        async def get_json(key: str) -> object:
            return loads(await client.get(key))

        async def get_raw(key: str) -> object:
            return await client.get(key)

        async def set_json() -> object:
            return await client.set(set_key, encode(VALUE), ex=ttl)

        async def set_raw() -> object:
            return await client.set(set_key, VALUE_BYTES, ex=ttl)

        async def get_many_json() -> object:
            values = await client.mget(many)
            return {k: loads(v) for k, v in zip(many, values, strict=True) if v is not None}

        async def get_many_raw() -> object:
            values = await client.mget(many)
            return {k: v for k, v in zip(many, values, strict=True) if v is not None}

        async def set_many(value_of: Callable[[], bytes | str]) -> object:
            pipe = client.pipeline(transaction=False)
            if not hasattr(pipe, "__aenter__"):  # coredis 5: awaited, then execute()
                pipe = await pipe
                for k in set_many_keys:
                    pipe.set(k, value_of(), ex=ttl)
                return all(await pipe.execute())
            async with pipe:
                for k in set_many_keys:
                    pipe.set(k, value_of(), ex=ttl)
            return all(pipe.results)

        async def set_many_json() -> object:
            return await set_many(lambda: encode(VALUE))

        async def set_many_raw() -> object:
            return await set_many(lambda: VALUE_BYTES)

        async def clear_pattern() -> object:
            removed, cursor = 0, 0
            while True:
                cursor, keys = await client.scan(cursor, match=CLEAR_PATTERN, count=SCAN_COUNT)
                if keys:
                    removed += await client.unlink(keys)
                if cursor == 0:
                    return removed

        return _async_operations(
            get_json,
            get_raw,
            set_json,
            set_raw,
            get_many_json,
            get_many_raw,
            set_many_json,
            set_many_raw,
            clear_pattern,
        )

    async def teardown(self) -> None:
        if self._stop is not None and self._holder is not None:
            self._stop.set()
            await self._holder
        elif self._client is not None:
            self._client.connection_pool.disconnect()


class GlideAdapter(AsyncAdapter):
    """valkey-glide's ``GlideClient`` (its Rust core, one multiplexed connection).

    ``request_timeout`` is 5 s, as redis_cache's and redis-py's socket timeouts:
    glide's default of 250 ms would fail requests queued behind 1000 callers on
    a 2-core machine rather than measure them.
    """

    name = "valkey-glide"
    REQUEST_TIMEOUT_MS = 5000

    def __init__(self) -> None:
        self._client: Any = None

    @classmethod
    def unavailable(cls) -> str | None:
        try:
            import glide  # noqa: F401
        except ImportError as exc:
            return (
                f"valkey-glide cannot be imported here ({exc}); it ships a Rust core as a "
                "binary wheel: pip install -r bench/requirements.txt"
            )
        return None

    def describe(self) -> str:
        return (
            f"valkey-glide {_package_version('valkey-glide')} GlideClient (Rust core, one "
            f"multiplexed connection), request_timeout={self.REQUEST_TIMEOUT_MS} ms, "
            "json.loads / JSONEncoder around it"
        )

    async def setup(self, host: str, port: int) -> None:
        from glide import GlideClient, GlideClientConfiguration, NodeAddress

        config = GlideClientConfiguration(
            [NodeAddress(host, port)], request_timeout=self.REQUEST_TIMEOUT_MS
        )
        self._client = await GlideClient.create(config)

    def operations(self) -> Mapping[str, AsyncOp]:
        from glide import Batch, ExpirySet, ExpiryType

        client = self._client
        many, set_key = list(Keys.MANY), Keys.SET
        set_many_keys = Keys.SET_MANY
        expiry = ExpirySet(ExpiryType.SEC, TTL_SECONDS)
        loads, encode = json.loads, _compact_json

        async def get_json(key: str) -> object:
            return loads(await client.get(key))

        async def get_raw(key: str) -> object:
            return await client.get(key)

        async def set_json() -> object:
            return await client.set(set_key, encode(VALUE), expiry=expiry)

        async def set_raw() -> object:
            return await client.set(set_key, VALUE_BYTES, expiry=expiry)

        async def get_many_json() -> object:
            values = await client.mget(many)
            return {k: loads(v) for k, v in zip(many, values, strict=True) if v is not None}

        async def get_many_raw() -> object:
            values = await client.mget(many)
            return {k: v for k, v in zip(many, values, strict=True) if v is not None}

        async def set_many_json() -> object:
            batch = Batch(is_atomic=False)
            for k in set_many_keys:
                batch.set(k, encode(VALUE), expiry=expiry)
            replies = await client.exec(batch, raise_on_error=True)
            return replies is not None and all(r == "OK" for r in replies)

        async def set_many_raw() -> object:
            batch = Batch(is_atomic=False)
            for k in set_many_keys:
                batch.set(k, VALUE_BYTES, expiry=expiry)
            replies = await client.exec(batch, raise_on_error=True)
            return replies is not None and all(r == "OK" for r in replies)

        async def clear_pattern() -> object:
            removed, cursor = 0, b"0"
            while True:
                cursor, keys = await client.scan(cursor, match=CLEAR_PATTERN, count=SCAN_COUNT)
                if keys:
                    removed += await client.unlink(keys)
                if cursor == b"0":
                    return removed

        return _async_operations(
            get_json,
            get_raw,
            set_json,
            set_raw,
            get_many_json,
            get_many_raw,
            set_many_json,
            set_many_raw,
            clear_pattern,
        )

    async def teardown(self) -> None:
        if self._client is not None:
            await self._client.close()


#: Every client the harness knows, in report order.
ADAPTERS: tuple[type[SyncAdapter] | type[AsyncAdapter], ...] = (
    RedisCacheAsyncAdapter,
    RedisCacheUvloopAdapter,
    RedisCacheSyncAdapter,
    RedisPySyncAdapter,
    RedisPyAsyncAdapter,
    CoredisAdapter,
    GlideAdapter,
)
