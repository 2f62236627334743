"""Tagged entries (which may also be served stale).

What ``cache.set_tagged(key, value, tags)``, ``cache.get_tagged(key)``,
``cache.invalidate_tags(*tags)``, ``@cached(tags=...)``, ``get_or_set(...,
tags=...)`` and the FastAPI middleware's ``tags=`` / ``serve_stale=`` store and
read. See docs/architecture.md, "Tags, stale entries and read-through", for the
design and the race argument; in short:

* every tag has a *generation* key ``<namespace>tag:{<tag>}`` (its own hash
  tag: one slot per tag on a cluster) holding a random token;
* an entry is a Redis hash at its key: ``v`` the encoded value, ``s`` the
  stale window in ms, and ``t:<tag>`` the token each of its tags had *before*
  the value was computed;
* a read is valid only while every stored token is still the tag's current
  one; ``invalidate_tags`` gives each tag a new token (one SET per tag, O(1)
  in the number of entries it invalidates);
* the Redis TTL of an entry is its ttl plus its stale window; the part of the
  PTTL beyond the stale window is its logical (fresh) remaining time.

A plain ``cache.get`` of an entry's key gets Redis's WRONGTYPE error rather
than a value it could not validate: plain gets stay one call into C.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import secrets
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from . import _core
from ._typed import convert
from .errors import ProtocolError, ResponseError, SerializationError

if TYPE_CHECKING:
    from .cache import RedisCache, SyncRedisCache

__all__ = ["Entry", "check_tag", "check_tag_templates", "render_tags"]

#: Reads an entry and its PTTL at once (one key: fine on a cluster). A key
#: holding anything but a hash (a plain value) reads as a miss.
_READ = (
    "if redis.call('type', KEYS[1]).ok ~= 'hash' then return {{}, -2} end "
    "return {redis.call('hgetall', KEYS[1]), redis.call('pttl', KEYS[1])}"
)
#: Replaces an entry whole: ARGV[1] its Redis TTL in ms (0: none), then fields.
_WRITE = (
    "redis.call('del', KEYS[1]) redis.call('hset', KEYS[1], unpack(ARGV, 2)) "
    "if tonumber(ARGV[1]) > 0 then redis.call('pexpire', KEYS[1], ARGV[1]) end return 1"
)

_SHA = {script: hashlib.sha1(script.encode()).hexdigest() for script in (_READ, _WRITE)}

_TAG_FIELD = b"t:"


async def _eval_async(cache: Any, command: tuple[Any, ...]) -> Any:
    """EVALSHA (the script's text is not sent each time), EVAL on NOSCRIPT."""
    script, rest = command[1], command[2:]
    try:
        return await cache.execute_command("EVALSHA", _SHA[script], *rest)
    except ResponseError as exc:
        if "NOSCRIPT" not in str(exc):
            raise
        return await cache.execute_command(*command)


def _eval_sync(cache: Any, command: tuple[Any, ...]) -> Any:
    script, rest = command[1], command[2:]
    try:
        return cache.execute_command("EVALSHA", _SHA[script], *rest)
    except ResponseError as exc:
        if "NOSCRIPT" not in str(exc):
            raise
        return cache.execute_command(*command)


def check_tag(tag: Any) -> str:
    """A tag as given, or a clear error for one that cannot be a tag."""
    if not isinstance(tag, str) or not tag:
        raise ValueError(f"a tag must be a non-empty str (like 'user:5'), got {tag!r}")
    return tag


def _tag_list(tags: Iterable[str] | str) -> tuple[str, ...]:
    if isinstance(tags, str):
        return (check_tag(tags),)
    return tuple(dict.fromkeys(check_tag(t) for t in tags))


def check_tag_templates(templates: Iterable[str] | str, parameters: Iterable[str],
                        where: str) -> tuple[str, ...]:
    """Refuses, at decoration time, a tag template that is not a str or names
    something the function does not take."""
    if isinstance(templates, str):
        templates = (templates,)
    names = set(parameters)
    checked = []
    for template in templates:
        if not isinstance(template, str) or not template:
            raise ValueError(f"tags= takes non-empty str templates like 'user:{{user_id}}', "
                             f"got {template!r}")
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
        except ValueError as exc:
            raise ValueError(f"bad tag template {template!r}: {exc} (use {{{{ and }}}} for "
                             "literal braces)") from None
        for field in fields:
            root = field.split(".", 1)[0].split("[", 1)[0]
            if root not in names:
                raise ValueError(f"tag template {template!r} names {root!r}, which is not a "
                                 f"parameter of {where}")
        checked.append(template)
    return tuple(checked)


def render_tags(templates: Sequence[str], arguments: dict[str, Any]) -> tuple[str, ...]:
    """The tags of one call: its templates filled in with its bound arguments."""
    return tuple(dict.fromkeys(t.format_map(arguments) for t in templates))


def tag_key(cache: Any, tag: str) -> bytes:
    """The generation key of a tag: in its own slot, inside the namespace."""
    return cache._key_prefix + b"tag:{" + tag.encode() + b"}"


def _new_token() -> str:
    return secrets.token_hex(8)


def _token_command(cache: Any, tag: str) -> tuple[Any, ...]:
    # The current token, or (NX) a fresh one made current: a tag never read
    # before gets a token here, so a generation key that was evicted or
    # deleted later counts as an invalidation, never as a return to the
    # state before the first one.
    return ("SET", tag_key(cache, tag), _new_token(), "NX", "GET")


def _token_of(reply: Any, command: tuple[Any, ...]) -> bytes:
    if reply is None:
        return command[2].encode()  # ours was set
    if not isinstance(reply, bytes):
        raise ProtocolError(f"redis answered SET NX GET with {type(reply).__name__}, not a token")
    return reply


# ---------------------------------------------------------------------- values


class _Codec:
    """The cache's serializer in Python, for values inside an entry (a hash
    field, which the C codec does not write). Compression is not applied."""

    def __init__(self, cache: Any) -> None:
        options = getattr(cache, "_init_kwargs", {})
        serializer = options.get("serializer", "json")
        if serializer == "pickle":
            from .serializers import SignedPickle

            serializer = SignedPickle(options["pickle_secret"])
        self.kind = serializer if isinstance(serializer, str) else "custom"
        self.serializer = serializer

    def dumps(self, value: Any) -> bytes:
        try:
            if self.kind == "json":
                return _core.json_dumps(value)  # type: ignore[no-any-return]
            if self.kind == "raw":
                if isinstance(value, str):
                    return value.encode()
                return bytes(value)
            data = self.serializer.dumps(value)
            return data.encode() if isinstance(data, str) else bytes(data)
        except SerializationError:
            raise
        except Exception as exc:
            raise SerializationError(f"cannot store {type(value).__name__}: {exc}") from exc

    def loads(self, data: bytes) -> Any:
        if self.kind == "json":
            return _core.json_loads(data)
        if self.kind == "raw":
            return data
        try:
            return self.serializer.loads(data)
        except SerializationError:
            raise
        except Exception as exc:
            raise SerializationError(f"the serializer's loads() failed: {exc}") from exc


def _codec(cache: Any) -> _Codec:
    codec = cache.__dict__.get("_entry_codec")
    if codec is None:
        codec = cache.__dict__["_entry_codec"] = _Codec(cache)
    return codec  # type: ignore[no-any-return]


def _ttl_ms(cache: Any, ttl: Any) -> int:
    """ttl (None: the cache's default) in whole ms; 0 for no expiry."""
    if ttl is None:
        ttl = cache.default_ttl
    if ttl is None:
        return 0
    seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else ttl
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0 \
            or math.isinf(seconds):
        raise ValueError(f"ttl must be a positive number of seconds or a timedelta, got {ttl!r}")
    return max(1, int(seconds * 1000))


def stale_ms(stale_if_error: Any) -> int:
    """The stale window in ms, or a clear error."""
    if stale_if_error is None:
        return 0
    if isinstance(stale_if_error, timedelta):
        stale_if_error = stale_if_error.total_seconds()
    if isinstance(stale_if_error, bool) or not isinstance(stale_if_error, (int, float)) \
            or not 0 <= stale_if_error < math.inf:
        raise ValueError("stale_if_error must be a number of seconds >= 0 (how long after its "
                         f"expiry a value may be served when recomputing fails), got "
                         f"{stale_if_error!r}")
    return int(stale_if_error * 1000)


# ---------------------------------------------------------------------- entries


@dataclass
class Entry:
    """An entry read back: its value, its tags' stored tokens, and how long it
    stays fresh (None: no expiry; <= 0: only servable stale)."""

    value: Any
    tokens: dict[str, bytes]
    fresh_ms: int | None

    @property
    def fresh(self) -> bool:
        return self.fresh_ms is None or self.fresh_ms > 0


def _write_command(cache: Any, key: str, value: Any, ttl: Any, stale: int,
                   tokens: dict[str, bytes]) -> tuple[Any, ...]:
    """The EVAL that stores an entry; encodes first, so a value that cannot be
    stored is refused before anything is sent."""
    ttl_ms = _ttl_ms(cache, ttl)
    fields: list[Any] = [b"v", _codec(cache).dumps(value)]
    if stale and ttl_ms:
        fields += [b"s", stale]
    for tag, token in tokens.items():
        fields += [_TAG_FIELD + tag.encode(), token]
    redis_ttl = ttl_ms + stale if ttl_ms else 0
    return ("EVAL", _WRITE, 1, cache._key_prefix + key.encode(), redis_ttl, *fields)


def _read_command(cache: Any, key: str) -> tuple[Any, ...]:
    if not isinstance(key, str):
        raise TypeError(f"key must be a str, not {type(key).__name__}")
    return ("EVAL", _READ, 1, cache._key_prefix + key.encode())


def _parse(cache: Any, reply: Any, model: Any) -> Entry | None:
    if not (isinstance(reply, list) and len(reply) == 2 and isinstance(reply[0], list)
            and isinstance(reply[1], int)):
        raise ProtocolError(f"unexpected reply to an entry read: {reply!r:.80}")
    flat, pttl = reply
    if not flat or pttl == -2:
        return None
    fields = dict(zip(flat[::2], flat[1::2]))
    if b"v" not in fields:
        return None
    stale = int(fields.get(b"s", 0))
    tokens = {
        name[len(_TAG_FIELD):].decode(): token
        for name, token in fields.items() if name.startswith(_TAG_FIELD)
    }
    value = _codec(cache).loads(fields[b"v"])
    if model is not None:
        value = convert(model, value)
    return Entry(value, tokens, None if pttl < 0 else pttl - stale)


def _valid(entry: Entry, expected: Sequence[str] | None, current: dict[str, bytes]) -> bool:
    """Every tag the entry was stored under still has the token it stored (and
    when the caller knows which tags it should have, it has all of them)."""
    if expected is not None and not set(expected) <= entry.tokens.keys():
        return False
    return all(current.get(tag) == token for tag, token in entry.tokens.items())


# ---------------------------------------------------------------------- async


def _started(awaitable: Any) -> asyncio.Future[Any]:
    """A command under way: the single-node cache's reply future as it is (the
    command is already in the outgoing buffer), a cluster cache's coroutine
    as a task. Cheaper than gather, and the commands of one call still leave
    in the same write."""
    return awaitable if asyncio.isfuture(awaitable) else asyncio.ensure_future(awaitable)


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _abandon(futures: Iterable[asyncio.Future[Any]]) -> None:
    """Replies nobody will await: their errors are retrieved when they come
    (no "exception was never retrieved")."""
    for future in futures:
        if future.done():
            _retrieved(future)
        else:
            future.add_done_callback(_retrieved)


def _start_tokens(cache: RedisCache, tags: Sequence[str]
                  ) -> list[tuple[str, tuple[Any, ...], asyncio.Future[Any]]]:
    pending = []
    for tag in tags:
        command = _token_command(cache, tag)
        pending.append((tag, command, _started(cache.execute_command(*command))))
    return pending


async def _finish_tokens(pending: list[tuple[str, tuple[Any, ...], asyncio.Future[Any]]]
                         ) -> dict[str, bytes]:
    current = {}
    try:
        for tag, command, future in pending:
            current[tag] = _token_of(await future, command)
    except BaseException:
        _abandon(f for _, _, f in pending)
        raise
    return current


async def tokens_async(cache: RedisCache, tags: Sequence[str]) -> dict[str, bytes]:
    """The current token of each tag (one command per tag, pipelined; each in
    its own slot on a cluster)."""
    return await _finish_tokens(_start_tokens(cache, tags))


async def _read_reply(cache: RedisCache, key: str,
                      pending: list[tuple[str, tuple[Any, ...], asyncio.Future[Any]]]) -> Any:
    """The entry script's reply; if it fails, the token replies are abandoned."""
    command = _read_command(cache, key)
    try:
        try:
            return await _started(cache.execute_command("EVALSHA", _SHA[_READ], *command[2:]))
        except ResponseError as exc:
            if "NOSCRIPT" not in str(exc):
                raise
            return await cache.execute_command(*command)
    except BaseException:
        _abandon(f for _, _, f in pending)
        raise


async def read_async(cache: RedisCache, key: str, model: Any = None,
                     tags: Sequence[str] | None = None) -> tuple[Entry | None, dict[str, bytes]]:
    """The valid entry at key (None: a miss or invalidated) and the current
    tokens of ``tags``. With ``tags`` known up front, the entry and the tokens
    are read together (one round trip); else the tokens of the tags the entry
    names are read after it."""
    # The token commands are issued first, then the entry read; all leave in
    # the same write, and are awaited in that order.
    pending = _start_tokens(cache, tags) if tags else []
    reply = await _read_reply(cache, key, pending)
    current = await _finish_tokens(pending)
    entry = _parse(cache, reply, model)
    if entry is None:
        return None, current
    if not tags and entry.tokens:
        current = await tokens_async(cache, list(entry.tokens))
    return (entry if _valid(entry, tags, current) else None), current


async def write_async(cache: RedisCache, key: str, value: Any, ttl: Any = None, *,
                      stale: int = 0, tokens: dict[str, bytes] | None = None) -> bool:
    await _eval_async(cache, _write_command(cache, key, value, ttl, stale, tokens or {}))
    return True


async def set_tagged_async(cache: RedisCache, key: str, value: Any, ttl: Any,
                           tags: Iterable[str] | str) -> bool:
    """Stores value under tags. The tokens are read before the write: if an
    invalidation lands in between, the entry is born invalid (a miss), never
    a value that outlives the invalidation."""
    _ttl_ms(cache, ttl)  # checked before anything is sent
    tokens = await tokens_async(cache, _tag_list(tags))
    return await write_async(cache, key, value, ttl, tokens=tokens)


async def get_tagged_async(cache: RedisCache, key: str, default: Any = None,
                           model: Any = None) -> Any:
    entry, _ = await read_async(cache, key, model)
    return default if entry is None or not entry.fresh else entry.value


async def invalidate_async(cache: RedisCache, tags: Iterable[str] | str) -> int:
    checked = _tag_list(tags)
    await asyncio.gather(*(cache.execute_command("SET", tag_key(cache, t), _new_token(),
                                                 idempotent=True) for t in checked))
    return len(checked)


# ---------------------------------------------------------------------- sync


def tokens_sync(cache: SyncRedisCache, tags: Sequence[str]) -> dict[str, bytes]:
    current = {}
    for tag in tags:
        command = _token_command(cache, tag)
        current[tag] = _token_of(cache.execute_command(*command), command)
    return current


def read_sync(cache: SyncRedisCache, key: str, model: Any = None,
              tags: Sequence[str] | None = None) -> tuple[Entry | None, dict[str, bytes]]:
    # Tokens first: a read that sees an older token than the entry stored
    # only makes a miss, never a stale hit.
    current = tokens_sync(cache, tags) if tags else {}
    entry = _parse(cache, _eval_sync(cache, _read_command(cache, key)), model)
    if entry is None:
        return None, current
    if not tags and entry.tokens:
        current = tokens_sync(cache, list(entry.tokens))
    return (entry if _valid(entry, tags, current) else None), current


def write_sync(cache: SyncRedisCache, key: str, value: Any, ttl: Any = None, *,
               stale: int = 0, tokens: dict[str, bytes] | None = None) -> bool:
    _eval_sync(cache, _write_command(cache, key, value, ttl, stale, tokens or {}))
    return True


def set_tagged_sync(cache: SyncRedisCache, key: str, value: Any, ttl: Any,
                    tags: Iterable[str] | str) -> bool:
    _ttl_ms(cache, ttl)  # checked before anything is sent
    tokens = tokens_sync(cache, _tag_list(tags))
    return write_sync(cache, key, value, ttl, tokens=tokens)


def get_tagged_sync(cache: SyncRedisCache, key: str, default: Any = None,
                    model: Any = None) -> Any:
    entry, _ = read_sync(cache, key, model)
    return default if entry is None or not entry.fresh else entry.value


def invalidate_sync(cache: SyncRedisCache, tags: Iterable[str] | str) -> int:
    checked = _tag_list(tags)
    for tag in checked:
        cache.execute_command("SET", tag_key(cache, tag), _new_token(), idempotent=True)
    return len(checked)


# ---------------------------------------------------------------------- either kind


def _is_async(cache: Any) -> bool:
    return isinstance(cache, _core.AsyncClient)


def set_tagged(cache: Any, key: str, value: Any, tags: Iterable[str] | str, ttl: Any) -> Any:
    if _is_async(cache):
        return set_tagged_async(cache, key, value, ttl, tags)
    return set_tagged_sync(cache, key, value, ttl, tags)


def get_tagged(cache: Any, key: str, default: Any, model: Any) -> Any:
    if _is_async(cache):
        return get_tagged_async(cache, key, default, model)
    return get_tagged_sync(cache, key, default, model)


def invalidate_tags(cache: Any, tags: tuple[Any, ...]) -> Any:
    if len(tags) == 1 and isinstance(tags[0], (list, tuple, set, frozenset)):
        tags = tuple(tags[0])  # invalidate_tags(["a", "b"]) as well as ("a", "b")
    if not tags:
        raise ValueError("invalidate_tags() needs at least one tag, e.g. 'user:5'")
    if _is_async(cache):
        return invalidate_async(cache, tags)
    return invalidate_sync(cache, tags)
