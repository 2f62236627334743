"""A broken or hostile server cannot corrupt state or stall the process (issue 9, C).

Every test talks to a :class:`scripted_server.ScriptedServer`, which answers
what the test scripts: replies nobody asked for, replies of a type the
command cannot return, array headers claiming two billion elements, a reply
dribbled a byte at a time, SCAN replies that are not what SCAN returns.

The rules pinned down here (docs/architecture.md, "Rules for failure"):

* a reply is checked against what its command can return; anything else is a
  ``ProtocolError`` and the connection it came on is dropped, so the next
  call runs on a new connection (``server.accepted`` counts them) and never
  reads a leftover reply. An error reply (``-ERR``) stays a ``ResponseError``
  and the connection is kept;
* a reply nobody asked for never reaches a caller as a value;
* ``socket_timeout`` is a deadline for the whole reply, sync and async;
* an array header is not taken at its word: no memory or GIL time is spent
  on elements that have not arrived;
* ``clear_pattern`` checks every part of a SCAN reply before it unlinks
  anything.

Async tests run on asyncio and uvloop (``run``). Nothing sleeps to
synchronize: tests wait on replies and on events the scripted server sets
(the dribbling server's pauses are its behaviour, not synchronization); the
one poll, with a deadline, watches /proc/net/tcp for pushed bytes to reach
an idle client connection's receive queue. The
only time bounds asserted are correctness deadlines: a call with
``socket_timeout=1`` must end within a few seconds, and no thread may be
kept off the GIL for as long as the timeout. Every case that used to hang
is bounded: timeouts on every cache, and scripted servers that close the
connection after a few commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from async_support import Runner, run, server_side_rx_queue  # noqa: F401  (fixture)
from scripted_server import (  # noqa: F401  (fixture)
    CLOSE,
    NIL,
    Action,
    Command,
    Dribble,
    ScriptedServer,
    WaitFor,
    array,
    bulk,
    default_handler,
    error,
    integer,
    scripted_server,
    status,
)

from redis_cache import RedisCache, SyncRedisCache
from redis_cache.errors import ProtocolError, ResponseError, TimeoutError

#: socket_timeout of every cache here: short, so that what used to hang fails fast.
SOCKET_TIMEOUT = 1.0
#: Bound on waits for things that happen at once unless something is broken.
HANG = 10.0
#: What a healthy server holds under the key every follow-up call reads.
FRESH = "fresh"

Start = Callable[..., ScriptedServer]


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def json_bulk(value: Any) -> bytes:
    """A stored JSON value, as GET returns it."""
    return bulk(json.dumps(value))


def sane(command: Command) -> Action:
    """What a healthy server answers to the commands these tests send."""
    name = command.name
    if name == "GET":
        return json_bulk(FRESH)
    if name == "SET":
        return status("OK")
    if name in ("UNLINK", "EXISTS", "PEXPIRE"):
        return integer(1)
    if name == "TTL":
        return integer(60)
    if name == "INCRBY":
        return integer(1)
    if name == "MGET":
        return array(*(json_bulk(FRESH) for _ in command.args[1:]))
    return default_handler(command)


#: The key of the follow-up call after a failure: always answered sanely.
AFTER = "after"


def on_first_connection(command_name: str, reply: Action) -> Callable[[Command], Action]:
    """A handler that answers ``command_name`` with ``reply`` on the first
    connection (except for the follow-up read of AFTER), and like a healthy
    server otherwise."""

    def handle(command: Command) -> Action:
        hostile = command.conn.index == 0 and AFTER.encode() not in command.args
        if hostile and command.name == command_name:
            return reply
        return sane(command)

    return handle


def sync_cache(server: ScriptedServer, **options: Any) -> SyncRedisCache:
    """One pooled connection, so that a second call reuses the first one's
    connection unless it was dropped."""
    settings: dict[str, Any] = {
        "max_connections": 1,
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": SOCKET_TIMEOUT,
        "pool_timeout": SOCKET_TIMEOUT,
        **options,
    }
    return SyncRedisCache(host=server.host, port=server.port, **settings)


def async_cache(server: ScriptedServer, **options: Any) -> RedisCache:
    settings: dict[str, Any] = {
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": SOCKET_TIMEOUT,
        "pool_timeout": SOCKET_TIMEOUT,
        **options,
    }
    return RedisCache(host=server.host, port=server.port, **settings)


async def wait_in_thread(event: threading.Event) -> bool:
    """Waits for a threading.Event without blocking the event loop."""
    return await asyncio.get_running_loop().run_in_executor(None, event.wait, HANG)


def wait_until_client_has_unread_bytes(server: ScriptedServer, index: int = 0) -> None:
    """Returns once the kernel holds bytes the client has not read on
    connection ``index`` (its receive queue, from /proc/net/tcp): what the
    server sent is then waiting in the idle pooled connection."""
    conn = server.connections[index]
    deadline = time.monotonic() + HANG
    # The client's end: local port = the client's, remote = the server's.
    while server_side_rx_queue(conn.peer_port, server.port) == 0:
        assert time.monotonic() < deadline, "the pushed bytes never reached the client"
        time.sleep(0.001)


class GilWatch:
    """A thread that notes the time every few milliseconds while it runs.

    It needs the GIL to take each note, so the longest gap between two notes
    is (at least) the longest time some other thread held the GIL.
    """

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._stamps: list[float] = []
        self._thread = threading.Thread(target=self._note, name="gil-watch", daemon=True)

    def _note(self) -> None:
        self._stamps.append(time.monotonic())
        while not self._stop.wait(0.005):
            self._stamps.append(time.monotonic())
        self._stamps.append(time.monotonic())

    def __enter__(self) -> GilWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(HANG)

    @property
    def notes(self) -> int:
        return len(self._stamps)

    @property
    def longest_gap(self) -> float:
        stamps = self._stamps
        return max((b - a for a, b in zip(stamps, stamps[1:])), default=0.0)


@dataclass
class Measured:
    elapsed: float = 0.0
    peak_bytes: int = 0
    longest_gil_gap: float = 0.0
    notes: int = 0

    def problems(self) -> list[str]:
        """What a cache whose call got a huge array header must not do: take
        much longer than the timeout, keep other threads off the GIL for as
        long as the timeout, or allocate memory for elements never sent."""
        found = []
        if self.elapsed >= 3 * SOCKET_TIMEOUT:
            found.append(
                f"a timed-out call and the next took {self.elapsed:.1f} s "
                f"with socket_timeout={SOCKET_TIMEOUT}"
            )
        if self.longest_gil_gap >= SOCKET_TIMEOUT:
            found.append(f"another thread was kept off the GIL for {self.longest_gil_gap:.1f} s")
        if self.notes < 3:
            found.append(f"another thread ran only {self.notes} times while the call waited")
        if self.peak_bytes >= 64 << 20:
            found.append(f"{self.peak_bytes / 2**30:.1f} GiB allocated for elements never sent")
        return found


@contextlib.contextmanager
def measured() -> Iterator[Measured]:
    """Measures the block: its duration, the peak of Python's allocations
    (tracemalloc) and the longest time a watching thread waited for the GIL."""
    result = Measured()
    tracemalloc.start()
    try:
        with GilWatch() as gil:
            started = time.monotonic()
            try:
                yield result
            finally:
                result.elapsed = time.monotonic() - started
        result.peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    result.longest_gil_gap, result.notes = gil.longest_gap, gil.notes


# ---------------------------------------------------------------------------
# the fixture itself
# ---------------------------------------------------------------------------


def test_the_scripted_server_serves_the_sync_client(scripted_server: Start) -> None:
    server = scripted_server(sane)
    with sync_cache(server, namespace="app") as cache:
        assert cache.ping() is True
        assert cache.get("k") == FRESH
        assert cache.set("k", [1, 2]) is True
        assert cache.get_many(["a", "b"]) == {"a": FRESH, "b": FRESH}
    assert server.accepted == 1
    assert server.commands() == [
        (b"PING",),
        (b"GET", b"app:k"),
        (b"SET", b"app:k", b"[1,2]"),
        (b"MGET", b"app:a", b"app:b"),
    ]


def test_the_scripted_server_serves_the_async_client(run: Runner, scripted_server: Start) -> None:
    server = scripted_server(sane)

    async def main() -> None:
        async with async_cache(server) as cache:
            # Issued in one loop iteration: they may arrive in one write.
            results = await asyncio.gather(cache.ping(), cache.get("k"), cache.incr("n"))
            assert results == [True, FRESH, 1]

    run(main())
    assert server.accepted == 1
    assert server.commands() == [(b"PING",), (b"GET", b"k"), (b"INCRBY", b"n", b"1")]


# ---------------------------------------------------------------------------
# replies nobody asked for
# ---------------------------------------------------------------------------

EXTRAS = {"status": status("EXTRA"), "integer": integer(7), "bulk": json_bulk("EXTRA")}


@pytest.mark.parametrize("extra", EXTRAS.values(), ids=EXTRAS.keys())
def test_sync_extra_reply_in_the_same_write_never_reaches_the_next_caller(
    scripted_server: Start, extra: bytes
) -> None:
    """Whatever its type: the connection goes back with unread bytes, so it is dropped."""

    def handle(command: Command) -> Action:
        if command.args == (b"GET", b"first"):
            return json_bulk("one") + extra
        return sane(command)

    server = scripted_server(handle)
    with sync_cache(server) as cache:
        assert cache.get("first") == "one"
        assert cache.get("second") == FRESH
    assert server.accepted == 2
    assert server.connections[0].peer_closed.wait(HANG), "the connection with unread bytes was kept"


@pytest.mark.parametrize("extra", EXTRAS.values(), ids=EXTRAS.keys())
def test_sync_reply_pushed_to_an_idle_pooled_connection_never_reaches_the_next_caller(
    scripted_server: Start, extra: bytes
) -> None:
    """Bytes that arrive while the connection sits in the pool are found
    (a non-blocking peek) when it is taken out, and it is dropped."""
    go, pushed = threading.Event(), threading.Event()

    def handle(command: Command) -> Action:
        if command.args == (b"GET", b"first"):
            return [json_bulk("one"), WaitFor(go), extra, pushed.set]
        return sane(command)

    server = scripted_server(handle)
    with sync_cache(server) as cache:
        assert cache.get("first") == "one"
        go.set()
        assert pushed.wait(HANG)
        wait_until_client_has_unread_bytes(server)
        assert cache.get("second") == FRESH
    assert server.accepted == 2


def test_async_reply_with_no_request_waiting_fails_the_connection(
    run: Runner, scripted_server: Start
) -> None:
    server = scripted_server(on_first_connection("GET", json_bulk("one") + status("EXTRA")))

    async def main() -> None:
        async with async_cache(server) as cache:
            assert await cache.get("first") == "one"
            # The extra reply came in the same read: the connection is closed.
            assert await wait_in_thread(server.connections[0].peer_closed)
            assert await cache.get("second") == FRESH

    run(main())
    assert server.accepted == 2


def test_async_reply_pushed_to_an_idle_connection_fails_it(
    run: Runner, scripted_server: Start
) -> None:
    go = threading.Event()
    pushed = [json_bulk("one"), WaitFor(go), status("EXTRA")]
    server = scripted_server(on_first_connection("GET", pushed))

    async def main() -> None:
        async with async_cache(server) as cache:
            assert await cache.get("first") == "one"
            go.set()
            assert await wait_in_thread(server.connections[0].peer_closed), (
                "the connection that got a reply nobody asked for was kept"
            )
            assert await cache.get("second") == FRESH

    run(main())
    assert server.accepted == 2


@pytest.mark.parametrize(
    "extra", [status("EXTRA"), integer(7), array(bulk("x"))], ids=["status", "integer", "array"]
)
def test_async_extra_reply_in_front_of_a_get_reply_is_a_protocol_error(
    run: Runner, scripted_server: Start, extra: bytes
) -> None:
    """Two GETs in flight; the extra lands where the second GET's reply is
    expected. A GET cannot return it, so the second caller gets a
    ProtocolError rather than someone else's reply. (An extra of a type GET
    can return cannot be told apart: RESP has no request ids.)"""

    def handle(command: Command) -> Action:
        if command.conn.index == 0 and command.args == (b"GET", b"a"):
            return json_bulk("A") + extra
        if command.conn.index == 0 and command.args == (b"GET", b"b"):
            return json_bulk("B")
        return sane(command)

    server = scripted_server(handle)

    async def main() -> None:
        async with async_cache(server) as cache:
            first, second = cache.get("a"), cache.get("b")  # both in flight at once
            results = await asyncio.gather(first, second, return_exceptions=True)
            assert "EXTRA" not in results and 7 not in results
            assert results[0] == "A"
            assert isinstance(results[1], ProtocolError), results[1]
            assert await cache.get(AFTER) == FRESH

    run(main())
    assert server.accepted == 2


# ---------------------------------------------------------------------------
# reply types
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    call: Callable[[Any], Any]  # cache -> result (sync) or awaitable (async)
    command: str  # what the call sends
    reply: bytes  # what the scripted server answers it with
    expected: Any = None  # the call's result, for replies it accepts


def get(cache: Any) -> Any:
    return cache.get("k", "default")


def set_(cache: Any) -> Any:
    return cache.set("k", 1)


def get_many(cache: Any) -> Any:
    return cache.get_many(["a", "b"])


def set_many(cache: Any) -> Any:
    return cache.set_many({"a": 1, "b": 2})


def ping(cache: Any) -> Any:
    return cache.ping()


def delete(cache: Any) -> Any:
    return cache.delete("k")


def exists(cache: Any) -> Any:
    return cache.exists("k")


def expire(cache: Any) -> Any:
    return cache.expire("k", 10)


def ttl(cache: Any) -> Any:
    return cache.ttl("k")


def incr(cache: Any) -> Any:
    return cache.incr("k")


def delete_many(cache: Any) -> Any:
    return cache.delete_many(["a", "b"])


def custom(cache: Any) -> Any:
    return cache.execute_command("CUSTOM", "x")


#: Replies of a type the command cannot return.
WRONG_TYPE = {
    "get-array": Case(get, "GET", array(bulk("1"))),
    "get-integer": Case(get, "GET", integer(1)),
    "get-status": Case(get, "GET", status("OK")),
    "set-integer": Case(set_, "SET", integer(1)),
    "set-bulk": Case(set_, "SET", bulk("OK")),
    "set-array": Case(set_, "SET", array(status("OK"))),
    "set-status-other-than-ok": Case(set_, "SET", status("QUEUED")),
    "delete-status": Case(delete, "UNLINK", status("OK")),
    "delete-bulk": Case(delete, "UNLINK", bulk("1")),
    "exists-status": Case(exists, "EXISTS", status("OK")),
    "exists-nil": Case(exists, "EXISTS", NIL),
    "expire-bulk": Case(expire, "PEXPIRE", bulk("1")),
    "ttl-status": Case(ttl, "TTL", status("OK")),
    "ttl-nil": Case(ttl, "TTL", NIL),
    "incr-status": Case(incr, "INCRBY", status("OK")),
    "incr-bulk": Case(incr, "INCRBY", bulk("5")),
    "incr-array": Case(incr, "INCRBY", array(integer(5))),
    "delete_many-status": Case(delete_many, "UNLINK", status("OK")),
    "get_many-integer": Case(get_many, "MGET", integer(2)),
    "get_many-status": Case(get_many, "MGET", status("OK")),
    "get_many-nil": Case(get_many, "MGET", NIL),
    "get_many-too-short": Case(get_many, "MGET", array(json_bulk(1))),
    "get_many-too-long": Case(get_many, "MGET", array(json_bulk(1), json_bulk(2), json_bulk(3))),
    "get_many-integer-item": Case(get_many, "MGET", array(json_bulk(1), integer(2))),
    "get_many-status-item": Case(get_many, "MGET", array(json_bulk(1), status("OK"))),
    "get_many-array-item": Case(get_many, "MGET", array(json_bulk(1), array(json_bulk(2)))),
    "get_many-error-item": Case(get_many, "MGET", array(json_bulk(1), error("ERR boom"))),
    "set_many-integer": Case(set_many, "SET", integer(1)),
    "set_many-bulk": Case(set_many, "SET", bulk("OK")),
    "ping-ok": Case(ping, "PING", status("OK")),
    "ping-bulk": Case(ping, "PING", bulk("PONG")),
    "ping-integer": Case(ping, "PING", integer(1)),
}

#: Replies of a type the command can return, and what the call makes of them.
RIGHT_TYPE = {
    "get-bulk": Case(get, "GET", json_bulk(5), 5),
    "get-nil": Case(get, "GET", NIL, "default"),
    "set-ok": Case(set_, "SET", status("OK"), True),
    "set-nil": Case(set_, "SET", NIL, False),
    "delete": Case(delete, "UNLINK", integer(1), True),
    "exists": Case(exists, "EXISTS", integer(0), False),
    "expire": Case(expire, "PEXPIRE", integer(1), True),
    "ttl": Case(ttl, "TTL", integer(-2), -2),
    "incr": Case(incr, "INCRBY", integer(7), 7),
    "delete_many": Case(delete_many, "UNLINK", integer(2), 2),
    "get_many": Case(get_many, "MGET", array(json_bulk(1), NIL), {"a": 1}),
    "set_many": Case(set_many, "SET", status("OK"), True),
    "ping": Case(ping, "PING", status("PONG"), True),
    "execute_command-status": Case(custom, "CUSTOM", status("OK"), "OK"),
    "execute_command-integer": Case(custom, "CUSTOM", integer(3), 3),
    "execute_command-nil": Case(custom, "CUSTOM", NIL, None),
    "execute_command-array": Case(
        custom,
        "CUSTOM",
        array(integer(1), bulk("b"), status("s"), NIL, array(), error("ERR inside")),
        [1, b"b", "s", None, [], ResponseError("ERR inside")],
    ),
}

#: Error replies: a ResponseError, never a protocol error.
ERROR_REPLY = {
    name: Case(call, command, error("ERR scripted failure"))
    for name, call, command in [
        ("get", get, "GET"),
        ("set", set_, "SET"),
        ("delete", delete, "UNLINK"),
        ("incr", incr, "INCRBY"),
        ("ttl", ttl, "TTL"),
        ("get_many", get_many, "MGET"),
        ("set_many", set_many, "SET"),
        ("ping", ping, "PING"),
        ("execute_command", custom, "CUSTOM"),
    ]
}


def same_result(result: Any, expected: Any) -> bool:
    """Equality, with error objects compared by type and message."""
    if isinstance(expected, list):
        return (
            isinstance(result, list)
            and len(result) == len(expected)
            and all(same_result(r, e) for r, e in zip(result, expected))
        )
    if isinstance(expected, BaseException):
        return type(result) is type(expected) and str(result) == str(expected)
    return bool(result == expected) and type(result) is type(expected)


@pytest.mark.parametrize("case", WRONG_TYPE.values(), ids=WRONG_TYPE.keys())
def test_sync_reply_of_a_type_the_command_cannot_return_is_a_protocol_error(
    scripted_server: Start, case: Case
) -> None:
    server = scripted_server(on_first_connection(case.command, case.reply))
    with sync_cache(server) as cache:
        with pytest.raises(ProtocolError):
            case.call(cache)
        # The connection was dropped: the next call runs on a new one.
        assert cache.get(AFTER) == FRESH
    assert server.accepted == 2


@pytest.mark.parametrize("case", WRONG_TYPE.values(), ids=WRONG_TYPE.keys())
def test_async_reply_of_a_type_the_command_cannot_return_is_a_protocol_error(
    run: Runner, scripted_server: Start, case: Case
) -> None:
    server = scripted_server(on_first_connection(case.command, case.reply))

    async def main() -> None:
        async with async_cache(server) as cache:
            with pytest.raises(ProtocolError):
                await case.call(cache)
            assert await cache.get(AFTER) == FRESH

    run(main())
    assert server.accepted == 2


@pytest.mark.parametrize("case", RIGHT_TYPE.values(), ids=RIGHT_TYPE.keys())
def test_sync_replies_of_the_types_a_command_returns_are_accepted(
    scripted_server: Start, case: Case
) -> None:
    server = scripted_server(on_first_connection(case.command, case.reply))
    with sync_cache(server) as cache:
        result = case.call(cache)
        assert same_result(result, case.expected), result
        assert cache.get(AFTER) == FRESH
    assert server.accepted == 1


@pytest.mark.parametrize("case", RIGHT_TYPE.values(), ids=RIGHT_TYPE.keys())
def test_async_replies_of_the_types_a_command_returns_are_accepted(
    run: Runner, scripted_server: Start, case: Case
) -> None:
    server = scripted_server(on_first_connection(case.command, case.reply))

    async def main() -> None:
        async with async_cache(server) as cache:
            result = await case.call(cache)
            assert same_result(result, case.expected), result
            assert await cache.get(AFTER) == FRESH

    run(main())
    assert server.accepted == 1


@pytest.mark.parametrize("case", ERROR_REPLY.values(), ids=ERROR_REPLY.keys())
def test_sync_error_reply_is_a_response_error_and_keeps_the_connection(
    scripted_server: Start, case: Case
) -> None:
    server = scripted_server(on_first_connection(case.command, case.reply))
    with sync_cache(server) as cache:
        with pytest.raises(ResponseError, match="scripted failure"):
            case.call(cache)
        assert cache.get(AFTER) == FRESH
    assert server.accepted == 1


@pytest.mark.parametrize("case", ERROR_REPLY.values(), ids=ERROR_REPLY.keys())
def test_async_error_reply_is_a_response_error_and_keeps_the_connection(
    run: Runner, scripted_server: Start, case: Case
) -> None:
    server = scripted_server(on_first_connection(case.command, case.reply))

    async def main() -> None:
        async with async_cache(server) as cache:
            with pytest.raises(ResponseError, match="scripted failure"):
                await case.call(cache)
            assert await cache.get(AFTER) == FRESH

    run(main())
    assert server.accepted == 1


def test_sync_cached_never_takes_a_status_reply_for_the_stored_result(
    scripted_server: Start,
) -> None:
    server = scripted_server(on_first_connection("GET", status("OK")))
    calls = []
    with sync_cache(server) as cache:

        @cache.cached(ttl=60)
        def compute(x: int) -> dict[str, int]:
            calls.append(x)
            return {"x": x}

        assert compute(1) == {"x": 1}
    assert calls == [1]


def test_async_cached_never_takes_a_status_reply_for_the_stored_result(
    run: Runner, scripted_server: Start
) -> None:
    server = scripted_server(on_first_connection("GET", status("OK")))
    calls = []

    async def main() -> None:
        async with async_cache(server) as cache:

            @cache.cached(ttl=60)
            async def compute(x: int) -> dict[str, int]:
                calls.append(x)
                return {"x": x}

            assert await compute(1) == {"x": 1}

    run(main())
    assert calls == [1]


# ---------------------------------------------------------------------------
# array headers claiming more than will ever come
# ---------------------------------------------------------------------------

HUGE = b"*2147483647\r\n"


@pytest.mark.parametrize("depth", [1, 7], ids=["flat", "nested-7"])
def test_sync_huge_array_header_neither_allocates_nor_holds_the_gil(
    scripted_server: Start, depth: int
) -> None:
    """The header is all that ever comes: the call times out. Measured over
    the cache's whole life, as the cost may also come when the broken
    connection is freed."""
    server = scripted_server(on_first_connection("GET", HUGE * depth))
    with measured() as cost, sync_cache(server) as cache:
        with pytest.raises(TimeoutError):
            cache.get("k")
        assert cache.get(AFTER) == FRESH
    assert not cost.problems(), cost.problems()
    assert server.accepted == 2


@pytest.mark.parametrize("depth", [1, 7], ids=["flat", "nested-7"])
def test_async_huge_array_header_neither_allocates_nor_holds_the_gil(
    run: Runner, scripted_server: Start, depth: int
) -> None:
    server = scripted_server(on_first_connection("GET", HUGE * depth))

    async def main() -> Measured:
        with measured() as cost:
            async with async_cache(server) as cache:
                with pytest.raises(TimeoutError):
                    await cache.get("k")
                assert await cache.get(AFTER) == FRESH
        return cost

    cost = run(main())
    assert not cost.problems(), cost.problems()
    assert server.accepted == 2


# ---------------------------------------------------------------------------
# socket_timeout: a deadline for the whole reply
# ---------------------------------------------------------------------------

#: 12 bytes at one every 0.3 s: 3.3 s in all, more than three socket timeouts.
DRIBBLE = Dribble(json_bulk("slow"), interval=0.3)
#: Well under the 3.3 s the whole reply takes; about 1 s is expected.
DEADLINE = 2.5


def test_sync_socket_timeout_is_a_deadline_for_the_whole_reply(scripted_server: Start) -> None:
    server = scripted_server(on_first_connection("GET", DRIBBLE))
    with sync_cache(server) as cache:
        assert cache.ping() is True
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            cache.get("k")
        assert time.monotonic() - started < DEADLINE
        assert cache.get(AFTER) == FRESH
    assert server.accepted == 2
    assert server.connections[0].peer_closed.wait(HANG), "the timed-out connection was kept"


def test_async_socket_timeout_is_a_deadline_for_the_whole_reply(
    run: Runner, scripted_server: Start
) -> None:
    server = scripted_server(on_first_connection("GET", DRIBBLE))

    async def main() -> None:
        async with async_cache(server) as cache:
            assert await cache.ping() is True
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await cache.get("k")
            assert time.monotonic() - started < DEADLINE
            assert await cache.get(AFTER) == FRESH

    run(main())
    assert server.accepted == 2
    assert server.connections[0].peer_closed.wait(HANG), "the timed-out connection was kept"


# ---------------------------------------------------------------------------
# clear_pattern and what SCAN returns
# ---------------------------------------------------------------------------

#: A scripted SCAN that keeps answering is closed after this many, so a
#: clear_pattern that loops ends with a ConnectionError instead of never.
MAX_SCANS = 5


def scanning(*pages: bytes) -> Callable[[Command], Action]:
    """Answers the n-th SCAN with ``pages[n]`` (the last page again after
    that, up to MAX_SCANS) and UNLINK with how many keys it names."""

    def handle(command: Command) -> Action:
        if command.name == "SCAN":
            done = sum(1 for args in command.conn.commands if args[0].upper() == b"SCAN") - 1
            return CLOSE if done >= MAX_SCANS else pages[min(done, len(pages) - 1)]
        if command.name == "UNLINK":
            return integer(len(command.args) - 1)
        return sane(command)

    return handle


BAD_SCANS = {
    "status": status("OK"),
    "bulk": bulk("0"),
    "integer": integer(0),
    "nil": NIL,
    "error-element": array(bulk("0"), error("ERR boom")),
    "one-element": array(bulk("0")),
    "three-elements": array(bulk("0"), array(), array()),
    "integer-cursor": array(integer(0), array(bulk("app:a"))),
    "nil-cursor": array(NIL, array(bulk("app:a"))),
    "non-digit-cursor": array(bulk("abc"), array(bulk("app:a"))),
    "negative-cursor": array(bulk("-1"), array(bulk("app:a"))),
    "empty-cursor": array(bulk(""), array(bulk("app:a"))),
    "keys-as-one-bulk-string": array(bulk("0"), bulk("app:abc")),
    "keys-nil": array(bulk("0"), NIL),
    "keys-integer-item": array(bulk("0"), array(bulk("app:a"), integer(5))),
    "keys-nil-item": array(bulk("0"), array(bulk("app:a"), NIL)),
    "keys-array-item": array(bulk("0"), array(array(bulk("app:a")))),
    "key-outside-the-namespace": array(bulk("0"), array(bulk("app:a"), bulk("other:b"))),
    "key-equal-to-the-bare-namespace": array(bulk("0"), array(bulk("app"))),
}


@pytest.mark.parametrize("reply", BAD_SCANS.values(), ids=BAD_SCANS.keys())
def test_sync_clear_pattern_checks_the_scan_reply_before_unlinking(
    scripted_server: Start, reply: bytes
) -> None:
    server = scripted_server(scanning(reply))
    with sync_cache(server, namespace="app") as cache:
        with pytest.raises(ProtocolError):
            cache.clear_pattern("*")
    assert "UNLINK" not in server.command_names()
    assert server.command_names().count("SCAN") == 1


@pytest.mark.parametrize("reply", BAD_SCANS.values(), ids=BAD_SCANS.keys())
def test_async_clear_pattern_checks_the_scan_reply_before_unlinking(
    run: Runner, scripted_server: Start, reply: bytes
) -> None:
    server = scripted_server(scanning(reply))

    async def main() -> None:
        async with async_cache(server, namespace="app") as cache:
            with pytest.raises(ProtocolError):
                await cache.clear_pattern("*")

    run(main())
    assert "UNLINK" not in server.command_names()
    assert server.command_names().count("SCAN") == 1


GOOD_SCAN_PAGES = (
    array(bulk("17"), array(bulk("app:user:1"), bulk("app:user:2"))),
    array(bulk("42"), array()),
    array(bulk("0"), array(bulk("app:user:3"))),
)
GOOD_SCAN_COMMANDS = [
    (b"SCAN", b"0", b"MATCH", b"app:user:*", b"COUNT", b"1000"),
    (b"UNLINK", b"app:user:1", b"app:user:2"),
    (b"SCAN", b"17", b"MATCH", b"app:user:*", b"COUNT", b"1000"),
    (b"SCAN", b"42", b"MATCH", b"app:user:*", b"COUNT", b"1000"),
    (b"UNLINK", b"app:user:3"),
]


def test_sync_clear_pattern_follows_well_formed_scan_pages(scripted_server: Start) -> None:
    server = scripted_server(scanning(*GOOD_SCAN_PAGES))
    with sync_cache(server, namespace="app") as cache:
        assert cache.clear_pattern("user:*") == 3
    assert server.commands() == GOOD_SCAN_COMMANDS


def test_async_clear_pattern_follows_well_formed_scan_pages(
    run: Runner, scripted_server: Start
) -> None:
    server = scripted_server(scanning(*GOOD_SCAN_PAGES))

    async def main() -> None:
        async with async_cache(server, namespace="app") as cache:
            assert await cache.clear_pattern("user:*") == 3

    run(main())
    assert server.commands() == GOOD_SCAN_COMMANDS
