"""Benchmark redis_cache against other Redis clients, side by side, in one run.

    .venv/bin/python bench/run.py [--install] [--quick] [--scenarios NAME ...] [--write-docs]

Starts one private redis-server (loopback TCP, free port), runs every client
(redis_cache async on asyncio and on uvloop, redis_cache sync, redis-py sync
and asyncio, coredis, valkey-glide) and redis-benchmark, the limit, against it
scenario by scenario with interleaved rounds, then measures the server's
pipelined ceiling.  Prints markdown to stdout (progress goes to stderr), saves
the raw figures as JSON under bench/results/, and with --write-docs rewrites
docs/benchmarks.md and docs/benchmarks.png.  The peers are bench-only
packages: ``--install`` (or ``pip install -r bench/requirements.txt``) adds them;
a client whose package is missing, or that cannot start, is skipped and the
reason is printed and written to the docs.

One server for everyone, in one run, so no client is measured on a warmer
machine, another server version or a different day than the one it is
compared with.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

# Run as a script, Python puts bench/ on sys.path; the package needs its parent.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.adapters import ADAPTERS, Adapter
from bench.harness import Driver, Settings, make_driver, measure
from bench.machine import CpuSnapshot, describe_machine, other_cpu_use
from bench.redis_benchmark import LIMIT_RUNS, RedisBenchmarkDriver, run_redis_benchmark
from bench.redis_benchmark import NAME as REDIS_BENCHMARK
from bench.redis_benchmark import available as redis_benchmark_unavailable
from bench.kept_sections import kept_sections
from bench.report import RunResults, docs_page, markdown_tables, write_chart
from bench.scenarios import SCENARIOS, json_loads_us, seed
from redis_cache.testing import RedisServer

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
DOCS_PAGE = ROOT / "docs" / "benchmarks.md"
DOCS_CHART = ROOT / "docs" / "benchmarks.png"
REQUIREMENTS = ROOT / "bench" / "requirements.txt"
HOST = "127.0.0.1"
#: Cores used by other processes above which the run is flagged as noisy.
NOISY_OTHER_CORES = 0.2

#: Full run: ~0.2 s warm-up + 5 x 0.25 s per client and scenario (about 85 pairs),
#: about 3 minutes in all.
FULL = Settings(rounds=5, round_seconds=0.25, warmup_seconds=0.2)
#: Smoke run: enough to see that everything works, in well under a minute.
QUICK = Settings(rounds=3, round_seconds=0.05, warmup_seconds=0.05)
FULL_BENCHMARK_REQUESTS = 1_000_000
QUICK_BENCHMARK_REQUESTS = 100_000


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    names = [scenario.name for scenario in SCENARIOS]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--install",
        action="store_true",
        help=f"first pip-install {REQUIREMENTS.relative_to(ROOT)} (the peers, matplotlib)",
    )
    parser.add_argument("--quick", action="store_true", help="short smoke run (~30 s)")
    parser.add_argument(
        "--scenarios",
        nargs="+",
        choices=names,
        metavar="NAME",
        help=f"scenarios to run (default: all): {', '.join(names)}",
    )
    parser.add_argument(
        "--clients",
        nargs="+",
        choices=[*(a.name for a in ADAPTERS), REDIS_BENCHMARK],
        metavar="NAME",
        help="clients to run (default: all): "
        + ", ".join(repr(name) for name in [*(a.name for a in ADAPTERS), REDIS_BENCHMARK]),
    )
    parser.add_argument("--rounds", type=int, help="rounds per client and scenario")
    parser.add_argument("--round-seconds", type=float, help="target length of one round")
    parser.add_argument(
        "--no-redis-benchmark", action="store_true", help="skip redis-benchmark (the limit)"
    )
    parser.add_argument(
        "--write-docs",
        action="store_true",
        help=f"rewrite {DOCS_PAGE.relative_to(ROOT)} and {DOCS_CHART.relative_to(ROOT)}",
    )
    return parser.parse_args(argv)


def hiredis_available() -> bool:
    """Whether redis-py will parse replies with hiredis (else its pure-Python parser)."""
    try:
        from redis.utils import HIREDIS_AVAILABLE
    except ImportError:
        return False
    return bool(HIREDIS_AVAILABLE)


def pick_adapters(wanted: list[str] | None) -> tuple[list[Adapter], dict[str, str]]:
    """Instantiates the selected clients; a missing library skips its client."""
    chosen: list[Adapter] = []
    skipped: dict[str, str] = {}
    for cls in ADAPTERS:
        if wanted and cls.name not in wanted:
            continue
        reason = cls.unavailable()
        if reason:
            skipped[cls.name] = reason
            log(f"skipping {cls.name}: {reason}")
        else:
            chosen.append(cls())
    return chosen, skipped


def install_requirements() -> None:
    """pip-installs bench/requirements.txt into the running Python (the .venv)."""
    log(f"installing {REQUIREMENTS.relative_to(ROOT)} into {sys.prefix}")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)], check=True
    )
    importlib.invalidate_caches()


def save_json(results: RunResults) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = RESULTS_DIR / f"{stamp}{'-quick' if results.quick else ''}.json"
    path.write_text(json.dumps(results.to_json(), indent=2) + "\n", encoding="utf-8")
    return path


def server_config() -> dict[str, str]:
    """redis.conf extras: DEBUG for local clients (redis >= 7 asks for it), so
    the clear_pattern scenario can seed 100k keys with DEBUG POPULATE."""
    try:
        out = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    match = re.search(r"v=(\d+)\.", out)
    return {"enable-debug-command": "local"} if match and int(match.group(1)) >= 7 else {}


class EventLoops:
    """One event loop of each kind, made on first use and closed at the end.

    Every asyncio adapter shares asyncio's loop, uvloop adapters uvloop's;
    only one runs at a time (the harness drives them in turn).
    """

    def __init__(self) -> None:
        self._loops: dict[str, asyncio.AbstractEventLoop] = {}

    def __call__(self, kind: str) -> asyncio.AbstractEventLoop:
        if kind not in self._loops:
            if kind == "uvloop":
                import uvloop

                self._loops[kind] = uvloop.new_event_loop()
            elif kind == "asyncio":
                self._loops[kind] = asyncio.new_event_loop()
            else:
                raise ValueError(f"unknown event loop kind {kind!r}")
        return self._loops[kind]

    def close(self) -> None:
        for loop in self._loops.values():
            loop.close()


def start_drivers(
    adapters: list[Adapter],
    loops: Callable[[str], asyncio.AbstractEventLoop],
    port: int,
    skipped: dict[str, str],
) -> list[Driver]:
    """Connects every client; one that cannot start is skipped, with the reason."""
    drivers: list[Driver] = []
    for adapter in adapters:
        driver = make_driver(adapter, loops)
        try:
            driver.setup(HOST, port)
        except Exception as exc:  # noqa: BLE001 - any failure to start skips the client
            reason = f"could not start: {type(exc).__name__}: {exc}"
            skipped[adapter.name] = reason
            log(f"skipping {adapter.name}: {reason}")
            continue
        drivers.append(driver)
    return drivers


def run(args: argparse.Namespace) -> RunResults:
    settings = QUICK if args.quick else FULL
    if args.rounds:
        settings = replace(settings, rounds=args.rounds)
    if args.round_seconds:
        settings = replace(settings, round_seconds=args.round_seconds)
    scenarios = [s for s in SCENARIOS if not args.scenarios or s.name in args.scenarios]

    hiredis = hiredis_available()
    log(f"redis.utils.HIREDIS_AVAILABLE = {hiredis}")
    if not hiredis:
        log("WARNING: redis-py runs with its pure-Python parser; install redis[hiredis]")

    adapters, skipped = pick_adapters(args.clients)
    use_redis_benchmark = not args.no_redis_benchmark and (
        not args.clients or REDIS_BENCHMARK in args.clients
    )
    if use_redis_benchmark and (reason := redis_benchmark_unavailable()):
        skipped[REDIS_BENCHMARK] = reason
        use_redis_benchmark = False
    command = " ".join([".venv/bin/python bench/run.py", *sys.argv[1:]])
    results = RunResults(
        machine=describe_machine(),
        settings=settings,
        quick=args.quick,
        command=command,
        clients={a.name: a.describe() for a in adapters},
        skipped=skipped,
        hiredis_available=hiredis,
    )

    started = time.perf_counter()
    loops = EventLoops()
    drivers: list[Driver] = []
    try:
        with RedisServer(extra_config=server_config()) as server:
            log(f"redis-server {results.machine['redis-server']} on {HOST}:{server.port}")
            seed(server)
            try:
                drivers = start_drivers(adapters, loops, server.port, skipped)
                for name in skipped:
                    results.clients.pop(name, None)
                if use_redis_benchmark:
                    limit_driver = RedisBenchmarkDriver(HOST, server.port)
                    results.clients[REDIS_BENCHMARK] = limit_driver.describe()
                    drivers.append(limit_driver)
                for name, text in results.clients.items():
                    log(f"client {name}: {text}")
                pids = [server.pid] if server.pid is not None else []
                before, measuring = CpuSnapshot.take(pids), time.perf_counter()
                results.measurements = measure(scenarios, drivers, settings, server)
                seconds = time.perf_counter() - measuring
                use = other_cpu_use(before, CpuSnapshot.take(pids), seconds)
                if use is not None:
                    results.other_cores, steal = use
                    results.machine["CPU used by other processes while measuring"] = (
                        f"{results.other_cores:.2f} cores on average (hypervisor steal {steal:.2f})"
                    )
                    log(f"other processes used {results.other_cores:.2f} cores on average")
                    if results.other_cores > NOISY_OTHER_CORES:
                        log("WARNING: the machine was busy; figures are noisier than usual")
            finally:
                for driver in reversed(drivers):
                    driver.teardown()
            if use_redis_benchmark:
                requests = QUICK_BENCHMARK_REQUESTS if args.quick else FULL_BENCHMARK_REQUESTS
                for clients, pipeline in LIMIT_RUNS:
                    limit = run_redis_benchmark(HOST, server.port, clients, pipeline, requests)
                    log(
                        f"  redis-benchmark {limit.label}: GET {limit.rps['GET']:,.0f}/s, "
                        f"SET {limit.rps['SET']:,.0f}/s"
                    )
                    results.limits.append(limit)
    finally:
        loops.close()
    results.json_loads_us = json_loads_us()
    results.duration_s = time.perf_counter() - started
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.install:
        install_requirements()
    results = run(args)
    print(markdown_tables(results))
    log(f"raw results: {os.path.relpath(save_json(results), Path.cwd())}")
    if args.write_docs:
        DOCS_PAGE.parent.mkdir(parents=True, exist_ok=True)
        chart = write_chart(results, DOCS_CHART)
        # Keep the sections other benchmarks wrote (bench/kept_sections.py).
        old_page = DOCS_PAGE.read_text(encoding="utf-8") if DOCS_PAGE.exists() else ""
        DOCS_PAGE.write_text(docs_page(results, chart=chart) + kept_sections(old_page),
                             encoding="utf-8")
        log(f"wrote {os.path.relpath(DOCS_PAGE, Path.cwd())}")
        if chart:
            log(f"wrote {os.path.relpath(DOCS_CHART, Path.cwd())}")
    log(f"done in {results.duration_s:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
