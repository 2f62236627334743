"""Tag invalidation: ``cache.set_tagged`` / ``get_tagged`` / ``invalidate_tags``
and ``@cached(tags=...)``, sync and async, on a single node, Sentinel and a
Redis Cluster (tags in different slots).

What must hold: an invalidated entry is a miss from then on, whatever the
number of entries under the tag (one write per tag); a write whose
computation started before an invalidation and lands after it does not bring
the old value back; a generation key that disappears (evicted, deleted)
counts as an invalidation. Concurrency is driven by events, never sleeps.
"""

import asyncio
import threading
from typing import Any

import pytest
from async_support import Runner, run  # noqa: F401  (run is a fixture)
from redis_raw import raw

from redis_cache import RedisCache, SyncRedisCache, tags
from redis_cache.cluster import RedisClusterCache, SyncRedisClusterCache, key_slot
from redis_cache.errors import ResponseError
from redis_cache.testing import RedisServer

NS = "tg"


# ---------------------------------------------------------------------------
# set_tagged / get_tagged / invalidate_tags
# ---------------------------------------------------------------------------


def test_sync_tagged_entries_are_dropped_by_their_tags(redis: RedisServer) -> None:
    with SyncRedisCache(port=redis.port, namespace=NS) as cache:
        assert cache.set_tagged("u5:profile", {"name": "Ann"}, ["user:5", "profiles"], ttl=60)
        cache.set_tagged("u6:profile", {"name": "Bob"}, "user:6", ttl=60)
        assert cache.get_tagged("u5:profile") == {"name": "Ann"}
        assert cache.invalidate_tags("user:5") == 1
        assert cache.get_tagged("u5:profile", "gone") == "gone"
        assert cache.get_tagged("u6:profile") == {"name": "Bob"}
        # Written again after the invalidation: valid again.
        cache.set_tagged("u5:profile", {"name": "Ann 2"}, ["user:5", "profiles"], ttl=60)
        assert cache.get_tagged("u5:profile") == {"name": "Ann 2"}
        assert cache.invalidate_tags(["profiles", "user:6"]) == 2
        assert cache.get_tagged("u5:profile") is None
        assert cache.get_tagged("u6:profile") is None
    # The generation keys live in the namespace, each in its own hash tag.
    assert raw(redis, "EXISTS", f"{NS}:tag:{{user:5}}") == 1


def test_async_tagged_entries_are_dropped_by_their_tags(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        async with RedisCache(port=redis.port, namespace=NS) as cache:
            await cache.set_tagged("a", [1, 2], ["t1", "t2"], ttl=60)
            await cache.set_tagged("b", "B", ["t2"], ttl=60)
            await cache.set_tagged("c", None, ["t3"])  # None is a value, not a miss
            assert await cache.get_tagged("a") == [1, 2]
            assert await cache.get_tagged("c", "missing") is None
            assert await cache.invalidate_tags("t1") == 1
            assert await cache.get_tagged("a", "missing") == "missing"
            assert await cache.get_tagged("b") == "B"
            await cache.invalidate_tags("t2", "t3")
            assert await cache.get_tagged("b", "missing") == "missing"
            assert await cache.get_tagged("c", "missing") == "missing"

    run(main())


def test_entry_ttl_and_plain_get_of_an_entry(redis: RedisServer) -> None:
    with SyncRedisCache(port=redis.port, namespace=NS) as cache:
        cache.set_tagged("k", 1, "t", ttl=30)
        assert 29_000 < raw(redis, "PTTL", f"{NS}:k") <= 30_000
        # A plain get cannot validate tags: it gets WRONGTYPE, never a value.
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            cache.get("k")
        # A plain value at the key reads as a miss through get_tagged.
        cache.set("plain", 1)
        assert cache.get_tagged("plain", "miss") == "miss"


def test_a_lost_generation_key_counts_as_an_invalidation(redis: RedisServer) -> None:
    with SyncRedisCache(port=redis.port, namespace=NS) as cache:
        cache.set_tagged("k", "v", "t")
        assert cache.get_tagged("k") == "v"
        raw(redis, "DEL", f"{NS}:tag:{{t}}")  # as eviction would
        assert cache.get_tagged("k") is None
        cache.set_tagged("k", "v2", "t")
        assert cache.get_tagged("k") == "v2"


def test_typed_reads_and_other_serializers(redis: RedisServer) -> None:
    import dataclasses

    @dataclasses.dataclass
    class User:
        id: int
        name: str

    with SyncRedisCache(port=redis.port, namespace=NS) as cache:
        cache.set_tagged("u", User(1, "Ann"), "t")
        assert cache.get_tagged("u", model=User) == User(1, "Ann")
    with SyncRedisCache(port=redis.port, namespace=NS, serializer="raw") as cache:
        cache.set_tagged("r", b"\x00\xffbytes", "t")
        assert cache.get_tagged("r") == b"\x00\xffbytes"
    with SyncRedisCache(port=redis.port, namespace=NS, serializer="pickle",
                        pickle_secret="s" * 32) as cache:
        cache.set_tagged("p", {1, 2}, "t")
        assert cache.get_tagged("p") == {1, 2}


def test_bad_tags_are_refused_before_anything_is_written(redis: RedisServer) -> None:
    with SyncRedisCache(port=redis.port, namespace=NS) as cache:
        with pytest.raises(ValueError, match="non-empty str"):
            cache.set_tagged("k", 1, [""])
        with pytest.raises(ValueError, match="non-empty str"):
            cache.set_tagged("k", 1, [5])
        with pytest.raises(ValueError, match="ttl must be"):
            cache.set_tagged("k", 1, "t", ttl=-1)
        with pytest.raises(ValueError, match="at least one tag"):
            cache.invalidate_tags()
        with pytest.raises(ValueError, match="non-empty str"):
            cache.invalidate_tags(None)
    assert raw(redis, "DBSIZE") == 0


# ---------------------------------------------------------------------------
# The race: computed before an invalidation, written after it
# ---------------------------------------------------------------------------


def test_a_write_started_before_an_invalidation_stays_invalid(redis: RedisServer) -> None:
    """The tokens a writer read before computing are what it stores: an
    invalidation in between leaves its entry born invalid."""
    with SyncRedisCache(port=redis.port, namespace=NS) as cache:
        before = tags.tokens_sync(cache, ["user:5"])
        cache.invalidate_tags("user:5")
        tags.write_sync(cache, "k", "old value", 60, tokens=before)
        assert cache.get_tagged("k", "miss") == "miss"


def test_decorated_computation_overlapping_an_invalidation(run: Runner,
                                                           redis: RedisServer) -> None:
    async def main() -> None:
        async with RedisCache(port=redis.port, namespace=NS) as cache:
            entered, release = asyncio.Event(), asyncio.Event()
            calls: list[int] = []

            @cache.cached(ttl=60, tags=["user:{user_id}"])
            async def profile(user_id: int) -> str:
                calls.append(user_id)
                if len(calls) == 1:
                    entered.set()
                    await release.wait()
                    return "computed before the write to the database"
                return "fresh"

            slow = asyncio.ensure_future(profile(5))
            await asyncio.wait_for(entered.wait(), 10)
            await cache.invalidate_tags("user:5")  # the database changed meanwhile
            release.set()
            assert await slow == "computed before the write to the database"
            # The old value was stored, but under the old generation.
            assert await profile(5) == "fresh"
            assert calls == [5, 5]
            assert await profile(5) == "fresh"
            assert calls == [5, 5]

    run(main())


def test_sync_decorated_computation_overlapping_an_invalidation(redis: RedisServer) -> None:
    with SyncRedisCache(port=redis.port, namespace=NS) as cache:
        entered, release = threading.Event(), threading.Event()
        calls: list[int] = []

        @cache.cached(ttl=60, tags=["user:{user_id}"])
        def profile(user_id: int) -> str:
            calls.append(user_id)
            if len(calls) == 1:
                entered.set()
                assert release.wait(10)
                return "old"
            return "fresh"

        results: list[str] = []
        worker = threading.Thread(target=lambda: results.append(profile(5)))
        worker.start()
        assert entered.wait(10)
        cache.invalidate_tags("user:5")
        release.set()
        worker.join(10)
        assert results == ["old"]
        assert profile(5) == "fresh"
        assert profile(5) == "fresh"
        assert calls == [5, 5]


# ---------------------------------------------------------------------------
# The decorator
# ---------------------------------------------------------------------------


def test_decorator_tag_templates(redis: RedisServer) -> None:
    with SyncRedisCache(port=redis.port, namespace=NS) as cache:
        calls: list[tuple[int, str]] = []

        class Org:
            def __init__(self, slug: str) -> None:
                self.slug = slug

        @cache.cached(ttl=60, key="report:{user_id}:{org.slug}:{kind}",
                      tags=["user:{user_id}", "org:{org.slug}", "reports"])
        def report(user_id: int, org: Org, kind: str = "daily") -> dict[str, Any]:
            calls.append((user_id, kind))
            return {"user": user_id, "kind": kind, "n": len(calls)}

        acme = Org("acme")
        assert report(5, acme)["n"] == 1
        assert report(5, acme)["n"] == 1
        assert report(6, acme)["n"] == 2
        assert report.stats.hits == 1
        cache.invalidate_tags("user:5")
        assert report(5, acme)["n"] == 3
        assert report(6, acme)["n"] == 2  # untouched
        cache.invalidate_tags("org:acme")
        assert report(6, acme)["n"] == 4
        cache.invalidate_tags("reports")
        assert report(5, acme)["n"] == 5
        # fn.invalidate still deletes the one entry.
        report.invalidate(5, acme)
        assert report(5, acme)["n"] == 6


def test_bad_tag_templates_give_clear_errors(redis: RedisServer) -> None:
    with SyncRedisCache(port=redis.port, namespace=NS) as cache:
        with pytest.raises(ValueError, match=r"tag template 'user:{uid}' names 'uid', which is not a parameter of .*f\(user_id"):
            @cache.cached(ttl=60, tags=["user:{uid}"])
            def f(user_id: int) -> int:
                return user_id

        with pytest.raises(ValueError, match="bad tag template 'user:{'"):
            @cache.cached(ttl=60, tags=["user:{"])
            def g(user_id: int) -> int:
                return user_id

        with pytest.raises(ValueError, match="non-empty str templates"):
            @cache.cached(ttl=60, tags=[None])  # type: ignore[list-item]
            def h(user_id: int) -> int:
                return user_id

        @cache.cached(ttl=60, tags=["org:{org.slug}"], exclude=["org"])
        def k(org: Any) -> int:
            return 1

        with pytest.raises(ValueError, match=r"cannot fill in the tags \['org:\{org.slug\}'\] of"):
            k(object())


def test_decorator_fails_open_when_redis_is_down(redis: RedisServer) -> None:
    with SyncRedisCache(port=redis.port, namespace=NS, connect_wait=0,
                        socket_connect_timeout=0.5) as cache:
        @cache.cached(ttl=60, tags=["t:{x}"])
        def f(x: int) -> int:
            return x * 2

        redis.stop()
        try:
            assert f(4) == 8
            assert f.stats.errors >= 1
        finally:
            redis.start()


# ---------------------------------------------------------------------------
# Scale: one invalidation, 100k entries
# ---------------------------------------------------------------------------


def test_one_call_invalidates_100k_entries(redis: RedisServer) -> None:
    count, chunk = 100_000, 5_000

    async def main() -> None:
        async with RedisCache(port=redis.port, namespace=NS) as cache:
            tokens = await tags.tokens_async(cache, ["big"])
            for start in range(0, count, chunk):  # pipelined by the multiplexer
                await asyncio.gather(*(
                    tags.write_async(cache, f"e:{i}", i, 600, tokens=tokens)
                    for i in range(start, start + chunk)
                ))
            assert await cache.get_tagged("e:99999") == 99999
            assert await cache.invalidate_tags("big") == 1
            still_valid = 0
            for start in range(0, count, chunk):
                entries = await asyncio.gather(*(
                    tags.read_async(cache, f"e:{i}", None, ["big"])
                    for i in range(start, start + chunk)
                ))
                still_valid += sum(entry is not None for entry, _ in entries)
            assert still_valid == 0

    Runner("asyncio")(main(), timeout=120)
    assert raw(redis, "DBSIZE") == 100_001  # the entries and one generation key


# ---------------------------------------------------------------------------
# Sentinel and Cluster
# ---------------------------------------------------------------------------


def test_tags_across_cluster_slots(run: Runner, healthy_cluster: Any) -> None:
    names = ["user:1", "user:2", "user:3", "org:9"]
    slots = {key_slot(f"cl:tag:{{{t}}}") for t in names}
    assert len(slots) == len(names)  # each tag in a slot of its own
    nodes = list(healthy_cluster.seed_addresses)
    with SyncRedisClusterCache(nodes, namespace="cl") as cache:
        calls: list[int] = []

        @cache.cached(ttl=60, tags=["user:{uid}", "org:9"])
        def f(uid: int) -> int:
            calls.append(uid)
            return uid

        for uid in (1, 2, 3):
            f(uid)
        assert {healthy_cluster.owner(f"cl:tag:{{user:{u}}}").address for u in (1, 2, 3)}
        cache.invalidate_tags("user:2")
        for uid in (1, 2, 3):
            f(uid)
        assert calls == [1, 2, 3, 2]
        cache.invalidate_tags("org:9", "user:1")
        for uid in (1, 2, 3):
            f(uid)
        assert calls == [1, 2, 3, 2, 1, 2, 3]

    async def main() -> None:
        async with RedisClusterCache(nodes, namespace="cl") as cache:
            for i in range(20):
                await cache.set(f"k{i}", i, ttl=60, tags=[names[i % 4], "all"])
            await cache.invalidate_tags("user:1", "user:3")
            left = [i for i in range(20) if await cache.get_tagged(f"k{i}", None) is not None]
            assert left == [i for i in range(20) if i % 4 in (1, 3)]
            await cache.invalidate_tags("all")
            assert [await cache.get_tagged(f"k{i}") for i in range(20)] == [None] * 20

    run(main())


def test_tags_through_sentinel(run: Runner, healthy_sentinel_topology: Any) -> None:
    from test_sentinel import options

    with SyncRedisCache(**options(healthy_sentinel_topology), namespace=NS) as cache:
        cache.set_tagged("s", "value", "t", ttl=60)
        assert cache.get_tagged("s") == "value"
        cache.invalidate_tags("t")
        assert cache.get_tagged("s") is None

    async def main() -> None:
        async with RedisCache(**options(healthy_sentinel_topology), namespace=NS) as cache:
            @cache.cached(ttl=60, tags=["s:{x}"])
            async def f(x: int) -> list[int]:
                calls.append(x)
                return calls

            calls: list[int] = []
            assert await f(1) == [1]
            assert await f(1) == [1]
            await cache.invalidate_tags("s:1")
            assert await f(1) == [1, 1]

    run(main())


def test_async_fail_open_leaves_no_unretrieved_errors(run: Runner, redis: RedisServer) -> None:
    """Redis down: the entry read and the token reads all fail; the call still
    returns, and the runner fails the test if any error went unretrieved."""

    async def main() -> None:
        async with RedisCache(port=redis.port, namespace=NS, connect_wait=0) as cache:
            @cache.cached(ttl=60, tags=["a:{x}", "b:{x}", "c"])
            async def f(x: int) -> int:
                return x + 1

            assert await f(1) == 2
            redis.stop()
            try:
                assert await f(2) == 3
                assert f.stats.errors >= 1
                with pytest.raises(Exception):
                    await cache.get_tagged("anything")
            finally:
                redis.start()

    run(main())


def test_invalidate_decorator_with_tags(run: Runner, redis: RedisServer) -> None:
    """@cache.invalidate(tags=[...]) after a write: every entry about that user
    is a miss, sync and async."""
    with SyncRedisCache(port=redis.port, namespace=NS) as cache:
        loads: list[int] = []

        @cache.cached(ttl=60, tags=["user:{user_id}"])
        def profile(user_id: int) -> int:
            loads.append(user_id)
            return len(loads)

        @cache.invalidate(tags=["user:{user_id}"])
        def rename(user_id: int, name: str) -> str:
            return name

        assert profile(5) == 1 and profile(5) == 1 and profile(6) == 2
        assert rename(5, "Ann") == "Ann"
        assert profile(5) == 3
        assert profile(6) == 2
        with pytest.raises(ValueError, match="names 'uid'"):
            cache.invalidate(tags=["user:{uid}"])(lambda user_id: None)
        with pytest.raises(ValueError, match="at least one key template"):
            cache.invalidate()

    async def main() -> None:
        async with RedisCache(port=redis.port, namespace=NS) as cache:
            @cache.cached(ttl=60, tags=["org:{org}"])
            async def members(org: str) -> list[str]:
                return ["a"] if not members.changed else ["a", "b"]

            members.changed = False  # type: ignore[attr-defined]

            @cache.invalidate("plain:{org}", tags=["org:{org}"])
            async def add_member(org: str) -> None:
                members.changed = True  # type: ignore[attr-defined]

            assert await members("acme") == ["a"]
            await add_member("acme")
            assert await members("acme") == ["a", "b"]

    run(main())


def test_set_with_tags_is_set_tagged(run: Runner, redis: RedisServer) -> None:
    """The issue's spelling, cache.set(key, value, tags=[...]), writes a tagged
    entry (validated by get_tagged), sync and async; tags=None is a plain set."""
    with SyncRedisCache(port=redis.port, namespace="st") as cache:
        assert cache.set("a", {"v": 1}, 60, tags=["t1"]) is True
        assert cache.set("b", 2, tags=None) is True
        assert cache.get("b") == 2
        assert cache.get_tagged("a") == {"v": 1}
        cache.invalidate_tags("t1")
        assert cache.get_tagged("a") is None
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            cache.get("a")

    async def main() -> None:
        async with RedisCache(port=redis.port, namespace="st") as cache:
            assert await cache.set("c", [1, 2], ttl=60, tags="t2") is True
            assert await cache.get_tagged("c") == [1, 2]
            await cache.invalidate_tags("t2")
            assert await cache.get_tagged("c", "gone") == "gone"

    run(main())
