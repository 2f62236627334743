"""Stampedes, cross-process locks, early refresh and failing open.

* Single flight: 100 concurrent async misses of one key, or 16 threads of a
  sync function, compute once; an exception reaches every waiter and nothing
  is stored. The computation is held (an asyncio.Event, a threading.Event)
  until every caller has missed, so the callers really overlap.
* ``lock=True``: two real processes (``python -c`` scripts) miss one key at
  once; exactly one computes (counted with INCR on the server), the other is
  woken when the value is stored; when the holder is killed (SIGKILL), a
  waiter takes the lock over once the dead holder's lease runs out, well
  before ``lock_wait``, and the other waiter reads what it stored; with a
  ``lock_wait`` shorter than the lease, the waiter computes after it.
* ``early_refresh``: a hit recomputes (async: in the background, awaited
  through an Event set inside the function).
* Fail-open: with the server stopped, decorated functions still return;
  one warning, not one per call; after 5 failures the circuit breaker stops
  trying Redis; after a restart caching resumes.
* The circuit breaker's settings: ``failure_threshold`` failures in a row
  open it, one probe goes after ``probe_after`` and later ones at growing
  delays up to ``max_probe_after`` (a fake clock, no server); through the
  decorators on a real server that is stopped; with the default breaker,
  hits resume within seconds of the server's restart.

Ordering comes from events, blocking pops and the server's own view
(``INFO clients``: how many clients sit in BLPOP); the only waits are polls
of an observable condition under a generous deadline.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from typing import Any

import pytest
from async_support import Runner, run  # noqa: F401  (run is a fixture)
from lock_support import (
    DEADLINE,
    async_wait_until,
    blocked_clients,
    python_processes,
    wait_until,
)
from redis_raw import dbsize, keys, pttl, raw

import redis_cache
from redis_cache import CircuitBreaker, RedisCache, SyncRedisCache
from redis_cache.decorators import _lock_keys
from redis_cache.testing import RedisServer

NS = "st"


def reset_stats(fn: Any) -> None:
    s = fn.stats
    with s._lock:
        s.hits = s.misses = s.errors = s.computations = 0
        s.compute_seconds = 0.0


def counts(fn: Any) -> dict[str, int]:
    s = fn.stats
    return {"hits": s.hits, "misses": s.misses, "computations": s.computations,
            "errors": s.errors}


# ---------------------------------------------------------------------------
# single flight in one process
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("lock", [False, True], ids=["no-lock", "lock"])
def test_100_concurrent_async_misses_compute_once(
    run: Runner, redis: RedisServer, lock: bool
) -> None:
    n = 100

    async def main() -> None:
        async with RedisCache(port=redis.port, namespace=NS) as cache:
            release = asyncio.Event()
            computations = 0

            @cache.cached(60, lock=lock)
            async def report(day: str) -> dict[str, Any]:
                nonlocal computations
                computations += 1
                await release.wait()  # held until every caller is in
                return {"day": day, "n": computations}

            reset_stats(report)
            lock_key = _lock_keys(cache, report.key("mon"))[0]
            callers = [asyncio.ensure_future(report("mon")) for _ in range(n)]
            # A miss is counted just before the caller joins the flight (no
            # await in between): all n counted means all n are in.
            await async_wait_until(lambda: report.stats.misses == n, "all callers to miss")
            if lock:  # the one computation holds the Redis lock
                await async_wait_until(lambda: raw(redis, "EXISTS", lock_key) == 1,
                                       "the lock to be taken")
            release.set()
            results = await asyncio.gather(*callers)
            assert computations == 1
            assert results == [{"day": "mon", "n": 1}] * n
            # Every caller missed (none came late enough to hit): they overlapped.
            assert counts(report) == {"hits": 0, "misses": n, "computations": 1, "errors": 0}
            assert await cache.get(report.key("mon")) == {"day": "mon", "n": 1}
            assert await report("mon") == {"day": "mon", "n": 1}
            assert computations == 1
            if lock:  # the lock was released (and the wake-up list is short-lived)
                assert raw(redis, "EXISTS", lock_key) == 0

    run(main())


@pytest.mark.parametrize("lock", [False, True], ids=["no-lock", "lock"])
def test_16_threads_missing_at_once_compute_once(redis: RedisServer, lock: bool) -> None:
    n = 16
    release = threading.Event()
    computing: list[str] = []
    with SyncRedisCache(port=redis.port, namespace=NS) as cache:

        @cache.cached(60, lock=lock)
        def report(day: str) -> dict[str, Any]:
            computing.append(threading.current_thread().name)
            assert release.wait(DEADLINE)
            return {"day": day, "n": len(computing)}

        reset_stats(report)
        barrier = threading.Barrier(n)
        results: dict[int, Any] = {}

        def worker(i: int) -> None:
            barrier.wait(DEADLINE)
            results[i] = report("tue")

        threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
        for t in threads:
            t.start()
        try:
            # Nothing can be stored while the computation is held, so every
            # thread misses; then they all wait on the one computation.
            wait_until(lambda: report.stats.misses == n, "all threads to miss")
        finally:
            release.set()
            for t in threads:
                t.join(DEADLINE)
        assert not any(t.is_alive() for t in threads)
        assert len(computing) == 1
        assert results == {i: {"day": "tue", "n": 1} for i in range(n)}
        assert counts(report) == {"hits": 0, "misses": n, "computations": 1, "errors": 0}
        assert cache.get(report.key("tue")) == {"day": "tue", "n": 1}


def test_async_exception_reaches_every_waiter_and_nothing_is_stored(
    run: Runner, redis: RedisServer
) -> None:
    n = 100

    class ReportFailed(Exception):
        pass

    async def main() -> None:
        async with RedisCache(port=redis.port, namespace=NS) as cache:
            release = asyncio.Event()
            attempts = 0

            @cache.cached(60)
            async def report(day: str) -> str:
                nonlocal attempts
                attempts += 1
                await release.wait()
                if attempts == 1:
                    raise ReportFailed(day)
                return f"report {day}"

            reset_stats(report)
            callers = [asyncio.ensure_future(report("wed")) for _ in range(n)]
            await async_wait_until(lambda: report.stats.misses == n, "all callers to miss")
            release.set()
            results = await asyncio.gather(*callers, return_exceptions=True)
            assert attempts == 1
            assert all(isinstance(r, ReportFailed) for r in results), results[:3]
            assert dbsize(redis) == 0
            assert report.stats.computations == 0
            # The failure was not remembered: the next call computes.
            assert await report("wed") == "report wed"
            assert attempts == 2

    run(main())


def test_thread_exception_reaches_every_waiter_and_nothing_is_stored(redis: RedisServer) -> None:
    n = 16
    release = threading.Event()
    attempts: list[int] = []

    class ReportFailed(Exception):
        pass

    with SyncRedisCache(port=redis.port, namespace=NS) as cache:

        @cache.cached(60)
        def report(day: str) -> str:
            attempts.append(1)
            assert release.wait(DEADLINE)
            if len(attempts) == 1:
                raise ReportFailed(day)
            return f"report {day}"

        reset_stats(report)
        barrier = threading.Barrier(n)
        outcomes: dict[int, Any] = {}

        def worker(i: int) -> None:
            barrier.wait(DEADLINE)
            try:
                outcomes[i] = report("thu")
            except ReportFailed as exc:
                outcomes[i] = exc

        threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
        for t in threads:
            t.start()
        try:
            wait_until(lambda: report.stats.misses == n, "all threads to miss")
        finally:
            release.set()
            for t in threads:
                t.join(DEADLINE)
        assert len(attempts) == 1
        assert len(outcomes) == n
        assert all(isinstance(o, ReportFailed) for o in outcomes.values())
        assert dbsize(redis) == 0
        assert report("thu") == "report thu"
        assert len(attempts) == 2


@pytest.mark.parametrize("flavor", ["sync", "async"])
def test_lock_does_not_rerun_a_function_that_raised_a_redis_error(
    redis: RedisServer, flavor: str
) -> None:
    calls: list[int] = []
    error = redis_cache.ConnectionError("the function's own redis is down")
    if flavor == "sync":
        with SyncRedisCache(port=redis.port, namespace=NS) as cache:

            @cache.cached(60, lock=True)
            def charge(order: int) -> None:
                calls.append(order)
                raise error

            with pytest.raises(redis_cache.ConnectionError):
                charge(1)
    else:

        async def main() -> None:
            async with RedisCache(port=redis.port, namespace=NS) as cache:

                @cache.cached(60, lock=True)
                async def charge(order: int) -> None:
                    calls.append(order)
                    raise error

                with pytest.raises(redis_cache.ConnectionError):
                    await charge(1)

        Runner("asyncio")(main())
    assert calls == [1]  # [1, 1]: charged twice


def test_without_lock_a_function_raising_a_redis_error_runs_once(redis: RedisServer) -> None:
    calls: list[int] = []
    with SyncRedisCache(port=redis.port, namespace=NS) as cache:

        @cache.cached(60)
        def charge(order: int) -> None:
            calls.append(order)
            raise redis_cache.ConnectionError("the function's own redis is down")

        with pytest.raises(redis_cache.ConnectionError):
            charge(1)
    assert calls == [1]


# ---------------------------------------------------------------------------
# lock=True across processes
# ---------------------------------------------------------------------------

#: One process calling ``build("report")`` decorated with lock=True.
#: argv: port, flavor (sync|async), role (holder|waiter), lock_wait, lock_lease.
#: The function INCRs "computations" and pushes what it saw to the list
#: "computing" (its pid, the count, the lock key's value, the value key). A
#: holder then blocks until the test pushes "go"; a waiter blocks, before
#: calling, until the test pushes "waiter-go". Prints its result as JSON.
PROCESS_SCRIPT = r"""
import asyncio, json, os, sys
from redis_cache import RedisCache, SyncRedisCache
from redis_cache.decorators import _lock_keys

port, flavor, role = int(sys.argv[1]), sys.argv[2], sys.argv[3]
lock_wait, lock_lease = float(sys.argv[4]), float(sys.argv[5])
NS = "st"
# One key prefix for the sync build and the async one (their qualnames differ).
options = dict(lock=True, lock_wait=lock_wait, lock_lease=lock_lease, namespace="build")

def describe(cache, fn, n, holder):
    key = cache._key_prefix + fn.key("report").encode()
    return json.dumps({"pid": os.getpid(), "n": n, "key": key.decode(),
                       "lock_key": _lock_keys(cache, fn.key("report"))[0].decode(),
                       "lock": holder.decode() if holder else None})

if flavor == "sync":
    # socket_timeout=None: the waiter's BLPOP then lasts lock_wait, not 0.8 * timeout.
    cache = SyncRedisCache(port=port, namespace=NS, socket_timeout=None)

    @cache.cached(60, **options)
    def build(name):
        n = cache.execute_command("INCR", "computations")
        holder = cache.execute_command("GET", _lock_keys(cache, build.key(name))[0])
        cache.execute_command("RPUSH", "computing", describe(cache, build, n, holder))
        if role == "holder":
            cache.execute_command("BLPOP", "go", 0)
        return {"by": os.getpid(), "n": n}

    if role == "waiter":
        cache.execute_command("BLPOP", "waiter-go", 0)
    result = build("report")
    cache.close()
else:
    async def main():
        async with RedisCache(port=port, namespace=NS) as cache:
            @cache.cached(60, **options)
            async def build(name):
                n = await cache.execute_command("INCR", "computations")
                holder = await cache.execute_command("GET", _lock_keys(cache, build.key(name))[0])
                await cache.execute_command("RPUSH", "computing", describe(cache, build, n, holder))
                if role == "holder":
                    async with cache.dedicated() as conn:
                        await conn.execute_command("BLPOP", "go", 0)
                return {"by": os.getpid(), "n": n}

            if role == "waiter":
                async with cache.dedicated() as conn:
                    await conn.execute_command("BLPOP", "waiter-go", 0)
            return await build("report")

    result = asyncio.run(main())
print(json.dumps({"pid": os.getpid(), "result": result}))
"""


@pytest.fixture
def processes() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Starts PROCESS_SCRIPT processes; kills any still running at the end."""
    with python_processes(PROCESS_SCRIPT) as run_script:

        def start(server: RedisServer, flavor: str, role: str, *, lock_wait: float,
                  lock_lease: float) -> subprocess.Popen[str]:
            return run_script(server.port, flavor, role, lock_wait, lock_lease)

        yield start


def finish(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def next_computation(server: RedisServer) -> dict[str, Any]:
    """Blocks until a process pushed what its computation saw (a blocking pop)."""
    reply = raw(server, "BLPOP", "computing", int(DEADLINE))
    assert isinstance(reply, list), "no process started computing"
    return json.loads(reply[1])  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("holder_flavor", "waiter_flavor"),
    [("sync", "sync"), ("async", "async"), ("async", "sync"), ("sync", "async")],
)
def test_lock_two_processes_compute_once_and_the_waiter_is_woken(
    redis: RedisServer, processes: Any, holder_flavor: str, waiter_flavor: str
) -> None:
    # lock_wait is an hour: the waiter can only finish within DEADLINE if the
    # holder's release wakes it (a timeout would take the whole hour).
    holder = processes(redis, holder_flavor, "holder", lock_wait=3600, lock_lease=10)
    seen = next_computation(redis)
    assert seen["n"] == 1 and seen["pid"] == holder.pid
    assert seen["lock"] is not None  # the holder computes holding the Redis lock
    assert raw(redis, "GET", seen["lock_key"]) == seen["lock"].encode()

    assert raw(redis, "RPUSH", "waiter-go", "1") == 1
    waiter = processes(redis, waiter_flavor, "waiter", lock_wait=3600, lock_lease=10)
    # The holder sits in BLPOP "go"; the waiter, having missed and found the
    # lock taken, in BLPOP on the wake-up list.
    wait_until(lambda: blocked_clients(redis) == 2, "the waiter to block on the lock")
    assert raw(redis, "GET", seen["key"]) is None  # nothing stored yet
    assert raw(redis, "RPUSH", "go", "1") == 1

    held = finish(holder)
    woken = finish(waiter)
    assert held["result"] == {"by": holder.pid, "n": 1}
    assert woken["result"] == {"by": holder.pid, "n": 1}  # the holder's stored value
    assert raw(redis, "GET", "computations") == b"1"
    assert raw(redis, "LLEN", "computing") == 0  # the waiter never computed
    assert raw(redis, "EXISTS", seen["lock_key"]) == 0
    assert 0 < pttl(redis, seen["key"]) <= 60_000


@pytest.mark.parametrize("flavor", ["sync", "async"])
def test_lock_holder_killed_waiter_computes_after_lock_wait(
    redis: RedisServer, processes: Any, flavor: str
) -> None:
    # lock_wait is far shorter than the lease: the waiter gives up on the dead
    # holder before its lease ends (test_decorators_faults.py has the takeover).
    holder = processes(redis, flavor, "holder", lock_wait=0.5, lock_lease=600)
    seen = next_computation(redis)
    token = seen["lock"]
    assert token is not None
    waiter = processes(redis, flavor, "waiter", lock_wait=0.5, lock_lease=600)
    # Both sit in a BLPOP: the holder on "go", the waiter on "waiter-go".
    wait_until(lambda: blocked_clients(redis) == 2, "the waiter to be ready")

    holder.kill()
    holder.wait(DEADLINE)
    # The dead holder's lease outlives it for a while.
    assert raw(redis, "GET", seen["lock_key"]) == token.encode()
    assert raw(redis, "RPUSH", "waiter-go", "1") == 1

    result = finish(waiter)
    mine = next_computation(redis)
    assert mine["pid"] == waiter.pid and mine["n"] == 2
    # The waiter did not take the lock: it computed after giving up waiting,
    # while the dead holder's lock was still there.
    assert mine["lock"] == token
    assert result["result"] == {"by": waiter.pid, "n": 2}
    assert json.loads(raw(redis, "GET", seen["key"])) == {"by": waiter.pid, "n": 2}  # type: ignore[arg-type]
    assert raw(redis, "GET", "computations") == b"2"


def command_calls(server: RedisServer, command: str) -> int:
    """How many times the server has run a command (INFO commandstats)."""
    info = raw(server, "INFO", "commandstats")
    assert isinstance(info, bytes)
    for line in info.decode().splitlines():
        if line.startswith(f"cmdstat_{command}:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


@pytest.mark.parametrize("flavor", ["sync", "async"])
def test_lock_holder_killed_a_waiter_takes_over_when_the_lease_ends(
    redis: RedisServer, processes: Any, flavor: str
) -> None:
    lease, lock_wait = 2.0, 8.0
    holder = processes(redis, flavor, "holder", lock_wait=lock_wait, lock_lease=lease)
    seen = next_computation(redis)
    token = seen["lock"]
    assert token is not None
    waiters = [processes(redis, flavor, "waiter", lock_wait=lock_wait, lock_lease=lease)
               for _ in range(2)]
    # The holder sits in BLPOP "go", the waiters in BLPOP "waiter-go".
    wait_until(lambda: blocked_clients(redis) == 3, "the waiters to be ready")

    holder.kill()
    holder.wait(DEADLINE)
    assert raw(redis, "GET", seen["lock_key"]) == token.encode()  # its lease outlives it
    pops, scripts = command_calls(redis, "blpop"), command_calls(redis, "eval")
    released = time.monotonic()
    assert raw(redis, "RPUSH", "waiter-go", "1", "1") == 2

    mine = next_computation(redis)
    took_over_after = time.monotonic() - released
    # One waiter took the lock over: it computed holding a lock of its own,
    # which it could only take once the dead holder's lease had run out ...
    assert mine["pid"] in {w.pid for w in waiters} and mine["n"] == 2
    assert mine["lock"] not in (token, None)
    # ... and it did so when that lease ended (at most 2 s after the kill),
    # not after lock_wait (8 s). Generous, but a waiter that ignored the
    # lease could not meet it.
    assert took_over_after < lock_wait, took_over_after

    results = [finish(w) for w in waiters]
    # The other waiter was woken by the new holder and read what it stored.
    assert [r["result"] for r in results] == [{"by": mine["pid"], "n": 2}] * 2
    assert raw(redis, "GET", "computations") == b"2"
    assert raw(redis, "LLEN", "computing") == 0
    assert raw(redis, "EXISTS", seen["lock_key"]) == 0
    # Nobody polled: a handful of blocking pops and scripts, not a loop's worth
    # (the test's own pop of "computing" and the waiters' of "waiter-go" included).
    assert command_calls(redis, "blpop") - pops <= 20
    assert command_calls(redis, "eval") - scripts <= 20


# ---------------------------------------------------------------------------
# early refresh
# ---------------------------------------------------------------------------


def test_async_early_refresh_recomputes_in_the_background(
    run: Runner, redis: RedisServer
) -> None:
    async def main() -> None:
        async with RedisCache(port=redis.port, namespace=NS) as cache:
            refreshed = asyncio.Event()
            computations = 0

            # An infinite factor makes the random draw irrelevant: every hit
            # refreshes (a large finite one still misses a few per cent of draws).
            @cache.cached(60, early_refresh=math.inf)
            async def rate(currency: str) -> dict[str, Any]:
                nonlocal computations
                computations += 1
                if computations == 2:
                    refreshed.set()
                return {"currency": currency, "version": computations}

            reset_stats(rate)
            assert await rate("EUR") == {"currency": "EUR", "version": 1}  # the miss
            # The hit answers at once with the stored value; the refresh runs later.
            assert await rate("EUR") == {"currency": "EUR", "version": 1}
            assert not refreshed.is_set()
            await asyncio.wait_for(refreshed.wait(), DEADLINE)

            async def stored_version() -> bool:
                return await cache.get(rate.key("EUR")) == {"currency": "EUR", "version": 2}

            await async_wait_until(stored_version, "the refreshed value to be stored")
            assert counts(rate) == {"hits": 1, "misses": 1, "computations": 2, "errors": 0}
            assert 59_000 <= pttl(redis, f"{NS}:{rate.key('EUR')}") <= 60_000

    run(main())


def test_sync_early_refresh_recomputes_on_the_hit(redis: RedisServer) -> None:
    versions: list[int] = []
    with SyncRedisCache(port=redis.port, namespace=NS) as cache:

        # An infinite factor: every hit refreshes, whatever the random draw.
        @cache.cached(60, early_refresh=math.inf)
        def rate(currency: str) -> int:
            versions.append(len(versions) + 1)
            return versions[-1]

        reset_stats(rate)
        assert rate("EUR") == 1
        assert rate("EUR") == 2  # a hit, refreshed inline
        assert cache.get(rate.key("EUR")) == 2
        assert counts(rate) == {"hits": 1, "misses": 1, "computations": 2, "errors": 0}


@pytest.mark.parametrize("early_refresh", [None, 1.0], ids=["off", "far-from-expiry"])
def test_no_early_refresh_when_off_or_far_from_expiry(
    redis: RedisServer, early_refresh: float | None
) -> None:
    # early_refresh=1.0 with an hour left and a computation of microseconds:
    # refreshing now would need -log(U) > 1e8, i.e. never.
    versions: list[int] = []
    with SyncRedisCache(port=redis.port, namespace=NS) as cache:

        @cache.cached(3600, early_refresh=early_refresh)
        def rate(currency: str) -> int:
            versions.append(len(versions) + 1)
            return versions[-1]

        assert [rate("EUR") for _ in range(20)] == [1] * 20
        assert versions == [1]


# ---------------------------------------------------------------------------
# fail-open and the circuit breaker
# ---------------------------------------------------------------------------


def breaker_that_stays_open() -> CircuitBreaker:
    """A breaker that, once open, stays open for the whole test: no probe."""
    return CircuitBreaker(5, probe_after=3600, max_probe_after=3600)


def unavailable_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "cache unavailable" in r.getMessage()]


def test_sync_fail_open_warns_once_and_opens_the_breaker(
    redis_server_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = redis_server_factory()
    with SyncRedisCache(port=server.port, namespace=NS,
                        circuit_breaker=breaker_that_stays_open()) as cache:

        @cache.cached(60)
        def double(x: int) -> int:
            return x * 2

        @cache.cached(60, lock=True)
        def triple(x: int) -> int:
            return x * 3

        reset_stats(double)
        reset_stats(triple)
        assert double(1) == 2  # stored while the server is up
        server.stop()
        breaker = cache.circuit_breaker
        with caplog.at_level(logging.WARNING, logger="redis_cache"):
            assert [double(x) for x in range(10)] == [x * 2 for x in range(10)]
            assert breaker.open
            # A read and a write failed per call until the 5th failure opened
            # the breaker; since then no call has touched Redis.
            assert double.stats.errors == 5
            assert [double(x) for x in range(10)] == [x * 2 for x in range(10)]
            assert double.stats.errors == 5
            assert triple(5) == 15  # the lock is skipped too
            assert triple.stats.errors == 0
        messages = unavailable_warnings(caplog)
        assert len(messages) == 1, messages
        assert "double" in messages[0]
        assert double.stats.computations == 21


def test_async_fail_open_warns_once_and_opens_the_breaker(
    run: Runner, redis_server_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = redis_server_factory()

    async def main() -> None:
        async with RedisCache(port=server.port, namespace=NS,
                              circuit_breaker=breaker_that_stays_open()) as cache:

            @cache.cached(60, lock=True)
            async def double(x: int) -> int:
                return x * 2

            @cache.cached_batch(60)
            async def many(ids: list[int]) -> dict[int, int]:
                return {i: i * 10 for i in ids}

            @cache.invalidate("double:{x}")
            async def touch(x: int) -> str:
                return "touched"

            reset_stats(double)
            assert await double(1) == 2
            server.stop()
            breaker = cache.circuit_breaker
            assert [await double(x) for x in range(10)] == [x * 2 for x in range(10)]
            assert breaker.open
            assert double.stats.errors == 5
            results = await asyncio.gather(*(double(x) for x in range(10)))
            assert results == [x * 2 for x in range(10)]
            assert double.stats.errors == 5
            assert await many([1, 2]) == {1: 10, 2: 20}
            assert await touch(1) == "touched"

    with caplog.at_level(logging.WARNING, logger="redis_cache"):
        run(main())
    messages = unavailable_warnings(caplog)
    assert len([m for m in messages if "double" in m]) == 1, messages


def test_sync_function_on_an_async_cache_fails_open_through_the_shared_breaker(
    redis_server_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = redis_server_factory()
    cache = RedisCache(port=server.port, namespace=NS, circuit_breaker=breaker_that_stays_open())

    @cache.cached(60)
    def double(x: int) -> int:
        return x * 2

    reset_stats(double)
    server.stop()
    with caplog.at_level(logging.WARNING, logger="redis_cache"):
        assert [double(x) for x in range(8)] == [x * 2 for x in range(8)]
    assert cache._twin(SyncRedisCache).circuit_breaker is cache.circuit_breaker
    assert cache.circuit_breaker.open  # the async cache's breaker, shared with its twin
    assert double.stats.errors == 5
    assert len(unavailable_warnings(caplog)) == 1
    Runner("asyncio")(cache.close())


@pytest.mark.parametrize("flavor", ["sync", "async"])
def test_caching_resumes_after_a_restart_and_the_breaker_reset(
    redis_server_factory: Any, flavor: str
) -> None:
    server = redis_server_factory()
    calls: list[int] = []
    stored_key: list[str] = []

    def check_open(f: Any, cache: Any) -> None:
        breaker = cache.circuit_breaker
        assert breaker.failure_threshold == 2
        assert breaker.open
        assert f.stats.errors == 2

    if flavor == "sync":
        with SyncRedisCache(port=server.port, namespace=NS,
                            circuit_breaker=CircuitBreaker(2, probe_after=0.2)) as cache:

            @cache.cached(60)
            def double(x: int) -> int:
                calls.append(x)
                return x * 2

            reset_stats(double)
            server.stop()
            assert double(1) == 2
            check_open(double, cache)
            server.start()
            key = f"{NS}:{double.key(1)}"
            stored_key.append(key)
            # Each call tries Redis once the breaker lets a trial through.
            wait_until(lambda: double(1) == 2 and raw(server, "EXISTS", key) == 1,
                       "caching to resume")
            computed = len(calls)
            assert double(1) == 2
            assert len(calls) == computed  # a hit
            assert not cache.circuit_breaker.open
    else:

        async def main() -> None:
            async with RedisCache(port=server.port, namespace=NS,
                                  circuit_breaker=CircuitBreaker(2, probe_after=0.2)) as cache:

                @cache.cached(60)
                async def double(x: int) -> int:
                    calls.append(x)
                    return x * 2

                reset_stats(double)
                server.stop()
                assert await double(1) == 2
                check_open(double, cache)
                server.start()
                key = f"{NS}:{double.key(1)}"
                stored_key.append(key)

                async def resumed() -> bool:
                    return await double(1) == 2 and raw(server, "EXISTS", key) == 1

                await async_wait_until(resumed, "caching to resume")
                computed = len(calls)
                assert await double(1) == 2
                assert len(calls) == computed
                assert not cache.circuit_breaker.open

        Runner("asyncio")(main())
    assert set(calls) == {1}
    assert keys(server) == [stored_key[0].encode()]


# ---------------------------------------------------------------------------
# the circuit breaker's settings
# ---------------------------------------------------------------------------


class FakeClock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def refused(breaker: CircuitBreaker) -> bool:
    """One call that cannot reach Redis; False when the breaker skipped it."""
    attempt = breaker.attempt()
    if attempt is None:
        return False
    with pytest.raises(redis_cache.ConnectionError), attempt:
        raise redis_cache.ConnectionError("connection refused")
    return True


def answered(breaker: CircuitBreaker, reply: Exception | None = None) -> bool:
    """One call that Redis answers (with ``reply`` raised, if given)."""
    attempt = breaker.attempt()
    if attempt is None:
        return False
    with pytest.raises(type(reply)) if reply else nullcontext(), attempt:
        if reply is not None:
            raise reply
    return True


def test_circuit_breaker_opens_after_failure_threshold_failures_in_a_row() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(3, probe_after=0.5, max_probe_after=4, clock=clock)
    assert refused(breaker) and refused(breaker)
    assert answered(breaker)  # in a row: an answer starts the count again
    assert refused(breaker) and refused(breaker)
    assert breaker.state == "closed" and not breaker.open
    assert refused(breaker)  # the third in a row
    assert breaker.state == "open" and breaker.open
    assert breaker.attempt() is None
    clock.now += 0.49
    assert breaker.attempt() is None  # not before probe_after


def test_circuit_breaker_probes_once_after_probe_after_and_backs_off_up_to_the_cap() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(1, probe_after=0.5, max_probe_after=4, clock=clock)
    assert refused(breaker)
    clock.now += 0.5
    assert breaker.state == "half-open"
    probe = breaker.attempt()
    assert probe is not None
    assert breaker.attempt() is None  # one probe at a time ...
    clock.now += 100
    assert breaker.attempt() is None  # ... however long it takes
    with pytest.raises(redis_cache.TimeoutError), probe:
        raise redis_cache.TimeoutError("no answer")
    assert breaker.state == "open"
    # Each failed probe waits longer (at random, never less than probe_after
    # nor more than the cap) until Redis answers.
    delays = []
    for _ in range(100):
        failed_at = clock.now
        while not refused(breaker):
            clock.now += 0.01
        delays.append(clock.now - failed_at)
    assert all(0.5 - 1e-6 <= d <= 4 + 0.01 + 1e-6 for d in delays), delays
    assert delays[0] <= 3 * 0.5 + 0.01  # it starts short: at most 3 x probe_after
    assert max(delays) > 3  # and grows to about the cap
    while not answered(breaker):
        clock.now += 0.01
    assert breaker.state == "closed" and not breaker.open
    # Closed again: the next outage starts over from probe_after.
    assert refused(breaker) and breaker.open
    clock.now += 0.5
    assert breaker.state == "half-open"


def test_circuit_breaker_error_replies_are_answers_and_a_cancelled_probe_is_nothing() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(2, probe_after=1, max_probe_after=1, clock=clock)
    # Redis answering with an error, or with a value that cannot be decoded,
    # is Redis being up: neither counts toward opening.
    for _ in range(3):
        assert refused(breaker)
        assert answered(breaker, redis_cache.ResponseError("WRONGTYPE"))
        assert answered(breaker, redis_cache.SerializationError("not JSON"))
    assert not breaker.open
    # A call that started before the breaker opened and fails afterwards does
    # not push the probe back.
    late = breaker.attempt()
    assert late is not None
    assert refused(breaker) and refused(breaker) and breaker.open
    clock.now += 0.9
    with pytest.raises(redis_cache.ConnectionError), late:
        raise redis_cache.ConnectionError("reset")
    clock.now += 0.1
    probe = breaker.attempt()
    assert probe is not None
    # A probe cancelled (or interrupted) says nothing about Redis: the next
    # caller probes instead, at once.
    with pytest.raises(asyncio.CancelledError), probe:
        raise asyncio.CancelledError
    assert breaker.open
    probe = breaker.attempt()
    assert probe is not None
    with pytest.raises(KeyboardInterrupt), probe:
        raise KeyboardInterrupt
    # An error reply to the probe closes the breaker.
    assert answered(breaker, redis_cache.ResponseError("LOADING"))
    assert breaker.state == "closed"


def test_circuit_breaker_settings_are_checked_and_reach_both_caches(
    redis: RedisServer,
) -> None:
    for bad in [dict(failure_threshold=0), dict(failure_threshold=2.0),
                dict(failure_threshold=True), dict(probe_after=-1),
                dict(probe_after=math.nan), dict(max_probe_after=math.inf),
                dict(probe_after=2, max_probe_after=1), dict(probe_after="1")]:
        with pytest.raises(redis_cache.ConfigurationError) as info:
            CircuitBreaker(**bad)  # type: ignore[arg-type]
        assert next(iter(bad)) in str(info.value)
    with pytest.raises(redis_cache.ConfigurationError, match="circuit_breaker"):
        SyncRedisCache(port=redis.port, circuit_breaker=5)  # type: ignore[arg-type]
    default = CircuitBreaker()
    assert (default.failure_threshold, default.probe_after, default.max_probe_after) == (
        5, 0.1, 1.0)
    breaker = CircuitBreaker(3, probe_after=0.25, max_probe_after=2)
    assert repr(breaker) == (
        "<CircuitBreaker closed failure_threshold=3 probe_after=0.25 max_probe_after=2.0>")
    async_cache = RedisCache.from_url(redis.url, circuit_breaker=breaker)
    with SyncRedisCache(port=redis.port, circuit_breaker=breaker) as sync_cache:
        assert sync_cache.circuit_breaker is breaker
        assert async_cache.circuit_breaker is breaker
        # A decorator's twin of either kind shares it: the server is the same.
        assert async_cache._twin(SyncRedisCache).circuit_breaker is breaker
        assert sync_cache._twin(RedisCache).circuit_breaker is breaker
        assert SyncRedisCache(port=redis.port).circuit_breaker is not breaker
    Runner("asyncio")(async_cache.close())


@pytest.mark.parametrize("flavor", ["sync", "async"])
def test_decorators_open_the_breaker_after_the_set_failures_and_probe_after_the_set_delay(
    redis_server_factory: Any, flavor: str
) -> None:
    server = redis_server_factory()
    probe_after = 1.0
    breaker = CircuitBreaker(3, probe_after=probe_after, max_probe_after=probe_after)
    moments: dict[str, float] = {}

    def check_opening(call: Callable[[int], Any], errors: Callable[[], int]) -> None:
        server.stop()
        call(1)  # the read fails, then the store: two failures
        assert errors() == 2 and breaker.state == "closed"
        moments["opening"] = time.monotonic()
        call(2)  # the read fails: the third failure opens it; no store is tried
        assert errors() == 3 and breaker.open

    def check_probed(errors: Callable[[], int]) -> None:
        # Only once probe_after has passed did a call try Redis (one, and it failed).
        assert errors() == 4
        waited = time.monotonic() - moments["opening"]
        assert probe_after <= waited < probe_after + 10, waited
        assert breaker.open

    if flavor == "sync":
        with SyncRedisCache(port=server.port, namespace=NS, circuit_breaker=breaker) as cache:

            @cache.cached(60)
            def double(x: int) -> int:
                return x * 2

            reset_stats(double)
            check_opening(double, lambda: double.stats.errors)
            wait_until(lambda: double(3) == 6 and double.stats.errors > 3, "a probe")
            check_probed(lambda: double.stats.errors)
    else:
        # check_opening drives the loop itself: run it outside asyncio.run.
        loop = asyncio.new_event_loop()
        try:
            cache = RedisCache(port=server.port, namespace=NS, circuit_breaker=breaker)

            @cache.cached(60)
            async def double(x: int) -> int:
                return x * 2

            reset_stats(double)
            check_opening(lambda x: loop.run_until_complete(double(x)),
                          lambda: double.stats.errors)

            async def probed_once() -> None:
                await async_wait_until(lambda: breaker.state == "half-open", "half-open")
                # Fifty calls at once: one of them probes, the others skip Redis.
                results = await asyncio.gather(*(double(x) for x in range(50)))
                assert results == [x * 2 for x in range(50)]

            loop.run_until_complete(probed_once())
            check_probed(lambda: double.stats.errors)
            loop.run_until_complete(cache.close())
        finally:
            loop.close()


@pytest.mark.parametrize("flavor", ["sync", "async"])
def test_decorator_hits_resume_soon_after_redis_returns(
    redis_server_factory: Any, flavor: str
) -> None:
    # The default breaker: probes start 0.1 s after it opens and are at most
    # 1 s apart however long Redis stays down.
    server = redis_server_factory()
    calls: list[int] = []

    def fn(x: int) -> int:
        calls.append(x)
        return x * 2

    if flavor == "sync":
        cache: Any = SyncRedisCache(port=server.port, namespace=NS)
        double = call = cache.cached(60)(fn)
        runner = None
    else:
        cache = RedisCache(port=server.port, namespace=NS)

        @cache.cached(60)
        async def double(x: int) -> int:
            return fn(x)

        runner = asyncio.new_event_loop()

        def call(x: int) -> int:
            return runner.run_until_complete(double(x))  # type: ignore[union-attr]
    try:
        reset_stats(double)
        assert call(1) == 2 and call(1) == 2
        assert double.stats.hits == 1
        server.kill()
        # Calls go on without Redis; the breaker opens, and probes fail while
        # it stays down (5 failures open it, then one per probe).
        wait_until(lambda: call(1) == 2 and double.stats.errors >= 5 + 3,
                   "the breaker to open and three probes to fail")
        assert cache.circuit_breaker.open
        hits = double.stats.hits
        server.start()
        back = time.monotonic()
        wait_until(lambda: call(1) == 2 and double.stats.hits > hits, "hits to resume")
        resumed_after = time.monotonic() - back
        # Within about a second (the probe delay) plus the async engine's own
        # reconnect backoff; generous for a loaded machine, and far below the
        # fixed 10 s the breaker used to wait.
        assert resumed_after < 5, resumed_after
        assert not cache.circuit_breaker.open
        assert raw(server, "EXISTS", f"{NS}:{double.key(1)}") == 1
    finally:
        if runner is None:
            cache.close()
        else:
            runner.run_until_complete(cache.close())
            runner.close()
