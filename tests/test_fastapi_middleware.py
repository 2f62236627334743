"""CacheMiddleware against a real redis-server: what is cached, under which key,
and what each kind of request gets back.

A hit is told from a miss by the X-Cache header *and* by the app's own call
counter (``app.state.calls``), so a test cannot pass on the header alone.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

import pytest
from fastapi_support import (  # noqa: F401 - no_asyncio_errors is an autouse fixture
    CountingCache,
    body_etag,
    cache_keys,
    client,
    make_app,
    no_asyncio_errors,
)

from starlette.types import Message, Receive, Scope, Send

from redis_cache import RedisCache
from redis_cache.fastapi import CacheMiddleware, etag_matches

ENTRY_KEYS = "t:http:e:*"
SPEC_KEYS = "t:http:v:*"


# ------------------------------------------------------------------ basics


def test_miss_then_hit(redis: Any) -> None:
    app = make_app(redis)
    with client(app) as c:
        first = c.get("/items/a")
        second = c.get("/items/a")
    assert first.status_code == second.status_code == 200
    assert first.headers["x-cache"] == "MISS"
    assert second.headers["x-cache"] == "HIT"
    assert first.json() == second.json() == {"name": "a", "version": 1}
    assert app.state.calls["item:a"] == 1
    assert second.headers["etag"] == first.headers["etag"] == body_etag(first.content)
    assert second.headers["content-length"] == str(len(first.content))
    assert second.headers["content-type"] == "application/json"
    assert int(second.headers["age"]) >= 0
    assert "age" not in first.headers
    assert len(cache_keys(redis, ENTRY_KEYS)) == 1


def test_different_paths_get_different_entries(redis: Any) -> None:
    app = make_app(redis)
    with client(app) as c:
        assert c.get("/items/a").json()["name"] == "a"
        b = c.get("/items/b")
        assert b.headers["x-cache"] == "MISS"
        assert b.json()["name"] == "b"
        assert c.get("/items/a").headers["x-cache"] == "HIT"
    assert len(cache_keys(redis, ENTRY_KEYS)) == 2


def test_keys_are_hashes_inside_the_cache_namespace(redis: Any) -> None:
    app = make_app(redis, vary=("Authorization",))
    with client(app) as c:
        c.get("/me", headers={"Authorization": "Bearer secret-token"})
    keys = cache_keys(redis)
    assert len(keys) == 1
    assert keys[0].startswith("t:http:e:")
    digest = keys[0].rsplit(":", 1)[1]
    assert len(digest) == 40 and int(digest, 16) >= 0
    # The entry itself holds the response, never the request's credentials.
    assert "secret-token" not in redis.cli("GET", keys[0])


def test_head_is_served_from_the_get_entry(redis: Any) -> None:
    app = make_app(redis)
    with client(app) as c:
        get = c.get("/items/h")
        head = c.head("/items/h")
    assert head.status_code == 200
    assert head.headers["x-cache"] == "HIT"
    assert head.content == b""
    assert head.headers["content-length"] == str(len(get.content))
    assert head.headers["etag"] == get.headers["etag"]
    assert app.state.calls["item:h"] == 1


def test_head_miss_fills_the_entry_that_get_then_hits(redis: Any) -> None:
    # FastAPI itself answers HEAD on a GET route with 405: the middleware asks
    # the app for the GET and answers the HEAD from it.
    app = make_app(redis)
    with client(app) as c:
        head = c.head("/items/first")
        get = c.get("/items/first")
    assert head.status_code == 200
    assert head.headers["x-cache"] == "MISS"
    assert get.headers["x-cache"] == "HIT"
    assert get.json() == {"name": "first", "version": 1}
    assert head.headers["content-length"] == str(len(get.content))
    assert app.state.calls["item:first"] == 1


def test_head_sends_no_body_bytes_at_the_asgi_level(redis: Any) -> None:
    """TestClient drops HEAD bodies itself; here every message is inspected."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        body = b"0123456789" * 10
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"100")],
            }
        )
        await send({"type": "http.response.body", "body": body[:50], "more_body": True})
        await send({"type": "http.response.body", "body": body[50:]})

    async def call(mw: CacheMiddleware, method: str) -> list[Message]:
        scope: Scope = {
            "type": "http",
            "method": method,
            "path": "/x",
            "query_string": b"",
            "headers": [(b"host", b"example.test")],
        }
        sent: list[Message] = []

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Message) -> None:
            sent.append(message)

        await mw(scope, receive, send)
        return sent

    async def scenario() -> tuple[list[Any], list[Any], list[Any]]:
        async with RedisCache(port=redis.port) as cache:
            mw = CacheMiddleware(app, cache)
            head_miss = await call(mw, "HEAD")
            head_hit = await call(mw, "HEAD")
            get_hit = await call(mw, "GET")
        return head_miss, head_hit, get_hit

    head_miss, head_hit, get_hit = asyncio.run(scenario())
    for sent, state in ((head_miss, b"MISS"), (head_hit, b"HIT")):
        assert sent[0]["type"] == "http.response.start"
        assert (b"x-cache", state) in sent[0]["headers"]
        assert (b"content-length", b"100") in sent[0]["headers"]
        bodies = [m for m in sent[1:] if m["type"] == "http.response.body"]
        assert b"".join(m.get("body", b"") for m in bodies) == b""
        assert bodies[-1].get("more_body", False) is False
    assert (b"x-cache", b"HIT") in get_hit[0]["headers"]
    assert get_hit[1]["body"] == b"0123456789" * 10


# ------------------------------------------------------- what is not cached


def test_post_is_not_cached(redis: Any) -> None:
    app = make_app(redis)
    with client(app) as c:
        first = c.post("/items/p")
        second = c.post("/items/p")
    assert first.json()["version"] == 1
    assert second.json()["version"] == 2
    assert "x-cache" not in second.headers
    assert cache_keys(redis) == []


def test_get_entry_is_not_served_to_post(redis: Any) -> None:
    app = make_app(redis)
    with client(app) as c:
        c.get("/items/shared")
        post = c.post("/items/shared")
    assert post.json() == {"name": "shared", "version": 1}
    assert app.state.calls["post:shared"] == 1


@pytest.mark.parametrize(("path", "status"), [("/missing", 404), ("/boom", 500)])
def test_error_responses_are_not_cached(redis: Any, path: str, status: int) -> None:
    app = make_app(redis)
    name = path.strip("/")
    with client(app) as c:
        first = c.get(path)
        second = c.get(path)
    assert first.status_code == second.status_code == status
    assert app.state.calls[name] == 2
    assert second.headers.get("x-cache") != "HIT"
    assert cache_keys(redis) == []


def test_statuses_are_configurable(redis: Any) -> None:
    default = make_app(redis)
    with client(default) as c:
        c.get("/created")
        hit = c.get("/created")
    assert hit.status_code == 201 and hit.headers["x-cache"] == "HIT"
    assert default.state.calls["created"] == 1

    only_200 = make_app(redis, statuses={200}, key_prefix="only200")
    with client(only_200) as c:
        c.get("/created")
        assert c.get("/created").headers["x-cache"] == "MISS"
        c.get("/items/z")
        assert c.get("/items/z").headers["x-cache"] == "HIT"
    assert only_200.state.calls["created"] == 2
    assert only_200.state.calls["item:z"] == 1


def test_set_cookie_responses_are_not_cached(redis: Any) -> None:
    app = make_app(redis)
    with client(app) as c:
        first = c.get("/cookie")
        second = c.get("/cookie")
    assert "session=abc123" in first.headers["set-cookie"]
    assert "session=abc123" in second.headers["set-cookie"]
    assert second.json()["version"] == 2
    assert second.headers["x-cache"] == "MISS"
    assert cache_keys(redis) == []


@pytest.mark.parametrize(
    "cache_control",
    ["no-store", "private", "private;_max-age~60", "no-cache", "max-age~0", "public;_s-maxage~0"],
)
def test_uncacheable_cache_control_is_respected(redis: Any, cache_control: str) -> None:
    app = make_app(redis)
    path = f"/cc/{cache_control}"
    with client(app) as c:
        c.get(path)
        second = c.get(path)
    assert second.headers["x-cache"] == "MISS"
    assert second.json()["version"] == 2
    assert cache_keys(redis) == []


def test_vary_star_is_not_cached(redis: Any) -> None:
    app = make_app(redis)
    with client(app) as c:
        c.get("/varystar")
        assert c.get("/varystar").json()["version"] == 2
    assert cache_keys(redis) == []


# ----------------------------------------------------------------- varying


def test_authorization_bypasses_the_cache_by_default(redis: Any) -> None:
    app = make_app(redis)
    with client(app) as c:
        alice = c.get("/me", headers={"Authorization": "Bearer alice"})
        bob = c.get("/me", headers={"Authorization": "Bearer bob"})
        alice_again = c.get("/me", headers={"Authorization": "Bearer alice"})
    assert alice.json()["user"] == "alice"
    assert bob.json()["user"] == "bob"
    assert alice_again.json() == {"user": "alice", "version": 3}
    assert "x-cache" not in alice_again.headers
    assert cache_keys(redis) == []


def test_authorization_in_vary_gives_each_user_their_own_entry(redis: Any) -> None:
    app = make_app(redis, vary=("Authorization",))
    with client(app) as c:
        alice = c.get("/me", headers={"Authorization": "Bearer alice"})
        bob = c.get("/me", headers={"Authorization": "Bearer bob"})
        anonymous = c.get("/me")
        alice_hit = c.get("/me", headers={"Authorization": "Bearer alice"})
        bob_hit = c.get("/me", headers={"Authorization": "Bearer bob"})
        anonymous_hit = c.get("/me")
    assert [r.headers["x-cache"] for r in (alice, bob, anonymous)] == ["MISS"] * 3
    assert [r.headers["x-cache"] for r in (alice_hit, bob_hit, anonymous_hit)] == ["HIT"] * 3
    assert alice_hit.json() == {"user": "alice", "version": 1}
    assert bob_hit.json() == {"user": "bob", "version": 2}
    assert anonymous_hit.json() == {"user": "anonymous", "version": 3}
    assert app.state.calls["me"] == 3


def test_an_empty_header_is_not_the_same_as_a_missing_one(redis: Any) -> None:
    app = make_app(redis, vary=("Authorization",))
    with client(app) as c:
        c.get("/me")
        empty = c.get("/me", headers={"Authorization": ""})
    assert empty.headers["x-cache"] == "MISS"


def test_response_vary_accept_language_is_honoured(redis: Any) -> None:
    app = make_app(redis)
    with client(app) as c:
        en = c.get("/lang", headers={"Accept-Language": "en"})
        fr = c.get("/lang", headers={"Accept-Language": "fr"})
        en_hit = c.get("/lang", headers={"Accept-Language": "en"})
        fr_hit = c.get("/lang", headers={"Accept-Language": "fr"})
        de = c.get("/lang", headers={"Accept-Language": "de"})
    assert (en.headers["x-cache"], fr.headers["x-cache"]) == ("MISS", "MISS")
    assert (en_hit.headers["x-cache"], fr_hit.headers["x-cache"]) == ("HIT", "HIT")
    assert en_hit.json() == {"greeting": "hello", "version": 1}
    assert fr_hit.json() == {"greeting": "bonjour", "version": 2}
    assert de.headers["x-cache"] == "MISS" and de.json()["greeting"] == "hallo"
    assert fr_hit.headers["vary"] == "Accept-Language"
    assert en.headers["etag"] != fr.headers["etag"]
    # One vary spec for the path, one entry per language.
    assert len(cache_keys(redis, SPEC_KEYS)) == 1
    assert len(cache_keys(redis, ENTRY_KEYS)) == 3


def test_vary_spec_that_went_away_is_removed(redis: Any) -> None:
    """A path whose responses stop varying must not keep looking up varied keys."""
    app = make_app(redis)
    app.state.vary_on = True
    with client(app) as c:
        en = c.get("/togglevary", headers={"Accept-Language": "en"})
        assert en.headers["vary"] == "Accept-Language"
        assert len(cache_keys(redis, SPEC_KEYS)) == 1
        app.state.vary_on = False
        # Another language misses (the spec still says "varies"), and the
        # answer, which no longer varies, is stored under the plain key while
        # the spec is removed.
        fr = c.get("/togglevary", headers={"Accept-Language": "fr"})
        assert fr.headers["x-cache"] == "MISS" and "vary" not in fr.headers
        assert cache_keys(redis, SPEC_KEYS) == []
        de = c.get("/togglevary", headers={"Accept-Language": "de"})
    assert de.headers["x-cache"] == "HIT"
    assert de.json() == fr.json() == {"version": 2}


def test_query_is_normalized_by_name_only(redis: Any) -> None:
    app = make_app(redis)
    with client(app) as c:
        first = c.get("/query?a=1&b=2")
        reordered = c.get("/query?b=2&a=1")
        repeated = c.get("/query?a=1&a=2")
        repeated_swapped = c.get("/query?a=2&a=1")
        smuggled = c.get("/query?a=1%26b%3D2")
        encoded = c.get("/query?a=%31&b=2")
    assert first.headers["x-cache"] == "MISS"
    assert reordered.headers["x-cache"] == "HIT"
    assert reordered.json() == first.json()
    # The order of a repeated name is the app's business: separate entries.
    assert repeated.headers["x-cache"] == repeated_swapped.headers["x-cache"] == "MISS"
    assert repeated_swapped.json()["query"] == [["a", "2"], ["a", "1"]]
    assert smuggled.headers["x-cache"] == "MISS"
    assert smuggled.json()["query"] == [["a", "1&b=2"]]
    assert encoded.headers["x-cache"] == "HIT"


def test_host_is_part_of_the_key(redis: Any) -> None:
    app = make_app(redis)
    with client(app) as c:
        c.get("/items/h", headers={"Host": "one.example"})
        other = c.get("/items/h", headers={"Host": "two.example"})
        same = c.get("/items/h", headers={"Host": "ONE.example"})
    assert other.headers["x-cache"] == "MISS"
    assert same.headers["x-cache"] == "HIT"


# ------------------------------------------------------- ETag, If-None-Match


def test_if_none_match_on_a_hit_gives_304(redis: Any) -> None:
    app = make_app(redis)
    with client(app) as c:
        full = c.get("/items/e")
        etag = full.headers["etag"]
        not_modified = c.get("/items/e", headers={"If-None-Match": etag})
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert not_modified.headers["x-cache"] == "HIT"
    assert not_modified.headers["etag"] == etag
    assert not_modified.headers["cache-control"] == "max-age=60"
    assert "content-type" not in not_modified.headers
    assert app.state.calls["item:e"] == 1


def test_if_none_match_on_a_miss_gives_304_and_still_stores(redis: Any) -> None:
    app = make_app(redis)
    body = b'{"name":"m","version":1}'
    with client(app) as c:
        not_modified = c.get("/items/m", headers={"If-None-Match": body_etag(body)})
        full = c.get("/items/m")
    assert not_modified.status_code == 304
    assert not_modified.headers["x-cache"] == "MISS"
    assert not_modified.headers["etag"] == body_etag(body)
    assert not_modified.content == b""
    assert full.status_code == 200
    assert full.headers["x-cache"] == "HIT"
    assert full.content == body
    assert app.state.calls["item:m"] == 1


def test_304_keeps_vary(redis: Any) -> None:
    app = make_app(redis)
    with client(app) as c:
        fr = c.get("/lang", headers={"Accept-Language": "fr"})
        again = c.get(
            "/lang", headers={"Accept-Language": "fr", "If-None-Match": fr.headers["etag"]}
        )
    assert again.status_code == 304
    assert again.headers["vary"] == "Accept-Language"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{etag}", 304),
        ("W/{etag}", 304),
        ('"other", W/{etag}', 304),
        ('W/"a" ,{etag} , "b"', 304),
        ("*", 304),
        ('"other"', 200),
        ('W/"other", "more"', 200),
        ("{bare}", 200),  # not a quoted entity tag
    ],
)
def test_if_none_match_forms(redis: Any, template: str, expected: int) -> None:
    app = make_app(redis)
    with client(app) as c:
        etag = c.get("/items/f").headers["etag"]
        value = template.format(etag=etag, bare=etag.strip('"'))
        response = c.get("/items/f", headers={"If-None-Match": value})
    assert response.status_code == expected
    assert response.headers["x-cache"] == "HIT"
    if expected == 200:
        assert response.json()["name"] == "f"


def test_etag_matches_helper() -> None:
    assert etag_matches('"a"', '"a"')
    assert etag_matches('W/"a"', '"a"')
    assert etag_matches('"a"', 'W/"a"')
    assert etag_matches('"x", "a,b"', '"a,b"')  # commas inside a tag
    assert not etag_matches('"ab"', '"a"')
    assert not etag_matches("", '"a"')
    assert not etag_matches('garbage "a"', '"a"')


def test_the_apps_own_etag_is_kept(redis: Any) -> None:
    app = make_app(redis)
    with client(app) as c:
        first = c.get("/etagged")
        hit = c.get("/etagged")
        conditional = c.get("/etagged", headers={"If-None-Match": '"app-tag"'})
    assert first.headers["etag"] == hit.headers["etag"] == '"app-tag"'
    assert hit.headers["x-cache"] == "HIT"
    assert conditional.status_code == 304


# ------------------------------------------------------------ Cache-Control


def test_max_age_is_emitted_and_matches_the_redis_ttl(redis: Any) -> None:
    app = make_app(redis, ttl=120)
    with client(app) as c:
        miss = c.get("/items/t")
        hit = c.get("/items/t")
    assert miss.headers["cache-control"] == hit.headers["cache-control"] == "max-age=120"
    [key] = cache_keys(redis, ENTRY_KEYS)
    assert 100 <= int(redis.cli("TTL", key)) <= 120


def test_ttl_per_prefix_and_none_means_not_cached(redis: Any) -> None:
    app = make_app(redis, ttl=50, ttl_for={"/api": 5, "/api/private": None, "/items": 30})
    with client(app) as c:
        api = c.get("/api/thing")
        private = c.get("/api/private/thing")
        private_again = c.get("/api/private/thing")
        item = c.get("/items/x")
        other = c.get("/other/thing")
    assert api.headers["cache-control"] == "max-age=5"
    assert item.headers["cache-control"] == "max-age=30"
    assert other.headers["cache-control"] == "max-age=50"
    assert "x-cache" not in private.headers
    assert private_again.json()["version"] == 2


def test_ttl_for_callable(redis: Any) -> None:
    app = make_app(redis, ttl_for=lambda path: 7 if path.startswith("/items/") else None)
    with client(app) as c:
        assert c.get("/items/c").headers["cache-control"] == "max-age=7"
        assert "x-cache" not in c.get("/api/thing").headers


def test_the_apps_cache_control_is_kept_and_caps_the_ttl(redis: Any) -> None:
    app = make_app(redis, ttl=300)
    with client(app) as c:
        first = c.get("/cc/public;_max-age~7")
        hit = c.get("/cc/public;_max-age~7")
    assert first.headers["cache-control"] == hit.headers["cache-control"] == "public, max-age=7"
    assert hit.headers["x-cache"] == "HIT"
    [key] = cache_keys(redis, ENTRY_KEYS)
    assert 0 < int(redis.cli("TTL", key)) <= 7


def test_client_no_cache_is_ignored_by_default(redis: Any) -> None:
    app = make_app(redis)
    with client(app) as c:
        c.get("/items/n")
        forced = c.get("/items/n", headers={"Cache-Control": "no-cache"})
        pragma = c.get("/items/n", headers={"Pragma": "no-cache"})
    assert forced.headers["x-cache"] == pragma.headers["x-cache"] == "HIT"
    assert app.state.calls["item:n"] == 1


def test_client_no_cache_is_honoured_when_configured(redis: Any) -> None:
    app = make_app(redis, honor_client_no_cache=True)
    with client(app) as c:
        c.get("/items/n")
        forced = c.get("/items/n", headers={"Cache-Control": "no-cache"})
        pragma = c.get("/items/n", headers={"Pragma": "no-cache"})
        after = c.get("/items/n")
    assert forced.headers["x-cache"] == pragma.headers["x-cache"] == "MISS"
    assert forced.json()["version"] == 2
    # The fresh response replaced the stored one.
    assert after.headers["x-cache"] == "HIT"
    assert after.json()["version"] == 3


# ------------------------------------------------------------------- paths


def test_include_and_exclude_prefixes(redis: Any) -> None:
    app = make_app(redis, include=("/api",), exclude=("/api/private",))
    with client(app) as c:
        results = {}
        for path in ("/api/thing", "/apix/thing", "/api/private/thing", "/other/thing"):
            c.get(path)
            results[path] = c.get(path)
    assert results["/api/thing"].headers["x-cache"] == "HIT"
    for path in ("/apix/thing", "/api/private/thing", "/other/thing"):
        assert "x-cache" not in results[path].headers, path
        assert results[path].json()["version"] == 2, path


# --------------------------------------------------------------- streaming


def test_small_streaming_response_is_cached(redis: Any) -> None:
    app = make_app(redis)
    with client(app) as c:
        first = c.get("/stream/10")
        hit = c.get("/stream/10")
    assert hit.headers["x-cache"] == "HIT"
    assert hit.content == first.content
    assert len(hit.content) == 10 * 103
    assert hit.headers["content-length"] == str(10 * 103)


def test_streaming_response_over_the_limit_passes_through(redis: Any) -> None:
    app = make_app(redis, max_body_size=1000)
    with client(app) as c:
        first = c.get("/stream/30")
        second = c.get("/stream/30")
        head = c.head("/stream/30")
    assert first.status_code == second.status_code == 200
    assert second.content.count(b"\n") == 30
    assert second.content.startswith(b"v2:")
    assert second.headers["x-cache"] == "MISS"
    assert "etag" not in second.headers
    assert head.status_code == 200 and head.content == b""
    assert cache_keys(redis) == []


def test_declared_length_over_the_limit_is_not_buffered(redis: Any) -> None:
    app = make_app(redis, max_body_size=10)
    with client(app) as c:
        c.get("/items/long-name")
        second = c.get("/items/long-name")
    assert second.headers["x-cache"] == "MISS"
    assert second.json()["version"] == 2


# ----------------------------------------------------------- cache trouble


def test_corrupt_entry_is_a_miss_and_gets_replaced(redis: Any) -> None:
    app = make_app(redis)
    with client(app) as c:
        c.get("/items/x")
        [key] = cache_keys(redis, ENTRY_KEYS)
        redis.cli("SET", key, '"RCH1\\nnot json\\n!!"')
        replaced = c.get("/items/x")
        hit = c.get("/items/x")
    assert replaced.status_code == 200
    assert replaced.headers["x-cache"] == "MISS"
    assert replaced.json()["version"] == 2
    assert hit.headers["x-cache"] == "HIT"


def test_a_failing_write_still_serves_the_response(
    redis: Any, caplog: pytest.LogCaptureFixture
) -> None:
    made: list[CountingCache] = []

    def factory() -> CountingCache:
        cache = CountingCache(port=redis.port, namespace="t")
        cache.fail_writes = True
        made.append(cache)
        return cache

    app = make_app(redis, cache_factory=factory, retry_after=0)
    with caplog.at_level(logging.WARNING, "redis_cache.fastapi"), client(app) as c:
        first = c.get("/items/w")
        second = c.get("/items/w")
    assert first.status_code == second.status_code == 200
    assert first.headers["x-cache"] == second.headers["x-cache"] == "MISS"
    assert second.json()["version"] == 2
    assert made[0].counts["set"] == 2
    assert any("write failed" in r.getMessage() for r in caplog.records)


def test_raw_serializer_cache_works_too(redis: Any) -> None:
    app = make_app(
        redis, cache_factory=lambda: RedisCache(port=redis.port, serializer="raw", namespace="t")
    )
    with client(app) as c:
        c.get("/lang", headers={"Accept-Language": "de"})
        hit = c.get("/lang", headers={"Accept-Language": "de"})
    assert hit.headers["x-cache"] == "HIT"
    assert hit.json() == {"greeting": "hallo", "version": 1}


def test_without_a_cache_requests_pass_through(caplog: pytest.LogCaptureFixture) -> None:
    from fastapi import FastAPI
    from fastapi_support import TestClient

    app = FastAPI()
    app.add_middleware(CacheMiddleware)

    @app.get("/x")
    async def x() -> dict[str, int]:
        return {"x": 1}

    with caplog.at_level(logging.WARNING, "redis_cache.fastapi"), TestClient(app) as c:
        response = c.get("/x")
    assert response.json() == {"x": 1}
    assert "x-cache" not in response.headers
    assert any("has no cache" in r.getMessage() for r in caplog.records)


def test_options_are_validated() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None: ...

    with pytest.raises(TypeError):
        CacheMiddleware(app, include="/api")
    with pytest.raises(ValueError):
        CacheMiddleware(app, vary=("Bad Header",))
    with pytest.raises(TypeError):
        CacheMiddleware(app, ttl_for=5)  # type: ignore[arg-type]


def test_key_material_is_length_prefixed() -> None:
    """Moving a boundary between two parts changes the digest."""
    from redis_cache.fastapi import _digest

    assert _digest([b"ab", b"c"]) != _digest([b"a", b"bc"])
    assert _digest([b"a", b""]) != _digest([b"a"])
    assert _digest([b"x"]) == _digest([b"x"])
    assert len(_digest([b"x"])) == 2 * 20
    assert _digest([b"x"]) != hashlib.blake2b(b"x", digest_size=20).hexdigest()
