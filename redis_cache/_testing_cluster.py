"""Redis Cluster topologies of private ``redis-server`` processes.

:class:`ClusterTopology` starts ``primaries`` primaries with
``replicas_per_primary`` replicas each (``cluster-enabled yes``, one
:class:`ClusterNode` per process), assigns the 16384 slots in even ranges
and returns once every node says ``cluster_state:ok`` and every node sees
the same slot map and the same roles.  The test then moves slots
(:meth:`~ClusterTopology.migrate_slot`, which can stop half-way so ASK
redirects can be observed), fails over (:meth:`~ClusterTopology.failover`),
kills primaries (:meth:`~ClusterTopology.kill_primary`), restarts nodes
(:meth:`~ClusterTopology.restart_node`), and each call returns once the
nodes themselves report the change done.  :meth:`~ClusterTopology.ensure_healthy`
puts things back between tests.

The cluster is built with ``CLUSTER ADDSLOTSRANGE``, ``SET-CONFIG-EPOCH``,
``MEET`` and ``REPLICATE`` rather than ``redis-cli --cluster create``: both
take the same time (about 2 s, set by Redis itself, which keeps a freshly
started primary out of service for ``CLUSTER_WRITABLE_DELAY``, 2 s), but
this way every step's reply is checked, the layout is ours (replicas of
``nodes[i]`` are known in advance) and nothing parses redis-cli's output.

Every wait polls server state under a deadline (never a fixed sleep) and
fails with :class:`TopologyTimeoutError` describing what it last saw.
:func:`key_slot` computes a key's slot in pure Python (CRC16/XMODEM of the
key, or of its ``{hash tag}``), as a cluster client must.

Re-exported by :mod:`redis_cache.testing`; import the names from there.
"""

from __future__ import annotations

import bisect
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ._testing_sentinel import (
    Address,
    _close_replicas_first,
    _flush_and_wait,
    _node_config,
    _NotYet,
    _wait_until,
)
from ._testing_tls import AuthClients, TLSCertificates
from .testing import (
    ConfigValue,
    RedisServer,
    RedisServerError,
    _config_quote,
    decode_reply,
    free_port,
)

__all__ = [
    "CLUSTER_SLOTS",
    "ClusterNode",
    "ClusterNodeView",
    "ClusterTopology",
    "SlotMigration",
    "hash_tag_for_slot",
    "key_slot",
]

#: Hash slots in a Redis Cluster.
CLUSTER_SLOTS = 16384

#: Directives a :class:`ClusterNode` owns (its identity and bus address).
_CLUSTER_RESERVED = frozenset(
    {"cluster-enabled", "cluster-config-file", "cluster-port", "cluster-node-timeout"}
)

#: Flags that mean a running node is not (yet) a settled member.
_UNSETTLED_FLAGS = frozenset({"fail", "fail?", "pfail", "handshake", "noaddr"})

#: How long one MIGRATE may take on the server side (milliseconds).
MIGRATE_TIMEOUT_MS = 10_000


# ---------------------------------------------------------------------- slots


def _crc16_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC16_TABLE = _crc16_table()


def _crc16(data: bytes) -> int:
    """CRC16/XMODEM (polynomial 0x1021, initial value 0): Redis Cluster's hash."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16_TABLE[((crc >> 8) ^ byte) & 0xFF]
    return crc


def _key_bytes(key: str | bytes) -> bytes:
    # surrogateescape: keys that decode_reply read from a server round-trip.
    return key.encode("utf-8", "surrogateescape") if isinstance(key, str) else bytes(key)


def key_slot(key: str | bytes) -> int:
    """The hash slot of ``key``, as ``CLUSTER KEYSLOT`` computes it.

    Only the part between the first ``{`` and the first ``}`` after it is
    hashed, when that part is not empty; otherwise the whole key is.  A
    ``str`` key is hashed as its UTF-8 bytes.
    """
    data = _key_bytes(key)
    start = data.find(b"{")
    if start != -1:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1 : end]
    return _crc16(data) % CLUSTER_SLOTS


# Tags found so far by hash_tag_for_slot, and the next number to try: the
# search continues where it stopped, so the whole table costs at most one
# pass (about 170,000 CRCs) however many slots are asked for.
_tags_by_slot: dict[int, str] = {}
_next_tag = 0


def hash_tag_for_slot(slot: int) -> str:
    """A short tag (decimal digits) whose key ``{tag}...`` lives in ``slot``."""
    global _next_tag
    if not 0 <= slot < CLUSTER_SLOTS:
        raise ValueError(f"slot must be in 0..{CLUSTER_SLOTS - 1}, not {slot}")
    while slot not in _tags_by_slot:
        tag = str(_next_tag)
        _next_tag += 1
        _tags_by_slot.setdefault(_crc16(tag.encode()) % CLUSTER_SLOTS, tag)
    return _tags_by_slot[slot]


def _even_ranges(count: int) -> list[tuple[int, int]]:
    """Split the slots into ``count`` contiguous ranges as redis-cli does."""
    per_node = CLUSTER_SLOTS / count
    ranges = []
    first = 0
    cursor = 0.0
    for index in range(count):
        last = round(cursor + per_node - 1)
        if last > CLUSTER_SLOTS - 1 or index == count - 1:
            last = CLUSTER_SLOTS - 1
        ranges.append((first, last))
        first = last + 1
        cursor += per_node
    return ranges


# ---------------------------------------------------------------- node views


@dataclass(frozen=True)
class ClusterNodeView:
    """One line of ``CLUSTER NODES``: how the asked node sees one node.

    ``slots`` are inclusive ``(first, last)`` ranges.  ``migrating`` maps a
    slot to the node id it is being moved to, ``importing`` to the node id
    it comes from; Redis lists both on the asked node's own line only.
    """

    node_id: str
    host: str
    port: int
    bus_port: int
    flags: frozenset[str]
    primary_id: str | None
    config_epoch: int
    link_state: str
    slots: tuple[tuple[int, int], ...]
    migrating: Mapping[int, str] = field(default_factory=dict, hash=False)
    importing: Mapping[int, str] = field(default_factory=dict, hash=False)

    @property
    def myself(self) -> bool:
        return "myself" in self.flags

    @property
    def is_primary(self) -> bool:
        return "master" in self.flags

    @classmethod
    def parse(cls, line: str) -> ClusterNodeView:
        fields = line.split()
        if len(fields) < 8:
            raise RedisServerError(f"unexpected CLUSTER NODES line: {line!r}")
        node_id, address, flags, primary, _ping, _pong, epoch, link, *slot_fields = fields
        hostport, _, bus = address.partition("@")
        host, _, port = hostport.rpartition(":")
        slots: list[tuple[int, int]] = []
        migrating: dict[int, str] = {}
        importing: dict[int, str] = {}
        for item in slot_fields:
            if item.startswith("["):
                slot, arrow, other = item[1:-1].partition("-")
                if arrow and other.startswith(">-"):
                    migrating[int(slot)] = other[2:]
                elif arrow and other.startswith("<-"):
                    importing[int(slot)] = other[2:]
                continue
            first, _, last = item.partition("-")
            slots.append((int(first), int(last or first)))
        return cls(
            node_id=node_id,
            host=host,
            port=int(port or 0),
            bus_port=int(bus.split(",")[0] or 0),
            flags=frozenset(flags.split(",")),
            primary_id=None if primary == "-" else primary,
            config_epoch=int(epoch),
            link_state=link,
            slots=tuple(slots),
            migrating=migrating,
            importing=importing,
        )


def _parse_cluster_nodes(text: object) -> list[ClusterNodeView]:
    if not isinstance(text, str):
        raise RedisServerError(f"CLUSTER NODES replied {text!r}")
    return [ClusterNodeView.parse(line) for line in text.splitlines() if line.strip()]


def _parse_fields(text: object, what: str) -> dict[str, str]:
    """``field:value`` lines (CLUSTER INFO, INFO) as a dict."""
    if not isinstance(text, str):
        raise RedisServerError(f"{what} replied {text!r}")
    fields: dict[str, str] = {}
    for line in text.splitlines():
        name, colon, value = line.partition(":")
        if colon and not name.startswith("#"):
            fields[name] = value
    return fields


def _parse_cluster_slots(reply: object) -> list[tuple[int, int, int, frozenset[int]]]:
    """``CLUSTER SLOTS`` as ``(first, last, primary port, replica ports)``, sorted."""
    if not isinstance(reply, list):
        raise RedisServerError(f"CLUSTER SLOTS replied {reply!r}")
    ranges = []
    for item in reply:
        if not isinstance(item, list) or len(item) < 3 or not isinstance(item[2], list):
            raise RedisServerError(f"unexpected CLUSTER SLOTS entry {item!r}")
        first, last, primary, *replicas = item
        ports = frozenset(int(str(r[1])) for r in replicas if isinstance(r, list))
        ranges.append((int(str(first)), int(str(last)), int(str(primary[1])), ports))
    return sorted(ranges)


def _merged(ranges: Iterable[tuple[int, int, Any]]) -> list[tuple[int, int, Any]]:
    """Sorted ranges with adjacent ranges of the same owner joined."""
    out: list[tuple[int, int, Any]] = []
    for first, last, owner in sorted(ranges):
        if out and out[-1][2] == owner and out[-1][1] + 1 == first:
            out[-1] = (out[-1][0], last, owner)
        else:
            out.append((first, last, owner))
    return out


def _decoded(raw: bytes) -> Any:
    """Decode one raw reply; an error reply raises :class:`RedisReplyError`."""
    reply = decode_reply(raw)
    if isinstance(reply, Exception):
        raise reply  # RedisReplyError: _wait_until treats it as "not yet"
    return reply


# ---------------------------------------------------------------------- nodes


class ClusterNode(RedisServer):
    """One ``redis-server`` with ``cluster-enabled yes``.

    Besides its client port it listens on :attr:`bus_port` (``cluster-port``,
    picked free: the default, port + 10000, overflows for ephemeral ports).
    Its cluster state (``nodes.conf``) lives in its private directory and
    survives :meth:`stop`/:meth:`kill` and :meth:`start`, so a restarted node
    keeps its :attr:`node_id` and rejoins the cluster as a real one does;
    its data does not survive (persistence is off).
    """

    def __init__(
        self,
        *,
        node_timeout_ms: int = 1000,
        bus_port: int | None = None,
        extra_config: Mapping[str, ConfigValue] | None = None,
        **kwargs: Any,
    ) -> None:
        """:param node_timeout_ms: ``cluster-node-timeout``.
        :param bus_port: fixed cluster bus port; ``None`` picks a free one.
        Other keywords as for :class:`RedisServer`."""
        reserved = sorted(key for key in extra_config or {} if key.lower() in _CLUSTER_RESERVED)
        if reserved:
            raise ValueError(f"extra_config may not override cluster directives: {reserved}")
        self._auto_bus_port = bus_port is None
        #: The cluster bus port (``cluster-port``).
        self.bus_port: int = bus_port or 0
        self.node_timeout_ms = node_timeout_ms
        self._node_id: str | None = None
        super().__init__(extra_config=extra_config, **kwargs)
        self._ports_are_provisional = self._ports_are_provisional or self._auto_bus_port

    def _pick_ports(self) -> None:
        super()._pick_ports()
        if self._auto_bus_port:
            self.bus_port = free_port()
            while self.bus_port in (self.port, self.tls_port):
                self.bus_port = free_port()

    def _config_text(self) -> str:
        lines = [
            "cluster-enabled yes",
            f"cluster-config-file {_config_quote(self.nodes_conf_path)}",
            f"cluster-port {self.bus_port}",
            f"cluster-node-timeout {self.node_timeout_ms}",
        ]
        return super()._config_text() + "\n".join(lines) + "\n"

    @property
    def nodes_conf_path(self) -> str:
        """Where the node keeps its cluster state (``cluster-config-file``)."""
        return os.path.join(self.dir, "nodes.conf")

    @property
    def node_id(self) -> str:
        """``CLUSTER MYID``; asked once (the id lives in ``nodes.conf``)."""
        if self._node_id is None:
            reply = self.command("CLUSTER", "MYID")
            if not isinstance(reply, str) or len(reply) != 40:
                raise RedisServerError(f"{self!r}: CLUSTER MYID replied {reply!r}")
            self._node_id = reply
        return self._node_id

    def cluster_info(self) -> dict[str, str]:
        """``CLUSTER INFO`` as a dict (``cluster_state``, ``cluster_slots_ok`` ...)."""
        return _parse_fields(self.command("CLUSTER", "INFO"), "CLUSTER INFO")

    def cluster_nodes(self) -> list[ClusterNodeView]:
        """``CLUSTER NODES``, parsed: this node's view of every node it knows."""
        return _parse_cluster_nodes(self.command("CLUSTER", "NODES"))

    def myself(self) -> ClusterNodeView:
        """This node's own line of ``CLUSTER NODES`` (role, slots, open slots)."""
        for view in self.cluster_nodes():
            if view.myself:
                return view
        raise RedisServerError(f"{self!r}: CLUSTER NODES has no 'myself' line")

    def __repr__(self) -> str:
        text = super().__repr__()
        return f"{text[:-1]} id={self._node_id[:8]}>" if self._node_id else text


# ------------------------------------------------------------- cluster state


@dataclass
class _NodeState:
    """What one running node said in one polling round."""

    node: ClusterNode
    info: dict[str, str]
    views: list[ClusterNodeView]
    replication: dict[str, str]
    #: ``CLUSTER SLOTS``: ``(first, last, primary port, replica ports)``.
    client_slots: list[tuple[int, int, int, frozenset[int]]]

    @property
    def myself(self) -> ClusterNodeView:
        for view in self.views:
            if view.myself:
                return view
        raise RedisServerError(f"{self.node!r}: CLUSTER NODES has no 'myself' line")


@dataclass(frozen=True)
class _Agreed:
    """The slot map and roles every running node agrees on."""

    #: Sorted ``(first, last, owner id)`` ranges.
    ranges: tuple[tuple[int, int, str], ...]
    #: Running node id -> its primary's id (``None`` for a primary).
    roles: Mapping[str, str | None]
    states: Sequence[_NodeState]

    def owner_id(self, slot: int) -> str | None:
        index = bisect.bisect_right(self.ranges, (slot, CLUSTER_SLOTS, "")) - 1
        if index >= 0:
            first, last, owner = self.ranges[index]
            if first <= slot <= last:
                return owner
        return None


def _summary(views: Sequence[ClusterNodeView], running_ids: Iterable[str]) -> tuple[Any, Any]:
    """The comparable part of one node's view: slot ranges and running roles."""
    running = set(running_ids)
    ranges = tuple(
        sorted(
            (first, last, view.node_id)
            for view in views
            if view.is_primary
            for first, last in view.slots
        )
    )
    roles = {
        view.node_id: view.primary_id if not view.is_primary else None
        for view in views
        if view.node_id in running
    }
    return ranges, roles


def _owner_in_view(views: Sequence[ClusterNodeView], slot: int) -> ClusterNodeView | None:
    for view in views:
        if view.is_primary and any(first <= slot <= last for first, last in view.slots):
            return view
    return None


def _claimant(states: Sequence[_NodeState], slot: int) -> ClusterNode | None:
    """The running primary that claims ``slot`` itself with the highest
    config epoch (who Redis lets win a conflict), if any does."""
    claims = [
        (state.myself.config_epoch, index, state.node)
        for index, state in enumerate(states)
        if state.myself.is_primary
        and any(first <= slot <= last for first, last in state.myself.slots)
    ]
    return max(claims)[2] if claims else None


def _bind_slot_on_target(
    states: Sequence[_NodeState], slot: int, source: ClusterNode, target: ClusterNode
) -> None:
    """Make ``target`` name ``source`` as the owner of ``slot`` before it
    imports from it.

    After a failover in the middle of a migration (Redis 7.0), the importing
    node ignores the new primary's claim on the slot it imports and then
    drops the slot with the old primary's when that one turns replica: the
    slot is unbound there for good, and every MIGRATE into it fails with
    "CLUSTERDOWN Hash slot not served".  ``SETSLOT NODE`` binds it again and
    leaves the importing state alone.
    """
    view = next(state for state in states if state.node is target)
    owner = _owner_in_view(view.views, slot)
    if owner is None or owner.node_id not in (source.node_id, target.node_id):
        _expect_ok(target, "CLUSTER", "SETSLOT", slot, "NODE", source.node_id)


def _promotion_missing(
    states: Sequence[_NodeState], node: ClusterNode, slots: Sequence[int]
) -> str | None:
    """Why some running node does not (yet) see ``node`` as a healthy primary
    owning ``slots``; ``None`` when every one does."""
    for state in states:
        seen = next((view for view in state.views if view.node_id == node.node_id), None)
        if seen is None or not seen.is_primary or seen.flags & _UNSETTLED_FLAGS:
            flags = ",".join(sorted(seen.flags)) if seen else "unknown"
            return f"{state.node!r} sees {node!r} as {flags}"
        for slot in slots:
            owner = _owner_in_view(state.views, slot)
            if owner is None or owner.node_id != node.node_id:
                holder = owner.node_id[:8] if owner else "nobody"
                return f"{state.node!r} sees slot {slot} owned by {holder}, not {node!r}"
    return None


def _difference(first: tuple[Any, Any], second: tuple[Any, Any]) -> str:
    """A short description of how two summaries differ."""
    if first[0] != second[0]:
        only_first = sorted(set(first[0]) - set(second[0]))[:3]
        only_second = sorted(set(second[0]) - set(first[0]))[:3]
        return f"slot ranges {only_first} versus {only_second}"
    changed = {
        node_id[:8]: (first[1].get(node_id), second[1].get(node_id))
        for node_id in set(first[1]) | set(second[1])
        if first[1].get(node_id) != second[1].get(node_id)
    }
    return f"roles (node: primary ids) {changed}"


# ------------------------------------------------------------------ migration


class SlotMigration:
    """One slot being moved from :attr:`source` to :attr:`target`.

    Made by :meth:`ClusterTopology.migrate_slot`.  While it is open the
    source is ``MIGRATING`` and the target ``IMPORTING`` the slot: the source
    answers ``-ASK`` for keys of the slot it no longer holds, and the target
    serves them after ``ASKING``.  :meth:`finish` completes it.
    """

    def __init__(
        self,
        cluster: ClusterTopology,
        slot: int,
        source: ClusterNode,
        target: ClusterNode,
        keys_batch: int,
    ) -> None:
        self.cluster = cluster
        self.slot = slot
        self.source = source
        self.target = target
        self.keys_batch = keys_batch
        #: Keys handed to MIGRATE so far (one deleted since GETKEYSINSLOT
        #: listed it still counts).
        self.keys_moved = 0
        self.done = False

    def __repr__(self) -> str:
        state = "done" if self.done else "open"
        return (
            f"<SlotMigration slot {self.slot} {self.source.address} -> "
            f"{self.target.address} {state}, {self.keys_moved} keys moved>"
        )

    def keys_left(self) -> int:
        """Keys of the slot still on the source (``CLUSTER COUNTKEYSINSLOT``)."""
        count = self.source.command("CLUSTER", "COUNTKEYSINSLOT", self.slot)
        if not isinstance(count, int):
            raise RedisServerError(f"COUNTKEYSINSLOT replied {count!r}")
        return count

    def move_keys(self, limit: int | None = None) -> int:
        """MIGRATE up to ``limit`` keys (``None``: all that are left) in
        batches of ``keys_batch``; return how many were moved."""
        if self.done:
            raise RedisServerError(f"{self!r} is finished")
        moved = self.cluster._move_keys(
            self.slot, self.source, self.target, limit=limit, batch=self.keys_batch
        )
        self.keys_moved += moved
        return moved

    def finish(self, *, timeout: float | None = None) -> None:
        """Move the remaining keys, ``SETSLOT NODE`` on every primary, and
        wait until every running node names the target as the owner."""
        if self.done:
            return
        self.move_keys()
        self.cluster._assign_slots({self.slot: self.target}, source=self.source)
        self.cluster._wait_owned({self.slot: self.target}, timeout)
        self.done = True


# -------------------------------------------------------------------- cluster


class ClusterTopology:
    """A Redis Cluster: ``primaries`` shards of one primary and
    ``replicas_per_primary`` replicas each.

    ``nodes`` has a fixed order: ``nodes[:primaries]`` are the first
    primaries (``nodes[i]`` starts with the ``i``-th even slot range), then
    the replicas, shard by shard (``nodes[primaries + i * r + k]`` starts as
    replica ``k`` of ``nodes[i]``).  Roles change with failovers; the shards
    (which nodes replicate together) do not.

    Addresses are ``(host, port)``; with ``tls`` every node is TLS-only
    (``tls-cluster yes``, ``tls-replication yes``) and the ports are TLS
    ports; the harness itself talks to the nodes over their unix sockets.
    ``password`` sets ``requirepass`` and ``masterauth`` on every node.

    Besides the harness-owned directives, nodes run with
    ``cluster-replica-validity-factor 0`` (a replica may always take over,
    however long its link was down), ``cluster-allow-replica-migration no``
    (replicas stay in their shard) and ``repl-ping-replica-period 1`` (see
    :meth:`wait_healthy` on replicas in ``CLUSTER SLOTS``), all overridable
    by ``extra_config``.
    """

    def __init__(
        self,
        primaries: int = 3,
        replicas_per_primary: int = 1,
        *,
        password: str | None = None,
        tls: TLSCertificates | None = None,
        tls_auth_clients: AuthClients = "no",
        node_timeout_ms: int = 1000,
        extra_config: Mapping[str, ConfigValue] | None = None,
        wait_timeout: float = 30.0,
        executable: str | None = None,
    ) -> None:
        if primaries < 1:
            raise ValueError("a cluster needs at least one primary")
        if replicas_per_primary < 0:
            raise ValueError("replicas_per_primary must be >= 0")
        self.password = password
        self.tls = tls
        self.wait_timeout = wait_timeout
        self.node_timeout_ms = node_timeout_ms
        config: dict[str, ConfigValue] = {
            "cluster-replica-validity-factor": 0,
            "cluster-allow-replica-migration": "no",
            # The primary's replication PING moves the offset every second,
            # so a replica of a primary nobody writes to (one restarted
            # empty) still shows up in CLUSTER SLOTS within a second.
            "repl-ping-replica-period": 1,
        }
        if tls is not None:
            config["tls-cluster"] = "yes"
        config.update(_node_config(password, tls, extra_config))
        server_tls = tls.server_tls(auth_clients=tls_auth_clients) if tls is not None else None
        #: Every node, in the fixed order described above.
        self.nodes: list[ClusterNode] = [
            ClusterNode(
                node_timeout_ms=node_timeout_ms,
                password=password,
                tls=server_tls,
                plain_port=tls is None,
                extra_config=config,
                executable=executable,
            )
            for _ in range(primaries * (1 + replicas_per_primary))
        ]
        first_replica = primaries
        #: ``shards[i]``: the nodes that replicate together, first primary first.
        self._shards: list[list[ClusterNode]] = [
            [
                self.nodes[i],
                *self.nodes[
                    first_replica + i * replicas_per_primary : first_replica
                    + (i + 1) * replicas_per_primary
                ],
            ]
            for i in range(primaries)
        ]
        #: The slot ranges each shard starts with (and ensure_healthy restores).
        self._layout: list[tuple[int, int]] = _even_ranges(primaries)
        #: When each node last stood in an election (monotonic clock).
        self._elections: dict[ClusterNode, float] = {}

    # -------------------------------------------------------------- lifecycle

    def start(self) -> ClusterTopology:
        """Start every node, build the cluster, wait until it is healthy.

        Slots are assigned and config epochs set (1, 2, ...) before the
        nodes meet, so no epoch collision has to be resolved; every node
        meets every other directly rather than through gossip; replicas are
        attached once they know their primary.
        """
        try:
            for node in self.nodes:
                node.start()
                node.node_id  # asked once, while we know it answers
            for index, (shard, (first, last)) in enumerate(zip(self._shards, self._layout)):
                primary = shard[0]
                _expect_ok(primary, "CLUSTER", "ADDSLOTSRANGE", first, last)
                _expect_ok(primary, "CLUSTER", "SET-CONFIG-EPOCH", index + 1)
            for index, node in enumerate(self.nodes):
                for other in self.nodes[index + 1 :]:
                    host, port = other.address
                    _expect_ok(node, "CLUSTER", "MEET", host, port, other.bus_port)
            self._attach_replicas()
            # Redis leaves a replica out of CLUSTER SLOTS (and calls it
            # "loading" in CLUSTER SHARDS) while its replication offset is 0,
            # which it stays until something is written: write once.
            self._wait_linked()
            self.flushall()
            self.wait_healthy()
        except BaseException:
            self.close()
            raise
        return self

    def _attach_replicas(self) -> None:
        def known() -> None:
            for shard in self._shards:
                primary_id = shard[0].node_id
                for replica in shard[1:]:
                    views = {view.node_id: view for view in replica.cluster_nodes()}
                    seen = views.get(primary_id)
                    if seen is None or "handshake" in seen.flags:
                        raise _NotYet(f"{replica!r} does not know its primary {shard[0]!r} yet")

        _wait_until(known, self.wait_timeout, "every replica knowing its primary")
        for shard in self._shards:
            for replica in shard[1:]:
                _expect_ok(replica, "CLUSTER", "REPLICATE", shard[0].node_id)

    def _wait_linked(self) -> None:
        def linked() -> None:
            for node in self._running():
                info = node.info("replication")
                if info.get("role") == "slave" and info.get("master_link_status") != "up":
                    raise _NotYet(f"{node!r}: link {info.get('master_link_status')}")

        _wait_until(linked, self.wait_timeout, "every replica in sync")

    def close(self) -> None:
        """Stop every node and delete their directories.

        Every node gets SIGTERM before any is waited for: a server acts on it
        at its next cron tick (up to 100 ms), so one by one would add up.
        """
        for node in self.nodes:
            if node.running and not node.paused:
                assert node.process is not None
                node.process.terminate()
        _close_replicas_first(self.nodes)

    def __enter__(self) -> ClusterTopology:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ state

    @property
    def seed_addresses(self) -> list[Address]:
        """``(host, port)`` of every node, running or not, in :attr:`nodes` order."""
        return [node.address for node in self.nodes]

    @property
    def url(self) -> str:
        """``redis+cluster://[:password@]host:port,host:port,...`` (every
        node; ``rediss+cluster://`` with TLS), the URL form issue 12 gives
        the cluster client.  Certificates are not part of it."""
        scheme = "rediss+cluster" if self.tls is not None else "redis+cluster"
        return f"{scheme}://{self.nodes[0]._userinfo()}" + ",".join(
            f"{host}:{port}" for host, port in self.seed_addresses
        )

    def node_at(self, address: Sequence[object]) -> ClusterNode:
        """The node listening at ``(host, port)`` (as MOVED/ASK and CLUSTER NODES name it)."""
        port = int(str(address[1]))
        for node in self.nodes:
            if node.address[1] == port:
                return node
        raise RedisServerError(f"no node of this cluster listens on port {port}")

    def node_by_id(self, node_id: str) -> ClusterNode:
        """The node whose ``CLUSTER MYID`` is ``node_id``."""
        for node in self.nodes:
            if node._node_id == node_id:
                return node
        raise RedisServerError(f"no node of this cluster has id {node_id}")

    def _shard_of(self, node: ClusterNode) -> list[ClusterNode]:
        for shard in self._shards:
            if node in shard:
                return shard
        raise ValueError(f"{node!r} is not a node of this cluster")

    def _running(self) -> list[ClusterNode]:
        return [node for node in self.nodes if node.running and not node.paused]

    def _view(self) -> list[ClusterNodeView]:
        """``CLUSTER NODES`` of the first running node that says it is a primary."""
        for node in self._running():
            views = node.cluster_nodes()
            if any(view.myself and view.is_primary for view in views):
                return views
        raise RedisServerError("no running primary to ask")

    def primaries(self) -> list[ClusterNode]:
        """Running primaries as the cluster sees them (``CLUSTER NODES`` of a
        running primary), the owner of the lowest slot first; primaries
        without slots last."""
        running = set(self._running())
        owned = []
        for view in self._view():
            node = self._known(view.node_id)
            if view.is_primary and node in running:
                first = min((first for first, _ in view.slots), default=CLUSTER_SLOTS)
                owned.append((first, self.nodes.index(node), node))
        return [node for _, _, node in sorted(owned)]

    def replicas(self) -> list[ClusterNode]:
        """Running replicas as the cluster sees them, in :attr:`nodes` order."""
        running = set(self._running())
        found = {
            node
            for view in self._view()
            if not view.is_primary and (node := self._known(view.node_id)) in running
        }
        return [node for node in self.nodes if node in found]

    def replicas_of(self, primary: ClusterNode) -> list[ClusterNode]:
        """Running nodes the cluster sees replicating from ``primary``."""
        running = set(self._running())
        found = {
            node
            for view in self._view()
            if view.primary_id == primary.node_id
            and (node := self._known(view.node_id)) in running
        }
        return [node for node in self.nodes if node in found]

    def _known(self, node_id: str) -> ClusterNode | None:
        for node in self.nodes:
            if node._node_id == node_id:
                return node
        return None

    def _describe_id(self, node_id: str) -> str:
        node = self._known(node_id)
        return repr(node) if node is not None else f"unknown node {node_id}"

    # ------------------------------------------------------------------ slots

    slot_of = staticmethod(key_slot)

    @staticmethod
    def key_in_slot(slot: int, name: str = "key") -> str:
        """A key of ``slot``: ``{tag}name`` with :func:`hash_tag_for_slot`."""
        return f"{{{hash_tag_for_slot(slot)}}}{name}"

    def slot_ranges(self) -> list[tuple[int, int, ClusterNode]]:
        """``(first, last, owner)`` for every assigned range, in slot order,
        as a running primary sees them."""
        ranges: list[tuple[int, int, ClusterNode]] = []
        for view in self._view():
            if view.is_primary:
                node = self._known(view.node_id)
                if node is None:
                    raise RedisServerError(f"slots owned by unknown node {view.node_id}")
                ranges.extend((first, last, node) for first, last in view.slots)
        return sorted(ranges, key=lambda item: item[0])

    def node_for_slot(self, slot: int) -> ClusterNode:
        """The primary that owns ``slot``, as a running primary sees it."""
        if not 0 <= slot < CLUSTER_SLOTS:
            raise ValueError(f"slot must be in 0..{CLUSTER_SLOTS - 1}, not {slot}")
        for first, last, node in self.slot_ranges():
            if first <= slot <= last:
                return node
        raise RedisServerError(f"slot {slot} is not assigned to any node")

    def owner(self, key: str | bytes) -> ClusterNode:
        """The primary that owns ``key``'s slot."""
        return self.node_for_slot(key_slot(key))

    # ---------------------------------------------------------------- waiting

    def _timeout(self, timeout: float | None) -> float:
        return self.wait_timeout if timeout is None else timeout

    def _poll(self, *, replication: bool = False) -> list[_NodeState]:
        """One round: CLUSTER INFO and CLUSTER NODES (and, with
        ``replication``, INFO replication and CLUSTER SLOTS) of every running
        node, each node over one connection."""
        states = []
        for node in self._running():
            commands: list[tuple[str, ...]] = [("CLUSTER", "INFO"), ("CLUSTER", "NODES")]
            if replication:
                commands += [("INFO", "replication"), ("CLUSTER", "SLOTS")]
            raw = node.raw_pipeline(*commands)
            info = _parse_fields(_decoded(raw[0]), "CLUSTER INFO")
            views = _parse_cluster_nodes(_decoded(raw[1]))
            state = _NodeState(node, info, views, {}, [])
            if replication:
                state.replication = _parse_fields(_decoded(raw[2]), "INFO")
                state.client_slots = _parse_cluster_slots(_decoded(raw[3]))
            states.append(state)
        return states

    def _agreed(self, *, stable: bool, linked: bool) -> _Agreed:
        """Check one polling round; raise :class:`_NotYet` saying what is off.

        Always: every running node says ``cluster_state:ok`` with every slot
        assigned and served and knows exactly our nodes; no running node is
        seen failing, in handshake or disconnected; every running node sees
        the same slot map and the same roles; every slot's owner is running.
        ``stable``: no slot is open (migrating or importing) anywhere.
        ``linked``: every running replica has its replication link up to the
        primary the cluster names, and every node's CLUSTER SLOTS agrees.
        """
        running = self._running()
        running_ids = {node.node_id for node in running}
        states = self._poll(replication=linked)
        reference: tuple[Any, Any] | None = None
        reference_node: ClusterNode | None = None
        for state in states:
            node, info = state.node, state.info
            facts = (
                info.get("cluster_state"),
                info.get("cluster_slots_assigned"),
                info.get("cluster_slots_ok"),
                info.get("cluster_known_nodes"),
            )
            if facts != ("ok", str(CLUSTER_SLOTS), str(CLUSTER_SLOTS), str(len(self.nodes))):
                raise _NotYet(
                    f"{node!r}: cluster_state {facts[0]}, slots assigned {facts[1]}, "
                    f"slots ok {facts[2]}, known nodes {facts[3]} of {len(self.nodes)}"
                )
            for view in state.views:
                if view.node_id not in running_ids:
                    continue
                unsettled = view.flags & _UNSETTLED_FLAGS
                if unsettled or (not view.myself and view.link_state != "connected"):
                    peer = self.node_by_id(view.node_id)
                    raise _NotYet(
                        f"{node!r} sees {peer!r} as {','.join(sorted(view.flags))} "
                        f"({view.link_state})"
                    )
            summary = _summary(state.views, running_ids)
            if reference is None:
                reference, reference_node = summary, node
            elif summary != reference:
                raise _NotYet(
                    f"{node!r} and {reference_node!r} disagree: {_difference(summary, reference)}"
                )
            myself = state.myself
            if stable and (myself.migrating or myself.importing):
                opened = [
                    f"{slot} migrating to {self._describe_id(other)}"
                    for slot, other in sorted(myself.migrating.items())
                ] + [
                    f"{slot} importing from {self._describe_id(other)}"
                    for slot, other in sorted(myself.importing.items())
                ]
                raise _NotYet(f"{node!r} has open slots: {'; '.join(opened)}")
        assert reference is not None
        # The others say ok for a node timeout after an owner dies; its slots
        # are not served meanwhile.
        for first, last, owner_id in reference[0]:
            if owner_id not in running_ids:
                raise _NotYet(
                    f"slots {first}-{last} are owned by {self._describe_id(owner_id)}, "
                    "which is not running"
                )
        roles: Mapping[str, str | None] = reference[1]
        if linked:
            self._check_client_view(states, reference[0], roles)
            for state in states:
                primary_id = roles.get(state.node.node_id)
                if primary_id is None:
                    continue
                primary = self.node_by_id(primary_id)
                link = (
                    state.replication.get("role"),
                    state.replication.get("master_link_status"),
                    state.replication.get("master_port"),
                )
                if link != ("slave", "up", str(primary.address[1])):
                    raise _NotYet(
                        f"{state.node!r}: replication role {link[0]}, link {link[1]} "
                        f"to port {link[2]}; the cluster names {primary!r} as its primary"
                    )
        return _Agreed(ranges=reference[0], roles=roles, states=states)

    def _check_client_view(
        self,
        states: Sequence[_NodeState],
        ranges: Sequence[tuple[int, int, str]],
        roles: Mapping[str, str | None],
    ) -> None:
        """What clients discover (``CLUSTER SLOTS``) matches the agreed map:
        the same owners, and every running replica listed with its primary."""
        port_of = {node.node_id: node.address[1] for node in self.nodes if node._node_id}
        expected = _merged((first, last, port_of[owner]) for first, last, owner in ranges)
        for state in states:
            seen = _merged((first, last, port) for first, last, port, _ in state.client_slots)
            if seen != expected:
                raise _NotYet(
                    f"{state.node!r}: CLUSTER SLOTS owners {seen[:4]}, expected {expected[:4]}"
                )
            for first, _last, port, listed in state.client_slots:
                owner = self.node_at((state.node.host, port))
                running = {
                    port_of[node_id]
                    for node_id, primary_id in roles.items()
                    if primary_id == owner.node_id
                }
                shard = {node.address[1] for node in self._shard_of(owner)}
                if not running <= listed <= shard:
                    raise _NotYet(
                        f"{state.node!r}: CLUSTER SLOTS lists replicas {sorted(listed)} for slot "
                        f"{first}, expected the running replicas {sorted(running)} (Redis lists a "
                        "replica once it knows a non-zero replication offset for it)"
                    )

    def wait_healthy(self, *, timeout: float | None = None) -> None:
        """Wait until the running nodes form a settled, healthy cluster.

        Settled: every running node says ``cluster_state:ok``, all 16384
        slots assigned and served, and knows every node of the topology;
        none sees a running node failing (``fail``/``pfail``), in handshake
        or with its link down; all see the same slot map and the same roles,
        and every slot's owner is running; no slot is migrating or
        importing; every running replica's replication link to its primary
        is up; and every node's ``CLUSTER SLOTS`` (what clients discover)
        names the same owners and lists every running replica.  Stopped
        nodes are allowed (another node of their shard must serve its slots).
        """
        _wait_until(
            lambda: self._agreed(stable=True, linked=True),
            self._timeout(timeout),
            "a healthy cluster",
        )

    # -------------------------------------------------------------- migration

    def migrate_slot(
        self,
        slot: int,
        to_node: ClusterNode,
        *,
        keys_batch: int = 100,
        finish: bool = True,
        keys_to_move: int | None = None,
        timeout: float | None = None,
    ) -> SlotMigration:
        """Move ``slot`` from its owner to the primary ``to_node``.

        The protocol a resharding tool runs: ``CLUSTER SETSLOT IMPORTING`` on
        the target, ``MIGRATING`` on the source, ``CLUSTER GETKEYSINSLOT`` +
        ``MIGRATE ... KEYS`` in batches of ``keys_batch``, then ``CLUSTER
        SETSLOT NODE`` on the target, the source and every other primary;
        returns once every running node names the target as the owner.

        ``finish=False`` stops half-way: the slot is left open after moving
        ``keys_to_move`` keys (``None``: all of them), so the source answers
        ``-ASK`` for every key it no longer holds.  Call ``finish()`` on the
        returned :class:`SlotMigration` (or :meth:`ensure_healthy`) to end it.
        """
        if keys_batch < 1:
            raise ValueError("keys_batch must be >= 1")
        if keys_to_move is not None and (finish or keys_to_move < 0):
            raise ValueError("keys_to_move (>= 0) is for a migration left open (finish=False)")
        if to_node not in self.nodes:
            raise ValueError(f"{to_node!r} is not a node of this cluster")
        source = self.node_for_slot(slot)
        if to_node is source:
            raise ValueError(f"{to_node!r} already owns slot {slot}")
        if not to_node.myself().is_primary:
            raise ValueError(f"{to_node!r} is not a primary: slots go to primaries")
        migration = SlotMigration(self, slot, source, to_node, keys_batch)
        self._open_slots([slot], source, to_node)
        if finish:
            migration.finish(timeout=timeout)
        elif keys_to_move is None or keys_to_move > 0:
            migration.move_keys(keys_to_move)
        return migration

    def _open_slots(self, slots: Sequence[int], source: ClusterNode, target: ClusterNode) -> None:
        """IMPORTING on the target first: once the source says MIGRATING it
        sends clients there with ASK, and the target must accept them."""
        _expect_all_ok(
            target, [("CLUSTER", "SETSLOT", slot, "IMPORTING", source.node_id) for slot in slots]
        )
        _expect_all_ok(
            source, [("CLUSTER", "SETSLOT", slot, "MIGRATING", target.node_id) for slot in slots]
        )

    def _move_keys(
        self,
        slot: int,
        source: ClusterNode,
        target: ClusterNode,
        *,
        limit: int | None,
        batch: int,
    ) -> int:
        """MIGRATE keys of ``slot`` from ``source`` to ``target``; return how many."""
        host, port = target.address
        auth = ("AUTH", self.password) if self.password is not None else ()
        moved = 0
        while limit is None or moved < limit:
            count = batch if limit is None else min(batch, limit - moved)
            keys = source.command("CLUSTER", "GETKEYSINSLOT", slot, count)
            if not isinstance(keys, list):
                raise RedisServerError(f"{source!r}: GETKEYSINSLOT replied {keys!r}")
            if not keys:
                break
            names = [_key_bytes(str(key)) for key in keys]
            # Just after a failover the target may not yet see the cluster
            # as up ("CLUSTERDOWN Hash slot not served"): poll, bounded.
            deadline = time.monotonic() + 10
            while True:
                reply = source.raw_command(
                    "MIGRATE", host, port, "", 0, MIGRATE_TIMEOUT_MS, *auth, "KEYS", *names,
                    timeout=MIGRATE_TIMEOUT_MS / 1000 + 10,
                )
                if b"CLUSTERDOWN" not in reply or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            # NOKEY: the keys were deleted (or expired) since GETKEYSINSLOT.
            if reply not in (b"+OK\r\n", b"+NOKEY\r\n"):
                raise RedisServerError(
                    f"MIGRATE of {len(names)} keys of slot {slot} from {source!r} to "
                    f"{target!r} replied {reply!r}"
                )
            moved += len(names)
        return moved

    def _assign_slots(
        self, owners: Mapping[int, ClusterNode], *, source: ClusterNode | None = None
    ) -> None:
        """``CLUSTER SETSLOT <slot> NODE <owner>`` on the new owners first
        (which closes their IMPORTING and bumps their epoch), then on the
        source (which refuses while it still holds keys of the slot), then
        on every other running primary."""
        primaries = [node for node in self._running() if node.myself().is_primary]
        order = list(dict.fromkeys(owners.values()))
        if source is not None and source in primaries:
            order.append(source)
        order += [node for node in primaries if node not in order]
        for node in order:
            commands = [
                ("CLUSTER", "SETSLOT", slot, "NODE", owner.node_id)
                for slot, owner in owners.items()
            ]
            _expect_all_ok(node, commands)

    def _wait_owned(self, owners: Mapping[int, ClusterNode], timeout: float | None) -> None:
        """Wait until every running node names these owners and no running
        node has one of these slots open."""
        wanted = {slot: owner.node_id for slot, owner in owners.items()}

        def check() -> None:
            agreed = self._agreed(stable=False, linked=False)
            for slot, owner_id in wanted.items():
                seen = agreed.owner_id(slot)
                if seen != owner_id:
                    raise _NotYet(f"slot {slot} is owned by {seen}, not {owner_id}")
            for state in agreed.states:
                myself = state.myself
                open_slots = (set(myself.migrating) | set(myself.importing)) & set(wanted)
                if open_slots:
                    raise _NotYet(f"{state.node!r} still has slots {sorted(open_slots)} open")

        what = f"every node agreeing on {len(wanted)} slot owners"
        _wait_until(check, self._timeout(timeout), what)

    # -------------------------------------------------------------- changes

    def failover(
        self,
        replica: ClusterNode,
        *,
        option: Literal["FORCE", "TAKEOVER"] | None = None,
        timeout: float | None = None,
    ) -> ClusterNode:
        """``CLUSTER FAILOVER [option]`` on ``replica``; return it once every
        running node sees it as a primary owning its former primary's slots.

        Without ``option`` (a coordinated failover) the replica's link must be
        up and its primary must know it as its replica: both are waited for.
        A replica that stood in an election a moment ago first waits out
        Redis's election retry time (see :meth:`_wait_election_retry_time`).
        The old primary is turned into its replica by the same exchange;
        :meth:`wait_healthy` waits for its link.
        This does not wait for ``cluster_state:ok`` everywhere: a failover can
        leave a node out of service, e.g. the target of a migration left open
        across it (with Redis 7.0 it drops the slot it was importing), which
        :meth:`ensure_healthy` repairs.
        """
        timeout = self._timeout(timeout)
        myself = replica.myself()
        if myself.is_primary or myself.primary_id is None:
            raise ValueError(f"{replica!r} is not a replica")
        old_primary = self.node_by_id(myself.primary_id)
        if option is None:

            def linked() -> None:
                info = replica.info("replication")
                if info.get("master_link_status") != "up":
                    raise _NotYet(f"{replica!r}: link {info.get('master_link_status')}")
                # The primary ignores the replica's request (MFSTART) until
                # the bus has told it who its replicas are: just after a
                # role change the replication link is up before that.
                views = old_primary.cluster_nodes()
                seen = next((view for view in views if view.node_id == myself.node_id), None)
                if seen is None or seen.primary_id != old_primary.node_id:
                    raise _NotYet(f"{old_primary!r} does not know {replica!r} as its replica")

            _wait_until(linked, timeout, f"{replica!r} in sync before CLUSTER FAILOVER")
        slots = [first for first, _last in old_primary.myself().slots]
        command = ("CLUSTER", "FAILOVER") + ((option,) if option else ())
        if option != "TAKEOVER":  # TAKEOVER holds no election
            self._wait_election_retry_time(replica)
        _expect_ok(replica, *command)
        what = f"{' '.join(command)} on {replica!r}"
        promoted = self._wait_promoted([replica], slots, timeout, what, settled=False)
        if option != "TAKEOVER":
            self._elections[replica] = time.monotonic()
        return promoted

    def _wait_election_retry_time(self, replica: ClusterNode) -> None:
        """Let the election retry time pass since ``replica`` last stood.

        Redis 7.0 keeps a replica's last election (its epoch and the votes it
        won) for twice the election timeout, max(2 x node timeout, 2 s), and
        a manual failover asked within that time reuses it: the replica
        "wins" at once with its old epoch, loses the conflict to its primary's
        newer one, and turns back into a replica.  The timer is internal to
        the server (nothing reports it), so we wait it out.
        """
        last = self._elections.get(replica)
        if last is None:
            return
        retry_time = 2 * max(2 * self.node_timeout_ms, 2000) / 1000
        remaining = last + retry_time - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)

    def _wait_promoted(
        self,
        candidates: Sequence[ClusterNode],
        slots: Sequence[int],
        timeout: float,
        what: str,
        *,
        settled: bool,
    ) -> ClusterNode:
        """Wait until one of ``candidates`` is, in every running node's own
        view, a primary not flagged failing that owns ``slots``; with
        ``settled`` also until every running node is ok and all agree."""

        def check() -> ClusterNode:
            states = self._poll()
            last_reason = ""
            for node in candidates:
                reason = _promotion_missing(states, node, slots)
                if reason is None:
                    if settled:
                        self._agreed(stable=False, linked=False)
                    return node
                last_reason = reason
            raise _NotYet(last_reason)

        return _wait_until(check, timeout, what)

    def kill_primary(self, node: ClusterNode, *, timeout: float | None = None) -> ClusterNode:
        """SIGKILL the primary ``node``; return the replica the cluster
        promotes, once every running node sees it owning ``node``'s slots,
        says ``cluster_state:ok`` and agrees with the others on the slot map.

        Takes about the node timeout (failure detection) plus the replica's
        election delay (0.5 to 1 s): some 2 s with the default 1000 ms.
        """
        myself = node.myself()
        if not myself.is_primary or not myself.slots:
            raise ValueError(f"{node!r} is not a primary with slots")
        candidates = self.replicas_of(node)
        if not candidates:
            raise RedisServerError(f"{node!r} has no running replica to take over")
        # A replica needs the votes of a majority of the primaries that own
        # slots; the killed one cannot vote.
        voters = sum(1 for view in self._view() if view.is_primary and view.slots)
        if voters - 1 < voters // 2 + 1:
            raise ValueError(
                f"no replica of {node!r} could be elected once it is dead: a replica needs "
                f"the votes of {voters // 2 + 1} of the {voters} primaries that own slots"
            )
        slots = [first for first, _last in myself.slots]
        node.kill()
        what = f"a replica taking over from killed {node!r}"
        promoted = self._wait_promoted(
            candidates, slots, self._timeout(timeout), what, settled=True
        )
        for candidate in candidates:  # the losers stood too
            self._elections[candidate] = time.monotonic()
        return promoted

    def restart_node(self, node: ClusterNode, *, timeout: float | None = None) -> ClusterNode:
        """Start ``node`` again (stopping it first if it runs), then
        :meth:`wait_healthy`.

        It keeps its id and cluster state (``nodes.conf``) but not its data.
        A primary that was replaced comes back as a replica of the node that
        took its slots; a primary restarted before anyone took over (within
        the node timeout) comes back as that primary, empty.
        """
        if node not in self.nodes:
            raise ValueError(f"{node!r} is not a node of this cluster")
        if node.running:
            node.stop()
        node.start()
        self.wait_healthy(timeout=timeout)
        return node

    def ensure_healthy(self, *, timeout: float | None = None) -> None:
        """Bring the cluster back to health and to its starting slot layout.

        Restores: paused nodes resumed and stopped nodes started; open slots
        (migrating/importing, left by ``migrate_slot(finish=False)`` or by
        hand) finished towards their target, from whichever node of the
        source's shard owns the slot now; every slot owned again by the shard
        that started with it (migrated back, keys included); then
        :meth:`wait_healthy`.  Not restored: which node of a shard is the
        primary (after a failover the replica stays primary), data (see
        :meth:`flushall`), and configuration a test changed with ``CONFIG
        SET``.  Cheap when nothing changed: three polling rounds.
        """
        timeout = self._timeout(timeout)
        for node in self.nodes:
            if node.paused:
                node.resume()
        for node in self.nodes:
            if not node.running:
                node.start()
        # Open slots first: a node importing a slot may be out of service
        # until the migration is finished.
        states = _wait_until(self._poll_members, timeout, "every node knowing every other")
        if self._finish_open_slots(states):
            self._wait_open_slots_closed(timeout)
        agreed = _wait_until(
            lambda: self._agreed(stable=False, linked=False),
            timeout,
            "a cluster serving every slot",
        )
        self._restore_layout(agreed, timeout)
        self.wait_healthy(timeout=timeout)

    def _poll_members(self) -> list[_NodeState]:
        """One polling round, once every running node knows every node."""
        states = self._poll()
        for state in states:
            known = state.info.get("cluster_known_nodes")
            if known != str(len(self.nodes)):
                raise _NotYet(f"{state.node!r} knows {known} nodes of {len(self.nodes)}")
        return states

    def _finish_open_slots(self, states: Sequence[_NodeState]) -> bool:
        """Finish every migration a running primary reports open, towards its
        target's shard; True if there was any.

        The source is whoever claims the slot now (the highest config epoch
        wins, as in Redis), which after a failover is not the node that was
        marked MIGRATING.
        """
        opened: dict[int, ClusterNode] = {}
        for state in states:
            myself = state.myself
            if not myself.is_primary:
                continue
            for slot, target_id in myself.migrating.items():
                opened.setdefault(slot, self.node_by_id(target_id))
            for slot in myself.importing:
                opened[slot] = state.node  # the importing side holds the moved keys
        for slot, marked_target in sorted(opened.items()):
            target = self._shard_primary(self._shard_of(marked_target), states)
            source = _claimant(states, slot)
            if source is None:
                self._assign_slots({slot: target})
            elif source is not target:
                _bind_slot_on_target(states, slot, source, target)
                self._open_slots([slot], source, target)
                self._move_keys(slot, source, target, limit=None, batch=100)
                self._assign_slots({slot: target}, source=source)
            # Markers left elsewhere (the old source after a failover, a third
            # primary) would keep the slot open there: STABLE clears them.
            for state in states:
                if state.node is target or not state.myself.is_primary:
                    continue
                if slot in state.myself.migrating or slot in state.myself.importing:
                    _expect_ok(state.node, "CLUSTER", "SETSLOT", slot, "STABLE")
        return bool(opened)

    def _wait_open_slots_closed(self, timeout: float) -> None:
        def check() -> None:
            for state in self._poll():
                myself = state.myself
                if myself.migrating or myself.importing:
                    raise _NotYet(
                        f"{state.node!r} still has slots open: migrating "
                        f"{sorted(myself.migrating)}, importing {sorted(myself.importing)}"
                    )

        _wait_until(check, timeout, "every open slot closed")

    def _shard_primary(
        self, shard: Sequence[ClusterNode], states: Sequence[_NodeState]
    ) -> ClusterNode:
        """The running node of ``shard`` that says it is a primary."""
        for state in states:
            if state.node in shard and state.myself.is_primary:
                return state.node
        raise RedisServerError(f"no running primary in the shard of {shard[0]!r}")

    def _restore_layout(self, agreed: _Agreed, timeout: float) -> None:
        """Migrate every slot owned outside its starting shard back to it."""
        moves: dict[tuple[ClusterNode, ClusterNode], list[int]] = {}
        for shard, (first, last) in zip(self._shards, self._layout):
            home = None
            for start, end, owner_id in agreed.ranges:
                if end < first or start > last:
                    continue
                owner = self.node_by_id(owner_id)
                if owner in shard:
                    continue
                home = home or self._shard_primary(shard, agreed.states)
                moves.setdefault((owner, home), []).extend(
                    range(max(start, first), min(end, last) + 1)
                )
        if not moves:
            return
        for (source, target), slots in moves.items():
            self._open_slots(slots, source, target)
            for slot in slots:
                self._move_keys(slot, source, target, limit=None, batch=100)
            self._assign_slots({slot: target for slot in slots}, source=source)
        owners = {slot: target for (_, target), slots in moves.items() for slot in slots}
        self._wait_owned(owners, timeout)

    def flushall(self) -> None:
        """``FLUSHALL SYNC`` on every running primary and ``WAIT`` until each
        of its running replicas has it too.

        Roles are each node's own word (its ``myself`` line): another node
        may not have heard yet that a node became a replica.
        """
        states = self._poll()
        for state in states:
            myself = state.myself
            if myself.is_primary:
                replicas = [
                    other.node for other in states if other.myself.primary_id == myself.node_id
                ]
                _flush_and_wait(state.node, replicas)


def _expect_ok(node: RedisServer, *args: str | int) -> None:
    """Send one command; anything but ``+OK`` raises, naming node and command."""
    reply = node.raw_command(*args)
    if reply != b"+OK\r\n":
        command = " ".join(str(arg) for arg in args)
        raise RedisServerError(f"{node!r}: {command} replied {reply!r}")


def _expect_all_ok(node: RedisServer, commands: Sequence[Sequence[str | int]]) -> None:
    """Pipeline ``commands`` over one connection; each must reply ``+OK``."""
    if not commands:
        return
    for command, reply in zip(commands, node.raw_pipeline(*commands)):
        if reply != b"+OK\r\n":
            text = " ".join(str(arg) for arg in command)
            raise RedisServerError(f"{node!r}: {text} replied {reply!r}")

