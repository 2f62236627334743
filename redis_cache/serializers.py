"""Serializers beyond the built-in JSON and raw ones.

Any object with ``dumps(value) -> bytes`` and ``loads(bytes) -> value`` can be
given as ``serializer=``. This module adds the one that needs care: pickle.
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
from typing import Any

from .errors import ConfigurationError, SerializationError

__all__ = ["SignedPickle"]


class SignedPickle:
    """pickle, with every value signed (HMAC-SHA256) by a secret you give.

    Unpickling runs code chosen by whoever wrote the bytes, so a value is
    unpickled only if it carries a valid signature made with the same secret:
    anything else written to the key (by another service, by an attacker
    with access to Redis) is refused with SerializationError instead.
    Use it only between services that share the secret and trust each other.
    """

    #: Marks the format (and its version) at the front of every value.
    PREFIX = b"rcpickle1:"
    MIN_SECRET_BYTES = 16

    def __init__(self, secret: str | bytes, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
        key = secret.encode() if isinstance(secret, str) else secret
        if not isinstance(key, bytes) or len(key) < self.MIN_SECRET_BYTES:
            raise ConfigurationError(
                f"pickle_secret must be at least {self.MIN_SECRET_BYTES} bytes "
                "(e.g. secrets.token_hex(32)), shared by every service that reads the values"
            )
        self._key = key
        self._protocol = protocol

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()

    def dumps(self, value: Any) -> bytes:
        payload = pickle.dumps(value, protocol=self._protocol)
        return self.PREFIX + self._sign(payload) + payload

    def loads(self, data: bytes) -> Any:
        if not data.startswith(self.PREFIX):
            raise SerializationError(
                "refusing to unpickle a value that was not written by SignedPickle"
            )
        start = len(self.PREFIX)
        signature, payload = data[start : start + 32], data[start + 32 :]
        if len(signature) != 32 or not hmac.compare_digest(signature, self._sign(payload)):
            raise SerializationError(
                "refusing to unpickle a value whose signature does not match pickle_secret"
            )
        return pickle.loads(payload)

    def __repr__(self) -> str:
        return "SignedPickle(secret=***)"
