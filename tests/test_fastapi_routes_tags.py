"""cached_route(tags=...): responses tagged from the endpoint's parameters,
dropped by ``cache.invalidate_tags`` (e.g. after a POST), sent with a
``Cache-Tag`` header; a response built across an invalidation is not served
after it; routes of the app and of included routers alike."""

from __future__ import annotations

import collections
from typing import Any

import pytest
from fastapi_support import TestClient, no_asyncio_errors  # noqa: F401 - autouse fixture

from fastapi import APIRouter, FastAPI
from redis_cache import RedisCache
from redis_cache.fastapi import cache_lifespan, cached_route
from redis_cache.testing import RedisServer


def make_app(server: RedisServer) -> FastAPI:
    cache = RedisCache(port=server.port, namespace="rt")
    app = FastAPI(lifespan=cache_lifespan(cache))
    calls: collections.Counter[str] = collections.Counter()
    app.state.calls = calls
    app.state.invalidate_during = False

    @app.get("/users/{user_id}")
    @cache.cached_route(ttl=60, tags=["user:{user_id}", "users"])
    async def user(user_id: int) -> dict[str, Any]:
        calls[f"user:{user_id}"] += 1
        if app.state.invalidate_during:
            await cache.invalidate_tags(f"user:{user_id}")  # a write landed meanwhile
        return {"id": user_id, "version": calls[f"user:{user_id}"]}

    @app.post("/users/{user_id}")
    async def update_user(user_id: int) -> dict[str, bool]:
        await cache.invalidate_tags(f"user:{user_id}")
        return {"ok": True}

    router = APIRouter()

    @router.get("/orgs/{slug}")
    @cache.cached_route(ttl=60, tags=["org:{slug}"])
    async def org(slug: str) -> dict[str, Any]:
        calls[f"org:{slug}"] += 1
        return {"slug": slug, "version": calls[f"org:{slug}"]}

    @router.post("/orgs/{slug}")
    async def update_org(slug: str) -> dict[str, bool]:
        await cache.invalidate_tags(f"org:{slug}")
        return {"ok": True}

    app.include_router(router, prefix="/v1")
    return app


def test_tagged_route_invalidated_after_a_post(redis: RedisServer) -> None:
    app = make_app(redis)
    with TestClient(app) as c:
        first = c.get("/users/5")
        assert first.headers["x-cache"] == "MISS"
        assert first.headers["cache-tag"] == "user:5,users"
        hit = c.get("/users/5")
        assert hit.headers["x-cache"] == "HIT"
        assert hit.headers["cache-tag"] == "user:5,users"
        assert c.get("/users/6").headers["x-cache"] == "MISS"
        assert c.post("/users/5").json() == {"ok": True}
        again = c.get("/users/5")
        assert again.headers["x-cache"] == "MISS"
        assert again.json() == {"id": 5, "version": 2}
        assert c.get("/users/6").headers["x-cache"] == "HIT"
    assert app.state.calls == {"user:5": 2, "user:6": 1}


def test_included_router_routes_are_tagged_too(redis: RedisServer) -> None:
    app = make_app(redis)
    with TestClient(app) as c:
        assert c.get("/v1/orgs/acme").headers["x-cache"] == "MISS"
        hit = c.get("/v1/orgs/acme")
        assert hit.headers["x-cache"] == "HIT"
        assert hit.headers["cache-tag"] == "org:acme"
        c.post("/v1/orgs/acme")
        assert c.get("/v1/orgs/acme").json() == {"slug": "acme", "version": 2}
    assert app.state.calls["org:acme"] == 2


def test_a_response_built_across_an_invalidation_is_not_served_after_it(
    redis: RedisServer,
) -> None:
    app = make_app(redis)
    with TestClient(app) as c:
        app.state.invalidate_during = True
        assert c.get("/users/9").headers["x-cache"] == "MISS"
        app.state.invalidate_during = False
        assert c.get("/users/9").headers["x-cache"] == "MISS"
        assert c.get("/users/9").headers["x-cache"] == "HIT"
    assert app.state.calls["user:9"] == 2


def test_bad_tag_templates_are_refused_at_decoration(redis: RedisServer) -> None:
    with pytest.raises(ValueError, match="names 'uid', which is not a parameter of the endpoint"):
        @cached_route(ttl=60, tags=["user:{uid}"])
        async def user(user_id: int) -> dict[str, Any]:
            return {}

    with pytest.raises(ValueError, match="bad tag template"):
        @cached_route(ttl=60, tags=["user:{user_id"])
        async def other(user_id: int) -> dict[str, Any]:
            return {}


def test_tagged_routes_and_middleware_on_a_cluster(healthy_cluster: Any) -> None:
    from redis_cache import RedisClusterCache
    from redis_cache.fastapi import CacheMiddleware

    cache = RedisClusterCache(list(healthy_cluster.seed_addresses), namespace="rtc")
    app = FastAPI(lifespan=cache_lifespan(cache))
    app.add_middleware(CacheMiddleware, tags=lambda path: [f"page:{path}"],
                       include=["/pages"], serve_stale=True)
    calls: collections.Counter[str] = collections.Counter()

    @app.get("/users/{user_id}")
    @cache.cached_route(ttl=60, tags=["user:{user_id}"])
    async def user(user_id: int) -> dict[str, Any]:
        calls[f"user:{user_id}"] += 1
        return {"id": user_id}

    @app.get("/pages/{n}")
    async def page(n: int) -> dict[str, Any]:
        calls[f"page:{n}"] += 1
        return {"n": n}

    with TestClient(app) as c:
        for i in range(6):
            assert c.get(f"/users/{i}").headers["x-cache"] == "MISS"
            assert c.get(f"/pages/{i}").headers["x-cache"] == "MISS"
        c.portal.call(cache.invalidate_tags, *(f"user:{i}" for i in range(0, 6, 2)),
                      "page:/pages/1")
        users = [c.get(f"/users/{i}").headers["x-cache"] for i in range(6)]
        pages = [c.get(f"/pages/{i}").headers["x-cache"] for i in range(6)]
    assert users == ["MISS", "HIT"] * 3
    assert pages == ["HIT", "MISS", "HIT", "HIT", "HIT", "HIT"]


# ------------------------------------------------------------------ RFC 5861


class Clock:
    """Stands in for the time module of redis_cache.fastapi.routes: entries'
    ages move forward on request, no sleeping."""

    def __init__(self) -> None:
        import time as real

        self.now = real.time()

    def time(self) -> float:
        return self.now


def make_stale_app(server: RedisServer, **options: Any) -> FastAPI:
    cache = RedisCache(port=server.port, namespace="rs")
    app = FastAPI(lifespan=cache_lifespan(cache))
    calls: collections.Counter[str] = collections.Counter()
    app.state.calls = calls
    app.state.fail = ""

    def answer(name: str, cc: str) -> Any:
        from fastapi.responses import JSONResponse

        calls[name] += 1
        if app.state.fail == "raise":
            raise RuntimeError("the database is down")
        if app.state.fail == "503":
            return JSONResponse({"error": "down"}, status_code=503)
        return JSONResponse({"version": calls[name]}, headers={"Cache-Control": cc})

    @app.get("/swr")
    @cache.cached_route(ttl=60, serve_stale=True, **options)
    async def swr() -> Any:
        return answer("swr", "max-age=60, stale-while-revalidate=300")

    @app.get("/sie")
    @cache.cached_route(ttl=60, serve_stale=True, **options)
    async def sie() -> Any:
        return answer("sie", "max-age=60, stale-if-error=300")

    router = APIRouter()

    @router.get("/swr")
    @cache.cached_route(ttl=60, serve_stale=True, **options)
    async def swr_included() -> Any:
        return answer("swr-included", "max-age=60, stale-while-revalidate=300")

    @router.get("/sie")
    @cache.cached_route(ttl=60, serve_stale=True, **options)
    async def sie_included() -> Any:
        return answer("sie-included", "max-age=60, stale-if-error=300")

    app.include_router(router, prefix="/v1")
    return app


def background_done(c: TestClient, app: FastAPI) -> None:
    """Waits for the routes' background refreshes (on the app's loop)."""
    import asyncio

    from redis_cache.fastapi.routes import _engine

    def engines(router: Any) -> list[Any]:
        found = []
        for route in router.routes:
            included = getattr(route, "original_router", None)
            if included is not None:
                found += engines(included)
            elif hasattr(route, "endpoint") and _engine(route) is not None:
                found.append(_engine(route))
        return found

    found = engines(app.router)
    assert len(found) == 4  # every cached route of the app, included ones too

    async def wait() -> None:
        tasks = [t for e in found for t in e._background]
        await asyncio.wait_for(asyncio.gather(*tasks), 10)

    c.portal.call(wait)


@pytest.mark.parametrize("prefix", ["", "/v1"])
def test_route_stale_while_revalidate(redis: RedisServer, monkeypatch: pytest.MonkeyPatch,
                                      prefix: str) -> None:
    import redis_cache.fastapi.routes as routes

    clock = Clock()
    monkeypatch.setattr(routes, "time", clock)
    app = make_stale_app(redis)
    name = "swr-included" if prefix else "swr"
    with TestClient(app) as c:
        assert c.get(f"{prefix}/swr").json() == {"version": 1}
        clock.now += 70  # 10 s past the TTL, inside the 300 s window
        stale = c.get(f"{prefix}/swr")
        assert stale.headers["x-cache"] == "STALE"
        assert stale.json() == {"version": 1}
        background_done(c, app)
        assert app.state.calls[name] == 2  # the refresh ran (and was stored)
        fresh = c.get(f"{prefix}/swr")
        assert fresh.headers["x-cache"] == "HIT"
        assert fresh.json() == {"version": 2}
        clock.now += 60 + 301  # past the window: the route answers
        late = c.get(f"{prefix}/swr")
        assert late.headers["x-cache"] == "MISS"
    assert app.state.calls[name] == 3


@pytest.mark.parametrize("prefix", ["", "/v1"])
@pytest.mark.parametrize("failure", ["raise", "503"])
def test_route_stale_if_error(redis: RedisServer, monkeypatch: pytest.MonkeyPatch,
                              prefix: str, failure: str) -> None:
    import redis_cache.fastapi.routes as routes

    clock = Clock()
    monkeypatch.setattr(routes, "time", clock)
    app = make_stale_app(redis)
    with TestClient(app, raise_server_exceptions=False) as c:
        assert c.get(f"{prefix}/sie").json() == {"version": 1}
        clock.now += 70
        app.state.fail = failure
        stale = c.get(f"{prefix}/sie")
        assert stale.status_code == 200
        assert stale.headers["x-cache"] == "STALE"
        assert stale.json() == {"version": 1}
        clock.now += 300  # past the window: the failure reaches the client
        assert c.get(f"{prefix}/sie").status_code in (500, 503)
        app.state.fail = ""
        assert c.get(f"{prefix}/sie").headers["x-cache"] == "MISS"


def test_route_stale_if_error_option(redis: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    import redis_cache.fastapi.routes as routes

    clock = Clock()
    monkeypatch.setattr(routes, "time", clock)
    cache = RedisCache(port=redis.port, namespace="rs2")
    app = FastAPI(lifespan=cache_lifespan(cache))
    state = {"fail": False}

    @app.get("/plain")
    @cache.cached_route(ttl=60, stale_if_error=120)
    async def plain() -> dict[str, bool]:
        if state["fail"]:
            raise RuntimeError("down")
        return {"ok": True}

    with TestClient(app, raise_server_exceptions=False) as c:
        assert c.get("/plain").headers["x-cache"] == "MISS"
        # The hash lives the TTL plus the window.
        assert 179_000 < int(redis.cli("PTTL", "rs2:route:/plain")) <= 180_000
        clock.now += 100
        state["fail"] = True
        assert c.get("/plain").headers["x-cache"] == "STALE"
