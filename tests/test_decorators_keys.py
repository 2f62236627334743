"""Cache keys of decorated functions (redis_cache.keys through the decorators).

What a key must do: the same call, however it is spelled (positional,
keyword, defaults), gets one key; different calls never share one. Each
collision that naive key builders (``str(args)``, ``":".join(map(str, ...))``,
``repr``) get wrong has a test of its own: ``1`` / ``1.0`` / ``True`` /
``"1"``, ``f("a", "b")`` / ``f("a,b")`` / ``f(("a", "b"))``, a default that is
not ``None`` versus an explicit ``None``, dict insertion order, nested
structures, two functions with the same arguments. Arguments with no stable
encoding are refused with a message that says what to do; templates are
checked when the function is decorated; parameters a framework injects
(``self``, FastAPI's ``Request`` and ``Depends``) are left out.

``fn.key(...)`` needs no server, so most tests here are pure; the few that
use the ``redis`` fixture check that equal keys really mean a shared entry.
No ``from __future__ import annotations`` here on purpose: annotations of
classes defined inside a test are evaluated at once, as FastAPI users write them.
"""

import dataclasses
import enum
import threading
import uuid
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Annotated, Any, Optional

import pytest

from redis_cache import SyncRedisCache, cached
from redis_cache.keys import KeyBuilder, UnstableArgument
from redis_cache.testing import RedisServer

NAMESPACE = "kt"


@pytest.fixture
def cache(redis: RedisServer) -> Iterator[SyncRedisCache]:
    with SyncRedisCache(port=redis.port, namespace=NAMESPACE) as c:
        yield c


def distinct(*keys: str) -> bool:
    return len(set(keys)) == len(keys)


def stored_keys(server: RedisServer) -> list[str]:
    out = server.cli("--scan", "--pattern", "*")
    return sorted(line for line in out.splitlines() if line)


# ---------------------------------------------------------------------------
# one call, however it is spelled, is one key
# ---------------------------------------------------------------------------


def test_positional_keyword_and_default_spellings_share_a_key() -> None:
    @cached(60)
    def f(a: int, b: int = 2, *, c: str = "x") -> int:
        return a + b

    spellings = [
        f.key(1),
        f.key(1, 2),
        f.key(a=1),
        f.key(1, b=2),
        f.key(b=2, a=1),
        f.key(1, 2, c="x"),
        f.key(c="x", b=2, a=1),
    ]
    assert len(set(spellings)) == 1
    assert f.key(1, 3) != spellings[0]
    assert f.key(1, c="y") != spellings[0]


def test_spellings_really_share_the_stored_entry(cache: SyncRedisCache, redis: RedisServer) -> None:
    calls: list[tuple[int, int]] = []

    @cache.cached(60)
    def f(a: int, b: int = 2) -> int:
        calls.append((a, b))
        return a * 10 + b

    assert f(1) == 12
    assert f(a=1) == 12
    assert f(1, b=2) == 12
    assert f(b=2, a=1) == 12
    assert calls == [(1, 2)]
    assert stored_keys(redis) == [f"{NAMESPACE}:{f.key(1)}"]


def test_explicit_none_is_not_the_default_when_the_default_differs() -> None:
    @cached(60)
    def f(x: Optional[int] = 5) -> Optional[int]:
        return x

    assert f.key() == f.key(5) == f.key(x=5)
    assert f.key() != f.key(None)
    assert f.key() != f.key(x=None)


def test_explicit_none_is_the_default_when_the_default_is_none() -> None:
    @cached(60)
    def f(x: Optional[int] = None) -> Optional[int]:
        return x

    assert f.key() == f.key(None) == f.key(x=None)


def test_changing_a_default_changes_the_key() -> None:
    # The default is applied before hashing: a deploy that changes a default
    # does not serve results computed with the old one.
    def v1(x: int = 1) -> int:
        return x

    def v2(x: int = 2) -> int:
        return x

    v2.__qualname__ = v1.__qualname__  # the same function, redeployed
    assert KeyBuilder(v1).key((), {}) != KeyBuilder(v2).key((), {})


# ---------------------------------------------------------------------------
# collisions naive key builders make
# ---------------------------------------------------------------------------


def test_one_int_float_bool_and_string_never_share_a_key() -> None:
    @cached(60)
    def f(x: Any) -> Any:
        return x

    assert 1 == 1.0 == True  # noqa: E712  (why a dict-based or == based key collides)
    assert distinct(f.key(1), f.key(1.0), f.key(True), f.key("1"), f.key(b"1"), f.key(Decimal(1)))


def test_zero_false_none_and_empty_values_never_share_a_key() -> None:
    @cached(60)
    def f(x: Any) -> Any:
        return x

    assert distinct(
        f.key(0), f.key(0.0), f.key(-0.0), f.key(False), f.key(None), f.key(""), f.key(b""),
        f.key([]), f.key(()), f.key({}), f.key(set()),
    )


def test_int_enum_is_not_its_value() -> None:
    class Color(enum.IntEnum):
        RED = 1

    class Shade(enum.IntEnum):
        RED = 1

    @cached(60)
    def f(x: Any) -> Any:
        return x

    assert distinct(f.key(1), f.key(Color.RED), f.key(Shade.RED))
    assert f.key(Color.RED) == f.key(Color(1))


def test_separator_characters_in_strings_cannot_forge_another_call() -> None:
    @cached(60)
    def f(*parts: Any) -> Any:
        return parts

    assert distinct(
        f.key("a", "b"),
        f.key("a,b"),
        f.key(("a", "b")),
        f.key(["a", "b"]),
        f.key("a:b"),
        f.key("('a', 'b')"),
        f.key("a", "b", ""),
    )


def test_string_boundaries_between_parameters_matter() -> None:
    @cached(60)
    def f(a: str, b: str) -> str:
        return a + b

    assert distinct(f.key("ab", "c"), f.key("a", "bc"), f.key("abc", ""), f.key("", "abc"))


def test_str_and_bytes_of_the_same_text_differ() -> None:
    @cached(60)
    def f(x: Any) -> Any:
        return x

    assert f.key("é") != f.key("é".encode())
    assert f.key("é") == f.key("é")


def test_dict_insertion_order_does_not_change_the_key() -> None:
    @cached(60)
    def f(filters: dict[str, Any]) -> Any:
        return filters

    a = {"status": "open", "owner": 7, "tags": ["x", "y"]}
    b = {"tags": ["x", "y"], "owner": 7, "status": "open"}
    assert list(a) != list(b)
    assert f.key(a) == f.key(b) == f.key(OrderedDict(reversed(list(a.items()))))


def test_dict_keys_and_values_are_type_tagged() -> None:
    @cached(60)
    def f(d: Any) -> Any:
        return d

    assert distinct(
        f.key({"a": 1}),
        f.key({"a": "1"}),
        f.key({"1": 1}),
        f.key({1: 1}),
        f.key({True: 1}),
        f.key([("a", 1)]),
        f.key({"a": 1, "b": None}),
    )


def test_nested_structures_are_compared_deeply() -> None:
    @cached(60)
    def f(q: Any) -> Any:
        return q

    one = {"where": [{"field": "a", "in": (1, 2)}, {"or": {"x": None, "y": [1.5]}}]}
    same = {"where": [{"in": (1, 2), "field": "a"}, {"or": {"y": [1.5], "x": None}}]}
    deep_change = {"where": [{"field": "a", "in": (1, 2)}, {"or": {"x": None, "y": [1.25]}}]}
    type_change = {"where": [{"field": "a", "in": [1, 2]}, {"or": {"x": None, "y": [1.5]}}]}
    assert f.key(one) == f.key(same)
    assert distinct(f.key(one), f.key(deep_change), f.key(type_change))
    # Regrouping the same leaves is a different value.
    assert distinct(f.key([[1, 2], [3]]), f.key([[1], [2, 3]]), f.key([1, 2, 3]))


def test_sets_ignore_order_but_not_content() -> None:
    @cached(60)
    def f(s: Any) -> Any:
        return s

    assert f.key({3, 1, 2}) == f.key({1, 2, 3}) == f.key(frozenset([2, 3, 1]))
    assert distinct(f.key({1, 2, 3}), f.key({1, 2}), f.key([1, 2, 3]), f.key({"1", "2", "3"}))


def test_other_stable_types_have_stable_distinct_keys() -> None:
    @dataclasses.dataclass
    class Point:
        x: int
        y: int

    @cached(60)
    def f(v: Any) -> Any:
        return v

    u = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert f.key(Point(1, 2)) == f.key(Point(1, 2))
    assert f.key(u) == f.key(uuid.UUID(str(u)))
    assert distinct(
        f.key(Point(1, 2)), f.key(Point(2, 1)), f.key({"x": 1, "y": 2}),
        f.key(u), f.key(str(u)),
        f.key(date(2024, 1, 2)), f.key("2024-01-02"),
        f.key(datetime(2024, 1, 2, tzinfo=timezone.utc)), f.key(datetime(2024, 1, 2)),
        f.key(timedelta(seconds=1)), f.key(1.0),
        f.key(Decimal("1.0")), f.key("1.0"),
    )


def test_pydantic_model_arguments_have_stable_keys() -> None:
    pydantic = pytest.importorskip("pydantic", minversion="2")

    class Query(pydantic.BaseModel):
        term: str
        limit: int = 10

    @cached(60)
    def f(q: Query) -> Any:
        return q

    assert f.key(Query(term="a")) == f.key(Query(term="a", limit=10))
    assert f.key(Query(term="a")) != f.key(Query(term="a", limit=11))
    assert f.key(Query(term="a")) != f.key({"term": "a", "limit": 10})


# ---------------------------------------------------------------------------
# functions and methods
# ---------------------------------------------------------------------------


def test_two_functions_with_the_same_arguments_never_share_keys() -> None:
    @cached(60)
    def price(item: int) -> int:
        return item

    @cached(60)
    def stock(item: int) -> int:
        return item

    assert price.key(1) != stock.key(1)
    assert price.key(1).startswith(f"{__name__}.")
    assert "price" in price.key(1) and "stock" in stock.key(1)


def test_two_functions_share_no_stored_entry(cache: SyncRedisCache) -> None:
    @cache.cached(60)
    def double(x: int) -> int:
        return x * 2

    @cache.cached(60)
    def square(x: int) -> int:
        return x * x

    assert double(3) == 6
    assert square(3) == 9
    assert double(3) == 6


def test_two_lambdas_do_not_share_keys(cache: SyncRedisCache) -> None:
    add_one = cache.cached(60)(lambda x: x + 1)
    times_ten = cache.cached(60)(lambda x: x * 10)
    assert add_one.key(1) != times_ten.key(1)
    assert add_one(1) == 2
    assert times_ten(1) == 10  # returns 2, add_one's entry


def test_closures_from_one_factory_do_not_share_keys(cache: SyncRedisCache) -> None:
    def make(source: dict[int, str]) -> Any:
        @cache.cached(60)
        def fetch(item: int) -> str:
            return source[item]

        return fetch

    english = make({1: "one"})
    german = make({1: "eins"})
    assert english(1) == "one"
    assert german(1) == "eins"  # returns "one"


def test_methods_leave_self_out_and_instances_share_entries(cache: SyncRedisCache) -> None:
    """Documented behaviour: self is not part of the key, so every instance of
    the class shares the entry of a call. Give key= (e.g. "{self.id}:{x}") when
    the result depends on the instance."""
    calls: list[tuple[str, int]] = []

    class Repo:
        def __init__(self, name: str) -> None:
            self.name = name
            self.lock = threading.Lock()  # unstable: must not be looked at

        @cache.cached(60)
        def get(self, item: int) -> str:
            calls.append((self.name, item))
            return f"{self.name}:{item}"

    a, b = Repo("a"), Repo("b")
    assert Repo.get.key(a, 1) == Repo.get.key(b, 1)
    assert Repo.get.key(a, 1) != Repo.get.key(a, 2)
    assert a.get(1) == "a:1"
    assert b.get(1) == "a:1"  # shared: computed once, by a
    assert calls == [("a", 1)]


def test_methods_of_different_classes_do_not_share_keys() -> None:
    class Users:
        @cached(60)
        def get(self, item: int) -> int:
            return item

    class Orders:
        @cached(60)
        def get(self, item: int) -> int:
            return item

    assert Users.get.key(Users(), 1) != Orders.get.key(Orders(), 1)


def test_instance_dependent_method_key_with_a_template(cache: SyncRedisCache) -> None:
    class Repo:
        def __init__(self, name: str) -> None:
            self.name = name

        @cache.cached(60, key="repo:{self.name}:{item}")
        def get(self, item: int) -> str:
            return f"{self.name}:{item}"

    assert Repo("a").get(1) == "a:1"
    assert Repo("b").get(1) == "b:1"
    assert Repo.get.key(Repo("a"), 1) == "repo:a:1"


def test_classmethod_leaves_cls_out(cache: SyncRedisCache) -> None:
    calls: list[int] = []

    class Config:
        @classmethod
        @cache.cached(60)
        def load(cls, item: int) -> int:
            calls.append(item)
            return item * 2

    assert Config.load(4) == 8
    assert Config.load(4) == 8
    assert calls == [4]


# ---------------------------------------------------------------------------
# *args and **kwargs
# ---------------------------------------------------------------------------


def test_var_positional_and_var_keyword_arguments() -> None:
    @cached(60)
    def f(*args: Any, **kwargs: Any) -> Any:
        return args, kwargs

    assert f.key(a=1, b=2) == f.key(b=2, a=1) == f.key(**{"b": 2, "a": 1})
    assert distinct(
        f.key(),
        f.key(1),
        f.key((1,)),
        f.key(1, 2),
        f.key(1, 2, a=3),
        f.key(a=1),
        f.key(args=1),
        f.key({"a": 1}),
        f.key("a", 1),
    )


def test_named_parameter_passed_through_kwargs_and_positionally_share_a_key() -> None:
    @cached(60)
    def f(a: int, *rest: int, scale: int = 1, **options: Any) -> Any:
        return a

    assert f.key(1, scale=1) == f.key(1) == f.key(**{"a": 1})
    assert distinct(f.key(1), f.key(1, 2), f.key(1, scale=2), f.key(1, extra=1))


# ---------------------------------------------------------------------------
# arguments with no stable encoding
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [object(), threading.Lock(), lambda: 1, iter([1])],
    ids=["object", "lock", "lambda", "iterator"],
)
def test_unstable_argument_is_refused_with_advice(value: Any) -> None:
    @cached(60)
    def f(user_id: int, db: Any) -> int:
        return user_id

    with pytest.raises(TypeError) as info:
        f.key(1, value)
    assert isinstance(info.value, UnstableArgument)
    message = str(info.value)
    assert "'db'" in message
    assert "key=" in message
    assert "exclude" in message


def test_unstable_value_nested_in_a_container_is_refused_and_located() -> None:
    @cached(60)
    def f(items: Any) -> Any:
        return items

    with pytest.raises(TypeError, match=r"items'\[1\]"):
        f.key([1, object()])
    with pytest.raises(TypeError, match="key="):
        f.key({"a": {"b": threading.Lock()}})


def test_unstable_argument_is_refused_when_the_function_is_called(
    cache: SyncRedisCache, redis: RedisServer
) -> None:
    calls: list[int] = []

    @cache.cached(60)
    def f(user_id: int, db: Any) -> int:
        calls.append(user_id)
        return user_id

    with pytest.raises(TypeError, match="exclude"):
        f(1, object())
    assert calls == []  # refused before running: a repr() key would cache nothing useful
    assert stored_keys(redis) == []


def test_exclude_by_name(cache: SyncRedisCache) -> None:
    calls: list[int] = []

    @cache.cached(60, exclude=["db", "trace_id"])
    def f(user_id: int, db: Any, trace_id: str = "") -> int:
        calls.append(user_id)
        return user_id * 2

    assert f.key(1, object(), "a") == f.key(1, threading.Lock(), "b") == f.key(1, None)
    assert f.key(1, None) != f.key(2, None)
    assert f(1, object(), trace_id="a") == 2
    assert f(1, object(), trace_id="b") == 2
    assert calls == [1]


def test_exclude_of_an_unknown_name_fails_at_decoration() -> None:
    with pytest.raises(ValueError, match="dbb"):

        @cached(60, exclude=["dbb"])
        def f(user_id: int, db: Any) -> int:
            return user_id


class Session:
    """Stands for a database session: no stable encoding."""


class PostgresSession(Session):
    pass


def test_exclude_by_type(cache: SyncRedisCache) -> None:
    calls: list[int] = []

    @cache.cached(60, exclude_types=[Session])
    def f(user_id: int, db: Session, replica: PostgresSession) -> int:
        calls.append(user_id)
        return user_id + 1

    assert f.key(1, Session(), PostgresSession()) == f.key(1, PostgresSession(), PostgresSession())
    assert f.key(1, Session(), PostgresSession()) != f.key(2, Session(), PostgresSession())
    assert f(1, Session(), PostgresSession()) == 2
    assert f(1, Session(), PostgresSession()) == 2
    assert calls == [1]


def test_exclude_types_leaves_other_parameters_in() -> None:
    @cached(60, exclude_types=[Session])
    def f(user_id: int, db: Session, label: str) -> int:
        return user_id

    assert f.key(1, Session(), "a") != f.key(1, Session(), "b")


def _session_optional(user_id: int, db: Optional[Session] = None) -> int:
    return user_id


def _session_annotated(user_id: int, db: Annotated[Session, "primary"]) -> int:
    return user_id


def _session_unannotated(user_id, db):  # type: ignore[no-untyped-def]
    return user_id


@pytest.mark.parametrize(
    "func",
    [_session_optional, _session_annotated, _session_unannotated],
    ids=["optional", "annotated", "unannotated"],
)
def test_exclude_types_covers_optional_annotated_and_unannotated(func: Any) -> None:
    f = cached(60, exclude_types=[Session])(func)
    assert f.key(1, Session()) == f.key(1, Session())


# ---------------------------------------------------------------------------
# key templates and namespaces
# ---------------------------------------------------------------------------


def test_template_with_parameter_names(cache: SyncRedisCache, redis: RedisServer) -> None:
    @cache.cached(60, key="user:{user_id}:{lang}")
    def f(user_id: int, lang: str = "en") -> str:
        return f"{user_id}/{lang}"

    assert f.key(5) == f.key(user_id=5) == "user:5:en"
    assert f.key(5, "de") == "user:5:de"
    assert f(5) == "5/en"
    assert stored_keys(redis) == [f"{NAMESPACE}:user:5:en"]


def test_template_with_attribute_and_item_access(cache: SyncRedisCache) -> None:
    @dataclasses.dataclass
    class User:
        id: int
        org: dict[str, str]

    calls: list[int] = []

    @cache.cached(60, key="org:{user.org[slug]}:user:{user.id}")
    def profile(user: User, session: Any = None) -> dict[str, Any]:
        calls.append(user.id)
        return {"id": user.id}

    ada = User(7, {"slug": "acme"})
    assert profile.key(ada) == "org:acme:user:7"
    # The template leaves session out, so an unstable value there is fine.
    assert profile(ada, session=object()) == {"id": 7}
    assert profile(User(7, {"slug": "acme"}), session=threading.Lock()) == {"id": 7}
    assert calls == [7]


def test_key_callable(cache: SyncRedisCache) -> None:
    @cache.cached(60, key=lambda user_id, db=None: f"u{user_id}")
    def f(user_id: int, db: Any = None) -> int:
        return user_id

    assert f.key(3, object()).endswith(":u3")
    assert f(3, db=object()) == 3


def test_template_naming_an_unknown_parameter_fails_at_decoration() -> None:
    with pytest.raises(ValueError, match="userid"):

        @cached(60, key="user:{userid}")
        def f(user_id: int) -> int:
            return user_id


def test_template_with_unknown_attribute_root_fails_at_decoration() -> None:
    with pytest.raises(ValueError, match="usr"):

        @cached(60, key="user:{usr.id}")
        def f(user: Any) -> int:
            return 1


def test_template_with_numbered_positional_field_fails_at_decoration() -> None:
    with pytest.raises(ValueError):

        @cached(60, key="user:{0}")
        def f(user_id: int) -> int:
            return user_id


def test_malformed_template_fails_at_decoration() -> None:
    with pytest.raises(ValueError, match="template"):

        @cached(60, key="user:{user_id")
        def f(user_id: int) -> int:
            return user_id


def test_template_with_empty_positional_field_fails_at_decoration() -> None:
    with pytest.raises(ValueError, match="positional"):

        @cached(60, key="user:{}")
        def f(user_id: int) -> int:
            return user_id


def test_invalidate_template_with_empty_positional_field_fails_at_decoration() -> None:
    from redis_cache import invalidate

    with pytest.raises(ValueError, match="positional"):

        @invalidate("user:{}")
        def f(user_id: int) -> int:
            return user_id


def test_invalidate_template_naming_an_unknown_parameter_fails_at_decoration() -> None:
    from redis_cache import invalidate

    with pytest.raises(ValueError, match="uid"):

        @invalidate("user:{uid}")
        def f(user_id: int) -> int:
            return user_id


def test_namespace_replaces_the_function_name_prefix(
    cache: SyncRedisCache, redis: RedisServer
) -> None:
    @cache.cached(60, namespace="users-v2")
    def f(user_id: int) -> int:
        return user_id

    @cache.cached(60, namespace="users-v2", key="user:{user_id}")
    def g(user_id: int) -> int:
        return user_id

    assert f.key(1).startswith("users-v2:")
    assert f.__qualname__ not in f.key(1)
    assert g.key(1) == "users-v2:user:1"
    assert f(1) == 1 and g(1) == 1
    assert stored_keys(redis) == sorted([f"{NAMESPACE}:{f.key(1)}", f"{NAMESPACE}:users-v2:user:1"])


def test_functions_sharing_a_namespace_share_keys_on_purpose() -> None:
    """Documented: namespace= is the whole prefix, so it is how two functions
    (or two versions of one) deliberately share entries."""

    @cached(60, namespace="shared")
    def a(x: int) -> int:
        return x

    @cached(60, namespace="shared")
    def b(x: int) -> int:
        return x

    assert a.key(1) == b.key(1)


# ---------------------------------------------------------------------------
# parameters injected by FastAPI
# ---------------------------------------------------------------------------


def fake_request(path: str) -> Any:
    from starlette.requests import Request

    return Request({"type": "http", "method": "GET", "path": path, "headers": [],
                    "query_string": b"", "client": ("127.0.0.1", 1234)})


def get_db() -> Iterator[Session]:
    yield Session()


def test_starlette_request_parameter_is_left_out(cache: SyncRedisCache) -> None:
    pytest.importorskip("starlette")
    from starlette.requests import Request

    calls: list[int] = []

    @cache.cached(60)
    def f(user_id: int, request: Request) -> int:
        calls.append(user_id)
        return user_id

    assert f.key(1, fake_request("/a")) == f.key(1, fake_request("/b"))
    assert f.key(1, fake_request("/a")) != f.key(2, fake_request("/a"))
    assert f(1, fake_request("/a")) == 1
    assert f(1, request=fake_request("/b")) == 1
    assert calls == [1]


def test_fastapi_request_and_response_parameters_are_left_out() -> None:
    pytest.importorskip("fastapi")
    from fastapi import BackgroundTasks, Request, Response

    @cached(60)
    def f(user_id: int, request: Request, response: Response, tasks: BackgroundTasks) -> int:
        return user_id

    one = f.key(1, fake_request("/a"), Response(), BackgroundTasks())
    two = f.key(1, fake_request("/b"), Response(), BackgroundTasks())
    assert one == two


def test_depends_default_is_left_out(cache: SyncRedisCache) -> None:
    pytest.importorskip("fastapi")
    from fastapi import Depends

    calls: list[int] = []

    @cache.cached(60)
    def f(user_id: int, db: Session = Depends(get_db)) -> int:
        calls.append(user_id)
        return user_id

    assert f.key(1, Session()) == f.key(1, Session()) == f.key(1)
    assert f(1, Session()) == 1
    assert f(1, db=Session()) == 1
    assert calls == [1]


def test_annotated_depends_is_left_out(cache: SyncRedisCache) -> None:
    pytest.importorskip("fastapi")
    from fastapi import Depends

    calls: list[int] = []

    @cache.cached(60)
    def f(user_id: int, db: Annotated[Session, Depends(get_db)]) -> int:
        calls.append(user_id)
        return user_id

    assert f.key(1, Session()) == f.key(1, Session())
    assert f.key(1, Session()) != f.key(2, Session())
    assert f(1, Session()) == 1
    assert f(1, Session()) == 1
    assert calls == [1]


def test_injected_parameters_do_not_change_the_key() -> None:
    """A function with injected parameters has the key the same function
    without them would have: they add nothing to the hash."""
    pytest.importorskip("fastapi")
    from fastapi import Depends, Request

    def plain(user_id: int, lang: str = "en") -> int:
        return user_id

    def injected(
        user_id: int,
        request: Request,
        db: Annotated[Session, Depends(get_db)],
        lang: str = "en",
        other: Session = Depends(get_db),
    ) -> int:
        return user_id

    # The same namespace for both: compare the hashes, not the names.
    with_injected = KeyBuilder(injected, namespace="f").key((1, fake_request("/"), Session()), {})
    assert with_injected == KeyBuilder(plain, namespace="f").key((1,), {})


def _testclient() -> Any:
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette\.testclient`")
        from fastapi.testclient import TestClient
    return TestClient


def test_fastapi_sync_route_with_injected_parameters_is_cached(redis: RedisServer) -> None:
    TestClient = _testclient()
    from fastapi import Depends, FastAPI, Request

    calls: list[int] = []
    sessions: list[Session] = []

    def db_dependency() -> Iterator[Session]:
        session = Session()
        sessions.append(session)
        yield session

    with SyncRedisCache(port=redis.port, namespace=NAMESPACE) as cache:
        app = FastAPI()

        @app.get("/users/{user_id}")
        @cache.cached(60)
        def read_user(
            user_id: int,
            request: Request,
            db: Annotated[Session, Depends(db_dependency)],
            verbose: bool = False,
        ) -> dict[str, Any]:
            calls.append(user_id)
            return {"id": user_id, "verbose": verbose}

        client = TestClient(app)
        assert client.get("/users/3").json() == {"id": 3, "verbose": False}
        assert client.get("/users/3").json() == {"id": 3, "verbose": False}
        assert client.get("/users/3?verbose=true").json() == {"id": 3, "verbose": True}
        assert client.get("/users/4").json() == {"id": 4, "verbose": False}
    assert calls == [3, 3, 4]
    assert len(sessions) == 4  # FastAPI injected a fresh session every time


def test_fastapi_async_route_with_injected_parameters_is_cached(redis: RedisServer) -> None:
    TestClient = _testclient()
    from fastapi import Depends, FastAPI, Request

    from redis_cache import RedisCache

    calls: list[int] = []

    def db_dependency() -> Iterator[Session]:
        yield Session()

    cache = RedisCache(port=redis.port, namespace=NAMESPACE)
    app = FastAPI()

    @app.get("/items/{item_id}")
    @cache.cached(60)
    async def read_item(
        item_id: int, request: Request, db: Session = Depends(db_dependency)
    ) -> dict[str, Any]:
        calls.append(item_id)
        return {"id": item_id, "path": "x"}

    @app.get("/close")
    async def close() -> dict[str, bool]:
        await cache.close()  # on the app's loop, where the cache ran
        return {"closed": True}

    with TestClient(app) as client:
        assert client.get("/items/9").json() == {"id": 9, "path": "x"}
        assert client.get("/items/9").json() == {"id": 9, "path": "x"}
        assert client.get("/close").json() == {"closed": True}
    assert calls == [9]
    assert redis.cli("--scan", "--pattern", f"{NAMESPACE}:*read_item*") != ""
