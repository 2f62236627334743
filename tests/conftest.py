"""Shared pytest fixtures: private, real ``redis-server`` processes.

Fixtures (all servers listen only on loopback and a private unix socket):

``redis_server_factory`` (session)
    ``make(**kwargs) -> RedisServer``: starts an extra server with any
    :class:`redis_cache.testing.RedisServer` keyword (``password=``, ``users=``,
    ``extra_config=`` ...).  Every server it made is closed at session end.
``redis_server`` (session)
    The shared plain server (no auth), TCP + unix socket.
``redis`` (function)
    ``redis_server`` after ``FLUSHALL``: each test that uses it starts empty.
``password_server`` (session)
    Default user protected by ``requirepass`` :data:`PASSWORD`.
``acl_server`` (session)
    ACL user :data:`ACL_USER` / :data:`ACL_PASSWORD` with full access, and the
    ``default`` user switched **off**, so an unauthenticated connection gets
    ``NOAUTH`` and only ``AUTH alice alice-pw`` (username + password) works.
    Its ``url`` / helpers authenticate as alice.

Tests needing a server are skipped, with a message saying why, when
``redis-server`` is not installed; tests that use none of these fixtures
still run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from redis_cache.testing import RedisServer, find_redis_server

PASSWORD = "s3cret-pw"
ACL_USER = "alice"
ACL_PASSWORD = "alice-pw"

ServerFactory = Callable[..., RedisServer]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: long-running test (deselect with -m 'not slow')")
    config.addinivalue_line("markers", "uvloop: test runs on (or requires) the uvloop event loop")


@pytest.fixture(scope="session")
def redis_server_factory() -> Iterator[ServerFactory]:
    """Start extra private servers on demand; close them all at session end."""
    if find_redis_server() is None:
        pytest.skip("redis-server is not installed (not on PATH nor /usr/bin/redis-server)")
    servers: list[RedisServer] = []

    def make(**kwargs: Any) -> RedisServer:
        server = RedisServer(**kwargs)
        servers.append(server)  # registered first so a failed start is cleaned up too
        server.start()
        return server

    yield make
    for server in reversed(servers):
        server.close()


@pytest.fixture(scope="session")
def redis_server(redis_server_factory: ServerFactory) -> RedisServer:
    """The session's shared, unauthenticated server (TCP + unix socket)."""
    return redis_server_factory()


@pytest.fixture
def redis(redis_server: RedisServer) -> RedisServer:
    """The shared server, emptied first so the test sees no earlier data."""
    if not redis_server.running:
        # A previous test stopped or killed it; bring it back (same port).
        redis_server.start()
    elif redis_server.paused:
        redis_server.resume()
    redis_server.flushall()
    return redis_server


@pytest.fixture(scope="session")
def password_server(redis_server_factory: ServerFactory) -> RedisServer:
    """Server whose default user requires :data:`PASSWORD`."""
    return redis_server_factory(password=PASSWORD)


@pytest.fixture(scope="session")
def acl_server(redis_server_factory: ServerFactory) -> RedisServer:
    """Server with ACL user alice and the ``default`` user disabled."""
    return redis_server_factory(users=[(ACL_USER, ACL_PASSWORD)], default_user_enabled=False)
