"""Cached path operations: the response bytes FastAPI produced, served as they are.

``@cache.cached_route(ttl=60)`` (or ``cached_route(ttl=60)``, which uses
``app.state.redis_cache``) under ``@app.get(...)`` marks a path operation. The
route's ASGI app is then wrapped, by :func:`cache_lifespan` at startup, by
:func:`install_cached_routes`, or by the :class:`CachedRoute` route class:

* a hit is answered before FastAPI does anything for the route (no dependency
  is solved, no validation, no ``jsonable_encoder``, no ``json.dumps``): one
  ``HGET`` and the stored bytes go out;
* a miss runs the route as usual, so ``response_model`` validation and
  serialization happen once, and stores the body FastAPI sent.

Storage: the route's key (``key=`` template over the path and query
parameters, ``route:<path>`` by default, inside the cache's namespace) is a
Redis hash; each field is one variant (a digest of the query pairs, sorted by
name, and of the values of the ``vary=`` request headers) and holds
``RCR1 <status> <created> <etag>\\n<name>:<value>\\n...\\n\\n<body>``. So
``@cache.invalidate("route:/users/{user_id}")`` (the same templates as for
functions) drops every variant of a route at once. The hash's expiry is pushed
on every write, so each variant also carries its creation time and a variant
older than its TTL is a miss.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import string
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import tags as _tags
from ..cache import RedisCache
from ..metrics import route_stats
from ._common import STATE_ATTR, _Breaker, _describe, _RateLimitedWarning, background_request
from .middleware import _NOT_MODIFIED_KEEPS, _UNSTORED, _directives, _seconds, etag_matches

__all__ = ["CachedRoute", "cached_route", "install_cached_routes"]

_POLICY_ATTR = "__redis_cache_route__"
_MAGIC = b"RCR1 "
#: Parsed entry heads kept per route (one per variant read lately).
_HEADS_KEPT = 1024
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class RoutePolicy:
    ttl: float
    cache: RedisCache | None
    key: str | None
    vary: tuple[bytes, ...]
    cache_control: bytes | None
    statuses: frozenset[int]
    max_body_size: int
    private_request_headers: tuple[bytes, ...]
    timeout: float | None
    cache_header: bytes | None
    tags: tuple[str, ...] = ()
    serve_stale: bool = False
    stale_if_error: int = 0  # seconds, for responses that state no stale-if-error


def cached_route(
    ttl: float = 60,
    *,
    cache: RedisCache | None = None,
    key: str | None = None,
    vary: Collection[str] = (),
    cache_control: str | None = None,
    statuses: Collection[int] = (200,),
    max_body_size: int = 1024 * 1024,
    private_request_headers: Collection[str] = ("authorization",),
    timeout: float | None = 0.5,
    cache_header: str | None = "X-Cache",
    tags: Collection[str] = (),
    serve_stale: bool = False,
    stale_if_error: float = 0,
) -> Callable[[F], F]:
    """Caches a GET path operation's response bytes for ``ttl`` seconds.

    ``key``: a template over the path and query parameters (``"user:{user_id}"``)
    naming the Redis hash the variants live in (``route:<path>`` by default); it
    is what ``@cache.invalidate(...)`` names to drop the route's entries.
    ``vary``: request headers whose values select a variant. A request with one
    of ``private_request_headers`` not in ``vary`` bypasses the cache.
    ``cache_control``: the header sent with cached responses (``max-age=<ttl>``
    unless the app set one). Statuses in ``statuses`` are stored, never a
    response with Set-Cookie or ``Cache-Control: no-store/private``.
    ``tags``: templates over the endpoint's parameters (``"user:{user_id}"``);
    ``await cache.invalidate_tags("user:5")`` makes the stored responses
    misses, and responses carry them in a ``Cache-Tag`` header.
    ``serve_stale=True`` honours RFC 5861 in the response's Cache-Control:
    within ``stale-while-revalidate`` seconds past the TTL the stored response
    is sent (``X-Cache: STALE``) and refreshed in the background; within
    ``stale-if-error`` it is sent when the route raises or answers 5xx.
    ``stale_if_error=`` (seconds) is the window for responses stating none."""
    if isinstance(vary, str) or isinstance(private_request_headers, str):
        raise TypeError("vary and private_request_headers take a collection of header names")
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
        raise ValueError(f"ttl must be seconds > 0, got {ttl!r}")
    if cache is not None and not isinstance(cache, RedisCache):
        raise TypeError(f"cached_route needs a RedisCache, not {type(cache).__name__}")
    if key is not None:
        try:
            list(string.Formatter().parse(key))
        except ValueError as exc:
            raise ValueError(f"bad key template {key!r}: {exc}") from None
    vary_names = tuple(sorted({h.strip().lower().encode("latin-1") for h in vary}))
    policy = RoutePolicy(
        ttl=float(ttl),
        cache=cache,
        key=key,
        vary=vary_names,
        cache_control=cache_control.encode("latin-1") if cache_control else None,
        statuses=frozenset(statuses),
        max_body_size=max_body_size,
        private_request_headers=tuple(
            n for n in (h.strip().lower().encode("latin-1") for h in private_request_headers)
            if n not in vary_names
        ),
        timeout=timeout,
        cache_header=cache_header.lower().encode("latin-1") if cache_header else None,
        tags=(tags,) if isinstance(tags, str) else tuple(tags),
        serve_stale=serve_stale or _tags.stale_ms(stale_if_error) > 0,
        stale_if_error=_tags.stale_ms(stale_if_error) // 1000,
    )

    def decorate(endpoint: F) -> F:
        if policy.tags:
            _tags.check_tag_templates(policy.tags, inspect.signature(endpoint).parameters,
                                      f"the endpoint {endpoint.__qualname__}")
        setattr(endpoint, _POLICY_ATTR, policy)
        return endpoint

    return decorate


class CachedRoute(APIRoute):
    """A route class that caches routes marked with :func:`cached_route`:
    ``APIRouter(route_class=CachedRoute)`` or ``app.router.route_class = CachedRoute``
    (only needed without :func:`cache_lifespan`, which wraps them at startup).
    It caches in front of the route's request handler, which every FastAPI
    version runs, however the route was included."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()
        engine = _engine(self)
        return handler if engine is None else engine.request_handler(handler)


_ENGINE_ATTR = "_redis_cache_route_engine"


def _engine(route: APIRoute) -> _CachedRouteApp | None:
    policy = getattr(route.endpoint, _POLICY_ATTR, None)
    if policy is None:
        return None
    engine = route.__dict__.get(_ENGINE_ATTR)
    if engine is None:
        engine = _CachedRouteApp(None, route.path, policy)  # type: ignore[arg-type]
        setattr(route, _ENGINE_ATTR, engine)
    return engine  # type: ignore[no-any-return]


def install_cached_routes(app: Any) -> int:
    """Puts the cache in front of every route of ``app`` marked with
    :func:`cached_route`; returns how many it wrapped now. Idempotent;
    :func:`cache_lifespan` calls it at startup.

    A route of the app itself gets the cache in front of its ASGI app: a hit
    costs the routing and one HGET, nothing else. A route of an included
    router (which recent FastAPI versions run through an inclusion context
    built from the route's request handler) gets it in front of that handler."""
    return _install(getattr(app, "router", app), direct=True)


def _install(router: Any, direct: bool) -> int:
    wrapped = 0
    for route in getattr(router, "routes", ()):
        included = getattr(route, "original_router", None)
        if included is not None:
            wrapped += _install(included, direct=False)
            continue
        if not isinstance(route, APIRoute) or isinstance(route, CachedRoute):
            continue
        if route.__dict__.get(_ENGINE_ATTR) is not None:
            continue
        engine = _engine(route)
        if engine is None:
            continue
        if direct:
            engine.app = route.app
            route.app = engine
        else:
            original = route.get_route_handler

            def get_route_handler(original: Any = original,
                                  engine: _CachedRouteApp = engine) -> Any:
                return engine.request_handler(original())

            route.get_route_handler = get_route_handler  # type: ignore[method-assign]
        wrapped += 1
    return wrapped


class _Entry:
    __slots__ = ("status", "created", "etag", "headers", "body")

    def __init__(self, status: int, created: float, etag: bytes,
                 headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        self.created = created
        self.etag = etag
        self.headers = headers
        self.body = body

    def encode(self) -> bytes:
        lines = [b"%s%d %.6f %s" % (_MAGIC, self.status, self.created, self.etag)]
        lines += [k + b":" + v for k, v in self.headers]
        return b"\n".join(lines) + b"\n\n" + self.body

    @classmethod
    def decode(cls, raw: Any) -> _Entry | None:
        if not isinstance(raw, bytes) or not raw.startswith(_MAGIC):
            return None
        end = raw.find(b"\n\n")
        if end < 0:
            return None
        head = raw[:end].split(b"\n")
        try:
            status, created, etag = head[0][len(_MAGIC):].split(b" ", 2)
            headers = [tuple(line.split(b":", 1)) for line in head[1:]]
            return cls(int(status), float(created), etag, headers, raw[end + 2:])  # type: ignore[arg-type]
        except ValueError:
            return None


class _CachedRouteApp:
    """The route's ASGI app, with a cache lookup in front of it."""

    def __init__(self, app: ASGIApp, path: str, policy: RoutePolicy) -> None:
        self.app = app
        self.path = path
        self.policy = policy
        self.breaker = _Breaker(1.0)
        self._warn = _RateLimitedWarning(60.0)
        self._heads: dict[str, tuple[bytes, _Entry]] = {}
        self._refreshing: set[tuple[str, str]] = set()
        self._background: set[asyncio.Task[Any]] = set()

    def _cache(self, scope: Scope) -> RedisCache | None:
        if self.policy.cache is not None:
            return self.policy.cache
        cache = getattr(getattr(scope.get("app"), "state", None), STATE_ATTR, None)
        return cache if isinstance(cache, RedisCache) else None

    def _tags_of(self, scope: Scope) -> tuple[str, ...]:
        """The route's tags for one request (fields it lacks render empty)."""
        query = scope.get("query_string", b"")
        fields: dict[str, Any] = dict(parse_qsl(
            query.decode("latin-1"), keep_blank_values=True, encoding="utf-8",
            errors="surrogateescape")) if query else {}
        fields.update(scope.get("path_params", {}))
        return tuple(dict.fromkeys(t.format_map(_Missing(fields)) for t in self.policy.tags))

    def _keys(self, scope: Scope, cache: RedisCache,
              headers: dict[bytes, list[bytes]]) -> tuple[str, str]:
        query = scope.get("query_string", b"")
        pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True, encoding="utf-8",
                          errors="surrogateescape") if query else []
        if self.policy.key is None:
            name = "route:" + scope["path"]
        else:
            fields: dict[str, Any] = dict(pairs)
            fields.update(scope.get("path_params", {}))
            name = self.policy.key.format_map(_Missing(fields))
        namespace = cache.namespace
        full = f"{namespace}:{name}" if namespace else name
        h = hashlib.blake2b(digest_size=16, person=b"rc-route")
        pairs.sort(key=lambda kv: kv[0])
        for k, v in pairs:
            kb, vb = k.encode("utf-8", "surrogateescape"), v.encode("utf-8", "surrogateescape")
            h.update(b"q%d:%s%d:%s" % (len(kb), kb, len(vb), vb))
        for header in self.policy.vary:
            for value in headers.get(header, ()):
                h.update(b"h%d:%s%d:%s" % (len(header), header, len(value), value))
        return full, h.hexdigest()

    async def _bounded(self, awaitable: Any) -> Any:
        if self.policy.timeout is None:
            return await awaitable
        return await asyncio.wait_for(awaitable, self.policy.timeout)

    def _failed(self, what: str, exc: BaseException) -> None:
        self.breaker.trip()
        self._warn("redis cache %s of route %s failed (%s); serving without the cache for %.1f s",
                   what, self.path, _describe(exc), self.breaker.cooldown)

    async def _lookup(self, scope: Scope) -> _Lookup | None:
        """What a GET needs to be answered from the cache; None: bypass it."""
        if scope["method"] != "GET" or self.breaker.is_open:
            return None
        cache = self._cache(scope)
        if cache is None:
            self._warn("cached_route %s has no cache: pass cache= or install cache_lifespan",
                       self.path)
            return None
        headers: dict[bytes, list[bytes]] = {}
        for k, v in scope["headers"]:
            headers.setdefault(bytes(k).lower(), []).append(bytes(v))
        if any(h in headers for h in self.policy.private_request_headers):
            return None
        key, field = self._keys(scope, cache, headers)
        if_none_match = b",".join(headers.get(b"if-none-match", ())).decode("latin-1")
        tags: tuple[str, ...] = ()
        tokens: dict[str, bytes] | None = None
        windows = (0, 0)
        try:
            if self.policy.tags or self.policy.serve_stale:
                tags = self._tags_of(scope)
                raw, tokens, windows = await self._read_fields(cache, key, field, tags)
            else:
                raw = await self._read(cache, key, field)
        except Exception as exc:  # noqa: BLE001 - fail open
            self._failed("read", exc)
            route_stats(self.path).count("errors")
            return None
        entry = self._decode(field, raw)
        stale: _Entry | None = None
        swr = False
        if entry is not None:
            past = time.time() - entry.created - self.policy.ttl
            if past >= 0:
                if windows[0] and past <= windows[0]:
                    stale, swr = entry, True
                elif windows[1] and past <= windows[1]:
                    stale = entry
                entry = None
        route_stats(self.path).count("misses" if entry is None else "hits")
        return _Lookup(cache, key, field, if_none_match, entry, tags, tokens, stale, swr)

    async def _read_fields(self, cache: RedisCache, key: str, field: str,
                           tags: tuple[str, ...]) -> tuple[Any, dict[str, bytes], tuple[int, int]]:
        """The variant (None unless its tags' stored tokens are current), the
        current tokens (read with it, before the route runs: what a miss
        stores) and its RFC 5861 windows (stale-while-revalidate, -if-error)."""
        reply, current = await self._bounded(asyncio.gather(
            cache.execute_command("HMGET", key, field, field + ":t", field + ":s"),
            _tags.tokens_async(cache, tags),
        ))
        raw, stored, windows = reply if isinstance(reply, list) and len(reply) == 3 \
            else (None, None, None)
        if tags:
            try:
                tokens = json.loads(stored) if stored is not None else None
            except ValueError:
                tokens = None
            if not isinstance(tokens, dict) or not all(
                isinstance(tokens.get(t), str) and tokens[t].encode("latin-1") == current[t]
                for t in tags
            ):
                raw = None
        swr = sie = 0
        if windows is not None:
            parts = windows.split(b" ")
            if len(parts) == 2 and all(p.isdigit() for p in parts):
                swr, sie = int(parts[0]), int(parts[1])
        return raw, current, (swr, sie)

    async def _read(self, cache: RedisCache, key: str, field: str) -> Any:
        """HGET within ``timeout``. A timer that cancels the reply's future costs
        less than asyncio.wait_for, and this runs on every hit."""
        future = cache.execute_command("HGET", key, field)
        timeout = self.policy.timeout
        if timeout is None:
            return await future
        if not asyncio.isfuture(future):
            # A cluster cache returns a coroutine (it may follow a redirect):
            # a task of it can be cancelled like the single-node future.
            future = asyncio.ensure_future(future)
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            future.cancel()

        timer = asyncio.get_running_loop().call_later(timeout, expire)
        try:
            return await future
        except asyncio.CancelledError:
            if expired:
                raise asyncio.TimeoutError(f"no reply within {timeout} s") from None
            raise
        finally:
            timer.cancel()

    def _decode(self, field: str, raw: Any) -> _Entry | None:
        """The entry; its head (status, time, ETag, headers) is parsed once per
        stored version and reused while the same version keeps being read."""
        memo = self._heads.get(field)
        if memo is not None and isinstance(raw, bytes) and raw.startswith(memo[0]):
            head, parsed = memo
            return _Entry(parsed.status, parsed.created, parsed.etag, parsed.headers,
                          raw[len(head):])
        entry = _Entry.decode(raw)
        if entry is not None:
            if len(self._heads) >= _HEADS_KEPT:
                self._heads.clear()
            self._heads[field] = (raw[:len(raw) - len(entry.body)], entry)
        return entry

    async def _store(self, found: _Lookup, entry: _Entry) -> None:
        try:
            lifetime = self.policy.ttl
            if self.policy.tags or self.policy.serve_stale:
                if found.tokens is None:
                    return  # the tokens were not read first: nothing is stored
                stamp = json.dumps({t: v.decode("latin-1") for t, v in found.tokens.items()})
                swr, sie = self._windows(entry)
                lifetime += max(swr, sie)
                write = found.cache.execute_command(
                    "HSET", found.key, found.field, entry.encode(), found.field + ":t", stamp,
                    found.field + ":s", b"%d %d" % (swr, sie))
            else:
                write = found.cache.execute_command("HSET", found.key, found.field,
                                                    entry.encode())
            expire = found.cache.execute_command("PEXPIRE", found.key, int(lifetime * 1000))
            await self._bounded(asyncio.gather(write, expire))
        except Exception as exc:  # noqa: BLE001 - fail open
            self._failed("write", exc)

    def _windows(self, entry: _Entry) -> tuple[int, int]:
        """The RFC 5861 windows the stored response allows (serve_stale only)."""
        if not self.policy.serve_stale:
            return 0, 0
        cc = _directives(v for k, v in entry.headers if k == b"cache-control")
        swr = _seconds(cc, "stale-while-revalidate") or 0
        stated = _seconds(cc, "stale-if-error")
        return swr, self.policy.stale_if_error if stated is None else stated

    def _entry(self, status: int, app_headers: list[tuple[bytes, bytes]], body: bytes,
               tags: tuple[str, ...] = ()) -> _Entry:
        policy = self.policy
        stored = [(k, v) for k, v in app_headers
                  if k not in _UNSTORED and k != policy.cache_header]
        if tags and not any(k == b"cache-tag" for k, _ in app_headers):
            stored.append((b"cache-tag", ",".join(tags).encode("latin-1")))
        etags = [v for k, v in app_headers if k == b"etag"]
        etag = etags[0] if etags else (
            b'"' + hashlib.blake2b(body, digest_size=16).hexdigest().encode() + b'"')
        if not etags:
            stored.append((b"etag", etag))
        if not any(k == b"cache-control" for k, _ in app_headers):
            stored.append((b"cache-control",
                           policy.cache_control or b"max-age=%d" % int(policy.ttl)))
        return _Entry(status, time.time(), etag, stored, body)

    def _answer(self, entry: _Entry, state: bytes,
                if_none_match: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Status, headers and body that answer a request from ``entry``."""
        if state == b"STALE":
            route_stats(self.path).count("stale_served")
        extra = [(b"age", b"%d" % max(0, int(time.time() - entry.created)))]
        if self.policy.cache_header is not None:
            extra.append((self.policy.cache_header, state))
        if if_none_match and etag_matches(if_none_match, entry.etag.decode("latin-1")):
            return 304, [(k, v) for k, v in entry.headers if k in _NOT_MODIFIED_KEEPS] + extra, b""
        headers = [*entry.headers, (b"content-length", b"%d" % len(entry.body)), *extra]
        return entry.status, headers, entry.body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = await self._lookup(scope)
        if found is None:
            await self.app(scope, receive, send)
            return
        if found.entry is not None:
            await self._send(send, found.entry, b"HIT", found.if_none_match)
            return
        if found.stale is not None and found.swr:
            await self._send(send, found.stale, b"STALE", found.if_none_match)
            self._refresh_later(found, lambda: self._refresh_app(scope, found))
            return
        if found.stale is not None:
            await self._miss_or_stale(scope, receive, send, found)
            return
        await self._miss(scope, receive, send, found)

    def _refresh_later(self, found: _Lookup, refresh: Callable[[], Awaitable[None]]) -> None:
        """stale-while-revalidate: one background refresh per variant and process."""
        slot = (found.key, found.field)
        if slot in self._refreshing:
            return
        self._refreshing.add(slot)

        async def run() -> None:
            try:
                await refresh()
            except Exception as exc:  # noqa: BLE001 - the stale entry stays
                self._warn("stale-while-revalidate refresh of route %s failed: %s", self.path,
                           _describe(exc))
            finally:
                self._refreshing.discard(slot)

        task = asyncio.ensure_future(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _refresh_app(self, scope: Scope, found: _Lookup) -> None:
        receive, discard = background_request()

        await self._miss(dict(scope), receive, discard, found)

    async def _miss_or_stale(self, scope: Scope, receive: Receive, send: Send,
                             found: _Lookup) -> None:
        """stale-if-error: the route runs; if it raises before answering, or
        answers 5xx, the stored response goes out instead (X-Cache: STALE)."""
        assert found.stale is not None
        failed = started = False

        async def guarded(message: Message) -> None:
            nonlocal failed, started
            if failed:
                return
            if message["type"] == "http.response.start" and message["status"] >= 500:
                failed = True
                return
            started = True
            await send(message)

        try:
            await self._miss(scope, receive, guarded, found)
        except Exception:
            if started:
                raise
            failed = True
        if failed:
            await self._send(send, found.stale, b"STALE", found.if_none_match)

    def request_handler(self, handler: Callable[[Request], Awaitable[Response]]
                        ) -> Callable[[Request], Awaitable[Response]]:
        """The same cache in front of a FastAPI request handler (``get_route_handler``),
        for routes FastAPI runs through their handler rather than their ASGI app."""

        async def cached_handler(request: Request) -> Response:
            found = await self._lookup(request.scope)
            if found is None:
                return await handler(request)
            if found.entry is not None:
                return _answer_response(*self._answer(found.entry, b"HIT", found.if_none_match))
            stale = found.stale
            if stale is not None and found.swr:
                self._refresh_later(found, lambda: self._refresh_handler(handler, request, found))
                return _answer_response(*self._answer(stale, b"STALE", found.if_none_match))
            try:
                response = await handler(request)
            except Exception as exc:
                if stale is None or (isinstance(exc, HTTPException) and exc.status_code < 500):
                    raise  # no stale answer, or the route answered on purpose (404, ...)
                return _answer_response(*self._answer(stale, b"STALE", found.if_none_match))
            if stale is not None and response.status_code >= 500:
                return _answer_response(*self._answer(stale, b"STALE", found.if_none_match))
            return await self._handled(response, found)

        return cached_handler

    async def _refresh_handler(self, handler: Callable[[Request], Awaitable[Response]],
                               request: Request, found: _Lookup) -> None:
        await self._handled(await handler(request), found)

    async def _handled(self, response: Response, found: _Lookup) -> Response:
        """A handler's response, stored when it may be; what to answer with."""
        body = getattr(response, "body", None)
        start = {"status": response.status_code, "headers": response.raw_headers}
        app_headers = self._storable(start) if isinstance(body, bytes) else None
        if app_headers is None or len(body) > self.policy.max_body_size:
            if self.policy.cache_header is not None:
                response.raw_headers.append((self.policy.cache_header, b"MISS"))
            return response
        entry = self._entry(response.status_code, app_headers, body, found.tags)
        await self._store(found, entry)
        return _answer_response(*self._answer(entry, b"MISS", found.if_none_match))

    async def _send(self, send: Send, entry: _Entry, state: bytes, if_none_match: str) -> None:
        status, headers, body = self._answer(entry, state, if_none_match)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _storable(self, start: Message) -> list[tuple[bytes, bytes]] | None:
        if start["status"] not in self.policy.statuses:
            return None
        headers = [(bytes(k).lower(), bytes(v)) for k, v in start.get("headers", [])]
        if any(k == b"set-cookie" for k, _ in headers):
            return None
        cc = _directives(v for k, v in headers if k == b"cache-control")
        if "no-store" in cc or "private" in cc or "no-cache" in cc:
            return None
        return headers

    def _tagged_miss(self, start: Message) -> Message:
        if self.policy.cache_header is None:
            return start
        headers = [*start.get("headers", []), (self.policy.cache_header, b"MISS")]
        return {**start, "headers": headers}

    async def _miss(self, scope: Scope, receive: Receive, send: Send, found: _Lookup) -> None:
        policy = self.policy
        inner_scope = dict(scope)
        inner_scope["headers"] = [(k, v) for k, v in scope["headers"]
                                  if bytes(k).lower() != b"if-none-match"]
        start: Message | None = None
        app_headers: list[tuple[bytes, bytes]] | None = None
        chunks: list[bytes] = []
        size = 0
        passing = False
        entry: _Entry | None = None

        async def capture(message: Message) -> None:
            nonlocal start, app_headers, size, passing, entry
            if passing:
                await send(message)
                return
            if message["type"] == "http.response.start":
                start = message
                app_headers = self._storable(message)
                if app_headers is None:
                    passing = True
                    await send(self._tagged_miss(message))
                return
            if message["type"] != "http.response.body":
                passing = True
                assert start is not None
                await send(self._tagged_miss(start))
                if chunks:
                    await send({"type": "http.response.body", "body": b"".join(chunks),
                                "more_body": True})
                await send(message)
                return
            chunks.append(bytes(message.get("body", b"")))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > policy.max_body_size:
                passing = True
                assert start is not None
                await send(self._tagged_miss(start))
                await send({"type": "http.response.body", "body": b"".join(chunks),
                            "more_body": more})
                return
            if not more:
                assert start is not None and app_headers is not None
                entry = self._entry(start["status"], app_headers, b"".join(chunks), found.tags)
                await self._send(send, entry, b"MISS", found.if_none_match)

        await self.app(inner_scope, receive, capture)
        if entry is not None:
            await self._store(found, entry)


@dataclass
class _Lookup:
    cache: RedisCache
    key: str
    field: str
    if_none_match: str
    entry: _Entry | None
    tags: tuple[str, ...] = ()
    #: The tags' tokens read before the route ran (None: not read, store nothing).
    tokens: dict[str, bytes] | None = None
    #: A stored response past its TTL but inside a window it allowed, and
    #: whether that is the stale-while-revalidate window.
    stale: _Entry | None = None
    swr: bool = False


def _answer_response(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> Response:
    response = Response(body, status_code=status)
    response.raw_headers = headers
    return response


class _Missing(dict):  # type: ignore[type-arg]
    """Template fields the request lacks render empty rather than failing the request."""

    def __missing__(self, key: str) -> str:
        return ""
