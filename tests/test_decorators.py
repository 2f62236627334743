"""What the caching decorators do, for sync and async functions alike.

``@cache.cached``, ``fn.invalidate``, ``@cache.invalidate``,
``@cache.cached_batch``, the module-level ``cached`` with
``set_default_cache``, twins (a sync function on an async cache and the
reverse) and ``fn.stats`` / ``redis_cache.stats()``, against a real private
redis-server (the ``redis`` fixture, emptied per test).

Most tests take the ``flavor`` fixture and run three times: a sync function
on a ``SyncRedisCache``, and an async function on a ``RedisCache`` on the
asyncio and on the uvloop event loop. The body is always a coroutine
(``flavor.run(body)``), the function under test is built from a plain
implementation by ``flavor.wrap`` (``def`` or ``async def`` with the same
signature, name and annotations), and ``await flavor.call(f, ...)`` calls it
either way. What the server holds is read back with raw RESP
(``redis_raw``), not with the library under test. Nothing sleeps: TTLs are
checked as PTTL ranges.

No ``from __future__ import annotations``: return annotations of classes
defined inside tests must be real objects for the typed reads.
"""

import asyncio
import dataclasses
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from typing import Any, Optional

import pytest
from async_support import Runner, run  # noqa: F401  (run is a fixture)
from redis_raw import dbsize, keys, pttl, raw

import redis_cache
from redis_cache import RedisCache, SyncRedisCache, cached, set_default_cache
from redis_cache.testing import RedisServer

NS = "dt"

FLAVORS = ["sync", "async", pytest.param("async-uvloop", marks=pytest.mark.uvloop)]


class Flavor:
    """One way of running a decorated function: sync, or async on a loop kind."""

    def __init__(self, name: str, server: RedisServer) -> None:
        self.name = name
        self.is_async = name != "sync"
        self.server = server
        self.runner = Runner("uvloop" if name == "async-uvloop" else "asyncio")

    def __repr__(self) -> str:
        return f"<Flavor {self.name}>"

    def cache(self, **options: Any) -> Any:
        options.setdefault("namespace", NS)
        kind = RedisCache if self.is_async else SyncRedisCache
        return kind(port=self.server.port, **options)

    def wrap(self, impl: Callable[..., Any]) -> Callable[..., Any]:
        """A function of this flavor with impl's signature, name and annotations."""
        if self.is_async:

            @functools.wraps(impl)
            async def async_version(*args: Any, **kwargs: Any) -> Any:
                return impl(*args, **kwargs)

            return async_version

        @functools.wraps(impl)
        def sync_version(*args: Any, **kwargs: Any) -> Any:
            return impl(*args, **kwargs)

        return sync_version

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        result = fn(*args, **kwargs)
        return await result if inspect.isawaitable(result) else result

    async def close(self, cache: Any) -> None:
        closing = cache.close()
        if inspect.isawaitable(closing):
            await closing

    def run(self, body: Callable[[Any], Awaitable[Any]], **options: Any) -> Any:
        """Runs body(cache) on a fresh loop with a cache of this flavor, closed after."""

        async def main() -> Any:
            cache = self.cache(**options)
            try:
                return await body(cache)
            finally:
                await self.close(cache)

        return self.runner(main())


@pytest.fixture(params=FLAVORS)
def flavor(request: pytest.FixtureRequest, redis: RedisServer) -> Flavor:
    return Flavor(request.param, redis)


def reset_stats(fn: Any) -> None:
    """Stats live per qualified name for the whole process: start from zero."""
    s = fn.stats
    with s._lock:
        s.hits = s.misses = s.errors = s.computations = 0
        s.compute_seconds = 0.0


def counts(fn: Any) -> dict[str, int]:
    s = fn.stats
    return {"hits": s.hits, "misses": s.misses, "computations": s.computations,
            "errors": s.errors}


def full_key(fn: Any, *args: Any, **kwargs: Any) -> str:
    """The key on the server: the cache's namespace, then fn.key(...)."""
    return f"{NS}:{fn.key(*args, **kwargs)}"


def stored(server: RedisServer, key: str) -> Any:
    return raw(server, "GET", key)


@pytest.fixture
def no_default_cache() -> Iterator[None]:
    set_default_cache(None)
    yield
    set_default_cache(None)


# ---------------------------------------------------------------------------
# None results, condition=, ttl
# ---------------------------------------------------------------------------


def test_none_result_is_cached_and_told_from_a_miss(flavor: Flavor, redis: RedisServer) -> None:
    calls: list[int] = []

    def lookup(user_id: int) -> Optional[str]:
        calls.append(user_id)
        return None

    async def body(cache: Any) -> None:
        f = cache.cached(60)(flavor.wrap(lookup))
        reset_stats(f)
        assert await flavor.call(f, 1) is None
        assert stored(redis, full_key(f, 1)) == b"null"
        assert await flavor.call(f, 1) is None
        assert calls == [1]
        assert counts(f) == {"hits": 1, "misses": 1, "computations": 1, "errors": 0}

    flavor.run(body)


def test_a_none_stored_by_someone_else_is_a_hit(flavor: Flavor, redis: RedisServer) -> None:
    calls: list[int] = []

    def lookup(user_id: int) -> Optional[str]:
        calls.append(user_id)
        return "computed"

    async def body(cache: Any) -> None:
        f = cache.cached(60)(flavor.wrap(lookup))
        assert raw(redis, "SET", full_key(f, 1), "null") == "OK"
        assert await flavor.call(f, 1) is None  # the cached None, not a miss
        assert await flavor.call(f, 2) == "computed"  # no entry: a miss
        assert calls == [2]

    flavor.run(body)


def test_condition_false_skips_storing(flavor: Flavor, redis: RedisServer) -> None:
    calls: list[int] = []

    def lookup(user_id: int) -> Optional[dict[str, int]]:
        calls.append(user_id)
        return None if user_id < 0 else {"id": user_id}

    async def body(cache: Any) -> None:
        f = cache.cached(60, condition=lambda result: result is not None)(flavor.wrap(lookup))
        assert await flavor.call(f, -1) is None
        assert await flavor.call(f, -1) is None
        assert stored(redis, full_key(f, -1)) is None
        assert await flavor.call(f, 5) == {"id": 5}
        assert await flavor.call(f, 5) == {"id": 5}
        assert stored(redis, full_key(f, 5)) == b'{"id":5}'
        assert calls == [-1, -1, 5]

    flavor.run(body)


@pytest.mark.parametrize(
    ("ttl", "low", "high"),
    [(60, 59_000, 60_000), (2.5, 1_500, 2_500), (timedelta(minutes=2), 119_000, 120_000)],
    ids=["int", "float", "timedelta"],
)
def test_ttl_is_applied_to_the_real_key(
    flavor: Flavor, redis: RedisServer, ttl: Any, low: int, high: int
) -> None:
    def lookup(user_id: int) -> int:
        return user_id

    async def body(cache: Any) -> None:
        f = cache.cached(ttl)(flavor.wrap(lookup))
        assert await flavor.call(f, 7) == 7
        assert low <= pttl(redis, full_key(f, 7)) <= high
        assert keys(redis) == [full_key(f, 7).encode()]

    flavor.run(body)


def test_no_ttl_uses_the_cache_default_ttl(flavor: Flavor, redis: RedisServer) -> None:
    def lookup(user_id: int) -> int:
        return user_id

    async def body(cache: Any) -> None:
        f = cache.cached()(flavor.wrap(lookup))
        assert await flavor.call(f, 1) == 1
        assert 29_000 <= pttl(redis, full_key(f, 1)) <= 30_000

    flavor.run(body, default_ttl=30)


def test_no_ttl_and_no_default_stores_without_expiry(flavor: Flavor, redis: RedisServer) -> None:
    def lookup(user_id: int) -> int:
        return user_id

    async def body(cache: Any) -> None:
        f = cache.cached()(flavor.wrap(lookup))
        assert await flavor.call(f, 1) == 1
        assert pttl(redis, full_key(f, 1)) == -1

    flavor.run(body)


def test_unstable_argument_raises_before_the_function_runs(
    flavor: Flavor, redis: RedisServer
) -> None:
    calls: list[Any] = []

    def lookup(user_id: int, db: Any) -> int:
        calls.append(user_id)
        return user_id

    async def body(cache: Any) -> None:
        f = cache.cached(60)(flavor.wrap(lookup))
        with pytest.raises(TypeError, match="key="):
            await flavor.call(f, 1, object())

    flavor.run(body)
    assert calls == []
    assert dbsize(redis) == 0


def test_unstorable_result_is_returned_and_logged(
    flavor: Flavor, redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    def lookup(user_id: int) -> Any:
        calls.append(user_id)
        return {"handle": object()}

    async def body(cache: Any) -> None:
        f = cache.cached(60)(flavor.wrap(lookup))
        first = await flavor.call(f, 1)
        assert set(first) == {"handle"}
        await flavor.call(f, 1)

    with caplog.at_level(logging.WARNING, logger="redis_cache"):
        flavor.run(body)
    assert calls == [1, 1]  # never stored, so computed each time
    assert dbsize(redis) == 0
    assert any("cannot store" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------
# typed returns
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class Point:
    x: int
    y: float
    label: Optional[str] = None


def _pydantic() -> Any:
    return pytest.importorskip("pydantic", minversion="2")


def test_dataclass_result_comes_back_as_the_dataclass(flavor: Flavor) -> None:
    def make(x: int) -> Point:
        return Point(x, 1.5, "p")

    async def body(cache: Any) -> None:
        f = cache.cached(60)(flavor.wrap(make))
        assert await flavor.call(f, 1) == Point(1, 1.5, "p")
        hit = await flavor.call(f, 1)
        assert type(hit) is Point
        assert hit == Point(1, 1.5, "p")

    flavor.run(body)


def test_pydantic_results_come_back_typed(flavor: Flavor) -> None:
    pydantic = _pydantic()

    class User(pydantic.BaseModel):
        id: int
        name: str
        tags: list[str] = []

    def one(user_id: int) -> User:
        return User(id=user_id, name=f"u{user_id}", tags=["a"])

    def many(n: int) -> list[User]:
        return [User(id=i, name=f"u{i}") for i in range(n)]

    def maybe(user_id: int) -> Optional[User]:
        return None if user_id == 0 else User(id=user_id, name="m")

    def mapping(n: int) -> dict[str, User]:
        return {f"k{i}": User(id=i, name="d") for i in range(n)}

    async def body(cache: Any) -> None:
        f_one = cache.cached(60)(flavor.wrap(one))
        f_many = cache.cached(60)(flavor.wrap(many))
        f_maybe = cache.cached(60)(flavor.wrap(maybe))
        f_mapping = cache.cached(60)(flavor.wrap(mapping))
        for _ in range(2):  # the miss, then the hit
            user = await flavor.call(f_one, 3)
            assert type(user) is User and user == User(id=3, name="u3", tags=["a"])
            users = await flavor.call(f_many, 2)
            assert [type(u) for u in users] == [User, User]
            assert users == [User(id=0, name="u0"), User(id=1, name="u1")]
            assert await flavor.call(f_maybe, 0) is None
            found = await flavor.call(f_maybe, 4)
            assert type(found) is User and found.id == 4
            by_name = await flavor.call(f_mapping, 2)
            assert {k: type(v) for k, v in by_name.items()} == {"k0": User, "k1": User}
        for f in (f_one, f_many, f_maybe, f_mapping):
            assert f.stats.hits >= 1

    flavor.run(body)


def test_tuple_result_comes_back_as_a_tuple(flavor: Flavor) -> None:
    def pair(x: int) -> tuple[int, str]:
        return (x, "a")

    async def body(cache: Any) -> None:
        f = cache.cached(60)(flavor.wrap(pair))
        assert await flavor.call(f, 1) == (1, "a")
        assert await flavor.call(f, 1) == (1, "a")  # [1, 'a']

    flavor.run(body)


# Decorated before LateModel exists: the common layout with a forward
# reference (or a TYPE_CHECKING-only import) as the return annotation.
@cached(60)
def load_late(item: int) -> "LateModel":
    return LateModel(item)


@dataclasses.dataclass
class LateModel:
    item: int


def test_forward_referenced_return_type_is_resolved_at_call_time(
    redis: RedisServer, no_default_cache: None
) -> None:
    with SyncRedisCache(port=redis.port, namespace=NS) as cache:
        set_default_cache(cache)
        assert load_late(1) == LateModel(1)
        assert load_late(1) == LateModel(1)  # {'item': 1}


# ---------------------------------------------------------------------------
# fn.invalidate and fn.key
# ---------------------------------------------------------------------------


def test_fn_invalidate_deletes_exactly_that_entry(flavor: Flavor, redis: RedisServer) -> None:
    calls: list[tuple[int, str]] = []

    def lookup(user_id: int, lang: str = "en") -> str:
        calls.append((user_id, lang))
        return f"{user_id}-{lang}-{len(calls)}"

    async def body(cache: Any) -> None:
        f = cache.cached(60)(flavor.wrap(lookup))
        first = await flavor.call(f, 1)
        other_lang = await flavor.call(f, 1, "de")
        other_user = await flavor.call(f, 2)
        assert len(keys(redis)) == 3
        assert await flavor.call(f.invalidate, user_id=1) is True  # another spelling of f(1)
        assert sorted(keys(redis)) == sorted(
            [full_key(f, 1, "de").encode(), full_key(f, 2).encode()]
        )
        assert await flavor.call(f.invalidate, 1) is False  # already gone
        assert await flavor.call(f, 1, "de") == other_lang
        assert await flavor.call(f, 2) == other_user
        again = await flavor.call(f, 1)
        assert again != first
        assert calls == [(1, "en"), (1, "de"), (2, "en"), (1, "en")]

    flavor.run(body)


def test_fn_key_is_the_stored_key_inside_the_cache_namespace(
    flavor: Flavor, redis: RedisServer
) -> None:
    def lookup(user_id: int) -> int:
        return user_id

    async def body(cache: Any) -> None:
        f = cache.cached(60)(flavor.wrap(lookup))
        await flavor.call(f, 9)
        assert keys(redis) == [cache._key_prefix + f.key(9).encode()]
        # A nested function's prefix also names its line (several can share a name).
        assert f.key(9).startswith(f"{lookup.__module__}.{lookup.__qualname__}@")

    flavor.run(body)


def test_method_invalidate_without_self(flavor: Flavor, redis: RedisServer) -> None:
    calls: list[int] = []

    def get(self: Any, user_id: int) -> str:
        calls.append(user_id)
        return f"user-{user_id}-{len(calls)}"

    async def body(cache: Any) -> None:
        repo_class = type("Repo", (), {"get": cache.cached(60)(flavor.wrap(get))})
        repo = repo_class()
        first = await flavor.call(repo.get, 5)
        await flavor.call(repo.get, 6)
        assert await flavor.call(repo_class.get.invalidate, 5) is True
        assert keys(redis) == [full_key(repo_class.get, repo, 6).encode()]
        assert await flavor.call(repo.get.invalidate, user_id=6) is True
        assert dbsize(redis) == 0
        assert await flavor.call(repo.get, 5) != first
        # self may be passed too.
        assert await flavor.call(repo_class.get.invalidate, repo, 5) is True
        assert calls == [5, 6, 5]

    flavor.run(body)


def test_method_invalidate_without_self_with_a_defaulted_parameter(
    flavor: Flavor, redis: RedisServer
) -> None:
    def get(self: Any, user_id: int, lang: str = "en") -> str:
        return f"{user_id}-{lang}"

    async def body(cache: Any) -> None:
        repo_class = type("Repo", (), {"get": cache.cached(60)(flavor.wrap(get))})
        await flavor.call(repo_class().get, 5, "de")
        assert await flavor.call(repo_class.get.invalidate, 5, "de") is True

    flavor.run(body)


# ---------------------------------------------------------------------------
# @cache.invalidate
# ---------------------------------------------------------------------------


def test_invalidate_deletes_template_keys_after_the_function_returns(
    flavor: Flavor, redis: RedisServer
) -> None:
    seen_inside: list[list[bytes]] = []

    def update_user(user_id: int, name: str) -> str:
        seen_inside.append(keys(redis))
        return f"updated {user_id}"

    async def body(cache: Any) -> None:
        for key in ("user:1", "user:2", "search:a", "search:b:c", "searches", "other"):
            assert raw(redis, "SET", f"{NS}:{key}", "1") == "OK"
        f = cache.invalidate("user:{user_id}", "search:*")(flavor.wrap(update_user))
        assert await flavor.call(f, 1, name="Ada") == "updated 1"
        assert keys(redis) == sorted(
            f"{NS}:{k}".encode() for k in ("user:2", "searches", "other")
        )

    flavor.run(body)
    # While the function ran, nothing was deleted yet.
    assert len(seen_inside) == 1 and len(seen_inside[0]) == 6


def test_invalidate_deletes_nothing_when_the_function_raises(
    flavor: Flavor, redis: RedisServer
) -> None:
    def update_user(user_id: int) -> None:
        raise LookupError(f"no user {user_id}")

    async def body(cache: Any) -> None:
        assert raw(redis, "SET", f"{NS}:user:1", "1") == "OK"
        assert raw(redis, "SET", f"{NS}:search:x", "1") == "OK"
        f = cache.invalidate("user:{user_id}", "search:*")(flavor.wrap(update_user))
        with pytest.raises(LookupError):
            await flavor.call(f, 1)
        assert keys(redis) == [f"{NS}:search:x".encode(), f"{NS}:user:1".encode()]

    flavor.run(body)


def test_invalidate_pairs_with_a_cached_template(flavor: Flavor, redis: RedisServer) -> None:
    db = {1: "Ada", 2: "Grace"}
    reads: list[int] = []

    def get_user(user_id: int) -> str:
        reads.append(user_id)
        return db[user_id]

    def rename(user_id: int, name: str) -> None:
        db[user_id] = name

    async def body(cache: Any) -> None:
        get = cache.cached(60, key="user:{user_id}")(flavor.wrap(get_user))
        put = cache.invalidate("user:{user_id}")(flavor.wrap(rename))
        assert await flavor.call(get, 1) == "Ada"
        assert await flavor.call(get, 2) == "Grace"
        await flavor.call(put, 1, "Lovelace")
        assert await flavor.call(get, 1) == "Lovelace"
        assert await flavor.call(get, 2) == "Grace"
        assert reads == [1, 2, 1]

    flavor.run(body)


def test_invalidate_with_namespace_scopes_its_templates(
    flavor: Flavor, redis: RedisServer
) -> None:
    def get_user(user_id: int) -> int:
        return user_id

    def touch(user_id: int) -> None:
        return None

    async def body(cache: Any) -> None:
        get = cache.cached(60, namespace="v2", key="user:{user_id}")(flavor.wrap(get_user))
        put = cache.invalidate("user:{user_id}", namespace="v2")(flavor.wrap(touch))
        assert raw(redis, "SET", f"{NS}:user:3", "1") == "OK"  # outside v2: kept
        await flavor.call(get, 3)
        assert f"{NS}:v2:user:3".encode() in keys(redis)
        await flavor.call(put, 3)
        assert keys(redis) == [f"{NS}:user:3".encode()]

    flavor.run(body)


def test_invalidate_argument_with_a_star_is_not_a_pattern(
    flavor: Flavor, redis: RedisServer
) -> None:
    def update_user(user_id: str) -> None:
        return None

    async def body(cache: Any) -> None:
        for key in ("user:1", "user:2", "user:*"):
            assert raw(redis, "SET", f"{NS}:{key}", "1") == "OK"
        f = cache.invalidate("user:{user_id}")(flavor.wrap(update_user))
        await flavor.call(f, "*")
        assert keys(redis) == [f"{NS}:user:1".encode(), f"{NS}:user:2".encode()]

    flavor.run(body)


def test_invalidate_needs_a_template(redis: RedisServer) -> None:
    with SyncRedisCache(port=redis.port) as cache, pytest.raises(ValueError, match="template"):
        cache.invalidate()


# ---------------------------------------------------------------------------
# cached_batch
# ---------------------------------------------------------------------------


def command_calls(server: RedisServer) -> dict[str, int]:
    """Calls per command since CONFIG RESETSTAT (INFO commandstats)."""
    info = raw(server, "INFO", "commandstats")
    assert isinstance(info, bytes)
    calls: dict[str, int] = {}
    for line in info.decode().splitlines():
        if line.startswith("cmdstat_"):
            name, _, fields = line[len("cmdstat_"):].partition(":")
            calls[name] = int(fields.split(",")[0].split("=")[1])
    return calls


def test_cached_batch_one_mget_and_only_missing_ids(flavor: Flavor, redis: RedisServer) -> None:
    asked: list[list[int]] = []

    def users(ids: list[int]) -> dict[int, dict[str, int]]:
        asked.append(list(ids))
        return {i: {"id": i} for i in ids}

    async def body(cache: Any) -> None:
        f = cache.cached_batch(60, key="user:{}")(flavor.wrap(users))
        reset_stats(f)
        await flavor.call(f, [2, 4])
        assert raw(redis, "CONFIG", "RESETSTAT") == "OK"
        result = await flavor.call(f, [5, 4, 1, 2, 5, 3, 1])
        assert list(result) == [5, 4, 1, 2, 3]  # input order, duplicates once
        assert result == {i: {"id": i} for i in (5, 4, 1, 2, 3)}
        calls = command_calls(redis)
        assert calls.get("mget") == 1
        assert "get" not in calls
        assert asked == [[2, 4], [5, 1, 3]]  # only the missing ids, in order, once each
        assert keys(redis) == sorted(f"{NS}:user:{i}".encode() for i in range(1, 6))
        assert 59_000 <= pttl(redis, f"{NS}:user:3") <= 60_000
        assert stored(redis, f"{NS}:user:5") == b'{"id":5}'
        assert counts(f) == {"hits": 2, "misses": 5, "computations": 2, "errors": 0}
        # Everything cached: the function is not called at all.
        assert await flavor.call(f, [3, 1]) == {3: {"id": 3}, 1: {"id": 1}}
        assert len(asked) == 2

    flavor.run(body)


def test_cached_batch_default_keys_tell_int_from_str_ids(
    flavor: Flavor, redis: RedisServer
) -> None:
    def items(ids: list[Any]) -> dict[Any, str]:
        return {i: f"{type(i).__name__}:{i}" for i in ids}

    async def body(cache: Any) -> None:
        f = cache.cached_batch(60)(flavor.wrap(items))
        result = await flavor.call(f, [1, "1", (1, 2)])
        assert result == {1: "int:1", "1": "str:1", (1, 2): "tuple:(1, 2)"}
        distinct_keys = {f.key(1), f.key("1"), f.key((1, 2))}
        assert len(distinct_keys) == 3
        assert f.key(1) == f"{items.__module__}.{items.__qualname__}:i:1"
        assert sorted(keys(redis)) == sorted(f"{NS}:{k}".encode() for k in distinct_keys)
        again = await flavor.call(f, ["1", 1])
        assert again == {"1": "str:1", 1: "int:1"}

    flavor.run(body)


def test_cached_batch_ids_the_function_does_not_return(flavor: Flavor, redis: RedisServer) -> None:
    asked: list[list[int]] = []

    def users(ids: list[int]) -> dict[int, Optional[str]]:
        asked.append(list(ids))
        return {i: (None if i == 2 else f"u{i}") for i in ids if i != 3}

    async def body(cache: Any) -> None:
        f = cache.cached_batch(60, key="u:{}")(flavor.wrap(users))
        assert await flavor.call(f, [1, 2, 3]) == {1: "u1", 2: None}
        # None is a value (cached); an id left out is not, and is asked again.
        assert await flavor.call(f, [3, 2, 1]) == {2: None, 1: "u1"}
        assert asked == [[1, 2, 3], [3]]

    flavor.run(body)


def test_cached_batch_typed_values(flavor: Flavor) -> None:
    def points(ids: list[int]) -> dict[int, Point]:
        return {i: Point(i, 0.5) for i in ids}

    async def body(cache: Any) -> None:
        f = cache.cached_batch(60)(flavor.wrap(points))
        await flavor.call(f, [1, 2])
        hits = await flavor.call(f, [2, 1])
        assert hits == {2: Point(2, 0.5), 1: Point(1, 0.5)}
        assert {type(v) for v in hits.values()} == {Point}

    flavor.run(body)


def test_cached_batch_and_cached_share_entries_through_templates(
    flavor: Flavor, redis: RedisServer
) -> None:
    asked: list[Any] = []

    def one(user_id: int) -> str:
        asked.append(user_id)
        return f"u{user_id}"

    def many(ids: list[int]) -> dict[int, str]:
        asked.append(list(ids))
        return {i: f"u{i}" for i in ids}

    async def body(cache: Any) -> None:
        single = cache.cached(60, key="user:{user_id}")(flavor.wrap(one))
        batch = cache.cached_batch(60, key="user:{}")(flavor.wrap(many))
        assert await flavor.call(single, 1) == "u1"
        assert await flavor.call(batch, [1, 2]) == {1: "u1", 2: "u2"}
        assert await flavor.call(single, 2) == "u2"
        assert asked == [1, [2]]

    flavor.run(body)


def test_cached_batch_namespace_applies_to_its_template(flavor: Flavor, redis: RedisServer) -> None:
    def many(ids: list[int]) -> dict[int, str]:
        return {i: f"u{i}" for i in ids}

    async def body(cache: Any) -> None:
        batch = cache.cached_batch(60, key="user:{}", namespace="v2")(flavor.wrap(many))
        await flavor.call(batch, [1])
        assert keys(redis) == [f"{NS}:v2:user:1".encode()]

    flavor.run(body)


# ---------------------------------------------------------------------------
# the default cache
# ---------------------------------------------------------------------------

# Decorated at import, long before any test sets a default cache.
_default_calls: list[int] = []


@cached(60)
def default_sync(x: int) -> int:
    _default_calls.append(x)
    return x * 3


@cached(60)
async def default_async(x: int) -> int:
    _default_calls.append(x)
    return x * 3


def test_module_level_cached_without_a_default_cache_says_what_to_do(
    flavor: Flavor, no_default_cache: None
) -> None:
    f = default_async if flavor.is_async else default_sync
    _default_calls.clear()

    async def body(cache: Any) -> None:
        with pytest.raises(RuntimeError, match=r"set_default_cache\(cache\)"):
            await flavor.call(f, 1)

    flavor.run(body)
    assert _default_calls == []
    with pytest.raises(RuntimeError, match="set_default_cache"):
        redis_cache.get_default_cache()


def test_module_level_cached_resolves_the_default_at_call_time(
    flavor: Flavor, redis: RedisServer, no_default_cache: None
) -> None:
    f = default_async if flavor.is_async else default_sync
    _default_calls.clear()

    async def body(cache: Any) -> None:
        set_default_cache(cache)
        assert redis_cache.get_default_cache() is cache
        assert await flavor.call(f, 2) == 6
        assert await flavor.call(f, 2) == 6
        assert keys(redis) == [f"{NS}:{f.key(2)}".encode()]
        other = flavor.cache(namespace="other")
        try:
            set_default_cache(other)
            assert await flavor.call(f, 2) == 6  # a miss in the new default cache
            assert f"other:{f.key(2)}".encode() in keys(redis)
        finally:
            await flavor.close(other)

    flavor.run(body)
    assert _default_calls == [2, 2]


# ---------------------------------------------------------------------------
# twins: a function of the other kind than its cache
# ---------------------------------------------------------------------------


def test_sync_function_through_an_async_cache(redis: RedisServer) -> None:
    runner = Runner("asyncio")
    calls: list[int] = []
    cache = RedisCache(port=redis.port, namespace=NS, default_ttl=45)

    @cache.cached(key="user:{user_id}")
    def get_user(user_id: int) -> dict[str, int]:
        calls.append(user_id)
        return {"id": user_id}

    @cache.invalidate("user:{user_id}")
    def touch(user_id: int) -> None:
        return None

    # Called with no event loop at all: the sync twin does the work.
    assert not inspect.iscoroutinefunction(get_user)
    assert get_user(1) == {"id": 1}
    assert get_user(1) == {"id": 1}
    assert calls == [1]
    assert stored(redis, f"{NS}:user:1") == b'{"id":1}'
    assert 44_000 <= pttl(redis, f"{NS}:user:1") <= 45_000  # the twin has the same settings
    assert get_user.invalidate(1) is True
    get_user(1)
    touch(1)
    assert dbsize(redis) == 0

    async def main() -> Any:
        try:
            get_user(2)
            return await cache.get("user:2")  # written by the twin, read by the async cache
        finally:
            await cache.close()

    assert runner(main()) == {"id": 2}
    assert cache._twin(SyncRedisCache).circuit_breaker is cache.circuit_breaker


def test_async_function_through_a_sync_cache(run: Runner, redis: RedisServer) -> None:
    calls: list[int] = []
    with SyncRedisCache(port=redis.port, namespace=NS) as cache:

        @cache.cached(60, key="item:{item_id}")
        async def get_item(item_id: int) -> dict[str, int]:
            calls.append(item_id)
            await asyncio.sleep(0)
            return {"id": item_id}

        @cache.cached_batch(60, key="item:{}")
        async def get_items(ids: list[int]) -> dict[int, dict[str, int]]:
            calls.append(-len(ids))
            return {i: {"id": i} for i in ids}

        assert inspect.iscoroutinefunction(get_item)

        async def main() -> Any:
            first = await get_item(1)
            second = await get_item(1)
            batch = await get_items([1, 2])
            await get_item.invalidate(1)
            return first, second, batch

        assert run(main()) == ({"id": 1}, {"id": 1}, {1: {"id": 1}, 2: {"id": 2}})
        assert calls == [1, -1]
        assert cache.get("item:1") is None  # invalidated through the async twin
        assert cache.get("item:2") == {"id": 2}
        assert 59 <= cache.ttl("item:2") <= 60


# ---------------------------------------------------------------------------
# stats
# ---------------------------------------------------------------------------


def test_stats_count_hits_misses_and_computations(flavor: Flavor) -> None:
    def lookup(user_id: int) -> int:
        return user_id

    async def body(cache: Any) -> Any:
        f = cache.cached(60)(flavor.wrap(lookup))
        reset_stats(f)
        for user_id in (1, 2, 1, 1, 3, 2):
            await flavor.call(f, user_id)
        await flavor.call(f.invalidate, 1)
        await flavor.call(f, 1)
        return f

    f = flavor.run(body)
    assert counts(f) == {"hits": 3, "misses": 4, "computations": 4, "errors": 0}
    assert f.stats.hit_rate == pytest.approx(3 / 7)
    assert f.stats.time_saved_seconds == pytest.approx(3 * f.stats.average_compute_seconds)
    everything = redis_cache.stats()
    name = f"{lookup.__module__}.{lookup.__qualname__}"
    assert everything[name]["hits"] == 3
    assert everything[name]["misses"] == 4
    assert everything[name]["computations"] == 4
    assert everything[name]["errors"] == 0
    assert everything[name]["hit_rate"] == round(3 / 7, 4)
    assert set(everything[name]) == {
        "hits", "misses", "errors", "computations", "hit_rate", "average_compute_ms",
        "time_saved_seconds", "stale_served",
    }
    assert everything[name]["stale_served"] == 0


def test_stats_count_errors_when_redis_is_down(
    flavor: Flavor, redis_server_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = redis_server_factory()
    dead = Flavor(flavor.name, server)

    def lookup(user_id: int) -> int:
        return user_id + 100

    async def body(cache: Any) -> Any:
        f = cache.cached(60)(dead.wrap(lookup))
        reset_stats(f)
        server.stop()
        assert await dead.call(f, 1) == 101
        return f

    with caplog.at_level(logging.WARNING, logger="redis_cache"):
        f = dead.run(body)
    # The read failed, then the write: two errors, and the call still a miss.
    assert counts(f) == {"hits": 0, "misses": 1, "computations": 1, "errors": 2}
