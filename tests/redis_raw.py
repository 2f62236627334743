"""What really reached the server, read without the library under test.

``RedisServer.raw_command`` sends one command over a fresh socket and returns
the raw RESP bytes of the reply; :func:`raw` parses them here, so tests can
check keys, values and TTLs independently of redis_cache's own reply parser.
"""

from __future__ import annotations

from redis_cache.testing import RedisServer

__all__ = ["RespError", "parse_resp", "raw", "pttl", "dbsize", "keys"]


class RespError(str):
    """An error reply (``-ERR ...``), returned rather than raised."""


def parse_resp(data: bytes) -> object:
    """Parse exactly one RESP2 reply: str (status), RespError, int, bytes,
    None (nil) or a list of those."""

    def parse(i: int) -> tuple[object, int]:
        kind = data[i : i + 1]
        end = data.index(b"\r\n", i)
        line, i = data[i + 1 : end], end + 2
        if kind == b"+":
            return line.decode(), i
        if kind == b"-":
            return RespError(line.decode()), i
        if kind == b":":
            return int(line), i
        if kind == b"$":
            size = int(line)
            if size < 0:
                return None, i
            assert data[i + size : i + size + 2] == b"\r\n"
            return data[i : i + size], i + size + 2
        if kind == b"*":
            size = int(line)
            if size < 0:
                return None, i
            items = []
            for _ in range(size):
                item, i = parse(i)
                items.append(item)
            return items, i
        raise AssertionError(f"not a RESP2 reply: {data[:80]!r}")

    value, end = parse(0)
    assert end == len(data), f"trailing bytes after the reply: {data[end:end + 80]!r}"
    return value


def raw(server: RedisServer, *args: str | bytes | int | float) -> object:
    """Run one command on ``server`` (database 0) and return the parsed reply."""
    return parse_resp(server.raw_command(*args))


def pttl(server: RedisServer, key: str | bytes) -> int:
    """PTTL in milliseconds: -1 no expiry, -2 no such key."""
    value = raw(server, "PTTL", key)
    assert isinstance(value, int), value
    return value


def dbsize(server: RedisServer) -> int:
    value = raw(server, "DBSIZE")
    assert isinstance(value, int), value
    return value


def keys(server: RedisServer, pattern: str | bytes = "*") -> list[bytes]:
    """Every key of database 0 matching ``pattern``, sorted (KEYS is fine on a test server)."""
    value = raw(server, "KEYS", pattern)
    assert isinstance(value, list), value
    return sorted(value)  # type: ignore[type-var]
