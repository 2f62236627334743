"""Runs the JSON fuzz harness (tests/fuzz/fuzz_json.py) for a few seconds.

Each run is a child process, so a crash in the C decoder fails the test
instead of ending the test run. Longer runs are by hand (docs/json.md):

    .venv/bin/python tests/fuzz/fuzz_json.py -max_total_time=600
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from json_support import TEST_PARSING

from redis_cache.errors import SerializationError

HARNESS = Path(__file__).resolve().parent / "fuzz" / "fuzz_json.py"
REPO = HARNESS.parents[2]
ATHERIS_SECONDS = 5
PURE_RUNS = 20_000


@pytest.fixture(scope="module")
def harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_json", HARNESS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, str(HARNESS), *args],
        cwd=REPO,
        capture_output=True,
        check=False,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, (
        f"fuzz harness failed (exit {proc.returncode}); args {args}\n"
        f"--- stdout ---\n{proc.stdout[-3000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"
    )
    return proc


def test_atheris_finds_nothing_in_a_short_run(tmp_path: Path) -> None:
    pytest.importorskip("atheris", reason="atheris is not installed (scripts/requirements-dev.txt)")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    seeds = [str(TEST_PARSING)] if TEST_PARSING.is_dir() else []
    proc = _run(
        [
            f"-max_total_time={ATHERIS_SECONDS}",
            "-seed=1",
            f"-artifact_prefix={tmp_path}/",
            str(corpus),
            *seeds,
        ],
        timeout=ATHERIS_SECONDS + 60,
    )
    assert "Done" in proc.stderr and "runs in" in proc.stderr, proc.stderr[-2000:]


def test_pure_python_fuzzer_finds_nothing(tmp_path: Path) -> None:
    proc = _run(["--pure", f"-runs={PURE_RUNS}", "-seed=20240611"], timeout=120)
    assert f"runs={PURE_RUNS}" in proc.stdout and "no failure" in proc.stdout, proc.stdout


def test_harness_replays_files(tmp_path: Path) -> None:
    sample = tmp_path / "sample.json"
    sample.write_bytes(b'{"a":[1,"\\ud800",1e999]}')
    proc = _run(["--pure", str(sample)], timeout=60)
    assert "value:unencodable:dict" in proc.stdout


def test_harness_accepts_the_seed_corpus(harness: ModuleType) -> None:
    labels = {harness.check_one(data) for data in harness.seed_corpus()}
    assert any(label.startswith("value:") for label in labels)
    assert any(label.startswith("refused:") for label in labels)
    assert len(harness.load_dictionary()) > 50


def test_mutations_stay_bytes(harness: ModuleType) -> None:
    import random

    rng = random.Random(1)
    corpus = harness.seed_corpus()
    tokens = harness.load_dictionary()
    for _ in range(2000):
        out = harness.mutate(rng.choice(corpus), rng, corpus, tokens, 4096)
        assert isinstance(out, bytes) and len(out) <= 8192


@pytest.mark.parametrize(
    ("fake_loads", "message"),
    [
        (lambda data: (_ for _ in ()).throw(TypeError("boom")), "json_loads raised TypeError"),
        (lambda data: (_ for _ in ()).throw(SerializationError("bad")), "refusal message is not"),
        (
            lambda data: (_ for _ in ()).throw(SerializationError("invalid JSON at byte 999: x")),
            "past the end",
        ),
        (lambda data: 1.0, "Python's json reads"),
    ],
    ids=["other-exception", "bad-message", "bad-offset", "wrong-value"],
)
def test_harness_flags_a_misbehaving_decoder(
    harness: ModuleType, monkeypatch: pytest.MonkeyPatch, fake_loads: Any, message: str
) -> None:
    # The oracle must catch each kind of bug it is there for.
    monkeypatch.setattr(harness, "json_loads", fake_loads)
    with pytest.raises(harness.FuzzFailure, match=message):
        harness.check_one(b"[1]")


def test_harness_flags_a_wrongly_refusing_decoder(
    harness: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(data: Any) -> Any:
        raise SerializationError("invalid JSON at byte 0: expected a JSON value")

    monkeypatch.setattr(harness, "json_loads", refuse)
    with pytest.raises(harness.FuzzFailure, match="but Python's json reads"):
        harness.check_one(b"[1]")


def test_harness_flags_a_bad_round_trip(
    harness: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(harness, "json_dumps", lambda value: b"[2]")
    with pytest.raises(harness.FuzzFailure, match="round trip changed the value"):
        harness.check_one(b"[1]")
