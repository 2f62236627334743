"""The health router: ``/health`` (a PING with a deadline) and ``/health/stats``."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import time
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response
from starlette.requests import HTTPConnection

from ._common import CacheNotConfiguredError, _configured_cache, _describe, logger

def parse_info(info: bytes | str) -> dict[str, str]:
    """The ``field: value`` pairs of an INFO reply (sections flattened)."""
    text = info.decode("utf-8", "replace") if isinstance(info, (bytes, bytearray)) else info
    fields: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition(":")
        if sep:
            fields[name] = value
    return fields


def _int_field(fields: Mapping[str, str], name: str) -> int | None:
    try:
        return int(fields[name])
    except (KeyError, ValueError):
        return None


async def _decorator_stats() -> tuple[bool, Any]:
    """(present, stats) from redis_cache.decorators.stats(), imported lazily."""
    try:
        module = importlib.import_module("redis_cache.decorators")
    except ImportError:
        return False, None
    stats = getattr(module, "stats", None)
    if not callable(stats):
        return False, None
    try:
        result = stats()
        if inspect.isawaitable(result):
            result = await result
        return True, jsonable_encoder(result)
    except Exception as exc:  # noqa: BLE001 - a broken stats() must not break /health/stats
        logger.warning("redis_cache.decorators.stats() failed: %r", exc)
        return True, {"error": f"{type(exc).__name__}: {exc}"}


def _info_summary(info: dict[str, str]) -> dict[str, Any]:
    hits = _int_field(info, "keyspace_hits")
    misses = _int_field(info, "keyspace_misses")
    lookups = (hits or 0) + (misses or 0)
    return {
        "version": info.get("redis_version"),
        "used_memory": _int_field(info, "used_memory"),
        "used_memory_human": info.get("used_memory_human"),
        "connected_clients": _int_field(info, "connected_clients"),
        "keyspace_hits": hits,
        "keyspace_misses": misses,
        "hit_rate": round(hits / lookups, 4) if hits is not None and lookups else None,
        "commands_processed": _int_field(info, "total_commands_processed"),
        "ops_per_second": _int_field(info, "instantaneous_ops_per_sec"),
        "uptime_seconds": _int_field(info, "uptime_in_seconds"),
        "evicted_keys": _int_field(info, "evicted_keys"),
        "role": info.get("role"),
    }


def _summed(nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """A cluster's figures: counts summed over its primaries."""

    def total(field: str) -> int | None:
        values = [n[field] for n in nodes]
        return None if any(v is None for v in values) else sum(values)

    hits, misses = total("keyspace_hits"), total("keyspace_misses")
    lookups = (hits or 0) + (misses or 0)
    used = total("used_memory")
    uptimes = [n["uptime_seconds"] for n in nodes]
    return {
        "version": nodes[0]["version"] if nodes else None,
        "used_memory": used,
        "used_memory_human": None if used is None else f"{used / 1048576:.2f}M",
        "connected_clients": total("connected_clients"),
        "keyspace_hits": hits,
        "keyspace_misses": misses,
        "hit_rate": round(hits / lookups, 4) if hits is not None and lookups else None,
        "commands_processed": total("commands_processed"),
        "ops_per_second": total("ops_per_second"),
        # The youngest node's: how long the cluster has been whole at least.
        "uptime_seconds": None if not uptimes or None in uptimes else min(uptimes),
        "evicted_keys": total("evicted_keys"),
    }


def health_router(
    prefix: str = "",
    *,
    timeout: float = 1.0,
    tags: list[str] | None = None,
    include_in_schema: bool = True,
) -> APIRouter:
    """An APIRouter with ``GET {prefix}/health``, ``{prefix}/health/stats`` and
    ``{prefix}/health/metrics``.

    ``/health``: 200 ``{"status": "up", "redis": "up", "latency_ms": 0.3}``, or
    503 with ``"down"`` when a PING does not succeed within ``timeout`` seconds.
    ``/health/stats``: the server's version, used memory, connected clients,
    keyspace hits, misses and hit rate, commands processed, operations per
    second, uptime, evicted keys (from INFO; on a cluster, summed over the
    primaries, uptime the youngest's, each one's under ``"nodes"``), and
    ``decorators``: this
    process's per-function stats when ``redis_cache.decorators`` has
    ``stats()``. ``/health/metrics``: ``cache.metrics()`` in the Prometheus
    text format (redis_cache.metrics.prometheus_text), no server round trip.
    All answer ``Cache-Control: no-store`` so no cache (nor CacheMiddleware)
    keeps them."""
    router = APIRouter(prefix=prefix, tags=list(tags) if tags is not None else ["health"])
    no_store = {"Cache-Control": "no-store"}

    def down(error: str) -> JSONResponse:
        return JSONResponse(
            {"status": "down", "redis": "down", "latency_ms": None, "error": error},
            status_code=503,
            headers=no_store,
        )

    @router.get("/health", include_in_schema=include_in_schema)
    async def health(request: HTTPConnection) -> JSONResponse:
        try:
            cache = _configured_cache(request)
        except CacheNotConfiguredError as exc:
            return down(str(exc))
        started = time.perf_counter()
        try:
            await asyncio.wait_for(cache.ping(), timeout)
        except asyncio.TimeoutError as exc:
            # Still waiting for a connection: say why the last attempt failed.
            reason = getattr(cache, "last_connect_error", None)
            return down(f"{_describe(exc)}: {reason}" if reason else _describe(exc))
        except Exception as exc:  # noqa: BLE001
            return down(_describe(exc))
        latency = (time.perf_counter() - started) * 1000
        return JSONResponse(
            {"status": "up", "redis": "up", "latency_ms": round(latency, 3)}, headers=no_store
        )

    @router.get("/health/stats", include_in_schema=include_in_schema)
    async def health_stats(request: HTTPConnection) -> JSONResponse:
        try:
            cache = _configured_cache(request)
        except CacheNotConfiguredError as exc:
            return down(str(exc))
        per_node = getattr(cache, "execute_on_primaries", None)
        try:
            if per_node is None:
                info = parse_info(await asyncio.wait_for(cache.execute_command("INFO"), timeout))
                redis_stats = _info_summary(info)
            else:
                # A cluster: every primary's figures, and their sums.
                replies = await asyncio.wait_for(per_node("INFO"), timeout)
                failed = {n: r for n, r in replies.items() if isinstance(r, BaseException)}
                if failed:
                    node, error = next(iter(failed.items()))
                    return down(f"{node}: {_describe(error)}")
                nodes = {node: _info_summary(parse_info(r)) for node, r in replies.items()}
                redis_stats = _summed(list(nodes.values()))
                redis_stats["nodes"] = nodes
        except Exception as exc:  # noqa: BLE001
            return down(_describe(exc))
        body: dict[str, Any] = {"status": "up", "redis": redis_stats}
        present, stats = await _decorator_stats()
        if present:
            body["decorators"] = stats
        return JSONResponse(body, headers=no_store)

    @router.get("/health/metrics", include_in_schema=include_in_schema)
    async def health_metrics(request: HTTPConnection) -> Response:
        from ..metrics import prometheus_text

        try:
            cache = _configured_cache(request)
        except CacheNotConfiguredError as exc:
            return down(str(exc))
        return Response(
            prometheus_text(cache.metrics()),
            media_type="text/plain; version=0.0.4; charset=utf-8",
            headers=no_store,
        )

    return router
