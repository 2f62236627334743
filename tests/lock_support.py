"""Waiting on what the server shows, for the lock tests (not a test module).

The decorators' stampede tests and the public lock's tests both order their
steps by observable conditions (a client blocked in BLPOP, a key expired),
never by sleeps: :func:`wait_until` polls one under a generous deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from redis_raw import raw

from redis_cache.testing import RedisServer

__all__ = ["DEADLINE", "async_wait_until", "blocked_clients", "python_processes", "wait_until"]

#: Upper bound for waits that only run out when something is broken.
DEADLINE = 30.0


def wait_until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """Polls an observable condition until it holds (fails after timeout)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


async def async_wait_until(condition: Callable[[], Any], what: str,
                           timeout: float = DEADLINE) -> None:
    """Like wait_until, letting the loop run; condition may be a coroutine function."""
    deadline = time.monotonic() + timeout
    while not (await result if inspect.isawaitable(result := condition()) else result):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


def blocked_clients(server: RedisServer) -> int:
    """How many clients the server has blocked in a command like BLPOP."""
    info = raw(server, "INFO", "clients")
    assert isinstance(info, bytes)
    for line in info.decode().splitlines():
        if line.startswith("blocked_clients:"):
            return int(line.split(":")[1])
    raise AssertionError(f"no blocked_clients in {info!r}")


@contextlib.contextmanager
def python_processes(script: str) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """``start(*argv)`` runs ``python -c script *argv`` (stdout and stderr
    piped, text); any still running at the end are killed."""
    started: list[subprocess.Popen[str]] = []

    def start(*argv: object) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", script, *map(str, argv)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
