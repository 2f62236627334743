"""The cache classes: thin Python over the C core.

``SyncRedisCache`` subclasses the C type directly, so ``cache.get(key)`` is one
call into C with no Python frame in between; this module adds what is not on
the hot path: configuration, URL/environment constructors, ``clear_pattern``
and the context-manager protocol.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import os
import random
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from datetime import timedelta
from os import PathLike
from typing import TYPE_CHECKING, Any, TypeVar, Union

from . import _core
from ._breaker import CircuitBreaker, breaker_from_setting
from ._config import ConnectionSettings, TLSSettings, parse_url, settings_from_env
from ._topology import SentinelDiscovery
from .errors import ConfigurationError, ConnectionError, PoolTimeout, ProtocolError, TimeoutError
from .keyspace import (
    DEFAULT_SCAN_COUNT,
    KeyInfo,
    caller_key,
    check_count,
    key_info_args,
    parse_key_info,
)
from .pubsub import Subscription, SyncSubscription, publish_args, subscription
from .serializers import SignedPickle

if TYPE_CHECKING:
    from .locks import AsyncLock, Lock

__all__ = ["RedisCache", "SyncRedisCache", "TTL"]

#: A time to live: seconds (int or float) or a timedelta. ``None`` means the
#: cache's ``default_ttl`` (and no expiry when that is ``None`` too).
TTL = Union[int, float, timedelta, None]

_C = TypeVar("_C", bound="_CacheSettings")
_F = TypeVar("_F", bound=Callable[..., Any])
_Self = TypeVar("_Self", bound="SyncRedisCache")
_ASelf = TypeVar("_ASelf", bound="RedisCache")

#: Keys removed per UNLINK while clearing a pattern, and the SCAN hint.
_CLEAR_BATCH = 1000

#: The longest key (namespace included) the caches accept unless told otherwise.
DEFAULT_MAX_KEY_SIZE = 65536

_GLOB_SPECIAL = re.compile(rb"([*?\[\]\\])")


def escape_glob(prefix: bytes) -> bytes:
    """Escapes glob characters so a namespace matches only itself in SCAN MATCH."""
    return _GLOB_SPECIAL.sub(rb"\\\1", prefix)


_DEFAULT_MAX_DECOMPRESSED = 64 * 1024 * 1024


def _codec_options(
    serializer: Any,
    pickle_secret: str | bytes | None,
    compression: str | None,
    compression_threshold: int,
    compression_level: int | None,
    max_decompressed_size: int,
    stringify_keys: bool,
) -> dict[str, Any]:
    """The C core's serializer and compression arguments, from the user's."""
    if serializer == "pickle":
        if pickle_secret is None:
            raise ConfigurationError(
                'serializer="pickle" needs pickle_secret=: values are signed so that a '
                "value someone else wrote is refused instead of unpickled"
            )
        serializer = SignedPickle(pickle_secret)
    elif pickle_secret is not None:
        raise ConfigurationError('pickle_secret is only used with serializer="pickle"')
    return {
        "serializer": serializer,
        "compression": compression,
        "compression_threshold": compression_threshold,
        "compression_level": -1 if compression_level is None else compression_level,
        "max_decompressed_size": max_decompressed_size,
        "stringify_keys": stringify_keys,
    }


def _connection_settings(arguments: Mapping[str, Any]) -> ConnectionSettings:
    """The validated connection settings among a constructor's arguments."""
    return ConnectionSettings(
        **{f.name: arguments[f.name] for f in dataclasses.fields(ConnectionSettings)}
    )


_log = logging.getLogger("redis_cache")


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _tls(settings: ConnectionSettings) -> TLSSettings | None:
    """The C core's TLS settings, warning (once per cache) when the server's
    certificate will not be checked."""
    tls = settings.tls_settings()
    if tls is not None and tls.cert_reqs == "none":
        _log.warning(
            "TLS to %s with ssl_cert_reqs='none': the server's certificate is not checked, "
            "so anyone on the network path can pose as it",
            settings.describe(),
        )
    return tls


def _arguments(scope: dict[str, Any]) -> dict[str, Any]:
    """A constructor's arguments, from its locals() taken first thing."""
    return {name: value for name, value in scope.items() if name not in ("self", "__class__")}


def _describe(cache: Any) -> str:
    """The repr of either cache class; safe on a half-initialized one."""
    settings = getattr(cache, "_settings", None)
    where = settings.describe() if settings is not None else "(not initialized)"
    namespace = getattr(cache, "_namespace", None)
    ns = f" namespace={namespace!r}" if namespace else ""
    state = "closed" if cache.closed else "open"
    return f"<{type(cache).__name__} {where}{ns} {state}>"


def _scan_page(reply: Any, key_prefix: bytes) -> tuple[bytes, list[bytes]]:
    """The cursor and keys of a SCAN reply, checked part by part: a reply of
    another shape would make clear_pattern loop forever or unlink keys outside
    the namespace, so it is refused (and nothing is unlinked)."""
    if not (isinstance(reply, list) and len(reply) == 2):
        raise ProtocolError(f"redis answered SCAN with {_shape(reply)}, not [cursor, keys]")
    cursor, keys = reply
    if not (isinstance(cursor, bytes) and cursor.isdigit()):
        raise ProtocolError(f"redis answered SCAN with the cursor {_shape(cursor)}, not digits")
    if not (isinstance(keys, list) and all(isinstance(key, bytes) for key in keys)):
        raise ProtocolError(f"redis answered SCAN with keys as {_shape(keys)}, not a list of names")
    for key in keys:
        if not key.startswith(key_prefix):
            raise ProtocolError(
                f"redis answered SCAN with a key outside the namespace ({key[:80]!r}); "
                "nothing was removed"
            )
    return cursor, keys


def _scan_pages(execute: Callable[..., Any], key_prefix: bytes, match: bytes,
                count: int) -> Iterator[list[bytes]]:
    """The non-empty pages of one node's SCAN, each checked by _scan_page;
    ``execute`` sends a raw command to that node."""
    cursor = b"0"
    while True:
        reply = execute("SCAN", cursor, "MATCH", match, "COUNT", count, idempotent=True)
        cursor, keys = _scan_page(reply, key_prefix)
        if keys:
            yield keys
        if cursor == b"0":
            return


async def _scan_pages_async(execute: Callable[..., Any], key_prefix: bytes, match: bytes,
                            count: int) -> AsyncIterator[list[bytes]]:
    """_scan_pages for an async ``execute``."""
    cursor = b"0"
    while True:
        reply = await execute("SCAN", cursor, "MATCH", match, "COUNT", count, idempotent=True)
        cursor, keys = _scan_page(reply, key_prefix)
        if keys:
            yield keys
        if cursor == b"0":
            return


def _caller_keys(pages: Iterator[list[bytes]], prefix_length: int) -> Iterator[str]:
    for keys in pages:
        for key in keys:
            yield caller_key(key, prefix_length)


async def _caller_keys_async(pages: AsyncIterator[list[bytes]],
                             prefix_length: int) -> AsyncIterator[str]:
    async for keys in pages:
        for key in keys:
            yield caller_key(key, prefix_length)


def _unlinked(reply: Any) -> int:
    if not isinstance(reply, int) or isinstance(reply, bool) or reply < 0:
        raise ProtocolError(f"redis answered UNLINK with {_shape(reply)}, not a count")
    return reply


def _shape(value: Any) -> str:
    return f"{type(value).__name__} {value!r:.80}"


def _scan_match(key_prefix: bytes, pattern: str | bytes) -> bytes:
    """The SCAN MATCH pattern for a user pattern inside a namespace."""
    if isinstance(pattern, str):
        pattern = pattern.encode()
    elif not isinstance(pattern, bytes):
        raise TypeError(f"pattern must be str or bytes, not {type(pattern).__name__}")
    return escape_glob(key_prefix) + pattern


def _close_subscriptions(cache: Any) -> None:
    from .pubsub import close_subscriptions

    close_subscriptions(cache)


def _subscriptions_node_changed(cache: Any) -> None:
    from .pubsub import node_changed

    node_changed(cache)


def _cache_class(cls: Any, options: dict[str, Any]) -> Any:
    """cls(**options), or its cluster counterpart for a cluster's settings
    (a redis+cluster:// URL, REDIS_USE_CLUSTERS)."""
    if "cluster_nodes" in options and not getattr(cls, "_is_cluster", False):
        from .cluster import RedisClusterCache, SyncRedisClusterCache

        cls = RedisClusterCache if issubclass(cls, RedisCache) else SyncRedisClusterCache
    return cls(**options)


class _CacheSettings:
    """What both cache classes share beyond the C core: the constructors from
    a URL or the environment, and the settings they were made with."""

    _settings: ConnectionSettings
    _namespace: str | None
    _default_ttl: TTL
    _init_kwargs: dict[str, Any]
    _circuit_breaker: CircuitBreaker

    @classmethod
    def from_url(cls: type[_C], url: str, **options: Any) -> _C:
        """Builds a cache from ``redis://[[user]:password@]host[:port][/db][?option=value]``
        or ``unix:///path/to/redis.sock[?db=N]``; keyword options override the URL."""
        return _cache_class(cls, {**parse_url(url), **options})

    @classmethod
    def from_env(cls: type[_C], environ: Mapping[str, str] | None = None, **options: Any) -> _C:
        """Builds a cache from REDIS_URL and the REDIS_* variables (see the README)."""
        return _cache_class(cls, {**settings_from_env(environ), **options})

    @property
    def namespace(self) -> str | None:
        return self._namespace

    @property
    def default_ttl(self) -> TTL:
        return self._default_ttl

    @property
    def circuit_breaker(self) -> CircuitBreaker:
        """What the decorators use to skip Redis while it is down (shared with the twin)."""
        return self._circuit_breaker

    @property
    def settings(self) -> ConnectionSettings:
        """The validated connection settings (the password is hidden in its repr)."""
        return self._settings

    def __repr__(self) -> str:
        return _describe(self)

    def cached(self, ttl: TTL = None, **options: Any) -> Callable[[_F], _F]:
        """Caches a function's results in this cache; see redis_cache.decorators.cached."""
        from .decorators import cached

        return cached(ttl, cache=self, **options)  # type: ignore[arg-type]

    def invalidate(self, *templates: str, namespace: str | None = None,
                   tags: Any = ()) -> Callable[[_F], _F]:
        """Deletes the keys the templates name, and invalidates the tags the tag
        templates name, after the decorated function returns."""
        from .decorators import invalidate

        return invalidate(*templates, namespace=namespace, tags=tags,  # type: ignore[arg-type]
                          cache=self)

    def cached_batch(self, ttl: TTL = None, **options: Any) -> Callable[[_F], _F]:
        """Caches ``fn(ids) -> {id: value}`` per id; see redis_cache.decorators.cached_batch."""
        from .decorators import cached_batch

        return cached_batch(ttl, cache=self, **options)  # type: ignore[arg-type]

    def rate_limiter(self, *limits: Any, **options: Any) -> Any:
        """A rate limiter on this cache: ``cache.rate_limiter("10/second", "1000/hour",
        algorithm="gcra")``; see redis_cache.ratelimit."""
        from .ratelimit import rate_limiter

        return rate_limiter(self, *limits, **options)  # type: ignore[arg-type]

    def set_tagged(self, key: str, value: Any, tags: Any, ttl: TTL = None) -> Any:
        """Stores value under ``tags`` (a tag or a list of them), to be read with
        get_tagged and dropped by invalidate_tags; see redis_cache.tags."""
        from . import tags as _tags

        return _tags.set_tagged(self, key, value, tags, ttl)

    def get_tagged(self, key: str, default: Any = None, model: Any = None) -> Any:
        """The value set_tagged stored, or ``default`` once any of its tags was
        invalidated (or it expired). A plain get() of that key gets WRONGTYPE."""
        from . import tags as _tags

        return _tags.get_tagged(self, key, default, model)

    def invalidate_tags(self, *tags: Any) -> Any:
        """Makes every entry stored under any of ``tags`` a miss: one write per
        tag, whatever the number of entries. Returns how many tags."""
        from . import tags as _tags

        return _tags.invalidate_tags(self, tags)

    def get_or_set(self, key: str, factory: Callable[[], Any], ttl: TTL = None,
                   **options: Any) -> Any:
        """Read-through without a decorator: the cached value of key, or
        ``factory()``'s, stored; the options of cached() apply (see
        redis_cache.decorators.get_or_set)."""
        from .decorators import get_or_set

        return get_or_set(self, key, factory, ttl, **options)  # type: ignore[arg-type]

    def cached_route(self, ttl: TTL = 60, **options: Any) -> Callable[[_F], _F]:
        """Caches a FastAPI GET path operation's response bytes in this cache; see
        redis_cache.fastapi.routes.cached_route."""
        from .fastapi.routes import cached_route

        if isinstance(ttl, timedelta):
            ttl = ttl.total_seconds()
        return cached_route(ttl, cache=self, **options)  # type: ignore[arg-type]

    def metrics(self) -> dict[str, Any]:
        """Counters and latency histograms of this cache's connections, the
        decorated functions' statistics and the circuit breaker's state, as
        one dict (see redis_cache.metrics; ``metrics=False`` turns the
        connection counters off)."""
        from .metrics import cache_metrics

        return cache_metrics(self)

    def _session_key(self, session_id: str) -> str:
        if not isinstance(session_id, str) or not session_id:
            raise ValueError(f"a session id must be a non-empty str, got {session_id!r}")
        return f"session:{session_id}"

    def _twin(self, kind: type[_C]) -> _C:
        """A cache of the other kind (sync for async, or the reverse) with the same
        settings: what a decorator uses for a function of the other kind."""
        if isinstance(self, kind):
            return self
        twins: dict[type, Any] = self.__dict__.setdefault("_twins", {})
        twin = twins.get(kind)
        if twin is None:
            kwargs = dict(self._init_kwargs)
            for only_async in ("connections", "max_in_flight", "stall_timeout"):
                kwargs.pop(only_async, None)
            twin = twins[kind] = kind(**kwargs)
        return twin  # type: ignore[no-any-return]


class SyncRedisCache(_CacheSettings, _core.SyncClient):
    """A blocking Redis cache with a C core.

    Connections come from a thread-safe pool of at most ``max_connections``;
    values are stored as JSON by default (readable by any other client), or as
    raw bytes with ``serializer="raw"``, or through any object with ``dumps``
    and ``loads``. ``namespace="app"`` stores ``key`` as ``app:key``.
    """

    def __init__(
        self,
        host: str = "localhost",
        port: int = 6379,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        unix_socket_path: str | PathLike[str] | None = None,
        max_connections: int = 50,
        socket_timeout: float | None = 5.0,
        socket_connect_timeout: float | None = 5.0,
        namespace: str | None = None,
        default_ttl: TTL = None,
        serializer: Any = "json",
        *,
        client_name: str | None = None,
        pool_timeout: float | None = 5.0,
        pickle_secret: str | bytes | None = None,
        compression: str | None = None,
        compression_threshold: int = 1024,
        compression_level: int | None = None,
        max_decompressed_size: int = _DEFAULT_MAX_DECOMPRESSED,
        stringify_keys: bool = False,
        connect_wait: float | None = 1.0,
        max_key_size: int = DEFAULT_MAX_KEY_SIZE,
        circuit_breaker: CircuitBreaker | None = None,
        ssl: bool = False,
        ssl_ca_certs: str | PathLike[str] | None = None,
        ssl_ca_path: str | PathLike[str] | None = None,
        ssl_ca_data: str | None = None,
        ssl_certfile: str | PathLike[str] | None = None,
        ssl_keyfile: str | PathLike[str] | None = None,
        ssl_password: str | None = None,
        ssl_cert_reqs: str = "required",
        ssl_check_hostname: bool = True,
        ssl_min_version: str | None = None,
        ssl_ciphers: str | None = None,
        sentinels: Any = None,
        service_name: str | None = None,
        sentinel_username: str | None = None,
        sentinel_password: str | None = None,
        sentinel_socket_timeout: float | None = 0.5,
        metrics: bool = True,
    ) -> None:
        self._init_kwargs = _arguments(locals())
        settings = _connection_settings(self._init_kwargs)
        super().__init__(
            metrics=metrics,
            host=settings.host,
            port=settings.port,
            db=settings.db,
            username=settings.username,
            password=settings.password,
            unix_socket_path=settings.unix_socket_path,
            max_connections=settings.max_connections,
            socket_timeout=settings.socket_timeout,
            socket_connect_timeout=settings.socket_connect_timeout,
            pool_timeout=settings.pool_timeout,
            client_name=settings.client_name,
            connect_wait=settings.connect_wait,
            max_key_size=max_key_size,
            tls=_tls(settings),
            namespace=namespace,
            default_ttl=default_ttl,
            **_codec_options(
                serializer,
                pickle_secret,
                compression,
                compression_threshold,
                compression_level,
                max_decompressed_size,
                stringify_keys,
            ),
        )
        self._settings = settings
        self._namespace = namespace or None
        self._default_ttl = default_ttl
        # Kept in the arguments too, so that a twin shares this breaker.
        self._circuit_breaker = self._init_kwargs["circuit_breaker"] = breaker_from_setting(
            circuit_breaker
        )
        self._discovery: SentinelDiscovery | None = None
        self._stop_watching: Callable[[], None] | None = None
        if settings.uses_sentinel:
            # Connections go wherever the Sentinels say the primary is, and
            # a failover they announce moves them at once.
            self._discovery = SentinelDiscovery(settings)
            self._set_resolver(self._discovery.primary)
            self._stop_watching = self._discovery.watch_in_thread(self._failover_announced)

    def _failover_announced(self, new_primary: tuple[str, int]) -> None:
        _log.info("Sentinel announced a new primary for %s: %s:%s",
                  self._settings.service_name, *new_primary)
        self._node_stale()
        _subscriptions_node_changed(self)

    def clear_pattern(self, pattern: str | bytes) -> int:
        """Deletes the keys of this namespace matching a glob ``pattern`` and returns
        how many were removed. Walks the keyspace with SCAN (never KEYS, which
        blocks the server) and removes each batch with UNLINK."""
        prefix = self._key_prefix
        removed = 0
        for keys in _scan_pages(self.execute_command, prefix, _scan_match(prefix, pattern),
                                _CLEAR_BATCH):
            removed += _unlinked(self.execute_command("UNLINK", *keys, idempotent=True))
        return removed

    def scan(self, pattern: str | bytes = "*", *, count: int = DEFAULT_SCAN_COUNT) -> Iterator[str]:
        """This namespace's keys matching a glob ``pattern``, without the
        namespace, through SCAN (never KEYS): ``for key in cache.scan("user:*")``.
        ``count`` is SCAN's hint of keys looked at per call. As with SCAN, a
        key may come twice, and keys written during the walk may be missed."""
        prefix = self._key_prefix
        match, count = _scan_match(prefix, pattern), check_count(count)
        return _caller_keys(_scan_pages(self.execute_command, prefix, match, count), len(prefix))

    def key_info(self, key: str | bytes) -> KeyInfo | None:
        """A key's type, TTL, memory use and encoding (one script); None when
        the key does not exist."""
        return parse_key_info(self.execute_command(*key_info_args(self._key_prefix, key)))

    def lock(self, name: str, *, lease: float = 10.0, wait: float | None = 5.0,
             renew: bool = True, fencing: bool = True) -> Lock:
        """A cross-process lock in this namespace: ``with cache.lock("name") as
        lock:``; see :class:`redis_cache.locks.Lock`."""
        from .locks import Lock

        return Lock(self, name, lease=lease, wait=wait, renew=renew, fencing=fencing)

    # -- pub/sub (redis_cache.pubsub)

    def publish(self, channel: str | bytes, value: Any) -> int:
        """Publishes ``value``, encoded as ``set`` stores it, on ``channel`` (not
        namespaced); returns how many subscribers received it. On a cluster
        every node's subscribers receive it."""
        return self.execute_command(*publish_args(self, "PUBLISH", channel, value))  # type: ignore[no-any-return]

    def spublish(self, channel: str | bytes, value: Any) -> int:
        """Publishes on a shard channel (SPUBLISH, Redis 7): on a cluster only
        the node owning the channel's slot (and its replicas) carry it."""
        return self.execute_command(*publish_args(self, "SPUBLISH", channel, value))  # type: ignore[no-any-return]

    def subscribe(self, *channels: str | bytes, patterns: Iterable[str | bytes] = (),
                  shard_channels: Iterable[str | bytes] = (), **options: Any) -> SyncSubscription:
        """A subscription on a connection of its own: ``with`` it, then
        iterate (blocking) or ``get(timeout=...)``. Options: ``max_queued``,
        ``report_gaps``, ``health_check_interval`` (see the README's "Pub/sub")."""
        return subscription(self, channels, patterns, shard_channels, options)  # type: ignore[no-any-return]

    def ssubscribe(self, *channels: str | bytes, **options: Any) -> SyncSubscription:
        """A subscription to shard channels (SSUBSCRIBE): on a cluster, one
        connection per node owning their slots."""
        return self.subscribe(shard_channels=channels, **options)

    def is_rate_limited(self, key: str, limit: int, window_seconds: float) -> bool:
        """Counts a request of ``key`` and says whether it is over ``limit`` requests
        in the last ``window_seconds`` (exact sliding window; a refused request is
        not counted)."""
        from .ratelimit import SyncRateLimiter

        limiter = SyncRateLimiter(self, (limit, window_seconds), algorithm="sliding-window")
        return not limiter.hit(key).allowed

    def set_session(self, session_id: str, data: Any, ttl: TTL = None) -> bool:
        """Stores ``data`` (JSON) under ``session:<session_id>`` for ``ttl`` seconds."""
        return self.set(self._session_key(session_id), data, ttl)  # type: ignore[no-any-return]

    def get_session(self, session_id: str) -> Any:
        """The data of ``set_session``, or None once it expired."""
        return self.get(self._session_key(session_id))

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes every connection (and those of a twin a decorator made); the cache
        cannot be used afterwards."""
        if getattr(self, "_stop_watching", None) is not None:
            self._stop_watching()
            self._stop_watching = None
        _close_subscriptions(self)
        super().close()
        for twin in self.__dict__.get("_twins", {}).values():
            twin._close_connections()


class _Backoff:
    """When to try connecting again after failed attempts: at once after a
    success, then after short delays that double, with jitter.

    The delay stays short (at most FAST_CAP) for the first FAST_FOR seconds
    of an outage, so that a restart is noticed within a few tens of ms of the
    server accepting again; a server down for longer is tried less often (up
    to SLOW_CAP). Attempts are only made while commands wait for a connection
    (see RedisCache._connect)."""

    FIRST = 0.005
    FAST_CAP = 0.05
    FAST_FOR = 5.0
    SLOW_CAP = 1.0

    def __init__(self) -> None:
        self.failures = 0
        self.down_since = 0.0
        self.retry_at = 0.0
        self.error: tuple[type[Exception], str] | None = None

    def delay(self) -> float:
        """Seconds until the next attempt may start."""
        return max(0.0, self.retry_at - time.monotonic())

    def failed(self, error_type: type[Exception], message: str) -> None:
        now = time.monotonic()
        if self.failures == 0:
            self.down_since = now
        self.failures += 1
        self.error = (error_type, message)
        cap = self.FAST_CAP if now - self.down_since < self.FAST_FOR else self.SLOW_CAP
        step = min(cap, self.FIRST * 2 ** min(self.failures - 1, 30))
        self.retry_at = now + step * random.uniform(0.5, 1.0)

    def succeeded(self) -> None:
        self.failures = 0
        self.retry_at = 0.0
        self.error = None


class RedisCache(_CacheSettings, _core.AsyncClient):
    """An asyncio Redis cache with a C engine.

    Every method returns an awaitable. Commands from all coroutines share a
    few multiplexed connections (``connections``, default 1): those issued
    during one event-loop iteration leave in one write, and replies are
    parsed and delivered in C. Connects lazily on first use; use it as
    ``async with RedisCache(...) as cache`` or call ``await cache.close()``.

    A cache belongs to the event loop it first ran on. Used from a new loop
    after the old one was closed (a new ``asyncio.run``, a new test), it
    reconnects; used from a second loop while the first still runs, it
    raises RuntimeError.

    When the oldest request on a connection has gone unanswered for
    ``stall_timeout`` (0.1 s; None: never) with no reply at all meanwhile, new
    commands take a fresh connection instead of queueing behind it: a write
    paused by ``CLIENT PAUSE WRITE`` (what a failover does) holds up only
    itself, not every read after it. The held-up connection keeps its
    requests and closes once they are answered. Commands issued at the same
    time have no order between them then; one issued after another completed
    sees its effect, as always.
    """

    def __init__(
        self,
        host: str = "localhost",
        port: int = 6379,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        unix_socket_path: str | PathLike[str] | None = None,
        max_connections: int = 50,
        socket_timeout: float | None = 5.0,
        socket_connect_timeout: float | None = 5.0,
        namespace: str | None = None,
        default_ttl: TTL = None,
        serializer: Any = "json",
        *,
        client_name: str | None = None,
        pool_timeout: float | None = 5.0,
        pickle_secret: str | bytes | None = None,
        compression: str | None = None,
        compression_threshold: int = 1024,
        compression_level: int | None = None,
        max_decompressed_size: int = _DEFAULT_MAX_DECOMPRESSED,
        stringify_keys: bool = False,
        connect_wait: float | None = 1.0,
        max_key_size: int = DEFAULT_MAX_KEY_SIZE,
        circuit_breaker: CircuitBreaker | None = None,
        ssl: bool = False,
        ssl_ca_certs: str | PathLike[str] | None = None,
        ssl_ca_path: str | PathLike[str] | None = None,
        ssl_ca_data: str | None = None,
        ssl_certfile: str | PathLike[str] | None = None,
        ssl_keyfile: str | PathLike[str] | None = None,
        ssl_password: str | None = None,
        ssl_cert_reqs: str = "required",
        ssl_check_hostname: bool = True,
        ssl_min_version: str | None = None,
        ssl_ciphers: str | None = None,
        sentinels: Any = None,
        service_name: str | None = None,
        sentinel_username: str | None = None,
        sentinel_password: str | None = None,
        sentinel_socket_timeout: float | None = 0.5,
        connections: int = 1,
        max_in_flight: int = 4096,
        stall_timeout: float | None = 0.1,
        metrics: bool = True,
    ) -> None:
        self._init_kwargs = _arguments(locals())
        settings = _connection_settings(self._init_kwargs)
        super().__init__(
            metrics=metrics,
            namespace=namespace,
            default_ttl=default_ttl,
            socket_timeout=settings.socket_timeout,
            connect_wait=settings.connect_wait,
            max_key_size=max_key_size,
            tls=_tls(settings),
            **_codec_options(
                serializer,
                pickle_secret,
                compression,
                compression_threshold,
                compression_level,
                max_decompressed_size,
                stringify_keys,
            ),
            max_in_flight=max_in_flight,
            connections=connections,
            stall_timeout=stall_timeout,
        )
        self._settings = settings
        self._namespace = namespace or None
        self._default_ttl = default_ttl
        # Kept in the arguments too, so that a twin shares this breaker.
        self._circuit_breaker = self._init_kwargs["circuit_breaker"] = breaker_from_setting(
            circuit_breaker
        )
        self._backoff = _Backoff()
        self._connect_tasks: set[asyncio.Task[None]] = set()
        self._dedicated = _DedicatedPool(self, settings.max_connections)
        self._discovery: SentinelDiscovery | None = (
            SentinelDiscovery(settings) if settings.uses_sentinel else None
        )
        self._watch_task: asyncio.Task[None] | None = None

    @property
    def last_connect_error(self) -> str | None:
        """Why the last attempt to connect failed, while the cache has had no
        successful one since; None otherwise. For health checks and logs."""
        error = self._backoff.error
        return None if error is None else error[1]

    async def connect(self) -> None:
        """Connects now rather than on first use, raising if the server is unreachable."""
        await self.ping()

    async def close(self) -> None:
        """Closes every connection; requests still waiting fail with ConnectionError."""
        for task in list(self._connect_tasks):
            task.cancel()
        if self._watch_task is not None:
            self._watch_task.cancel()
            self._watch_task = None
        _close_subscriptions(self)
        self._close_connections()
        self._dedicated.close()
        for twin in self.__dict__.get("_twins", {}).values():
            twin.close()

    @contextlib.asynccontextmanager
    async def dedicated(self, key: Any = None) -> AsyncIterator[Any]:
        """A connection of your own, for commands that hold per-connection state
        (WATCH/MULTI/EXEC, blocking commands like BLPOP, SUBSCRIBE), which must
        never ride the shared connections.

        ``async with cache.dedicated() as conn: await conn.execute_command(...)``
        sends raw commands (no namespace, replies as parsed) and has no request
        timeout. At most ``max_connections`` exist at once; callers beyond that
        wait in FIFO order for ``pool_timeout`` (then ``PoolTimeout``). The block
        must leave the connection as it found it (EXEC or DISCARD, UNSUBSCRIBE);
        after an exception it is closed rather than reused. ``key`` matters on a
        cluster only (:class:`RedisClusterCache`: the node that owns its slot).
        """
        del key  # one node here
        loop = asyncio.get_running_loop()
        conn = await self._dedicated.acquire(loop, self._settings.pool_timeout)
        ok = False
        try:
            yield conn
            ok = True
        finally:
            self._dedicated.release(conn, reuse=ok)

    async def clear_pattern(self, pattern: str | bytes) -> int:
        """Deletes the keys of this namespace matching a glob ``pattern`` (SCAN + UNLINK,
        never KEYS) and returns how many were removed."""
        prefix = self._key_prefix
        removed = 0
        async for keys in _scan_pages_async(self.execute_command, prefix,
                                            _scan_match(prefix, pattern), _CLEAR_BATCH):
            removed += _unlinked(await self.execute_command("UNLINK", *keys, idempotent=True))
        return removed

    def scan(self, pattern: str | bytes = "*", *,
             count: int = DEFAULT_SCAN_COUNT) -> AsyncIterator[str]:
        """This namespace's keys matching a glob ``pattern``, without the
        namespace, through SCAN (never KEYS): ``async for key in
        cache.scan("user:*")``. ``count`` is SCAN's hint of keys looked at per
        call. As with SCAN, a key may come twice, and keys written during the
        walk may be missed."""
        prefix = self._key_prefix
        match, count = _scan_match(prefix, pattern), check_count(count)
        return _caller_keys_async(_scan_pages_async(self.execute_command, prefix, match, count),
                                  len(prefix))

    async def key_info(self, key: str | bytes) -> KeyInfo | None:
        """A key's type, TTL, memory use and encoding (one script); None when
        the key does not exist."""
        return parse_key_info(await self.execute_command(*key_info_args(self._key_prefix, key)))

    def lock(self, name: str, *, lease: float = 10.0, wait: float | None = 5.0,
             renew: bool = True, fencing: bool = True) -> AsyncLock:
        """A cross-process lock in this namespace: ``async with cache.lock("name")
        as lock:``; see :class:`redis_cache.locks.AsyncLock`."""
        from .locks import AsyncLock

        return AsyncLock(self, name, lease=lease, wait=wait, renew=renew, fencing=fencing)

    # -- pub/sub (redis_cache.pubsub)

    def publish(self, channel: str | bytes, value: Any) -> Awaitable[int]:
        """Publishes ``value``, encoded as ``set`` stores it, on ``channel`` (not
        namespaced); awaits how many subscribers received it. On a cluster
        every node's subscribers receive it."""
        return self.execute_command(*publish_args(self, "PUBLISH", channel, value))

    def spublish(self, channel: str | bytes, value: Any) -> Awaitable[int]:
        """Publishes on a shard channel (SPUBLISH, Redis 7): on a cluster only
        the node owning the channel's slot (and its replicas) carry it."""
        return self.execute_command(*publish_args(self, "SPUBLISH", channel, value))

    def subscribe(self, *channels: str | bytes, patterns: Iterable[str | bytes] = (),
                  shard_channels: Iterable[str | bytes] = (), **options: Any) -> Subscription:
        """A subscription on a connection of its own: ``async with`` it, then
        ``async for`` or ``await get(timeout=...)``. Options: ``max_queued``,
        ``report_gaps``, ``health_check_interval`` (see the README's "Pub/sub")."""
        return subscription(self, channels, patterns, shard_channels, options)  # type: ignore[no-any-return]

    def ssubscribe(self, *channels: str | bytes, **options: Any) -> Subscription:
        """A subscription to shard channels (SSUBSCRIBE): on a cluster, one
        connection per node owning their slots."""
        return self.subscribe(shard_channels=channels, **options)

    async def is_rate_limited(self, key: str, limit: int, window_seconds: float) -> bool:
        """Counts a request of ``key`` and says whether it is over ``limit`` requests
        in the last ``window_seconds`` (exact sliding window; a refused request is
        not counted)."""
        from .ratelimit import RateLimiter

        limiter = RateLimiter(self, (limit, window_seconds), algorithm="sliding-window")
        return not (await limiter.hit(key)).allowed

    async def set_session(self, session_id: str, data: Any, ttl: TTL = None) -> bool:
        """Stores ``data`` (JSON) under ``session:<session_id>`` for ``ttl`` seconds."""
        return await self.set(self._session_key(session_id), data, ttl)  # type: ignore[no-any-return]

    async def get_session(self, session_id: str) -> Any:
        """The data of ``set_session``, or None once it expired."""
        return await self.get(self._session_key(session_id))

    async def __aenter__(self: _ASelf) -> _ASelf:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- connecting (called from C when a command finds no usable connection)

    def _start_connecting(self, loop: asyncio.AbstractEventLoop, mux: Any) -> None:
        task = loop.create_task(self._connect(mux))
        self._connect_tasks.add(task)
        task.add_done_callback(self._connect_tasks.discard)

    def _open_multiplexer(self, loop: asyncio.AbstractEventLoop, old: Any) -> Any:
        for mux in self._multiplexers:
            other = mux.loop
            if other is not None and other is not loop and not mux.closed and other.is_running():
                raise RuntimeError(
                    f"{self!r} is in use on another running event loop; "
                    "create one cache per event loop"
                )
        if old is not None and not (old.draining and old.loop is loop):
            # Closed, from a loop that has stopped, or from before a fork:
            # close() unregisters it from a loop that still exists (and
            # leaves a forked parent's loop alone); abandon() is for loops
            # that are closed, where there is nothing to unregister. (A
            # draining one closes itself once its replies are in.)
            old_loop = old.loop
            if old_loop is None or old_loop.is_closed():
                old.abandon()
            else:
                old.close()
        mux = self._new_multiplexer(loop)
        if self._backoff.error is not None:
            # The server was down at the last attempt: commands wait for the
            # next one at most connect_wait (0: they fail at once).
            mux.connect_failed(*self._backoff.error)
        self._start_connecting(loop, mux)
        return mux

    def _on_node_stale(self, mux: Any) -> Any:
        """Called from C when a connection's node answered READONLY, LOADING or
        MASTERDOWN: it drains, and the connection returned here takes over
        (found again through the Sentinels, or the host name resolved again);
        a lone safe command is sent again on it."""
        self._dedicated.drop_idle()
        return self._replace_multiplexer(mux)

    def _failover_announced(self, new_primary: tuple[str, int]) -> None:
        """A Sentinel announced a failover: every connection drains, so the
        next command connects to the new primary without waiting for the old
        one to refuse it."""
        _log.info("Sentinel announced a new primary for %s: %s:%s",
                  self._settings.service_name, *new_primary)
        self._drain_connections()
        self._dedicated.drop_idle()
        _subscriptions_node_changed(self)

    def _start_watching(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._discovery is None:
            return
        task = self._watch_task
        if task is not None and not task.done() and task.get_loop() is loop:
            return
        self._watch_task = loop.create_task(
            self._discovery.watch_failovers(self._failover_announced)
        )

    def _handshake(self) -> list[tuple[Any, ...]]:
        s = self._settings
        commands: list[tuple[Any, ...]] = []
        if s.password is not None:
            if s.username is not None:
                commands.append(("AUTH", s.username, s.password))
            else:
                commands.append(("AUTH", s.password))
        if s.db:
            commands.append(("SELECT", s.db))
        if s.client_name is not None:
            commands.append(("CLIENT", "SETNAME", s.client_name))
        return commands

    async def _connect(self, mux: Any) -> None:
        """Connects mux, retrying with backoff while commands wait for it.

        The first attempt after a working connection broke starts at once;
        later ones wait out the backoff. Each failure fails the commands that
        have waited longer than connect_wait; when none is left waiting the
        attempts stop and mux is closed, so the next command starts over."""
        where = self._settings.describe()
        self._start_watching(asyncio.get_running_loop())
        try:
            while True:
                delay = self._backoff.delay()
                if delay > 0:
                    await asyncio.sleep(delay)
                    if mux.in_flight == 0 and self._backoff.error is not None:
                        # Everyone gave up while we waited: stop trying.
                        mux.fail(*self._backoff.error)
                        return
                if mux.closed:
                    return
                try:
                    host, port = await self._node_address()
                except (ConnectionError, TimeoutError) as exc:
                    error = (type(exc), str(exc))
                    self._backoff.failed(*error)
                    if mux.connect_failed(*error) == 0:
                        mux.fail(*error)
                        return
                    continue
                except Exception as exc:  # noqa: BLE001 - wrong service name, credentials...
                    mux.fail(type(exc) if isinstance(exc, ConnectionError) else ConnectionError,
                             str(exc))
                    return
                if self._settings.unix_socket_path is None:
                    where = _host_port(host, port)
                try:
                    sock = await asyncio.wait_for(
                        self._open_socket(host, port), timeout=self._settings.socket_connect_timeout
                    )
                except asyncio.TimeoutError:
                    error = (
                        TimeoutError,
                        f"connecting to redis at {where} timed out after "
                        f"{self._settings.socket_connect_timeout} s",
                    )
                except OSError as exc:
                    # asyncio's sock_connect words its errors "Connect call
                    # failed (addr)"; the errno says what actually happened.
                    reason = os.strerror(exc.errno) if exc.errno else str(exc)
                    error = (
                        ConnectionError,
                        f"cannot connect to redis at {where}: {reason}",
                    )
                else:
                    self._backoff.succeeded()
                    if mux.closed:
                        sock.close()
                        return
                    server_host = host if self._settings.ssl else None
                    mux.attach(sock.detach(), self._handshake(), server_host, where)
                    return
                self._backoff.failed(*error)
                if mux.connect_failed(*error) == 0:
                    mux.fail(*error)
                    return
        except asyncio.CancelledError:
            mux.fail(ConnectionError, "the cache was closed while connecting")
            raise

    async def _node_address(self) -> tuple[str, int]:
        """Where to connect: the primary the Sentinels name, or the settings'."""
        if self._discovery is not None:
            return await self._discovery.primary_async()
        return self._settings.host, self._settings.port

    async def _open_socket(self, host: str, port: int) -> socket.socket:
        loop = asyncio.get_running_loop()
        s = self._settings
        if s.unix_socket_path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, s.unix_socket_path)
            except BaseException:
                sock.close()
                raise
            return sock
        last: OSError | None = None
        for family, kind, proto, _, address in await loop.getaddrinfo(
            host, port, type=socket.SOCK_STREAM
        ):
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, address)
            except OSError as exc:
                sock.close()
                last = exc
                continue
            except BaseException:
                sock.close()
                raise
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            return sock
        raise last if last is not None else OSError(f"no address found for {host}")


class _DedicatedPool:
    """Connections lent to one caller at a time (see RedisCache.dedicated).

    At most ``size`` exist (``open`` counts idle, lent and connecting ones).
    A caller that finds none free waits in a FIFO queue; a connection given
    back goes to the longest waiter, and so does the slot of one that was
    closed (the waiter then opens a fresh connection in it)."""

    def __init__(self, cache: RedisCache, size: int) -> None:
        self._cache = cache
        self._size = size
        self._open = 0
        self._idle: list[Any] = []
        self._waiters: collections.deque[asyncio.Future[Any]] = collections.deque()

    async def acquire(self, loop: asyncio.AbstractEventLoop, timeout: float | None) -> Any:
        if self._cache.closed:
            raise ConnectionError("the cache is closed; create a new one")
        while self._idle and not self._waiters:
            conn = self._idle.pop()
            if not conn.closed and conn.loop is loop:
                return conn
            self._discard(conn)
        if self._open < self._size and not self._waiters:
            return self._open_one(loop)
        waiter: asyncio.Future[Any] = loop.create_future()
        self._waiters.append(waiter)
        try:
            handed = await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                # Handed over just as this caller gave up: pass it on.
                self._give(waiter.result())
            else:
                waiter.cancel()
                self._waiters.remove(waiter)
            if isinstance(exc, asyncio.TimeoutError):
                raise PoolTimeout(
                    f"all {self._size} dedicated connections stayed busy for {timeout} s; "
                    "raise max_connections or pool_timeout"
                ) from None
            raise
        return self._open_one(loop) if handed is None else handed

    def release(self, conn: Any, *, reuse: bool) -> None:
        if not reuse or conn.closed or self._cache.closed:
            self._discard(conn)
            conn = None
        self._give(conn)

    def close(self) -> None:
        self.drop_idle()

    def drop_idle(self) -> None:
        """Closes the idle connections (their node may no longer be the primary)."""
        for conn in self._idle:
            self._discard(conn)
        self._idle.clear()

    def _open_one(self, loop: asyncio.AbstractEventLoop) -> Any:
        self._open += 1
        conn = self._cache._new_multiplexer(loop, True)
        self._cache._start_connecting(loop, conn)
        return conn

    def _discard(self, conn: Any) -> None:
        conn.close()
        self._open -= 1

    def _give(self, conn: Any) -> None:
        """Hands conn, or with None a free slot, to the longest waiter."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        if conn is not None:
            self._idle.append(conn)
