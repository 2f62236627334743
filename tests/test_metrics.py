"""Metrics against real servers: the C core's counters and latency histograms
(sync, async, cluster), the cache layer's per-function and per-route
counters, the Prometheus text of ``/health/metrics`` (parsed back), the
OpenTelemetry instruments, and the fields ``/health/stats`` gained."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from async_support import SAFETY_TIMEOUT, Runner, run  # noqa: F401
from fastapi_support import client, no_asyncio_errors  # noqa: F401

from fastapi import FastAPI
from redis_cache import (
    RedisCache,
    RedisClusterCache,
    ResponseError,
    SyncRedisCache,
    SyncRedisClusterCache,
    TimeoutError,
)
from redis_cache import decorators
from redis_cache._testing_cluster import ClusterTopology
from redis_cache.decorators import FunctionStats
from redis_cache.fastapi import CacheMiddleware, cache_lifespan, cached_route, health_router
from redis_cache.metrics import (
    LATENCY_BOUNDS_SECONDS,
    _stats_dict,
    merge_client_metrics,
    prometheus_text,
    route_metrics,
)
from redis_cache.testing import RedisServer


def client_of(cache: Any) -> dict[str, Any]:
    snapshot = cache.metrics()["client"]
    assert snapshot is not None
    return snapshot


def histogram_total(snapshot: dict[str, Any]) -> int:
    return sum(sum(op["buckets"]) for op in snapshot["operations"].values())


def wait_for(condition: Any, what: str, timeout: float = 10.0) -> None:
    """Waits until condition() is true (polling a state that has no event)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


# ------------------------------------------------------------------ sync core


def test_sync_counters_follow_known_operations(redis: RedisServer) -> None:
    with SyncRedisCache(port=redis.port) as cache:
        before = client_of(cache)
        assert before["requests"] == 0 and before["operations"] == {}
        for i in range(10):
            assert cache.get(f"k{i}") is None
        assert cache.set("s", "text") is True
        assert cache.get_many(["a", "b", "c"]) == {}
        assert cache.set_many({"x": 1, "y": 2}) is True
        with pytest.raises(ResponseError):
            cache.execute_command("LPUSH", "s", "1")  # WRONGTYPE: an error reply
        after = client_of(cache)
    assert after["requests"] == 10 + 1 + 1 + 1 + 1
    assert after["commands"] == 10 + 1 + 1 + 2 + 1  # set_many: one SET per item
    assert after["replies"] == after["commands"]
    assert after["error_replies"] == 1
    assert after["in_flight"] == 0
    assert after["timeouts"] == after["connection_errors"] == 0
    ops = after["operations"]
    assert ops["get"]["calls"] == 10 and ops["get"]["errors"] == 0
    assert ops["set"]["calls"] == ops["get_many"]["calls"] == ops["set_many"]["calls"] == 1
    assert ops["execute_command"] == {**ops["execute_command"], "calls": 1, "errors": 1}
    # Every finished request is in exactly one bucket of its histogram.
    assert histogram_total(after) == after["requests"]
    for op in ops.values():
        assert len(op["buckets"]) == len(LATENCY_BOUNDS_SECONDS) + 1
        assert op["sum_seconds"] > 0
    assert after["connects"] == 1 and after["pool_open"] == after["pool_idle"] == 1
    assert after["pool_waits"] == after["pool_timeouts"] == 0


def test_sync_timeout_is_counted(redis: RedisServer) -> None:
    with SyncRedisCache(port=redis.port, socket_timeout=0.2) as cache:
        assert cache.ping()
        redis.pause()
        try:
            with pytest.raises(TimeoutError):
                cache.get("k")
        finally:
            redis.resume()
        snapshot = client_of(cache)
    assert snapshot["timeouts"] == 1
    assert snapshot["operations"]["get"]["errors"] == 1
    assert snapshot["in_flight"] == 0


def test_sync_pool_wait_is_counted(redis: RedisServer) -> None:
    """One connection, held by a BLPOP: a second thread's get waits for it."""
    with SyncRedisCache(port=redis.port, max_connections=1) as cache, \
            SyncRedisCache(port=redis.port) as other:
        errors: list[BaseException] = []

        def call(fn: Any) -> None:
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        blocker = threading.Thread(target=call, args=(
            lambda: cache.execute_command("BLPOP", "metrics:q", 10),))
        blocker.start()
        wait_for(lambda: b"cmd=blpop" in other.execute_command("CLIENT", "LIST"),
                 "the BLPOP to block on the server")
        waiter = threading.Thread(target=call, args=(lambda: cache.get("k"),))
        waiter.start()
        # in_flight counts the get from its start; from there to the pool's
        # queue no Python code runs, so the GIL handed back to us means the
        # get is waiting.
        wait_for(lambda: client_of(cache)["in_flight"] == 2, "the get to queue for the pool")
        other.execute_command("LPUSH", "metrics:q", "go")
        blocker.join(SAFETY_TIMEOUT)
        waiter.join(SAFETY_TIMEOUT)
        assert errors == []
        snapshot = client_of(cache)
    assert snapshot["pool_waits"] == 1
    assert snapshot["pool_wait_seconds"] > 0
    assert snapshot["in_flight"] == 0


def test_metrics_off(redis: RedisServer, run: Runner) -> None:
    with SyncRedisCache(port=redis.port, metrics=False) as cache:
        assert cache.get("k") is None
        assert cache._metrics() is None
        assert cache.metrics()["client"] is None

    async def main() -> None:
        async with RedisCache(port=redis.port, metrics=False) as cache:
            assert await cache.get("k") is None
            assert cache.metrics()["client"] is None
            assert "# TYPE redis_cache_client_requests_total" not in prometheus_text(
                cache.metrics())

    run(main())


# ------------------------------------------------------------------ async core


def test_async_counters_follow_known_operations(redis: RedisServer, run: Runner) -> None:
    async def main() -> None:
        async with RedisCache(port=redis.port) as cache:
            await cache.set("s", "text")
            results = await asyncio.gather(*(cache.get(f"k{i}") for i in range(100)))
            assert results == [None] * 100
            assert await cache.delete("s") is True
            with pytest.raises(ResponseError):
                await cache.execute_command("HGET", "s", "f", "extra")  # wrong arity
            snapshot = client_of(cache)
        assert snapshot["requests"] == 1 + 100 + 1 + 1
        assert snapshot["commands"] == snapshot["replies"] == snapshot["requests"]
        assert snapshot["error_replies"] == 1
        assert snapshot["in_flight"] == 0
        assert snapshot["connects"] == 1 and snapshot["connect_failures"] == 0
        assert snapshot["operations"]["get"]["calls"] == 100
        assert snapshot["operations"]["delete"]["calls"] == 1
        assert snapshot["operations"]["execute_command"]["errors"] == 1
        assert histogram_total(snapshot) == snapshot["requests"]

    run(main())


def test_async_timeout_and_in_flight(redis: RedisServer, run: Runner) -> None:
    async def main() -> None:
        async with RedisCache(port=redis.port, socket_timeout=0.3) as cache:
            assert await cache.ping()
            redis.pause()
            try:
                pending = [asyncio.ensure_future(cache.get(f"k{i}")) for i in range(5)]
                await asyncio.sleep(0)  # the requests are submitted
                assert client_of(cache)["in_flight"] == 5
                results = await asyncio.gather(*pending, return_exceptions=True)
            finally:
                redis.resume()
            assert all(isinstance(r, TimeoutError) for r in results)
            snapshot = client_of(cache)
            assert snapshot["timeouts"] == 5
            assert snapshot["in_flight"] == 0
            assert snapshot["operations"]["get"]["errors"] == 5
            assert await cache.get("k") is None  # a new connection
            assert client_of(cache)["connects"] == 2

    run(main())


def test_async_connect_failures_are_counted(run: Runner) -> None:
    from redis_cache.testing import free_port

    async def main() -> None:
        cache = RedisCache(host="127.0.0.1", port=free_port(), connect_wait=0)
        try:
            with pytest.raises(ConnectionError):
                await cache.get("k")
            snapshot = client_of(cache)
            assert snapshot["connect_failures"] >= 1
            assert snapshot["connection_errors"] == 1
            assert snapshot["in_flight"] == 0
        finally:
            await cache.close()

    run(main())


# ------------------------------------------------------------------ cache layer


@pytest.fixture
def clean_stats() -> Iterator[None]:
    saved = dict(decorators._stats)
    yield
    decorators._stats.clear()
    decorators._stats.update(saved)


def test_function_metrics_and_stampedes(redis_server_factory: Any, run: Runner,
                                        clean_stats: None) -> None:
    # A server of its own: on the shared one, right after this file's SIGSTOP /
    # SIGCONT tests, a new connection once took over 5 s in full CI runs (3
    # times in ~10 runs; never reproduced alone), and the counters then
    # rightly showed a fail-open call.
    server = redis_server_factory()

    async def main() -> None:
        async with RedisCache(host="127.0.0.1", port=server.port, namespace="fm") as cache:
            gate = asyncio.Event()

            @cache.cached(ttl=60)
            async def slow(x: int) -> int:
                await gate.wait()
                return x * 2

            callers = [asyncio.ensure_future(slow(1)) for _ in range(10)]
            while cache.metrics()["functions"][qualname(slow)]["misses"] < 10:
                await asyncio.sleep(0)
            gate.set()
            assert await asyncio.gather(*callers) == [2] * 10
            assert await slow(1) == 2
            stats = cache.metrics()["functions"][qualname(slow)]
        assert stats["misses"] == 10 and stats["hits"] == 1, stats
        assert stats["computations"] == 1, stats
        assert stats["stampedes_collapsed"] == 9, stats
        assert stats["hit_rate"] == pytest.approx(1 / 11)
        assert stats["time_saved_seconds"] >= 0

    try:
        run(main())
    finally:
        server.close()


def test_a_decorators_twin_is_counted(redis: RedisServer, run: Runner,
                                      clean_stats: None) -> None:
    """A sync function decorated with an async cache runs on the cache's sync
    twin: its requests are in cache.metrics() too."""

    async def main() -> None:
        async with RedisCache(port=redis.port, namespace="tw") as cache:
            @cache.cached(ttl=60)
            def square(x: int) -> int:
                return x * x

            assert await asyncio.to_thread(square, 3) == 9
            assert await asyncio.to_thread(square, 3) == 9
            snapshot = client_of(cache)
            assert snapshot["operations"]["get"]["calls"] == 2  # the twin's
            assert snapshot["operations"]["set"]["calls"] == 1
            assert "pool_waits" in snapshot  # a sync pool's counters

    run(main())


def qualname(fn: Any) -> str:
    """The stats name of a decorated function: its whole qualified name (a bare
    "slow" also matched another module's function of that name whose stats were
    still registered, and the test read that one's counters)."""
    return next(name for name in decorators._stats if name.endswith("." + fn.__qualname__))


def test_function_counters_are_read_generically() -> None:
    """A counter added to FunctionStats (by a later feature) is exported
    without touching the metrics module."""
    Extended = dataclasses.make_dataclass(
        "Extended", [("stale_served", int, dataclasses.field(default=0))], bases=(FunctionStats,))
    stats = Extended("f")
    stats.count("stale_served", n=3)
    stats.count("hits")
    exported = _stats_dict(stats)
    assert exported["stale_served"] == 3 and exported["hits"] == 1
    assert "name" not in exported and "_lock" not in exported
    assert "# TYPE redis_cache_function_stale_served_total counter" in prometheus_text(
        {"functions": {"f": exported}})


# ------------------------------------------------------------------ Prometheus


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def parse_exposition(text: str) -> dict[str, dict[str, Any]]:
    """A strict reader of the text format: HELP and TYPE once per family and
    before its samples, every sample in a typed family (histograms: _bucket,
    _sum, _count), label values unescaped, values floats."""
    families: dict[str, dict[str, Any]] = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert name not in families, f"HELP twice for {name}"
            families[name] = {"type": None, "samples": []}
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert families[name]["type"] is None and not families[name]["samples"]
            assert kind in ("counter", "gauge", "histogram")
            families[name]["type"] = kind
        else:
            match = _SAMPLE.match(line)
            assert match, f"not a sample line: {line!r}"
            name, _, labels_text, value = match.groups()
            labels: dict[str, str] = {}
            rest = labels_text or ""
            while rest:
                m = _LABEL.match(rest)
                assert m, f"bad labels in {line!r}"
                raw = m.group(2)
                labels[m.group(1)] = re.sub(
                    r"\\(.)", lambda e: {"n": "\n"}.get(e.group(1), e.group(1)), raw)
                rest = rest[m.end():]
            family = name
            if name not in families:
                family = re.sub(r"_(bucket|sum|count)$", "", name)
                assert families[family]["type"] == "histogram", f"untyped sample {name}"
            families[family]["samples"].append((name, labels, float(value)))
    return families


def test_prometheus_text_parses_and_is_consistent(redis: RedisServer, run: Runner,
                                                 clean_stats: None) -> None:
    weird = 'odd "name"\\with\nnewline'
    decorators._stats[weird] = FunctionStats(weird, hits=2)

    async def main() -> None:
        async with RedisCache(port=redis.port) as cache:
            await asyncio.gather(*(cache.get(f"k{i}") for i in range(20)))
            await cache.set("a", 1)
            families = parse_exposition(prometheus_text(cache.metrics()))
        requests = families["redis_cache_client_requests_total"]
        assert requests["type"] == "counter"
        assert requests["samples"] == [("redis_cache_client_requests_total", {}, 21.0)]
        hist = families["redis_cache_client_operation_duration_seconds"]
        assert hist["type"] == "histogram"
        get = [s for s in hist["samples"] if s[1].get("operation") == "get"]
        buckets = [(s[1]["le"], s[2]) for s in get if s[0].endswith("_bucket")]
        assert buckets[-1][0] == "+Inf"
        counts = [c for _, c in buckets]
        assert counts == sorted(counts)  # cumulative
        assert [float(le) for le, _ in buckets[:-1]] == list(LATENCY_BOUNDS_SECONDS)
        count = next(s[2] for s in get if s[0].endswith("_count"))
        assert count == counts[-1] == 20
        assert next(s[2] for s in get if s[0].endswith("_sum")) > 0
        hits = families["redis_cache_function_hits_total"]["samples"]
        assert (("redis_cache_function_hits_total", {"function": weird}, 2.0)) in hits
        states = families["redis_cache_circuit_breaker_state"]["samples"]
        assert {s[1]["state"]: s[2] for s in states} == {
            "closed": 1.0, "open": 0.0, "half-open": 0.0}

    run(main())


# ------------------------------------------------------------------ FastAPI


def make_app(server: RedisServer) -> FastAPI:
    app = FastAPI(lifespan=cache_lifespan(lambda: RedisCache(port=server.port, namespace="mx")))
    app.add_middleware(CacheMiddleware, ttl=60, include=["/metrics-mw"])
    app.include_router(health_router())

    @app.get("/metrics-mw/items/{name}")
    async def item(name: str) -> dict[str, str]:
        return {"name": name}

    @app.get("/metrics-routes/{n}")
    @cached_route(ttl=60)
    async def routed(n: int) -> dict[str, int]:
        return {"n": n}

    return app


def test_health_endpoints_and_route_metrics(redis: RedisServer) -> None:
    with client(make_app(redis)) as http:
        for _ in range(2):
            for name in ("a", "b", "c"):
                assert http.get(f"/metrics-mw/items/{name}").status_code == 200
            for n in range(4):
                assert http.get(f"/metrics-routes/{n}").json() == {"n": n}
        routes = route_metrics()
        mw, routed = routes["/metrics-mw/items/{name}"], routes["/metrics-routes/{n}"]
        response = http.get("/health/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert response.headers["cache-control"] == "no-store"
        families = parse_exposition(response.text)
        stats = http.get("/health/stats").json()["redis"]
    assert (mw["hits"], mw["misses"], mw["errors"]) == (3, 3, 0)
    assert (routed["hits"], routed["misses"], routed["errors"]) == (4, 4, 0)
    route_hits = {s[1]["route"]: s[2]
                  for s in families["redis_cache_route_hits_total"]["samples"]}
    assert route_hits["/metrics-mw/items/{name}"] == 3
    assert families["redis_cache_client_requests_total"]["samples"][0][2] > 0
    for field in ("version", "used_memory", "connected_clients", "hit_rate",
                  "commands_processed", "uptime_seconds", "ops_per_second", "evicted_keys"):
        assert stats[field] is not None, field
    assert stats["commands_processed"] > 0 and stats["connected_clients"] >= 1
    assert stats["role"] == "master"


# ------------------------------------------------------------------ cluster


def test_cluster_metrics_are_summed_over_nodes(run: Runner,
                                              healthy_cluster: ClusterTopology) -> None:
    seeds = list(healthy_cluster.seed_addresses)
    keys = [f"key:{i}" for i in range(60)]
    with SyncRedisClusterCache(seeds, namespace="cm") as cache:
        for key in keys:
            cache.get(key)
        snapshot = client_of(cache)
        nodes = snapshot["nodes"]
        assert len(nodes) >= 3
        assert sum(n["operations"].get("get", {}).get("calls", 0) for n in nodes.values()) == 60
        assert snapshot["operations"]["get"]["calls"] == 60
        for field in ("requests", "commands", "replies", "connects"):
            assert snapshot[field] >= sum(n[field] for n in nodes.values())
        merged = merge_client_metrics(nodes.values())
        assert merged["operations"]["get"]["buckets"] == snapshot["operations"]["get"]["buckets"]

    async def main() -> None:
        async with RedisClusterCache(seeds, namespace="cm") as cache:
            await asyncio.gather(*(cache.get(key) for key in keys))
            snapshot = client_of(cache)
            assert snapshot["operations"]["get"]["calls"] == 60
            assert histogram_total(snapshot) == snapshot["requests"] - snapshot["in_flight"]
            owners = {f"{h}:{p}" for h, p in (healthy_cluster.owner(k).address for k in
                                             (b"cm:" + k.encode() for k in keys))}
            gets = {a for a, n in snapshot["nodes"].items() if "get" in n["operations"]}
            assert gets == owners
            families = parse_exposition(prometheus_text(cache.metrics()))
            assert families["redis_cache_client_operation_duration_seconds"]["samples"]
            per_node = {s[1]["node"]: s[2]
                        for s in families["redis_cache_node_requests_total"]["samples"]}
            assert per_node == {a: float(n["requests"]) for a, n in snapshot["nodes"].items()}

    run(main())

    app = FastAPI(lifespan=cache_lifespan(lambda: RedisClusterCache(seeds, namespace="cm")))
    app.include_router(health_router())
    with client(app) as http:
        stats = http.get("/health/stats").json()["redis"]
        metrics_text = http.get("/health/metrics").text
    nodes = stats["nodes"]
    assert len(nodes) == len(healthy_cluster.primaries())
    for field in ("commands_processed", "evicted_keys", "connected_clients"):
        assert stats[field] == sum(n[field] for n in nodes.values()), field
    assert stats["uptime_seconds"] == min(n["uptime_seconds"] for n in nodes.values())
    assert all(n["role"] == "master" and n["commands_processed"] > 0 for n in nodes.values())
    parse_exposition(metrics_text)


# ------------------------------------------------------------------ Sentinel


def test_sentinel_metrics_count_requests_not_the_handshake(
        run: Runner, healthy_sentinel_topology: Any) -> None:
    """Through Sentinel (AUTH and CLIENT SETNAME on every connection): only
    the cache's own requests are counted."""
    from test_sentinel import options

    with SyncRedisCache(**options(healthy_sentinel_topology)) as cache:
        assert cache.set("m", 1) is True and cache.get("m") == 1
        snapshot = client_of(cache)
        assert snapshot["requests"] == snapshot["replies"] == 2
        assert snapshot["connects"] == 1

    async def main() -> None:
        async with RedisCache(**options(healthy_sentinel_topology)) as cache:
            assert await cache.get("m") == 1 and await cache.delete("m") is True
            snapshot = client_of(cache)
            assert snapshot["requests"] == snapshot["replies"] == 2
            assert snapshot["connects"] == 1 and snapshot["error_replies"] == 0
            assert histogram_total(snapshot) == 2

    run(main())


# ------------------------------------------------------------------ OpenTelemetry


def test_opentelemetry_instruments(redis: RedisServer, run: Runner) -> None:
    pytest.importorskip("opentelemetry.sdk.metrics")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from redis_cache.otel import instrument

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])

    def collected() -> dict[str, list[Any]]:
        data = reader.get_metrics_data()
        out: dict[str, list[Any]] = {}
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    out[metric.name] = list(metric.data.data_points)
        return out

    async def main() -> None:
        async with RedisCache(port=redis.port) as cache:
            instrument(cache, meter_provider=provider, attributes={"cache": "main"})
            await asyncio.gather(*(cache.get(f"k{i}") for i in range(7)))
            points = collected()
            (requests,) = points["redis_cache.client.requests"]
            assert requests.value == 7
            assert requests.attributes["db.system.name"] == "redis"
            assert requests.attributes["cache"] == "main"
            ops = {p.attributes["db.operation.name"]: p.value
                   for p in points["redis_cache.client.operations"]}
            assert ops == {"get": 7}
            (pending,) = points["db.client.connection.pending_requests"]
            assert pending.value == 0
            states = {p.attributes["redis_cache.circuit_breaker.state"]: p.value
                      for p in points["redis_cache.circuit_breaker.state"]}
            assert states["closed"] == 1
        provider.shutdown()

    run(main())


def test_latency_bounds_are_powers_of_two_microseconds() -> None:
    assert LATENCY_BOUNDS_SECONDS[0] == 1e-6
    assert all(math.isclose(b / a, 2) for a, b in zip(LATENCY_BOUNDS_SECONDS,
                                                     LATENCY_BOUNDS_SECONDS[1:]))
