"""Rate limiting on Redis: GCRA, an exact sliding window and a sliding-window counter.

Framework-free (the FastAPI dependency and middleware are in
``redis_cache.fastapi.ratelimit``). Every check is one Lua script, so it is
atomic and costs one round trip, and it reads the time from the server
(``TIME``), never from the client: clients with skewed clocks share limits
exactly. All the keys of one check share a ``{hash tag}`` (the limiter's name
and the subject), so a check lands on one Redis Cluster slot.

Several limits are checked together and all-or-nothing: a request is admitted
only when every limit admits it, and then it is counted against each of them.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Union

from .cache import RedisCache, SyncRedisCache
from .errors import ConnectionError, ResponseError, TimeoutError

__all__ = ["ALGORITHMS", "Decision", "Limit", "RateLimiter", "SyncRateLimiter", "parse_limit"]

logger = logging.getLogger("redis_cache.ratelimit")

ALGORITHMS = ("gcra", "sliding-window", "sliding-window-counter")
ON_ERROR = ("allow", "deny", "raise")

_UNITS = {
    "s": 1, "sec": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
}
_LIMIT_TEXT = re.compile(r"^\s*(\d+)\s*(?:/|per)\s*(\d+(?:\.\d+)?)?\s*([a-z]+)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Limit:
    """``count`` requests per ``period`` seconds; ``burst`` (GCRA only) is how many
    may come at once, ``count`` by default."""

    count: int
    period: float
    burst: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ValueError(f"a limit's count must be an int >= 1, got {self.count!r}")
        if (isinstance(self.period, bool) or not isinstance(self.period, (int, float))
                or not math.isfinite(self.period) or self.period <= 0):
            raise ValueError(f"a limit's period must be seconds > 0, got {self.period!r}")
        if self.burst is not None and (isinstance(self.burst, bool)
                                       or not isinstance(self.burst, int) or self.burst < 1):
            raise ValueError(f"burst must be an int >= 1 or None, got {self.burst!r}")

    @property
    def window_us(self) -> int:
        return max(1, round(self.period * 1_000_000))

    @property
    def policy_name(self) -> str:
        """``10-per-60s``: names the limit in keys and in RateLimit-Policy headers."""
        return f"{self.count}-per-{self.period:g}s"

    def __str__(self) -> str:
        return f"{self.count}/{self.period:g}s"


def parse_limit(value: Limit | str | tuple[int, float]) -> Limit:
    """``"10/second"``, ``"5 per minute"``, ``"100/10 seconds"``, ``"1000/hour"``,
    ``(count, seconds)`` or a :class:`Limit`."""
    if isinstance(value, Limit):
        return value
    if isinstance(value, tuple) and len(value) == 2:
        return Limit(value[0], value[1])
    if isinstance(value, str):
        match = _LIMIT_TEXT.match(value)
        unit = _UNITS.get(match.group(3).lower()) if match else None
        if match and unit:
            return Limit(int(match.group(1)), float(match.group(2) or 1) * unit)
    raise ValueError(
        f"not a rate limit: {value!r}; write it as '10/second', '5/minute', "
        "'100/10 seconds', '1000/hour', '10/day', or give (count, seconds) or a Limit"
    )


@dataclass(frozen=True)
class Decision:
    """The answer of one check.

    ``remaining``: requests of cost 1 still admitted now under the deciding
    limit; ``reset``: seconds until that limit is back to full; ``retry_after``:
    seconds until this request (same cost) would be admitted, 0 when it was;
    ``limit``: the limit that decided (the one refusing with the longest wait,
    or, when admitted, the one with the fewest requests left); ``degraded``:
    Redis could not be asked and ``on_error`` decided."""

    allowed: bool
    remaining: int
    reset: float
    retry_after: float
    limit: Limit
    degraded: bool = False

    def __bool__(self) -> bool:
        return self.allowed


# Every script takes KEYS = one key per limit (+ extra keys named below) and
# ARGV = mode (1: count the request, 0: peek), cost, then count, window in
# microseconds and burst per limit. It returns allowed, remaining, reset_us,
# retry_after_us per limit (integers; retry_after_us -1: never).

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local hit = ARGV[1] == '1'
local cost = tonumber(ARGV[2])
local out = {}
local denied = false
"""

# GCRA: one key per limit holds the theoretical arrival time (TAT) in
# microseconds, written with %.17g so no precision is lost. A request of
# cost c is admitted when TAT + c * interval - burst * interval <= now.
_GCRA = _NOW + """
local n = #KEYS
local tats = {}
for i = 1, n do
  local count = tonumber(ARGV[3*i]); local window = tonumber(ARGV[3*i+1])
  local burst = tonumber(ARGV[3*i+2])
  local interval = window / count
  local tau = interval * burst
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0') or 0
  if tat < now then tat = now end
  local new_tat = tat + cost * interval
  local allow_at = new_tat - tau
  if allow_at - now > 0.5 then
    denied = true
    local left = math.floor((now - tat + tau) / interval + 1e-6)
    if left < 0 then left = 0 end
    out[4*i-3] = 0; out[4*i-2] = left; out[4*i-1] = math.ceil(tat - now)
    out[4*i] = math.ceil(allow_at - now)
  else
    out[4*i-3] = 1
    out[4*i-2] = math.floor((now - new_tat + tau) / interval + 1e-6)
    out[4*i-1] = math.ceil(new_tat - now); out[4*i] = 0
  end
  tats[i] = new_tat
end
if hit and not denied then
  for i = 1, n do
    local ttl_ms = math.ceil((tats[i] - now) / 1000) + 1
    redis.call('SET', KEYS[i], string.format('%.17g', tats[i]), 'PX', ttl_ms)
  end
end
return out
"""

# Exact sliding window: a sorted set per limit, one member per admitted unit
# of cost, scored by its arrival time; a member counts while now - score <
# window. The last key is a sequence that makes members unique.
_SLIDING_WINDOW = _NOW + """
local n = #KEYS - 1
local seq_key = KEYS[n + 1]
local longest = 0
for i = 1, n do
  local count = tonumber(ARGV[3*i]); local window = tonumber(ARGV[3*i+1])
  if window > longest then longest = window end
  local floor = '(' .. string.format('%d', now - window)
  local used = redis.call('ZCOUNT', KEYS[i], floor, '+inf')
  local oldest = redis.call('ZRANGEBYSCORE', KEYS[i], floor, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  local reset = window
  if oldest[2] then reset = tonumber(oldest[2]) + window - now end
  if used + cost > count then
    denied = true
    local k = used + cost - count - 1
    local e = redis.call('ZRANGEBYSCORE', KEYS[i], floor, '+inf', 'WITHSCORES', 'LIMIT', k, 1)
    local retry = window
    if e[2] then retry = tonumber(e[2]) + window - now end
    out[4*i-3] = 0; out[4*i-2] = count - used; out[4*i-1] = reset; out[4*i] = retry
  else
    out[4*i-3] = 1; out[4*i-2] = count - used - cost; out[4*i-1] = reset; out[4*i] = 0
  end
end
if hit and not denied then
  local last = redis.call('INCRBY', seq_key, cost)
  redis.call('PEXPIRE', seq_key, math.ceil(longest / 1000) + 1)
  for i = 1, n do
    local window = tonumber(ARGV[3*i+1])
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', string.format('%d', now - window))
    local args = {}
    for j = 1, cost do
      args[2*j-1] = string.format('%d', now); args[2*j] = string.format('%d', last - cost + j)
    end
    redis.call('ZADD', KEYS[i], unpack(args))
    redis.call('PEXPIRE', KEYS[i], math.ceil(window / 1000) + 1)
  end
end
return out
"""

# Sliding-window counter: a hash per limit with one counter per fixed window
# (field = window index); the estimate weighs the previous window's count by
# how much of it still overlaps the sliding window. O(1), approximate.
_SLIDING_WINDOW_COUNTER = _NOW + """
local n = #KEYS
local idx = {}
for i = 1, n do
  local count = tonumber(ARGV[3*i]); local window = tonumber(ARGV[3*i+1])
  local w = math.floor(now / window)
  idx[i] = w
  local elapsed = now - w * window
  local cur = tonumber(redis.call('HGET', KEYS[i], string.format('%d', w)) or '0')
  local prev = tonumber(redis.call('HGET', KEYS[i], string.format('%d', w - 1)) or '0')
  local est = prev * (window - elapsed) / window + cur
  local reset = window - elapsed
  if est + cost > count + 1e-9 then
    denied = true
    local retry
    if cur + cost <= count then
      retry = (window - elapsed) - (count - cost - cur) * window / prev
    else
      local later = window - (count - cost) * window / cur
      if later < 0 then later = 0 end
      retry = (window - elapsed) + later
    end
    if retry < 1 then retry = 1 end
    local left = math.floor(count - est + 1e-9)
    if left < 0 then left = 0 end
    out[4*i-3] = 0; out[4*i-2] = left; out[4*i-1] = math.ceil(reset); out[4*i] = math.ceil(retry)
  else
    out[4*i-3] = 1; out[4*i-2] = math.floor(count - est - cost + 1e-9)
    out[4*i-1] = math.ceil(reset); out[4*i] = 0
  end
end
if hit and not denied then
  for i = 1, n do
    local window = tonumber(ARGV[3*i+1])
    local keep_cur = string.format('%d', idx[i]); local keep_prev = string.format('%d', idx[i] - 1)
    redis.call('HINCRBY', KEYS[i], keep_cur, cost)
    if redis.call('HLEN', KEYS[i]) > 2 then
      for _, f in ipairs(redis.call('HKEYS', KEYS[i])) do
        if f ~= keep_cur and f ~= keep_prev then redis.call('HDEL', KEYS[i], f) end
      end
    end
    redis.call('PEXPIRE', KEYS[i], math.ceil(2 * window / 1000) + 1)
  end
end
return out
"""

_SCRIPTS = {
    "gcra": _GCRA,
    "sliding-window": _SLIDING_WINDOW,
    "sliding-window-counter": _SLIDING_WINDOW_COUNTER,
}
_SHAS = {name: hashlib.sha1(text.encode()).hexdigest() for name, text in _SCRIPTS.items()}

LimitSpec = Union[Limit, str, "tuple[int, float]"]


class _Warn:
    """logger.warning at most once per ``interval`` seconds."""

    def __init__(self, interval: float = 30.0) -> None:
        self.interval = interval
        self.next_at = 0.0

    def __call__(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now >= self.next_at:
            self.next_at = now + self.interval
            logger.warning(message, *args)


class _Limiter:
    """What the async and sync limiters share: keys, arguments, decisions."""

    def __init__(self, cache: Any, *limits: LimitSpec, algorithm: str = "gcra",
                 name: str = "rl", on_error: str = "allow") -> None:
        if not limits:
            raise ValueError("rate_limiter() needs at least one limit, e.g. '10/second'")
        if algorithm not in _SCRIPTS:
            raise ValueError(f"unknown algorithm {algorithm!r}; choose one of {ALGORITHMS}")
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, not {on_error!r}")
        if not isinstance(name, str) or not name:
            raise ValueError("name must be a non-empty string")
        self.cache = cache
        self.limits = tuple(parse_limit(limit) for limit in limits)
        if algorithm != "gcra" and any(limit.burst is not None for limit in self.limits):
            raise ValueError("burst applies to algorithm='gcra' only")
        self.algorithm = algorithm
        self.name = name
        self.on_error = on_error
        self._script = _SCRIPTS[algorithm]
        self._sha = _SHAS[algorithm]
        namespace = cache.namespace
        self._prefix = f"{namespace}:" if namespace else ""
        self._limit_args: list[Any] = []
        for limit in self.limits:
            burst = limit.burst if limit.burst is not None else limit.count
            self._limit_args += [limit.count, limit.window_us, burst]
        self._warn = _Warn()

    def keys(self, subject: str) -> list[str]:
        """The Redis keys of one subject (namespace included)."""
        if not isinstance(subject, str) or not subject:
            raise ValueError(f"a rate limit key must be a non-empty str, got {subject!r}")
        # One {hash tag} per subject: every key of a check is in one cluster slot.
        base = f"{self._prefix}rl:{{{self.name}:{subject}}}:{self.algorithm}"
        keys = [f"{base}:{limit.policy_name}" for limit in self.limits]
        if self.algorithm == "sliding-window":
            keys.append(f"{base}:seq")
        return keys

    def _command(self, subject: str, cost: int, hit: bool, sha: bool) -> tuple[Any, ...]:
        if isinstance(cost, bool) or not isinstance(cost, int) or cost < 1:
            raise ValueError(f"cost must be an int >= 1, got {cost!r}")
        for limit in self.limits:
            capacity = limit.burst if limit.burst is not None else limit.count
            if cost > capacity:
                raise ValueError(
                    f"cost {cost} is more than the limit {limit} can ever admit at once "
                    f"({capacity}); raise the limit (or its burst) or lower the cost"
                )
        keys = self.keys(subject)
        return ("EVALSHA" if sha else "EVAL", self._sha if sha else self._script,
                len(keys), *keys, 1 if hit else 0, cost, *self._limit_args)

    def _decision(self, reply: list[int]) -> Decision:
        allowed = all(reply[4 * i] == 1 for i in range(len(self.limits)))
        rows = [(self.limits[i], *reply[4 * i: 4 * i + 4]) for i in range(len(self.limits))]
        if allowed:
            limit, _, remaining, reset_us, _ = min(rows, key=lambda r: r[2])
            return Decision(True, max(0, remaining), max(0, reset_us) / 1e6, 0.0, limit)
        refusing = [r for r in rows if r[1] == 0]
        limit, _, remaining, reset_us, retry_us = max(refusing, key=lambda r: r[4])
        return Decision(False, max(0, remaining), max(0, reset_us) / 1e6, retry_us / 1e6, limit)

    def _fallback(self, exc: BaseException) -> Decision:
        if self.on_error == "raise":
            raise exc
        self._warn("redis_cache rate limiter %r cannot reach Redis (%s: %s); requests are %s",
                   self.name, type(exc).__name__, exc,
                   "admitted" if self.on_error == "allow" else "refused")
        return self._degraded()

    def _degraded(self) -> Decision:
        limit = min(self.limits, key=lambda lim: lim.count / lim.period)
        if self.on_error == "allow":
            return Decision(True, limit.count, 0.0, 0.0, limit, degraded=True)
        return Decision(False, 0, 1.0, 1.0, limit, degraded=True)


class RateLimiter(_Limiter):
    """Async limiter over a :class:`RedisCache`: ``await limiter.hit("user:1")``.

    ``algorithm``: ``"gcra"`` (default; one key per limit and subject, smooth,
    ``burst`` per :class:`Limit`), ``"sliding-window"`` (exact: a sorted set
    holding every admitted request of the window) or
    ``"sliding-window-counter"`` (two counters, O(1), an estimate that assumes
    the previous window's requests were evenly spread). ``on_error``: what a
    check answers when Redis cannot be reached: ``"allow"`` (fail open, the
    default, with a warning at most every 30 s), ``"deny"`` (fail closed) or
    ``"raise"``. While the cache's circuit breaker is open, Redis is not asked."""

    def __init__(self, cache: RedisCache, *limits: LimitSpec, **options: Any) -> None:
        if not isinstance(cache, RedisCache):
            raise TypeError(f"RateLimiter needs a RedisCache, not {type(cache).__name__} "
                            "(use SyncRateLimiter with a SyncRedisCache)")
        super().__init__(cache, *limits, **options)

    async def hit(self, key: str, cost: int = 1) -> Decision:
        """Counts a request of ``cost`` against every limit if all admit it."""
        return await self._run(key, cost, True)

    async def peek(self, key: str, cost: int = 1) -> Decision:
        """Whether a request of ``cost`` would be admitted now; counts nothing."""
        return await self._run(key, cost, False)

    async def reset(self, key: str) -> None:
        """Forgets every request of ``key``."""
        keys = self.keys(key)
        await self.cache.execute_command("DEL", *keys)

    async def _run(self, key: str, cost: int, hit: bool) -> Decision:
        command = self._command(key, cost, hit, sha=True)
        attempt = self.cache.circuit_breaker.attempt()
        if attempt is None:
            return self._fallback(ConnectionError("circuit breaker open: Redis is down"))
        try:
            with attempt:
                try:
                    reply = await self.cache.execute_command(*command)
                except ResponseError as exc:
                    if "NOSCRIPT" not in str(exc):
                        raise
                    reply = await self.cache.execute_command(*self._command(key, cost, hit, False))
        except (ConnectionError, TimeoutError) as exc:
            return self._fallback(exc)
        return self._decision(reply)


class SyncRateLimiter(_Limiter):
    """The blocking twin of :class:`RateLimiter`, over a :class:`SyncRedisCache`."""

    def __init__(self, cache: SyncRedisCache, *limits: LimitSpec, **options: Any) -> None:
        if not isinstance(cache, SyncRedisCache):
            raise TypeError(f"SyncRateLimiter needs a SyncRedisCache, not {type(cache).__name__}")
        super().__init__(cache, *limits, **options)

    def hit(self, key: str, cost: int = 1) -> Decision:
        return self._run(key, cost, True)

    def peek(self, key: str, cost: int = 1) -> Decision:
        return self._run(key, cost, False)

    def reset(self, key: str) -> None:
        self.cache.execute_command("DEL", *self.keys(key))

    def _run(self, key: str, cost: int, hit: bool) -> Decision:
        command = self._command(key, cost, hit, sha=True)
        attempt = self.cache.circuit_breaker.attempt()
        if attempt is None:
            return self._fallback(ConnectionError("circuit breaker open: Redis is down"))
        try:
            with attempt:
                try:
                    reply = self.cache.execute_command(*command)
                except ResponseError as exc:
                    if "NOSCRIPT" not in str(exc):
                        raise
                    reply = self.cache.execute_command(*self._command(key, cost, hit, False))
        except (ConnectionError, TimeoutError) as exc:
            return self._fallback(exc)
        return self._decision(reply)


def rate_limiter(cache: RedisCache | SyncRedisCache, *limits: LimitSpec,
                 **options: Any) -> RateLimiter | SyncRateLimiter:
    """The limiter that fits the cache: async for RedisCache, blocking for SyncRedisCache."""
    if isinstance(cache, RedisCache):
        return RateLimiter(cache, *limits, **options)
    return SyncRateLimiter(cache, *limits, **options)


def limits_of(specs: Iterable[LimitSpec]) -> tuple[Limit, ...]:
    return tuple(parse_limit(spec) for spec in specs)
