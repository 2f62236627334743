"""Tests of the Redis Cluster test infrastructure itself
(redis_cache._testing_cluster and the cluster fixtures in conftest.py).

Nothing here uses the cache (it has no cluster support yet): raw RESP over
sockets, Python's ``ssl`` module and the servers' own replies are the
clients, and the slot map is checked with ``CLUSTER SLOTS``, a different
command from the ``CLUSTER NODES`` the harness reads, so a failure points at
the harness.
"""

from __future__ import annotations

import random
import socket
import ssl
from collections.abc import Sequence

import pytest
import redis_cache._testing_cluster as testing_cluster
from conftest import PASSWORD
from lock_support import wait_until
from redis_cache.testing import (
    CLUSTER_SLOTS,
    ClusterNode,
    ClusterTopology,
    TLSCertificates,
    TopologyTimeoutError,
    find_redis_server,
    hash_tag_for_slot,
    key_slot,
    read_reply,
)

pytestmark = pytest.mark.skipif(
    find_redis_server() is None,
    reason="redis-server is not installed (not on PATH nor /usr/bin/redis-server)",
)

PING = b"*1\r\n$4\r\nPING\r\n"
STARTING_LAYOUT = [(0, 5460), (5461, 10922), (10923, 16383)]

#: ``(first, last, primary port, replica ports)`` per range of CLUSTER SLOTS.
SlotMap = list[tuple[int, int, int, tuple[int, ...]]]


def cluster_slots(node: ClusterNode) -> SlotMap:
    """``CLUSTER SLOTS`` as ``node`` answers it, sorted by first slot."""
    reply = node.command("CLUSTER", "SLOTS")
    assert isinstance(reply, list), reply
    ranges = []
    for item in reply:
        assert isinstance(item, list)
        first, last, primary, *replicas = item
        ports = tuple(sorted(int(str(r[1])) for r in replicas if isinstance(r, list)))
        assert isinstance(primary, list)
        ranges.append((int(str(first)), int(str(last)), int(str(primary[1])), ports))
    return sorted(ranges)


def owner_port(slot_map: SlotMap, slot: int) -> int:
    for first, last, port, _ in slot_map:
        if first <= slot <= last:
            return port
    raise AssertionError(f"slot {slot} is not in {slot_map}")


def redirect(kind: str, slot: int, node: ClusterNode) -> bytes:
    """The error reply that sends a client for ``slot`` to ``node``."""
    host, port = node.address
    return f"-{kind} {slot} {host}:{port}\r\n".encode()


def bulk(value: str) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value.encode()), value.encode())


def role(node: ClusterNode) -> Sequence[object]:
    reply = node.command("ROLE")
    assert isinstance(reply, list)
    return reply


def unbound_in_view(node: ClusterNode, slot: int) -> bool:
    """Whether ``node``'s own CLUSTER NODES names no owner for ``slot``."""
    return not any(
        view.is_primary and any(first <= slot <= last for first, last in view.slots)
        for view in node.cluster_nodes()
    )


def write_replicated(primary: ClusterNode, key: str, value: str) -> None:
    """SET on ``primary`` and WAIT for its one replica, on one connection."""
    assert primary.raw_pipeline(("SET", key, value), ("WAIT", 1, 10_000)) == [b"+OK\r\n", b":1\r\n"]


def tls_ping(port: int, context: ssl.SSLContext) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            sock.sendall(PING)
            with sock.makefile("rb") as stream:
                return read_reply(stream)


# ------------------------------------------------------------------ the map


def test_cluster_serves_every_slot_and_every_node_agrees(healthy_cluster: ClusterTopology) -> None:
    cluster = healthy_cluster
    maps = {}
    for node in cluster.nodes:
        info = str(node.command("CLUSTER", "INFO")).splitlines()
        for line in ("cluster_state:ok", "cluster_slots_assigned:16384", "cluster_slots_ok:16384",
                     "cluster_known_nodes:6", "cluster_size:3"):
            assert line in info, (node, line)
        maps[node.port] = cluster_slots(node)
    slot_map = maps[cluster.nodes[0].port]
    assert all(seen == slot_map for seen in maps.values()), maps
    # Contiguous, no overlap, every slot: the starting even ranges.
    assert [(first, last) for first, last, _, _ in slot_map] == STARTING_LAYOUT
    assert sum(last - first + 1 for first, last, _, _ in slot_map) == CLUSTER_SLOTS
    # Three primaries with one replica each, every node in exactly one place.
    ports = [port for *_, port, replicas in slot_map for port in (port, *replicas)]
    assert sorted(ports) == sorted(node.port for node in cluster.nodes)
    for first, _last, primary_port, replica_ports in slot_map:
        primary = cluster.node_at(("127.0.0.1", primary_port))
        assert len(replica_ports) == 1
        (replica,) = [cluster.node_at(("127.0.0.1", port)) for port in replica_ports]
        assert role(primary)[0] == "master"
        assert role(replica)[:4] == ["slave", "127.0.0.1", primary_port, "connected"]
        assert cluster.node_for_slot(first) is primary
        assert cluster.replicas_of(primary) == [replica]
    assert [node.port for node in cluster.primaries()] == [port for _, _, port, _ in slot_map]
    assert {node.port for node in cluster.replicas()} == {r for *_, rs in slot_map for r in rs}
    assert cluster.seed_addresses == [("127.0.0.1", node.port) for node in cluster.nodes]
    assert cluster.url == "redis+cluster://" + ",".join(
        f"127.0.0.1:{node.port}" for node in cluster.nodes
    )


EDGE_KEYS: list[str | bytes] = [
    "", "{}", "{}a", "a{}", "{{a}}", "a{b", "{b}c", "a}b{", "}{a}", "{a}{b}", "{", "}",
    "{ }", "a{b}c{d}", "{}{a}", "123456789", "user:1000", "{user1000}.following",
    "{user1000}.followers", "é", "日本語{日本}", b"\xff\xfe{\x00}", b"\x00", b"{\xff}tail",
]


def test_slot_of_matches_cluster_keyslot(cluster: ClusterTopology) -> None:
    rng = random.Random(12)
    alphabet = b"ab{}:\x00\xff"
    keys = EDGE_KEYS + [
        bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 12))) for _ in range(300)
    ]
    node = cluster.nodes[0]
    replies = node.raw_pipeline(*[("CLUSTER", "KEYSLOT", key) for key in keys])
    server = [int(reply[1:-2]) for reply in replies]
    ours = [cluster.slot_of(key) for key in keys]
    wrong = [(key, mine, theirs) for key, mine, theirs in zip(keys, ours, server) if mine != theirs]
    assert wrong == []
    # What the edge cases mean: only a non-empty first {...} is hashed.
    assert key_slot("123456789") == 0x31C3 % CLUSTER_SLOTS  # CRC16/XMODEM check value
    assert key_slot("{{a}}") == key_slot("{a")
    assert key_slot("{b}c") == key_slot("b")
    assert key_slot("{}") != key_slot("") and key_slot("a{b") != key_slot("b")
    assert key_slot("{user1000}.following") == key_slot("{user1000}.followers")
    # Keys made for a slot land there, by the server's own count.
    edges = [0, 1, 5460, 5461, 10922, 10923, CLUSTER_SLOTS - 1]
    slots = edges + rng.sample(range(CLUSTER_SLOTS), 20)
    made = [cluster.key_in_slot(slot, "x") for slot in slots]
    replies = node.raw_pipeline(*[("CLUSTER", "KEYSLOT", key) for key in made])
    assert [int(reply[1:-2]) for reply in replies] == slots
    assert made[0] == "{" + hash_tag_for_slot(0) + "}x"
    with pytest.raises(ValueError):
        hash_tag_for_slot(CLUSTER_SLOTS)


def test_key_written_on_its_owner_is_read_back_there(healthy_cluster: ClusterTopology) -> None:
    cluster = healthy_cluster
    primaries = cluster.primaries()
    owners_used = set()
    for index in range(30):
        key, value = f"user:{index}", f"value-{index}"
        slot = key_slot(key)
        owner = cluster.owner(key)
        owners_used.add(owner.port)
        write_replicated(owner, key, value)
        assert owner.raw_command("GET", key) == bulk(value)
        for other in primaries:
            if other is not owner:
                assert other.raw_command("GET", key) == redirect("MOVED", slot, owner)
        (replica,) = cluster.replicas_of(owner)
        assert replica.raw_command("GET", key) == redirect("MOVED", slot, owner)
        assert replica.raw_pipeline(("READONLY",), ("GET", key)) == [b"+OK\r\n", bulk(value)]
    assert owners_used == {node.port for node in primaries}


# --------------------------------------------------------------- migration


def test_half_done_migration_asks_and_the_target_accepts_after_asking(
    healthy_cluster: ClusterTopology,
) -> None:
    cluster = healthy_cluster
    slot = 1234
    source = cluster.node_for_slot(slot)
    target = next(node for node in cluster.primaries() if node is not source)
    keys = [cluster.key_in_slot(slot, f"k{i}") for i in range(2)]
    for key in keys:
        assert source.raw_command("SET", key, f"v-{key}") == b"+OK\r\n"

    migration = cluster.migrate_slot(slot, target, finish=False, keys_to_move=1)
    assert (migration.keys_moved, migration.keys_left(), migration.done) == (1, 1, False)
    assert f"[{slot}->-{target.node_id}]" in str(source.command("CLUSTER", "NODES"))
    assert f"[{slot}-<-{source.node_id}]" in str(target.command("CLUSTER", "NODES"))
    replies = {key: source.raw_command("GET", key) for key in keys}
    ask = redirect("ASK", slot, target)
    (moved,) = [key for key in keys if replies[key] == ask]
    (stayed,) = [key for key in keys if key != moved]
    assert replies[stayed] == bulk(f"v-{stayed}")  # still on the source: served there
    # The target serves the moved key only to a client that says ASKING.
    assert target.raw_command("GET", moved) == redirect("MOVED", slot, source)
    assert target.raw_pipeline(("ASKING",), ("GET", moved)) == [b"+OK\r\n", bulk(f"v-{moved}")]
    # A new key of the open slot is created on the target.
    new = cluster.key_in_slot(slot, "new")
    assert source.raw_command("SET", new, "fresh") == ask
    assert target.raw_pipeline(("ASKING",), ("SET", new, "fresh")) == [b"+OK\r\n", b"+OK\r\n"]

    migration.finish()
    assert migration.done and migration.keys_moved == 2
    assert cluster.node_for_slot(slot) is target
    for key, value in [*((key, f"v-{key}") for key in keys), (new, "fresh")]:
        assert source.raw_command("GET", key) == redirect("MOVED", slot, target)
        assert target.raw_command("GET", key) == bulk(value)
    assert "->-" not in str(source.command("CLUSTER", "NODES"))
    assert "-<-" not in str(target.command("CLUSTER", "NODES"))


def test_finished_migration_moves_every_key_and_the_old_owner_says_moved(
    healthy_cluster: ClusterTopology,
) -> None:
    cluster = healthy_cluster
    slot = 7000
    source = cluster.node_for_slot(slot)
    target = next(node for node in cluster.primaries() if node is not source)
    keys = [cluster.key_in_slot(slot, f"item:{i}") for i in range(250)]
    source.command("MSET", *[part for key in keys for part in (key, key.upper())])

    migration = cluster.migrate_slot(slot, target, keys_batch=100)
    assert migration.done and migration.keys_moved == 250
    assert source.command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
    assert target.command("MGET", *keys) == [key.upper() for key in keys]
    assert source.raw_command("GET", keys[0]) == redirect("MOVED", slot, target)
    for node in cluster.nodes:  # replicas included: the whole cluster knows
        slot_map = cluster_slots(node)
        assert owner_port(slot_map, slot) == target.port, node
        assert owner_port(slot_map, slot - 1) == source.port
        assert owner_port(slot_map, slot + 1) == source.port

    # ensure_healthy moves it home again, keys and all.
    cluster.ensure_healthy()
    assert cluster.node_for_slot(slot) is source
    assert source.command("MGET", *keys) == [key.upper() for key in keys]
    assert [(first, last) for first, last, *_ in cluster_slots(cluster.nodes[0])] == STARTING_LAYOUT


def test_ensure_healthy_finishes_open_slots_and_starts_stopped_nodes(
    healthy_cluster: ClusterTopology,
) -> None:
    cluster = healthy_cluster
    slot = 9000
    source = cluster.node_for_slot(slot)
    target = next(node for node in cluster.primaries() if node is not source)
    key = cluster.key_in_slot(slot)
    assert source.raw_command("SET", key, "kept") == b"+OK\r\n"
    cluster.migrate_slot(slot, target, finish=False, keys_to_move=0)
    open_slot = rf"has open slots: {slot} (migrating to|importing from) <ClusterNode"
    with pytest.raises(TopologyTimeoutError, match=open_slot):
        cluster.wait_healthy(timeout=0.2)
    replica = cluster.replicas()[0]
    replica.stop()

    cluster.ensure_healthy()
    assert replica.running and role(replica)[0] == "slave"
    for node in cluster.nodes:
        text = str(node.command("CLUSTER", "NODES"))
        assert "->-" not in text and "-<-" not in text, node
    assert cluster.node_for_slot(slot) is source
    assert source.raw_command("GET", key) == bulk("kept")


def test_ensure_healthy_repairs_a_failover_in_the_middle_of_a_migration(
    healthy_cluster: ClusterTopology,
) -> None:
    # The new primary knows nothing of the open slot (MIGRATING is not
    # replicated) and, with Redis 7.0, the importing node drops the slot.
    cluster = healthy_cluster
    slot = 10
    source = cluster.node_for_slot(slot)
    target = next(node for node in cluster.primaries() if node is not source)
    keys = [cluster.key_in_slot(slot, name) for name in ("a", "b", "c")]
    for key in keys:
        write_replicated(source, key, key * 2)
    cluster.migrate_slot(slot, target, finish=False, keys_to_move=1)
    (replica,) = cluster.replicas_of(source)
    assert cluster.failover(replica) is replica
    assert "->-" not in str(replica.command("CLUSTER", "NODES"))
    # The target ignores the new primary's claim on the slot it imports and
    # drops the slot with the old primary's once that one turns replica;
    # ensure_healthy must bind it again before it can migrate into it.
    wait_until(
        lambda: unbound_in_view(target, slot),
        f"{target!r} to see slot {slot} unbound",
    )

    cluster.ensure_healthy()
    assert cluster.node_for_slot(slot) is replica  # home shard, its current primary
    assert replica.command("MGET", *keys) == [key * 2 for key in keys]
    for node in cluster.nodes:
        text = str(node.command("CLUSTER", "NODES"))
        assert "->-" not in text and "-<-" not in text, node
        assert owner_port(cluster_slots(node), slot) == replica.port, node


# ---------------------------------------------------------------- failures


def test_failover_promotes_the_replica(healthy_cluster: ClusterTopology) -> None:
    cluster = healthy_cluster
    old = cluster.primaries()[0]
    (replica,) = cluster.replicas_of(old)
    key = cluster.key_in_slot(0, "before")
    write_replicated(old, key, "failover")

    assert cluster.failover(replica) is replica
    for node in cluster.nodes:
        assert owner_port(cluster_slots(node), 0) == replica.port, node
    assert role(replica)[0] == "master"
    assert replica.raw_command("GET", key) == bulk("failover")
    cluster.wait_healthy()
    assert role(old)[:4] == ["slave", "127.0.0.1", replica.port, "connected"]
    assert cluster.replicas_of(replica) == [old]


def test_failover_right_back_after_the_new_primary_changed_epoch(
    healthy_cluster: ClusterTopology,
) -> None:
    # A manual failover asked within the election retry time of the same
    # replica's last election would reuse that election's stale epoch; once
    # the primary has moved to a newer epoch (here: by importing a slot) the
    # replica would lose the conflict and turn back into a replica.
    cluster = healthy_cluster
    old = cluster.primaries()[2]
    (replica,) = cluster.replicas_of(old)
    assert cluster.failover(replica) is replica
    assert cluster.failover(old) is old
    other = cluster.primaries()[0]
    cluster.migrate_slot(0, old)  # bumps old's config epoch
    cluster.migrate_slot(0, other)
    assert cluster.failover(replica) is replica
    for node in cluster.nodes:
        assert owner_port(cluster_slots(node), 16383) == replica.port, node


def test_kill_primary_promotes_its_replica_and_restart_brings_it_back_as_replica(
    healthy_cluster: ClusterTopology,
) -> None:
    cluster = healthy_cluster
    old = cluster.primaries()[1]
    old_id = old.node_id
    (replica,) = cluster.replicas_of(old)
    key = cluster.key_in_slot(6000)
    assert cluster.owner(key) is old
    write_replicated(old, key, "crash")

    new = cluster.kill_primary(old)
    assert new is replica and not old.running
    for node in cluster.nodes:
        if node.running:
            assert "cluster_state:ok" in str(node.command("CLUSTER", "INFO")).splitlines()
            assert owner_port(cluster_slots(node), 6000) == new.port, node
    assert new.raw_command("GET", key) == bulk("crash")

    cluster.restart_node(old)
    assert old.command("CLUSTER", "MYID") == old_id  # nodes.conf kept its identity
    assert role(old)[:4] == ["slave", "127.0.0.1", new.port, "connected"]
    assert old.raw_pipeline(("READONLY",), ("GET", key)) == [b"+OK\r\n", bulk("crash")]


# ---------------------------------------------------------- TLS, passwords


def test_tls_cluster_refuses_plaintext_and_clients_without_a_certificate(
    tls_cluster: ClusterTopology, tls_certs: TLSCertificates
) -> None:
    mutual = tls_certs.client_context(client=tls_certs.client)
    for node in tls_cluster.nodes:
        assert node.port == 0 and node.tls_port is not None
        assert node.command("CONFIG", "GET", "tls-cluster") == ["tls-cluster", "yes"]
        assert tls_ping(node.tls_port, mutual) == b"+PONG\r\n"
        # The cluster bus speaks TLS too: the handshake with our certificate succeeds.
        with socket.create_connection(("127.0.0.1", node.bus_port), timeout=10) as raw:
            with mutual.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
                assert sock.version() in ("TLSv1.2", "TLSv1.3")
    node = tls_cluster.nodes[0]
    assert node.tls_port is not None
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        reply = tls_ping(node.tls_port, tls_certs.client_context())  # no client certificate
        pytest.fail(f"a client without a certificate got {reply!r}")
    with socket.create_connection(("127.0.0.1", node.tls_port), timeout=10) as sock:
        sock.sendall(PING)
        received = b""
        try:
            while chunk := sock.recv(4096):
                received += chunk
        except ConnectionResetError:
            pass
    assert b"PONG" not in received
    # What a client discovers over TLS names the TLS ports.
    with socket.create_connection(("127.0.0.1", node.tls_port), timeout=10) as raw:
        with mutual.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            sock.sendall(b"*2\r\n$7\r\nCLUSTER\r\n$5\r\nSLOTS\r\n")
            with sock.makefile("rb") as stream:
                slots_reply = read_reply(stream)
    for other in tls_cluster.nodes:
        assert b":%d\r\n" % other.address[1] in slots_reply
    assert tls_cluster.url.startswith("rediss+cluster://127.0.0.1:")


def test_password_cluster_refuses_clients_without_auth(password_cluster: ClusterTopology) -> None:
    for node in password_cluster.nodes:
        assert node.raw_command("PING", auth=False).startswith(b"-NOAUTH")
        assert node.raw_command("AUTH", "wrong", auth=False).startswith(b"-WRONGPASS")
        assert node.raw_command("PING") == b"+PONG\r\n"
    for replica in password_cluster.replicas():  # masterauth: replication logs in
        assert replica.info("replication")["master_link_status"] == "up"
    assert password_cluster.url.startswith(f"redis+cluster://:{PASSWORD}@127.0.0.1:")
    # MIGRATE logs in to the target too.
    slot = 42
    source = password_cluster.node_for_slot(slot)
    target = next(node for node in password_cluster.primaries() if node is not source)
    key = password_cluster.key_in_slot(slot)
    assert source.raw_command("SET", key, "secret") == b"+OK\r\n"
    try:
        assert password_cluster.migrate_slot(slot, target).keys_moved == 1
        assert target.raw_command("GET", key) == bulk("secret")
    finally:
        password_cluster.ensure_healthy()
    assert password_cluster.node_for_slot(slot) is source
    assert source.raw_command("GET", key) == bulk("secret")
    assert source.raw_command("DEL", key) == b":1\r\n"


# ------------------------------------------------------------------ harness


def test_bus_port_collision_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        fresh = iter([taken, testing_cluster.free_port()])
        monkeypatch.setattr(testing_cluster, "free_port", lambda: next(fresh))
        node = ClusterNode()
        try:
            assert node.bus_port == taken
            node.start()
            assert node.bus_port != taken
            reply = node.command("CONFIG", "GET", "cluster-port")
            assert reply == ["cluster-port", str(node.bus_port)]
        finally:
            node.close()


def test_bad_requests_are_refused_before_anything_changes(cluster: ClusterTopology) -> None:
    with pytest.raises(ValueError, match="at least one primary"):
        ClusterTopology(primaries=0)
    with pytest.raises(ValueError, match="cluster directives"):
        ClusterNode(extra_config={"cluster-port": 1})
    owner = cluster.node_for_slot(0)
    with pytest.raises(ValueError, match="already owns"):
        cluster.migrate_slot(0, owner)
    with pytest.raises(ValueError, match="not a primary"):
        cluster.migrate_slot(0, cluster.replicas()[-1])
    with pytest.raises(ValueError, match="is not a replica"):
        cluster.failover(owner)
    with pytest.raises(ValueError, match="keys_to_move"):
        cluster.migrate_slot(0, cluster.primaries()[1], keys_to_move=1)
    assert cluster.node_for_slot(0) is owner
