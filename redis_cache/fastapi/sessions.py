"""Server-side sessions for Starlette / FastAPI: ``request.session`` kept in Redis.

A drop-in for ``starlette.middleware.sessions.SessionMiddleware`` (same
arguments, same ``request.session`` dict), with the data in Redis
(:class:`redis_cache.sessions.SessionStore`) and only a signed, random id in
the cookie: ``<id>.<HMAC-SHA256(id)>``. Secrets can be rotated: give several,
the first signs, all are accepted.

* The session is read when the request carries a cookie whose signature
  checks out (one round trip, which also pushes a rolling expiry); requests
  without one, or with a forged one, never reach Redis. Reading cannot wait
  for the first ``request.session[...]``: dict access is synchronous and an
  ASGI app must not block its loop on I/O.
* It is written back only when its content changed (compared as JSON, so a
  change inside a nested list counts), or when :meth:`Session.regenerate` asked
  for a new id. An emptied session (``request.session.clear()``, logout) is
  deleted and its cookie expired.
* A tampered, unknown or expired id starts a new, empty session; never an error.
* While Redis is down a request gets an empty session and what it writes into
  it is dropped (a warning is logged at most once a minute); the request
  itself answers as usual.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import _core
from ..cache import RedisCache
from ..sessions import SessionStore, is_session_id, whole_seconds
from ._common import STATE_ATTR, _configured_cache, _describe, _RateLimitedWarning

__all__ = ["Session", "SessionMiddleware"]

_SAMESITE = ("lax", "strict", "none")


class Session(dict):  # type: ignore[type-arg]
    """``request.session``: a dict, plus :meth:`regenerate` and :attr:`id`."""

    id: str | None = None
    regenerate_requested = False

    def regenerate(self) -> None:
        """Give this session a new id when the response goes out (keep the data);
        call it at login, so that an id planted before login is worth nothing."""
        self.regenerate_requested = True


class SessionMiddleware:
    """``app.add_middleware(SessionMiddleware, secret_key="...")``.

    ``secret_key``: a string, or a sequence (the first signs, all verify);
    ``session_cookie``, ``max_age`` (seconds; also the Redis TTL), ``path``,
    ``domain``, ``same_site`` (``"lax"``), ``https_only`` (``True``: the cookie
    is ``Secure``; Starlette's default is False), ``http_only`` (True):
    Starlette's names. ``rolling``: each request with the session pushes its
    expiry ``max_age`` ahead (default); False: it ends ``max_age`` after it was
    created. ``max_size``: the largest session in bytes of JSON (64 KiB; a
    larger one is not written, and a warning says so). ``cache``: the
    RedisCache (``app.state.redis_cache`` by default); ``prefix``: key prefix."""

    def __init__(self, app: ASGIApp, secret_key: str | bytes | Sequence[str | bytes], *,
                 session_cookie: str = "session", max_age: int = 14 * 24 * 3600,
                 path: str = "/", domain: str | None = None, same_site: str = "lax",
                 https_only: bool = True, http_only: bool = True, rolling: bool = True,
                 max_size: int = 64 * 1024, cache: RedisCache | None = None,
                 prefix: str = "session", warn_interval: float = 60.0) -> None:
        secrets_ = [secret_key] if isinstance(secret_key, (str, bytes)) else list(secret_key)
        if not secrets_ or any(not s for s in secrets_):
            raise ValueError("secret_key must be a non-empty string (or a list of them, "
                             "newest first), e.g. from secrets.token_urlsafe(32)")
        if same_site.lower() not in _SAMESITE:
            raise ValueError(f"same_site must be one of {_SAMESITE}, not {same_site!r}")
        if isinstance(max_age, bool) or not isinstance(max_age, (int, float)) or max_age <= 0:
            raise ValueError(f"max_age must be seconds > 0, got {max_age!r}")
        self.app = app
        self._keys = [hashlib.sha256(b"redis_cache.session\0" + (
            s.encode() if isinstance(s, str) else s)).digest() for s in secrets_]
        self.cookie_name = session_cookie
        self.max_age = max_age
        self.rolling = rolling
        self.max_size = max_size
        self.prefix = prefix
        self.cache = cache
        self._store: SessionStore | None = None
        attributes = f"; Path={path}"
        if domain:
            attributes += f"; Domain={domain}"
        if http_only:
            attributes += "; HttpOnly"
        if https_only:
            attributes += "; Secure"
        attributes += f"; SameSite={same_site.capitalize()}"
        self._attributes = attributes
        self._warn = _RateLimitedWarning(warn_interval)

    # -- the signed cookie

    def _sign(self, session_id: str, key: bytes | None = None) -> str:
        mac = hmac.new(key or self._keys[0], session_id.encode(), hashlib.sha256).digest()
        return session_id + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def _verified_id(self, cookie: str | None) -> str | None:
        if not cookie:
            return None
        session_id, _, _ = cookie.partition(".")
        if not is_session_id(session_id):
            return None
        for key in self._keys:
            if hmac.compare_digest(self._sign(session_id, key), cookie):
                return session_id
        return None

    def _set_cookie(self, headers: MutableHeaders, value: str, max_age: int) -> None:
        headers.append("set-cookie",
                       f"{self.cookie_name}={value}; Max-Age={max_age}{self._attributes}")

    # -- the store

    def _store_for(self, scope: Scope) -> SessionStore | None:
        cache = self.cache
        if cache is None:
            found = getattr(getattr(scope.get("app"), "state", None), STATE_ATTR, None)
            cache = found if isinstance(found, RedisCache) else None
        if cache is None:
            cache = _configured_cache(HTTPConnection(scope))  # raises: a setup bug
        if self._store is None or self._store.cache is not cache:
            self._store = SessionStore(cache, ttl=self.max_age, rolling=self.rolling,
                                       max_size=self.max_size, prefix=self.prefix)
        return self._store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        store = self._store_for(scope)
        assert store is not None
        session = Session()
        loaded_json = b"{}"
        expires_in = float(self.max_age)
        session_id = self._verified_id(HTTPConnection(scope).cookies.get(self.cookie_name))
        if session_id is not None:
            try:
                loaded = await store.load(session_id)
            except Exception as exc:  # noqa: BLE001 - a session outage must not fail the request
                self._warn("session read failed (%s); this request gets an empty session",
                           _describe(exc))
                loaded = None
                session_id = None
            if loaded is None:
                session_id = None  # unknown or expired: a new session, new id
            else:
                session.update(loaded.data)
                loaded_json = _core.json_dumps(loaded.data)
                expires_in = loaded.expires_in
        session.id = session_id
        scope["session"] = session

        async def send_with_session(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                await self._commit(store, session, session_id, loaded_json, expires_in, headers)
            await send(message)

        await self.app(scope, receive, send_with_session)

    async def _commit(self, store: SessionStore, session: Session, old_id: str | None,
                      loaded_json: bytes, expires_in: float, headers: MutableHeaders) -> None:
        try:
            current = _core.json_dumps(dict(session))
        except Exception as exc:  # noqa: BLE001
            self._warn("session not saved: its data is not JSON (%s)", _describe(exc))
            return
        try:
            if not session:
                if old_id is not None:
                    await store.destroy(old_id)
                    self._set_cookie(headers, "null", 0)
                return
            new_id = old_id
            if old_id is None or session.regenerate_requested:
                new_id = store_id = _new_id()
                await store.save(store_id, dict(session),
                                 expires_in if old_id is not None and not self.rolling else None)
                if old_id is not None:
                    await store.destroy(old_id)
            elif current != loaded_json:
                await store.save(old_id, dict(session), None if self.rolling else expires_in)
            if new_id != old_id or self.rolling:
                assert new_id is not None
                max_age = self.max_age if self.rolling or old_id is None else expires_in
                self._set_cookie(headers, self._sign(new_id), whole_seconds(max_age))
                session.id = new_id
        except Exception as exc:  # noqa: BLE001 - the response goes out regardless
            self._warn("session write failed (%s); the session's changes are lost",
                       _describe(exc))


def _new_id() -> str:
    from ..sessions import new_session_id

    return new_session_id()
