"""redis_cache.ratelimit against real servers: the three algorithms at their
boundaries (a burst of N+1, cost > 1, several limits at once, windows sliding),
concurrency (100 coroutines, 4 processes) never admitting more than the limit,
the server's clock rather than the client's, fail-open / fail-closed, keys in
one cluster slot, Sentinel, and clear errors for bad input.

Waiting for a window to pass is the one wait here: a limit is about time. A
loaded machine only makes such waits longer, which admits more, never less,
so the checks after a wait (admitted) cannot flake; checks of a refusal run
right after the requests they count, with windows far longer than any stall.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from async_support import Runner, run  # noqa: F401 - fixture
from conftest import PASSWORD, SENTINEL_PASSWORD, SERVICE_NAME

from redis_cache import RedisCache, SyncRedisCache
from redis_cache.ratelimit import (
    Decision,
    Limit,
    RateLimiter,
    SyncRateLimiter,
    parse_limit,
)
from redis_cache._testing_cluster import ClusterTopology, key_slot
from redis_cache.testing import RedisServer, SentinelTopology

ALGORITHMS = ["gcra", "sliding-window", "sliding-window-counter"]


@pytest.fixture
def sync_cache(redis: RedisServer) -> Iterator[SyncRedisCache]:
    with SyncRedisCache.from_url(redis.url, namespace="t") as cache:
        yield cache


@pytest.fixture
def own_server(redis_server_factory: Callable[..., RedisServer]) -> Iterator[RedisServer]:
    server = redis_server_factory()
    yield server
    server.close()


# ------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "count", "period"),
    [("10/second", 10, 1), ("5 per minute", 5, 60), ("100/10 seconds", 100, 10),
     ("1000/hour", 1000, 3600), ("7/day", 7, 86400), ("3/0.5s", 3, 0.5), ((4, 2.5), 4, 2.5)],
)
def test_limits_parse(text: Any, count: int, period: float) -> None:
    assert parse_limit(text) == Limit(count, period)


@pytest.mark.parametrize("text", ["10", "ten/second", "10/fortnight", "0/second", "-1/minute", ""])
def test_bad_limits_say_how_to_write_one(text: str) -> None:
    with pytest.raises(ValueError, match="limit"):
        parse_limit(text)


def test_bad_options_are_refused(sync_cache: SyncRedisCache) -> None:
    with pytest.raises(ValueError, match="algorithm"):
        sync_cache.rate_limiter("1/second", algorithm="leaky")
    with pytest.raises(ValueError, match="at least one limit"):
        sync_cache.rate_limiter()
    with pytest.raises(ValueError, match="on_error"):
        sync_cache.rate_limiter("1/second", on_error="maybe")
    with pytest.raises(ValueError, match="burst applies to algorithm='gcra'"):
        sync_cache.rate_limiter(Limit(5, 1, burst=2), algorithm="sliding-window")
    limiter = sync_cache.rate_limiter("5/second")
    with pytest.raises(ValueError, match="cost 6 is more than the limit"):
        limiter.hit("a", cost=6)
    with pytest.raises(ValueError, match="cost must be an int >= 1"):
        limiter.hit("a", cost=0)
    with pytest.raises(ValueError, match="non-empty str"):
        limiter.hit("")
    with pytest.raises(TypeError, match="SyncRateLimiter"):
        RateLimiter(sync_cache, "1/second")  # type: ignore[arg-type]


# ---------------------------------------------------------------- boundaries


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_burst_of_n_plus_one(sync_cache: SyncRedisCache, algorithm: str) -> None:
    limiter = sync_cache.rate_limiter("5/minute", algorithm=algorithm)
    decisions = [limiter.hit("client") for _ in range(6)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0, 0]
    refused = decisions[-1]
    # The counter's estimate weighs the previous fixed window: a burst just
    # after a window boundary waits out the rest of this window and part of
    # the next (up to 60 + 48 s here), where the exact algorithms say 60.
    longest = 60 * (2 if algorithm == "sliding-window-counter" else 1)
    assert 0 < refused.retry_after <= longest * 1.0001
    assert refused.limit == Limit(5, 60)
    assert decisions[0].retry_after == 0
    # A refused request counts for nothing: peeking finds the same state.
    assert not limiter.peek("client").allowed
    # Another subject has its own budget.
    assert limiter.hit("other").remaining == 4


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_cost_counts_as_that_many_requests(sync_cache: SyncRedisCache, algorithm: str) -> None:
    limiter = sync_cache.rate_limiter("10/minute", algorithm=algorithm)
    assert limiter.hit("c", cost=7).remaining == 3
    refused = limiter.hit("c", cost=4)
    assert not refused.allowed and refused.remaining == 3
    assert limiter.hit("c", cost=3).remaining == 0
    assert not limiter.hit("c").allowed


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_several_limits_all_or_nothing(sync_cache: SyncRedisCache, algorithm: str) -> None:
    limiter = sync_cache.rate_limiter("3/minute", "4/hour", algorithm=algorithm)
    first = limiter.hit("k")
    assert first.allowed and first.remaining == 2 and first.limit == Limit(3, 60)
    assert limiter.hit("k", cost=2).allowed
    refused = limiter.hit("k")
    assert not refused.allowed and refused.limit == Limit(3, 60)
    # The refusal was not counted against the hourly limit either.
    hourly = sync_cache.rate_limiter("4/hour", algorithm=algorithm).peek("k")
    assert hourly.allowed and hourly.remaining == 0  # 3 of 4 used, this one would be the 4th


def test_gcra_burst_and_exact_retry_after(sync_cache: SyncRedisCache) -> None:
    # 10/second with a burst of 2: two at once, then one every 0.1 s.
    limiter = sync_cache.rate_limiter(Limit(10, 1, burst=2))
    assert limiter.hit("g").allowed
    second = limiter.hit("g")
    assert second.allowed and second.remaining == 0
    refused = limiter.hit("g")
    assert not refused.allowed
    assert 0 < refused.retry_after <= 0.1
    assert refused.reset <= 0.2
    time.sleep(refused.retry_after)
    assert limiter.hit("g").allowed


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_windows_slide(sync_cache: SyncRedisCache, algorithm: str) -> None:
    limiter = sync_cache.rate_limiter("4/0.5 seconds", algorithm=algorithm)
    assert limiter.hit("s", cost=4).allowed
    refused = limiter.hit("s")
    if not refused.allowed:  # (not refused only if the machine stalled 0.5 s)
        assert refused.retry_after <= 1.0
        time.sleep(refused.retry_after)
        assert limiter.hit("s").allowed


def test_sliding_window_frees_exactly_the_oldest(sync_cache: SyncRedisCache) -> None:
    limiter = sync_cache.rate_limiter("3/minute", algorithm="sliding-window")
    for _ in range(3):
        assert limiter.hit("w").allowed
    refused = limiter.hit("w", cost=2)
    single = limiter.hit("w")
    # Two must leave for cost 2: the second oldest entry, which is no earlier
    # than the oldest that one request waits for.
    assert not refused.allowed and not single.allowed
    assert refused.retry_after >= single.retry_after
    assert 0 < single.retry_after <= 60
    assert 0 < single.reset <= 60


def test_peek_and_reset(sync_cache: SyncRedisCache) -> None:
    limiter = sync_cache.rate_limiter("2/minute")
    assert limiter.peek("p").remaining == 1
    assert limiter.peek("p").remaining == 1  # counted nothing
    limiter.hit("p", cost=2)
    assert not limiter.peek("p").allowed
    limiter.reset("p")
    assert limiter.hit("p").remaining == 1


def test_is_rate_limited_thin_form(sync_cache: SyncRedisCache, run: Runner,
                                   redis: RedisServer) -> None:
    assert [sync_cache.is_rate_limited("ip", 2, 60) for _ in range(3)] == [False, False, True]

    async def main() -> list[bool]:
        async with RedisCache.from_url(redis.url, namespace="t") as cache:
            return [await cache.is_rate_limited("ip2", 2, 60) for _ in range(3)]

    assert run(main()) == [False, False, True]


# --------------------------------------------------------------- concurrency


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_100_coroutines_never_exceed_the_limit(run: Runner, redis: RedisServer,
                                               algorithm: str) -> None:
    async def main() -> list[Decision]:
        async with RedisCache.from_url(redis.url, namespace="t") as cache:
            limiter = cache.rate_limiter("25/minute", algorithm=algorithm)
            return list(await asyncio.gather(*(limiter.hit("crowd") for _ in range(100))))

    decisions = run(main())
    assert sum(d.allowed for d in decisions) == 25
    assert sorted(d.remaining for d in decisions if d.allowed) == list(range(25))


def _hammer(url: str, algorithm: str, start: Any, out: Any) -> None:
    with SyncRedisCache.from_url(url, namespace="t") as cache:
        limiter = cache.rate_limiter("30/minute", algorithm=algorithm)
        start.wait(60)
        out.put(sum(limiter.hit("shared").allowed for _ in range(25)))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_4_processes_never_exceed_the_limit(redis: RedisServer, algorithm: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(redis.url, algorithm, start, out))
             for _ in range(4)]
    for p in procs:
        p.start()
    start.set()
    admitted = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert sum(admitted) == 30


# ----------------------------------------------------- the server's clock


def test_the_client_clock_is_not_used(sync_cache: SyncRedisCache,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    limiter = sync_cache.rate_limiter("2/minute")
    limiter.hit("clock", cost=2)
    # A client whose clock is a day ahead (or behind) gets the same answer.
    real = time.time
    for skew in (86400, -86400):
        monkeypatch.setattr(time, "time", lambda s=skew: real() + s)
        monkeypatch.setattr(time, "monotonic", lambda s=skew: real() + s)
        assert not limiter.hit("clock").allowed
    monkeypatch.undo()
    # And the scripts read TIME on the server.
    from redis_cache import ratelimit

    assert all("redis.call('TIME')" in s for s in ratelimit._SCRIPTS.values())


# ------------------------------------------------------------- Redis down


def test_fail_open_and_fail_closed(own_server: RedisServer, run: Runner,
                                   caplog: pytest.LogCaptureFixture) -> None:
    with SyncRedisCache.from_url(own_server.url, connect_wait=0, socket_timeout=1) as cache:
        opened = cache.rate_limiter("1/minute")
        closed = cache.rate_limiter("1/minute", on_error="deny")
        raising = cache.rate_limiter("1/minute", on_error="raise")
        assert opened.hit("d").allowed
        own_server.stop()
        with caplog.at_level("WARNING", "redis_cache.ratelimit"):
            down_open = opened.hit("d")
            down_closed = closed.hit("d")
        assert down_open.allowed and down_open.degraded
        assert not down_closed.allowed and down_closed.degraded
        assert any("cannot reach Redis" in r.getMessage() for r in caplog.records)
        from redis_cache.errors import ConnectionError as CacheConnectionError

        for _ in range(10):  # past the breaker's threshold, it keeps answering
            assert opened.hit("d").degraded
        with pytest.raises(CacheConnectionError):
            # The breaker may be open (no attempt) or closed (a failed attempt):
            # either way on_error="raise" says so.
            raising.hit("d")

    async def main() -> tuple[Decision, Decision]:
        async with RedisCache.from_url(own_server.url, connect_wait=0,
                                       socket_timeout=1) as cache:
            return (await cache.rate_limiter("1/minute").hit("d"),
                    await cache.rate_limiter("1/minute", on_error="deny").hit("d"))

    opened_async, closed_async = run(main())
    assert opened_async.allowed and opened_async.degraded
    assert not closed_async.allowed and closed_async.degraded


# --------------------------------------------------------- cluster, sentinel


def _hash_tag(key: str) -> str:
    """The part of a key Redis Cluster hashes (its first {non-empty tag})."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1:end]
    return key


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("subject", ["user:1", "a}b", "{x}", "192.0.2.1"])
def test_every_key_of_a_check_is_in_one_slot(sync_cache: SyncRedisCache, algorithm: str,
                                             subject: str) -> None:
    limiter = sync_cache.rate_limiter("1/second", "10/minute", algorithm=algorithm)
    keys = limiter.keys(subject)
    assert len({_hash_tag(k) for k in keys}) == 1
    assert len({key_slot(k) for k in keys}) == 1
    assert len(keys) == (3 if algorithm == "sliding-window" else 2)
    assert limiter.hit(subject).allowed  # and the keys it names are the ones used
    assert sorted(sync_cache.execute_command("KEYS", "t:rl:*")) == sorted(
        k.encode() for k in keys)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_on_a_cluster_node(healthy_cluster: ClusterTopology, algorithm: str) -> None:
    """A cluster node refuses a script whose keys span slots (CROSSSLOT) or
    live elsewhere (MOVED): each check runs on the node owning its slot."""
    for subject in ("user:1", "198.51.100.7", "x}{y"):
        owner = healthy_cluster.owner(_limiter_keys(algorithm, subject)[0])
        with SyncRedisCache.from_url(owner.url, namespace="t") as cache:
            limiter = cache.rate_limiter("3/minute", "100/hour", algorithm=algorithm)
            assert len({key_slot(k) for k in limiter.keys(subject)}) == 1
            assert [limiter.hit(subject).allowed for _ in range(4)] == [True] * 3 + [False]
            limiter.reset(subject)
            assert limiter.peek(subject).allowed


def _limiter_keys(algorithm: str, subject: str) -> list[str]:
    # The keys depend on the namespace, name, algorithm and limits, not on the server.
    from redis_cache.ratelimit import _Limiter

    class Offline:
        namespace = "t"

    return _Limiter(Offline(), "3/minute", "100/hour", algorithm=algorithm).keys(subject)


def test_sentinel(run: Runner, healthy_sentinel_topology: SentinelTopology) -> None:
    topology = healthy_sentinel_topology
    options = {"sentinels": topology.sentinel_addresses, "service_name": SERVICE_NAME,
               "password": PASSWORD, "sentinel_password": SENTINEL_PASSWORD,
               "connect_wait": 10, "socket_timeout": 5}

    async def main() -> list[bool]:
        async with RedisCache(**options) as cache:
            limiter = cache.rate_limiter("3/minute")
            return [(await limiter.hit("s")).allowed for _ in range(4)]

    assert run(main()) == [True, True, True, False]
    with SyncRedisCache(**options) as cache:
        limiter = SyncRateLimiter(cache, "3/minute")
        assert not limiter.hit("s").allowed  # the same counters, on the primary
        topology.failover()
        # After a failover the replicated state is there on the new primary.
        decision = limiter.hit("s")
        assert not decision.allowed
