"""Cross-process locks in Redis: ``async with cache.lock("name")`` and the sync ``with``.

One lock is three keys in one hash-tag slot (so every script runs on one
cluster node): ``{<ns><name>}:lock`` holds the holder's random token for a
lease, ``{...}:wake`` is a list the release pushes to so that waiters blocked
in BLPOP on it wake at once (no polling), and ``{...}:fence`` counts
acquisitions: its INCR at every acquisition is the holder's fencing token,
which only ever grows for one name.

While held, the lease is renewed in the background (an asyncio task, or a
daemon thread for the sync lock) every third of it. A waiter never blocks
past the holder's remaining lease, so the lock of a holder that died (or
stopped renewing) is taken over as soon as its lease ends.

The waiting loop is written once, as a generator of the commands it needs
(:func:`_acquire_steps`); the async and sync locks only run those commands.
``cached(lock=True)`` uses these locks too (with ``fencing=False``: it needs
no token, and one counter key per cached key would never go away).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .errors import LockError, LockLost, LockTimeout, ProtocolError, RedisCacheError

if TYPE_CHECKING:
    from .cache import RedisCache, SyncRedisCache

__all__ = ["AsyncLock", "Lock", "LockError", "LockLost", "LockTimeout"]

log = logging.getLogger("redis_cache")

#: A lock's default lease, in seconds; renewed every third of it while held.
DEFAULT_LEASE = 10.0
#: How long ``cache.lock()`` waits for the lock by default, in seconds.
DEFAULT_WAIT = 5.0

# Takes the lock (and drops wake-ups left by an earlier holder): {1, fencing
# token} (0 without fencing); or {0, the holder's remaining lease in ms}
# (-1: a lock key without expiry, set by someone else).
_ACQUIRE = (
    "if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then "
    "redis.call('del', KEYS[2]) "
    "if ARGV[3] == '1' then return {1, redis.call('incr', KEYS[3])} end return {1, 0} end "
    "return {0, redis.call('pttl', KEYS[1])}"
)
# Renewal, only while the lock still holds this caller's token (it may have
# expired and moved on): 1, or 0 when lost. It never shortens a lease that
# extend() made longer.
_RENEW = (
    "if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end "
    "if redis.call('pttl', KEYS[1]) < tonumber(ARGV[2]) then "
    "redis.call('pexpire', KEYS[1], ARGV[2]) end return 1"
)
# extend(seconds): the remaining lease plus ARGV[2] ms; the new remaining
# lease in ms, or 0 when this caller no longer holds the lock.
_EXTEND = (
    "if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end "
    "local left = redis.call('pttl', KEYS[1]) if left < 0 then left = 0 end "
    "redis.call('pexpire', KEYS[1], left + tonumber(ARGV[2])) return left + tonumber(ARGV[2])"
)
# Release deletes the lock only if it still holds this caller's token, so a
# holder whose lease ran out never deletes its successor's lock.
_RELEASE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then redis.call('del', KEYS[1]) "
    "redis.call('rpush', KEYS[2], '1') redis.call('pexpire', KEYS[2], ARGV[2]) return 1 end return 0"
)
# A woken waiter passes the wake-up on to the next one, but only while the
# lock is free: a wake-up left behind while a new holder works would wake
# its waiters early, again and again.
_PASS_ON = (
    "if redis.call('exists', KEYS[1]) == 0 then "
    "redis.call('rpush', KEYS[2], '1') redis.call('pexpire', KEYS[2], ARGV[1]) end return 0"
)

#: A waiter tries to take a lock over this long after the holder's lease
#: should have run out (a key expires only after its last millisecond), so
#: that it does not arrive a moment early and have to wait again.
_TAKEOVER_MARGIN = 0.05
#: The shortest wait for a wake-up: BLPOP with 0 would wait forever.
_SHORTEST_BLOCK = 0.01
#: The longest single BLPOP when nothing else bounds it (wait=None and a
#: lock key without expiry): the waiter then looks again.
_LONGEST_BLOCK = 30.0

#: _acquire_steps' outcomes: the lock was taken / the wait ran out.
ACQUIRED = object()
TIMED_OUT = object()

# The steps _acquire_steps yields: a command for the shared connection, a
# blocking pop for the waiter's own connection, or a call of ``check``.
_Command = tuple[str, tuple[Any, ...]]
_Steps = Generator[_Command, Any, Any]


def lock_keys(cache: SyncRedisCache | RedisCache, name: str) -> tuple[bytes, bytes, bytes]:
    """The lock, wake-up and fencing keys of a name in the cache's namespace.
    They share a hash tag: the name's own one if it has one, else the whole
    key in braces. Either way they also hash to the slot of the cache key of
    that name (unless it holds a stray '}'), which is where
    ``cached(lock=True)`` wants them."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"a lock name must be a non-empty str, not {name!r}")
    full = cache._key_prefix + name.encode()
    opening = full.find(b"{")
    has_tag = opening >= 0 and full.find(b"}", opening + 1) > opening + 1
    base = full if has_tag else b"{" + full + b"}"
    return base + b":lock", base + b":wake", base + b":fence"


def blocking_time(lease_left_ms: Any, deadline: float, longest: float | None) -> float | None:
    """How long a waiter blocks for the holder's wake-up: no longer than the
    holder's remaining lease (then a dead holder's lock can be taken over),
    nor the rest of the wait (None once it is over), nor ``longest``."""
    wait = deadline - time.monotonic()
    if wait <= 0:
        return None
    if isinstance(lease_left_ms, int) and lease_left_ms >= 0:
        wait = min(wait, lease_left_ms / 1000 + _TAKEOVER_MARGIN)
    wait = min(wait, _LONGEST_BLOCK if longest is None else longest)
    return round(max(wait, _SHORTEST_BLOCK), 3)


def _check_seconds(what: str, value: Any, *, allow_none: bool, allow_zero: bool) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) \
            or math.isinf(value) or value < 0 or (value == 0 and not allow_zero):
        more = " or None (no limit)" if allow_none else ""
        least = "0 or more" if allow_zero else "more than 0"
        raise ValueError(f"lock {what} must be a number of seconds, {least}{more}; got {value!r}")
    return float(value)


def check_lock_settings(lease: Any, wait: Any) -> tuple[float, float | None]:
    """The lease and wait, checked (also when a decorator is applied)."""
    checked = _check_seconds("lease", lease, allow_none=False, allow_zero=False)
    assert checked is not None
    if checked < 0.003:
        raise ValueError(f"lock lease must be at least 0.003 s (renewed every third); got {lease!r}")
    return checked, _check_seconds("wait", wait, allow_none=True, allow_zero=True)


def _int_reply(command: str, reply: Any) -> int:
    if not isinstance(reply, int) or isinstance(reply, bool):
        raise ProtocolError(f"redis answered the lock's {command} script with {reply!r:.80}, "
                            "not an integer")
    return reply


class _LockBase:
    """What the async and sync locks share: settings, keys, state and the
    waiting loop as steps."""

    def __init__(self, cache: Any, name: str, *, lease: float = DEFAULT_LEASE,
                 wait: float | None = DEFAULT_WAIT, renew: bool = True,
                 fencing: bool = True) -> None:
        self.name = name
        self.lease, self.wait = check_lock_settings(lease, wait)
        self.renew = bool(renew)
        self.fencing = bool(fencing)
        self._cache = cache
        self._lock_key, self._wake_key, self._fence_key = lock_keys(cache, name)
        self._lease_ms = max(1, int(self.lease * 1000))
        self._owner_token: str | None = None
        #: The fencing token of the current (or last) acquisition: larger
        #: than every earlier holder's of this name. None before acquiring,
        #: or with fencing=False.
        self.token: int | None = None
        #: True once this lock found that its lease ran out and someone else
        #: may hold it: a renewal or extend() was refused, renewals failed for
        #: a whole lease, or release() found another holder. (A release that
        #: still finds this holder's token clears it: the lease never ended.)
        self.lost = False
        self._valid_until = -math.inf
        self._lease_left_ms = -1  # the holder's, as the last attempt saw it
        #: Whether the last acquire found the lock held and waited (counted
        #: as a lock wait in the decorators' statistics).
        self.waited = False

    @property
    def fencing_token(self) -> int | None:
        """The same as :attr:`token`."""
        return self.token

    @property
    def held(self) -> bool:
        """Whether this object acquired the lock and has not released it (a
        local view; :meth:`owned` asks the server)."""
        return self._owner_token is not None

    def __repr__(self) -> str:
        state = "lost" if self.lost else "held" if self.held else "not held"
        return f"<{type(self).__name__} {self.name!r} {state} token={self.token}>"

    def _acquire_steps(self, longest: float | None, check: bool) -> _Steps:
        """The waiting loop: returns ACQUIRED, TIMED_OUT, or (with ``check``)
        the first result of the check other than TIMED_OUT. Waits are blocking
        pops on the wake-up key, each no longer than the holder's remaining
        lease, after which the lock of a holder that died is free."""
        if self._owner_token is not None:
            raise LockError(f"lock {self.name!r} is already held by this Lock object; "
                            "release it first (locks are not re-entrant)")
        deadline = math.inf if self.wait is None else time.monotonic() + self.wait
        token = secrets.token_hex(16)
        acquire = ("EVAL", _ACQUIRE, 3, self._lock_key, self._wake_key, self._fence_key, token,
                   self._lease_ms, "1" if self.fencing else "0")
        started = time.monotonic()
        outcome = self._took(token, started, (yield ("shared", acquire)))
        self.waited = outcome is None
        while outcome is None:
            block = blocking_time(self._lease_left_ms, deadline, longest)
            if block is None:
                return TIMED_OUT
            if (yield ("block", ("BLPOP", self._wake_key, block))) is not None:
                yield ("shared", ("EVAL", _PASS_ON, 2, self._lock_key, self._wake_key,
                                  self._lease_ms))
            if check:
                value = yield ("check", ())
                if value is not TIMED_OUT:
                    return value
            started = time.monotonic()
            outcome = self._took(token, started, (yield ("shared", acquire)))
        return outcome

    def _took(self, token: str, started: float, reply: Any) -> Any:
        """ACQUIRED (and the state of a holder), or None with the holder's
        remaining lease noted for the next wait."""
        if not (isinstance(reply, list) and len(reply) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) for v in reply)):
            raise ProtocolError(f"redis answered the lock's acquire script with {reply!r:.80}")
        taken, number = reply
        if not taken:
            self._lease_left_ms = number
            return None
        self._owner_token = token
        self.token = number if self.fencing else None
        self.lost = False
        self._valid_until = started + self.lease
        return ACQUIRED

    def _renewed(self, started: float, reply: Any) -> bool:
        """Notes a renewal's answer; False once the lock is lost."""
        if _int_reply("renew", reply) == 1:
            self._valid_until = max(self._valid_until, started + self.lease)
            return True
        self._mark_lost("a renewal found another holder")
        return False

    def _mark_lost(self, why: str) -> None:
        if not self.lost:
            log.warning("redis_cache: lock %r lost (%s)", self.name, why)
        self.lost = True

    def _expired_locally(self) -> bool:
        if self._owner_token is not None and time.monotonic() > self._valid_until:
            self._mark_lost("no renewal succeeded for a whole lease")
        return self.lost

    def _release_args(self) -> tuple[Any, ...]:
        if self._owner_token is None:
            raise LockError(f"lock {self.name!r} is not held by this Lock object "
                            "(never acquired, or released already)")
        return ("EVAL", _RELEASE, 2, self._lock_key, self._wake_key, self._owner_token,
                self._lease_ms)

    def _released(self, reply: Any) -> bool:
        self._owner_token = None
        if _int_reply("release", reply) == 1:
            # Our token was still there, so the lease never ended (a renewal
            # only extends a key holding it): a local "lost" was a false alarm.
            self.lost = False
            return True
        self._mark_lost("release found another holder; its lock was left alone")
        return False

    def _extend_args(self, seconds: Any) -> tuple[Any, ...]:
        value = _check_seconds("extension", seconds, allow_none=False, allow_zero=False)
        if self._owner_token is None:
            raise LockError(f"lock {self.name!r} is not held by this Lock object; acquire it "
                            "before extending it")
        return ("EVAL", _EXTEND, 1, self._lock_key, self._owner_token,
                max(1, int(value * 1000)))  # type: ignore[operator]

    def _extended(self, started: float, reply: Any) -> float:
        left_ms = _int_reply("extend", reply)
        if left_ms == 0:
            self._mark_lost("extend() found another holder")
            raise LockLost(f"lock {self.name!r} was lost before extend(): its lease ran out "
                           "and it may be held by someone else")
        self._valid_until = max(self._valid_until, started + left_ms / 1000)
        return left_ms / 1000

    def _owned_args(self) -> tuple[Any, ...]:
        return ("GET", self._lock_key)

    def _is_owner(self, reply: Any) -> bool:
        return self._owner_token is not None and reply == self._owner_token.encode()

    def _exit_check(self, released: bool, exc_type: type[BaseException] | None) -> None:
        if not released and exc_type is None:
            raise LockLost(
                f"lock {self.name!r} was lost while held (fencing token {self.token}): its "
                "lease ran out, so another holder may have run at the same time. Use a "
                "longer lease, keep renewal on, or check lock.token at the protected resource"
            )


class AsyncLock(_LockBase):
    """A Redis lock for asyncio code: ``async with cache.lock("name") as lock:``.

    ``lease``: seconds the lock outlives a holder that stops renewing it (a
    live holder renews it every lease/3 in a background task unless
    ``renew=False``). ``wait``: seconds to wait for it (0: try once; None: no
    limit); :class:`LockTimeout` once over. On exit, :class:`LockLost` is
    raised if the lease was lost while held (the block's own exception, if
    any, is not replaced). Waiters block on a dedicated connection.
    """

    _cache: RedisCache

    def __init__(self, cache: RedisCache, name: str, **options: Any) -> None:
        super().__init__(cache, name, **options)
        self._renewer: asyncio.Task[None] | None = None

    async def _run(self, steps: _Steps, check: Callable[[], Awaitable[Any]] | None) -> Any:
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(steps.close)
            conn: Any = None
            reply: Any = None
            while True:
                try:
                    kind, args = steps.send(reply)
                except StopIteration as stop:
                    return stop.value
                if kind == "shared":
                    reply = await self._cache.execute_command(*args)
                elif kind == "block":
                    if conn is None:
                        # On a cluster: the node of the name, where its keys live.
                        conn = await stack.enter_async_context(self._cache.dedicated(self.name))
                    reply = await conn.execute_command(*args)
                else:
                    assert check is not None
                    reply = await check()

    async def acquire(self) -> AsyncLock:
        """Takes the lock, waiting up to ``wait``; :class:`LockTimeout` if not."""
        outcome = await self._run(self._acquire_steps(None, check=False), None)
        if outcome is TIMED_OUT:
            raise LockTimeout(f"lock {self.name!r} is still held by another after waiting "
                              f"{self.wait} s; wait longer (wait=) or try again later")
        self._start_renewing()
        return self

    async def _acquire_or(self, check: Callable[[], Awaitable[Any]]) -> Any:
        """For cached(lock=True): ACQUIRED, what ``check`` found after a wake-up
        (anything but TIMED_OUT), or TIMED_OUT."""
        outcome = await self._run(self._acquire_steps(None, check=True), check)
        if outcome is ACQUIRED:
            self._start_renewing()
        return outcome

    def _start_renewing(self) -> None:
        if self.renew:
            self._renewer = asyncio.ensure_future(self._renew_forever())

    async def _renew_forever(self) -> None:
        args = ("EVAL", _RENEW, 1, self._lock_key, self._owner_token, self._lease_ms)
        while not self._expired_locally():
            await asyncio.sleep(self.lease / 3)
            started = time.monotonic()
            try:
                if not self._renewed(started, await self._cache.execute_command(*args)):
                    return
            except RedisCacheError as exc:  # try again next time; the lease says how long
                log.debug("redis_cache: renewing lock %r failed: %s", self.name, exc)

    def _stop_renewing(self) -> None:
        # Not awaited: awaiting a cancelled task could swallow our caller's own
        # cancellation. A renewal whose reply is pending is cancelled at that
        # await, so it cannot report the coming release as a lost lease.
        renewer, self._renewer = self._renewer, None
        if renewer is not None:
            renewer.cancel()

    async def release(self) -> bool:
        """Releases the lock and wakes a waiter. False when it had been lost
        (another holder's lock is never deleted); :class:`LockError` when this
        object does not hold it."""
        args = self._release_args()
        self._stop_renewing()
        return self._released(await self._cache.execute_command(*args))

    async def extend(self, seconds: float) -> float:
        """Adds ``seconds`` to the remaining lease; returns the new remaining
        lease in seconds. :class:`LockLost` if it had been lost."""
        args = self._extend_args(seconds)
        return self._extended(time.monotonic(), await self._cache.execute_command(*args))

    async def owned(self) -> bool:
        """Whether the server still holds the lock for this object."""
        return self._is_owner(await self._cache.execute_command(*self._owned_args()))

    async def locked(self) -> bool:
        """Whether anyone holds the lock now."""
        return bool(await self._cache.execute_command("EXISTS", self._lock_key))

    async def __aenter__(self) -> AsyncLock:
        return await self.acquire()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            released = await self.release()
        except RedisCacheError:
            if exc_type is not None:
                return  # the block's own error matters more; the lease will end
            raise
        self._exit_check(released, exc_type)


class Lock(_LockBase):
    """A Redis lock for threads and processes: ``with cache.lock("name") as lock:``.

    As :class:`AsyncLock`, with renewal in a daemon thread. Waiters block in
    BLPOP on a pooled connection, each pop shorter than the socket timeout.
    """

    _cache: SyncRedisCache

    def __init__(self, cache: SyncRedisCache, name: str, **options: Any) -> None:
        super().__init__(cache, name, **options)
        self._stop: threading.Event | None = None
        self._renewer: threading.Thread | None = None

    def _run(self, steps: _Steps, check: Callable[[], Any] | None) -> Any:
        reply: Any = None
        with contextlib.closing(steps):
            while True:
                try:
                    kind, args = steps.send(reply)
                except StopIteration as stop:
                    return stop.value
                if kind == "check":
                    assert check is not None
                    reply = check()
                else:
                    reply = self._cache.execute_command(*args)

    def _longest_block(self) -> float | None:
        """A pop blocks one pooled connection; it must end before the socket
        timeout would break that connection."""
        timeout = self._cache.settings.socket_timeout
        return None if timeout is None else timeout * 0.8

    def acquire(self) -> Lock:
        """Takes the lock, waiting up to ``wait``; :class:`LockTimeout` if not."""
        outcome = self._run(self._acquire_steps(self._longest_block(), check=False), None)
        if outcome is TIMED_OUT:
            raise LockTimeout(f"lock {self.name!r} is still held by another after waiting "
                              f"{self.wait} s; wait longer (wait=) or try again later")
        self._start_renewing()
        return self

    def _acquire_or(self, check: Callable[[], Any]) -> Any:
        """For cached(lock=True): see :meth:`AsyncLock._acquire_or`."""
        outcome = self._run(self._acquire_steps(self._longest_block(), check=True), check)
        if outcome is ACQUIRED:
            self._start_renewing()
        return outcome

    def _start_renewing(self) -> None:
        if not self.renew:
            return
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew_forever, args=(self._stop,),
                                         name=f"redis_cache lock {self.name}", daemon=True)
        self._renewer.start()

    def _renew_forever(self, stop: threading.Event) -> None:
        args = ("EVAL", _RENEW, 1, self._lock_key, self._owner_token, self._lease_ms)
        while not self._expired_locally() and not stop.wait(self.lease / 3):
            started = time.monotonic()
            try:
                if not self._renewed(started, self._cache.execute_command(*args)):
                    return
            except RedisCacheError as exc:  # try again next time; the lease says how long
                log.debug("redis_cache: renewing lock %r failed: %s", self.name, exc)

    def _stop_renewing(self) -> None:
        stop, renewer = self._stop, self._renewer
        self._stop = self._renewer = None
        if stop is not None and renewer is not None:
            stop.set()
            if renewer is not threading.current_thread():
                renewer.join()

    def release(self) -> bool:
        """Releases the lock and wakes a waiter. False when it had been lost
        (another holder's lock is never deleted); :class:`LockError` when this
        object does not hold it."""
        args = self._release_args()
        self._stop_renewing()
        return self._released(self._cache.execute_command(*args))

    def extend(self, seconds: float) -> float:
        """Adds ``seconds`` to the remaining lease; returns the new remaining
        lease in seconds. :class:`LockLost` if it had been lost."""
        args = self._extend_args(seconds)
        return self._extended(time.monotonic(), self._cache.execute_command(*args))

    def owned(self) -> bool:
        """Whether the server still holds the lock for this object."""
        return self._is_owner(self._cache.execute_command(*self._owned_args()))

    def locked(self) -> bool:
        """Whether anyone holds the lock now."""
        return bool(self._cache.execute_command("EXISTS", self._lock_key))

    def __enter__(self) -> Lock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            released = self.release()
        except RedisCacheError:
            if exc_type is not None:
                return
            raise
        self._exit_check(released, exc_type)


