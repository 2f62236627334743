"""Scanning the namespace's keys (``cache.scan``) and ``cache.key_info``.

* scan yields this namespace's keys only, without the namespace, as str:
  not another namespace's (even one the namespace's glob would match), not
  keys outside any namespace; glob specials in the namespace are literal and
  in the pattern are the caller's (escaped ones literal too).
* 10,000 keys come back complete with a small COUNT hint (many SCAN calls).
* On Redis Cluster, keys from every primary come back, also while a slot
  is half migrated; a slot moved mid-walk to a node scanned later repeats
  its keys already yielded (documented) and loses none.
* key_info: type, TTL, memory use and encoding for strings, hashes, lists,
  with and without expiry; None for a missing key; routed by slot on a
  cluster.
* Bad arguments are refused when scan() is called, before any command.
"""

from __future__ import annotations

import asyncio

import pytest
from async_support import Runner, run  # noqa: F401  (run is a fixture)
from redis_raw import raw

from redis_cache import (
    KeyInfo,
    RedisCache,
    RedisClusterCache,
    SyncRedisCache,
    SyncRedisClusterCache,
)
from redis_cache._testing_cluster import ClusterTopology
from redis_cache.cluster import key_slot
from redis_cache.testing import RedisServer


def test_scan_yields_only_this_namespaces_keys(redis: RedisServer) -> None:
    with SyncRedisCache(port=redis.port, namespace="a*") as star, \
            SyncRedisCache(port=redis.port, namespace="ab") as ab, \
            SyncRedisCache(port=redis.port) as bare:
        star.set_many({"user:1": 1, "user:2": 2, "order:1": 3})
        ab.set_many({"user:9": 9})
        bare.set("a*user:x", "outside")  # no namespace: "a*:" is not its prefix
        assert sorted(star.scan()) == ["order:1", "user:1", "user:2"]
        assert sorted(star.scan("user:*")) == ["user:1", "user:2"]
        assert sorted(ab.scan()) == ["user:9"]
        # Without a namespace every key is the caller's.
        assert sorted(bare.scan("ab:*")) == ["ab:user:9"]
        assert all(isinstance(k, str) for k in star.scan())


def test_glob_specials_in_keys_and_patterns(redis: RedisServer) -> None:
    keys = ["x*y", "xay", "x?y", "x[1]", "x1", "back\\slash"]
    with SyncRedisCache(port=redis.port, namespace="g[1]") as cache:
        cache.set_many({k: k for k in keys})
        assert sorted(cache.scan("x*")) == sorted(k for k in keys if k.startswith("x"))
        assert list(cache.scan("x\\*y")) == ["x*y"]  # escaped: literal
        assert sorted(cache.scan("x?y")) == ["x*y", "x?y", "xay"]
        assert list(cache.scan("x\\[1\\]")) == ["x[1]"]
        assert sorted(cache.scan("x[1]")) == ["x1"]  # a class, as the caller wrote it
        assert list(cache.scan("back\\\\slash")) == ["back\\slash"]
        assert list(cache.scan(b"x\\?y")) == ["x?y"]


def test_ten_thousand_keys_with_a_small_count(redis: RedisServer) -> None:
    n = 10_000
    with SyncRedisCache(port=redis.port, namespace="big") as cache:
        cache.set_many({f"item:{i}": i for i in range(n)})
        raw(redis, "SET", "other:item:1", "x")
        calls_before = _scan_calls(redis)
        found = list(cache.scan("item:*", count=100))
        # SCAN may repeat a key (a rehash mid-walk); none may be missing.
        assert set(found) == {f"item:{i}" for i in range(n)}
        assert len(found) >= n
        assert _scan_calls(redis) - calls_before >= n // 100 // 2  # really paged


def _scan_calls(server: RedisServer) -> int:
    info = raw(server, "INFO", "commandstats")
    assert isinstance(info, bytes)
    for line in info.decode().splitlines():
        if line.startswith("cmdstat_scan:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


def test_async_scan(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        async with RedisCache(port=redis.port, namespace="as") as cache:
            await cache.set_many({f"user:{i}": i for i in range(2500)})
            await cache.set("order:1", 1)
            found = [k async for k in cache.scan("user:*", count=50)]
            assert set(found) == {f"user:{i}" for i in range(2500)}
            assert [k async for k in cache.scan("order:*")] == ["order:1"]
            assert [k async for k in cache.scan("nothing:*")] == []

    run(main())


def test_scan_refuses_bad_arguments_at_once(run: Runner, redis: RedisServer) -> None:
    with SyncRedisCache(port=redis.port, namespace="n") as cache:
        for count in (0, -5, 1.5, True, "10"):
            with pytest.raises(ValueError, match="scan count must be a whole number"):
                cache.scan(count=count)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="pattern must be str or bytes"):
            cache.scan(5)  # type: ignore[arg-type]

    async def main() -> None:
        async with RedisCache(port=redis.port, namespace="n") as acache:
            with pytest.raises(ValueError, match="scan count"):
                acache.scan(count=0)

    run(main())


# ---------------------------------------------------------------------------
# key_info
# ---------------------------------------------------------------------------


def test_key_info(run: Runner, redis: RedisServer) -> None:
    with SyncRedisCache(port=redis.port, namespace="ki") as cache:
        cache.set("plain", "v" * 100)
        cache.set("counter", 5, ttl=120)
        raw(redis, "HSET", "ki:h", "f", "v")
        raw(redis, "RPUSH", "ki:l", "a", "b")
        plain = cache.key_info("plain")
        assert isinstance(plain, KeyInfo)
        assert plain.type == "string" and plain.ttl is None
        assert plain.memory_bytes >= 100 and plain.encoding in ("raw", "embstr")
        counter = cache.key_info("counter")
        assert counter is not None and counter.type == "string"
        assert counter.ttl is not None and 119 < counter.ttl <= 120
        assert cache.key_info("h") == KeyInfo("hash", None, cache.key_info("h").memory_bytes,  # type: ignore[union-attr]
                                              "listpack")
        info = cache.key_info(b"l")
        assert info is not None and info.type == "list" and info.memory_bytes > 0
        assert cache.key_info("missing") is None
        with pytest.raises(TypeError, match="str or bytes"):
            cache.key_info(5)  # type: ignore[arg-type]

    async def main() -> None:
        async with RedisCache(port=redis.port, namespace="ki") as acache:
            assert (await acache.key_info("plain")) == plain
            assert await acache.key_info("missing") is None

    run(main())


# ---------------------------------------------------------------------------
# Redis Cluster
# ---------------------------------------------------------------------------


def nodes_of(cluster: ClusterTopology) -> list[tuple[str, int]]:
    return list(cluster.seed_addresses)


def test_cluster_scan_covers_every_primary(run: Runner,
                                           healthy_cluster: ClusterTopology) -> None:
    n = 3000
    keys = {f"user:{i}" for i in range(n)}
    with SyncRedisClusterCache(nodes_of(healthy_cluster), namespace="cs") as cache, \
            SyncRedisClusterCache(nodes_of(healthy_cluster), namespace="other") as other:
        cache.set_many({k: 1 for k in keys})
        cache.set("order:1", 1)
        other.set_many({f"user:{i}": 1 for i in range(100)})
        owners = {healthy_cluster.owner(f"cs:user:{i}").address for i in range(50)}
        assert len(owners) == 3  # the keys live on every primary
        found = list(cache.scan("user:*", count=200))
        assert set(found) == keys and len(found) >= n
        assert sorted(cache.scan("order:*")) == ["order:1"]
        info = cache.key_info("user:7")
        assert info is not None and info.type == "string"
        assert [cache.key_info(f"user:{i}") is not None for i in range(30)] == [True] * 30
        assert cache.key_info("user:none") is None

    async def main() -> None:
        async with RedisClusterCache(nodes_of(healthy_cluster), namespace="cs") as acache:
            found = [k async for k in acache.scan("user:*", count=200)]
            assert set(found) == keys
            infos = await asyncio.gather(*(acache.key_info(f"user:{i}") for i in range(30)))
            assert all(i is not None and i.type == "string" for i in infos)

    run(main())


def test_cluster_scan_while_a_slot_migrates(healthy_client_cluster: ClusterTopology) -> None:
    """Half-moved slot: every key is found (on one node or the other). A slot
    moved mid-walk from the node being scanned to one scanned later: nothing
    is missed, and its keys already yielded come again (documented)."""
    cluster = healthy_client_cluster
    keys = {f"user:{i}" for i in range(600)} | {f"{{mig}}:{i}" for i in range(20)}
    with SyncRedisClusterCache(nodes_of(cluster), namespace="mv") as cache:
        cache.set_many({k: 1 for k in keys})
        slot = key_slot("mv:{mig}:0")
        source = cluster.node_for_slot(slot)
        target = next(n for n in cluster.primaries() if n is not source)
        migration = cluster.migrate_slot(slot, target, finish=False, keys_to_move=10,
                                         keys_batch=5)
        try:
            assert 0 < migration.keys_left() < 20  # the slot's keys are on both nodes
            assert set(cache.scan()) == keys
        finally:
            migration.finish()

        walk = cache.scan(count=10)
        first = next(walk)  # the walk is now on the first node, which owns `first`
        first_slot = key_slot(f"mv:{first}")
        first_node = cluster.node_for_slot(first_slot)
        later = next(n for n in cluster.primaries() if n is not first_node)
        cluster.migrate_slot(first_slot, later)
        rest = list(walk)
        assert {first, *rest} == keys
        assert first in rest  # seen on the old node, then again on the new one
