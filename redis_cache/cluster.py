"""Redis Cluster: the same cache API, each command sent to the node that owns
its key's slot.

``SyncRedisClusterCache`` and ``RedisClusterCache`` subclass the single-node
classes, so everything built on a cache (the decorators, the FastAPI
integration) takes them unchanged. Each node gets an ordinary single-node
client of its own (a pool of blocking connections, or a multiplexer), made
when the node is first needed; the C core computes slots (CRC16 with
``{hash tags}``, the namespace included) and, on a node's client, splits
``get_many`` / ``delete_many`` into one command per key, as the keys one node
holds may sit in different slots, which a single MGET or UNLINK cannot span.

What this module adds is the map from slots to nodes and what a cluster
answers when the map is stale: ``MOVED`` (the slot has a new owner: remember
it, reload the whole map, send again), ``ASK`` (the slot is migrating and
this key already moved: send once to the target after ``ASKING``, map
unchanged), ``TRYAGAIN`` and ``CLUSTERDOWN`` (wait with a bounded backoff,
then send again). A node that cannot be reached or no longer is a primary
reloads the map; a command that is safe to repeat is sent again if the map
then names another owner. See docs/architecture.md, "Redis Cluster".
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from typing import Any, Callable

from . import _core
from .cache import (
    _CLEAR_BATCH,
    RedisCache,
    SyncRedisCache,
    _caller_keys,
    _caller_keys_async,
    _host_port,
    _scan_match,
    _scan_pages,
    _scan_pages_async,
)
from .keyspace import DEFAULT_SCAN_COUNT, check_count
from .errors import (
    ClusterDownError,
    ClusterError,
    ConfigurationError,
    ConnectionError,
    FailoverError,
    PartialWriteError,
    ResponseError,
    TimeoutError,
)

__all__ = ["RedisClusterCache", "SyncRedisClusterCache", "key_slot"]

SLOTS = 16384

#: Redirects (MOVED / ASK) one command follows before giving up.
MAX_REDIRECTS = 5
#: Waits for TRYAGAIN / CLUSTERDOWN: first, doubling, and how many.
_BACKOFF_FIRST = 0.02
_BACKOFF_TRIES = 7  # 0.02 + 0.04 + ... + 1.28: about 2.5 s in all
#: The map is reloaded at most this often (seconds) when errors ask for it.
_REFRESH_INTERVAL = 0.1

Address = tuple[str, int]


def key_slot(key: str | bytes) -> int:
    """The cluster slot of a key as stored (namespace included), as CLUSTER KEYSLOT says."""
    return _core.key_slot(key)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------

#: Single-node options a cluster cannot take.
_NOT_FOR_CLUSTERS = {
    "db": "Redis Cluster has only database 0",
    "unix_socket_path": "cluster nodes are reached over TCP at the addresses they announce",
    "sentinels": "a cluster fails over by itself; Sentinel is not used with it",
    "service_name": "a cluster fails over by itself; Sentinel is not used with it",
}


def _check_nodes(value: object) -> list[Address]:
    if isinstance(value, str):
        value = [item for item in value.split(",") if item.strip()]
    if not isinstance(value, Iterable) or isinstance(value, (bytes, Mapping)):
        raise ConfigurationError(
            "cluster_nodes must be a list of (host, port) pairs or 'host:port,host:port', "
            f"not {type(value).__name__}"
        )
    nodes: list[Address] = []
    for item in value:
        if isinstance(item, str):
            host, sep, port = item.strip().rpartition(":")
            if not sep or not port.isdigit():
                raise ConfigurationError(f"cluster_nodes: {item!r} is not host:port")
            item = (host.strip("[]"), int(port))
        if not (
            isinstance(item, Sequence) and len(item) == 2 and isinstance(item[0], str)
            and isinstance(item[1], int) and 0 < item[1] < 65536
        ):
            raise ConfigurationError(f"cluster_nodes: {item!r} is not a (host, port) pair")
        nodes.append((item[0], item[1]))
    if not nodes:
        raise ConfigurationError("cluster_nodes must name at least one node of the cluster")
    return nodes


def _node_options(options: dict[str, Any]) -> dict[str, Any]:
    for name, why in _NOT_FOR_CLUSTERS.items():
        if options.get(name) not in (None, 0):
            raise ConfigurationError(f"{name} cannot be used with a cluster: {why}")
    return {k: v for k, v in options.items() if k not in _NOT_FOR_CLUSTERS}


# --------------------------------------------------------------------------
# Replies
# --------------------------------------------------------------------------


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _parse_slots(reply: Any, asked: Address) -> list[tuple[int, int, Address]]:
    """(first slot, last slot, primary address) from a CLUSTER SLOTS reply. An
    empty host means the node that was asked (Redis's 'unknown endpoint')."""
    if not isinstance(reply, list):
        raise ClusterError(f"CLUSTER SLOTS answered {type(reply).__name__}, not a list")
    ranges = []
    for entry in reply:
        try:
            first, last, primary = int(entry[0]), int(entry[1]), entry[2]
            host, port = _text(primary[0]), int(primary[1])
        except (TypeError, ValueError, IndexError):
            raise ClusterError(f"CLUSTER SLOTS answered an entry of another shape: {entry!r:.120}") from None
        if host in ("", "?"):
            host = asked[0]
        ranges.append((first, last, (host, port)))
    return ranges


class _Redirect:
    """What a MOVED / ASK / TRYAGAIN / CLUSTERDOWN error reply says."""

    __slots__ = ("kind", "slot", "address")

    def __init__(self, kind: str, slot: int = -1, address: Address | None = None) -> None:
        self.kind = kind
        self.slot = slot
        self.address = address


def _redirect_of(exc: BaseException, asked: Address | None = None) -> _Redirect | None:
    if not isinstance(exc, ResponseError) or isinstance(exc, (FailoverError, PartialWriteError)):
        return None
    message = str(exc)
    word = message.split(" ", 1)[0]
    if word in ("MOVED", "ASK"):
        try:
            _, slot, where = message.split()
            host, _, port = where.rpartition(":")
            if host in ("", "?") and asked is not None:
                host = asked[0]
            return _Redirect(word, int(slot), (host.strip("[]"), int(port)))
        except ValueError:
            return None
    if word in ("TRYAGAIN", "CLUSTERDOWN"):
        return _Redirect(word)
    return None


# Commands whose every argument after the name is a key, those whose keys
# alternate with values, and those with a key count: what execute_command
# checks for CROSSSLOT before sending. Others are routed by their first
# argument, and keyless ones go to any primary.
_ALL_KEYS = frozenset(
    b"DEL UNLINK EXISTS TOUCH MGET WATCH SINTER SUNION SDIFF PFCOUNT PFMERGE "
    b"SINTERSTORE SUNIONSTORE SDIFFSTORE RENAME RENAMENX SMOVE RPOPLPUSH LMOVE "
    b"BLPOP BRPOP BLMOVE BRPOPLPUSH".split()
)
_KEY_VALUE_PAIRS = frozenset(b"MSET MSETNX".split())
_NUMKEYS_AT_2 = frozenset(b"EVAL EVALSHA EVAL_RO EVALSHA_RO FCALL FCALL_RO".split())
_KEYLESS = frozenset(
    b"PING ECHO INFO TIME DBSIZE CLUSTER CONFIG CLIENT COMMAND SCRIPT FUNCTION FLUSHALL "
    b"FLUSHDB LASTSAVE ROLE MEMORY SLOWLOG LATENCY RANDOMKEY SCAN KEYS HELLO AUTH "
    b"WAIT PUBLISH".split()
)


def _as_bytes(arg: Any) -> bytes:
    if isinstance(arg, bytes):
        return arg
    return str(arg).encode("utf-8", "surrogateescape")


def _command_keys(args: Sequence[Any]) -> list[bytes] | None:
    """The keys of a raw command, or None for a keyless one."""
    name = _as_bytes(args[0]).upper()
    rest = args[1:]
    if name in _KEYLESS or not rest:
        return None
    if name in _ALL_KEYS:
        if name in (b"BLPOP", b"BRPOP"):
            rest = rest[:-1]  # the timeout
        elif name in (b"BLMOVE", b"LMOVE", b"SMOVE"):
            rest = rest[:2]
        return [_as_bytes(k) for k in rest]
    if name in _KEY_VALUE_PAIRS:
        return [_as_bytes(k) for k in rest[::2]]
    if name in _NUMKEYS_AT_2:
        try:
            count = int(rest[1])
        except (IndexError, ValueError, TypeError):
            return None
        return [_as_bytes(k) for k in rest[2 : 2 + count]] or None
    return [_as_bytes(rest[0])]


def _slot_of_command(args: Sequence[Any]) -> int | None:
    keys = _command_keys(args)
    if keys is None:
        return None
    slots = {_core.key_slot(k) for k in keys}
    if len(slots) > 1:
        raise ClusterError(
            f"CROSSSLOT: {_text(_as_bytes(args[0])).upper()} names keys in {len(slots)} "
            "different slots, which one cluster node cannot serve together; nothing was sent. "
            "Give the keys a common {hash tag} (user:{42}:a, user:{42}:b) or send one command "
            "per key"
        )
    return slots.pop()


def _batch_keys(keys: Any, name: str) -> list[Any]:
    if isinstance(keys, (str, bytes)):
        raise TypeError(f"{name}() takes an iterable of keys, not a single {type(keys).__name__} key")
    return list(keys)


def _merge_partial(
    written: list[Any], failed: dict[Any, BaseException], total: int
) -> PartialWriteError:
    first = next(iter(failed.values()))
    return PartialWriteError(
        f"set_many: {len(failed)} of the {total} keys were not stored and {len(written)} were "
        f"(first failure: {first}); the error's .failed and .written say which",
        written,
        failed,  # type: ignore[arg-type]
    )


# --------------------------------------------------------------------------
# The slot map, shared by both classes
# --------------------------------------------------------------------------


class _ClusterMap:
    """Which node client serves each slot, the clients themselves, and the
    seeds to ask when no known node answers."""

    def __init__(self, seeds: list[Address], make_client: Callable[[Address], Any]) -> None:
        self.seeds = seeds
        self._make_client = make_client
        self.clients: dict[Address, Any] = {}
        self.ask_clients: dict[Address, Any] = {}
        self.owners: list[Any] = [None] * SLOTS
        self.primaries: list[Address] = []
        self.loaded = False
        self.loaded_at = 0.0
        self.lock = threading.Lock()  # one map load at a time (sync)
        self.ask_lock = threading.Lock()  # one ASKING at a time per cache (sync)

    def client(self, address: Address) -> Any:
        client = self.clients.get(address)
        if client is None:
            client = self.clients[address] = self._make_client(address)
        return client

    def ask_client(self, address: Address) -> Any:
        """A second client per node, only for commands after an ASK: the
        ASKING flag it carries can then reach no other caller's command."""
        client = self.ask_clients.get(address)
        if client is None:
            client = self.ask_clients[address] = self._make_client(address)
        return client

    def candidates(self) -> list[Address]:
        """Where to ask for the map: known primaries first, then the seeds."""
        seen: list[Address] = []
        for address in [*self.primaries, *self.seeds, *self.clients]:
            if address not in seen:
                seen.append(address)
        return seen

    def apply(self, ranges: list[tuple[int, int, Address]]) -> None:
        owners: list[Any] = [None] * SLOTS
        primaries: list[Address] = []
        for first, last, address in ranges:
            client = self.client(address)
            if address not in primaries:
                primaries.append(address)
            for slot in range(max(first, 0), min(last, SLOTS - 1) + 1):
                owners[slot] = client
        self.owners = owners
        self.primaries = primaries
        self.loaded = True
        self.loaded_at = time.monotonic()

    def moved(self, slot: int, address: Address) -> None:
        self.owners[slot] = self.client(address)
        if address not in self.primaries:
            self.primaries.append(address)

    def due(self) -> bool:
        return time.monotonic() - self.loaded_at >= _REFRESH_INTERVAL

    def unserved(self, slot: int) -> ClusterDownError:
        return ClusterDownError(
            f"CLUSTERDOWN: no node serves slot {slot} in the cluster's map (a shard lost "
            "its primary and has no replica to promote?)"
        )

    def clients_in_use(self) -> list[Any]:
        return [*self.clients.values(), *self.ask_clients.values()]


def _no_map_error(errors: list[str]) -> ConnectionError:
    return ConnectionError(
        "no cluster node answered CLUSTER SLOTS ("
        + "; ".join(errors)
        + "); check cluster_nodes and that the nodes run with cluster-enabled yes"
    )


# The single-node methods, called on a node's client.
_SYNC = SyncRedisCache
_ASYNC = RedisCache


def _sync_command(client: Any, args: tuple[Any, ...], idempotent: bool) -> Any:
    return SyncRedisCache.execute_command(client, *args, idempotent=idempotent)


def _async_command(client: Any, args: tuple[Any, ...], idempotent: bool) -> Any:
    return RedisCache.execute_command(client, *args, idempotent=idempotent)


def _cluster_init(self: Any, cluster_nodes: Any, options: dict[str, Any], base: type) -> None:
    seeds = _check_nodes(cluster_nodes)
    options = {k: v for k, v in options.items() if k not in ("host", "port")}
    node_options = _node_options(options)
    host, port = seeds[0]
    base.__init__(self, host=host, port=port, **node_options)
    self._init_kwargs["cluster_nodes"] = seeds
    # Every node's client shares this cache's circuit breaker and settings.
    node_options["circuit_breaker"] = self._circuit_breaker

    def make_client(address: Address) -> Any:
        client = base(host=address[0], port=address[1], **node_options)
        client._as_cluster_node()
        return client

    self._map = _ClusterMap(seeds, make_client)


def _describe_cluster(self: Any) -> str:
    nodes = ",".join(_host_port(*a) for a in self._map.primaries or self._map.seeds)
    scheme = "rediss+cluster" if self._settings.ssl else "redis+cluster"
    ns = f" namespace={self._namespace!r}" if self._namespace else ""
    return f"<{type(self).__name__} {scheme}://{nodes}{ns} {'closed' if self.closed else 'open'}>"


# --------------------------------------------------------------------------
# Blocking
# --------------------------------------------------------------------------


class SyncRedisClusterCache(SyncRedisCache):

    """A blocking cache over a Redis Cluster: ``SyncRedisCache``'s API, each key
    sent to the node that owns its slot.

    ``cluster_nodes`` lists some nodes (``[("10.0.0.1", 6379), ...]`` or
    ``"host:port,host:port"``); the rest are learnt from them. Every other
    option is a ``SyncRedisCache`` option and applies to each node
    (credentials, TLS, timeouts, ``max_connections`` per node). Keys that
    must be on one node together (for a script, a transaction) share a
    ``{hash tag}``.
    """

    _is_cluster = True

    def __init__(self, cluster_nodes: Any = None, **options: Any) -> None:
        if cluster_nodes is None:
            raise ConfigurationError(
                "cluster_nodes is required: some nodes of the cluster, as "
                "[('host', port), ...] or 'host:port,host:port'"
            )
        _cluster_init(self, cluster_nodes, options, SyncRedisCache)

    __repr__ = _describe_cluster

    def _twin(self, kind: type) -> Any:
        return SyncRedisCache._twin(self, RedisClusterCache if issubclass(kind, RedisCache) else
                                    SyncRedisClusterCache)

    # -- the map

    def _refresh(self, *, force: bool = False) -> None:
        cmap = self._map
        with cmap.lock:
            if cmap.loaded and not force and not cmap.due():
                return
            errors = []
            for address in cmap.candidates():
                try:
                    reply = cmap.client(address).execute_command("CLUSTER", "SLOTS", idempotent=True)
                    cmap.apply(_parse_slots(reply, address))
                    return
                except (ConnectionError, TimeoutError, ResponseError) as exc:
                    errors.append(f"{_host_port(*address)}: {exc}")
            raise _no_map_error(errors)

    def _owner(self, slot: int) -> Any:
        client = self._map.owners[slot]
        if client is None:
            self._refresh(force=not self._map.loaded)
            client = self._map.owners[slot]
            if client is None:
                raise self._map.unserved(slot)
        return client

    def _address_of(self, client: Any) -> Address:
        return (client.settings.host, client.settings.port)

    def _send(self, slot: int, method: Callable[..., Any], args: tuple[Any, ...],
              retry_safe: bool = True) -> Any:
        """method(client of the slot's owner, *args), following what the cluster answers."""
        redirects = waits = 0
        client = self._map.owners[slot] or self._owner(slot)
        while True:
            try:
                return method(client, *args)
            except (ConnectionError, TimeoutError, FailoverError):
                # The node is gone or stepped down: a new map may name another.
                self._refresh(force=True)
                owner = self._map.owners[slot]
                if not retry_safe or owner is None or owner is client or redirects >= MAX_REDIRECTS:
                    raise
                redirects += 1
                client = owner
            except ResponseError as exc:
                redirect = _redirect_of(exc, self._address_of(client))
                if redirect is None:
                    raise
                if redirect.kind in ("TRYAGAIN", "CLUSTERDOWN"):
                    if waits >= _BACKOFF_TRIES:
                        raise (ClusterDownError if redirect.kind == "CLUSTERDOWN" else ClusterError)(
                            f"{exc} (still so after {waits} waits)") from exc
                    time.sleep(_BACKOFF_FIRST * (1 << waits))
                    waits += 1
                    if redirect.kind == "CLUSTERDOWN":
                        self._refresh(force=True)
                    client = self._owner(slot)
                    continue
                redirects += 1
                if redirects > MAX_REDIRECTS:
                    raise ClusterError(f"{exc}: more than {MAX_REDIRECTS} redirects; gave up") from exc
                assert redirect.address is not None
                if redirect.kind == "ASK":
                    target = self._map.ask_client(redirect.address)
                    with self._map.ask_lock:
                        target._ask_next()
                        try:
                            return method(target, *args)
                        except ResponseError as again:
                            if _redirect_of(again) is None:
                                raise
                    client = self._owner(slot)  # the migration moved on: start over
                    continue
                self._map.moved(redirect.slot, redirect.address)
                self._refresh()
                client = self._owner(slot)

    # -- the cache's methods

    def get(self, key: Any, default: Any = None, model: Any = None) -> Any:
        return self._send(self._key_slot(key), _SYNC.get, (key, default, model))

    def set(self, key: Any, value: Any, ttl: Any = None, *, tags: Any = None) -> bool:
        if tags is not None:
            return self.set_tagged(key, value, tags, ttl)  # type: ignore[no-any-return]
        return self._send(self._key_slot(key), _SYNC.set, (key, value, ttl))  # type: ignore[no-any-return]

    def delete(self, key: Any) -> bool:
        return self._send(self._key_slot(key), _SYNC.delete, (key,))  # type: ignore[no-any-return]

    def exists(self, key: Any) -> bool:
        return self._send(self._key_slot(key), _SYNC.exists, (key,))  # type: ignore[no-any-return]

    def ttl(self, key: Any) -> int:
        return self._send(self._key_slot(key), _SYNC.ttl, (key,))  # type: ignore[no-any-return]

    def expire(self, key: Any, ttl: Any) -> bool:
        return self._send(self._key_slot(key), _SYNC.expire, (key, ttl))  # type: ignore[no-any-return]

    def incr(self, key: Any, amount: int = 1) -> int:
        # Not sent twice: it would add twice.
        return self._send(self._key_slot(key), _SYNC.incr, (key, amount), retry_safe=False)  # type: ignore[no-any-return]

    def ping(self) -> bool:
        self._refresh(force=not self._map.loaded)
        return all(self._map.client(a).ping() for a in list(self._map.primaries))

    def _by_slot(self, keys: list[Any]) -> dict[int, list[Any]]:
        groups: dict[int, list[Any]] = {}
        for key in keys:
            groups.setdefault(self._key_slot(key), []).append(key)
        return groups

    def _by_node(self, keys: list[Any]) -> list[tuple[int, list[Any]]]:
        """Keys grouped by the node that owns them: (a slot of that node, keys)."""
        if not self._map.loaded:
            self._refresh(force=True)
        nodes: dict[int, tuple[int, list[Any]]] = {}
        for slot, group in self._by_slot(keys).items():
            owner = self._owner(slot)
            entry = nodes.get(id(owner))
            if entry is None:
                nodes[id(owner)] = (slot, list(group))
            else:
                entry[1].extend(group)
        return list(nodes.values())

    def _batch(self, keys: list[Any], call: Callable[[Any, list[Any]], Any]) -> list[Any]:
        """call(client, keys) once per node; a node whose keys moved meanwhile
        (a redirect) gets them again one slot at a time, each followed."""
        results = []
        for slot, group in self._by_node(keys):
            try:
                results.append(self._send(slot, call, (group,)))
            except ResponseError as exc:
                if _redirect_of(exc) is None and not isinstance(exc, ClusterError):
                    raise
                for each_slot, each in self._by_slot(group).items():
                    results.append(self._send(each_slot, call, (each,)))
        return results

    def get_many(self, keys: Any, model: Any = None) -> dict[Any, Any]:
        keys = _batch_keys(keys, "get_many")
        found: dict[Any, Any] = {}
        for part in self._batch(keys, lambda c, g: SyncRedisCache.get_many(c, g, model)):
            found.update(part)
        return {key: found[key] for key in keys if key in found}

    def delete_many(self, keys: Any) -> int:
        keys = _batch_keys(keys, "delete_many")
        return sum(self._batch(keys, SyncRedisCache.delete_many))

    def set_many(self, mapping: Any, ttl: Any = None) -> bool:
        items = list(mapping.items() if isinstance(mapping, Mapping) else mapping)
        values = dict(items)
        written: list[Any] = []
        failed: dict[Any, BaseException] = {}
        for slot, group in self._by_node([k for k, _ in items]):
            try:
                self._send(slot, _SYNC.set_many, ({k: values[k] for k in group}, ttl))
                written.extend(group)
            except PartialWriteError as exc:
                written.extend(exc.written)
                for key, error in exc.failed.items():
                    if _redirect_of(error) is None:
                        failed[key] = error
                        continue
                    try:  # moved meanwhile: this key alone, followed
                        self.set(key, values[key], ttl)
                        written.append(key)
                    except Exception as again:  # noqa: BLE001 - reported per key
                        failed[key] = again
            except (ConnectionError, TimeoutError, ResponseError) as exc:
                for key in group:
                    failed[key] = exc
        if failed:
            raise _merge_partial(written, failed, len(items))
        return True

    def execute_command(self, *args: Any, idempotent: bool = False) -> Any:
        if not args:
            raise TypeError("execute_command() needs the command name")
        slot = _slot_of_command(args)
        if slot is None:
            self._refresh(force=not self._map.loaded)
            client = self._map.client(self._map.primaries[0])
            return SyncRedisCache.execute_command(client, *args, idempotent=idempotent)
        return self._send(slot, _sync_command, (args, idempotent), retry_safe=idempotent)

    def execute_on_primaries(self, *args: Any) -> dict[str, Any]:
        """A raw command (INFO, DBSIZE, ...) on every primary: ``{"host:port":
        reply}``. A node that fails gives its exception as its reply."""
        self._refresh(force=not self._map.loaded)
        replies: dict[str, Any] = {}
        for address in list(self._map.primaries):
            try:
                replies[_host_port(*address)] = SyncRedisCache.execute_command(
                    self._map.client(address), *args, idempotent=True)
            except (ConnectionError, TimeoutError, ResponseError) as exc:
                replies[_host_port(*address)] = exc
        return replies

    def clear_pattern(self, pattern: str | bytes) -> int:
        """Deletes this namespace's keys matching ``pattern`` on every primary:
        SCAN on each (one cursor per node), then one UNLINK per key found,
        pipelined to its node."""
        prefix = self._key_prefix
        removed = 0
        for keys in self._scan_primaries(_scan_match(prefix, pattern), _CLEAR_BATCH):
            # One UNLINK per key, pipelined to the node that listed them.
            removed += self.delete_many([key[len(prefix):] for key in keys])
        return removed

    def scan(self, pattern: str | bytes = "*", *, count: int = DEFAULT_SCAN_COUNT) -> Iterator[str]:
        """This namespace's keys matching ``pattern`` on every primary, one
        node after the other. A key whose slot migrates during the walk may
        come twice (once from each node) or, if it moved both ways, not at
        all; so may keys written during it."""
        match, count = _scan_match(self._key_prefix, pattern), check_count(count)
        return _caller_keys(self._scan_primaries(match, count), len(self._key_prefix))

    def _scan_primaries(self, match: bytes, count: int) -> Iterator[list[bytes]]:
        """SCAN pages of every primary in turn (one cursor per node)."""
        self._refresh(force=not self._map.loaded)
        return itertools.chain.from_iterable(
            _scan_pages(functools.partial(SyncRedisCache.execute_command, self._map.client(a)),
                        self._key_prefix, match, count)
            for a in list(self._map.primaries)
        )

    def close(self) -> None:
        for client in self._map.clients_in_use():
            client.close()
        super().close()


# --------------------------------------------------------------------------
# Async
# --------------------------------------------------------------------------


class RedisClusterCache(RedisCache):

    """An asyncio cache over a Redis Cluster: ``RedisCache``'s API, each key sent
    to the node that owns its slot, over that node's own multiplexed
    connection. Batches are split by node and sent to every node at once.
    Options as for :class:`SyncRedisClusterCache`."""

    _is_cluster = True

    def __init__(self, cluster_nodes: Any = None, **options: Any) -> None:
        if cluster_nodes is None:
            raise ConfigurationError(
                "cluster_nodes is required: some nodes of the cluster, as "
                "[('host', port), ...] or 'host:port,host:port'"
            )
        _cluster_init(self, cluster_nodes, options, RedisCache)
        self._refreshing: asyncio.Future[None] | None = None

    __repr__ = _describe_cluster

    def _twin(self, kind: type) -> Any:
        return RedisCache._twin(self, SyncRedisClusterCache if issubclass(kind, SyncRedisCache)
                                else RedisClusterCache)

    # -- the map

    async def _refresh(self, *, force: bool = False) -> None:
        cmap = self._map
        if cmap.loaded and not force and not cmap.due():
            return
        if self._refreshing is not None and not self._refreshing.done():
            # One load at a time; the others wait for it.
            await asyncio.shield(self._refreshing)
            return
        self._refreshing = asyncio.get_running_loop().create_future()
        try:
            errors = []
            for address in cmap.candidates():
                try:
                    reply = await cmap.client(address).execute_command("CLUSTER", "SLOTS", idempotent=True)
                    cmap.apply(_parse_slots(reply, address))
                    return
                except (ConnectionError, TimeoutError, ResponseError) as exc:
                    errors.append(f"{_host_port(*address)}: {exc}")
            raise _no_map_error(errors)
        finally:
            self._refreshing.set_result(None)

    async def _owner(self, slot: int) -> Any:
        client = self._map.owners[slot]
        if client is None:
            await self._refresh(force=not self._map.loaded)
            client = self._map.owners[slot]
            if client is None:
                raise self._map.unserved(slot)
        return client

    async def _send(self, slot: int, method: Callable[..., Any], args: tuple[Any, ...],
                    retry_safe: bool = True) -> Any:
        """await method(client of the slot's owner, *args), following what the
        cluster answers."""
        redirects = waits = 0
        client = self._map.owners[slot] or await self._owner(slot)
        while True:
            try:
                return await method(client, *args)
            except (ConnectionError, TimeoutError, FailoverError):
                await self._refresh(force=True)
                owner = self._map.owners[slot]
                if not retry_safe or owner is None or owner is client or redirects >= MAX_REDIRECTS:
                    raise
                redirects += 1
                client = owner
            except ResponseError as exc:
                redirect = _redirect_of(exc, (client.settings.host, client.settings.port))
                if redirect is None:
                    raise
                if redirect.kind in ("TRYAGAIN", "CLUSTERDOWN"):
                    if waits >= _BACKOFF_TRIES:
                        raise (ClusterDownError if redirect.kind == "CLUSTERDOWN" else ClusterError)(
                            f"{exc} (still so after {waits} waits)") from exc
                    await asyncio.sleep(_BACKOFF_FIRST * (1 << waits))
                    waits += 1
                    if redirect.kind == "CLUSTERDOWN":
                        await self._refresh(force=True)
                    client = await self._owner(slot)
                    continue
                redirects += 1
                if redirects > MAX_REDIRECTS:
                    raise ClusterError(f"{exc}: more than {MAX_REDIRECTS} redirects; gave up") from exc
                assert redirect.address is not None
                if redirect.kind == "ASK":
                    target = self._map.ask_client(redirect.address)
                    # No await between the flag and the call that takes it.
                    target._ask_next()
                    try:
                        return await method(target, *args)
                    except ResponseError as again:
                        if _redirect_of(again) is None:
                            raise
                    client = await self._owner(slot)
                    continue
                self._map.moved(redirect.slot, redirect.address)
                await self._refresh()
                client = await self._owner(slot)

    # -- the cache's methods

    # Plain functions returning _send's coroutine: one frame less per call.
    def get(self, key: Any, default: Any = None, model: Any = None) -> Any:
        return self._send(self._key_slot(key), _ASYNC.get, (key, default, model))

    def set(self, key: Any, value: Any, ttl: Any = None, *, tags: Any = None) -> Any:
        if tags is not None:
            return self.set_tagged(key, value, tags, ttl)
        return self._send(self._key_slot(key), _ASYNC.set, (key, value, ttl))

    def delete(self, key: Any) -> Any:
        return self._send(self._key_slot(key), _ASYNC.delete, (key,))

    def exists(self, key: Any) -> Any:
        return self._send(self._key_slot(key), _ASYNC.exists, (key,))

    def ttl(self, key: Any) -> Any:
        return self._send(self._key_slot(key), _ASYNC.ttl, (key,))

    def expire(self, key: Any, ttl: Any) -> Any:
        return self._send(self._key_slot(key), _ASYNC.expire, (key, ttl))

    def incr(self, key: Any, amount: int = 1) -> Any:
        return self._send(self._key_slot(key), _ASYNC.incr, (key, amount), retry_safe=False)

    async def ping(self) -> bool:
        await self._refresh(force=not self._map.loaded)
        replies = await asyncio.gather(*(self._map.client(a).ping() for a in list(self._map.primaries)))
        return all(replies)

    async def connect(self) -> None:
        await self.ping()

    def _by_slot(self, keys: list[Any]) -> dict[int, list[Any]]:
        groups: dict[int, list[Any]] = {}
        for key in keys:
            groups.setdefault(self._key_slot(key), []).append(key)
        return groups

    async def _by_node(self, keys: list[Any]) -> list[tuple[int, list[Any]]]:
        if not self._map.loaded:
            await self._refresh(force=True)
        nodes: dict[int, tuple[int, list[Any]]] = {}
        owners = self._map.owners
        for slot, group in self._by_slot(keys).items():
            owner = owners[slot] or await self._owner(slot)
            entry = nodes.get(id(owner))
            if entry is None:
                nodes[id(owner)] = (slot, list(group))
            else:
                entry[1].extend(group)
        return list(nodes.values())

    async def _node_batch(self, slot: int, group: list[Any], call: Callable[[Any, list[Any]], Any]) -> list[Any]:
        try:
            return [await self._send(slot, call, (group,))]
        except ResponseError as exc:
            if _redirect_of(exc) is None and not isinstance(exc, ClusterError):
                raise
            # Keys of this node moved meanwhile: one slot at a time, each followed.
            parts = self._by_slot(group).items()
            return list(await asyncio.gather(
                *(self._send(s, call, (g,)) for s, g in parts)
            ))

    async def _batch(self, keys: list[Any], call: Callable[[Any, list[Any]], Any]) -> list[Any]:
        per_node = await asyncio.gather(
            *(self._node_batch(slot, group, call) for slot, group in await self._by_node(keys))
        )
        return [part for parts in per_node for part in parts]

    async def get_many(self, keys: Any, model: Any = None) -> dict[Any, Any]:
        keys = _batch_keys(keys, "get_many")
        found: dict[Any, Any] = {}
        for part in await self._batch(keys, lambda c, g: RedisCache.get_many(c, g, model)):
            found.update(part)
        return {key: found[key] for key in keys if key in found}

    async def delete_many(self, keys: Any) -> int:
        keys = _batch_keys(keys, "delete_many")
        return sum(await self._batch(keys, RedisCache.delete_many))

    async def set_many(self, mapping: Any, ttl: Any = None) -> bool:
        items = list(mapping.items() if isinstance(mapping, Mapping) else mapping)
        values = dict(items)
        written: list[Any] = []
        failed: dict[Any, BaseException] = {}

        async def node(slot: int, group: list[Any]) -> None:
            try:
                await self._send(slot, _ASYNC.set_many, ({k: values[k] for k in group}, ttl))
                written.extend(group)
            except PartialWriteError as exc:
                written.extend(exc.written)
                for key, error in exc.failed.items():
                    if _redirect_of(error) is None:
                        failed[key] = error
                        continue
                    try:
                        await self.set(key, values[key], ttl)
                        written.append(key)
                    except Exception as again:  # noqa: BLE001 - reported per key
                        failed[key] = again
            except (ConnectionError, TimeoutError, ResponseError) as exc:
                for key in group:
                    failed[key] = exc

        await asyncio.gather(*(node(slot, group) for slot, group in await self._by_node([k for k, _ in items])))
        if failed:
            raise _merge_partial(written, failed, len(items))
        return True

    async def execute_command(self, *args: Any, idempotent: bool = False) -> Any:
        if not args:
            raise TypeError("execute_command() needs the command name")
        slot = _slot_of_command(args)
        if slot is None:
            await self._refresh(force=not self._map.loaded)
            client = self._map.client(self._map.primaries[0])
            return await RedisCache.execute_command(client, *args, idempotent=idempotent)
        return await self._send(slot, _async_command, (args, idempotent), retry_safe=idempotent)

    async def execute_on_primaries(self, *args: Any) -> dict[str, Any]:
        """A raw command (INFO, DBSIZE, ...) on every primary at once:
        ``{"host:port": reply}``; a node that fails gives its exception."""
        await self._refresh(force=not self._map.loaded)
        addresses = list(self._map.primaries)
        replies = await asyncio.gather(
            *(RedisCache.execute_command(self._map.client(a), *args, idempotent=True)
              for a in addresses),
            return_exceptions=True,
        )
        return {_host_port(*a): r for a, r in zip(addresses, replies)}

    async def clear_pattern(self, pattern: str | bytes) -> int:
        """Deletes this namespace's keys matching ``pattern`` on every primary at
        once: SCAN on each (one cursor per node), then one UNLINK per key
        found, pipelined to its node."""
        await self._refresh(force=not self._map.loaded)
        prefix = self._key_prefix
        match = _scan_match(prefix, pattern)

        async def clear_node(client: Any) -> int:
            removed = 0
            async for keys in _scan_pages_async(functools.partial(RedisCache.execute_command, client),
                                                prefix, match, _CLEAR_BATCH):
                removed += await self.delete_many([key[len(prefix):] for key in keys])
            return removed

        counts = await asyncio.gather(*(clear_node(self._map.client(a)) for a in list(self._map.primaries)))
        return sum(counts)

    def scan(self, pattern: str | bytes = "*", *,
             count: int = DEFAULT_SCAN_COUNT) -> AsyncIterator[str]:
        """This namespace's keys matching ``pattern`` on every primary, one
        node after the other. A key whose slot migrates during the walk may
        come twice (once from each node) or, if it moved both ways, not at
        all; so may keys written during it."""
        match, count = _scan_match(self._key_prefix, pattern), check_count(count)
        return _caller_keys_async(self._scan_primaries(match, count), len(self._key_prefix))

    async def _scan_primaries(self, match: bytes, count: int) -> AsyncIterator[list[bytes]]:
        """SCAN pages of every primary in turn (one cursor per node)."""
        await self._refresh(force=not self._map.loaded)
        for address in list(self._map.primaries):
            execute = functools.partial(RedisCache.execute_command, self._map.client(address))
            async for keys in _scan_pages_async(execute, self._key_prefix, match, count):
                yield keys

    @contextlib.asynccontextmanager
    async def dedicated(self, key: Any = None) -> AsyncIterator[Any]:
        """A connection of your own to the node that owns ``key``'s slot (any
        primary without one): for a transaction, WATCH or a blocking command
        on keys of that one slot."""
        if key is None:
            await self._refresh(force=not self._map.loaded)
            client = self._map.client(self._map.primaries[0])
        else:
            client = await self._owner(self._key_slot(key))
        async with RedisCache.dedicated(client) as conn:
            yield conn

    async def close(self) -> None:
        for client in self._map.clients_in_use():
            await client.close()
        await super().close()
