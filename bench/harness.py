"""Timing: warm-up, calibrated rounds, interleaved clients, summary statistics.

Method, and why:

* **Check first.**  One call of each scenario is verified before it is timed,
  so a broken client cannot post a fast number.
* **Warm-up doubles as calibration.**  Rounds grow until the warm-up time is
  spent; the rate of the last one sets the round size, so a round lasts about
  ``round_seconds`` for fast and slow clients alike.
* **Interleaved rounds.**  Round 1 of every client in every scenario, then
  round 2, ... with the order rotated each round, so drift (other load,
  frequency changes, the server's memory) hits every client and scenario
  alike instead of whichever ran last.
* **Per-call clocks.**  Each call is bracketed by ``perf_counter_ns`` for the
  latency percentiles; throughput is calls over the round's wall time, which
  includes that ~0.1 us of clock overhead per call for every client.
* **No GC pauses inside a round.**  The collector runs before each round and
  is disabled during it (as ``timeit`` does); allocation differences between
  clients still show up, collection timing luck does not.
* **Concurrency.**  A scenario with N callers makes a fixed number of calls
  per round (calibrated per client as above, at least
  ``MIN_CALLS_PER_CALLER`` per caller) split evenly over N coroutines that
  each await their share back to back.
* **Destructive scenarios** (clear_pattern) get fresh data before every round
  of exactly one call, untimed; they have no warm-up beyond the checked call.
* **External clients** (redis-benchmark) take part in the same interleaved
  rounds through a driver of their own; they report rate and percentiles,
  not every call's latency.
"""

from __future__ import annotations

import asyncio
import gc
import math
import statistics
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from redis_cache.testing import RedisServer

from .adapters import Adapter, AsyncAdapter, AsyncOp, SyncAdapter, SyncOp
from .scenarios import Scenario, prepare, verify

__all__ = [
    "AsyncDriver",
    "Driver",
    "Measurement",
    "Settings",
    "SyncDriver",
    "make_driver",
    "measure",
]


@dataclass(frozen=True)
class Settings:
    """How long to measure: rounds per client and scenario, and their length."""

    rounds: int = 7
    round_seconds: float = 0.4
    warmup_seconds: float = 0.5


#: Fewest calls each caller of a concurrent scenario makes per round, so that
#: a round is not all ramp-up and ramp-down.
MIN_CALLS_PER_CALLER = 5


@dataclass
class RoundTiming:
    """One round: its wall time and the latency of each call in it.

    An external client that reports only percentiles (redis-benchmark) leaves
    ``latencies_ns`` empty and fills ``percentiles_ns`` (p50, p99, mean).
    """

    calls: int
    elapsed_ns: int
    latencies_ns: list[int]
    percentiles_ns: tuple[float, float, float] | None = None

    @property
    def rate(self) -> float:
        """Calls per second."""
        return self.calls * 1e9 / self.elapsed_ns


@dataclass
class Measurement:
    """What one client achieved in one scenario."""

    scenario: str
    client: str
    batch: int
    concurrency: int
    calls_per_round: int
    round_rates: list[float]
    p50_us: float
    p99_us: float
    mean_us: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median_rate(self) -> float:
        """Median calls/s over the rounds: the headline figure."""
        return statistics.median(self.round_rates)

    @property
    def spread(self) -> float:
        """(fastest - slowest round) / median: how noisy the figure is."""
        return (max(self.round_rates) - min(self.round_rates)) / self.median_rate

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["median_rate"] = self.median_rate
        data["spread"] = self.spread
        return data


def percentile(sorted_values: Sequence[int], fraction: float) -> int:
    """Nearest-rank percentile: a latency that some call really had."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


@contextmanager
def _gc_paused() -> Iterator[None]:
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class Driver(ABC):
    """Runs one adapter's callables: the part of the harness that differs
    between blocking and asyncio clients."""

    #: Whether one call's result can be checked with :func:`bench.scenarios.verify`.
    verifiable = True

    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter

    @property
    def name(self) -> str:
        return self.adapter.name

    def calibrate(self, scenario: Scenario, settings: Settings) -> int:
        """Warms up and returns how many calls make a round of ``round_seconds``."""
        return _calibrate(self, scenario, settings)

    @abstractmethod
    def setup(self, host: str, port: int) -> None: ...

    @abstractmethod
    def teardown(self) -> None: ...

    @abstractmethod
    def offers(self, scenario: Scenario) -> bool: ...

    @abstractmethod
    def call_once(self, scenario: Scenario) -> object: ...

    @abstractmethod
    def run_round(self, scenario: Scenario, calls: int) -> RoundTiming:
        """Makes ``calls`` calls (spread over the scenario's concurrency) and times them."""


class SyncDriver(Driver):
    """Calls a blocking adapter's callables in a plain loop, one caller."""

    adapter: SyncAdapter

    def __init__(self, adapter: SyncAdapter) -> None:
        super().__init__(adapter)
        self._ops: Mapping[str, SyncOp] = {}

    def setup(self, host: str, port: int) -> None:
        self.adapter.setup(host, port)
        self._ops = self.adapter.operations()

    def teardown(self) -> None:
        self.adapter.teardown()

    def offers(self, scenario: Scenario) -> bool:
        return scenario.concurrency == 1 and scenario.name in self._ops

    def call_once(self, scenario: Scenario) -> object:
        return self._ops[scenario.name]()

    def run_round(self, scenario: Scenario, calls: int) -> RoundTiming:
        op = self._ops[scenario.name]
        clock = time.perf_counter_ns
        latencies = [0] * calls
        with _gc_paused():
            start = clock()
            for i in range(calls):
                before = clock()
                op()
                latencies[i] = clock() - before
            elapsed = clock() - start
        return RoundTiming(calls, elapsed, latencies)


class AsyncDriver(Driver):
    """Awaits an asyncio adapter's callables from ``concurrency`` coroutines.

    Each coroutine makes its share of the calls back to back, so the scenario's
    concurrency stays in flight for the whole round; a call's latency includes
    its wait for the event loop, which is what a caller experiences.
    """

    adapter: AsyncAdapter

    def __init__(self, adapter: AsyncAdapter, loop: asyncio.AbstractEventLoop) -> None:
        """``loop``: the event loop every call of this adapter runs in (asyncio's
        own or uvloop's, as the adapter's ``event_loop`` says)."""
        super().__init__(adapter)
        self._loop = loop
        self._ops: Mapping[str, AsyncOp] = {}

    def setup(self, host: str, port: int) -> None:
        self._loop.run_until_complete(self.adapter.setup(host, port))
        self._ops = self.adapter.operations()

    def teardown(self) -> None:
        self._loop.run_until_complete(self.adapter.teardown())

    def offers(self, scenario: Scenario) -> bool:
        return scenario.name in self._ops

    def call_once(self, scenario: Scenario) -> object:
        return self._loop.run_until_complete(self._ops[scenario.name]())

    def run_round(self, scenario: Scenario, calls: int) -> RoundTiming:
        with _gc_paused():
            return self._loop.run_until_complete(
                self._round(self._ops[scenario.name], calls, scenario.concurrency)
            )

    @staticmethod
    async def _round(op: AsyncOp, calls: int, concurrency: int) -> RoundTiming:
        clock = time.perf_counter_ns
        share = calls // concurrency

        async def caller() -> list[int]:
            latencies = [0] * share
            for i in range(share):
                before = clock()
                await op()
                latencies[i] = clock() - before
            return latencies

        start = clock()
        parts = await asyncio.gather(*(caller() for _ in range(concurrency)))
        elapsed = clock() - start
        return RoundTiming(share * concurrency, elapsed, [x for part in parts for x in part])


def make_driver(
    adapter: Adapter, loops: Callable[[str], asyncio.AbstractEventLoop]
) -> Driver:
    """A driver for ``adapter``; ``loops(kind)`` gives the event loop of a kind."""
    if isinstance(adapter, AsyncAdapter):
        return AsyncDriver(adapter, loops(adapter.event_loop))
    if isinstance(adapter, SyncAdapter):
        return SyncDriver(adapter)
    raise TypeError(f"{type(adapter).__name__} is neither a SyncAdapter nor an AsyncAdapter")


def _calibrate(driver: Driver, scenario: Scenario, settings: Settings) -> int:
    """Warms the client up and returns the calls per round for ``round_seconds``."""
    if scenario.one_call_per_round:
        return 1
    warmup_ns = settings.warmup_seconds * 1e9
    round_ns = settings.round_seconds * 1e9
    step = scenario.concurrency
    least = step * (MIN_CALLS_PER_CALLER if step > 1 else 1)
    calls = max(16, step)
    spent = 0
    while True:
        timing = driver.run_round(scenario, calls)
        spent += timing.elapsed_ns
        per_call_ns = timing.elapsed_ns / timing.calls
        if spent >= warmup_ns:
            break
        # Fill the rest of the warm-up, at most one round at a time, growing
        # at least 2x so a slow first (cold) round cannot stall the warm-up.
        target = min(warmup_ns - spent, round_ns)
        calls = max(2 * calls, int(target / per_call_ns))
        calls = max(step, calls - calls % step)
    calls = int(round_ns / per_call_ns)
    return max(least, calls - calls % step)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _summary(rounds: Sequence[RoundTiming]) -> tuple[float, float, float]:
    """p50, p99 and mean latency (ns) over every call of the rounds; for an
    external client, the median over the rounds of what it reported."""
    latencies = sorted(x for timing in rounds for x in timing.latencies_ns)
    if latencies:
        return (
            percentile(latencies, 0.50),
            percentile(latencies, 0.99),
            statistics.fmean(latencies),
        )
    reported = [timing.percentiles_ns for timing in rounds if timing.percentiles_ns]
    if not reported:
        raise ValueError("a round reported neither latencies nor percentiles")
    p50, p99, mean = zip(*reported, strict=True)
    return statistics.median(p50), statistics.median(p99), statistics.median(mean)


def measure(
    scenarios: Sequence[Scenario],
    drivers: Sequence[Driver],
    settings: Settings,
    server: RedisServer,
    log: Callable[[str], None] = _log,
) -> list[Measurement]:
    """Measures every (scenario, client) pair some driver offers.

    Round ``r`` of every pair runs before round ``r + 1`` of any, so drift
    over the run (other processes, the VM's neighbours) spreads evenly over
    clients *and* scenarios: comparisons across scenarios (JSON against raw,
    one caller against ten) are as fair as those within one.
    """
    pairs = [(sc, d) for sc in scenarios for d in drivers if d.offers(sc)]
    sizes: list[int] = []
    for scenario, driver in pairs:
        if driver.verifiable:
            prepare(server, scenario)
            verify(server, scenario, driver.call_once(scenario))
        sizes.append(driver.calibrate(scenario, settings))
        log(f"  warmed up {scenario.name} / {driver.name}: {sizes[-1]:,} calls per round")
    timings: list[list[RoundTiming]] = [[] for _ in pairs]
    for round_index in range(settings.rounds):
        log(f"  round {round_index + 1}/{settings.rounds}")
        shift = round_index % len(pairs) if pairs else 0
        for index in [*range(shift, len(pairs)), *range(shift)]:
            scenario, driver = pairs[index]
            if scenario.one_call_per_round:
                prepare(server, scenario)
            timings[index].append(driver.run_round(scenario, sizes[index]))
    results = []
    for (scenario, driver), size, rounds in zip(pairs, sizes, timings, strict=True):
        p50, p99, mean = _summary(rounds)
        measurement = Measurement(
            scenario=scenario.name,
            client=driver.name,
            batch=scenario.batch,
            concurrency=scenario.concurrency,
            calls_per_round=size,
            round_rates=[timing.rate for timing in rounds],
            p50_us=p50 / 1000,
            p99_us=p99 / 1000,
            mean_us=mean / 1000,
        )
        log(
            f"  {scenario.name:<15} {driver.name:<26} {measurement.median_rate:>11,.0f} calls/s"
            f"  p50 {measurement.p50_us:7.1f} us  p99 {measurement.p99_us:7.1f} us"
            f"  spread {measurement.spread:5.1%}"
        )
        results.append(measurement)
    return results
