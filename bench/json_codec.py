"""The C JSON codec against orjson, msgspec and Python's json, and what it is worth end to end.

    .venv/bin/python bench/json_codec.py [--quick] [--write-docs] [--no-redis]

In one run:

1. **Codec.** ``redis_cache._core.json_dumps`` / ``json_loads`` (what the caches
   use for every value) against ``orjson``, ``msgspec.json`` (a reused Encoder
   and Decoder) and Python's ``json`` (a reused ``JSONEncoder``, compact, UTF-8
   bytes out; ``json.loads`` of the bytes), encoding and decoding a small
   record, a list of 1000 records and a ~1 MB nested document.  The two large
   payloads come twice: with "short decimals" (prices, ratings, coordinates
   rounded to 2-6 decimals, what caches mostly hold) and with "random doubles"
   (``random.random()``, 16-17 significant digits), since the codec converts
   short decimals exactly on fast paths of its own and hands the others to
   CPython's correctly rounded conversions.
2. **End to end.**  get/set of each payload through ``SyncRedisCache`` against
   redis-py (``redis.Redis``, hiredis parser) with orjson around it (set:
   ``orjson.dumps`` then SET; get: GET then ``orjson.loads``), against one
   private ``redis-server`` (``redis_cache.testing.RedisServer``), plus
   ``SyncRedisCache(serializer="raw")`` moving the same bytes undecoded: the
   floor without any codec.
2b. **The standard corpus.**  twitter.json, citm_catalog.json, canada.json and
   github.json (orjson's ``data/``, the files simdjson and others report on),
   read at run time from ``../shared/corpus/json/`` beside the checkout
   (xz-compressed; ``$REDIS_CACHE_JSON_CORPUS`` names another folder).  Decoders
   read each file's bytes as published (indented); encoders write the value
   ``json.loads`` makes of them.  Skipped, and said so, when the folder is missing.
3. **Where the time goes.**  C code is invisible to cProfile, so the case where
   the codec is furthest behind orjson is broken down with payloads of one kind
   each (list items, ints, short-decimal and random floats, short and long
   strings, dict keys, small dicts and lists): the per-element cost of each kind
   for both codecs, and a model that adds those costs up over the slow
   payload's own census of elements, to show which kind the gap comes from.

Method (as in bench/harness.py): every call is checked once before it is
timed (decoders must return the payload, encoders must write JSON that
``json.loads`` reads back as the payload); warm-up calibrates the calls per
round; rounds are interleaved across every case of a section, order rotated
each round; the garbage collector is paused inside a round (the payloads are
``gc.freeze()``-d first); the figure is the median over rounds of µs per call,
spread = (slowest - fastest round) / median.

Prints markdown to stdout (progress on stderr), saves the raw figures to
bench/results/json-codec-*.json and, with --write-docs, writes
docs/benchmarks-json.md (docs/benchmarks.md is regenerated whole by
bench/report.py, whose template links to that page; the link is added to the
current docs/benchmarks.md too if it is missing).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import lzma
import os
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Run as a script, Python puts bench/ on sys.path; the package needs its parent.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.machine import CpuSnapshot, describe_machine, other_cpu_use
from redis_cache._core import json_dumps, json_loads

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
DOCS_PAGE = ROOT / "docs" / "benchmarks-json.md"
BENCHMARKS_PAGE = ROOT / "docs" / "benchmarks.md"
HOST = "127.0.0.1"

#: The line bench/report.py's template puts in docs/benchmarks.md (kept identical
#: here so --write-docs can add it to a page generated before the template had it).
LINK_LINE = (
    "The JSON codec on its own (against orjson, msgspec and Python's json) and its effect "
    "on get/set: [JSON codec](benchmarks-json.md)."
)
#: The sentence of docs/benchmarks.md the link line follows.
LINK_ANCHOR = "private `redis-server` in one run."

OURS = "redis_cache"
ORJSON = "orjson"
MSGSPEC = "msgspec"
STDLIB = "json"
CODEC_ORDER = (OURS, ORJSON, MSGSPEC, STDLIB)

E2E_OURS = "SyncRedisCache"
E2E_PEER = "redis-py + orjson"
E2E_RAW = "SyncRedisCache raw"
E2E_ORDER = (E2E_OURS, E2E_PEER, E2E_RAW)

#: The standard JSON corpus: read at run time, never shipped (see the docstring).
CORPUS_ENV = "REDIS_CACHE_JSON_CORPUS"
CORPUS_DEFAULT = ROOT.parent / "shared" / "corpus" / "json"
CORPUS_FILES = (
    ("twitter", "631 KB, much non-ASCII text"),
    ("citm_catalog", "1.7 MB, many small dicts and ints"),
    ("canada", "2.2 MB, ~111k full-precision doubles in nested lists"),
    ("github", "56 KB"),
)

#: Targets: speed relative to orjson and to Python's json.
TARGET_VS_ORJSON = 1.0
TARGET_VS_JSON = 4.0

#: Cores used by other processes above which the run is flagged as noisy.
NOISY_OTHER_CORES = 0.2


@dataclass(frozen=True)
class Timing:
    """How long to measure one section: rounds, their length, and the warm-up."""

    rounds: int
    round_seconds: float
    warmup_seconds: float


@dataclass(frozen=True)
class Settings:
    codec: Timing
    e2e: Timing
    kinds: Timing
    #: Elements in each one-kind payload of the breakdown.
    kind_elements: int
    corpus: Timing


#: A full run: about 80 s on 2 cores.
FULL = Settings(
    codec=Timing(rounds=7, round_seconds=0.08, warmup_seconds=0.1),
    e2e=Timing(rounds=5, round_seconds=0.12, warmup_seconds=0.1),
    kinds=Timing(rounds=5, round_seconds=0.04, warmup_seconds=0.05),
    kind_elements=20_000,
    corpus=Timing(rounds=9, round_seconds=0.1, warmup_seconds=0.1),
)
#: A smoke run: everything works, rough figures, about 15 s.
QUICK = Settings(
    codec=Timing(rounds=3, round_seconds=0.02, warmup_seconds=0.02),
    e2e=Timing(rounds=3, round_seconds=0.03, warmup_seconds=0.02),
    kinds=Timing(rounds=3, round_seconds=0.01, warmup_seconds=0.01),
    kind_elements=5_000,
    corpus=Timing(rounds=3, round_seconds=0.02, warmup_seconds=0.02),
)
#: Fewest calls in a round, however slow the call.
MIN_CALLS = 3


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- payloads ------------------------------------------------------------------

WORDS = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliett kilo lima mike "
    "november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu "
    "red green blue black white steel oak linen cotton wool leather glass paper stone "
    "compact deluxe classic modern vintage outdoor indoor portable wireless organic "
    "café naïve Zürich façade crème smörgåsbord"
).split()
COLOURS = ("red", "green", "blue", "black", "white", "grey", "navy", "sand")
COUNTRIES = ("FR", "DE", "US", "GB", "JP", "BR", "IN", "ES", "IT", "NL")
DOCUMENT_BYTES = 1_000_000


class Floats:
    """The float values of a payload: short decimals or random doubles.

    Its own random stream, separate from the payload's structure, so both
    variants of a payload have the same shape and differ only in their floats.
    """

    def __init__(self, kind: str, seed: int) -> None:
        self.kind = kind
        self._rng = random.Random(seed)

    def __call__(self, decimals: int, low: float, high: float) -> float:
        if self.kind == "random":
            return self._rng.random()
        return round(self._rng.uniform(low, high), decimals)


def record(i: int, rng: random.Random, floats: Floats) -> dict[str, Any]:
    """A small, typical cache entry: 10 fields, one float (2 decimals when short)."""
    first = rng.choice(WORDS[:26]).capitalize()
    return {
        "id": 100_000 + i,
        "name": f"{first} {rng.choice(WORDS[26:46]).capitalize()}",
        "email": f"{first.lower()}.{i}@example.com",
        "age": rng.randint(18, 90),
        "active": rng.random() < 0.7,
        "score": floats(2, 0, 100),
        "tags": rng.sample(("admin", "dev", "ops", "beta", "staff", "vip"), 3),
        "country": rng.choice(COUNTRIES),
        "visits": rng.randint(0, 1_000_000),
        "created_at": f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T"
        f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z",
    }


def records(n: int, floats_kind: str) -> list[dict[str, Any]]:
    rng, floats = random.Random(1), Floats(floats_kind, 2)
    return [record(i, rng, floats) for i in range(n)]


def _words(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def product(i: int, rng: random.Random, f: Floats) -> dict[str, Any]:
    return {
        "sku": f"SKU-{i:07d}",
        "title": _words(rng, 2, 5).capitalize(),
        "description": _words(rng, 8, 24),
        "price": f(2, 1, 500),
        "currency": "EUR",
        "rating": f(2, 1, 5),
        "reviews": rng.randint(0, 5000),
        "weight_kg": f(3, 0.05, 30),
        "in_stock": rng.random() < 0.8,
        "stock": rng.randint(0, 10_000),
        "warehouse": {
            "lat": f(6, -60, 70),
            "lon": f(6, -180, 180),
            "code": f"W{rng.randint(1, 99)}",
        },
        "dimensions_cm": {"w": f(1, 1, 200), "h": f(1, 1, 200), "d": f(1, 1, 200)},
        "tags": [rng.choice(WORDS) for _ in range(rng.randint(0, 4))],
        "variants": [
            {
                "id": rng.randint(1, 10**9),
                "colour": rng.choice(COLOURS),
                "size": rng.choice(("S", "M", "L", "XL")),
                "price": f(2, 1, 500),
                "discount": f(4, 0, 0.5),
            }
            for _ in range(rng.randint(1, 3))
        ],
    }


def document(categories: int, floats_kind: str) -> dict[str, Any]:
    """A nested catalogue: categories of 25 products, each with a few nested objects."""
    rng, f = random.Random(3), Floats(floats_kind, 4)
    cats = []
    for c in range(categories):
        cats.append(
            {
                "id": c,
                "name": _words(rng, 1, 3).capitalize(),
                "slug": f"category-{c}",
                "avg_price": f(2, 10, 300),
                "products": [product(c * 1000 + p, rng, f) for p in range(25)],
            }
        )
    return {
        "version": 7,
        "generated_at": "2024-05-01T12:00:00Z",
        "source": "catalogue-service",
        "region": {"name": "Europe", "vat": f(3, 0.05, 0.25), "countries": list(COUNTRIES)},
        "categories": cats,
        "totals": {"categories": categories, "products": categories * 25},
    }


def document_categories(target_bytes: int) -> int:
    """Categories that make the short-decimals document about ``target_bytes`` long."""
    per_category = len(json_dumps(document(8, "short"))) / 8
    return max(1, round(target_bytes / per_category))


@dataclass
class Payload:
    name: str
    title: str
    value: Any
    #: The payload as redis_cache writes it: what every decoder reads.
    data: bytes = b""
    census: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data = json_dumps(self.value)
        self.census = census(self.value)


def make_payloads() -> list[Payload]:
    n = document_categories(DOCUMENT_BYTES)
    return [
        Payload("record", "small record (10 fields)", records(1, "short")[0]),
        Payload("records/short", "1000 records, short decimals", records(1000, "short")),
        Payload("records/random", "1000 records, random doubles", records(1000, "random")),
        Payload("document/short", "~1 MB document, short decimals", document(n, "short")),
        Payload("document/random", "~1 MB document, random doubles", document(n, "random")),
    ]


def is_short_decimal(v: float) -> bool:
    """Whether the encoder's fast path takes this float (csrc/floats.h): at most
    15 significant digits and 1e-4 <= |v| < 1e15, or zero."""
    if v == 0:
        return True
    if not 1e-4 <= abs(v) < 1e15:
        return False
    mantissa = repr(abs(v)).split("e")[0].replace(".", "").strip("0")
    return len(mantissa) <= 15


def census(value: Any) -> dict[str, int]:
    """What a payload is made of: containers, keys, items and values by kind."""
    c: Counter[str] = Counter()
    stack = [value]
    while stack:
        v = stack.pop()
        t = type(v)
        if t is dict:
            c["dicts"] += 1
            c["keys"] += len(v)
            c["key_bytes"] += sum(len(k.encode()) for k in v)
            stack.extend(v.values())
        elif t is list:
            c["lists"] += 1
            c["items"] += len(v)
            stack.extend(v)
        elif t is str:
            c["strs"] += 1
            c["str_bytes"] += len(v.encode())
            c["strs_non_ascii"] += not v.isascii()
        elif t is float:
            c["floats_short" if is_short_decimal(v) else "floats_long"] += 1
        elif t is int:
            c["ints"] += 1
        else:  # True, False, None
            c["constants"] += 1
    return dict(c)


# -- the codecs ----------------------------------------------------------------


@dataclass(frozen=True)
class Codec:
    name: str
    encode: Callable[[Any], bytes]
    decode: Callable[[bytes], Any]
    describe: str


def _version(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


def codecs() -> tuple[list[Codec], dict[str, str]]:
    """The codecs to compare; a peer whose package is missing is skipped, with why."""
    found = [
        Codec(
            OURS,
            json_dumps,
            json_loads,
            f"redis_cache {_version('redis-native-cache')} `_core.json_dumps` / `_core.json_loads` "
            "(csrc/json_encode.c, csrc/json_decode.c, what the caches run on every value)",
        )
    ]
    skipped: dict[str, str] = {}
    try:
        import orjson

        found.append(
            Codec(
                ORJSON, orjson.dumps, orjson.loads, f"orjson {orjson.__version__} `dumps` / `loads`"
            )
        )
    except ImportError as exc:
        skipped[ORJSON] = f"not installed ({exc}); pip install -r bench/requirements.txt"
    try:
        import msgspec

        encoder, decoder = msgspec.json.Encoder(), msgspec.json.Decoder()
        found.append(
            Codec(
                MSGSPEC,
                encoder.encode,
                decoder.decode,
                f"msgspec {msgspec.__version__} reused `msgspec.json.Encoder().encode` / "
                "`Decoder().decode` (untyped)",
            )
        )
    except ImportError as exc:
        skipped[MSGSPEC] = f"not installed ({exc}); pip install -r bench/requirements.txt"
    std_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
    std_encode = std_encoder.encode

    def json_encode(obj: Any) -> bytes:
        return std_encode(obj).encode()

    found.append(
        Codec(
            STDLIB,
            json_encode,
            json.loads,
            f"Python {sys.version.split()[0]} json (C accelerated): a reused "
            '`JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode(v).encode()` '
            "(bytes, as a cache stores) / `json.loads(bytes)`",
        )
    )
    return found, skipped


# -- timing --------------------------------------------------------------------


@dataclass
class Case:
    """One thing timed: a callable applied to one argument, over and over."""

    section: str
    payload: str
    op: str
    who: str
    fn: Callable[[Any], Any] = field(repr=False)
    arg: Any = field(repr=False)
    calls: int = 0
    round_us: list[float] = field(default_factory=list)

    @property
    def us(self) -> float:
        """Median over rounds of µs per call: the headline figure."""
        return statistics.median(self.round_us)

    @property
    def rate(self) -> float:
        return 1e6 / self.us

    @property
    def spread(self) -> float:
        return (max(self.round_us) - min(self.round_us)) / self.us

    def to_json(self) -> dict[str, Any]:
        return {
            "section": self.section,
            "payload": self.payload,
            "op": self.op,
            "who": self.who,
            "calls_per_round": self.calls,
            "round_us": self.round_us,
            "median_us": self.us,
            "ops_per_s": self.rate,
            "spread": self.spread,
        }


#: The clock of the codec, corpus and one-kind rounds: wall time, or with
#: ``--clock cpu`` this thread's CPU time (for a shared machine: time the
#: codecs lose to other processes' turns on the cores is not counted; caches
#: they share still are). End-to-end rounds always take wall time, as they
#: wait on the server.
CPU_CLOCK = False


def run_calls(case: Case, calls: int) -> int:
    """Makes ``calls`` calls with the collector paused; returns the elapsed ns."""
    fn, args = case.fn, itertools.repeat(case.arg, calls)
    clock = time.thread_time_ns if CPU_CLOCK and case.section != "e2e" else time.perf_counter_ns
    gc.collect()
    gc.disable()
    try:
        start = clock()
        for a in args:
            fn(a)
        return clock() - start
    finally:
        gc.enable()


def calibrate(case: Case, timing: Timing) -> None:
    """Warms up for ``warmup_seconds`` and sets the calls of a round."""
    calls, spent = 1, 0
    warmup_ns, round_ns = timing.warmup_seconds * 1e9, timing.round_seconds * 1e9
    while True:
        elapsed = run_calls(case, calls)
        spent += elapsed
        per_call = max(elapsed, 1) / calls
        if spent >= warmup_ns:
            break
        calls = max(2 * calls, int(min(warmup_ns - spent, round_ns) / per_call))
    case.calls = max(MIN_CALLS, int(round_ns / per_call))


def measure(cases: Sequence[Case], timing: Timing, label: str) -> None:
    """Calibrates every case, then times interleaved rounds, order rotated each round."""
    log(f"{label}: {len(cases)} cases, warm-up")
    for case in cases:
        calibrate(case, timing)
    for r in range(timing.rounds):
        log(f"{label}: round {r + 1}/{timing.rounds}")
        shift = r % len(cases)
        for case in [*cases[shift:], *cases[:shift]]:
            case.round_us.append(run_calls(case, case.calls) / case.calls / 1e3)


def call_overhead_us() -> float:
    """The loop and call cost included in every figure (a no-op C call), in µs."""
    case = Case("overhead", "-", "-", "-", id, None)
    timings = [run_calls(case, 200_000) / 200_000 / 1e3 for _ in range(5)]
    return min(timings)


# -- section 1: the codecs -----------------------------------------------------


def check_codec(codec: Codec, payload: Payload) -> None:
    """A codec must decode the payload's bytes to the payload, and write JSON that
    ``json.loads`` reads back as the payload."""
    if codec.decode(payload.data) != payload.value:
        raise AssertionError(f"{codec.name} decodes {payload.name} to something else")
    if json.loads(codec.encode(payload.value)) != payload.value:
        raise AssertionError(f"{codec.name} encodes {payload.name} to something else")


def codec_cases(payloads: Sequence[Payload], found: Sequence[Codec]) -> list[Case]:
    cases = []
    for payload in payloads:
        for codec in found:
            check_codec(codec, payload)
            name = payload.name
            cases.append(Case("codec", name, "encode", codec.name, codec.encode, payload.value))
            cases.append(Case("codec", name, "decode", codec.name, codec.decode, payload.data))
    return cases


# -- section 1b: the standard corpus -------------------------------------------


@dataclass
class CorpusFile:
    name: str
    title: str
    #: The file's bytes as published (indented): what every decoder reads.
    data: bytes = field(repr=False)
    #: ``json.loads(data)``: what every encoder writes.
    value: Any = field(repr=False)


def corpus_dir() -> Path:
    return Path(os.environ.get(CORPUS_ENV) or CORPUS_DEFAULT)


def load_corpus() -> tuple[list[CorpusFile], str | None]:
    """The corpus files found, and why any were not (None when all were)."""
    folder = corpus_dir()
    files, missing = [], []
    for name, title in CORPUS_FILES:
        path = folder / f"{name}.json.xz"
        try:
            with lzma.open(path) as fh:
                data = fh.read()
        except OSError:
            missing.append(path.name)
            continue
        files.append(CorpusFile(f"{name}.json", title, data, json.loads(data)))
    if not missing:
        return files, None
    return files, (
        f"not found in {folder}: {', '.join(missing)} (set ${CORPUS_ENV} to the folder "
        "holding the .json.xz files)"
    )


def corpus_cases(files: Sequence[CorpusFile], found: Sequence[Codec]) -> list[Case]:
    cases = []
    for f in files:
        for codec in found:
            if codec.decode(f.data) != f.value:
                raise AssertionError(f"{codec.name} decodes {f.name} to something else")
            if json.loads(codec.encode(f.value)) != f.value:
                raise AssertionError(f"{codec.name} encodes {f.name} to something else")
            cases.append(Case("corpus", f.name, "encode", codec.name, codec.encode, f.value))
            cases.append(Case("corpus", f.name, "decode", codec.name, codec.decode, f.data))
    return cases


# -- section 2: end to end -----------------------------------------------------


def e2e_cases(
    payloads: Sequence[Payload], port: int
) -> tuple[list[Case], list[Any], dict[str, str]]:
    """get/set of every payload through SyncRedisCache, redis-py + orjson and the raw floor."""
    import orjson
    import redis
    from redis.utils import HIREDIS_AVAILABLE

    from redis_cache import SyncRedisCache

    cache = SyncRedisCache(host=HOST, port=port)
    raw = SyncRedisCache(host=HOST, port=port, serializer="raw")
    client = redis.Redis(host=HOST, port=port)
    connection = client.connection_pool.get_connection()
    parser = type(connection._parser).__name__
    client.connection_pool.release(connection)
    described = {
        E2E_OURS: f"redis_cache {_version('redis-native-cache')} `SyncRedisCache` (C core; JSON in C): "
        "`cache.set(key, value)` / `cache.get(key)`",
        E2E_PEER: f"redis-py {_version('redis')} `redis.Redis` ({parser}, hiredis-py "
        f"{_version('hiredis')}, HIREDIS_AVAILABLE={HIREDIS_AVAILABLE}) + orjson: "
        "`r.set(key, orjson.dumps(value))` / `orjson.loads(r.get(key))`",
        E2E_RAW: '`SyncRedisCache(serializer="raw")` moving the payload\'s JSON bytes '
        "undecoded: the same round trip with no codec at all",
    }
    loads, dumps = orjson.loads, orjson.dumps
    cases = []
    for p in payloads:
        k_ours, k_peer, k_raw = (f"bench:json:{who}:{p.name}" for who in ("rc", "py", "raw"))

        def ours_set(v: Any, _c: Any = cache, _k: str = k_ours) -> object:
            return _c.set(_k, v)

        def ours_get(k: str, _c: Any = cache) -> object:
            return _c.get(k)

        def peer_set(v: Any, _r: Any = client, _k: str = k_peer) -> object:
            return _r.set(_k, dumps(v))

        def peer_get(k: str, _r: Any = client) -> object:
            return loads(_r.get(k))

        def raw_set(v: bytes, _c: Any = raw, _k: str = k_raw) -> object:
            return _c.set(_k, v)

        def raw_get(k: str, _c: Any = raw) -> object:
            return _c.get(k)

        # Checked once: each client reads back what it wrote, and what
        # SyncRedisCache stores is plain JSON any other client reads.
        for set_fn, get_fn, value, key in (
            (ours_set, ours_get, p.value, k_ours),
            (peer_set, peer_get, p.value, k_peer),
            (raw_set, raw_get, p.data, k_raw),
        ):
            set_fn(value)
            if get_fn(key) != value:
                raise AssertionError(f"get after set of {p.name} ({key}) returned something else")
        if loads(client.get(k_ours)) != p.value:  # type: ignore[arg-type]
            raise AssertionError(f"SyncRedisCache did not store {p.name} as plain JSON")
        cases += [
            Case("e2e", p.name, "set", E2E_OURS, ours_set, p.value),
            Case("e2e", p.name, "set", E2E_PEER, peer_set, p.value),
            Case("e2e", p.name, "set", E2E_RAW, raw_set, p.data),
            Case("e2e", p.name, "get", E2E_OURS, ours_get, k_ours),
            Case("e2e", p.name, "get", E2E_PEER, peer_get, k_peer),
            Case("e2e", p.name, "get", E2E_RAW, raw_get, k_raw),
        ]
    return cases, [cache, raw, client], described


# -- section 3: one kind at a time ---------------------------------------------


@dataclass(frozen=True)
class Kind:
    """A payload made of one kind of element, and what its per-element figure means."""

    name: str
    title: str
    make: Callable[[random.Random, int], list[Any]]


def _short_str(rng: random.Random) -> str:
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(6, 14)))


#: Mean length of the short and the long strings (the per-byte cost is their difference).
SHORT_STR_LEN, LONG_STR_LEN = 10, 200

KINDS = (
    Kind("null", "list item (`null`)", lambda rng, n: [None] * n),
    Kind("int", "int (0 to 10^6)", lambda rng, n: [rng.randint(0, 1_000_000) for _ in range(n)]),
    Kind(
        "float_short",
        "float, short decimal (2 decimals, 0 to 1000)",
        lambda rng, n: [round(rng.uniform(0, 1000), 2) for _ in range(n)],
    ),
    Kind(
        "float_long",
        "float, random double (`random.random()`)",
        lambda rng, n: [rng.random() for _ in range(n)],
    ),
    Kind(
        "str",
        f"str, ASCII, ~{SHORT_STR_LEN} chars",
        lambda rng, n: [_short_str(rng) for _ in range(n)],
    ),
    Kind(
        "str_long",
        f"str, ASCII, {LONG_STR_LEN} chars",
        lambda rng, n: [
            "".join(rng.choice("abcdefghij klmnopqrstuvwxyz") for _ in range(LONG_STR_LEN))
            for _ in range(n)
        ],
    ),
    Kind(
        "str_non_ascii",
        "str, non-ASCII, ~10 chars (`é`, `ü`, `東`)",
        lambda rng, n: [_short_str(rng)[:7] + rng.choice(("é", "ü", "東")) + "ab" for _ in range(n)],
    ),
    Kind(
        "dict1",
        "dict of 1 key (`{\"k0\": null}`)",
        lambda rng, n: [{"k0": None} for _ in range(n)],
    ),
    Kind(
        "dict8",
        "dict of 8 keys (`\"k0\"`..`\"k7\"`, null values)",
        lambda rng, n: [dict.fromkeys(f"k{i}" for i in range(8)) for _ in range(n)],
    ),
    Kind(
        "list2",
        "list of 2 items (`[null, null]`)",
        lambda rng, n: [[None, None] for _ in range(n)],
    ),
)


def kind_cases(
    found: Sequence[Codec], elements: int
) -> tuple[list[Case], dict[str, dict[str, Any]]]:
    """redis_cache and orjson (and msgspec, for reference) on every one-kind payload."""
    wanted = [c for c in found if c.name in (OURS, ORJSON)]
    cases, info = [], {}
    for kind in KINDS:
        value = kind.make(random.Random(5), elements)
        data = json_dumps(value)
        info[kind.name] = {"title": kind.title, "elements": elements, "bytes": len(data)}
        payload = Payload(kind.name, kind.title, value)
        for codec in wanted:
            check_codec(codec, payload)
            cases.append(Case("kinds", kind.name, "encode", codec.name, codec.encode, value))
            cases.append(Case("kinds", kind.name, "decode", codec.name, codec.decode, data))
        if kind.name.startswith("float"):
            # CPython's own conversions, which the codec falls back to for floats
            # its fast paths do not take: repr() (PyOS_double_to_string) and
            # float(str) (PyOS_string_to_double), one call per element via map().
            texts = list(map(repr, value))
            cases.append(Case("kinds", kind.name, "encode", CPYTHON, _reprs, value))
            cases.append(Case("kinds", kind.name, "decode", CPYTHON, _floats, texts))
        if kind.name == "null":
            cases.append(Case("kinds", kind.name, "baseline", CPYTHON, _ids, value))
    return cases, info


#: The reference rows of the breakdown: CPython's float conversions.
CPYTHON = "CPython"


def _reprs(values: list[float]) -> list[str]:
    return list(map(float.__repr__, values))


def _floats(texts: list[str]) -> list[float]:
    return list(map(float, texts))


def _ids(values: list[Any]) -> list[int]:
    """The map()/list loop alone, subtracted from the two above."""
    return list(map(id, values))


def unit_costs(per_element_ns: dict[str, float]) -> dict[str, float]:
    """Per-unit costs (ns) from the one-kind figures, each net of what it is built on.

    item: one list slot holding null; int/float/str: one value beyond a null
    slot; str_byte: one more byte of an ASCII string; key: one dict entry
    (key and null value); dict/list: one container beyond its entries.
    """
    e = per_element_ns
    item = e["null"]
    key = (e["dict8"] - e["dict1"]) / 7
    return {
        "item": item,
        "int": e["int"] - item,
        "float_short": e["float_short"] - item,
        "float_long": e["float_long"] - item,
        "str": e["str"] - item,
        "str_byte": (e["str_long"] - e["str"]) / (LONG_STR_LEN - SHORT_STR_LEN),
        "key": key,
        "dict": e["dict1"] - item - key,
        "list": e["list2"] - 3 * item,
    }


#: How the model groups the units for the reader.
MODEL_GROUPS = (
    ("floats, short decimals", lambda c, u: c.get("floats_short", 0) * u["float_short"]),
    ("floats, random doubles", lambda c, u: c.get("floats_long", 0) * u["float_long"]),
    ("ints", lambda c, u: c.get("ints", 0) * u["int"]),
    (
        "strings (values)",
        lambda c, u: c.get("strs", 0) * u["str"]
        + (c.get("str_bytes", 0) - c.get("strs", 0) * SHORT_STR_LEN) * u["str_byte"],
    ),
    (
        "dicts and their keys",
        lambda c, u: c.get("dicts", 0) * u["dict"] + c.get("keys", 0) * u["key"],
    ),
    (
        "lists and their slots",
        lambda c, u: c.get("lists", 0) * u["list"] + c.get("items", 0) * u["item"],
    ),
)


def model(census_: dict[str, int], units: dict[str, float]) -> list[tuple[str, float]]:
    """Predicted µs per call, by group, for a payload of this census."""
    return [(name, max(0.0, f(census_, units)) / 1e3) for name, f in MODEL_GROUPS]


# -- results -------------------------------------------------------------------


@dataclass
class Results:
    machine: dict[str, str]
    settings: Settings
    quick: bool
    command: str
    codecs: dict[str, str]
    skipped: dict[str, str]
    payloads: list[Payload]
    cases: list[Case] = field(default_factory=list)
    corpus: list[CorpusFile] = field(default_factory=list)
    #: Why the corpus (or part of it) was not measured; None when it all was.
    corpus_skipped: str | None = None
    e2e_clients: dict[str, str] = field(default_factory=dict)
    kinds: dict[str, dict[str, Any]] = field(default_factory=dict)
    overhead_us: float = 0.0
    other_cores: float | None = None
    duration_s: float = 0.0

    def find(self, section: str, payload: str, op: str, who: str) -> Case | None:
        for case in self.cases:
            if (case.section, case.payload, case.op, case.who) == (section, payload, op, who):
                return case
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "settings": asdict(self.settings),
            "quick": self.quick,
            "command": self.command,
            "codecs": self.codecs,
            "skipped": self.skipped,
            "e2e_clients": self.e2e_clients,
            "payloads": [
                {"name": p.name, "title": p.title, "bytes": len(p.data), "census": p.census}
                for p in self.payloads
            ],
            "corpus": [
                {"name": f.name, "title": f.title, "bytes": len(f.data)} for f in self.corpus
            ],
            "corpus_dir": str(corpus_dir()),
            "corpus_skipped": self.corpus_skipped,
            "kinds": self.kinds,
            "call_overhead_us": self.overhead_us,
            "clock": "cpu" if CPU_CLOCK else "wall",
            "other_processes_cores": self.other_cores,
            "duration_s": self.duration_s,
            "cases": [c.to_json() for c in self.cases],
        }


# -- markdown ------------------------------------------------------------------


def _us(v: float) -> str:
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _rate(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:,.1f}"


def _x(r: float) -> str:
    return f"{r:.2f}x"


def _size(n: int) -> str:
    return f"{n:,} B" if n < 10_000 else f"{n / 1000:,.0f} kB"


def _verdict(ratio: float, target: float, spread: float) -> str:
    if ratio >= target:
        return "met"
    if ratio >= target * (1 - spread):
        return "within noise"
    return "**NOT met**"


def payload_table(results: Results) -> str:
    lines = [
        "| payload | JSON bytes | dicts | keys | lists | strs | ints | floats: short / other |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in results.payloads:
        c = p.census
        lines.append(
            f"| {p.name}: {p.title} | {len(p.data):,} | {c.get('dicts', 0):,} | "
            f"{c.get('keys', 0):,} | {c.get('lists', 0):,} | {c.get('strs', 0):,} "
            f"({c.get('strs_non_ascii', 0):,} non-ASCII) | {c.get('ints', 0):,} | "
            f"{c.get('floats_short', 0):,} / {c.get('floats_long', 0):,} |"
        )
    return "\n".join(lines)


def codec_table(results: Results, op: str) -> str:
    present = [n for n in CODEC_ORDER if n in results.codecs]
    peers = [n for n in present if n != OURS]
    header = (
        ["payload"]
        + [f"{n} µs" for n in present]
        + [f"{OURS} ops/s"]
        + [f"speed vs {n}" for n in peers]
        + ["spread"]
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for p in results.payloads:
        found = [results.find("codec", p.name, op, n) for n in present]
        row = [c for c in found if c is not None]
        if len(row) != len(found):
            continue
        by = dict(zip(present, row, strict=True))
        ours = by[OURS]
        cells = [p.name]
        cells += [f"**{_us(c.us)}**" if n == OURS else _us(c.us) for n, c in by.items()]
        cells.append(_rate(ours.rate))
        cells += [_x(by[n].us / ours.us) for n in peers]
        cells.append(f"{max(c.spread for c in row):.0%}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def corpus_table(results: Results) -> str:
    """Both directions for every corpus file: µs per call, each peer's time ÷ ours."""
    present = [n for n in CODEC_ORDER if n in results.codecs]
    peers = [n for n in present if n != OURS]
    header = (
        ["file", "op"]
        + [f"{n} µs" for n in present]
        + [f"speed vs {n}" for n in peers]
        + ["spread", f"vs orjson (≥ {TARGET_VS_ORJSON:g}x wanted)"]
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for op in ("encode", "decode"):
        for f in results.corpus:
            found = [results.find("corpus", f.name, op, n) for n in present]
            row = [c for c in found if c is not None]
            if len(row) != len(found):
                continue
            by = dict(zip(present, row, strict=True))
            ours = by[OURS]
            spread = max(c.spread for c in row)
            cells = [f"{f.name} ({_size(len(f.data))})", op]
            cells += [f"**{_us(c.us)}**" if n == OURS else _us(c.us) for n, c in by.items()]
            cells += [_x(by[n].us / ours.us) for n in peers]
            cells.append(f"{spread:.0%}")
            if ORJSON in by:
                cells.append(_verdict(by[ORJSON].us / ours.us, TARGET_VS_ORJSON, spread))
            else:
                cells.append("not measured")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def corpus_section(results: Results) -> str:
    skipped = (
        f"\n\n**Corpus NOT MEASURED{' in full' if results.corpus else ''}**: "
        f"{results.corpus_skipped}"
        if results.corpus_skipped
        else ""
    )
    if not results.corpus:
        return skipped.strip()
    s = results.settings.corpus
    return (
        "twitter.json, citm_catalog.json, canada.json and github.json: the files orjson's "
        "`data/` holds and the field reports on, read (xz-compressed) from "
        f"`{CORPUS_ENV}` or `../shared/corpus/json/` beside the checkout at run time. "
        "Decoders read each file's bytes as published (indented); encoders write the value "
        "`json.loads` makes of it (compact output). "
        f"Median of {s.rounds} interleaved rounds of ~{s.round_seconds:g} s per case, µs per "
        "call; speed vs X = X's time ÷ redis_cache's (above 1: redis_cache is faster)."
        + skipped
        + "\n\n"
        + corpus_table(results)
    )


def targets(results: Results) -> tuple[str, list[tuple[str, str, float]]]:
    """The verdict table, and every (payload, op, ratio) where orjson is faster."""
    lines = [
        f"| payload | op | speed vs orjson (≥ {TARGET_VS_ORJSON:g}x wanted) | "
        f"speed vs json (≥ {TARGET_VS_JSON:g}x wanted) |",
        "|---|---|---|---|",
    ]
    behind: list[tuple[str, str, float]] = []
    met = total = 0
    for op in ("encode", "decode"):
        for p in results.payloads:
            ours = results.find("codec", p.name, op, OURS)
            if ours is None:
                continue
            cells = [p.name, op]
            for peer, target in ((ORJSON, TARGET_VS_ORJSON), (STDLIB, TARGET_VS_JSON)):
                other = results.find("codec", p.name, op, peer)
                if other is None:
                    cells.append("not measured")
                    continue
                ratio = other.us / ours.us
                verdict = _verdict(ratio, target, max(ours.spread, other.spread))
                total += 1
                met += verdict == "met"
                cells.append(f"{_x(ratio)}: {verdict}")
                if peer == ORJSON and ratio < 1.0:
                    behind.append((p.name, op, ratio))
            lines.append("| " + " | ".join(cells) + " |")
    summary = f"Met in {met} of {total} comparisons."
    return summary + "\n\n" + "\n".join(lines), behind


def float_cost_table(results: Results) -> str:
    """What random doubles cost over short decimals, per float, for each codec."""
    present = [n for n in CODEC_ORDER if n in results.codecs]
    lines = [
        "| payload | op | "
        + " | ".join(f"{n}: random ÷ short time, ns more per float" for n in present)
        + " |",
        "|---|---|" + "---|" * len(present),
    ]
    for base in ("records", "document"):
        short = next((p for p in results.payloads if p.name == f"{base}/short"), None)
        rand = next((p for p in results.payloads if p.name == f"{base}/random"), None)
        if short is None or rand is None:
            continue
        floats = rand.census.get("floats_short", 0) + rand.census.get("floats_long", 0)
        for op in ("encode", "decode"):
            cells = [f"{base} ({floats:,} floats)", op]
            for n in present:
                a = results.find("codec", short.name, op, n)
                b = results.find("codec", rand.name, op, n)
                if a is None or b is None:
                    cells.append("-")
                    continue
                cells.append(f"{_x(b.us / a.us)}, {(b.us - a.us) * 1e3 / floats:+.0f} ns")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def e2e_table(results: Results) -> str:
    lines = [
        f"| payload | op | {E2E_OURS} ops/s | {E2E_PEER} ops/s | {E2E_OURS} ÷ {E2E_PEER} | "
        f"µs per call: ours / peer | {E2E_RAW} ops/s (no codec) | spread |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for op in ("set", "get"):
        for p in results.payloads:
            row = [results.find("e2e", p.name, op, who) for who in E2E_ORDER]
            ours, peer, raw = row
            if ours is None or peer is None:
                continue
            lines.append(
                f"| {p.name} | {op} | {_rate(ours.rate)} | {_rate(peer.rate)} | "
                f"**{_x(ours.rate / peer.rate)}** | {_us(ours.us)} / {_us(peer.us)} | "
                f"{_rate(raw.rate) if raw else '-'} | "
                f"{max(c.spread for c in row if c):.0%} |"
            )
    return "\n".join(lines)


def per_element_ns(results: Results, op: str, who: str) -> dict[str, float]:
    out = {}
    for name, info in results.kinds.items():
        case = results.find("kinds", name, op, who)
        if case is not None:
            out[name] = case.us * 1e3 / info["elements"]
    return out


def kinds_table(results: Results) -> str:
    lines = [
        "| element (list of 1 kind) | encode ns/element: redis_cache / orjson | ratio | "
        "decode ns/element: redis_cache / orjson | ratio |",
        "|---|---|---|---|---|",
    ]
    enc = {w: per_element_ns(results, "encode", w) for w in (OURS, ORJSON)}
    dec = {w: per_element_ns(results, "decode", w) for w in (OURS, ORJSON)}
    for name, info in results.kinds.items():
        if name not in enc[OURS] or name not in enc[ORJSON]:
            continue
        cells = [f"{info['title']} ({info['elements']:,}, {_size(info['bytes'])})"]
        for table in (enc, dec):
            a, b = table[OURS][name], table[ORJSON][name]
            cells += [f"{a:.1f} / {b:.1f}", _x(b / a)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def breakdown(results: Results, payload: Payload, op: str) -> tuple[str, str]:
    """The model's split of one payload's time, both codecs, and which group the gap is in."""
    units = {w: unit_costs(per_element_ns(results, op, w)) for w in (OURS, ORJSON)}
    split = {w: model(payload.census, units[w]) for w in (OURS, ORJSON)}
    measured = {w: results.find("codec", payload.name, op, w) for w in (OURS, ORJSON)}
    lines = [
        f"| {op} of {payload.name}: part | redis_cache µs | orjson µs | gap µs "
        "| share of the modelled gap |",
        "|---|---|---|---|---|",
    ]
    gap_total = sum(a for _, a in split[OURS]) - sum(b for _, b in split[ORJSON])
    gaps = []
    for (name, a), (_, b) in zip(split[OURS], split[ORJSON], strict=True):
        gaps.append((a - b, name))
        share = f"{(a - b) / gap_total:.0%}" if gap_total > 0 else "-"
        lines.append(f"| {name} | {_us(a)} | {_us(b)} | {a - b:+.1f} | {share} |")
    model_ours, model_peer = (sum(v for _, v in split[w]) for w in (OURS, ORJSON))
    lines.append(
        f"| **modelled total** | {_us(model_ours)} | {_us(model_peer)} "
        f"| {model_ours - model_peer:+.1f} | |"
    )
    m_ours, m_peer = measured[OURS], measured[ORJSON]
    if m_ours and m_peer:
        lines.append(
            f"| **measured** | {_us(m_ours.us)} | {_us(m_peer.us)} "
            f"| {m_ours.us - m_peer.us:+.1f} | |"
        )
    gaps.sort(reverse=True)
    top = [f"{name} ({gap:+.0f} µs)" for gap, name in gaps if gap > 0][:3]
    return "\n".join(lines), ", ".join(top)


def profile_hint(results: Results) -> str:
    if not results.kinds or ORJSON not in results.codecs:
        return "Not measured: orjson is missing, and the breakdown compares with it.\n"
    cases = [
        (other.us / ours.us, p, op)
        for p in results.payloads
        for op in ("encode", "decode")
        if (ours := results.find("codec", p.name, op, OURS))
        and (other := results.find("codec", p.name, op, ORJSON))
    ]
    ratio, worst, worst_op = min(cases, key=lambda t: t[0])
    enc_units = unit_costs(per_element_ns(results, "encode", OURS))
    enc_peer = unit_costs(per_element_ns(results, "encode", ORJSON))
    dec_units = unit_costs(per_element_ns(results, "decode", OURS))
    dec_peer = unit_costs(per_element_ns(results, "decode", ORJSON))
    out = [
        (
            f"The slowest case next to orjson is **{worst_op} of {worst.name}** "
            f"({_x(ratio)} orjson's speed"
            + (": the codec loses here)." if ratio < 1 else ": the codec does not lose anywhere).")
        ),
        (
            "cProfile cannot see inside C, so the same two codecs were timed on payloads of "
            f"one kind of element each ({results.kinds['null']['elements']:,} elements in a "
            "list; the figure includes the list slot, which the `null` row is):"
        ),
        kinds_table(results),
        (
            "Net per-unit costs derived from those rows, in ns (value beyond a `null` slot; "
            "`key` is one dict entry with a null value; `dict`/`list` the container beyond its "
            "entries; `str_byte` one more ASCII byte):"
        ),
        _units_table({"encode": (enc_units, enc_peer), "decode": (dec_units, dec_peer)}),
    ]
    conversions = cpython_conversions(results)
    if conversions:
        out.append(conversions)
    table, top = breakdown(results, worst, worst_op)
    out += [
        (
            f"Adding those costs up over {worst.name}'s own census (table of payloads above) "
            "models where its time goes; the modelled total next to the measured one shows how "
            "far to trust the split (the model ignores key length, caches and memory effects):"
        ),
        table,
        f"**Hint:** the gap is mostly in {top or 'nothing the model can pin down'}.",
    ]
    other_op = "decode" if worst_op == "encode" else "encode"
    other_table, other_top = breakdown(results, worst, other_op)
    out += [f"The same split for {other_op} of {worst.name}, for comparison:", other_table]
    if other_top:
        out.append(f"There the gap is mostly in {other_top}.")
    # Random doubles are the exception; the gap on what caches mostly hold
    # (short decimals) has other causes, so it gets its own split.
    short = [c for c in cases if c[1].name.endswith("/short") and c[1] is not worst]
    if short:
        s_ratio, s_payload, s_op = min(short, key=lambda t: t[0])
        if s_ratio < 1:
            s_table, s_top = breakdown(results, s_payload, s_op)
            out += [
                f"Without random doubles, the slowest case is {s_op} of {s_payload.name} "
                f"({_x(s_ratio)} orjson's speed); its split:",
                s_table,
                f"There the gap is mostly in {s_top or 'nothing the model can pin down'}.",
            ]
    return "\n\n".join(out) + "\n"


def cpython_conversions(results: Results) -> str | None:
    """CPython's float conversions per element next to the codec's fallback cost."""
    base = results.find("kinds", "null", "baseline", CPYTHON)
    if base is None:
        return None
    loop_ns = base.us * 1e3 / results.kinds["null"]["elements"]
    units = {op: unit_costs(per_element_ns(results, op, OURS)) for op in ("encode", "decode")}
    peer = {op: unit_costs(per_element_ns(results, op, ORJSON)) for op in ("encode", "decode")}
    lines = [
        "| float kind | op | CPython's conversion, ns (net of the map loop) | redis_cache net ns "
        "| orjson net ns |",
        "|---|---|---|---|---|",
    ]
    for kind, title in (("float_short", "short decimal"), ("float_long", "random double")):
        for op, what in (("encode", "`float.__repr__`"), ("decode", "`float(str)`")):
            case = results.find("kinds", kind, op, CPYTHON)
            if case is None:
                continue
            ns = case.us * 1e3 / results.kinds[kind]["elements"] - loop_ns
            lines.append(
                f"| {title} | {op} | {what}: {ns:.0f} | {units[op][kind]:.0f} "
                f"| {peer[op][kind]:.0f} |"
            )
    return (
        "For the floats the fast paths do not take, the codec calls CPython's own correctly "
        "rounded conversions (`PyOS_double_to_string(v, 'r', ...)` to encode, "
        "`PyOS_string_to_double` to decode; see csrc/json_encode.c, csrc/json_decode.c). Timed on their own through "
        f"`map()` (the loop, {loop_ns:.0f} ns per element with `id`, subtracted; the Python "
        "versions also make a str or read one), they cost about what the codec spends per "
        "random double, so the fallback's cost is those conversions, which orjson replaces "
        "with its own shortest-digits formatter and parser:\n\n" + "\n".join(lines)
    )


def _units_table(units: dict[str, tuple[dict[str, float], dict[str, float]]]) -> str:
    names = list(next(iter(units.values()))[0])
    lines = ["| op | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for op, (ours, peer) in units.items():
        lines.append(
            f"| {op}: redis_cache / orjson | "
            + " | ".join(f"{ours[n]:.1f} / {peer[n]:.1f}" for n in names)
            + " |"
        )
    return "\n".join(lines)


def reading(results: Results, behind: list[tuple[str, str, float]]) -> str:
    parts = []
    if behind:
        parts.append(
            "**Against orjson** the codec is behind in "
            + ", ".join(f"{op} of {name} ({_x(r)})" for name, op, r in behind)
            + "."
        )
    else:
        parts.append("**Against orjson** the codec is at least as fast in every case measured.")
    std = []
    for op in ("encode", "decode"):
        ratios = [
            other.us / ours.us
            for p in results.payloads
            if (ours := results.find("codec", p.name, op, OURS))
            and (other := results.find("codec", p.name, op, STDLIB))
        ]
        if ratios:
            std.append(f"{op} {min(ratios):.1f}x to {max(ratios):.1f}x")
    if std:
        parts.append("**Against Python's json:** " + ", ".join(std) + ".")
    e2e = []
    shares = []
    for op in ("set", "get"):
        pairs = [
            (ours.rate / peer.rate, p.name)
            for p in results.payloads
            if (ours := results.find("e2e", p.name, op, E2E_OURS))
            and (peer := results.find("e2e", p.name, op, E2E_PEER))
        ]
        if pairs:
            lo, hi = min(pairs), max(pairs)
            e2e.append(f"{op} {_x(lo[0])} ({lo[1]}) to {_x(hi[0])} ({hi[1]})")
        for p in results.payloads:
            ours, raw = (results.find("e2e", p.name, op, w) for w in (E2E_OURS, E2E_RAW))
            if ours and raw and p.name != "record":
                shares.append(f"{op} {p.name} {max(0.0, 1 - raw.us / ours.us):.0%}")
    if e2e:
        parts.append(
            "**End to end** SyncRedisCache against redis-py + orjson: "
            + "; ".join(e2e)
            + ". On the small record the round trip is the call, and the C client's shorter "
            "path wins; on the large payloads the codec is most of the call (share of a "
            "SyncRedisCache call not spent by the same call with raw bytes: "
            + ", ".join(shares)
            + "), so there the codec's gap to orjson decides the ratio."
        )
    parts.append(
        "**What this does not show.** One process, one thread, the same value over and over "
        "(caches warm, branch predictors trained); the collector paused; the server on the "
        f"same {results.machine.get('cores', '?')}-core machine over loopback. Every figure "
        f"includes about {results.overhead_us * 1e3:.0f} ns of loop and call overhead (a no-op "
        "C call), which matters only for the small record."
    )
    return "\n\n".join(parts) + "\n"


def markdown(results: Results) -> str:
    """The figures: payloads, codec tables, targets, floats, end to end, profile hint."""
    s = results.settings
    target_text, behind = targets(results)
    skipped = "".join(f"\n- **{n}: NOT MEASURED**: {why}" for n, why in results.skipped.items())
    out = [
        "Codecs:\n\n" + "\n".join(f"- **{n}**: {d}" for n, d in results.codecs.items()) + skipped,
        "Payloads (bytes as redis_cache writes them; every decoder reads those bytes; floats "
        "counted as the encoder's fast path sees them: at most 15 significant digits):",
        payload_table(results),
        f"Median of {s.codec.rounds} rounds of ~{s.codec.round_seconds:g} s per case, µs per "
        "call; speed vs X = X's time ÷ redis_cache's (above 1: redis_cache is faster); "
        "spread = widest (slowest - fastest round) / median in the row.",
        "### Encode",
        codec_table(results, "encode"),
        "### Decode",
        codec_table(results, "decode"),
        "### Targets",
        target_text,
        "### The standard corpus",
        corpus_section(results),
        "### Short decimals against random doubles",
        "How much longer each codec takes on the random-doubles twin of a payload (same "
        "structure, only the floats differ), and that difference per float. Random doubles "
        "are also longer text (17 digits instead of 4-9), which every codec pays for.",
        float_cost_table(results),
    ]
    if results.e2e_clients:
        out += [
            "### End to end: get/set through a private redis-server",
            "\n".join(f"- **{n}**: {d}" for n, d in results.e2e_clients.items()),
            f"Median of {s.e2e.rounds} rounds of ~{s.e2e.round_seconds:g} s; one caller, one "
            "key per client and payload (set overwrites it, get reads it), no TTL.",
            e2e_table(results),
        ]
    else:
        out.append("End to end: not measured (`--no-redis`, or orjson/redis-py missing).")
    out += ["### Where the time goes", profile_hint(results)]
    out += ["### Reading", reading(results, behind)]
    return "\n\n".join(out)


def docs_page(results: Results) -> str:
    clock_text = (
        "the codec rounds measured in this thread's CPU time (`--clock cpu`), not wall time"
        if CPU_CLOCK
        else "wall time"
    )
    machine = "\n".join(f"| {k} | {v} |" for k, v in results.machine.items())
    quick = (
        "\n> This page was written from a `--quick` run: short rounds, rough figures.\n"
        if results.quick
        else ""
    )
    if results.other_cores is not None and results.other_cores > NOISY_OTHER_CORES:
        quick += (
            f"\n> Other processes used {results.other_cores:.2f} cores on average while this "
            "ran: the figures (above all the end-to-end ones, whose server shares the cores) "
            "are noisier than usual.\n"
        )
    return f"""# JSON codec

How fast the C JSON codec (`redis_cache._core.json_dumps` / `json_loads`, see
[json.md](json.md)), which the caches run on every value, encodes and decodes next to
orjson, msgspec and Python's json, and what that is worth end to end through a Redis
server. Generated by `bench/json_codec.py`; the rest of the benchmarks are in
[benchmarks.md](benchmarks.md).
{quick}
## Reproduce

```sh
bash scripts/setup-env.sh                       # .venv with redis[hiredis], fresh C build
.venv/bin/pip install -r bench/requirements.txt # orjson, msgspec and the other peers
{results.command}
```

One process times every codec on the same payloads in interleaved rounds (order rotated
each round, garbage collector paused inside a round, each call checked once before it is
timed; {clock_text}), then starts a private `redis-server` on a free loopback port for the end-to-end
rounds. Raw figures go to `bench/results/json-codec-*.json`; `--quick` is a short smoke
run. The whole run took {results.duration_s:.0f} s.

## Machine

| | |
|---|---|
{machine}

## Results

{markdown(results)}"""


# -- running -------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run (~15 s)")
    parser.add_argument(
        "--write-docs",
        action="store_true",
        help=f"write {DOCS_PAGE.relative_to(ROOT)} "
        f"(and link it from {BENCHMARKS_PAGE.relative_to(ROOT)})",
    )
    parser.add_argument("--no-redis", action="store_true", help="skip the end-to-end rounds")
    parser.add_argument(
        "--no-breakdown", action="store_true", help="skip the one-kind-at-a-time breakdown"
    )
    parser.add_argument(
        "--no-corpus", action="store_true", help="skip the standard corpus (twitter.json, ...)"
    )
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="what the codec rounds measure: wall time (default) or this thread's CPU time, "
        "steadier on a machine other processes share (end-to-end rounds: wall time always)",
    )
    parser.add_argument(
        "--results-json",
        type=Path,
        help="write the raw figures here instead of bench/results/json-codec-*.json",
    )
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> Results:
    global CPU_CLOCK
    CPU_CLOCK = args.clock == "cpu"
    settings = QUICK if args.quick else FULL
    started = time.perf_counter()
    found, skipped = codecs()
    for name, why in skipped.items():
        log(f"skipping {name}: {why}")
    log("building payloads")
    payloads = make_payloads()
    for p in payloads:
        log(f"  {p.name}: {len(p.data):,} bytes")
    results = Results(
        machine=describe_machine(),
        settings=settings,
        quick=args.quick,
        command=" ".join([".venv/bin/python bench/json_codec.py", *sys.argv[1:]]),
        codecs={c.name: c.describe for c in found},
        skipped=skipped,
        payloads=payloads,
    )
    if args.no_redis:
        results.machine.pop("redis-server", None)

    cases = codec_cases(payloads, found)
    corpus: list[Case] = []
    if args.no_corpus:
        results.corpus_skipped = "`--no-corpus`"
    else:
        log(f"reading the corpus from {corpus_dir()}")
        results.corpus, results.corpus_skipped = load_corpus()
        if results.corpus_skipped:
            log(f"corpus: {results.corpus_skipped}")
        corpus = corpus_cases(results.corpus, found)
    kinds: list[Case] = []
    if ORJSON in results.codecs and not args.no_breakdown:
        kinds, results.kinds = kind_cases(found, settings.kind_elements)
    gc.freeze()  # the payloads: gc.collect() before each round need not walk them

    pids: list[int] = []
    before, measuring = CpuSnapshot.take(pids), time.perf_counter()
    results.overhead_us = call_overhead_us()
    measure(cases, settings.codec, "codec")
    results.cases += cases
    if corpus:
        measure(corpus, settings.corpus, "corpus")
        results.cases += corpus
    if kinds:
        measure(kinds, settings.kinds, "one kind at a time")
        results.cases += kinds

    if args.no_redis:
        pass
    elif ORJSON not in results.codecs:
        log("skipping end to end: orjson is missing")
    else:
        try:
            import redis  # noqa: F401
        except ImportError:
            log("skipping end to end: redis-py is missing")
        else:
            from redis_cache.testing import RedisServer

            with RedisServer() as server:
                log(f"redis-server on {HOST}:{server.port}")
                if server.pid is not None:
                    pids.append(server.pid)
                e2e, clients, results.e2e_clients = e2e_cases(payloads, server.port)
                try:
                    measure(e2e, settings.e2e, "end to end")
                finally:
                    for client in clients:
                        client.close()
                results.cases += e2e
    seconds = time.perf_counter() - measuring
    use = other_cpu_use(before, CpuSnapshot.take(pids), seconds)
    if use is not None:
        results.other_cores, steal = use
        results.machine["CPU used by other processes while measuring"] = (
            f"{results.other_cores:.2f} cores on average (hypervisor steal {steal:.2f})"
        )
        if results.other_cores > NOISY_OTHER_CORES:
            log(f"WARNING: other processes used {results.other_cores:.2f} cores: noisy figures")
    results.duration_s = time.perf_counter() - started
    return results


def save_json(results: Results, path: Path | None = None) -> Path:
    if path is None:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = RESULTS_DIR / f"json-codec-{stamp}{'-quick' if results.quick else ''}.json"
    path.write_text(json.dumps(results.to_json(), indent=2) + "\n", encoding="utf-8")
    return path


def per_python_section() -> str:
    """The per-Python section bench/json_pythons.py wrote into the page, kept as it
    is when this run rewrites the rest ("" if there is none)."""
    from bench.json_pythons import END, START

    page = DOCS_PAGE.read_text(encoding="utf-8") if DOCS_PAGE.exists() else ""
    if START not in page or END not in page:
        return ""
    return "\n" + START + page.split(START, 1)[1].split(END, 1)[0] + END + "\n"


#: A hand-written section of the page (targets met or not, where the time
#: goes, before/after figures of a change) between these markers; kept as it
#: is when a run rewrites the rest of the page.
NOTES_START = "<!-- notes: kept by bench/json_codec.py --write-docs -->"
NOTES_END = "<!-- end of notes -->"


def kept_notes() -> str:
    """The hand-written notes section of the current page ("" if there is none)."""
    page = DOCS_PAGE.read_text(encoding="utf-8") if DOCS_PAGE.exists() else ""
    if NOTES_START not in page or NOTES_END not in page:
        return ""
    notes = page.split(NOTES_START, 1)[1].split(NOTES_END, 1)[0]
    return "\n" + NOTES_START + notes + NOTES_END + "\n"


def link_from_benchmarks_page() -> bool:
    """Adds LINK_LINE to docs/benchmarks.md where bench/report.py's template puts it,
    if a page generated before the template had it lacks it. True if it changed."""
    if not BENCHMARKS_PAGE.exists():
        return False
    text = BENCHMARKS_PAGE.read_text(encoding="utf-8")
    if "benchmarks-json.md" in text or LINK_ANCHOR not in text:
        return False
    text = text.replace(LINK_ANCHOR, f"{LINK_ANCHOR}\n{LINK_LINE}", 1)
    BENCHMARKS_PAGE.write_text(text, encoding="utf-8")
    return True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = run(args)
    print(markdown(results))
    log(f"raw results: {os.path.relpath(save_json(results, args.results_json), Path.cwd())}")
    if args.write_docs:
        kept = kept_notes() + per_python_section()
        DOCS_PAGE.write_text(docs_page(results) + kept, encoding="utf-8")
        log(f"wrote {os.path.relpath(DOCS_PAGE, Path.cwd())}")
        if link_from_benchmarks_page():
            log(f"linked it from {os.path.relpath(BENCHMARKS_PAGE, Path.cwd())}")
    log(f"done in {results.duration_s:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
