"""Serialization through a real server: typed reads, the encoder's extra
types, compression (zlib, zstd) and the signed pickle serializer."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import pickle
import uuid
from decimal import Decimal

import pytest

from redis_cache import ConfigurationError, SerializationError, SyncRedisCache
from redis_cache.serializers import SignedPickle
from redis_cache.testing import RedisServer

SECRET = "0123456789abcdef-secret"


class Colour(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Address:
    city: str


@dataclasses.dataclass
class User:
    id: int
    name: str
    joined: dt.datetime
    uid: uuid.UUID
    balance: Decimal
    colour: Colour
    address: Address
    tags: list[str]
    previous: list[Address] | None = None


USER = User(
    7,
    "Ada",
    dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    Decimal("10.50"),
    Colour.RED,
    Address("Paris"),
    ["a", "b"],
    [Address("Rome")],
)


@pytest.fixture
def cache(redis: RedisServer):
    with SyncRedisCache(host="127.0.0.1", port=redis.port) as c:
        yield c


def test_extra_types_are_stored_as_plain_json(cache: SyncRedisCache, redis: RedisServer) -> None:
    cache.set("u", USER)
    stored = json.loads(redis.cli("GET", "u"))
    assert stored["joined"] == "2024-05-06T07:08:09.123456+02:00"
    assert stored["uid"] == "12345678-1234-5678-1234-567812345678"
    assert stored["balance"] == "10.50"
    assert stored["colour"] == "red"
    assert stored["address"] == {"city": "Paris"}


def test_typed_reads_rebuild_dataclasses(cache: SyncRedisCache) -> None:
    cache.set("u", USER)
    assert cache.get("u", model=User) == USER
    assert cache.get_many(["u", "missing"], model=User) == {"u": USER}
    assert cache.get("missing", "default", model=User) == "default"
    cache.set("list", [USER, USER])
    assert cache.get("list", model=list[User]) == [USER, USER]


def test_typed_reads_build_pydantic_models(cache: SyncRedisCache) -> None:
    pydantic = pytest.importorskip("pydantic")

    class Item(pydantic.BaseModel):
        name: str
        price: Decimal
        when: dt.date

    item = Item(name="pen", price=Decimal("1.25"), when=dt.date(2024, 1, 2))
    cache.set("item", item)
    got = cache.get("item", model=Item)
    assert isinstance(got, Item) and got == item


def test_a_value_that_does_not_fit_the_model_is_a_serialization_error(
    cache: SyncRedisCache,
) -> None:
    cache.set("u", {"id": "not a user"})
    with pytest.raises(SerializationError, match="does not fit"):
        cache.get("u", model=User)


@pytest.mark.parametrize("compression", ["zlib", "zstd"])
def test_compressed_values_round_trip_and_shrink(redis: RedisServer, compression: str) -> None:
    big = {"text": "lorem ipsum " * 5000, "n": list(range(100))}
    with SyncRedisCache(
        host="127.0.0.1", port=redis.port, compression=compression, compression_threshold=100
    ) as c:
        c.set("big", big)
        c.set("small", "tiny")
        assert c.get("big") == big
        assert c.get("small") == "tiny"
        stored = redis.raw_command("STRLEN", "big")
        assert int(stored[1:-2]) < len(json.dumps(big)) // 10
        # Below the threshold a value stays plain JSON.
        assert redis.cli("GET", "small") == '"tiny"'


def test_a_plain_cache_reads_compressed_json_values(redis: RedisServer) -> None:
    with SyncRedisCache(host="127.0.0.1", port=redis.port, compression="zstd",
                        compression_threshold=0) as packed, \
            SyncRedisCache(host="127.0.0.1", port=redis.port) as plain:
        packed.set("k", {"a": [1, 2, 3]})
        assert plain.get("k") == {"a": [1, 2, 3]}


def test_raw_values_that_look_like_a_header_are_escaped(redis: RedisServer) -> None:
    with SyncRedisCache(host="127.0.0.1", port=redis.port, serializer="raw",
                        compression="zlib", compression_threshold=1000) as c:
        tricky = b"\xc1z not really compressed"
        c.set("k", tricky)
        assert c.get("k") == tricky


def test_decompression_is_capped(redis: RedisServer) -> None:
    with SyncRedisCache(host="127.0.0.1", port=redis.port, serializer="raw",
                        compression="zstd", compression_threshold=0) as writer, \
            SyncRedisCache(host="127.0.0.1", port=redis.port, serializer="raw",
                           compression="zstd", max_decompressed_size=1000) as reader:
        writer.set("bomb", b"\0" * 1_000_000)
        with pytest.raises(SerializationError, match="max_decompressed_size"):
            reader.get("bomb")


def test_corrupt_compressed_values_are_refused(cache: SyncRedisCache, redis: RedisServer) -> None:
    redis.raw_command("SET", "bad", b"\xc1znot zlib at all")
    with pytest.raises(SerializationError, match="decompress"):
        cache.get("bad")


@pytest.mark.parametrize("bad", [{"compression": "lz4"}, {"compression": "zlib",
                                 "compression_level": 42}])
def test_bad_compression_settings_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        SyncRedisCache(**bad)  # type: ignore[arg-type]


def test_signed_pickle_round_trips_python_objects(redis: RedisServer) -> None:
    with SyncRedisCache(host="127.0.0.1", port=redis.port, serializer="pickle",
                        pickle_secret=SECRET) as c:
        value = {1: {2, 3}, "t": (4, 5)}
        c.set("p", value)
        assert c.get("p") == value


def test_signed_pickle_refuses_values_it_did_not_sign(redis: RedisServer) -> None:
    with SyncRedisCache(host="127.0.0.1", port=redis.port, serializer="pickle",
                        pickle_secret=SECRET) as c:
        redis.raw_command("SET", "foreign", pickle.dumps({"evil": True}))
        with pytest.raises(SerializationError, match="not written by SignedPickle"):
            c.get("foreign")
        forged = SignedPickle("another-secret-of-16+").dumps("x")
        redis.raw_command("SET", "forged", forged)
        with pytest.raises(SerializationError, match="signature"):
            c.get("forged")


def test_pickle_needs_a_long_enough_secret() -> None:
    with pytest.raises(ConfigurationError, match="pickle_secret"):
        SyncRedisCache(serializer="pickle")
    with pytest.raises(ConfigurationError, match="at least 16 bytes"):
        SyncRedisCache(serializer="pickle", pickle_secret="short")


def test_non_str_keys_are_refused_unless_stringified(redis: RedisServer) -> None:
    with SyncRedisCache(host="127.0.0.1", port=redis.port) as plain:
        with pytest.raises(SerializationError, match="stringify_keys=True"):
            plain.set("k", {1: "one"})
        assert redis.raw_command("EXISTS", "k") == b":0\r\n"
    with SyncRedisCache(host="127.0.0.1", port=redis.port, stringify_keys=True) as c:
        value = {2: "int", 2.5: "float", None: "none", False: "bool", Colour.RED: "enum",
                 uuid.UUID(int=1): "uuid", dt.date(2024, 1, 2): "date", "s": "str"}
        c.set("k", value)
        # The same strings Python's json module writes, for the types it knows.
        assert json.loads(redis.cli("GET", "k")) == {
            "2": "int", "2.5": "float", "null": "none", "false": "bool", "red": "enum",
            "00000000-0000-0000-0000-000000000001": "uuid", "2024-01-02": "date", "s": "str",
        }
        assert json.loads(json.dumps({2: "int", 2.5: "float", None: "none", False: "bool"})) == {
            "2": "int", "2.5": "float", "null": "none", "false": "bool"}
        with pytest.raises(SerializationError, match="even with stringify_keys"):
            c.set("t", {(1, 2): "tuple"})
        assert redis.raw_command("EXISTS", "t") == b":0\r\n"
