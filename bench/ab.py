"""redis_cache against itself: two source trees (two builds), side by side.

    .venv/bin/python bench/ab.py OLD_TREE NEW_TREE [--rounds 7] [--seconds 0.4]

Each tree must hold a built extension (``setup.py build_ext --inplace``).
For each scenario, rounds alternate between the trees (old, new, new, old,
...), each round a fresh process importing ``redis_cache`` from its tree and
calling for about ``--seconds`` against one private server. Prints the
median calls/s of each tree and new ÷ old, with the spread of each. For
checking that a change did not slow the hot paths; the comparison with the
other clients is bench/run.py's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from redis_cache.testing import RedisServer  # noqa: E402 (the tree this file is in)

SCENARIOS = {
    "sync GET": "sync",
    "sync SET": "sync",
    "sync get_many(100)": "sync",
    "sync set_many(100)": "sync",
    "async GET, 1 caller": "async",
    "async GET, 100 coroutines": "async",
    "async set_many(100), 1 caller": "async",
}

WORKER = r'''
import asyncio, json, sys, time
from redis_cache import RedisCache, SyncRedisCache
port, name, seconds = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
VALUE = {"id": 1, "name": "Ada Lovelace", "langs": ["en", "fr"], "score": 97.5, "active": True,
         "tags": ["math", "engines"]}
KEYS = [f"k{i}" for i in range(100)]
BATCH = {key: VALUE for key in KEYS}

def timed(call, per_call=1):
    n = 0
    end = time.perf_counter() + seconds / 4
    while time.perf_counter() < end:  # warm up
        call()
    start = time.perf_counter()
    end = start + seconds
    while time.perf_counter() < end:
        for _ in range(50):
            call()
        n += 50
    return n * per_call / (time.perf_counter() - start)

async def atimed(make, per_call=1):
    n = 0
    end = time.perf_counter() + seconds / 4
    while time.perf_counter() < end:
        await make()
    start = time.perf_counter()
    end = start + seconds
    while time.perf_counter() < end:
        for _ in range(20):
            await make()
        n += 20
    return n * per_call / (time.perf_counter() - start)

if name.startswith("sync"):
    with SyncRedisCache(port=port) as c:
        c.set_many(BATCH)
        call = {
            "sync GET": lambda: c.get("k1"),
            "sync SET": lambda: c.set("k1", VALUE, ttl=60),
            "sync get_many(100)": lambda: c.get_many(KEYS),
            "sync set_many(100)": lambda: c.set_many(BATCH, ttl=60),
        }[name]
        print(timed(call))
else:
    async def main():
        async with RedisCache(port=port) as c:
            await c.set_many(BATCH)
            if name == "async GET, 1 caller":
                return await atimed(lambda: c.get("k1"))
            if name == "async set_many(100), 1 caller":
                return await atimed(lambda: c.set_many(BATCH, ttl=60))
            async def hundred():
                await asyncio.gather(*(c.get(k) for k in KEYS))
            return await atimed(hundred, per_call=100)
    print(asyncio.run(main()))
'''


def run_round(tree: Path, port: int, scenario: str, seconds: float) -> float:
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run(
        [sys.executable, "-c", WORKER, str(port), scenario, str(seconds)],
        env=env, cwd="/", capture_output=True, text=True, check=True, timeout=120,
    ).stdout
    return float(out.strip().splitlines()[-1])


def spread(values: list[float]) -> str:
    return f"{(max(values) - min(values)) / statistics.median(values) * 100:.0f}%"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.4)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    results: dict[str, dict[str, list[float]]] = {}
    with RedisServer() as server:
        for scenario in SCENARIOS:
            figures: dict[str, list[float]] = {"old": [], "new": []}
            for round_ in range(args.rounds):
                order = ("old", "new") if round_ % 2 == 0 else ("new", "old")
                for which in order:
                    tree = args.old if which == "old" else args.new
                    figures[which].append(run_round(tree.resolve(), server.port, scenario, args.seconds))
            results[scenario] = figures
            print(f"{scenario}: done", file=sys.stderr)
    print(f"Medians of {args.rounds} alternating rounds of ~{args.seconds} s (calls/s; spread = "
          "(max - min) / median).\n")
    print("| scenario | old | new | new ÷ old | spread old | spread new |")
    print("|---|---|---|---|---|---|")
    for scenario, figures in results.items():
        old, new = statistics.median(figures["old"]), statistics.median(figures["new"])
        print(f"| {scenario} | {old:,.0f} | {new:,.0f} | {new / old:.2f}x | "
              f"{spread(figures['old'])} | {spread(figures['new'])} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
