"""Turning measurements into markdown: the tables, a plain reading, the docs page.

The reading is generated from the figures of the run, not written by hand,
so the page cannot drift from the numbers next to it; it states ratios and
per-call costs and says where they come from, and what they do not show.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .harness import Measurement, Settings
from .redis_benchmark import ServerLimit
from .scenarios import BATCH, SCENARIOS, VALUE_BYTES, Scenario

__all__ = ["RunResults", "docs_page", "markdown_tables", "reading"]

OURS = "redis_cache"
REDIS_PY = "redis-py"
REDIS_PY_ASYNC = "redis-py asyncio"

#: Extra round trip assumed when showing how a loopback ratio shrinks on a network.
NETWORK_RTT_US = 200.0


@dataclass
class RunResults:
    """Everything one run produced, as saved to bench/results/*.json."""

    machine: dict[str, str]
    settings: Settings
    quick: bool
    command: str
    clients: dict[str, str]
    skipped: dict[str, str]
    hiredis_available: bool
    measurements: list[Measurement] = field(default_factory=list)
    limits: list[ServerLimit] = field(default_factory=list)
    duration_s: float = 0.0
    #: Average cores other processes used while clients were measured (None: unknown).
    other_cores: float | None = None
    #: ``json.loads`` of the scenario value alone, in µs (None: not timed).
    json_loads_us: float | None = None

    def find(self, scenario: str, client: str) -> Measurement | None:
        for m in self.measurements:
            if m.scenario == scenario and m.client == client:
                return m
        return None

    def limit(self, clients: int, pipeline: int = 1) -> ServerLimit | None:
        for limit in self.limits:
            if limit.clients == clients and limit.pipeline == pipeline:
                return limit
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "settings": vars(self.settings),
            "quick": self.quick,
            "command": self.command,
            "clients": self.clients,
            "skipped": self.skipped,
            "redis_py_hiredis_available": self.hiredis_available,
            "value_bytes": len(VALUE_BYTES),
            "measurements": [m.to_json() for m in self.measurements],
            "redis_benchmark": [limit.to_json() for limit in self.limits],
            "duration_s": self.duration_s,
            "other_processes_cores": self.other_cores,
            "json_loads_us": self.json_loads_us,
        }


def _rate(value: float) -> str:
    return f"{value:,.0f}"


def _us(value: float) -> str:
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def _ratios(row: Measurement, others: Iterable[Measurement]) -> str:
    parts = [f"{row.median_rate / other.median_rate:.2f}x {other.client}" for other in others]
    return ", ".join(parts) or "-"


_GROUPS: tuple[tuple[str, str, bool], ...] = (
    ("single", "Single-key calls, one caller", False),
    ("batch", f"Batches of {BATCH} keys per call, one caller", True),
    ("concurrent", "Concurrent callers (asyncio.gather of N coroutines, one event loop)", False),
)


def _group_table(scenarios: Sequence[Scenario], rows: list[Measurement], batch: bool) -> str:
    header = ["scenario", "client", "calls/s"]
    if batch:
        header.append("keys/s")
    header += ["p50 µs", "p99 µs", "spread", "ratio to the others (calls/s ÷ calls/s)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for scenario in scenarios:
        in_scenario = [m for m in rows if m.scenario == scenario.name]
        for m in in_scenario:
            cells = [scenario.title, m.client, _rate(m.median_rate)]
            if batch:
                cells.append(_rate(m.median_rate * m.batch))
            cells += [
                _us(m.p50_us),
                _us(m.p99_us),
                f"{m.spread:.0%}",
                _ratios(m, (o for o in in_scenario if o is not m)),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _limits_table(limits: Sequence[ServerLimit]) -> str:
    lines = [
        "| redis-benchmark | GET req/s | SET req/s | GET p50 ms | SET p50 ms |",
        "|---|---|---|---|---|",
    ]
    for limit in limits:
        p50 = [limit.p50_ms.get(t) for t in ("GET", "SET")]
        lines.append(
            f"| `{limit.label}` | {_rate(limit.rps['GET'])} | {_rate(limit.rps['SET'])} | "
            + " | ".join("-" if v is None else f"{v:.3f}" for v in p50)
            + " |"
        )
    return "\n".join(lines)


def markdown_tables(results: RunResults) -> str:
    """One table per group of scenarios, then the server's ceiling."""
    s = results.settings
    out = [
        f"Median of {s.rounds} rounds of ~{s.round_seconds:g} s per client and scenario; "
        "p50/p99 over every call of those rounds (per call: one key, or one batch); "
        "spread = (fastest - slowest round) / median. "
        f"Values: {len(VALUE_BYTES)} bytes of JSON "
        "(the raw variants move the same bytes undecoded)."
    ]
    for group, title, batch in _GROUPS:
        scenarios = [sc for sc in SCENARIOS if sc.group == group]
        rows = [m for m in results.measurements if m.scenario in {sc.name for sc in scenarios}]
        if rows:
            out += [f"### {title}", _group_table(scenarios, rows, batch)]
    if results.limits:
        out += [
            "### The server's limit: redis-benchmark against the same server",
            "A C client doing nothing else (3-byte values, its default). "
            "`-c 1` is one connection, one request at a time: the reference for one "
            "blocking caller. `-c 50` and `-P 16` show what the server can serve here; "
            "redis-benchmark shares the machine's cores with it, so they are lower bounds.",
            _limits_table(results.limits),
        ]
    return "\n\n".join(out) + "\n"


def _per_call_us(m: Measurement) -> float:
    return 1e6 / m.median_rate


def _verdict(ratio: float) -> str:
    if ratio >= 1.05:
        return f"{ratio:.2f}x the calls/s"
    if ratio <= 0.95:
        return f"{ratio:.2f}x the calls/s (slower)"
    return f"about the same calls/s ({ratio:.2f}x)"


def _difference(slower: Measurement, faster: Measurement) -> tuple[float, float]:
    """Per-call time of ``slower`` minus ``faster``, and a rough noise bound for it.

    The bound is half of each figure's round-to-round range, added: a
    difference smaller than that could be drift between the two scenarios.
    """
    t_slow, t_fast = _per_call_us(slower), _per_call_us(faster)
    return t_slow - t_fast, (slower.spread * t_slow + faster.spread * t_fast) / 2


def _cost(slower: Measurement, faster: Measurement) -> str:
    diff, noise = _difference(slower, faster)
    if diff <= noise:
        return f"no more than the noise (±{_us(noise)} µs)"
    return f"about {_us(diff)} µs (±{_us(noise)})"


def _isolated_loads(results: RunResults, py_json: Measurement, py_raw: Measurement) -> str:
    """How ``json.loads`` alone compares with what JSON adds to redis-py's GET in the loop."""
    if results.json_loads_us is None:
        return ""
    text = f" On its own, `json.loads` of this value takes {results.json_loads_us:.1f} µs"
    diff, noise = _difference(py_json, py_raw)
    if diff - noise > results.json_loads_us:
        text += "; that it adds more inside redis-py's GET loop is measured here, not explained"
    return text + "."


def _single_key_paragraph(results: RunResults) -> str | None:
    pairs = []
    for name in ("get_json", "get_raw", "set_json", "set_raw"):
        ours, theirs = results.find(name, OURS), results.find(name, REDIS_PY)
        if ours and theirs:
            pairs.append((name, ours, theirs))
    if not pairs:
        return None
    parts = []
    for name, ours, theirs in pairs:
        ratio = ours.median_rate / theirs.median_rate
        saved = _per_call_us(theirs) - _per_call_us(ours)
        parts.append(
            f"`{name}`: {_verdict(ratio)} of redis-py "
            f"({_us(_per_call_us(ours))} vs {_us(_per_call_us(theirs))} µs per call, "
            f"{_us(saved)} µs {'saved' if saved >= 0 else 'lost'})"
        )
    text = "**One caller, one key.** redis_cache against redis-py sync: " + "; ".join(parts) + "."
    ours_json, ours_raw = results.find("get_json", OURS), results.find("get_raw", OURS)
    py_json, py_raw = results.find("get_json", REDIS_PY), results.find("get_raw", REDIS_PY)
    if ours_json and ours_raw and py_json and py_raw:
        gap_json = _per_call_us(py_json) - _per_call_us(ours_json)
        gap_raw = _per_call_us(py_raw) - _per_call_us(ours_raw)
        text += (
            " Decoding the JSON, measured as GET JSON minus GET raw, costs redis-py + "
            f"`json.loads` {_cost(py_json, py_raw)} per call and redis_cache "
            f"{_cost(ours_json, ours_raw)}; the gap between the clients is "
            f"{_us(gap_raw)} µs with raw bytes and {_us(gap_json)} µs with JSON, so "
            + (
                "most of it is the call path (building the command, reading the reply, "
                "Python layers), not JSON."
                if gap_raw >= 0.5 * gap_json
                else "most of it is JSON decoding, not the call path."
            )
            + _isolated_loads(results, py_json, py_raw)
        )
    return text


def _ceiling_paragraph(results: RunResults) -> str | None:
    limit = results.limit(1)
    if limit is None:
        return None
    floor_us = 1e6 / limit.rps["GET"]
    parts = []
    for client in (OURS, REDIS_PY, REDIS_PY_ASYNC):
        m = results.find("get_raw", client) or results.find("get_json", client)
        if m:
            above = _per_call_us(m) - floor_us
            parts.append(
                f"{client} `{m.scenario}` {m.median_rate / limit.rps['GET']:.0%} "
                f"({_us(abs(above))} µs {'more' if above >= 0 else 'less'} per call)"
            )
    if not parts:
        return None
    return (
        f"**Against redis-benchmark `-c 1`.** A C client doing nothing else, with one "
        f"connection, does {_rate(limit.rps['GET'])} GET/s here: about {_us(floor_us)} µs for "
        "a loopback round trip plus the server's work. Relative to it: "
        + "; ".join(parts)
        + ". Near or above 100% means the client adds next to nothing to the round trip "
        "(redis-benchmark spends a few µs of its own on its event loop and latency "
        "bookkeeping, so a lean blocking client can edge past it); time above it is the "
        "client's own work."
    )


def _batch_paragraph(results: RunResults) -> str | None:
    parts = []
    for name in ("get_many_json", "get_many_raw", "set_many_json", "set_many_raw"):
        ours, theirs = results.find(name, OURS), results.find(name, REDIS_PY)
        if ours and theirs:
            per_key = [_us(_per_call_us(m) / BATCH) for m in (ours, theirs)]
            parts.append(
                f"`{name}`: {_verdict(ours.median_rate / theirs.median_rate)} of redis-py "
                f"({per_key[0]} vs {per_key[1]} µs per key)"
            )
    if not parts:
        return None
    return (
        f"**Batches of {BATCH}.** One round trip is shared by {BATCH} keys, so these figures "
        "are mostly client-side work per key (encoding commands, parsing replies, JSON, "
        "building the result): " + "; ".join(parts) + "."
    )


def _async_paragraph(results: RunResults) -> str | None:
    seq = results.find("get_json", REDIS_PY_ASYNC)
    if seq is None:
        return None
    text = f"**asyncio.** redis-py asyncio with one caller: {_rate(seq.median_rate)} GET/s"
    sync_py = results.find("get_json", REDIS_PY)
    if sync_py:
        text += (
            f", {seq.median_rate / sync_py.median_rate:.2f}x redis-py sync "
            "(the event loop's cost per call)"
        )
    concurrent = [
        m for m in (results.find(f"get_json_c{n}", REDIS_PY_ASYNC) for n in (10, 100)) if m
    ]
    if concurrent:
        text += "; with " + " and ".join(
            f"{m.concurrency} callers {_rate(m.median_rate)} GET/s (p99 {_us(m.p99_us)} µs)"
            for m in concurrent
        )
    text += "."
    best = max(concurrent, key=lambda m: m.median_rate) if concurrent else seq
    many = results.limit(50)
    if many:
        share = best.median_rate / many.rps["GET"]
        text += (
            f" redis-benchmark with 50 connections gets {_rate(many.rps['GET'])} GET/s from "
            f"the same server; at {share:.0%} of that, "
            + (
                "the single Python thread running the event loop is the limit, not the server."
                if share < 0.7
                else "the client comes close to what the server gives on this machine."
            )
        )
    ours = results.find("get_json", OURS)
    if ours and concurrent:
        text += (
            f" For comparison, redis_cache's blocking client with one caller does "
            f"{ours.median_rate / best.median_rate:.2f}x the GET/s of redis-py asyncio's best "
            "concurrent figure; a blocking call holds its thread, though, so that is a different "
            "trade-off, not a like-for-like result."
        )
    return text


def _limits_paragraph(results: RunResults) -> str:
    ours = results.find("get_json", OURS)
    theirs = results.find("get_json", REDIS_PY)
    text = (
        "**What this does not show.** Client and server share one machine "
        f"({results.machine.get('cores', '?')} cores) and talk over loopback, where a round "
        "trip is a few tens of µs; values are small and one key is read over and over."
    )
    if ours and theirs:
        t_ours, t_py = _per_call_us(ours), _per_call_us(theirs)
        ratio_far = (t_py + NETWORK_RTT_US) / (t_ours + NETWORK_RTT_US)
        text += (
            f" The {_us(t_py - t_ours)} µs saved per GET is a fixed cost: across a network "
            f"adding {NETWORK_RTT_US:.0f} µs per round trip, the same GET ratio would be about "
            f"{ratio_far:.2f}x instead of {t_py / t_ours:.2f}x. The saving is CPU time in the "
            "calling process: it counts where that process is CPU-bound (batches, busy "
            "workers) and little where it mostly waits on a slow network."
        )
    if results.other_cores is not None and results.other_cores >= 0.1:
        text += (
            f" Other processes used {results.other_cores:.2f} of the "
            f"{results.machine.get('cores', '?')} cores on average while the clients were "
            "measured; the interleaved rounds spread that over every client alike, but it "
            "widens the spread."
        )
    spreads = [m.spread for m in results.measurements]
    if spreads:
        text += (
            f" Round-to-round spread was {min(spreads):.0%}-{max(spreads):.0%}; ratios closer "
            "to 1 than that are noise."
        )
    return text


def reading(results: RunResults) -> str:
    """A plain account of what the ratios say, built from the run's figures."""
    paragraphs = [
        p
        for p in (
            _single_key_paragraph(results),
            _ceiling_paragraph(results),
            _batch_paragraph(results),
            _async_paragraph(results),
        )
        if p
    ]
    paragraphs.append(_limits_paragraph(results))
    return "\n\n".join(paragraphs) + "\n"


def docs_page(results: RunResults) -> str:
    """docs/benchmarks.md: how to reproduce, the machine, the tables, the reading."""
    machine = "\n".join(f"| {k} | {v} |" for k, v in results.machine.items())
    clients = "\n".join(f"- **{name}**: {text}" for name, text in results.clients.items())
    skipped = "".join(f"\n- {name}: skipped ({why})" for name, why in results.skipped.items())
    quick = (
        "\n> This page was written from a `--quick` run: short rounds, rough figures.\n"
        if results.quick
        else ""
    )
    return f"""# Benchmarks

How fast `redis_cache` is next to other Python Redis clients, measured side by side
against one private `redis-server` in one run.
{quick}
## Reproduce

```sh
bash scripts/setup-env.sh      # .venv with redis[hiredis], fresh C build
{results.command}
```

`bench/run.py` starts its own `redis-server` on a free loopback port (nothing else is
touched), checks one call of every scenario per client, warms each client up, then runs
{results.settings.rounds} rounds interleaved across every client and scenario (order rotated
each round, GC paused inside a round) and finally `redis-benchmark` against the same server. Raw results
go to `bench/results/` as JSON; `--quick` is a ~10 s smoke run; `--scenarios` picks scenarios.
The whole run took {results.duration_s:.0f} s.

Clients:

{clients}{skipped}

For fairness all clients move the same bytes: redis-py stores the compact JSON that
redis_cache writes (a reused `json.JSONEncoder`) and decodes with `json.loads`; the
`raw` scenarios use `serializer="raw"` and plain bytes. get_many returns a dict of the
keys found for both (redis-py: `MGET` + decode); set_many is one pipeline of `SET ... EX`
(redis-py: `pipeline(transaction=False)`). Both use their default 5 s socket timeouts.
redis-py's hiredis parser was {"in use" if results.hiredis_available else "NOT available"}
(`redis.utils.HIREDIS_AVAILABLE = {results.hiredis_available}`).

## Machine

| | |
|---|---|
{machine}

## Results

{markdown_tables(results)}
## Reading

{reading(results)}"""
