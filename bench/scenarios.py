"""What is measured: the scenarios, the data they use, and how a result is checked.

Every client moves the *same bytes* through the server: the JSON scenarios
store the compact JSON text that redis_cache's C encoder writes, and the raw
scenarios store that very text as opaque bytes.  Only the work each client
does around the round trip differs, which is what the benchmark compares.

A client's first call of each scenario is checked before anything is timed
(see :func:`verify`), so a client that silently misses (a fast ``None``) or
writes something else cannot win a benchmark.
"""

from __future__ import annotations

import json
import timeit
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from redis_cache.testing import RedisServer

__all__ = [
    "BATCH",
    "CLEAR_KEYS",
    "CLEAR_PATTERN",
    "CLEAR_PREFIX",
    "SCAN_COUNT",
    "SCENARIOS",
    "TTL_SECONDS",
    "VALUE",
    "VALUE_BYTES",
    "Keys",
    "Scenario",
    "dumps",
    "json_loads_us",
    "prepare",
    "seed",
    "verify",
]

#: A small, typical cache entry (a user record): ~100 bytes of JSON.
VALUE: dict[str, Any] = {
    "id": 1234567,
    "name": "Ada Lovelace",
    "email": "ada@example.com",
    "roles": ["admin", "dev"],
    "active": True,
    "score": 98.25,
}


def dumps(value: Any) -> bytes:
    """JSON as redis_cache's C encoder writes it (compact separators, UTF-8).

    redis-py adapters use this for SET so both clients store identical bytes;
    ``json.dumps`` with its default ``", "`` separators would store more.
    """
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


VALUE_BYTES: bytes = dumps(VALUE)

#: Items per get_many / set_many call.
BATCH = 100

#: The TTL every write scenario sets (``EX``), in seconds.
TTL_SECONDS = 60

#: Keys the clear_pattern scenario deletes per call, all named CLEAR_PREFIX + a number.
CLEAR_KEYS = 100_000
CLEAR_PREFIX = "bench:clear:"
CLEAR_PATTERN = CLEAR_PREFIX + "*"
#: ``SCAN ... COUNT`` per step of every client's clear_pattern (redis_cache's own
#: batch size; the peers' loops use the same).
SCAN_COUNT = 1000


class Keys:
    """Key names shared by every adapter (no namespace: the same keys for all)."""

    #: Read by the single-key GET scenarios; seeded once with VALUE_BYTES.
    GET = "bench:value"
    #: Read by the get_many scenarios; seeded once with VALUE_BYTES each.
    MANY = tuple(f"bench:many:{i}" for i in range(BATCH))
    #: Overwritten by the single-key SET scenarios.
    SET = "bench:set"
    #: Overwritten by the set_many scenarios.
    SET_MANY = tuple(f"bench:set_many:{i}" for i in range(BATCH))


Kind = Literal["read", "read_many", "write", "write_many", "clear"]
Codec = Literal["json", "raw"]


@dataclass(frozen=True)
class Scenario:
    """One kind of call, measured for every client that offers it.

    ``batch`` is how many keys one call touches (its latency is per call);
    ``concurrency`` is how many callers run at once, which only async
    adapters offer (a sync client in one thread has one caller).  A "clear"
    scenario destroys its data, so :func:`prepare` re-creates the keys
    before every (single-call) round and nothing is warmed up or calibrated.
    """

    name: str
    title: str
    kind: Kind
    codec: Codec
    batch: int = 1
    concurrency: int = 1

    @property
    def group(self) -> str:
        """The section a scenario is reported in."""
        if self.kind == "clear":
            return "clear"
        if self.concurrency > 1:
            return "concurrent"
        return "batch" if self.batch > 1 else "single"

    @property
    def one_call_per_round(self) -> bool:
        """True where every call needs fresh data (see :func:`prepare`)."""
        return self.kind == "clear"

    @property
    def raw_twin(self) -> str:
        """The raw-bytes scenario moving the same bytes (itself if it has none)."""
        return self.name.replace("_json", "_raw") if self.concurrency == 1 else self.name


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("get_json", "GET, JSON value", "read", "json"),
    Scenario("get_raw", "GET, raw bytes", "read", "raw"),
    Scenario("set_json", f"SET ex={TTL_SECONDS}, JSON value", "write", "json"),
    Scenario("set_raw", f"SET ex={TTL_SECONDS}, raw bytes", "write", "raw"),
    Scenario("get_many_json", f"get_many({BATCH}), JSON values", "read_many", "json", BATCH),
    Scenario("get_many_raw", f"get_many({BATCH}), raw bytes", "read_many", "raw", BATCH),
    Scenario(
        "set_many_json", f"set_many({BATCH}) ex={TTL_SECONDS}, JSON", "write_many", "json", BATCH
    ),
    Scenario(
        "set_many_raw", f"set_many({BATCH}) ex={TTL_SECONDS}, raw bytes", "write_many", "raw", BATCH
    ),
    Scenario("get_json_c10", "GET, JSON value, 10 concurrent callers", "read", "json", 1, 10),
    Scenario("get_json_c100", "GET, JSON value, 100 concurrent callers", "read", "json", 1, 100),
    Scenario(
        "get_json_c1000", "GET, JSON value, 1000 concurrent callers", "read", "json", 1, 1000
    ),
    Scenario(
        "clear_pattern",
        f"clear_pattern over {CLEAR_KEYS // 1000}k keys (SCAN MATCH COUNT {SCAN_COUNT} + UNLINK)",
        "clear",
        "raw",
        CLEAR_KEYS,
    ),
)


def json_loads_us() -> float:
    """Time of ``json.loads(VALUE_BYTES)`` alone, best of 5 (in µs).

    The GET JSON - GET raw difference is a cross-scenario difference and noisy
    on a shared machine; this in-process figure is the reference it should approach.
    """
    timer = timeit.Timer(lambda: json.loads(VALUE_BYTES))
    number, _ = timer.autorange()
    return min(timer.repeat(5, number)) / number * 1e6


def payload(codec: Codec) -> Any:
    """The value a client passes to set / expects from get for this codec."""
    return VALUE if codec == "json" else VALUE_BYTES


def seed(server: RedisServer) -> None:
    """Stores the data the read scenarios expect, with a plain socket.

    Written by :meth:`RedisServer.raw_command` rather than by a client under
    test, so no client's encoder decides what the others read.
    """
    for key in (Keys.GET, *Keys.MANY):
        reply = server.raw_command("SET", key, VALUE_BYTES)
        if reply != b"+OK\r\n":
            raise RuntimeError(f"seeding {key} failed: {reply!r}")


def populate(server: RedisServer, count: int = CLEAR_KEYS) -> None:
    """Creates ``count`` keys named CLEAR_PREFIX + 0..count-1, fast.

    ``DEBUG POPULATE`` (the harness's server enables DEBUG for local
    connections) makes them inside the server in a few tens of ms; a server
    refusing DEBUG gets pipelined MSETs of 1000 keys instead.
    """
    reply = server.raw_command("DEBUG", "POPULATE", count, CLEAR_PREFIX.rstrip(":"), len(VALUE_BYTES))
    if reply != b"+OK\r\n":
        for start in range(0, count, 1000):
            args: list[str | bytes] = ["MSET"]
            for i in range(start, min(count, start + 1000)):
                args += [f"{CLEAR_PREFIX}{i}", VALUE_BYTES]
            if server.raw_command(*args) != b"+OK\r\n":
                raise RuntimeError("seeding the clear_pattern keys failed")
    left = server.raw_command("EXISTS", CLEAR_PREFIX + "0", f"{CLEAR_PREFIX}{count - 1}")
    if left != b":2\r\n":
        raise RuntimeError(f"seeding the clear_pattern keys failed: {reply!r}")


def prepare(server: RedisServer, scenario: Scenario) -> None:
    """What must hold before a call of ``scenario`` is made (and then checked or timed)."""
    if scenario.kind == "clear":
        populate(server)
    else:
        clear_written(server, scenario)


def _written_keys(scenario: Scenario) -> tuple[str, ...]:
    return (Keys.SET,) if scenario.kind == "write" else Keys.SET_MANY


def clear_written(server: RedisServer, scenario: Scenario) -> None:
    """Deletes a write scenario's keys so :func:`verify` sees what the client wrote."""
    if scenario.kind in ("write", "write_many"):
        server.raw_command("DEL", *_written_keys(scenario))


def verify(server: RedisServer, scenario: Scenario, result: object) -> None:
    """Raises AssertionError unless one call's result (and effect) is right.

    Reads must return the seeded value decoded by the scenario's codec (a
    ``dict`` of every key for get_many); writes must have stored exactly
    VALUE_BYTES with a TTL of at most TTL_SECONDS, as seen by the server.
    """
    if scenario.kind == "clear":
        if result != CLEAR_KEYS:
            raise AssertionError(f"{scenario.name}: removed {result!r}, expected {CLEAR_KEYS}")
        reply = server.raw_command("SCAN", 0, "MATCH", CLEAR_PATTERN, "COUNT", 10 * CLEAR_KEYS)
        if not reply.endswith(b"*0\r\n"):
            raise AssertionError(f"{scenario.name}: keys matching {CLEAR_PATTERN} are left")
        return
    expected = payload(scenario.codec)
    if scenario.kind == "read":
        if result != expected:
            raise AssertionError(f"{scenario.name}: got {result!r}, expected {expected!r}")
        return
    if scenario.kind == "read_many":
        if not isinstance(result, Mapping) or len(result) != BATCH:
            raise AssertionError(f"{scenario.name}: expected a mapping of {BATCH} items")
        wrong = [key for key in Keys.MANY if result.get(key) != expected]
        if wrong:
            raise AssertionError(f"{scenario.name}: wrong values for {wrong[:3]}...")
        return
    for key in _written_keys(scenario):
        stored = server.raw_command("GET", key)
        if stored != b"$%d\r\n%s\r\n" % (len(VALUE_BYTES), VALUE_BYTES):
            raise AssertionError(f"{scenario.name}: {key} holds {stored!r}")
        ttl = int(server.raw_command("TTL", key)[1:-2])
        if not 0 < ttl <= TTL_SECONDS:
            raise AssertionError(f"{scenario.name}: {key} has TTL {ttl}")
