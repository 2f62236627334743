"""Interoperability: what SyncRedisCache writes is plain JSON any other Redis
client can read, and JSON written by other clients is read back.

The reference clients are redis-cli (``RedisServer.cli``) and the raw
protocol (``RedisServer.raw_command``), neither of which uses this library.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from redis_raw import keys, raw

from redis_cache import SerializationError, SyncRedisCache
from redis_cache.testing import RedisServer


@pytest.fixture
def cache(redis: RedisServer) -> Iterator[SyncRedisCache]:
    with SyncRedisCache(port=redis.port, namespace="app") as c:
        yield c


def compact_json(value: object) -> str:
    """Python's own compact JSON text, without ASCII escaping."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


VALUES = [
    {"user": {"id": 7, "tags": ["a", "b"], "active": True, "score": 9.5, "manager": None}},
    [1, -2, 3.25, "four", None, False, [], {}],
    (1, (2, 3)),
    10**40,
    -(10**40),
    1e-300,
    0.1,
    1e300,
    -0.0,
    12345678901234567890.0,
    True,
    None,
    "",
    'say "hi" \\ bye',
    "tab\there\nnewline\rcr\x00nul\x1f\x7f",
    "\u2028\u2029 line separators",
    "caf\u00e9 \u4e2d\u6587 \U0001f600 \U0010ffff",
    {"\u952e": "\u503c", "emoji \U0001f511": ["\u00e9"]},
]


@pytest.mark.parametrize("value", VALUES, ids=[f"v{i}" for i in range(len(VALUES))])
def test_set_writes_plain_json_that_other_clients_read(
    cache: SyncRedisCache, redis: RedisServer, value: object
) -> None:
    cache.set("k", value)
    stored = raw(redis, "GET", "app:k")
    assert isinstance(stored, bytes)
    text = stored.decode("utf-8")  # valid UTF-8, no surrogates
    assert redis.cli("GET", "app:k") == text
    assert redis.cli("GET", "app:k", via="unix") == text
    # The same text Python's json module writes, and it parses back to the value.
    assert text == compact_json(value)
    assert json.loads(text) == json.loads(compact_json(value))


def test_set_many_and_incr_are_visible_to_redis_cli(
    cache: SyncRedisCache, redis: RedisServer
) -> None:
    cache.set_many({"a": {"x": 1}, "b": [True]}, ttl=100)
    assert redis.cli("MGET", "app:a", "app:b") == '{"x":1}\n[true]'
    assert 99 <= int(redis.cli("TTL", "app:a")) <= 100
    cache.set("n", 5)
    assert redis.cli("INCRBY", "app:n", "10") == "15"
    assert cache.incr("n") == 16
    assert redis.cli("GET", "app:n") == "16"
    assert keys(redis) == [b"app:a", b"app:b", b"app:n"]


JSON_TEXTS = [
    ('{"a": [1, 2.5, "x"], "b": null}', {"a": [1, 2.5, "x"], "b": None}),
    ('  [ true , false , null ]  ', [True, False, None]),
    ('"caf\\u00e9 \\ud83d\\ude00 \\/ \\"q\\" \\\\"', 'caf\u00e9 \U0001f600 / "q" \\'),
    ('"caf\u00e9 \U0001f600"', "caf\u00e9 \U0001f600"),
    ('"\\ud800"', "\ud800"),  # a lone surrogate escape, as Python's json accepts
    ("123456789012345678901234567890", 123456789012345678901234567890),
    ("-0", 0),
    ("1E3", 1000.0),
    ("-1.5e-3", -0.0015),
    ("1e400", float("inf")),
    ('{"nested": {"deep": [[[{}]]]}}', {"nested": {"deep": [[[{}]]]}}),
    ("\t\n 42 \r\n", 42),
    ('{"dup": 1, "dup": 2}', {"dup": 2}),
]


@pytest.mark.parametrize(("text", "expected"), JSON_TEXTS, ids=[t for t, _ in JSON_TEXTS])
def test_json_written_by_redis_cli_is_read_by_get(
    cache: SyncRedisCache, redis: RedisServer, text: str, expected: object
) -> None:
    assert redis.cli("SET", "app:k", text) == "OK"
    got = cache.get("k")
    assert got == expected == json.loads(text)
    assert type(got) is type(expected)
    assert cache.get_many(["k"]) == {"k": expected}


@pytest.mark.parametrize(
    "text",
    ["value:1", "", "{'single': 1}", "[1, 2", '{"a" 1}', "NaN", "Infinity", "tru",
     '"unterminated', '"ctrl \x01 char"', "01", "1.", ".5", "[1,]", "\"\\x\""],
    ids=repr,
)
def test_non_json_written_by_other_clients_is_a_serialization_error(
    cache: SyncRedisCache, redis: RedisServer, text: str
) -> None:
    redis.raw_command("SET", "app:k", text)
    with pytest.raises(SerializationError, match="invalid JSON"):
        cache.get("k")
    assert cache.execute_command("GET", "app:k") == text.encode()
    assert cache.ping() is True


def test_invalid_utf8_in_a_json_string_is_a_serialization_error(
    cache: SyncRedisCache, redis: RedisServer
) -> None:
    for blob in (b'"\xff"', b'"\xc3"', b'"\xed\xa0\x80"', b'"\xc0\xaf"'):
        redis.raw_command("SET", "app:k", blob)
        with pytest.raises(SerializationError, match="UTF-8"):
            cache.get("k")


def test_raw_serializer_round_trips_with_the_raw_protocol(redis: RedisServer) -> None:
    blob = bytes(range(256)) * 4
    with SyncRedisCache(port=redis.port, serializer="raw") as c:
        c.set("mine", blob)
        redis.raw_command("SET", "theirs", blob[::-1])
        assert c.get("theirs") == blob[::-1]
        assert c.get_many(["mine", "theirs"]) == {"mine": blob, "theirs": blob[::-1]}
    assert raw(redis, "GET", "mine") == blob


def test_ttl_set_by_redis_cli_is_seen_by_the_cache(
    cache: SyncRedisCache, redis: RedisServer
) -> None:
    redis.cli("SET", "app:k", '"v"', "EX", "100")
    assert 99 <= cache.ttl("k") <= 100
    assert cache.get("k") == "v"
    redis.cli("PERSIST", "app:k")
    assert cache.ttl("k") == -1
