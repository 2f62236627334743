"""JSON values are encoded straight into the outgoing command buffer.

The first attempt runs no Python code; a value that needs some (a datetime's
isoformat(), a model's model_dump(), an enum, a set) stops it, and the
command is encoded again into a scratch buffer with no connection held (see
send_values in csrc/client.c).  These tests check that such a restart
leaves nothing behind: no half-written command reaches the server, every
value arrives once and whole, and the connection stays in step.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import json
import uuid
from typing import Any

import pytest
from async_support import run  # noqa: F401  (run is a fixture)
from redis_raw import raw

from redis_cache import RedisCache, SerializationError, SyncRedisCache
from redis_cache.testing import RedisServer

WHEN = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone.utc)


class Colour(enum.Enum):
    RED = "red"


# Values whose encoding needs Python code, each put after plenty of plain
# data so that the direct attempt has written a good part of the command.
NEEDS_PYTHON: list[tuple[Any, Any]] = [
    (WHEN, WHEN.isoformat()),
    (uuid.UUID(int=7), str(uuid.UUID(int=7))),
    (Colour.RED, "red"),
    ({1, 2}, [1, 2]),
]


def _calls(server: RedisServer, command: str) -> int:
    """How often the server ran command since the last CONFIG RESETSTAT."""
    info = raw(server, "INFO", "commandstats")
    assert isinstance(info, bytes)
    for line in info.decode().splitlines():
        if line.startswith(f"cmdstat_{command}:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


def _stored(server: RedisServer, key: str) -> Any:
    value = raw(server, "GET", key)
    assert isinstance(value, bytes), value
    return json.loads(value)


@pytest.mark.parametrize("special, expected", NEEDS_PYTHON, ids=lambda v: type(v).__name__)
def test_sync_set_many_restarted_by_a_late_value(
    redis: RedisServer, special: Any, expected: Any
) -> None:
    plain = {f"k{i}": {"i": i, "text": "x" * 50} for i in range(200)}
    with SyncRedisCache(port=redis.port, max_connections=1) as cache:
        assert raw(redis, "CONFIG", "RESETSTAT") == "OK"
        assert cache.set_many({**plain, "last": [1, "two", special]}) is True
        assert _calls(redis, "set") == 201  # each SET once, none doubled
        assert _stored(redis, "last") == [1, "two", expected]
        assert _stored(redis, "k199") == plain["k199"]
        assert cache.ping() is True
        assert cache.get("k0") == plain["k0"]


@pytest.mark.parametrize("special, expected", NEEDS_PYTHON, ids=lambda v: type(v).__name__)
def test_async_set_restarted_by_a_late_value(
    run: Any, redis: RedisServer, special: Any, expected: Any
) -> None:
    async def main() -> None:
        async with RedisCache(port=redis.port) as cache:
            assert await cache.ping() is True
            assert raw(redis, "CONFIG", "RESETSTAT") == "OK"
            value = {"pad": "y" * 5000, "items": list(range(500)), "last": special}
            # Other commands queued around it share the multiplexer's buffer.
            results = await asyncio.gather(
                cache.set("before", 1),
                cache.set("special", value),
                cache.set("after", 2),
            )
            assert results == [True, True, True]
            assert _calls(redis, "set") == 3
            stored = _stored(redis, "special")
            assert stored["last"] == expected and stored["items"] == list(range(500))
            assert await cache.get_many(["before", "after"]) == {"before": 1, "after": 2}

    run(main())


def test_a_refused_value_after_a_restart_writes_nothing(redis: RedisServer) -> None:
    """The scratch attempt fails too (an unsupported type after a datetime):
    the error is the encoder's, and no SET went out."""
    with SyncRedisCache(port=redis.port) as cache:
        assert raw(redis, "CONFIG", "RESETSTAT") == "OK"
        with pytest.raises(SerializationError, match="type 'object'"):
            cache.set_many({"a": 1, "b": [WHEN, object()]})
        assert _calls(redis, "set") == 0
        assert cache.get_many(["a", "b"]) == {}


def test_plain_and_extra_values_with_compression(redis: RedisServer) -> None:
    with SyncRedisCache(port=redis.port, compression="zlib", compression_threshold=64) as cache:
        big = {"text": "z" * 4000, "when": WHEN}
        assert cache.set_many({"plain": {"text": "z" * 4000}, "extra": big}) is True
        assert cache.get("plain") == {"text": "z" * 4000}
        assert cache.get("extra") == {"text": "z" * 4000, "when": WHEN.isoformat()}
