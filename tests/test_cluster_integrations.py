"""What is built on the cache, on a Redis Cluster through the cluster
clients: rate limiters (every check's keys in one slot, scripts on the slot's
node), sessions, the FastAPI response middleware, cached routes and the
health endpoints (figures summed over the primaries)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from async_support import Runner, run  # noqa: F401
from fastapi_support import TestClient, client, no_asyncio_errors  # noqa: F401

from fastapi import FastAPI
from redis_cache import RedisClusterCache, SyncRedisClusterCache
from redis_cache._testing_cluster import ClusterTopology
from redis_cache.fastapi import CacheMiddleware, cache_lifespan, health_router

ALGORITHMS = ["gcra", "sliding-window", "sliding-window-counter"]


def nodes_of(cluster: ClusterTopology) -> list[tuple[str, int]]:
    return list(cluster.seed_addresses)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_rate_limiters_on_a_cluster(
    run: Runner, healthy_cluster: ClusterTopology, algorithm: str
) -> None:
    subjects = [f"user:{i}" for i in range(12)]  # checks on every node
    with SyncRedisClusterCache(nodes_of(healthy_cluster), namespace="rl") as cache:
        limiter = cache.rate_limiter("3/minute", "100/hour", algorithm=algorithm)
        owners = {healthy_cluster.owner(limiter.keys(s)[0]).address for s in subjects}
        assert len(owners) == 3
        for subject in subjects:
            assert [limiter.hit(subject).allowed for _ in range(4)] == [True] * 3 + [False]
        limiter.reset(subjects[0])
        assert limiter.peek(subjects[0]).allowed

    async def main() -> None:
        async with RedisClusterCache(nodes_of(healthy_cluster), namespace="rl2") as cache:
            limiter = cache.rate_limiter("5/minute", algorithm=algorithm)
            decisions = await asyncio.gather(*(limiter.hit("burst") for _ in range(20)))
            assert sum(d.allowed for d in decisions) == 5

    run(main())


def test_sessions_on_a_cluster(run: Runner, healthy_cluster: ClusterTopology) -> None:
    with SyncRedisClusterCache(nodes_of(healthy_cluster)) as cache:
        for i in range(30):
            assert cache.set_session(f"s{i}", {"user": i}, ttl=60) is True
        assert [cache.get_session(f"s{i}") for i in range(30)] == [{"user": i} for i in range(30)]

    async def main() -> None:
        async with RedisClusterCache(nodes_of(healthy_cluster)) as cache:
            assert await cache.get_session("s7") == {"user": 7}

    run(main())


def make_app(cluster: ClusterTopology) -> tuple[FastAPI, dict[str, int]]:
    calls = {"mw": 0, "route": 0}

    def factory() -> RedisClusterCache:
        return RedisClusterCache(nodes_of(cluster), namespace="web")

    app = FastAPI(lifespan=cache_lifespan(factory))
    app.add_middleware(CacheMiddleware, ttl=60, include=["/mw"])
    app.include_router(health_router())

    @app.get("/mw/{n}")
    async def mw(n: int) -> dict[str, int]:
        calls["mw"] += 1
        return {"n": n}

    return app, calls


def test_response_middleware_and_health_on_a_cluster(healthy_cluster: ClusterTopology) -> None:
    app, calls = make_app(healthy_cluster)
    with client(app) as http:
        first = [http.get(f"/mw/{n}") for n in range(20)]
        again = [http.get(f"/mw/{n}") for n in range(20)]
        assert [r.json() for r in again] == [{"n": n} for n in range(20)]
        assert [r.headers.get("X-Cache") for r in again] == ["HIT"] * 20
        assert calls["mw"] == 20 and all(r.status_code == 200 for r in first)
        assert http.get("/health").json()["status"] == "up"
        stats = http.get("/health/stats").json()["redis"]
        nodes = stats["nodes"]
        assert sorted(nodes) == sorted(f"{h}:{p}" for h, p in
                                       (n.address for n in healthy_cluster.primaries()))
        assert stats["connected_clients"] == sum(n["connected_clients"] for n in nodes.values())
        assert stats["keyspace_hits"] == sum(n["keyspace_hits"] for n in nodes.values())
        assert stats["keyspace_hits"] >= 20


def test_cached_routes_on_a_cluster(healthy_cluster: ClusterTopology) -> None:
    cache = RedisClusterCache(nodes_of(healthy_cluster), namespace="routes")
    app = FastAPI(lifespan=cache_lifespan(cache))
    calls: dict[str, int] = {"item": 0}

    @app.get("/items/{item_id}")
    @cache.cached_route(ttl=60)
    async def item(item_id: int) -> dict[str, Any]:
        calls["item"] += 1
        return {"id": item_id}

    @app.post("/items/{item_id}")
    @cache.invalidate("route:/items/{item_id}")
    async def update(item_id: int) -> dict[str, bool]:
        return {"ok": True}

    with client(app) as http:
        assert [http.get(f"/items/{i}").json() for i in range(10)] == [{"id": i} for i in range(10)]
        assert [http.get(f"/items/{i}").json() for i in range(10)] == [{"id": i} for i in range(10)]
        assert calls["item"] == 10
        assert http.post("/items/3").json() == {"ok": True}
        assert http.get("/items/3").json() == {"id": 3}
        assert calls["item"] == 11
