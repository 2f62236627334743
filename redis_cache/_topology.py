"""Where a cache's commands go when Sentinel watches the primary.

This runs once per change of topology, never per command: the C core asks
for the primary's address when it opens a connection and knows of no good
one (before the first connection, after a connect failed, after a node
answered READONLY / LOADING / MASTERDOWN, after a Sentinel announced a
failover), and otherwise reuses the address it has.

Discovery asks the Sentinels in turn (the one that answered last first) for
the primary of the service, then checks with ROLE, on the address given,
that the node is a primary: mid-failover a Sentinel may still name the old
one. Sentinels and the ROLE check use this package's own clients, so TLS and
credentials work the same way as for the data connections.

The async cache also listens on a Sentinel for ``+switch-master`` (a small
pub/sub reader written here, not on any hot path): a failover then drains the
cache's connections at once instead of when the old primary starts refusing
writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from ._config import ConnectionSettings
from .errors import AuthenticationError, ConfigurationError, ConnectionError, TimeoutError

__all__ = ["SentinelDiscovery"]

_log = logging.getLogger("redis_cache")

Address = tuple[str, int]


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class SentinelDiscovery:
    """Finds the current primary of ``settings.service_name`` (sync and async)."""

    def __init__(self, settings: ConnectionSettings) -> None:
        assert settings.sentinels is not None and settings.service_name is not None
        self.settings = settings
        #: Set while a listener is subscribed to +switch-master (for tests
        #: and health checks: announcements made before then are missed).
        self.listening = threading.Event()
        self.service = settings.service_name
        self._sentinels: list[Address] = list(settings.sentinels)
        #: The replica a Sentinel just announced as promoted: preferred while
        #: it answers ROLE master, as the Sentinels name it only once the
        #: failover is over (see _announced).
        self._promoted: Address | None = None
        #: The primary the connections were last moved to on an announcement.
        self._switched_to: Address | None = None

    # ------------------------------------------------------------ clients

    def _tls_options(self) -> dict[str, Any]:
        s = self.settings
        if not s.ssl:
            return {}
        return {
            "ssl": True,
            "ssl_ca_certs": s.ssl_ca_certs,
            "ssl_ca_path": s.ssl_ca_path,
            "ssl_ca_data": s.ssl_ca_data,
            "ssl_certfile": s.ssl_certfile,
            "ssl_keyfile": s.ssl_keyfile,
            "ssl_password": s.ssl_password,
            "ssl_cert_reqs": s.ssl_cert_reqs,
            "ssl_check_hostname": s.ssl_check_hostname,
            "ssl_min_version": s.ssl_min_version,
            "ssl_ciphers": s.ssl_ciphers,
        }

    def _sentinel_options(self, host: str, port: int) -> dict[str, Any]:
        s = self.settings
        return {
            "host": host,
            "port": port,
            "username": s.sentinel_username,
            "password": s.sentinel_password,
            "socket_timeout": s.sentinel_socket_timeout,
            "socket_connect_timeout": s.sentinel_socket_timeout,
            "connect_wait": 0,
            "max_connections": 1,
            "serializer": "raw",
            **self._tls_options(),
        }

    def _node_options(self, host: str, port: int) -> dict[str, Any]:
        s = self.settings
        return {
            "host": host,
            "port": port,
            "username": s.username,
            "password": s.password,
            "socket_timeout": s.socket_connect_timeout,
            "socket_connect_timeout": s.socket_connect_timeout,
            "connect_wait": 0,
            "max_connections": 1,
            "serializer": "raw",
            **self._tls_options(),
        }

    # ------------------------------------------------------------ answers

    def _read_answer(self, where: Address, reply: Any) -> Address | None:
        """The (host, port) a Sentinel gave, or None when it does not know
        the service."""
        if reply is None:
            return None
        if not (isinstance(reply, list) and len(reply) == 2):
            raise ConnectionError(
                f"Sentinel {_address(*where)} answered SENTINEL get-master-addr-by-name with "
                f"{reply!r}, not [host, port]"
            )
        host, port = reply
        return host.decode(), int(port)

    def _outcome(self, found: Address | None, unknown: list[str], errors: list[str]) -> Exception:
        if not errors and unknown:
            return ConfigurationError(
                f"no Sentinel monitors a primary named {self.service!r} (asked "
                f"{', '.join(unknown)}); check service_name against 'sentinel monitor <name>'"
            )
        return ConnectionError(
            f"no working primary for {self.service!r} from the Sentinels: " + "; ".join(errors + [
                f"{u} does not know it" for u in unknown
            ])
        )

    def _answered(self, index: int) -> None:
        # The Sentinel that answered goes first next time.
        if index:
            self._sentinels.insert(0, self._sentinels.pop(index))

    # ------------------------------------------------------------ sync

    def primary(self) -> Address:
        """The primary's (host, port), asked of the Sentinels and checked
        with ROLE. Raises ConnectionError (try again later: none answered, or
        none named a working primary), AuthenticationError (a Sentinel
        refused the credentials) or ConfigurationError (no Sentinel knows
        the service)."""
        from .cache import SyncRedisCache

        promoted = self._promoted
        if promoted is not None and self._role(promoted) == "master":
            return promoted
        unknown: list[str] = []
        errors: list[str] = []
        for index, where in enumerate(list(self._sentinels)):
            try:
                with SyncRedisCache(**self._sentinel_options(*where)) as sentinel:
                    reply = sentinel.execute_command(
                        "SENTINEL", "get-master-addr-by-name", self.service
                    )
            except AuthenticationError as exc:
                raise AuthenticationError(
                    f"Sentinel {_address(*where)} refused the credentials "
                    f"(sentinel_username / sentinel_password): {exc}"
                ) from None
            except (ConnectionError, TimeoutError) as exc:
                errors.append(f"Sentinel {_address(*where)}: {exc}")
                continue
            found = self._read_answer(where, reply)
            if found is None:
                unknown.append(f"Sentinel {_address(*where)}")
                continue
            role = self._role(found)
            if role == "master":
                self._answered(index)
                self._promoted = None
                return found
            errors.append(f"{_address(*found)} (named by {_address(*where)}) is a {role}")
        raise self._outcome(None, unknown, errors)

    def _role(self, node: Address) -> str:
        from .cache import SyncRedisCache

        try:
            with SyncRedisCache(**self._node_options(*node)) as client:
                reply = client.execute_command("ROLE")
        except (ConnectionError, TimeoutError) as exc:
            return f"node that does not answer ({exc})"
        return _role_name(reply)

    # ------------------------------------------------------------ async

    async def primary_async(self) -> Address:
        """:meth:`primary` for the event loop."""
        from .cache import RedisCache

        promoted = self._promoted
        if promoted is not None and await self._role_async(promoted) == "master":
            return promoted
        unknown: list[str] = []
        errors: list[str] = []
        for index, where in enumerate(list(self._sentinels)):
            try:
                async with RedisCache(**self._sentinel_options(*where)) as sentinel:
                    reply = await sentinel.execute_command(
                        "SENTINEL", "get-master-addr-by-name", self.service
                    )
            except AuthenticationError as exc:
                raise AuthenticationError(
                    f"Sentinel {_address(*where)} refused the credentials "
                    f"(sentinel_username / sentinel_password): {exc}"
                ) from None
            except (ConnectionError, TimeoutError) as exc:
                errors.append(f"Sentinel {_address(*where)}: {exc}")
                continue
            found = self._read_answer(where, reply)
            if found is None:
                unknown.append(f"Sentinel {_address(*where)}")
                continue
            role = await self._role_async(found)
            if role == "master":
                self._answered(index)
                self._promoted = None
                return found
            errors.append(f"{_address(*found)} (named by {_address(*where)}) is a {role}")
        raise self._outcome(None, unknown, errors)

    async def _role_async(self, node: Address) -> str:
        from .cache import RedisCache

        try:
            async with RedisCache(**self._node_options(*node)) as client:
                reply = await client.execute_command("ROLE")
        except (ConnectionError, TimeoutError) as exc:
            return f"node that does not answer ({exc})"
        return _role_name(reply)

    # ------------------------------------------------------------ announcements

    async def watch_failovers(self, on_switch: Callable[[Address], None]) -> None:
        """Listens on a Sentinel for ``+switch-master`` of the service and
        calls ``on_switch(new_address)``; moves to another Sentinel when one
        goes away. Runs until cancelled."""
        failures = 0
        while True:
            for where in list(self._sentinels):
                try:
                    await self._listen(where, on_switch)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - any failure: try the next one
                    _log.debug("Sentinel %s stopped announcing: %s", _address(*where), exc)
                    failures += 1
            # Every Sentinel went away: try again, not in a tight loop.
            await asyncio.sleep(min(2.0, 0.05 * 2 ** min(failures, 6)) * random.uniform(0.5, 1.0))

    async def _listen(self, where: Address, on_switch: Callable[[Address], None]) -> None:
        s = self.settings
        timeout = s.sentinel_socket_timeout
        context = self._ssl_context()
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                where[0], where[1], ssl=context, server_hostname=where[0] if context else None
            ),
            timeout,
        )
        try:
            if s.sentinel_password is not None:
                auth = ["AUTH"] + ([s.sentinel_username] if s.sentinel_username else [])
                writer.write(_command(*auth, s.sentinel_password))
                reply = await asyncio.wait_for(_read_reply(reader), timeout)
                if isinstance(reply, _Error):
                    raise AuthenticationError(f"Sentinel {_address(*where)} refused AUTH: {reply}")
            writer.write(_command("SUBSCRIBE", *_ANNOUNCEMENTS))
            for _ in _ANNOUNCEMENTS:
                await asyncio.wait_for(_read_reply(reader), timeout)
            self.listening.set()
            watches: set[asyncio.Task[None]] = set()
            while True:
                event = self._announced(await _read_reply(reader))
                if event is None:
                    continue
                kind, address = event
                _log.debug("Sentinel event %s: %s", kind, _address(*address))
                if kind == "promoted":
                    self._switch_to(address, on_switch)
                else:
                    watch = asyncio.ensure_future(self._promotion_watch(address, on_switch))
                    watches.add(watch)
                    watch.add_done_callback(watches.discard)
        finally:
            self.listening.clear()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def watch_in_thread(self, on_switch: Callable[[Address], None]) -> Callable[[], None]:
        """The blocking client's :meth:`watch_failovers`: a daemon thread
        listening on a Sentinel. Returns the function that stops it."""
        stop = threading.Event()

        def run() -> None:
            failures = 0
            while not stop.is_set():
                for where in list(self._sentinels):
                    if stop.is_set():
                        return
                    try:
                        self._listen_blocking(where, on_switch, stop)
                    except Exception as exc:  # noqa: BLE001 - try the next one
                        _log.debug("Sentinel %s stopped announcing: %s", _address(*where), exc)
                        failures += 1
                delay = min(2.0, 0.05 * 2 ** min(failures, 6)) * random.uniform(0.5, 1.0)
                stop.wait(delay)

        thread = threading.Thread(target=run, name=f"redis_cache-sentinel-{self.service}", daemon=True)
        thread.start()
        return stop.set

    def _listen_blocking(
        self, where: Address, on_switch: Callable[[Address], None], stop: threading.Event
    ) -> None:
        s = self.settings
        sock = socket.create_connection(where, timeout=s.sentinel_socket_timeout)
        try:
            context = self._ssl_context()
            if context is not None:
                sock = context.wrap_socket(sock, server_hostname=where[0])
            stream = sock.makefile("rb")
            if s.sentinel_password is not None:
                auth = ["AUTH"] + ([s.sentinel_username] if s.sentinel_username else [])
                sock.sendall(_command(*auth, s.sentinel_password))
                if isinstance(_read_reply_blocking(stream), _Error):
                    raise AuthenticationError(f"Sentinel {_address(*where)} refused AUTH")
            sock.sendall(_command("SUBSCRIBE", *_ANNOUNCEMENTS))
            for _ in _ANNOUNCEMENTS:
                _read_reply_blocking(stream)
            self.listening.set()
            sock.settimeout(0.5)  # to look at `stop` now and then
            while not stop.is_set():
                try:
                    message = _read_reply_blocking(stream)
                except socket.timeout:
                    continue
                event = self._announced(message)
                if event is None:
                    continue
                kind, address = event
                _log.debug("Sentinel event %s: %s", kind, _address(*address))
                if kind == "promoted":
                    self._switch_to(address, on_switch)
                else:
                    threading.Thread(
                        target=self._promotion_watch_blocking, args=(address, on_switch),
                        name=f"redis_cache-promotion-{self.service}", daemon=True,
                    ).start()
        finally:
            self.listening.clear()
            sock.close()

    def _announced(self, message: Any) -> tuple[str, Address] | None:
        """What a Sentinel message says about this service: ("selected", the
        replica about to be promoted) or ("promoted", the new primary)."""
        if not (isinstance(message, list) and len(message) == 3 and message[0] == b"message"):
            return None
        fields = message[2].decode(errors="replace").split()
        channel = message[1]
        if channel == b"+switch-master":
            # "<name> <old ip> <old port> <new ip> <new port>"
            if len(fields) == 5 and fields[0] == self.service:
                return "promoted", (fields[3], int(fields[4]))
        elif channel in (b"+selected-slave", b"+promoted-slave"):
            # "slave <ip>:<port> <ip> <port> @ <name> <old ip> <old port>"
            if len(fields) == 8 and fields[0] == "slave" and fields[5] == self.service:
                kind = "selected" if channel == b"+selected-slave" else "promoted"
                return kind, (fields[2], int(fields[3]))
        return None

    def _switch_to(self, new: Address, on_switch: Callable[[Address], None]) -> None:
        """Moves the connections to ``new`` (once per new primary)."""
        self._promoted = new
        if new == self._switched_to:
            return
        self._switched_to = new
        on_switch(new)

    def _promotion_watch_blocking(self, replica: Address, on_switch: Callable[[Address], None]) -> None:
        """Polls ROLE of the replica a Sentinel selected until it answers as a
        primary, then switches: the old primary takes writes until the
        Sentinels reconfigure it, a second or more later, and a failover throws
        those writes away, so the sooner connections move the fewer are lost."""
        deadline = time.monotonic() + _PROMOTION_WAIT
        while time.monotonic() < deadline:
            if self._role(replica) == "master":
                self._switch_to(replica, on_switch)
                return
            time.sleep(_PROMOTION_POLL)

    async def _promotion_watch(self, replica: Address, on_switch: Callable[[Address], None]) -> None:
        """:meth:`_promotion_watch_blocking` for the event loop."""
        deadline = time.monotonic() + _PROMOTION_WAIT
        while time.monotonic() < deadline:
            if await self._role_async(replica) == "master":
                self._switch_to(replica, on_switch)
                return
            await asyncio.sleep(_PROMOTION_POLL)

    def _ssl_context(self) -> ssl.SSLContext | None:
        s = self.settings
        if not s.ssl:
            return None
        context = ssl.create_default_context(
            cafile=s.ssl_ca_certs, capath=s.ssl_ca_path, cadata=s.ssl_ca_data
        )
        if s.ssl_certfile:
            context.load_cert_chain(s.ssl_certfile, s.ssl_keyfile, s.ssl_password)
        context.check_hostname = s.ssl_check_hostname and s.ssl_cert_reqs != "none"
        context.verify_mode = {
            "required": ssl.CERT_REQUIRED,
            "optional": ssl.CERT_OPTIONAL,
            "none": ssl.CERT_NONE,
        }[s.ssl_cert_reqs]
        return context


def _role_name(reply: Any) -> str:
    if isinstance(reply, list) and reply and isinstance(reply[0], bytes):
        return reply[0].decode(errors="replace")
    return f"node answering ROLE with {reply!r}"


# ------------------------------------------------------------ a little RESP


class _Error(str):
    """An error reply."""


#: What the listeners subscribe to on a Sentinel: the replica chosen for
#: promotion (polled until it is a primary), its promotion, and the end of
#: the failover.
_ANNOUNCEMENTS = ("+selected-slave", "+promoted-slave", "+switch-master")
#: How long and how often the replica a Sentinel selected is asked for its
#: ROLE, waiting for its promotion.
_PROMOTION_WAIT = 10.0
_PROMOTION_POLL = 0.005


def _command(*args: str) -> bytes:
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


async def _read_reply(reader: asyncio.StreamReader) -> Any:
    line = await reader.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("the Sentinel closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        return _Error(rest.decode(errors="replace"))
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        return (await reader.readexactly(size + 2))[:-2]
    if kind == b"*":
        count = int(rest)
        return None if count < 0 else [await _read_reply(reader) for _ in range(count)]
    raise ConnectionError(f"the Sentinel sent {line[:40]!r}, which is not RESP")


def _read_reply_blocking(stream: Any) -> Any:
    line = stream.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("the Sentinel closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        return _Error(rest.decode(errors="replace"))
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        return None if size < 0 else stream.read(size + 2)[:-2]
    if kind == b"*":
        count = int(rest)
        return None if count < 0 else [_read_reply_blocking(stream) for _ in range(count)]
    raise ConnectionError(f"the Sentinel sent {line[:40]!r}, which is not RESP")
