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

TLS (session; certificates from ``openssl``, skipped without it):

``tls_certs``
    :class:`redis_cache.testing.TLSCertificates`: a CA, ``server`` (for
    localhost, 127.0.0.1, ::1), ``client``, a passphrase-protected client key,
    and ``wrong_ca``/``expired_server``/``other_name_server`` to be refused.
``tls_server``
    TLS port (``tls_port``, ``tls_url``) plus the plain port, which only the
    harness should use; client certificates not required.
``tls_only_server``
    TLS port only (``port`` is 0); the harness talks over the unix socket.
``tls_client_auth_server``
    TLS only, ``tls-auth-clients yes``: a client must present a certificate
    signed by the CA (``tls_certs.client``).
``tls_broken_servers``
    ``{"expired": ..., "wrong_ca": ..., "other_name": ...}``: TLS servers
    presenting a certificate a verifying client must refuse.

Replication and Sentinel (addresses are ``(host, port)`` on loopback):

``sentinel_topology`` (session)
    :class:`redis_cache.testing.SentinelTopology`: one primary, two
    replicas, three Sentinels watching :data:`SERVICE_NAME`; data nodes
    require :data:`PASSWORD`, Sentinels :data:`SENTINEL_PASSWORD`.  Shared by
    the whole session: a test that fails over, kills or stops anything must
    use ``healthy_sentinel_topology`` instead (or leave it healthy).
``healthy_sentinel_topology`` (function)
    The same topology, first brought back to health (stopped processes
    started, every Sentinel agreeing on a primary; whichever node that is)
    and emptied; healed again after the test.  Cheap when nothing changed.
``tls_sentinel_topology`` (session)
    Like ``sentinel_topology`` without passwords, every process TLS-only
    with ``tls-auth-clients yes``: clients need ``tls_certs.client``.
``sentinel_topology_factory`` (session)
    ``make(**kwargs) -> SentinelTopology`` (started) for other shapes.
``replication_group`` (function)
    A session-wide :class:`redis_cache.testing.ReplicationGroup` (primary +
    two replicas, no Sentinel, no password), healthy and empty, for the
    plain ``redis://`` case: ``demote_in_place()`` then ``promote(node)``.

Redis Cluster (session; about 2 s to start each, Redis keeps a new primary
out of service that long):

``cluster``
    :class:`redis_cache.testing.ClusterTopology`: three primaries with one
    replica each, no password.  Shared by the whole session: a test that
    migrates slots, fails over, kills or stops anything must use
    ``healthy_cluster`` instead (or leave it healthy).
``healthy_cluster`` (function)
    The same cluster, first brought back to health and to its starting slot
    layout (stopped nodes started, open slots finished, moved slots moved
    back; whichever node of a shard is primary) and emptied; healed again
    after the test.  Cheap when nothing changed (a few milliseconds).
``client_cluster`` / ``healthy_client_cluster``
    A second such cluster, for tests/test_cluster.py (failovers, kills and
    migrations under load), so that its history does not reach the tests of
    the cluster fixtures themselves.
``password_cluster``
    Like ``cluster`` with ``requirepass`` :data:`PASSWORD` on every node.
``tls_cluster``
    Like ``cluster``, every node TLS-only (client port, cluster bus and
    replication) with ``tls-auth-clients yes``: clients need
    ``tls_certs.client``.
``cluster_factory``
    ``make(**kwargs) -> ClusterTopology`` (started) for other shapes.

Tests needing a server are skipped, with a message saying why, when
``redis-server`` is not installed; tests that use none of these fixtures
still run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from redis_cache.testing import (
    ClusterTopology,
    RedisServer,
    ReplicationGroup,
    SentinelTopology,
    TLSCertificates,
    find_openssl,
    find_redis_server,
    generate_tls_certificates,
)

PASSWORD = "s3cret-pw"
ACL_USER = "alice"
ACL_PASSWORD = "alice-pw"
SERVICE_NAME = "mymaster"
SENTINEL_PASSWORD = "sentinel-pw"

ServerFactory = Callable[..., RedisServer]
TopologyFactory = Callable[..., SentinelTopology]
ClusterFactory = Callable[..., ClusterTopology]


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


# ------------------------------------------------------------------------ TLS


@pytest.fixture(scope="session")
def tls_certs(tmp_path_factory: pytest.TempPathFactory) -> TLSCertificates:
    """The session's test PKI (written once, about a quarter of a second)."""
    if find_openssl() is None:
        pytest.skip("the openssl command-line tool is not installed (it makes the certificates)")
    return generate_tls_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def tls_server(redis_server_factory: ServerFactory, tls_certs: TLSCertificates) -> RedisServer:
    """TLS on ``tls_port`` plus a plain port for the harness."""
    return redis_server_factory(tls=tls_certs.server_tls())


@pytest.fixture(scope="session")
def tls_only_server(
    redis_server_factory: ServerFactory, tls_certs: TLSCertificates
) -> RedisServer:
    """TLS on ``tls_port`` and nothing else over TCP."""
    return redis_server_factory(tls=tls_certs.server_tls(), plain_port=False)


@pytest.fixture(scope="session")
def tls_client_auth_server(
    redis_server_factory: ServerFactory, tls_certs: TLSCertificates
) -> RedisServer:
    """TLS only, and clients must present a certificate signed by the CA."""
    return redis_server_factory(
        tls=tls_certs.server_tls(auth_clients="yes"), plain_port=False
    )


@pytest.fixture(scope="session")
def tls_broken_servers(
    redis_server_factory: ServerFactory, tls_certs: TLSCertificates
) -> dict[str, RedisServer]:
    """Servers whose certificate a client verifying against ``tls_certs.ca``
    for ``127.0.0.1``/``localhost`` must refuse, by what is wrong with it."""
    broken = {
        "expired": tls_certs.expired_server,
        "wrong_ca": tls_certs.wrong_ca_server,
        "other_name": tls_certs.other_name_server,
    }
    return {
        reason: redis_server_factory(tls=tls_certs.server_tls(certificate))
        for reason, certificate in broken.items()
    }


# ------------------------------------------------------ replication, Sentinel


@pytest.fixture(scope="session")
def sentinel_topology_factory() -> Iterator[TopologyFactory]:
    """Start Sentinel topologies on demand; close them all at session end."""
    if find_redis_server() is None:
        pytest.skip("redis-server is not installed (not on PATH nor /usr/bin/redis-server)")
    topologies: list[SentinelTopology] = []

    def make(**kwargs: Any) -> SentinelTopology:
        topology = SentinelTopology(**kwargs)
        topologies.append(topology)
        return topology.start()

    yield make
    for topology in reversed(topologies):
        topology.close()


@pytest.fixture(scope="session")
def sentinel_topology(sentinel_topology_factory: TopologyFactory) -> SentinelTopology:
    """Primary, two replicas, three Sentinels; passwords on both kinds."""
    return sentinel_topology_factory(
        service_name=SERVICE_NAME, password=PASSWORD, sentinel_password=SENTINEL_PASSWORD
    )


@pytest.fixture
def healthy_sentinel_topology(sentinel_topology: SentinelTopology) -> Iterator[SentinelTopology]:
    """The session topology, healthy and empty; healed again afterwards."""
    sentinel_topology.ensure_healthy()
    sentinel_topology.flushall()
    yield sentinel_topology
    sentinel_topology.ensure_healthy()


@pytest.fixture(scope="session")
def tls_sentinel_topology(
    sentinel_topology_factory: TopologyFactory, tls_certs: TLSCertificates
) -> SentinelTopology:
    """Every node and Sentinel TLS-only, client certificates required."""
    return sentinel_topology_factory(
        service_name=SERVICE_NAME, tls=tls_certs, tls_auth_clients="yes"
    )


@pytest.fixture(scope="session")
def _replication_group_session() -> Iterator[ReplicationGroup]:
    if find_redis_server() is None:
        pytest.skip("redis-server is not installed (not on PATH nor /usr/bin/redis-server)")
    with ReplicationGroup(replicas=2) as group:
        yield group


@pytest.fixture
def replication_group(_replication_group_session: ReplicationGroup) -> ReplicationGroup:
    """A primary and two replicas (no Sentinel), healthy and empty."""
    _replication_group_session.ensure_healthy()
    _replication_group_session.flushall()
    return _replication_group_session


# ---------------------------------------------------------------- Redis Cluster


@pytest.fixture(scope="session")
def cluster_factory() -> Iterator[ClusterFactory]:
    """Start clusters on demand; close them all at session end."""
    if find_redis_server() is None:
        pytest.skip("redis-server is not installed (not on PATH nor /usr/bin/redis-server)")
    clusters: list[ClusterTopology] = []

    def make(**kwargs: Any) -> ClusterTopology:
        cluster = ClusterTopology(**kwargs)
        clusters.append(cluster)
        return cluster.start()

    yield make
    for cluster in reversed(clusters):
        cluster.close()


@pytest.fixture(scope="session")
def cluster(cluster_factory: ClusterFactory) -> ClusterTopology:
    """Three primaries, one replica each, no password."""
    return cluster_factory(primaries=3, replicas_per_primary=1)


@pytest.fixture
def healthy_cluster(cluster: ClusterTopology) -> Iterator[ClusterTopology]:
    """The session cluster, healthy, in its starting slot layout and empty;
    healed again afterwards."""
    cluster.ensure_healthy()
    cluster.flushall()
    yield cluster
    cluster.ensure_healthy()


@pytest.fixture(scope="session")
def client_cluster(cluster_factory: ClusterFactory) -> ClusterTopology:
    """A second cluster like ``cluster``, for tests/test_cluster.py, whose
    migrations, failovers and kills under load would otherwise leave the
    fixture tests' cluster with a long history (epochs, demoted primaries)
    that made their own failover-in-a-migration cases flaky."""
    return cluster_factory(primaries=3, replicas_per_primary=1)


@pytest.fixture
def healthy_client_cluster(client_cluster: ClusterTopology) -> Iterator[ClusterTopology]:
    """``client_cluster``, healthy, in its starting layout and empty."""
    client_cluster.ensure_healthy()
    client_cluster.flushall()
    yield client_cluster
    client_cluster.ensure_healthy()


@pytest.fixture(scope="session")
def password_cluster(cluster_factory: ClusterFactory) -> ClusterTopology:
    """Like ``cluster``, every node requiring :data:`PASSWORD`."""
    return cluster_factory(password=PASSWORD)


@pytest.fixture(scope="session")
def tls_cluster(cluster_factory: ClusterFactory, tls_certs: TLSCertificates) -> ClusterTopology:
    """Like ``cluster``, every node TLS-only, client certificates required."""
    return cluster_factory(tls=tls_certs, tls_auth_clients="yes")
