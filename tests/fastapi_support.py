"""Apps and helpers for the FastAPI integration tests (not a test module).

``make_app(server, **middleware_options)`` builds a FastAPI app whose cache is
created by ``cache_lifespan`` on the app's own event loop (the TestClient's
portal thread), with CacheMiddleware installed and a set of routes that each
exercise one caching rule. ``app.state.calls`` counts how often each route
ran, which is how the tests tell a cache hit (the app did not run) from a miss.
"""

from __future__ import annotations

import collections
import hashlib
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi import FastAPI, HTTPException, Request, Response  # noqa: E402
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse  # noqa: E402

with warnings.catch_warnings():
    # Starlette 1.x prefers the httpx2 package for its TestClient and warns
    # when it falls back to httpx (which is what FastAPI's docs install).
    warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette\.testclient`")
    from fastapi.testclient import TestClient  # noqa: E402

from redis_cache import RedisCache  # noqa: E402
from redis_cache.fastapi import CacheMiddleware, cache_lifespan  # noqa: E402
from redis_cache.testing import RedisServer  # noqa: E402

__all__ = ["TestClient", "body_etag", "cache_keys", "client", "make_app", "CountingCache"]

NAMESPACE = "t"


def body_etag(body: bytes) -> str:
    """The ETag the middleware derives from a body."""
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def cache_keys(server: RedisServer, pattern: str = "*") -> list[str]:
    """The server's keys matching ``pattern`` (via redis-cli, not our client)."""
    out = server.cli("--scan", "--pattern", pattern)
    return sorted(line for line in out.splitlines() if line)


class CountingCache(RedisCache):
    """A RedisCache that counts the calls the middleware and dependencies make,
    and can be told to fail writes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.counts: collections.Counter[str] = collections.Counter()
        self.fail_writes = False

    def get_many(self, *args: Any, **kwargs: Any) -> Any:
        self.counts["get_many"] += 1
        return super().get_many(*args, **kwargs)

    def get(self, *args: Any, **kwargs: Any) -> Any:
        self.counts["get"] += 1
        return super().get(*args, **kwargs)

    def set(self, *args: Any, **kwargs: Any) -> Any:
        self.counts["set"] += 1
        if self.fail_writes:
            # The same failure a real write gets when the connection drops.
            return super().execute_command("NO-SUCH-COMMAND")
        return super().set(*args, **kwargs)

    def ping(self) -> Any:
        self.counts["ping"] += 1
        return super().ping()


def _routes(app: FastAPI) -> None:
    calls: collections.Counter[str] = collections.Counter()
    app.state.calls = calls

    @app.get("/items/{name}")
    async def item(name: str) -> dict[str, Any]:
        calls[f"item:{name}"] += 1
        return {"name": name, "version": calls[f"item:{name}"]}

    @app.post("/items/{name}")
    async def post_item(name: str) -> dict[str, Any]:
        calls[f"post:{name}"] += 1
        return {"name": name, "version": calls[f"post:{name}"]}

    @app.get("/me")
    async def me(request: Request) -> dict[str, Any]:
        calls["me"] += 1
        auth = request.headers.get("authorization", "")
        return {"user": auth.removeprefix("Bearer ") or "anonymous", "version": calls["me"]}

    @app.get("/lang")
    async def lang(request: Request) -> Response:
        calls["lang"] += 1
        greeting = {"fr": "bonjour", "de": "hallo"}.get(
            request.headers.get("accept-language", ""), "hello"
        )
        return JSONResponse(
            {"greeting": greeting, "version": calls["lang"]}, headers={"Vary": "Accept-Language"}
        )

    @app.get("/togglevary")
    async def toggle_vary() -> Response:
        calls["togglevary"] += 1
        vary = {"Vary": "Accept-Language"} if app.state.vary_on else {}
        return JSONResponse({"version": calls["togglevary"]}, headers=vary)

    @app.get("/cookie")
    async def cookie() -> Response:
        calls["cookie"] += 1
        response = JSONResponse({"version": calls["cookie"]})
        response.set_cookie("session", "abc123")
        return response

    @app.get("/cc/{value}")
    async def cache_control(value: str) -> Response:
        calls[f"cc:{value}"] += 1
        header = value.replace("_", " ").replace("~", "=").replace(";", ",")
        return JSONResponse({"version": calls[f"cc:{value}"]}, headers={"Cache-Control": header})

    @app.get("/varystar")
    async def vary_star() -> Response:
        calls["varystar"] += 1
        return JSONResponse({"version": calls["varystar"]}, headers={"Vary": "*"})

    @app.get("/missing")
    async def missing() -> None:
        calls["missing"] += 1
        raise HTTPException(status_code=404, detail="no such thing")

    @app.get("/boom")
    async def boom() -> None:
        calls["boom"] += 1
        raise RuntimeError("the handler failed")

    @app.get("/created")
    async def created() -> Response:
        calls["created"] += 1
        return JSONResponse({"version": calls["created"]}, status_code=201)

    @app.get("/stream/{size}")
    async def stream(size: int) -> StreamingResponse:
        calls[f"stream:{size}"] += 1
        version = calls[f"stream:{size}"]

        async def chunks() -> AsyncIterator[bytes]:
            line = f"v{version}:".encode() + b"x" * 99 + b"\n"
            for _ in range(size):
                yield line

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.get("/query")
    async def query(request: Request) -> dict[str, Any]:
        calls["query"] += 1
        return {"query": list(request.query_params.multi_items()), "version": calls["query"]}

    @app.get("/etagged")
    async def etagged() -> Response:
        calls["etagged"] += 1
        return PlainTextResponse(f"v{calls['etagged']}", headers={"ETag": '"app-tag"'})

    for prefix in ("/api", "/apix", "/api/private", "/other"):

        @app.get(prefix + "/thing", name=prefix)
        async def thing(request: Request) -> dict[str, Any]:
            key = request.url.path
            calls[key] += 1
            return {"path": key, "version": calls[key]}


def make_app(
    server: RedisServer,
    *,
    cache_factory: Callable[[], RedisCache] | None = None,
    namespace: str = NAMESPACE,
    **middleware_options: Any,
) -> FastAPI:
    """A FastAPI app with the test routes, a cache on ``server`` created at
    startup, and CacheMiddleware(**middleware_options)."""
    if cache_factory is None:

        def cache_factory() -> RedisCache:
            return RedisCache(port=server.port, namespace=namespace)

    app = FastAPI(lifespan=cache_lifespan(cache_factory))
    app.add_middleware(CacheMiddleware, **middleware_options)
    _routes(app)
    return app


@contextmanager
def client(app: FastAPI, **kwargs: Any) -> Iterator[TestClient]:
    """A TestClient that ran the app's lifespan (so the cache exists) and
    reports server errors as 500 responses instead of raising them."""
    kwargs.setdefault("raise_server_exceptions", False)
    with TestClient(app, **kwargs) as test_client:
        yield test_client


@pytest.fixture(autouse=True)
def no_asyncio_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fails a test whose event loop logged an error (a task or future that
    failed with nobody looking), which TestClient would otherwise hide.
    Import it into a test module to apply it there."""
    yield
    errors = [
        r for r in caplog.get_records("call") if r.name == "asyncio" and r.levelno >= 40
    ]
    assert not errors, "the event loop logged errors:\n" + "\n".join(r.getMessage() for r in errors)
