"""redis_cache: a Redis cache for Python services with a C core.

>>> from redis_cache import SyncRedisCache
>>> with SyncRedisCache.from_url("redis://localhost:6379/0", namespace="app") as cache:
...     cache.set("user:1", {"name": "Ada"}, ttl=60)
...     cache.get("user:1")
"""

from __future__ import annotations

from . import errors
from ._breaker import CircuitBreaker
from .cache import TTL, RedisCache, SyncRedisCache
from .cluster import RedisClusterCache, SyncRedisClusterCache
from .decorators import (
    cached,
    cached_batch,
    get_default_cache,
    invalidate,
    set_default_cache,
    stats,
)
from .keyspace import KeyInfo
from .locks import AsyncLock, Lock
from .pubsub import Message, Subscription, SyncSubscription
from .ratelimit import Decision, Limit, RateLimiter, SyncRateLimiter
from .sessions import SessionStore
from .errors import (
    AuthenticationError,
    ClusterDownError,
    ClusterError,
    ConfigurationError,
    ConnectionError,
    FailoverError,
    LockError,
    LockLost,
    LockTimeout,
    PartialWriteError,
    PoolTimeout,
    ProtocolError,
    RedisCacheError,
    ResponseError,
    SerializationError,
    TimeoutError,
)

__version__ = "0.1.0"

__all__ = [
    "RedisCache",
    "SyncRedisCache",
    "RedisClusterCache",
    "SyncRedisClusterCache",
    "TTL",
    "cached",
    "cached_batch",
    "invalidate",
    "set_default_cache",
    "get_default_cache",
    "stats",
    "CircuitBreaker",
    "RateLimiter",
    "SyncRateLimiter",
    "Limit",
    "Decision",
    "SessionStore",
    "Lock",
    "AsyncLock",
    "KeyInfo",
    "LockError",
    "LockTimeout",
    "LockLost",
    "Message",
    "Subscription",
    "SyncSubscription",
    "errors",
    "RedisCacheError",
    "ConfigurationError",
    "ConnectionError",
    "AuthenticationError",
    "ProtocolError",
    "TimeoutError",
    "PoolTimeout",
    "ResponseError",
    "FailoverError",
    "ClusterError",
    "ClusterDownError",
    "PartialWriteError",
    "SerializationError",
]
