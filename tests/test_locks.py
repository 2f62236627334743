"""The public lock: ``with cache.lock(...)`` and ``async with cache.lock(...)``.

* Mutual exclusion: threads, asyncio tasks and real processes increment a
  counter kept in Redis with a non-atomic GET then SET inside the lock; no
  increment is lost and no two holders are ever inside at once. The fencing
  tokens pushed from inside the lock come out strictly increasing.
* Wake-up on release: the waiter blocks in BLPOP (the server says so) with a
  wait shorter than the holder's lease, so it can only get the lock because
  the release woke it; the events it records come after the holder's.
* Takeover: a holder SIGKILLed (or abandoned without renewal) loses the lock
  once its lease ends; the next holder gets a larger fencing token, and the
  old holder's release leaves the new holder's lock alone and reports
  LockLost.
* Renewal keeps a lock held past its first lease; extend() lengthens it;
  LockTimeout, wait=0, and bad input give clear errors.
* Redis Cluster: the three keys of a lock share one slot on its node; the
  lock works (and wakes waiters) for names on every primary. Sentinel: the
  lock, scan and key_info through the discovered primary.

Ordering comes from events, blocking pops and the server's own view
(``INFO clients``); the only waits are polls of an observable condition
under a generous deadline.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from async_support import Runner, run  # noqa: F401  (run is a fixture)
from conftest import PASSWORD, SENTINEL_PASSWORD, SERVICE_NAME
from lock_support import (
    DEADLINE,
    async_wait_until,
    blocked_clients,
    python_processes,
    wait_until,
)
from redis_raw import raw

import redis_cache
from redis_cache import (
    AsyncLock,
    Lock,
    LockError,
    LockLost,
    LockTimeout,
    RedisCache,
    RedisClusterCache,
    SyncRedisCache,
    SyncRedisClusterCache,
)
from redis_cache._testing_cluster import ClusterTopology
from redis_cache.cluster import key_slot
from redis_cache.locks import lock_keys
from redis_cache.testing import RedisServer, SentinelTopology

NS = "lk"


def strictly_increasing(values: list[int]) -> bool:
    return all(a < b for a, b in zip(values, values[1:]))


class Inside:
    """Counts holders inside a critical section and remembers the most at once."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0
        self._guard = threading.Lock()

    def enter(self) -> None:
        with self._guard:
            self.now += 1
            self.most = max(self.most, self.now)

    def leave(self) -> None:
        with self._guard:
            self.now -= 1


# ---------------------------------------------------------------------------
# mutual exclusion
# ---------------------------------------------------------------------------


def test_threads_increment_a_shared_counter_without_losing_one(redis: RedisServer) -> None:
    threads_n, rounds = 8, 15
    inside = Inside()
    tokens: list[int] = []
    with SyncRedisCache(port=redis.port, namespace=NS, max_connections=threads_n * 2) as cache:
        cache.set("counter", 0)

        def work() -> None:
            for _ in range(rounds):
                with cache.lock("counter", lease=10, wait=DEADLINE) as lock:
                    inside.enter()
                    value = cache.get("counter")  # GET then SET: racy without the lock
                    cache.set("counter", value + 1)
                    assert lock.token is not None
                    tokens.append(lock.token)
                    inside.leave()

        workers = [threading.Thread(target=work) for _ in range(threads_n)]
        for t in workers:
            t.start()
        for t in workers:
            t.join(DEADLINE)
        assert cache.get("counter") == threads_n * rounds
        assert inside.most == 1
        assert len(tokens) == threads_n * rounds and strictly_increasing(tokens)
        assert cache.lock("counter").locked() is False


def test_tasks_increment_a_shared_counter_without_losing_one(run: Runner,
                                                             redis: RedisServer) -> None:
    tasks_n, rounds = 20, 5

    async def main() -> None:
        inside = Inside()
        tokens: list[int] = []
        async with RedisCache(port=redis.port, namespace=NS) as cache:
            await cache.set("counter", 0)

            async def work() -> None:
                for _ in range(rounds):
                    async with cache.lock("counter", lease=10, wait=DEADLINE) as lock:
                        inside.enter()
                        value = await cache.get("counter")
                        await cache.set("counter", value + 1)
                        tokens.append(lock.fencing_token)
                        inside.leave()

            await asyncio.gather(*(work() for _ in range(tasks_n)))
            assert await cache.get("counter") == tasks_n * rounds
            assert inside.most == 1
            assert len(tokens) == tasks_n * rounds and strictly_increasing(tokens)

    run(main())


#: A process using the lock. argv: port, flavor (sync|async), mode, argument.
#: mode "count": argument rounds of GET/SET of "counter" inside lock "counter",
#: pushing each fencing token to "tokens" from inside the lock.
#: mode "hold": takes lock "held" with lease=argument, pushes its token to
#: "held" and blocks forever (until killed) in BLPOP "never".
PROCESS_SCRIPT = r"""
import asyncio, sys
from redis_cache import RedisCache, SyncRedisCache
port, flavor, mode, argument = int(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])

if flavor == "sync":
    with SyncRedisCache(port=port, namespace="lk", socket_timeout=None) as cache:
        if mode == "count":
            for _ in range(int(argument)):
                with cache.lock("counter", lease=10, wait=60) as lock:
                    value = int(cache.execute_command("GET", "counter"))
                    cache.execute_command("SET", "counter", value + 1)
                    cache.execute_command("RPUSH", "tokens", lock.token)
        else:
            with cache.lock("held", lease=argument, wait=0) as lock:
                cache.execute_command("RPUSH", "held", lock.token)
                cache.execute_command("BLPOP", "never", 0)
else:
    async def main():
        async with RedisCache(port=port, namespace="lk") as cache:
            if mode == "count":
                for _ in range(int(argument)):
                    async with cache.lock("counter", lease=10, wait=60) as lock:
                        value = int(await cache.execute_command("GET", "counter"))
                        await cache.execute_command("SET", "counter", value + 1)
                        await cache.execute_command("RPUSH", "tokens", lock.token)
            else:
                async with cache.lock("held", lease=argument, wait=0) as lock:
                    await cache.execute_command("RPUSH", "held", lock.token)
                    async with cache.dedicated() as conn:
                        await conn.execute_command("BLPOP", "never", 0)
    asyncio.run(main())
"""


@pytest.fixture
def processes() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    with python_processes(PROCESS_SCRIPT) as run_script:

        def start(server: RedisServer, flavor: str, mode: str,
                  argument: float) -> subprocess.Popen[str]:
            return run_script(server.port, flavor, mode, argument)

        yield start


def test_processes_increment_a_shared_counter_and_tokens_increase(
    redis: RedisServer, processes: Any
) -> None:
    rounds = 25
    assert raw(redis, "SET", "counter", "0") == "OK"
    procs = [processes(redis, flavor, "count", rounds)
             for flavor in ("sync", "sync", "async", "async")]
    for proc in procs:
        _, err = proc.communicate(timeout=DEADLINE * 2)
        assert proc.returncode == 0, err
    assert raw(redis, "GET", "counter") == str(rounds * len(procs)).encode()
    tokens = [int(t) for t in raw(redis, "LRANGE", "tokens", 0, -1)]  # type: ignore[union-attr]
    # Pushed from inside the lock: the order of acquisition across processes.
    assert len(tokens) == rounds * len(procs) and strictly_increasing(tokens)


# ---------------------------------------------------------------------------
# waking up on release
# ---------------------------------------------------------------------------


def test_sync_waiter_is_woken_by_the_release(redis: RedisServer) -> None:
    events: list[str] = []
    # The holder's lease (60 s) outlasts the waiter's wait (30 s): the waiter
    # can only get the lock because the release wakes it.
    with SyncRedisCache(port=redis.port, namespace=NS, socket_timeout=None) as cache:
        holder = cache.lock("job", lease=60, wait=0).acquire()
        got: list[Lock] = []

        def waiter() -> None:
            with cache.lock("job", lease=60, wait=DEADLINE) as lock:
                events.append("waiter acquired")
                got.append(lock)

        thread = threading.Thread(target=waiter)
        thread.start()
        wait_until(lambda: blocked_clients(redis) == 1, "the waiter to block in BLPOP")
        assert thread.is_alive() and events == []
        events.append("holder releasing")
        assert holder.release() is True
        thread.join(DEADLINE)
        assert events == ["holder releasing", "waiter acquired"]
        assert got[0].token is not None and holder.token is not None
        assert got[0].token > holder.token


def test_async_waiters_are_woken_one_after_another(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        events: list[str] = []
        async with RedisCache(port=redis.port, namespace=NS) as cache:
            holder = await cache.lock("job", lease=60, wait=0).acquire()

            async def waiter(i: int) -> None:
                async with cache.lock("job", lease=60, wait=DEADLINE):
                    events.append(f"in {i}")
                    await asyncio.sleep(0)  # let the others run while held
                    events.append(f"out {i}")

            waiters = [asyncio.ensure_future(waiter(i)) for i in range(3)]
            await async_wait_until(
                lambda: asyncio.to_thread(lambda: blocked_clients(redis) == 3),
                "all three waiters to block")
            events.append("released")
            assert await holder.release() is True
            await asyncio.gather(*waiters)
        assert events[0] == "released"
        # Each waiter got the lock in turn: never two inside at once.
        assert all(events[i].startswith("in") and events[i + 1] == "out" + events[i][2:]
                   for i in range(1, len(events), 2))
        assert len(events) == 7

    run(main())


# ---------------------------------------------------------------------------
# a dead or abandoned holder
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("flavor", ["sync", "async"])
def test_sigkilled_holder_is_taken_over_after_its_lease(
    redis: RedisServer, processes: Any, flavor: str
) -> None:
    holder = processes(redis, flavor, "hold", 1.0)
    reply = raw(redis, "BLPOP", "held", int(DEADLINE))
    assert isinstance(reply, list), "the holder never took the lock"
    dead_token = int(reply[1])
    with SyncRedisCache(port=redis.port, namespace=NS, socket_timeout=None) as cache:
        lock_key = lock_keys(cache, "held")[0]
        assert raw(redis, "EXISTS", lock_key) == 1
        holder.kill()
        holder.wait(DEADLINE)
        assert raw(redis, "EXISTS", lock_key) == 1  # its lease outlives it
        # wait is far longer than the lease: the takeover comes from the lease.
        with cache.lock("held", lease=5, wait=DEADLINE) as lock:
            assert lock.token is not None and lock.token > dead_token
            assert lock.owned()


def test_abandoned_lock_is_taken_over_and_its_release_leaves_the_new_one(
    redis: RedisServer,
) -> None:
    with SyncRedisCache(port=redis.port, namespace=NS, socket_timeout=None) as cache:
        old = cache.lock("job", lease=0.2, renew=False, wait=0).acquire()
        new = cache.lock("job", lease=30, wait=DEADLINE).acquire()  # after old's lease
        assert old.token is not None and new.token is not None and new.token > old.token
        assert old.owned() is False and new.owned() is True
        assert old.release() is False  # it was lost; the new holder's lock stays
        assert old.lost is True
        assert new.owned() is True
        assert raw(redis, "GET", lock_keys(cache, "job")[0]) is not None
        with pytest.raises(LockError, match="not held"):
            old.release()
        assert new.release() is True
        assert cache.lock("job").locked() is False


def test_a_lost_lease_raises_lock_lost_when_the_block_ends(run: Runner,
                                                           redis: RedisServer) -> None:
    with SyncRedisCache(port=redis.port, namespace=NS) as cache:
        with pytest.raises(LockLost, match="lost while held"):
            with cache.lock("job", lease=0.1, renew=False) as lock:
                wait_until(lambda: not lock.locked(), "the lease to end")
                taker = cache.lock("job", wait=0).acquire()
        assert taker.owned()  # the exit did not delete the new holder's lock
        taker.release()

    async def main() -> None:
        async with RedisCache(port=redis.port, namespace=NS) as cache:
            with pytest.raises(LockLost):
                async with cache.lock("job", lease=0.1, renew=False) as lock:
                    await async_wait_until(lambda: _not(lock.locked()), "the lease to end")
                    taker = await cache.lock("job", wait=0).acquire()
            assert lock.lost and await taker.owned()
            # The block's own exception is not replaced by LockLost.
            with pytest.raises(KeyError):
                async with cache.lock("other", lease=0.1, renew=False) as other:
                    await async_wait_until(lambda: _not(other.locked()), "the lease to end")
                    raise KeyError("mine")
            await taker.release()

    run(main())


async def _not(awaitable: Any) -> bool:
    return not await awaitable


# ---------------------------------------------------------------------------
# renewal, extend, timeouts
# ---------------------------------------------------------------------------


def test_renewal_keeps_the_lock_past_its_first_lease(redis: RedisServer) -> None:
    lease = 0.3
    with SyncRedisCache(port=redis.port, namespace=NS) as cache:
        with cache.lock("job", lease=lease, wait=0) as lock:
            lock_key = lock_keys(cache, "job")[0]
            start = time.monotonic()
            # Watch renewals happen: the key's expiry time moves later, again
            # and again, until four leases have passed.
            while time.monotonic() - start < 4 * lease:
                before = raw(redis, "PEXPIRETIME", lock_key)
                assert isinstance(before, int) and before > 0
                wait_until(lambda: raw(redis, "PEXPIRETIME", lock_key) > before,  # noqa: B023
                           "a renewal")
            assert lock.owned() and not lock.lost
            with pytest.raises(LockTimeout):
                cache.lock("job", wait=0).acquire()


def test_async_renewal_keeps_the_lock(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        lease = 0.3
        async with RedisCache(port=redis.port, namespace=NS) as cache:
            async with cache.lock("job", lease=lease, wait=0) as lock:
                start = time.monotonic()
                renewals = 0
                while time.monotonic() - start < 4 * lease:
                    lock_key = lock_keys(cache, "job")[0]
                    before = raw(redis, "PEXPIRETIME", lock_key)
                    await async_wait_until(
                        lambda: asyncio.to_thread(
                            lambda: raw(redis, "PEXPIRETIME", lock_key) > before),  # noqa: B023
                        "a renewal")
                    renewals += 1
                assert renewals >= 3
                assert await lock.owned() and not lock.lost

    run(main())


def test_extend_adds_to_the_lease(redis: RedisServer) -> None:
    with SyncRedisCache(port=redis.port, namespace=NS) as cache:
        with cache.lock("job", lease=5, wait=0, renew=False) as lock:
            left = lock.extend(100)
            assert 100 < left <= 105
            assert 100_000 < raw(redis, "PTTL", lock_keys(cache, "job")[0]) <= 105_000  # type: ignore[operator]
            with pytest.raises(ValueError, match="extension"):
                lock.extend(-1)
        with pytest.raises(LockError, match="acquire it"):
            lock.extend(1)


def test_lock_timeout_and_wait_zero(run: Runner, redis: RedisServer) -> None:
    with SyncRedisCache(port=redis.port, namespace=NS) as cache:
        holder = cache.lock("job", lease=30).acquire()
        with pytest.raises(LockTimeout, match="still held") as caught:
            cache.lock("job", wait=0.2).acquire()
        assert isinstance(caught.value, redis_cache.RedisCacheError)
        assert isinstance(caught.value, TimeoutError)
        with pytest.raises(LockTimeout):
            with cache.lock("job", wait=0):
                pass
        assert holder.owned()

        async def main() -> None:
            async with RedisCache(port=redis.port, namespace=NS) as acache:
                with pytest.raises(LockTimeout):
                    async with acache.lock("job", wait=0.2):
                        pass
                assert await acache.lock("job").locked()

        run(main())
        holder.release()


def test_bad_input_is_refused_clearly(redis: RedisServer) -> None:
    with SyncRedisCache(port=redis.port, namespace=NS) as cache:
        with pytest.raises(ValueError, match="lease must be a number of seconds"):
            cache.lock("job", lease=0)
        with pytest.raises(ValueError, match="wait must be"):
            cache.lock("job", wait=-1)
        with pytest.raises(ValueError, match="wait must be"):
            cache.lock("job", wait=float("nan"))
        with pytest.raises(TypeError, match="non-empty str"):
            cache.lock("")
        with pytest.raises(LockError, match="not held"):
            cache.lock("job").release()
        lock = cache.lock("job", wait=0)
        with lock:
            with pytest.raises(LockError, match="not re-entrant"):
                lock.acquire()


def test_namespaces_have_their_own_locks_and_fencing_counters(redis: RedisServer) -> None:
    with SyncRedisCache(port=redis.port, namespace="a") as a, \
            SyncRedisCache(port=redis.port, namespace="b") as b:
        with a.lock("job", wait=0) as first, b.lock("job", wait=0) as second:
            assert first.token == second.token == 1
        assert lock_keys(a, "job")[0] == b"{a:job}:lock"
        with a.lock("job", wait=0) as again, a.lock("job2", wait=0, fencing=False) as plain:
            assert again.token == 2 and plain.token is None
        assert raw(redis, "EXISTS", b"{a:job2}:fence") == 0


# ---------------------------------------------------------------------------
# Redis Cluster
# ---------------------------------------------------------------------------


def nodes_of(cluster: ClusterTopology) -> list[tuple[str, int]]:
    return list(cluster.seed_addresses)


def test_cluster_locks_on_every_primary(run: Runner, healthy_cluster: ClusterTopology) -> None:
    names = [f"job:{i}" for i in range(12)]
    with SyncRedisClusterCache(nodes_of(healthy_cluster), namespace=NS,
                               socket_timeout=None) as cache:
        owners = set()
        for name in names:
            keys = lock_keys(cache, name)
            assert len({key_slot(k) for k in keys}) == 1  # one slot: scripts stay legal
            owners.add(healthy_cluster.owner(keys[0]).address)
            with cache.lock(name, wait=0) as lock:
                assert lock.token == 1 and lock.owned()
                assert raw(healthy_cluster.owner(keys[0]), "EXISTS", keys[0]) == 1
            assert not lock.locked()
        assert len(owners) == 3

        # A sync waiter on a cluster is woken by the release.
        holder = cache.lock("job:0", lease=60, wait=0).acquire()
        events: list[str] = []

        def waiter() -> None:
            with cache.lock("job:0", lease=60, wait=DEADLINE):
                events.append("waiter")

        thread = threading.Thread(target=waiter)
        thread.start()
        node = healthy_cluster.owner(lock_keys(cache, "job:0")[0])
        wait_until(lambda: blocked_clients(node) == 1, "the waiter to block on the lock's node")
        events.append("release")
        holder.release()
        thread.join(DEADLINE)
        assert events == ["release", "waiter"]

    async def main() -> None:
        async with RedisClusterCache(nodes_of(healthy_cluster), namespace=NS) as acache:
            counter = 0
            inside = Inside()

            async def work(name: str) -> None:
                nonlocal counter
                for _ in range(3):
                    async with acache.lock(name, lease=10, wait=DEADLINE) as lock:
                        inside.enter()
                        assert await lock.owned()
                        await asyncio.sleep(0)
                        counter += 1
                        inside.leave()

            await asyncio.gather(*(work("job:5") for _ in range(5)))
            assert counter == 15 and inside.most == 1
            # Waiters of names on every node (each blocks on its node's
            # dedicated connection) all get their lock.
            await asyncio.gather(*(work(n) for n in names))
            assert counter == 15 + 3 * len(names)

    run(main())


def test_the_public_lock_is_the_decorators_lock(redis: RedisServer) -> None:
    """cache.lock(key) and cached(lock=True) for that key exclude each other."""
    calls: list[str] = []
    with SyncRedisCache(port=redis.port, namespace=NS, socket_timeout=None) as cache:

        @cache.cached(60, key="report", lock=True, lock_wait=DEADLINE)
        def report() -> str:
            calls.append("computed")
            return "fresh"

        holder = cache.lock(report.key(), lease=60, wait=0).acquire()
        result: list[str] = []
        thread = threading.Thread(target=lambda: result.append(report()))
        thread.start()
        wait_until(lambda: blocked_clients(redis) == 1, "the decorated call to wait")
        cache.set(report.key(), "stored by the holder")
        holder.release()
        thread.join(DEADLINE)
        assert result == ["stored by the holder"] and calls == []
    assert isinstance(holder, Lock) and not isinstance(holder, AsyncLock)


# ---------------------------------------------------------------------------
# Sentinel
# ---------------------------------------------------------------------------


def test_lock_scan_and_key_info_through_sentinel(
    run: Runner, healthy_sentinel_topology: SentinelTopology
) -> None:
    options = {"sentinels": healthy_sentinel_topology.sentinel_addresses,
               "service_name": SERVICE_NAME, "password": PASSWORD,
               "sentinel_password": SENTINEL_PASSWORD, "namespace": NS, "connect_wait": 10}
    with SyncRedisCache(**options) as cache:
        cache.set_many({"a:1": 1, "a:2": 2})
        assert sorted(cache.scan("a:*")) == ["a:1", "a:2"]
        info = cache.key_info("a:1")
        assert info is not None and info.type == "string"
        with cache.lock("job", wait=0) as first:
            with pytest.raises(LockTimeout):
                cache.lock("job", wait=0).acquire()

    async def main() -> None:
        async with RedisCache(**options) as acache:
            async with acache.lock("job", wait=0) as second:
                assert await second.owned()
            assert second.token is not None and first.token is not None
            assert second.token > first.token
            assert sorted([k async for k in acache.scan("a:*")]) == ["a:1", "a:2"]

    run(main())


def test_the_decorator_checks_its_lock_settings_when_applied(redis: RedisServer) -> None:
    with SyncRedisCache(port=redis.port, namespace=NS) as cache:
        with pytest.raises(ValueError, match="lease must be a number of seconds"):
            cache.cached(60, lock=True, lock_lease=0)
        with pytest.raises(ValueError, match="wait must be"):
            cache.cached(60, lock=True, lock_wait=-1)
