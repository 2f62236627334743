"""Lifespan and dependencies: the app's cache, created on the app's loop and
closed with it; ``get_cache`` / ``get_cache_optional`` hand it to path operations."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, Union

from fastapi import Depends
from starlette.requests import HTTPConnection

from ..cache import RedisCache
from .routes import install_cached_routes
from ._common import STATE_ATTR, _PROBE_ATTR, _Breaker, _configured_cache, logger

CacheFactory = Callable[[], Union[RedisCache, Awaitable[RedisCache]]]
Lifespan = Callable[[Any], contextlib.AbstractAsyncContextManager[Any]]

async def _make_cache(cache_or_factory: RedisCache | CacheFactory) -> RedisCache:
    if isinstance(cache_or_factory, RedisCache):
        return cache_or_factory
    if not callable(cache_or_factory):
        raise TypeError(
            "cache_lifespan() takes a RedisCache or a callable returning one, "
            f"not {type(cache_or_factory).__name__}"
        )
    cache = cache_or_factory()
    if inspect.isawaitable(cache):
        cache = await cache
    if not isinstance(cache, RedisCache):
        raise TypeError(
            f"the cache factory returned {type(cache).__name__}, not a RedisCache "
            "(SyncRedisCache blocks the event loop: use RedisCache in an ASGI app)"
        )
    return cache


def _as_context_factory(lifespan: Any) -> Lifespan:
    if inspect.isasyncgenfunction(lifespan):
        return contextlib.asynccontextmanager(lifespan)
    if not callable(lifespan):
        raise TypeError(f"lifespan must be callable, not {type(lifespan).__name__}")
    return lifespan  # type: ignore[no-any-return]


def cache_lifespan(
    cache_or_factory: RedisCache | CacheFactory,
    lifespan: Lifespan | Callable[[Any], AsyncIterator[Any]] | None = None,
    *,
    connect: bool = False,
    close: bool = True,
    probe_timeout: float = 0.25,
    down_for: float = 1.0,
) -> Lifespan:
    """A lifespan for ``FastAPI(lifespan=...)`` (or any Starlette app) that owns a cache.

    ``cache_or_factory`` is a :class:`RedisCache` or a callable (sync or async)
    returning one; prefer the callable: the cache is then created on the app's
    event loop, at startup. The cache goes to ``app.state.redis_cache`` and is
    closed at shutdown (``close=False`` leaves that to you).

    ``lifespan`` is the app's own lifespan, if any (a function returning an
    async context manager, or an async generator function): it runs inside,
    with the cache already on ``app.state``, and the state it yields is passed
    on. The result can also be entered by hand from another lifespan:
    ``async with cache_lifespan(factory)(app): ...``.

    ``connect=True`` pings at startup so that an unreachable server fails the
    startup; by default the app starts anyway and the cache connects on first
    use. ``probe_timeout`` and ``down_for`` tune :func:`get_cache_optional`.
    """
    inner = None if lifespan is None else _as_context_factory(lifespan)

    @contextlib.asynccontextmanager
    async def _lifespan(app: Any) -> AsyncIterator[Any]:
        cache = await _make_cache(cache_or_factory)
        state = app.state
        try:
            if connect:
                await cache.connect()
            setattr(state, STATE_ATTR, cache)
            install_cached_routes(app)
            setattr(state, _PROBE_ATTR, _Probe(cache, probe_timeout, down_for))
            if inner is None:
                yield None
            else:
                async with inner(app) as inner_state:
                    yield inner_state
        finally:
            for attr in (STATE_ATTR, _PROBE_ATTR):
                if getattr(state, attr, None) is not None:
                    delattr(state, attr)
            if close:
                await cache.close()

    return _lifespan



async def get_cache(request: HTTPConnection) -> RedisCache:
    """Dependency: the app's :class:`RedisCache` (``Depends(get_cache)``).

    Raises :class:`CacheNotConfiguredError` when cache_lifespan was not installed."""
    return _configured_cache(request)


class _Probe:
    """Is Redis reachable? One short ping shared by concurrent callers; a failure
    is remembered for ``down_for`` seconds (no ping, and so no wait, meanwhile)."""

    def __init__(self, cache: RedisCache, timeout: float, down_for: float) -> None:
        self.cache = cache
        self.timeout = timeout
        self.breaker = _Breaker(down_for)
        self._inflight: asyncio.Task[bool] | None = None

    async def reachable(self) -> bool:
        if self.breaker.is_open:
            return False
        loop = asyncio.get_running_loop()
        task = self._inflight
        if task is None or task.done() or task.get_loop() is not loop:
            task = loop.create_task(self._ping())
            self._inflight = task
        # Shielded: one caller giving up (a disconnect) must not cancel the
        # ping the others wait for.
        return await asyncio.shield(task)

    async def _ping(self) -> bool:
        try:
            await asyncio.wait_for(self.cache.ping(), self.timeout)
        except Exception as exc:  # noqa: BLE001 - any failure means "not usable now"
            self.breaker.trip()
            logger.debug("redis is unreachable: %r", exc)
            return False
        self.breaker.reset()
        return True


async def get_cache_optional(request: HTTPConnection) -> RedisCache | None:
    """Dependency: the app's cache, or ``None`` while Redis is unreachable.

    A short ping (``probe_timeout`` of cache_lifespan, 0.25 s by default) decides;
    a failure is remembered for ``down_for`` seconds (1 s), during which this
    returns ``None`` at once. Raises :class:`CacheNotConfiguredError` when
    cache_lifespan was not installed: that is a bug, not an outage."""
    cache = _configured_cache(request)
    state = request.app.state
    probe = getattr(state, _PROBE_ATTR, None)
    if not isinstance(probe, _Probe) or probe.cache is not cache:
        probe = _Probe(cache, 0.25, 1.0)
        setattr(state, _PROBE_ATTR, probe)
    return cache if await probe.reachable() else None


#: ``cache: CacheDep`` in a path operation's signature.
CacheDep = Annotated[RedisCache, Depends(get_cache)]
#: ``cache: OptionalCacheDep`` (None while Redis is down).
OptionalCacheDep = Annotated[Union[RedisCache, None], Depends(get_cache_optional)]
