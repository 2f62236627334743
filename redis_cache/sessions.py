"""Server-side sessions in Redis: one JSON value per session under ``session:<id>``.

Framework-free (the Starlette/FastAPI middleware is in
``redis_cache.fastapi.sessions``). The id is 256 random bits, so it cannot be
guessed; the data is JSON written by the cache's C codec, under the cache's
namespace (``<namespace>:session:<id>``), readable by any other client.

Expiry is ``rolling`` (every read pushes it ``ttl`` seconds ahead: a session
ends after ``ttl`` seconds of inactivity) or absolute (``rolling=False``: it
ends ``ttl`` seconds after it was created, whatever happens meanwhile).
"""

from __future__ import annotations

import asyncio
import math
import secrets
from dataclasses import dataclass, field
from typing import Any

from . import _core
from .cache import RedisCache
from .errors import SerializationError

__all__ = ["LoadedSession", "SessionStore", "SessionTooLarge", "new_session_id"]

_ID_BYTES = 32


class SessionTooLarge(SerializationError, ValueError):
    """The session's JSON is larger than the store's ``max_size``."""


def new_session_id() -> str:
    """256 random bits, URL-safe (43 characters)."""
    return secrets.token_urlsafe(_ID_BYTES)


def is_session_id(value: str) -> bool:
    return (isinstance(value, str) and len(value) == 43
            and all(c.isalnum() or c in "-_" for c in value))


@dataclass
class LoadedSession:
    """A session read from Redis: its data and the seconds it has left."""

    data: dict[str, Any]
    expires_in: float = field(default=0.0)


class SessionStore:
    """Sessions of one app in a :class:`RedisCache`.

    ``ttl``: seconds (14 days by default); ``rolling``: see the module; ``max_size``:
    the largest session, in bytes of JSON, that :meth:`save` accepts (64 KiB);
    ``prefix``: the key prefix after the cache's namespace."""

    def __init__(self, cache: RedisCache, *, ttl: float = 14 * 24 * 3600, rolling: bool = True,
                 max_size: int = 64 * 1024, prefix: str = "session") -> None:
        if not isinstance(cache, RedisCache):
            raise TypeError(f"SessionStore needs a RedisCache, not {type(cache).__name__}")
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
            raise ValueError(f"ttl must be seconds > 0, got {ttl!r}")
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 2:
            raise ValueError(f"max_size must be an int of bytes >= 2, got {max_size!r}")
        self.cache = cache
        self.ttl = float(ttl)
        self.rolling = rolling
        self.max_size = max_size
        self.prefix = prefix

    def key(self, session_id: str) -> str:
        return f"{self.prefix}:{session_id}"

    async def load(self, session_id: str) -> LoadedSession | None:
        """The session, or None when it does not exist (expired, destroyed, never
        was) or holds something other than a JSON object. One round trip: the
        read and the expiry update (rolling) or TTL query (absolute) are pipelined."""
        if not is_session_id(session_id):
            return None
        key = self.key(session_id)
        value_future = self.cache.get(key)
        if self.rolling:
            other = self.cache.expire(key, self.ttl)
        else:
            other = self.cache.execute_command("PTTL", self._full_key(key))
        value, extra = await asyncio.gather(value_future, other)
        if not isinstance(value, dict):
            return None
        expires_in = self.ttl if self.rolling else max(0.001, (extra or 0) / 1000)
        return LoadedSession(value, expires_in)

    async def save(self, session_id: str, data: dict[str, Any],
                   expires_in: float | None = None) -> None:
        """Writes the session for ``expires_in`` seconds (``ttl`` by default).
        Raises :class:`SessionTooLarge` past ``max_size`` and writes nothing."""
        if not is_session_id(session_id):
            raise ValueError("not a session id made by new_session_id()")
        if not isinstance(data, dict):
            raise TypeError(f"session data must be a dict, not {type(data).__name__}")
        size = len(_core.json_dumps(data))
        if size > self.max_size:
            raise SessionTooLarge(
                f"the session is {size} bytes of JSON, more than max_size={self.max_size}: "
                "keep large data elsewhere and its key in the session"
            )
        ttl = self.ttl if expires_in is None else expires_in
        await self.cache.set(self.key(session_id), data, ttl=max(0.001, ttl))

    async def create(self, data: dict[str, Any] | None = None) -> str:
        """A new session holding ``data``; returns its id."""
        session_id = new_session_id()
        await self.save(session_id, dict(data or {}))
        return session_id

    async def regenerate(self, session_id: str, data: dict[str, Any] | None = None) -> str:
        """Moves the session (or ``data``) to a new id and deletes the old one; call it
        at login so that an id planted before login (fixation) is worth nothing."""
        if data is None:
            loaded = await self.load(session_id)
            data = loaded.data if loaded is not None else {}
        new_id = new_session_id()
        await self.save(new_id, data)
        await self.destroy(session_id)
        return new_id

    async def destroy(self, session_id: str) -> None:
        if is_session_id(session_id):
            await self.cache.delete(self.key(session_id))

    def _full_key(self, key: str) -> str:
        namespace = self.cache.namespace
        return f"{namespace}:{key}" if namespace else key


def whole_seconds(seconds: float) -> int:
    return max(1, math.ceil(seconds))
