"""Running the async tests without pytest-asyncio (not a test module).

Import the ``run`` fixture into a test module (``from async_support import run``)
and every test using it runs twice: on the default asyncio loop and on uvloop
(marked ``uvloop``; skipped when uvloop is not installed).  ``run(coro)`` drives
the coroutine to completion on a *fresh* loop of that kind and closes the loop
afterwards, so a test may call ``run`` several times to cross loop
boundaries (a cache reused by a second ``asyncio.run``).

Two guards turn silent failures into test failures:

* a hang: the coroutine is wrapped in ``asyncio.wait_for(..., SAFETY_TIMEOUT)``;
* an error nobody saw: anything that reaches the loop's exception handler
  (an exception raised in a reader callback of the C engine, a
  "Future exception was never retrieved", a "Task was destroyed but it is
  pending") fails the test.
"""

from __future__ import annotations

import asyncio
import gc
import socket
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest

__all__ = ["SAFETY_TIMEOUT", "Runner", "gather_strict", "new_loop", "run", "server_side_rx_queue"]

T = TypeVar("T")

#: Upper bound for anything that only takes long when something is broken.
SAFETY_TIMEOUT = 60.0

LOOP_KINDS = ["asyncio", pytest.param("uvloop", marks=pytest.mark.uvloop)]


def loop_factory(kind: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if kind == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        return uvloop.new_event_loop  # type: ignore[no-any-return]
    return asyncio.new_event_loop


class Runner:
    """``runner(coro)``: run ``coro`` on a fresh event loop of one kind."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.factory = loop_factory(kind)
        self.unhandled: list[dict[str, Any]] = []

    def new_loop(self) -> asyncio.AbstractEventLoop:
        loop = self.factory()
        loop.set_exception_handler(lambda _loop, context: self.unhandled.append(context))
        return loop

    def __call__(self, coro: Coroutine[Any, Any, T], *, timeout: float = SAFETY_TIMEOUT) -> T:
        loop = self.new_loop()
        try:
            asyncio.set_event_loop(loop)
            result = loop.run_until_complete(asyncio.wait_for(coro, timeout))
        finally:
            try:
                _cancel_leftovers(loop)
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                asyncio.set_event_loop(None)
                loop.close()
        # Futures failed and never awaited report themselves when collected.
        gc.collect()
        self.check()
        return result

    def check(self) -> None:
        if self.unhandled:
            details = "\n".join(
                f"- {ctx.get('message')}: {ctx.get('exception')!r}" for ctx in self.unhandled
            )
            self.unhandled.clear()
            raise AssertionError(f"the event loop reported unhandled errors:\n{details}")


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


@pytest.fixture(params=LOOP_KINDS)
def run(request: pytest.FixtureRequest) -> Iterator[Runner]:
    """Runs a coroutine to completion on a fresh asyncio or uvloop event loop."""
    runner = Runner(request.param)
    yield runner
    gc.collect()
    runner.check()


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    """A new, not running loop of ``kind`` (for loops driven from a thread)."""
    return loop_factory(kind)()


async def gather_strict(*aws: Awaitable[T]) -> list[T]:
    """``asyncio.gather`` that also waits for the rest when one fails."""
    results = await asyncio.gather(*aws, return_exceptions=True)
    for item in results:
        if isinstance(item, BaseException):
            raise item
    return results  # type: ignore[return-value]


# ------------------------------------------------------------------ /proc


def _hex_endpoint(host: str, port: int) -> str:
    packed = socket.inet_aton(host)
    return f"{int.from_bytes(packed, 'little'):08X}:{port:04X}"


def server_side_rx_queue(server_port: int, client_port: int, host: str = "127.0.0.1") -> int:
    """Bytes the server has not read yet on the TCP connection from ``client_port``
    (its receive queue, from /proc/net/tcp): with a SIGSTOPped server, exactly
    what the client has written."""
    local = _hex_endpoint(host, server_port)
    remote = _hex_endpoint(host, client_port)
    with open("/proc/net/tcp", encoding="ascii") as fh:
        for line in fh.readlines()[1:]:
            fields = line.split()
            if fields[1] == local and fields[2] == remote:
                _tx, rx = fields[4].split(":")
                return int(rx, 16)
    raise AssertionError(f"no TCP connection {client_port} -> {server_port} in /proc/net/tcp")
