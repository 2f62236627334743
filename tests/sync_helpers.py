"""Helpers shared by the pool, thread, fork and leak tests (not a test module).

The tests here must know *for certain* which thread holds a pooled
connection, without sleeping and guessing. Two tools make that possible:

``HookSerializer``
    A JSON serializer whose ``dumps()`` can run a hook. ``set()`` takes its
    connection from the pool *before* encoding the value, so a hook running
    inside ``dumps()`` runs while the calling thread holds a connection:
    signalling an event there means "I have the connection", and waiting
    there keeps the connection busy for as long as the test wants.

``wait_until_blocked_in_recv``
    Reads ``/proc/self/task/<tid>/syscall`` to see that a thread sits in the
    ``recvfrom`` system call, i.e. waits for a reply from a paused server.

``huge_switch_interval``
    Turns off forced GIL hand-overs, so ``Thread.start()`` returns only once
    the new thread blocked (e.g. queued in the pool): waiters queue up in
    exactly the order they were started.
"""

from __future__ import annotations

import contextlib
import json
import platform
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

#: Generous upper bound for waits that only fail when something is broken
#: (a hang is turned into a test failure instead of a stuck run).
SAFETY_TIMEOUT = 30.0


class HookSerializer:
    """JSON via the stdlib, with ``hook(value)`` called in ``dumps()``.

    A :class:`Hold` is stored as its payload.
    """

    def __init__(self) -> None:
        self.hook: Callable[[Any], None] | None = None

    def dumps(self, value: Any) -> bytes:
        hook = self.hook
        if hook is not None:
            hook(value)
        return json.dumps(value.payload if isinstance(value, Hold) else value).encode()

    def loads(self, data: bytes) -> Any:
        return json.loads(data)


class Hold:
    """Marker value: ``cache.set(key, Hold(...))`` takes a connection and keeps it.

    Install :func:`hold_hook` on the cache's :class:`HookSerializer`; the
    thread calling ``set`` then signals :attr:`acquired` from inside
    ``dumps()`` and waits there until :meth:`release` is called.
    """

    def __init__(self, payload: Any = "held", *, block: bool = True) -> None:
        self.payload = payload
        self.block = block
        self.acquired = threading.Event()
        self._release = threading.Event()

    def release(self) -> None:
        self._release.set()

    @property
    def released(self) -> bool:
        return self._release.is_set()

    def on_dumps(self) -> None:
        self.acquired.set()
        if self.block and not self._release.wait(SAFETY_TIMEOUT):
            raise AssertionError("Hold was never released")


def hold_hook(record: list[Any] | None = None) -> Callable[[Any], None]:
    """A ``dumps`` hook: runs :class:`Hold` markers; appends other values to ``record``
    (in the order their callers got a connection)."""

    def hook(value: Any) -> None:
        if isinstance(value, Hold):
            value.on_dumps()
        elif record is not None:
            record.append(value)

    return hook


@contextlib.contextmanager
def huge_switch_interval() -> Iterator[None]:
    """No forced GIL hand-over: a thread keeps the GIL until it blocks.

    Then ``Thread.start()`` (which waits for the new thread to signal that
    it started) returns only once the new thread released the GIL of its
    own accord, which a thread calling into a held pool first does when it
    queues up as a waiter.
    """
    old = sys.getswitchinterval()
    sys.setswitchinterval(SAFETY_TIMEOUT)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


class ResultThread(threading.Thread):
    """A thread that keeps its target's return value or exception."""

    def __init__(self, target: Callable[[], Any], name: str | None = None) -> None:
        super().__init__(name=name, daemon=True)
        self._fn = target
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self._fn()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def outcome(self) -> Any:
        """Join (bounded) and return the result, re-raising the thread's error."""
        self.join(SAFETY_TIMEOUT)
        assert not self.is_alive(), f"{self.name} is still running"
        if self.error is not None:
            raise self.error
        return self.result


# ------------------------------------------------------------------ /proc

_SYSCALLS = {
    "x86_64": {"recvfrom": 45},
    "aarch64": {"recvfrom": 207},
}


def _syscall_of(native_id: int) -> list[str]:
    """The kernel's view: ``[number, arg1, ... arg6, sp, pc]``, or ``["running"]``."""
    with open(f"/proc/self/task/{native_id}/syscall", encoding="ascii") as fh:
        return fh.read().split()


def syscalls_observable() -> bool:
    """Whether :func:`wait_until_blocked_in_recv` works on this machine."""
    if platform.machine() not in _SYSCALLS:
        return False
    try:
        _syscall_of(threading.get_native_id())
    except OSError:
        return False
    return True


def in_recv(native_id: int) -> bool:
    fields = _syscall_of(native_id)
    return bool(fields) and fields[0] == str(_SYSCALLS[platform.machine()]["recvfrom"])


def _wait_until(thread: threading.Thread, state: Callable[[int], bool], what: str) -> None:
    if not syscalls_observable():
        pytest.skip("/proc/<pid>/task/<tid>/syscall is not available here")
    native_id = thread.native_id
    assert native_id is not None
    deadline = time.monotonic() + SAFETY_TIMEOUT
    while not state(native_id):
        assert thread.is_alive(), f"{thread.name} ended before {what}"
        assert time.monotonic() < deadline, f"{thread.name} never {what}"
        time.sleep(0)  # yield the GIL only; the loop condition is the synchronization


def wait_until_blocked_in_recv(thread: threading.Thread) -> None:
    """Return once ``thread`` is blocked in ``recvfrom`` (fail after a safety deadline).

    Polling the kernel's view of the thread is the only way to know that a
    thread waits inside a C call; each round drops the GIL briefly
    (``time.sleep(0)``) so the observed thread can get there.
    """
    _wait_until(thread, in_recv, "blocked in recv")


def client_count(server: Any, name: str) -> int:
    """How many connections named ``name`` the server has (via redis-cli)."""
    listing = server.cli("CLIENT", "LIST")
    return sum(1 for line in listing.splitlines() if f" name={name} " in f" {line} ")
