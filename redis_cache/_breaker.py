"""The circuit breaker: skip Redis while it is down, and notice soon when it is back.

Without one, every call to a decorated function during an outage would pay for
a failed connect or a timeout before computing the value itself. One breaker
belongs to a cache (and to the twin a decorator makes of it), since they talk
to the same server.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from types import TracebackType

from .errors import ConfigurationError, ConnectionError, RedisCacheError, TimeoutError

__all__ = ["CircuitBreaker", "breaker_from_setting"]

#: The exceptions that say Redis is unusable. Any other outcome, an error
#: reply or a value that cannot be decoded included, means that it answered.
_UNREACHABLE = (ConnectionError, TimeoutError)


class CircuitBreaker:
    """Stops using Redis after ``failure_threshold`` failures in a row, and lets
    one call at a time try again after a short, growing delay.

    * Closed (normally): every call uses Redis. A failure is a connection
      error or a timeout; anything else (a value, an error reply) is an answer
      and resets the count.
    * Open: calls skip Redis (a decorated function just runs), until
      ``probe_after`` seconds have passed.
    * Half-open: the next call is the probe and uses Redis while the others
      keep skipping it. If it gets an answer the breaker closes; if it fails
      the breaker opens again, for a delay drawn at random between
      ``probe_after`` and three times the previous one, at most
      ``max_probe_after``. So delays grow while Redis stays down, processes
      do not probe in step, and with the defaults caching resumes within
      about a second of Redis coming back.

    Pass one to a cache (``RedisCache(..., circuit_breaker=CircuitBreaker(
    failure_threshold=3, probe_after=0.5))``); its ``state`` (``"closed"``,
    ``"open"``, ``"half-open"``) is there for health checks and logs.
    ``clock`` (monotonic seconds) is for tests.
    """

    def __init__(
        self,
        failure_threshold: int = 5,
        probe_after: float = 0.1,
        max_probe_after: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if (isinstance(failure_threshold, bool) or not isinstance(failure_threshold, int)
                or failure_threshold < 1):
            raise ConfigurationError(
                f"failure_threshold must be an int >= 1, got {failure_threshold!r}"
            )
        for name, value in (("probe_after", probe_after), ("max_probe_after", max_probe_after)):
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not math.isfinite(value) or value < 0):
                raise ConfigurationError(
                    f"{name} must be a finite number of seconds >= 0, got {value!r}"
                )
        if max_probe_after < probe_after:
            raise ConfigurationError(
                f"max_probe_after ({max_probe_after!r}) must not be less than "
                f"probe_after ({probe_after!r})"
            )
        self.failure_threshold = failure_threshold
        self.probe_after = float(probe_after)
        self.max_probe_after = float(max_probe_after)
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0  # in a row, while closed
        self._open = False
        self._delay = 0.0  # the last wait before a probe
        self._probe_at = 0.0
        self._probing = False

    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` (skipping Redis) or ``"half-open"`` (a probe
        is running, or the next call will be one)."""
        with self._lock:
            if not self._open:
                return "closed"
            if self._probing or self._clock() >= self._probe_at:
                return "half-open"
            return "open"

    @property
    def open(self) -> bool:
        """True from the failure that opened the breaker until a probe succeeds."""
        return self._open

    def attempt(self) -> _Attempt | None:
        """May this call use Redis? None: skip it. Otherwise a context manager
        to wrap the Redis call in; how the block ends tells the breaker what
        happened (an exception that is neither a failure nor an answer, a
        cancellation say, counts as nothing)::

            attempt = breaker.attempt()
            if attempt is not None:
                with attempt:
                    value = cache.get(key)
        """
        with self._lock:
            if not self._open:
                return _Attempt(self, probe=False)
            if self._probing or self._clock() < self._probe_at:
                return None
            self._probing = True
            return _Attempt(self, probe=True)

    def _ended(self, probe: bool, reached: bool | None) -> None:
        """An attempt ended: reached Redis (True), failed (False), or neither (None)."""
        with self._lock:
            if probe:
                self._probing = False
            if reached:
                self._failures = 0
                self._open = False
            elif reached is False and probe:
                self._delay = min(self.max_probe_after,
                                  random.uniform(self.probe_after, self._delay * 3))
                self._probe_at = self._clock() + self._delay
            elif reached is False and not self._open:
                self._failures += 1
                if self._failures >= self.failure_threshold:
                    self._open = True
                    self._delay = self.probe_after
                    self._probe_at = self._clock() + self._delay
            # A failure of a call that started before the breaker opened
            # changes nothing: the outage is already known.

    def __repr__(self) -> str:
        return (
            f"<CircuitBreaker {self.state} failure_threshold={self.failure_threshold} "
            f"probe_after={self.probe_after} max_probe_after={self.max_probe_after}>"
        )


class _Attempt:
    """One call's use of Redis, reported to its breaker when the block ends."""

    __slots__ = ("_breaker", "_probe")

    def __init__(self, breaker: CircuitBreaker, probe: bool) -> None:
        self._breaker = breaker
        self._probe = probe

    def __enter__(self) -> _Attempt:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if kind is None:
            reached: bool | None = True
        elif issubclass(kind, _UNREACHABLE):
            reached = False
        elif issubclass(kind, RedisCacheError):
            reached = True  # an error reply or an undecodable value: Redis answered
        else:
            reached = None  # cancelled, interrupted, a bug: nothing learnt about Redis
        self._breaker._ended(self._probe, reached)


def breaker_from_setting(value: object) -> CircuitBreaker:
    """A cache's ``circuit_breaker=``: a CircuitBreaker, or None for a default one."""
    if value is None:
        return CircuitBreaker()
    if not isinstance(value, CircuitBreaker):
        raise ConfigurationError(
            f"circuit_breaker must be a redis_cache.CircuitBreaker or None, "
            f"got {type(value).__name__}"
        )
    return value
