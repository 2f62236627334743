"""One adapter per client: how that client does each scenario's call.

The harness knows nothing about any client library; it asks each adapter for
a zero-argument callable per scenario (a coroutine function for async
adapters) and times calls of it.  Every adapter's callables therefore carry
the same harness overhead (one Python call), and what differs is only the
client's own work.

Adding a client (coredis, valkey-glide, redis_cache's own async cache, ...):

1. subclass :class:`SyncAdapter` or :class:`AsyncAdapter`;
2. import the library inside :meth:`~Adapter.unavailable` and ``setup`` so a
   missing package skips the client instead of breaking the run;
3. return callables for the scenarios it can do (names from
   ``bench.scenarios.SCENARIOS``; the concurrent scenarios take the same
   single-GET callable, the harness runs it from many coroutines);
4. append the class to :data:`ADAPTERS`.

Fairness rules the adapters follow: the same keys and bytes for everyone (see
``bench.scenarios``), each library's default connection settings (both
redis-py and redis_cache default to 5 s socket timeouts), and for redis-py the
JSON work a user would do around it: ``json.loads`` of the reply, and a
reused compact ``JSONEncoder`` (as fast as ``json.dumps``'s default encoder,
but writing the compact bytes redis_cache stores).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from importlib import metadata
from typing import Any, ClassVar

from .scenarios import TTL_SECONDS, VALUE, VALUE_BYTES, Keys

__all__ = [
    "ADAPTERS",
    "Adapter",
    "AsyncAdapter",
    "RedisCacheSyncAdapter",
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

    name = "redis_cache"

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

        return {
            "get_json": get_json,
            "get_raw": get_raw,
            "set_json": set_json,
            "set_raw": set_raw,
            "get_many_json": get_many_json,
            "get_many_raw": get_many_raw,
            "set_many_json": set_many_json,
            "set_many_raw": set_many_raw,
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

        return {
            "get_json": get_json,
            "get_raw": get_raw,
            "set_json": set_json,
            "set_raw": set_raw,
            "get_many_json": get_many_json,
            "get_many_raw": get_many_raw,
            "set_many_json": set_many_json,
            "set_many_raw": set_many_raw,
        }

    def teardown(self) -> None:
        if self._client is not None:
            self._client.close()


class RedisPyAsyncAdapter(AsyncAdapter):
    """redis-py's ``redis.asyncio.Redis``: one GET callable, run from 1, 10 or 100 coroutines.

    Its default pool opens a connection per concurrent caller, so the 100-caller
    scenario uses 100 connections.
    """

    name = "redis-py asyncio"

    def __init__(self) -> None:
        self._client: Any = None

    @classmethod
    def unavailable(cls) -> str | None:
        return _redis_py_unavailable()

    def describe(self) -> str:
        import redis.asyncio.connection

        return (
            f"redis-py {_package_version('redis')} redis.asyncio.Redis, "
            f"{_redis_py_parser(redis.asyncio.connection)}, json.loads around it"
        )

    async def setup(self, host: str, port: int) -> None:
        import redis.asyncio

        self._client = redis.asyncio.Redis(host=host, port=port)

    def operations(self) -> Mapping[str, AsyncOp]:
        client = self._client
        key = Keys.GET
        loads = json.loads

        async def get_json() -> object:
            return loads(await client.get(key))

        return {"get_json": get_json, "get_json_c10": get_json, "get_json_c100": get_json}

    async def teardown(self) -> None:
        if self._client is not None:
            await self._client.aclose()


#: Every client the harness knows, in report order.
ADAPTERS: tuple[type[SyncAdapter] | type[AsyncAdapter], ...] = (
    RedisCacheSyncAdapter,
    RedisPySyncAdapter,
    RedisPyAsyncAdapter,
)
