"""Tests of the test harness itself (redis_cache.testing, conftest.py).

Tests that stop, pause or restart a server use their own server from the
factory so the shared session servers stay healthy for everyone else.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import redis_cache.testing as redis_servers
from conftest import ACL_PASSWORD, ACL_USER, PASSWORD
from redis_cache.testing import (
    RedisServer,
    RedisServerStartError,
    find_redis_server,
    free_port,
    read_reply,
)

# Some tests below build servers without the fixtures, so skip the module
# the same way the fixtures would.
pytestmark = pytest.mark.skipif(
    find_redis_server() is None,
    reason="redis-server is not installed (not on PATH nor /usr/bin/redis-server)",
)

ServerFactory = Callable[..., RedisServer]


def _assert_gone(pid: int) -> None:
    """The process no longer exists (exited *and* reaped by us)."""
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_ping_over_tcp_and_unix(redis: RedisServer) -> None:
    assert redis.raw_command("PING") == b"+PONG\r\n"
    assert redis.raw_command("PING", via="unix") == b"+PONG\r\n"
    assert redis.host == "127.0.0.1"
    assert redis.url == f"redis://127.0.0.1:{redis.port}/0"
    assert redis.unix_url == f"unix://{redis.unix_socket_path}"
    mode = stat.S_IMODE(os.stat(redis.unix_socket_path).st_mode)
    assert mode == 0o700


def test_ping_over_ipv6(redis: RedisServer) -> None:
    if not redis.ipv6:
        pytest.skip("::1 is not available on this machine")
    assert redis.raw_command("PING", via="tcp6") == b"+PONG\r\n"
    assert redis.url6 == f"redis://[::1]:{redis.port}/0"


def test_server_is_private_not_the_system_one(redis: RedisServer) -> None:
    assert redis.port != 6379
    info = redis.raw_command("INFO", "server").decode()
    assert f"tcp_port:{redis.port}" in info
    assert f"process_id:{redis.pid}" in info
    assert redis.raw_command("CONFIG", "GET", "save") == b"*2\r\n$4\r\nsave\r\n$0\r\n\r\n"


@pytest.mark.parametrize("round_", [1, 2])
def test_redis_fixture_starts_empty(redis: RedisServer, round_: int) -> None:
    # The second round fails unless the fixture flushed the first round's key.
    assert redis.raw_command("DBSIZE") == b":0\r\n"
    assert redis.raw_command("SET", "leftover", round_) == b"+OK\r\n"


def test_raw_command_reads_large_and_nested_replies(redis: RedisServer) -> None:
    value = os.urandom(3 * 1024 * 1024)  # bigger than any single socket read
    assert redis.raw_command("SET", "big", value) == b"+OK\r\n"
    header = b"$%d\r\n" % len(value)
    assert redis.raw_command("GET", "big") == header + value + b"\r\n"
    assert redis.raw_command("GET", "missing") == b"$-1\r\n"
    assert redis.raw_command("RPUSH", "list", "a", "bc") == b":2\r\n"
    assert redis.raw_command("LRANGE", "list", 0, -1) == b"*2\r\n$1\r\na\r\n$2\r\nbc\r\n"
    assert redis.raw_command("NOSUCHCOMMAND").startswith(b"-ERR unknown command")


def test_read_reply_frames_pipelined_resp3_replies(redis: RedisServer) -> None:
    # Both replies arrive in one read; each must be cut exactly at its end.
    with redis.connect() as sock, sock.makefile("rb") as stream:
        sock.sendall(b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n*1\r\n$4\r\nPING\r\n")
        hello = read_reply(stream)
        assert hello.startswith(b"%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n")
        assert hello.endswith(b"$7\r\nmodules\r\n*0\r\n")
        assert read_reply(stream) == b"+PONG\r\n"


def test_cli_interop_with_raw_protocol(redis: RedisServer) -> None:
    assert redis.cli("SET", "k", "from-cli") == "OK"
    assert redis.raw_command("GET", "k") == b"$8\r\nfrom-cli\r\n"
    assert redis.cli("GET", "k", via="unix") == "from-cli"


def test_password_required(password_server: RedisServer) -> None:
    assert password_server.password == PASSWORD
    assert password_server.raw_command("PING", auth=False).startswith(b"-NOAUTH")
    assert password_server.raw_command("PING") == b"+PONG\r\n"
    assert password_server.raw_command("PING", via="unix") == b"+PONG\r\n"
    assert password_server.url == f"redis://:{PASSWORD}@127.0.0.1:{password_server.port}/0"
    assert password_server.cli("PING") == "PONG"
    assert "NOAUTH" in password_server.cli("PING", auth=False)


def test_acl_user_required(acl_server: RedisServer) -> None:
    assert acl_server.raw_command("PING", auth=False).startswith(b"-NOAUTH")
    assert acl_server.raw_command("ACL", "WHOAMI") == b"$5\r\nalice\r\n"
    assert acl_server.cli("ACL", "WHOAMI") == ACL_USER
    # The default user is off: a bare password (AUTH <pw>) is rejected.
    assert acl_server.raw_command("AUTH", ACL_PASSWORD, auth=False).startswith(b"-WRONGPASS")
    wrong = acl_server.raw_command("AUTH", ACL_USER, "nope", auth=False)
    assert wrong.startswith(b"-WRONGPASS")
    assert acl_server.url == f"redis://alice:alice-pw@127.0.0.1:{acl_server.port}/0"


def test_restart_keeps_address_and_drops_data(redis_server_factory: ServerFactory) -> None:
    server = redis_server_factory()
    port, socket_path, old_pid = server.port, server.unix_socket_path, server.pid
    assert server.raw_command("SET", "k", "v") == b"+OK\r\n"
    server.restart()
    assert (server.port, server.unix_socket_path) == (port, socket_path)
    assert server.pid != old_pid
    _assert_gone(old_pid)  # type: ignore[arg-type]
    assert server.raw_command("PING", via="unix") == b"+PONG\r\n"
    assert server.raw_command("DBSIZE") == b":0\r\n"  # persistence is off


def test_kill_then_start_again(redis_server_factory: ServerFactory) -> None:
    server = redis_server_factory(password='pw with spaces "and quotes"')
    process = server.process
    assert process is not None
    server.kill()
    assert process.returncode == -signal.SIGKILL
    assert not server.running
    with pytest.raises(ConnectionRefusedError):
        server.connect()
    server.start()
    assert server.raw_command("PING") == b"+PONG\r\n"


def test_pause_and_resume(redis_server_factory: ServerFactory) -> None:
    server = redis_server_factory()
    server.pause()
    assert server.paused
    with server.connect(timeout=5) as sock:
        # The kernel completes the TCP handshake, but nobody answers.
        sock.sendall(b"*1\r\n$4\r\nPING\r\n")
        readable, _, _ = select.select([sock], [], [], 0.3)
        assert readable == []
        server.resume()
        assert not server.paused
        assert sock.makefile("rb").readline() == b"+PONG\r\n"


def test_stop_ends_process_even_when_paused(redis_server_factory: ServerFactory) -> None:
    server = redis_server_factory()
    pid = server.pid
    assert pid is not None
    server.pause()
    server.stop()
    assert server.process is not None and server.process.returncode == 0
    assert not server.running
    _assert_gone(pid)
    assert "Redis is now ready to exit" in server.log


def test_context_manager_stops_and_cleans_up() -> None:
    with RedisServer() as server:
        pid = server.pid
        directory = server.dir
        assert pid is not None
        assert server.raw_command("PING") == b"+PONG\r\n"
    assert not server.running
    _assert_gone(pid)
    assert not os.path.exists(directory)


def test_start_failure_reports_log() -> None:
    server = RedisServer(extra_config={"maxmemory-policy": "no-such-policy"})
    try:
        with pytest.raises(RedisServerStartError) as excinfo:
            server.start()
        assert "no-such-policy" in str(excinfo.value)
        assert not excinfo.value.address_in_use
        assert not server.running
    finally:
        server.close()


def test_port_collision_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken, free_port()])
        monkeypatch.setattr(redis_servers, "free_port", lambda: next(ports))
        server = RedisServer()
        try:
            assert server.port == taken
            server.start()
            assert server.port != taken
            assert server.raw_command("PING") == b"+PONG\r\n"
        finally:
            server.close()


def test_reserved_directives_are_rejected() -> None:
    with pytest.raises(ValueError, match="port"):
        RedisServer(extra_config={"port": 6379})


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 0 < port < 65536
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))


def test_server_is_a_child_of_this_process(redis_server: RedisServer) -> None:
    status = Path(f"/proc/{redis_server.pid}/status").read_text(encoding="ascii")
    ppid = int(status.split("PPid:")[1].split()[0])
    assert ppid == os.getpid()


_INNER_TEST = """
import atexit
import pathlib

import redis_cache.testing as redis_servers


def test_uses_servers(redis, password_server, acl_server, redis_server_factory):
    # Without the atexit safety net, only fixture teardown can stop them.
    atexit.unregister(redis_servers._kill_leftover_servers)
    extra = redis_server_factory()
    pids = [s.pid for s in (redis, password_server, acl_server, extra)]
    pathlib.Path("pids.txt").write_text(" ".join(map(str, pids)))
    assert redis.raw_command("PING") == b"+PONG\\r\\n"
"""


def test_factory_stops_all_servers_at_session_end(tmp_path: Path) -> None:
    """Run an inner pytest session with our conftest; its servers must be gone after."""
    here = Path(__file__).parent
    for name in ("conftest.py",):
        shutil.copy(here / name, tmp_path / name)
    (tmp_path / "test_inner.py").write_text(_INNER_TEST)
    inner = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_inner.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert inner.returncode == 0, inner.stdout + inner.stderr
    pids = [int(pid) for pid in (tmp_path / "pids.txt").read_text().split()]
    assert len(set(pids)) == 4
    leftovers = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)  # only succeeds if teardown failed
            leftovers.append(pid)
        except ProcessLookupError:
            pass
    assert leftovers == []
