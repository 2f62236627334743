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
