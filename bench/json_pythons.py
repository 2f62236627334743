"""The JSON codec on every supported CPython, each against orjson on the same interpreter.

    python3 bench/json_pythons.py [--quick] [--repeat N] [--compare-dict-walk]
                                  [--write-docs] [VERSION ...]

For each version (default: every one requires-python admits, 3.10 to 3.13) this
finds the interpreter as scripts/test-pythons.sh does (pyenv's newest patch
release, else ``pythonX.Y`` on PATH), sets up its venv with scripts/setup-env.sh
(``.venv`` for 3.11, the default; ``.venv-X.Y`` for the others; the extension
built in place), installs orjson and msgspec into it, and runs the codec section
of ``bench/json_codec.py`` there (``--no-redis --no-breakdown``), one version
after the other (never two at once: they would share the cores). With
``--repeat N`` the versions take turns N times and each figure is the median of
the N runs. Put side by side:

* per Python, the codec's time and orjson's, and the codec's speed vs orjson
  (orjson's time / the codec's: above 1x the codec is faster);
* that speed relative to the same figure on 3.11 (``vs 3.11``): below 0.90 the
  version loses more than 10% to 3.11.

``--compare-dict-walk`` also runs every version with the extension rebuilt with
``-DRC_JSON_DICT_WALK_GENERIC`` (dicts walked with PyDict_Next, as every version
but 3.11 did before; csrc/json_encode.c), and puts the encode figures of both
walks side by side; the normal build is restored afterwards.

Prints markdown; with --write-docs it replaces the per-Python section of
docs/benchmarks-json.md (between the markers below), which
``bench/json_codec.py --write-docs`` keeps when it rewrites the page.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOCS_PAGE = ROOT / "docs" / "benchmarks-json.md"
SUPPORTED = ("3.10", "3.11", "3.12", "3.13")
BASELINE = "3.11"
#: The bar: a version whose speed vs orjson falls below this share of 3.11's.
LOSS_BAR = 0.90
PEERS = ("orjson>=3.9", "msgspec>=0.18")
PAYLOADS = ("record", "records/short", "records/random", "document/short", "document/random")
OPS = ("encode", "decode")

#: The section of docs/benchmarks-json.md this script owns.
START = "<!-- per-python: written by bench/json_pythons.py -->"
END = "<!-- /per-python -->"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def find_python(minor: str) -> str | None:
    """pyenv's newest X.Y.Z, else pythonX.Y on PATH (as scripts/test-pythons.sh)."""
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    found = [
        p
        for p in glob.glob(os.path.join(root, "versions", f"{minor}.*"))
        if re.fullmatch(rf"{re.escape(minor)}\.\d+", os.path.basename(p))
    ]
    found.sort(key=lambda p: int(os.path.basename(p).rsplit(".", 1)[1]))
    for prefix in reversed(found):
        python = os.path.join(prefix, "bin", f"python{minor}")
        if os.access(python, os.X_OK):
            return python
    return shutil.which(f"python{minor}")


def venv_for(minor: str) -> Path:
    return ROOT / (".venv" if minor == BASELINE else f".venv-{minor}")


def prepare(minor: str, python: str) -> Path:
    """The version's venv, set up, built, with the peers installed; its python."""
    venv = venv_for(minor)
    env = dict(os.environ, PYTHON=python, REDIS_CACHE_VENV=str(venv))
    subprocess.run(["bash", str(ROOT / "scripts" / "setup-env.sh")], env=env, check=True)
    venv_python = venv / "bin" / "python"
    subprocess.run(
        [str(venv_python), "-m", "pip", "install", "-q", "--prefer-binary", *PEERS], check=True
    )
    return venv_python


def build(venv_python: Path, generic_dict_walk: bool) -> None:
    """Rebuilds the venv's in-place extension, with or without the direct dict walk."""
    args = [str(venv_python), "setup.py", "build_ext", "--inplace", "--force"]
    if generic_dict_walk:
        args += ["--define", "RC_JSON_DICT_WALK_GENERIC"]
    env = dict(os.environ, REDIS_CACHE_STRICT="1")
    env.pop("CFLAGS", None)  # it would replace Python's -O3 -DNDEBUG
    subprocess.run(args, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)


def measure(venv_python: Path, quick: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "results.json"
        args = [str(venv_python), str(ROOT / "bench" / "json_codec.py"), "--no-redis"]
        args += ["--no-breakdown", "--results-json", str(out)] + (["--quick"] if quick else [])
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
        results = json.loads(out.read_text(encoding="utf-8"))
    probe = (
        "import platform, redis_cache._core as c; "
        "print(platform.python_version(), c.JSON_DICT_WALK_DIRECT)"
    )
    version, direct = subprocess.run(
        [str(venv_python), "-c", probe], check=True, capture_output=True, text=True, cwd=ROOT
    ).stdout.split()
    results["python"] = version
    results["dict_walk"] = "entry table" if direct == "1" else "PyDict_Next"
    return results


def median_us(results: dict[str, Any], payload: str, op: str, who: str) -> float | None:
    for case in results["cases"]:
        if (case["section"], case["payload"], case["op"], case["who"]) == (
            "codec",
            payload,
            op,
            who,
        ):
            return float(case["median_us"])
    return None


class Figures:
    """One version (and dict walk)'s runs: medians over the runs of each case."""

    def __init__(self, runs: list[dict[str, Any]]) -> None:
        self.runs = runs
        self.first = runs[0]

    def get(self, payload: str, op: str) -> tuple[float, float, float] | None:
        """(the codec's µs, orjson's µs, speed vs orjson), each a median over runs."""
        ours, peer, speed = [], [], []
        for run in self.runs:
            a = median_us(run, payload, op, "redis_cache")
            b = median_us(run, payload, op, "orjson")
            if a is None or b is None:
                continue
            ours.append(a)
            peer.append(b)
            speed.append(b / a)
        if not speed:
            return None
        return statistics.median(ours), statistics.median(peer), statistics.median(speed)


def _us(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.2f}" if v < 10 else f"{v:.1f}"


def _cell(f: tuple[float, float, float] | None) -> str:
    return "-" if f is None else f"{_us(f[0])} / {_us(f[1])}, **{f[2]:.2f}x**"


def _relative(f: tuple[float, float, float] | None, base: tuple[float, float, float] | None) -> str:
    if f is None or base is None:
        return "-"
    r = f[2] / base[2]
    return f"{r:.2f}" + (" (loses > 10%)" if r < LOSS_BAR else "")


def table(figures: dict[str, Figures]) -> str:
    minors = list(figures)
    others = [m for m in minors if m != BASELINE]
    header = "| payload | op | " + " | ".join(
        f"{m}: redis_cache / orjson µs, speed vs orjson" for m in minors
    )
    header += "".join(f" | {m} vs {BASELINE}" for m in others) + " |"
    lines = [header, "|" + "---|" * (2 + len(minors) + len(others))]
    for op in OPS:
        for payload in PAYLOADS:
            got = {m: figures[m].get(payload, op) for m in minors}
            base = got.get(BASELINE)
            cells = [_cell(got[m]) for m in minors] + [_relative(got[m], base) for m in others]
            lines.append(f"| {payload} | {op} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def walk_table(direct: dict[str, Figures], generic: dict[str, Figures]) -> str:
    """Encode only (decoding walks no dicts): both walks per version."""
    minors = [m for m in direct if m in generic]
    header = "| payload | " + " | ".join(
        f"{m}: entry table / PyDict_Next, speed vs orjson" for m in minors
    )
    header += "".join(f" | {m} PyDict_Next vs {BASELINE} entry table" for m in minors) + " |"
    lines = [header, "|" + "---|" * (1 + 2 * len(minors))]
    for payload in PAYLOADS:
        base = direct[BASELINE].get(payload, "encode") if BASELINE in direct else None
        cells = []
        for m in minors:
            a, b = direct[m].get(payload, "encode"), generic[m].get(payload, "encode")
            cells.append(
                "-" if a is None or b is None else f"{a[2]:.2f}x / {b[2]:.2f}x"
            )
        cells += [_relative(generic[m].get(payload, "encode"), base) for m in minors]
        lines.append(f"| {payload} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def section(
    figures: dict[str, Figures],
    generic: dict[str, Figures],
    skipped: dict[str, str],
    took: float,
    args: argparse.Namespace,
) -> str:
    versions = "\n".join(
        f"- **{m}**: CPython {f.first['python']}, orjson "
        f"{f.first['codecs'].get('orjson', '? ?').split()[1]}, dicts walked by "
        f"{f.first['dict_walk']}"
        for m, f in figures.items()
    )
    missing = "".join(f"- **{m}**: not measured: {why}\n" for m, why in skipped.items())
    first = next(iter(figures.values())).first if figures else {}
    machine = first.get("machine", {})
    rounds = first.get("settings", {}).get("codec", {})
    quick_note = ""
    if args.quick:
        quick_note = "\n> Written from `--quick` runs: short rounds, rough figures.\n"
    turns = "the versions take turns"
    if args.repeat > 1:
        turns += f", {args.repeat} times, each figure the median of the {args.repeat} runs"
    command = "python3 bench/json_pythons.py --write-docs"
    if args.repeat > 1:
        command += f" --repeat {args.repeat}"
    if args.compare_dict_walk:
        command += " --compare-dict-walk"
    walk = ""
    if generic:
        walk = f"""
### The dict walk per Python

Encoding with dicts walked over their entry table (the build's default on 3.11 to 3.13)
against the same build with `-DRC_JSON_DICT_WALK_GENERIC` (PyDict_Next for every dict:
what 3.12 and 3.13 had before they got the entry-table walk), speed vs orjson, and the
PyDict_Next build next to 3.11's default (below {LOSS_BAR:.2f}: loses more than 10%):

{walk_table(figures, generic)}
"""
    return f"""{START}
## Per Python

The codec section, measured on each CPython that `requires-python` admits, each against
orjson on the same interpreter ({machine.get('CPU', '?')}, {machine.get('cores', '?')}
cores; {turns}).
Interpreters differ in what allocating and filling objects costs, so a version is judged
by the codec's speed vs orjson on it next to the same figure on {BASELINE} (`vs {BASELINE}`
columns: below {LOSS_BAR:.2f}, that version loses more than 10% to {BASELINE}).
{quick_note}
```sh
{command}   # sets up each version's venv, installs orjson
```

{versions}
{missing}
Median of {rounds.get('rounds', '?')} rounds of ~{rounds.get('round_seconds', '?')} s per case
and run; all the runs took {took:.0f} s.

{table(figures)}
{walk}{END}"""


def write_docs(text: str) -> None:
    page = DOCS_PAGE.read_text(encoding="utf-8")
    if START in page and END in page:
        before, rest = page.split(START, 1)
        after = rest.split(END, 1)[1]
        page = before + text + after
    else:
        page = page.rstrip("\n") + "\n\n" + text + "\n"
    DOCS_PAGE.write_text(page, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("versions", nargs="*", default=list(SUPPORTED))
    parser.add_argument("--quick", action="store_true", help="short rounds (rough figures)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per version, taking turns")
    parser.add_argument(
        "--compare-dict-walk", action="store_true", help="also time the PyDict_Next build"
    )
    parser.add_argument("--write-docs", action="store_true", help=f"update {DOCS_PAGE.name}")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    pythons: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    for minor in args.versions:
        python = find_python(minor)
        if python is None:
            skipped[minor] = "no interpreter on this machine"
            log(f"skipping {minor}: no interpreter")
            continue
        log(f"==> setting up {minor}: {python}")
        pythons[minor] = prepare(minor, python)
    direct: dict[str, list[dict[str, Any]]] = {m: [] for m in pythons}
    generic: dict[str, list[dict[str, Any]]] = {m: [] for m in pythons}
    try:
        for rep in range(args.repeat):
            for minor, venv_python in pythons.items():
                log(f"==> run {rep + 1}/{args.repeat}: {minor}")
                direct[minor].append(measure(venv_python, args.quick))
                # Where the default build already uses PyDict_Next (3.10), the
                # generic build is the same code: nothing to compare.
                if args.compare_dict_walk and direct[minor][-1]["dict_walk"] != "PyDict_Next":
                    build(venv_python, generic_dict_walk=True)
                    try:
                        generic[minor].append(measure(venv_python, args.quick))
                    finally:
                        build(venv_python, generic_dict_walk=False)
    finally:
        took = time.perf_counter() - started
    text = section(
        {m: Figures(r) for m, r in direct.items()},
        {m: Figures(r) for m, r in generic.items() if r},
        skipped,
        took,
        args,
    )
    print(text)
    if args.write_docs:
        write_docs(text)
        log(f"wrote the per-Python section of {DOCS_PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
