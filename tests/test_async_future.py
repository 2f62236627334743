"""The future async commands return (csrc/future.c): asyncio's Future protocol,
with the awaiting task resumed in the loop iteration that read its reply.

Everything asyncio does with a future must work with ours (tasks, gather,
wait, wait_for, shield, as_completed, run_until_complete, callbacks with
their contexts, cancellation), on asyncio and on uvloop, and the one-caller
shortcut must really save the loop iteration it is for.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import weakref
from typing import Any

import pytest
from async_support import Runner, run  # noqa: F401  (fixture)

from redis_cache import RedisCache, _core
from redis_cache.testing import RedisServer
from redis_raw import raw

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


def test_is_an_asyncio_future_to_asyncio(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        async with RedisCache(port=redis.port) as c:
            await c.set("k", {"v": 1})
            fut = c.get("k")
            assert isinstance(fut, _core.Future)
            assert asyncio.isfuture(fut)
            assert fut.get_loop() is asyncio.get_running_loop()
            assert not fut.done() and not fut.cancelled()
            with pytest.raises(asyncio.InvalidStateError):
                fut.result()
            with pytest.raises(asyncio.InvalidStateError):
                fut.exception()
            assert await fut == {"v": 1}
            assert fut.done() and fut.result() == {"v": 1} and fut.exception() is None
            assert await fut == {"v": 1}  # awaiting a done future again
            assert "finished" in repr(fut)
            assert weakref.ref(fut)() is fut

    run(main())


def test_gather_wait_wait_for_shield_as_completed(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        async with RedisCache(port=redis.port) as c:
            await c.set_many({f"k{i}": i for i in range(10)})
            assert await asyncio.gather(*(c.get(f"k{i}") for i in range(10))) == list(range(10))
            done, pending = await asyncio.wait([c.get("k1"), c.get("k2")])
            assert not pending and sorted(f.result() for f in done) == [1, 2]
            assert await asyncio.wait_for(c.get("k3"), 5) == 3
            assert await asyncio.shield(c.get("k4")) == 4
            assert sorted([await f for f in asyncio.as_completed([c.get("k5"), c.get("k6")])]) == [5, 6]
            assert await asyncio.ensure_future(c.get("k7")) == 7
            failing = c.execute_command("NO-SUCH-COMMAND")
            results = await asyncio.gather(failing, c.get("k8"), return_exceptions=True)
            assert isinstance(results[0], Exception) and results[1] == 8
            assert failing.exception() is results[0]

    run(main())


def test_cancelled_request_is_dropped_and_the_connection_carries_on(run: Runner,
                                                                     redis: RedisServer) -> None:
    async def main() -> None:
        async with RedisCache(port=redis.port) as c:
            await c.set("k", "v")
            fut = c.get("k")
            assert fut.cancel("not needed")
            assert fut.cancelled() and not fut.cancel()
            with pytest.raises(asyncio.CancelledError, match="not needed"):
                fut.result()
            with pytest.raises(asyncio.CancelledError):
                await fut
            # While the server holds every command back (for a second: an
            # UNPAUSE would be held back too), a task cancelled as it awaits
            # one, and a wait_for that gives up on another.
            assert raw(redis, "CLIENT", "PAUSE", "1000", "ALL") == "OK"
            task = asyncio.ensure_future(c.get("k"))
            await asyncio.sleep(0)
            assert not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(c.get("k"), 0.05)
            # the replies of all three were read and dropped: the next
            # callers get their own
            assert await asyncio.gather(*(c.get("k") for _ in range(5))) == ["v"] * 5

    run(main())


def test_callbacks_run_in_their_context_and_errors_reach_the_loop(run: Runner,
                                                                  redis: RedisServer) -> None:
    seen: list[tuple[str, Any]] = []

    def note(fut: Any) -> None:
        seen.append((request_id.get(), fut.result()))

    def broken(fut: Any) -> None:
        raise RuntimeError("callback failed")

    reported: list[dict[str, Any]] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _l, ctx: reported.append(ctx))
        async with RedisCache(port=redis.port) as c:
            await c.set("k", "v")
            request_id.set("req-1")
            fut = c.get("k")
            ctx = contextvars.copy_context()
            request_id.set("req-2")
            fut.add_done_callback(note)                 # the current context
            fut.add_done_callback(note, context=ctx)    # the one given
            fut.add_done_callback(broken)
            fut.add_done_callback(seen.append)
            assert fut.remove_done_callback(seen.append) == 1
            assert await fut == "v"
            assert request_id.get() == "req-2"  # the task's own context
            await asyncio.sleep(0)  # callbacks scheduled as asyncio does on other loops
            await asyncio.sleep(0)
            late: list[Any] = []
            fut.add_done_callback(late.append)  # added once done: scheduled
            await asyncio.sleep(0)
            assert late == [fut]

    run(main())
    assert sorted(seen) == [("req-1", "v"), ("req-2", "v")]
    assert len(reported) == 1 and isinstance(reported[0]["exception"], RuntimeError)
    assert "callback failed" in str(reported[0]["exception"])


def test_set_result_and_set_exception_follow_asyncio(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        async with RedisCache(port=redis.port) as c:
            await c.set("k", "v")
            fut = c.get("k")
            await fut
            with pytest.raises(asyncio.InvalidStateError):
                fut.set_result(1)
            with pytest.raises(asyncio.InvalidStateError):
                fut.set_exception(ValueError("x"))
            empty = c.get_many([])  # completed without a round trip
            assert empty.done() and await empty == {}

    run(main())


def test_the_awaiting_task_keeps_its_context_across_awaits(run: Runner, redis: RedisServer) -> None:
    async def worker(c: RedisCache, name: str) -> list[str]:
        request_id.set(name)
        seen = []
        for _ in range(20):
            await c.get("k")
            seen.append(request_id.get())
        return seen

    async def main() -> None:
        async with RedisCache(port=redis.port) as c:
            await c.set("k", "v")
            results = await asyncio.gather(*(worker(c, f"w{i}") for i in range(10)))
            for i, seen in enumerate(results):
                assert seen == [f"w{i}"] * 20

    run(main())


def test_futures_leave_no_cycle_behind(run: Runner, redis: RedisServer) -> None:
    async def main() -> None:
        async with RedisCache(port=redis.port) as c:
            await c.set("k", "v")
            refs = []
            for _ in range(50):
                fut = c.get("k")
                refs.append(weakref.ref(fut))
                await fut
                del fut
            # (the last one is held, as asyncio's Handle would hold it, until
            # this task yields)
            await asyncio.sleep(0)
            gc.collect()
            assert all(r() is None for r in refs)

    run(main())


def test_an_exception_nobody_retrieved_is_reported(run: Runner, redis: RedisServer) -> None:
    reported: list[dict[str, Any]] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _l, ctx: reported.append(ctx))
        async with RedisCache(port=redis.port) as c:
            seen = c.execute_command("NO-SUCH-COMMAND")
            await asyncio.wait([seen])
            assert isinstance(seen.exception(), Exception)  # retrieved: not reported
            ignored = c.execute_command("NO-SUCH-COMMAND")
            await asyncio.wait([ignored])
            del seen, ignored
            await asyncio.sleep(0)
            gc.collect()

    run(main())
    assert [ctx["message"] for ctx in reported] == ["Future exception was never retrieved"]
    assert "unknown command" in str(reported[0]["exception"]).lower()
