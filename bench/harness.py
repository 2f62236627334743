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
from .scenarios import Scenario, clear_written, verify

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


@dataclass
class RoundTiming:
    """One round: its wall time and the latency of each call in it."""

    calls: int
    elapsed_ns: int
    latencies_ns: list[int]

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

    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter

    @property
    def name(self) -> str:
        return self.adapter.name

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


def make_driver(adapter: Adapter, loop: asyncio.AbstractEventLoop) -> Driver:
    if isinstance(adapter, AsyncAdapter):
        return AsyncDriver(adapter, loop)
    if isinstance(adapter, SyncAdapter):
        return SyncDriver(adapter)
    raise TypeError(f"{type(adapter).__name__} is neither a SyncAdapter nor an AsyncAdapter")


def _calibrate(driver: Driver, scenario: Scenario, settings: Settings) -> int:
    """Warms the client up and returns the calls per round for ``round_seconds``."""
    warmup_ns = settings.warmup_seconds * 1e9
    round_ns = settings.round_seconds * 1e9
    step = scenario.concurrency
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
    return max(step, calls - calls % step)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


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
        clear_written(server, scenario)
        verify(server, scenario, driver.call_once(scenario))
        sizes.append(_calibrate(driver, scenario, settings))
        log(f"  warmed up {scenario.name} / {driver.name}: {sizes[-1]:,} calls per round")
    timings: list[list[RoundTiming]] = [[] for _ in pairs]
    for round_index in range(settings.rounds):
        log(f"  round {round_index + 1}/{settings.rounds}")
        shift = round_index % len(pairs) if pairs else 0
        for index in [*range(shift, len(pairs)), *range(shift)]:
            scenario, driver = pairs[index]
            timings[index].append(driver.run_round(scenario, sizes[index]))
    results = []
    for (scenario, driver), size, rounds in zip(pairs, sizes, timings, strict=True):
        latencies = sorted(x for timing in rounds for x in timing.latencies_ns)
        measurement = Measurement(
            scenario=scenario.name,
            client=driver.name,
            batch=scenario.batch,
            concurrency=scenario.concurrency,
            calls_per_round=size,
            round_rates=[timing.rate for timing in rounds],
            p50_us=percentile(latencies, 0.50) / 1000,
            p99_us=percentile(latencies, 0.99) / 1000,
            mean_us=statistics.fmean(latencies) / 1000,
        )
        log(
            f"  {scenario.name:<15} {driver.name:<18} {measurement.median_rate:>11,.0f} calls/s"
            f"  p50 {measurement.p50_us:7.1f} us  p99 {measurement.p99_us:7.1f} us"
            f"  spread {measurement.spread:5.1%}"
        )
        results.append(measurement)
    return results
