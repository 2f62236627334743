"""Server-side sessions: SessionStore, the seed's set_session/get_session, and
SessionMiddleware in real apps (TestClient, and uvicorn over HTTP): login and
logout, fixation (regenerate changes the id), tampering, key rotation,
expiry, write-back only on change, concurrent requests of one session, size
cap, Redis down, cookie attributes."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from async_support import Runner, run  # noqa: F401 - fixture
from fastapi_support import TestClient, no_asyncio_errors  # noqa: F401 - autouse fixture

import httpx
from fastapi import FastAPI, Request
from redis_cache import RedisCache, SyncRedisCache
from redis_cache.fastapi import SessionMiddleware, cache_lifespan
from redis_cache.sessions import SessionStore, SessionTooLarge
from redis_cache.testing import RedisServer, free_port

SECRET = "test-secret"


def make_app(server: RedisServer, *, cache_options: dict[str, Any] | None = None,
             **session_options: Any) -> FastAPI:
    app = FastAPI(lifespan=cache_lifespan(
        lambda: RedisCache.from_url(server.url, namespace="t", **(cache_options or {}))))

    @app.post("/login/{user}")
    async def login(user: str, request: Request) -> dict[str, Any]:
        request.session.regenerate()
        request.session["user"] = user
        return {"user": user}

    @app.post("/logout")
    async def logout(request: Request) -> dict[str, bool]:
        request.session.clear()
        return {"ok": True}

    @app.get("/me")
    async def me(request: Request) -> dict[str, Any]:
        return {"user": request.session.get("user")}

    @app.post("/cart/{item}")
    async def add(item: str, request: Request) -> dict[str, Any]:
        request.session.setdefault("cart", []).append(item)  # a nested change
        return {"cart": request.session["cart"]}

    @app.post("/big")
    async def big(request: Request) -> dict[str, bool]:
        request.session["blob"] = "x" * 100_000
        return {"ok": True}

    app.add_middleware(SessionMiddleware, secret_key=session_options.pop("secret_key", SECRET),
                       **{"https_only": False, **session_options})
    return app


@pytest.fixture
def client(redis: RedisServer) -> Iterator[TestClient]:
    with TestClient(make_app(redis)) as c:
        yield c


def session_keys(server: RedisServer) -> list[str]:
    return sorted(server.cli("--scan", "--pattern", "t:session:*").split())


def test_login_logout(client: TestClient, redis: RedisServer) -> None:
    assert client.get("/me").json() == {"user": None}
    assert session_keys(redis) == []  # an untouched session is never written
    assert "set-cookie" not in client.get("/me").headers
    login = client.post("/login/ada")
    cookie = login.headers["set-cookie"]
    assert cookie.startswith("session=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Path=/" in cookie and "Max-Age=1209600" in cookie
    assert client.get("/me").json() == {"user": "ada"}
    assert len(session_keys(redis)) == 1
    logout = client.post("/logout")
    assert "Max-Age=0" in logout.headers["set-cookie"]
    assert session_keys(redis) == []
    assert client.get("/me").json() == {"user": None}


def test_fixation_regenerate_changes_the_id(client: TestClient, redis: RedisServer) -> None:
    client.post("/cart/apple")  # an anonymous session, as an attacker could plant
    planted = client.cookies["session"]
    planted_key = session_keys(redis)
    client.post("/login/ada")
    assert client.cookies["session"] != planted
    assert session_keys(redis) != planted_key and len(session_keys(redis)) == 1
    # The data came along; the planted id is worth nothing now.
    assert client.post("/cart/pear").json() == {"cart": ["apple", "pear"]}
    client.cookies.clear()
    client.cookies.set("session", planted)
    assert client.get("/me").json() == {"user": None}


def test_tampered_and_unknown_ids_start_a_new_session(client: TestClient) -> None:
    client.post("/login/ada")
    good = client.cookies["session"]
    session_id, _, signature = good.partition(".")
    forged = [
        session_id + "." + signature[:-2] + ("AA" if not signature.endswith("AA") else "BB"),
        session_id,
        "garbage",
        "x" * 43 + "." + signature,
        "",
    ]
    for value in forged:
        client.cookies.clear()
        client.cookies.set("session", value)
        answer = client.get("/me")
        assert answer.status_code == 200 and answer.json() == {"user": None}
    # A correctly signed id nobody stored (expired, destroyed) too.
    from redis_cache.fastapi.sessions import SessionMiddleware as M
    from redis_cache.sessions import new_session_id

    signed = M(lambda *a: None, SECRET)._sign(new_session_id())
    client.cookies.clear()
    client.cookies.set("session", signed)
    assert client.get("/me").json() == {"user": None}
    assert client.post("/cart/a").cookies["session"] != signed  # a fresh id, not the stale one


def test_key_rotation(redis: RedisServer) -> None:
    with TestClient(make_app(redis, secret_key="old")) as old:
        old.post("/login/ada")
        cookie = old.cookies["session"]
    with TestClient(make_app(redis, secret_key=["new", "old"])) as rotated:
        rotated.cookies.set("session", cookie)
        assert rotated.get("/me").json() == {"user": "ada"}
        resigned = rotated.post("/login/bob").cookies["session"]  # signed with the new key
    with TestClient(make_app(redis, secret_key="new")) as new:
        new.cookies.set("session", cookie)
        assert new.get("/me").json() == {"user": None}
        new.cookies.clear()
        new.cookies.set("session", resigned)
        assert new.get("/me").json() == {"user": "bob"}


def test_written_back_only_when_changed(client: TestClient, redis: RedisServer) -> None:
    client.post("/login/ada")
    key = session_keys(redis)[0]
    redis.cli("SET", key, '{"user":"changed-in-redis"}')
    # Reads do not write back what they loaded (it would undo the change above).
    client.get("/me")
    client.get("/me")
    assert redis.cli("GET", key).strip() == '{"user":"changed-in-redis"}'
    # A change nested in a list is seen and written.
    client.post("/cart/apple")
    assert "apple" in redis.cli("GET", key)


def test_rolling_and_absolute_expiry(redis: RedisServer) -> None:
    with TestClient(make_app(redis, max_age=100)) as rolling:
        rolling.post("/login/ada")
        key = session_keys(redis)[0]
        redis.cli("EXPIRE", key, "5")
        rolling.get("/me")  # a read pushes a rolling session's expiry
        assert int(redis.cli("TTL", key)) > 50
    redis.flushall()
    with TestClient(make_app(redis, max_age=100, rolling=False)) as absolute:
        absolute.post("/login/ada")
        key = session_keys(redis)[0]
        redis.cli("EXPIRE", key, "5")
        absolute.get("/me")
        absolute.post("/cart/x")  # even a write keeps the absolute deadline
        assert 0 < int(redis.cli("TTL", key)) <= 5
    redis.flushall()
    with TestClient(make_app(redis, max_age=1)) as short:
        short.post("/login/ada")
        deadline = time.monotonic() + 30
        while session_keys(redis):  # Redis expires it; poll, bounded
            assert time.monotonic() < deadline
        assert short.get("/me").json() == {"user": None}


def test_concurrent_requests_of_one_session(redis: RedisServer) -> None:
    app = make_app(redis)

    async def main() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                await c.post("/login/ada")
                answers = await asyncio.gather(*(c.post(f"/cart/{i}") for i in range(20)),
                                               *(c.get("/me") for _ in range(20)))
                assert all(r.json() == {"user": "ada"} for r in answers[20:])
                final = (await c.get("/me")).json()
                assert final == {"user": "ada"}
                return [r.status_code for r in answers]

    assert asyncio.run(main()) == [200] * 40
    # Last write wins for the whole session (documented), but it stays one valid session.
    assert len(session_keys(redis)) == 1


def test_size_cap(client: TestClient, redis: RedisServer,
                  caplog: pytest.LogCaptureFixture) -> None:
    client.post("/login/ada")
    with caplog.at_level("WARNING", "redis_cache.fastapi"):
        assert client.post("/big").status_code == 200
    assert any("max_size" in r.getMessage() for r in caplog.records)
    assert client.get("/me").json() == {"user": "ada"}  # the old session is intact


def test_redis_down_still_answers(redis_server_factory: Callable[..., RedisServer]) -> None:
    server = redis_server_factory()
    try:
        with TestClient(make_app(server, cache_options={"connect_wait": 0})) as c:
            c.post("/login/ada")
            server.stop()
            assert c.get("/me").json() == {"user": None}
            assert c.post("/login/bob").status_code == 200
            server.start()  # (empty: the test server keeps no data across restarts)
            deadline = time.monotonic() + 30
            while True:  # sessions work again once Redis is back
                c.post("/login/bob")
                if c.get("/me").json() == {"user": "bob"}:
                    break
                assert time.monotonic() < deadline
    finally:
        server.close()


def test_over_a_real_http_server(redis: RedisServer) -> None:
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(make_app(redis, https_only=True), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline
            time.sleep(0.01)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
            login = c.post("/login/ada")
            assert "Secure" in login.headers["set-cookie"]  # the default
            # httpx keeps Secure cookies away from http://, as browsers do: send it by hand.
            cookie = login.headers["set-cookie"].split(";", 1)[0]
            assert c.get("/me", headers={"Cookie": cookie}).json() == {"user": "ada"}
            assert c.get("/me").json() == {"user": None}
    finally:
        server.should_exit = True
        thread.join(30)


def test_store_and_seed_forms(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        async with RedisCache.from_url(redis.url, namespace="t") as cache:
            store = SessionStore(cache, ttl=60, max_size=100)
            sid = await store.create({"a": 1})
            loaded = await store.load(sid)
            assert loaded is not None and loaded.data == {"a": 1}
            new = await store.regenerate(sid)
            assert new != sid and await store.load(sid) is None
            with pytest.raises(SessionTooLarge, match="max_size=100"):
                await store.save(new, {"x": "y" * 200})
            await store.destroy(new)
            assert await store.load(new) is None
            assert await store.load("../../etc") is None
            await cache.set_session("s1", {"user": "ada"}, ttl=60)
            assert await cache.get_session("s1") == {"user": "ada"}
        with pytest.raises(ValueError, match="ttl"):
            SessionStore(cache, ttl=0)

    run(main())
    with SyncRedisCache.from_url(redis.url, namespace="t") as cache:
        assert cache.get_session("s1") == {"user": "ada"}
        cache.set_session("s2", {"n": 2}, ttl=60)
        assert 0 < cache.ttl("session:s2") <= 60
        assert cache.get_session("nope") is None


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="secret_key"):
        SessionMiddleware(lambda *a: None, "")
    with pytest.raises(ValueError, match="same_site"):
        SessionMiddleware(lambda *a: None, "s", same_site="sometimes")
