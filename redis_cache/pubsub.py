"""Pub/sub: ``publish`` through the cache's serializer, and subscriptions on
connections of their own.

A subscribed connection receives messages nobody asked for, so it can never
carry the cache's commands: every subscription (one ``subscribe()`` call and
the channels added to it later) opens its own connection per node, with the
cache's settings (AUTH, TLS, unix socket, the primary the Sentinels name).
The C core reads and parses (hiredis); this module keeps the state machine:
which names are wanted, which confirmations are due, the bounded queue, and
resubscribing after the connection is lost. See docs/architecture.md,
"Pub/sub".

Channels are not put in the cache's namespace: a channel is a meeting point
between programs that need not share a namespace (a worker written in
another language, ``redis-cli``), and patterns would have to be escaped.
Name your channels as you wish (``app:orders``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import os
import select
import threading
import time
import warnings
import weakref
from collections.abc import Iterable, Iterator
from typing import Any, Union

from . import _core
from .errors import ConnectionError, ResponseError, TimeoutError

__all__ = [
    "DEFAULT_MAX_QUEUED",
    "ClusterSubscription",
    "Message",
    "Subscription",
    "SyncClusterSubscription",
    "SyncSubscription",
]

_log = logging.getLogger("redis_cache")

#: Messages a subscription holds before it drops the oldest.
DEFAULT_MAX_QUEUED = 10_000

#: How often an idle subscriber connection is checked with a PING (seconds).
DEFAULT_HEALTH_CHECK_INTERVAL = 30.0

Name = Union[str, bytes]

#: What each kind of name is subscribed and unsubscribed with, and the
#: first element of the server's confirmations.
_KINDS = {
    "channel": (b"SUBSCRIBE", b"UNSUBSCRIBE", b"subscribe", b"unsubscribe"),
    "pattern": (b"PSUBSCRIBE", b"PUNSUBSCRIBE", b"psubscribe", b"punsubscribe"),
    "shard": (b"SSUBSCRIBE", b"SUNSUBSCRIBE", b"ssubscribe", b"sunsubscribe"),
}


@dataclasses.dataclass(frozen=True)
class Message:
    """One thing a subscription delivers.

    ``kind`` is ``"message"`` (a plain channel), ``"pmessage"`` (through a
    pattern: ``pattern`` says which), ``"smessage"`` (a shard channel), or
    ``"reconnected"``: the connection was lost and is subscribed again, and
    messages published in between were missed (``channel``, ``data`` None).

    ``data`` is the value decoded with the cache's serializer, as ``get``
    would return it. A message that does not decode (published by a program
    that does not use the serializer) is still delivered: ``data`` is then
    the raw bytes and ``decode_error`` the exception, rather than the
    iteration failing for everyone over one foreign message.

    Names are ``str`` when they are UTF-8 (as they are when given as
    ``str``), bytes otherwise.
    """

    kind: str
    channel: Name | None
    data: Any
    pattern: Name | None = None
    decode_error: Exception | None = None


def _name(value: Any, what: str) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    if isinstance(value, bytes):
        return value
    raise TypeError(f"a {what} must be str or bytes, not {type(value).__name__}")


def _names(values: Any, what: str) -> list[bytes]:
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{what}s must be a list of names, not a single {type(values).__name__}")
    try:
        items = list(values)
    except TypeError:
        raise TypeError(f"{what}s must be a list of names, not {type(values).__name__}") from None
    return [_name(v, what) for v in items]


def _shown(name: bytes) -> Name:
    try:
        return name.decode("utf-8")
    except UnicodeDecodeError:
        return name


def publish_args(cache: Any, command: str, channel: Any, value: Any) -> tuple[Any, ...]:
    """The PUBLISH / SPUBLISH command for a value, encoded as ``set`` would."""
    return (command, _name(channel, "channel"), cache._encode_value(value))


def _key_slot(name: bytes) -> int:
    return _core.key_slot(name)  # type: ignore[attr-defined,no-any-return]


# --------------------------------------------------------------------------
# What both kinds of subscription share
# --------------------------------------------------------------------------


class _Ack:
    """A confirmation due from the server: the names of one command, or a
    pong (the PING sent after a link's subscriptions, whose answer says all
    of them were confirmed). ``waiter`` (async) completes with it."""

    __slots__ = ("reply_kind", "names", "waiter", "error", "done", "user", "then", "gap_end")

    def __init__(self, reply_kind: bytes, names: Iterable[bytes], user: bool = False) -> None:
        self.reply_kind = reply_kind
        self.names = set(names)
        self.waiter: Any = None
        self.error: BaseException | None = None
        self.done = False
        #: Asked for by the user (subscribe/unsubscribe), not a resubscription.
        self.user = user
        #: An ack that completes with this one (a user's SSUBSCRIBE that was
        #: answered MOVED and is sent again at the slot's owner).
        self.then: _Ack | None = None
        #: Its confirmation ends a gap (a shard channel subscribed again where
        #: its slot moved): "reconnected" is reported then.
        self.gap_end = False


class _Link:
    """One connection of a subscription, to one node, and the names it
    carries (a cluster's shard channels take one link per node)."""

    def __init__(self, node: Any, sharded: bool) -> None:
        from .cache import _Backoff

        #: None: the cache's own address (the Sentinels' primary included);
        #: else a cluster node's (host, port).
        self.node = node
        #: Carries shard channels (which follow their slot), or plain
        #: channels and patterns (which any node serves): never both.
        self.sharded = sharded
        self.names: dict[str, set[bytes]] = {kind: set() for kind in _KINDS}
        self.acks: collections.deque[_Ack] = collections.deque()
        self.conn: Any = None
        #: Subscribed (the pong after the subscriptions came).
        self.ready = False
        #: Lost after it had been subscribed: the next confirmed
        #: resubscription is reported as a gap's end.
        self.lost = False
        self.backoff = _Backoff()
        self.last_reply = time.monotonic()
        self.ping_sent: float | None = None
        #: When the current connection was opened (monotonic), for one that
        #: never gets subscribed (a server that accepts and stays silent).
        self.opened_at = 0.0

    def empty(self) -> bool:
        return not any(self.names.values())

    def commands(self) -> list[tuple[tuple[bytes, ...], _Ack]]:
        """What subscribes a new connection to all the link's names, then a
        PING whose pong says every confirmation before it came."""
        out: list[tuple[tuple[bytes, ...], _Ack]] = []
        for kind, names in self.names.items():
            if not names:
                continue
            command, _, confirm, _ = _KINDS[kind]
            if kind == "shard":
                # One per channel: an SSUBSCRIBE takes channels of one slot.
                for name in sorted(names):
                    out.append(((command, name), _Ack(confirm, [name])))
            else:
                ordered = sorted(names)
                out.append(((command, *ordered), _Ack(confirm, ordered)))
        out.append(((b"PING",), _Ack(b"pong", [b""])))
        return out


def _split(channels: Any, patterns: Any, shard_channels: Any) -> dict[str, list[bytes]]:
    return {"channel": _names(channels, "channel"), "pattern": _names(patterns, "pattern"),
            "shard": _names(shard_channels, "shard channel")}


class _Base:
    """The state machine, whatever moves the bytes: the names wanted, where
    each is carried, confirmations, the bounded queue, gaps."""

    def __init__(self, cache: Any, channels: Any, patterns: Any, shard_channels: Any,
                 max_queued: int, report_gaps: bool, health_check_interval: float | None) -> None:
        if not isinstance(max_queued, int) or isinstance(max_queued, bool) or max_queued < 1:
            raise ValueError(f"max_queued must be a positive int, got {max_queued!r}")
        if health_check_interval is not None and not (
                isinstance(health_check_interval, (int, float)) and health_check_interval > 0):
            raise ValueError("health_check_interval must be a positive number of seconds or "
                             f"None, got {health_check_interval!r}")
        self._cache = cache
        self._wanted = {kind: set(names) for kind, names in
                        _split(channels, patterns, shard_channels).items()}
        self._max_queued = max_queued
        self._report_gaps = report_gaps
        self._health_interval = health_check_interval
        self._queue: collections.deque[Message] = collections.deque()
        self._links: list[_Link] = []
        self._closed = False
        self._started = False
        #: Messages dropped because the queue was full (the oldest go first).
        self.dropped = 0
        #: Times a connection was lost while subscribed (or a shard channel's
        #: slot moved): each may have missed messages.
        self.gaps = 0
        #: Times a lost subscription was confirmed again.
        self.reconnects = 0

    # -- what the user sees

    @property
    def channels(self) -> frozenset[Name]:
        return frozenset(_shown(n) for n in self._wanted["channel"])

    @property
    def patterns(self) -> frozenset[Name]:
        return frozenset(_shown(n) for n in self._wanted["pattern"])

    @property
    def shard_channels(self) -> frozenset[Name]:
        return frozenset(_shown(n) for n in self._wanted["shard"])

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def queued(self) -> int:
        """Messages received and not yet taken."""
        return len(self._queue)

    @property
    def connections(self) -> int:
        """Connections open or being opened (one per node carrying names)."""
        return sum(1 for link in self._links if link.conn is not None)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (f"<{type(self).__name__} channels={len(self._wanted['channel'])} "
                f"patterns={len(self._wanted['pattern'])} "
                f"shard_channels={len(self._wanted['shard'])} {state}>")

    def _forget(self, channels: Iterable[Name], patterns: Iterable[Name],
                shard_channels: Iterable[Name]) -> list[tuple[_Link, str, Any]]:
        """unsubscribe()'s bookkeeping, shared by both kinds: drops the names
        from what is wanted and from each link holding them, and returns the
        (link, kind, name) to send an unsubscribe for (links that are up)."""
        self._check_open()
        targets = []
        for kind, names in _split(channels, patterns, shard_channels).items():
            for name in names:
                self._wanted[kind].discard(name)
                for link in self._links:
                    if name in link.names[kind]:
                        link.names[kind].discard(name)
                        if link.conn is not None:
                            targets.append((link, kind, name))
        return targets

    def _check_open(self) -> None:
        if self._closed:
            raise ConnectionError("the subscription is closed; subscribe again")

    # -- placing names on links

    def _node_of(self, kind: str, name: bytes) -> Any:
        """The node that carries a name: the cache's own on a single node
        (see the cluster subclasses)."""
        return None

    def _link_for(self, kind: str, name: bytes) -> _Link:
        node = self._node_of(kind, name)
        sharded = kind == "shard"
        for link in self._links:
            if link.node == node and link.sharded == sharded:
                return link
        link = _Link(node, sharded)
        self._links.append(link)
        return link

    def _plan(self) -> list[_Link]:
        """Puts every wanted name not yet carried on a link; returns the links
        that got names."""
        changed: list[_Link] = []
        for kind, names in self._wanted.items():
            for name in sorted(names):
                if any(name in link.names[kind] for link in self._links):
                    continue
                link = self._link_for(kind, name)
                link.names[kind].add(name)
                if link not in changed:
                    changed.append(link)
        return changed

    # -- replies

    def _put(self, message: Message) -> None:
        """Queues a message; a full queue drops its oldest (counted in
        ``dropped``): a slow consumer loses old news rather than the process
        its memory, and the newest state wins."""
        if len(self._queue) >= self._max_queued:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(message)
        self._wake()

    def _wake(self) -> None:
        """A message was queued (async: the waiting get() resumes)."""

    def _decode(self, data: Any) -> tuple[Any, Exception | None]:
        if not isinstance(data, bytes):
            return data, None
        try:
            return self._cache._decode_value(data), None
        except Exception as exc:  # noqa: BLE001 - any serializer's failure
            return data, exc

    def _on_reply(self, link: _Link, reply: Any) -> None:
        """One reply on a link: a message, a confirmation, a pong, an error."""
        link.last_reply = time.monotonic()
        if isinstance(reply, list) and reply and isinstance(reply[0], bytes):
            kind = reply[0]
            if kind == b"message" and len(reply) == 3:
                data, error = self._decode(reply[2])
                self._put(Message("message", _shown(reply[1]), data, None, error))
            elif kind == b"pmessage" and len(reply) == 4:
                data, error = self._decode(reply[3])
                self._put(Message("pmessage", _shown(reply[2]), data, _shown(reply[1]), error))
            elif kind == b"smessage" and len(reply) == 3:
                data, error = self._decode(reply[2])
                self._put(Message("smessage", _shown(reply[1]), data, None, error))
            else:
                name = reply[1] if len(reply) > 1 and isinstance(reply[1], bytes) else b""
                self._confirmed(link, kind, name)
        elif isinstance(reply, str) and reply.upper() == "PONG":
            self._confirmed(link, b"pong", b"")
        elif isinstance(reply, BaseException):
            self._refused(link, reply)
        else:
            _log.warning("redis sent a subscriber %.80r, which is not pub/sub; ignored", reply)

    def _confirmed(self, link: _Link, kind: bytes, name: bytes) -> None:
        head = link.acks[0] if link.acks else None
        if head is not None and head.reply_kind == kind and name in head.names:
            head.names.discard(name)
            if not head.names:
                link.acks.popleft()
                self._ack_done(link, head, None)
        elif kind == b"pong":
            link.ping_sent = None  # a health check's
        elif kind == b"sunsubscribe" and name in link.names["shard"]:
            # Unasked: the server dropped a shard channel because its slot
            # moved to another node. Messages may be missed until it is
            # subscribed where the slot is now.
            link.names["shard"].discard(name)
            self.gaps += 1
            self._rehome([name])

    def _refused(self, link: _Link, error: BaseException) -> None:
        head = link.acks.popleft() if link.acks else None
        if head is None:
            _log.warning("redis sent a subscriber an error: %s", error)
            return
        if head.reply_kind == b"ssubscribe" and str(error).startswith("MOVED"):
            # The map was stale: subscribe at the slot's owner instead.
            for name in head.names:
                link.names["shard"].discard(name)
            self._rehome(sorted(head.names), head)
            return
        # Refused (ACL, a bad name): those names are not subscribed.
        for kind, (_, _, confirm, _) in _KINDS.items():
            if confirm == head.reply_kind:
                for name in head.names:
                    self._wanted[kind].discard(name)
                    link.names[kind].discard(name)
        self._ack_done(link, head, error)

    def _rehome(self, names: list[bytes], ack: _Ack | None = None) -> None:
        """Shard channels that belong to another node now (see subclasses)."""
        if ack is not None:
            self._ack_done(None, ack, None)

    def _ack_done(self, link: _Link | None, ack: _Ack, error: BaseException | None) -> None:
        ack.done = True
        ack.error = error
        follower, ack.then = ack.then, None
        if follower is not None:
            self._ack_done(None, follower, error)
        if ack.gap_end:
            self.reconnects += 1
            if self._report_gaps:
                self._put(Message("reconnected", None, None))
        if link is not None and ack.reply_kind == b"pong" and not ack.user:
            link.ready = True
            link.backoff.succeeded()
            if link.lost:
                link.lost = False
                self.reconnects += 1
                if self._report_gaps:
                    self._put(Message("reconnected", None, None))

    def _lost(self, link: _Link, error: BaseException | None) -> None:
        """The link's connection is gone: a gap if it was subscribed."""
        if link.ready:
            self.gaps += 1
            link.lost = True
            _log.info("a subscriber lost its connection (%s); subscribing again", error)
        link.ready = False
        link.conn = None
        link.ping_sent = None
        link.backoff.failed(ConnectionError, str(error))


# --------------------------------------------------------------------------
# Async
# --------------------------------------------------------------------------


class Subscription(_Base):
    """An asyncio subscription: ``async with cache.subscribe("orders",
    patterns=["user:*"]) as sub: async for message in sub: ...``.

    Entering connects and returns once the server confirmed every name, so
    a message published after that is received. Messages wait in a queue of
    at most ``max_queued`` (past that the oldest is dropped and counted in
    ``dropped``). A lost connection is reconnected and subscribed again by
    itself; ``gaps`` counts the losses, and a ``Message(kind="reconnected")``
    marks where messages may be missing (``report_gaps=False``: counter
    only). Leaving the block (or ``close()``, or closing the cache) closes
    the connections; iteration then ends.
    """

    def __init__(self, cache: Any, channels: Any = (), patterns: Any = (),
                 shard_channels: Any = (), *, max_queued: int = DEFAULT_MAX_QUEUED,
                 report_gaps: bool = True,
                 health_check_interval: float | None = DEFAULT_HEALTH_CHECK_INTERVAL) -> None:
        super().__init__(cache, channels, patterns, shard_channels, max_queued, report_gaps,
                         health_check_interval)
        self._loop: asyncio.AbstractEventLoop | None = None
        #: The get() calls waiting for a message (several tasks may wait).
        self._waiters: set[asyncio.Future[None]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._health: asyncio.TimerHandle | None = None

    async def __aenter__(self) -> Subscription:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Message:
        message = await self.get()
        if message is None:
            raise StopAsyncIteration
        return message

    async def start(self) -> None:
        """Connects and subscribes (what entering does); raises if the first
        connection fails or a name is refused."""
        self._check_open()
        if self._started:
            return
        self._started = True
        self._loop = asyncio.get_running_loop()
        _register(self._cache, self)
        start_watching = getattr(self._cache, "_start_watching", None)
        if start_watching is not None:
            start_watching(self._loop)  # Sentinel: a failover moves us too
        try:
            await self._prepare_map()
            acks = [ack for link in self._plan() for ack in self._open(link)]
            await self._wait(acks)
        except BaseException:
            self.close()
            raise
        self._arm_health()

    async def get(self, timeout: float | None = None) -> Message | None:
        """The next message, waiting at most ``timeout`` seconds (None: as long
        as it takes); None on timeout or once the subscription is closed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._queue:
            if self._closed:
                return None
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.add(waiter)
            try:
                await asyncio.wait_for(waiter, left)
            except asyncio.TimeoutError:
                return None
            finally:
                self._waiters.discard(waiter)
        return self._queue.popleft()

    def get_nowait(self) -> Message | None:
        """The next message already received, or None."""
        return self._queue.popleft() if self._queue else None

    async def subscribe(self, *channels: Name, patterns: Iterable[Name] = (),
                        shard_channels: Iterable[Name] = ()) -> None:
        """Adds names, returning once the server confirmed them."""
        self._check_open()
        if not self._started:
            raise RuntimeError("enter the subscription (async with) before adding names")
        added = _split(channels, patterns, shard_channels)
        await self._prepare_map()
        acks: list[_Ack] = []
        for kind, names in added.items():
            for name in names:
                if name in self._wanted[kind]:
                    continue
                self._wanted[kind].add(name)
                link = self._link_for(kind, name)
                link.names[kind].add(name)
                if link.conn is None:
                    acks.extend(self._open(link))
                else:
                    acks.append(self._send(link, _KINDS[kind][0], _KINDS[kind][2], name))
        await self._wait(acks)

    async def unsubscribe(self, *channels: Name, patterns: Iterable[Name] = (),
                          shard_channels: Iterable[Name] = ()) -> None:
        """Removes names, returning once the server confirmed it (messages
        already queued stay in the queue)."""
        acks = [self._send(link, _KINDS[kind][1], _KINDS[kind][3], name)
                for link, kind, name in self._forget(channels, patterns, shard_channels)]
        await self._wait(acks)

    def close(self) -> None:
        """Closes the connections; iteration ends once the queue is empty."""
        if self._closed:
            return
        self._closed = True
        _unregister(self._cache, self)
        if self._health is not None:
            self._health.cancel()
            self._health = None
        for task in list(self._tasks):
            task.cancel()
        for link in self._links:
            conn, link.conn = link.conn, None
            self._fail_waiters(link.acks, ConnectionError("the subscription was closed"))
            link.acks.clear()
            if conn is not None:
                conn.close()
        self._wake()

    async def aclose(self) -> None:
        self.close()

    # -- connections

    async def _prepare_map(self, force: bool = False) -> None:
        """Loads a cluster's map before names are placed (cluster only)."""

    async def _before_reconnect(self, link: _Link) -> None:
        """Where a lost link goes now (cluster: the map may have changed)."""

    def _wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    @staticmethod
    def _fail_waiters(acks: Iterable[_Ack], error: BaseException) -> None:
        for ack in acks:
            waiter = ack.waiter
            if waiter is not None and not waiter.done():
                waiter.set_exception(error)
                waiter.exception()  # marked retrieved: its caller may be gone

    def _new_ack(self, reply_kind: bytes, names: Iterable[bytes], user: bool) -> _Ack:
        assert self._loop is not None
        ack = _Ack(reply_kind, names, user)
        ack.waiter = self._loop.create_future()
        return ack

    def _send(self, link: _Link, command: bytes, confirm: bytes, name: bytes) -> _Ack:
        """One (un)subscribe on a link's connection (up, or still connecting:
        then it follows the subscriptions queued for the handshake)."""
        ack = self._new_ack(confirm, [name], True)
        link.acks.append(ack)
        link.conn.send(command, name)
        return ack

    def _open(self, link: _Link) -> list[_Ack]:
        """A new connection for a link: a subscriber multiplexer with the
        link's subscriptions queued (they leave after the handshake), and a
        task that connects it. Returns the acks of those subscriptions."""
        assert self._loop is not None
        mux = self._cache._new_multiplexer(self._loop, True)
        mux._set_push(lambda reply, closed: self._on_push(link, mux, reply, closed))
        link.conn = mux
        link.opened_at = time.monotonic()
        link.acks.clear()
        acks = []
        for args, ack in link.commands():
            ack.waiter = self._loop.create_future()
            link.acks.append(ack)
            mux.send(*args)
            acks.append(ack)
        self._spawn(self._connect(link, mux))
        return acks

    def _spawn(self, coro: Any) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _address(self, link: _Link) -> tuple[str, int]:
        if link.node is None:
            return await self._cache._node_address()  # type: ignore[no-any-return]
        return link.node  # type: ignore[no-any-return]

    async def _connect(self, link: _Link, mux: Any) -> None:
        """Connects mux as RedisCache._connect does (the same socket, TLS and
        handshake), once: a failure closes mux, and _on_push decides what
        comes next."""
        from .cache import _host_port

        cache = self._cache
        settings = cache._settings
        try:
            delay = link.backoff.delay()
            if delay > 0:
                await asyncio.sleep(delay)
            if link.lost:
                await self._before_reconnect(link)
            host, port = await self._address(link)
            where = (settings.describe() if settings.unix_socket_path is not None
                     else _host_port(host, port))
            sock = await asyncio.wait_for(cache._open_socket(host, port),
                                          timeout=settings.socket_connect_timeout)
        except asyncio.CancelledError:
            mux.close()
            raise
        except (OSError, asyncio.TimeoutError) as exc:
            reason = (os.strerror(exc.errno) if isinstance(exc, OSError) and exc.errno
                      else str(exc) or "timed out")
            mux.fail(ConnectionError, f"a subscriber cannot connect to redis: {reason}")
            return
        except Exception as exc:  # noqa: BLE001 - Sentinel or the cluster map failed
            mux.fail(type(exc) if isinstance(exc, (ConnectionError, TimeoutError))
                     else ConnectionError, f"a subscriber cannot find redis: {exc}")
            return
        if mux.closed:
            sock.close()
            return
        with contextlib.suppress(Exception):  # a failed attach closed mux: _on_push knows
            mux.attach(sock.detach(), cache._handshake(), host if settings.ssl else None, where)

    def _on_push(self, link: _Link, mux: Any, reply: Any, closed: Any) -> None:
        if link.conn is not mux:
            return  # closed by us, or replaced
        if closed is None:
            self._on_reply(link, reply)
            return
        established = link.ready or link.lost
        waiting_users = [a for a in link.acks if a.user]
        pending = list(link.acks)
        link.acks.clear()
        self._lost(link, closed)
        if self._closed:
            return
        if not established:
            # The first connection failed: whoever waits for it learns why
            # (start() raises; names added to a new node's link are dropped).
            self._fail_waiters(pending, closed)
            for kind, names in link.names.items():
                self._wanted[kind] -= names
            self._links.remove(link)
            return
        # Subscribe again on a new connection (names added meanwhile too);
        # a subscribe() still waiting completes with the resubscription.
        pong = self._open(link)[-1]
        for ack in waiting_users:
            pong.waiter.add_done_callback(lambda f, a=ack: _copy_outcome(f, a.waiter))

    def _ack_done(self, link: _Link | None, ack: _Ack, error: BaseException | None) -> None:
        super()._ack_done(link, ack, error)
        waiter = ack.waiter
        if waiter is not None and not waiter.done():
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)
                waiter.exception()  # the caller re-raises it from _wait

    async def _wait(self, acks: list[_Ack]) -> None:
        """Waits for the server's confirmations, at most socket_timeout (a
        server that accepts connections and stays silent)."""
        waiters = [ack.waiter for ack in acks if ack.waiter is not None]
        if not waiters:
            return
        timeout = self._cache._settings.socket_timeout
        _, pending = await asyncio.wait(waiters, timeout=timeout)
        if pending:
            raise TimeoutError(
                f"redis did not confirm the subscription within socket_timeout ({timeout} s)")
        for waiter in waiters:
            waiter.result()  # the first refusal, raised

    def _rehome(self, names: list[bytes], ack: _Ack | None = None) -> None:
        self._spawn(self._rehome_async(names, ack))

    async def _rehome_async(self, names: list[bytes], ack: _Ack | None) -> None:
        try:
            await self._prepare_map(force=True)
            acks: list[_Ack] = []
            for link in self._plan():
                if link.conn is None:
                    acks.extend(self._open(link))
                else:
                    for name in names:
                        if name in link.names["shard"]:
                            acks.append(self._send(link, b"SSUBSCRIBE", b"ssubscribe", name))
            if ack is None and acks:
                acks[-1].gap_end = True  # reported once confirmed
            await self._wait(acks)
        except Exception as exc:  # noqa: BLE001 - told to the waiter, or logged
            if ack is not None and ack.waiter is not None and not ack.waiter.done():
                ack.waiter.set_exception(exc)
                ack.waiter.exception()
            else:
                _log.warning("a subscriber could not follow a moved shard channel: %s", exc)
        else:
            if ack is not None:
                Subscription._ack_done(self, None, ack, None)

    # -- health

    def _arm_health(self) -> None:
        if self._health_interval is not None and not self._closed and self._loop is not None:
            self._health = self._loop.call_later(self._health_interval, self._check_health)

    def _check_health(self) -> None:
        """A PING on each idle link; a link whose PING got no pong within the
        interval is dead (a half-open TCP connection gives no other sign)
        and is replaced."""
        self._health = None
        if self._closed:
            return
        now = time.monotonic()
        for link in self._links:
            conn = link.conn
            if conn is None:
                continue
            if not link.ready:
                if now - link.opened_at >= self._health_interval:  # type: ignore[operator]
                    conn.fail(TimeoutError, "a subscriber's connection was not subscribed "
                              f"within health_check_interval ({self._health_interval} s)")
                continue
            if link.ping_sent is not None and link.last_reply < link.ping_sent:
                conn.fail(TimeoutError, "a subscriber's connection did not answer PING")
            elif now - link.last_reply >= self._health_interval * 0.5:  # type: ignore[operator]
                link.ping_sent = now
                conn.send(b"PING")
        self._arm_health()

    def _node_changed(self) -> None:
        """The primary changed (Sentinel): every link moves to the new one."""
        for link in self._links:
            if link.conn is not None:
                link.conn.fail(ConnectionError, "the primary changed; subscribing there")


def _copy_outcome(source: asyncio.Future[Any], target: asyncio.Future[Any]) -> None:
    if target.done():
        return
    if source.cancelled():
        target.cancel()
    elif source.exception() is not None:
        target.set_exception(source.exception())  # type: ignore[arg-type]
        target.exception()
    else:
        target.set_result(None)


# --------------------------------------------------------------------------
# Blocking
# --------------------------------------------------------------------------


class SyncSubscription(_Base):
    """A blocking subscription: ``with cache.subscribe("orders") as sub:``
    then ``for message in sub:`` (blocks), or ``sub.get(timeout=1.0)``
    (None when nothing came in time).

    Replies are read by the thread that calls ``get`` (or iterates): use one
    subscription per thread. Entering returns once the server confirmed
    every name. A lost connection is reconnected and subscribed again inside
    ``get``; ``gaps`` counts the losses and a ``Message(kind="reconnected")``
    marks where messages may be missing. ``close()`` may come from another
    thread (or from closing the cache) and wakes a blocked ``get``.
    """

    def __init__(self, cache: Any, channels: Any = (), patterns: Any = (),
                 shard_channels: Any = (), *, max_queued: int = DEFAULT_MAX_QUEUED,
                 report_gaps: bool = True,
                 health_check_interval: float | None = DEFAULT_HEALTH_CHECK_INTERVAL) -> None:
        super().__init__(cache, channels, patterns, shard_channels, max_queued, report_gaps,
                         health_check_interval)
        #: Set by close(): a get() waiting out a reconnect backoff returns.
        self._closing = threading.Event()

    def __enter__(self) -> SyncSubscription:
        self.start()
        return self

    def __del__(self) -> None:
        # No I/O here: the connections' sockets close with them.
        if getattr(self, "_started", False) and not getattr(self, "_closed", True):
            warnings.warn(f"unclosed {self!r}: use 'with cache.subscribe(...)' or close()",
                          ResourceWarning, stacklevel=2, source=self)

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Message]:
        while True:
            message = self.get()
            if message is None:
                return
            yield message

    def start(self) -> None:
        """Connects and subscribes (what entering does); raises if connecting
        fails or a name is refused."""
        self._check_open()
        if self._started:
            return
        self._started = True
        _register(self._cache, self)
        try:
            self._prepare_map()
            acks = [ack for link in self._plan() for ack in self._connect(link)]
            self._wait(acks, strict=True)
        except BaseException:
            self.close()
            raise

    def get(self, timeout: float | None = None) -> Message | None:
        """The next message, waiting at most ``timeout`` seconds (None: as long
        as it takes); None on timeout or once the subscription is closed."""
        if timeout is not None and not timeout >= 0:
            raise ValueError(f"timeout must be a number of seconds >= 0 or None, got {timeout!r}")
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._queue:
            if self._closed:
                return None
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            self._pump(left)
        return self._queue.popleft()

    def subscribe(self, *channels: Name, patterns: Iterable[Name] = (),
                  shard_channels: Iterable[Name] = ()) -> None:
        """Adds names, returning once the server confirmed them (messages read
        meanwhile are queued)."""
        self._check_open()
        if not self._started:
            raise RuntimeError("enter the subscription (with) before adding names")
        added = _split(channels, patterns, shard_channels)
        self._prepare_map()
        acks: list[_Ack] = []
        for kind, names in added.items():
            for name in names:
                if name in self._wanted[kind]:
                    continue
                self._wanted[kind].add(name)
                link = self._link_for(kind, name)
                link.names[kind].add(name)
                acks.extend(self._send(link, _KINDS[kind][0], _KINDS[kind][2], name))
        self._wait(acks)

    def unsubscribe(self, *channels: Name, patterns: Iterable[Name] = (),
                    shard_channels: Iterable[Name] = ()) -> None:
        """Removes names, returning once the server confirmed it."""
        acks: list[_Ack] = []
        for link, kind, name in self._forget(channels, patterns, shard_channels):
            acks.extend(self._send(link, _KINDS[kind][1], _KINDS[kind][3], name))
        self._wait(acks)

    def close(self) -> None:
        """Closes the connections (from any thread: a blocked ``get`` returns None)."""
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        _unregister(self._cache, self)
        for link in self._links:
            conn = link.conn
            if conn is not None:
                conn.close()

    # -- connections

    def _prepare_map(self, force: bool = False) -> None:
        """Loads a cluster's map before names are placed (cluster only)."""

    def _before_reconnect(self, link: _Link) -> None:
        """Where a lost link goes now (cluster: the map may have changed)."""

    def _address(self, link: _Link) -> tuple[Any, int]:
        if link.node is None:
            discovery = getattr(self._cache, "_discovery", None)
            if discovery is not None:
                return discovery.primary()  # type: ignore[no-any-return]
            return None, 0  # the configured address (or unix socket)
        return link.node  # type: ignore[no-any-return]

    def _connect(self, link: _Link) -> list[_Ack]:
        """Opens the link's connection (the cache's handshake, TLS and
        timeouts) and sends its subscriptions; raises when that fails."""
        if link.lost:
            self._before_reconnect(link)
        host, port = self._address(link)
        conn = self._cache._open_dedicated(host, port)
        link.conn = conn
        link.opened_at = time.monotonic()
        link.acks.clear()
        acks = []
        try:
            for args, ack in link.commands():
                link.acks.append(ack)
                conn.send(*args)
                acks.append(ack)
        except BaseException:
            link.conn = None
            conn.close()
            raise
        if self._closed:  # closed from another thread meanwhile
            link.conn = None
            conn.close()
        link.last_reply = time.monotonic()
        return acks

    def _send(self, link: _Link, command: bytes, confirm: bytes, name: bytes) -> list[_Ack]:
        if link.conn is None and link.lost:
            return self._reconnect(link)[-1:]  # quietly: get() keeps trying
        if link.conn is None:
            # A new link (a node no name was on yet): its failure is the caller's.
            try:
                return self._connect(link)[-1:]
            except BaseException:
                for kind, names in link.names.items():
                    self._wanted[kind] -= names
                self._links.remove(link)
                raise
        ack = _Ack(confirm, [name], True)
        link.acks.append(ack)
        try:
            link.conn.send(command, name)
        except ConnectionError as exc:
            self._drop(link, exc)
            return self._reconnect(link)[-1:]
        return [ack]

    def _reconnect(self, link: _Link) -> list[_Ack]:
        """Connects a lost link again; on failure it stays lost (the next
        ``get`` tries again after the backoff)."""
        try:
            return self._connect(link)
        except (ConnectionError, TimeoutError) as exc:
            _log.info("a subscriber cannot connect to redis (%s); trying again", exc)
            link.backoff.failed(ConnectionError, str(exc))
            return []

    def _drop(self, link: _Link, error: BaseException | None) -> None:
        conn, link.conn = link.conn, None
        if conn is not None:
            conn.close()
        link.acks.clear()
        self._lost(link, error)

    def _wait(self, acks: list[_Ack], strict: bool = False) -> None:
        """Reads replies (queueing messages) until every ack came, for at most
        socket_timeout; raises the error of a refused one. ``strict``: a lost
        connection raises (the first subscription) rather than reconnect."""
        timeout = self._cache._settings.socket_timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        while not all(a.done for a in acks):
            self._check_open()
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(
                    f"redis did not confirm the subscription within socket_timeout ({timeout} s)")
            if strict and any(link.conn is None for link in self._links):
                raise ConnectionError("the subscriber's connection was lost while subscribing")
            self._pump(left, strict=strict)
        for ack in acks:
            if ack.error is not None:
                raise ack.error

    def _pump(self, timeout: float | None, strict: bool = False) -> None:
        """Reads what has come on every link, waiting at most timeout for
        something; connects lost links again first (after their backoff)."""
        for link in list(self._links):
            if (link.conn is None and not link.empty() and not self._closed and not strict
                    and link.backoff.delay() <= 0):
                self._reconnect(link)
        waits = [link.backoff.delay() for link in self._links
                 if link.conn is None and not link.empty()]
        if waits:
            wait_for_backoff = max(min(waits), 0.001)
            if timeout is None or wait_for_backoff < timeout:
                timeout = wait_for_backoff
        live = [link for link in self._links if link.conn is not None]
        if self._health_interval is not None and (timeout is None or
                                                  timeout > self._health_interval):
            timeout = self._health_interval
        if not live:
            # Nothing to read until a reconnect's backoff ends (or close()).
            self._closing.wait(timeout)
            return
        if len(live) == 1:
            self._read(live[0], timeout, strict)
        else:
            # Several nodes: what is buffered first, then wait on every socket.
            got = False
            for link in live:
                got = self._read(link, 0, strict) or got
            fds = {link.conn.fileno: link for link in live if link.conn is not None}
            if not got and fds and -1 not in fds:
                try:
                    ready, _, _ = select.select(list(fds), [], [], timeout)
                except (OSError, ValueError):  # closed from another thread meanwhile
                    ready = []
                for fd in ready:
                    self._read(fds[fd], 0, strict)
        for link in live:
            self._check_health(link)

    def _read(self, link: _Link, timeout: float | None, strict: bool) -> bool:
        conn = link.conn
        if conn is None:
            return False
        try:
            reply = conn.read(timeout)
        except (ConnectionError, TimeoutError) as exc:
            self._drop(link, exc)
            if strict:
                raise
            return False
        if reply is _core.MISSING:
            return False
        self._on_reply(link, reply)
        return True

    def _check_health(self, link: _Link) -> None:
        """A PING on an idle link; one unanswered for the interval means the
        connection is dead (half-open TCP) and it is replaced."""
        if self._health_interval is None or link.conn is None:
            return
        now = time.monotonic()
        if not link.ready:
            if now - link.opened_at >= self._health_interval:
                self._drop(link, TimeoutError("a subscriber's connection was not subscribed "
                                              "within health_check_interval"))
            return
        if link.ping_sent is not None:
            if link.last_reply < link.ping_sent and now - link.ping_sent >= self._health_interval:
                self._drop(link, TimeoutError("a subscriber's connection did not answer PING"))
        elif now - link.last_reply >= self._health_interval:
            link.ping_sent = now
            try:
                link.conn.send(b"PING")
            except ConnectionError as exc:
                self._drop(link, exc)

    def _rehome(self, names: list[bytes], ack: _Ack | None = None) -> None:
        """Subscribes the shard channels where their slots are now; the user's
        ack (MOVED) completes, or the gap is reported, once that is confirmed."""
        acks: list[_Ack] = []
        try:
            self._prepare_map(force=True)
            for link in self._plan():
                if link.conn is None:
                    acks.extend(self._reconnect(link))
                else:
                    for name in names:
                        if name in link.names["shard"]:
                            acks.extend(self._send(link, b"SSUBSCRIBE", b"ssubscribe", name))
        except (ConnectionError, TimeoutError, ResponseError) as exc:
            if ack is not None:
                self._ack_done(None, ack, exc)
            else:
                _log.warning("a subscriber could not follow a moved shard channel: %s", exc)
            return
        if not acks:
            if ack is not None:
                self._ack_done(None, ack, ConnectionError(
                    "the node that owns the shard channel's slot could not be reached"))
            return
        if ack is not None:
            acks[-1].then = ack
        else:
            acks[-1].gap_end = True

    def _node_changed(self) -> None:
        """The primary changed (Sentinel; called from the watcher thread): the
        reading thread's read fails and it subscribes at the new primary."""
        for link in self._links:
            conn = link.conn
            if conn is not None:
                conn._interrupt()


# --------------------------------------------------------------------------
# Redis Cluster
# --------------------------------------------------------------------------


def _cluster_node_of(sub: Any, kind: str, name: bytes) -> Any:
    """Plain channels and patterns: one node for all (PUBLISH reaches every
    node's subscribers). Shard channels: the owner of the channel's slot."""
    cmap = sub._cache._map
    if kind != "shard":
        if sub._broadcast not in cmap.primaries:
            sub._broadcast = cmap.primaries[0] if cmap.primaries else cmap.seeds[0]
        return sub._broadcast
    slot = _key_slot(name)
    owner = cmap.owners[slot]
    if owner is None:
        raise cmap.unserved(slot)
    return (owner.settings.host, owner.settings.port)


def _cluster_regroup(sub: Any, link: _Link) -> list[bytes]:
    """A lost link's names go where the (reloaded) map says now; returns the
    shard channels that left it (for _plan to place)."""
    cmap = sub._cache._map
    if not link.sharded:
        primaries = cmap.primaries or cmap.seeds
        if link.node not in primaries or link.backoff.failures > 1:
            # The node is gone or keeps failing: another primary carries them.
            others = [a for a in primaries if a != link.node] or primaries
            link.node = sub._broadcast = others[link.backoff.failures % len(others)]
        return []
    names = sorted(link.names["shard"])
    if not names:
        return []
    owners = {name: _cluster_node_of(sub, "shard", name) for name in names}
    link.node = owners[names[0]]
    moved = [name for name in names if owners[name] != link.node]
    link.names["shard"].difference_update(moved)
    return moved


def _carrier(sub: Any, name: bytes) -> _Link:
    return next(link for link in sub._links if name in link.names["shard"])


class ClusterSubscription(Subscription):
    """A :class:`Subscription` on a Redis Cluster: plain channels and patterns
    on one connection to any primary, shard channels on one connection per
    node that owns their slots, each following its slot on MOVED, when the
    server drops it (slot migrated) and after a failover."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._broadcast: Any = None

    async def _prepare_map(self, force: bool = False) -> None:
        cmap = self._cache._map
        await self._cache._refresh(force=force or not cmap.loaded)

    def _node_of(self, kind: str, name: bytes) -> Any:
        return _cluster_node_of(self, kind, name)

    async def _before_reconnect(self, link: _Link) -> None:
        with contextlib.suppress(ConnectionError, TimeoutError, ResponseError):
            await self._prepare_map(force=True)
        moved = _cluster_regroup(self, link)
        self._plan()
        for name in moved:
            other = _carrier(self, name)
            if other.conn is None:
                self._open(other)
            elif other is not link and not any(name in a.names for a in other.acks):
                self._send(other, b"SSUBSCRIBE", b"ssubscribe", name)


class SyncClusterSubscription(SyncSubscription):
    """The blocking :class:`ClusterSubscription`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._broadcast: Any = None

    def _prepare_map(self, force: bool = False) -> None:
        cmap = self._cache._map
        self._cache._refresh(force=force or not cmap.loaded)

    def _node_of(self, kind: str, name: bytes) -> Any:
        return _cluster_node_of(self, kind, name)

    def _before_reconnect(self, link: _Link) -> None:
        with contextlib.suppress(ConnectionError, TimeoutError, ResponseError):
            self._prepare_map(force=True)
        moved = _cluster_regroup(self, link)
        self._plan()
        for name in moved:
            other = _carrier(self, name)
            if other.conn is not None and other is not link:
                self._send(other, b"SSUBSCRIBE", b"ssubscribe", name)
            # (a new link is connected by _pump)


# --------------------------------------------------------------------------
# The cache's subscriptions (closed with it; moved on failover)
# --------------------------------------------------------------------------

_registry: weakref.WeakKeyDictionary[Any, weakref.WeakSet[Any]] = weakref.WeakKeyDictionary()
_registry_lock = threading.Lock()


def _register(cache: Any, sub: Any) -> None:
    with _registry_lock:
        _registry.setdefault(cache, weakref.WeakSet()).add(sub)


def _unregister(cache: Any, sub: Any) -> None:
    with _registry_lock:
        subs = _registry.get(cache)
        if subs is not None:
            subs.discard(sub)


def _subscriptions(cache: Any) -> list[Any]:
    with _registry_lock:
        return list(_registry.get(cache, ()))


def close_subscriptions(cache: Any) -> None:
    """Closes the cache's open subscriptions (the cache is closing)."""
    for sub in _subscriptions(cache):
        sub.close()


def node_changed(cache: Any) -> None:
    """The cache's primary changed (Sentinel): its subscriptions move there."""
    for sub in _subscriptions(cache):
        try:
            sub._node_changed()
        except Exception as exc:  # noqa: BLE001 - one subscriber must not stop the rest
            _log.warning("a subscriber could not follow the failover: %s", exc)


def subscription(cache: Any, channels: Any, patterns: Any, shard_channels: Any,
                 options: dict[str, Any]) -> Any:
    """The subscription class that fits the cache (sync or async, cluster or not)."""
    cluster = getattr(cache, "_is_cluster", False)
    if isinstance(cache, _core.AsyncClient):
        cls: Any = ClusterSubscription if cluster else Subscription
    else:
        cls = SyncClusterSubscription if cluster else SyncSubscription
    return cls(cache, channels, patterns, shard_channels, **options)
