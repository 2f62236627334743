"""The JSON decoder against JSONTestSuite (nst/JSONTestSuite, test_parsing).

The suite lives outside the repo, in ``../shared/conformance/JSONTestSuite``;
every test here skips, saying where it looked, when it is absent.

- ``y_`` files must decode to what Python's json module reads from them, and
  back through ``json_dumps`` unchanged;
- ``n_`` files must be refused with ``SerializationError: invalid JSON at byte N``;
- ``i_`` files (RFC 8259 leaves them to the parser) must behave as the table
  in docs/json.md says, one line per file;
- no file, nor any prefix of one, may crash or hang the decoder (checked in a
  subprocess, which a crash cannot take the test run down with).
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from json_support import (
    JSON_TEST_SUITE,
    TEST_PARSING,
    has_unencodable,
    python_reference,
    same,
    suite_files,
    transform_files,
)

from redis_cache._core import json_dumps, json_loads
from redis_cache.errors import SerializationError

DOC = Path(__file__).resolve().parents[1] / "docs" / "json.md"

pytestmark = pytest.mark.skipif(
    not TEST_PARSING.is_dir(),
    reason=f"JSONTestSuite not found: expected its test_parsing directory at {TEST_PARSING} "
    "(the shared checkout beside the repo, ../shared/conformance/JSONTestSuite)",
)

Y_FILES = suite_files("y_")
N_FILES = suite_files("n_")
I_FILES = suite_files("i_")


def _ids(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


def _utf8_text(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def test_suite_is_complete() -> None:
    # A truncated checkout would make the parametrized tests pass vacuously.
    assert len(Y_FILES) >= 95 and len(N_FILES) >= 188 and len(I_FILES) >= 35, (
        f"{JSON_TEST_SUITE} looks incomplete: {len(Y_FILES)} y_, {len(N_FILES)} n_, {len(I_FILES)} i_ files"
    )


# --------------------------------------------------------------------- y_ files


@pytest.mark.parametrize("path", Y_FILES, ids=_ids(Y_FILES))
def test_y_file_decodes_like_python(path: Path) -> None:
    data = path.read_bytes()
    value = json_loads(data)
    expected = python_reference(data)
    assert same(value, expected), f"{path.name}: got {value!r}, Python's json reads {expected!r}"
    # Every way of handing over the same document gives the same value.
    for form in (bytearray(data), memoryview(data)):
        assert same(json_loads(form), expected)
    text = _utf8_text(data)
    if text is not None:
        assert same(json_loads(text), expected)


@pytest.mark.parametrize("path", Y_FILES, ids=_ids(Y_FILES))
def test_y_value_round_trips(path: Path) -> None:
    value = json_loads(path.read_bytes())
    assert not has_unencodable(value), f"{path.name} holds a value the encoder must refuse"
    encoded = json_dumps(value)
    assert same(json_loads(encoded), value)
    # What we write is plain JSON to anyone else too.
    assert same(python_reference(encoded), value)


# --------------------------------------------------------------------- n_ files


@pytest.mark.parametrize("path", N_FILES, ids=_ids(N_FILES))
def test_n_file_is_refused(path: Path) -> None:
    data = path.read_bytes()
    with pytest.raises(SerializationError, match=r"^invalid JSON at byte \d+: ") as info:
        json_loads(data)
    offset = int(re.search(r"at byte (\d+)", str(info.value)).group(1))  # type: ignore[union-attr]
    assert 0 <= offset <= len(data)
    text = _utf8_text(data)
    if text is not None:
        with pytest.raises(SerializationError, match=r"at byte \d+"):
            json_loads(text)


# --------------------------------------------------------------------- i_ files

_DOC_ROW = re.compile(r"^\|\s*(i_\S+\.json)\s*\|\s*(accepted|refused)\s*\|\s*(.*?)\s*\|\s*$")


def documented_i_behaviour() -> dict[str, str]:
    """docs/json.md's table: i_ file name -> "accepted" or "refused"."""
    table: dict[str, str] = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        match = _DOC_ROW.match(line)
        if match:
            name, behaviour, why = match.groups()
            assert name not in table, f"docs/json.md lists {name} twice"
            assert why, f"docs/json.md gives no reason for {name}"
            table[name] = behaviour
    return table


def observed_i_behaviour(path: Path) -> tuple[str, Any]:
    """("accepted", value) or ("refused", message)."""
    try:
        return "accepted", json_loads(path.read_bytes())
    except SerializationError as exc:
        return "refused", str(exc)


def test_every_i_file_is_documented_once() -> None:
    documented = documented_i_behaviour()
    names = {p.name for p in I_FILES}
    assert sorted(names - documented.keys()) == [], "i_ files missing from docs/json.md"
    assert sorted(documented.keys() - names) == [], "docs/json.md lists i_ files the suite lacks"


def test_i_files_behave_as_documented() -> None:
    documented = documented_i_behaviour()
    rows = []
    mismatches = []
    for path in I_FILES:
        behaviour, detail = observed_i_behaviour(path)
        rows.append(f"{path.name:55} {behaviour:8} {detail!r:.70}")
        if documented.get(path.name) != behaviour:
            mismatches.append(
                f"{path.name}: {behaviour}, docs/json.md says {documented.get(path.name)}"
            )
    table = "\n".join(rows)
    assert not mismatches, "\n".join(mismatches) + "\n\nobserved:\n" + table


@pytest.mark.parametrize("path", I_FILES, ids=_ids(I_FILES))
def test_i_file_outcome_is_clean(path: Path) -> None:
    behaviour, detail = observed_i_behaviour(path)
    if behaviour == "refused":
        assert re.match(r"invalid JSON at byte \d+: ", detail), detail
        return
    # Accepted: the value is Python's, and it goes back out either unchanged
    # or refused for the one reason it may be (inf, lone surrogate).
    assert same(detail, python_reference(path.read_bytes()))
    if has_unencodable(detail):
        with pytest.raises(SerializationError, match="NaN or infinity|lone surrogate"):
            json_dumps(detail)
    else:
        assert same(json_loads(json_dumps(detail)), detail)


# ---------------------------------------------------- no crash, no hang, anywhere

# Runs in a child process: a crash there is a failed test, not a dead test run.
_NO_CRASH_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from redis_cache._core import json_dumps, json_loads
    from redis_cache.errors import SerializationError

    MAX_PREFIXES = 600
    inputs = 0
    for name in sys.argv[1:]:
        data = Path(name).read_bytes()
        # The whole file, every prefix (capped for the 100 kB ones), and the
        # file with its last byte changed.
        cuts = range(len(data) + 1) if len(data) <= MAX_PREFIXES else range(0, len(data) + 1, len(data) // MAX_PREFIXES)
        variants = [data[:n] for n in cuts] + [data]
        if data:
            variants += [data[:-1] + bytes([(data[-1] + 1) % 256]), data[1:], data + data]
        for blob in variants:
            inputs += 1
            try:
                value = json_loads(blob)
            except SerializationError:
                continue
            try:
                json_loads(json_dumps(value))
            except SerializationError:
                pass
    print("inputs", inputs)
    """
)


def _run_no_crash(paths: list[Path]) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", _NO_CRASH_SCRIPT, *map(str, paths)],
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, (
        f"decoder crashed or raised something else than SerializationError (exit {proc.returncode}):\n"
        f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    )
    return proc.stdout


def test_no_crash_or_hang_on_any_file_or_prefix() -> None:
    out = _run_no_crash(suite_files())
    assert int(out.split()[-1]) > len(suite_files())


def test_transform_files_do_not_crash() -> None:
    files = transform_files()
    if not files:
        pytest.skip(
            f"JSONTestSuite has no test_transform directory here ({JSON_TEST_SUITE / 'test_transform'})"
        )
    _run_no_crash(files)
    for path in files:
        try:
            value = json_loads(path.read_bytes())
        except SerializationError:
            continue
        if not has_unencodable(value):
            assert same(json_loads(json_dumps(value)), value), path.name
