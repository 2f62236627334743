"""Tests of the TLS, replication and Sentinel test infrastructure itself
(redis_cache.testing, redis_cache._testing_tls, redis_cache._testing_sentinel
and the fixtures in conftest.py).

Nothing here uses the cache: a plain socket, Python's ``ssl`` module and
``redis-cli`` are the clients, so a failure points at the harness.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
import redis_cache.testing as testing
from conftest import PASSWORD, SENTINEL_PASSWORD, SERVICE_NAME
from redis_cache.testing import (
    RedisReplyError,
    RedisServer,
    RedisServerError,
    ReplicationGroup,
    SentinelTopology,
    TLSCertificates,
    find_openssl,
    find_redis_server,
    generate_tls_certificates,
    read_reply,
)

pytestmark = pytest.mark.skipif(
    find_redis_server() is None,
    reason="redis-server is not installed (not on PATH nor /usr/bin/redis-server)",
)

PING = b"*1\r\n$4\r\nPING\r\n"


def tls_ping(port: int, context: ssl.SSLContext, server_hostname: str = "127.0.0.1") -> bytes:
    """PING over a fresh TLS connection made with ``context``; the raw reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=server_hostname) as sock:
            sock.sendall(PING)
            with sock.makefile("rb") as stream:
                return read_reply(stream)


def sentinel_names(sentinel: RedisServer) -> tuple[str, int]:
    """Where ``sentinel`` says the primary is, asked without the harness's helpers."""
    reply = sentinel.command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE_NAME)
    assert isinstance(reply, list), reply
    return (str(reply[0]), int(str(reply[1])))


def role(node: RedisServer) -> list[object]:
    reply = node.command("ROLE")
    assert isinstance(reply, list)
    return reply


# ----------------------------------------------------------------- harness


def test_public_names_resolve() -> None:
    # The Sentinel names are loaded lazily; every advertised name must load.
    for name in testing.__all__:
        assert getattr(testing, name) is not None, name
    with pytest.raises(AttributeError):
        testing.no_such_name


def test_command_decodes_replies_and_raises_errors(redis: RedisServer) -> None:
    assert redis.command("SET", "k", "v") == "OK"
    assert redis.command("MGET", "k", "missing") == ["v", None]
    assert redis.command("INCR", "n") == 1
    with pytest.raises(RedisReplyError, match="unknown command"):
        redis.command("NOSUCHCOMMAND")
    assert redis.info("server")["tcp_port"] == str(redis.port)


def test_raw_pipeline_shares_one_connection(redis: RedisServer) -> None:
    replies = redis.raw_pipeline(("CLIENT", "ID"), ("CLIENT", "ID"))
    assert len(replies) == 2 and replies[0] == replies[1]


# --------------------------------------------------------------- certificates


def _describe(cert: str) -> str:
    """What openssl says of a certificate, minus what must differ between runs."""
    openssl = find_openssl()
    assert openssl is not None
    fields = ["-subject", "-issuer", "-serial", "-ext", "subjectAltName,extendedKeyUsage"]
    return subprocess.run(
        [openssl, "x509", "-in", cert, "-noout", *fields],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout


def test_certificates_are_deterministic(tls_certs: TLSCertificates, tmp_path: Path) -> None:
    again = generate_tls_certificates(tmp_path)
    assert sorted(os.listdir(tmp_path)) == sorted(os.listdir(tls_certs.directory))
    for name in sorted(os.listdir(tmp_path)):
        if name.endswith(".crt"):
            assert _describe(str(tmp_path / name)) == _describe(
                os.path.join(tls_certs.directory, name)
            ), name
    server = _describe(tls_certs.server.cert)
    assert "DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1" in server
    assert "CN = localhost" in server
    # Keys are fresh every time: two runs never share one.
    assert Path(again.server.key).read_bytes() != Path(tls_certs.server.key).read_bytes()


def test_private_keys_are_private(tls_certs: TLSCertificates) -> None:
    for key in (tls_certs.ca.key, tls_certs.server.key, tls_certs.client_key_encrypted):
        assert os.stat(key).st_mode & 0o077 == 0, key


def test_passphrase_protected_client_key(tls_certs: TLSCertificates) -> None:
    context = tls_certs.client_context()
    with pytest.raises(ssl.SSLError):
        context.load_cert_chain(
            tls_certs.client.cert, tls_certs.client_key_encrypted, password="wrong"
        )
    context.load_cert_chain(
        tls_certs.client.cert,
        tls_certs.client_key_encrypted,
        password=tls_certs.client_key_passphrase,
    )
    assert Path(tls_certs.client_key_encrypted).read_text().startswith(
        "-----BEGIN ENCRYPTED PRIVATE KEY-----"
    )


# --------------------------------------------------------------- TLS servers


def test_tls_port_collision_is_retried(
    tls_certs: TLSCertificates, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken, testing.free_port()])
        monkeypatch.setattr(testing, "free_port", lambda: next(ports))
        server = RedisServer(tls=tls_certs.server_tls(), plain_port=False)
        try:
            assert server.tls_port == taken
            server.start()
            assert server.tls_port != taken
            assert server.raw_command("PING", via="tls") == b"+PONG\r\n"
        finally:
            server.close()



def test_tls_server_accepts_a_verifying_client(
    tls_server: RedisServer, tls_certs: TLSCertificates
) -> None:
    context = tls_certs.client_context()  # verifies the chain and the host name
    assert tls_server.tls_port is not None
    assert tls_ping(tls_server.tls_port, context) == b"+PONG\r\n"
    assert tls_ping(tls_server.tls_port, context, server_hostname="localhost") == b"+PONG\r\n"
    if tls_server.ipv6:
        with socket.create_connection(("::1", tls_server.tls_port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname="::1") as sock:
                assert sock.version() in ("TLSv1.2", "TLSv1.3")
    assert tls_server.tls_url == f"rediss://127.0.0.1:{tls_server.tls_port}/0"
    # The harness's own paths: plain port, Python ssl, redis-cli --tls.
    assert tls_server.raw_command("PING") == b"+PONG\r\n"
    assert tls_server.raw_command("PING", via="tls") == b"+PONG\r\n"
    assert tls_server.cli("SET", "via-cli", "over-tls", via="tls") == "OK"
    assert tls_server.raw_command("GET", "via-cli") == b"$8\r\nover-tls\r\n"


def test_tls_port_refuses_plaintext(tls_server: RedisServer) -> None:
    assert tls_server.tls_port is not None
    with socket.create_connection(("127.0.0.1", tls_server.tls_port), timeout=10) as sock:
        sock.sendall(PING)
        received = b""
        try:
            while chunk := sock.recv(4096):
                received += chunk
        except ConnectionResetError:
            pass
    assert b"PONG" not in received  # the server hung up without answering


def test_tls_only_server_has_no_plain_port(
    tls_only_server: RedisServer, tls_certs: TLSCertificates
) -> None:
    assert tls_only_server.port == 0
    assert tls_only_server.command("CONFIG", "GET", "port") == ["port", "0"]
    assert tls_only_server.address == ("127.0.0.1", tls_only_server.tls_port)
    with pytest.raises(RedisServerError, match="TLS-only"):
        tls_only_server.url
    # The harness defaults to the unix socket; TLS works when asked for.
    assert tls_only_server.raw_command("PING") == b"+PONG\r\n"
    assert tls_only_server.raw_command("PING", via="tls") == b"+PONG\r\n"
    assert tls_only_server.cli("PING", via="tls") == "PONG"
    assert tls_only_server.tls_port is not None
    assert tls_ping(tls_only_server.tls_port, tls_certs.client_context()) == b"+PONG\r\n"


def test_client_auth_server_wants_a_certificate_from_its_ca(
    tls_client_auth_server: RedisServer, tls_certs: TLSCertificates
) -> None:
    port = tls_client_auth_server.tls_port
    assert port is not None
    with_client_cert = tls_certs.client_context(client=tls_certs.client)
    assert tls_ping(port, with_client_cert) == b"+PONG\r\n"
    # TLS 1.3 completes the client's side of the handshake before the server
    # checks the certificate, so the refusal arrives on the first read.
    for client in (None, tls_certs.wrong_ca_client):
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
            reply = tls_ping(port, tls_certs.client_context(client=client))
            pytest.fail(f"client {client} got {reply!r}")
    # The harness presents the client certificate itself.
    assert tls_client_auth_server.raw_command("PING", via="tls") == b"+PONG\r\n"
    assert tls_client_auth_server.cli("PING", via="tls") == "PONG"


@pytest.mark.parametrize(
    ("reason", "verify_message"),
    [
        ("expired", "certificate has expired"),
        ("wrong_ca", "unable to get local issuer certificate"),
        ("other_name", "Hostname mismatch"),
    ],
)
def test_broken_certificates_fail_verification(
    tls_broken_servers: dict[str, RedisServer],
    tls_certs: TLSCertificates,
    reason: str,
    verify_message: str,
) -> None:
    server = tls_broken_servers[reason]
    assert server.tls_port is not None
    with pytest.raises(ssl.SSLCertVerificationError) as excinfo:
        tls_ping(server.tls_port, tls_certs.client_context(), server_hostname="localhost")
    assert verify_message in excinfo.value.verify_message
    # The server itself is fine: a client that skips verification gets in,
    # so the refusal above is about the certificate alone.
    careless = ssl.create_default_context()
    careless.check_hostname = False
    careless.verify_mode = ssl.CERT_NONE
    assert tls_ping(server.tls_port, careless, server_hostname="localhost") == b"+PONG\r\n"


# --------------------------------------------------------- replication group


def test_demote_in_place_keeps_clients_connected(replication_group: ReplicationGroup) -> None:
    old = replication_group.primary
    with old.connect() as sock, sock.makefile("rb") as stream:
        sock.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n1\r\n")
        assert read_reply(stream) == b"+OK\r\n"
        new = replication_group.demote_in_place()
        assert new is not old and replication_group.primary is new
        assert role(old)[:3] == ["slave", "127.0.0.1", new.port]
        # Same connection, same address: now a replica refusing writes.
        sock.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n2\r\n")
        assert read_reply(stream).startswith(b"-READONLY")
        assert new.command("GET", "k") == "1"  # nothing was lost on the way
        # The test points the address back at a primary.
        replication_group.promote(old)
        sock.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n3\r\n")
        assert read_reply(stream) == b"+OK\r\n"
    assert role(new)[:3] == ["slave", "127.0.0.1", old.port]


# ---------------------------------------------------------------- Sentinel


def test_sentinel_topology_is_settled_and_protected(
    healthy_sentinel_topology: SentinelTopology,
) -> None:
    topology = healthy_sentinel_topology
    assert len(topology.nodes) == 3 and len(topology.sentinels) == 3
    primary = topology.primary()
    assert all(sentinel_names(s) == primary.address for s in topology.sentinels)
    assert role(primary)[0] == "master"
    for replica in topology.replicas():
        assert role(replica)[:4] == ["slave", "127.0.0.1", primary.port, "connected"]
    for sentinel in topology.sentinels:
        state = sentinel.primary_state()
        assert state["num-slaves"] == "2" and state["num-other-sentinels"] == "2"
        assert state["quorum"] == "2" and state["down-after-milliseconds"] == "500"
    assert {port for _, port in topology.sentinel_addresses} == {
        s.port for s in topology.sentinels
    }
    sentinel = topology.sentinels[0]
    assert sentinel.raw_command("PING", auth=False).startswith(b"-NOAUTH")
    assert sentinel.raw_command("AUTH", "wrong", auth=False).startswith(b"-WRONGPASS")
    assert sentinel.credentials == (None, SENTINEL_PASSWORD)
    assert primary.raw_command("PING", auth=False).startswith(b"-NOAUTH")
    assert primary.credentials == (None, PASSWORD)
    unknown = sentinel.command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "no-such-service")
    assert unknown is None


def _write_replicated(primary: RedisServer, key: str, value: str, replicas: int) -> None:
    written, acked = primary.raw_pipeline(("SET", key, value), ("WAIT", replicas, 10_000))
    assert (written, acked) == (b"+OK\r\n", b":%d\r\n" % replicas)


def test_failover_moves_the_primary_for_every_sentinel(
    healthy_sentinel_topology: SentinelTopology,
) -> None:
    topology = healthy_sentinel_topology
    old = topology.primary()
    _write_replicated(old, "before", "failover", replicas=2)
    new = topology.failover()
    assert new is not old
    assert [sentinel_names(s) for s in topology.sentinels] == [new.address] * 3
    assert role(new)[0] == "master"
    assert new.command("GET", "before") == "failover"
    # Settled: the old primary, still running at its address, is a replica now.
    assert topology.wait_healthy() is new
    assert role(old)[:3] == ["slave", "127.0.0.1", new.port]


def test_kill_primary_promotes_a_replica_and_the_old_one_returns_as_replica(
    healthy_sentinel_topology: SentinelTopology,
) -> None:
    topology = healthy_sentinel_topology
    old = topology.primary()
    _write_replicated(old, "before", "crash", replicas=2)
    new = topology.kill_primary()
    assert not old.running
    assert new is not old and role(new)[0] == "master"
    assert [sentinel_names(s) for s in topology.sentinels] == [new.address] * 3
    assert new.command("GET", "before") == "crash"

    topology.restart_node(old)
    assert role(old)[:3] == ["slave", "127.0.0.1", new.port]
    assert old.command("GET", "before") == "crash"  # resynced from the new primary
    for sentinel in topology.sentinels:
        seen = {int(r["port"]): r for r in sentinel.replicas_state()}[old.port]
        assert seen["flags"] == "slave" and seen["master-port"] == str(new.port)


def test_stopped_sentinel_resumes_with_its_own_state(
    healthy_sentinel_topology: SentinelTopology,
) -> None:
    topology = healthy_sentinel_topology
    sentinel = topology.sentinels[2]
    my_id = sentinel.command("SENTINEL", "MYID")
    primary = topology.primary()
    topology.stop_sentinel(2)
    assert not sentinel.running
    with pytest.raises(ConnectionRefusedError):
        sentinel.connect()
    assert [sentinel_names(s) for s in topology.sentinels[:2]] == [primary.address] * 2
    topology.start_sentinel(2)
    assert sentinel.command("SENTINEL", "MYID") == my_id  # its rewritten config was kept
    assert sentinel_names(sentinel) == primary.address
    assert sentinel.primary_state()["num-other-sentinels"] == "2"


def test_tls_sentinel_topology_speaks_only_tls(
    tls_sentinel_topology: SentinelTopology, tls_certs: TLSCertificates
) -> None:
    topology = tls_sentinel_topology
    for server in [*topology.nodes, *topology.sentinels]:
        assert server.port == 0 and server.tls_port is not None
    for node in topology.nodes:
        assert node.command("CONFIG", "GET", "port") == ["port", "0"]
    mutual = tls_certs.client_context(client=tls_certs.client)
    sentinel = topology.sentinels[0]
    assert sentinel.tls_port is not None
    assert tls_ping(sentinel.tls_port, mutual) == b"+PONG\r\n"
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        tls_ping(sentinel.tls_port, tls_certs.client_context())  # no client certificate
    # Sentinel hands out TLS ports: the primary's answers ROLE master over TLS.
    host, port = sentinel_names(sentinel)
    primary = topology.node_at((host, port))
    assert port == primary.tls_port
    with socket.create_connection((host, port), timeout=10) as raw:
        with mutual.wrap_socket(raw, server_hostname=host) as sock:
            sock.sendall(b"*1\r\n$4\r\nROLE\r\n")
            with sock.makefile("rb") as stream:
                assert read_reply(stream).startswith(b"*3\r\n$6\r\nmaster\r\n")
    # Replication itself runs over TLS: the nodes have no other port.
    for replica in topology.replicas():
        assert replica.info("replication")["master_port"] == str(primary.tls_port)
        assert replica.info("replication")["master_link_status"] == "up"
