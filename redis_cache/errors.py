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
    "TimeoutError",
    "PoolTimeout",
    "ResponseError",
    "SerializationError",
]


class RedisCacheError(Exception):
    """Base class of every error raised by redis_cache."""


class ConfigurationError(RedisCacheError, ValueError):
    """A setting, URL or environment variable is malformed; nothing was sent."""


class ConnectionError(RedisCacheError, builtins.ConnectionError):
    """The server could not be reached, or the connection broke mid-command."""


class AuthenticationError(ConnectionError):
    """The server refused the credentials (AUTH) given in the settings."""


class TimeoutError(RedisCacheError, builtins.TimeoutError):
    """The server did not answer within the socket or connect timeout."""


class PoolTimeout(TimeoutError):
    """Every connection stayed busy for longer than ``pool_timeout``."""


class ResponseError(RedisCacheError):
    """Redis answered with an error reply; the message keeps its prefix (WRONGTYPE, ...)."""


class SerializationError(RedisCacheError, ValueError):
    """A value could not be encoded for storage, or a stored value could not be decoded."""
