"""Replicated and Sentinel-managed groups of private ``redis-server`` processes.

:class:`ReplicationGroup` is a primary and its replicas, nothing watching
them: the test moves the primary role itself (:meth:`~ReplicationGroup.promote`,
:meth:`~ReplicationGroup.demote_in_place`), as an operator or a managed
service would behind a plain ``redis://`` address.

:class:`SentinelTopology` is such a group watched by Sentinels
(:class:`SentinelServer`, ``redis-server <conf> --sentinel``), which fail
over on their own: the test asks for a failover, kills the primary, brings
nodes back, stops Sentinels, and each call returns once the servers
themselves say the change is done.

Every wait polls server state under a deadline (never a fixed sleep) and
fails with :class:`TopologyTimeoutError` describing what was last seen.
Everything listens on loopback, on free ports; each process has its own
directory (Sentinel rewrites its configuration file as it learns).

Re-exported by :mod:`redis_cache.testing`; import the names from there.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from ._testing_tls import AuthClients, TLSCertificates, TLSSettings
from .testing import (
    ConfigValue,
    RedisReplyError,
    RedisServer,
    RedisServerError,
    _config_quote,
)

__all__ = [
    "FAST_SENTINEL_TIMERS",
    "ReplicationGroup",
    "SentinelServer",
    "SentinelTopology",
    "TopologyTimeoutError",
]

Address = tuple[str, int]
T = TypeVar("T")

#: Sentinel's internal periods in milliseconds, shortened with ``SENTINEL
#: DEBUG`` (Redis 7.0+) as Redis's own Sentinel tests do.  The defaults
#: (INFO every 10 s, hello every 2 s) make discovery and failover take tens
#: of seconds; these make them take about one.
FAST_SENTINEL_TIMERS: Mapping[str, int] = {
    "info-period": 300,  # INFO to primaries and replicas (default 10000)
    "publish-period": 200,  # hello messages: how Sentinels find each other (2000)
    "ask-period": 200,  # asking the others whether the primary is down (1000)
    "ping-period": 200,  # PING to every instance (1000)
}

#: How often waits look at the servers again.
POLL_INTERVAL = 0.02

_SERVICE_NAME = re.compile(r"[A-Za-z0-9._-]+")


class TopologyTimeoutError(RedisServerError):
    """A topology did not reach the state a call waits for within its deadline."""


class _NotYet(Exception):
    """Raised by a condition :func:`_wait_until` polls: not there yet, and why."""


def _wait_until(condition: Callable[[], T], timeout: float, what: str) -> T:
    """Call ``condition`` until it returns instead of raising :class:`_NotYet`.

    ``OSError`` and :class:`RedisReplyError` also count as "not yet", as
    servers come and go while a topology changes.  On timeout the error
    says ``what`` was awaited and the last reason it was not there.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return condition()
        except (_NotYet, OSError, RedisReplyError) as exc:
            last_seen = str(exc) if isinstance(exc, _NotYet) else f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            raise TopologyTimeoutError(f"{what}: not done after {timeout:g} s; {last_seen}")
        time.sleep(POLL_INTERVAL)


def _pairs(reply: object) -> dict[str, str]:
    """A flat ``[field, value, field, value, ...]`` reply as a dict."""
    if not isinstance(reply, list):
        raise RedisServerError(f"expected a field/value list, got {reply!r}")
    return {str(reply[i]): str(reply[i + 1]) for i in range(0, len(reply) - 1, 2)}


def _flags(state: Mapping[str, str]) -> set[str]:
    return set(state.get("flags", "").split(","))


def _node_config(
    password: str | None, tls: TLSCertificates | None, extra: Mapping[str, ConfigValue] | None
) -> dict[str, ConfigValue]:
    """redis.conf directives every data node of a group shares."""
    config: dict[str, ConfigValue] = {
        # A new replica syncs at once, straight over the socket (the default
        # waits 5 s for more replicas to share the transfer).
        "repl-diskless-sync": "yes",
        "repl-diskless-sync-delay": 0,
    }
    if password is not None:
        config["masterauth"] = _config_quote(password)  # any node may become a replica
    if tls is not None:
        config["tls-replication"] = "yes"
    config.update(extra or {})
    return config


class ReplicationGroup:
    """A primary and ``replicas`` replicas replicating from it; no Sentinel.

    For the plain-URL case: a client holds ``group.primary.url``; the test
    calls :meth:`demote_in_place` (that address now serves a replica, which
    answers writes with ``READONLY``; its clients stay connected), then
    :meth:`promote` on the same node to make the address a primary again.

    Nodes start as standalone servers and are attached with ``REPLICAOF``,
    so a node started again later comes back as an empty standalone primary
    until it is attached (:meth:`ensure_healthy` does that).

    With ``tls`` every node is TLS-only (``port 0``) and replicates over TLS;
    ``node.address`` is then its TLS port and the harness's own commands use
    the unix socket.
    """

    def __init__(
        self,
        replicas: int = 2,
        *,
        password: str | None = None,
        tls: TLSCertificates | None = None,
        tls_auth_clients: AuthClients = "no",
        extra_config: Mapping[str, ConfigValue] | None = None,
        wait_timeout: float = 30.0,
        executable: str | None = None,
    ) -> None:
        if replicas < 0:
            raise ValueError("replicas must be >= 0")
        self.wait_timeout = wait_timeout
        config = _node_config(password, tls, extra_config)
        server_tls = tls.server_tls(auth_clients=tls_auth_clients) if tls is not None else None
        #: Every data node; ``nodes[0]`` is the first primary.  Fixed order.
        self.nodes: list[RedisServer] = [
            RedisServer(
                password=password,
                tls=server_tls,
                plain_port=tls is None,
                extra_config=config,
                executable=executable,
            )
            for _ in range(1 + replicas)
        ]
        self._primary = self.nodes[0]

    # ------------------------------------------------------------------ state

    @property
    def primary(self) -> RedisServer:
        """The node this group last made primary."""
        return self._primary

    @property
    def replicas(self) -> list[RedisServer]:
        """Every other node (running or not)."""
        return [node for node in self.nodes if node is not self._primary]

    def node_at(self, address: Sequence[object]) -> RedisServer:
        """The node listening at ``(host, port)`` (as Sentinel or ROLE name it)."""
        port = int(str(address[1]))
        for node in self.nodes:
            if node.address[1] == port:
                return node
        raise RedisServerError(f"no node of this group listens on port {port}")

    # -------------------------------------------------------------- lifecycle

    def start(self) -> ReplicationGroup:
        """Start every node, attach the replicas, wait until they are in sync."""
        try:
            for node in self.nodes:
                node.start()
            for node in self.replicas:
                _replicaof(node, self._primary)
            self.wait_replicated()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop every node and delete their directories."""
        _close_replicas_first(self.nodes)

    def __enter__(self) -> ReplicationGroup:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -------------------------------------------------------------- changes

    def promote(self, node: RedisServer, *, timeout: float | None = None) -> RedisServer:
        """Make ``node`` the primary and every other running node its replica.

        ``REPLICAOF NO ONE`` on ``node``, then ``REPLICAOF node`` on the
        others (the old primary included: it is demoted in place and keeps
        its clients connected).  Returns once every running replica is in
        sync with ``node``.
        """
        if node not in self.nodes:
            raise ValueError(f"{node!r} is not a node of this group")
        node.command("REPLICAOF", "NO", "ONE")
        self._primary = node
        for other in self.replicas:
            if other.running:
                _replicaof(other, node)
        self.wait_replicated(timeout=timeout)
        return node

    def demote_in_place(self, *, timeout: float | None = None) -> RedisServer:
        """Turn the primary into a replica of the first running replica,
        which is promoted; return the new primary.

        The old primary keeps running at its address (and its clients stay
        connected) but now refuses writes with ``READONLY``.
        """
        candidates = [node for node in self.replicas if node.running]
        if not candidates:
            raise RedisServerError("no running replica to promote")
        return self.promote(candidates[0], timeout=timeout)

    def ensure_healthy(self, *, timeout: float | None = None) -> None:
        """Start stopped nodes, resume paused ones, attach every replica."""
        for node in self.nodes:
            if node.paused:
                node.resume()
            if not node.running:
                node.start()
        if not _role_is(self._primary, "master"):
            self._primary.command("REPLICAOF", "NO", "ONE")
        for node in self.replicas:
            if _replica_link(node) != ("up", self._primary.address[1]):
                _replicaof(node, self._primary)
        self.wait_replicated(timeout=timeout)

    def flushall(self) -> None:
        """Empty the primary and wait until every running replica is empty too."""
        _flush_and_wait(self._primary, [n for n in self.replicas if n.running])

    def wait_replicated(
        self, primary: RedisServer | None = None, *, timeout: float | None = None
    ) -> None:
        """Wait until ``primary`` (default: :attr:`primary`) says ROLE master
        and every other running node is its replica with the link up."""
        primary = primary or self._primary
        replicas = [node for node in self.nodes if node is not primary and node.running]

        def check() -> None:
            if not _role_is(primary, "master"):
                raise _NotYet(f"{primary!r} is not a primary")
            for replica in replicas:
                link = _replica_link(replica)
                if link != ("up", primary.address[1]):
                    raise _NotYet(f"{replica!r}: link {link}")

        _wait_until(
            check,
            self.wait_timeout if timeout is None else timeout,
            f"replicas in sync with {primary!r}",
        )


def _close_replicas_first(nodes: Sequence[RedisServer]) -> None:
    """Close ``nodes``, primaries last: a primary shutting down waits (up to
    ``shutdown-timeout``) for its replicas to acknowledge the last writes."""

    def is_primary(node: RedisServer) -> bool:
        try:
            return node.running and not node.paused and _role_is(node, "master")
        except (OSError, RedisServerError):
            return False

    for node in sorted(nodes, key=is_primary):
        node.close()


def _replicaof(node: RedisServer, primary: RedisServer) -> None:
    host, port = primary.address
    node.command("REPLICAOF", host, port)


def _role_is(node: RedisServer, role: str) -> bool:
    reply = node.command("ROLE")
    return isinstance(reply, list) and bool(reply) and reply[0] == role


def _replica_link(node: RedisServer) -> tuple[str, int] | None:
    """``(master_link_status, master_port)`` of a replica; ``None`` for a primary."""
    info = node.info("replication")
    if info.get("role") != "slave":
        return None
    return (info.get("master_link_status", ""), int(info.get("master_port", "0")))


def _flush_and_wait(primary: RedisServer, replicas: Sequence[RedisServer]) -> None:
    """FLUSHALL on ``primary`` and WAIT on the same connection for the replicas."""
    flushed, acked = primary.raw_pipeline(
        ("FLUSHALL", "SYNC"), ("WAIT", len(replicas), 10_000), timeout=15.0
    )
    if flushed != b"+OK\r\n" or acked != b":%d\r\n" % len(replicas):
        raise RedisServerError(f"FLUSHALL + WAIT {len(replicas)} replied {flushed!r}, {acked!r}")


class SentinelServer(RedisServer):
    """One Sentinel (``redis-server <conf> --sentinel``) watching one primary.

    Its configuration is written at the first start only: Sentinel rewrites
    the file with what it learns (the current primary, replicas, other
    Sentinels, epochs), so a Sentinel started again resumes where it was,
    as a real one does.  ``password`` is the Sentinel's own (``requirepass``,
    and ``sentinel sentinel-pass`` to reach the other Sentinels);
    ``auth_pass`` is the data nodes' password.  ``timers`` are applied with
    ``SENTINEL DEBUG`` at every start (skipped, leaving Redis's defaults,
    where that command does not exist).
    """

    # Sentinel never logs "Ready to accept connections"; it logs its ID once
    # it listens, just before it starts serving.
    ready_marker = "Sentinel ID is"

    def __init__(
        self,
        service_name: str,
        primary: Address,
        *,
        quorum: int = 2,
        down_after_ms: int = 500,
        failover_timeout_ms: int = 3000,
        parallel_syncs: int = 1,
        auth_pass: str | None = None,
        password: str | None = None,
        tls: TLSSettings | None = None,
        plain_port: bool = True,
        timers: Mapping[str, int] = FAST_SENTINEL_TIMERS,
        extra_config: Mapping[str, ConfigValue] | None = None,
        executable: str | None = None,
        startup_timeout: float = 10.0,
    ) -> None:
        if not _SERVICE_NAME.fullmatch(service_name):
            raise ValueError(f"service name must match {_SERVICE_NAME.pattern}: {service_name!r}")
        config: dict[str, ConfigValue] = dict(extra_config or {})
        if tls is not None:
            config.setdefault("tls-replication", "yes")  # Sentinel's own links use TLS too
        super().__init__(
            password=password,
            tls=tls,
            plain_port=plain_port,
            extra_config=config,
            executable=executable,
            startup_timeout=startup_timeout,
        )
        self.service_name = service_name
        self.monitored = primary
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.parallel_syncs = parallel_syncs
        self.auth_pass = auth_pass
        self.timers = dict(timers)
        self._configured = False

    def _config_text(self) -> str:
        name = self.service_name
        host, port = self.monitored
        lines = [
            f"sentinel monitor {name} {host} {port} {self.quorum}",
            f"sentinel down-after-milliseconds {name} {self.down_after_ms}",
            f"sentinel failover-timeout {name} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {name} {self.parallel_syncs}",
        ]
        if self.auth_pass is not None:
            lines.append(f"sentinel auth-pass {name} {_config_quote(self.auth_pass)}")
        if self.password is not None:
            lines.append(f"sentinel sentinel-pass {_config_quote(self.password)}")
        return super()._config_text() + "\n".join(lines) + "\n"

    def _write_config(self) -> None:
        if not self._configured:
            super()._write_config()

    def _command_line(self) -> list[str]:
        return [*super()._command_line(), "--sentinel"]

    def start(self) -> SentinelServer:
        super().start()
        self._configured = True
        if self.timers:
            args = [str(item) for pair in self.timers.items() for item in pair]
            try:
                self.command("SENTINEL", "DEBUG", *args)
            except RedisReplyError:
                pass  # Redis < 7.0: no SENTINEL DEBUG; the defaults are slower, not wrong
        return self

    # ---------------------------------------------------------------- queries

    def primary_address(self) -> Address | None:
        """``SENTINEL GET-MASTER-ADDR-BY-NAME``: where this Sentinel sends clients."""
        reply = self.command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service_name)
        if not isinstance(reply, list) or len(reply) != 2:
            return None
        return (str(reply[0]), int(str(reply[1])))

    def primary_state(self) -> dict[str, str]:
        """``SENTINEL MASTER <name>`` as a dict (flags, num-slaves, ...)."""
        return _pairs(self.command("SENTINEL", "MASTER", self.service_name))

    def replicas_state(self) -> list[dict[str, str]]:
        """``SENTINEL REPLICAS <name>``: one dict per replica it knows."""
        reply = self.command("SENTINEL", "REPLICAS", self.service_name)
        return [_pairs(item) for item in reply] if isinstance(reply, list) else []

    def sentinels_state(self) -> list[dict[str, str]]:
        """``SENTINEL SENTINELS <name>``: one dict per other Sentinel it knows."""
        reply = self.command("SENTINEL", "SENTINELS", self.service_name)
        return [_pairs(item) for item in reply] if isinstance(reply, list) else []


class SentinelTopology:
    """One primary, ``replicas`` replicas and ``sentinels`` Sentinels.

    ``start()`` returns once the replicas are in sync and every Sentinel
    knows the primary, every replica and every other Sentinel.  The changes
    (:meth:`failover`, :meth:`kill_primary`, :meth:`restart_node`,
    :meth:`stop_sentinel`, :meth:`start_sentinel`) return once the servers
    report them done; :meth:`ensure_healthy` brings everything back.

    Addresses are ``(host, port)``; with ``tls`` every process is TLS-only
    and the ports are TLS ports (the harness itself talks over unix
    sockets).  ``password`` protects the data nodes (``requirepass``,
    ``masterauth``, ``sentinel auth-pass``); ``sentinel_password`` the
    Sentinels (``requirepass`` and ``sentinel sentinel-pass``).
    ``parallel_syncs`` defaults to all replicas at once.
    """

    def __init__(
        self,
        *,
        service_name: str = "mymaster",
        replicas: int = 2,
        sentinels: int = 3,
        quorum: int | None = None,
        down_after_ms: int = 500,
        failover_timeout_ms: int = 3000,
        parallel_syncs: int | None = None,
        password: str | None = None,
        sentinel_password: str | None = None,
        tls: TLSCertificates | None = None,
        tls_auth_clients: AuthClients = "no",
        timers: Mapping[str, int] = FAST_SENTINEL_TIMERS,
        wait_timeout: float = 30.0,
        executable: str | None = None,
    ) -> None:
        if replicas < 1 or sentinels < 1:
            raise ValueError("a Sentinel topology needs at least one replica and one Sentinel")
        self.service_name = service_name
        self.wait_timeout = wait_timeout
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self._group = ReplicationGroup(
            replicas,
            password=password,
            tls=tls,
            tls_auth_clients=tls_auth_clients,
            wait_timeout=wait_timeout,
            executable=executable,
        )
        #: The data nodes; ``nodes[0]`` is the first primary.  Fixed order.
        self.nodes: list[RedisServer] = self._group.nodes
        sentinel_tls = tls.server_tls(auth_clients=tls_auth_clients) if tls else None
        #: The Sentinels, in a fixed order (``stop_sentinel(i)`` counts in it).
        self.sentinels: list[SentinelServer] = [
            SentinelServer(
                service_name,
                self.nodes[0].address,
                quorum=sentinels // 2 + 1 if quorum is None else quorum,
                down_after_ms=down_after_ms,
                failover_timeout_ms=failover_timeout_ms,
                parallel_syncs=replicas if parallel_syncs is None else parallel_syncs,
                auth_pass=password,
                password=sentinel_password,
                tls=sentinel_tls,
                plain_port=tls is None,
                timers=timers,
                executable=executable,
            )
            for _ in range(sentinels)
        ]

    # -------------------------------------------------------------- lifecycle

    def start(self) -> SentinelTopology:
        """Start the data nodes, then the Sentinels; wait until all agree.

        Sentinels start after the replicas are in sync, so their first INFO
        of the primary already lists every replica.
        """
        try:
            self._group.start()
            for sentinel in self.sentinels:
                sentinel.start()
            self.wait_healthy()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop every process (Sentinels first) and delete their directories."""
        for sentinel in self.sentinels:
            sentinel.close()
        self._group.close()

    def __enter__(self) -> SentinelTopology:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ state

    @property
    def sentinel_addresses(self) -> list[Address]:
        """``(host, port)`` of every Sentinel, running or not, in order."""
        return [sentinel.address for sentinel in self.sentinels]

    def _running_sentinels(self) -> list[SentinelServer]:
        running = [sentinel for sentinel in self.sentinels if sentinel.running]
        if not running:
            raise RedisServerError("no Sentinel is running")
        return running

    def primary_address(self) -> Address:
        """The primary's ``(host, port)`` as the first running Sentinel says."""
        address = self._running_sentinels()[0].primary_address()
        if address is None:
            raise RedisServerError(f"the Sentinels do not know {self.service_name!r}")
        return address

    def primary(self) -> RedisServer:
        """The node at :meth:`primary_address`."""
        return self.node_at(self.primary_address())

    def replicas(self) -> list[RedisServer]:
        """The nodes other than :meth:`primary` (running or not)."""
        primary = self.primary()
        return [node for node in self.nodes if node is not primary]

    def node_at(self, address: Sequence[object]) -> RedisServer:
        """The data node listening at ``(host, port)``."""
        return self._group.node_at(address)

    # ---------------------------------------------------------------- waiting

    def _agreed_primary(self) -> RedisServer:
        """The node every running Sentinel names, if it says ROLE master."""
        addresses = {sentinel.primary_address() for sentinel in self._running_sentinels()}
        if len(addresses) != 1:
            raise _NotYet(f"the Sentinels disagree: {sorted(map(str, addresses))}")
        (address,) = addresses
        if address is None:
            raise _NotYet(f"the Sentinels do not know {self.service_name!r}")
        node = self.node_at(address)
        if not node.running or not _role_is(node, "master"):
            raise _NotYet(f"{node!r}, named by every Sentinel, is not a primary")
        return node

    def wait_healthy(self, *, timeout: float | None = None) -> RedisServer:
        """Wait until the topology is settled; return the primary.

        Settled: every running Sentinel names the same primary, which says
        ROLE master; every other running node replicates from it with the
        link up; and every running Sentinel sees the primary healthy (flags
        exactly ``master``, no failover under way), each running replica
        healthy and linked to it, and each other running Sentinel.
        """

        def check() -> RedisServer:
            primary = self._agreed_primary()
            primary_port = primary.address[1]
            replicas = [n for n in self.nodes if n is not primary and n.running]
            for replica in replicas:
                link = _replica_link(replica)
                if link != ("up", primary_port):
                    raise _NotYet(f"{replica!r}: link {link}")
            running = self._running_sentinels()
            for sentinel in running:
                state = sentinel.primary_state()
                if state.get("flags") != "master" or "failover-state" in state:
                    raise _NotYet(f"{sentinel!r} sees the primary as {state.get('flags')}")
                known = {int(r["port"]): r for r in sentinel.replicas_state()}
                for replica in replicas:
                    seen = known.get(replica.address[1])
                    if (
                        seen is None
                        or _flags(seen) != {"slave"}
                        or int(seen.get("master-port", 0)) != primary_port
                        or seen.get("master-link-status") != "ok"
                    ):
                        raise _NotYet(f"{sentinel!r} sees {replica!r} as {seen}")
                peers = {int(s["port"]): s for s in sentinel.sentinels_state()}
                for other in running:
                    if other is sentinel:
                        continue
                    seen = peers.get(other.address[1])
                    if seen is None or _flags(seen) != {"sentinel"}:
                        raise _NotYet(f"{sentinel!r} sees Sentinel {other!r} as {seen}")
            return primary

        return _wait_until(check, self._timeout(timeout), "a settled Sentinel topology")

    def _timeout(self, timeout: float | None) -> float:
        return self.wait_timeout if timeout is None else timeout

    def _wait_new_primary(self, old: Address, timeout: float | None, what: str) -> RedisServer:
        """Wait until every running Sentinel names one primary other than ``old``."""

        def check() -> RedisServer:
            primary = self._agreed_primary()
            if primary.address[1] == old[1]:
                raise _NotYet(f"the Sentinels still name {old}")
            return primary

        return _wait_until(check, self._timeout(timeout), what)

    # -------------------------------------------------------------- changes

    def failover(self, *, timeout: float | None = None) -> RedisServer:
        """``SENTINEL FAILOVER``; return the new primary once every running
        Sentinel names it and it says ROLE master.

        The old primary is still being turned into a replica when this
        returns; :meth:`wait_healthy` waits for that too.
        """
        old = self.primary_address()
        sentinel = self._running_sentinels()[0]

        def ask() -> None:
            try:
                sentinel.command("SENTINEL", "FAILOVER", self.service_name)
            except RedisReplyError as exc:
                # NOGOODSLAVE until the Sentinel has fresh INFO from a
                # replica; INPROG while an earlier failover finishes.
                if "NOGOODSLAVE" in str(exc) or "INPROG" in str(exc):
                    raise _NotYet(str(exc)) from exc
                raise RedisServerError(f"SENTINEL FAILOVER failed: {exc}") from exc

        timeout = self._timeout(timeout)
        deadline = time.monotonic() + timeout
        _wait_until(ask, timeout, f"{sentinel!r} accepting SENTINEL FAILOVER")
        remaining = max(deadline - time.monotonic(), 0.0)
        return self._wait_new_primary(old, remaining, "a failover")

    def kill_primary(self, *, timeout: float | None = None) -> RedisServer:
        """SIGKILL the primary; return the replica the Sentinels promote,
        once every running Sentinel names it and it says ROLE master.

        The default deadline allows for Sentinel's rule that one failover
        waits twice ``failover-timeout`` after the previous one it took part in.
        """
        old_node = self.primary()
        old = old_node.address
        old_node.kill()
        if timeout is None:
            timeout = self.wait_timeout + 2 * self.failover_timeout_ms / 1000
        return self._wait_new_primary(old, timeout, f"a failover after killing {old_node!r}")

    def restart_node(self, node: RedisServer, *, timeout: float | None = None) -> RedisServer:
        """Start ``node`` again (stop it first if it runs) and wait until it
        is settled as a replica of the current primary.

        It comes back as an empty standalone server, as a crashed old primary
        would; the Sentinels turn it into a replica (``+convert-to-slave``).
        """
        if node not in self.nodes:
            raise ValueError(f"{node!r} is not a data node of this topology")
        if node.running:
            node.stop()
        node.start()
        self.wait_healthy(timeout=timeout)
        return node

    def stop_sentinel(self, index: int) -> SentinelServer:
        """Stop Sentinel ``index`` (SIGTERM); its configuration is kept."""
        sentinel = self.sentinels[index]
        sentinel.stop()
        return sentinel

    def start_sentinel(self, index: int, *, timeout: float | None = None) -> SentinelServer:
        """Start Sentinel ``index`` again and wait until the topology is settled."""
        sentinel = self.sentinels[index]
        if not sentinel.running:
            sentinel.start()
        self.wait_healthy(timeout=timeout)
        return sentinel

    def ensure_healthy(self, *, timeout: float | None = None) -> RedisServer:
        """Resume, start or restart whatever is paused or stopped, then
        :meth:`wait_healthy`; return the primary.  Cheap when all is well."""
        for server in [*self.nodes, *self.sentinels]:
            if server.paused:
                server.resume()
        for sentinel in self.sentinels:
            if not sentinel.running:
                sentinel.start()
        for node in self.nodes:
            if not node.running:
                node.start()
        return self.wait_healthy(timeout=timeout)

    def flushall(self) -> None:
        """Empty the primary and wait until every running replica is empty too."""
        primary = self.primary()
        _flush_and_wait(primary, [n for n in self.nodes if n is not primary and n.running])
