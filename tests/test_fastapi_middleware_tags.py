"""CacheMiddleware's ``tags=`` (with ``Cache-Tag``), and RFC 5861's
``stale-while-revalidate`` / ``stale-if-error`` (``serve_stale=True``,
``stale_if_error=``), against a real redis-server.

A hit is told from a miss by X-Cache *and* by the route's call counter.
Expiry is brought forward with PEXPIRE on the server; the background
refresh is awaited through an event the middleware's store sets.
"""

from __future__ import annotations

import collections
import threading
from typing import Any

import pytest
from fastapi_support import client, no_asyncio_errors  # noqa: F401 - autouse fixture

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from redis_cache import RedisCache
from redis_cache.fastapi import CacheMiddleware, cache_lifespan
from redis_cache.testing import RedisServer

NS = "mt"


class SignallingMiddleware(CacheMiddleware):
    """Sets ``stored`` (a threading.Event) after each write to Redis."""

    stored = threading.Event()

    async def _store(self, *args: Any, **kwargs: Any) -> None:
        await super()._store(*args, **kwargs)
        type(self).stored.set()


def make_app(server: RedisServer, **options: Any) -> FastAPI:
    app = FastAPI(lifespan=cache_lifespan(lambda: RedisCache(port=server.port, namespace=NS)))
    app.add_middleware(SignallingMiddleware, **options)
    calls: collections.Counter[str] = collections.Counter()
    app.state.calls = calls
    app.state.fail = False
    app.state.invalidate_during = False

    @app.get("/users/{user_id}")
    async def user(user_id: int, request: Request) -> dict[str, Any]:
        calls[f"user:{user_id}"] += 1
        if app.state.invalidate_during:
            # The database changed while this response was being built.
            await request.app.state.redis_cache.invalidate_tags(f"user:{user_id}")
        return {"id": user_id, "version": calls[f"user:{user_id}"]}

    @app.get("/cc/{name}")
    async def with_cache_control(name: str, cc: str = "max-age=60") -> Response:
        calls[name] += 1
        if app.state.fail == "raise":
            raise RuntimeError("the database is down")
        if app.state.fail == "503":
            return JSONResponse({"error": "down"}, status_code=503)
        return JSONResponse({"version": calls[name]}, headers={"Cache-Control": cc})

    return app


def user_tags(path: str) -> list[str]:
    return [f"user:{path.split('/')[2]}", "users"]


def entry_keys(server: RedisServer) -> list[str]:
    return sorted(k for k in server.cli("--scan", "--pattern", f"{NS}:http:e:*").splitlines() if k)


def past_expiry(server: RedisServer, seconds: int, window: int) -> None:
    """Leaves every stored response `seconds` past its expiry (of `window`)."""
    for key in entry_keys(server):
        assert server.cli("PEXPIRE", key, str((window - seconds) * 1000)).strip() == "1"


# ------------------------------------------------------------------ tags


def test_tagged_responses_and_the_cache_tag_header(redis: RedisServer) -> None:
    app = make_app(redis, tags=user_tags)
    with client(app) as c:
        first = c.get("/users/5")
        assert first.headers["x-cache"] == "MISS"
        assert first.headers["cache-tag"] == "user:5,users"
        hit = c.get("/users/5")
        assert hit.headers["x-cache"] == "HIT"
        assert hit.headers["cache-tag"] == "user:5,users"
        assert c.get("/users/6").json()["version"] == 1
        c.portal.call(app.state.redis_cache.invalidate_tags, "user:5")
        again = c.get("/users/5")
        assert again.headers["x-cache"] == "MISS"
        assert again.json()["version"] == 2
        assert c.get("/users/6").headers["x-cache"] == "HIT"
        c.portal.call(app.state.redis_cache.invalidate_tags, "users")
        assert c.get("/users/6").headers["x-cache"] == "MISS"
    assert app.state.calls == {"user:5": 2, "user:6": 2}


def test_a_response_built_across_an_invalidation_is_not_served_after_it(
    redis: RedisServer,
) -> None:
    app = make_app(redis, tags=user_tags)
    with client(app) as c:
        app.state.invalidate_during = True
        assert c.get("/users/7").headers["x-cache"] == "MISS"
        app.state.invalidate_during = False
        second = c.get("/users/7")
        assert second.headers["x-cache"] == "MISS"  # the first was stored born invalid
        assert c.get("/users/7").headers["x-cache"] == "HIT"
    assert app.state.calls["user:7"] == 2


def test_static_tags_and_bad_tags(redis: RedisServer) -> None:
    app = make_app(redis, tags=["everything"])
    with client(app) as c:
        assert c.get("/users/1").headers["cache-tag"] == "everything"
        assert c.get("/users/1").headers["x-cache"] == "HIT"
        c.portal.call(app.state.redis_cache.invalidate_tags, "everything")
        assert c.get("/users/1").headers["x-cache"] == "MISS"
    with pytest.raises(TypeError, match="not a string"):
        CacheMiddleware(app, tags="users")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty str"):
        CacheMiddleware(app, tags=[""])
    with pytest.raises(ValueError, match="stale_if_error must be"):
        CacheMiddleware(app, stale_if_error=-5)


# ------------------------------------------------------------------ RFC 5861


def test_stale_while_revalidate(redis: RedisServer) -> None:
    app = make_app(redis, serve_stale=True)
    url = "/cc/swr?cc=max-age%3D60%2C%20stale-while-revalidate%3D300"
    with client(app) as c:
        assert c.get(url).json() == {"version": 1}
        past_expiry(redis, 10, window=300)
        SignallingMiddleware.stored.clear()
        stale = c.get(url)
        assert stale.headers["x-cache"] == "STALE"
        assert stale.json() == {"version": 1}
        assert SignallingMiddleware.stored.wait(10)  # the refresh behind it
        fresh = c.get(url)
        assert fresh.headers["x-cache"] == "HIT"
        assert fresh.json() == {"version": 2}
    assert app.state.calls["swr"] == 2


def test_past_the_swr_window_the_app_answers(redis: RedisServer) -> None:
    app = make_app(redis, serve_stale=True)
    url = "/cc/late?cc=max-age%3D60%2C%20stale-while-revalidate%3D30"
    with client(app) as c:
        c.get(url)
        past_expiry(redis, 31, window=30)
        late = c.get(url)
        assert late.headers["x-cache"] == "MISS"
        assert late.json() == {"version": 2}


@pytest.mark.parametrize("failure", ["raise", "503"])
def test_stale_if_error(redis: RedisServer, failure: str) -> None:
    app = make_app(redis, serve_stale=True)
    url = "/cc/sie?cc=max-age%3D60%2C%20stale-if-error%3D300"
    with client(app) as c:
        assert c.get(url).json() == {"version": 1}
        past_expiry(redis, 10, window=300)
        app.state.fail = failure
        stale = c.get(url)
        assert stale.status_code == 200
        assert stale.headers["x-cache"] == "STALE"
        assert stale.json() == {"version": 1}
        # Once the window is over, the failure reaches the client.
        for key in entry_keys(redis):
            redis.cli("DEL", key)
        assert c.get(url).status_code in (500, 503)
    assert app.state.calls["sie"] == 3


def test_stale_if_error_option_for_responses_without_the_directive(redis: RedisServer) -> None:
    app = make_app(redis, stale_if_error=120)
    with client(app) as c:
        assert c.get("/cc/opt").json() == {"version": 1}
        past_expiry(redis, 5, window=120)
        app.state.fail = "raise"
        assert c.get("/cc/opt").headers["x-cache"] == "STALE"


def test_stale_is_never_served_when_not_asked(redis: RedisServer) -> None:
    app = make_app(redis)  # serve_stale off: plain string entries, as before
    url = "/cc/off?cc=max-age%3D60%2C%20stale-if-error%3D300"
    with client(app) as c:
        c.get(url)
        assert redis.cli("TYPE", entry_keys(redis)[0]).strip() == "string"
