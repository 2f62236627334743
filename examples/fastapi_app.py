"""A small FastAPI service using redis_cache: a slow endpoint cached with the
decorator, a mutation that invalidates it, endpoints tagged by user that one
write invalidates together, a page cached by the response middleware (ETag /
304), a route whose response bytes are cached (cached_route), a rate-limited
route, and the health router (with /health/metrics)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator

from fastapi import Depends, FastAPI
from fastapi.responses import HTMLResponse

from redis_cache import RedisCache
from redis_cache.fastapi import CacheMiddleware, RateLimit, cache_lifespan, health_router


@dataclasses.dataclass
class Report:
    user_id: int
    orders: int
    total: float


class Session:
    """Stands in for a database session: injected per request, no stable
    encoding, so the decorator leaves it out of the cache key."""


def get_db() -> Iterator[Session]:
    yield Session()


def create_app(redis_url: str) -> FastAPI:
    cache = RedisCache.from_url(redis_url, namespace="demo")
    app = FastAPI(title="redis_cache demo", lifespan=cache_lifespan(cache))
    app.add_middleware(CacheMiddleware, cache=cache, ttl=30, include=("/pages",))
    app.include_router(health_router())

    @app.get("/reports/{user_id}")
    @cache.cached(ttl=60, key="report:{user_id}")
    async def report(user_id: int, db: Session = Depends(get_db)) -> Report:
        await asyncio.sleep(0.5)  # a slow query
        return Report(user_id=user_id, orders=42, total=1234.5)

    @app.post("/reports/{user_id}/refresh")
    @cache.invalidate("report:{user_id}")
    async def refresh(user_id: int) -> dict[str, int]:
        return {"invalidated": user_id}

    @app.get("/users/{user_id}/orders")
    @cache.cached(ttl=300, tags=["user:{user_id}"])
    async def orders(user_id: int) -> list[dict[str, object]]:
        await asyncio.sleep(0.2)  # a slow query
        return [{"order": 1, "user": user_id}, {"order": 2, "user": user_id}]

    @app.get("/users/{user_id}/profile")
    @cache.cached(ttl=300, tags=["user:{user_id}"])
    async def profile(user_id: int) -> dict[str, object]:
        await asyncio.sleep(0.2)
        return {"id": user_id, "name": f"user {user_id}"}

    @app.post("/users/{user_id}")
    async def update_user(user_id: int) -> dict[str, int]:
        # One write; everything cached about this user is stale now.
        await cache.invalidate_tags(f"user:{user_id}")
        return {"updated": user_id}

    @app.get("/products/{product_id}")
    @cache.cached_route(ttl=60)
    async def product(product_id: int) -> dict[str, object]:
        await asyncio.sleep(0.2)  # a slow lookup; a hit sends the stored bytes
        return {"id": product_id, "name": f"product {product_id}", "price": 9.99}

    @app.post("/login", dependencies=[Depends(RateLimit("3/minute"))])
    async def login() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/pages/about", response_class=HTMLResponse)
    async def about() -> str:
        await asyncio.sleep(0.2)  # an expensive render
        return "<h1>About</h1><p>Served through CacheMiddleware.</p>"

    return app
