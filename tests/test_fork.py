"""Using a cache after ``os.fork()``: the child must open its own connections
and leave the parent's sockets alone, so both keep working."""

from __future__ import annotations

import multiprocessing
import os
import traceback
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from redis_cache import SyncRedisCache
from redis_cache.testing import RedisServer
from sync_helpers import SAFETY_TIMEOUT, Hold, HookSerializer, start_holder

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

NAME = "fork-test"


@pytest.fixture
def cache(redis: RedisServer) -> Iterator[SyncRedisCache]:
    with SyncRedisCache(port=redis.port, client_name=NAME, pool_timeout=SAFETY_TIMEOUT) as c:
        yield c


def client_id(cache: SyncRedisCache) -> int:
    cid = cache.execute_command("CLIENT", "ID")
    assert isinstance(cid, int)
    return cid


def in_child(body: Callable[[], bytes]) -> tuple[int, bytes]:
    """Forks; the child runs ``body`` and reports its bytes through a pipe.

    Returns the child's exit status (0: body returned; 1: it raised, with
    the traceback as the message) and the message. The child never returns
    into pytest: it always leaves through ``os._exit``.
    """
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns about fork() with threads (the servers' log readers).
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            os.close(read_end)
            try:
                message = body()
                code = 0
            except BaseException:  # noqa: BLE001 - reported to the parent
                message = traceback.format_exc().encode()
            os.write(write_end, message)
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as fh:
        message = fh.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), message


def test_child_opens_its_own_connection_and_the_parent_keeps_its_own(
    cache: SyncRedisCache,
) -> None:
    assert cache.set("parent", "p")
    parent_conn = client_id(cache)

    def child() -> bytes:
        assert cache.get("parent") == "p"
        assert cache.set("child", os.getpid())
        assert cache.get("child") == os.getpid()
        return str(client_id(cache)).encode()

    code, message = in_child(child)
    assert code == 0, message.decode()
    child_conn = int(message)
    assert child_conn != parent_conn
    # The parent's pooled connection is the same one, still in step.
    assert client_id(cache) == parent_conn
    child_pid = cache.get("child")
    assert isinstance(child_pid, int) and child_pid != os.getpid()
    assert [cache.get("parent") for _ in range(100)] == ["p"] * 100
    assert client_id(cache) == parent_conn


def test_closing_the_cache_in_the_child_leaves_the_parents_connection_alone(
    cache: SyncRedisCache,
) -> None:
    assert cache.set("k", 1)
    parent_conn = client_id(cache)

    def child() -> bytes:
        cache.close()  # closes the inherited sockets of the child only
        assert cache.closed
        return b""

    code, message = in_child(child)
    assert code == 0, message.decode()
    assert not cache.closed
    assert cache.get("k") == 1
    assert client_id(cache) == parent_conn


def test_child_whose_parent_had_every_connection_lent_out(redis: RedisServer) -> None:
    """A connection the parent's other thread holds at fork time is not the
    child's to wait for: the child starts with an empty pool."""
    with SyncRedisCache(
        port=redis.port, max_connections=1, pool_timeout=0.5, serializer=HookSerializer()
    ) as cache:
        hold = Hold("from-parent")
        holder = start_holder(cache, "held", hold, name="holder")  # holds the only connection
        try:
            def child() -> bytes:
                assert cache.set("child", "c")  # would be PoolTimeout if it waited
                return str(cache.get("child")).encode()

            code, message = in_child(child)
        finally:
            hold.release()
        assert code == 0, message.decode()
        assert message == b"c"
        assert holder.outcome() == "from-parent"
        assert cache.get_many(["held", "child"]) == {"held": "from-parent", "child": "c"}


# ------------------------------------------------------------ multiprocessing

_shared_cache: SyncRedisCache | None = None
ROUNDS = 200


def _worker(index: int, errors: Any) -> None:
    cache = _shared_cache
    assert cache is not None
    try:
        for i in range(ROUNDS):
            key = f"worker{index}:{i}"
            value = {"worker": index, "i": i, "key": key}
            if cache.set(key, value) is not True:
                raise AssertionError(f"set {key} failed")
            got = cache.get(key)
            if got != value:
                raise AssertionError(f"get {key} -> {got!r}, expected {value!r}")
    except BaseException:
        errors.put(f"worker {index}: {traceback.format_exc()}")
        raise


def test_multiprocessing_fork_workers(cache: SyncRedisCache) -> None:
    global _shared_cache
    assert cache.set("before", "fork")
    parent_conn = client_id(cache)
    ctx = multiprocessing.get_context("fork")
    errors = ctx.Queue()
    _shared_cache = cache
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            workers = [ctx.Process(target=_worker, args=(i, errors)) for i in range(4)]
            for w in workers:
                w.start()
        for w in workers:
            w.join(SAFETY_TIMEOUT * 2)
    finally:
        _shared_cache = None
    messages = []
    while not errors.empty():
        messages.append(errors.get())
    assert messages == []
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    keys = [f"worker{w}:{i}" for w in range(4) for i in range(ROUNDS)]
    found = cache.get_many(keys)
    assert len(found) == 4 * ROUNDS
    assert all(v["key"] == k for k, v in found.items())
    assert cache.get("before") == "fork"
    assert client_id(cache) == parent_conn
