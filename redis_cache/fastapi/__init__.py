"""FastAPI / Starlette integration: lifespan, dependencies, response and route
caching, rate limiting, server-side sessions, health.

Everything here uses public FastAPI and Starlette APIs only (``pip install
"redis-native-cache[fastapi]"``); one module per integration:

* ``dependencies``: :func:`cache_lifespan` creates the cache when the app starts
  (so it belongs to the app's event loop) and closes it at shutdown;
  :func:`get_cache` / :func:`get_cache_optional` hand it to path operations.
* ``middleware``: :class:`CacheMiddleware` caches whole GET responses (pure ASGI).
* ``routes``: :func:`cached_route` caches one path operation's response bytes.
* ``ratelimit``: :class:`RateLimit` (a dependency) and :class:`RateLimitMiddleware`.
* ``sessions``: :class:`SessionMiddleware`, ``request.session`` kept in Redis.
* ``health``: :func:`health_router` adds ``/health`` and ``/health/stats``.
"""

from __future__ import annotations

from ._common import STATE_ATTR, CacheNotConfiguredError
from .dependencies import (
    CacheDep,
    OptionalCacheDep,
    cache_lifespan,
    get_cache,
    get_cache_optional,
)
from .health import health_router, parse_info
from .middleware import CacheMiddleware, _digest, _Entry, etag_matches
from .ratelimit import RateLimit, RateLimitMiddleware, client_address
from .routes import CachedRoute, cached_route, install_cached_routes
from .sessions import SessionMiddleware

__all__ = [
    "STATE_ATTR",
    "CacheDep",
    "CacheMiddleware",
    "CacheNotConfiguredError",
    "CachedRoute",
    "OptionalCacheDep",
    "RateLimit",
    "RateLimitMiddleware",
    "SessionMiddleware",
    "cache_lifespan",
    "cached_route",
    "client_address",
    "etag_matches",
    "get_cache",
    "get_cache_optional",
    "health_router",
    "install_cached_routes",
    "parse_info",
]
