"""redis_cache.fastapi in whole apps: lifespan, dependencies, health router,
ETags across app instances, and behaviour with the server stopped or paused.

Servers that a test stops or pauses come from ``redis_server_factory``, so the
shared ``redis`` server stays up for the rest of the suite.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import types
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from async_support import run  # noqa: F401 - fixture
from fastapi_support import (  # noqa: F401 - no_asyncio_errors is an autouse fixture
    CountingCache,
    TestClient,
    body_etag,
    cache_keys,
    client,
    make_app,
    no_asyncio_errors,
)

import httpx  # noqa: E402 - after fastapi_support, which skips without it
from fastapi import Depends, FastAPI, Request
from redis_cache import RedisCache
from redis_cache.errors import ConnectionError as CacheConnectionError
from redis_cache.fastapi import (
    CacheDep,
    CacheMiddleware,
    CacheNotConfiguredError,
    OptionalCacheDep,
    cache_lifespan,
    get_cache,
    get_cache_optional,
    health_router,
    parse_info,
)
from redis_cache.testing import RedisServer


@pytest.fixture
def own_server(redis_server_factory: Callable[..., RedisServer]) -> Iterator[RedisServer]:
    """A server of this test's own, free to be stopped or paused."""
    server = redis_server_factory()
    yield server
    if server.running and server.paused:
        server.resume()
    server.close()


def cache_app(
    server: RedisServer,
    *,
    made: list[Any] | None = None,
    cache_class: type[RedisCache] = RedisCache,
    **lifespan_options: Any,
) -> FastAPI:
    """An app whose lifespan makes a cache (recorded in ``made``) on ``server``,
    with endpoints using each dependency and the health router."""

    def factory() -> RedisCache:
        cache = cache_class(port=server.port, namespace="it")
        if made is not None:
            made.append(cache)
        return cache

    app = FastAPI(lifespan=cache_lifespan(factory, **lifespan_options))
    app.include_router(health_router())

    @app.get("/counter")
    async def counter(cache: CacheDep) -> dict[str, int]:
        return {"n": await cache.incr("counter")}

    @app.get("/optional")
    async def optional(cache: OptionalCacheDep) -> dict[str, Any]:
        if cache is None:
            return {"cache": None}
        return {"cache": "up", "n": await cache.incr("optional")}

    return app


# -------------------------------------------------------------------- lifespan


def test_lifespan_opens_and_closes_the_cache(redis: RedisServer) -> None:
    made: list[RedisCache] = []
    app = cache_app(redis, made=made)
    assert made == []  # nothing is created before startup
    with TestClient(app) as c:
        assert len(made) == 1
        cache = made[0]
        assert app.state.redis_cache is cache
        assert not cache.closed
        assert c.get("/counter").json() == {"n": 1}
        assert c.get("/counter").json() == {"n": 2}
        assert redis.cli("GET", "it:counter") == "2"
    assert cache.closed
    assert getattr(app.state, "redis_cache", None) is None


def test_lifespan_accepts_an_instance_and_an_async_factory(redis: RedisServer) -> None:
    made: list[RedisCache] = []

    async def async_factory() -> RedisCache:
        cache = RedisCache(port=redis.port, namespace="async")
        made.append(cache)
        return cache

    app = FastAPI(lifespan=cache_lifespan(async_factory))

    @app.get("/n")
    async def n(cache: RedisCache = Depends(get_cache)) -> int:
        return await cache.incr("n")

    with TestClient(app) as c:
        assert c.get("/n").json() == 1
    assert made[0].closed
    assert redis.cli("GET", "async:n") == "1"

    instance = RedisCache(port=redis.port, namespace="inst")
    app2 = FastAPI(lifespan=cache_lifespan(instance))
    app2.get("/n")(n)
    with TestClient(app2) as c:
        assert c.get("/n").json() == 1
        assert app2.state.redis_cache is instance
    assert instance.closed


def test_lifespan_keeps_an_instance_open_with_close_false(redis: RedisServer) -> None:
    async def scenario() -> None:
        cache = RedisCache(port=redis.port)
        async with cache_lifespan(cache, close=False)(FastAPI()):
            assert await cache.ping()
        assert not cache.closed
        await cache.close()

    asyncio.run(scenario())


def test_lifespan_composes_with_the_apps_own(redis: RedisServer) -> None:
    events: list[str] = []

    @asynccontextmanager
    async def own_lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        # The cache is already there when the app's own startup runs.
        cache = app.state.redis_cache
        await cache.set("warm", "from startup")
        events.append("own startup")
        yield {"greeting": "hi"}
        events.append(f"own shutdown, cache closed={cache.closed}")

    made: list[RedisCache] = []

    def factory() -> RedisCache:
        made.append(RedisCache(port=redis.port))
        return made[-1]

    app = FastAPI(lifespan=cache_lifespan(factory, lifespan=own_lifespan))

    @app.get("/")
    async def root(request: Request, cache: CacheDep) -> dict[str, Any]:
        return {"greeting": request.state.greeting, "warm": await cache.get("warm")}

    with TestClient(app) as c:
        assert c.get("/").json() == {"greeting": "hi", "warm": "from startup"}
    assert events == ["own startup", "own shutdown, cache closed=False"]
    assert made[0].closed


def test_lifespan_composes_with_an_async_generator_lifespan(redis: RedisServer) -> None:
    seen: list[bool] = []

    async def own(app: FastAPI) -> AsyncIterator[None]:
        seen.append(await app.state.redis_cache.ping())
        yield

    app = FastAPI(lifespan=cache_lifespan(lambda: RedisCache(port=redis.port), lifespan=own))
    with TestClient(app):
        pass
    assert seen == [True]


def test_lifespan_with_connect_fails_startup_when_redis_is_down(own_server: RedisServer) -> None:
    own_server.stop()
    app = cache_app(own_server, connect=True)
    with pytest.raises(CacheConnectionError), TestClient(app):
        pass


def test_lifespan_refuses_what_is_not_a_redis_cache(redis: RedisServer) -> None:
    from redis_cache import SyncRedisCache

    app = FastAPI(lifespan=cache_lifespan(lambda: SyncRedisCache(port=redis.port)))  # type: ignore
    with pytest.raises(TypeError, match="SyncRedisCache blocks"), TestClient(app):
        pass
    with pytest.raises(TypeError, match="takes a RedisCache"):
        asyncio.run(cache_lifespan("redis://x")(FastAPI()).__aenter__())  # type: ignore[arg-type]


# --------------------------------------------------------------- dependencies


def test_get_cache_without_the_lifespan_is_a_clear_error() -> None:
    app = FastAPI()

    @app.get("/")
    async def root(cache: CacheDep) -> str:
        return "unreachable"

    with TestClient(app) as c, pytest.raises(CacheNotConfiguredError, match="cache_lifespan"):
        c.get("/")
    with TestClient(app, raise_server_exceptions=False) as c:
        assert c.get("/").status_code == 500


def test_get_cache_optional_without_the_lifespan_is_an_error_too() -> None:
    app = FastAPI()

    @app.get("/")
    async def root(cache: OptionalCacheDep) -> str:
        return "unreachable"

    with TestClient(app) as c, pytest.raises(CacheNotConfiguredError):
        c.get("/")


def test_get_cache_optional_gives_the_cache_when_up(redis: RedisServer) -> None:
    with TestClient(cache_app(redis)) as c:
        assert c.get("/optional").json() == {"cache": "up", "n": 1}


def test_get_cache_optional_gives_none_when_down(own_server: RedisServer) -> None:
    made: list[CountingCache] = []
    app = cache_app(own_server, made=made, cache_class=CountingCache, down_for=3600)
    with TestClient(app) as c:
        assert c.get("/optional").json()["cache"] == "up"
        own_server.stop()
        answers = [c.get("/optional").json() for _ in range(5)]
        # CacheDep users still get the cache (and its errors): only the optional one hides it.
        with pytest.raises(CacheConnectionError):
            c.get("/counter")
    assert answers == [{"cache": None}] * 5
    # One ping saw the failure; the next four requests did not ask Redis at all.
    assert made[0].counts["ping"] == 2


def test_get_cache_optional_does_not_wait_on_a_paused_server(own_server: RedisServer) -> None:
    made: list[CountingCache] = []
    app = cache_app(
        own_server,
        made=made,
        cache_class=CountingCache,
        probe_timeout=0.2,
        down_for=3600,
    )
    with TestClient(app) as c:
        assert c.get("/optional").json()["cache"] == "up"
        own_server.pause()
        try:
            started = time.monotonic()
            first = c.get("/optional").json()
            rest = [c.get("/optional").json() for _ in range(5)]
            elapsed = time.monotonic() - started
        finally:
            own_server.resume()
    assert first == {"cache": None}
    assert rest == [{"cache": None}] * 5
    assert made[0].counts["ping"] == 2
    # Bounded by the probe timeout once, not six times.
    assert elapsed < 0.2 * 6


def test_get_cache_optional_recovers_after_down_for(own_server: RedisServer) -> None:
    app = cache_app(own_server, probe_timeout=0.2, down_for=0)
    with TestClient(app) as c:
        own_server.pause()
        try:
            assert c.get("/optional").json() == {"cache": None}
        finally:
            own_server.resume()
        assert c.get("/optional").json() == {"cache": "up", "n": 1}


def test_concurrent_optional_requests_share_one_ping(redis: RedisServer, run: Any) -> None:
    made: list[CountingCache] = []
    app = cache_app(redis, made=made, cache_class=CountingCache)

    async def scenario() -> list[Any]:
        async with cache_lifespan_of(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                responses = await asyncio.gather(*(c.get("/optional") for _ in range(20)))
        return [r.json()["cache"] for r in responses]

    assert run(scenario()) == ["up"] * 20
    assert 1 <= made[0].counts["ping"] < 20


@asynccontextmanager
async def cache_lifespan_of(app: FastAPI) -> AsyncIterator[None]:
    """Runs an app's lifespan by hand (httpx.ASGITransport does not)."""
    async with app.router.lifespan_context(app):
        yield


# --------------------------------------------------------------------- health


def test_health_up(redis: RedisServer) -> None:
    with TestClient(cache_app(redis)) as c:
        response = c.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "up" and body["redis"] == "up"
    assert isinstance(body["latency_ms"], float) and 0 <= body["latency_ms"] < 1000
    assert response.headers["cache-control"] == "no-store"


def test_health_down_is_503(own_server: RedisServer) -> None:
    with TestClient(cache_app(own_server)) as c:
        assert c.get("/health").status_code == 200
        own_server.stop()
        down = c.get("/health")
        stats = c.get("/health/stats")
    assert down.status_code == 503
    assert down.json()["status"] == "down" and down.json()["redis"] == "down"
    assert down.json()["latency_ms"] is None
    assert "connect" in down.json()["error"].lower() or "closed" in down.json()["error"].lower()
    assert stats.status_code == 503


def test_health_times_out_on_a_paused_server(own_server: RedisServer) -> None:
    app = FastAPI(lifespan=cache_lifespan(lambda: RedisCache(port=own_server.port)))
    app.include_router(health_router(timeout=0.2))
    with TestClient(app) as c:
        assert c.get("/health").status_code == 200
        own_server.pause()
        try:
            response = c.get("/health")
        finally:
            own_server.resume()
    assert response.status_code == 503
    assert response.json()["error"] == "TimeoutError"


def test_health_without_the_lifespan_is_503_with_the_reason() -> None:
    app = FastAPI()
    app.include_router(health_router())
    with TestClient(app) as c:
        response = c.get("/health")
    assert response.status_code == 503
    assert "cache_lifespan" in response.json()["error"]


def test_health_router_prefix(redis: RedisServer) -> None:
    app = FastAPI(lifespan=cache_lifespan(lambda: RedisCache(port=redis.port)))
    app.include_router(health_router(prefix="/ops"))
    with TestClient(app) as c:
        assert c.get("/ops/health").json()["status"] == "up"
        assert c.get("/ops/health/stats").status_code == 200
        assert c.get("/health").status_code == 404


def test_health_stats_fields(redis: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # Whatever the real decorators module offers, this test pins "absent".
    monkeypatch.setitem(sys.modules, "redis_cache.decorators", None)
    with TestClient(cache_app(redis)) as c:
        redis.cli("CONFIG", "RESETSTAT")
        redis.cli("SET", "k", "1")
        for _ in range(3):
            redis.cli("GET", "k")
        redis.cli("GET", "missing")
        response = c.get("/health/stats")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "up"
    stats = body["redis"]
    server_info = parse_info(redis.cli("INFO", "server"))
    assert stats["version"] == server_info["redis_version"]
    assert isinstance(stats["used_memory_human"], str) and stats["used_memory_human"][-1] in "BKMG"
    assert stats["connected_clients"] >= 1
    assert stats["keyspace_hits"] == 3
    assert stats["keyspace_misses"] == 1
    assert stats["hit_rate"] == 0.75
    assert "decorators" not in body


def test_health_stats_hit_rate_without_lookups_is_null(own_server: RedisServer) -> None:
    with TestClient(cache_app(own_server)) as c:
        stats = c.get("/health/stats").json()["redis"]
    assert (stats["keyspace_hits"], stats["keyspace_misses"], stats["hit_rate"]) == (0, 0, None)


def test_health_stats_include_decorator_stats(
    redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = types.ModuleType("redis_cache.decorators")
    fake.stats = lambda: {"app.slow": {"hits": 2, "misses": 1}}  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "redis_cache.decorators", fake)
    with TestClient(cache_app(redis)) as c:
        body = c.get("/health/stats").json()
    assert body["decorators"] == {"app.slow": {"hits": 2, "misses": 1}}

    without_stats = types.ModuleType("redis_cache.decorators")
    monkeypatch.setitem(sys.modules, "redis_cache.decorators", without_stats)
    with TestClient(cache_app(redis)) as c:
        assert "decorators" not in c.get("/health/stats").json()


def test_health_stats_with_the_real_decorators_module(redis: RedisServer) -> None:
    decorators = pytest.importorskip("redis_cache.decorators")
    if not callable(getattr(decorators, "stats", None)) or not hasattr(decorators, "cached"):
        pytest.skip("redis_cache.decorators has no stats() or cached()")
    cache = RedisCache(port=redis.port, namespace="deco")  # bound to the app's loop on first use

    async def square(x: int) -> int:
        return x * x

    square = decorators.cached(ttl=60, cache=cache)(square)
    app = FastAPI(lifespan=cache_lifespan(cache))
    app.include_router(health_router())

    @app.get("/square/{x}")
    async def square_endpoint(x: int) -> int:
        return await square(x)

    with TestClient(app) as c:
        assert c.get("/square/3").json() == 9
        assert c.get("/square/3").json() == 9
        body = c.get("/health/stats").json()
        expected = decorators.stats()
    suffix = "test_health_stats_with_the_real_decorators_module.<locals>.square"
    [name] = [n for n in expected if n.endswith(suffix)]
    assert body["decorators"][name] == expected[name]


def test_parse_info() -> None:
    info = b"# Server\r\nredis_version:7.2.4\r\n\r\n# Stats\r\nkeyspace_hits:10\r\nodd line\r\n"
    assert parse_info(info) == {"redis_version": "7.2.4", "keyspace_hits": "10"}
    assert parse_info("a:b:c") == {"a": "b:c"}


# ------------------------------------------------------ middleware, end to end


def test_etag_is_the_same_across_app_instances(redis: RedisServer) -> None:
    one = make_app(redis, key_prefix="one")
    two = make_app(redis, key_prefix="two")
    with client(one) as c1, client(two) as c2:
        a = c1.get("/items/shared")
        b = c2.get("/items/shared")
        # Instance two answers a conditional request with instance one's tag.
        conditional = c2.get("/items/shared", headers={"If-None-Match": a.headers["etag"]})
    assert a.headers["x-cache"] == b.headers["x-cache"] == "MISS"  # each computed its own
    assert a.content == b.content
    assert a.headers["etag"] == b.headers["etag"] == body_etag(a.content)
    assert conditional.status_code == 304
    assert one.state.calls["item:shared"] == two.state.calls["item:shared"] == 1


def test_two_app_instances_share_entries(redis: RedisServer) -> None:
    one, two = make_app(redis), make_app(redis)
    with client(one) as c1, client(two) as c2:
        c1.get("/items/x")
        hit = c2.get("/items/x")
    assert hit.headers["x-cache"] == "HIT"
    assert two.state.calls["item:x"] == 0


def test_fail_open_with_the_server_stopped(
    own_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(own_server, retry_after=0)
    with caplog.at_level(logging.WARNING, "redis_cache.fastapi"), client(app) as c:
        assert c.get("/items/a").headers["x-cache"] == "MISS"
        assert c.get("/items/a").headers["x-cache"] == "HIT"
        own_server.stop()
        responses = [c.get("/items/a") for _ in range(3)]
        head = c.head("/items/a")
    for response in responses:
        assert response.status_code == 200
        assert response.headers.get("x-cache", "MISS") == "MISS"
    assert [r.json()["version"] for r in responses] == [2, 3, 4]
    # Without the cache the app's own answer comes through: FastAPI's 405.
    assert head.status_code == 405
    warnings = [r for r in caplog.records if r.name == "redis_cache.fastapi"]
    assert len(warnings) == 1  # rate limited: one per warn_interval
    assert "read failed" in warnings[0].getMessage()


def test_fail_open_with_the_server_paused_waits_once(own_server: RedisServer) -> None:
    made: list[CountingCache] = []

    def factory() -> CountingCache:
        made.append(CountingCache(port=own_server.port, namespace="t"))
        return made[-1]

    app = make_app(own_server, cache_factory=factory, timeout=0.2, retry_after=3600)
    with client(app) as c:
        c.get("/items/p")
        assert c.get("/items/p").headers["x-cache"] == "HIT"
        lookups_before = made[0].counts["get_many"]
        own_server.pause()
        try:
            responses = [c.get("/items/p") for _ in range(4)]
        finally:
            own_server.resume()
    assert [r.status_code for r in responses] == [200] * 4
    assert [r.json()["version"] for r in responses] == [2, 3, 4, 5]
    assert all("x-cache" not in r.headers for r in responses)
    # The first request's lookup timed out; the breaker kept the others off Redis.
    assert made[0].counts["get_many"] == lookups_before + 1


def test_fail_open_recovers_when_the_server_resumes(own_server: RedisServer) -> None:
    app = make_app(own_server, timeout=0.2, retry_after=0)
    with client(app) as c:
        own_server.pause()
        try:
            paused = c.get("/items/r")
        finally:
            own_server.resume()
        miss = c.get("/items/r")
        hit = c.get("/items/r")
    assert paused.status_code == 200 and "x-cache" not in paused.headers
    assert miss.headers["x-cache"] == "MISS"
    assert hit.headers["x-cache"] == "HIT"
    assert hit.json()["version"] == 2


def test_async_client_concurrent_requests(redis: RedisServer, run: Any) -> None:
    """httpx.AsyncClient + ASGITransport on asyncio and uvloop: concurrent
    requests for one path all succeed and agree; later ones are hits."""
    app = make_app(redis)

    async def scenario() -> tuple[list[httpx.Response], httpx.Response]:
        async with cache_lifespan_of(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                burst = await asyncio.gather(*(c.get("/items/burst") for _ in range(10)))
                after = await c.get("/items/burst")
        return list(burst), after

    burst, after = run(scenario())
    assert all(r.status_code == 200 for r in burst)
    assert after.headers["x-cache"] == "HIT"
    # Every answer is one the app gave (misses may race; hits repeat one of them).
    versions = {r.json()["version"] for r in burst}
    assert versions <= set(range(1, app.state.calls["item:burst"] + 1))
    assert after.json()["version"] in versions | {app.state.calls["item:burst"]}
    assert len(cache_keys(redis, "t:http:e:*")) == 1


def test_middleware_with_an_explicit_cache(redis: RedisServer, run: Any) -> None:
    """CacheMiddleware(cache=...) on a bare Starlette-style ASGI app, no lifespan."""

    calls = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"plain"})

    async def scenario() -> list[str]:
        async with RedisCache(port=redis.port, namespace="explicit") as cache:
            mw = CacheMiddleware(app, cache, key_prefix="x")
            transport = httpx.ASGITransport(app=mw)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                return [(await c.get("/p")).headers["x-cache"] for _ in range(2)]

    assert run(scenario()) == ["MISS", "HIT"]
    assert calls == ["/p"]
    assert len(cache_keys(redis, "explicit:x:e:*")) == 1


def test_get_cache_dependency_in_a_middleware_app(redis: RedisServer) -> None:
    """The dependency and the middleware use the same cache from app.state."""
    app = make_app(redis)

    @app.get("/dep")
    async def dep(cache: RedisCache = Depends(get_cache)) -> dict[str, bool]:
        return {"same": cache is app.state.redis_cache}

    @app.get("/opt")
    async def opt(cache: RedisCache | None = Depends(get_cache_optional)) -> dict[str, bool]:
        return {"same": cache is app.state.redis_cache}

    with client(app) as c:
        assert c.get("/dep").json() == {"same": True}
        assert c.get("/opt").json() == {"same": True}
