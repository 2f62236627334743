"""A scripted RESP server: a fake Redis that answers what the test says (not a test module).

Real servers (conftest.py) answer correctly; this one exists to answer
*wrongly* (a reply of the wrong type, one nobody asked for, a reply dribbled
a byte at a time, an array header claiming two billion elements), so tests
can pin down how the client copes with a broken or hostile server.

``ScriptedServer(handler)`` listens on 127.0.0.1 (a port the kernel picks)
and serves each connection on a daemon thread of its own.  It parses the
commands clients send (RESP arrays of bulk strings), records them, and does
what ``handler(command)`` returns for each:

``bytes``
    sent as they are, in one write: a reply, several, half of one, garbage;
``None``
    nothing: the command gets no answer;
``Dribble(data, interval, size=1)``
    ``data`` in pieces of ``size`` bytes, ``interval`` seconds apart;
``WaitFor(event, timeout=30)``
    pause this connection until the test sets a ``threading.Event``
    (closed if it is not set within ``timeout``);
a callable
    called with no arguments (e.g. ``event.set``, to tell the test that
    what came before it in a list has been sent);
``CLOSE``
    close the connection;
a list of those
    done in order, e.g. ``[reply, WaitFor(go), b"+EXTRA\\r\\n", sent.set]``.

``command`` is a :class:`Command`: ``args`` (a tuple of bytes), ``name``
(the first argument, upper-case ``str``) and ``conn``, the
:class:`Connection` it came on.  ``bulk``, ``status``, ``error``,
``integer``, ``array`` and ``NIL`` spell RESP2 replies; ``default_handler``
answers PING and refuses everything else, so handlers can fall back to it.

What a test can check afterwards: ``server.accepted`` (connections accepted
so far), ``server.connections`` (each with ``index``, ``commands``,
``peer_port`` and ``peer_closed``, an event set once the client closed or
reset its end), ``server.commands()`` (every command received) and
``server.command_names()``.

Bounded by construction: loopback only; at most ``max_connections``
connections are served (later ones are closed at once); a connection that
sends more than ``max_commands`` commands is closed, so a client stuck in a
loop ends with an error instead of running forever; every wait ends when the
server stops.  ``stop()`` closes every socket and joins every thread.  An
exception in a handler, or a command that is not valid RESP, is kept in
``server.errors``; the ``scripted_server`` fixture fails the test with it.

Import the fixture into a test module with
``from scripted_server import scripted_server``; then::

    server = scripted_server(lambda command: b"+OK\\r\\n" if command.name == "SET" else None)
    cache = SyncRedisCache(host=server.host, port=server.port)
"""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Union

import pytest

__all__ = [
    "Action",
    "CLOSE",
    "NIL",
    "Command",
    "Connection",
    "Dribble",
    "Handler",
    "ScriptedServer",
    "WaitFor",
    "array",
    "bulk",
    "default_handler",
    "error",
    "integer",
    "scripted_server",
    "status",
]

#: How long a join, a ``WaitFor`` or a blocked send may take before the
#: server gives up on it: only reached when a test is broken.
SAFETY_TIMEOUT = 30.0

# ------------------------------------------------------------------ replies


def bulk(data: bytes | str) -> bytes:
    if isinstance(data, str):
        data = data.encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


def status(text: str) -> bytes:
    return b"+" + text.encode() + b"\r\n"


def error(text: str) -> bytes:
    return b"-" + text.encode() + b"\r\n"


def integer(value: int) -> bytes:
    return b":%d\r\n" % value


def array(*items: bytes) -> bytes:
    """An array of already encoded replies."""
    return b"*%d\r\n" % len(items) + b"".join(items)


NIL = b"$-1\r\n"

# ------------------------------------------------------------------ actions


@dataclass(frozen=True)
class Dribble:
    """Send ``data`` ``size`` bytes at a time, ``interval`` seconds apart."""

    data: bytes
    interval: float
    size: int = 1


@dataclass(frozen=True)
class WaitFor:
    """Pause the connection until ``event`` is set (or ``timeout`` passes: then close it)."""

    event: threading.Event
    timeout: float = SAFETY_TIMEOUT


class _Close:
    def __repr__(self) -> str:
        return "CLOSE"


CLOSE = _Close()

Action = Union[bytes, None, Dribble, WaitFor, _Close, Callable[[], Any], list[Any], tuple[Any, ...]]

# ------------------------------------------------------------------ server


@dataclass(eq=False)
class Connection:
    """One accepted connection, as the server saw it."""

    index: int  #: 0 for the first connection accepted, 1 for the next...
    sock: socket.socket
    peer_port: int
    commands: list[tuple[bytes, ...]] = field(default_factory=list)
    #: Set when the client closed (EOF) or reset its end of the connection.
    peer_closed: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class Command:
    args: tuple[bytes, ...]
    conn: Connection

    @property
    def name(self) -> str:
        return self.args[0].decode("latin-1").upper() if self.args else ""


Handler = Callable[[Command], Action]


def default_handler(command: Command) -> Action:
    if command.name == "PING":
        return status("PONG")
    return error(f"ERR the scripted server has no answer for {command.name!r}")


class ScriptedServer:
    """A RESP server on 127.0.0.1 that answers through ``handler``; see the module doc."""

    host = "127.0.0.1"

    def __init__(
        self,
        handler: Handler = default_handler,
        *,
        max_connections: int = 16,
        max_commands: int = 1000,
    ) -> None:
        self.handler = handler
        self.max_connections = max_connections
        self.max_commands = max_commands
        self.connections: list[Connection] = []
        self.errors: list[BaseException] = []
        self._stopping = threading.Event()
        # One byte written here wakes every select() below for good.
        self._wake_r, self._wake_w = socket.socketpair()
        self._listener = socket.create_server((self.host, 0))
        self.port: int = self._listener.getsockname()[1]
        accepting = threading.Thread(
            target=self._accept_loop, daemon=True, name=f"scripted-{self.port}"
        )
        self._threads = [accepting]
        accepting.start()

    @property
    def accepted(self) -> int:
        return len(self.connections)

    def commands(self) -> list[tuple[bytes, ...]]:
        """Every command received, connection by connection."""
        return [command for conn in self.connections for command in conn.commands]

    def command_names(self) -> list[str]:
        return [command[0].decode("latin-1").upper() for command in self.commands()]

    def stop(self) -> None:
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._wake_w.send(b"x")
        for thread in self._threads:
            thread.join(SAFETY_TIMEOUT)
            if thread.is_alive():
                self.errors.append(AssertionError(f"{thread.name} did not stop"))
        self._listener.close()
        for conn in self.connections:
            conn.sock.close()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> ScriptedServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -------------------------------------------------------------- threads

    def _readable(self, sock: socket.socket) -> bool:
        """Waits until ``sock`` can be read; False once the server is stopping."""
        ready, _, _ = select.select([sock, self._wake_r], [], [])
        return self._wake_r not in ready

    def _accept_loop(self) -> None:
        try:
            self._accept_until_stopped()
        except BaseException as exc:  # noqa: BLE001 - reported by the fixture
            self.errors.append(exc)

    def _accept_until_stopped(self) -> None:
        while self._readable(self._listener):
            sock, (_, peer_port) = self._listener.accept()
            sock.settimeout(SAFETY_TIMEOUT)  # bounds sendall() to a client that stopped reading
            conn = Connection(len(self.connections), sock, peer_port)
            self.connections.append(conn)
            if conn.index >= self.max_connections:
                sock.close()
                continue
            thread = threading.Thread(
                target=self._serve,
                args=(conn,),
                daemon=True,
                name=f"scripted-{self.port}-{conn.index}",
            )
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: Connection) -> None:
        pending = bytearray()
        try:
            while not self._stopping.is_set():
                args = _take_command(pending)
                if args is None:
                    if not self._readable(conn.sock):
                        return
                    data = conn.sock.recv(65536)
                    if not data:
                        conn.peer_closed.set()
                        return
                    pending += data
                    continue
                conn.commands.append(args)
                if len(conn.commands) > self.max_commands:
                    return
                if not self._act(conn, self.handler(Command(args, conn))):
                    return
        except (ConnectionResetError, BrokenPipeError):
            conn.peer_closed.set()
        except BaseException as exc:  # noqa: BLE001 - a broken test: reported by the fixture
            self.errors.append(exc)
        finally:
            conn.sock.close()

    def _act(self, conn: Connection, action: Action) -> bool:
        """Does what the handler said; False when the connection must end."""
        if action is None:
            return True
        if isinstance(action, (bytes, bytearray)):
            conn.sock.sendall(action)
            return True
        if isinstance(action, (list, tuple)):
            return all(self._act(conn, step) for step in action)
        if action is CLOSE:
            return False
        if isinstance(action, Dribble):
            for start in range(0, len(action.data), action.size):
                if start and self._stopping.wait(action.interval):
                    return False
                conn.sock.sendall(action.data[start : start + action.size])
            return True
        if isinstance(action, WaitFor):
            # In slices, so that stop() is never kept waiting by a test's event.
            for _ in range(int(action.timeout / 0.05) + 1):
                if action.event.wait(0.05):
                    return True
                if self._stopping.is_set():
                    return False
            return False
        if callable(action):
            action()
            return True
        raise TypeError(f"a handler returned {action!r}, which is not an action")


def _take_command(pending: bytearray) -> tuple[bytes, ...] | None:
    """Removes one complete command (an array of bulk strings) from the front
    of ``pending`` and returns its arguments; None until one is complete."""
    if not pending:
        return None
    if pending[:1] != b"*":
        raise ValueError(f"a client sent something that is not a RESP array: {bytes(pending)!r}")
    end = pending.find(b"\r\n")
    if end < 0:
        return None
    count, pos = int(pending[1:end]), end + 2
    args = []
    for _ in range(count):
        end = pending.find(b"\r\n", pos)
        if end < 0:
            return None
        if pending[pos : pos + 1] != b"$":
            raise ValueError(f"a command argument is not a bulk string: {bytes(pending)!r}")
        size = int(pending[pos + 1 : end])
        start = end + 2
        if len(pending) < start + size + 2:
            return None
        args.append(bytes(pending[start : start + size]))
        pos = start + size + 2
    del pending[:pos]
    return tuple(args)


# ------------------------------------------------------------------ fixture


@pytest.fixture
def scripted_server() -> Iterator[Callable[..., ScriptedServer]]:
    """``start(handler, **options) -> ScriptedServer``; every server started is
    stopped at teardown, and the test fails if one of them saw an error."""
    servers: list[ScriptedServer] = []

    def start(handler: Handler = default_handler, **options: Any) -> ScriptedServer:
        server = ScriptedServer(handler, **options)
        servers.append(server)
        return server

    yield start
    errors = []
    for server in servers:
        server.stop()
        errors += server.errors
    if errors:
        raise AssertionError(f"the scripted server failed: {errors!r}") from errors[0]
