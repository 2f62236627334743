"""Helpers shared by the JSON codec tests and the fuzz harness (tests/fuzz/).

``same(a, b)`` is the equality the codec tests use: exact and NaN-safe. Floats
match only bit for bit (so ``-0.0`` differs from ``0.0``), an int never equals
a float, and a value always equals itself even when it holds NaN.

``python_reference(data)`` is what Python's json module reads from the same
bytes, the oracle the decoder is compared with.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

#: Where the shared checkout keeps nst/JSONTestSuite: ``../shared`` beside the repo.
JSON_TEST_SUITE = (
    Path(__file__).resolve().parents[1].parent / "shared" / "conformance" / "JSONTestSuite"
)
TEST_PARSING = JSON_TEST_SUITE / "test_parsing"
TEST_TRANSFORM = JSON_TEST_SUITE / "test_transform"

#: The decoder's and the encoder's nesting limit (RC_JSON_MAX_DEPTH in csrc/json.h).
MAX_DEPTH = 512


def suite_files(prefix: str = "") -> list[Path]:
    """The test_parsing files whose names start with prefix, sorted; [] when absent."""
    if not TEST_PARSING.is_dir():
        return []
    return sorted(p for p in TEST_PARSING.iterdir() if p.is_file() and p.name.startswith(prefix))


def transform_files() -> list[Path]:
    """The test_transform files, sorted; [] when the suite has none."""
    if not TEST_TRANSFORM.is_dir():
        return []
    return sorted(p for p in TEST_TRANSFORM.iterdir() if p.is_file())


def same(a: Any, b: Any) -> bool:
    """Exact, NaN-safe structural equality of two decoded JSON values.

    Iterative, so values nested as deep as the codec allows compare too.
    """
    pending = [(a, b)]
    while pending:
        x, y = pending.pop()
        if type(x) is not type(y):
            return False
        if isinstance(x, float):
            if struct.pack("<d", x) != struct.pack("<d", y) and not (
                math.isnan(x) and math.isnan(y)
            ):
                return False
        elif isinstance(x, list):
            if len(x) != len(y):
                return False
            pending.extend(zip(x, y))
        elif isinstance(x, dict):
            # Key order too: both decoders keep the document's order (a
            # duplicate key keeps its first position and takes the last value).
            if list(x) != list(y):
                return False
            pending.extend((x[k], y[k]) for k in x)
        elif x != y:
            return False
    return True


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def python_reference(data: bytes) -> Any:
    """What Python's json module decodes from data, read as Python would.

    json.loads(bytes) guesses UTF-8/16/32 from the first bytes; when it cannot
    take the bytes directly (a BOM, say), the text is decoded the way it would
    be (json.detect_encoding, surrogatepass) and parsed as str. NaN, Infinity
    and -Infinity, which Python accepts and RFC 8259 does not, are refused.
    Raises ValueError (or UnicodeDecodeError, RecursionError) when Python
    cannot read it.
    """
    try:
        return json.loads(data, parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        raise
    except ValueError:
        encoding = json.detect_encoding(data)
        text = data.decode(encoding, "surrogatepass")
        text = text.removeprefix("\ufeff")
        return json.loads(text, parse_constant=_refuse_constant)


def python_strict(data: bytes) -> Any:
    """Python's json on data read strictly as UTF-8 text: the decoder's exact peer.

    Raises UnicodeDecodeError for bytes that are not UTF-8, ValueError for
    text that is not RFC 8259 JSON (NaN and Infinity included), RecursionError
    for nesting deeper than Python's stack allows.
    """
    return json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)


def has_unencodable(value: Any) -> bool:
    """True when value holds what the encoder must refuse: a non-finite float
    or a str with a lone surrogate (both can come out of the decoder)."""
    pending = [value]
    while pending:
        v = pending.pop()
        if isinstance(v, float):
            if not math.isfinite(v):
                return True
        elif isinstance(v, str):
            if any(0xD800 <= ord(c) <= 0xDFFF for c in v):
                return True
        elif isinstance(v, list):
            pending.extend(v)
        elif isinstance(v, dict):
            pending.extend(v)
            pending.extend(v.values())
    return False


def nesting_depth(value: Any) -> int:
    """How many arrays/objects deep value goes (0 for a scalar)."""
    depth = 0
    stack = [(value, 0)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (list, dict)):
            d += 1
            depth = max(depth, d)
            stack.extend((x, d) for x in (v.values() if isinstance(v, dict) else v))
    return depth
