"""Pub/sub: publish through the serializer, subscriptions on connections of
their own, resubscription with gap reporting, the bounded queue, and the
cluster's plain and shard channels (redis_cache/pubsub.py)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from async_support import Runner, run  # noqa: F401  (fixture)
from conftest import PASSWORD

from redis_cache import (
    AuthenticationError,
    ConnectionError,
    Message,
    RedisCache,
    ResponseError,
    RedisClusterCache,
    SyncRedisCache,
    SyncRedisClusterCache,
    TimeoutError,
)
from redis_cache._testing_cluster import ClusterTopology
from redis_cache.cluster import key_slot
from redis_cache.testing import RedisServer, TLSCertificates, free_port

#: Long enough for anything that only takes long when something is broken.
WAIT = 10.0


def eventually(check: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Waits for a condition the server reports on its own schedule (a closed
    socket seen by the server), failing after timeout."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def pubsub_clients(server: RedisServer, name: str | None = None) -> int:
    """Subscribed connections on the server (named ``name``, if given: a
    Sentinel subscribes to the nodes it watches)."""
    listing = server.command("CLIENT", "LIST", "TYPE", "pubsub")
    text = listing.decode() if isinstance(listing, bytes) else str(listing)
    return sum(1 for line in text.splitlines()
               if line.strip() and (name is None or f" name={name} " in f" {line} "))


def sync_cache(server: RedisServer, **options: Any) -> SyncRedisCache:
    return SyncRedisCache(host="127.0.0.1", port=server.port, **options)


def async_cache(server: RedisServer, **options: Any) -> RedisCache:
    return RedisCache(host="127.0.0.1", port=server.port, **options)


def data_of(messages: list[Message | None]) -> list[Any]:
    return [m.data if m is not None else None for m in messages]


# --------------------------------------------------------------------------
# Single node, blocking
# --------------------------------------------------------------------------


def test_sync_channels_and_patterns(redis: RedisServer) -> None:
    with sync_cache(redis) as cache:
        assert cache.publish("orders", {"id": 1}) == 0  # nobody listens yet
        with cache.subscribe("orders", patterns=["user:*"]) as sub:
            assert sub.channels == {"orders"} and sub.patterns == {"user:*"}
            assert cache.publish("orders", {"id": 1, "items": [1, 2]}) == 1
            assert cache.publish("user:5", "renamed") == 1
            assert cache.publish("other", 1) == 0
            first, second = sub.get(timeout=WAIT), sub.get(timeout=WAIT)
            assert first == Message("message", "orders", {"id": 1, "items": [1, 2]})
            assert second == Message("pmessage", "user:5", "renamed", pattern="user:*")
            assert sub.get(timeout=0.05) is None  # nothing else came
        assert sub.closed and sub.get(timeout=0) is None


def test_sync_iteration_blocks_until_a_message(redis: RedisServer) -> None:
    with sync_cache(redis) as cache, cache.subscribe("jobs") as sub:
        got: list[Message] = []

        def consume() -> None:
            for message in sub:
                got.append(message)
                if len(got) == 3:
                    return

        thread = threading.Thread(target=consume)
        thread.start()
        for i in range(3):
            assert cache.publish("jobs", i) == 1
        thread.join(WAIT)
        assert not thread.is_alive()
        assert [m.data for m in got] == [0, 1, 2]


def test_sync_subscribe_and_unsubscribe_while_open(redis: RedisServer) -> None:
    with sync_cache(redis) as cache, cache.subscribe("a") as sub:
        sub.subscribe("b", patterns=["c:*"])
        assert cache.publish("b", "to b") == 1
        assert cache.publish("c:1", "to c") == 1
        assert data_of([sub.get(timeout=WAIT), sub.get(timeout=WAIT)]) == ["to b", "to c"]
        sub.unsubscribe("a", "b", patterns=["c:*"])
        assert sub.channels == frozenset() and sub.patterns == frozenset()
        assert cache.publish("a", 1) == 0 and cache.publish("b", 1) == 0
        assert cache.publish("c:1", 1) == 0


def test_sync_close_from_another_thread_wakes_get(redis: RedisServer) -> None:
    with sync_cache(redis) as cache:
        sub = cache.subscribe("quiet")
        sub.start()
        result: list[object] = []
        thread = threading.Thread(target=lambda: result.append(sub.get()))
        thread.start()
        eventually(lambda: pubsub_clients(redis) == 1, "the subscriber")
        sub.close()
        thread.join(WAIT)
        assert not thread.is_alive() and result == [None]
        eventually(lambda: pubsub_clients(redis) == 0, "the subscriber's connection to close")


# --------------------------------------------------------------------------
# Single node, asyncio (and uvloop)
# --------------------------------------------------------------------------


def test_async_channels_patterns_and_iteration(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        async with async_cache(redis) as cache:
            async with cache.subscribe("orders", patterns=["user:*"]) as sub:
                assert await cache.publish("orders", {"id": 7}) == 1
                assert await cache.publish("user:1", [1, "x"]) == 1
                assert await cache.publish("orders", "last") == 1
                got = []
                async for message in sub:
                    got.append(message)
                    if len(got) == 3:
                        break
                assert got == [
                    Message("message", "orders", {"id": 7}),
                    Message("pmessage", "user:1", [1, "x"], pattern="user:*"),
                    Message("message", "orders", "last"),
                ]
                assert await sub.get(timeout=0.05) is None
                # The cache's own commands still run on the shared connection.
                assert await cache.set("k", 1) is True and await cache.get("k") == 1

    run(main())


def test_async_subscribe_and_unsubscribe_while_open(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        async with async_cache(redis) as cache, cache.subscribe("a") as sub:
            await sub.subscribe("b", patterns=["c:*"])
            assert await cache.publish("b", 1) == 1 and await cache.publish("c:x", 2) == 1
            assert data_of([await sub.get(timeout=WAIT), await sub.get(timeout=WAIT)]) == [1, 2]
            await sub.unsubscribe("b", patterns=["c:*"])
            assert sub.channels == {"a"}
            assert await cache.publish("b", 1) == 0 and await cache.publish("c:x", 1) == 0
            assert await cache.publish("a", "still") == 1
            assert (await sub.get(timeout=WAIT)).data == "still"  # type: ignore[union-attr]

    run(main())


def test_subscriber_uses_a_connection_of_its_own(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        async with async_cache(redis, client_name="ps") as cache:
            shared_id = await cache.execute_command("CLIENT", "ID")
            async with cache.subscribe("x"):
                listing = redis.command("CLIENT", "LIST", "TYPE", "pubsub")
                text = listing.decode() if isinstance(listing, bytes) else str(listing)
                ids = [int(part[3:]) for line in text.splitlines() for part in line.split()
                       if part.startswith("id=")]
                assert len(ids) == 1 and ids[0] != shared_id
                assert "name=ps " in text  # the cache's handshake ran on it

    run(main())


# --------------------------------------------------------------------------
# Values: the serializer, and messages that do not decode
# --------------------------------------------------------------------------


def test_values_go_through_the_serializer(run: Runner, redis: RedisServer) -> None:
    values: list[Any] = [{"a": [1, 2.5, None, True]}, "text", 42, [], "é ☃"]
    with sync_cache(redis) as cache, cache.subscribe("v") as sub:
        for value in values:
            cache.publish("v", value)
        assert data_of([sub.get(timeout=WAIT) for _ in values]) == values
    with sync_cache(redis, serializer="raw") as raw, raw.subscribe(b"v") as sub:
        raw.publish(b"v", b"\x00\xffbytes")
        assert sub.get(timeout=WAIT) == Message("message", "v", b"\x00\xffbytes")

    async def main() -> None:
        async with async_cache(redis, compression="zlib", compression_threshold=10) as cache:
            async with cache.subscribe("big") as sub:
                big = {"text": "z" * 5000}
                await cache.publish("big", big)
                assert (await sub.get(timeout=WAIT)).data == big  # type: ignore[union-attr]

    run(main())


def test_a_message_that_does_not_decode_is_delivered_raw(redis: RedisServer) -> None:
    with sync_cache(redis) as cache, cache.subscribe("feed") as sub:
        redis.command("PUBLISH", "feed", "not json {")  # another program's message
        cache.publish("feed", {"ok": True})
        foreign, ours = sub.get(timeout=WAIT), sub.get(timeout=WAIT)
        assert foreign is not None and foreign.data == b"not json {"
        assert foreign.decode_error is not None
        assert ours == Message("message", "feed", {"ok": True})


def test_bad_input_is_refused_clearly(redis: RedisServer) -> None:
    with sync_cache(redis) as cache:
        with pytest.raises(TypeError, match="channel must be str or bytes"):
            cache.publish(5, "x")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="channel must be str or bytes"):
            cache.subscribe(5)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="list of names"):
            cache.subscribe(patterns="user:*")
        with pytest.raises(ValueError, match="max_queued must be a positive int"):
            cache.subscribe("a", max_queued=0)
        with cache.subscribe("a") as sub, pytest.raises(ValueError, match="timeout"):
            sub.get(timeout=-1)


# --------------------------------------------------------------------------
# Backpressure
# --------------------------------------------------------------------------


def test_sync_full_queue_drops_the_oldest(redis: RedisServer) -> None:
    with sync_cache(redis) as cache, cache.subscribe("q", max_queued=3) as sub:
        for i in range(10):
            cache.publish("q", i)
        # Confirmations follow the messages published before them on the
        # connection: once this returns, all ten were read.
        sub.subscribe("sync-point")
        assert sub.dropped == 7 and sub.queued == 3
        assert data_of([sub.get(timeout=0) for _ in range(3)]) == [7, 8, 9]


def test_async_full_queue_drops_the_oldest(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        async with async_cache(redis) as cache, cache.subscribe("q", max_queued=4) as sub:
            for i in range(10):
                await cache.publish("q", i)
            await sub.subscribe("sync-point")
            assert sub.dropped == 6 and sub.queued == 4
            assert data_of([sub.get_nowait() for _ in range(4)]) == [6, 7, 8, 9]

    run(main())


# --------------------------------------------------------------------------
# Lost connections: resubscription and gaps
# --------------------------------------------------------------------------


def test_sync_resubscribes_after_client_kill_and_reports_the_gap(redis: RedisServer) -> None:
    with sync_cache(redis) as cache, cache.subscribe("a", patterns=["p:*"]) as sub:
        assert cache.publish("a", "before") == 1
        assert sub.get(timeout=WAIT).data == "before"  # type: ignore[union-attr]
        assert redis.command("CLIENT", "KILL", "TYPE", "pubsub") == 1
        gap = sub.get(timeout=WAIT)
        assert gap == Message("reconnected", None, None)
        assert sub.gaps == 1 and sub.reconnects == 1
        assert cache.publish("a", "after") == 1 and cache.publish("p:1", "pattern too") == 1
        assert data_of([sub.get(timeout=WAIT), sub.get(timeout=WAIT)]) == ["after", "pattern too"]
        assert pubsub_clients(redis) == 1


def test_async_resubscribes_after_client_kill_and_reports_the_gap(
    run: Runner, redis: RedisServer
) -> None:
    async def main() -> None:
        async with async_cache(redis) as cache, cache.subscribe("a", patterns=["p:*"]) as sub:
            await sub.subscribe("added-later")
            assert redis.command("CLIENT", "KILL", "TYPE", "pubsub") == 1
            assert await sub.get(timeout=WAIT) == Message("reconnected", None, None)
            assert sub.gaps == 1 and sub.reconnects == 1
            assert await cache.publish("added-later", 1) == 1
            assert await cache.publish("p:2", 2) == 1
            assert data_of([await sub.get(timeout=WAIT), await sub.get(timeout=WAIT)]) == [1, 2]
            assert pubsub_clients(redis) == 1

    run(main())


def test_gaps_counted_without_messages_when_asked(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        async with async_cache(redis) as cache, cache.subscribe("a", report_gaps=False) as sub:
            assert redis.command("CLIENT", "KILL", "TYPE", "pubsub") == 1
            # The next message arrives once it is subscribed again.
            deadline = time.monotonic() + WAIT
            while await cache.publish("a", "x") == 0:
                assert time.monotonic() < deadline, "never subscribed again"
                await asyncio.sleep(0.01)
            message = await sub.get(timeout=WAIT)
            assert message is not None and message.kind == "message"
            assert sub.gaps == 1

    run(main())


def test_a_restarted_server_is_subscribed_again(redis: RedisServer) -> None:
    with sync_cache(redis) as cache, cache.subscribe("r") as sub:
        redis.restart()
        assert sub.get(timeout=WAIT) == Message("reconnected", None, None)
        assert cache.publish("r", "back") == 1
        assert sub.get(timeout=WAIT).data == "back"  # type: ignore[union-attr]


# --------------------------------------------------------------------------
# Closing and cancelling
# --------------------------------------------------------------------------


def test_closing_the_cache_closes_its_subscriptions(run: Runner, redis: RedisServer) -> None:
    cache = sync_cache(redis)
    sub = cache.subscribe("a", patterns=["b*"])
    sub.start()
    assert pubsub_clients(redis) == 1
    cache.close()
    assert sub.closed and sub.get(timeout=0) is None
    eventually(lambda: pubsub_clients(redis) == 0, "the sync subscriber to close")

    async def main() -> None:
        cache = async_cache(redis)
        sub = cache.subscribe("a")
        await sub.start()
        waiting = asyncio.ensure_future(sub.get())
        while not sub._waiters:  # until get() waits
            await asyncio.sleep(0)
        assert pubsub_clients(redis) == 1
        await cache.close()
        assert await asyncio.wait_for(waiting, WAIT) is None  # iteration ends
        assert sub.closed

    run(main())
    eventually(lambda: pubsub_clients(redis) == 0, "the async subscriber to close")


def test_cancelling_a_task_in_async_for_leaks_no_connection(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        async with async_cache(redis) as cache:
            entered = asyncio.Event()

            async def listen() -> None:
                async with cache.subscribe("a", "b", patterns=["c*"]) as sub:
                    entered.set()
                    async for _ in sub:
                        pass

            task = asyncio.ensure_future(listen())
            await asyncio.wait_for(entered.wait(), WAIT)
            assert pubsub_clients(redis) == 1
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await cache.publish("a", 1) in (0, 1)  # the cache still works
        eventually(lambda: pubsub_clients(redis) == 0, "the cancelled subscriber to close")

    run(main())


def test_cancelling_while_connecting_leaks_no_connection(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        async with async_cache(redis) as cache:
            sub = cache.subscribe("a")
            task = asyncio.ensure_future(sub.start())
            while not sub._tasks:  # until its connection is being opened
                await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        eventually(lambda: pubsub_clients(redis) == 0 and "cmd=subscribe" not in
                   str(redis.command("CLIENT", "LIST")), "no subscriber left")

    run(main())


# --------------------------------------------------------------------------
# Connecting: failures, AUTH, TLS
# --------------------------------------------------------------------------


def test_a_first_connection_that_fails_raises(run: Runner, password_server: RedisServer) -> None:
    port = free_port()
    with SyncRedisCache(port=port, socket_connect_timeout=1) as cache:
        with pytest.raises(ConnectionError):
            cache.subscribe("a").start()
    with sync_cache(password_server, password="wrong") as cache:
        with pytest.raises(AuthenticationError):
            cache.subscribe("a").start()

    async def main() -> None:
        async with RedisCache(port=port, socket_connect_timeout=1) as cache:
            with pytest.raises(ConnectionError, match="cannot connect"):
                async with cache.subscribe("a"):
                    pass
        async with async_cache(password_server, password="wrong") as cache:
            with pytest.raises(AuthenticationError):
                async with cache.subscribe("a"):
                    pass

    run(main())


def test_password_server(run: Runner, password_server: RedisServer) -> None:
    with sync_cache(password_server, password=PASSWORD) as cache, cache.subscribe("s") as sub:
        assert cache.publish("s", {"auth": 1}) == 1
        assert sub.get(timeout=WAIT).data == {"auth": 1}  # type: ignore[union-attr]

    async def main() -> None:
        async with async_cache(password_server, password=PASSWORD) as cache:
            async with cache.subscribe("s") as sub:
                assert await cache.publish("s", "ok") == 1
                assert (await sub.get(timeout=WAIT)).data == "ok"  # type: ignore[union-attr]

    run(main())


def test_tls_server(run: Runner, tls_only_server: RedisServer, tls_certs: TLSCertificates) -> None:
    options = {"host": "localhost", "port": tls_only_server.tls_port, "ssl": True,
               "ssl_ca_certs": tls_certs.ca.cert}
    with SyncRedisCache(**options) as cache, cache.subscribe("t") as sub:
        assert cache.publish("t", [1]) == 1
        assert sub.get(timeout=WAIT).data == [1]  # type: ignore[union-attr]

    async def main() -> None:
        async with RedisCache(**options) as cache, cache.subscribe("t", patterns=["u*"]) as sub:
            assert await cache.publish("t", "x" * 100_000) == 1
            assert await cache.publish("u1", 2) == 1
            got = [await sub.get(timeout=WAIT), await sub.get(timeout=WAIT)]
            assert data_of(got) == ["x" * 100_000, 2]

    run(main())


def test_unix_socket(run: Runner, redis: RedisServer) -> None:
    with SyncRedisCache.from_url(redis.unix_url) as cache, cache.subscribe("u") as sub:
        assert cache.publish("u", 3) == 1
        assert sub.get(timeout=WAIT).data == 3  # type: ignore[union-attr]

    async def main() -> None:
        async with RedisCache.from_url(redis.unix_url) as cache, cache.subscribe("u") as sub:
            assert await cache.publish("u", 4) == 1
            assert (await sub.get(timeout=WAIT)).data == 4  # type: ignore[union-attr]

    run(main())


# --------------------------------------------------------------------------
# Redis Cluster
# --------------------------------------------------------------------------


def shard_channels_on_each_primary(cluster: ClusterTopology) -> list[str]:
    """One channel name per primary, each in a slot that primary owns."""
    by_node: dict[int, str] = {}
    i = 0
    while len(by_node) < len(cluster.primaries()):
        name = f"shard:{i}"
        by_node.setdefault(cluster.owner(name).port, name)
        i += 1
    return list(by_node.values())


def test_cluster_plain_channels(run: Runner, healthy_cluster: ClusterTopology) -> None:
    seeds = healthy_cluster.seed_addresses
    with SyncRedisClusterCache(cluster_nodes=seeds) as cache:
        with cache.subscribe("news", patterns=["n:*"]) as sub:
            assert sub.connections == 1  # PUBLISH reaches every node's subscribers
            assert cache.publish("news", {"n": 1}) == 1
            assert cache.publish("n:2", 2) == 1
            assert data_of([sub.get(timeout=WAIT), sub.get(timeout=WAIT)]) == [{"n": 1}, 2]

    async def main() -> None:
        async with RedisClusterCache(cluster_nodes=seeds) as cache:
            async with cache.subscribe("news") as sub:
                assert sub.connections == 1
                assert await cache.publish("news", "hi") == 1
                assert (await sub.get(timeout=WAIT)).data == "hi"  # type: ignore[union-attr]

    run(main())


def test_cluster_shard_channels_across_nodes(run: Runner, healthy_cluster: ClusterTopology) -> None:
    names = shard_channels_on_each_primary(healthy_cluster)
    assert len({key_slot(n) for n in names}) == len(names) == 3
    seeds = healthy_cluster.seed_addresses
    with SyncRedisClusterCache(cluster_nodes=seeds) as cache, cache.ssubscribe(*names) as sub:
        assert sub.connections == 3  # one per node owning the channels' slots
        for name in names:
            assert cache.spublish(name, {"on": name}) == 1
        got = [sub.get(timeout=WAIT) for _ in names]
        assert sorted((m.kind, m.channel, m.data["on"]) for m in got if m) == sorted(
            ("smessage", n, n) for n in names)

    async def main() -> None:
        async with RedisClusterCache(cluster_nodes=seeds) as cache:
            async with cache.ssubscribe(names[0]) as sub:
                await sub.subscribe(shard_channels=names[1:])
                assert sub.connections == 3
                for name in names:
                    assert await cache.spublish(name, name) == 1
                got = {(await sub.get(timeout=WAIT)).data for _ in names}  # type: ignore[union-attr]
                assert got == set(names)

    run(main())


def test_cluster_shard_channel_follows_its_slot(run: Runner, healthy_cluster: ClusterTopology) -> None:
    name = shard_channels_on_each_primary(healthy_cluster)[0]
    source = healthy_cluster.owner(name)
    target = next(p for p in healthy_cluster.primaries() if p.port != source.port)

    async def main() -> None:
        async with RedisClusterCache(cluster_nodes=healthy_cluster.seed_addresses) as cache:
            async with cache.ssubscribe(name) as sub:
                await asyncio.to_thread(healthy_cluster.migrate_slot, key_slot(name), target)
                # The old owner drops the channel (an unasked sunsubscribe);
                # the subscription follows the slot and says it may have
                # missed messages.
                assert await sub.get(timeout=WAIT) == Message("reconnected", None, None)
                assert sub.gaps == 1
                assert await cache.spublish(name, "moved") == 1
                assert (await sub.get(timeout=WAIT)).data == "moved"  # type: ignore[union-attr]

    run(main())


def test_cluster_sync_resubscribes_after_client_kill(healthy_cluster: ClusterTopology) -> None:
    names = shard_channels_on_each_primary(healthy_cluster)
    with SyncRedisClusterCache(cluster_nodes=healthy_cluster.seed_addresses) as cache:
        with cache.subscribe("plain", shard_channels=names) as sub:
            killed = sum(int(p.command("CLIENT", "KILL", "TYPE", "pubsub"))
                         for p in healthy_cluster.primaries())
            assert killed == 4
            gaps = [sub.get(timeout=WAIT) for _ in range(4)]
            assert all(m == Message("reconnected", None, None) for m in gaps), (gaps, sub.gaps, sub.reconnects)
            assert sub.gaps == 4 and sub.reconnects == 4
            assert cache.publish("plain", 0) == 1
            for name in names:
                assert cache.spublish(name, name) == 1
            got = [sub.get(timeout=WAIT) for _ in range(4)]
            assert sorted(str(m.data) for m in got if m) == sorted(["0", *names])


def test_cluster_shard_channel_after_a_failover(healthy_cluster: ClusterTopology) -> None:
    name = shard_channels_on_each_primary(healthy_cluster)[0]
    owner = healthy_cluster.owner(name)
    replica = healthy_cluster.replicas_of(owner)[0]
    with SyncRedisClusterCache(cluster_nodes=healthy_cluster.seed_addresses) as cache:
        with cache.ssubscribe(name) as sub:
            healthy_cluster.failover(replica)
            # Whether the demoted node keeps its shard subscribers or drops
            # them (then the subscription follows the slot and says so), a
            # message published at the new owner arrives.
            deadline = time.monotonic() + WAIT
            while cache.spublish(name, "after failover") == 0:
                assert time.monotonic() < deadline, "never subscribed at the new owner"
                sub.get(timeout=0.05)
            messages = [sub.get(timeout=WAIT)]
            while messages[-1] is not None and messages[-1].kind == "reconnected":
                messages.append(sub.get(timeout=WAIT))
            assert messages[-1] == Message("smessage", name, "after failover")


# --------------------------------------------------------------------------
# Sentinel
# --------------------------------------------------------------------------


def test_sentinel_failover_moves_subscribers_to_the_new_primary(
    run: Runner, healthy_sentinel_topology: Any
) -> None:
    from conftest import SENTINEL_PASSWORD, SERVICE_NAME

    topology = healthy_sentinel_topology
    options = {"sentinels": topology.sentinel_addresses, "service_name": SERVICE_NAME,
               "password": PASSWORD, "sentinel_password": SENTINEL_PASSWORD,
               "socket_timeout": 2, "connect_wait": 10, "client_name": "ps-sentinel"}
    reconnected = Message("reconnected", None, None)

    async def main() -> None:
        async with RedisCache(**options) as acache, acache.subscribe("f") as asub:
            with SyncRedisCache(**options) as scache, scache.subscribe("f") as ssub:
                assert pubsub_clients(topology.primary(), "ps-sentinel") == 2
                await asyncio.to_thread(topology.failover)
                assert await asub.get(timeout=WAIT) == reconnected
                assert await asyncio.to_thread(ssub.get, WAIT) == reconnected
                new_primary = topology.primary()
                await asyncio.to_thread(eventually, lambda: pubsub_clients(new_primary, "ps-sentinel") == 2,
                                        "both subscribers on the new primary")
                assert await acache.publish("f", "new primary") == 2
                assert (await asub.get(timeout=WAIT)).data == "new primary"  # type: ignore[union-attr]
                got = await asyncio.to_thread(ssub.get, WAIT)
                assert got is not None and got.data == "new primary"

    run(main())


def test_a_server_that_stops_answering_is_noticed_by_the_health_check(
    run: Runner, redis: RedisServer
) -> None:
    async def main() -> None:
        async with async_cache(redis) as cache:
            async with cache.subscribe("h", health_check_interval=0.1) as sub:
                redis.pause()  # SIGSTOP: the socket stays open, nothing answers
                try:
                    deadline = time.monotonic() + WAIT
                    while sub.gaps == 0:
                        assert time.monotonic() < deadline, "the dead connection went unnoticed"
                        await asyncio.sleep(0.02)
                finally:
                    redis.resume()
                assert await sub.get(timeout=WAIT) == Message("reconnected", None, None)
                assert await cache.publish("h", "alive") == 1
                assert (await sub.get(timeout=WAIT)).data == "alive"  # type: ignore[union-attr]
        eventually(lambda: pubsub_clients(redis) == 0, "the subscriber to close")

    run(main())


def test_sync_health_check(redis: RedisServer) -> None:
    with sync_cache(redis) as cache, cache.subscribe("h", health_check_interval=0.1) as sub:
        redis.pause()
        try:
            deadline = time.monotonic() + WAIT
            while sub.gaps == 0:
                assert time.monotonic() < deadline, "the dead connection went unnoticed"
                assert sub.get(timeout=0.05) is None
        finally:
            redis.resume()
        assert sub.get(timeout=WAIT) == Message("reconnected", None, None)
        assert cache.publish("h", "alive") == 1
        assert sub.get(timeout=WAIT).data == "alive"  # type: ignore[union-attr]


def test_two_tasks_waiting_both_get_messages(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        async with async_cache(redis) as cache, cache.subscribe("two") as sub:
            waiting = [asyncio.ensure_future(sub.get(timeout=WAIT)) for _ in range(2)]
            while len(sub._waiters) < 2:  # until both wait
                await asyncio.sleep(0)
            await cache.publish("two", 1)
            await cache.publish("two", 2)
            got = await asyncio.gather(*waiting)
            assert sorted(data_of(got)) == [1, 2]

    run(main())


def test_a_refused_channel_raises_and_is_not_kept(run: Runner, redis: RedisServer) -> None:
    redis.command("ACL", "SETUSER", "limited", "on", ">limited-pw", "~*", "resetchannels",
                  "&allowed:*", "+@all")
    try:
        options = {"username": "limited", "password": "limited-pw"}
        with sync_cache(redis, **options) as cache:
            with pytest.raises(ResponseError, match="NOPERM"):
                cache.subscribe("forbidden").start()
            with cache.subscribe("allowed:1") as sub:
                with pytest.raises(ResponseError, match="NOPERM"):
                    sub.subscribe("forbidden")
                assert sub.channels == {"allowed:1"}
                assert cache.publish("allowed:1", "yes") == 1
                assert sub.get(timeout=WAIT).data == "yes"  # type: ignore[union-attr]

        async def main() -> None:
            async with async_cache(redis, **options) as cache:
                async with cache.subscribe("allowed:2") as sub:
                    with pytest.raises(ResponseError, match="NOPERM"):
                        await sub.subscribe(patterns=["*"])
                    assert sub.patterns == frozenset()
                    assert await cache.publish("allowed:2", 2) == 1
                    assert (await sub.get(timeout=WAIT)).data == 2  # type: ignore[union-attr]

        run(main())
    finally:
        redis.command("ACL", "DELUSER", "limited")


def test_a_server_that_never_answers_times_out(run: Runner) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        port = silent.getsockname()[1]
        with SyncRedisCache(port=port, socket_timeout=0.3) as cache:
            with pytest.raises(TimeoutError, match="did not confirm the subscription"):
                cache.subscribe("a").start()

        async def main() -> None:
            async with RedisCache(port=port, socket_timeout=0.3) as cache:
                with pytest.raises(TimeoutError, match="did not confirm the subscription"):
                    async with cache.subscribe("a"):
                        pass

        run(main())


def test_cluster_ssubscribe_with_a_stale_map_follows_moved(
    run: Runner, healthy_cluster: ClusterTopology
) -> None:
    names = shard_channels_on_each_primary(healthy_cluster)
    wrong = healthy_cluster.owner(names[1]).address  # a node that does not own names[0]

    def make_stale(cache: Any) -> None:
        cache._map.moved(key_slot(names[0]), wrong)
        cache._map.loaded_at = time.monotonic() + 3600  # not reloaded before use

    with SyncRedisClusterCache(cluster_nodes=healthy_cluster.seed_addresses) as cache:
        with cache.ssubscribe(names[1]) as sub:
            make_stale(cache)
            sub.subscribe(shard_channels=[names[0]])  # MOVED, then at the owner
            assert cache.spublish(names[0], "found") == 1
            assert sub.get(timeout=WAIT) == Message("smessage", names[0], "found")
            assert sub.gaps == 0  # nothing was missed: it was never subscribed elsewhere
            assert sub.connections == 2  # names[0] went to its owner, not the wrong node

    async def main() -> None:
        async with RedisClusterCache(cluster_nodes=healthy_cluster.seed_addresses) as cache:
            async with cache.ssubscribe(names[1]) as sub:
                make_stale(cache)
                await sub.subscribe(shard_channels=[names[0]])
                assert await cache.spublish(names[0], "found") == 1
                assert await sub.get(timeout=WAIT) == Message("smessage", names[0], "found")
                assert sub.gaps == 0 and sub.connections == 2

    run(main())


def test_cluster_sync_shard_channel_follows_its_slot(healthy_cluster: ClusterTopology) -> None:
    name = shard_channels_on_each_primary(healthy_cluster)[0]
    source = healthy_cluster.owner(name)
    target = next(p for p in healthy_cluster.primaries() if p.port != source.port)
    with SyncRedisClusterCache(cluster_nodes=healthy_cluster.seed_addresses) as cache:
        with cache.ssubscribe(name) as sub:
            healthy_cluster.migrate_slot(key_slot(name), target)
            assert sub.get(timeout=WAIT) == Message("reconnected", None, None)
            assert sub.gaps == 1 and sub.reconnects == 1
            assert cache.spublish(name, "moved") == 1
            assert sub.get(timeout=WAIT) == Message("smessage", name, "moved")
            assert pubsub_clients(target) == 1


def grows(fn: Callable[[], Any], n: int) -> tuple[int, int]:
    """How much traced memory and how many gc-tracked objects n calls of fn
    (after a warm-up) leave behind."""
    import gc
    import tracemalloc

    for _ in range(n // 5):
        fn()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0], len(gc.get_objects())
        for _ in range(n):
            fn()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0], len(gc.get_objects())
    finally:
        tracemalloc.stop()
    return after[0] - before[0], after[1] - before[1]


def test_subscriptions_and_messages_do_not_leak(redis: RedisServer) -> None:
    with sync_cache(redis) as cache, cache.subscribe("m") as sub:
        def message_round_trip() -> None:
            cache.publish("m", {"a": [1, "x"]})
            assert sub.get(timeout=WAIT) is not None

        memory, objects = grows(message_round_trip, 3000)
        assert memory < 200_000 and objects < 100, (memory, objects)

        def subscribe_and_close() -> None:
            with cache.subscribe("x", patterns=["y*"]):
                pass

        memory, objects = grows(subscribe_and_close, 300)
        assert memory < 200_000 and objects < 100, (memory, objects)


def test_async_subscriptions_and_messages_do_not_leak(redis: RedisServer) -> None:
    loop = asyncio.new_event_loop()
    try:
        cache = async_cache(redis)
        sub = cache.subscribe("m")
        loop.run_until_complete(sub.start())

        def message_round_trip() -> None:
            async def once() -> None:
                await cache.publish("m", {"a": [1, "x"]})
                assert await sub.get(timeout=WAIT) is not None
            loop.run_until_complete(once())

        # The event loop's own bookkeeping moves the object count by a few
        # dozen either way; a leak would add at least one per call.
        memory, objects = grows(message_round_trip, 2000)
        assert memory < 200_000 and objects < 1000, (memory, objects)

        def subscribe_and_close() -> None:
            async def once() -> None:
                async with cache.subscribe("x", patterns=["y*"]):
                    pass
            loop.run_until_complete(once())

        memory, objects = grows(subscribe_and_close, 300)
        assert memory < 200_000 and objects < 300, (memory, objects)
        loop.run_until_complete(cache.close())
    finally:
        loop.close()


def test_an_empty_subscription_takes_names_later(run: Runner, redis: RedisServer) -> None:
    with sync_cache(redis) as cache, cache.subscribe() as sub:
        assert sub.connections == 0 and sub.get(timeout=0) is None
        sub.subscribe("late")
        assert cache.publish("late", 1) == 1
        assert sub.get(timeout=WAIT).data == 1  # type: ignore[union-attr]

    async def main() -> None:
        async with async_cache(redis) as cache, cache.subscribe() as sub:
            assert sub.connections == 0
            await sub.subscribe(patterns=["late*"])
            assert await cache.publish("later", 2) == 1
            assert (await sub.get(timeout=WAIT)).data == 2  # type: ignore[union-attr]

    run(main())


def test_the_readme_example_runs(redis: RedisServer) -> None:
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("### Pub/sub"):]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None
    env = {**os.environ, "REDIS_URL": redis.url}
    done = subprocess.run([sys.executable, "-c", match.group(1)], env=env, capture_output=True,
                          text=True, timeout=WAIT * 3)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "orders None {'id': 7, 'total': 12.5}\n"


def test_a_serializer_closing_the_subscription_mid_read(run: Runner, redis: RedisServer) -> None:
    """Messages are decoded while the C reader dispatches a read: a loads()
    that closes the subscription there must stop the reading cleanly."""
    import json

    holder: dict[str, Any] = {}

    class Closing:
        def dumps(self, value: Any) -> bytes:
            return json.dumps(value).encode()

        def loads(self, data: bytes) -> Any:
            value = json.loads(data)
            if value == "close":
                holder["sub"].close()
            return value

    async def main() -> None:
        async with async_cache(redis, serializer=Closing()) as cache:
            async with cache.subscribe("c") as sub:
                holder["sub"] = sub
                # One read holds all three: the second closes mid-dispatch.
                await asyncio.gather(cache.publish("c", 1), cache.publish("c", "close"),
                                     cache.publish("c", 3))
                got = [m.data async for m in sub]
                assert got[:2] == [1, "close"] and len(got) <= 3
                assert sub.closed
                assert await cache.get("nothing") is None  # the cache is unharmed

    run(main())
    eventually(lambda: pubsub_clients(redis) == 0, "the subscriber to close")


def test_an_unclosed_sync_subscription_warns(redis: RedisServer) -> None:
    import gc

    with sync_cache(redis) as cache:
        sub = cache.subscribe("forgotten")
        sub.start()
        with pytest.warns(ResourceWarning, match="unclosed"):
            del sub
            gc.collect()
        eventually(lambda: pubsub_clients(redis) == 0, "the forgotten subscriber's socket to close")
