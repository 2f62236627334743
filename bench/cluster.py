"""Redis Cluster: redis_cache's cluster clients against the cluster clients of
redis-py, coredis and valkey-glide, side by side on one private cluster, and
against our own figures on one plain redis-server.

    .venv/bin/python bench/cluster.py [--rounds 5] [--seconds 0.3]
        [--primaries 3] [--replicas 1] [--clear-keys 100000] [--no-clear]

Scenarios (issue 12's list; the 114-byte JSON value of bench/tls.py, which
the peers store as its JSON text and read back with json.loads):

* GET, one caller: SyncRedisClusterCache vs redis-py RedisCluster (blocking);
  RedisClusterCache vs redis-py asyncio RedisCluster, coredis RedisCluster and
  valkey-glide GlideClusterClient (asyncio);
* GET, 100 coroutines in flight: the asyncio clients;
* get_many(100) and set_many(100), keys spread over the slots of every
  primary, blocking and asyncio (peers: redis-py ``mget_nonatomic`` /
  ``mset_nonatomic``, coredis ``mget`` / ``mset`` which split a cross-slot
  command by slot itself (``non_atomic_cross_slot``, on by default), glide
  ``mget`` / ``mset`` which split by slot in its Rust core), reported in keys/s;
* clear_pattern over --clear-keys keys (100k), one run per client: ours
  ``clear_pattern("*")`` in a namespace; redis-py (blocking and asyncio) the
  usual user approach, ``scan_iter(match=..., target_nodes=PRIMARIES)`` with
  UNLINK of every 1000 keys (redis-py splits UNLINK by slot); glide its
  cluster SCAN cursor and UNLINK; reported in keys/s.

GETs cycle through 100 keys spread over the slots, so the single caller and
the 100 coroutines reach every primary.  Our single-node clients
(RedisCache / SyncRedisCache on a private redis_cache.testing.RedisServer)
run the same calls in the same rounds; the last table divides our cluster
figure by our single-node figure (issue 12's target: within 20%, i.e. at
least 0.80).  On a machine with few cores the client, not the servers, is the
bottleneck, so this is the cost of routing, not a measure of scaling.

Rounds are interleaved across clients (order rotated each round); figures
are medians of calls/s (keys/s for batches), with the spread of the rounds.
A peer that cannot be imported or connected is reported as skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.machine import describe_machine  # noqa: E402
from bench.tls import TEXT, VALUE, timed_async, timed_sync  # noqa: E402
from redis_cache import RedisCache, RedisClusterCache, SyncRedisCache, SyncRedisClusterCache  # noqa: E402
from redis_cache._testing_cluster import ClusterTopology, key_slot  # noqa: E402
from redis_cache.testing import RedisServer  # noqa: E402

COROUTINES = 100
BATCH = 100
NAMESPACE = "bench"
CLEAR_NAMESPACE = "clearbench"
#: Keys per SCAN page and per UNLINK for the peers (redis_cache's own batch).
CLEAR_BATCH = 1000
#: Seconds glide waits for a reply (its default, 250 ms, would fail requests
#: queued behind 100 coroutines on a 2-core machine rather than measure them).
GLIDE_TIMEOUT_MS = 5000

# Keys as the caches name them (namespace-relative) and as stored (the peers' names).
GET_KEYS = [f"g{i}" for i in range(BATCH)]
MANY_KEYS = [f"m{i}" for i in range(BATCH)]
SET_KEYS = [f"s{i}" for i in range(BATCH)]
OURS_SET_MAPPING = {k: VALUE for k in SET_KEYS}


def stored(keys: list[str], namespace: str = NAMESPACE) -> list[str]:
    return [f"{namespace}:{k}" for k in keys]


PEER_SET_MAPPING = {k: TEXT for k in stored(SET_KEYS)}

SCENARIO_GET_SYNC = "GET, one caller, blocking"
SCENARIO_GET_ASYNC = "GET, one caller, asyncio"
SCENARIO_GET_100 = f"GET, {COROUTINES} coroutines, asyncio"
SCENARIO_GET_MANY_SYNC = f"get_many({BATCH}), blocking"
SCENARIO_GET_MANY_ASYNC = f"get_many({BATCH}), asyncio"
SCENARIO_SET_MANY_SYNC = f"set_many({BATCH}), blocking"
SCENARIO_SET_MANY_ASYNC = f"set_many({BATCH}), asyncio"
SCENARIO_CLEAR_SYNC = "clear_pattern, blocking"
SCENARIO_CLEAR_ASYNC = "clear_pattern, asyncio"
#: Scenarios measured in keys/s (calls/s times the keys per call).
KEYS_PER_CALL = {
    SCENARIO_GET_MANY_SYNC: BATCH,
    SCENARIO_GET_MANY_ASYNC: BATCH,
    SCENARIO_SET_MANY_SYNC: BATCH,
    SCENARIO_SET_MANY_ASYNC: BATCH,
}
ORDER = [
    SCENARIO_GET_SYNC, SCENARIO_GET_ASYNC, SCENARIO_GET_100,
    SCENARIO_GET_MANY_SYNC, SCENARIO_GET_MANY_ASYNC,
    SCENARIO_SET_MANY_SYNC, SCENARIO_SET_MANY_ASYNC,
    SCENARIO_CLEAR_SYNC, SCENARIO_CLEAR_ASYNC,
]

OURS_SYNC = "redis_cache SyncRedisClusterCache"
OURS_SYNC_SINGLE = "redis_cache SyncRedisCache, single node"
OURS_ASYNC = "redis_cache RedisClusterCache"
OURS_ASYNC_SINGLE = "redis_cache RedisCache, single node"
REDIS_PY_SYNC = "redis-py RedisCluster"
REDIS_PY_ASYNC = "redis-py asyncio RedisCluster"
COREDIS = "coredis RedisCluster"
GLIDE = "valkey-glide GlideClusterClient"

SyncOps = dict[str, Callable[[], Any]]
AsyncOps = dict[str, Callable[[], Awaitable[Any]]]


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _why(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160]}" if text else type(exc).__name__


def _cycle_of(keys: list[str]) -> Callable[[], str]:
    return itertools.cycle(keys).__next__


# --------------------------------------------------------------------- clients


def ours_sync_ops(cache: SyncRedisCache) -> SyncOps:
    next_key = _cycle_of(GET_KEYS)
    mapping = OURS_SET_MAPPING
    return {
        SCENARIO_GET_SYNC: lambda: cache.get(next_key()),
        SCENARIO_GET_MANY_SYNC: lambda: cache.get_many(MANY_KEYS),
        SCENARIO_SET_MANY_SYNC: lambda: cache.set_many(mapping),
    }


def redis_py_sync_ops(client: Any) -> SyncOps:
    loads = json.loads
    next_key = _cycle_of(stored(GET_KEYS))
    many = stored(MANY_KEYS)
    mapping = PEER_SET_MAPPING

    def get_many() -> Any:
        values = client.mget_nonatomic(many)
        return {k: loads(v) for k, v in zip(many, values) if v is not None}

    return {
        SCENARIO_GET_SYNC: lambda: loads(client.get(next_key())),
        SCENARIO_GET_MANY_SYNC: get_many,
        SCENARIO_SET_MANY_SYNC: lambda: client.mset_nonatomic(mapping),
    }


def ours_async_ops(cache: RedisCache) -> AsyncOps:
    next_key = _cycle_of(GET_KEYS)
    next_key_100 = _cycle_of(GET_KEYS)
    mapping = OURS_SET_MAPPING
    return {
        SCENARIO_GET_ASYNC: lambda: cache.get(next_key()),
        SCENARIO_GET_100: lambda: cache.get(next_key_100()),
        SCENARIO_GET_MANY_ASYNC: lambda: cache.get_many(MANY_KEYS),
        SCENARIO_SET_MANY_ASYNC: lambda: cache.set_many(mapping),
    }


def peer_async_ops(
    get: Callable[[str], Awaitable[Any]],
    mget: Callable[[list[str]], Awaitable[Any]],
    mset: Callable[[dict[str, str]], Awaitable[Any]],
) -> AsyncOps:
    """The same four calls for every asyncio peer, json.loads around the reads."""
    loads = json.loads
    next_key = _cycle_of(stored(GET_KEYS))
    next_key_100 = _cycle_of(stored(GET_KEYS))
    many = stored(MANY_KEYS)
    mapping = PEER_SET_MAPPING

    async def get_one() -> Any:
        return loads(await get(next_key()))

    async def get_100() -> Any:
        return loads(await get(next_key_100()))

    async def get_many() -> Any:
        values = await mget(many)
        return {k: loads(v) for k, v in zip(many, values) if v is not None}

    async def set_many() -> Any:
        return await mset(mapping)

    return {
        SCENARIO_GET_ASYNC: get_one,
        SCENARIO_GET_100: get_100,
        SCENARIO_GET_MANY_ASYNC: get_many,
        SCENARIO_SET_MANY_ASYNC: set_many,
    }


class CoredisHolder:
    """coredis 6 (on anyio) must be entered with ``async with`` in the task that
    later leaves it, so a background task holds the client open (as in
    bench/adapters.py); coredis 5 has nothing to enter."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        if not hasattr(self.client, "__aenter__"):
            # coredis 5: nothing to enter (its cross-slot MGET/MSET then fail
            # with "Unable to map slots", which the tables report).
            return
        ready = asyncio.Event()

        async def hold() -> None:
            async with self.client:
                ready.set()
                await self._stop.wait()

        self._task = asyncio.ensure_future(hold())
        waiter = asyncio.ensure_future(ready.wait())
        await asyncio.wait({self._task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.is_set():
            waiter.cancel()
            await self._task  # raises what made entering fail

    async def close(self) -> None:
        if self._task is not None:
            self._stop.set()
            await self._task


# ------------------------------------------------------------------ clear_pattern


def fill_clear_keys(filler: SyncRedisClusterCache, count: int) -> None:
    """``count`` keys in CLEAR_NAMESPACE, written 1000 at a time."""
    for start in range(0, count, CLEAR_BATCH):
        filler.set_many({f"c{i}": VALUE for i in range(start, min(start + CLEAR_BATCH, count))})


def redis_py_clear_sync(client: Any) -> int:
    from redis.cluster import RedisCluster

    removed, batch = 0, []
    for key in client.scan_iter(match=f"{CLEAR_NAMESPACE}:*", count=CLEAR_BATCH,
                                target_nodes=RedisCluster.PRIMARIES):
        batch.append(key)
        if len(batch) >= CLEAR_BATCH:
            removed += client.unlink(*batch)
            batch = []
    if batch:
        removed += client.unlink(*batch)
    return removed


async def redis_py_clear_async(client: Any) -> int:
    from redis.asyncio.cluster import RedisCluster

    removed, batch = 0, []
    async for key in client.scan_iter(match=f"{CLEAR_NAMESPACE}:*", count=CLEAR_BATCH,
                                      target_nodes=RedisCluster.PRIMARIES):
        batch.append(key)
        if len(batch) >= CLEAR_BATCH:
            removed += await client.unlink(*batch)
            batch = []
    if batch:
        removed += await client.unlink(*batch)
    return removed


async def glide_clear(client: Any) -> int:
    from glide import ClusterScanCursor

    removed, cursor = 0, ClusterScanCursor()
    while not cursor.is_finished():
        cursor, keys = await client.scan(cursor, match=f"{CLEAR_NAMESPACE}:*", count=CLEAR_BATCH)
        if keys:
            removed += await client.unlink(keys)
    return removed


# ------------------------------------------------------------------------ run


class Results:
    def __init__(self) -> None:
        self.rates: dict[tuple[str, str], list[float]] = {}
        self.skipped: dict[str, str] = {}  # client -> why
        self.failed: dict[tuple[str, str], str] = {}  # (scenario, client) -> why
        self.notes: list[str] = []
        self.clients: dict[str, str] = {}  # client -> description

    def note(self, scenario: str, client: str, rate: float) -> None:
        self.rates.setdefault((scenario, client), []).append(rate * KEYS_PER_CALL.get(scenario, 1))

    def skip(self, client: str, exc: BaseException | str) -> None:
        why = exc if isinstance(exc, str) else _why(exc)
        self.skipped[client] = why
        print(f"{client}: skipped: {why}", file=sys.stderr)

    def fail(self, scenario: str, client: str, exc: BaseException) -> None:
        self.failed[(scenario, client)] = _why(exc)
        print(f"{scenario} | {client}: failed: {_why(exc)}", file=sys.stderr)


def rotated(names: list[str], round_: int) -> list[str]:
    if not names:
        return names
    shift = round_ % len(names)
    return names[shift:] + names[:shift]


def seed(cache: SyncRedisCache) -> None:
    cache.set_many({k: VALUE for k in GET_KEYS + MANY_KEYS})


def run_sync(args: argparse.Namespace, cluster: ClusterTopology, server: RedisServer,
             results: Results) -> None:
    clients: dict[str, tuple[SyncOps, Any]] = {}
    ours = SyncRedisClusterCache(cluster_nodes=cluster.seed_addresses, namespace=NAMESPACE)
    seed(ours)
    clients[OURS_SYNC] = (ours_sync_ops(ours), ours)
    results.clients[OURS_SYNC] = f"redis_cache {_version('redis-native-cache')}, defaults"
    single = SyncRedisCache(host="127.0.0.1", port=server.port, namespace=NAMESPACE)
    seed(single)
    clients[OURS_SYNC_SINGLE] = (ours_sync_ops(single), single)
    results.clients[OURS_SYNC_SINGLE] = "the same, on one plain redis-server"
    try:
        from redis.cluster import ClusterNode, RedisCluster

        peer = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in cluster.seed_addresses])
        peer.ping(target_nodes=RedisCluster.PRIMARIES)
        clients[REDIS_PY_SYNC] = (redis_py_sync_ops(peer), peer)
        results.clients[REDIS_PY_SYNC] = f"redis-py {_version('redis')}, defaults, hiredis {_version('hiredis')}"
    except Exception as exc:  # noqa: BLE001 - a peer that cannot run is reported, not fatal
        results.skip(REDIS_PY_SYNC, exc)

    for round_ in range(args.rounds):
        for name in rotated(list(clients), round_):
            ops, _ = clients[name]
            for scenario, call in ops.items():
                if (scenario, name) in results.failed:
                    continue
                try:
                    results.note(scenario, name, timed_sync(call, args.seconds))
                except Exception as exc:  # noqa: BLE001
                    results.fail(scenario, name, exc)

    if not args.no_clear:
        clear_runs: dict[str, Callable[[], int]] = {}
        clear_ours = SyncRedisClusterCache(cluster_nodes=cluster.seed_addresses, namespace=CLEAR_NAMESPACE)
        clear_runs[OURS_SYNC] = lambda: clear_ours.clear_pattern("*")
        if REDIS_PY_SYNC in clients:
            peer = clients[REDIS_PY_SYNC][1]
            clear_runs[REDIS_PY_SYNC] = lambda: redis_py_clear_sync(peer)
        for name, run in clear_runs.items():
            timed_clear(SCENARIO_CLEAR_SYNC, name, run, clear_ours, args.clear_keys, results)
        clear_ours.close()

    for _, client in clients.values():
        client.close()


def timed_clear(scenario: str, name: str, run: Callable[[], int], filler: SyncRedisClusterCache,
                count: int, results: Results) -> None:
    fill_clear_keys(filler, count)
    try:
        start = time.perf_counter()
        removed = run()
        elapsed = time.perf_counter() - start
    except Exception as exc:  # noqa: BLE001
        results.fail(scenario, name, exc)
        return
    results.rates.setdefault((scenario, name), []).append(removed / elapsed)
    if removed != count:
        results.notes.append(f"{scenario} | {name}: removed {removed:,} of {count:,} keys")


async def timed_clear_async(scenario: str, name: str, run: Callable[[], Awaitable[int]],
                            filler: SyncRedisClusterCache, count: int, results: Results) -> None:
    fill_clear_keys(filler, count)
    try:
        start = time.perf_counter()
        removed = await run()
        elapsed = time.perf_counter() - start
    except Exception as exc:  # noqa: BLE001
        results.fail(scenario, name, exc)
        return
    results.rates.setdefault((scenario, name), []).append(removed / elapsed)
    if removed != count:
        results.notes.append(f"{scenario} | {name}: removed {removed:,} of {count:,} keys")


async def run_async(args: argparse.Namespace, cluster: ClusterTopology, server: RedisServer,
                    results: Results) -> None:
    seeds = cluster.seed_addresses
    clients: dict[str, AsyncOps] = {}
    closers: list[Callable[[], Awaitable[Any]]] = []

    ours = RedisClusterCache(cluster_nodes=seeds, namespace=NAMESPACE)
    clients[OURS_ASYNC] = ours_async_ops(ours)
    closers.append(ours.close)
    results.clients[OURS_ASYNC] = f"redis_cache {_version('redis-native-cache')}, defaults"
    single = RedisCache(host="127.0.0.1", port=server.port, namespace=NAMESPACE)
    clients[OURS_ASYNC_SINGLE] = ours_async_ops(single)
    closers.append(single.close)
    results.clients[OURS_ASYNC_SINGLE] = "the same, on one plain redis-server"

    redis_py = None
    try:
        from redis.asyncio.cluster import ClusterNode, RedisCluster

        redis_py = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in seeds])
        await redis_py.initialize()
        clients[REDIS_PY_ASYNC] = peer_async_ops(redis_py.get, redis_py.mget_nonatomic,
                                                 redis_py.mset_nonatomic)
        closers.append(redis_py.aclose)
        results.clients[REDIS_PY_ASYNC] = f"redis-py {_version('redis')}, defaults"
    except Exception as exc:  # noqa: BLE001
        redis_py = None
        results.skip(REDIS_PY_ASYNC, exc)

    try:
        import coredis

        holder = CoredisHolder(coredis.RedisCluster(startup_nodes=[{"host": h, "port": p} for h, p in seeds]))
        await holder.open()
        client = holder.client
        clients[COREDIS] = peer_async_ops(client.get, client.mget, client.mset)
        closers.append(holder.close)
        results.clients[COREDIS] = (f"coredis {_version('coredis')}, defaults (non_atomic_cross_slot: "
                                    "MGET/MSET split by slot)")
    except Exception as exc:  # noqa: BLE001
        results.skip(COREDIS, exc)

    glide_client = None
    try:
        from glide import GlideClusterClient, GlideClusterClientConfiguration, NodeAddress

        config = GlideClusterClientConfiguration([NodeAddress(h, p) for h, p in seeds],
                                                 request_timeout=GLIDE_TIMEOUT_MS)
        glide_client = await GlideClusterClient.create(config)
        clients[GLIDE] = peer_async_ops(glide_client.get, glide_client.mget, glide_client.mset)
        closers.append(glide_client.close)
        results.clients[GLIDE] = (f"valkey-glide {_version('valkey-glide')}, request_timeout="
                                  f"{GLIDE_TIMEOUT_MS} ms")
    except Exception as exc:  # noqa: BLE001
        glide_client = None
        results.skip(GLIDE, exc)

    for round_ in range(args.rounds):
        for name in rotated(list(clients), round_):
            for scenario, call in clients[name].items():
                if (scenario, name) in results.failed:
                    continue
                width = COROUTINES if scenario == SCENARIO_GET_100 else 1
                try:
                    results.note(scenario, name, await timed_async(call, args.seconds, width))
                except Exception as exc:  # noqa: BLE001
                    results.fail(scenario, name, exc)

    if not args.no_clear:
        filler = SyncRedisClusterCache(cluster_nodes=seeds, namespace=CLEAR_NAMESPACE)
        clear_ours = RedisClusterCache(cluster_nodes=seeds, namespace=CLEAR_NAMESPACE)
        runs: dict[str, Callable[[], Awaitable[int]]] = {OURS_ASYNC: lambda: clear_ours.clear_pattern("*")}
        if redis_py is not None:
            runs[REDIS_PY_ASYNC] = lambda: redis_py_clear_async(redis_py)
        if glide_client is not None:
            runs[GLIDE] = lambda: glide_clear(glide_client)
        for name, run in runs.items():
            await timed_clear_async(SCENARIO_CLEAR_ASYNC, name, run, filler, args.clear_keys, results)
        await clear_ours.close()
        filler.close()

    for close in closers:
        try:
            await close()
        except Exception as exc:  # noqa: BLE001
            print(f"closing a client failed: {_why(exc)}", file=sys.stderr)


# --------------------------------------------------------------------- report


def spread_of(values: list[float]) -> str:
    med = statistics.median(values)
    return f"{min(values):,.0f}-{max(values):,.0f} ({(max(values) - min(values)) / med * 100:.0f}%)"


def report(args: argparse.Namespace, results: Results, cluster_desc: str) -> None:
    print("| | |\n|---|---|")
    for fact, value in describe_machine().items():
        print(f"| {fact} | {value} |")
    for package in ("coredis", "valkey-glide", "uvloop"):
        print(f"| {package} | {_version(package)} |")
    print(f"| cluster | {cluster_desc} |")
    print(f"\nMedians of {args.rounds} interleaved rounds of ~{args.seconds} s; spread = min-max "
          "(and (max - min) / median). clear_pattern: one run per client over "
          f"{args.clear_keys:,} keys.\n")
    print("Clients:\n")
    for name, desc in results.clients.items():
        print(f"* {name}: {desc}")
    for name, why in results.skipped.items():
        print(f"* {name}: skipped: {why}")
    print()

    for scenario in ORDER:
        rows = {client: values for (s, client), values in results.rates.items() if s == scenario}
        failed = {client: why for (s, client), why in results.failed.items() if s == scenario}
        if not rows and not failed:
            continue
        is_sync = scenario.endswith("blocking")
        ours = OURS_SYNC if is_sync else OURS_ASYNC
        unit = "keys/s" if scenario in KEYS_PER_CALL or scenario.startswith("clear_pattern") else "calls/s"
        print(f"#### {scenario}\n")
        print(f"| client | {unit} | spread | {ours.split()[-1]} ÷ this |")
        print("|---|---|---|---|")
        best = statistics.median(rows[ours]) if ours in rows else None
        for name, values in rows.items():
            med = statistics.median(values)
            ratio = f"{best / med:.2f}x" if best is not None else "n/a"
            print(f"| {name} | {med:,.0f} | {spread_of(values)} | {ratio} |")
        for name, why in failed.items():
            print(f"| {name} | failed: {why} | | |")
        for name, why in results.skipped.items():
            if (name == REDIS_PY_SYNC) == is_sync:
                print(f"| {name} | skipped: {why} | | |")
        print()

    print("#### Cluster ÷ single node (redis_cache; issue 12 target: at least 0.80)\n")
    print("| scenario | cluster | single node | cluster ÷ single | target met |")
    print("|---|---|---|---|---|")
    for scenario in ORDER:
        is_sync = scenario.endswith("blocking")
        clustered = results.rates.get((scenario, OURS_SYNC if is_sync else OURS_ASYNC))
        alone = results.rates.get((scenario, OURS_SYNC_SINGLE if is_sync else OURS_ASYNC_SINGLE))
        if not clustered or not alone:
            continue
        c, s = statistics.median(clustered), statistics.median(alone)
        target = "yes" if c / s >= 0.8 else "no"
        if scenario not in (SCENARIO_GET_100, SCENARIO_GET_MANY_ASYNC):
            target += " (not a target)"
        print(f"| {scenario} | {c:,.0f} | {s:,.0f} | {c / s:.2f} | {target} |")
    print()
    for line in results.notes:
        print(f"Note: {line}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.3)
    parser.add_argument("--primaries", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=1, help="replicas per primary")
    parser.add_argument("--clear-keys", type=int, default=100_000,
                        help="keys each clear_pattern run deletes")
    parser.add_argument("--no-clear", action="store_true", help="skip the clear_pattern scenario")
    args = parser.parse_args(argv)
    results = Results()

    # The keys must reach every primary, or the cluster figures measure one node.
    ranges = [(i * 16384 // args.primaries, (i + 1) * 16384 // args.primaries)
              for i in range(args.primaries)]
    for keys in (GET_KEYS, MANY_KEYS, SET_KEYS):
        slots = {key_slot(k) for k in stored(keys)}
        assert all(any(lo <= s < hi for s in slots) for lo, hi in ranges), "keys miss a primary"

    with RedisServer() as server, ClusterTopology(primaries=args.primaries,
                                                  replicas_per_primary=args.replicas) as cluster:
        cluster_desc = (f"{args.primaries} primaries, {args.replicas} replica(s) each, "
                        f"private redis-server processes ({cluster.url})")
        run_sync(args, cluster, server, results)
        asyncio.run(run_async(args, cluster, server, results))

    report(args, results, cluster_desc)


if __name__ == "__main__":
    main()
