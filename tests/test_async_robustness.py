"""RedisCache (asyncio) when things go wrong: cancellation storms, heavy
concurrency and backpressure, a server that is killed, stopped or absent, a
fork, and a second event loop.

Every test runs on the default asyncio loop and on uvloop.  Nothing here
sleeps to synchronize: waits are on futures and events, ``await
asyncio.sleep(0)`` only yields one loop iteration, and the few polls (for
the server to notice a closed socket, or for a restarted server to be
reachable again through the reconnect backoff) have deadlines.
Every wait that could hang is bounded by ``asyncio.wait_for`` as a hang
detector, so a hang fails the test instead of stalling the run.
"""

from __future__ import annotations

import asyncio
import builtins
import os
import random
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from async_support import Runner, new_loop, run, server_side_rx_queue  # noqa: F401
from redis_raw import raw

import redis_cache.cache as cache_module
from redis_cache import ConnectionError, RedisCache, TimeoutError
from redis_cache.testing import RedisServer

#: Hang detector for requests that must fail (or succeed) "soon".
HANG = 10.0


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def victim_server(redis_server_factory: Callable[..., RedisServer]) -> RedisServer:
    """A server of this module's own, to kill, stop and restart."""
    return redis_server_factory()


@pytest.fixture
def victim(victim_server: RedisServer) -> Iterator[RedisServer]:
    """The module's server, running, not paused and empty."""
    if not victim_server.running:
        victim_server.start()
    elif victim_server.paused:
        victim_server.resume()
    victim_server.flushall()
    yield victim_server
    if victim_server.paused:
        victim_server.resume()


async def client_id(cache: RedisCache) -> int:
    value = await cache.execute_command("CLIENT", "ID")
    assert isinstance(value, int)
    return value


async def client_port(cache: RedisCache) -> int:
    """The local TCP port of the connection the next command uses."""
    info = await cache.execute_command("CLIENT", "INFO")
    match = re.search(rb" addr=127\.0\.0\.1:(\d+) ", b" " + info)
    assert match, info
    return int(match.group(1))


def value_of(i: int) -> str:
    return f"value-{i}-{'x' * (i % 13)}"


async def fill(cache: RedisCache, count: int, prefix: str = "k") -> None:
    """Stores ``prefix{i}`` -> value_of(i) for i < count, in batches of 1000."""
    batches = [
        cache.set_many({f"{prefix}{i}": value_of(i) for i in range(start, min(start + 1000, count))})
        for start in range(0, count, 1000)
    ]
    assert await asyncio.gather(*batches) == [True] * len(batches)


async def retry_until_ok(
    attempt: Callable[[], Awaitable[Any]],
    allowed: type[BaseException] | tuple[type[BaseException], ...],
    deadline: float = HANG,
) -> tuple[Any, list[BaseException]]:
    """Calls ``attempt`` until it succeeds; every failure must be ``allowed``.

    For a server coming back: the reconnect backoff (up to 2 s) decides when
    the cache tries again, so the caller polls (every 20 ms, bounded)."""
    failures: list[BaseException] = []
    end = time.monotonic() + deadline
    while True:
        try:
            return await asyncio.wait_for(attempt(), HANG), failures
        except allowed as exc:
            failures.append(exc)
        assert time.monotonic() < end, f"still failing after {deadline} s: {failures[-3:]!r}"
        await asyncio.sleep(0.02)


class Load:
    """``workers`` coroutines each getting keys in a loop and checking every
    answer, until their first failure, which they keep (an error of another
    kind than expected is a test failure at ``outcome``)."""

    def __init__(self, cache: RedisCache, keys: int, workers: int) -> None:
        self.cache = cache
        self.keys = keys
        self.done = 0
        self.enough = asyncio.Event()
        self.failures: list[BaseException] = []
        self.tasks = [asyncio.ensure_future(self._work(w)) for w in range(workers)]

    async def _work(self, w: int) -> None:
        i = w
        while True:
            key = i % self.keys
            try:
                got = await self.cache.get(f"k{key}")
            except Exception as exc:  # noqa: BLE001 - judged by the test
                self.failures.append(exc)
                return
            assert got == value_of(key), (key, got)
            self.done += 1
            if self.done >= 2000:
                self.enough.set()
            i += len(self.tasks)

    async def wait_busy(self) -> None:
        """Returns once 2000 gets succeeded: requests are in flight right now."""
        await asyncio.wait_for(self.enough.wait(), HANG)

    async def outcome(self) -> list[BaseException]:
        """Waits (bounded: a hang fails) for every worker to stop on an error."""
        await asyncio.wait_for(asyncio.gather(*self.tasks), HANG)
        assert len(self.failures) == len(self.tasks)
        return self.failures


# ---------------------------------------------------------------------------
# cancellation storm
# ---------------------------------------------------------------------------

STORM_WAVES = 100
STORM_WAVE_SIZE = 1000
STORM_KEYS = STORM_WAVES * STORM_WAVE_SIZE


def test_cancellation_storm(run: Runner, redis: RedisServer) -> None:
    """100k gets of distinct keys in waves of 1000 tasks; ~30% are cancelled at a
    random point: before the task ran, after it queued its command but before
    the write, after the write, or while replies are being read.  Every get
    that completes has its own key's value, and the one connection is still in
    step afterwards (no reconnect hid a misaligned reply)."""
    rng = random.Random(20240611)

    async def fetch(c: RedisCache, i: int) -> Any:
        if i % 10 == 0:  # vary the reply shape: an array reply now and then
            return (await c.get_many([f"k{i}", f"k{i + 1}", "missing"]))[f"k{i}"]
        return await c.get(f"k{i}")

    async def main() -> dict[str, int]:
        stats = {"cancelled": 0, "completed": 0, "direct-cancelled": 0}
        # stall_timeout=None: the test asserts that one connection carries the whole
        # storm, and a loaded machine can delay replies past the 0.1 s stall
        # reroute, which would (correctly) open a second connection.
        async with RedisCache(port=redis.port, client_name="storm", stall_timeout=None) as c:
            await fill(c, STORM_KEYS + 1)
            connection = await client_id(c)
            for wave in range(STORM_WAVES):
                base = wave * STORM_WAVE_SIZE
                tasks = [asyncio.ensure_future(fetch(c, base + i)) for i in range(STORM_WAVE_SIZE)]
                # Bare futures too, cancelled directly (no task in between).
                direct = [c.get(f"k{base + i}") for i in range(0, STORM_WAVE_SIZE, 50)]
                plan: dict[int, int] = {
                    i: rng.randrange(5) for i in rng.sample(range(STORM_WAVE_SIZE), 300)
                }
                for point in range(5):
                    for i, when in plan.items():
                        if when == point:
                            tasks[i].cancel()
                    if point == wave % 5:
                        for fut in direct[::2]:
                            fut.cancel()
                    await asyncio.sleep(0)  # one loop iteration, not a timed wait
                results = await asyncio.gather(*tasks, return_exceptions=True)
                for i, result in enumerate(results):
                    if isinstance(result, asyncio.CancelledError):
                        assert i in plan, f"k{base + i} was cancelled by nobody"
                        stats["cancelled"] += 1
                    else:
                        assert result == value_of(base + i), (base + i, result)
                        stats["completed"] += 1
                for j, fut in enumerate(direct):
                    if fut.cancelled():
                        stats["direct-cancelled"] += 1
                    else:
                        assert await fut == value_of(base + j * 50)
            # Still in step, on the very same connection.
            assert await client_id(c) == connection
            sample = rng.sample(range(STORM_KEYS), 2000)
            got = await asyncio.gather(*(c.get(f"k{i}") for i in sample))
            assert got == [value_of(i) for i in sample]
            assert await c.get_many([f"k{i}" for i in sample[:100]]) == {
                f"k{i}": value_of(i) for i in sample[:100]
            }
            assert await c.ping() is True
        return stats

    stats = run(main(), timeout=120)
    # The storm really cancelled and completed plenty of requests (cancels at
    # points 0 and 1, 2/5 of the 30% planned, always come before the reply).
    assert stats["cancelled"] >= STORM_KEYS // 10
    assert stats["completed"] >= STORM_KEYS // 2
    assert stats["direct-cancelled"] > 0


def test_cancelled_waiters_during_a_big_reply(run: Runner, redis: RedisServer) -> None:
    """A reply split across many reads, its waiter cancelled half way."""
    blob = os.urandom(8 * 1024 * 1024)

    async def main() -> None:
        async with RedisCache(port=redis.port, serializer="raw") as c:
            await c.set("blob", blob)
            for round_ in range(5):
                big = c.get("blob")
                small = [c.get(f"s{i}", i) for i in range(50)]
                for _ in range(round_):
                    await asyncio.sleep(0)
                big.cancel()
                assert await asyncio.gather(*small) == list(range(50))
            assert await c.get("blob") == blob

    run(main())


# ---------------------------------------------------------------------------
# heavy concurrency and backpressure
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("max_in_flight", [4096, 64, 1])
def test_ten_thousand_concurrent_coroutines_on_one_connection(
    run: Runner, redis: RedisServer, max_in_flight: int
) -> None:
    async def worker(c: RedisCache, i: int) -> tuple[Any, Any, int]:
        await c.set(f"w{i}", {"i": i, "v": value_of(i)})
        got = await c.get(f"w{i}")
        many = await c.get_many([f"w{i}", f"w{(i + 1) % 10_000}", "missing"])
        counter = await c.incr("counter")
        return got, many[f"w{i}"], counter

    async def main() -> None:
        async with RedisCache(
            port=redis.port, connections=1, max_in_flight=max_in_flight, client_name="tenk"
        ) as c:
            results = await asyncio.gather(*(worker(c, i) for i in range(10_000)))
            for i, (got, from_many, _) in enumerate(results):
                assert got == {"i": i, "v": value_of(i)}
                assert from_many == got
            assert sorted(counter for *_, counter in results) == list(range(1, 10_001))
            assert await c.get("counter") == 10_000
            listing = raw(redis, "CLIENT", "LIST")
            assert isinstance(listing, bytes) and listing.count(b" name=tenk ") == 1

    run(main())


@pytest.mark.parametrize("max_in_flight", [64, 4096])
def test_backpressure_caps_the_requests_on_the_wire(
    run: Runner, victim: RedisServer, max_in_flight: int
) -> None:
    """With the server stopped, what reached its socket is exactly the first
    ``max_in_flight`` of 1000 queued GETs (all of them when the limit is
    higher): the rest wait in the client's buffer, and all are answered
    correctly once the server runs again."""
    if not os.path.exists("/proc/net/tcp"):
        pytest.skip("needs /proc/net/tcp (Linux) to see the server's receive queue")
    command = b"*2\r\n$3\r\nGET\r\n$6\r\nk00000\r\n"
    expected = min(max_in_flight, 1000) * len(command)

    async def main() -> None:
        async with RedisCache(
            host="127.0.0.1", port=victim.port, max_in_flight=max_in_flight, socket_timeout=None
        ) as c:
            await c.set_many({f"k{i:05d}": i for i in range(1000)})
            port = await client_port(c)
            victim.pause()
            try:
                futures = [c.get(f"k{i:05d}") for i in range(1000)]
                deadline = time.monotonic() + HANG
                while server_side_rx_queue(victim.port, port) < expected:
                    assert time.monotonic() < deadline, server_side_rx_queue(victim.port, port)
                    await asyncio.sleep(0.005)
                for _ in range(20):  # give it every chance to write too much
                    await asyncio.sleep(0)
                assert server_side_rx_queue(victim.port, port) == expected
                assert not any(f.done() for f in futures)
            finally:
                victim.resume()
            assert await asyncio.wait_for(asyncio.gather(*futures), HANG) == list(range(1000))

    run(main())


# ---------------------------------------------------------------------------
# the server dies, stops, or is not there
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("connections", [1, 4])
def test_server_killed_under_load_then_restarted(
    run: Runner, victim: RedisServer, connections: int
) -> None:
    async def main() -> None:
        c = RedisCache(port=victim.port, connections=connections)
        await fill(c, 1000)
        load = Load(c, keys=1000, workers=50)
        await load.wait_busy()
        victim.kill()  # SIGKILL with requests in flight
        failures = await load.outcome()  # every worker stops, none hangs
        for exc in failures:
            assert isinstance(exc, ConnectionError), repr(exc)
            assert isinstance(exc, builtins.ConnectionError)
            assert "redis" in str(exc)
        # The requests in flight at the kill learn the connection broke.
        broken = [
            e for e in failures
            if "closed the connection" in str(e) or "connection to redis failed" in str(e)
        ]
        assert broken, [str(e) for e in failures]
        # While the server is down: ConnectionError, at once.
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(c.get("k1"), HANG)

        victim.start()  # same port, empty (no persistence)
        _, down = await retry_until_ok(lambda: c.set("after", "restart"), ConnectionError)
        assert all(isinstance(e, ConnectionError) for e in down)
        assert await c.get("after") == "restart"
        assert await c.get("k1") is None  # a new server, not a stale reply
        await fill(c, 1000, prefix="n")
        got = await asyncio.gather(*(c.get(f"n{i}") for i in range(1000)))
        assert got == [value_of(i) for i in range(1000)]
        await c.close()

    run(main())


def test_server_stopped_under_load_times_out_then_recovers(
    run: Runner, victim: RedisServer
) -> None:
    async def main() -> None:
        c = RedisCache(port=victim.port, socket_timeout=0.3)
        await fill(c, 1000)
        load = Load(c, keys=1000, workers=50)
        await load.wait_busy()
        victim.pause()  # SIGSTOP: the server holds the connection but never answers
        try:
            failures = await load.outcome()
            for exc in failures:
                assert isinstance(exc, TimeoutError), repr(exc)
                assert isinstance(exc, builtins.TimeoutError)
                assert "did not answer within 300 ms" in str(exc)
            # New requests while it is still stopped time out too (a new
            # connection is accepted by the kernel, never served).
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(c.get("k1"), HANG)
            # Written while stopped, unanswered: these must never resurface.
            stale = [c.set(f"k{i}", "stale") for i in range(10)] + [c.get("k0")]
            stale_results = await asyncio.wait_for(
                asyncio.gather(*stale, return_exceptions=True), HANG
            )
            assert all(isinstance(r, TimeoutError) for r in stale_results), stale_results
        finally:
            victim.resume()
        _, slow = await retry_until_ok(lambda: c.ping(), TimeoutError)
        assert len(slow) <= 1
        await c.set_many({f"fresh{i}": f"fresh-{i}" for i in range(1000)})
        fresh = await asyncio.gather(*(c.get(f"fresh{i}") for i in range(1000)))
        assert fresh == [f"fresh-{i}" for i in range(1000)]
        untouched = await asyncio.gather(*(c.get(f"k{i}") for i in range(10, 1000)))
        assert untouched == [value_of(i) for i in range(10, 1000)]
        await c.close()

    run(main())


def test_connection_killed_by_the_server_is_replaced(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        async with RedisCache(port=redis.port, db=2, client_name="replaced") as c:
            await c.set("k", "v")
            first = await client_id(c)
            assert raw(redis, "CLIENT", "KILL", "ID", first) == 1
            # Issued before the loop could notice: it goes to the dead
            # connection and fails; the next command gets a new connection,
            # handshake (SELECT, CLIENT SETNAME) included.
            with pytest.raises(ConnectionError, match="closed the connection|failed"):
                await asyncio.wait_for(c.ping(), HANG)
            assert await c.get("k") == "v"
            second = await client_id(c)
            assert second != first
            info = await c.execute_command("CLIENT", "INFO")
            assert b" db=2 " in info and b" name=replaced " in info
            # Killed with requests waiting: they fail (or were answered
            # first), none hangs, and the cache carries on.
            waiting = [c.get("k") for _ in range(100)]
            assert raw(redis, "CLIENT", "KILL", "ID", second) == 1
            results = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), HANG)
            assert any(isinstance(r, ConnectionError) for r in results)
            for r in results:
                assert r == "v" or isinstance(r, ConnectionError), r
            assert await c.get("k") == "v"
            assert await client_id(c) not in (first, second)

    run(main())


class FakeClock:
    """Stands in for the ``time`` module of redis_cache.cache: its monotonic()
    moves only when the test says so (the event loop's clock is untouched)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_backoff_is_short_early_in_an_outage_then_grows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Delays double from 5 ms with jitter in [0.5, 1); at most 50 ms for the
    first 5 s of an outage, so a restart is noticed within 50 ms of the server
    accepting; up to 1 s after that; a success starts over."""
    clock = FakeClock()
    monkeypatch.setattr(cache_module, "time", clock)
    backoff = cache_module._Backoff()
    assert backoff.delay() == 0.0  # nothing failed: connect at once
    steps = []
    for _ in range(12):
        backoff.failed(ConnectionError, "refused")
        steps.append(backoff.delay())
        clock.now += 0.1
    for got, cap in zip(steps, [0.005, 0.01, 0.02, 0.04] + [0.05] * 8):
        assert cap * 0.5 <= got <= cap, steps
    clock.now += 5.0  # a long outage: attempts get rarer
    for _ in range(10):
        backoff.failed(ConnectionError, "refused")
    assert 0.5 <= backoff.delay() <= 1.0
    assert backoff.error == (ConnectionError, "refused")
    backoff.succeeded()
    assert backoff.delay() == 0.0 and backoff.error is None
    backoff.failed(ConnectionError, "refused")
    assert backoff.delay() <= 0.005


async def wait_for_failed_attempts(cache: RedisCache, count: int) -> None:
    """Polls (bounded) until the cache has seen `count` connect attempts fail."""
    end = time.monotonic() + HANG
    while cache._backoff.failures < count:
        assert time.monotonic() < end, "no connect attempt failed"
        await asyncio.sleep(0.002)


def test_commands_wait_for_a_server_that_comes_back(run: Runner, victim: RedisServer) -> None:
    """Commands issued while the server is down wait (up to connect_wait) and
    succeed once it accepts again: none fails after it is back."""

    async def main() -> None:
        async with RedisCache(port=victim.port, connect_wait=HANG) as c:
            assert await c.set("k", "v") is True
            victim.kill()
            with pytest.raises(ConnectionError):
                await asyncio.wait_for(c.get("k"), HANG)  # in flight when it died
            waiting = [asyncio.ensure_future(c.get("k", default="gone")) for _ in range(50)]
            await wait_for_failed_attempts(c, 2)
            assert not any(task.done() for task in waiting)
            victim.start()  # same port, empty (no persistence)
            results = await asyncio.wait_for(asyncio.gather(*waiting), HANG)
            assert results == ["gone"] * 50
            assert c._backoff.failures == 0
            assert await c.set("k", "again") is True

    run(main())


def test_connect_wait_bounds_the_wait_and_names_the_failure(run: Runner) -> None:
    from redis_cache.testing import free_port

    port = free_port()

    async def main() -> None:
        c = RedisCache(host="127.0.0.1", port=port, connect_wait=0.2)
        started = time.monotonic()
        with pytest.raises(ConnectionError, match=rf"cannot connect to redis at .*:{port}.*connect_wait=200 ms"):
            await asyncio.wait_for(c.get("k"), HANG)
        assert time.monotonic() - started >= 0.19  # (the timer counts whole ms)
        assert c._backoff.failures >= 2  # attempts went on while it waited
        # Nobody waits any more: the attempts stop by themselves.
        await asyncio.wait_for(asyncio.gather(*c._connect_tasks), HANG)
        assert all(mux.closed for mux in c._multiplexers)
        await c.close()

    run(main())


def test_connect_wait_zero_fails_at_once_once_an_attempt_failed(run: Runner) -> None:
    """connect_wait=0: after a failed attempt, commands fail without waiting
    (the old fail-fast behaviour), each saying why."""
    from redis_cache.testing import free_port

    async def main() -> None:
        c = RedisCache(host="127.0.0.1", port=free_port(), socket_connect_timeout=60, connect_wait=0)
        with pytest.raises(ConnectionError, match="cannot connect"):
            await asyncio.wait_for(c.get("k"), HANG)
        for _ in range(100):
            with pytest.raises(ConnectionError, match="cannot connect"):
                await asyncio.wait_for(c.get("k"), HANG)
        await c.close()

    run(main())


# ---------------------------------------------------------------------------
# fork
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("in_flight", [False, True], ids=["idle", "requests-in-flight"])
def test_fork_child_reconnects_and_parent_keeps_its_connection(
    run: Runner, redis: RedisServer, in_flight: bool
) -> None:
    async def main() -> None:
        c = RedisCache(port=redis.port, client_name="forked", stall_timeout=None)  # one connection, asserted below
        await fill(c, 1000)
        parent_connection = await client_id(c)
        pending = [c.get(f"k{i}") for i in range(1000)] if in_flight else []
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # --- the child: no pytest from here on, always _exit
            status = 1
            try:
                os.close(read_end)

                async def child() -> str:
                    own = await client_id(c)
                    assert own != parent_connection, "the child reused the parent's socket"
                    assert await c.get("k7") == value_of(7)
                    got = await asyncio.gather(*(c.get(f"k{i}") for i in range(1000)))
                    assert got == [value_of(i) for i in range(1000)]
                    assert await c.set("child", os.getpid()) is True
                    await c.close()
                    return f"ok {own}"

                message = Runner(run.kind)(child(), timeout=HANG)
                status = 0
            except BaseException as exc:  # noqa: BLE001 - reported to the parent
                message = f"child failed: {exc!r}"
            finally:
                try:
                    os.write(write_end, message.encode())
                finally:
                    os._exit(status)
        # --- the parent
        os.close(write_end)
        try:
            # The parent keeps working while the child runs.
            if pending:
                got = await asyncio.wait_for(asyncio.gather(*pending), HANG)
                assert got == [value_of(i) for i in range(1000)]
            for i in range(0, 1000, 100):
                assert await c.get(f"k{i}") == value_of(i)
            loop = asyncio.get_running_loop()
            _, wait_status = await asyncio.wait_for(
                loop.run_in_executor(None, os.waitpid, pid, 0), 30
            )
        except BaseException:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise
        with os.fdopen(read_end, "rb") as fh:
            report = fh.read().decode()
        assert os.waitstatus_to_exitcode(wait_status) == 0, report
        assert report.startswith("ok ")
        assert int(report.split()[1]) != parent_connection
        # The parent's connection survived the child's exit untouched.
        assert await client_id(c) == parent_connection
        assert await c.get("child") == pid
        assert await c.get("k999") == value_of(999)
        await c.close()

    run(main())


# ---------------------------------------------------------------------------
# a second running event loop
# ---------------------------------------------------------------------------


class LoopThread:
    """An event loop running forever in its own thread."""

    def __init__(self, kind: str) -> None:
        self.loop = new_loop(kind)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        async def runner() -> Any:
            return await fn()

        return asyncio.run_coroutine_threadsafe(runner(), self.loop).result(HANG)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(HANG)
        assert not self.thread.is_alive()
        self.loop.close()


def second_loop_calls(c: RedisCache) -> dict[str, Callable[[], Awaitable[Any]]]:
    return {
        "get": lambda: c.get("k"),
        "set": lambda: c.set("k", "from B"),
        "get_many": lambda: c.get_many(["k"]),
        "delete": lambda: c.delete("k"),
        "ping": c.ping,
        "execute_command": lambda: c.execute_command("GET", "k"),
        "clear_pattern": lambda: c.clear_pattern("*"),
        "connect": c.connect,
    }


@pytest.mark.parametrize(
    "connections",
    [
        1,
        pytest.param(
            2),
    ],
)
def test_second_running_loop_raises_runtime_error(
    run: Runner, redis: RedisServer, connections: int
) -> None:
    a = LoopThread(run.kind)
    c = RedisCache(port=redis.port, connections=connections)
    try:
        assert a.call(lambda: c.set("k", "from A")) is True  # uses one connection

        async def from_b() -> None:
            for name, call in second_loop_calls(c).items():
                with pytest.raises(RuntimeError, match="another running event loop") as info:
                    await call()
                assert "one cache per event loop" in str(info.value), name

        run(from_b())
        # Loop A is unaffected.
        assert a.call(lambda: c.get("k")) == "from A"
        assert a.call(c.ping) is True
    finally:
        a.call(c.close)
        a.stop()
    assert raw(redis, "GET", "k") == b'"from A"'


def test_after_the_first_loop_closed_a_second_loop_may_take_over(
    run: Runner, redis: RedisServer
) -> None:
    a = LoopThread(run.kind)
    c = RedisCache(port=redis.port)
    try:
        assert a.call(lambda: c.set("k", "from A")) is True
    finally:
        a.stop()  # closes loop A, leaving the cache open

    async def from_b() -> None:
        assert await c.get("k") == "from A"
        await c.close()

    run(from_b())


def test_an_idle_first_loop_does_not_block_a_second_loop(run: Runner, redis: RedisServer) -> None:
    first = run.new_loop()
    c = RedisCache(port=redis.port)

    async def use(value: str) -> Any:
        await c.set("k", value)
        return await c.get("k")

    try:
        assert first.run_until_complete(use("first")) == "first"
        # `first` is not running now; a second loop uses the cache.
        assert run(use("second")) == "second"
    finally:
        first.run_until_complete(c.close())
        first.close()
