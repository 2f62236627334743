"""The redis_cache.fastapi package keeps every public import path: the names in
its __all__ exist, and every `from redis_cache... import ...` line of the README
and docs/ runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

import redis_cache  # noqa: E402
import redis_cache.fastapi as rc_fastapi  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
IMPORT = re.compile(r"^\s*from (redis_cache[\w.]*) import \(?([\w, ]+)\)?\s*(?:#.*)?$", re.MULTILINE)


def test_all_names_exist() -> None:
    for module in (redis_cache, rc_fastapi):
        missing = [name for name in module.__all__ if not hasattr(module, name)]
        assert not missing, f"{module.__name__}.__all__ names missing attributes: {missing}"
    assert rc_fastapi.CacheMiddleware.__module__ == "redis_cache.fastapi.middleware"
    assert rc_fastapi.cached_route.__module__ == "redis_cache.fastapi.routes"


@pytest.mark.parametrize("page", ["README.md", "docs/fastapi.md", "docs/ratelimit.md"])
def test_documented_imports_work(page: str) -> None:
    text = (ROOT / page).read_text(encoding="utf-8")
    found = IMPORT.findall(text)
    assert found or page == "docs/ratelimit.md"
    for module, names in found:
        namespace: dict[str, object] = {}
        exec(f"from {module} import {names}", namespace)  # noqa: S102 - our own docs
        assert all(n.strip() in namespace for n in names.split(",") if n.strip())
