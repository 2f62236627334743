"""What the FastAPI integrations share: the app.state attribute, the logger, a
cooldown breaker and a rate-limited warning."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from starlette.requests import HTTPConnection
from starlette.types import Message, Receive, Send

from ..cache import RedisCache
from ..errors import RedisCacheError

# One logger for the whole integration: users filter on "redis_cache.fastapi".
logger = logging.getLogger("redis_cache.fastapi")

#: The ``app.state`` attribute holding the cache.
STATE_ATTR = "redis_cache"
#: The ``app.state`` attribute holding get_cache_optional's reachability probe.
_PROBE_ATTR = "redis_cache_probe"


class CacheNotConfiguredError(RedisCacheError, RuntimeError):
    """The app has no cache on ``app.state.redis_cache``: cache_lifespan is not installed."""


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Breaker:
    """Remembers a failure for ``cooldown`` seconds so callers can skip Redis meanwhile."""

    def __init__(self, cooldown: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.cooldown = cooldown
        self.clock = clock
        self.open_until = 0.0

    @property
    def is_open(self) -> bool:
        return self.clock() < self.open_until

    def trip(self) -> None:
        self.open_until = self.clock() + self.cooldown

    def reset(self) -> None:
        self.open_until = 0.0


class _RateLimitedWarning:
    """logger.warning at most once per ``interval`` seconds, counting the rest."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.next_at = 0.0
        self.suppressed = 0

    def __call__(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now < self.next_at:
            self.suppressed += 1
            return
        self.next_at = now + self.interval
        if self.suppressed:
            message += f" ({self.suppressed} similar warnings suppressed)"
            self.suppressed = 0
        logger.warning(message, *args)



def _configured_cache(conn: HTTPConnection) -> RedisCache:
    cache = getattr(conn.app.state, STATE_ATTR, None)
    if cache is None:
        raise CacheNotConfiguredError(
            "no RedisCache on app.state.redis_cache: create the app with "
            "FastAPI(lifespan=cache_lifespan(factory)) (or wrap your lifespan: "
            "cache_lifespan(factory, lifespan=your_lifespan)) before using get_cache"
        )
    if not isinstance(cache, RedisCache):
        raise CacheNotConfiguredError(
            f"app.state.redis_cache holds a {type(cache).__name__}, not a RedisCache"
        )
    return cache



def background_request() -> tuple[Receive, Send]:
    """``receive`` and ``send`` for running a GET again in the background (the
    refresh of a stale response): the request has no body and never
    disconnects, so the refresh runs to its end; what the app sends is
    dropped (the refresh stores it on its way)."""
    sent_request = False
    never = asyncio.Event()

    async def receive() -> Message:
        nonlocal sent_request
        if not sent_request:
            sent_request = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await never.wait()
        return {"type": "http.disconnect"}

    async def discard(message: Message) -> None:
        return None

    return receive, discard
