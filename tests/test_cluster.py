"""The cache on a Redis Cluster: routing by slot, batches split by node,
redirects (MOVED, ASK) followed during migrations, failovers survived, TLS,
passwords, and the decorators on top. Real clusters from the session's
fixtures (tests/conftest.py): 3 primaries with a replica each.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from typing import Any

import pytest
from async_support import Runner, run  # noqa: F401
from conftest import PASSWORD

from redis_cache import (
    AuthenticationError,
    ClusterError,
    ConfigurationError,
    ConnectionError,
    FailoverError,
    RedisCache,
    RedisClusterCache,
    SyncRedisCache,
    SyncRedisClusterCache,
    TimeoutError,
    cached,
    cached_batch,
)
from redis_cache._config import settings_from_env
from redis_cache._testing_cluster import ClusterTopology, key_slot
from redis_cache._testing_tls import TLSCertificates
from redis_cache.cluster import key_slot as our_key_slot

#: What a command may fail with while a shard's primary changes under it.
SWITCHOVER_ERRORS = (ConnectionError, TimeoutError, FailoverError, ClusterError)


def nodes_of(cluster: ClusterTopology) -> list[tuple[str, int]]:
    return list(cluster.seed_addresses)


def stored_on(cluster: ClusterTopology, raw_key: str) -> bool:
    """Whether the node that owns raw_key's slot holds it (asked directly)."""
    return cluster.owner(raw_key).command("EXISTS", raw_key) == 1


def keys_in_distinct_slots(n: int, prefix: str = "k") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


# ---------------------------------------------------------------- configuration


def test_key_slot_agrees_with_the_server(healthy_client_cluster: ClusterTopology) -> None:
    node = healthy_client_cluster.primaries()[0]
    samples = ["foo", "{user1000}.following", "a{}b", "{}{x}", "{x", "abc}{d}", "héllo", "x" * 300]
    for key in samples:
        assert our_key_slot(key) == node.command("CLUSTER", "KEYSLOT", key) == key_slot(key), key
    # The namespace is part of the key: a cache computes slots for ns:key.
    with SyncRedisClusterCache(nodes_of(healthy_client_cluster), namespace="app") as cache:
        for key in ("plain", "user:{42}:name", "{tag}"):
            assert cache._key_slot(key) == node.command("CLUSTER", "KEYSLOT", f"app:{key}")


def test_urls_and_environment_make_cluster_caches(run: Runner, healthy_client_cluster: ClusterTopology) -> None:
    url = healthy_client_cluster.url
    with SyncRedisCache.from_url(url) as cache:
        assert isinstance(cache, SyncRedisClusterCache)
        assert cache.set("via-url", 1) is True
    env = {
        "REDIS_USE_CLUSTERS": "true",
        "REDIS_CLUSTERS": ",".join(f"{h}:{p}" for h, p in nodes_of(healthy_client_cluster)),
    }
    assert settings_from_env(env)["cluster_nodes"] == tuple(nodes_of(healthy_client_cluster))

    async def main() -> None:
        async with RedisCache.from_env(env) as cache:
            assert isinstance(cache, RedisClusterCache)
            assert await cache.get("via-url") == 1

    run(main())
    with pytest.raises(ConfigurationError, match="only database 0"):
        SyncRedisCache.from_url(url + "/2")
    with pytest.raises(ConfigurationError, match="REDIS_CLUSTERS is empty"):
        settings_from_env({"REDIS_USE_CLUSTERS": "1"})
    with pytest.raises(ConfigurationError, match="cluster_nodes is required"):
        SyncRedisClusterCache()
    with pytest.raises(ConfigurationError, match="db cannot be used with a cluster"):
        SyncRedisClusterCache(nodes_of(healthy_client_cluster), db=3)
    with pytest.raises(ConfigurationError, match="not host:port"):
        SyncRedisClusterCache("localhost")


# ---------------------------------------------------------------- routing


def test_sync_commands_go_to_the_owner_of_each_key(healthy_client_cluster: ClusterTopology) -> None:
    with SyncRedisClusterCache(nodes_of(healthy_client_cluster), namespace="r") as cache:
        keys = keys_in_distinct_slots(300)
        owners = {healthy_client_cluster.owner(f"r:{k}").address for k in keys}
        assert len(owners) == 3  # the keys really are spread over every primary
        for i, key in enumerate(keys):
            assert cache.set(key, {"i": i}, ttl=60) is True
        assert all(stored_on(healthy_client_cluster, f"r:{k}") for k in keys)
        assert [cache.get(k) for k in keys] == [{"i": i} for i in range(300)]
        assert cache.get("absent", default="d") == "d"
        assert cache.exists(keys[0]) is True
        assert 0 < cache.ttl(keys[0]) <= 60
        assert cache.expire(keys[0], 120) is True and cache.ttl(keys[0]) > 60
        assert cache.incr("counter") == 1 and cache.incr("counter", 5) == 6
        assert cache.delete(keys[1]) is True and cache.get(keys[1]) is None
        assert cache.ping() is True


def test_async_commands_go_to_the_owner_of_each_key(run: Runner, healthy_client_cluster: ClusterTopology) -> None:
    async def main() -> None:
        async with RedisClusterCache(nodes_of(healthy_client_cluster), namespace="r") as cache:
            keys = keys_in_distinct_slots(300)
            assert all(await asyncio.gather(*(cache.set(k, i) for i, k in enumerate(keys))))
            assert await asyncio.gather(*(cache.get(k) for k in keys)) == list(range(300))
            assert all(stored_on(healthy_client_cluster, f"r:{k}") for k in keys)
            assert await cache.incr("counter", 2) == 2
            assert await cache.exists(keys[3]) is True
            assert await cache.delete(keys[3]) is True
            assert await cache.get(keys[3], default=0) == 0
            assert await cache.ping() is True

    run(main())


def test_batches_of_ten_thousand_keys_across_all_slots(run: Runner, healthy_client_cluster: ClusterTopology) -> None:
    data = {f"b{i}": i for i in range(10_000)}
    order = list(reversed(data))  # results follow the caller's order
    with SyncRedisClusterCache(nodes_of(healthy_client_cluster)) as cache:
        assert cache.set_many(data, ttl=60) is True
        got = cache.get_many([*order, "missing"])
        assert list(got) == order and got == data
        assert cache.delete_many(order[:4000]) == 4000
        assert len(cache.get_many(order)) == 6000

    async def main() -> None:
        async with RedisClusterCache(nodes_of(healthy_client_cluster)) as cache:
            assert await cache.set_many(data) is True
            got = await cache.get_many(order)
            assert list(got) == order and got == data
            assert await cache.delete_many(list(data)) == 10_000
            assert await cache.get_many(order) == {}

    run(main())


def test_clear_pattern_removes_exactly_the_namespace_on_every_node(run: Runner, healthy_client_cluster: ClusterTopology,
) -> None:
    with SyncRedisClusterCache(nodes_of(healthy_client_cluster), namespace="mine") as mine, \
            SyncRedisClusterCache(nodes_of(healthy_client_cluster), namespace="other") as other:
        mine.set_many({f"user:{i}": i for i in range(3000)})
        mine.set_many({f"keep:{i}": i for i in range(500)})
        other.set_many({f"user:{i}": i for i in range(500)})
        assert mine.clear_pattern("user:*") == 3000
        assert mine.get_many([f"user:{i}" for i in range(3000)]) == {}
        assert len(mine.get_many([f"keep:{i}" for i in range(500)])) == 500
        assert len(other.get_many([f"user:{i}" for i in range(500)])) == 500

    async def main() -> None:
        async with RedisClusterCache(nodes_of(healthy_client_cluster), namespace="other") as cache:
            assert await cache.clear_pattern("*") == 500

    run(main())
    counts = [node.command("DBSIZE") for node in healthy_client_cluster.primaries()]
    assert sum(counts) == 500  # mine:keep:* only


def test_multi_key_commands_across_slots_are_refused_before_sending(
    healthy_client_cluster: ClusterTopology,
) -> None:
    with SyncRedisClusterCache(nodes_of(healthy_client_cluster)) as cache:
        assert cache.execute_command("SET", "{u1}a", "1") == "OK"
        assert cache.execute_command("MGET", "{u1}a", "{u1}b") == [b"1", None]
        with pytest.raises(ClusterError, match="CROSSSLOT.*hash tag"):
            cache.execute_command("MSET", "x1", "1", "x2", "2")
        assert healthy_client_cluster.owner("x1").command("EXISTS", "x1") == 0
        with pytest.raises(ClusterError, match="CROSSSLOT"):
            cache.execute_command("EVAL", "return 1", 2, "a", "b")
        # Keyless commands go to some primary.
        assert cache.execute_command("PING") == "PONG"


# ---------------------------------------------------------------- redirects


def test_a_moved_slot_is_followed_and_the_map_reloaded(healthy_client_cluster: ClusterTopology) -> None:
    key = "moving"
    slot = key_slot(key)
    with SyncRedisClusterCache(nodes_of(healthy_client_cluster)) as cache:
        assert cache.set(key, "v1") is True
        source = healthy_client_cluster.node_for_slot(slot)
        target = next(n for n in healthy_client_cluster.primaries() if n is not source)
        healthy_client_cluster.migrate_slot(slot, target)
        # The cache's map still names the source: MOVED, then the new owner.
        assert cache.get(key) == "v1"
        assert cache.set(key, "v2") is True
        assert target.command("GET", key) == '"v2"'
        owner = cache._map.owners[slot]
        assert (owner.settings.host, owner.settings.port) == target.address


def test_ask_during_a_migration_reaches_keys_already_moved(run: Runner, healthy_client_cluster: ClusterTopology) -> None:
    tag = "{ask}"
    keys = [f"{tag}{i}" for i in range(20)]
    slot = key_slot(keys[0])
    sync_cache = SyncRedisClusterCache(nodes_of(healthy_client_cluster))
    sync_cache.set_many({k: i for i, k in enumerate(keys)})
    source = healthy_client_cluster.node_for_slot(slot)
    target = next(n for n in healthy_client_cluster.primaries() if n is not source)
    migration = healthy_client_cluster.migrate_slot(slot, target, finish=False, keys_to_move=10, keys_batch=5)
    try:
        on_target = target.command("CLUSTER", "GETKEYSINSLOT", slot, 100)
        moved = [k for k in keys if k in on_target or k.encode() in on_target]
        assert 0 < len(moved) < len(keys)
        # Keys on either side of the half-done migration, sync and async.
        assert [sync_cache.get(k) for k in keys] == list(range(20))
        assert sync_cache.set(moved[0], "new") is True
        assert sync_cache.get(moved[0]) == "new"

        async def main() -> list[Any]:
            async with RedisClusterCache(nodes_of(healthy_client_cluster)) as cache:
                return await asyncio.gather(*(cache.get(k) for k in keys))

        expected = list(range(20))
        expected[keys.index(moved[0])] = "new"
        assert run(main()) == expected
        # The target was asked with ASKING, by both clients.
        stats = target.command("INFO", "commandstats")
        assert "cmdstat_asking:calls=" in stats
        # ASK does not change the map: the slot still belongs to the source.
        owner = sync_cache._map.owners[slot]
        assert (owner.settings.host, owner.settings.port) == source.address
    finally:
        migration.finish()
        sync_cache.close()


class Load:
    """Writers and readers on keys spread over every slot; each key has one
    writer and only growing values. A read of a value no writer wrote for that
    key is a reply that reached the wrong caller. With ``strict`` a read
    older than the key's last confirmed write is wrong too; a forced failover
    or a killed primary may lose the writes it had not yet replicated (Redis
    replicates asynchronously), so those tests are not strict."""

    def __init__(self, keys: int = 200, *, strict: bool = True) -> None:
        self.keys = [f"load:{i}" for i in range(keys)]
        self.confirmed = [0] * keys
        self.attempted = [0] * keys
        self.strict = strict
        self.stop = threading.Event()
        self.bad: list[Any] = []
        self.failures: list[BaseException] = []
        self.reads = 0

    def check(self, i: int, floor: int, value: Any) -> None:
        if value is None:
            return
        if not isinstance(value, int) or value > self.attempted[i] or (self.strict and value < floor):
            self.bad.append((self.keys[i], floor, value))


def sync_worker(cache: SyncRedisClusterCache, load: Load, worker: int, workers: int) -> None:
    counter = 0
    while not load.stop.is_set():
        counter += 1
        for i in range(worker, len(load.keys), workers):
            load.attempted[i] = counter
            try:
                if cache.set(load.keys[i], counter):
                    load.confirmed[i] = counter
                floor = load.confirmed[i]
                load.check(i, floor, cache.get(load.keys[i]))
                load.reads += 1
            except SWITCHOVER_ERRORS as exc:
                load.failures.append(exc)


async def async_worker(cache: RedisClusterCache, load: Load, worker: int, workers: int) -> None:
    counter = 0
    while not load.stop.is_set():
        counter += 1
        for i in range(worker, len(load.keys), workers):
            load.attempted[i] = counter
            try:
                if await cache.set(load.keys[i], counter):
                    load.confirmed[i] = counter
                floor = load.confirmed[i]
                load.check(i, floor, await cache.get(load.keys[i]))
                load.reads += 1
            except SWITCHOVER_ERRORS as exc:
                load.failures.append(exc)
        await asyncio.sleep(0)


def wait_for_reads(load: Load, more: int, limit: float = 20) -> None:
    start = load.reads
    deadline = time.monotonic() + limit
    while load.reads < start + more and time.monotonic() < deadline:
        time.sleep(0.01)


def test_slot_migration_under_sync_load_loses_nothing(healthy_client_cluster: ClusterTopology) -> None:
    load = Load()
    slots = sorted({key_slot(k) for k in load.keys})[:6]
    with SyncRedisClusterCache(nodes_of(healthy_client_cluster), max_connections=8) as cache:
        threads = [threading.Thread(target=sync_worker, args=(cache, load, w, 4)) for w in range(4)]
        for t in threads:
            t.start()
        try:
            wait_for_reads(load, 200)
            for slot in slots:
                source = healthy_client_cluster.node_for_slot(slot)
                target = next(n for n in healthy_client_cluster.primaries() if n is not source)
                healthy_client_cluster.migrate_slot(slot, target, keys_batch=1)
            wait_for_reads(load, 200)
        finally:
            load.stop.set()
            for t in threads:
                t.join(30)
    assert load.bad == []
    assert load.failures == []
    assert load.reads > 400


def test_slot_migration_under_async_load_loses_nothing(
    run: Runner, healthy_client_cluster: ClusterTopology
) -> None:
    load = Load()
    slots = sorted({key_slot(k) for k in load.keys})[:6]

    def migrate() -> None:
        for slot in slots:
            source = healthy_client_cluster.node_for_slot(slot)
            target = next(n for n in healthy_client_cluster.primaries() if n is not source)
            healthy_client_cluster.migrate_slot(slot, target, keys_batch=1)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with RedisClusterCache(nodes_of(healthy_client_cluster)) as cache:
            workers = [asyncio.ensure_future(async_worker(cache, load, w, 20)) for w in range(20)]
            try:
                await loop.run_in_executor(None, wait_for_reads, load, 200)
                await loop.run_in_executor(None, migrate)
                await loop.run_in_executor(None, wait_for_reads, load, 200)
            finally:
                load.stop.set()
                await asyncio.gather(*workers)

    run(main(), timeout=120)
    assert load.bad == []
    assert load.failures == []
    assert load.reads > 400


@pytest.mark.parametrize("how", ["failover", "kill"])
def test_a_shard_losing_its_primary_under_load(healthy_client_cluster: ClusterTopology, how: str) -> None:
    load = Load(strict=how == "failover")
    with SyncRedisClusterCache(
        nodes_of(healthy_client_cluster), max_connections=8, socket_timeout=2
    ) as cache:
        cache.set_many({k: 0 for k in load.keys})
        victim = healthy_client_cluster.owner(load.keys[0])
        replica = healthy_client_cluster.replicas_of(victim)[0]
        threads = [threading.Thread(target=sync_worker, args=(cache, load, w, 4)) for w in range(4)]
        for t in threads:
            t.start()
        try:
            wait_for_reads(load, 200)
            if how == "failover":
                promoted = healthy_client_cluster.failover(replica)
            else:
                promoted = healthy_client_cluster.kill_primary(victim)
            assert promoted.address == replica.address
            wait_for_reads(load, 400)
        finally:
            load.stop.set()
            for t in threads:
                t.join(30)
        assert load.bad == []
        # Commands in flight on the old primary may fail; the rest go on.
        assert len(load.failures) < load.reads, load.failures[:3]
        # Recovered with no action from the user: the new primary serves.
        deadline = time.monotonic() + 20
        while True:
            try:
                assert cache.set(load.keys[0], "after") is True
                break
            except SWITCHOVER_ERRORS:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert promoted.command("GET", "load:0") == '"after"'
    if how == "kill":
        healthy_client_cluster.restart_node(victim)


_ASYNC_FAILOVER_TURN = itertools.count()


def test_async_client_survives_a_failover(run: Runner, healthy_client_cluster: ClusterTopology) -> None:
    load = Load()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with RedisClusterCache(nodes_of(healthy_client_cluster), socket_timeout=2) as cache:
            await cache.set_many({k: 0 for k in load.keys})
            # A shard no other failover test used: a shard that has just
            # failed over can refuse another for a while (its primaries'
            # vote cooldown), which would fail the fixture, not the cache.
            others = sorted(
                (p for p in healthy_client_cluster.primaries() if p is not healthy_client_cluster.owner(load.keys[0])),
                key=lambda p: p.address,
            )
            victim = others[next(_ASYNC_FAILOVER_TURN) % len(others)]
            replica = healthy_client_cluster.replicas_of(victim)[0]
            workers = [asyncio.ensure_future(async_worker(cache, load, w, 20)) for w in range(20)]
            try:
                await loop.run_in_executor(None, wait_for_reads, load, 200)
                await loop.run_in_executor(None, healthy_client_cluster.failover, replica)
                await loop.run_in_executor(None, wait_for_reads, load, 400)
            finally:
                load.stop.set()
                await asyncio.gather(*workers)
            deadline = time.monotonic() + 20
            while True:
                try:
                    assert await cache.set(load.keys[0], "after") is True
                    break
                except SWITCHOVER_ERRORS:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.05)
            assert await cache.get(load.keys[0]) == "after"

    run(main(), timeout=120)
    assert load.bad == []
    assert len(load.failures) < load.reads


# ---------------------------------------------------------------- connecting


def test_first_seed_down_the_others_answer(healthy_client_cluster: ClusterTopology) -> None:
    from redis_cache.testing import free_port

    seeds = [("127.0.0.1", free_port()), *nodes_of(healthy_client_cluster)]
    with SyncRedisClusterCache(seeds, socket_connect_timeout=1) as cache:
        assert cache.set("seeded", 1) is True and cache.get("seeded") == 1
    with pytest.raises(ConnectionError, match="no cluster node answered CLUSTER SLOTS"):
        SyncRedisClusterCache([("127.0.0.1", free_port())], connect_wait=0).get("x")


def test_password_cluster(password_cluster: ClusterTopology) -> None:
    nodes = nodes_of(password_cluster)
    with SyncRedisClusterCache(nodes, password=PASSWORD) as cache:
        cache.set_many({f"p{i}": i for i in range(100)})
        assert len(cache.get_many([f"p{i}" for i in range(100)])) == 100
    with pytest.raises((AuthenticationError, ConnectionError)):
        SyncRedisClusterCache(nodes, password="wrong", connect_wait=0).get("p1")


def test_tls_cluster(run: Runner, tls_cluster: ClusterTopology, tls_certs: TLSCertificates) -> None:
    options: dict[str, Any] = {
        "ssl": True,
        "ssl_ca_certs": tls_certs.ca.cert,
        "ssl_certfile": tls_certs.client.cert,
        "ssl_keyfile": tls_certs.client.key,
    }
    with SyncRedisCache.from_url(tls_cluster.url, **options) as cache:
        assert isinstance(cache, SyncRedisClusterCache)
        cache.set_many({f"t{i}": i for i in range(200)})
        assert len(cache.get_many([f"t{i}" for i in range(200)])) == 200

    async def main() -> None:
        async with RedisCache.from_url(tls_cluster.url, **options) as cache:
            assert await cache.get_many([f"t{i}" for i in range(200)]) == {
                f"t{i}": i for i in range(200)
            }

    run(main())


# ---------------------------------------------------------------- on top


def test_decorators_work_on_a_cluster(run: Runner, healthy_client_cluster: ClusterTopology) -> None:
    calls: list[Any] = []
    cache = SyncRedisClusterCache(nodes_of(healthy_client_cluster), namespace="deco")

    @cached(ttl=60, cache=cache)
    def profile(user_id: int) -> dict[str, int]:
        calls.append(user_id)
        return {"id": user_id}

    @cached_batch(ttl=60, cache=cache)
    def many(ids: list[int]) -> dict[int, int]:
        calls.append(tuple(ids))
        return {i: i * 10 for i in ids}

    try:
        assert [profile(i) for i in range(50)] == [{"id": i} for i in range(50)]
        assert [profile(i) for i in range(50)] == [{"id": i} for i in range(50)]
        assert calls == list(range(50))
        assert many(list(range(100))) == {i: i * 10 for i in range(100)}
        assert many(list(range(100))) == {i: i * 10 for i in range(100)}
        assert len(calls) == 51

        @cached(ttl=60, cache=cache)
        async def aprofile(user_id: int) -> dict[str, int]:
            calls.append(("a", user_id))
            return {"a": user_id}

        async def main() -> None:
            assert await asyncio.gather(*(aprofile(i) for i in range(30))) == [
                {"a": i} for i in range(30)
            ]
            assert await aprofile(3) == {"a": 3}

        run(main())
        assert len([c for c in calls if isinstance(c, tuple) and c[0] == "a"]) == 30
    finally:
        cache.close()


def test_dedicated_connection_bound_to_a_keys_node(run: Runner, healthy_client_cluster: ClusterTopology) -> None:
    async def main() -> None:
        async with RedisClusterCache(nodes_of(healthy_client_cluster)) as cache:
            async with cache.dedicated("{acct}") as conn:
                assert await conn.execute_command("MULTI") == "OK"
                await conn.execute_command("SET", "{acct}a", "1")
                await conn.execute_command("SET", "{acct}b", "2")
                assert await conn.execute_command("EXEC") == ["OK", "OK"]
            assert healthy_client_cluster.owner("{acct}a").command("MGET", "{acct}a", "{acct}b") == ["1", "2"]

    run(main())


def test_cross_process_lock_on_a_cluster(run: Runner, healthy_client_cluster: ClusterTopology) -> None:
    """lock=True: callers in two caches (two processes, in effect) compute a
    missing value once; the lock's keys and the waiters' blocking pops land
    on the value's node (a CROSSSLOT or MOVED would silently drop the lock)."""
    computed: list[int] = []

    async def main() -> None:
        async with RedisClusterCache(nodes_of(healthy_client_cluster), namespace="lk") as first, \
                RedisClusterCache(nodes_of(healthy_client_cluster), namespace="lk") as second:
            started = asyncio.Event()
            release = asyncio.Event()

            async def slow(n: int) -> int:
                computed.append(n)
                started.set()
                await release.wait()
                return n * 2

            one = cached(ttl=60, cache=first, lock=True, lock_wait=30)(slow)
            two = cached(ttl=60, cache=second, lock=True, lock_wait=30)(slow)
            # An argument whose key lives off the first primary (where a
            # connection with no key in mind would go).
            await first.ping()
            default_node = first._map.client(first._map.primaries[0])
            n = next(i for i in range(100) if first._map.owners[first._key_slot(one.key(i))]
                     is not default_node)
            holder = asyncio.ensure_future(one(n))
            await started.wait()
            waiters = [asyncio.ensure_future(two(n)) for _ in range(5)]
            # Until a waiter is blocked on the holder's wake-up key (on the
            # key's node), or has given up on the lock and computed.
            owner = healthy_client_cluster.owner(first._key_prefix.decode() + one.key(n))
            deadline = time.monotonic() + 10

            def blocked() -> bool:
                return "cmd=blpop" in owner.command("CLIENT", "LIST")

            while not blocked() and len(computed) == 1:
                assert time.monotonic() < deadline, "no waiter blocked on the lock"
                await asyncio.sleep(0.01)
            assert computed == [n]
            release.set()
            assert await holder == n * 2
            assert await asyncio.gather(*waiters) == [n * 2] * 5
            assert computed == [n]

    run(main(), timeout=60)


def test_batch_replies_stay_in_step_after_an_error_reply(
    run: Runner, healthy_client_cluster: ClusterTopology
) -> None:
    """get_many on a node is one GET per key: an error reply among them
    (WRONGTYPE) fails the call, and every later reply still reaches its own
    caller."""
    from dataclasses import dataclass

    @dataclass
    class Item:
        n: int

    with SyncRedisClusterCache(nodes_of(healthy_client_cluster)) as cache:
        cache.set_many({f"s{i}": {"n": i} for i in range(50)})
        cache.execute_command("RPUSH", "a-list", "x")
        with pytest.raises(Exception, match="WRONGTYPE"):
            cache.get_many([f"s{i}" for i in range(50)] + ["a-list"])
        assert cache.get_many([f"s{i}" for i in range(50)], model=Item) == {
            f"s{i}": Item(i) for i in range(50)
        }
        assert cache.get("s3") == {"n": 3}

    async def main() -> None:
        async with RedisClusterCache(nodes_of(healthy_client_cluster)) as cache:
            failing = cache.get_many([f"s{i}" for i in range(50)] + ["a-list"])
            later = [cache.get(f"s{i}") for i in range(50)]
            results = await asyncio.gather(failing, *later, return_exceptions=True)
            assert "WRONGTYPE" in str(results[0])
            assert results[1:] == [{"n": i} for i in range(50)]
            assert await cache.get_many(["s1", "s2"], model=Item) == {"s1": Item(1), "s2": Item(2)}

    run(main())
