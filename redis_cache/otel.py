"""OpenTelemetry instruments for a cache, fed from ``cache.metrics()``.

``pip install redis_cache[otel]`` (``opentelemetry-api``), then
``redis_cache.otel.instrument(cache)``. Every instrument is *observable*: the
SDK calls back at each collection and the callback reads the counters the C
core keeps anyway, so the hot path pays nothing for OpenTelemetry.

Names follow the semantic conventions for database clients where one fits
(``db.client.connection.count``, ``.pending_requests``, ``.timeouts``,
``.max``; attribute ``db.system.name="redis"``); the rest are under
``redis_cache.``. OpenTelemetry's API has no observable histogram, so the
per-operation latency is given as an operation count and a total time per
``db.operation.name`` (an average per export interval); the full histogram is
on ``/health/metrics`` (Prometheus) and in ``cache.metrics()``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["instrument"]

_SYSTEM = {"db.system.name": "redis"}
#: Callbacks of one collection share a snapshot taken at most this long ago.
_SNAPSHOT_TTL = 0.2

_CLIENT_COUNTERS = {
    "requests": "Requests sent to Redis (a batch is one).",
    "commands": "Redis commands the requests carried.",
    "replies": "Replies read from Redis.",
    "error_replies": "Error replies from Redis.",
    "timeouts": "Requests that failed with a timeout.",
    "connection_errors": "Requests that failed with a connection error.",
    "connects": "Connections opened.",
    "connect_failures": "Connection attempts that failed.",
    "pool_waits": "Calls that waited for a pooled connection.",
}


class _Snapshot:
    """cache.metrics(), taken once for all the callbacks of one collection."""

    def __init__(self, cache: Any) -> None:
        self._cache = cache
        self._lock = threading.Lock()
        self._taken = -float("inf")
        self._value: dict[str, Any] = {}

    def get(self) -> dict[str, Any]:
        with self._lock:
            now = time.monotonic()
            if now - self._taken > _SNAPSHOT_TTL:
                self._value = self._cache.metrics()
                self._taken = now
            return self._value


def instrument(cache: Any, *, meter_provider: Any = None,
               attributes: dict[str, str] | None = None) -> list[Any]:
    """Registers observable instruments for cache on meter_provider (the global
    one by default); returns them. ``attributes`` are added to every
    observation (a cache name, say, when a process has several caches).

    Raises ImportError with what to install when opentelemetry-api is missing."""
    try:
        from opentelemetry import metrics as otel_metrics
        from opentelemetry.metrics import CallbackOptions, Observation
    except ImportError as exc:  # pragma: no cover - exercised without the package
        raise ImportError(
            "redis_cache.otel needs opentelemetry-api: pip install 'redis_cache[otel]'"
        ) from exc

    provider = meter_provider if meter_provider is not None else otel_metrics.get_meter_provider()
    meter = provider.get_meter("redis_cache")
    snapshot = _Snapshot(cache)
    base = {**_SYSTEM, **(attributes or {})}

    def client() -> dict[str, Any]:
        return snapshot.get().get("client") or {}

    def from_client(field: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            value = client().get(field)
            return [] if value is None else [Observation(value, base)]
        return callback

    def per_operation(field: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(data[field], {**base, "db.operation.name": op})
                    for op, data in client().get("operations", {}).items()]
        return callback

    def pool_connections(options: CallbackOptions) -> Iterable[Observation]:
        c = client()
        if "pool_open" not in c:
            return []
        return [Observation(c["pool_idle"], {**base, "db.client.connection.state": "idle"}),
                Observation(c["pool_open"] - c["pool_idle"],
                            {**base, "db.client.connection.state": "used"})]

    def stats(kind: str, label: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            out = []
            for name, fields in (snapshot.get().get(kind) or {}).items():
                for field, value in fields.items():
                    out.append(Observation(value, {**base, label: name, "redis_cache.stat": field}))
            return out
        return callback

    def breaker(options: CallbackOptions) -> Iterable[Observation]:
        state = (snapshot.get().get("circuit_breaker") or {}).get("state")
        if state is None:
            return []
        return [Observation(int(state == s), {**base, "redis_cache.circuit_breaker.state": s})
                for s in ("closed", "open", "half-open")]

    made = [
        meter.create_observable_up_down_counter(
            "db.client.connection.pending_requests", [from_client("in_flight")],
            unit="{request}", description="Requests sent and not yet answered."),
        meter.create_observable_counter(
            "db.client.connection.timeouts", [from_client("pool_timeouts")],
            unit="{timeout}",
            description="Calls that gave up waiting for a pooled connection (sync)."),
        meter.create_observable_up_down_counter(
            "db.client.connection.count", [pool_connections], unit="{connection}",
            description="Pooled connections by state (sync)."),
        meter.create_observable_up_down_counter(
            "db.client.connection.max", [from_client("pool_max_size")], unit="{connection}",
            description="Most pooled connections allowed (sync)."),
        meter.create_observable_counter(
            "redis_cache.client.operations", [per_operation("calls")], unit="{operation}",
            description="Cache operations finished, per db.operation.name."),
        meter.create_observable_counter(
            "redis_cache.client.operation.errors", [per_operation("errors")],
            unit="{operation}", description="Cache operations that raised."),
        meter.create_observable_counter(
            "redis_cache.client.operation.time", [per_operation("sum_seconds")], unit="s",
            description="Total time of the operations (divide by operations: the mean)."),
        meter.create_observable_counter(
            "redis_cache.client.pool.wait_time", [from_client("pool_wait_seconds")], unit="s",
            description="Total time spent waiting for a pooled connection (sync)."),
        meter.create_observable_up_down_counter(
            "redis_cache.function.stats", [stats("functions", "code.function.name")],
            description="Decorated functions' counters (hits, misses, ...) by redis_cache.stat."),
        meter.create_observable_up_down_counter(
            "redis_cache.route.stats", [stats("routes", "http.route")],
            description="Cached routes' counters (hits, misses, ...) by redis_cache.stat."),
        meter.create_observable_up_down_counter(
            "redis_cache.circuit_breaker.state", [breaker],
            description="1 for the circuit breaker's current state, 0 for the others."),
    ]
    for field, description in _CLIENT_COUNTERS.items():
        made.append(meter.create_observable_counter(
            f"redis_cache.client.{field}", [from_client(field)], description=description))
    return made
