"""The apps bench/http_routes.py serves with uvicorn: one route returning a
~1 KB dict whose miss costs 2 ms, cached in each way being compared. Chosen by
BENCH_VARIANT; Redis at BENCH_REDIS_URL."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI

MISS_COST = 0.002


def payload(item_id: int) -> dict[str, Any]:
    return {
        "id": item_id,
        "owner": {"name": "Ada Lovelace", "email": "ada@example.com", "active": True},
        "items": [{"sku": f"SKU-{item_id}-{i:04d}", "name": f"widget number {i}",
                   "price": 9.99 + i, "tags": ["a", "b"]} for i in range(11)],
    }


async def compute(item_id: int) -> dict[str, Any]:
    await asyncio.sleep(MISS_COST)
    return payload(item_id)


def create_app() -> FastAPI:
    variant = os.environ["BENCH_VARIANT"]
    url = os.environ["BENCH_REDIS_URL"]
    return globals()[f"_{variant.replace('-', '_')}"](url)


def _none(url: str) -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, Any]:
        return await compute(item_id)

    return app


def _ours(url: str) -> tuple[FastAPI, Any]:
    from redis_cache import RedisCache
    from redis_cache.fastapi import cache_lifespan

    cache = RedisCache.from_url(url, namespace="bench")
    return FastAPI(lifespan=cache_lifespan(cache)), cache


def _middleware(url: str) -> FastAPI:
    from redis_cache.fastapi import CacheMiddleware

    app, _ = _ours(url)
    app.add_middleware(CacheMiddleware, ttl=600)

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, Any]:
        return await compute(item_id)

    return app


def _cached_route(url: str) -> FastAPI:
    app, cache = _ours(url)

    @app.get("/items/{item_id}")
    @cache.cached_route(ttl=600)
    async def item(item_id: int) -> dict[str, Any]:
        return await compute(item_id)

    return app


def _decorator(url: str) -> FastAPI:
    app, cache = _ours(url)

    @cache.cached(ttl=600)
    async def load(item_id: int) -> dict[str, Any]:
        return await compute(item_id)

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, Any]:
        return await load(item_id)

    return app


def _cashews(url: str) -> FastAPI:
    from cashews import cache

    cache.setup(url)
    app = FastAPI()

    @app.get("/items/{item_id}")
    @cache(ttl="10m")
    async def item(item_id: int) -> dict[str, Any]:
        return await compute(item_id)

    return app


def _fastapi_cache2(url: str) -> FastAPI:
    from fastapi_cache import FastAPICache
    from fastapi_cache.backends.redis import RedisBackend
    from fastapi_cache.decorator import cache
    from redis import asyncio as aioredis

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        FastAPICache.init(RedisBackend(aioredis.from_url(url)), prefix="fc")
        yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/items/{item_id}")
    @cache(expire=600)
    async def item(item_id: int) -> dict[str, Any]:
        return await compute(item_id)

    return app
