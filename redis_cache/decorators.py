"""Caching decorators for sync and async functions.

``@cache.cached(ttl=60)`` caches a function's results under keys built by
:mod:`redis_cache.keys`; ``@cached(...)`` does the same with the default
cache (:func:`set_default_cache`), looked up at call time so modules can be
decorated before the cache exists. What every decorated function gets:

* a miss is told apart from a cached ``None`` (``None`` results are cached);
* results come back as the function's annotated return type (pydantic
  models, dataclasses, lists of them) through typed reads;
* concurrent misses of one key in one process wait for one computation
  (single flight); ``lock=True`` extends that across processes with a Redis
  lock whose lease renews while the computation runs, waiters being woken by
  a blocking pop rather than by polling; a waiter never waits past the
  holder's lease, so the lock of a process that died is taken over when its
  lease runs out;
* ``early_refresh=1.0`` recomputes an entry shortly before it expires, at a
  random moment weighted by how long the function takes (so not everyone at
  once);
* fail-open: if Redis is unreachable the function still runs and returns;
  a warning is logged at most every 30 s, and the cache's
  :class:`~redis_cache.CircuitBreaker` (``circuit_breaker=`` on the cache)
  skips Redis after repeated failures, so calls do not each wait for a
  timeout, and probes it so caching resumes soon after it is back;
* ``tags=["user:{user_id}"]`` tags entries so that
  ``cache.invalidate_tags("user:5")`` (or ``@invalidate(tags=...)``) turns
  them all into misses in one write per tag (redis_cache.tags);
* ``stale_if_error=600`` answers with the last value, up to that long past
  its expiry, when recomputing raises (``stats.stale_served``);
* :func:`get_or_set` is the same machinery without a decorator;
* ``fn.invalidate(*args, **kwargs)`` deletes exactly the entry that call
  would read; ``fn.key(...)`` shows it; ``fn.stats`` counts hits, misses,
  errors and time saved.

A sync function decorated through an async cache (or the reverse) uses a
companion cache of the other kind with the same settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import math
import random
import threading
import time
import typing
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from ._breaker import CircuitBreaker
from .cache import RedisCache, SyncRedisCache, TTL
from .errors import RedisCacheError, SerializationError
from .keys import KeyBuilder, canonical_digest
from . import tags as _tags
from .locks import ACQUIRED, TIMED_OUT, AsyncLock, Lock, check_lock_settings, lock_keys

__all__ = [
    "CircuitBreaker",
    "FunctionStats",
    "cached",
    "cached_batch",
    "get_default_cache",
    "get_or_set",
    "invalidate",
    "set_default_cache",
    "stats",
]

log = logging.getLogger("redis_cache")

F = TypeVar("F", bound=Callable[..., Any])
AnyCache = RedisCache | SyncRedisCache

_MISSING = object()

#: How long a lock holder's lease lasts; it is renewed every third of it.
DEFAULT_LOCK_LEASE = 10.0
#: How long a caller waits for another process's computation before doing it.
DEFAULT_LOCK_WAIT = 5.0
#: At most one "cache unavailable" warning per function this often.
WARNING_INTERVAL = 30.0

# ---------------------------------------------------------------------- stats


@dataclass
class FunctionStats:
    """What the cache did for one decorated function in this process."""

    name: str
    hits: int = 0
    misses: int = 0
    errors: int = 0
    computations: int = 0
    #: Calls answered with a value past its expiry because recomputing it
    #: raised (stale_if_error=).
    stale_served: int = 0
    compute_seconds: float = 0.0
    #: Callers that joined a computation already running in this process.
    stampedes_collapsed: int = 0
    #: Computations that waited for another process's lock (lock=True).
    lock_waits: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def average_compute_seconds(self) -> float:
        return self.compute_seconds / self.computations if self.computations else 0.0

    @property
    def time_saved_seconds(self) -> float:
        """Hits times the average computation: what the cache spared this process."""
        return self.hits * self.average_compute_seconds

    @property
    def hit_rate(self) -> float:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0

    def count(self, what: str, seconds: float = 0.0, n: int = 1) -> None:
        with self._lock:
            setattr(self, what, getattr(self, what) + n)
            self.compute_seconds += seconds

    def as_dict(self) -> dict[str, float | int]:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "errors": self.errors,
            "computations": self.computations,
            "stale_served": self.stale_served,
            "hit_rate": round(self.hit_rate, 4),
            "average_compute_ms": round(self.average_compute_seconds * 1000, 3),
            "time_saved_seconds": round(self.time_saved_seconds, 3),
        }


_stats: dict[str, FunctionStats] = {}


def stats() -> dict[str, dict[str, float | int]]:
    """Per-function statistics of every decorated function, by qualified name."""
    return {name: s.as_dict() for name, s in sorted(_stats.items())}


# ---------------------------------------------------------------------- failures


class _Warnings:
    """Rate-limited warnings, one clock per function and kind."""

    def __init__(self) -> None:
        self._last = -math.inf
        self._last_store = -math.inf
        self._last_stale = -math.inf

    def serving_stale(self, name: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_stale >= WARNING_INTERVAL:
            self._last_stale = now
            log.warning("redis_cache: %s raised %s: %s; serving its last value (stale_if_error)",
                        name, type(exc).__name__, exc)

    def cannot_store(self, name: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_store >= WARNING_INTERVAL:
            self._last_store = now
            log.warning("redis_cache: %s returned a value the cache cannot store: %s", name, exc)

    def warn(self, name: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last >= WARNING_INTERVAL:
            self._last = now
            log.warning(
                "redis_cache: cache unavailable for %s (%s: %s); calling the function directly",
                name,
                type(exc).__name__,
                exc,
            )


# ---------------------------------------------------------------------- default cache

_default_cache: AnyCache | None = None


def set_default_cache(cache: AnyCache | None) -> None:
    """Sets the cache that the module-level decorators use."""
    global _default_cache
    _default_cache = cache


def get_default_cache() -> AnyCache:
    if _default_cache is None:
        raise RuntimeError(
            "no default cache: call redis_cache.set_default_cache(cache) at startup, "
            "or decorate with @cache.cached(...) on a cache instance"
        )
    return _default_cache


class _Binding:
    """The cache a decorator uses: a given one, or the default at call time,
    in the kind (sync or async) the decorated function needs."""

    def __init__(self, cache: AnyCache | None) -> None:
        self._cache = cache

    def get(self, kind: type[Any]) -> Any:
        cache = self._cache if self._cache is not None else get_default_cache()
        return cache._twin(kind)


# ---------------------------------------------------------------------- typed reads

_PLAIN = (int, float, str, bool, bytes, dict, list, tuple, type(None), Any)


class _LazyModel:
    """The return annotation, resolved at the first call rather than at
    decoration (it may name a class defined further down the module)."""

    _UNRESOLVED = object()

    def __init__(self, func: Callable[..., Any]) -> None:
        self._func = func
        self._model: Any = self._UNRESOLVED

    def get(self) -> Any:
        if self._model is self._UNRESOLVED:
            try:
                hints = typing.get_type_hints(self._func)
            except NameError:
                return None  # not defined yet: try again next call
            except Exception:
                hints = {}
            self._model = _return_model(hints.get("return"))
        return self._model


def _return_model(annotation: Any) -> Any:
    """The return annotation when a stored value needs converting back to it."""
    if annotation is None or annotation in _PLAIN and annotation is not tuple:
        return None
    origin = typing.get_origin(annotation)
    if origin in (Awaitable, typing.Coroutine) or (
        origin is not None and getattr(origin, "__name__", "") == "Coroutine"
    ):
        return None
    if origin in (list, dict) and all(a in _PLAIN for a in typing.get_args(annotation)):
        return None
    return annotation


# ---------------------------------------------------------------------- options


@dataclass(frozen=True)
class _Options:
    ttl: TTL
    condition: Callable[[Any], bool] | None
    lock: bool
    lock_lease: float
    lock_wait: float
    early_refresh: float | None
    #: Entries carry tags (their tokens are read before computing).
    tagged: bool = False
    #: How long (ms) past its expiry a value may be served when recomputing fails.
    stale_ms: int = 0

    @property
    def entries(self) -> bool:
        """Stored as redis_cache.tags entries (hashes) rather than plain
        values: only tagged ones. An untagged value that may be served stale
        is a plain value living ttl + stale_if_error, fresh while its PTTL
        exceeds the stale window (so plain get reads it, in C)."""
        return self.tagged

    def redis_ttl(self, cache: AnyCache) -> TTL:
        """What a plain value is stored for: the ttl, plus the stale window."""
        if not self.stale_ms:
            return self.ttl
        ttl = cache.default_ttl if self.ttl is None else self.ttl
        if ttl is None:
            return None
        seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else ttl
        return seconds + self.stale_ms / 1000


def _split_stale(options: _Options, value: Any, remaining_ms: Any) -> tuple[Any, Any, Any]:
    """(value, fresh ms left, stale value) of a plain read with its PTTL: past
    the ttl, the value is only a stale candidate."""
    if not options.stale_ms or value is _MISSING or not isinstance(remaining_ms, int) \
            or remaining_ms < 0:
        return value, remaining_ms, _MISSING
    remaining_ms -= options.stale_ms
    if remaining_ms > 0:
        return value, remaining_ms, _MISSING
    return _MISSING, None, value


TagsOf = Callable[[tuple[Any, ...], dict[str, Any]], tuple[str, ...]]


def _no_tags(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, ...]:
    return ()


class _FixedModel:
    """The model of a get_or_set call: given, not read from annotations."""

    def __init__(self, model: Any) -> None:
        self._model = model

    def get(self) -> Any:
        return self._model


def _should_store(options: _Options, value: Any) -> bool:
    return options.condition is None or bool(options.condition(value))


def _refresh_due(options: _Options, stats_: FunctionStats, remaining_ms: Any) -> bool:
    """Probabilistic early expiry: the closer to expiry, and the slower the
    function, the likelier a caller recomputes now; -log(U) spreads callers."""
    if not options.early_refresh or not isinstance(remaining_ms, int) or remaining_ms < 0:
        return False
    delta = stats_.average_compute_seconds or 0.05
    return remaining_ms / 1000.0 <= delta * options.early_refresh * -math.log(random.random() or 1e-12)


def _lock_keys(cache: AnyCache, key: str) -> tuple[bytes, bytes]:
    """The lock and wake-up keys lock=True uses for a cache key (see
    :func:`redis_cache.locks.lock_keys`): the same as ``cache.lock(key)``'s."""
    return lock_keys(cache, key)[:2]


# ---------------------------------------------------------------------- async path


class _AsyncCached:
    def __init__(self, func: Callable[..., Awaitable[Any]], binding: _Binding,
                 keys: KeyBuilder | None, options: _Options, stats_: FunctionStats,
                 tags_of: TagsOf = _no_tags, model: Any = None) -> None:
        self.func = func
        self.binding = binding
        self.keys = keys
        self.options = options
        self.stats = stats_
        self.tags_of = tags_of
        self.model: Any = _LazyModel(func) if model is None else model
        self.warnings = _Warnings()
        self.inflight: dict[tuple[int, str], asyncio.Future[Any]] = {}
        self.background: set[asyncio.Task[Any]] = set()

    def __call__(self, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        # Not a coroutine itself: the wrapper awaits lookup's directly, so the
        # hot path has no extra frame.
        assert self.keys is not None
        key = self.keys.key(args, kwargs)
        cache: RedisCache = self.binding.get(RedisCache)
        if self.options.entries:
            return self.lookup_entry(cache, key, args, kwargs)
        return self.lookup(cache, key, args, kwargs)

    async def lookup(self, cache: RedisCache, key: str, args: Any, kwargs: Any) -> Any:
        """The cached value of key, or the function's (args, kwargs) stored."""
        attempt = cache.circuit_breaker.attempt()
        stale: Any = _MISSING
        if attempt is not None:
            try:
                with attempt:
                    if self.options.early_refresh or self.options.stale_ms:
                        pending = cache.get(key, _MISSING, self.model.get())
                        remaining = cache.execute_command("PTTL", cache._key_prefix + key.encode())
                        value, remaining_ms = await asyncio.gather(pending, remaining)
                    else:
                        value, remaining_ms = await cache.get(key, _MISSING, self.model.get()), None
            except SerializationError:
                raise
            except RedisCacheError as exc:
                self._failed(exc)
            else:
                value, remaining_ms, stale = _split_stale(self.options, value, remaining_ms)
                if value is not _MISSING:
                    self.stats.count("hits")
                    if _refresh_due(self.options, self.stats, remaining_ms):
                        self._refresh_soon(cache, key, args, kwargs)
                    return value
        return await self._miss(cache, key, args, kwargs, stale)

    async def lookup_entry(self, cache: RedisCache, key: str, args: Any, kwargs: Any) -> Any:
        """__call__ for tagged or stale-capable entries (redis_cache.tags): the
        entry and its tags' tokens are read in one round trip; a value past
        its expiry is kept to answer with if recomputing raises."""
        stale: Any = _MISSING
        tags = self.tags_of(args, kwargs)
        attempt = cache.circuit_breaker.attempt()
        if attempt is not None:
            try:
                with attempt:
                    entry, _ = await _tags.read_async(cache, key, self.model.get(), tags or None)
            except SerializationError:
                raise
            except RedisCacheError as exc:
                self._failed(exc)
            else:
                if entry is not None and entry.fresh:
                    self.stats.count("hits")
                    if _refresh_due(self.options, self.stats, entry.fresh_ms):
                        self._refresh_soon(cache, key, args, kwargs)
                    return entry.value
                if entry is not None:
                    stale = entry.value
        return await self._miss(cache, key, args, kwargs, stale)

    async def _miss(self, cache: RedisCache, key: str, args: Any, kwargs: Any, stale: Any) -> Any:
        """Computes (single flight); if that raises and a value past its expiry
        is at hand (stale_if_error), answers with it instead."""
        self.stats.count("misses")
        if stale is _MISSING:
            return await self._single_flight(cache, key, args, kwargs)
        try:
            return await self._single_flight(cache, key, args, kwargs)
        except Exception as exc:
            self.stats.count("stale_served")
            self.warnings.serving_stale(self.stats.name, exc)
            return stale

    def _failed(self, exc: BaseException) -> None:
        self.stats.count("errors")
        self.warnings.warn(self.stats.name, exc)

    async def _stored_by_holder(self, cache: RedisCache, key: str) -> Any:
        """For a lock waiter woken up: the holder's fresh value, or TIMED_OUT."""
        value = await self._peek(cache, key)
        return TIMED_OUT if value is _MISSING else value

    async def _peek(self, cache: RedisCache, key: str) -> Any:
        """The fresh value another process stored, or _MISSING."""
        if not self.options.entries:
            if not self.options.stale_ms:
                return await cache.get(key, _MISSING, self.model.get())
            value, remaining_ms = await asyncio.gather(
                cache.get(key, _MISSING, self.model.get()),
                cache.execute_command("PTTL", cache._key_prefix + key.encode()))
            return _split_stale(self.options, value, remaining_ms)[0]
        entry, _ = await _tags.read_async(cache, key, self.model.get())
        return entry.value if entry is not None and entry.fresh else _MISSING

    async def _store(self, cache: RedisCache, key: str, value: Any,
                     tokens: dict[str, bytes] | None) -> None:
        if self.options.entries:
            await _tags.write_async(cache, key, value, self.options.ttl,
                                    stale=self.options.stale_ms, tokens=tokens)
        else:
            await cache.set(key, value, self.options.redis_ttl(cache))

    async def _tokens(self, cache: RedisCache, args: Any, kwargs: Any) -> dict[str, bytes] | None:
        """The tokens of the call's tags, read before computing (so that an
        invalidation during the computation leaves what it stores invalid);
        None when they cannot be read, and then nothing is stored."""
        tags = self.tags_of(args, kwargs)
        if not tags:
            return {}
        attempt = cache.circuit_breaker.attempt()
        if attempt is None:
            return None
        try:
            with attempt:
                return await _tags.tokens_async(cache, tags)
        except RedisCacheError as exc:
            self._failed(exc)
            return None

    async def _single_flight(self, cache: RedisCache, key: str, args: Any, kwargs: Any) -> Any:
        slot = (id(asyncio.get_running_loop()), key)
        running = self.inflight.get(slot)
        if running is not None:
            self.stats.count("stampedes_collapsed")
            return await asyncio.shield(running)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.inflight[slot] = future
        try:
            value = await self._compute(cache, key, args, kwargs)
        except BaseException as exc:
            if not future.done():
                future.set_exception(exc)
                future.exception()  # retrieved: waiters may be none
            raise
        else:
            future.set_result(value)
            return value
        finally:
            self.inflight.pop(slot, None)

    async def _compute(self, cache: RedisCache, key: str, args: Any, kwargs: Any) -> Any:
        if self.options.lock and not cache.circuit_breaker.open:
            return await self._compute_locked(cache, key, args, kwargs)
        return await self._run_and_store(cache, key, args, kwargs)

    async def _run_and_store(self, cache: RedisCache, key: str, args: Any, kwargs: Any) -> Any:
        tokens = await self._tokens(cache, args, kwargs) if self.options.tagged else None
        start = time.perf_counter()
        value = await self.func(*args, **kwargs)
        self.stats.count("computations", time.perf_counter() - start)
        storable = _should_store(self.options, value) and not (self.options.tagged and tokens is None)
        attempt = cache.circuit_breaker.attempt() if storable else None
        if attempt is not None:
            try:
                with attempt:
                    await self._store(cache, key, value, tokens)
            except SerializationError as exc:
                self.warnings.cannot_store(self.stats.name, exc)
            except RedisCacheError as exc:
                self._failed(exc)
        return value

    async def _compute_locked(self, cache: RedisCache, key: str, args: Any, kwargs: Any) -> Any:
        """Takes the cross-process lock, or waits for its holder and returns
        what it stored; computes unlocked once lock_wait is over or when no
        lock is to be had (fail-open)."""
        lock = AsyncLock(cache, key, lease=self.options.lock_lease, wait=self.options.lock_wait,
                         fencing=False)
        try:
            outcome = await lock._acquire_or(lambda: self._stored_by_holder(cache, key))
        except RedisCacheError:
            outcome = TIMED_OUT
        if lock.waited:
            self.stats.count("lock_waits")
        if outcome is TIMED_OUT:
            return await self._run_and_store(cache, key, args, kwargs)
        if outcome is not ACQUIRED:
            return outcome  # the value the holder stored
        try:
            # Double-checked: a holder may have stored the value and let go
            # between our miss and our taking the lock.
            with contextlib.suppress(RedisCacheError):
                stored = await self._stored_by_holder(cache, key)
                if stored is not TIMED_OUT:
                    return stored
            return await self._run_and_store(cache, key, args, kwargs)
        finally:
            with contextlib.suppress(RedisCacheError):
                await lock.release()

    def _refresh_soon(self, cache: RedisCache, key: str, args: Any, kwargs: Any) -> None:
        slot = (id(asyncio.get_running_loop()), key)
        if slot in self.inflight:
            return
        task = asyncio.ensure_future(self._single_flight(cache, key, args, kwargs))
        self.background.add(task)
        task.add_done_callback(self._refresh_done)

    def _refresh_done(self, task: asyncio.Task[Any]) -> None:
        self.background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("redis_cache: early refresh of %s failed: %s", self.stats.name,
                        task.exception())


# ---------------------------------------------------------------------- sync path


class _Flight:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class _SyncCached:
    def __init__(self, func: Callable[..., Any], binding: _Binding, keys: KeyBuilder | None,
                 options: _Options, stats_: FunctionStats, tags_of: TagsOf = _no_tags,
                 model: Any = None) -> None:
        self.func = func
        self.binding = binding
        self.keys = keys
        self.options = options
        self.stats = stats_
        self.tags_of = tags_of
        self.model: Any = _LazyModel(func) if model is None else model
        self.warnings = _Warnings()
        self.inflight: dict[str, _Flight] = {}
        self.inflight_lock = threading.Lock()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        assert self.keys is not None
        key = self.keys.key(args, kwargs)
        cache: SyncRedisCache = self.binding.get(SyncRedisCache)
        if self.options.entries:
            return self.lookup_entry(cache, key, args, kwargs)
        return self.lookup(cache, key, args, kwargs)

    def lookup(self, cache: SyncRedisCache, key: str, args: Any, kwargs: Any) -> Any:
        """The cached value of key, or the function's (args, kwargs) stored."""
        attempt = cache.circuit_breaker.attempt()
        stale: Any = _MISSING
        if attempt is not None:
            try:
                with attempt:
                    value = cache.get(key, _MISSING, self.model.get())
                    remaining = (
                        cache.execute_command("PTTL", cache._key_prefix + key.encode())
                        if (self.options.early_refresh or self.options.stale_ms)
                        and value is not _MISSING
                        else None
                    )
            except SerializationError:
                raise
            except RedisCacheError as exc:
                self._failed(exc)
            else:
                value, remaining, stale = _split_stale(self.options, value, remaining)
                if value is not _MISSING:
                    self.stats.count("hits")
                    if _refresh_due(self.options, self.stats, remaining):
                        with contextlib.suppress(Exception):
                            return self._single_flight(cache, key, args, kwargs)
                    return value
        return self._miss(cache, key, args, kwargs, stale)

    def lookup_entry(self, cache: SyncRedisCache, key: str, args: Any, kwargs: Any) -> Any:
        """__call__ for tagged or stale-capable entries; see _AsyncCached."""
        stale: Any = _MISSING
        tags = self.tags_of(args, kwargs)
        attempt = cache.circuit_breaker.attempt()
        if attempt is not None:
            try:
                with attempt:
                    entry, _ = _tags.read_sync(cache, key, self.model.get(), tags or None)
            except SerializationError:
                raise
            except RedisCacheError as exc:
                self._failed(exc)
            else:
                if entry is not None and entry.fresh:
                    self.stats.count("hits")
                    if _refresh_due(self.options, self.stats, entry.fresh_ms):
                        with contextlib.suppress(Exception):
                            return self._single_flight(cache, key, args, kwargs)
                    return entry.value
                if entry is not None:
                    stale = entry.value
        return self._miss(cache, key, args, kwargs, stale)

    def _miss(self, cache: SyncRedisCache, key: str, args: Any, kwargs: Any, stale: Any) -> Any:
        """See _AsyncCached._miss."""
        self.stats.count("misses")
        if stale is _MISSING:
            return self._single_flight(cache, key, args, kwargs)
        try:
            return self._single_flight(cache, key, args, kwargs)
        except Exception as exc:
            self.stats.count("stale_served")
            self.warnings.serving_stale(self.stats.name, exc)
            return stale

    def _failed(self, exc: BaseException) -> None:
        self.stats.count("errors")
        self.warnings.warn(self.stats.name, exc)

    def _stored_by_holder(self, cache: SyncRedisCache, key: str) -> Any:
        """For a lock waiter woken up: the holder's fresh value, or TIMED_OUT."""
        value = self._peek(cache, key)
        return TIMED_OUT if value is _MISSING else value

    def _peek(self, cache: SyncRedisCache, key: str) -> Any:
        """The fresh value another process stored, or _MISSING."""
        if not self.options.entries:
            value = cache.get(key, _MISSING, self.model.get())
            if not self.options.stale_ms or value is _MISSING:
                return value
            remaining = cache.execute_command("PTTL", cache._key_prefix + key.encode())
            return _split_stale(self.options, value, remaining)[0]
        entry, _ = _tags.read_sync(cache, key, self.model.get())
        return entry.value if entry is not None and entry.fresh else _MISSING

    def _store(self, cache: SyncRedisCache, key: str, value: Any,
               tokens: dict[str, bytes] | None) -> None:
        if self.options.entries:
            _tags.write_sync(cache, key, value, self.options.ttl, stale=self.options.stale_ms,
                             tokens=tokens)
        else:
            cache.set(key, value, self.options.redis_ttl(cache))

    def _tokens(self, cache: SyncRedisCache, args: Any, kwargs: Any) -> dict[str, bytes] | None:
        """See _AsyncCached._tokens."""
        tags = self.tags_of(args, kwargs)
        if not tags:
            return {}
        attempt = cache.circuit_breaker.attempt()
        if attempt is None:
            return None
        try:
            with attempt:
                return _tags.tokens_sync(cache, tags)
        except RedisCacheError as exc:
            self._failed(exc)
            return None

    def _single_flight(self, cache: SyncRedisCache, key: str, args: Any, kwargs: Any) -> Any:
        with self.inflight_lock:
            flight = self.inflight.get(key)
            leader = flight is None
            if leader:
                flight = self.inflight[key] = _Flight()
        assert flight is not None
        if not leader:
            self.stats.count("stampedes_collapsed")
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            return flight.value
        try:
            flight.value = self._compute(cache, key, args, kwargs)
            return flight.value
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self.inflight_lock:
                self.inflight.pop(key, None)
            flight.done.set()

    def _compute(self, cache: SyncRedisCache, key: str, args: Any, kwargs: Any) -> Any:
        if self.options.lock and not cache.circuit_breaker.open:
            return self._compute_locked(cache, key, args, kwargs)
        return self._run_and_store(cache, key, args, kwargs)

    def _run_and_store(self, cache: SyncRedisCache, key: str, args: Any, kwargs: Any) -> Any:
        tokens = self._tokens(cache, args, kwargs) if self.options.tagged else None
        start = time.perf_counter()
        value = self.func(*args, **kwargs)
        self.stats.count("computations", time.perf_counter() - start)
        storable = _should_store(self.options, value) and not (self.options.tagged and tokens is None)
        attempt = cache.circuit_breaker.attempt() if storable else None
        if attempt is not None:
            try:
                with attempt:
                    self._store(cache, key, value, tokens)
            except SerializationError as exc:
                self.warnings.cannot_store(self.stats.name, exc)
            except RedisCacheError as exc:
                self._failed(exc)
        return value

    def _compute_locked(self, cache: SyncRedisCache, key: str, args: Any, kwargs: Any) -> Any:
        """As the async path's: the lock, the holder's value, or unlocked."""
        lock = Lock(cache, key, lease=self.options.lock_lease, wait=self.options.lock_wait,
                    fencing=False)
        try:
            outcome = lock._acquire_or(lambda: self._stored_by_holder(cache, key))
        except RedisCacheError:
            outcome = TIMED_OUT
        if lock.waited:
            self.stats.count("lock_waits")
        if outcome is TIMED_OUT:
            return self._run_and_store(cache, key, args, kwargs)
        if outcome is not ACQUIRED:
            return outcome  # the value the holder stored
        try:
            with contextlib.suppress(RedisCacheError):  # double-checked, as above
                stored = self._stored_by_holder(cache, key)
                if stored is not TIMED_OUT:
                    return stored
            return self._run_and_store(cache, key, args, kwargs)
        finally:
            with contextlib.suppress(RedisCacheError):
                lock.release()


# ---------------------------------------------------------------------- decorators


def _qualified_name(func: Callable[..., Any]) -> str:
    return f"{func.__module__}.{func.__qualname__}"


def _make_cached(
    cache: AnyCache | None,
    *,
    ttl: TTL,
    key: str | Callable[..., str] | None,
    namespace: str | None,
    condition: Callable[[Any], bool] | None,
    exclude: Iterable[str],
    exclude_types: Iterable[type],
    lock: bool,
    lock_lease: float,
    lock_wait: float,
    early_refresh: float | None,
    tags: Iterable[str] | str = (),
    stale_if_error: float | None = None,
) -> Callable[[F], F]:
    if lock:
        check_lock_settings(lock_lease, lock_wait)
    options = _Options(ttl, condition, lock, lock_lease, lock_wait, early_refresh,
                       tagged=bool(tags), stale_ms=_tags.stale_ms(stale_if_error))
    binding = _Binding(cache)

    def decorate(func: F) -> F:
        keys = KeyBuilder(func, key=key, namespace=namespace, exclude=exclude,
                          exclude_types=exclude_types)
        name = _qualified_name(func)
        stats_ = _stats.setdefault(name, FunctionStats(name))
        is_async = inspect.iscoroutinefunction(func)
        tags_of = _tag_renderer(keys, func, tags)
        engine: Any = (_AsyncCached if is_async else _SyncCached)(func, binding, keys, options,
                                                                   stats_, tags_of)
        if is_async:
            @functools.wraps(func)
            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                return await engine(*args, **kwargs)
        else:
            @functools.wraps(func)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                return engine(*args, **kwargs)

        key_of = _method_aware_key(keys, func)
        wrapper.key = lambda *a, **kw: key_of(a, kw)  # type: ignore[attr-defined]
        wrapper.invalidate = _invalidator(binding, keys, func, is_async)  # type: ignore[attr-defined]
        wrapper.stats = stats_  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def _tag_renderer(keys: KeyBuilder, func: Callable[..., Any],
                  tags: Iterable[str] | str) -> TagsOf:
    """The tags of one call, from templates checked here, at decoration."""
    templates = _tags.check_tag_templates(
        tags, keys.signature.parameters, f"{func.__qualname__}{keys.signature}"
    )
    if not templates:
        return _no_tags

    def tags_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, ...]:
        arguments = keys.bind(args, kwargs).arguments
        try:
            return _tags.render_tags(templates, arguments)
        except (KeyError, AttributeError, IndexError, TypeError, ValueError) as exc:
            raise ValueError(f"cannot fill in the tags {list(templates)} of "
                             f"{func.__qualname__} with its arguments: "
                             f"{type(exc).__name__}: {exc}") from exc

    return tags_of


def _method_aware_key(
    keys: KeyBuilder, func: Callable[..., Any]
) -> Callable[[tuple[Any, ...], dict[str, Any]], str]:
    """fn.key / fn.invalidate take the call's arguments. For a method, self may
    be given (``Repo.get.key(repo, 5)``) or left out (``repo.get.key(5)``,
    ``Repo.get.invalidate(5, "de")``); it is not part of the key either way."""
    first = next(iter(keys.signature.parameters), None)
    if first not in ("self", "cls"):
        return keys.key

    def is_owner(candidate: Any) -> bool:
        owner = candidate if first == "cls" and isinstance(candidate, type) else type(candidate)
        attribute = inspect.getattr_static(owner, func.__name__, None)
        attribute = getattr(attribute, "__func__", attribute)
        return getattr(attribute, "__wrapped__", None) is func

    def key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        if args and is_owner(args[0]):
            return keys.key(args, kwargs)
        return keys.key((None, *args), kwargs)

    return key


def _invalidator(
    binding: _Binding, keys: KeyBuilder, func: Callable[..., Any], is_async: bool
) -> Callable[..., Any]:
    """fn.invalidate(*args, **kwargs): deletes the entry that call would read.
    For methods, self may be left out (it is not part of the key)."""

    key_for = _method_aware_key(keys, func)

    if is_async:
        async def invalidate_async(*args: Any, **kwargs: Any) -> bool:
            cache: RedisCache = binding.get(RedisCache)
            return await cache.delete(key_for(args, kwargs))

        return invalidate_async

    def invalidate_sync(*args: Any, **kwargs: Any) -> bool:
        cache: SyncRedisCache = binding.get(SyncRedisCache)
        return cache.delete(key_for(args, kwargs))

    return invalidate_sync


def _is_pattern(template: str) -> bool:
    """A template with glob characters outside its {fields}."""
    import string

    literal = "".join(text for text, _, _, _ in string.Formatter().parse(template))
    return any(c in literal for c in "*?[")


def _make_invalidate(cache: AnyCache | None, templates: tuple[str, ...],
                     namespace: str | None, tags: Iterable[str] | str = ()) -> Callable[[F], F]:
    """After the decorated function returns, deletes the keys its templates
    name (filled in with its arguments; a template with * clears a pattern)
    and invalidates the tags its tag templates name."""
    if not templates and not tags:
        raise ValueError("invalidate() needs at least one key template, e.g. 'user:{user_id}', "
                         "or tags=['user:{user_id}']")
    binding = _Binding(cache)

    def decorate(func: F) -> F:
        keys = KeyBuilder(func, namespace=namespace)
        for template in templates:
            keys._check_template(func, template)
        tags_of = _tag_renderer(keys, func, tags)

        exact_templates = [t for t in templates if not _is_pattern(t)]
        pattern_templates = [t for t in templates if _is_pattern(t)]

        def targets(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[list[str], list[str]]:
            # Whether a key is a pattern is the template's to say, never an
            # argument's: update_user("*") deletes the key "user:*" only.
            return (
                [keys.render(t, args, kwargs) for t in exact_templates],
                [keys.render(t, args, kwargs, pattern=True) for t in pattern_templates],
            )

        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                tags_ = tags_of(args, kwargs)  # a bad tag fails before the write runs
                result = await func(*args, **kwargs)
                exact, patterns = targets(args, kwargs)
                cache: RedisCache = binding.get(RedisCache)
                try:
                    if tags_:
                        await cache.invalidate_tags(*tags_)
                    if exact:
                        await cache.delete_many(exact)
                    for pattern in patterns:
                        await cache.clear_pattern(pattern)
                except RedisCacheError as exc:
                    log.warning("redis_cache: could not invalidate %s after %s: %s",
                                exact + patterns + list(tags_), _qualified_name(func), exc)
                return result
        else:
            @functools.wraps(func)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                tags_ = tags_of(args, kwargs)  # a bad tag fails before the write runs
                result = func(*args, **kwargs)
                exact, patterns = targets(args, kwargs)
                cache: SyncRedisCache = binding.get(SyncRedisCache)
                try:
                    if tags_:
                        cache.invalidate_tags(*tags_)
                    if exact:
                        cache.delete_many(exact)
                    for pattern in patterns:
                        cache.clear_pattern(pattern)
                except RedisCacheError as exc:
                    log.warning("redis_cache: could not invalidate %s after %s: %s",
                                exact + patterns + list(tags_), _qualified_name(func), exc)
                return result

        return wrapper  # type: ignore[return-value]

    return decorate


def _make_cached_batch(cache: AnyCache | None, *, ttl: TTL, key: str | None,
                       namespace: str | None) -> Callable[[F], F]:
    """For ``fn(ids) -> {id: value}``: one get_many for all ids, the function
    called with only the missing ones, one set_many for what it returned."""
    binding = _Binding(cache)

    def decorate(func: F) -> F:
        name = _qualified_name(func)
        prefix = namespace or name
        stats_ = _stats.setdefault(name, FunctionStats(name))
        model = _batch_model(func)
        warnings_ = _Warnings()

        def key_of(item: Any) -> str:
            if key is not None:
                return f"{namespace}:{key.format(item)}" if namespace else key.format(item)
            if isinstance(item, bool) or not isinstance(item, (int, str)):
                return f"{prefix}:h:{canonical_digest(item, 'an id').hex()}"
            return f"{prefix}:{'i' if isinstance(item, int) else 's'}:{item}"

        def split(ids: Iterable[Any]) -> tuple[list[Any], dict[str, Any]]:
            ids = list(dict.fromkeys(ids))
            return ids, {key_of(i): i for i in ids}

        def fail(exc: BaseException) -> None:
            stats_.count("errors")
            warnings_.warn(name, exc)

        def sort_out(
            ordered: list[Any], by_key: dict[str, Any], found: Mapping[str, Any]
        ) -> tuple[dict[Any, Any], list[Any]]:
            """What the cache had (by id), and the ids still to compute."""
            result = {by_key[k]: v for k, v in found.items()}
            missing = [i for i in ordered if i not in result]
            stats_.count("hits", n=len(result))
            stats_.count("misses", n=len(missing))
            return result, missing

        def in_order(ordered: list[Any], result: dict[Any, Any]) -> dict[Any, Any]:
            return {i: result[i] for i in ordered if i in result}

        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def wrapper(ids: Iterable[Any], *args: Any, **kwargs: Any) -> dict[Any, Any]:
                ordered, by_key = split(ids)
                c: RedisCache = binding.get(RedisCache)
                try:
                    found = await c.get_many(list(by_key), model) if by_key else {}
                except RedisCacheError as exc:
                    fail(exc)
                    found = {}
                result, missing = sort_out(ordered, by_key, found)
                if missing:
                    start = time.perf_counter()
                    fresh = await func(missing, *args, **kwargs)
                    stats_.count("computations", time.perf_counter() - start)
                    try:
                        await c.set_many({key_of(i): v for i, v in fresh.items()}, ttl)
                    except RedisCacheError as exc:
                        fail(exc)
                    result.update(fresh)
                return in_order(ordered, result)
        else:
            @functools.wraps(func)
            def wrapper(ids: Iterable[Any], *args: Any, **kwargs: Any) -> dict[Any, Any]:
                ordered, by_key = split(ids)
                c: SyncRedisCache = binding.get(SyncRedisCache)
                try:
                    found = c.get_many(list(by_key), model) if by_key else {}
                except RedisCacheError as exc:
                    fail(exc)
                    found = {}
                result, missing = sort_out(ordered, by_key, found)
                if missing:
                    start = time.perf_counter()
                    fresh = func(missing, *args, **kwargs)
                    stats_.count("computations", time.perf_counter() - start)
                    try:
                        c.set_many({key_of(i): v for i, v in fresh.items()}, ttl)
                    except RedisCacheError as exc:
                        fail(exc)
                    result.update(fresh)
                return in_order(ordered, result)

        wrapper.stats = stats_  # type: ignore[attr-defined]
        wrapper.key = key_of  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def _batch_model(func: Callable[..., Any]) -> Any:
    """For ``-> dict[K, V]``, V when stored values need converting to it."""
    try:
        annotation = typing.get_type_hints(func).get("return")
    except Exception:
        return None
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (dict, Mapping) and len(args) == 2:
        value = args[1]
        return None if value in _PLAIN else value
    return None


# ---------------------------------------------------------------------- public


def cached(
    ttl: TTL = None,
    *,
    key: str | Callable[..., str] | None = None,
    namespace: str | None = None,
    condition: Callable[[Any], bool] | None = None,
    exclude: Iterable[str] = (),
    exclude_types: Iterable[type] = (),
    lock: bool = False,
    lock_lease: float = DEFAULT_LOCK_LEASE,
    lock_wait: float = DEFAULT_LOCK_WAIT,
    early_refresh: float | None = None,
    tags: Iterable[str] | str = (),
    stale_if_error: float | None = None,
    cache: AnyCache | None = None,
) -> Callable[[F], F]:
    """Caches a sync or async function's results (see the module docs).

    ``ttl``: seconds or timedelta (None: the cache's default_ttl). ``key``: a
    template over the parameters (``"user:{user_id}"``, ``"{user.id}"``) or a
    callable; default a hash of all arguments. ``namespace``: the key prefix
    instead of the function's qualified name. ``condition(result)``: store only
    when true. ``exclude`` / ``exclude_types``: arguments left out of the key.
    ``lock``: single flight across processes; ``lock_wait`` (5 s) is how long
    a caller waits for another process's computation before computing itself,
    ``lock_lease`` (10 s) how long the lock outlives a holder that died (a
    live holder renews it), after which a waiter takes it over.
    ``early_refresh``: recompute before expiry (1.0 is a good start; higher
    refreshes earlier). Redis failures never fail the call; the cache's
    ``circuit_breaker`` decides when Redis is skipped.
    ``tags``: templates like ``"user:{user_id}"``; ``cache.invalidate_tags("user:5")``
    then turns every entry stored under that tag into a miss (redis_cache.tags).
    ``stale_if_error``: seconds past expiry during which the last value is
    returned if recomputing raises (counted as ``stale_served``).
    """
    return _make_cached(cache, ttl=ttl, key=key, namespace=namespace, condition=condition,
                        exclude=exclude, exclude_types=exclude_types, lock=lock,
                        lock_lease=lock_lease, lock_wait=lock_wait, early_refresh=early_refresh,
                        tags=tags, stale_if_error=stale_if_error)


def invalidate(*templates: str, namespace: str | None = None, tags: Iterable[str] | str = (),
               cache: AnyCache | None = None) -> Callable[[F], F]:
    """Deletes the keys named by templates after the decorated function returns
    (``@invalidate("user:{user_id}", "users:*")``), and invalidates the tags
    named by tag templates (``@invalidate(tags=["user:{user_id}"])``)."""
    return _make_invalidate(cache, templates, namespace, tags)


def cached_batch(ttl: TTL = None, *, key: str | None = None, namespace: str | None = None,
                 cache: AnyCache | None = None) -> Callable[[F], F]:
    """Caches ``fn(ids) -> {id: value}`` per id: one get_many, the function called
    with only the missing ids, one set_many. ``key``: a template with ``{}`` for
    the id (``"user:{}"``); default ``<function>:i:<id>`` / ``:s:<id>``."""
    return _make_cached_batch(cache, ttl=ttl, key=key, namespace=namespace)


# ---------------------------------------------------------------------- get_or_set


async def _call_factory_async(factory: Callable[[], Any], tags: tuple[str, ...]) -> Any:
    result = factory()
    if inspect.isawaitable(result):
        result = await result
    return result


def _call_factory_sync(factory: Callable[[], Any], tags: tuple[str, ...]) -> Any:
    result = factory()
    if inspect.isawaitable(result):
        close = getattr(result, "close", None)
        if close is not None:
            close()  # never awaited: no "coroutine was never awaited" warning
        raise TypeError(
            "get_or_set on a SyncRedisCache got an async factory; await get_or_set on a "
            "RedisCache instead, or pass a plain function"
        )
    return result


#: Engines kept per cache for get_or_set (one per set of options).
_MAX_GET_OR_SET_ENGINES = 256


def _factory_tags(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, ...]:
    return args[1]  # type: ignore[no-any-return]


def get_or_set(
    cache: AnyCache,
    key: str,
    factory: Callable[[], Any],
    ttl: TTL = None,
    *,
    tags: Iterable[str] | str = (),
    stale_if_error: float | None = None,
    condition: Callable[[Any], bool] | None = None,
    lock: bool = False,
    lock_lease: float = DEFAULT_LOCK_LEASE,
    lock_wait: float = DEFAULT_LOCK_WAIT,
    early_refresh: float | None = None,
    model: Any = None,
    name: str = "get_or_set",
) -> Any:
    """Read-through without a decorator: the value cached at ``key``, or
    ``factory()``'s (sync or, on the async cache, async), stored for ``ttl``.

    The machinery is the decorators': one engine per cache and set of
    options serves every call, so concurrent misses of one key share one
    computation, ``lock=`` extends that across processes, and
    ``early_refresh``, ``stale_if_error``, ``tags`` (literal tags here) and
    fail-open behave as in :func:`cached`. ``model``: the type to read values
    back as. Statistics go to ``stats()["get_or_set:<name>"]``. Returns an
    awaitable on a RedisCache, the value on a SyncRedisCache.
    """
    if not isinstance(key, str) or not key:
        raise TypeError(f"get_or_set needs a non-empty str key, got {key!r}")
    if not callable(factory):
        raise TypeError(f"get_or_set needs a callable factory (called on a miss), "
                        f"got {type(factory).__name__}")
    tag_list = tuple(dict.fromkeys(_tags.check_tag(t) for t in
                                   ((tags,) if isinstance(tags, str) else tags)))
    options = _Options(ttl, condition, lock, lock_lease, lock_wait, early_refresh,
                       tagged=bool(tag_list), stale_ms=_tags.stale_ms(stale_if_error))
    is_async = isinstance(cache, RedisCache)
    if not is_async and not isinstance(cache, SyncRedisCache):
        raise TypeError(f"get_or_set needs a RedisCache or SyncRedisCache, got {cache!r}")
    engines: dict[Any, Any] = cache.__dict__.setdefault("_get_or_set_engines", {})
    slot = (options, model, name)
    engine = engines.get(slot)
    if engine is None:
        if len(engines) >= _MAX_GET_OR_SET_ENGINES:
            # Options that differ on every call (condition=lambda ...): keep
            # the table bounded; single flight spans one engine's calls.
            engines.clear()
        stat_name = f"get_or_set:{name}"
        stats_ = _stats.setdefault(stat_name, FunctionStats(stat_name))
        kind = _AsyncCached if is_async else _SyncCached
        func = _call_factory_async if is_async else _call_factory_sync
        engine = engines[slot] = kind(func, _Binding(cache), None, options, stats_,
                                      _factory_tags, _FixedModel(model))
    args = (factory, tag_list)
    if is_async:
        return _async_get_or_set(engine, cache, key, args)
    if options.entries:
        return engine.lookup_entry(cache, key, args, {})
    return engine.lookup(cache, key, args, {})


async def _async_get_or_set(engine: _AsyncCached, cache: RedisCache, key: str,
                            args: tuple[Any, ...]) -> Any:
    if engine.options.entries:
        return await engine.lookup_entry(cache, key, args, {})
    return await engine.lookup(cache, key, args, {})
