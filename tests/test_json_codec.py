"""Unit tests of the C JSON codec (csrc/json.c) through _core.json_dumps/json_loads.

The encoder part checks each supported type, the escapes, Unicode on every
plane, big ints, the shortest float repr and every refusal with its message
and path; the decoder part checks its inputs, limits and error offsets.
"""

from __future__ import annotations

import ctypes
import dataclasses
import datetime
import decimal
import enum
import json
import math
import pathlib
import random
import re
import struct
import sys
import sysconfig
import uuid
from collections import OrderedDict
from typing import Any, ClassVar

import pytest
from json_support import MAX_DEPTH, same

from redis_cache import _core
from redis_cache._core import json_dumps, json_loads
from redis_cache.errors import SerializationError


def python_compact(value: Any) -> bytes:
    """What Python's json module writes for value in the codec's style."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode(
        "utf-8"
    )


def nested(depth: int, wrap: Any = lambda inner: [inner], leaf: Any = 0) -> Any:
    value = leaf
    for _ in range(depth):
        value = wrap(value)
    return value


# ======================================================================= encoder

# ------------------------------------------------------------- JSON's own types


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, b"null"),
        (True, b"true"),
        (False, b"false"),
        (0, b"0"),
        (-1, b"-1"),
        ("", b'""'),
        ([], b"[]"),
        ({}, b"{}"),
        ((), b"[]"),
        ([1, "a", None, True, 2.5], b'[1,"a",null,true,2.5]'),
        ({"a": [1, {"b": None}]}, b'{"a":[1,{"b":null}]}'),
        ((1, (2, 3)), b"[1,[2,3]]"),
        (OrderedDict([("z", 1), ("a", 2)]), b'{"z":1,"a":2}'),
    ],
)
def test_json_types(value: Any, expected: bytes) -> None:
    assert json_dumps(value) == expected


def test_dict_keeps_insertion_order() -> None:
    value = {k: i for i, k in enumerate("zyxabc")}
    assert json_dumps(value) == python_compact(value)
    assert list(json_loads(json_dumps(value))) == list("zyxabc")


@pytest.mark.skipif(
    sys.implementation.name != "cpython"
    or not (3, 11) <= sys.version_info[:2] <= (3, 13)
    or bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
    reason="the direct dict walk exists for CPython 3.11 to 3.13 (with the GIL) only",
)
def test_dicts_are_walked_over_their_entry_table() -> None:
    """The layout check at import passed: a fallback to PyDict_Next would go
    unnoticed otherwise, and cost ~10% of encoding records."""
    assert _core.JSON_DICT_WALK_DIRECT == 1


def test_dict_walk_skips_deleted_items_and_handles_every_key_kind() -> None:
    holes = {f"key{i}": i for i in range(300)}
    for i in range(0, 300, 3):
        del holes[f"key{i}"]
    general = {1: "int", "s": "str", "t": [1]}  # a non-str key: the general entry kind
    del general[1]

    class Obj:
        def __init__(self) -> None:
            self.a, self.b = 1, 2

    split = Obj().__dict__  # split table / inline values: PyDict_Next
    assert json_dumps(holes) == python_compact(holes)
    assert json_dumps(general) == b'{"s":"str","t":[1]}'
    assert json_dumps(split) == b'{"a":1,"b":2}'


def test_subclasses_of_json_types() -> None:
    class MyStr(str):
        def __str__(self) -> str:
            return "nope"

    class MyInt(int):
        def __repr__(self) -> str:
            return "nope"

    class MyFloat(float):
        def __repr__(self) -> str:
            return "nope"

    class MyDict(dict):  # type: ignore[type-arg]
        pass

    class MyList(list):  # type: ignore[type-arg]
        pass

    value = MyDict(s=MyStr("x"), i=MyInt(7), big=MyInt(2**80), f=MyFloat(1.5), l=MyList([1]))
    assert json_dumps(value) == b'{"s":"x","i":7,"big":1208925819614629174706176,"f":1.5,"l":[1]}'


# ---------------------------------------------------------------------- ints


@pytest.mark.parametrize(
    "value",
    [
        0,
        1,
        -1,
        2**31 - 1,
        2**31,
        -(2**31),
        2**53 + 1,
        2**63 - 1,
        2**63,
        -(2**63),
        -(2**63) - 1,
        2**64,
        10**18 - 1,
        10**18,
        10**19,
        -(10**19),
        10**100,
        -(3**500),
    ],
)
def test_ints_exact(value: int) -> None:
    encoded = json_dumps(value)
    assert encoded == str(value).encode()
    decoded = json_loads(encoded)
    assert type(decoded) is int and decoded == value


def test_int_at_the_digit_limit() -> None:
    limit = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 4300
    if limit == 0:
        pytest.skip("int/str digit limit is off in this interpreter")
    largest = 10**limit - 1  # limit digits
    assert json_dumps(largest) == b"9" * limit
    assert json_loads(b"9" * limit) == largest
    assert json_loads(b"-" + b"9" * limit) == -largest


def test_int_past_the_digit_limit_is_refused() -> None:
    limit = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 4300
    if limit == 0:
        pytest.skip("int/str digit limit is off in this interpreter")
    with pytest.raises(
        SerializationError, match=r"cannot serialize an int with more digits than Python converts"
    ):
        json_dumps(10**limit)
    with pytest.raises(
        SerializationError,
        match=r"cannot serialize an int with more digits .* \(at value\['n'\]\[0\]\)",
    ):
        json_dumps({"n": [10**limit]})
    with pytest.raises(
        SerializationError, match=r"^invalid JSON at byte 1: number cannot be converted"
    ):
        json_loads(b"[" + b"1" * (limit + 1) + b"]")


def test_bool_is_not_an_int() -> None:
    assert json_dumps([True, False, 1, 0]) == b"[true,false,1,0]"
    assert json_loads(b"[true,1]") == [True, 1] and type(json_loads(b"[1]")[0]) is int


# -------------------------------------------------------------------- floats

NOTABLE_FLOATS = [
    0.0,
    -0.0,
    0.1,
    0.2,
    0.3,
    1.0,
    -1.0,
    1.5,
    1 / 3,
    2 / 3,
    100.0,
    1e15,
    1e16,
    1e17,
    1e22,
    1e23,
    9007199254740993.0,
    123456789012345678.0,
    1e-4,
    1e-5,
    1e-7,
    5e-324,  # smallest subnormal
    2.2250738585072009e-308,  # largest subnormal
    2.2250738585072014e-308,  # smallest normal
    1.7976931348623157e308,  # largest finite
    -1.7976931348623157e308,
    math.pi,
    math.e,
    0.30000000000000004,
    1.2345678901234567e-300,
    4.35,
    2.675,
    1e300 * 1e8,  # still finite
]


@pytest.mark.parametrize("value", NOTABLE_FLOATS, ids=[repr(f) for f in NOTABLE_FLOATS])
def test_float_is_shortest_repr(value: float) -> None:
    encoded = json_dumps(value)
    assert encoded == repr(value).encode() == python_compact(value)
    assert same(json_loads(encoded), value)


def test_float_repr_for_many_random_doubles() -> None:
    rng = random.Random(20240611)
    checked = 0
    while checked < 20000:
        (value,) = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))
        if not math.isfinite(value):
            continue
        checked += 1
        encoded = json_dumps(value)
        assert encoded == repr(value).encode(), value
        assert same(json_loads(encoded), value)
    for _ in range(5000):
        value = rng.uniform(-1e6, 1e6)
        assert json_dumps(value) == repr(value).encode()


def test_negative_zero_keeps_its_sign() -> None:
    assert json_dumps(-0.0) == b"-0.0"
    decoded = json_loads(b"-0.0")
    assert decoded == 0.0 and math.copysign(1.0, decoded) == -1.0
    # "-0" is an integer literal: int 0, as Python's json reads it.
    assert json_loads(b"-0") == 0 and type(json_loads(b"-0")) is int


def test_float_stays_float() -> None:
    assert json_dumps(1.0) == b"1.0"
    assert json_dumps(1e16) == b"1e+16"
    assert type(json_loads(b"1.0")) is float
    assert type(json_loads(b"1e2")) is float and json_loads(b"1e2") == 100.0


@pytest.mark.parametrize("value", [math.nan, -math.nan, math.inf, -math.inf])
def test_non_finite_floats_are_refused(value: float) -> None:
    with pytest.raises(
        SerializationError,
        match=r"^cannot serialize float (nan|inf|-inf): JSON has no NaN or infinity",
    ):
        json_dumps(value)


# ------------------------------------------------------------------- strings


def test_ascii_escapes() -> None:
    assert json_dumps('"') == b'"\\""'
    assert json_dumps("\\") == b'"\\\\"'
    assert json_dumps("\b\f\n\r\t") == b'"\\b\\f\\n\\r\\t"'
    assert json_dumps("/") == b'"/"'  # legal unescaped
    assert json_dumps("\x7f") == b'"\x7f"'  # DEL is no control character to JSON
    assert json_dumps("a\x00b") == b'"a\\u0000b"'


@pytest.mark.parametrize("code", range(0x20))
def test_every_control_character_is_escaped(code: int) -> None:
    short = {0x08: b"\\b", 0x09: b"\\t", 0x0A: b"\\n", 0x0C: b"\\f", 0x0D: b"\\r"}
    expected = short.get(code, b"\\u%04x" % code)
    assert json_dumps(chr(code)) == b'"' + expected + b'"'
    # The same inside a non-ASCII string (the wide path of the encoder).
    assert (
        json_dumps("é" + chr(code) + "\U0001f600")
        == b'"\xc3\xa9' + expected + '\U0001f600"'.encode()
    )
    assert json_loads(json_dumps(chr(code))) == chr(code)
    assert json_dumps(chr(code)) == python_compact(chr(code))


def test_all_ascii_matches_python() -> None:
    text = "".join(map(chr, range(128)))
    assert json_dumps(text) == python_compact(text)
    assert json_loads(json_dumps(text)) == text


def test_line_and_paragraph_separators_are_written_raw() -> None:
    # U+2028/U+2029 are legal unescaped in JSON (only old JavaScript minded):
    # the encoder writes their UTF-8, as Python's json does with ensure_ascii=False.
    assert json_dumps("\u2028") == b'"\xe2\x80\xa8"'
    assert json_dumps("a\u2029b") == b'"a\xe2\x80\xa9b"'
    assert json_dumps("\u2028\u2029") == python_compact("\u2028\u2029")
    assert json_loads(b'"\xe2\x80\xa8"') == "\u2028"
    assert json_loads(b'"\\u2028\\u2029"') == "\u2028\u2029"


# One character from each Unicode plane in use, and the edges of the ranges.
PLANE_CHARS = [
    "\u0080",
    "\u00e9",
    "\u07ff",
    "\u0800",
    "\u20ac",
    "\ud7ff",
    "\ue000",
    "\ufeff",
    "\ufffd",
    "\ufffe",
    "\uffff",
    "\U00010000",
    "\U0001d11e",
    "\U0001f600",
    "\U00020000",
    "\U0002a6d6",
    "\U00030000",
    "\U000e0001",
    "\U000f0000",
    "\U000fffff",
    "\U00100000",
    "\U0010fffd",
    "\U0010ffff",
]


def utf16_escaped(text: str, form: str = "\\u%04x") -> bytes:
    """text as a JSON string of \\uXXXX escapes only (surrogate pairs past the BMP)."""
    units = text.encode("utf-16-be")
    codes = [int.from_bytes(units[i : i + 2], "big") for i in range(0, len(units), 2)]
    return ('"' + "".join(form % c for c in codes) + '"').encode("ascii")


@pytest.mark.parametrize("char", PLANE_CHARS, ids=[f"U+{ord(c):04X}" for c in PLANE_CHARS])
def test_unicode_on_every_plane(char: str) -> None:
    for text in (char, "a" + char + "z", char * 3, "\u00e9" + char, "\U0001f600" + char):
        encoded = json_dumps(text)
        assert encoded == b'"' + text.encode("utf-8") + b'"' == python_compact(text)
        assert json_loads(encoded) == text
        assert json_loads(json.dumps(text).encode()) == text  # \uXXXX escapes, pairs for astral
        assert json_loads(utf16_escaped(text, "\\u%04X")) == text  # upper-case hex digits too


def test_every_plane_in_one_string() -> None:
    text = "".join(chr(plane << 16 | 0x1234) for plane in range(17) if plane not in (3,)) + "".join(
        PLANE_CHARS
    )
    assert json_loads(json_dumps(text)) == text
    assert json_dumps({text: [text]}) == python_compact({text: [text]})


def test_long_strings_cross_the_encoders_buffer_steps() -> None:
    for n in (1023, 1024, 1025, 4096, 100_000):
        for text in ("x" * n, "é" * n, "\U0001f600" * n, "\x01" * n, ("é\x01" * n)[:n]):
            assert json_dumps(text) == python_compact(text)
            assert json_loads(json_dumps(text)) == text


def test_surrogate_pair_escapes_decode_to_one_character() -> None:
    assert json_loads(b'"\\ud83d\\ude00"') == "\U0001f600"
    assert json_loads(b'"\\uD83D\\uDE00"') == "\U0001f600"
    assert json_loads(b'"\\udbff\\udfff"') == "\U0010ffff"
    # A lone escaped surrogate is kept, as Python's json does; it cannot go back out.
    assert json_loads(b'"\\ud800"') == "\ud800"
    assert json_loads(b'"\\udc00\\ud800"') == "\udc00\ud800"


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        ("\ud800", r"lone surrogate \(U\+D800 at index 0\)"),
        ("ab\udfff", r"lone surrogate \(U\+DFFF at index 2\)"),
        ("é\udc80", r"lone surrogate \(U\+DC80 at index 1\)"),
        (["ok", "\ud800"], r"lone surrogate \(U\+D800 at index 0\).* \(at value\[1\]\)$"),
        (
            {"a": {"b": "x\ud800"}},
            r"lone surrogate \(U\+D800 at index 1\).* \(at value\['a'\]\['b'\]\)$",
        ),
        ({"\ud800": 1}, r"lone surrogate \(U\+D800 at index 0\)"),
    ],
)
def test_lone_surrogates_are_refused(value: Any, pattern: str) -> None:
    with pytest.raises(
        SerializationError, match=r"^cannot serialize a str holding a lone surrogate"
    ) as info:
        json_dumps(value)
    assert re.search(pattern, str(info.value)), str(info.value)
    assert "no UTF-8 form" in str(info.value)


# ------------------------------------------------------------- other types


def test_datetimes_are_isoformat_strings() -> None:
    utc = datetime.timezone.utc
    plus2 = datetime.timezone(datetime.timedelta(hours=2, minutes=30))
    values: list[datetime.date | datetime.time] = [
        datetime.datetime(2024, 2, 29, 13, 45, 7),
        datetime.datetime(2024, 2, 29, 13, 45, 7, 123456, tzinfo=utc),
        datetime.datetime(1, 1, 1, tzinfo=plus2),
        datetime.date(2024, 2, 29),
        datetime.date.max,
        datetime.time(0, 0),
        datetime.time(23, 59, 59, 999999, tzinfo=plus2),
    ]
    encoded = json_dumps(values)
    assert json_loads(encoded) == [v.isoformat() for v in values]
    assert encoded == python_compact([v.isoformat() for v in values])


def test_datetime_subclass_uses_its_isoformat() -> None:
    class Stamp(datetime.datetime):
        def isoformat(self, sep: str = "T", timespec: str = "auto") -> str:
            return "custom"

    assert json_dumps(Stamp(2020, 1, 1)) == b'"custom"'


def test_uuid_and_decimal_are_strings() -> None:
    u = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert json_dumps(u) == b'"12345678-1234-5678-1234-567812345678"'
    assert json_dumps({"id": uuid.UUID(int=0)}) == b'{"id":"00000000-0000-0000-0000-000000000000"}'
    for text in (
        "1.10",
        "-0",
        "1E+3",
        "0.000001",
        "123456789012345678901234567890.5",
        "NaN",
        "-Infinity",
        "sNaN",
    ):
        assert (
            json_dumps(decimal.Decimal(text)) == b'"' + str(decimal.Decimal(text)).encode() + b'"'
        )


class Color(enum.Enum):
    RED = 1
    GREEN = "green"
    BLUE = (0, 0, 255)
    NONE = None


class Level(enum.IntEnum):
    LOW = 1
    HUGE = 2**70


class Mode(str, enum.Enum):
    READ = "r"


class Perm(enum.IntFlag):
    R = 4
    W = 2


class Bad(enum.Enum):
    NAN = math.nan
    KEYS = {1: "x"}  # noqa: RUF012


def test_enums_are_their_values() -> None:
    assert (
        json_dumps([Color.RED, Color.GREEN, Color.BLUE, Color.NONE])
        == b'[1,"green",[0,0,255],null]'
    )
    assert json_dumps([Level.LOW, Level.HUGE]) == b"[1,1180591620717411303424]"
    assert json_dumps({"m": Mode.READ}) == b'{"m":"r"}'
    assert json_dumps(Perm.R | Perm.W) == b"6"


def test_enum_value_refusals_carry_the_path() -> None:
    with pytest.raises(
        SerializationError, match=r"^cannot serialize float nan.* \(at value\['c'\]\)$"
    ):
        json_dumps({"c": Bad.NAN})
    with pytest.raises(
        SerializationError, match=r"dict key of type 'int' \(1\).* \(at value\[0\]\)$"
    ):
        json_dumps([Bad.KEYS])


def test_sets_are_arrays() -> None:
    assert json_dumps(set()) == b"[]"
    assert json_dumps(frozenset()) == b"[]"
    assert json_dumps({1}) == b"[1]"
    assert sorted(json_loads(json_dumps({3, 1, 2}))) == [1, 2, 3]
    assert sorted(json_loads(json_dumps(frozenset({"a", "b"})))) == ["a", "b"]
    assert json_dumps({"s": frozenset({(1, 2)})}) == b'{"s":[[1,2]]}'


@dataclasses.dataclass
class Point:
    x: int
    y: float


@dataclasses.dataclass
class Shape:
    name: str
    points: list[Point]
    created: datetime.date
    tags: set[str] = dataclasses.field(default_factory=set)
    kind: ClassVar[str] = "shape"  # not a field
    scale: dataclasses.InitVar[int] = 1  # not a field either

    def __post_init__(self, scale: int) -> None:
        pass


@dataclasses.dataclass(frozen=True, slots=True)
class Slotted:
    a: int
    b: Slotted | None = None


def test_dataclasses_are_objects_of_their_fields() -> None:
    shape = Shape("tri", [Point(0, 0.5), Point(1, 2.0)], datetime.date(2024, 1, 2), {"x"}, scale=3)
    assert json_loads(json_dumps(shape)) == {
        "name": "tri",
        "points": [{"x": 0, "y": 0.5}, {"x": 1, "y": 2.0}],
        "created": "2024-01-02",
        "tags": ["x"],
    }
    assert json_dumps(Slotted(1, Slotted(2))) == b'{"a":1,"b":{"a":2,"b":null}}'


def test_a_dataclass_class_is_not_an_instance() -> None:
    with pytest.raises(SerializationError, match=r"cannot serialize a value of type 'type'"):
        json_dumps(Point)


def test_dataclass_refusal_carries_the_path() -> None:
    with pytest.raises(
        SerializationError, match=r"^cannot serialize float inf.* \(at value\[0\]\['y'\]\)$"
    ):
        json_dumps([Point(1, math.inf)])


def test_nested_dataclasses_within_python_s_recursion_budget() -> None:
    assert json_loads(json_dumps(nested(100, lambda inner: Slotted(0, inner), None)))["a"] == 0


def test_pydantic_models_dump_as_json_with_aliases() -> None:
    pydantic = pytest.importorskip("pydantic", minversion="2")

    class Inner(pydantic.BaseModel):  # type: ignore[name-defined,misc]
        when: datetime.datetime
        ident: uuid.UUID

    class Outer(pydantic.BaseModel):  # type: ignore[name-defined,misc]
        model_config = pydantic.ConfigDict(populate_by_name=True)
        user_name: str = pydantic.Field(alias="userName")
        amount: decimal.Decimal
        inner: Inner
        tags: frozenset[int] = frozenset()

    model = Outer(
        userName="ada",
        amount=decimal.Decimal("1.50"),
        inner=Inner(when=datetime.datetime(2024, 1, 2, 3, 4, 5), ident=uuid.UUID(int=1)),
        tags=frozenset({7}),
    )
    decoded = json_loads(json_dumps(model))
    assert decoded == model.model_dump(mode="json", by_alias=True)
    assert decoded["userName"] == "ada" and "user_name" not in decoded
    assert decoded["inner"]["when"] == "2024-01-02T03:04:05"
    assert json_loads(json_dumps({"models": [model, model]})) == {"models": [decoded, decoded]}


# ------------------------------------------------------ refusals and their paths


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            math.nan,
            r"^cannot serialize float nan: JSON has no NaN or infinity; store None or a string instead$",
        ),
        ({"a": [0, math.nan]}, r"^cannot serialize float nan: .* \(at value\['a'\]\[1\]\)$"),
        ([[[-math.inf]]], r"^cannot serialize float -inf: .* \(at value\[0\]\[0\]\[0\]\)$"),
        (
            {"a": {"it's": math.inf}},
            r"^cannot serialize float inf: .* \(at value\['a'\]\[\"it's\"\]\)$",
        ),
        (
            {1: "x"},
            r"^cannot serialize a dict key of type 'int' \(1\): JSON object keys are strings; "
            r"convert the keys with str\(\) first, or give the cache stringify_keys=True$",
        ),
        ({None: 1}, r"^cannot serialize a dict key of type 'NoneType' \(None\)"),
        ({True: 1}, r"^cannot serialize a dict key of type 'bool' \(True\)"),
        ({(1, 2): 1}, r"^cannot serialize a dict key of type 'tuple' \(\(1, 2\)\)"),
        ({b"k": 1}, r"^cannot serialize a dict key of type 'bytes' \(b'k'\)"),
        (
            {"a": [0, {1: 2}]},
            r"^cannot serialize a dict key of type 'int' \(1\).* \(at value\['a'\]\[1\]\)$",
        ),
        (
            b"raw",
            r"^cannot serialize a value of type 'bytes' to JSON; store JSON types, datetimes, UUIDs, Decimals, enums, sets, dataclasses or pydantic models, convert it first, or choose another serializer$",
        ),
        (
            {"k": [bytearray(b"x")]},
            r"^cannot serialize a value of type 'bytearray' to JSON; .* \(at value\['k'\]\[0\]\)$",
        ),
        (object(), r"^cannot serialize a value of type 'object' to JSON"),
        ([1, 2j], r"^cannot serialize a value of type 'complex' to JSON; .* \(at value\[1\]\)$"),
        (
            {"f": len},
            r"^cannot serialize a value of type 'builtin_function_or_method' to JSON; .* \(at value\['f'\]\)$",
        ),
        (datetime.timedelta(1), r"^cannot serialize a value of type 'datetime.timedelta' to JSON"),
        ({"set": {1, math.nan}}, r"^cannot serialize float nan: .* \(at value\['set'\]\[\d\]\)$"),
    ],
)
def test_refusal_message_and_path(value: Any, message: str) -> None:
    with pytest.raises(SerializationError, match=message):
        json_dumps(value)


def test_refusal_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        json_dumps(math.nan)


def test_circular_references_are_refused_with_the_path() -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    with pytest.raises(
        SerializationError,
        match=r"^cannot serialize a list that contains itself \(circular reference\) \(at value\[1\]\)$",
    ):
        json_dumps(loop)

    d: dict[str, Any] = {}
    d["a"] = [0, d]
    with pytest.raises(
        SerializationError,
        match=r"^cannot serialize a dict that contains itself \(circular reference\) \(at value\['a'\]\[1\]\)$",
    ):
        json_dumps(d)

    outer: dict[str, Any] = {"x": {"y": []}}
    outer["x"]["y"].append(outer["x"])
    with pytest.raises(
        SerializationError, match=r"circular reference\) \(at value\['x'\]\['y'\]\[0\]\)$"
    ):
        json_dumps(outer)


def list_cycle(period: int) -> list[Any]:
    """A list whose [0][0]... leads back to it after period steps."""
    first: list[Any] = []
    last = first
    for _ in range(period - 1):
        inner: list[Any] = []
        last.append(inner)
        last = inner
    last.append(first)
    return first


def dict_cycle(period: int) -> dict[str, Any]:
    first: dict[str, Any] = {}
    last = first
    for _ in range(period - 1):
        inner: dict[str, Any] = {}
        last["k"] = inner
        last = inner
    last["k"] = first
    return first


# Cycles are found when they drive the depth to the limit (csrc/json_encode.c,
# refuse_depth), yet reported as where they close: the path ends at the first
# container met again, whatever the period.
@pytest.mark.parametrize("period", [1, 2, 3, 300, MAX_DEPTH - 1, MAX_DEPTH])
def test_cycles_of_any_period_are_refused_where_they_close(period: int) -> None:
    with pytest.raises(SerializationError) as caught:
        json_dumps(list_cycle(period))
    assert str(caught.value) == (
        "cannot serialize a list that contains itself (circular reference) (at value"
        + "[0]" * period
        + ")"
    )
    with pytest.raises(SerializationError) as caught:
        json_dumps(dict_cycle(period))
    assert str(caught.value) == (
        "cannot serialize a dict that contains itself (circular reference) (at value"
        + "['k']" * period
        + ")"
    )


def test_cycle_below_an_acyclic_prefix_is_refused_where_it_closes() -> None:
    # 200 levels of plain nesting, then a cycle of period 5 entered at its
    # second list: the path runs to the repeat of that list.
    loop = list_cycle(5)
    with pytest.raises(SerializationError) as caught:
        json_dumps(nested(200, leaf=loop[0]))
    assert str(caught.value) == (
        "cannot serialize a list that contains itself (circular reference) (at value"
        + "[0]" * 205
        + ")"
    )
    # A tuple and a dict on the way down, and siblings before the cycle.
    cyclic: dict[str, Any] = {"a": 1}
    cyclic["b"] = (0, [cyclic])
    with pytest.raises(SerializationError) as caught:
        json_dumps(["x", cyclic])
    assert str(caught.value) == (
        "cannot serialize a dict that contains itself (circular reference) "
        "(at value[1]['b'][1][0])"
    )


def test_cycle_closing_past_the_limit_is_too_deep() -> None:
    # The repeat would come at level MAX_DEPTH + 1: the limit is met first,
    # as it was when cycles were looked for at every level.
    prefix = MAX_DEPTH - 10
    with pytest.raises(SerializationError) as caught:
        json_dumps(nested(prefix, leaf=list_cycle(11)))
    assert str(caught.value).startswith(
        f"cannot serialize a value nested deeper than {MAX_DEPTH} levels (at value[0]"
    )
    # ...and one level less closes it just in time.
    with pytest.raises(SerializationError, match=r"circular reference"):
        json_dumps(nested(prefix, leaf=list_cycle(10)))


@dataclasses.dataclass
class Link:
    next: Any = None


def test_cycles_through_dataclasses_are_refused_where_they_close() -> None:
    one = Link()
    one.next = one
    with pytest.raises(SerializationError) as caught:
        json_dumps(one)
    assert str(caught.value) == (
        "cannot serialize a Link that contains itself (circular reference) (at value['next'])"
    )
    two = Link(Link())
    two.next.next = two
    with pytest.raises(SerializationError) as caught:
        json_dumps({"top": two})
    assert str(caught.value) == (
        "cannot serialize a Link that contains itself (circular reference) "
        "(at value['top']['next']['next'])"
    )
    # through a list and a set's array on the way
    mixed = Link()
    mixed.next = [frozenset([1]), {"m": mixed}]
    with pytest.raises(SerializationError) as caught:
        json_dumps(mixed)
    assert str(caught.value) == (
        "cannot serialize a Link that contains itself (circular reference) "
        "(at value['next'][1]['m'])"
    )


def test_cycle_through_a_hook_calls_it_a_bounded_number_of_times() -> None:
    reads = 0

    @dataclasses.dataclass
    class Counted:
        next: Any = None

        def __getattribute__(self, name: str) -> Any:
            nonlocal reads
            if name == "next":
                reads += 1
            return object.__getattribute__(self, name)

    node = Counted()
    node.next = node
    with pytest.raises(SerializationError, match=r"Counted that contains itself"):
        json_dumps(node)
    # once per level down to the limit, where the cycle is found
    assert 1 <= reads <= MAX_DEPTH


def test_cycle_through_a_hook_near_the_recursion_limit_is_still_circular() -> None:
    # A cycle is now followed down to the depth limit before it is refused,
    # which charges Python's recursion count MAX_DEPTH // 16 times; called
    # with 100 frames to spare, the refusal is still the SerializationError.
    loop = Link()
    loop.next = [loop]

    def frames() -> int:
        frame, count = sys._getframe(), 0
        while frame is not None:
            count, frame = count + 1, frame.f_back
        return count

    def at(depth: int) -> None:
        if depth > 0:
            at(depth - 1)
            return
        with pytest.raises(SerializationError, match=r"Link that contains itself"):
            json_dumps(loop)

    at(sys.getrecursionlimit() - frames() - 100)


def test_refused_cycles_leave_the_recursion_count_balanced() -> None:
    # Each refusal unwinds MAX_DEPTH levels, charged to Python's recursion
    # count every few levels: a charge not given back would show as a
    # RecursionError after a few dozen refusals.
    loop = list_cycle(7)
    for _ in range(200):
        with pytest.raises(SerializationError, match="circular reference"):
            json_dumps(loop)
        with pytest.raises(SerializationError, match="nested deeper"):
            json_dumps(nested(MAX_DEPTH + 1))
    assert json_dumps(nested(MAX_DEPTH)) == b"[" * MAX_DEPTH + b"0" + b"]" * MAX_DEPTH


def test_shared_but_acyclic_references_are_fine() -> None:
    shared = [1, 2]
    assert json_dumps([shared, shared, {"a": shared}]) == b'[[1,2],[1,2],{"a":[1,2]}]'


def test_nesting_limit_of_the_encoder() -> None:
    assert json_dumps(nested(MAX_DEPTH)) == b"[" * MAX_DEPTH + b"0" + b"]" * MAX_DEPTH
    assert json_dumps(nested(MAX_DEPTH, lambda inner: {"k": inner})).count(b"{") == MAX_DEPTH
    for value in (
        nested(MAX_DEPTH + 1),
        nested(MAX_DEPTH + 1, lambda inner: {"k": inner}),
        nested(100_000),
    ):
        with pytest.raises(
            SerializationError,
            match=rf"^cannot serialize a value nested deeper than {MAX_DEPTH} levels \(at value\[",
        ):
            json_dumps(value)


def test_encoder_survives_a_failed_call() -> None:
    # A refusal leaves no state behind: the next call is clean.
    with pytest.raises(SerializationError):
        json_dumps([1, [2, [math.nan]]])
    assert json_dumps([1, [2, [3]]]) == b"[1,[2,[3]]]"


# --------------------------------------------------------------- known bugs


@dataclasses.dataclass
class Node:
    next: Any = None


def test_self_referencing_dataclass_is_refused() -> None:
    node = Node()
    node.next = node
    with pytest.raises(SerializationError):
        json_dumps(node)


@pytest.mark.parametrize(
    "wrap",
    [lambda inner: Node(inner), lambda inner: frozenset([inner])],
    ids=["dataclass", "frozenset"],
)
def test_nesting_within_the_limit_encodes_whatever_the_container(wrap: Any) -> None:
    depth = MAX_DEPTH - 2
    encoded = json_dumps(nested(depth, wrap, None))
    assert encoded.count(b"[") + encoded.count(b"{") == depth


def test_too_deep_dataclass_nesting_is_a_serialization_error() -> None:
    with pytest.raises(SerializationError, match="nested deeper than"):
        json_dumps(nested(MAX_DEPTH + 10, Node, None))


def test_dict_changed_during_encoding_is_not_written_inconsistently() -> None:
    target: dict[str, Any] = {}

    @dataclasses.dataclass
    class Mutator:
        x: int = 0

        def __getattribute__(self, name: str) -> Any:
            if name == "x" and isinstance(target.get("a"), Mutator):
                del target["a"]
                target["a"] = "again"
            return object.__getattribute__(self, name)

    target.update(a=Mutator(), b=1)
    try:
        encoded = json_dumps(target)
    except (RuntimeError, SerializationError):
        return
    keys = [k for k, _ in json.loads(encoded, object_pairs_hook=lambda pairs: pairs)]
    assert len(keys) == len(set(keys)), encoded


# ======================================================================= decoder


def test_decoder_inputs() -> None:
    doc = b'{"a":[1,2.5,"\xc3\xa9",null,true,false]}'
    expected = {"a": [1, 2.5, "é", None, True, False]}
    for form in (doc, bytearray(doc), memoryview(doc), doc.decode("utf-8")):
        assert json_loads(form) == expected
    assert json_loads(memoryview(b"xx[1]xx")[2:5]) == [1]


def test_decoder_refuses_non_text_types() -> None:
    with pytest.raises(TypeError):
        json_loads(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        json_loads(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("doc", "value"),
    [
        (b" \t\r\n[ 1 , 2 ]\n ", [1, 2]),
        (b'{"a":1,"a":2}', {"a": 2}),
        (b'{"a":1,"b":2,"a":3}', {"a": 3, "b": 2}),
        (b"123456789012345678901234567890", 123456789012345678901234567890),
        (b"-123456789012345678901234567890", -123456789012345678901234567890),
        (b"999999999999999999", 999999999999999999),
        (b"-999999999999999999", -999999999999999999),
        (b"9223372036854775807", 2**63 - 1),
        (b"9223372036854775808", 2**63),
        (b"-9223372036854775809", -(2**63) - 1),
        (b"1E400", math.inf),
        (b"-1e400", -math.inf),
        (b"1e-400", 0.0),
        (b"0.1e1", 1.0),
        (b"1.000000000000000000000000000000000000000000000000000000000000000000001", 1.0),
        (b'"\\u0000"', "\x00"),
        (b'"\\/\\"\\\\\\b\\f\\n\\r\\t"', '/"\\\b\f\n\r\t'),
        (b'"\\u00e9\\u00E9"', "éé"),
    ],
)
def test_decoder_values(doc: bytes, value: Any) -> None:
    assert same(json_loads(doc), value)
    assert same(json_loads(doc), json.loads(doc))


def test_decoder_shares_short_keys_between_records() -> None:
    records = json_loads(
        b'[{"name":1,"a-much-longer-key-than-the-cache-holds-xxxxxxxxx":1},{"name":2,"a-much-longer-key-than-the-cache-holds-xxxxxxxxx":2}]'
    )
    first, second = (list(r) for r in records)
    assert first == second
    assert first[0] is second[0]


def test_decoder_keys_with_escapes_and_unicode() -> None:
    assert json_loads(b'{"a\\u0062":1,"\xc3\xa9":2,"\\ud83d\\ude00":3,"":4}') == {
        "ab": 1,
        "é": 2,
        "\U0001f600": 3,
        "": 4,
    }
    assert json_loads(b'{"k":1,"K":2,"k":3}') == {"k": 3, "K": 2}


def test_decoder_nesting_limit() -> None:
    assert json_loads(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) == nested(MAX_DEPTH - 1, leaf=[])
    deep_object = b'{"k":' * MAX_DEPTH + b"0" + b"}" * MAX_DEPTH
    assert json_loads(deep_object) == nested(MAX_DEPTH, lambda inner: {"k": inner})
    with pytest.raises(
        SerializationError,
        match=rf"^invalid JSON at byte {MAX_DEPTH}: nested deeper than {MAX_DEPTH} levels$",
    ):
        json_loads(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1))
    with pytest.raises(SerializationError, match=rf"at byte {MAX_DEPTH}: nested deeper"):
        json_loads(b"[" * 1_000_000)


@pytest.mark.parametrize(
    ("doc", "offset", "what"),
    [
        (b"", 0, "expected a JSON value, found the end of the input"),
        (b"   ", 3, "expected a JSON value, found the end of the input"),
        (b"[1,]", 3, "expected a JSON value"),
        (b"[1 2]", 3, "expected ',' or ']' in array"),
        (b'{"a" 1}', 5, "expected ':' after object key"),
        (b'{"a":1,}', 7, "expected a string key in object"),
        (b"{'a':1}", 1, "expected a string key in object"),
        (b'{"a":1 "b":2}', 7, "expected ',' or '}' in object"),
        (b" [1] x", 5, "extra data after the JSON value"),
        (b"[1]]", 3, "extra data after the JSON value"),
        (b"nul", 0, "expected a JSON value"),
        (b"True", 0, "expected a JSON value"),
        (b"NaN", 0, "expected a JSON value"),
        (b"-", 1, "expected a digit"),
        (b"-a", 1, "expected a digit"),
        (b"01", 1, "extra data after the JSON value"),
        (b"1.", 2, "expected a digit after the decimal point"),
        (b"1.e5", 2, "expected a digit after the decimal point"),
        (b"1e", 2, "expected a digit in the exponent"),
        (b"1e+", 3, "expected a digit in the exponent"),
        (b"+1", 0, "expected a JSON value"),
        (b".5", 0, "expected a JSON value"),
        (b'"abc', 4, "unterminated string"),
        (b'"a\\', 2, "unterminated escape"),
        (b'"a\\u12"', 4, "invalid \\u escape (expected 4 hex digits)"),
        (b'"\\x"', 2, "invalid escape in string"),
        (b'"\\u00e9\\q"', 8, "invalid escape in string"),
        (b'"a\tb"', 2, "control character in string (escape it)"),
        (b'"a\\n\x01"', 4, "control character in string (escape it)"),
        (b'"\xff"', 1, "invalid UTF-8 in string"),
        (b'"ab\xc3"', 3, "invalid UTF-8 in string"),
        (b'"\\n\xed\xa0\x80"', 3, "invalid UTF-8 in string"),
        (b'"\xc0\xaf"', 1, "invalid UTF-8 in string"),
        (b'"\xf4\x90\x80\x80"', 1, "invalid UTF-8 in string"),
        (b"\xef\xbb\xbf{}", 0, "expected a JSON value"),
        (b"[\xff]", 1, "expected a JSON value"),
    ],
)
def test_decoder_error_offsets(doc: bytes, offset: int, what: str) -> None:
    with pytest.raises(SerializationError) as info:
        json_loads(doc)
    assert str(info.value) == f"invalid JSON at byte {offset}: {what}"


def test_decoder_offsets_for_str_input_count_utf8_bytes() -> None:
    with pytest.raises(
        SerializationError, match=r"^invalid JSON at byte 7: expected a JSON value$"
    ):
        json_loads('["é", x]')  # 'x' is character 6, byte 7


@pytest.mark.parametrize("text", ['"\ud800"', "\udc00", '["ok", "a\udfffb"]'])
def test_str_input_with_lone_surrogate_is_a_serialization_error_or_accepted(text: str) -> None:
    try:
        json_loads(text)
    except SerializationError:
        pass


# ---------------------------------------------------------------- string paths
# The encoder copies text in blocks (16, 8 or 4 bytes, the last block
# overlapping the one before) and tests each block for characters to escape;
# Latin-1 text goes in 16-character blocks up to its first non-ASCII
# character; a str whose UTF-8 form CPython already holds is copied from it.
# Every length around the block sizes, with the special character at every
# position, catches a block that skips or repeats a byte.

_SPECIALS = ['"', "\\", "\n", "\x00", "\x1f", "\x7f", "é", "\xff", "Ā", "東", "😀"]


def _expected(text: str) -> bytes:
    return json.dumps(text, ensure_ascii=False).encode()


@pytest.mark.parametrize("special", _SPECIALS, ids=[repr(c) for c in _SPECIALS])
def test_special_character_at_every_position(special: str) -> None:
    for n in range(0, 41):
        for base in ("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOP", "ñ" * 40):
            plain = base[:n]
            assert json_dumps(plain) == _expected(plain), (plain,)
            for i in range(n + 1):
                text = plain[:i] + special + plain[i:]
                assert json_dumps(text) == _expected(text), (n, i, text)


def _cache_utf8(text: str) -> None:
    """Makes CPython attach the UTF-8 form to text, as PyUnicode_AsUTF8 does."""
    as_utf8 = ctypes.pythonapi.PyUnicode_AsUTF8AndSize
    as_utf8.argtypes = (ctypes.py_object, ctypes.c_void_p)
    as_utf8.restype = ctypes.c_void_p
    size = sys.getsizeof(text)
    assert as_utf8(text, None)
    assert sys.getsizeof(text) > size, "the UTF-8 form was not attached"


def test_text_with_its_utf8_form_cached_by_cpython() -> None:
    for n in range(0, 41):
        for special in ("", '"', "\n", "\x00"):
            text = "é" + "x" * n + special + "東"
            expected = _expected(text)
            assert json_dumps(text) == expected
            _cache_utf8(text)
            assert json_dumps(text) == expected, text
            assert json_dumps({text: [text]}) == b"{" + expected + b":[" + expected + b"]}"


def test_long_latin1_and_wide_text() -> None:
    rng = random.Random(7)
    alphabets = ("abc é\xff\n\"\\", "abcĀ東\t", "ab😀東\x01")
    for alphabet in alphabets:
        for n in (15, 16, 17, 1023, 1024, 1025, 5000):
            text = "".join(rng.choice(alphabet) for _ in range(n))
            assert json_dumps(text) == _expected(text)
            assert json_dumps([text, {text: text}]) == json.dumps(
                [text, {text: text}], ensure_ascii=False, separators=(",", ":")
            ).encode()


def test_int_digits_around_every_power_of_ten() -> None:
    """Ints are written in 8-digit pieces (all eight digits computed at once)
    after a digit count estimated from the bit length: each power of ten,
    its neighbours and random values of every length are where those go
    wrong."""
    rng = random.Random(3)
    values = [0, 2**63 - 1, -(2**63), 2**64 - 1, 2**64]
    for k in range(21):
        values += [10**k - 1, 10**k, 10**k + 1]
    for digits in range(1, 21):
        values += [rng.randrange(10 ** (digits - 1), 10**digits) for _ in range(200)]
    for v in values:
        for signed in (v, -v):
            assert json_dumps(signed) == str(signed).encode()
    assert json_dumps(values) == json.dumps(values, separators=(",", ":")).encode()


# The float writer's seams (csrc/floats.c): to_decimal() for any double, the
# short-decimal shortcut (1e-4 <= |v| < 1e15, at most six places), integers,
# and the layouts of repr (positional for exponents -4..15, scientific
# outside). Every double formatted must be repr's text, and read back exactly.


def _doubles_from_bits(bits: list[int]) -> list[float]:
    values = [struct.unpack("<d", struct.pack("<Q", b))[0] for b in bits]
    return [v for v in values if math.isfinite(v)]


def _check_reprs(values: list[float]) -> None:
    encoded = json_dumps(values)
    expected = ("[" + ",".join(map(repr, values)) + "]").encode()
    if encoded != expected:
        for v in values:
            assert json_dumps(v) == repr(v).encode(), v
    back = json_loads(expected)
    assert [struct.pack("<d", v) for v in back] == [struct.pack("<d", v) for v in values]


def test_float_repr_of_the_smallest_subnormals() -> None:
    # Up to 1e-322 repr prints one or two digits (5e-323, 9.9e-323, 1e-322):
    # the shortest decimal can be a single digit there.
    bits = list(range(1, 50_000)) + [t * 10**k for t in range(1, 100) for k in range(1, 15)]
    values = _doubles_from_bits(bits)
    _check_reprs(values + [-v for v in values])


def test_float_repr_of_random_bit_patterns() -> None:
    rng = random.Random(1511)
    _check_reprs(_doubles_from_bits([rng.getrandbits(64) for _ in range(300_000)]))
    # subnormals only
    _check_reprs(_doubles_from_bits([rng.getrandbits(52) for _ in range(50_000)]))


def test_float_repr_of_powers_of_ten_and_two_and_their_neighbours() -> None:
    values = [float(f"1e{k}") for k in range(-323, 309)]
    values += [10.0**k for k in range(-307, 309)]
    values += [math.ldexp(1.0, k) for k in range(-1074, 1024)]
    values += [math.ldexp(1.5, k) for k in range(-1073, 1023)]
    neighbours = [math.nextafter(v, d) for v in values for d in (0.0, math.inf)]
    _check_reprs([v for v in values + neighbours if math.isfinite(v) and v != 0.0])


def test_float_repr_at_the_layout_and_shortcut_boundaries() -> None:
    edges = [
        1e-5, 1e-4, 0.001, 1.0, 10.0, 1e15, 1e16, 1e17, 2.0**51 / 1e6, 2.0**52, 2.0**53,
        9.999999999999999e-5, 9.999999999999999e15, 999999999999999.9, 0.1, 0.5,
    ]  # fmt: skip
    values = []
    for v in edges:
        for _ in range(4):
            values += [v, -v]
            v = math.nextafter(v, math.inf)
    for v in edges:
        for _ in range(4):
            v = math.nextafter(v, 0.0)
            values += [v, -v]
    _check_reprs(values)


def test_float_repr_of_decimals_of_every_length_and_exponent() -> None:
    rng = random.Random(15)
    values = []
    for digits in range(1, 18):
        for exp in range(-30, 31):
            for _ in range(8):
                m = rng.randrange(10 ** (digits - 1), 10**digits)
                v = float(f"{m}e{exp}")
                values += [v, math.nextafter(v, 0.0), math.nextafter(v, math.inf)]
    _check_reprs(values)


def test_float_repr_of_short_decimals_and_near_misses() -> None:
    # What the short-decimal shortcut takes (at most six places, 15 digits),
    # and doubles an ulp or two away from one, which its filter can let
    # through and its check must then refuse.
    rng = random.Random(6)
    values = []
    for _ in range(60_000):
        places = rng.randint(0, 8)
        v = round(rng.uniform(1e-4, 10 ** rng.randint(0, 15)), places)
        values += [v, math.nextafter(v, 0.0), math.nextafter(math.nextafter(v, math.inf), math.inf)]
    _check_reprs([v for v in values if v > 0])


def test_float_parse_is_float_for_decimals_of_every_length() -> None:
    # Every parse identical to float(): short decimals (the exact one-operation
    # path), up to 19 digits (Eisel-Lemire) and longer (CPython's fallback),
    # across the exponent range, including what rounds to subnormals, to the
    # largest finite double, and halfway cases.
    rng = random.Random(2015)
    texts = []
    for digits in (1, 2, 5, 9, 15, 16, 17, 18, 19, 20, 25, 40):
        for _ in range(400):
            m = str(rng.randrange(10 ** (digits - 1), 10**digits))
            exp = rng.randint(-345, 310)
            texts.append(f"{m}e{exp}")
            point = rng.randint(1, len(m))
            texts.append(f"-{m[:point]}.{m[point:] or '0'}e{rng.randint(-30, 30)}")
    for v in _doubles_from_bits([rng.getrandbits(64) for _ in range(5000)]):
        # halfway between v and its successor, written out in full
        up = math.nextafter(v, math.inf)
        if math.isfinite(up):
            from decimal import Decimal

            texts.append(format((Decimal(v) + Decimal(up)) / 2, "f" if abs(v) < 1e20 else "e"))
    doc = ("[" + ",".join(texts) + "]").encode()
    got = json_loads(doc)
    want = [float(t) for t in texts]
    assert [struct.pack("<d", v) for v in got] == [struct.pack("<d", v) for v in want]


def test_two_byte_strs_with_ascii_runs_of_every_length() -> None:
    # csrc/json_encode.c writes eight plain ASCII characters of a two-byte
    # str at once and the rest one at a time: every mix of the two, escapes
    # and lone surrogates (refused, with their index) included.
    rng = random.Random(8)
    pool = ["a", "b", '"', "\\", "\n", "\x01", "\x7f", "é", "Ā", "日", "\uffff", "\u0800", "\u07ff"]
    for _ in range(5000):
        text = "日" + "".join(rng.choice(pool) * rng.randint(1, 12) for _ in range(rng.randint(1, 9)))
        assert json_dumps(text) == python_compact(text), repr(text)
    for position in range(1, 40):
        text = "日" + "a" * (position - 1) + "\ud800" + "b" * 9
        with pytest.raises(SerializationError, match=f"at index {position}\\)"):
            json_dumps(text)


def test_empty_containers_are_written_without_entering_them_within_the_depth_limit() -> None:
    # [] {} and () are written on the spot (in lists, as dict values, at
    # the top), but the depth limit still counts them.
    value = {"a": [], "b": {}, "c": (), "d": [[], {}, ()], "e": [{"f": []}]}
    assert json_dumps(value) == python_compact(value)
    for empty in ([], {}, ()):
        assert json_dumps(empty) == (b"{}" if empty == {} else b"[]")
        assert json_dumps(nested(MAX_DEPTH - 1, leaf=empty)).count(b"[") == MAX_DEPTH - 1 + (empty != {})
        assert json_dumps(nested(MAX_DEPTH - 1, lambda inner: {"k": inner}, leaf=empty))
        with pytest.raises(SerializationError, match=f"nested deeper than {MAX_DEPTH} levels"):
            json_dumps(nested(MAX_DEPTH, leaf=empty))
        with pytest.raises(SerializationError, match=f"nested deeper than {MAX_DEPTH} levels"):
            json_dumps(nested(MAX_DEPTH, lambda inner: {"k": inner}, leaf=empty))


def test_the_vector_digit_writers_divisions() -> None:
    # sixteen_digits() in csrc/floats.c: n / 10^4 = n * 0xd1b71759 >> 45 for
    # n < 10^8 (exact for every n below 2^32: the multiplier overshoots
    # 2^45 / 10^4 by e / 10^4 with n * e < 2^45), then in 16-bit lanes
    # x / 100 = (x * 5243 >> 16) >> 3 for x < 10^4 and p / 10 = (p * 103
    # mod 2^16) >> 10 for p < 100, both checked on every input.
    m = 0xD1B71759
    assert m == -(-(2**45) // 10**4)
    assert (2**32) * (m * 10**4 - 2**45) < 2**45
    for n in (0, 9999, 10**4, 10**8 - 1, 2**32 - 1, 12345678, 99990000, 10001):
        assert n * m >> 45 == n // 10**4
    assert all(((x * 5243) >> 16) >> 3 == x // 100 for x in range(10**4))
    assert all(x * 5243 >> 16 < 2**16 for x in range(10**4))
    assert all(((p * 103) & 0xFFFF) >> 10 == p // 10 and p * 103 < 2**16 for p in range(100))
    # ...and what they write, on the digit counts and the positions they serve
    for digits in range(1, 18):
        for value in (10 ** (digits - 1), 10**digits - 1, int("1234567890123456789"[:digits])):
            for exponent in (-20, -5, -digits, -1, 0, 3, 300 - digits):
                text = repr(float(f"{value}e{exponent}"))
                assert json_dumps(float(text)) == text.encode()


def test_the_writers_division_table() -> None:
    # csrc/floats.c divides by 10^k as (n * m >> 64) >> shift; its table
    # must be m = ceil(2^(63+l) / 10^k), shift = l - 1, l = ceil(log2(10^k)),
    # which is exact for every n < 10^17 (checked here on the edges).
    source = pathlib.Path(__file__).resolve().parent.parent / "csrc" / "floats.c"
    if not source.exists():
        pytest.skip("csrc/floats.c is not beside the tests (installed package)")
    table = re.search(r"pow10_div\[18\] = \{(.*?)\};", source.read_text(), re.S)
    assert table is not None
    rows = re.findall(r"\{0x([0-9a-f]+)ULL, (\d+)\}, /\* 10\^(\d+) \*/", table.group(1))
    assert [int(k) for _, _, k in rows] == list(range(1, 18))
    rng = random.Random(17)
    for m_hex, shift, k_text in rows:
        k, m, shift_ = int(k_text), int(m_hex, 16), int(shift)
        d = 10**k
        l = (d - 1).bit_length()
        assert (m, shift_) == (-(-(2 ** (63 + l)) // d), l - 1)
        ns = [d * j + o for j in (0, 1, 2, 7, 10**17 // d - 1) for o in (-1, 0, 1)]
        ns += [10**17 - 1] + [rng.randrange(10**17) for _ in range(2000)]
        for n in ns:
            if 0 <= n < 10**17:
                assert (n * m >> 64) >> shift_ == n // d, (k, n)
