"""The blocking pool when its idle connections go stale: a server restart
(TCP and unix socket), the server's idle ``timeout``, ``CLIENT KILL``, a
connection given back with bytes nobody read, and ``close()`` while a call
waits with no timeout.

The rule under test: no call fails because a connection it was lent had
been dropped while idle. Taking an idle connection checks it (a
non-blocking peek); a request that failed on a reused connection before any
reply came back is sent once more on a fresh one when that is safe.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
from redis_cache import ConnectionError, SyncRedisCache
from redis_cache.testing import RedisServer
from scripted_server import (  # noqa: F401
    CLOSE,
    Action,
    Command,
    ScriptedServer,
    bulk,
    default_handler,
    integer,
    scripted_server,
    status,
)
from sync_helpers import SAFETY_TIMEOUT, ResultThread, client_count

ServerFactory = Callable[..., RedisServer]

NAME = "recovery-test"
IDLE = 20


@pytest.fixture
def server(redis_server_factory: ServerFactory) -> Iterator[RedisServer]:
    srv = redis_server_factory()
    yield srv
    srv.close()


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Polls condition (bounded): for what another process does on its own."""
    end = time.monotonic() + SAFETY_TIMEOUT
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.01)


def make_idle_connections(cache: SyncRedisCache, server: RedisServer, count: int) -> None:
    """Leaves `count` connections idle in the pool: `count` threads each block
    in BLPOP at once (so each holds a connection of its own), then are
    released together."""
    threads = [
        ResultThread(lambda i=i: cache.execute_command("BLPOP", f"wake:{i}", 30))
        for i in range(count)
    ]
    for thread in threads:
        thread.start()
    wait_for(lambda: _blocked(server) == count, f"{count} blocked clients")
    for i in range(count):
        server.raw_command("RPUSH", f"wake:{i}", "go")
    for i, thread in enumerate(threads):
        assert thread.outcome() == [f"wake:{i}".encode(), b"go"]
    assert client_count(server, NAME) == count


def _blocked(server: RedisServer) -> int:
    info = server.cli("INFO", "clients")
    for line in info.splitlines():
        if line.startswith("blocked_clients:"):
            return int(line.split(":")[1])
    raise AssertionError(info)


def calls_failing(cache: SyncRedisCache, calls: int = 2 * IDLE) -> list[BaseException]:
    """Runs a mix of commands and returns those that failed."""
    failures: list[BaseException] = []
    for i in range(calls):
        try:
            if i % 4 == 0:
                assert cache.set(f"k{i}", i) is True
            elif i % 4 == 1:
                assert cache.get(f"k{i - 1}") == i - 1
            elif i % 4 == 2:
                assert cache.get_many([f"k{i - 2}", "absent"]) == {f"k{i - 2}": i - 2}
            else:
                assert cache.delete(f"k{i - 3}") is True
        except ConnectionError as exc:
            failures.append(exc)
    return failures


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_no_call_fails_after_a_restart_with_idle_connections(
    server: RedisServer, transport: str
) -> None:
    where = {"port": server.port} if transport == "tcp" else {"unix_socket_path": server.unix_socket_path}
    with SyncRedisCache(**where, client_name=NAME, max_connections=IDLE, socket_timeout=5) as cache:
        make_idle_connections(cache, server, IDLE)
        server.restart()  # every idle connection is now dead
        assert calls_failing(cache) == []


def test_no_call_fails_after_a_kill_and_start(server: RedisServer) -> None:
    with SyncRedisCache(port=server.port, client_name=NAME, max_connections=IDLE) as cache:
        make_idle_connections(cache, server, IDLE)
        server.kill()
        server.start()
        assert calls_failing(cache) == []


def test_no_call_fails_after_client_kill(server: RedisServer) -> None:
    with SyncRedisCache(port=server.port, client_name=NAME, max_connections=IDLE) as cache:
        make_idle_connections(cache, server, IDLE)
        server.raw_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        wait_for(lambda: client_count(server, NAME) == 0, "the clients to be killed")
        assert calls_failing(cache) == []


def test_no_call_fails_after_the_servers_idle_timeout(server: RedisServer) -> None:
    with SyncRedisCache(port=server.port, client_name=NAME, max_connections=IDLE) as cache:
        make_idle_connections(cache, server, IDLE)
        server.raw_command("CONFIG", "SET", "timeout", "1")
        try:
            wait_for(lambda: client_count(server, NAME) == 0, "the server's idle timeout")
            assert calls_failing(cache) == []
        finally:
            server.raw_command("CONFIG", "SET", "timeout", "0")


def closes_its_first_connection_on_the_second_command(command: Command) -> Action:
    """A server that drops a connection just as the second command on it
    arrives: to the client, that connection looked healthy when it was taken
    from the pool, and the command fails before any reply byte."""
    if command.conn.index == 0 and len(command.conn.commands) == 2:
        return CLOSE
    if command.name == "GET":
        return bulk(b"1")
    if command.name == "INCRBY":
        return integer(2)
    if command.name == "SET":
        return status("OK")
    return default_handler(command)


def test_a_safe_command_on_a_connection_that_died_idle_is_sent_again(
    scripted_server: Callable[..., ScriptedServer],
) -> None:
    server = scripted_server(closes_its_first_connection_on_the_second_command)
    with SyncRedisCache(host=server.host, port=server.port, max_connections=1) as cache:
        assert cache.set("n", 1) is True
        assert cache.get("n") == 1  # failed on connection 0, sent again on connection 1
    assert server.accepted == 2
    assert server.command_names().count("GET") == 2


def test_incr_on_a_connection_that_died_idle_is_not_sent_again(
    scripted_server: Callable[..., ScriptedServer],
) -> None:
    server = scripted_server(closes_its_first_connection_on_the_second_command)
    with SyncRedisCache(host=server.host, port=server.port, max_connections=1) as cache:
        assert cache.set("n", 1) is True
        with pytest.raises(ConnectionError, match="closed the connection"):
            cache.incr("n")  # it may have been applied: never sent twice
    assert server.command_names().count("INCRBY") == 1


def test_execute_command_is_retried_only_when_marked_idempotent(server: RedisServer) -> None:
    with SyncRedisCache(port=server.port, client_name=NAME, max_connections=1) as cache:
        assert cache.execute_command("SET", "x", "1") == "OK"
        server.raw_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        wait_for(lambda: client_count(server, NAME) == 0, "the client to be killed")
        # The peek finds the dead connection: a fresh one is made either way.
        assert cache.execute_command("GET", "x") == b"1"
        assert cache.execute_command("GET", "x", idempotent=True) == b"1"
        with pytest.raises(TypeError, match="idempotent"):
            cache.execute_command("GET", "x", retry=True)


def test_close_interrupts_a_call_blocked_without_a_timeout(server: RedisServer) -> None:
    cache = SyncRedisCache(port=server.port, client_name=NAME, socket_timeout=None)
    blocked = ResultThread(lambda: cache.execute_command("BLPOP", "never", 0))
    blocked.start()
    wait_for(lambda: _blocked(server) == 1, "the call to block")
    cache.close()
    blocked.join(SAFETY_TIMEOUT)
    assert not blocked.is_alive()
    with pytest.raises(ConnectionError, match="closed"):
        blocked.outcome()


def test_connect_wait_lets_calls_ride_out_a_restart(server: RedisServer) -> None:
    """With the server down, a call retries connecting (with backoff) for up
    to connect_wait instead of failing at once; another thread starts the
    server again once an attempt has failed, and the waiting call succeeds."""
    server.kill()
    with SyncRedisCache(port=server.port, connect_wait=SAFETY_TIMEOUT) as cache:

        def restart_after_a_failed_attempt() -> None:
            wait_for(lambda: cache._connect_failures > 0, "a failed attempt")
            server.start()

        restarter = threading.Thread(target=restart_after_a_failed_attempt)
        restarter.start()
        assert cache.get("a", default="restarted") == "restarted"
        restarter.join(SAFETY_TIMEOUT)
        assert cache._connect_failures == 0  # the success reset the backoff


def test_connect_wait_zero_fails_at_once_after_a_failed_attempt(server: RedisServer) -> None:
    server.kill()
    with SyncRedisCache(port=server.port, connect_wait=0) as cache:
        for _ in range(20):
            with pytest.raises(ConnectionError, match="cannot connect"):
                cache.get("a")
        assert cache._connect_failures >= 1
