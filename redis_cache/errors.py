"""The exceptions redis_cache raises, all under :class:`RedisCacheError`.

Connection and timeout errors also derive from the built-in exceptions of the
same name, so ``except OSError`` or ``except TimeoutError`` written for other
network code keeps working.
"""

from __future__ import annotations

import builtins

__all__ = [
    "RedisCacheError",
    "ConfigurationError",
    "ConnectionError",
    "AuthenticationError",
    "ProtocolError",
    "TimeoutError",
    "PoolTimeout",
    "ResponseError",
    "FailoverError",
    "SerializationError",
    "PartialWriteError",
    "LockError",
    "LockTimeout",
    "LockLost",
]


class RedisCacheError(Exception):
    """Base class of every error raised by redis_cache."""


class ConfigurationError(RedisCacheError, ValueError):
    """A setting, URL or environment variable is malformed; nothing was sent."""


class ConnectionError(RedisCacheError, builtins.ConnectionError):
    """The server could not be reached, or the connection broke mid-command."""


class AuthenticationError(ConnectionError):
    """The server refused the credentials (AUTH) given in the settings."""


class ProtocolError(ConnectionError):
    """The server sent something no command of this kind can answer (a reply of the
    wrong type, one nobody asked for, malformed RESP). The connection it came on was
    dropped, so no later call can read a reply meant for another."""


class TimeoutError(RedisCacheError, builtins.TimeoutError):
    """The server did not answer within the socket or connect timeout."""


class PoolTimeout(TimeoutError):
    """Every connection stayed busy for longer than ``pool_timeout``."""


class ResponseError(RedisCacheError):
    """Redis answered with an error reply; the message keeps its prefix (WRONGTYPE, ...)."""


class FailoverError(ResponseError):
    """The node answered READONLY, LOADING or MASTERDOWN: it is not (or not yet)
    a working primary, which is what a failover in progress looks like. The
    connection was dropped and the next command finds the current primary (a
    safe command was already sent once more there before this was raised)."""


class ClusterError(ResponseError):
    """A Redis Cluster could not serve the command: keys of one command in
    different slots (refused before sending: CROSSSLOT), more redirects than
    allowed, or a TRYAGAIN that did not pass."""


class ClusterDownError(ClusterError):
    """The cluster answered CLUSTERDOWN for longer than the retries waited, or
    no node serves the key's slot: a shard lost its primary and has no replica
    to promote, or the cluster is still being formed."""


class SerializationError(RedisCacheError, ValueError):
    """A value could not be encoded for storage, or a stored value could not be decoded."""


class PartialWriteError(ResponseError):
    """A batch write (``set_many``) was refused for some keys and done for others.

    A batch is a pipeline, not a transaction: each SET succeeds or fails on its own
    (an out-of-memory server with ``maxmemory-policy noeviction`` refuses some and
    takes the rest). ``written`` lists the keys stored, ``failed`` maps each key that
    was not to the server's error for it. Keys are the caller's, without the
    namespace."""

    def __init__(self, message: str, written: list[object], failed: dict[object, ResponseError]) -> None:
        super().__init__(message)
        self.written = written
        self.failed = failed


class LockError(RedisCacheError):
    """A lock (``cache.lock(...)``) was used wrongly: released or extended
    without being held, or acquired twice through one Lock object."""


class LockTimeout(LockError, builtins.TimeoutError):
    """Another holder kept the lock for the whole ``wait``."""


class LockLost(LockError):
    """The lock's lease ran out while held (renewal refused or failing, a
    process paused for longer than the lease), so another holder may have
    taken it: the protected work may have overlapped with someone else's."""
