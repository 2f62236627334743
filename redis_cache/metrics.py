"""Metrics: what the C core counts, what the cache layer counts, and two ways out.

* ``cache.metrics()`` gives one dict: ``client`` (the connections' counters
  and per-operation latency histograms, kept in C: see csrc/metrics.h; on a
  cluster summed over the node clients, each one's under ``nodes``),
  ``functions`` (every counter of each decorated function's
  :class:`~redis_cache.decorators.FunctionStats`, read generically so that
  counters added later appear by themselves), ``routes`` (the same per cached
  HTTP route) and ``circuit_breaker``.
* :func:`prometheus_text` renders such a dict in the Prometheus text
  exposition format (``/health/metrics`` on ``health_router()``), written by
  hand: no client library needed.
* :mod:`redis_cache.otel` registers OpenTelemetry observable instruments fed
  from the same snapshot.

Everything here reads snapshots: the hot path only bumps integers in C.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "LATENCY_BOUNDS_SECONDS",
    "cache_metrics",
    "client_metrics",
    "function_metrics",
    "merge_client_metrics",
    "prometheus_text",
    "route_metrics",
    "route_stats",
]

#: Upper bounds of the latency buckets (seconds): 2**i microseconds, i = 0..24;
#: a last bucket holds the rest (+Inf).
LATENCY_BOUNDS_SECONDS: tuple[float, ...] = tuple((1 << i) / 1e6 for i in range(25))

# Snapshot fields that are not summed when merging clients.
_NOT_SUMMED = ("latency_bounds_us", "operations")


def _empty_operation() -> dict[str, Any]:
    return {"calls": 0, "errors": 0, "sum_seconds": 0.0,
            "buckets": [0] * (len(LATENCY_BOUNDS_SECONDS) + 1)}


def merge_client_metrics(snapshots: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Client snapshots (``_metrics()``) summed: counters added, histograms
    merged bucket by bucket (they share their bounds)."""
    merged: dict[str, Any] = {}
    operations: dict[str, dict[str, Any]] = {}
    for snap in snapshots:
        for name, value in snap.items():
            if name in _NOT_SUMMED:
                continue
            merged[name] = merged.get(name, 0) + value
        for op, data in snap.get("operations", {}).items():
            into = operations.setdefault(op, _empty_operation())
            into["calls"] += data["calls"]
            into["errors"] += data["errors"]
            into["sum_seconds"] += data["sum_seconds"]
            into["buckets"] = [a + b for a, b in zip(into["buckets"], data["buckets"])]
    merged["operations"] = operations
    return merged


def _node_clients(cache: Any) -> dict[str, Any]:
    """A cluster cache's node clients by "host:port" (empty for a single node)."""
    cluster_map = getattr(cache, "_map", None)
    if cluster_map is None:
        return {}
    nodes: dict[str, Any] = {}
    for kind in (cluster_map.clients, cluster_map.ask_clients):
        for (host, port), client in list(kind.items()):
            nodes.setdefault(f"{host}:{port}", []).append(client)
    return nodes


def _snapshots(cache: Any, per_node: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The snapshots of cache's own client and (cluster) node clients; the
    node ones also go into per_node by address."""
    own = cache._metrics()
    snapshots = [] if own is None else [own]
    for address, clients in _node_clients(cache).items():
        node_snaps = [s for s in (c._metrics() for c in clients) if s is not None]
        per_node.setdefault(address, []).extend(node_snaps)
        snapshots.extend(node_snaps)
    return snapshots


def client_metrics(cache: Any) -> dict[str, Any] | None:
    """The C counters of the cache's connections; None with ``metrics=False``.

    Counted: the cache's own client, the twin a decorator made for functions
    of the other kind (sync for an async cache), and on a cluster every node
    client (also under ``nodes``, by address)."""
    if cache._metrics() is None:
        return None
    per_node: dict[str, list[dict[str, Any]]] = {}
    snapshots = _snapshots(cache, per_node)
    for twin in list(getattr(cache, "__dict__", {}).get("_twins", {}).values()):
        if twin is not cache:
            snapshots.extend(_snapshots(twin, per_node))
    merged = merge_client_metrics(snapshots)
    if per_node:
        merged["nodes"] = {address: merge_client_metrics(snaps)
                           for address, snaps in sorted(per_node.items())}
    return merged


def _stats_dict(stats: Any) -> dict[str, float | int]:
    """Every public numeric field of a FunctionStats, plus its derived rates."""
    out: dict[str, float | int] = {}
    for f in dataclasses.fields(stats):
        if f.name.startswith("_") or f.name == "name":
            continue
        value = getattr(stats, f.name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f.name] = value
    for derived in ("hit_rate", "time_saved_seconds"):
        value = getattr(stats, derived, None)
        if isinstance(value, (int, float)):
            out[derived] = value
    return out


def function_metrics() -> dict[str, dict[str, float | int]]:
    """Per decorated function (qualified name): all its counters, this process."""
    from .decorators import _stats

    return {name: _stats_dict(s) for name, s in sorted(list(_stats.items()))}


_routes: dict[str, Any] = {}
_routes_lock = threading.Lock()
#: At most this many routes get their own counters; later ones share "other"
#: (a route label must never be unbounded, or the metrics grow with traffic).
MAX_ROUTES = 1000


def route_stats(route: str) -> Any:
    """The FunctionStats of an HTTP route (its path template), made on first use."""
    stats = _routes.get(route)
    if stats is None:
        from .decorators import FunctionStats

        with _routes_lock:
            if route not in _routes and len(_routes) >= MAX_ROUTES:
                route = "other"
            stats = _routes.setdefault(route, FunctionStats(route))
    return stats


def route_metrics() -> dict[str, dict[str, float | int]]:
    """Per cached HTTP route (path template): hits, misses, errors..."""
    return {name: _stats_dict(s) for name, s in sorted(list(_routes.items()))}


def _breaker_metrics(cache: Any) -> dict[str, Any] | None:
    breaker = getattr(cache, "_circuit_breaker", None)
    if breaker is None:
        return None
    return {"state": breaker.state, "failures": breaker._failures,
            "failure_threshold": breaker.failure_threshold}


def cache_metrics(cache: Any) -> dict[str, Any]:
    """What ``cache.metrics()`` returns; see the module's docstring."""
    return {
        "client": client_metrics(cache),
        "functions": function_metrics(),
        "routes": route_metrics(),
        "circuit_breaker": _breaker_metrics(cache),
    }


# ---------------------------------------------------------------- Prometheus

_CLIENT_COUNTERS = {
    "requests": "Requests sent to Redis (one per cache call; a batch is one).",
    "commands": "Redis commands those requests carried.",
    "replies": "Replies read from Redis.",
    "error_replies": "Error replies from Redis (-ERR and the like).",
    "timeouts": "Requests that failed with a timeout.",
    "connection_errors": "Requests that failed with a connection error.",
    "connects": "Connections opened.",
    "connect_failures": "Connection attempts that failed.",
    "pool_waits": "Calls that waited for a pooled connection (sync).",
    "pool_wait_seconds": "Total time spent waiting for a pooled connection (sync).",
    "pool_timeouts": "Calls that gave up waiting for a pooled connection (sync).",
}
_CLIENT_GAUGES = {
    "in_flight": "Requests sent and not yet answered.",
    "pool_open": "Pooled connections open (sync).",
    "pool_idle": "Pooled connections idle (sync).",
}
_BREAKER_STATES = ("closed", "open", "half-open")


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float | int) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items()) + "}"


class _Writer:
    """Exposition lines, each family's HELP and TYPE once, before its samples."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.families: set[str] = set()

    def family(self, name: str, kind: str, help_text: str) -> None:
        if name not in self.families:
            self.families.add(name)
            self.lines.append(f"# HELP {name} {_escape_help(help_text)}")
            self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float | int,
               labels: Mapping[str, str] | None = None) -> None:
        self.lines.append(f"{name}{_labels(labels or {})} {_number(value)}")


def _metric_name(text: str) -> str:
    """A field name as a metric name part ([a-zA-Z0-9_] only)."""
    return "".join(c if c.isalnum() or c == "_" else "_" for c in text)


def _write_stats(w: _Writer, kind: str, label: str,
                 entries: Mapping[str, Mapping[str, float | int]]) -> None:
    """Per-function (or per-route) counters: one family per field. Rates are
    gauges; everything else only grows, so it is a counter."""
    families: dict[str, list[tuple[str, float | int]]] = {}
    for name, fields in entries.items():
        for field, value in fields.items():
            families.setdefault(field, []).append((name, value))
    for field, samples in sorted(families.items()):
        base = f"redis_cache_{kind}_{_metric_name(field)}"
        if field in ("hit_rate", "time_saved_seconds"):
            w.family(base, "gauge", f"{field} per {label} (derived).")
            for name, value in samples:
                w.sample(base, value, {label: name})
        else:
            w.family(base + "_total", "counter", f"{field} per {label}.")
            for name, value in samples:
                w.sample(base + "_total", value, {label: name})


def prometheus_text(metrics: Mapping[str, Any]) -> str:
    """``cache.metrics()`` in the Prometheus text exposition format (0.0.4):
    counters carry their ``_total`` name in HELP and TYPE, as that format
    wants."""
    w = _Writer()
    client = metrics.get("client")
    if client is not None:
        for field, help_text in _CLIENT_COUNTERS.items():
            if field in client:
                name = f"redis_cache_client_{field}_total"
                w.family(name, "counter", help_text)
                w.sample(name, client[field])
        for field, help_text in _CLIENT_GAUGES.items():
            if field in client:
                name = f"redis_cache_client_{field}"
                w.family(name, "gauge", help_text)
                w.sample(name, client[field])
        name = "redis_cache_client_operation_duration_seconds"
        w.family(name, "histogram",
                 "Time from a request's submission to its reply, per cache operation.")
        for op, data in sorted(client.get("operations", {}).items()):
            cumulative = 0
            for bound, count in zip(LATENCY_BOUNDS_SECONDS, data["buckets"]):
                cumulative += count
                w.sample(name + "_bucket", cumulative, {"operation": op, "le": repr(bound)})
            cumulative += data["buckets"][-1]
            w.sample(name + "_bucket", cumulative, {"operation": op, "le": "+Inf"})
            w.sample(name + "_sum", data["sum_seconds"], {"operation": op})
            w.sample(name + "_count", cumulative, {"operation": op})
        nodes = client.get("nodes") or {}
        for field in ("requests", "error_replies", "timeouts", "connection_errors",
                      "connect_failures", "in_flight"):
            counter = field != "in_flight"
            name = f"redis_cache_node_{field}" + ("_total" if counter else "")
            if nodes:
                what = _CLIENT_COUNTERS.get(field) or _CLIENT_GAUGES[field]
                w.family(name, "counter" if counter else "gauge", f"Per cluster node: {what}")
            for address, snap in nodes.items():
                w.sample(name, snap.get(field, 0), {"node": address})
        name = "redis_cache_client_operation_errors_total"
        w.family(name, "counter", "Cache operations that raised, per operation.")
        for op, data in sorted(client.get("operations", {}).items()):
            w.sample(name, data["errors"], {"operation": op})
    _write_stats(w, "function", "function", metrics.get("functions") or {})
    _write_stats(w, "route", "route", metrics.get("routes") or {})
    breaker = metrics.get("circuit_breaker")
    if breaker is not None:
        name = "redis_cache_circuit_breaker_state"
        w.family(name, "gauge", "1 for the circuit breaker's current state, 0 for the others.")
        for state in _BREAKER_STATES:
            w.sample(name, int(breaker["state"] == state), {"state": state})
        name = "redis_cache_circuit_breaker_failures"
        w.family(name, "gauge", "Failures in a row counted by the circuit breaker.")
        w.sample(name, breaker["failures"])
    return "\n".join(w.lines) + "\n"
