"""Rate limiting for FastAPI / Starlette: a dependency and an ASGI middleware.

Both answer a refused request with 429 and ``Retry-After``, and send the
``RateLimit`` and ``RateLimit-Policy`` headers of draft-ietf-httpapi-ratelimit-headers
(-09: ``RateLimit-Policy: "5-per-60s";q=5;w=60`` and ``RateLimit:
"5-per-60s";r=0;t=12``) on refused and, by default, on admitted responses.

The client is identified by the peer address of the connection. Forwarded
headers (``Forwarded``, then ``X-Forwarded-For``) are believed only when the
peer is one of ``trusted_proxies``, and then only as far as the chain of
trusted proxies goes: the key is the first address, from the right, that is
not a trusted proxy. Anything a client writes into those headers itself is
left of that and never used.
"""

from __future__ import annotations

import inspect
import ipaddress
import math
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, Union

from fastapi import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..cache import RedisCache
from ..ratelimit import Decision, Limit, LimitSpec, RateLimiter, parse_limit
from ._common import STATE_ATTR, _configured_cache
from .middleware import _prefix_matches

__all__ = ["RateLimit", "RateLimitMiddleware", "client_address", "rate_limit_headers"]

KeyFunc = Callable[[HTTPConnection], Union[str, Awaitable[str]]]
_Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


def _networks(trusted: Collection[str]) -> tuple[_Network, ...]:
    if isinstance(trusted, str):
        raise TypeError("trusted_proxies takes a collection of addresses or networks, "
                        "e.g. ('10.0.0.0/8', '127.0.0.1')")
    try:
        return tuple(ipaddress.ip_network(t, strict=False) for t in trusted)
    except ValueError as exc:
        raise ValueError(f"trusted_proxies: {exc}") from None


def _is_trusted(address: str, networks: Sequence[_Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def _forwarded_for(value: str) -> list[str]:
    """The ``for=`` addresses of a Forwarded header (RFC 7239), in order."""
    found = []
    for element in value.split(","):
        for pair in element.split(";"):
            name, sep, node = pair.strip().partition("=")
            if sep and name.strip().lower() == "for":
                node = node.strip().strip('"')
                if node.startswith("["):  # "[2001:db8::1]:4711"
                    node = node[1:].partition("]")[0]
                elif node.count(":") == 1:  # "192.0.2.1:4711"
                    node = node.partition(":")[0]
                found.append(node)
    return found


def client_address(conn: HTTPConnection | Scope,
                   trusted_proxies: Collection[str] | Sequence[_Network] = ()) -> str:
    """The client's address: the peer's, or, when the peer is a trusted proxy, the
    rightmost address of ``Forwarded`` / ``X-Forwarded-For`` that is not one."""
    scope = conn.scope if isinstance(conn, HTTPConnection) else conn
    client = scope.get("client")
    peer = client[0] if client else ""
    networks = (trusted_proxies if all(not isinstance(t, str) for t in trusted_proxies)
                else _networks(trusted_proxies))  # type: ignore[arg-type]
    if not networks or not _is_trusted(peer, networks):  # type: ignore[arg-type]
        return peer or "unknown"
    forwarded: list[str] = []
    xff: list[str] = []
    for k, v in scope["headers"]:
        name = bytes(k).lower()
        if name == b"forwarded":
            forwarded += _forwarded_for(bytes(v).decode("latin-1"))
        elif name == b"x-forwarded-for":
            xff += [a.strip() for a in bytes(v).decode("latin-1").split(",") if a.strip()]
    chain = forwarded or xff
    for address in reversed(chain):
        if not _is_trusted(address, networks):  # type: ignore[arg-type]
            return address
    return chain[0] if chain else peer


def rate_limit_headers(decision: Decision, limits: Sequence[Any],
                       refused: bool) -> dict[str, str]:
    """``RateLimit-Policy`` (every limit), ``RateLimit`` (the deciding one), and
    ``Retry-After`` when refused."""
    policy = ", ".join(f'"{lim.policy_name}";q={lim.count};w={math.ceil(lim.period)}'
                       for lim in limits)
    headers = {
        "RateLimit-Policy": policy,
        "RateLimit": (f'"{decision.limit.policy_name}";r={decision.remaining};'
                      f"t={math.ceil(decision.reset)}"),
    }
    if refused:
        headers["Retry-After"] = str(max(1, math.ceil(decision.retry_after)))
    return headers


class _Limiters:
    """One RateLimiter per cache (the app's cache appears at startup)."""

    def __init__(self, limits: tuple[Any, ...], options: dict[str, Any]) -> None:
        self.limits = limits
        self.options = options
        self._cache: RedisCache | None = None
        self._by_name: dict[str, RateLimiter] = {}

    def get(self, cache: RedisCache, name: str) -> RateLimiter:
        if cache is not self._cache:
            self._cache = cache
            self._by_name = {}
        limiter = self._by_name.get(name)
        if limiter is None:
            limiter = self._by_name[name] = RateLimiter(cache, *self.limits, name=name,
                                                        **self.options)
        return limiter


async def _call_key(key: KeyFunc, conn: HTTPConnection) -> str:
    value = key(conn)
    if inspect.isawaitable(value):
        value = await value
    if not isinstance(value, str) or not value:
        raise TypeError(f"the rate limit key function returned {value!r}, not a non-empty str")
    return value


class RateLimit:
    """A dependency: ``@app.post("/login", dependencies=[Depends(RateLimit("5/minute"))])``
    or ``decision: Decision = Depends(RateLimit("10/second", key=by_user))``.

    Counts the request against ``limits`` under a key made of ``name`` (the
    route's path template by default, so each route has its own counters) and
    ``key(request)`` (the client address by default, see :func:`client_address`).
    Refused: ``HTTPException(429)`` with Retry-After and the RateLimit headers.
    Admitted: the RateLimit headers on the response (``headers=False`` leaves
    them out). ``algorithm``, ``on_error`` (``"allow"``, ``"deny"``, ``"raise"``)
    are the limiter's (see redis_cache.ratelimit)."""

    def __init__(self, *limits: LimitSpec, key: KeyFunc | None = None, name: str | None = None,
                 cost: int = 1, algorithm: str = "gcra", on_error: str = "allow",
                 trusted_proxies: Collection[str] = (), headers: bool = True,
                 cache: RedisCache | None = None) -> None:
        self.limits = tuple(parse_limit(limit) for limit in limits)
        if not self.limits:
            raise ValueError("RateLimit needs at least one limit, e.g. RateLimit('5/minute')")
        self.key = key
        self.name = name
        self.cost = cost
        self.trusted = _networks(trusted_proxies)
        self.headers = headers
        self.cache = cache
        self._limiters = _Limiters(self.limits, {"algorithm": algorithm, "on_error": on_error})
        if cache is not None:  # fail now on bad options, not at the first request
            self._limiters.get(cache, name or "check")

    async def __call__(self, request: Request, response: Response) -> Decision:
        cache = self.cache if self.cache is not None else _configured_cache(request)
        route = request.scope.get("route")
        name = self.name or getattr(route, "path", None) or request.url.path
        subject = (await _call_key(self.key, request) if self.key is not None
                   else client_address(request.scope, self.trusted))
        decision = await self._limiters.get(cache, name).hit(subject, self.cost)
        if not decision.allowed:
            raise HTTPException(429, "Too Many Requests",
                                headers=rate_limit_headers(decision, self.limits, True))
        if self.headers:
            response.headers.update(rate_limit_headers(decision, self.limits, False))
        return decision


class RateLimitMiddleware:
    """Rate limits by path, in front of the app (pure ASGI).

    ``limits``: the default limits (one string, or a sequence), checked for
    every path not in ``routes`` or ``exempt``; ``routes``: ``{path prefix:
    limits or None}``, longest prefix first, whole segments (None exempts);
    ``exempt``: prefixes never limited. Each prefix (and the default) has its
    own counters. ``key``, ``trusted_proxies``, ``algorithm``, ``on_error``,
    ``headers`` and ``cache`` are as for :class:`RateLimit`; ``methods`` limits
    only those methods (all by default)."""

    def __init__(self, app: ASGIApp, limits: LimitSpec | Sequence[LimitSpec] | None = None, *,
                 routes: Mapping[str, LimitSpec | Sequence[LimitSpec] | None] | None = None,
                 exempt: Collection[str] = (), key: KeyFunc | None = None,
                 trusted_proxies: Collection[str] = (), algorithm: str = "gcra",
                 on_error: str = "allow", headers: bool = True,
                 methods: Collection[str] | None = None,
                 cache: RedisCache | None = None, name: str = "http") -> None:
        if isinstance(exempt, str):
            raise TypeError("exempt takes a collection of path prefixes, not a string")
        self.app = app
        options = {"algorithm": algorithm, "on_error": on_error}
        self._rules: list[tuple[str, tuple[Any, ...] | None, _Limiters | None]] = []
        for prefix, spec in sorted((routes or {}).items(), key=lambda kv: -len(kv[0])):
            parsed = None if spec is None else _limit_tuple(spec)
            self._rules.append((prefix, parsed,
                                None if parsed is None else _Limiters(parsed, options)))
        self._default = None if limits is None else _limit_tuple(limits)
        self._default_limiters = None if self._default is None else _Limiters(self._default,
                                                                             options)
        self.exempt = tuple(exempt)
        self.key = key
        self.trusted = _networks(trusted_proxies)
        self.headers = headers
        self.methods = None if methods is None else frozenset(m.upper() for m in methods)
        self.cache = cache
        self.name = name
        if cache is not None:
            for _, _, limiters in self._rules:
                if limiters is not None:
                    limiters.get(cache, name)

    def _rule(self, path: str) -> tuple[str, tuple[Any, ...], _Limiters] | None:
        if any(_prefix_matches(path, p) for p in self.exempt):
            return None
        for prefix, limits, limiters in self._rules:
            if _prefix_matches(path, prefix):
                return None if limits is None or limiters is None else (prefix, limits, limiters)
        if self._default is None or self._default_limiters is None:
            return None
        return "*", self._default, self._default_limiters

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (self.methods is not None
                                        and scope["method"] not in self.methods):
            await self.app(scope, receive, send)
            return
        rule = self._rule(scope["path"])
        if rule is None:
            await self.app(scope, receive, send)
            return
        prefix, limits, limiters = rule
        cache = self.cache
        if cache is None:
            found = getattr(getattr(scope.get("app"), "state", None), STATE_ATTR, None)
            cache = found if isinstance(found, RedisCache) else None
        if cache is None:
            cache = _configured_cache(HTTPConnection(scope))  # raises: a setup bug
        conn = HTTPConnection(scope)
        subject = (await _call_key(self.key, conn) if self.key is not None
                   else client_address(scope, self.trusted))
        decision = await limiters.get(cache, f"{self.name}:{prefix}").hit(subject)
        if not decision.allowed:
            response = Response('{"detail":"Too Many Requests"}', status_code=429,
                                media_type="application/json",
                                headers=rate_limit_headers(decision, limits, True))
            await response(scope, receive, send)
            return
        if not self.headers:
            await self.app(scope, receive, send)
            return
        extra = [(k.lower().encode("latin-1"), v.encode("latin-1"))
                 for k, v in rate_limit_headers(decision, limits, False).items()]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _limit_tuple(spec: Any) -> tuple[Limit, ...]:
    """One limit ("5/minute", (5, 60), a Limit) or a sequence of them."""
    single = isinstance(spec, (str, Limit)) or (
        isinstance(spec, tuple) and len(spec) == 2
        and all(isinstance(x, (int, float)) for x in spec))
    return (parse_limit(spec),) if single else tuple(parse_limit(s) for s in spec)
