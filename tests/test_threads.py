"""One cache shared by many threads: every thread gets its own answers, the
pool never opens more than ``max_connections``, and the GIL is released
while a thread waits for the server."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from redis_cache import ConnectionError, SyncRedisCache
from redis_cache.testing import RedisServer
from sync_helpers import (
    SAFETY_TIMEOUT,
    ResultThread,
    client_count,
    huge_switch_interval,
    in_recv,
    wait_until_blocked_in_recv,
)

ServerFactory = Callable[..., RedisServer]

THREADS = 16
ROUNDS = 1000  # each round is 2 or 3 commands: > 2000 operations per thread
KEYS_PER_THREAD = 20


@pytest.fixture
def server(redis_server_factory: ServerFactory) -> Iterator[RedisServer]:
    srv = redis_server_factory()
    yield srv
    srv.close()


def run_threads(count: int, work: Callable[[int, threading.Barrier], Any]) -> list[Any]:
    """Runs ``work(index, barrier)`` in ``count`` threads started together;
    returns their results (re-raising the first error)."""
    barrier = threading.Barrier(count, timeout=SAFETY_TIMEOUT)
    threads = [
        ResultThread(lambda i=i: work(i, barrier), name=f"worker-{i}") for i in range(count)
    ]
    for t in threads:
        t.start()
    return [t.outcome() for t in threads]


@pytest.mark.parametrize("max_connections", [4, 16])
def test_threads_get_their_own_answers(server: RedisServer, max_connections: int) -> None:
    name = f"threads-{max_connections}"
    cache = SyncRedisCache(
        port=server.port,
        max_connections=max_connections,
        pool_timeout=SAFETY_TIMEOUT,
        socket_timeout=SAFETY_TIMEOUT,
        client_name=name,
        namespace="t",
    )

    def work(me: int, barrier: threading.Barrier) -> tuple[int, list[str]]:
        wrong: list[str] = []
        ops = 0
        barrier.wait()
        for r in range(ROUNDS):
            key = f"{me}:{r % KEYS_PER_THREAD}"
            # The value names its key, so any reply that went to the wrong
            # caller or the wrong key is recognisable.
            value = {"key": key, "round": r, "owner": me, "pad": "x" * (r % 97)}
            if cache.set(key, value) is not True:
                wrong.append(f"set {key} did not return True")
            got = cache.get(key)
            if got != value:
                wrong.append(f"get {key} -> {got!r}")
            ops += 2
            if r % 3 == 0:
                other = f"{(me + 1 + r) % THREADS}:{r % KEYS_PER_THREAD}"
                keys = [key, other, f"missing:{me}:{r}", key.encode()]
                found = cache.get_many(keys)
                ops += 1
                if found.get(key) != value or found.get(key.encode()) != value:
                    wrong.append(f"get_many own {key} -> {found!r}")
                if other in found and found[other]["key"] != other:
                    wrong.append(f"get_many other {other} -> {found[other]!r}")
                if f"missing:{me}:{r}" in found:
                    wrong.append(f"get_many found a missing key: {found!r}")
        return ops, wrong

    try:
        results = run_threads(THREADS, work)
        wrong = [w for _, ws in results for w in ws]
        assert wrong == []
        assert all(ops >= 2000 for ops, _ in results)
        assert client_count(server, name) <= max_connections
        # Every thread's last values are in place.
        final = cache.get_many([f"{me}:{k}" for me in range(THREADS) for k in range(KEYS_PER_THREAD)])
        assert len(final) == THREADS * KEYS_PER_THREAD
        assert all(v["key"] == k for k, v in final.items())
    finally:
        cache.close()


def test_concurrent_increments_are_all_counted(server: RedisServer) -> None:
    per_thread = 500
    with SyncRedisCache(port=server.port, max_connections=4, pool_timeout=SAFETY_TIMEOUT) as cache:

        def work(me: int, barrier: threading.Barrier) -> list[int]:
            barrier.wait()
            return [cache.incr("counter") for _ in range(per_thread)]

        seen = [n for ns in run_threads(THREADS, work) for n in ns]
        # Each INCR reply went to the thread that sent it: all values distinct.
        assert sorted(seen) == list(range(1, THREADS * per_thread + 1))
        assert cache.get("counter") == THREADS * per_thread


def test_set_many_and_get_many_from_many_threads(server: RedisServer) -> None:
    with SyncRedisCache(port=server.port, max_connections=3, pool_timeout=SAFETY_TIMEOUT) as cache:

        def work(me: int, barrier: threading.Barrier) -> list[str]:
            wrong = []
            barrier.wait()
            for r in range(150):
                mapping = {f"m{me}:{k}": [me, r, k] for k in range(10)}
                assert cache.set_many(mapping) is True
                found = cache.get_many(list(mapping))
                if found != mapping:
                    wrong.append(f"round {r}: {found!r}")
            return wrong

        assert [w for ws in run_threads(8, work) for w in ws] == []


def test_close_while_threads_are_using_the_cache(server: RedisServer) -> None:
    """close() racing with calls in flight: every thread sees either answers
    or 'the cache is closed', never a crash, a wrong answer or another error."""
    cache = SyncRedisCache(port=server.port, max_connections=3, pool_timeout=SAFETY_TIMEOUT)
    warmed_up = threading.Barrier(THREADS + 1, timeout=SAFETY_TIMEOUT)

    def work(me: int, barrier: threading.Barrier) -> tuple[int, str]:
        calls = 0
        barrier.wait()
        try:
            while True:
                key = f"c{me}:{calls % 5}"
                assert cache.set(key, [me, calls]) is True
                got = cache.get(key)
                assert got == [me, calls], f"{key}: {got!r}"
                calls += 1
                if calls == 50:
                    warmed_up.wait()
        except ConnectionError as exc:
            return calls, str(exc)

    start = threading.Barrier(THREADS, timeout=SAFETY_TIMEOUT)
    threads = [
        ResultThread(lambda i=i: work(i, start), name=f"worker-{i}") for i in range(THREADS)
    ]
    for t in threads:
        t.start()
    warmed_up.wait()  # every thread made 50 round trips and is still going
    cache.close()
    results = [t.outcome() for t in threads]
    assert all(calls >= 50 for calls, _ in results)
    assert all("closed" in message for _, message in results), results
    assert cache.closed


def test_the_gil_is_released_while_waiting_for_the_server(server: RedisServer) -> None:
    cache = SyncRedisCache(port=server.port, max_connections=2, socket_timeout=SAFETY_TIMEOUT)
    try:
        assert cache.set("k", "v")
        server.pause()
        waiter = ResultThread(lambda: cache.get("k"), name="blocked-get")
        waiter.start()
        # Observing the blocked thread already needs the GIL it would hold.
        wait_until_blocked_in_recv(waiter)
        native_id = waiter.native_id
        assert native_id is not None
        progress = 0
        total = 0
        for i in range(300_000):  # far longer than a GIL switch interval
            total += i * i % 7
            progress += 1
        # This thread did its work while the other one was still blocked in recv.
        assert progress == 300_000 and total > 0
        assert waiter.is_alive() and in_recv(native_id)
        server.resume()
        assert waiter.outcome() == "v"
    finally:
        if server.paused:
            server.resume()
        cache.close()


def test_other_threads_run_while_one_waits_in_the_pool_queue(server: RedisServer) -> None:
    """A thread queued for a connection must not hold the GIL either."""
    cache = SyncRedisCache(port=server.port, max_connections=1, pool_timeout=SAFETY_TIMEOUT,
                           socket_timeout=SAFETY_TIMEOUT)
    try:
        assert cache.set("k", "v")
        server.pause()
        first = ResultThread(lambda: cache.get("k"), name="holder")
        first.start()
        wait_until_blocked_in_recv(first)  # it holds the only connection
        second = ResultThread(lambda: cache.get("k"), name="queued")
        with huge_switch_interval():
            # Returns only once the second thread let go of the GIL: when it
            # queues for the connection.
            second.start()
            progress = sum(1 for _ in range(300_000))
        assert progress == 300_000
        assert first.is_alive() and second.is_alive()
        server.resume()
        assert first.outcome() == "v"
        assert second.outcome() == "v"
    finally:
        if server.paused:
            server.resume()
        cache.close()
