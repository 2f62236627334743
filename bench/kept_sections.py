"""Sections of docs/benchmarks.md that other benchmarks write and bench/run.py keeps.

bench/run.py regenerates docs/benchmarks.md whole from its own run. Figures
from other benchmarks (bench/http_routes.py, bench/ratelimit.py) sit in the
same page between ``<!-- kept: NAME -->`` and ``<!-- /kept: NAME -->``;
run.py carries those blocks over to the page it writes, and each benchmark
replaces only its own block.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["kept_sections", "replace_section"]

_BLOCK = re.compile(r"<!-- kept: ([\w-]+) -->\n.*?<!-- /kept: \1 -->\n", re.DOTALL)


def kept_sections(page: str) -> str:
    """Every kept block of ``page``, in order, ready to append to a new page."""
    blocks = [m.group(0) for m in _BLOCK.finditer(page)]
    return ("\n" + "\n".join(blocks)) if blocks else ""


def replace_section(path: Path, name: str, body: str) -> None:
    """Puts ``body`` in block ``name`` of the page at ``path`` (appended if new)."""
    block = f"<!-- kept: {name} -->\n{body.rstrip()}\n<!-- /kept: {name} -->\n"
    page = path.read_text(encoding="utf-8") if path.exists() else ""
    pattern = re.compile(rf"<!-- kept: {re.escape(name)} -->\n.*?<!-- /kept: {re.escape(name)} -->\n",
                         re.DOTALL)
    if pattern.search(page):
        page = pattern.sub(lambda _: block, page)
    else:
        page = page.rstrip("\n") + "\n\n" + block
    path.write_text(page, encoding="utf-8")
