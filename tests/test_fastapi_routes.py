"""cached_route in real apps: a hit returns the bytes FastAPI produced on the
miss (response_model applied once) without running the route or its
dependencies; keys from path and query (and vary= headers), never from
Depends; ETag/304; TTL and Cache-Control; invalidation by the templates of
@cache.invalidate; what is never stored; Redis down; the three ways to install."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi_support import TestClient, no_asyncio_errors  # noqa: F401 - autouse fixture

from fastapi import APIRouter, Depends, FastAPI, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from redis_cache import RedisCache
from redis_cache.fastapi import CachedRoute, cache_lifespan, cached_route, install_cached_routes
from redis_cache.testing import RedisServer


class Item(BaseModel):
    id: int
    name: str
    price: float


class Db:
    """A dependency with no stable encoding: must never reach a key."""


def make_app(server: RedisServer, **cache_options: Any) -> FastAPI:
    cache = RedisCache.from_url(server.url, namespace="t", **cache_options)
    app = FastAPI(lifespan=cache_lifespan(cache))
    calls: collections.Counter[str] = collections.Counter()
    app.state.calls = calls

    def get_db() -> Db:
        calls["db"] += 1
        return Db()

    @app.get("/items/{item_id}", response_model=Item)
    @cache.cached_route(ttl=60)
    async def item(item_id: int, q: str = "", db: Db = Depends(get_db)) -> Any:
        calls["item"] += 1
        # A field not in the model: FastAPI drops it, once, on the miss.
        return {"id": item_id, "name": f"item {item_id}{q}", "price": 9.5, "secret": "x"}

    @app.get("/users/{user_id}")
    @cache.cached_route(ttl=60, key="user:{user_id}")
    async def user(user_id: int) -> dict[str, Any]:
        calls["user"] += 1
        return {"id": user_id, "version": calls["user"]}

    @app.post("/users/{user_id}")
    @cache.invalidate("user:{user_id}")
    async def update_user(user_id: int) -> dict[str, bool]:
        return {"ok": True}

    @app.post("/items/{item_id}")
    @cache.invalidate("route:/items/{item_id}")
    async def update_item(item_id: int) -> dict[str, bool]:
        return {"ok": True}

    @app.get("/lang")
    @cache.cached_route(ttl=60, vary=("Accept-Language",), cache_control="public, max-age=5")
    async def lang(response: Response) -> dict[str, Any]:
        calls["lang"] += 1
        return {"n": calls["lang"]}

    @app.get("/short")
    @cache.cached_route(ttl=0.3)
    async def short() -> dict[str, Any]:
        calls["short"] += 1
        return {"n": calls["short"]}

    @app.get("/never/{kind}")
    @cache.cached_route(ttl=60)
    async def never(kind: str) -> Response:
        calls[f"never:{kind}"] += 1
        if kind == "cookie":
            response = JSONResponse({"n": calls[f"never:{kind}"]})
            response.set_cookie("a", "b")
            return response
        if kind == "nostore":
            return JSONResponse({"n": 1}, headers={"Cache-Control": "no-store"})
        return JSONResponse({"error": "missing"}, status_code=404)

    @app.get("/plain")
    async def plain() -> dict[str, Any]:
        calls["plain"] += 1
        return {"n": calls["plain"]}

    return app


@pytest.fixture
def client(redis: RedisServer) -> Iterator[TestClient]:
    with TestClient(make_app(redis)) as c:
        yield c


def calls(client: TestClient) -> collections.Counter[str]:
    return client.app.state.calls  # type: ignore[attr-defined, no-any-return]


def test_hit_returns_the_bytes_of_the_miss_without_running_anything(client: TestClient) -> None:
    miss = client.get("/items/5?q=!")
    assert miss.status_code == 200 and miss.headers["x-cache"] == "MISS"
    assert miss.json() == {"id": 5, "name": "item 5!", "price": 9.5}  # response_model applied
    hit = client.get("/items/5?q=!")
    assert hit.headers["x-cache"] == "HIT"
    assert hit.content == miss.content
    assert hit.headers["content-type"] == miss.headers["content-type"] == "application/json"
    assert hit.headers["etag"] == miss.headers["etag"]
    assert hit.headers["cache-control"] == "max-age=60"
    assert int(hit.headers["content-length"]) == len(hit.content)
    # Neither the route nor its dependency ran for the hit.
    assert calls(client)["item"] == 1 and calls(client)["db"] == 1


def test_keys_come_from_path_and_query_not_dependencies(client: TestClient) -> None:
    client.get("/items/1?q=a")
    client.get("/items/1?q=b")
    client.get("/items/2?q=a")
    assert calls(client)["item"] == 3
    # Query pairs are sorted by name: the same request written differently hits.
    client.get("/items/3?q=a&z=1")
    assert client.get("/items/3?z=1&q=a").headers["x-cache"] == "HIT"
    assert calls(client)["item"] == 4
    # Any bytes in a query (UTF-8 or not) make a key, never an error.
    for query in ("q=%E2%82%AC", "q=%FF%FE", "q=%E2%82%AC&q=1"):
        assert client.get(f"/items/3?{query}").status_code == 200
        assert client.get(f"/items/3?{query}").headers["x-cache"] == "HIT"


def test_etag_and_304(client: TestClient) -> None:
    etag = client.get("/items/7").headers["etag"]
    not_modified = client.get("/items/7", headers={"If-None-Match": etag})
    assert not_modified.status_code == 304 and not_modified.content == b""
    assert not_modified.headers["etag"] == etag
    assert client.get("/items/7", headers={"If-None-Match": 'W/"other", ' + etag}).status_code \
        == 304
    assert client.get("/items/7", headers={"If-None-Match": '"other"'}).status_code == 200
    # A conditional miss gets its 304 too (the route still runs once).
    fresh = client.get("/items/8", headers={"If-None-Match": etag})
    assert fresh.status_code == 200 and fresh.headers["x-cache"] == "MISS"


def test_vary_headers_and_cache_control(client: TestClient) -> None:
    fr = client.get("/lang", headers={"Accept-Language": "fr"})
    de = client.get("/lang", headers={"Accept-Language": "de"})
    assert fr.json() != de.json()
    assert client.get("/lang", headers={"Accept-Language": "fr"}).json() == fr.json()
    assert fr.headers["cache-control"] == "public, max-age=5"
    assert calls(client)["lang"] == 2


def test_ttl_expires_a_variant(client: TestClient) -> None:
    first = client.get("/short").json()
    deadline = time.monotonic() + 30
    while client.get("/short").headers["x-cache"] == "HIT":
        assert time.monotonic() < deadline, "the entry never expired"
    assert client.get("/short").json() != first


def test_invalidation_by_the_same_templates(client: TestClient, redis: RedisServer) -> None:
    assert client.get("/users/3").json()["version"] == 1
    assert client.get("/users/3").json()["version"] == 1
    assert redis.cli("--scan", "--pattern", "t:user:*").split() == ["t:user:3"]
    client.post("/users/3")
    assert client.get("/users/3").json()["version"] == 2
    client.get("/items/4?q=a")
    client.get("/items/4?q=b")
    client.post("/items/4")  # one template drops every variant of the route
    assert client.get("/items/4?q=a").headers["x-cache"] == "MISS"
    assert client.get("/items/4?q=b").headers["x-cache"] == "MISS"


def test_what_is_never_stored(client: TestClient) -> None:
    for kind in ("cookie", "nostore", "missing"):
        client.get(f"/never/{kind}")
        second = client.get(f"/never/{kind}")
        assert second.headers["x-cache"] == "MISS"
        assert calls(client)[f"never:{kind}"] == 2
    # Authorization bypasses a route that does not vary on it.
    client.get("/items/9")
    private = client.get("/items/9", headers={"Authorization": "Bearer x"})
    assert "x-cache" not in private.headers
    # Uncached routes are untouched.
    assert "x-cache" not in client.get("/plain").headers


def test_redis_down_serves_from_the_app(
        redis_server_factory: Callable[..., RedisServer]) -> None:
    server = redis_server_factory()
    try:
        with TestClient(make_app(server, connect_wait=0)) as c:
            assert c.get("/items/1").status_code == 200
            server.stop()
            down = c.get("/items/1")
            assert down.status_code == 200 and down.json()["id"] == 1
            assert c.app.state.calls["item"] == 2  # type: ignore[attr-defined]
    finally:
        server.close()


def test_route_class_and_install_without_lifespan(redis: RedisServer) -> None:
    cache = RedisCache.from_url(redis.url, namespace="t")
    counter = collections.Counter[str]()
    router = APIRouter(route_class=CachedRoute)

    @router.get("/a")
    @cached_route(ttl=60, cache=cache)
    async def a() -> dict[str, int]:
        counter["a"] += 1
        return {"a": counter["a"]}

    app = FastAPI()
    app.include_router(router)

    @app.get("/b")
    @cached_route(ttl=60, cache=cache)
    async def b() -> dict[str, int]:
        counter["b"] += 1
        return {"b": counter["b"]}

    assert install_cached_routes(app) == 1  # /a is wrapped already
    assert install_cached_routes(app) == 0
    with TestClient(app) as c:
        for path in ("/a", "/b"):
            c.get(path)
            assert c.get(path).headers["x-cache"] == "HIT"
    assert counter == {"a": 1, "b": 1}


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="ttl"):
        cached_route(ttl=0)
    with pytest.raises(TypeError, match="collection"):
        cached_route(vary="Accept")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bad key template"):
        cached_route(key="user:{")


def test_included_router_is_cached_by_the_lifespan(redis: RedisServer) -> None:
    counter = collections.Counter[str]()
    router = APIRouter(prefix="/v1")

    @router.get("/items/{item_id}", response_model=Item)
    @cached_route(ttl=60)
    async def item(item_id: int) -> Any:
        counter["item"] += 1
        return {"id": item_id, "name": "x", "price": 1, "dropped": True}

    app = FastAPI(lifespan=cache_lifespan(lambda: RedisCache.from_url(redis.url)))
    app.include_router(router)
    with TestClient(app) as c:
        miss = c.get("/v1/items/1")
        hit = c.get("/v1/items/1")
        assert (miss.headers["x-cache"], hit.headers["x-cache"]) == ("MISS", "HIT")
        assert hit.content == miss.content == b'{"id":1,"name":"x","price":1.0}'
        assert c.get("/v1/items/1", headers={"If-None-Match": hit.headers["etag"]}).status_code \
            == 304
    assert counter["item"] == 1


def test_a_stalled_redis_is_given_up_on(
        redis_server_factory: Callable[..., RedisServer]) -> None:
    server = redis_server_factory()
    try:
        with TestClient(make_app(server)) as c:
            assert c.get("/items/1").headers["x-cache"] == "MISS"
            server.pause()  # accepts nothing, answers nothing: only the route's timeout helps
            stalled = c.get("/items/1")
            assert stalled.status_code == 200 and "x-cache" not in stalled.headers
            assert c.app.state.calls["item"] == 2  # type: ignore[attr-defined]
            server.resume()
            deadline = time.monotonic() + 30
            while c.get("/items/1").headers.get("x-cache") != "HIT":  # the cache comes back
                assert time.monotonic() < deadline
    finally:
        if server.paused:
            server.resume()
        server.close()
