"""Property tests of the JSON codec (hypothesis) against Python's json module.

For any JSON-shaped value (None, bools, ints of any size, finite floats, text
on every plane, lists, dicts with text keys, nested):

- json_loads(json_dumps(v)) is v, exactly (floats bit for bit);
- json_dumps(v) is what json.dumps writes compactly with ensure_ascii=False,
  and json.loads reads it back as v;
- what json.dumps writes (ASCII-escaped or not, compact or indented),
  json_loads reads back as v.
And for any text at all, json_loads either returns what Python's json reads
from it or refuses it with SerializationError.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from json_support import MAX_DEPTH, nesting_depth, python_strict, same

from redis_cache._core import json_dumps, json_loads
from redis_cache.errors import SerializationError

hypothesis = pytest.importorskip(
    "hypothesis", reason="hypothesis is not installed (scripts/requirements-dev.txt)"
)
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Text with no lone surrogates (hypothesis' default leaves out category Cs),
# biased towards what codecs get wrong: escapes, controls, astral characters.
_tricky_chars = st.sampled_from(
    [
        '"',
        "\\",
        "/",
        "\b",
        "\f",
        "\n",
        "\r",
        "\t",
        "\x00",
        "\x1f",
        "\x7f",
        "\u2028",
        "\u2029",
        "\ufeff",
        "\uffff",
        "\U0001f600",
        "\U0010ffff",
    ]
)
texts = st.one_of(
    st.text(),
    st.text(alphabet=st.one_of(_tricky_chars, st.characters(codec="utf-8")), max_size=40),
    st.text(alphabet=st.characters(min_codepoint=0x10000, codec="utf-8"), max_size=10),
)

ints = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.integers(min_value=-(10**600), max_value=10**600),
    st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 10**18 - 1, 10**18, -(10**18) + 1]),
)

floats = st.floats(allow_nan=False, allow_infinity=False)

scalars = st.one_of(st.none(), st.booleans(), ints, floats, texts)

json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=8),
        st.dictionaries(texts, children, max_size=8),
    ),
    max_leaves=30,
)


@SETTINGS
@given(json_values)
@example(0.1)
@example(-0.0)
@example(5e-324)
@example(1.7976931348623157e308)
@example(1e16)
@example(10**4000)
@example({"": [None, {"\u2028": "\U0010ffff"}]})
def test_round_trip(value: Any) -> None:
    assert same(json_loads(json_dumps(value)), value)


@SETTINGS
@given(json_values)
def test_encoder_writes_what_python_writes_and_reads(value: Any) -> None:
    encoded = json_dumps(value)
    assert encoded == json.dumps(
        value, ensure_ascii=False, separators=(",", ":"), allow_nan=False
    ).encode("utf-8")
    assert same(json.loads(encoded), value)


@SETTINGS
@given(json_values, st.booleans(), st.sampled_from([None, 0, 2, "\t"]))
def test_decoder_reads_what_python_writes(value: Any, ensure_ascii: bool, indent: Any) -> None:
    text = json.dumps(value, ensure_ascii=ensure_ascii, indent=indent)
    assert same(json_loads(text.encode("utf-8")), value)
    assert same(json_loads(text), value)
    assert same(json_loads(json.dumps(value)), value)


@settings(SETTINGS, max_examples=100)
@given(
    json_values, st.text(alphabet=" \t\r\n", max_size=4), st.text(alphabet=" \t\r\n", max_size=4)
)
def test_whitespace_around_the_value_is_ignored(value: Any, before: str, after: str) -> None:
    assert same(json_loads((before + json.dumps(value) + after).encode()), value)


@SETTINGS
@given(
    st.dictionaries(st.sampled_from(["a", "b", "k", "é", "a" * 40]), ints, min_size=1),
    st.lists(st.sampled_from(["a", "b", "k", "é", "a" * 40]), max_size=6),
)
def test_duplicate_keys_last_wins_like_python(base: dict[str, int], repeated: list[str]) -> None:
    members = [f"{json.dumps(k)}:{v}" for k, v in base.items()] + [
        f"{json.dumps(k)}:{i}" for i, k in enumerate(repeated)
    ]
    doc = ("{" + ",".join(members) + "}").encode()
    assert same(json_loads(doc), json.loads(doc))


@SETTINGS
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_float_text_is_python_repr(value: float) -> None:
    assert json_dumps(value) == repr(value).encode()
    assert same(json_loads(repr(value).encode()), value)


@SETTINGS
@given(
    st.from_regex(
        r"\A-?(0|[1-9][0-9]{0,30})(\.[0-9]{1,30})?([eE][+-]?[0-9]{1,4})?\Z", fullmatch=True
    )
)
def test_number_literals_decode_like_python(literal: str) -> None:
    assert same(json_loads(literal.encode()), json.loads(literal))


@SETTINGS
@given(
    st.one_of(
        st.binary(max_size=64),
        texts.map(lambda t: t.encode("utf-8")),
        json_values.map(lambda v: json.dumps(v).encode()[: len(json.dumps(v)) // 2]),
    )
)
def test_any_bytes_return_pythons_value_or_refuse(data: bytes) -> None:
    try:
        value = json_loads(data)
    except SerializationError as exc:
        assert str(exc).startswith("invalid JSON at byte ")
        try:
            reference = python_strict(data)
        except (ValueError, RecursionError):
            return
        assert "nested deeper" in str(exc) and nesting_depth(reference) > MAX_DEPTH, (
            data,
            reference,
        )
        return
    assert same(value, python_strict(data))
