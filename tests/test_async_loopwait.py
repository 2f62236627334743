"""Waiting for a reply in the loop's place (csrc/loopwait.c).

On asyncio's own epoll loop, a task awaiting the one request its connection
has in flight, or the reader callback that resumed a task, may sleep on the
loop's epoll descriptor for the reply instead of returning to the loop. That is only right while the loop has nothing else to
do, so each test here gives the loop something else to do (a due timer, a
ready callback, another socket, a thread's call_soon_threadsafe, a signal,
another connection, a stalled server) while one task awaits GET after GET,
and checks that the other thing happened while that task was still going.

The caller stops after CAP commands at most: were the other thing ignored,
the caller would run out its CAP (seconds of round trips) instead of hanging,
and the test fails on the count.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest

from redis_cache import RedisCache, SyncRedisCache
from redis_cache.errors import TimeoutError as CacheTimeout
from redis_cache.testing import RedisServer

#: Commands one caller may send before the test calls it a failure: far more
#: round trips than the interruption needs, far fewer than a hang.
CAP = 20_000


async def gets_until(cache: RedisCache, stop: Callable[[], bool], started: threading.Event | None = None) -> int:
    """GETs one at a time until stop(); returns how many were sent."""
    n = 0
    while not stop() and n < CAP:
        assert await cache.get("k") == "v"
        n += 1
        if n == 10 and started is not None:
            started.set()
    return n


def count_polls(loop: asyncio.AbstractEventLoop) -> Callable[[], int]:
    selector = loop._selector  # type: ignore[attr-defined]
    real_select = selector.select
    polls = 0

    def counting_select(timeout: float | None = None) -> Any:
        nonlocal polls
        polls += 1
        return real_select(timeout)

    selector.select = counting_select
    return lambda: polls


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


@pytest.fixture(scope="module")
def server(redis_server_factory: Any) -> RedisServer:
    return redis_server_factory()


@pytest.fixture(autouse=True)
def value(server: RedisServer) -> None:
    with SyncRedisCache(port=server.port) as c:
        c.set("k", "v")


def polls_for_gets(server: RedisServer, n: int, debug: bool = False) -> int:
    """How many times the loop polled its selector while one task awaited n
    GETs, one after the other."""

    async def main() -> int:
        asyncio.get_running_loop().set_debug(debug)
        async with RedisCache(port=server.port) as c:
            await c.get("k")
            polls = count_polls(asyncio.get_running_loop())
            for _ in range(n):
                assert await c.get("k") == "v"
            return polls()

    return run(main())


def test_sequential_commands_stay_in_the_reader_callback(server: RedisServer) -> None:
    """The point: N awaited GETs in a row cost the loop almost no iterations
    (asyncio.Future costs 2N, our future alone N)."""
    assert polls_for_gets(server, 200) < 5


def test_a_task_awaiting_one_command_at_a_time_is_not_suspended(server: RedisServer) -> None:
    """When the awaited future's request is all its connection waits for,
    the task's own step waits for the reply (rc_mux_wait_in_place): the
    coroutine runs from its first command to its last without suspending.
    A tracer sees its frame entered once, not once per command."""
    n = 200
    entries = 0

    async def caller(c: RedisCache) -> None:
        for _ in range(n):
            assert await c.get("k") == "v"

    def tracer(frame: Any, event: str, arg: Any) -> None:
        nonlocal entries
        if event == "call" and frame.f_code is caller.__code__:
            entries += 1

    async def main() -> None:
        async with RedisCache(port=server.port) as c:
            await c.get("k")
            sys.settrace(tracer)
            try:
                await caller(c)
            finally:
                sys.settrace(None)

    run(main())
    assert 1 <= entries < 5, entries


def test_a_callback_added_before_the_await_runs_outside_the_task(server: RedisServer) -> None:
    """A future someone else also waits for is left to the loop: its
    callback runs where asyncio would run it (no task current), not inside
    the awaiting task's step."""

    async def main() -> list[Any]:
        async with RedisCache(port=server.port) as c:
            await c.get("k")
            ran_in: list[Any] = []
            future = c.get("k")
            future.add_done_callback(lambda _: ran_in.append(asyncio.current_task()))
            assert await future == "v"
            return ran_in

    assert run(main()) == [None]


def test_tasks_woken_together_send_their_next_commands_together(redis_server_factory: Any) -> None:
    """Two callers on one connection whose replies are read in one go: the
    read wakes their tasks one after the other, and each task's next command
    must go out before any of them waits. Were the first woken to wait for
    its own next reply in place while the second is still to be woken (a
    ready queue the loop cannot see), it would run all its commands before
    the second ran any: 100 coroutines fell from 300,000 to 20,000 GET/s."""
    victim = redis_server_factory()
    order: list[str] = []

    async def caller(c: RedisCache, name: str) -> None:
        for _ in range(5):
            assert await c.get("k") == "v"
            order.append(name)

    async def main() -> None:
        async with RedisCache(port=victim.port) as c:
            await c.set("k", "v")
            victim.pause()
            try:
                tasks = [asyncio.create_task(caller(c, name)) for name in "ab"]
                for _ in range(5):
                    await asyncio.sleep(0)  # both GETs sent (the second by a flush)
            finally:
                victim.resume()
            # Once this reply is back, so are the two GETs' (the server
            # answers them in the same event-loop turn): the loop's next read
            # gets both.
            with SyncRedisCache(port=victim.port) as other:
                assert other.get("k") == "v"
            await asyncio.gather(*tasks)

    run(main())
    text = "".join(order)
    assert sorted(text) == list("aaaaabbbbb")
    assert "aaa" not in text and "bbb" not in text, text


def test_a_future_awaited_under_another_loop_meets_asyncios_check(redis_server_factory: Any) -> None:
    """A pending future whose loop has closed (its epoll descriptor with it),
    awaited by a task of a new loop, is not waited for in place: it is
    yielded, and the task refuses it as it refuses any future of another
    loop."""
    victim = redis_server_factory()
    first = asyncio.new_event_loop()
    cache = RedisCache(port=victim.port)

    async def send() -> Any:
        await cache.get("k")  # connected
        victim.pause()
        return cache.get("k")  # sent; its reply will not come while paused

    async def await_it(future: Any) -> Any:
        return await future

    try:
        future = first.run_until_complete(send())
        first.close()
        assert not future.done()
        with pytest.raises(RuntimeError, match="different loop"):
            asyncio.run(await_it(future))
    finally:
        victim.resume()
        if not first.is_closed():
            first.close()
        asyncio.run(cache.close())


def test_debug_mode_keeps_one_iteration_per_command(server: RedisServer) -> None:
    """In debug mode asyncio times every callback: no waiting inside one. What
    is left is our future's own saving: the reply's reader callback resumes
    the task, so N GETs take about N polls (asyncio.Future would take 2N)."""
    assert 200 <= polls_for_gets(server, 200, debug=True) < 240


def test_a_due_timer_runs(server: RedisServer) -> None:
    async def main() -> int:
        fired = asyncio.Event()
        async with RedisCache(port=server.port) as c:
            await c.get("k")
            asyncio.get_running_loop().call_later(0.005, fired.set)
            return await gets_until(c, fired.is_set)

    assert 0 < run(main()) < CAP


def test_a_ready_callback_runs_between_commands(server: RedisServer) -> None:
    """Another task yielding with sleep(0) is in the ready queue after every
    reply: it must progress in step with the caller."""
    order: list[str] = []

    async def yielder(done: asyncio.Event) -> None:
        for _ in range(50):
            order.append("y")
            await asyncio.sleep(0)
        done.set()

    async def main() -> int:
        done = asyncio.Event()
        async with RedisCache(port=server.port) as c:
            await c.get("k")
            task = asyncio.create_task(yielder(done))

            async def caller() -> int:
                n = 0
                while not done.is_set() and n < CAP:
                    await c.get("k")
                    order.append("g")
                    n += 1
                return n

            n = await caller()
            await task
            return n

    n = run(main())
    assert n < CAP
    # Never more than a few replies in a row without the yielder's turn.
    runs = "".join(order).split("y")
    assert max(len(r) for r in runs) <= 3, order


Arrange = Callable[[asyncio.AbstractEventLoop, asyncio.Event], tuple[Callable[[], None], Callable[[], None]]]


def stopped_from_a_thread(server: RedisServer, arrange: Arrange) -> int:
    """A caller awaits GET after GET; once it has made 10, another thread
    does fire() (arrange(loop, stop) gives fire and a clean-up), which must
    get stop set in the loop while the caller still runs. Returns how many
    GETs the caller made."""

    async def main() -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        started = threading.Event()
        fire, clean_up = arrange(loop, stop)

        def other_thread() -> None:
            assert started.wait(30)
            fire()

        thread = threading.Thread(target=other_thread)
        thread.start()
        try:
            async with RedisCache(port=server.port) as c:
                await c.get("k")
                return await gets_until(c, stop.is_set, started)
        finally:
            started.set()
            await asyncio.to_thread(thread.join)
            clean_up()

    return run(main())


def test_a_thread_call_soon_threadsafe_runs(server: RedisServer) -> None:
    def arrange(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> Any:
        return (lambda: loop.call_soon_threadsafe(stop.set)), (lambda: None)

    assert 10 <= stopped_from_a_thread(server, arrange) < CAP


def test_another_readable_socket_is_served(server: RedisServer) -> None:
    ours, theirs = socket.socketpair()

    def arrange(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> Any:
        ours.setblocking(False)
        loop.add_reader(ours.fileno(), lambda: (ours.recv(16), stop.set()))
        return (lambda: theirs.send(b"x")), (lambda: loop.remove_reader(ours.fileno()))

    try:
        assert 10 <= stopped_from_a_thread(server, arrange) < CAP
    finally:
        ours.close()
        theirs.close()


def test_a_signal_handler_runs(server: RedisServer) -> None:
    def arrange(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> Any:
        loop.add_signal_handler(signal.SIGUSR1, stop.set)
        return (lambda: os.kill(os.getpid(), signal.SIGUSR1)), (
            lambda: loop.remove_signal_handler(signal.SIGUSR1)
        )

    assert 10 <= stopped_from_a_thread(server, arrange) < CAP


def test_two_connections_take_turns(server: RedisServer) -> None:
    """Two callers on two caches: each one's reply wakes the loop, so neither
    runs many commands while the other's reply waits."""
    order: list[str] = []

    async def caller(c: RedisCache, name: str, n: int) -> None:
        for _ in range(n):
            await c.get("k")
            order.append(name)

    async def main() -> None:
        async with RedisCache(port=server.port) as a, RedisCache(port=server.port) as b:
            await a.get("k")
            await b.get("k")
            await asyncio.gather(caller(a, "a", 300), caller(b, "b", 300))

    run(main())
    text = "".join(order)
    longest = max(len(r) for r in text.replace("b", " ").split() + text.replace("a", " ").split())
    assert longest < 50, longest


def test_a_stalled_server_still_times_out(redis_server_factory: Any) -> None:
    """The request timeout is one of the loop's timers: a reply that never
    comes ends the wait at the timeout, as it would in the loop."""
    victim = redis_server_factory()

    async def main() -> int:
        async with RedisCache(port=victim.port, socket_timeout=0.2) as c:
            await c.set("k", "v")
            n = 0
            for n in range(1, 6):
                assert await c.get("k") == "v"
            victim.pause()
            try:
                with pytest.raises(CacheTimeout):
                    await c.get("k")
            finally:
                victim.resume()
            return n

    assert run(main()) == 5


def test_over_tls_too(tls_server: RedisServer, tls_certs: Any) -> None:
    """The reader drains what OpenSSL decrypted before waiting, so sequential
    commands over TLS stay in the callback too, and replies of many records
    (a large value) arrive whole and in order."""
    big = "x" * 300_000
    n = 200

    async def main() -> int:
        async with RedisCache(port=tls_server.tls_port, ssl=True, ssl_ca_certs=tls_certs.ca.cert) as c:
            await c.set("k", "v")
            await c.set("big", big)
            polls = count_polls(asyncio.get_running_loop())
            for i in range(n):
                if i % 10 == 0:
                    assert await c.get("big") == big
                else:
                    assert await c.get("k") == "v"
            return polls()

    assert run(main()) < 5


def test_over_tls_a_due_timer_runs(tls_server: RedisServer, tls_certs: Any) -> None:
    async def main() -> int:
        fired = asyncio.Event()
        async with RedisCache(port=tls_server.tls_port, ssl=True, ssl_ca_certs=tls_certs.ca.cert) as c:
            await c.set("k", "v")
            asyncio.get_running_loop().call_later(0.005, fired.set)
            return await gets_until(c, fired.is_set)

    assert 0 < run(main()) < CAP


def test_commands_alternating_between_connections(server: RedisServer) -> None:
    """The task's next command may go to another connection (a cluster's next
    key, a second cache): that connection's reply is served in place too."""
    n = 200

    async def main() -> int:
        async with RedisCache(port=server.port) as a, RedisCache(port=server.port) as b:
            await a.get("k")
            await b.get("k")
            polls = count_polls(asyncio.get_running_loop())
            for i in range(n):
                assert await (a if i % 2 else b).get("k") == "v"
            return polls()

    assert run(main()) < 5


def test_on_a_cluster(cluster: Any) -> None:
    from redis_cache import RedisClusterCache

    keys = [f"key{i}" for i in range(30)]  # spread over the three primaries

    async def main() -> int:
        async with RedisClusterCache(list(cluster.seed_addresses), namespace="loopwait") as c:
            await c.set_many({k: k for k in keys})
            for k in keys:
                assert await c.get(k) == k  # every node's connection open
            polls = count_polls(asyncio.get_running_loop())
            for _ in range(5):
                for k in keys:
                    assert await c.get(k) == k
            polled = polls()
            await c.delete_many(keys)
            return polled

    assert run(main()) < 5


def test_messages_reach_a_subscriber_meanwhile(server: RedisServer) -> None:
    """A subscriber's connection is left to the loop (its pushes run Python
    code in its own reader's context): messages published while another task
    awaits GET after GET are still delivered, in step."""

    async def main() -> int:
        got: list[Any] = []
        async with RedisCache(port=server.port) as c:
            await c.get("k")
            async with c.subscribe("loopwait") as sub:
                async def listen() -> None:
                    async for message in sub:
                        got.append(message.data)
                        if len(got) == 3:
                            return

                listener = asyncio.create_task(listen())
                n = 0
                while len(got) < 3 and n < CAP:
                    if n % 50 == 0:
                        await c.publish("loopwait", n)
                    assert await c.get("k") == "v"
                    n += 1
                await listener
        assert got == [0, 50, 100]
        return n

    assert run(main()) < CAP
