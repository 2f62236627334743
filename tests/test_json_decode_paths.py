"""The decoder's fast paths and the edges between them and the slow ones.

csrc/json_decode.c reads plain ASCII strings 16 bytes at a time (with a
byte-at-a-time tail near the end of the input), decodes non-ASCII strings
with a strict UTF-8 decoder of its own (one checking pass, one filling the
str at its final kind), copies the runs of escaped strings whole and checks
their UTF-8 once, falls back to a checked byte-at-a-time path for errors and
surrogate escapes, skips indentation 16 bytes at a time, caches short keys and short string values by a
fingerprint (length and two words), reads short ints and decimals in one
pass, and collects container items on a stack that starts on the C stack and
moves to the heap. Each test here aims at one of those seams; Python's json
module is the oracle.
"""

from __future__ import annotations

import gc
import json
import random
import sys
import tracemalloc

import pytest
from redis_cache import SerializationError
from redis_cache._core import json_loads

from json_support import same


def check(doc: bytes) -> None:
    """The decoder reads doc exactly as Python's json does."""
    assert same(json_loads(doc), json.loads(doc)), doc[:200]


def error_of(doc: bytes) -> str:
    with pytest.raises(SerializationError) as info:
        json_loads(doc)
    return str(info.value)


# -- containers and the item stack ---------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 255, 256, 257, 1000, 100_000])
def test_lists_and_dicts_of_any_size(n: int) -> None:
    check(json.dumps(list(range(n))).encode())
    check(json.dumps({f"k{i}": i for i in range(n)}).encode())
    check(json.dumps([{"a": i, "b": [i, str(i)]} for i in range(n)]).encode())


def test_pending_items_of_nested_containers_outgrow_the_inline_stack() -> None:
    # Each level leaves items (or a key) waiting while the next level is
    # decoded, so the stack grows in the middle of the recursion.
    levels = 200  # 400 containers deep, 3 pending items each
    doc = "".join(f'[{i},"s{i}",{{"k{i}":' for i in range(levels)) + "null"
    doc += "}]" * levels
    check(doc.encode())


def test_errors_after_the_stack_moved_to_the_heap() -> None:
    prefix = ("[" + "1," * 5000) + '{"a":[' + '"x",' * 600
    assert error_of((prefix + "]").encode()).endswith("expected a JSON value")
    assert error_of((prefix + '"x"]').encode()).endswith("expected ',' or '}' in object")
    assert error_of((prefix + '"x"]}').encode()).endswith("expected ',' or ']' in array")


def test_failed_decodes_free_what_they_had_decoded() -> None:
    docs = [
        b"[" + b'"abcdefghijklmnopqrstuvwxyz",' * 2000 + b"nul]",
        b'{"a":{"b":[1,2.5,"x",{"c":"yy"}],"d":' + b"[" * 300 + b"1.",
        b'[{"k":"' + "é".encode() * 40 + b'"},"\xff"]',
        b'{"' + b"k" * 40 + b'":1,"a":"\\u12"}',
        b"[" + b"123456789012345678901234567890," * 100 + b"-]",
    ]
    for doc in docs:
        with pytest.raises(SerializationError):
            json_loads(doc)
    gc.collect()
    tracemalloc.start()
    try:
        for doc in docs * 20:
            with pytest.raises(SerializationError):
                json_loads(doc)
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        objects = len(gc.get_objects())
        for doc in docs * 200:
            with pytest.raises(SerializationError):
                json_loads(doc)
        gc.collect()
        growth = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert growth < 100_000, growth
    assert len(gc.get_objects()) - objects < 50


def refcounts(value: dict[str, list[object]]) -> list[int]:
    # Counted here, not in an assert (pytest keeps its operands alive).
    items = value["key"]
    return [sys.getrefcount(items)] + [sys.getrefcount(x) for x in items]


def test_decoded_values_hold_no_extra_references() -> None:
    doc = b'{"key":[1000000,2.5,"a much longer string than any cache holds"]}'
    assert refcounts(json_loads(doc)) == refcounts(json.loads(doc))


# -- strings -------------------------------------------------------------------


@pytest.mark.parametrize("length", range(0, 40))
def test_plain_strings_of_every_length_at_the_end_of_the_input(length: int) -> None:
    text = "".join(chr(0x20 + (i * 7) % 95) for i in range(length)).replace('"', "q")
    text = text.replace("\\", "b")
    doc = json.dumps(text).encode()
    check(doc)
    # Without a NUL (or anything) after the buffer: a slice of a memoryview.
    padded = doc + b"X" * 3
    assert json_loads(memoryview(padded)[: len(doc)]) == text
    check(b"[" + doc + b"," + doc + b"]")


@pytest.mark.parametrize("position", range(0, 34))
@pytest.mark.parametrize(
    "insert",
    [b"\\n", b'\\"', b"\\u00e9", "é".encode(), "€".encode(), "😀".encode()],
)
def test_special_bytes_at_every_position(position: int, insert: bytes) -> None:
    body = b"abcdefghijklmnopqrstuvwxyz0123456789"[:position] + insert + b"tail"
    check(b'"' + body + b'"')
    check(b'{"' + body + b'":"' + body + b'"}')


@pytest.mark.parametrize("position", [0, 1, 7, 15, 16, 17, 31, 40])
def test_unterminated_and_control_characters_after_non_ascii(position: int) -> None:
    lead = b"a" * position
    assert error_of(b'"' + lead + "é".encode() + b"abc") == (
        f"invalid JSON at byte {position + 6}: unterminated string"
    )
    assert error_of(b'"' + lead + "é".encode() + b"ab\x01c\"") == (
        f"invalid JSON at byte {position + 5}: control character in string (escape it)"
    )


@pytest.mark.parametrize(
    ("doc", "offset"),
    [
        # Invalid UTF-8 that CPython's decoder refuses on the fast path: the
        # offset is still that of the first bad byte.
        (b'"caf\xc3\xa9 \xed\xa0\x80"', 7),
        (b'"\xc3\xa9\xc3"', 3),
        (b'"\xc3\xa9' + b"x" * 30 + b'\xe2\x82"', 33),
        (b'"\xc3\xa9\xf4\x90\x80\x80"', 3),
        (b'"\xc3\xa9\xc0\xaf"', 3),
        (b'"\xc3\xa9\xe0\x80\xaf"', 3),
        (b'"\xc3\xa9\xf8\x88\x80\x80\x80"', 3),
        (b'"\xc3\xa9\x80"', 3),
        # Invalid UTF-8 before an escape or a control character: the first
        # problem is the one reported.
        (b'"\xc3\xa9\xff\\n"', 3),
        (b'"\xc3\xa9\xff\x01"', 3),
        (b'{"\xc3\xa9\xff":1}', 4),
    ],
)
def test_invalid_utf8_offsets(doc: bytes, offset: int) -> None:
    assert error_of(doc) == f"invalid JSON at byte {offset}: invalid UTF-8 in string"


def test_every_two_byte_sequence_after_a_valid_one() -> None:
    for lead in range(0x80, 0x100):
        for follow in (0x00, 0x22, 0x41, 0x80, 0xBF, 0xC0):
            doc = b'"\xc3\xa9' + bytes([lead, follow]) + b'x"'
            try:
                expected = json.loads(doc.decode("utf-8"))
            except UnicodeDecodeError:
                with pytest.raises(SerializationError, match="invalid UTF-8 in string"):
                    json_loads(doc)
                continue
            except json.JSONDecodeError:
                with pytest.raises(SerializationError):
                    json_loads(doc)
                continue
            assert json_loads(doc) == expected


# -- the key and string caches -------------------------------------------------


def fingerprint_twins() -> list[str]:
    """Strings whose lengths or middles differ while their first and last
    bytes agree: what a fingerprint could confuse."""
    twins = ["a" * n for n in range(0, 34)]
    twins += ["ab" * (n // 2) + "a" * (n % 2) for n in range(0, 34)]
    twins += ["abcdefgh" + m + "stuvwxyz" for m in ("", "i", "ij", "MIDDLE", "middle", "x" * 16)]
    twins += ["abcd" + m + "wxyz" for m in ("", "e", "ef", "efg")]
    return twins


def test_fingerprint_twins_stay_apart() -> None:
    twins = fingerprint_twins()
    for _ in range(2):  # the second round reads them back from the caches
        check(json.dumps(twins).encode())
        check(json.dumps({t: i for i, t in enumerate(twins)}).encode())
        check(json.dumps([{t: t} for t in twins]).encode())


def test_many_distinct_short_strings_evict_each_other_correctly() -> None:
    rng = random.Random(5)
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -_./:"
    words = ["".join(rng.choices(alphabet, k=rng.randint(0, 34))) for _ in range(5000)]
    for _ in range(2):
        check(json.dumps(words).encode())
        check(json.dumps([{w: w, w[::-1]: i} for i, w in enumerate(words)]).encode())


def test_repeated_keys_and_short_values_are_shared() -> None:
    records = json_loads(b'[{"country":"FR","tags":["ops","dev"]},{"country":"FR","tags":["ops"]}]')
    assert records[0]["country"] is records[1]["country"]
    assert records[0]["tags"][0] is records[1]["tags"][0]
    assert list(records[0])[0] is list(records[1])[0]


def test_cached_strings_survive_the_values_that_used_them() -> None:
    first = json_loads(b'{"shared-key":"shared value"}')
    key = next(iter(first))
    del first
    gc.collect()
    second = json_loads(b'{"shared-key":"shared value"}')
    assert second == {"shared-key": "shared value"}
    assert next(iter(second)) == key


# -- numbers -------------------------------------------------------------------


NUMBERS = [
    "0", "-0", "7", "-7", "256", "257", "-5", "-6",
    "999999999999999999", "-999999999999999999",  # 18 digits: the fast path
    "1000000000000000000", "-1000000000000000000",  # 19 digits: the slow path
    "9223372036854775807", "-9223372036854775808", "18446744073709551616",
    "123456789012345678901234567890",
    "0.0", "-0.0", "0.5", "-0.5", "1.25", "95.6", "0.1072", "44.058219",
    "0.000001", "0.0000000000000000001", "0.00000000000000000000000001",
    "123456789012345.6", "1234567890123456.7", "1234567890.123456789",
    "0.8444218515250481", "0.12345678901234567", "0.123456789012345678",
    "0.1234567890123456789", "9007199254740993.0", "9007199254740992.5",
    "1.7976931348623157", "4.9406564584124654", "2.2250738585072014",
    "1e5", "1E5", "-1.5e-3", "1.5E+300", "2.5e-320", "1e400", "-1e400", "0e0",
    "10000000000000000000000.0", "0.30000000000000004", "100.0",
]


@pytest.mark.parametrize("literal", NUMBERS)
def test_number_literals(literal: str) -> None:
    check(literal.encode())
    check(f"[{literal},{literal}]".encode())
    check(f'{{"n":{literal}}}'.encode())


def test_random_decimals_of_every_length() -> None:
    rng = random.Random(9)
    literals = []
    for _ in range(20_000):
        int_digits = rng.randint(1, 21)
        frac_digits = rng.randint(1, 21)
        int_part = str(rng.randint(1, 9)) + "".join(rng.choices("0123456789", k=int_digits - 1))
        if rng.random() < 0.3:
            int_part = "0"
        frac = "".join(rng.choices("0123456789", k=frac_digits))
        sign = "-" if rng.random() < 0.5 else ""
        literals.append(f"{sign}{int_part}.{frac}")
        literals.append(f"{sign}{int_part}")
    check(("[" + ",".join(literals) + "]").encode())


@pytest.mark.parametrize(
    ("doc", "offset", "what"),
    [
        (b"[-]", 2, "expected a digit"),
        (b"[00]", 2, "expected ',' or ']' in array"),
        (b"[-01]", 3, "expected ',' or ']' in array"),
        (b"[1.]", 3, "expected a digit after the decimal point"),
        (b"[1.5e]", 5, "expected a digit in the exponent"),
        (b"[1.5.2]", 4, "expected ',' or ']' in array"),
        (b"[1234567890123456789012.]", 24, "expected a digit after the decimal point"),
    ],
)
def test_number_errors(doc: bytes, offset: int, what: str) -> None:
    assert error_of(doc) == f"invalid JSON at byte {offset}: {what}"



# -- non-ASCII text: our own UTF-8 decoder, escaped strings, indentation -------

_NON_ASCII = ["é", "ÿ", "\u0080", "Ā", "ߠ", "\u0800", "日本語", "\uffff", "\ue000", "😀", "\U0010ffff", "\U00010000"]


def test_non_ascii_text_of_every_kind_among_ascii_runs() -> None:
    # Latin-1, BMP and astral characters, alone and mixed, with ASCII runs of
    # every length around them (the 8-byte ASCII steps), with and without
    # escapes (the escaped-string path): the str must equal Python's, which
    # for str also means the same kind (1, 2 or 4 bytes a character).
    rng = random.Random(7)
    for _ in range(3000):
        parts = []
        for _ in range(rng.randint(1, 6)):
            parts.append("a" * rng.randint(0, 20))
            parts.append(rng.choice(_NON_ASCII) * rng.randint(1, 3))
            if rng.random() < 0.3:
                parts.append(rng.choice(['"', "\\", "\n", "\t", "\x01", "/"]))
        text = "".join(parts)
        for ensure_ascii in (False, True):
            doc = json.dumps([text, {text: text}], ensure_ascii=ensure_ascii).encode()
            decoded = json_loads(doc)
            assert decoded == [text, {text: text}]
            assert sys.getsizeof(decoded[0]) == sys.getsizeof(text)


def test_strings_whose_widest_character_comes_last() -> None:
    for widest in ("é", "Ā", "😀"):
        for n in range(0, 40):
            text = "x" * n + "é" * (n % 3) + widest
            check(json.dumps(text, ensure_ascii=False).encode())
            check(json.dumps(text + "\n", ensure_ascii=False).encode())


@pytest.mark.parametrize(
    "sequence",
    [
        b"\xc0\xaf", b"\xc1\xbf", b"\xe0\x80\xaf", b"\xe0\x9f\xbf", b"\xed\xa0\x80",
        b"\xed\xbf\xbf", b"\xf0\x80\x80\xaf", b"\xf0\x8f\xbf\xbf", b"\xf4\x90\x80\x80",
        b"\xf5\x80\x80\x80", b"\xff", b"\x80", b"\xc3", b"\xe6\x97", b"\xf0\x9f\x98",
        b"\xc3\x28", b"\xe6\x28\xa5", b"\xf0\x9f\x28\x80",
    ],
)  # fmt: skip
@pytest.mark.parametrize("escaped", [False, True])
def test_invalid_utf8_is_refused_where_python_refuses_it(sequence: bytes, escaped: bool) -> None:
    # Overlong forms, surrogates, past U+10FFFF, truncated and broken
    # sequences: refused at the offset of the bad sequence, in plain and in
    # escaped strings (which go back to the checked path to find it).
    with pytest.raises(UnicodeDecodeError):
        sequence.decode("utf-8")
    prefix = b'["ok", "\xc3\xa9ab' + (b"\\n" if escaped else b"")
    doc = prefix + sequence + b'z"]'
    assert error_of(doc) == f"invalid JSON at byte {len(prefix)}: invalid UTF-8 in string"


def test_surrogate_escapes_in_strings_with_non_ascii_text() -> None:
    for escape in ("\\ud83d\\ude00", "\\ud83d", "\\ude00", "\\ud83dx", "\\ude00\\ud83d", "\\u00e9", "\\u0800", "\\uffff"):
        for around in ("", "é", "日本", "😀", "a" * 17):
            doc = f'["{around}{escape}{around}", "{escape}"]'.encode()
            assert same(json_loads(doc), json.loads(doc)), doc


def test_bad_escapes_after_non_ascii_text_keep_their_offsets() -> None:
    for bad in ("\\x", "\\u12", "\\u12g4", "\\", "\x01"):
        doc = f'["日本語\\n{bad}"]'.encode()
        with pytest.raises(json.JSONDecodeError):
            json.loads(doc)
        with pytest.raises(SerializationError):
            json_loads(doc)
    assert error_of('"日本\\q"'.encode()).startswith("invalid JSON at byte 8: ")


@pytest.mark.parametrize(
    "doc",
    [b"1 ", b" 1", b"[1, 2]", b'{"a": 1, "b": [ ]}', b"[ 1 , 2 ]", b"[1,  2]", b"[1, \t2]", b' {"a": 1} '],
)
def test_single_spaces_skipped_inline(doc: bytes) -> None:
    """One space between tokens has an inline fast path; a space before the
    end of the text, or before another whitespace byte, takes the loop."""
    check(doc)


@pytest.mark.parametrize("doc", [b"[1, \x01]", b"[1, \x7f]", b'{"a": \x00}', b"1 \x01"])
def test_a_bad_byte_after_one_space_is_an_error(doc: bytes) -> None:
    with pytest.raises(ValueError):
        json.loads(doc)
    with pytest.raises(SerializationError):
        json_loads(doc)


@pytest.mark.parametrize("indent", [0, 1, 2, 4, 7, 8, 15, 16, 17, 33, "\t", "\r\n  \t"])
def test_indented_documents(indent: int | str) -> None:
    value = {"a": [1, 2.5, {"b": "日本", "c": [None, True, []]}], "d": {}, "e": "x" * 40}
    text = json.dumps(value, indent=indent)
    check(text.encode())
    check(text.encode() + b" " * 40 + b"\n")
    check(b" \t\r\n" * 9 + text.encode())
