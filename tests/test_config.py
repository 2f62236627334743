"""Unit tests for redis_cache._config (pure Python, no server needed)."""

from __future__ import annotations

import dataclasses
import math
import pathlib
import traceback

import pytest

from redis_cache import RedisCache, SyncRedisCache
from redis_cache._config import ConnectionSettings, parse_url, settings_from_env
from redis_cache.errors import ConfigurationError, RedisCacheError

# A distinctive password: if it shows up in any message, something leaked.
SECRET = "Hunter2-Zq9vX"
SECRET_ENCODED = "Hunter2%2DZq9vX"  # same password, percent-encoded


def assert_no_secret(exc: BaseException, *secrets: str) -> None:
    """Check the message, the args and the whole formatted traceback chain."""
    secrets = secrets or (SECRET,)
    rendered = "".join(traceback.format_exception(exc))
    for secret in secrets:
        assert secret not in str(exc)
        assert secret not in repr(exc.args)
        assert secret not in rendered


# ---------------------------------------------------------------------------
# parse_url: good URLs
# ---------------------------------------------------------------------------

GOOD_URLS = [
    ("redis://localhost", {"host": "localhost"}),
    ("redis://localhost/", {"host": "localhost"}),
    ("redis://localhost:6380", {"host": "localhost", "port": 6380}),
    ("redis://localhost:6379/2", {"host": "localhost", "port": 6379, "db": 2}),
    ("redis://cache.example.com/0", {"host": "cache.example.com", "db": 0}),
    ("redis://127.0.0.1:1/15", {"host": "127.0.0.1", "port": 1, "db": 15}),
    ("redis://my_host-1:65535", {"host": "my_host-1", "port": 65535}),
    ("REDIS://Example.COM", {"host": "Example.COM"}),
    (
        "redis://alice:s3cret@cache.internal:6379/1",
        {"username": "alice", "password": "s3cret", "host": "cache.internal", "port": 6379, "db": 1},
    ),
    ("redis://:s3cret@localhost", {"password": "s3cret", "host": "localhost"}),
    ("redis://alice@localhost", {"username": "alice", "host": "localhost"}),
    ("redis://alice:@localhost", {"username": "alice", "host": "localhost"}),
    ("redis://:@localhost", {"host": "localhost"}),
    ("redis://@localhost", {"host": "localhost"}),
    # percent-decoding of user-info
    (
        "redis://al%40ice:p%40ss%3Aw%2Fd%25@h",
        {"username": "al@ice", "password": "p@ss:w/d%", "host": "h"},
    ),
    ("redis://:%F0%9F%94%91@h", {"password": "\U0001f511", "host": "h"}),
    # unescaped '@' and ':' inside the password: last '@' ends the user-info,
    # first ':' ends the username
    ("redis://:p@ss@h", {"password": "p@ss", "host": "h"}),
    ("redis://bob:pa:ss@h", {"username": "bob", "password": "pa:ss", "host": "h"}),
    # IPv6
    ("redis://[::1]:6380/0", {"host": "::1", "port": 6380, "db": 0}),
    ("redis://[::1]", {"host": "::1"}),
    ("redis://[::1]/4", {"host": "::1", "db": 4}),
    ("redis://[2001:DB8:0::1]:7000", {"host": "2001:db8::1", "port": 7000}),
    ("redis://[fe80::1%25eth0]:6379", {"host": "fe80::1%eth0", "port": 6379}),
    ("redis://u:pw@[::1]:6380", {"username": "u", "password": "pw", "host": "::1", "port": 6380}),
    # db in the query, alone or agreeing with the path
    ("redis://localhost?db=4", {"host": "localhost", "db": 4}),
    ("redis://localhost/4?db=4", {"host": "localhost", "db": 4}),
    ("redis://localhost/?db=0", {"host": "localhost", "db": 0}),
    # options
    (
        "redis://h?socket_timeout=2.5&socket_connect_timeout=1&max_connections=10"
        "&client_name=worker-1&pool_timeout=.5",
        {
            "host": "h",
            "socket_timeout": 2.5,
            "socket_connect_timeout": 1.0,
            "max_connections": 10,
            "client_name": "worker-1",
            "pool_timeout": 0.5,
        },
    ),
    ("redis://h?client_name=a%2Fb", {"host": "h", "client_name": "a/b"}),
    ("redis://h?db=1&", {"host": "h", "db": 1}),
    ("redis://h?&&db=1", {"host": "h", "db": 1}),
    ("redis://h?socket_timeout=3.", {"host": "h", "socket_timeout": 3.0}),
    # unix sockets
    ("unix:///tmp/redis.sock", {"unix_socket_path": "/tmp/redis.sock"}),
    ("UNIX:///tmp/redis.sock?db=2", {"unix_socket_path": "/tmp/redis.sock", "db": 2}),
    (
        "unix://alice:pw@/var/run/redis%20x.sock",
        {"username": "alice", "password": "pw", "unix_socket_path": "/var/run/redis x.sock"},
    ),
    (
        "unix://:pw@/tmp/r.sock?db=0&socket_timeout=3",
        {"password": "pw", "unix_socket_path": "/tmp/r.sock", "db": 0, "socket_timeout": 3.0},
    ),
    # surrounding whitespace (e.g. a newline from a secrets file) is ignored
    ("  redis://localhost:6379/0\n", {"host": "localhost", "port": 6379, "db": 0}),
]


@pytest.mark.parametrize(("url", "expected"), GOOD_URLS, ids=[u for u, _ in GOOD_URLS])
def test_parse_url_good(url: str, expected: dict[str, object]) -> None:
    result = parse_url(url)
    assert result == expected
    # types, not just equality (1 == 1.0 == True)
    for key, value in result.items():
        assert type(value) is type(expected[key]), key


@pytest.mark.parametrize(("url", "_expected"), GOOD_URLS, ids=[u for u, _ in GOOD_URLS])
def test_parse_url_result_builds_settings(url: str, _expected: dict[str, object]) -> None:
    settings = ConnectionSettings(**parse_url(url))  # type: ignore[arg-type]
    for key, value in parse_url(url).items():
        assert getattr(settings, key) == value


# ---------------------------------------------------------------------------
# parse_url: bad URLs -- every one contains the password somewhere
# ---------------------------------------------------------------------------

BAD_URLS = [
    # (url, text the message must contain)
    ("", "scheme"),
    ("   ", "scheme"),
    (f"localhost:{SECRET}", "scheme"),
    (f"//:{SECRET}@localhost", "scheme"),
    (f"redis:/:{SECRET}@localhost", "scheme"),
    (f"http://:{SECRET}@localhost", "scheme 'http'"),
    (f"rediss://:{SECRET}@localhost:6380?ssl_check_hostname=maybe", "ssl_check_hostname"),
    (f"rediss://:{SECRET}@localhost:6380?ssl_certfile=", "ssl_certfile"),
    (f"redis://:{SECRET}@", "host"),
    (f"redis://:{SECRET}@:6379", "host"),
    (f"redis://:{SECRET}@local%20host", "host"),
    (f"redis://:{SECRET}@::1", "host"),
    (f"redis://:{SECRET}@[::1", "host"),
    (f"redis://:{SECRET}@[]", "host"),
    (f"redis://:{SECRET}@[not-ipv6]:6379", "host"),
    (f"redis://:{SECRET}@[127.0.0.1]", "host"),
    (f"redis://:{SECRET}@[::1]x", "host"),
    (f"redis://:{SECRET}@localhost:", "port"),
    (f"redis://:{SECRET}@localhost:0", "port"),
    (f"redis://:{SECRET}@localhost:65536", "port"),
    (f"redis://:{SECRET}@localhost:63a9", "port"),
    (f"redis://:{SECRET}@localhost:+80", "port"),
    (f"redis://:{SECRET}@[::1]:port", "port"),
    # '@host' forgotten: the password lands where the port should be
    (f"redis://user:{SECRET}", "port"),
    (f"redis://user:{SECRET}/0", "port"),
    ("redis://user:123456789", "port"),
    (f"redis://:{SECRET}@localhost/abc", "db"),
    (f"redis://:{SECRET}@localhost/-1", "db"),
    (f"redis://:{SECRET}@localhost/1/2", "db"),
    (f"redis://:{SECRET}@localhost/1?db=2", "db"),
    (f"redis://:{SECRET}@localhost?db=x", "option 'db'"),
    (f"redis://:{SECRET}@localhost?db=", "option 'db'"),
    (f"redis://:{SECRET}@localhost?db", "option 'db'"),
    (f"redis://:{SECRET}@localhost?db=1&db=2", "option 'db'"),
    (f"redis://:{SECRET}@localhost?db=-1", "option 'db'"),
    (f"redis://:{SECRET}@localhost?socket_timeout=0", "option 'socket_timeout'"),
    (f"redis://:{SECRET}@localhost?socket_timeout=nan", "option 'socket_timeout'"),
    (f"redis://:{SECRET}@localhost?socket_timeout=1e3", "option 'socket_timeout'"),
    (f"redis://:{SECRET}@localhost?socket_connect_timeout=-1", "option 'socket_connect_timeout'"),
    (f"redis://:{SECRET}@localhost?pool_timeout=inf", "option 'pool_timeout'"),
    (f"redis://:{SECRET}@localhost?max_connections=0", "option 'max_connections'"),
    (f"redis://:{SECRET}@localhost?max_connections=2.5", "option 'max_connections'"),
    (f"redis://:{SECRET}@localhost?client_name=has%20space", "option 'client_name'"),
    (f"redis://:{SECRET}@localhost?timeout=5", "option 'timeout'"),
    (f"redis://:{SECRET}@localhost?DB=1", "option 'DB'"),
    (f"redis://:{SECRET}@localhost?password={SECRET}", "option 'password'"),
    (f"redis://:{SECRET}@localhost?db=%zz", "option 'db'"),
    (f"redis://:{SECRET}@localhost#frag", "fragment"),
    # unescaped '/', '?' or '#' inside the password cuts the URL in two
    (f"redis://:pa/{SECRET}@localhost", "credentials"),
    (f"redis://:{SECRET}?x@localhost/0", "credentials"),
    (f"redis://:{SECRET}#x@localhost", "credentials"),
    (f"redis://:{SECRET}%zz@localhost", "password"),
    (f"redis://:{SECRET}%@localhost", "password"),
    (f"redis://:{SECRET}%ff@localhost", "password"),
    (f"redis://us%zzer:{SECRET}@localhost", "username"),
    (f"redis://:{SECRET}@[::1%zz]", "host"),
    (f"unix://:{SECRET}@", "socket path"),
    (f"unix://:{SECRET}@?db=1", "socket path"),
    (f"unix://:{SECRET}@/tmp/r%00.sock", "socket path"),
    (f"unix://:{SECRET}@/tmp/r%zz.sock", "socket path"),
    (f"unix://:{SECRET}@localhost/tmp/r.sock", "host"),
    (f"unix://{SECRET}/tmp/r.sock", "host"),
    (f"unix://:{SECRET}@/tmp/r.sock?db=x", "option 'db'"),
    (f"unix://:{SECRET}@/tmp/r.sock?host=h", "option 'host'"),
]


@pytest.mark.parametrize(("url", "part"), BAD_URLS, ids=[u or "<empty>" for u, _ in BAD_URLS])
def test_parse_url_bad(url: str, part: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_url(url)
    assert part in str(info.value)
    assert_no_secret(info.value, SECRET, "123456789")


@pytest.mark.parametrize(
    "url",
    [
        f"redis://:{SECRET_ENCODED}@localhost:99999",
        f"redis://user:{SECRET_ENCODED}",
        f"redis://:{SECRET_ENCODED}@localhost?nope=1",
        f"redis://:{SECRET_ENCODED}%zz@localhost",
    ],
)
def test_parse_url_bad_never_shows_encoded_or_decoded_password(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_url(url)
    assert_no_secret(info.value, SECRET, SECRET_ENCODED)


def test_parse_url_unknown_option_lists_known_ones() -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_url("redis://localhost?sockettimeout=3")
    message = str(info.value)
    for name in (
        "db",
        "socket_timeout",
        "socket_connect_timeout",
        "max_connections",
        "client_name",
        "pool_timeout",
    ):
        assert name in message


def test_parse_url_rediss_turns_tls_on_with_its_options() -> None:
    assert parse_url("rediss://localhost:6380/1?ssl_cert_reqs=optional&ssl_check_hostname=no") == {
        "host": "localhost",
        "port": 6380,
        "db": 1,
        "ssl": True,
        "ssl_cert_reqs": "optional",
        "ssl_check_hostname": False,
    }
    settings = ConnectionSettings(**parse_url("rediss://localhost:6380?ssl_ca_certs=/ca.pem"))
    assert settings.describe() == "rediss://localhost:6380/0"
    assert settings.tls_settings() is not None and settings.tls_settings().ca_certs == "/ca.pem"


def test_tls_settings_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="ssl_ca_certs is set but TLS is off"):
        ConnectionSettings(ssl_ca_certs="/ca.pem")
    with pytest.raises(ConfigurationError, match="ssl_cert_reqs must be"):
        ConnectionSettings(ssl=True, ssl_cert_reqs="sometimes")
    with pytest.raises(ConfigurationError, match="TCP only"):
        ConnectionSettings(ssl=True, unix_socket_path="/tmp/r.sock")
    with pytest.raises(ConfigurationError, match="ssl_min_version"):
        ConnectionSettings(ssl=True, ssl_min_version="TLSv1.0")
    import ssl

    assert ConnectionSettings(ssl=True, ssl_cert_reqs=ssl.CERT_NONE).ssl_cert_reqs == "none"
    assert "ssl_password='***'" in repr(ConnectionSettings(ssl=True, ssl_password="hush"))
    assert "hush" not in repr(ConnectionSettings(ssl=True, ssl_password="hush"))


def test_env_tls_variables() -> None:
    env = {
        "REDIS_HOST": "cache.internal",
        "REDIS_USE_SSL": "true",
        "REDIS_SSL_CA_CERTS": "/etc/ca.pem",
        "REDIS_SSL_CERT_REQS": "optional",
        "REDIS_SSL_CHECK_HOSTNAME": "0",
    }
    assert settings_from_env(env) == {
        "host": "cache.internal",
        "ssl": True,
        "ssl_ca_certs": "/etc/ca.pem",
        "ssl_cert_reqs": "optional",
        "ssl_check_hostname": False,
    }
    with pytest.raises(ConfigurationError, match="REDIS_USE_SSL must be true or false"):
        settings_from_env({"REDIS_USE_SSL": "maybe"})


def test_parse_url_conflicting_db_names_both_values() -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_url("redis://localhost/1?db=2")
    assert "/1" in str(info.value)
    assert "db=2" in str(info.value)


def test_parse_url_option_error_quotes_the_bad_value() -> None:
    with pytest.raises(ConfigurationError, match="'soon'"):
        parse_url("redis://localhost?socket_timeout=soon")


@pytest.mark.parametrize("url", [b"redis://localhost", None, 6379])
def test_parse_url_refuses_non_str(url: object) -> None:
    with pytest.raises(ConfigurationError, match="must be a str"):
        parse_url(url)  # type: ignore[arg-type]


def test_parse_url_returns_fresh_dict() -> None:
    first = parse_url("redis://localhost/1")
    first["db"] = 99
    assert parse_url("redis://localhost/1")["db"] == 1


# ---------------------------------------------------------------------------
# ConnectionSettings
# ---------------------------------------------------------------------------


def test_settings_defaults() -> None:
    settings = ConnectionSettings()
    assert (settings.host, settings.port, settings.db) == ("localhost", 6379, 0)
    assert settings.username is None and settings.password is None
    assert settings.unix_socket_path is None
    assert settings.max_connections == 50
    assert settings.socket_timeout == 5.0
    assert settings.socket_connect_timeout == 5.0
    assert settings.pool_timeout == 5.0
    assert settings.client_name is None


def test_settings_normalises_types() -> None:
    settings = ConnectionSettings(
        unix_socket_path=pathlib.PurePosixPath("/tmp/r.sock"),  # type: ignore[arg-type]
        socket_timeout=2,
        socket_connect_timeout=None,
        pool_timeout=0.25,
    )
    assert settings.unix_socket_path == "/tmp/r.sock"
    assert type(settings.unix_socket_path) is str
    assert type(settings.socket_timeout) is float and settings.socket_timeout == 2.0
    assert settings.socket_connect_timeout is None
    assert settings.pool_timeout == 0.25


def test_settings_are_frozen() -> None:
    settings = ConnectionSettings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.port = 1  # type: ignore[misc]


def test_settings_replace_revalidates() -> None:
    with pytest.raises(ConfigurationError, match="port"):
        dataclasses.replace(ConnectionSettings(), port=0)


BAD_SETTINGS = [
    # (kwargs, text the message must contain)
    ({"port": 0}, "port"),
    ({"port": 65536}, "port"),
    ({"port": -1}, "port"),
    ({"port": "6379"}, "port must be an int"),
    ({"port": 6379.0}, "port must be an int"),
    ({"port": True}, "port must be an int"),
    ({"db": -1}, "db"),
    ({"db": "0"}, "db must be an int"),
    ({"db": False}, "db must be an int"),
    ({"max_connections": 0}, "max_connections"),
    ({"max_connections": 1.5}, "max_connections must be an int"),
    ({"socket_timeout": 0}, "socket_timeout"),
    ({"socket_timeout": -1.0}, "socket_timeout"),
    ({"socket_timeout": True}, "socket_timeout"),
    ({"socket_timeout": "5"}, "socket_timeout"),
    ({"socket_timeout": math.nan}, "socket_timeout"),
    ({"socket_timeout": math.inf}, "socket_timeout"),
    ({"socket_timeout": 10**400}, "socket_timeout"),
    ({"socket_connect_timeout": 0.0}, "socket_connect_timeout"),
    ({"socket_connect_timeout": False}, "socket_connect_timeout"),
    ({"pool_timeout": -0.5}, "pool_timeout"),
    ({"pool_timeout": "1"}, "pool_timeout"),
    ({"host": ""}, "host"),
    ({"host": "   "}, "host"),
    ({"host": "local host"}, "host"),
    ({"host": None}, "host"),
    ({"host": 127}, "host"),
    ({"unix_socket_path": ""}, "unix_socket_path"),
    ({"unix_socket_path": "/tmp/a\0b"}, "unix_socket_path"),
    ({"unix_socket_path": 123}, "unix_socket_path"),
    ({"unix_socket_path": b"/tmp/r.sock"}, "unix_socket_path"),
    ({"username": ""}, "username"),
    ({"username": 5}, "username"),
    ({"password": ""}, "password"),
    ({"password": 5}, "password"),
    ({"client_name": ""}, "client_name"),
    ({"client_name": "two words"}, "client_name"),
    ({"client_name": "caf\u00e9"}, "client_name"),
    ({"client_name": 1}, "client_name"),
]


@pytest.mark.parametrize(("kwargs", "part"), BAD_SETTINGS, ids=[repr(k) for k, _ in BAD_SETTINGS])
def test_settings_validation(kwargs: dict[str, object], part: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        ConnectionSettings(**{"password": SECRET, **kwargs})  # type: ignore[arg-type]
    assert part in str(info.value)
    assert_no_secret(info.value)


def test_settings_validation_messages_say_what_to_do() -> None:
    with pytest.raises(ConfigurationError, match="6379"):
        ConnectionSettings(port=0)
    with pytest.raises(ConfigurationError, match=r"int\(\)"):
        ConnectionSettings(port="6379")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="None to wait forever"):
        ConnectionSettings(socket_timeout=0)


def test_settings_non_str_password_value_not_echoed() -> None:
    with pytest.raises(ConfigurationError) as info:
        ConnectionSettings(password=SECRET.encode())  # type: ignore[arg-type]
    assert "bytes" in str(info.value)
    assert_no_secret(info.value)


def test_repr_hides_password() -> None:
    settings = ConnectionSettings(username="alice", password=SECRET)
    text = repr(settings)
    assert SECRET not in text
    assert SECRET not in str(settings)
    assert "password='***'" in text
    assert "username='alice'" in text
    assert text.startswith("ConnectionSettings(host='localhost', port=6379, db=0,")


def test_repr_without_password() -> None:
    text = repr(ConnectionSettings(host="h"))
    assert "password=None" in text
    assert "***" not in text
    assert "host='h'" in text


def test_repr_of_parsed_url_hides_password() -> None:
    settings = ConnectionSettings(**parse_url(f"redis://alice:{SECRET}@h:6380/3"))  # type: ignore[arg-type]
    assert settings.password == SECRET
    assert SECRET not in repr(settings)
    assert SECRET not in settings.describe()


DESCRIBE_CASES = [
    (ConnectionSettings(), "redis://localhost:6379/0"),
    (ConnectionSettings(username="alice", password=SECRET), "redis://alice@localhost:6379/0"),
    (ConnectionSettings(password=SECRET, host="h", port=6380, db=3), "redis://h:6380/3"),
    (ConnectionSettings(unix_socket_path="/tmp/x.sock", db=2), "unix:///tmp/x.sock?db=2"),
    (
        ConnectionSettings(unix_socket_path="/tmp/x.sock", username="bob", password=SECRET),
        "unix://bob@/tmp/x.sock?db=0",
    ),
    (ConnectionSettings(host="::1", port=6380), "redis://[::1]:6380/0"),
    (ConnectionSettings(host="fe80::1%eth0"), "redis://[fe80::1%25eth0]:6379/0"),
    (ConnectionSettings(username="al@ice:x"), "redis://al%40ice%3Ax@localhost:6379/0"),
    (ConnectionSettings(unix_socket_path="/tmp/a b?.sock"), "unix:///tmp/a%20b%3F.sock?db=0"),
]


@pytest.mark.parametrize(("settings", "expected"), DESCRIBE_CASES, ids=[e for _, e in DESCRIBE_CASES])
def test_describe(settings: ConnectionSettings, expected: str) -> None:
    assert settings.describe() == expected
    assert SECRET not in settings.describe()


@pytest.mark.parametrize(("settings", "_expected"), DESCRIBE_CASES, ids=[e for _, e in DESCRIBE_CASES])
def test_describe_round_trips_through_parse_url(
    settings: ConnectionSettings, _expected: str
) -> None:
    parsed = ConnectionSettings(**parse_url(settings.describe()))  # type: ignore[arg-type]
    expected = dataclasses.replace(settings, password=None)
    if settings.unix_socket_path is not None:
        # host/port are not part of a unix:// URL
        parsed = dataclasses.replace(parsed, host=settings.host, port=settings.port)
    assert parsed == expected


# ---------------------------------------------------------------------------
# settings_from_env
# ---------------------------------------------------------------------------

ENV_VARIABLES = [
    "REDIS_URL",
    "REDIS_HOST",
    "REDIS_PORT",
    "REDIS_DB",
    "REDIS_USERNAME",
    "REDIS_PASSWORD",
    "REDIS_SOCKET_PATH",
    "REDIS_MAX_CONNECTIONS",
    "REDIS_SOCKET_TIMEOUT",
    "REDIS_SOCKET_CONNECT_TIMEOUT",
]


def test_env_empty() -> None:
    assert settings_from_env({}) == {}


def test_env_ignores_unrelated_variables() -> None:
    assert settings_from_env({"REDIS_PORTS": "x", "PORT": "1", "redis_port": "2"}) == {}


def test_env_all_empty_means_unset() -> None:
    assert settings_from_env({name: "" for name in ENV_VARIABLES}) == {}


def test_env_url_only() -> None:
    env = {"REDIS_URL": "redis://alice:pw@h:6380/2?socket_timeout=1.5"}
    assert settings_from_env(env) == parse_url(env["REDIS_URL"])


ONE_VARIABLE = [
    ("REDIS_HOST", "cache", "host", "cache"),
    ("REDIS_HOST", " cache\n", "host", "cache"),
    ("REDIS_PORT", "6380", "port", 6380),
    ("REDIS_PORT", " 6380\n", "port", 6380),
    ("REDIS_DB", "2", "db", 2),
    ("REDIS_DB", "0", "db", 0),
    ("REDIS_USERNAME", "alice", "username", "alice"),
    ("REDIS_PASSWORD", " spaced pw ", "password", " spaced pw "),
    ("REDIS_SOCKET_PATH", "/tmp/r.sock", "unix_socket_path", "/tmp/r.sock"),
    ("REDIS_MAX_CONNECTIONS", "8", "max_connections", 8),
    ("REDIS_SOCKET_TIMEOUT", "2.5", "socket_timeout", 2.5),
    ("REDIS_SOCKET_CONNECT_TIMEOUT", "1", "socket_connect_timeout", 1.0),
]


@pytest.mark.parametrize(("variable", "raw", "key", "value"), ONE_VARIABLE)
def test_env_single_variable(variable: str, raw: str, key: str, value: object) -> None:
    result = settings_from_env({variable: raw})
    assert result == {key: value}
    assert type(result[key]) is type(value)


def test_env_variables_override_url_field_by_field() -> None:
    env = {
        "REDIS_URL": "redis://alice:old-pw@h1:6380/1?max_connections=4",
        "REDIS_HOST": "h2",
        "REDIS_DB": "3",
        "REDIS_PASSWORD": "new-pw",
    }
    assert settings_from_env(env) == {
        "username": "alice",
        "password": "new-pw",
        "host": "h2",
        "port": 6380,
        "db": 3,
        "max_connections": 4,
    }


def test_env_empty_override_keeps_url_value() -> None:
    env = {"REDIS_URL": "redis://h:6380/5", "REDIS_PORT": "", "REDIS_DB": "  "}
    assert settings_from_env(env) == {"host": "h", "port": 6380, "db": 5}


def test_env_whitespace_password_is_a_value() -> None:
    # only an empty string unsets a credential: spaces may be the password
    assert settings_from_env({"REDIS_PASSWORD": " "}) == {"password": " "}


def test_env_result_builds_settings() -> None:
    env = {"REDIS_URL": "unix:///tmp/r.sock?db=1", "REDIS_SOCKET_TIMEOUT": "0.5"}
    settings = ConnectionSettings(**settings_from_env(env))  # type: ignore[arg-type]
    assert settings.unix_socket_path == "/tmp/r.sock"
    assert settings.db == 1
    assert settings.socket_timeout == 0.5


BAD_ENV = [
    ("REDIS_PORT", "abc"),
    ("REDIS_PORT", "0"),
    ("REDIS_PORT", "70000"),
    ("REDIS_PORT", "63 79"),
    ("REDIS_PORT", "-1"),
    ("REDIS_DB", "-1"),
    ("REDIS_DB", "x"),
    ("REDIS_DB", "1.0"),
    ("REDIS_MAX_CONNECTIONS", "0"),
    ("REDIS_MAX_CONNECTIONS", "many"),
    ("REDIS_SOCKET_TIMEOUT", "0"),
    ("REDIS_SOCKET_TIMEOUT", "fast"),
    ("REDIS_SOCKET_TIMEOUT", "nan"),
    ("REDIS_SOCKET_CONNECT_TIMEOUT", "-2"),
    ("REDIS_SOCKET_CONNECT_TIMEOUT", "inf"),
]


@pytest.mark.parametrize(("variable", "raw"), BAD_ENV)
def test_env_bad_numbers_name_the_variable(variable: str, raw: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        settings_from_env({variable: raw, "REDIS_PASSWORD": SECRET})
    message = str(info.value)
    assert message.startswith(variable)
    assert repr(raw) in message
    assert_no_secret(info.value)


@pytest.mark.parametrize(
    "url",
    [
        f"redis://user:{SECRET}",
        f"redis://:{SECRET}@h:99999",
        f"rediss://:{SECRET}@h?ssl_cert_reqs=",
        f"redis://:{SECRET}@h?bogus=1",
    ],
)
def test_env_bad_url_names_variable_and_hides_password(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        settings_from_env({"REDIS_URL": url})
    assert str(info.value).startswith("REDIS_URL: ")
    assert_no_secret(info.value)


BAD_ENV_TEXT = [
    ("REDIS_HOST", "cache host"),
    ("REDIS_HOST", "cache\thost"),
    ("REDIS_SOCKET_PATH", "/tmp/r\0.sock"),
]


@pytest.mark.parametrize(("variable", "raw"), BAD_ENV_TEXT)
def test_env_bad_host_and_socket_path_name_the_variable(variable: str, raw: str) -> None:
    # Like every other variable's message, not "host ..." / "unix_socket_path ...",
    # which are the Python settings the user never wrote.
    for read in (settings_from_env, SyncRedisCache.from_env, RedisCache.from_env):
        with pytest.raises(ConfigurationError) as info:
            read({variable: raw, "REDIS_PASSWORD": SECRET})
        message = str(info.value)
        assert message.startswith(f"{variable} must be"), message
        assert "unix_socket_path" not in message and not message.startswith("host")
        assert_no_secret(info.value)


def test_env_host_with_url_is_refused_with_hint() -> None:
    with pytest.raises(ConfigurationError, match="REDIS_HOST.*REDIS_URL"):
        settings_from_env({"REDIS_HOST": "redis://localhost"})


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REDIS_PORT", "6390")
    monkeypatch.setenv("REDIS_URL", "redis://envhost")
    assert settings_from_env() == {"host": "envhost", "port": 6390}


def test_configuration_error_hierarchy() -> None:
    # callers may catch it as ValueError or as the package's base error
    with pytest.raises(ValueError):
        parse_url("nope")
    with pytest.raises(RedisCacheError):
        ConnectionSettings(port=0)
