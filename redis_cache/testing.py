"""Private, real ``redis-server`` processes for tests and demos.

Used by this project's own test suite and demo, and offered to users for
theirs: a real server is a better test double than a mock.

Every server started here is private to the test run: it listens on an
ephemeral loopback port plus a unix socket inside its own temporary
directory, never persists anything, and is torn down by the owner (or, as a
last resort, at interpreter exit).  A system-wide Redis (e.g. on port 6379)
is never contacted or assumed.

Readiness is event based: the server logs to stdout and we wait for its
"Ready to accept connections" line with ``selectors`` under a deadline, so
tests never sleep and guess.

TLS: :func:`generate_tls_certificates` writes a throw-away CA and the
certificates TLS tests need (see :mod:`redis_cache._testing_tls`), and
``RedisServer(tls=...)`` listens on a TLS port with them.

Replication and Sentinel: :class:`ReplicationGroup` (a primary and its
replicas) and :class:`SentinelTopology` (the same watched by Sentinels, with
failover, kill and restart helpers), from :mod:`redis_cache._testing_sentinel`.

Redis Cluster: :class:`ClusterTopology` (primaries and replicas with
``cluster-enabled yes``, slot migration, failover, kill and restart helpers)
and :func:`key_slot`, from :mod:`redis_cache._testing_cluster`.

This module imports nothing from ``redis_cache`` but its sibling
``_testing_tls``: it works without the C extension.
"""

from __future__ import annotations

import atexit
import collections
import os
import selectors
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from typing import TYPE_CHECKING, BinaryIO, Literal
from urllib.parse import quote

from ._testing_tls import (
    CertificateAndKey,
    TLSCertificates,
    TLSSettings,
    find_openssl,
    generate_tls_certificates,
)

__all__ = [
    "CLUSTER_SLOTS",
    "FAST_SENTINEL_TIMERS",
    "CertificateAndKey",
    "ClusterNode",
    "ClusterNodeView",
    "ClusterTopology",
    "RedisReplyError",
    "RedisServer",
    "RedisServerError",
    "RedisServerStartError",
    "ReplicationGroup",
    "SentinelServer",
    "SentinelTopology",
    "SlotMigration",
    "TLSCertificates",
    "TLSSettings",
    "TopologyTimeoutError",
    "decode_reply",
    "find_openssl",
    "find_redis_server",
    "free_port",
    "generate_tls_certificates",
    "hash_tag_for_slot",
    "ipv6_loopback_available",
    "key_slot",
    "read_reply",
]

LOOPBACK_V4 = "127.0.0.1"
LOOPBACK_V6 = "::1"
READY_MARKER = "Ready to accept connections"

#: How often a start is retried with a fresh port when the ephemeral port
#: picked by :func:`free_port` was grabbed by someone else in the meantime.
PORT_RETRIES = 5

#: Directives the harness owns: overriding them would break readiness
#: detection, isolation or cleanup, so ``extra_config`` may not set them.
_RESERVED_DIRECTIVES = frozenset(
    {
        "bind",
        "daemonize",
        "dir",
        "logfile",
        "loglevel",
        "port",
        "requirepass",
        "tls-auth-clients",
        "tls-ca-cert-file",
        "tls-cert-file",
        "tls-client-cert-file",
        "tls-client-key-file",
        "tls-key-file",
        "tls-port",
        "unixsocket",
        "unixsocketperm",
        "user",
    }
)

#: How the harness reaches a server: plain TCP over IPv4 or IPv6, the unix
#: socket (never encrypted, even on a TLS-only server) or TLS over IPv4.
Transport = Literal["tcp", "tcp6", "unix", "tls"]
ConfigValue = str | int | Sequence[str]


class RedisServerError(RuntimeError):
    """A harness-managed server misbehaved (bad reply, failed auth, ...)."""


class RedisReplyError(RedisServerError):
    """An error reply (``-ERR ...``) to a command sent by :meth:`RedisServer.command`."""


class RedisServerStartError(RedisServerError):
    """``redis-server`` exited or never became ready; carries its log."""

    def __init__(self, message: str, log: str) -> None:
        super().__init__(f"{message}\n--- redis-server log ---\n{log}--- end of log ---")
        self.log = log

    @property
    def address_in_use(self) -> bool:
        """True when the failure was a port collision worth retrying."""
        return "Address already in use" in self.log


def find_redis_server() -> str | None:
    """Locate the ``redis-server`` binary (PATH first, then the distro path)."""
    found = shutil.which("redis-server")
    if found:
        return found
    if os.access("/usr/bin/redis-server", os.X_OK):
        return "/usr/bin/redis-server"
    return None


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    The kernel picks the port for a socket bound to port 0; we close the
    socket and hand the number to redis-server.  Someone else can take the
    port between the close and the server's bind, so callers must be ready
    to retry (:meth:`RedisServer.start` does, up to :data:`PORT_RETRIES`).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK_V4, 0))
        port: int = sock.getsockname()[1]
        return port


@cache
def ipv6_loopback_available() -> bool:
    """Whether ``::1`` can be bound here (containers often lack IPv6)."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK_V6, 0))
    except OSError:
        return False
    return True


def _config_quote(value: str) -> str:
    """Quote a string for redis.conf (parsed by Redis' ``sdssplitargs``).

    Passwords and paths may contain spaces, quotes or non-ASCII bytes; inside
    double quotes Redis understands ``\\\\``, ``\\"`` and ``\\xHH``.
    """
    out = ['"']
    for byte in value.encode():
        char = chr(byte)
        if char in '\\"':
            out.append("\\" + char)
        elif 0x20 <= byte < 0x7F:
            out.append(char)
        else:
            out.append(f"\\x{byte:02x}")
    out.append('"')
    return "".join(out)


def _encode_command(args: Iterable[str | bytes | int | float]) -> bytes:
    """Encode a command as a RESP array of bulk strings."""
    parts: list[bytes] = []
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        else:
            data = str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"*%d\r\n" % len(parts) + b"".join(parts)


def _read_line(stream: BinaryIO) -> bytes:
    line = stream.readline()
    if not line:
        raise ConnectionError("connection closed by redis-server before a complete reply")
    if not line.endswith(b"\r\n"):
        raise RedisServerError(f"malformed RESP line (no CRLF): {line!r}")
    return line


def _read_exact(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise ConnectionError("connection closed by redis-server in the middle of a reply")
    return data


def read_reply(stream: BinaryIO) -> bytes:
    """Read exactly one complete RESP2/RESP3 reply and return its raw bytes.

    Aggregates are read recursively and bulk payloads by their announced
    length, so replies of any size (and nested ones) come back whole, with
    nothing of a following reply consumed beyond the buffer.
    """
    line = _read_line(stream)
    kind, header = line[:1], line[1:-2]
    if kind in b"+-:_#,(":  # simple string, error, integer, null, bool, double, bignum
        return line
    if kind in b"$!=":  # bulk string, bulk error, verbatim string
        length = int(header)
        if length < 0:
            return line
        return line + _read_exact(stream, length + 2)
    if kind in b"*~>%|":  # array, set, push, map, attribute
        count = int(header)
        if count < 0:
            return line
        if kind in b"%|":  # maps and attributes hold key/value pairs
            count *= 2
        parts = [line]
        parts.extend(read_reply(stream) for _ in range(count))
        if kind == b"|":  # an attribute decorates the reply that follows it
            parts.append(read_reply(stream))
        return b"".join(parts)
    raise RedisServerError(f"unknown RESP type byte in {line!r}")


#: What :func:`decode_reply` makes of a reply.
Reply = str | int | None | list["Reply"] | RedisReplyError


def decode_reply(raw: bytes) -> Reply:
    """Turn one raw RESP2 reply (as :func:`read_reply` returns it) into Python.

    For inspecting servers, not for data: simple and bulk strings become
    ``str`` (UTF-8; bytes that are not UTF-8 are kept as surrogate escapes),
    integers ``int``, nil ``None``, arrays lists, and an error reply a
    :class:`RedisReplyError` *value* (raising is the caller's choice).
    """
    reply, end = _decode_at(raw, 0)
    if end != len(raw):
        raise RedisServerError(f"{len(raw) - end} bytes after the reply: {raw[end:end + 40]!r}")
    return reply


def _decode_at(raw: bytes, start: int) -> tuple[Reply, int]:
    """Decode the reply starting at ``raw[start]``; return it and where it ends."""
    line_end = raw.index(b"\r\n", start)
    kind, header = raw[start : start + 1], raw[start + 1 : line_end]
    after = line_end + 2
    if kind == b"+":
        return header.decode(errors="surrogateescape"), after
    if kind == b"-":
        return RedisReplyError(header.decode(errors="replace")), after
    if kind == b":":
        return int(header), after
    if kind == b"$":
        length = int(header)
        if length < 0:
            return None, after
        return raw[after : after + length].decode(errors="surrogateescape"), after + length + 2
    if kind == b"*":
        count = int(header)
        if count < 0:
            return None, after
        items: list[Reply] = []
        for _ in range(count):
            item, after = _decode_at(raw, after)
            items.append(item)
        return items, after
    raise RedisServerError(f"decode_reply reads RESP2 only, not {raw[start:line_end]!r}")


class _LogCollector:
    """Thread-safe, bounded buffer of a server's stdout lines.

    Bounded so a chatty server (e.g. ``loglevel debug``) cannot grow the
    test process without limit; the tail is what matters for diagnostics.
    """

    def __init__(self, max_lines: int = 5000) -> None:
        self._lines: collections.deque[str] = collections.deque(maxlen=max_lines)
        self._partial = b""
        self._lock = threading.Lock()

    def feed(self, data: bytes) -> list[str]:
        """Add raw output; return the lines it completed."""
        with self._lock:
            chunks = (self._partial + data).split(b"\n")
            self._partial = chunks.pop()
            lines = [chunk.decode(errors="replace").rstrip("\r") for chunk in chunks]
            self._lines.extend(lines)
            return lines

    def finish(self) -> None:
        """Flush an unterminated last line (the process has exited)."""
        with self._lock:
            if self._partial:
                self._lines.append(self._partial.decode(errors="replace"))
                self._partial = b""

    def text(self) -> str:
        with self._lock:
            lines = list(self._lines)
            if self._partial:
                lines.append(self._partial.decode(errors="replace"))
        return "".join(line + "\n" for line in lines)


def _drain(fd: int, log: _LogCollector) -> None:
    """Keep reading the server's stdout until EOF so the pipe never fills.

    A full pipe would block redis-server inside its logging call and freeze
    it, which would look like a bug in the code under test.
    """
    try:
        while True:
            data = os.read(fd, 65536)
            if not data:
                break
            log.feed(data)
    except OSError:
        pass
    finally:
        log.finish()
        os.close(fd)


#: Servers with a live process, killed at interpreter exit as a safety net
#: (e.g. when pytest is interrupted before fixture teardown runs).
_live_servers: set[RedisServer] = set()


@atexit.register
def _kill_leftover_servers() -> None:
    for server in list(_live_servers):
        server.close(graceful=False)


class RedisServer:
    """One private ``redis-server`` process on loopback TCP and a unix socket.

    Construction only chooses the port and creates the private directory;
    :meth:`start` launches the process and returns once it accepts
    connections.  ``stop``/``kill``/``start``/``restart`` may be repeated:
    the port, socket path and directory stay the same for the object's life.
    :meth:`close` (or leaving the ``with`` block) stops the server and
    deletes its directory.

    Authentication used by :meth:`cli`, :meth:`raw_command` and :attr:`url`
    (see :attr:`credentials`): ``password`` → the default user with that
    password; otherwise, when the default user is disabled, the first entry
    of ``users``; otherwise none.

    TLS: with ``tls=`` settings the server also listens on :attr:`tls_port`
    (:attr:`tls_url`); with ``plain_port=False`` on the TLS port only
    (``port 0``: :attr:`port` is 0 and :attr:`url` raises).  The harness's
    own helpers then use the unix socket, which Redis never encrypts, unless
    asked for ``via="tls"``.
    """

    host: str = LOOPBACK_V4
    #: The log line that says the server accepts connections.
    ready_marker: str = READY_MARKER

    def __init__(
        self,
        *,
        port: int | None = None,
        password: str | None = None,
        users: Sequence[tuple[str, str]] = (),
        default_user_enabled: bool = True,
        extra_config: Mapping[str, ConfigValue] | None = None,
        executable: str | None = None,
        startup_timeout: float = 10.0,
        shutdown_timeout: float = 10.0,
        tls: TLSSettings | None = None,
        tls_port: int | None = None,
        plain_port: bool = True,
    ) -> None:
        """Configure (but do not start) a server.

        :param port: fixed TCP port; ``None`` picks a free ephemeral one and
            allows retrying with another if it is taken before the bind.
        :param password: ``requirepass`` for the default user.
        :param users: ACL users ``(name, password)`` with full access
            (``on >password ~* &* +@all``).
        :param default_user_enabled: ``False`` writes ``user default off`` so
            connections must authenticate as one of ``users``; incompatible
            with ``password`` (which configures that very user).
        :param extra_config: further redis.conf directives; values are written
            verbatim (so multi-argument directives work), a sequence writes
            the directive once per item, ``""`` is written as ``""``.
        :param tls: certificates and ``tls-auth-clients``; enables the TLS
            port (see :meth:`TLSCertificates.server_tls`).
        :param tls_port: fixed TLS port; ``None`` picks a free one.
        :param plain_port: ``False`` closes the plain TCP port (``port 0``):
            a TLS-only server.
        """
        if password is not None and not default_user_enabled:
            raise ValueError("password configures the default user; it cannot also be disabled")
        if not default_user_enabled and not users:
            raise ValueError("with the default user disabled nobody could log in: pass users")
        extra = dict(extra_config or {})
        reserved = sorted(key for key in extra if key.lower() in _RESERVED_DIRECTIVES)
        if reserved:
            raise ValueError(f"extra_config may not override harness-owned directives: {reserved}")
        if tls is None and (tls_port is not None or not plain_port):
            raise ValueError("tls_port and plain_port=False need tls settings")
        if not plain_port and port is not None:
            raise ValueError("a TLS-only server (plain_port=False) has no plain port to fix")

        self.executable = executable or find_redis_server()
        if self.executable is None:
            raise RedisServerError("redis-server not found on PATH or at /usr/bin/redis-server")
        self.password = password
        self.users: list[tuple[str, str]] = list(users)
        self.default_user_enabled = default_user_enabled
        self.extra_config = extra
        self.startup_timeout = startup_timeout
        self.shutdown_timeout = shutdown_timeout

        self.tls = tls
        # Ports we picked may be retaken before redis-server binds them; only
        # those are re-picked on a collision, and only until the first start.
        self._auto_port = port is None and plain_port
        self._auto_tls_port = tls is not None and tls_port is None
        self._ports_are_provisional = self._auto_port or self._auto_tls_port
        #: The plain TCP port; 0 for a TLS-only server.
        self.port: int = port if port is not None else 0
        #: The TLS port, or ``None`` without TLS.
        self.tls_port: int | None = tls_port
        self._pick_ports()
        self.ipv6: bool = ipv6_loopback_available()
        self.dir: str = tempfile.mkdtemp(prefix="redis-cache-test-")
        # Unix socket paths are limited to ~107 bytes; mkdtemp under the
        # default temp dir keeps us far below that.
        self.unix_socket_path: str = os.path.join(self.dir, "redis.sock")
        self.config_path: str = os.path.join(self.dir, "redis.conf")

        self.process: subprocess.Popen[bytes] | None = None
        self._log = _LogCollector()
        self._drain_thread: threading.Thread | None = None
        self._paused = False
        self._closed = False

    def _pick_ports(self) -> None:
        """Choose fresh free ports for the ports we choose (never equal)."""
        if self._auto_port:
            self.port = free_port()
        if self._auto_tls_port:
            self.tls_port = free_port()
            while self.tls_port == self.port:
                self.tls_port = free_port()

    # ------------------------------------------------------------------ info

    @property
    def host6(self) -> str | None:
        """``"::1"`` when the server also listens on IPv6 loopback."""
        return LOOPBACK_V6 if self.ipv6 else None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        """The process exists and has not exited (it may be paused)."""
        return self.process is not None and self.process.poll() is None

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def log(self) -> str:
        """Everything the current (or last) process printed, for debugging."""
        return self._log.text()

    @property
    def credentials(self) -> tuple[str | None, str] | None:
        """``(username or None, password)`` the helpers authenticate with."""
        if self.password is not None:
            return (None, self.password)
        if not self.default_user_enabled:
            return self.users[0]
        return None

    def _userinfo(self) -> str:
        creds = self.credentials
        if creds is None:
            return ""
        username, password = creds
        return f"{quote(username or '', safe='')}:{quote(password, safe='')}@"

    def _ports_text(self) -> str:
        ports = [f"port {self.port}"] if self.port else []
        if self.tls_port is not None:
            ports.append(f"TLS port {self.tls_port}")
        return " and ".join(ports)

    def _require_plain_port(self) -> int:
        if not self.port:
            raise RedisServerError(f"{self!r} is TLS-only: use tls_url or the unix socket")
        return self.port

    def _require_tls_port(self) -> int:
        if self.tls_port is None:
            raise RedisServerError(f"{self!r} has no TLS port: start it with tls=...")
        return self.tls_port

    @property
    def url(self) -> str:
        """``redis://[user:password@]127.0.0.1:port/0`` using :attr:`credentials`.

        With only a ``password`` this is ``redis://:password@127.0.0.1:port/0``.
        Raises :class:`RedisServerError` on a TLS-only server.
        """
        return f"redis://{self._userinfo()}{self.host}:{self._require_plain_port()}/0"

    @property
    def url6(self) -> str | None:
        """Like :attr:`url` but over ``[::1]``; ``None`` without IPv6."""
        if not self.ipv6:
            return None
        return f"redis://{self._userinfo()}[{LOOPBACK_V6}]:{self._require_plain_port()}/0"

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` where clients connect: the plain TCP port, or the
        TLS port on a TLS-only server.  Also how replicas and Sentinel name it."""
        return (self.host, self.port or self._require_tls_port())

    @property
    def tls_url(self) -> str:
        """``rediss://[user:password@]127.0.0.1:tls_port/0``.

        The certificates are not part of the URL: a client needs the CA
        (and, with ``tls-auth-clients``, a client certificate) besides.
        """
        return f"rediss://{self._userinfo()}{self.host}:{self._require_tls_port()}/0"

    @property
    def unix_url(self) -> str:
        """``unix://[user:password@]/path/to/redis.sock`` (database 0)."""
        return f"unix://{self._userinfo()}{self.unix_socket_path}"

    def __repr__(self) -> str:
        state = "paused" if self._paused else ("running" if self.running else "stopped")
        tls = f" tls={self.tls_port}" if self.tls_port is not None else ""
        return f"<{type(self).__name__} {self.host}:{self.port}{tls} {state} pid={self.pid}>"

    # ---------------------------------------------------------------- config

    def _config_text(self) -> str:
        binds = [LOOPBACK_V4] + ([LOOPBACK_V6] if self.ipv6 else [])
        lines = [
            "daemonize no",
            'logfile ""',
            "loglevel notice",  # the readiness line is logged at notice level
            f"port {self.port}",
            f"bind {' '.join(binds)}",
            f"unixsocket {_config_quote(self.unix_socket_path)}",
            "unixsocketperm 700",
            f"dir {_config_quote(self.dir)}",
            'save ""',
            "appendonly no",
        ]
        if self.tls is not None:
            lines += self._tls_config_lines(self.tls)
        if self.password is not None:
            lines.append(f"requirepass {_config_quote(self.password)}")
        if not self.default_user_enabled:
            lines.append("user default off")
        for username, password in self.users:
            lines.append(
                f"user {_config_quote(username)} on {_config_quote('>' + password)} ~* &* +@all"
            )
        for key, value in self.extra_config.items():
            values = [value] if isinstance(value, (str, int)) else list(value)
            for item in values:
                text = str(item)
                lines.append(f"{key} {text if text else chr(34) * 2}")
        return "\n".join(lines) + "\n"

    def _tls_config_lines(self, tls: TLSSettings) -> list[str]:
        lines = [
            f"tls-port {self._require_tls_port()}",
            f"tls-cert-file {_config_quote(tls.cert_file)}",
            f"tls-key-file {_config_quote(tls.key_file)}",
            f"tls-ca-cert-file {_config_quote(tls.ca_cert_file)}",
            f"tls-auth-clients {tls.auth_clients}",
        ]
        if tls.client_cert_file is not None and tls.client_key_file is not None:
            lines.append(f"tls-client-cert-file {_config_quote(tls.client_cert_file)}")
            lines.append(f"tls-client-key-file {_config_quote(tls.client_key_file)}")
        return lines

    # ------------------------------------------------------------- lifecycle

    def start(self) -> RedisServer:
        """Launch the server and return once it accepts connections.

        If the ports were auto-picked and never used yet, a bind collision is
        retried with fresh ports; afterwards they are fixed so restarts keep
        the addresses clients already know.
        """
        if self._closed:
            raise RedisServerError("server was closed; create a new RedisServer")
        if self.running:
            raise RedisServerError(f"{self!r} is already running")
        attempts = PORT_RETRIES if self._ports_are_provisional else 1
        for attempt in range(attempts):
            try:
                self._launch()
            except RedisServerStartError as exc:
                if exc.address_in_use and attempt + 1 < attempts:
                    self._pick_ports()
                    continue
                raise
            break
        self._ports_are_provisional = False
        return self

    def _write_config(self) -> None:
        """Write redis.conf for the next launch (every launch, by default)."""
        with open(self.config_path, "w", encoding="utf-8") as fh:
            fh.write(self._config_text())

    def _command_line(self) -> list[str]:
        return [self.executable or "redis-server", self.config_path]

    def _launch(self) -> None:
        self._write_config()
        self._log = _LogCollector()
        self._paused = False
        process = subprocess.Popen(
            self._command_line(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            bufsize=0,
            cwd=self.dir,
            # Own session: a Ctrl-C aimed at pytest must not kill servers
            # behind the fixtures' back; teardown/atexit stops them.
            start_new_session=True,
        )
        assert process.stdout is not None
        # Hand the pipe fd to us alone; Popen's file object must not close it.
        fd = os.dup(process.stdout.fileno())
        process.stdout.close()
        try:
            self._wait_ready(process, fd)
        except BaseException:
            if process.poll() is None:
                process.kill()
            process.wait()
            os.close(fd)
            raise
        self.process = process
        _live_servers.add(self)
        self._drain_thread = threading.Thread(
            target=_drain,
            args=(fd, self._log),
            name=f"redis-server-{self.port or self.tls_port}-log",
            daemon=True,
        )
        self._drain_thread.start()

    def _wait_ready(self, process: subprocess.Popen[bytes], fd: int) -> None:
        """Block until the ready line appears, the process dies, or timeout."""
        deadline = time.monotonic() + self.startup_timeout
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RedisServerStartError(
                        f"redis-server on {self._ports_text()} not ready after "
                        f"{self.startup_timeout:g}s",
                        self._log.text(),
                    )
                if not selector.select(remaining):
                    continue  # deadline re-checked at the top
                data = os.read(fd, 65536)
                if not data:
                    self._log.finish()
                    code = process.wait(timeout=self.shutdown_timeout)
                    raise RedisServerStartError(
                        f"redis-server on {self._ports_text()} exited with code {code} "
                        "before accepting connections",
                        self._log.text(),
                    )
                if any(self.ready_marker in line for line in self._log.feed(data)):
                    return

    def _reap(self) -> None:
        """Wait for the log drain to finish and forget the process."""
        if self._drain_thread is not None:
            self._drain_thread.join(timeout=self.shutdown_timeout)
            self._drain_thread = None
        self._paused = False
        _live_servers.discard(self)

    def stop(self) -> None:
        """Shut down gracefully (SIGTERM); SIGKILL after ``shutdown_timeout``.

        A paused server is continued first, as it cannot act on SIGTERM while
        stopped.  No-op when not running.
        """
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            if self._paused:
                process.send_signal(signal.SIGCONT)
            process.terminate()
            try:
                process.wait(timeout=self.shutdown_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._reap()

    def kill(self) -> None:
        """SIGKILL the server (simulates a crash) and reap it.  Idempotent."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.kill()
            process.wait()
        self._reap()

    def restart(self) -> RedisServer:
        """Graceful stop then start on the same port, socket and directory.

        Data is not carried over (persistence is off), which lets tests tell
        a restarted server from the old one.
        """
        self.stop()
        return self.start()

    def pause(self) -> None:
        """SIGSTOP the server and return once the kernel reports it stopped.

        Waiting for the stop notification (``waitid(WSTOPPED)``) rather than
        just sending the signal guarantees that nothing is served after this
        returns, so timeout tests are deterministic.
        """
        process = self._require_running()
        process.send_signal(signal.SIGSTOP)
        info = os.waitid(os.P_PID, process.pid, os.WSTOPPED | os.WEXITED | os.WNOWAIT)
        if info is None or info.si_code != os.CLD_STOPPED:
            raise RedisServerError(f"redis-server pid {process.pid} did not stop:\n{self.log}")
        self._paused = True

    def resume(self) -> None:
        """SIGCONT a paused server.

        SIGCONT takes effect when it is sent, so there is nothing to wait for.
        """
        process = self._require_running()
        process.send_signal(signal.SIGCONT)
        self._paused = False

    def close(self, *, graceful: bool = True) -> None:
        """Stop (or kill) the server and delete its private directory."""
        if graceful:
            self.stop()
        else:
            self.kill()
        self._closed = True
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _require_running(self) -> subprocess.Popen[bytes]:
        if self.process is None or self.process.poll() is not None:
            raise RedisServerError(f"{self!r} is not running")
        return self.process

    # --------------------------------------------------------------- clients

    def _default_transport(self) -> Transport:
        return "tcp" if self.port else "unix"

    def connect(
        self,
        via: Transport | None = None,
        *,
        timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> socket.socket:
        """Open an unauthenticated socket to the server.

        ``via`` defaults to plain TCP, or to the unix socket on a TLS-only
        server.  ``via="tls"`` returns an :class:`ssl.SSLSocket` after the
        handshake, made with ``ssl_context`` or :meth:`TLSSettings.ssl_context`
        (which verifies the server and presents the client certificate).
        """
        via = via or self._default_transport()
        if via == "tls":
            return self._connect_tls(timeout, ssl_context)
        if via == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: str | tuple[str, int] = self.unix_socket_path
        elif via == "tcp6":
            if not self.ipv6:
                raise RedisServerError("IPv6 loopback is not available on this machine")
            sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            address = (LOOPBACK_V6, self._require_plain_port())
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            address = (self.host, self._require_plain_port())
        sock.settimeout(timeout)
        try:
            sock.connect(address)
        except BaseException:
            sock.close()
            raise
        return sock

    def _connect_tls(self, timeout: float, ssl_context: ssl.SSLContext | None) -> ssl.SSLSocket:
        port = self._require_tls_port()
        assert self.tls is not None
        context = ssl_context or self.tls.ssl_context()
        sock = socket.create_connection((self.host, port), timeout=timeout)
        try:
            return context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise

    def raw_command(
        self,
        *args: str | bytes | int | float,
        via: Transport | None = None,
        auth: bool = True,
        timeout: float = 10.0,
    ) -> bytes:
        """Send one command over a fresh socket; return the raw RESP reply.

        Independent of any client library, so tests can check what really
        reached the server.  With ``auth`` (default) the connection first
        authenticates with :attr:`credentials`.  Error replies are returned,
        not raised (only a failing AUTH raises).  ``via`` as for :meth:`connect`.
        """
        if not args:
            raise ValueError("raw_command needs at least the command name")
        return self.raw_pipeline(args, via=via, auth=auth, timeout=timeout)[0]

    def raw_pipeline(
        self,
        *commands: Sequence[str | bytes | int | float],
        via: Transport | None = None,
        auth: bool = True,
        timeout: float = 10.0,
    ) -> list[bytes]:
        """Send several commands over one fresh socket; return their raw replies.

        For what must share a connection, e.g. a write and the ``WAIT``
        that waits for its replication.  Otherwise as :meth:`raw_command`.
        """
        if not commands or not all(commands):
            raise ValueError("raw_pipeline needs commands, each with at least its name")
        with self.connect(via, timeout=timeout) as sock, sock.makefile("rb") as stream:
            creds = self.credentials if auth else None
            if creds is not None:
                username, password = creds
                auth_args = ("AUTH", password) if username is None else ("AUTH", username, password)
                sock.sendall(_encode_command(auth_args))
                reply = read_reply(stream)
                if reply != b"+OK\r\n":
                    raise RedisServerError(f"AUTH failed: {reply!r}")
            sock.sendall(b"".join(_encode_command(args) for args in commands))
            return [read_reply(stream) for _ in commands]

    def command(
        self,
        *args: str | bytes | int | float,
        via: Transport | None = None,
        auth: bool = True,
        timeout: float = 10.0,
    ) -> Reply:
        """Like :meth:`raw_command`, decoded by :func:`decode_reply`.

        An error reply raises :class:`RedisReplyError`.  Meant for looking
        at a server's state (``ROLE``, ``INFO``, ``SENTINEL ...``).
        """
        reply = decode_reply(self.raw_command(*args, via=via, auth=auth, timeout=timeout))
        if isinstance(reply, RedisReplyError):
            raise reply
        return reply

    def info(self, section: str = "default", *, via: Transport | None = None) -> dict[str, str]:
        """``INFO <section>`` as a dict of its ``field:value`` lines."""
        text = self.command("INFO", section, via=via)
        if not isinstance(text, str):
            raise RedisServerError(f"INFO replied {text!r}")
        fields: dict[str, str] = {}
        for line in text.splitlines():
            name, colon, value = line.partition(":")
            if colon and not name.startswith("#"):
                fields[name] = value
        return fields

    def flushall(self) -> None:
        """Empty every database (``FLUSHALL SYNC``), checking the reply."""
        reply = self.raw_command("FLUSHALL", "SYNC")
        if reply != b"+OK\r\n":
            raise RedisServerError(f"FLUSHALL failed: {reply!r}")

    def cli(
        self, *args: str, via: Transport | None = None, auth: bool = True, timeout: float = 30.0
    ) -> str:
        """Run ``redis-cli`` against this server; return its stripped stdout.

        For interop tests: what our client writes must be readable by the
        reference client and vice versa.  Raises ``CalledProcessError`` when
        redis-cli exits non-zero (server error replies exit 0 and are
        returned as text, e.g. ``"ERR ..."``).  ``via`` as for :meth:`connect`;
        ``via="tls"`` runs ``redis-cli --tls`` with the CA and client
        certificate of :attr:`tls`.
        """
        executable = shutil.which("redis-cli") or "/usr/bin/redis-cli"
        command = [executable]
        via = via or self._default_transport()
        if via == "unix":
            command += ["-s", self.unix_socket_path]
        elif via == "tls":
            command += ["-h", self.host, "-p", str(self._require_tls_port())]
            command += self._cli_tls_options()
        else:
            host = LOOPBACK_V6 if via == "tcp6" else self.host
            command += ["-h", host, "-p", str(self._require_plain_port())]
        creds = self.credentials if auth else None
        if creds is not None:
            username, password = creds
            if username is not None:
                command += ["--user", username]
            command += ["-a", password]
        command += ["--no-auth-warning", *args]
        result = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise subprocess.CalledProcessError(
                result.returncode, command, result.stdout, result.stderr
            )
        return result.stdout.strip()

    def _cli_tls_options(self) -> list[str]:
        assert self.tls is not None
        options = ["--tls", "--cacert", self.tls.ca_cert_file]
        if self.tls.client_cert_file is not None and self.tls.client_key_file is not None:
            options += ["--cert", self.tls.client_cert_file, "--key", self.tls.client_key_file]
        return options


# The replication, Sentinel and Cluster helpers build on RedisServer, so they
# live in modules that import this one; they are loaded on first use.
_SENTINEL_NAMES = frozenset(
    {
        "FAST_SENTINEL_TIMERS",
        "ReplicationGroup",
        "SentinelServer",
        "SentinelTopology",
        "TopologyTimeoutError",
    }
)

_CLUSTER_NAMES = frozenset(
    {
        "CLUSTER_SLOTS",
        "ClusterNode",
        "ClusterNodeView",
        "ClusterTopology",
        "SlotMigration",
        "hash_tag_for_slot",
        "key_slot",
    }
)

if TYPE_CHECKING:
    from ._testing_cluster import (
        CLUSTER_SLOTS,
        ClusterNode,
        ClusterNodeView,
        ClusterTopology,
        SlotMigration,
        hash_tag_for_slot,
        key_slot,
    )
    from ._testing_sentinel import (
        FAST_SENTINEL_TIMERS,
        ReplicationGroup,
        SentinelServer,
        SentinelTopology,
        TopologyTimeoutError,
    )


def __getattr__(name: str) -> object:
    if name in _SENTINEL_NAMES:
        from . import _testing_sentinel

        return getattr(_testing_sentinel, name)
    if name in _CLUSTER_NAMES:
        from . import _testing_cluster

        return getattr(_testing_cluster, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
