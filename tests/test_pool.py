"""The blocking connection pool: exhaustion, hand-over, FIFO waiters, and
replacement of connections that broke (server restart, socket timeout,
interrupted read).

Every test uses its own server from ``redis_server_factory``, as many pause,
kill or restart it. Which thread holds a connection is known, never guessed:
``get()`` decodes its reply before it gives its connection back, so a
serializer hook in ``loads()`` (``sync_helpers.Hold``) runs while its thread
holds a connection.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from redis_cache import (
    ConnectionError,
    PoolTimeout,
    RedisCacheError,
    ResponseError,
    SerializationError,
    SyncRedisCache,
    TimeoutError,
)
from redis_cache.testing import RedisServer
from sync_helpers import (
    SAFETY_TIMEOUT,
    Hold,
    HookSerializer,
    ResultThread,
    client_count,
    huge_switch_interval,
    start_holder,
    syscalls_observable,
    wait_until_blocked_in_recv,
)

ServerFactory = Callable[..., RedisServer]
CacheFactory = Callable[..., SyncRedisCache]

NAME = "pool-test"


@pytest.fixture
def server(redis_server_factory: ServerFactory) -> Iterator[RedisServer]:
    """A server of this test's own: it may be paused, killed or restarted."""
    srv = redis_server_factory()
    yield srv
    srv.close()


@pytest.fixture
def make_cache(server: RedisServer) -> Iterator[CacheFactory]:
    """``make_cache(**options)``: a cache on ``server``, closed after the test."""
    caches: list[SyncRedisCache] = []

    def make(**options: Any) -> SyncRedisCache:
        options.setdefault("client_name", NAME)
        cache = SyncRedisCache(port=server.port, **options)
        caches.append(cache)
        return cache

    yield make
    if server.paused:
        server.resume()
    for cache in caches:
        cache.close()


def hook_cache(make_cache: CacheFactory, record: list[Any] | None = None, **options: Any) -> SyncRedisCache:
    return make_cache(serializer=HookSerializer(record), **options)


def client_id(cache: SyncRedisCache) -> int:
    """The server-side id of the connection the cache lends next."""
    cid = cache.execute_command("CLIENT", "ID")
    assert isinstance(cid, int)
    return cid


@contextlib.contextmanager
def held(cache: SyncRedisCache, key: str = "held", payload: Any = "held") -> Iterator[ResultThread]:
    """Stores ``payload`` at ``key`` and reads it back in a thread that keeps
    its connection until the block ends; yields that thread (its result is
    ``payload``, what its ``get()`` returned)."""
    hold = Hold(payload)
    thread = start_holder(cache, key, hold)
    try:
        yield thread
    finally:
        hold.release()
        thread.join(SAFETY_TIMEOUT)


# ---------------------------------------------------------------- exhaustion


def test_pool_timeout_when_the_only_connection_is_held(make_cache: CacheFactory) -> None:
    cache = hook_cache(make_cache, max_connections=1, pool_timeout=0.2)
    with held(cache, "k", {"v": 1}) as holder:
        start = time.monotonic()
        with pytest.raises(PoolTimeout) as info:
            cache.get("k")
        waited = time.monotonic() - start
        assert holder.is_alive()
    assert holder.outcome() == {"v": 1}
    # It waited the pool timeout (not zero), and says which limit was hit.
    assert waited >= 0.2 - 0.01
    assert "1 connections" in str(info.value)
    assert isinstance(info.value, TimeoutError) and isinstance(info.value, RedisCacheError)
    # The connection was given back and works.
    assert cache.get("k") == {"v": 1}


def test_pool_timeout_while_the_holder_waits_on_a_paused_server(
    server: RedisServer, make_cache: CacheFactory
) -> None:
    cache = make_cache(max_connections=1, pool_timeout=0.2, socket_timeout=SAFETY_TIMEOUT)
    assert cache.ping()  # one pooled connection
    server.pause()
    first = ResultThread(lambda: cache.set("k", "first"), name="first")
    first.start()
    # Blocked in recv on the pool's only connection (no connect is needed):
    # the first thread now waits for the paused server with that connection.
    wait_until_blocked_in_recv(first)
    with pytest.raises(PoolTimeout):
        cache.get("other")
    assert first.is_alive()
    server.resume()
    assert first.outcome() is True
    assert cache.get("k") == "first"


def test_a_waiter_gets_the_connection_when_it_is_given_back(
    server: RedisServer, make_cache: CacheFactory
) -> None:
    cache = hook_cache(make_cache, max_connections=1, pool_timeout=SAFETY_TIMEOUT)
    with held(cache, "k", "from-holder") as holder:
        with huge_switch_interval():
            waiter = ResultThread(lambda: (cache.get("k"), client_id(cache)), name="waiter")
            waiter.start()  # returns once the waiter is queued
        assert waiter.is_alive()
    assert holder.outcome() == "from-holder"
    value, holder_conn = waiter.outcome()
    assert value == "from-holder"
    # Handed over, not reopened: still one connection, the same one.
    assert client_id(cache) == holder_conn
    assert client_count(server, NAME) == 1


def test_waiters_are_served_in_fifo_order(make_cache: CacheFactory) -> None:
    order: list[Any] = []
    cache = hook_cache(make_cache, order, max_connections=1, pool_timeout=SAFETY_TIMEOUT)
    assert cache.set_many({f"w{i}": i for i in range(6)}) is True  # waiter i reads back i
    waiters = []
    with held(cache):
        with huge_switch_interval():
            for i in range(6):
                waiter = ResultThread(lambda i=i: cache.get(f"w{i}"), name=f"waiter-{i}")
                waiter.start()  # returns once this waiter is queued
                waiters.append(waiter)
        # Queued, not served: the only connection is still held.
        assert order == []
        assert all(w.is_alive() for w in waiters)
    assert [w.outcome() for w in waiters] == list(range(6))
    # loads() runs while its caller holds the connection: the order in which
    # the waiters got it.
    assert order == list(range(6))


def test_a_newcomer_does_not_overtake_queued_waiters(make_cache: CacheFactory) -> None:
    order: list[Any] = []
    cache = hook_cache(make_cache, order, max_connections=1, pool_timeout=SAFETY_TIMEOUT)
    assert cache.set_many({"queued": "queued", "newcomer": "newcomer"}) is True
    with held(cache):
        with huge_switch_interval():
            waiter = ResultThread(lambda: cache.get("queued"), name="queued")
            waiter.start()
        assert order == []
    # The holder gave its connection back; the queued waiter was first in line
    # even though this thread asks right away.
    assert cache.get("newcomer") == "newcomer"
    assert waiter.outcome() == "queued"
    assert order == ["queued", "newcomer"]


def test_pool_timeouts_leave_the_pool_intact(server: RedisServer, make_cache: CacheFactory) -> None:
    cache = hook_cache(make_cache, max_connections=2, pool_timeout=0.05)
    with held(cache, "a", 1), held(cache, "b", 2):
        for _ in range(5):
            with pytest.raises(PoolTimeout):
                cache.get("a")
    # Both connections came back: two threads can hold one each again, and no
    # timed-out waiter left a stale entry in the queue.
    with held(cache, "a", 3), held(cache, "b", 4):
        pass
    assert cache.get_many(["a", "b"]) == {"a": 3, "b": 4}
    assert client_count(server, NAME) == 2


def test_close_wakes_queued_waiters(make_cache: CacheFactory) -> None:
    cache = hook_cache(make_cache, max_connections=1, pool_timeout=SAFETY_TIMEOUT)
    with held(cache, "k", "v") as holder:
        with huge_switch_interval():
            waiter = ResultThread(lambda: cache.get("k"), name="waiter")
            waiter.start()
        cache.close()
        with pytest.raises(ConnectionError, match="closed"):
            waiter.outcome()
    # The command in flight finished; the cache refuses new ones.
    assert holder.outcome() == "v"
    assert cache.closed
    with pytest.raises(ConnectionError, match="closed"):
        cache.get("k")


# ------------------------------------------------- connections that failed


def test_failed_connects_give_their_slot_back(server: RedisServer, make_cache: CacheFactory) -> None:
    cache = make_cache(max_connections=1, pool_timeout=0.2)
    server.kill()
    for _ in range(5):
        # A refused connect frees the slot: ConnectionError each time, never PoolTimeout.
        with pytest.raises(ConnectionError) as info:
            cache.get("k")
        assert not isinstance(info.value, PoolTimeout)
    server.start()
    assert cache.set("k", "back") is True
    assert cache.get("k") == "back"


def test_encode_errors_give_the_connection_back(make_cache: CacheFactory) -> None:
    cache = make_cache(max_connections=1, pool_timeout=0.2)
    before = client_id(cache)
    for _ in range(3):
        with pytest.raises(SerializationError):
            cache.set("k", object())
        with pytest.raises(TypeError):
            cache.get(42)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            cache.set("k", 1, ttl=-1)
        with pytest.raises(TypeError):
            cache.get_many(["a", 42])
        with pytest.raises(SerializationError):
            cache.set_many({"a": 1, "b": object()})
    # Nothing was sent, so the same connection is still in step and reused.
    assert client_id(cache) == before
    assert cache.get_many(["a", "b", "k"]) == {}


def test_response_errors_keep_the_connection(make_cache: CacheFactory) -> None:
    cache = make_cache(max_connections=1)
    cache.set("s", "text")
    before = client_id(cache)
    with pytest.raises(ResponseError, match="not an integer"):
        cache.incr("s")
    with pytest.raises(ResponseError):
        cache.execute_command("NO-SUCH-COMMAND")
    assert cache.get("s") == "text"
    assert client_id(cache) == before


def test_undecodable_values_keep_the_connection_in_step(make_cache: CacheFactory) -> None:
    cache = make_cache(max_connections=1)
    cache.set_many({"good": [1], "also": {"x": 2}})
    cache.execute_command("SET", "bad", b"{not json")
    before = client_id(cache)
    for _ in range(3):
        with pytest.raises(SerializationError):
            cache.get("bad")
        with pytest.raises(SerializationError):
            cache.get_many(["good", "bad", "also"])
        # The replies after the bad one were read too: nothing is left behind.
        assert cache.get("good") == [1]
        assert cache.get_many(["also", "good"]) == {"also": {"x": 2}, "good": [1]}
    assert client_id(cache) == before


def test_a_server_restart_costs_at_most_one_failed_call(
    server: RedisServer, make_cache: CacheFactory
) -> None:
    cache = make_cache(max_connections=1)
    cache.set("a", 1)
    server.kill()
    server.restart()  # same port, empty data
    failures = 0
    try:
        first = cache.get("a", "missing")
    except ConnectionError:
        failures += 1
    else:
        assert first == "missing"
    assert failures <= 1
    assert cache.get("a", "missing") == "missing"
    assert cache.set("a", 2) is True
    assert cache.get("a") == 2
    assert client_count(server, NAME) == 1


def test_each_stale_idle_connection_fails_at_most_once(
    server: RedisServer, make_cache: CacheFactory
) -> None:
    cache = hook_cache(make_cache, max_connections=3)
    with held(cache, "a", 1), held(cache, "b", 2), held(cache, "c", 3):
        pass  # three connections were open at once; now all three are idle
    assert client_count(server, NAME) == 3
    server.kill()
    server.restart()
    outcomes = []
    for _ in range(4):
        try:
            outcomes.append(cache.get("a", "missing"))
        except ConnectionError:
            outcomes.append("ConnectionError")
    # At most one failure per stale connection, then a fresh one works.
    assert outcomes[-1] == "missing"
    assert outcomes.count("ConnectionError") <= 3
    assert all(o in ("missing", "ConnectionError") for o in outcomes)
    assert [cache.get("a", "missing") for _ in range(5)] == ["missing"] * 5


def test_socket_timeout_drops_the_connection_and_no_stale_reply_is_read(
    server: RedisServer, make_cache: CacheFactory
) -> None:
    cache = make_cache(max_connections=1, socket_timeout=0.2)
    assert cache.set("a", 1) and cache.set("b", 2)
    before = client_id(cache)
    server.pause()
    with pytest.raises(TimeoutError) as info:
        cache.get("a")
    assert not isinstance(info.value, PoolTimeout)
    server.resume()
    # The reply to GET a (1) may be on its way now; it must not answer GET b.
    assert cache.get("b") == 2
    assert cache.get("a") == 1
    assert client_id(cache) != before
    assert client_count(server, NAME) == 1


def test_socket_timeout_in_a_pipeline_leaves_no_stale_replies(
    server: RedisServer, make_cache: CacheFactory
) -> None:
    cache = make_cache(max_connections=1, socket_timeout=0.2)
    assert cache.set_many({"a": 1, "b": 2})
    server.pause()
    with pytest.raises(TimeoutError):
        cache.set_many({f"other{i}": i for i in range(50)})
    server.resume()
    assert cache.get_many(["a", "b"]) == {"a": 1, "b": 2}
    assert cache.get("b") == 2


class Interrupted(Exception):
    pass


def test_a_signal_handler_raising_during_a_read_drops_the_connection(
    server: RedisServer, make_cache: CacheFactory
) -> None:
    """Like Ctrl-C while waiting for a reply: the exception comes out of get(),
    and the unread reply must not be handed to the next command."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers run in the main thread only")
    if not syscalls_observable():
        pytest.skip("/proc/<pid>/task/<tid>/syscall is not available here")
    cache = make_cache(max_connections=1, socket_timeout=SAFETY_TIMEOUT)
    assert cache.set("a", 1) and cache.set("b", 2)
    main = threading.current_thread()

    def raise_interrupted(signum: int, frame: object) -> None:
        raise Interrupted

    def interrupt_when_blocked() -> None:
        wait_until_blocked_in_recv(main)
        signal.pthread_kill(main.ident, signal.SIGUSR1)  # type: ignore[arg-type]

    old = signal.signal(signal.SIGUSR1, raise_interrupted)
    try:
        server.pause()
        killer = ResultThread(interrupt_when_blocked, name="interrupter")
        killer.start()
        with pytest.raises(Interrupted):
            cache.get("a")
        killer.outcome()
    finally:
        signal.signal(signal.SIGUSR1, old)
        server.resume()
    assert cache.get("b") == 2
    assert cache.get("a") == 1


def test_a_signal_interrupts_a_thread_queued_for_a_connection(make_cache: CacheFactory) -> None:
    """Ctrl-C must reach a thread waiting for a pooled connection (even with
    pool_timeout=None), as it reaches one waiting for a reply."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers run in the main thread only")
    cache = hook_cache(make_cache, max_connections=1, pool_timeout=None)
    main = threading.current_thread()
    entering, done = threading.Event(), threading.Event()

    def raise_interrupted(signum: int, frame: object) -> None:
        raise Interrupted

    def interrupt_when_queued() -> None:
        assert entering.wait(SAFETY_TIMEOUT)
        # Running means holding the GIL, which (no forced switches) the main
        # thread gave up only by queueing in the pool.
        signal.pthread_kill(main.ident, signal.SIGUSR1)  # type: ignore[arg-type]

    hold = Hold("v")
    holder = start_holder(cache, "k", hold, name="holder")
    old = signal.signal(signal.SIGUSR1, raise_interrupted)
    try:
        interrupter = ResultThread(interrupt_when_queued, name="interrupter")
        interrupter.start()
        # Without a fix get() would wait for ever; this fallback gives the
        # connection back after a while, so the test fails instead of hanging.
        fallback = ResultThread(lambda: done.wait(3.0) or hold.release(), name="fallback")
        fallback.start()
        with huge_switch_interval():
            entering.set()
            try:
                cache.get("k")
                outcome = "returned"
            except Interrupted:
                outcome = "interrupted"
        still_held = not hold.released
    finally:
        done.set()
        hold.release()
        signal.signal(signal.SIGUSR1, old)
    interrupter.outcome()
    fallback.outcome()
    assert holder.outcome() == "v"
    # Interrupted while the connection was still held, not after it came back.
    assert (outcome, still_held) == ("interrupted", True)
    assert cache.get("k") == "v"
