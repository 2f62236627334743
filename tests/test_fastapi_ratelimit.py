"""redis_cache.fastapi.ratelimit in real apps: the RateLimit dependency and
RateLimitMiddleware answer 429 with Retry-After, RateLimit and RateLimit-Policy,
send the headers on admitted responses too, key by the peer address and believe
forwarded headers only from trusted proxies (spoofing attempts), exempt paths,
per-route limits, key callables, and fail open or closed with Redis down."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi_support import TestClient, no_asyncio_errors  # noqa: F401 - autouse fixture

from fastapi import Depends, FastAPI, Request
from redis_cache import RedisCache
from redis_cache.fastapi import (
    RateLimit,
    RateLimitMiddleware,
    cache_lifespan,
    client_address,
)
from redis_cache.ratelimit import Decision
from redis_cache.testing import RedisServer


def make_app(server: RedisServer, *, middleware: dict[str, Any] | None = None,
             **cache_options: Any) -> FastAPI:
    app = FastAPI(lifespan=cache_lifespan(
        lambda: RedisCache.from_url(server.url, namespace="t", **cache_options)))

    @app.post("/login", dependencies=[Depends(RateLimit("3/minute"))])
    async def login() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/quiet", dependencies=[Depends(RateLimit("1/minute", headers=False))])
    async def quiet() -> dict[str, bool]:
        return {"ok": True}

    def by_api_key(request: Request) -> str:
        return "key:" + request.headers.get("x-api-key", "none")

    @app.get("/api")
    async def api(decision: Decision = Depends(RateLimit("2/minute", key=by_api_key))) -> Any:
        return {"remaining": decision.remaining}

    @app.get("/closed", dependencies=[Depends(RateLimit("5/minute", on_error="deny"))])
    async def closed() -> dict[str, bool]:
        return {"ok": True}

    for path in ("/pages/a", "/pages/b", "/search", "/health", "/other"):
        app.add_api_route(path, lambda: {"ok": True}, methods=["GET"])
    if middleware is not None:
        app.add_middleware(RateLimitMiddleware, **middleware)
    return app


@pytest.fixture
def app_client(redis: RedisServer) -> Iterator[TestClient]:
    with TestClient(make_app(redis)) as client:
        yield client


def test_dependency_admits_then_answers_429_with_headers(app_client: TestClient) -> None:
    answers = [app_client.post("/login") for _ in range(4)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    first, last = answers[0], answers[-1]
    assert first.headers["RateLimit-Policy"] == '"3-per-60s";q=3;w=60'
    assert first.headers["RateLimit"].startswith('"3-per-60s";r=2;t=')
    assert "retry-after" not in first.headers
    assert last.headers["RateLimit"].startswith('"3-per-60s";r=0;t=')
    retry_after = int(last.headers["Retry-After"])
    assert 1 <= retry_after <= 20  # GCRA: one request every 20 s
    assert last.json() == {"detail": "Too Many Requests"}


def test_headers_on_admitted_responses_can_be_turned_off(app_client: TestClient) -> None:
    ok = app_client.get("/quiet")
    assert ok.status_code == 200 and "ratelimit" not in ok.headers
    refused = app_client.get("/quiet")
    assert refused.status_code == 429 and "retry-after" in refused.headers


def test_key_callable_and_the_decision(app_client: TestClient) -> None:
    assert app_client.get("/api", headers={"x-api-key": "a"}).json() == {"remaining": 1}
    assert app_client.get("/api", headers={"x-api-key": "a"}).json() == {"remaining": 0}
    assert app_client.get("/api", headers={"x-api-key": "a"}).status_code == 429
    assert app_client.get("/api", headers={"x-api-key": "b"}).json() == {"remaining": 1}


def test_routes_have_their_own_counters(app_client: TestClient) -> None:
    for _ in range(3):
        assert app_client.post("/login").status_code == 200
    assert app_client.post("/login").status_code == 429
    assert app_client.get("/quiet").status_code == 200


def test_middleware_per_route_limits_exempt_and_default(redis: RedisServer) -> None:
    app = make_app(redis, middleware={"limits": "2/minute",
                                      "routes": {"/pages": "3/minute", "/search": None},
                                      "exempt": ("/health",)})
    with TestClient(app) as client:
        pages = [client.get("/pages/a" if i % 2 else "/pages/b") for i in range(4)]
        assert [r.status_code for r in pages] == [200, 200, 200, 429]
        assert pages[0].headers["RateLimit-Policy"] == '"3-per-60s";q=3;w=60'
        assert pages[-1].headers["content-type"] == "application/json"
        assert int(pages[-1].headers["Retry-After"]) >= 1
        assert all(client.get("/search").status_code == 200 for _ in range(5))
        assert all(client.get("/health").status_code == 200 for _ in range(5))
        assert "ratelimit" not in client.get("/health").headers
        other = [client.get("/other").status_code for _ in range(3)]
        assert other == [200, 200, 429]


def _scope(peer: str, headers: list[tuple[str, str]]) -> dict[str, Any]:
    return {"type": "http", "client": (peer, 5000),
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers]}


def test_client_address_believes_only_trusted_proxies() -> None:
    proxies = ("10.0.0.0/8",)
    # No trusted proxy configured: forwarded headers are ignored.
    assert client_address(_scope("203.0.113.9", [("X-Forwarded-For", "1.2.3.4")])) == \
        "203.0.113.9"
    # Configured, but the peer is not one of them: a client forging the header.
    assert client_address(_scope("203.0.113.9", [("X-Forwarded-For", "1.2.3.4")]),
                          proxies) == "203.0.113.9"
    # Through a trusted proxy: the address it appended, not what the client prepended.
    spoofed = _scope("10.0.0.5", [("X-Forwarded-For", "6.6.6.6, 198.51.100.7")])
    assert client_address(spoofed, proxies) == "198.51.100.7"
    # Two trusted hops.
    chain = _scope("10.0.0.5", [("X-Forwarded-For", "6.6.6.6, 198.51.100.7, 10.1.1.1")])
    assert client_address(chain, proxies) == "198.51.100.7"
    # Forwarded (RFC 7239), with ports and IPv6, takes precedence.
    fwd = _scope("10.0.0.5", [("Forwarded", 'for=6.6.6.6, for="[2001:db8::17]:4711"'),
                              ("X-Forwarded-For", "192.0.2.1")])
    assert client_address(fwd, proxies) == "2001:db8::17"
    assert client_address(_scope("10.0.0.5", [("Forwarded", "for=192.0.2.60:80;proto=http")]),
                          proxies) == "192.0.2.60"
    with pytest.raises(ValueError, match="trusted_proxies"):
        RateLimitMiddleware(lambda *a: None, "1/second", trusted_proxies=("not-an-ip",))


def test_spoofing_does_not_escape_the_limit(redis: RedisServer) -> None:
    app = make_app(redis, middleware={"limits": "2/minute", "trusted_proxies": ("10.0.0.0/8",)})
    with TestClient(app, client=("203.0.113.9", 5000)) as client:
        codes = [client.get("/other", headers={"X-Forwarded-For": f"1.1.1.{i}"}).status_code
                 for i in range(4)]
        assert codes == [200, 200, 429, 429]
    with TestClient(app, client=("10.0.0.5", 5000)) as proxied:
        # Behind the trusted proxy, each real client has its own budget, and a
        # client prepending addresses is still keyed by the one the proxy saw.
        for i in range(3):
            hdr = {"X-Forwarded-For": f"9.9.9.{i}, 198.51.100.7"}
            assert proxied.get("/other", headers=hdr).status_code == (200 if i < 2 else 429)
        assert proxied.get("/other", headers={"X-Forwarded-For": "198.51.100.8"}).status_code == 200


def test_redis_down_fails_open_by_default_closed_when_asked(
        redis_server_factory: Callable[..., RedisServer]) -> None:
    server = redis_server_factory()
    app = make_app(server, connect_wait=0, middleware={"limits": "1/minute"})
    try:
        with TestClient(app) as client:
            assert client.post("/login").status_code == 200
            server.stop()
            # Open: the request is served; closed: 429, with Retry-After.
            assert client.post("/login").status_code == 200
            assert client.get("/other").status_code == 200
            refused = client.get("/closed")
            assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
    finally:
        server.close()


def test_missing_lifespan_is_a_clear_error() -> None:
    app = FastAPI()

    @app.get("/x", dependencies=[Depends(RateLimit("1/second"))])
    async def x() -> None: ...

    with TestClient(app, raise_server_exceptions=True) as client:
        with pytest.raises(Exception, match="cache_lifespan"):
            client.get("/x")
