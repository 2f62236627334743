"""Helpers shared by the pool, thread, fork and leak tests (not a test module).

The tests here must know *for certain* which thread holds a pooled
connection, without sleeping and guessing. Two tools make that possible:

``HookSerializer`` / ``Hold`` / ``start_holder``
    The cache runs a serializer's ``dumps()`` *before* it takes a pooled
    connection (so ``dumps()`` may use the cache itself), but it runs
    ``loads()`` *while* the calling thread holds its connection: a reply is
    decoded inside the read, before the connection is given back. So the
    hooks live in ``loads()``. ``start_holder(cache, key, hold)`` stores a
    marker naming the :class:`Hold` at ``key`` (an ordinary ``set()``, done
    and over before anything is held), then starts a thread that calls
    ``cache.get(key)``. Decoding the marker signals ``hold.acquired``
    ("this thread has the connection") and waits until ``hold.release()``,
    which keeps the connection busy for as long as the test wants; then
    ``get()`` returns the Hold's payload.

    ``HookSerializer(record=...)`` also appends every other value it decodes
    to ``record``: with a single connection, threads that ``get()`` keys
    whose values identify them are recorded in the order they got the
    connection.

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
import itertools
import json
import platform
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest

#: Generous upper bound for waits that only fail when something is broken
#: (a hang is turned into a test failure instead of a stuck run).
SAFETY_TIMEOUT = 30.0


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


_HOLD_TAG = "__sync_helpers_hold__"
_hold_ids = itertools.count(1)
#: Live holds by id; a marker whose Hold is gone decodes to its payload.
_holds: weakref.WeakValueDictionary[int, Hold] = weakref.WeakValueDictionary()


class HookSerializer:
    """JSON via the stdlib whose ``loads()`` runs :class:`Hold` markers.

    ``dumps(hold)`` stores a :class:`Hold` as a marker that carries its id and
    payload; ``loads()`` turns the marker back into the payload, first
    running the Hold (see :meth:`Hold.on_loads`). Every other decoded value
    is appended to ``record`` when one is given.
    """

    def __init__(self, record: list[Any] | None = None) -> None:
        self.record = record

    def dumps(self, value: Any) -> bytes:
        if isinstance(value, Hold):
            value = {_HOLD_TAG: value.id, "payload": value.payload}
        return json.dumps(value).encode()

    def loads(self, data: bytes) -> Any:
        value = json.loads(data)
        if isinstance(value, dict) and _HOLD_TAG in value:
            hold = _holds.get(value[_HOLD_TAG])
            if hold is not None:
                hold.on_loads()
            return value["payload"]
        if self.record is not None:
            self.record.append(value)
        return value


class Hold:
    """A value whose first read keeps the reading thread's connection busy.

    Stored with ``cache.set(key, hold)`` on a cache using
    :class:`HookSerializer` (or by :func:`start_holder`). The first
    ``cache.get(key)`` to decode it signals :attr:`acquired` from inside
    ``loads()`` (so while that thread holds its pooled connection) and waits
    there until :meth:`release`. Any later read, or any read once released,
    just returns :attr:`payload`.
    """

    def __init__(self, payload: Any = "held") -> None:
        self.id = next(_hold_ids)
        self.payload = payload
        self.acquired = threading.Event()
        self._release = threading.Event()
        self._lock = threading.Lock()
        self._claimed = False
        self._settled = threading.Event()  # acquired, or the holder thread ended
        _holds[self.id] = self

    def release(self) -> None:
        self._release.set()

    @property
    def released(self) -> bool:
        return self._release.is_set()

    def on_loads(self) -> None:
        with self._lock:
            first, self._claimed = not self._claimed, True
        if not first or self.released:
            return
        self.acquired.set()
        self._settled.set()
        if not self._release.wait(SAFETY_TIMEOUT):
            raise AssertionError("Hold was never released")


def start_holder(cache: Any, key: str, hold: Hold, name: str | None = None) -> ResultThread:
    """Stores ``hold`` at ``key``, then starts a thread running ``cache.get(key)``.

    Returns once that thread holds a pooled connection (``hold.acquired``);
    it keeps it until ``hold.release()``, then its result is ``hold.payload``.
    ``cache`` must use a :class:`HookSerializer`. The ``set()`` storing the
    marker is over before the thread starts, so it needs a free connection
    (or a free slot) but keeps none.
    """
    assert cache.set(key, hold) is True

    def hold_it() -> Any:
        try:
            return cache.get(key)
        finally:
            hold._settled.set()

    thread = ResultThread(hold_it, name=name or f"holder-{key}")
    thread.start()
    hold._settled.wait(SAFETY_TIMEOUT)
    if not hold.acquired.is_set():
        hold.release()
        thread.outcome()  # re-raises the thread's error, if it had one
        raise AssertionError(f"{thread.name} never got a connection")
    return thread


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
