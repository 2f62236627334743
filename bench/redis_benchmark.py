"""The server's own ceiling: ``redis-benchmark`` against the same redis-server.

redis-benchmark is a C client that does nothing but send commands, so its
one-connection figure is about the best any single blocking caller can get
from this server over this loopback, and its 50-connection (and pipelined)
figures show how much the server itself could serve.  Clients are compared
with these, not only with each other.

Note that redis-benchmark's values are 3 bytes (its default ``-d``), not the
~100-byte value the client scenarios use; at these sizes that makes little
difference to the server.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["LIMIT_RUNS", "ServerLimit", "run_redis_benchmark"]

#: (connections, pipeline depth) of each run, as asked of redis-benchmark.
LIMIT_RUNS: tuple[tuple[int, int], ...] = ((1, 1), (50, 1), (50, 16))

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


def run_redis_benchmark(
    host: str, port: int, clients: int, pipeline: int, requests: int
) -> ServerLimit:
    """Runs ``redis-benchmark -t get,set -q`` and parses its requests/s."""
    executable = shutil.which("redis-benchmark") or "/usr/bin/redis-benchmark"
    command = [executable, "-h", host, "-p", str(port), "-c", str(clients), "-n", str(requests)]
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
