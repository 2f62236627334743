"""The server's own limit: ``redis-benchmark`` against the same redis-server.

redis-benchmark is a C client that does nothing but send commands, so its
one-connection figure is about the best any single caller can get from this
server over this loopback, and its N-connection figures what N callers
waiting on one request each can get.  Clients are compared with these, not
only with each other.

It takes part in the interleaved rounds like a client (:class:`RedisBenchmarkDriver`),
with the scenarios' own keys and values as custom commands:

* ``get_raw`` / ``set_raw``: ``-c 1 GET bench:value`` / ``-c 1 SET bench:set <value> EX 60``;
* ``get_json_cN``: ``-c N GET bench:value`` (N connections, one request each in flight);
* ``get_many_raw``: ``-c 1 MGET <the 100 keys>``;
* ``set_many_raw``: ``-c 1 -P 100 SET bench:set_many:0 <value> EX 60``, reported per
  100 SETs (one batch).

After the rounds, :func:`run_redis_benchmark` measures the server's ceiling
with many pipelined connections (``-c 50 -P 16``, its default 3-byte values).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from typing import Any

from .harness import Driver, RoundTiming, Settings
from .scenarios import BATCH, TTL_SECONDS, VALUE_BYTES, Keys, Scenario

__all__ = ["LIMIT_RUNS", "NAME", "RedisBenchmarkDriver", "ServerLimit", "run_redis_benchmark"]

#: The client name redis-benchmark's rows carry in the tables.
NAME = "redis-benchmark"

#: (connections, pipeline depth) of each ceiling run, as asked of redis-benchmark.
LIMIT_RUNS: tuple[tuple[int, int], ...] = ((50, 16),)

# With -q, each test ends with e.g. "GET: 34482.76 requests per second, p50=0.023 msec"
# after "\r"-separated progress lines; older versions omit the p50 part.
_RESULT = re.compile(
    r"^(?P<test>[A-Z][A-Z_ ]*?): (?P<rps>[\d.]+) requests per second"
    r"(?:, p50=(?P<p50>[\d.]+) msec)?"
)


@dataclass
class ServerLimit:
    """One redis-benchmark run: requests/s (and p50 latency) per command."""

    clients: int
    pipeline: int
    requests: int
    command: list[str]
    rps: dict[str, float]
    p50_ms: dict[str, float | None]

    @property
    def label(self) -> str:
        label = f"-c {self.clients}"
        return label + (f" -P {self.pipeline}" if self.pipeline > 1 else "")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def parse_output(text: str) -> tuple[dict[str, float], dict[str, float | None]]:
    """Final figures per test from redis-benchmark ``-q`` output."""
    rps: dict[str, float] = {}
    p50: dict[str, float | None] = {}
    for line in re.split(r"[\r\n]+", text):
        match = _RESULT.match(line.strip())
        if match:
            test = match["test"]
            rps[test] = float(match["rps"])
            p50[test] = float(match["p50"]) if match["p50"] else None
    return rps, p50


def _executable() -> str:
    return shutil.which("redis-benchmark") or "/usr/bin/redis-benchmark"


def available() -> str | None:
    """Why redis-benchmark cannot run here, or None."""
    if not os.access(_executable(), os.X_OK):
        return "redis-benchmark is not installed (Debian: redis-tools)"
    return None


def version() -> str:
    try:
        out = subprocess.run(
            [_executable(), "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    match = re.search(r"(\d+\.\d+\.\d+)", out)
    return match.group(1) if match else out.strip()


class RedisBenchmarkDriver(Driver):
    """redis-benchmark as one more client in the interleaved rounds: the limit.

    One ``redis-benchmark --csv`` process per round; its requests/s is the
    round's rate and its p50/p99 the round's latencies.  Nothing to verify
    (it checks no replies) and nothing to warm up (a new process each round).
    """

    verifiable = False
    #: Fewest requests per connection in a round: N connections are opened
    #: inside the timed run, which must not be all connecting.
    MIN_PER_CONNECTION = 20

    def __init__(self, host: str, port: int) -> None:  # no adapter: not a Python client
        self._host, self._port = host, port

    @property
    def name(self) -> str:
        return NAME

    def describe(self) -> str:
        return (
            f"redis-benchmark {version()} (C, hiredis, single-threaded event loop): "
            "the limit, with the scenarios' own keys and values as custom commands; "
            "`-c N` opens N connections with one request in flight each"
        )

    def setup(self, host: str, port: int) -> None:
        self._host, self._port = host, port

    def teardown(self) -> None:
        pass

    def _command(self, scenario: Scenario) -> tuple[int, int, list[str]] | None:
        """(connections, pipeline, command) modelling ``scenario``, or None."""
        value = VALUE_BYTES.decode()
        if scenario.name == "get_raw" or (
            scenario.kind == "read" and scenario.codec == "json" and scenario.concurrency > 1
        ):
            return scenario.concurrency, 1, ["GET", Keys.GET]
        if scenario.name == "set_raw":
            return 1, 1, ["SET", Keys.SET, value, "EX", str(TTL_SECONDS)]
        if scenario.name == "get_many_raw":
            return 1, 1, ["MGET", *Keys.MANY]
        if scenario.name == "set_many_raw":
            return 1, BATCH, ["SET", Keys.SET_MANY[0], value, "EX", str(TTL_SECONDS)]
        return None

    def offers(self, scenario: Scenario) -> bool:
        return self._command(scenario) is not None

    def call_once(self, scenario: Scenario) -> object:
        raise NotImplementedError("redis-benchmark results are not verified")

    def calibrate(self, scenario: Scenario, settings: Settings) -> int:
        connections, _, _ = self._plan(scenario)
        least = connections * self.MIN_PER_CONNECTION
        probe = self.run_round(scenario, max(least, 2000))
        return max(least, int(probe.rate * settings.round_seconds))

    def _plan(self, scenario: Scenario) -> tuple[int, int, list[str]]:
        plan = self._command(scenario)
        if plan is None:
            raise ValueError(f"redis-benchmark does not model {scenario.name}")
        return plan

    def run_round(self, scenario: Scenario, calls: int) -> RoundTiming:
        connections, pipeline, command = self._plan(scenario)
        requests = calls * pipeline
        argv = [_executable(), "-h", self._host, "-p", str(self._port)]
        argv += ["-c", str(connections), "-n", str(requests), "--csv"]
        if pipeline > 1:
            argv += ["-P", str(pipeline)]
        result = subprocess.run(
            argv + command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        # The test name (the command line) is written unescaped, quotes and all:
        # the seven figures are read from the end of the line.
        lines = [ln for ln in result.stdout.splitlines() if ln and not ln.startswith('"test"')]
        if len(lines) != 1:
            raise RuntimeError(f"could not parse redis-benchmark output:\n{result.stdout}")
        figures = [field.strip('"') for field in lines[0].rsplit(",", 7)[1:]]
        rps, avg, _min, p50, _p95, p99, _max = figures
        rate = float(rps) / pipeline  # per batch of `pipeline` requests
        return RoundTiming(
            calls=calls,
            elapsed_ns=int(calls / rate * 1e9),
            latencies_ns=[],
            percentiles_ns=(float(p50) * 1e6, float(p99) * 1e6, float(avg) * 1e6),
        )


def run_redis_benchmark(
    host: str, port: int, clients: int, pipeline: int, requests: int
) -> ServerLimit:
    """Runs ``redis-benchmark -t get,set -q`` and parses its requests/s."""
    command = [_executable(), "-h", host, "-p", str(port), "-c", str(clients), "-n", str(requests)]
    if pipeline > 1:
        command += ["-P", str(pipeline)]
    command += ["-t", "get,set", "-q"]
    result = subprocess.run(
        command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300, check=True
    )
    rps, p50 = parse_output(result.stdout)
    if set(rps) != {"GET", "SET"}:
        raise RuntimeError(f"could not parse redis-benchmark output:\n{result.stdout}")
    shown = ["redis-benchmark", *command[1:]]
    return ServerLimit(clients, pipeline, requests, shown, rps, p50)
