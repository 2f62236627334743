"""CacheMiddleware: whole GET responses cached in Redis, pure ASGI.

How the middleware stores a response
------------------------------------
An entry is one string: ``"RCH1\\n" + JSON metadata + "\\n" + base64(body)``,
written with the cache's own ``set`` (so its namespace, compression and
connection handling apply). A string rather than a dict or bytes because it is
the one value every serializer of the cache accepts: the default JSON
serializer refuses bytes, ``serializer="raw"`` refuses dicts, and pickle or a
custom serializer take strings too. Base64 keeps any body byte-exact and is
plain ASCII, so JSON stores it without escaping (a latin-1 string would double
every quote of a JSON body and every byte above 0x7F); its 4/3 size is the
price, and ``compression=`` on the cache wins most of it back.

Keys are ``<key_prefix>:e:<blake2b>`` over length-prefixed parts (host, path,
query pairs sorted by name, the varied header names and their values), so no
two distinct requests share material and header values (an Authorization
token) never appear in a key. A response with ``Vary`` also writes
``<key_prefix>:v:<blake2b(host, path)>``, the list of header names it varies
on, which lookups read (in the same round trip as the plain entry) before
they know the response.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import tags as _tags
from ..cache import RedisCache
from ..metrics import route_stats
from ._common import STATE_ATTR, _Breaker, _describe, _RateLimitedWarning, background_request

_ENTRY_MAGIC = "RCH1\n"
_SPEC_MAGIC = "RCV1\n"
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9a-z]+$")
_ETAG_ITEM = re.compile(r'\s*(\*|(?:W/)?"[^"]*")\s*(?:,|$)')

#: Response headers never stored: per-connection ones, those recomputed for
#: each answer, and Set-Cookie (whose presence makes a response uncacheable).
_UNSTORED = frozenset(
    {
        b"set-cookie",
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
        b"date",
        b"age",
    }
)
#: What a 304 keeps (RFC 9110 15.4.5), besides Age and the X-Cache header.
_NOT_MODIFIED_KEEPS = frozenset(
    {b"cache-control", b"content-location", b"date", b"etag", b"expires", b"vary"}
)
_DEFAULT_STATUSES = frozenset(s for s in range(200, 300) if s != 206)  # 206 depends on Range


def _digest(parts: Iterable[bytes]) -> str:
    """blake2b over length-prefixed parts: no two part lists share a digest input."""
    h = hashlib.blake2b(digest_size=20, person=b"rc-http-cache")
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


def _count(n: int) -> bytes:
    return str(n).encode()


def _directives(values: Iterable[bytes]) -> dict[str, str | None]:
    """Cache-Control directives (lower-case names) from its header values."""
    found: dict[str, str | None] = {}
    for value in values:
        for part in value.decode("latin-1").split(","):
            name, sep, arg = part.strip().partition("=")
            name = name.strip().lower()
            if name:
                found.setdefault(name, arg.strip().strip('"') if sep else None)
    return found


def _seconds(directives: Mapping[str, str | None], name: str) -> int | None:
    arg = directives.get(name)
    if arg is None or not arg.isdigit():
        return None
    return int(arg)


def _vary_names(values: Iterable[bytes]) -> set[str] | None:
    """The header names of Vary values, or None for ``Vary: *`` (never matchable)."""
    names: set[str] = set()
    for value in values:
        for part in value.decode("latin-1").split(","):
            name = part.strip().lower()
            if name == "*":
                return None
            if name:
                names.add(name)
    return names


def etag_matches(if_none_match: str, etag: str) -> bool:
    """Whether an If-None-Match value (``*``, one tag or a list) matches ``etag``,
    by weak comparison (``W/"x"`` matches ``"x"``)."""
    target = etag[2:] if etag.startswith("W/") else etag
    pos = 0
    value = if_none_match.strip()
    while pos < len(value):
        match = _ETAG_ITEM.match(value, pos)
        if match is None or match.end() == pos:
            return False  # malformed from here on
        item = match.group(1)
        if item == "*":
            return True
        if (item[2:] if item.startswith("W/") else item) == target:
            return True
        pos = match.end()
    return False


async def _await_all(futures: list[Any]) -> None:
    """Awaits every future (commands sent together are pipelined by the cache),
    raising the first failure. Unlike asyncio.gather, leaves no future whose
    exception nobody retrieved when it is cancelled or one of them fails. A
    cluster cache's calls are coroutines: they become tasks, sent together."""
    futures = [f if asyncio.isfuture(f) else asyncio.ensure_future(f) for f in futures]
    try:
        for future in futures:
            await future
    finally:
        for future in futures:
            if not future.done():
                future.cancel()
            elif not future.cancelled():
                future.exception()


def _prefix_matches(path: str, prefix: str) -> bool:
    """``/api`` matches ``/api`` and ``/api/x`` but not ``/apix``."""
    if prefix.endswith("/"):
        return path.startswith(prefix) or path == prefix[:-1]
    return path == prefix or path.startswith(prefix + "/")


def _content_length(status: int, body: bytes) -> list[tuple[bytes, bytes]]:
    """Content-Length, except for the statuses that must not carry one (204, 1xx)."""
    if status == 204 or status < 200:
        return []
    return [(b"content-length", str(len(body)).encode())]


def _header_values(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [v for k, v in headers if k.lower() == name]


class _Entry:
    __slots__ = ("status", "headers", "etag", "body", "created", "swr", "sie")

    def __init__(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        etag: str,
        body: bytes,
        created: float,
        swr: int = 0,
        sie: int = 0,
    ) -> None:
        self.status = status
        self.headers = headers
        self.etag = etag
        self.body = body
        self.created = created
        # RFC 5861 windows (seconds past expiry) the response allowed.
        self.swr = swr
        self.sie = sie

    def encode(self) -> str:
        meta: dict[str, Any] = {
            "s": self.status,
            "h": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in self.headers],
            "e": self.etag,
            "t": self.created,
        }
        if self.swr or self.sie:
            meta["w"], meta["i"] = self.swr, self.sie
        meta_text = json.dumps(meta, separators=(",", ":"))
        return _ENTRY_MAGIC + meta_text + "\n" + base64.b64encode(self.body).decode("ascii")

    @classmethod
    def decode(cls, value: Any) -> _Entry | None:
        """The entry, or None for anything this version did not write."""
        try:
            if isinstance(value, (bytes, bytearray)):
                value = bytes(value).decode("ascii")
            if not isinstance(value, str) or not value.startswith(_ENTRY_MAGIC):
                return None
            _, meta_text, body_text = value.split("\n", 2)
            meta = json.loads(meta_text)
            status, headers, etag, created = meta["s"], meta["h"], meta["e"], meta["t"]
            swr, sie = meta.get("w", 0), meta.get("i", 0)
            if not (
                type(status) is int
                and type(swr) is int
                and type(sie) is int
                and isinstance(etag, str)
                and isinstance(created, (int, float))
                and isinstance(headers, list)
                and all(
                    isinstance(h, list) and len(h) == 2 and all(isinstance(x, str) for x in h)
                    for h in headers
                )
            ):
                return None
            body = base64.b64decode(body_text, validate=True)
            pairs = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        except (ValueError, KeyError, TypeError, UnicodeError):
            return None
        return cls(status, pairs, etag, body, float(created), swr, sie)


def _decode_spec(value: Any) -> tuple[str, ...] | None:
    try:
        if isinstance(value, (bytes, bytearray)):
            value = bytes(value).decode("ascii")
    except UnicodeError:
        return None
    if not isinstance(value, str) or not value.startswith(_SPEC_MAGIC):
        return None
    names = tuple(n for n in value[len(_SPEC_MAGIC) :].split(",") if n)
    if not all(_TOKEN.match(n) for n in names):
        return None
    return names


class _Request:
    """What the middleware needs of one request, worked out once."""

    __slots__ = ("scope", "headers", "host", "path", "query", "head_only", "tags", "tokens")

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.headers: list[tuple[bytes, bytes]] = [
            (bytes(k).lower(), bytes(v)) for k, v in scope["headers"]
        ]
        host = _header_values(self.headers, b"host")
        self.host = host[0].lower() if host else b""
        self.path: bytes = scope["path"].encode("utf-8", "surrogatepass")
        pairs = parse_qsl(
            scope.get("query_string", b"").decode("latin-1"),
            keep_blank_values=True,
            encoding="utf-8",
            errors="surrogateescape",
        )
        # Sorted by name only: a stable sort keeps repeated names (?a=2&a=1) in
        # their order, which the app may depend on.
        pairs.sort(key=lambda kv: kv[0])
        self.query = [
            (k.encode("utf-8", "surrogateescape"), v.encode("utf-8", "surrogateescape"))
            for k, v in pairs
        ]
        self.head_only = scope["method"] == "HEAD"
        # Tags of the response (tags=), and their tokens read before the app ran.
        self.tags: tuple[str, ...] = ()
        self.tokens: dict[str, bytes] | None = None

    def values(self, name: str) -> list[bytes]:
        return _header_values(self.headers, name.encode("latin-1"))

    def has(self, name: str) -> bool:
        encoded = name.encode("latin-1")
        return any(k == encoded for k, _ in self.headers)


def _match_route(scope: Scope) -> str:
    """The path template of the app's route that matches scope, "unmatched"
    when none does."""
    router = getattr(scope.get("app"), "router", None)
    for route in getattr(router, "routes", ()):
        try:
            match, _ = route.matches(scope)
        except Exception:  # noqa: BLE001 - an odd route must not break the request
            continue
        if match is Match.FULL:
            return str(getattr(route, "path", None) or "unmatched")
    return "unmatched"


class CacheMiddleware:
    """Caches GET responses in Redis; HEAD is answered from the same entries.

    Pure ASGI (``app.add_middleware(CacheMiddleware, ...)``, or wrap any ASGI
    app). Per request, in order:

    * only GET and HEAD, on paths under one of ``include`` (all when None) and
      none of ``exclude``, with a TTL from ``ttl_for`` (a callable ``path ->
      seconds | None`` or a mapping of path prefix -> seconds | None, longest
      prefix first; ``ttl`` otherwise; None or 0 means "do not cache"), are
      looked up; prefixes match whole segments (``/api`` is not ``/apix``);
    * a request carrying one of ``private_request_headers`` (Authorization by
      default) bypasses the cache unless that header is in ``vary``: then each
      value gets its own entries, so users never see each other's responses;
    * the key is host + path + query (pairs sorted by name) + the values of
      the request headers in ``vary`` and in the response's ``Vary``;
    * a hit is answered from Redis with ``X-Cache: HIT`` and ``Age``; a HEAD
      request gets the GET entry's headers and no body; an ``If-None-Match``
      matching the entry's ETag (weak comparison, lists, ``*``) gets a 304;
    * a miss runs the app (a HEAD as GET, conditional headers removed so the
      full body comes back) and stores the response when its status is in
      ``statuses`` (2xx but 206 by default), it has no Set-Cookie, its
      Cache-Control has no ``no-store``, ``private`` or ``no-cache``, its Vary
      is not ``*`` and its body fits ``max_body_size`` (larger or streaming
      ones pass through unbuffered past that size). The stored response gets a
      strong ETag ``"blake2b-128(body)"`` (the same on every worker) unless the
      app set one, and ``Cache-Control: max-age=<ttl>`` unless the app set a
      Cache-Control; the app's ``s-maxage``/``max-age`` shortens the TTL.
    * ``honor_client_no_cache=True`` lets a request's ``Cache-Control:
      no-cache`` (or ``Pragma: no-cache``) skip the lookup; the response is
      still stored. Off by default: otherwise any client can force every
      request through to the app.

    Redis failing or slower than ``timeout`` never fails a request: the app
    answers, a warning is logged at most once per ``warn_interval`` seconds,
    and Redis is left alone for ``retry_after`` seconds. ``X-Cache`` (the
    ``cache_header``) is absent when the cache was not consulted.

    Tags and stale responses (entries are then stored as redis_cache.tags
    entries, read with one script call):

    * ``tags``: tags of every stored response, a collection of strings or a
      callable ``path -> tags``; ``await cache.invalidate_tags("user:5")``
      makes their entries misses. The tags are known before the app runs, so
      their generations are read first and a response computed before an
      invalidation is never served after it. Stored responses carry them in a
      ``Cache-Tag`` header (comma-separated) for CDNs that purge by tag.
    * ``serve_stale=True`` honours RFC 5861 in the response's Cache-Control:
      within ``stale-while-revalidate=N`` seconds past expiry the stored
      response is served (``X-Cache: STALE``) while one background request
      per entry and process refreshes it; within ``stale-if-error=N`` the app
      is asked and, if it raises or answers 5xx, the stored response is
      served instead. ``stale_if_error=`` (seconds) is the window for
      responses that do not state one (and implies ``serve_stale``).

    The cache is ``cache=`` or, by default, ``app.state.redis_cache`` of the
    Starlette app (set by :func:`cache_lifespan`).
    """

    def __init__(
        self,
        app: ASGIApp,
        cache: RedisCache | None = None,
        *,
        ttl: float = 60,
        ttl_for: Callable[[str], float | None] | Mapping[str, float | None] | None = None,
        include: Collection[str] | None = None,
        exclude: Collection[str] = (),
        statuses: Collection[int] = _DEFAULT_STATUSES,
        vary: Collection[str] = (),
        private_request_headers: Collection[str] = ("authorization",),
        honor_client_no_cache: bool = False,
        max_body_size: int = 1024 * 1024,
        key_prefix: str = "http",
        include_host: bool = True,
        cache_header: str | None = "X-Cache",
        timeout: float | None = 0.5,
        retry_after: float = 1.0,
        warn_interval: float = 60.0,
        tags: Callable[[str], Iterable[str]] | Collection[str] | None = None,
        serve_stale: bool = False,
        stale_if_error: float = 0,
    ) -> None:
        if isinstance(tags, str):
            raise TypeError("tags takes a collection of tags or a callable path -> tags, "
                            f"not a string (did you mean tags=[{tags!r}]?)")
        if tags is not None and not callable(tags):
            tags = tuple(_tags.check_tag(t) for t in tags)
        self.tags = tags
        self.stale_if_error = _tags.stale_ms(stale_if_error) // 1000
        self.serve_stale = serve_stale or self.stale_if_error > 0
        #: Entries are redis_cache.tags entries (hashes) rather than strings.
        self._entries = bool(tags) or self.serve_stale
        self._revalidating: set[str] = set()
        self._background: set[asyncio.Task[Any]] = set()
        if isinstance(include, str) or isinstance(exclude, str) or isinstance(vary, str):
            raise TypeError("include, exclude and vary take a collection of strings, not a string")
        if ttl_for is not None and not callable(ttl_for) and not isinstance(ttl_for, Mapping):
            raise TypeError(
                "ttl_for must be a callable path -> seconds, or a mapping prefix -> seconds"
            )
        if max_body_size < 0:
            raise ValueError("max_body_size must be >= 0")
        self.app = app
        self.cache = cache
        self.ttl = ttl
        self.ttl_for = ttl_for
        self._ttl_prefixes = (
            sorted(ttl_for.items(), key=lambda kv: len(kv[0]), reverse=True)
            if isinstance(ttl_for, Mapping)
            else None
        )
        self.include = None if include is None else tuple(include)
        self.exclude = tuple(exclude)
        self.statuses = frozenset(statuses)
        self.vary = tuple(sorted({v.strip().lower() for v in vary}))
        for name in self.vary:
            if not _TOKEN.match(name):
                raise ValueError(f"not a header name: {name!r}")
        self.private_request_headers = tuple(
            h.strip().lower() for h in private_request_headers if h.strip().lower() not in self.vary
        )
        self.honor_client_no_cache = honor_client_no_cache
        self.max_body_size = max_body_size
        self.key_prefix = key_prefix
        self.include_host = include_host
        self.cache_header = cache_header.lower().encode("latin-1") if cache_header else None
        self.timeout = timeout
        self.breaker = _Breaker(retry_after)
        # Request path -> route template, for the per-route metrics.
        self._route_labels: dict[str, str] = {}
        self._warn = _RateLimitedWarning(warn_interval)

    # -- policy

    def ttl_for_path(self, path: str) -> float | None:
        """The TTL for a path (None: not cached)."""
        if self._ttl_prefixes is not None:
            for prefix, seconds in self._ttl_prefixes:
                if _prefix_matches(path, prefix):
                    return seconds
            return self.ttl
        if self.ttl_for is not None:
            return self.ttl_for(path)  # type: ignore[operator]
        return self.ttl

    def _path_allowed(self, path: str) -> bool:
        if self.include is not None and not any(_prefix_matches(path, p) for p in self.include):
            return False
        return not any(_prefix_matches(path, p) for p in self.exclude)

    def _resolve_cache(self, scope: Scope) -> RedisCache | None:
        if self.cache is not None:
            return self.cache
        app = scope.get("app")
        state = getattr(app, "state", None)
        cache = getattr(state, STATE_ATTR, None)
        if isinstance(cache, RedisCache):
            return cache
        self._warn(
            "CacheMiddleware has no cache: pass cache= or install cache_lifespan "
            "(app.state.redis_cache); responses are not cached"
        )
        return None

    # -- keys

    def _entry_key(self, req: _Request, names: tuple[str, ...]) -> str:
        parts: list[bytes] = [b"entry", req.host if self.include_host else b"", req.path]
        parts.append(_count(len(req.query)))
        for k, v in req.query:
            parts += (k, v)
        parts.append(_count(len(names)))
        for name in names:
            values = req.values(name)
            parts += (name.encode("latin-1"), _count(len(values)), *values)
        return f"{self.key_prefix}:e:{_digest(parts)}"

    def _spec_key(self, req: _Request) -> str:
        host = req.host if self.include_host else b""
        return f"{self.key_prefix}:v:{_digest((b'vary', host, req.path))}"

    def _names(self, extra: Iterable[str]) -> tuple[str, ...]:
        return tuple(sorted(set(self.vary).union(extra)))

    # -- redis, bounded in time

    async def _bounded(self, awaitable: Awaitable[Any]) -> Any:
        if self.timeout is None:
            return await awaitable
        return await asyncio.wait_for(awaitable, self.timeout)

    def _failed(self, what: str, exc: BaseException) -> None:
        self.breaker.trip()
        self._warn(
            "redis cache %s failed (%s); serving without the cache for %.1f s",
            what,
            _describe(exc),
            self.breaker.cooldown,
        )

    def _tags_of(self, path: str) -> tuple[str, ...]:
        if self.tags is None:
            return ()
        if callable(self.tags):
            found = self.tags(path)
            if isinstance(found, str):
                raise TypeError(f"CacheMiddleware tags({path!r}) returned the str {found!r}; "
                                "return a list of tags")
            return tuple(dict.fromkeys(_tags.check_tag(t) for t in found))
        return self.tags  # type: ignore[return-value]

    async def _lookup_entries(
        self, cache: RedisCache, req: _Request
    ) -> tuple[_Entry | None, int | None, tuple[str, ...] | None]:
        """_lookup for tagged / stale-capable entries: the entry, its fresh
        time left (ms; <= 0 past expiry; None: no expiry) and the vary spec.
        The tags' tokens are read in the same round trip and kept on req."""
        base_key = self._entry_key(req, self.vary)
        spec_key = self._spec_key(req)
        spec_value, (found, tokens) = await self._bounded(asyncio.gather(
            cache.get(spec_key), _tags.read_async(cache, base_key, None, req.tags or None)
        ))
        req.tokens = tokens
        spec = _decode_spec(spec_value)
        if spec is not None and self._names(spec) != self.vary:
            found, _ = await self._bounded(
                _tags.read_async(cache, self._entry_key(req, self._names(spec)), None,
                                 req.tags or None))
        if found is None:
            return None, None, spec
        return _Entry.decode(found.value), found.fresh_ms, spec

    async def _lookup(
        self, cache: RedisCache, req: _Request
    ) -> tuple[_Entry | None, tuple[str, ...] | None]:
        """The stored entry (None on a miss) and the path's vary spec (None when absent)."""
        base_key = self._entry_key(req, self.vary)
        spec_key = self._spec_key(req)
        found = await self._bounded(cache.get_many([spec_key, base_key]))
        spec = _decode_spec(found.get(spec_key))
        if spec is None:
            return _Entry.decode(found.get(base_key)), None
        names = self._names(spec)
        if names == self.vary:
            return _Entry.decode(found.get(base_key)), spec
        value = await self._bounded(cache.get(self._entry_key(req, names)))
        return _Entry.decode(value), spec

    async def _store(
        self,
        cache: RedisCache,
        req: _Request,
        entry: _Entry,
        ttl: float,
        response_vary: set[str],
        old_spec: tuple[str, ...] | None | bool,
    ) -> None:
        names = self._names(response_vary)
        extra = tuple(n for n in names if n not in self.vary)
        if self._entries:
            if req.tokens is None:
                return  # the tags' generations could not be read first: store nothing
            stale = max(entry.swr, entry.sie) * 1000
            ops = [_tags.write_async(cache, self._entry_key(req, names), entry.encode(), ttl,
                                     stale=stale, tokens=req.tokens)]
        else:
            ops = [cache.set(self._entry_key(req, names), entry.encode(), ttl=ttl)]
        if extra:
            if old_spec != extra:
                ops.append(cache.set(self._spec_key(req), _SPEC_MAGIC + ",".join(extra), ttl=ttl))
        elif old_spec is not None:  # a spec exists (or may: old_spec is True) and is stale
            ops.append(cache.delete(self._spec_key(req)))
        await self._bounded(_await_all(ops))

    # -- ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if not self._path_allowed(path):
            await self.app(scope, receive, send)
            return
        ttl = self.ttl_for_path(path)
        if ttl is None or ttl <= 0:
            await self.app(scope, receive, send)
            return
        req = _Request(scope)
        if any(req.has(h) for h in self.private_request_headers):
            await self.app(scope, receive, send)
            return
        cache = self._resolve_cache(scope)
        if cache is None or self.breaker.is_open:
            await self.app(scope, receive, send)
            return

        if_none_match = b",".join(req.values("if-none-match")).decode("latin-1")
        spec: tuple[str, ...] | None | bool
        if self._entries:
            req.tags = self._tags_of(path)
        if self.honor_client_no_cache and self._client_no_cache(req):
            spec = True  # unknown: not read
            if self._entries:
                try:
                    req.tokens = await self._bounded(_tags.tokens_async(cache, req.tags))
                except Exception as exc:  # noqa: BLE001 - fail open
                    self._failed("read", exc)
        elif self._entries:
            try:
                entry, fresh_ms, spec = await self._lookup_entries(cache, req)
            except Exception as exc:  # noqa: BLE001 - fail open on anything the cache raises
                self._failed("read", exc)
                await self.app(scope, receive, send)
                return
            if entry is not None and (fresh_ms is None or fresh_ms > 0):
                await self._send_entry(send, entry, req.head_only, if_none_match)
                return
            if entry is not None and fresh_ms is not None:
                past = -fresh_ms / 1000
                if past <= entry.swr:
                    await self._send_entry(send, entry, req.head_only, if_none_match, b"STALE")
                    self._revalidate(scope, cache, req, ttl, spec)
                    return
                if past <= entry.sie:
                    await self._miss(scope, receive, send, cache, req, ttl, spec, if_none_match,
                                     fallback=entry)
                    return
        else:
            try:
                entry, spec = await self._lookup(cache, req)
            except Exception as exc:  # noqa: BLE001 - fail open on anything the cache raises
                self._failed("read", exc)
                route_stats(self._route_label(scope)).count("errors")
                await self.app(scope, receive, send)
                return
            if entry is not None:
                route_stats(self._route_label(scope)).count("hits")
                await self._send_entry(send, entry, req.head_only, if_none_match)
                return
        route_stats(self._route_label(scope)).count("misses")
        await self._miss(scope, receive, send, cache, req, ttl, spec, if_none_match)

    def _route_label(self, scope: Scope) -> str:
        """The route template a path belongs to (``/users/{user_id}``), never
        the path itself: a metrics label must not grow with the URLs seen.
        Found once per path among the app's routes (the middleware runs
        before routing), then remembered."""
        path: str = scope["path"]
        label = self._route_labels.get(path)
        if label is None:
            label = _match_route(scope)
            if len(self._route_labels) < 4096:
                self._route_labels[path] = label
        return label

    @staticmethod
    def _client_no_cache(req: _Request) -> bool:
        cc = req.values("cache-control")
        if cc:
            return "no-cache" in _directives(cc)
        return any(b"no-cache" in v.lower() for v in req.values("pragma"))

    def _tagged(
        self, headers: list[tuple[bytes, bytes]], state: bytes
    ) -> list[tuple[bytes, bytes]]:
        if self.cache_header is None:
            return headers
        return [*(h for h in headers if h[0] != self.cache_header), (self.cache_header, state)]

    async def _send_not_modified(
        self, send: Send, headers: list[tuple[bytes, bytes]], extra: list[tuple[bytes, bytes]]
    ) -> None:
        kept = [(k, v) for k, v in headers if k in _NOT_MODIFIED_KEEPS]
        await send({"type": "http.response.start", "status": 304, "headers": kept + extra})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _revalidate(self, scope: Scope, cache: RedisCache, req: _Request, ttl: float,
                    spec: tuple[str, ...] | None | bool) -> None:
        """Refreshes a stale entry behind the response that served it: the app
        runs once per entry and process, its answer discarded after storing."""
        key = self._entry_key(req, self.vary)
        if key in self._revalidating:
            return
        self._revalidating.add(key)
        inner = dict(scope)
        inner["method"] = "GET"
        fresh_req = _Request(inner)
        fresh_req.tags = req.tags
        receive, discard = background_request()

        async def refresh() -> None:
            try:
                fresh_req.tokens = await self._bounded(_tags.tokens_async(cache, req.tags))
                await self._miss(inner, receive, discard, cache, fresh_req, ttl, spec, "")
            except Exception as exc:  # noqa: BLE001 - a failed refresh leaves the stale entry
                self._warn("stale-while-revalidate refresh of %s failed: %s", scope["path"],
                           _describe(exc))
            finally:
                self._revalidating.discard(key)

        task = asyncio.ensure_future(refresh())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _send_entry(
        self, send: Send, entry: _Entry, head_only: bool, if_none_match: str,
        state: bytes = b"HIT",
    ) -> None:
        age = max(0, int(time.time() - entry.created))
        extra = self._tagged([(b"age", str(age).encode())], state)
        if if_none_match and etag_matches(if_none_match, entry.etag):
            await self._send_not_modified(send, entry.headers, extra)
            return
        headers = [*entry.headers, *_content_length(entry.status, entry.body), *extra]
        await send({"type": "http.response.start", "status": entry.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if head_only else entry.body})

    def _storable(self, message: Message) -> tuple[float, set[str]] | None:
        """(TTL cap or inf, response Vary names) when the response may be stored."""
        if message["status"] not in self.statuses or message.get("trailers", False):
            return None
        headers = [(bytes(k).lower(), bytes(v)) for k, v in message.get("headers", [])]
        if any(k == b"set-cookie" for k, _ in headers):
            return None
        cc = _directives(_header_values(headers, b"cache-control"))
        if "no-store" in cc or "private" in cc or "no-cache" in cc:
            return None
        cap = _seconds(cc, "s-maxage")
        if cap is None:
            cap = _seconds(cc, "max-age")
        if cap == 0:
            return None
        vary = _vary_names(_header_values(headers, b"vary"))
        if vary is None:
            return None
        length = _header_values(headers, b"content-length")
        if length and length[0].strip().isdigit() and int(length[0]) > self.max_body_size:
            return None
        return (float("inf") if cap is None else float(cap)), vary

    async def _miss(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        cache: RedisCache,
        req: _Request,
        ttl: float,
        spec: tuple[str, ...] | None | bool,
        if_none_match: str,
        fallback: _Entry | None = None,
    ) -> None:
        if fallback is not None:
            await self._miss_or_stale(scope, receive, send, cache, req, ttl, spec,
                                      if_none_match, fallback)
            return
        # The app answers a GET without conditions, so that the full body can be stored.
        inner_scope = dict(scope)
        inner_scope["method"] = "GET"
        inner_scope["headers"] = [
            (k, v)
            for k, v in scope["headers"]
            if bytes(k).lower() not in (b"if-none-match", b"if-modified-since")
        ]
        head_only = req.head_only
        start: Message | None = None
        chunks: list[bytes] = []
        size = 0
        mode = "start"  # -> "buffer" | "pass" -> "done"
        decision: tuple[float, set[str]] | None = None
        to_store: tuple[_Entry, float, set[str]] | None = None

        def tagged_start(message: Message) -> Message:
            headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", [])]
            return {**message, "headers": self._tagged(headers, b"MISS")}

        async def pass_on(message: Message) -> None:
            if head_only:
                kind = message["type"]
                if kind == "http.response.body":
                    if not message.get("more_body", False):
                        await send({"type": "http.response.body", "body": b"", "more_body": False})
                    return
                if kind in ("http.response.pathsend", "http.response.zerocopysend"):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                    return
            await send(message)

        async def give_up_buffering() -> None:
            nonlocal mode
            mode = "pass"
            assert start is not None
            await send(tagged_start(start))
            if chunks:
                data = b"".join(chunks)
                await pass_on({"type": "http.response.body", "body": data, "more_body": True})
                chunks.clear()

        async def capture(message: Message) -> None:
            nonlocal start, size, mode, decision, to_store
            kind = message["type"]
            if mode == "start" and kind == "http.response.start":
                start = message
                decision = self._storable(message)
                if decision is None:
                    mode = "pass"
                    await send(tagged_start(message))
                else:
                    mode = "buffer"
                return
            if mode == "buffer":
                if kind != "http.response.body":
                    await give_up_buffering()
                else:
                    body = bytes(message.get("body", b""))
                    chunks.append(body)
                    size += len(body)
                    more = message.get("more_body", False)
                    if size > self.max_body_size:
                        mode = "pass"
                        assert start is not None
                        await send(tagged_start(start))
                        data = b"".join(chunks)
                        chunks.clear()
                        await pass_on(
                            {"type": "http.response.body", "body": data, "more_body": more}
                        )
                        return
                    if not more:
                        mode = "done"
                        assert start is not None and decision is not None
                        to_store = await self._complete(
                            send, req, ttl, if_none_match, start, chunks, decision
                        )
                    return
            await pass_on(message)

        await self.app(inner_scope, receive, capture)
        # Stored once the app has returned, not from inside its send(): a
        # streaming response's task group cancels the sender as soon as the
        # server reports the (complete) response's client gone, and the app's
        # background tasks run first, as they should.
        if to_store is None or self.breaker.is_open:
            return
        entry, store_ttl, response_vary = to_store
        try:
            await self._store(cache, req, entry, store_ttl, response_vary, spec)
        except Exception as exc:  # noqa: BLE001 - fail open
            self._failed("write", exc)

    async def _miss_or_stale(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        cache: RedisCache,
        req: _Request,
        ttl: float,
        spec: tuple[str, ...] | None | bool,
        if_none_match: str,
        fallback: _Entry,
    ) -> None:
        """stale-if-error: the app is asked; if it raises before answering, or
        answers 5xx, the stored response is served instead (X-Cache: STALE)."""
        failed = False
        started = False

        async def guarded(message: Message) -> None:
            nonlocal failed, started
            if failed:
                return  # the rest of the 5xx answer
            if message["type"] == "http.response.start" and message["status"] >= 500:
                failed = True
                return
            started = True
            await send(message)

        try:
            await self._miss(scope, receive, guarded, cache, req, ttl, spec, if_none_match)
        except Exception:
            if started:
                raise  # part of the app's answer went out: nothing else can
            failed = True
        if failed:
            await self._send_entry(send, fallback, req.head_only, if_none_match, b"STALE")

    async def _complete(
        self,
        send: Send,
        req: _Request,
        ttl: float,
        if_none_match: str,
        start: Message,
        chunks: list[bytes],
        decision: tuple[float, set[str]],
    ) -> tuple[_Entry, float, set[str]]:
        """Answers a fully buffered, storable response; returns what to store."""
        body = b"".join(chunks)
        cap, response_vary = decision
        app_headers = [(bytes(k).lower(), bytes(v)) for k, v in start.get("headers", [])]
        stored = [(k, v) for k, v in app_headers if k not in _UNSTORED and k != self.cache_header]
        etags = _header_values(app_headers, b"etag")
        if etags:
            etag = etags[0].decode("latin-1")
        else:
            etag = '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'
            stored.append((b"etag", etag.encode("latin-1")))
        if not _header_values(app_headers, b"cache-control"):
            stored.append((b"cache-control", b"max-age=%d" % max(0, int(ttl))))
        swr = sie = 0
        if self.serve_stale:
            cc = _directives(_header_values(app_headers, b"cache-control"))
            swr = _seconds(cc, "stale-while-revalidate") or 0
            stated = _seconds(cc, "stale-if-error")
            sie = self.stale_if_error if stated is None else stated
        if req.tags and not _header_values(app_headers, b"cache-tag"):
            stored.append((b"cache-tag", ",".join(req.tags).encode("latin-1")))
        entry = _Entry(start["status"], stored, etag, body, time.time(), swr, sie)

        extra = self._tagged([], b"MISS")
        if if_none_match and etag_matches(if_none_match, etag):
            await self._send_not_modified(send, stored, extra)
        else:
            headers = [*stored, *_content_length(entry.status, body), *extra]
            await send({"type": "http.response.start", "status": entry.status, "headers": headers})
            await send({"type": "http.response.body", "body": b"" if req.head_only else body})
        return entry, min(ttl, cap), response_vary
