"""Turning measurements into markdown and a chart: the tables, the targets, the docs page.

Everything on the page is generated from the run's figures (and, for "Where
the time goes", from ``bench/profile.json`` written by ``bench/profile.py``),
so the page cannot drift from the numbers next to it.  It states ratios and
per-call costs, says which targets were met and which were not, and what the
figures do not show.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .harness import Measurement, Settings
from .redis_benchmark import NAME as REDIS_BENCHMARK
from .redis_benchmark import ServerLimit
from .scenarios import BATCH, CLEAR_KEYS, SCAN_COUNT, SCENARIOS, VALUE_BYTES, Scenario

__all__ = ["RunResults", "docs_page", "markdown_tables", "reading", "targets", "write_chart"]

OURS_ASYNC = "redis_cache async"
OURS_UVLOOP = "redis_cache async+uvloop"
OURS_SYNC = "redis_cache sync"
OURS = (OURS_ASYNC, OURS_UVLOOP, OURS_SYNC)
REDIS_PY = "redis-py"
REDIS_PY_ASYNC = "redis-py asyncio"
COREDIS = "coredis"
GLIDE = "valkey-glide"
#: Report order of the rows in every table.
CLIENT_ORDER = (
    OURS_ASYNC,
    OURS_UVLOOP,
    OURS_SYNC,
    REDIS_PY,
    REDIS_PY_ASYNC,
    COREDIS,
    GLIDE,
    REDIS_BENCHMARK,
)

#: Extra round trip assumed when showing how a loopback ratio shrinks on a network.
NETWORK_RTT_US = 200.0

#: The profile summary written by bench/profile.py, rendered as "Where the time goes".
PROFILE_JSON = Path(__file__).resolve().parent / "profile.json"

#: Targets of the async engine, checked against every full run.
TARGET_C100_VS_REDIS_PY_ASYNC = 8.0
TARGET_SEQ_VS_LIMIT = 0.90


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

    def find_any(self, scenario: str) -> bool:
        """Whether any client was measured in ``scenario``."""
        return any(m.scenario == scenario for m in self.measurements)

    def limit_for(self, scenario: Scenario) -> Measurement | None:
        """redis-benchmark's row for ``scenario``, or for its raw twin (same command)."""
        return self.find(scenario.name, REDIS_BENCHMARK) or self.find(
            scenario.raw_twin, REDIS_BENCHMARK
        )

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
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def _us(value: float) -> str:
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def _x(ratio: float) -> str:
    return f"{ratio:.2f}x"


def _per_call_us(m: Measurement) -> float:
    return 1e6 / m.median_rate


def _order(rows: Iterable[Measurement]) -> list[Measurement]:
    rank = {name: i for i, name in enumerate(CLIENT_ORDER)}
    return sorted(rows, key=lambda m: rank.get(m.client, len(rank)))


_GROUPS: tuple[tuple[str, str], ...] = (
    ("single", "Single-key calls, one caller"),
    ("batch", f"Batches of {BATCH} keys per call, one caller"),
    ("concurrent", "Concurrent GET: N coroutines on one event loop"),
    ("clear", f"clear_pattern over {CLEAR_KEYS:,} keys"),
)

_GROUP_NOTES = {
    "single": "Every async client's call is awaited by one coroutine, one call at a time.",
    "batch": (
        f"get_many: one `MGET` of {BATCH} keys, returning a dict of the keys found; set_many: "
        f"{BATCH} `SET ... EX` in one pipeline (redis_cache: `set_many(ttl=...)`; redis-py and "
        "coredis: `pipeline(transaction=False)`; valkey-glide: a non-atomic `Batch`). "
        "redis-benchmark's set_many row is `-P 100` SETs, counted per 100."
    ),
    "concurrent": (
        "N coroutines (`asyncio.gather`) each await GET back to back; each round makes a fixed "
        "number of calls, split evenly over the N. redis_cache and valkey-glide pipeline every "
        "caller's commands over one connection; redis-py asyncio opens a connection per caller "
        "(`max_connections=1000`); coredis multiplexes over its default pool (up to 64). "
        "redis-benchmark's row is `-c N`: N connections, one request in flight on each. "
        "Latency includes the wait for the event loop, as a caller sees it."
    ),
    "clear": (
        f"Every client deletes the same {CLEAR_KEYS:,} keys (re-created with `DEBUG POPULATE` "
        f"before each round, untimed) with the same loop: `SCAN cursor MATCH bench:clear:* COUNT "
        f"{SCAN_COUNT}`, then `UNLINK` of the batch, until the cursor is 0 (redis_cache's own "
        "`clear_pattern`; the peers' loops are written with their APIs). One call per round, so "
        "p50/p99 are over the rounds' calls."
    ),
}


def _scenario_table(scenario: Scenario, results: RunResults) -> str:
    rows = _order(m for m in results.measurements if m.scenario == scenario.name)
    limit_row = results.limit_for(scenario)
    borrowed = limit_row is not None and limit_row.scenario != scenario.name
    if borrowed:
        rows.append(limit_row)  # type: ignore[arg-type]
    ours_async = results.find(scenario.name, OURS_ASYNC)
    ours_sync = results.find(scenario.name, OURS_SYNC)
    per_key = scenario.batch > 1
    header = ["client", "calls/s"]
    if per_key:
        header.append("keys/s")
    header += ["p50 µs", "p99 µs", "spread"]
    if ours_async:
        header.append("redis_cache async ÷ this")
    if ours_sync:
        header.append("redis_cache sync ÷ this")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for m in rows:
        name = f"**{m.client}**" if m.client in OURS else m.client
        if m is limit_row and borrowed:
            name += " (the same command as the raw-bytes row)"
        cells = [name, _rate(m.median_rate)]
        if per_key:
            cells.append(_rate(m.median_rate * m.batch))
        cells += [_us(m.p50_us), _us(m.p99_us), f"{m.spread:.0%}"]
        for ours in (ours_async, ours_sync):
            if ours is not None:
                cells.append("-" if m is ours else _x(ours.median_rate / m.median_rate))
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
    """One table per scenario, by group, then the server's pipelined ceiling."""
    s = results.settings
    out = [
        f"Median of {s.rounds} rounds of ~{s.round_seconds:g} s per client and scenario; "
        "p50/p99 over every call of those rounds (per call: one key, one batch or one "
        "clear_pattern; redis-benchmark: the median over rounds of its own p50/p99); "
        "spread = (fastest - slowest round) / median. Ratios are calls/s ÷ calls/s: "
        "above 1 means redis_cache is faster than that row. "
        f"Values: {len(VALUE_BYTES)} bytes of JSON (the raw variants move the same bytes "
        "undecoded)."
    ]
    for group, title in _GROUPS:
        scenarios = [sc for sc in SCENARIOS if sc.group == group]
        shown = [sc for sc in scenarios if results.find_any(sc.name)]
        if not shown:
            continue
        out += [f"### {title}", _GROUP_NOTES[group]]
        for scenario in shown:
            out += [f"#### {scenario.title}", _scenario_table(scenario, results)]
    if results.limits:
        out += [
            "### The server's ceiling: redis-benchmark with many pipelined connections",
            "redis-benchmark's default 3-byte values, after the rounds. It shares the "
            "machine's cores with the server, so this is a lower bound of what the server "
            "can serve here.",
            _limits_table(results.limits),
        ]
    return "\n\n".join(out) + "\n"


# -- targets -------------------------------------------------------------------


def _met(ok: bool) -> str:
    return "**met**" if ok else "**NOT met**"


def _c100_target(results: RunResults) -> str | None:
    ours = results.find("get_json_c100", OURS_ASYNC)
    if ours is None:
        return None
    parts = []
    verdicts = []
    py = results.find("get_json_c100", REDIS_PY_ASYNC)
    if py:
        ratio = ours.median_rate / py.median_rate
        ok = ratio >= TARGET_C100_VS_REDIS_PY_ASYNC
        verdicts.append(ok)
        parts.append(
            f"{_x(ratio)} redis-py asyncio ({_rate(ours.median_rate)} vs "
            f"{_rate(py.median_rate)} GET/s; at least {TARGET_C100_VS_REDIS_PY_ASYNC:g}x "
            f"wanted: {_met(ok)})"
        )
    for peer in (COREDIS, GLIDE):
        m = results.find("get_json_c100", peer)
        if m is None:
            why = results.skipped.get(peer, "not measured")
            parts.append(f"{peer} not measured ({why}): ahead of it **not checked**")
            verdicts.append(False)
            continue
        ratio = ours.median_rate / m.median_rate
        ok = ratio > 1.0
        verdicts.append(ok)
        parts.append(
            f"{_x(ratio)} {peer} ({_rate(m.median_rate)} GET/s; ahead wanted: {_met(ok)})"
        )
    uv = results.find("get_json_c100", OURS_UVLOOP)
    extra = f" On uvloop: {_rate(uv.median_rate)} GET/s." if uv else ""
    overall = _met(all(verdicts))
    return (
        f"1. **Concurrent GET at 100 coroutines: at least {TARGET_C100_VS_REDIS_PY_ASYNC:g}x "
        f"redis-py asyncio, ahead of coredis and valkey-glide** ({overall}). redis_cache async "
        f"does {_rate(ours.median_rate)} GET/s (p99 {_us(ours.p99_us)} µs): "
        + "; ".join(parts)
        + "."
        + extra
    )


def _seq_target(results: RunResults) -> str | None:
    limit = results.find("get_raw", REDIS_BENCHMARK)
    raw = results.find("get_raw", OURS_ASYNC)
    if limit is None or raw is None:
        return None
    share = raw.median_rate / limit.median_rate
    text = (
        f"2. **Sequential async GET at least {TARGET_SEQ_VS_LIMIT:.0%} of redis-benchmark's "
        f"one-connection rate** ({_met(share >= TARGET_SEQ_VS_LIMIT)}). Same key, same bytes: "
        f"redis_cache async GET (raw) {_rate(raw.median_rate)}/s against redis-benchmark "
        f"`-c 1 GET` {_rate(limit.median_rate)}/s = **{share:.0%}** "
        f"({_us(_per_call_us(raw))} vs {_us(_per_call_us(limit))} µs per GET)"
    )
    more = []
    js = results.find("get_json", OURS_ASYNC)
    if js:
        more.append(f"with JSON decoding {js.median_rate / limit.median_rate:.0%}")
    uv = results.find("get_raw", OURS_UVLOOP)
    if uv:
        more.append(f"on uvloop {uv.median_rate / limit.median_rate:.0%}")
    sync = results.find("get_raw", OURS_SYNC)
    if sync:
        more.append(f"the blocking SyncRedisCache {sync.median_rate / limit.median_rate:.0%}")
    if more:
        text += "; " + ", ".join(more)
    return text + "."


def _async_vs_sync_target(results: RunResults) -> str | None:
    rows = []
    verdicts = []
    for scenario in SCENARIOS:
        sync = results.find(scenario.name, OURS_SYNC)
        asy = results.find(scenario.name, OURS_ASYNC)
        if sync is None or asy is None:
            continue
        ratio = asy.median_rate / sync.median_rate
        noise = (asy.spread + sync.spread) / 2
        ok = ratio >= 1.0
        verdicts.append(ok)
        uv = results.find(scenario.name, OURS_UVLOOP)
        uv_cell = _x(uv.median_rate / sync.median_rate) if uv else "-"
        verdict = "yes" if ok else ("within noise" if ratio >= 1 - noise else "**no**")
        rows.append(
            f"| {scenario.title} | {_rate(sync.median_rate)} | {_rate(asy.median_rate)} | "
            f"{_x(ratio)} | {uv_cell} | {_us(_per_call_us(asy) - _per_call_us(sync))} | "
            f"{verdict} |"
        )
    if not rows:
        return None
    table = "\n".join(
        [
            "| scenario | sync calls/s | async calls/s | async ÷ sync | uvloop ÷ sync "
            "| async - sync µs per call | async at least as fast |",
            "|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    slower = len(verdicts) - sum(verdicts)
    return (
        f"3. **Async never slower than sync per operation** ({_met(slower == 0)}: async "
        f"slower in {slower} of {len(verdicts)} one-caller scenarios; 'within noise' marks a "
        "gap smaller than the two rows' average spread). The async figures are one coroutine "
        "awaiting one call at a time, the case where an event loop can only add cost; with "
        "concurrent callers (above) async serves many times what one blocking caller can.\n\n"
        + table
    )


def targets(results: RunResults) -> str:
    """The async engine's targets, each marked met or not, with its figures."""
    items = [t for t in (_c100_target(results), _seq_target(results)) if t]
    third = _async_vs_sync_target(results)
    text = "\n".join(items)
    if third:
        text += ("\n" if text else "") + third
    return (text or "No target could be checked: the run lacks the rows they compare.") + "\n"


# -- reading -------------------------------------------------------------------


def _verdict(ratio: float) -> str:
    if ratio >= 1.05:
        return f"{ratio:.2f}x the calls/s"
    if ratio <= 0.95:
        return f"{ratio:.2f}x the calls/s (slower)"
    return f"about the same calls/s ({ratio:.2f}x)"


def _sync_paragraph(results: RunResults) -> str | None:
    parts = []
    for name in ("get_json", "get_raw", "set_json", "set_raw", "get_many_json", "set_many_json"):
        ours, theirs = results.find(name, OURS_SYNC), results.find(name, REDIS_PY)
        if ours and theirs:
            parts.append(
                f"`{name}` {_verdict(ours.median_rate / theirs.median_rate)} "
                f"({_us(_per_call_us(ours))} vs {_us(_per_call_us(theirs))} µs per call)"
            )
    if not parts:
        return None
    return (
        "**Blocking clients.** SyncRedisCache against redis-py sync: " + "; ".join(parts) + "."
    )


def _async_peers_paragraph(results: RunResults) -> str | None:
    parts = []
    for name, label in (
        ("get_json", "one caller"),
        ("get_json_c10", "10 callers"),
        ("get_json_c1000", "1000 callers"),
        ("get_many_json", "get_many"),
        ("set_many_json", "set_many"),
        ("clear_pattern", "clear_pattern"),
    ):
        ours = results.find(name, OURS_ASYNC)
        if ours is None:
            continue
        peers = [
            f"{_x(ours.median_rate / m.median_rate)} {peer}"
            for peer in (REDIS_PY_ASYNC, COREDIS, GLIDE)
            if (m := results.find(name, peer))
        ]
        if peers:
            parts.append(f"{label}: " + ", ".join(peers))
    if not parts:
        return None
    return "**Async peers.** redis_cache async (asyncio) against them: " + "; ".join(parts) + "."


def _concurrency_paragraph(results: RunResults) -> str | None:
    ours = [results.find(f"get_json_c{n}", OURS_ASYNC) for n in (10, 100, 1000)]
    ours_m = [m for m in ours if m]
    if not ours_m:
        return None
    text = "**Concurrency.** redis_cache async with " + ", ".join(
        f"{m.concurrency} callers {_rate(m.median_rate)} GET/s" for m in ours_m
    )
    limits = [(m, results.find(m.scenario, REDIS_BENCHMARK)) for m in ours_m]
    shares = [f"{m.median_rate / lim.median_rate:.0%} of `-c {m.concurrency}`" for m, lim in limits if lim]
    if shares:
        text += f" ({', '.join(shares)} redis-benchmark)"
    ceiling = results.limit(50, 16)
    if ceiling:
        best = max(ours_m, key=lambda m: m.median_rate)
        text += (
            f". The server's pipelined ceiling here is {_rate(ceiling.rps['GET'])} GET/s; at "
            f"{best.median_rate / ceiling.rps['GET']:.0%} of it, the one Python thread running "
            "the event loop (coroutine switches, futures, the caller's own code) is the limit, "
            "not the server or the connection"
        )
    return text + "."


def _limits_paragraph(results: RunResults) -> str:
    ours = results.find("get_json", OURS_SYNC)
    theirs = results.find("get_json", REDIS_PY)
    text = (
        "**What this does not show.** Client and server share one machine "
        f"({results.machine.get('cores', '?')} cores) and talk over loopback, where a round "
        "trip is a few tens of µs; values are small and one key is read over and over. "
        "valkey-glide runs its Rust core on threads of its own, and redis-benchmark is a "
        "separate process: on 2 cores both compete with the server for CPU in a way an "
        "in-thread client does not."
    )
    if ours and theirs:
        t_ours, t_py = _per_call_us(ours), _per_call_us(theirs)
        ratio_far = (t_py + NETWORK_RTT_US) / (t_ours + NETWORK_RTT_US)
        text += (
            f" The {_us(t_py - t_ours)} µs SyncRedisCache saves per GET over redis-py is a "
            f"fixed cost: across a network adding {NETWORK_RTT_US:.0f} µs per round trip the "
            f"GET ratio would be about {ratio_far:.2f}x instead of {t_py / t_ours:.2f}x."
        )
    if results.other_cores is not None and results.other_cores >= 0.1:
        text += (
            " Other processes (not the benchmark, its redis-benchmark runs or the server) used "
            f"{results.other_cores:.2f} of the {results.machine.get('cores', '?')} cores on "
            "average while the clients were measured; the interleaved rounds spread that over "
            "every client alike, but it widens the spread."
        )
    spreads = [m.spread for m in results.measurements]
    if spreads:
        text += (
            f" Round-to-round spread was {min(spreads):.0%}-{max(spreads):.0%} "
            f"(median {statistics.median(spreads):.0%}); ratios closer to 1 than a row's spread "
            "are noise."
        )
    return text


def reading(results: RunResults) -> str:
    """A plain account of what the ratios say, built from the run's figures."""
    paragraphs = [
        p
        for p in (
            _async_peers_paragraph(results),
            _concurrency_paragraph(results),
            _sync_paragraph(results),
        )
        if p
    ]
    paragraphs.append(_limits_paragraph(results))
    return "\n\n".join(paragraphs) + "\n"


# -- where the time goes -------------------------------------------------------


def _syscalls(counts: dict[str, float] | None) -> str:
    if not counts:
        return "not counted (no strace)"
    return ", ".join(f"{name} {n:.2f}" for name, n in counts.items())


def _profile_conclusion(by_name: dict[str, dict[str, Any]], getpid_ns: float | None) -> str:
    """What the profile says, in numbers (only the parts its data supports)."""
    seq, c100 = by_name.get("seq"), by_name.get("c100")
    sync, uv = by_name.get("seq-sync"), by_name.get("seq-uvloop")
    parts = []
    if seq and sync:
        s, b = seq["costs"], sync["costs"]
        loop_us = sum(us for c, us in seq.get("user_us_split", []) if "event loop" in c)
        ours_us = sum(us for c, us in seq.get("user_us_split", []) if "redis_cache" in c)
        polls = s.get("loop_polls_per_get")
        text = (
            f"**Sequential GET.** An async GET costs {s['wall_us']:.1f} µs against the blocking "
            f"client's {b['wall_us']:.1f} µs ({b['wall_us'] / s['wall_us']:.2f}x its rate). "
            f"Of its user time, asyncio's Python loop code takes {loop_us:.1f} µs and "
            f"redis_cache's C engine {ours_us:.1f} µs. Per GET the async path makes "
            f"{_syscalls(seq.get('syscalls_per_get'))}, the blocking one "
            f"{_syscalls(sync.get('syscalls_per_get'))}; {s['kernel_us']:.1f} against "
            f"{b['kernel_us']:.1f} µs in the kernel, {s['off_cpu_us']:.1f} against "
            f"{b['off_cpu_us']:.1f} µs off-CPU (the server's turn, loopback, wake-ups)."
        )
        if polls is not None and polls < 0.5:
            text += (
                f" asyncio's loop polled its selector {polls:.4f} times per GET: the awaiting "
                "task's own step waits for its reply on the loop's epoll descriptor and goes "
                "on without suspending (docs/architecture.md, \"Waiting in the awaiting task's "
                "own step\"), so the one `epoll_wait` per GET is ours and neither the loop's "
                "iteration nor the task's wake-up runs."
            )
        elif polls is not None:
            text += (
                f" asyncio's loop polled its selector {polls:.2f} times per GET: each command "
                "goes through `_run_once` and the selector's Python code."
            )
        parts.append(text)
        if uv:
            u = uv["costs"]
            parts.append(
                f"On uvloop (loop in C, where neither shortcut applies) the same GET costs "
                f"{u['wall_us']:.1f} µs ({u['user_us']:.1f} user, {u['kernel_us']:.1f} kernel; "
                f"{_syscalls(uv.get('syscalls_per_get'))} per GET)."
            )
    if c100:
        c = c100["costs"]
        split = ", ".join(f"{cat.split(' (')[0]} {us:.2f} µs" for cat, us in c100.get("user_us_split", []))
        getpid = (c100.get("syscalls_per_get") or {}).get("getpid")
        text = (
            f"**100 concurrent coroutines.** {c['wall_us']:.1f} µs per GET: {c['user_us']:.1f} "
            f"user ({split}), {c['kernel_us']:.1f} kernel, {c['off_cpu_us']:.1f} off-CPU. "
            "Pipelining has amortised the network syscalls to a few per hundred GETs; what is "
            "left is per-request Python-level work: each reply completes a Future whose "
            "callback asyncio turns into a `Handle` that its Python `_run_once` schedules and "
            "runs to resume the task."
        )
        if getpid:
            text += (
                f" One syscall per GET is left ({getpid:.2f} `getpid` per GET): redis_cache's "
                "C engine looks up `asyncio.get_running_loop()` for every command "
                "(`pick()` in csrc/async_client.c), and CPython 3.11's implementation calls "
                "`getpid()` each time to detect forks"
            )
            if getpid_ns:
                text += (
                    f"; at {getpid_ns:.0f} ns per call here that is about "
                    f"{getpid_ns / 1000 / c['wall_us']:.0%} of a GET at this concurrency"
                )
            text += (
                ". Checking the loop once per event-loop iteration (or caching it on the "
                "multiplexer) would remove it, a change for csrc/ that this benchmark does "
                "not make."
            )
        parts.append(text)
    return "\n\n".join(parts)


def profile_section(path: Path = PROFILE_JSON) -> str:
    """"Where the time goes", from bench/profile.py's summary (if it was run)."""
    if not path.exists():
        return (
            "No profile summary yet: run `.venv/bin/python bench/profile.py` (it writes "
            "`bench/profile.json`), then `bench/run.py --write-docs`.\n"
        )
    data = json.loads(path.read_text(encoding="utf-8"))
    perf = data.get("perf_counts_instructions")
    out = [
        f"Profiled on {data.get('date', '?')} with `.venv/bin/python bench/profile.py` "
        "(each workload 5 s against a private redis-server; load average at start "
        f"{data.get('load_average_at_start', 0):.2f}). "
        + (
            "`perf stat -e instructions true` reports the counter as not supported on this "
            "VM (no PMU), so instead of `perf record`: "
            if not perf
            else "perf has hardware counters here, but the summary below uses: "
        )
        + "`getrusage` around the timed loop splits each GET's wall time into user CPU, "
        "kernel CPU and off-CPU time; `strace -c` counts syscalls per GET (its timings are "
        "meaningless, the counts are exact); `py-spy record --native --idle` (250 Hz, C "
        "frames with Python frames folded in) splits the user CPU time between asyncio's "
        "Python loop, `_asyncio`'s C Future/Task code, redis_cache's C engine and the caller. "
        "py-spy over-samples syscall leaves (it stops the thread as it leaves the kernel), so "
        "kernel and idle time are taken from `getrusage`, not from its samples."
    ]
    by_name = {w["name"]: w for w in data.get("workloads", [])}
    for workload in data.get("workloads", []):
        c = workload["costs"]
        if not workload.get("user_us_split"):
            continue
        lines = [
            f"**{workload['title']}**: {c['gets_per_s']:,.0f} GET/s, "
            f"{c['wall_us']:.1f} µs per GET.",
            "",
            "| where the time of one GET goes | µs | share |",
            "|---|---|---|",
        ]
        for category, us in workload["user_us_split"]:
            lines.append(f"| user CPU: {category} | {us:.2f} | {us / c['wall_us']:.0%} |")
        lines.append(
            f"| kernel CPU: syscalls ({_syscalls(workload.get('syscalls_per_get'))} per GET) "
            f"| {c['kernel_us']:.2f} | {c['kernel_us'] / c['wall_us']:.0%} |"
        )
        lines.append(
            "| off-CPU: waiting for replies (the server's work, loopback, wake-ups) "
            f"| {c['off_cpu_us']:.2f} | {c['off_cpu_us'] / c['wall_us']:.0%} |"
        )
        out.append("\n".join(lines))
    refs = [w for w in data.get("workloads", []) if not w.get("user_us_split")]
    if refs:
        lines = [
            "For comparison, the same sequential GET loop measured the same way:",
            "",
            "| workload | GET/s | µs per GET | user | kernel | off-CPU | syscalls per GET |",
            "|---|---|---|---|---|---|---|",
        ]
        for w in [by_name.get("seq"), *refs]:
            if not w:
                continue
            c = w["costs"]
            lines.append(
                f"| {w['title']} | {c['gets_per_s']:,.0f} | {c['wall_us']:.1f} | "
                f"{c['user_us']:.1f} | {c['kernel_us']:.1f} | {c['off_cpu_us']:.1f} | "
                f"{_syscalls(w.get('syscalls_per_get'))} |"
            )
        out.append("\n".join(lines))
    conclusion = _profile_conclusion(by_name, data.get("getpid_ns"))
    if conclusion:
        out.append(conclusion)
    return "\n\n".join(out) + "\n"


# -- chart ---------------------------------------------------------------------

_COLOURS = {
    OURS_ASYNC: "#d62728",
    OURS_UVLOOP: "#ff7f0e",
    OURS_SYNC: "#8c564b",
    REDIS_PY: "#1f77b4",
    REDIS_PY_ASYNC: "#17becf",
    COREDIS: "#2ca02c",
    GLIDE: "#9467bd",
}


def write_chart(results: RunResults, path: Path) -> bool:
    """docs/benchmarks.png: calls/s per client, one panel per scenario, the
    redis-benchmark limit as a dashed line.  False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    shown = [sc for sc in SCENARIOS if results.find_any(sc.name)]
    if not shown:
        return False
    cols = 3
    rows = -(-len(shown) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(16, 3.1 * rows), squeeze=False)
    for ax, scenario in zip(axes.flat, shown, strict=False):
        ms = [
            m
            for m in _order(results.measurements)
            if m.scenario == scenario.name and m.client != REDIS_BENCHMARK
        ]
        names = [m.client for m in ms]
        rates = [m.median_rate for m in ms]
        y = range(len(ms))
        ax.barh(list(y), rates, color=[_COLOURS.get(n, "#7f7f7f") for n in names])
        ax.set_yticks(list(y), names, fontsize=8)
        ax.invert_yaxis()
        top = max(rates) if rates else 1.0
        limit = results.limit_for(scenario)
        if limit is not None:
            ax.axvline(limit.median_rate, color="black", linestyle="--", linewidth=1)
            ax.text(
                limit.median_rate,
                len(ms) - 0.4,
                " redis-benchmark",
                fontsize=7,
                va="bottom",
                ha="left" if limit.median_rate < 0.7 * max(top, limit.median_rate) else "right",
            )
            top = max(top, limit.median_rate)
        for i, rate in enumerate(rates):
            ax.text(rate, i, f" {_rate(rate)}", va="center", fontsize=7)
        ax.set_xlim(0, top * 1.3)
        ax.set_title(scenario.title.split(" (")[0], fontsize=9)
        ax.set_xlabel("calls/s (median of rounds)", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    for ax in list(axes.flat)[len(shown) :]:
        ax.axis("off")
    when = results.machine.get("date", "")
    fig.suptitle(
        f"redis_cache vs other Python Redis clients, one private redis-server, {when}"
        + (" (quick run)" if results.quick else ""),
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


# -- the page ------------------------------------------------------------------


def docs_page(results: RunResults, chart: bool = False) -> str:
    """docs/benchmarks.md: how to reproduce, the machine, targets, tables, reading, profile."""
    machine = "\n".join(f"| {k} | {v} |" for k, v in results.machine.items())
    clients = "\n".join(f"- **{name}**: {text}" for name, text in results.clients.items())
    skipped = "".join(
        f"\n- **{name}: NOT MEASURED** — {why}" for name, why in results.skipped.items()
    )
    quick = (
        "\n> This page was written from a `--quick` run: short rounds, rough figures.\n"
        if results.quick
        else ""
    )
    picture = (
        "\n![calls/s per client and scenario; dashed line: redis-benchmark](benchmarks.png)\n"
        if chart
        else ""
    )
    return f"""# Benchmarks

How fast `redis_cache` (the async `RedisCache` and the blocking `SyncRedisCache`) is next to
other Python Redis clients and to `redis-benchmark`, measured side by side against one
private `redis-server` in one run.
The JSON codec on its own (against orjson, msgspec and Python's json) and its effect on get/set: [JSON codec](benchmarks-json.md).
{quick}{picture}
## Reproduce

```sh
bash scripts/setup-env.sh                       # .venv with redis[hiredis], fresh C build
.venv/bin/pip install -r bench/requirements.txt # the peers (coredis, valkey-glide), matplotlib
{results.command}
```

(`bench/run.py --install` does the `pip install` itself.) `bench/run.py` starts its own
`redis-server` on a free loopback port (nothing else is touched; DEBUG is enabled for local
connections so 100k keys can be made with `DEBUG POPULATE`), checks one call of every
scenario per client, warms each client up, then runs {results.settings.rounds} rounds
interleaved across every client and scenario (order rotated each round, GC paused inside a
round), redis-benchmark included as one more client, and finally redis-benchmark's pipelined
ceiling. Raw results go to `bench/results/` as JSON; `--quick` is a short smoke run;
`--scenarios` and `--clients` pick a subset. The whole run took {results.duration_s:.0f} s.

Clients:

{clients}{skipped}

For fairness all clients move the same bytes: the peers store the compact JSON that
redis_cache writes (a reused `json.JSONEncoder`) and decode with `json.loads`; the `raw`
scenarios use `serializer="raw"` and plain bytes. redis-py's hiredis parser was
{"in use" if results.hiredis_available else "NOT available"}
(`redis.utils.HIREDIS_AVAILABLE = {results.hiredis_available}`).

## Machine

| | |
|---|---|
{machine}

## Targets

{targets(results)}
## Results

{markdown_tables(results)}
## Reading

{reading(results)}
## Where the time goes

{profile_section()}"""
