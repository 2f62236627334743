#!/usr/bin/env python3
"""Fuzz harness for the C JSON decoder (redis_cache._core.json_loads).

Every input is checked by check_one(): json_loads either returns or raises
SerializationError("invalid JSON at byte N: ...") with N inside the input;
it agrees with Python's json module reading the bytes strictly as UTF-8 (the
same value when it accepts; a refusal too, unless ours is the 512-level
nesting limit); bytes, bytearray, memoryview and str input decode alike; and
an accepted value goes back through json_dumps unchanged, or is refused by
the encoder only for what it must refuse (inf from a huge exponent, a lone
surrogate from an escape). Anything else is a bug: an uncaught exception, a
crash or a hang.

With atheris installed (scripts/requirements-dev.txt), libFuzzer drives it:

    .venv/bin/python tests/fuzz/fuzz_json.py -max_total_time=600
    .venv/bin/python tests/fuzz/fuzz_json.py -runs=100000 -seed=7
    .venv/bin/python tests/fuzz/fuzz_json.py build/fuzz/crash-...    # replay a file

Any libFuzzer flag may be given. Without corpus directories it uses
build/fuzz/corpus (kept between runs) seeded with JSONTestSuite's test_parsing
files, the token dictionary tests/fuzz/json.dict, -max_len=4096 and
-artifact_prefix=build/fuzz/ (where a failing input is written).

Without atheris, or with --pure, a pure-Python mutation fuzzer runs instead
over the same corpus and dictionary; it takes -max_total_time=S, -runs=N and
-seed=N, replays files given as arguments, and writes a failing input to
build/fuzz/failure-<sha1>.json. Both exit non-zero on the first failure.
"""

from __future__ import annotations

import faulthandler
import hashlib
import os
import random
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))  # tests/, for json_support

from json_support import (
    MAX_DEPTH,
    TEST_PARSING,
    has_unencodable,
    nesting_depth,
    python_strict,
    same,
)

from redis_cache._core import json_dumps, json_loads
from redis_cache.errors import SerializationError

DICTIONARY = HERE / "json.dict"
WORK_DIR = REPO / "build" / "fuzz"
DEFAULT_MAX_LEN = 4096

_DECODE_ERROR = re.compile(r"\Ainvalid JSON at byte (\d+): (.+)\Z", re.DOTALL)
_ENCODE_REFUSAL = re.compile(r"JSON has no NaN or infinity|lone surrogate")


class FuzzFailure(AssertionError):
    """The codec did something it must not; the message says what."""


def _fail(data: bytes, what: str) -> None:
    raise FuzzFailure(f"{what}\n  input ({len(data)} bytes): {data[:300]!r}")


# ------------------------------------------------------------------ the check


def _outcome(loads: Callable[[Any], Any], form: Any) -> tuple[str, Any]:
    try:
        return "value", loads(form)
    except SerializationError as exc:
        return "refused", str(exc)


def check_one(data: bytes) -> str:
    """Checks the codec on one input; returns a label of what happened (the
    fallback fuzzer keeps inputs that give a new label). Raises FuzzFailure."""
    try:
        value = json_loads(data)
    except SerializationError as exc:
        return _check_refusal(data, str(exc))
    except Exception as exc:
        _fail(
            data,
            f"json_loads raised {type(exc).__name__}: {exc} (expected a value or SerializationError)",
        )
        raise  # unreachable
    return _check_value(data, value)


def _check_same_for_other_forms(data: bytes, expected: tuple[str, Any]) -> None:
    forms: list[Any] = [bytearray(data), memoryview(data)]
    try:
        forms.append(data.decode("utf-8"))
    except UnicodeDecodeError:
        pass
    for form in forms:
        try:
            got = _outcome(json_loads, form)
        except Exception as exc:
            _fail(data, f"json_loads({type(form).__name__}) raised {type(exc).__name__}: {exc}")
            raise
        if got[0] != expected[0] or not same(got[1], expected[1]):
            _fail(
                data,
                f"json_loads({type(form).__name__}) gave {got!r:.300}, bytes gave {expected!r:.300}",
            )


def _check_refusal(data: bytes, message: str) -> str:
    match = _DECODE_ERROR.match(message)
    if match is None:
        _fail(data, f"refusal message is not 'invalid JSON at byte N: ...': {message!r}")
        raise AssertionError  # unreachable
    offset, what = int(match.group(1)), match.group(2)
    if offset > len(data):
        _fail(data, f"refusal offset {offset} is past the end of the input ({message!r})")
    _check_same_for_other_forms(data, ("refused", message))
    try:
        reference = python_strict(data)
    except (ValueError, RecursionError):
        return "refused:" + _classify_refusal(what)
    if "nested deeper than" in what and nesting_depth(reference) > MAX_DEPTH:
        return "refused:depth"
    _fail(data, f"refused ({message!r}) but Python's json reads {reference!r:.300}")
    raise AssertionError  # unreachable


def _check_value(data: bytes, value: Any) -> str:
    try:
        reference = python_strict(data)
    except (ValueError, RecursionError) as exc:
        _fail(
            data,
            f"accepted as {value!r:.300} but Python's json refuses it: {type(exc).__name__}: {exc}",
        )
        raise  # unreachable
    if not same(value, reference):
        _fail(data, f"decoded {value!r:.300}, Python's json reads {reference!r:.300}")
    _check_same_for_other_forms(data, ("value", value))
    try:
        encoded = json_dumps(value)
    except SerializationError as exc:
        if not (has_unencodable(value) and _ENCODE_REFUSAL.search(str(exc))):
            _fail(data, f"json_dumps refused the decoded value {value!r:.300}: {exc}")
        return "value:unencodable:" + _classify_value(value)
    except Exception as exc:
        _fail(data, f"json_dumps raised {type(exc).__name__}: {exc} on {value!r:.300}")
        raise
    if has_unencodable(value):
        _fail(data, f"json_dumps wrote {encoded!r:.300} for a value with inf or a lone surrogate")
    try:
        again = json_loads(encoded)
    except SerializationError as exc:
        _fail(data, f"json_loads refused what json_dumps wrote ({encoded!r:.300}): {exc}")
        raise
    if not same(again, value):
        _fail(
            data,
            f"round trip changed the value: {value!r:.300} -> {encoded!r:.300} -> {again!r:.300}",
        )
    return "value:" + _classify_value(value)


# These two only label outcomes. Under atheris they are instrumented, so each
# kind of refusal and each shape of value is a coverage feature that steers
# libFuzzer (the C decoder itself is not instrumented).
def _classify_refusal(what: str) -> str:
    if what.startswith("expected a JSON value, found the end"):
        return "eof"
    if what.startswith("expected a JSON value"):
        return "value"
    if what.startswith("expected a digit after"):
        return "frac"
    if what.startswith("expected a digit in"):
        return "exp"
    if what.startswith("expected a digit"):
        return "digit"
    if what.startswith("number cannot"):
        return "bignum"
    if what.startswith("expected ',' or ']'"):
        return "array"
    if what.startswith("expected ',' or '}'"):
        return "object"
    if what.startswith("expected a string key"):
        return "key"
    if what.startswith("expected ':'"):
        return "colon"
    if what.startswith("extra data"):
        return "extra"
    if what.startswith("unterminated string"):
        return "unterminated"
    if what.startswith("unterminated escape"):
        return "unterminated-escape"
    if what.startswith("invalid \\u"):
        return "u-escape"
    if what.startswith("invalid escape"):
        return "escape"
    if what.startswith("control character"):
        return "control"
    if what.startswith("invalid UTF-8"):
        return "utf8"
    if what.startswith("nested deeper"):
        return "depth"
    return "other"


def _classify_value(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return "literal"
    if isinstance(value, int):
        return "bigint" if abs(value) >= 2**63 else "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        if not value.isascii():
            return "text-astral" if any(ord(c) > 0xFFFF for c in value) else "text-unicode"
        return "text"
    depth = nesting_depth(value)
    kind = "list" if isinstance(value, list) else "dict"
    if depth > 64:
        return kind + "-deep"
    if depth > 4:
        return kind + "-nested"
    return kind + ("-empty" if not value else "")


# ------------------------------------------------------------------- corpus


def load_dictionary(path: Path = DICTIONARY) -> list[bytes]:
    """The tokens of a libFuzzer dictionary file."""
    tokens = []
    for line in path.read_text(encoding="ascii").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or '"' not in line:
            continue
        body = line[line.index('"') + 1 : line.rindex('"')]
        tokens.append(_unescape_dict(body))
    return tokens


def _unescape_dict(body: str) -> bytes:
    out = bytearray()
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt == "x" and i + 3 < len(body) + 1:
                out.append(int(body[i + 2 : i + 4], 16))
                i += 4
                continue
            out.append(ord(nxt))
            i += 2
            continue
        out.append(ord(c))
        i += 1
    return bytes(out)


def seed_corpus(max_len: int = DEFAULT_MAX_LEN) -> list[bytes]:
    """JSONTestSuite's test_parsing files (cut to max_len) plus a few seeds."""
    corpus = [
        b"{}",
        b"[]",
        b'{"a":[1,2.5,"x",null,true,false],"b":{"c":"\\u00e9\\ud83d\\ude00"}}',
        b"[-0.0,1e16,5e-324,123456789012345678901234567890]",
        b'"\xf0\x9f\x98\x80\xe2\x80\xa8\\n"',
        b"[1,]",
        b'{"a" 1}',
    ]
    if TEST_PARSING.is_dir():
        corpus += [p.read_bytes()[:max_len] for p in sorted(TEST_PARSING.iterdir()) if p.is_file()]
    return corpus


# ------------------------------------------------------- pure-Python fuzzer

_INTERESTING_BYTES = b'\x00\x01\x08\x09\x0a\x0d\x1f\x20"\\/-+.0159eE:,[]{}tfnu\x7f\x80\xbf\xc0\xc1\xc2\xdf\xe0\xed\xef\xf0\xf4\xf5\xff'


def mutate(
    data: bytes, rng: random.Random, corpus: list[bytes], tokens: list[bytes], max_len: int
) -> bytes:
    """One to four stacked random edits of data."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(11)
        pos = rng.randint(0, len(buf))
        if op == 0 and buf:  # flip a bit
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:  # overwrite a byte
            buf[rng.randrange(len(buf))] = (
                rng.choice(_INTERESTING_BYTES) if rng.random() < 0.7 else rng.randrange(256)
            )
        elif op == 2:  # insert a byte
            buf[pos:pos] = bytes([rng.choice(_INTERESTING_BYTES)])
        elif op == 3 and buf:  # delete a range
            end = min(len(buf), pos + rng.randint(1, 8))
            del buf[pos:end]
        elif op == 4 and buf:  # duplicate a range
            start = rng.randrange(len(buf))
            chunk = buf[start : start + rng.randint(1, 16)]
            buf[pos:pos] = chunk * rng.randint(1, 4)
        elif op in (5, 6):  # insert a token
            buf[pos:pos] = rng.choice(tokens)
        elif op == 7 and buf:  # replace a range by a token
            end = min(len(buf), pos + rng.randint(1, 4))
            buf[pos:end] = rng.choice(tokens)
        elif op == 8:  # splice another corpus entry in
            other = rng.choice(corpus)
            if other:
                a = rng.randrange(len(other))
                buf[pos:pos] = other[a : a + rng.randint(1, 64)]
        elif op == 9 and buf:  # truncate
            del buf[rng.randrange(len(buf)) :]
        elif op == 10:  # nest it
            depth = rng.choice((1, 2, 8, MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1))
            opener, closer = (b"[", b"]") if rng.random() < 0.5 else (b'{"k":', b"}")
            buf = bytearray(opener * depth) + buf + bytearray(closer * depth)
    return bytes(buf[: max_len * 2])


def _write_failure(data: bytes) -> Path:
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    path = WORK_DIR / f"failure-{hashlib.sha1(data).hexdigest()}.json"
    path.write_bytes(data)
    return path


def run_pure(max_total_time: float, runs: int, seed: int, max_len: int) -> int:
    rng = random.Random(seed)
    tokens = load_dictionary()
    corpus = seed_corpus(max_len)
    seen: set[str] = set()
    print(f"pure-Python fuzzer: seed={seed} corpus={len(corpus)} tokens={len(tokens)}", flush=True)
    for data in list(corpus):
        _run_one(data, seen, corpus, keep=False)
    start = time.monotonic()
    done = 0
    next_report = start + 10
    while (runs <= 0 or done < runs) and (
        max_total_time <= 0 or time.monotonic() - start < max_total_time
    ):
        data = mutate(rng.choice(corpus), rng, corpus, tokens, max_len)
        _run_one(data, seen, corpus, keep=True)
        done += 1
        if time.monotonic() >= next_report:
            print(f"  runs={done} labels={len(seen)} corpus={len(corpus)}", flush=True)
            next_report += 10
    elapsed = time.monotonic() - start
    print(
        f"done: runs={done} in {elapsed:.1f}s, {len(seen)} outcome labels, corpus={len(corpus)}, no failure",
        flush=True,
    )
    return 0


def _run_one(data: bytes, seen: set[str], corpus: list[bytes], keep: bool) -> None:
    try:
        label = check_one(data)
    except FuzzFailure:
        path = _write_failure(data)
        print(f"FAILURE (input saved to {path}):", file=sys.stderr, flush=True)
        raise
    if label not in seen:
        seen.add(label)
        if keep:
            corpus.append(data)


def replay(paths: list[str]) -> int:
    for name in paths:
        data = Path(name).read_bytes()
        print(f"{name}: {check_one(data)}", flush=True)
    return 0


# ----------------------------------------------------------------- atheris


def test_one_input(data: bytes) -> None:
    """libFuzzer's entry point."""
    check_one(data)


def run_atheris(argv: list[str]) -> None:
    import atheris

    global _classify_refusal, _classify_value, _check_value, _check_refusal
    _classify_refusal = atheris.instrument_func(_classify_refusal)
    _classify_value = atheris.instrument_func(_classify_value)
    _check_value = atheris.instrument_func(_check_value)
    _check_refusal = atheris.instrument_func(_check_refusal)

    flags = [a for a in argv[1:] if a.startswith("-")]
    paths = [a for a in argv[1:] if not a.startswith("-")]
    extra = []
    if not any(f.startswith("-dict=") for f in flags):
        extra.append(f"-dict={DICTIONARY}")
    if not any(f.startswith("-max_len=") for f in flags):
        extra.append(f"-max_len={DEFAULT_MAX_LEN}")
    if not any(f.startswith("-timeout=") for f in flags):
        extra.append("-timeout=10")
    if not any(f.startswith("-artifact_prefix=") for f in flags):
        WORK_DIR.mkdir(parents=True, exist_ok=True)
        extra.append(f"-artifact_prefix={WORK_DIR}/")
    if not paths:
        corpus_dir = WORK_DIR / "corpus"
        corpus_dir.mkdir(parents=True, exist_ok=True)
        paths = [str(corpus_dir)]
        if TEST_PARSING.is_dir():
            paths.append(str(TEST_PARSING))  # read only: libFuzzer writes to the first
    atheris.Setup([argv[0], *flags, *extra, *paths], test_one_input)
    atheris.Fuzz()


# ---------------------------------------------------------------------- main


def _flag(argv: list[str], name: str, default: float) -> float:
    for arg in argv:
        if arg.startswith(f"-{name}="):
            return float(arg.split("=", 1)[1])
    return default


def main(argv: list[str]) -> int:
    faulthandler.enable()
    pure = "--pure" in argv
    argv = [a for a in argv if a != "--pure"]
    if not pure:
        try:
            import atheris  # noqa: F401
        except ImportError:
            print("atheris is not installed: running the pure-Python fuzzer", file=sys.stderr)
            pure = True
    if not pure:
        run_atheris(argv)
        return 0
    paths = [a for a in argv[1:] if not a.startswith("-")]
    if paths and all(os.path.isfile(p) for p in paths):
        return replay(paths)
    max_total_time = _flag(argv, "max_total_time", 0)
    runs = int(_flag(argv, "runs", 0))
    if max_total_time <= 0 and runs <= 0:
        max_total_time = 60
    seed = int(_flag(argv, "seed", 0)) or random.SystemRandom().randrange(1, 2**31)
    max_len = int(_flag(argv, "max_len", DEFAULT_MAX_LEN))
    return run_pure(max_total_time, runs, seed, max_len)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
