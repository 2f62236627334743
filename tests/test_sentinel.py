"""Sentinel: both clients find the primary through the Sentinels, follow it
through a failover (SENTINEL FAILOVER, and SIGKILL of the primary) under
load, never read a value nobody wrote, and say clearly what is wrong when
the Sentinels cannot help (all down, wrong service name, wrong password).
A primary demoted in place under a plain redis:// URL is covered too.

Servers come from the fixtures in conftest.py: one primary, two replicas and
three Sentinels for the session (``healthy_sentinel_topology`` restores it
between tests), a TLS one, and a replication group without Sentinel.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from async_support import Runner, run  # noqa: F401
from conftest import PASSWORD, SENTINEL_PASSWORD, SERVICE_NAME

from redis_cache import (
    AuthenticationError,
    ConfigurationError,
    ConnectionError,
    FailoverError,
    RedisCache,
    SyncRedisCache,
    TimeoutError,
)
from redis_cache._testing_tls import TLSCertificates
from redis_cache.testing import RedisServer, ReplicationGroup, SentinelTopology

NAME = "sentinel-test"


def options(topology: SentinelTopology, **extra: Any) -> dict[str, Any]:
    return {
        "sentinels": topology.sentinel_addresses,
        "service_name": SERVICE_NAME,
        "password": PASSWORD,
        "sentinel_password": SENTINEL_PASSWORD,
        "client_name": NAME,
        "socket_timeout": 2,
        "connect_wait": 10,
        **extra,
    }


def connected_to(topology: SentinelTopology) -> list[int]:
    """The ports of the data nodes our connections (named NAME) are on."""
    ports = []
    for node in topology.nodes:
        if not node.running:
            continue
        try:
            listing = node.command("CLIENT", "LIST")
        except builtins.ConnectionError:
            # A node changing role mid-failover closes its clients'
            # connections, the harness's included: ask once more.
            listing = node.command("CLIENT", "LIST")
        if f"name={NAME} " in listing:
            ports.append(node.address[1])
    return ports


def test_both_clients_find_the_primary(run: Runner, healthy_sentinel_topology: SentinelTopology) -> None:
    topology = healthy_sentinel_topology
    primary = topology.primary_address()
    with SyncRedisCache(**options(topology)) as cache:
        assert cache.set("k", {"v": 1}) is True
        assert cache.get("k") == {"v": 1}
        assert connected_to(topology) == [primary[1]]

    async def main() -> None:
        async with RedisCache(**options(topology)) as cache:
            assert await cache.get("k") == {"v": 1}
            assert await cache.set("a", 2) is True
            assert connected_to(topology) == [primary[1]]

    run(main())


def test_url_and_environment(healthy_sentinel_topology: SentinelTopology) -> None:
    topology = healthy_sentinel_topology
    hosts = ",".join(f"{h}:{p}" for h, p in topology.sentinel_addresses)
    url = f"redis+sentinel://:{PASSWORD}@{hosts}/{SERVICE_NAME}/2?sentinel_password={SENTINEL_PASSWORD}"
    with SyncRedisCache.from_url(url) as cache:
        assert cache.set("db2", 1) is True
    assert topology.primary().command("SELECT", "2") == "OK"
    env = {
        "REDIS_USE_SENTINEL": "true",
        "REDIS_SENTINELS": hosts,
        "REDIS_SENTINEL_SERVICE_NAME": SERVICE_NAME,
        "REDIS_SENTINEL_PASSWORD": SENTINEL_PASSWORD,
        "REDIS_PASSWORD": PASSWORD,
    }
    with SyncRedisCache.from_env(env) as cache:
        assert cache.set("env", 1) is True
        assert cache.get("env") == 1
        assert cache.settings.describe().startswith("redis+sentinel://")


# What a command may fail with while the primary changes under it.
SWITCHOVER_ERRORS = (ConnectionError, TimeoutError, FailoverError)


def wait_until_connected_to(
    topology: SentinelTopology, node: RedisServer, command: Callable[[], Any]
) -> None:
    """Runs command until our only connections are on node (bounded): the
    failover is announced a moment after the new primary answers as one."""
    deadline = time.monotonic() + 10
    while True:
        try:
            command()
            succeeded = True
        except SWITCHOVER_ERRORS:
            # A connection to the old primary cut as it steps down fails the
            # command in flight on it (not retried: see DESIGN.md).
            succeeded = False
        if succeeded and connected_to(topology) == [node.address[1]]:
            return
        assert time.monotonic() < deadline, connected_to(topology)
        time.sleep(0.05)


class Load:
    """Writers and readers hammering keys while the topology changes. Each
    key has one writer (so its writes reach the server in order) and its
    values only grow: a read that sees a value no writer wrote for that key,
    or one older than the key's last write confirmed before the read began,
    is a reply that reached the wrong caller or a stale node."""

    KEYS = 20
    WRITERS = 4

    def __init__(self) -> None:
        self.confirmed = [0] * self.KEYS  # last value a writer saw stored
        self.attempted = [0] * self.KEYS  # last value a writer tried
        self.failures: list[BaseException] = []
        self.reads = 0
        self.older = 0
        self.bad: list[str] = []
        self.stop = threading.Event()

    def check_read(self, key: int, value: Any, confirmed_before: int) -> None:
        self.reads += 1
        if value is None:
            return  # before any write reached the new primary
        if not isinstance(value, int) or value > self.attempted[key]:
            self.bad.append(f"k{key} read {value!r}, never written")
        elif value < confirmed_before:
            # Redis replicates asynchronously: writes the old primary took
            # after the replica was promoted (and before Sentinel turned it
            # into a replica) are lost in any failover. Counted, not a bug.
            self.older += 1

    def key_for(self, worker: int, n: int, writing: bool) -> int:
        if writing:  # only this worker's keys
            return (worker % self.WRITERS) + self.WRITERS * (n % (self.KEYS // self.WRITERS))
        return n % self.KEYS

    def sync_worker(self, cache: SyncRedisCache, worker: int) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            writing = n % 2 == 1 and worker < self.WRITERS
            key = self.key_for(worker, n, writing)
            try:
                if writing:
                    value = self.attempted[key] + 1
                    self.attempted[key] = value
                    if cache.set(f"k{key}", value):
                        self.confirmed[key] = max(self.confirmed[key], value)
                else:
                    before = self.confirmed[key]
                    self.check_read(key, cache.get(f"k{key}"), before)
            except SWITCHOVER_ERRORS as exc:
                self.failures.append(exc)


def run_sync_load(cache: SyncRedisCache, load: Load, change: Callable[[], Any]) -> Any:
    threads = [threading.Thread(target=load.sync_worker, args=(cache, i)) for i in range(4)]
    for thread in threads:
        thread.start()
    try:
        result = change()
        deadline = time.monotonic() + 10
        reads = load.reads
        while load.reads < reads + 50 and time.monotonic() < deadline:
            time.sleep(0.01)  # a bounded wait for progress after the change
    finally:
        load.stop.set()
        for thread in threads:
            thread.join(30)
    return result


@pytest.mark.parametrize("how", ["failover", "kill"])
def test_sync_client_follows_the_primary_under_load(
    healthy_sentinel_topology: SentinelTopology, how: str
) -> None:
    topology = healthy_sentinel_topology
    load = Load()
    with SyncRedisCache(**options(topology, max_connections=8)) as cache:
        assert cache.set("warm", 1) is True
        # The primary now (an earlier test's failover may have moved it).
        old_primary = topology.node_at(topology.primary_address())
        change = topology.failover if how == "failover" else topology.kill_primary
        new_primary = run_sync_load(cache, load, change)
        assert load.reads > 0
        assert load.bad == []
        assert len(load.failures) < 200, load.failures[:5]
        # Working on the new primary without anyone's help: once the
        # Sentinels' announcement is in, connections go there.
        wait_until_connected_to(topology, new_primary, lambda: cache.set("after", 1))
        assert cache.get("after") == 1
        if how == "kill":
            # The killed node comes back as a replica; nothing moves.
            topology.restart_node(old_primary)
            wait_until_connected_to(topology, new_primary, lambda: cache.set("after-restart", 2))


async def async_load(cache: RedisCache, load: Load, worker: int) -> None:
    n = 0
    while not load.stop.is_set():
        n += 1
        writing = n % 2 == 1 and worker < Load.WRITERS
        key = load.key_for(worker, n, writing)
        try:
            if writing:
                value = load.attempted[key] + 1
                load.attempted[key] = value
                if await cache.set(f"k{key}", value):
                    load.confirmed[key] = max(load.confirmed[key], value)
            else:
                before = load.confirmed[key]
                load.check_read(key, await cache.get(f"k{key}"), before)
        except SWITCHOVER_ERRORS as exc:
            load.failures.append(exc)
            await asyncio.sleep(0)


@pytest.mark.parametrize("how", ["failover", "kill"])
def test_async_client_follows_the_primary_under_load(
    run: Runner,
    healthy_sentinel_topology: SentinelTopology,
    how: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    topology = healthy_sentinel_topology
    load = Load()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with RedisCache(**options(topology)) as cache:
            assert await cache.set("warm", 1) is True
            assert cache._discovery is not None
            # Announcements come only once the listener is subscribed.
            listening = cache._discovery.listening
            assert await loop.run_in_executor(None, listening.wait, 10)
            workers = [asyncio.ensure_future(async_load(cache, load, i)) for i in range(20)]
            change = topology.failover if how == "failover" else topology.kill_primary
            new_primary = await loop.run_in_executor(None, change)
            reads = load.reads
            deadline = time.monotonic() + 10
            while load.reads < reads + 100 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            load.stop.set()
            await asyncio.gather(*workers)
            assert load.reads > reads
            assert load.bad == []
            assert len(load.failures) < 500, load.failures[:5]
            deadline = time.monotonic() + 10
            while True:
                try:
                    succeeded = await cache.set("after", 1) is True
                except SWITCHOVER_ERRORS:
                    succeeded = False  # cut on the old primary, as above
                if succeeded and connected_to(topology) == [new_primary.address[1]]:
                    break
                assert time.monotonic() < deadline, connected_to(topology)
                await asyncio.sleep(0.05)
            if how == "failover":
                # The Sentinels publish +switch-master once the replicas are
                # reconfigured, a little after they start naming the new
                # primary: wait for it (bounded).
                deadline = time.monotonic() + 20
                while not announced():
                    assert time.monotonic() < deadline, "no +switch-master announcement seen"
                    await asyncio.sleep(0.05)

    def announced() -> bool:
        return any("Sentinel announced a new primary" in r.getMessage() for r in caplog.records)

    with caplog.at_level(logging.INFO, logger="redis_cache"):
        run(main(), timeout=120)


def test_dedicated_connections_and_decorators_follow_the_primary(
    run: Runner, healthy_sentinel_topology: SentinelTopology
) -> None:
    topology = healthy_sentinel_topology

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with RedisCache(**options(topology)) as cache:
            calls = []

            @cache.cached(ttl=60, lock=True)
            async def compute(x: int) -> int:
                calls.append(x)
                return x * 10

            assert await compute(1) == 10
            async with cache.dedicated() as conn:
                assert await conn.execute_command("SET", "d", "1") == "OK"
            new_primary = await loop.run_in_executor(None, topology.failover)
            # Until the announcement is in, the old primary still takes
            # writes (Sentinel turns it into a replica a moment later): the
            # dedicated connections follow within a bounded time.
            deadline = time.monotonic() + 10
            while True:
                try:
                    async with cache.dedicated() as conn:
                        reply = await asyncio.wait_for(conn.execute_command("SET", "d", "2"), 20)
                    assert reply == "OK"
                except ConnectionError:
                    # An idle one on the old primary is cut as it steps down
                    # (closed, not reused); the next one finds the new one.
                    pass
                if new_primary.command("GET", "d") == "2":
                    break
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            assert await compute(2) == 20
            assert calls == [1, 2]

    run(main(), timeout=120)


def test_one_sentinel_down_is_fine_all_down_is_a_clear_error(
    run: Runner, healthy_sentinel_topology: SentinelTopology
) -> None:
    topology = healthy_sentinel_topology
    topology.stop_sentinel(0)
    with SyncRedisCache(**options(topology)) as cache:
        assert cache.ping() is True
    for i in (1, 2):
        topology.stop_sentinel(i)
    try:
        with SyncRedisCache(**options(topology, connect_wait=0)) as cache:
            with pytest.raises(ConnectionError, match="no working primary") as info:
                cache.ping()
            assert "Sentinel" in str(info.value)

        async def main() -> None:
            async with RedisCache(**options(topology, connect_wait=0)) as cache:
                with pytest.raises(ConnectionError, match="no working primary"):
                    await asyncio.wait_for(cache.ping(), 20)

        run(main())
    finally:
        for i in range(3):
            topology.start_sentinel(i)


def test_wrong_service_name_and_wrong_sentinel_password(
    run: Runner, healthy_sentinel_topology: SentinelTopology
) -> None:
    topology = healthy_sentinel_topology
    with SyncRedisCache(**options(topology, service_name="nosuch")) as cache:
        with pytest.raises(ConfigurationError, match="no Sentinel monitors a primary named 'nosuch'"):
            cache.ping()
    with SyncRedisCache(**options(topology, sentinel_password="wrong")) as cache:
        with pytest.raises(AuthenticationError, match="refused the credentials"):
            cache.ping()

    async def main() -> None:
        async with RedisCache(**options(topology, service_name="nosuch")) as cache:
            with pytest.raises(ConnectionError, match="no Sentinel monitors"):
                await asyncio.wait_for(cache.ping(), 20)
        async with RedisCache(**options(topology, sentinel_password="wrong")) as cache:
            with pytest.raises(ConnectionError, match="refused the credentials"):
                await asyncio.wait_for(cache.ping(), 20)

    run(main())


def test_sentinel_over_tls(
    run: Runner, tls_sentinel_topology: SentinelTopology, tls_certs: TLSCertificates
) -> None:
    topology = tls_sentinel_topology
    tls = {
        "ssl": True,
        "ssl_ca_certs": tls_certs.ca.cert,
        "ssl_certfile": tls_certs.client.cert,
        "ssl_keyfile": tls_certs.client.key,
        "ssl_check_hostname": False,  # Sentinel hands out IP addresses
    }
    common = {
        "sentinels": topology.sentinel_addresses,
        "service_name": SERVICE_NAME,
        "connect_wait": 10,
        **tls,
    }
    with SyncRedisCache(**common) as cache:
        assert cache.set("tls", 1) is True
        assert cache.get("tls") == 1

    async def main() -> None:
        async with RedisCache(**common) as cache:
            assert await cache.get("tls") == 1

    run(main())


def test_primary_demoted_in_place_under_a_plain_url(
    run: Runner, replication_group: ReplicationGroup
) -> None:
    """The node a plain URL names becomes a replica (REPLICAOF): writes are
    refused with FailoverError (the connection is dropped, the name looked up
    again, the write sent once more, refused again); when the name points to
    a primary again the cache writes there without help."""
    group = replication_group
    node = group.primary
    with SyncRedisCache(port=node.port, connect_wait=0) as cache:
        assert cache.set("k", 1) is True
        group.demote_in_place()
        with pytest.raises(FailoverError, match="READONLY"):
            cache.set("k", 2)
        assert cache.get("k") == 1  # reads still work on a replica
        group.promote(node)
        assert cache.set("k", 3) is True

    async def main() -> None:
        async with RedisCache(port=node.port, connect_wait=0) as cache:
            assert await cache.set("k", 4) is True
            await asyncio.get_running_loop().run_in_executor(None, group.demote_in_place)
            with pytest.raises(FailoverError, match="READONLY"):
                await cache.set("k", 5)
            await asyncio.get_running_loop().run_in_executor(None, group.promote, node)
            assert await cache.set("k", 6) is True

    run(main())


@contextlib.contextmanager
def slow_to_suspect(topology: SentinelTopology, down_after_ms: int) -> Iterator[None]:
    """The Sentinels' down-after-milliseconds raised for the block. A test
    that loads this 2-core machine while it fails over on purpose must not
    get a second, unasked-for failover from a primary that answered a PING
    late (seen in CI: the promoted replica suspected and replaced within a
    second)."""

    def set_all(ms: int) -> None:
        for sentinel in topology.sentinels:
            if sentinel.running:
                sentinel.command(
                    "SENTINEL", "SET", topology.service_name, "down-after-milliseconds", ms
                )

    set_all(down_after_ms)
    try:
        yield
    finally:
        set_all(topology.down_after_ms)


def test_writes_move_as_soon_as_the_replica_is_promoted(
    run: Runner, healthy_sentinel_topology: SentinelTopology, caplog: pytest.LogCaptureFixture
) -> None:
    """During SENTINEL FAILOVER the old primary keeps taking writes until the
    Sentinels reconfigure it, about a second after the replica was promoted;
    the failover then throws them away. The clients watch the replica the
    Sentinels select (+selected-slave) and move as soon as it answers as a
    primary, once, and every write issued after that is one the new primary
    holds."""
    topology = healthy_sentinel_topology
    issued: list[tuple[float, str]] = []  # (when the write was issued, key), acknowledged only
    stop = asyncio.Event()

    async def main() -> Any:
        loop = asyncio.get_running_loop()
        async with RedisCache(**options(topology), serializer="raw") as cache:
            assert await cache.set("warm", "1") is True
            assert cache._discovery is not None
            assert await loop.run_in_executor(None, cache._discovery.listening.wait, 10)
            counter = iter(range(10**9))

            async def writer() -> None:
                while not stop.is_set():
                    key = f"w:{next(counter)}"
                    started = time.monotonic()
                    try:
                        if await cache.set(key, "1"):
                            issued.append((started, key))
                    except SWITCHOVER_ERRORS:
                        await asyncio.sleep(0.001)

            workers = [asyncio.ensure_future(writer()) for _ in range(20)]
            new_primary = await loop.run_in_executor(None, topology.failover)
            deadline = time.monotonic() + 20
            while not any("Sentinel event promoted" in r.getMessage() for r in caplog.records):
                assert time.monotonic() < deadline, "no promotion announced"
                await asyncio.sleep(0.05)
            stop.set()
            await asyncio.gather(*workers)
            return new_primary

    with caplog.at_level(logging.DEBUG, logger="redis_cache"), slow_to_suspect(topology, 10_000):
        new_primary = run(main(), timeout=120)
    events = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Sentinel event")]
    assert events and events[0].startswith("Sentinel event selected"), events
    switches = [r for r in caplog.records if "Sentinel announced a new primary" in r.getMessage()]
    assert len(switches) == 1, [r.getMessage() for r in switches]  # moved once, not per event
    announced_at = switches[0].created - time.time() + time.monotonic()
    topology.wait_healthy()
    later = [key for started, key in issued if started > announced_at + 0.005]
    assert later, "no write was issued after the announcement"
    held = []
    for i in range(0, len(later), 1000):
        chunk = later[i:i + 1000]
        values = new_primary.command("MGET", *chunk)
        held.extend(k for k, v in zip(chunk, values) if v is not None)
    assert len(held) == len(later), f"{len(later) - len(held)} acknowledged writes lost"
