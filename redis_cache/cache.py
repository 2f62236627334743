"""The cache classes: thin Python over the C core.

``SyncRedisCache`` subclasses the C type directly, so ``cache.get(key)`` is one
call into C with no Python frame in between; this module adds what is not on
the hot path: configuration, URL/environment constructors, ``clear_pattern``
and the context-manager protocol.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from os import PathLike
from typing import Any, TypeVar, Union

from . import _core
from ._config import ConnectionSettings, parse_url, settings_from_env

__all__ = ["SyncRedisCache", "TTL"]

#: A time to live: seconds (int or float) or a timedelta. ``None`` means the
#: cache's ``default_ttl`` (and no expiry when that is ``None`` too).
TTL = Union[int, float, timedelta, None]

_Self = TypeVar("_Self", bound="SyncRedisCache")

#: Keys removed per UNLINK while clearing a pattern, and the SCAN hint.
_CLEAR_BATCH = 1000

_GLOB_SPECIAL = re.compile(rb"([*?\[\]\\])")


def escape_glob(prefix: bytes) -> bytes:
    """Escapes glob characters so a namespace matches only itself in SCAN MATCH."""
    return _GLOB_SPECIAL.sub(rb"\\\1", prefix)


class SyncRedisCache(_core.SyncClient):
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
    ) -> None:
        settings = ConnectionSettings(
            host=host,
            port=port,
            db=db,
            username=username,
            password=password,
            unix_socket_path=unix_socket_path,  # type: ignore[arg-type]
            max_connections=max_connections,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
            client_name=client_name,
            pool_timeout=pool_timeout,
        )
        super().__init__(
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
            namespace=namespace,
            default_ttl=default_ttl,
            serializer=serializer,
        )
        self._settings = settings
        self._namespace = namespace or None
        self._default_ttl = default_ttl

    @classmethod
    def from_url(cls: type[_Self], url: str, **options: Any) -> _Self:
        """Builds a cache from ``redis://[[user]:password@]host[:port][/db][?option=value]``
        or ``unix:///path/to/redis.sock[?db=N]``; keyword options override the URL."""
        return cls(**{**parse_url(url), **options})

    @classmethod
    def from_env(cls: type[_Self], environ: Mapping[str, str] | None = None, **options: Any) -> _Self:
        """Builds a cache from REDIS_URL and the REDIS_* variables (see the README)."""
        return cls(**{**settings_from_env(environ), **options})

    @property
    def namespace(self) -> str | None:
        return self._namespace

    @property
    def default_ttl(self) -> TTL:
        return self._default_ttl

    @property
    def settings(self) -> ConnectionSettings:
        """The validated connection settings (the password is hidden in its repr)."""
        return self._settings

    def _scan_match(self, pattern: str | bytes) -> bytes:
        if isinstance(pattern, str):
            pattern = pattern.encode()
        elif not isinstance(pattern, bytes):
            raise TypeError(f"pattern must be str or bytes, not {type(pattern).__name__}")
        return escape_glob(self._key_prefix) + pattern

    def clear_pattern(self, pattern: str | bytes) -> int:
        """Deletes the keys of this namespace matching a glob ``pattern`` and returns
        how many were removed. Walks the keyspace with SCAN (never KEYS, which
        blocks the server) and removes each batch with UNLINK."""
        match = self._scan_match(pattern)
        removed = 0
        cursor: bytes = b"0"
        while True:
            cursor, keys = self.execute_command("SCAN", cursor, "MATCH", match, "COUNT", _CLEAR_BATCH)
            if keys:
                removed += self.execute_command("UNLINK", *keys)
            if cursor == b"0":
                return removed

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        ns = f" namespace={self._namespace!r}" if self._namespace else ""
        return f"<{type(self).__name__} {self._settings.describe()}{ns} {state}>"
