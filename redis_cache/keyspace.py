"""Looking at the namespace's keys: what ``cache.scan()`` yields and what
``cache.key_info(key)`` answers.

The SCAN walking itself lives beside ``clear_pattern`` in cache.py (one loop
for both); this module holds what scan and key_info add: argument checks,
the key names given back, and the one script that reads a key's type, TTL,
memory use and encoding at once (one round trip, on one key's node).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import ProtocolError

__all__ = ["KeyInfo"]

#: SCAN's COUNT hint when the caller gives none: keys the server looks at
#: per call (not a limit on what is yielded).
DEFAULT_SCAN_COUNT = 1000

# nil for a missing key, else {type, pttl, memory usage, encoding}. One
# script: the four answers are about the same moment of the same key.
KEY_INFO_SCRIPT = (
    "local kind = redis.call('type', KEYS[1])['ok'] "
    "if kind == 'none' then return false end "
    "return {kind, redis.call('pttl', KEYS[1]), redis.call('memory', 'usage', KEYS[1]), "
    "redis.call('object', 'encoding', KEYS[1])}"
)


@dataclass(frozen=True)
class KeyInfo:
    """What the server says about one key.

    ``type``: "string", "hash", "list", "set", "zset", "stream".
    ``ttl``: seconds left (to the millisecond), None when the key does not
    expire. ``memory_bytes``: MEMORY USAGE (value, key and overhead; sampled
    for large aggregates). ``encoding``: OBJECT ENCODING ("embstr",
    "listpack", ...), what decides how compact it is.
    """

    type: str
    ttl: float | None
    memory_bytes: int
    encoding: str


def full_key(prefix: bytes, key: Any) -> bytes:
    """A caller's key with the namespace in front."""
    if isinstance(key, str):
        return prefix + key.encode()
    if isinstance(key, bytes):
        return prefix + key
    raise TypeError(f"a key must be str or bytes, not {type(key).__name__}")


def key_info_args(prefix: bytes, key: Any) -> tuple[Any, ...]:
    return ("EVAL", KEY_INFO_SCRIPT, 1, full_key(prefix, key))


def parse_key_info(reply: Any) -> KeyInfo | None:
    """The script's reply, checked: None for a missing key."""
    if reply is None:
        return None
    if (isinstance(reply, list) and len(reply) == 4 and isinstance(reply[0], bytes)
            and isinstance(reply[1], int) and isinstance(reply[2], int)
            and isinstance(reply[3], bytes)):
        kind, pttl, memory, encoding = reply
        return KeyInfo(kind.decode(), None if pttl < 0 else pttl / 1000, memory,
                       encoding.decode())
    raise ProtocolError(f"redis answered key_info's script with {reply!r:.80}")


def check_count(count: Any) -> int:
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"scan count must be a whole number of keys, 1 or more "
                         f"(a hint of how many the server looks at per call); got {count!r}")
    return count


def caller_key(key: bytes, prefix_length: int) -> str:
    """A scanned key as the caller names it: without the namespace, as str
    (bytes that are not UTF-8, written by another client, come back as
    surrogate escapes: ``.encode("utf-8", "surrogateescape")`` restores them)."""
    return key[prefix_length:].decode("utf-8", "surrogateescape")
