"""Connection settings: validation, Redis URL parsing and environment variables.

All of this is pure Python on purpose: every configuration mistake is reported
as a :class:`~redis_cache.errors.ConfigurationError` that says what is wrong and
how to fix it, before the C core ever opens a socket.

Secrets policy: no error message, ``repr`` or description produced here ever
contains a password.  URL errors therefore never quote anything taken from
the user-info, host, port or path of a URL (a forgotten ``@host`` turns
``redis://user:PASSWORD`` into host ``user`` and port ``PASSWORD``), and
conversion errors are raised without exception chaining so that a traceback
cannot show the raw text either.
"""

from __future__ import annotations

import ipaddress
import math
import numbers
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from urllib.parse import quote, unquote

from .errors import ConfigurationError

__all__ = ["ConnectionSettings", "TLSSettings", "parse_url", "settings_from_env"]

_DEFAULT_PORT = 6379
_MAX_PORT = 65535
_TIMEOUT_FIELDS = ("socket_timeout", "socket_connect_timeout", "pool_timeout")

_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*\Z")
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9._-]+\Z")
_DIGITS_RE = re.compile(r"[0-9]+\Z")
_DECIMAL_RE = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\Z")
_BAD_PERCENT_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Redis' CLIENT SETNAME accepts only '!'..'~' (printable ASCII, no space).
_CLIENT_NAME_RE = re.compile(r"[!-~]+\Z")


# --------------------------------------------------------------------------
# Text conversions shared by URL and environment parsing.  They return None
# instead of raising so that callers decide whether the text may be quoted.
# --------------------------------------------------------------------------


def _int_expectation(minimum: int, maximum: int | None) -> str:
    """Phrase a range the same way in every message, so users learn it once."""
    if maximum is None:
        return f"a whole number >= {minimum}"
    return f"a whole number from {minimum} to {maximum}"


def _text_to_int(text: str, minimum: int, maximum: int | None) -> int | None:
    """Parse plain ASCII digits only.

    ``int()`` would also accept ``+5``, ``1_0``, surrounding spaces and
    non-ASCII digits, none of which belong in a URL or a port number.
    """
    if not _DIGITS_RE.match(text):
        return None
    number = int(text)
    if number < minimum or (maximum is not None and number > maximum):
        return None
    return number


def _text_to_seconds(text: str, *, allow_zero: bool = False) -> float | None:
    """Parse a positive (or, with allow_zero, non-negative) decimal number of seconds.

    ``float()`` would accept ``nan``, ``inf`` and exponents, which are never
    what someone means by a timeout.
    """
    if not _DECIMAL_RE.match(text):
        return None
    seconds = float(text)
    if seconds < 0 or (seconds == 0 and not allow_zero) or not math.isfinite(seconds):
        return None
    return seconds


# --------------------------------------------------------------------------
# Value checks shared by ConnectionSettings and the parsers.
# --------------------------------------------------------------------------


def _check_int(
    value: object, name: str, minimum: int, maximum: int | None = None, hint: str = ""
) -> int:
    """Accept real integers only: a bool or a numeric string is a caller bug."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigurationError(
            f"{name} must be an int, got {type(value).__name__} {value!r}; convert "
            "text with int(), or use parse_url()/settings_from_env() for URLs "
            "and environment variables"
        )
    number = int(value)
    if number < minimum or (maximum is not None and number > maximum):
        message = f"{name} must be {_int_expectation(minimum, maximum)}, got {number}"
        raise ConfigurationError(f"{message}; {hint}" if hint else message)
    return number


def _check_wait(value: object, name: str) -> float | None:
    """A wait is None (as long as it takes) or a finite number of seconds >= 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigurationError(
            f"{name} must be a number of seconds or None, got {type(value).__name__} {value!r}"
        )
    seconds = float(value)
    if not (0 <= seconds < math.inf):
        raise ConfigurationError(
            f"{name} must be a finite number of seconds >= 0 (0: fail at once), or None to "
            f"wait as long as it takes; got {value!r}"
        )
    return seconds


def _check_timeout(value: object, name: str) -> float | None:
    """A timeout is None (wait forever) or a positive, finite number of seconds.

    Zero is refused rather than read as "no timeout" because socket APIs
    treat 0 as non-blocking, which would make every command fail at once.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigurationError(
            f"{name} must be a number of seconds or None, got {type(value).__name__}"
            f" {value!r}"
        )
    try:
        seconds = float(value)
    except OverflowError:
        seconds = math.inf
    if seconds <= 0 or not math.isfinite(seconds):
        raise ConfigurationError(
            f"{name} must be a positive, finite number of seconds (or None to wait "
            f"forever), got {value!r}"
        )
    return seconds


def _check_host(value: object, name: str) -> str:
    """Catch empty or padded host names early; DNS errors later are far less clear."""
    if not isinstance(value, str):
        raise ConfigurationError(
            f"{name} must be a str such as 'localhost', got {type(value).__name__}"
        )
    if not value or any(ch.isspace() for ch in value):
        raise ConfigurationError(
            f"{name} must be a non-empty host name or IP address without spaces, "
            f"got {value!r}"
        )
    return value


def _check_optional_text(value: object, name: str, *, secret: bool = False) -> str | None:
    """None means "not set"; an empty string is refused as ambiguous.

    For secrets the message names only the type, never the value.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        shown = "" if secret else f" {value!r}"
        raise ConfigurationError(
            f"{name} must be a str or None, got {type(value).__name__}{shown}"
        )
    if not value:
        raise ConfigurationError(f"{name} must not be empty; use None when it is not needed")
    return value


def _check_client_name(value: object, name: str) -> str | None:
    """Refuse names that Redis' CLIENT SETNAME would reject at connect time."""
    text = _check_optional_text(value, name)
    if text is not None and not _CLIENT_NAME_RE.match(text):
        raise ConfigurationError(
            f"{name} may only contain printable ASCII characters without spaces "
            f"(Redis rejects others), got {text!r}"
        )
    return text


def _check_socket_path(value: object, name: str) -> str | None:
    """Accept str or os.PathLike and store a str, which is what the C core takes."""
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise ConfigurationError(
            f"{name} must be a str or os.PathLike path, got {type(value).__name__}"
        )
    path = os.fspath(value)
    if not isinstance(path, str):
        raise ConfigurationError(
            f"{name} must be a text path, got {type(path).__name__}; decode it first "
            "(os.fsdecode)"
        )
    if not path or "\0" in path:
        raise ConfigurationError(
            f"{name} must be a non-empty path without NUL characters, such as "
            "'/var/run/redis/redis.sock'"
        )
    return path


# --------------------------------------------------------------------------
# TLS
# --------------------------------------------------------------------------

_CERT_REQS = ("required", "optional", "none")
_TLS_VERSIONS = ("TLSv1.2", "TLSv1.3")
#: The settings that only mean something with TLS on.
_TLS_ONLY = (
    "ssl_ca_certs", "ssl_ca_path", "ssl_ca_data", "ssl_certfile", "ssl_keyfile",
    "ssl_password", "ssl_min_version", "ssl_ciphers",
)


def _check_cert_reqs(value: object, name: str) -> str:
    """"required", "optional" or "none"; ssl.VerifyMode values are taken too."""
    mode = getattr(value, "name", None)
    if isinstance(value, int) and not isinstance(value, bool) and isinstance(mode, str):
        value = {"CERT_REQUIRED": "required", "CERT_OPTIONAL": "optional", "CERT_NONE": "none"}.get(
            mode, value
        )
    if not isinstance(value, str) or value.lower() not in _CERT_REQS:
        raise ConfigurationError(
            f'{name} must be "required" (the default), "optional" or "none" (or an '
            f"ssl.VerifyMode), got {value!r}"
        )
    return value.lower()


def _check_bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(f"{name} must be True or False, got {value!r}")
    return value


def _check_sentinels(value: object) -> tuple[tuple[str, int], ...] | None:
    """A list of (host, port) pairs (or "host:port" strings), at least one."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ConfigurationError(
            f"sentinels must be a list of (host, port) pairs, got {type(value).__name__}"
        )
    pairs = []
    for item in value:  # type: ignore[union-attr]
        if isinstance(item, str):
            parsed = _parse_hostport(item.strip())
            item = (parsed["host"], parsed.get("port", 26379))
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise ConfigurationError(
                f"each Sentinel must be a (host, port) pair or 'host:port', got {item!r}"
            )
        host = _check_host(item[0], "a Sentinel's host")
        port = _check_int(item[1], "a Sentinel's port", 1, _MAX_PORT)
        pairs.append((host, port))
    if not pairs:
        raise ConfigurationError("sentinels must name at least one Sentinel")
    return tuple(pairs)


def _check_path_text(value: object, name: str) -> str | None:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    return _check_optional_text(value, name)


@dataclass(frozen=True)
class TLSSettings:
    """What the C core's TLS context is built from (see ConnectionSettings'
    ssl_* fields)."""

    ca_certs: str | None
    ca_path: str | None
    ca_data: str | None
    certfile: str | None
    keyfile: str | None
    password: str | None = field(repr=False)
    cert_reqs: str = "required"
    check_hostname: bool = True
    min_version: str | None = None
    ciphers: str | None = None


# --------------------------------------------------------------------------
# ConnectionSettings
# --------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class ConnectionSettings:
    """Validated, immutable settings for one connection pool.

    When ``unix_socket_path`` is set it is used instead of ``host``/``port``.
    Construction validates every field, so an invalid object cannot exist
    (``dataclasses.replace`` validates again).  The password is kept out of
    ``repr()`` and :meth:`describe` so settings can be logged safely.
    """

    host: str = "localhost"
    port: int = _DEFAULT_PORT
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    unix_socket_path: str | None = None
    max_connections: int = 50
    socket_timeout: float | None = 5.0
    socket_connect_timeout: float | None = 5.0
    client_name: str | None = None
    pool_timeout: float | None = 5.0
    #: How long a command waits for a connection once connecting has failed
    #: (the server down or restarting): attempts go on, with a short backoff,
    #: and the command fails with the last error when this has passed. 0: fail
    #: at once; None: wait as long as it takes.
    connect_wait: float | None = 1.0
    #: TLS (``rediss://``): on with ``ssl=True``. The server's certificate is
    #: checked against the CAs given (``ssl_ca_certs`` file, ``ssl_ca_path``
    #: directory, ``ssl_ca_data`` PEM text; the system's when none is) and
    #: against the host name; ``ssl_certfile``/``ssl_keyfile`` (+
    #: ``ssl_password``) are the client certificate for mutual TLS.
    ssl: bool = False
    ssl_ca_certs: str | None = None
    ssl_ca_path: str | None = None
    ssl_ca_data: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: str | None = field(default=None, repr=False)
    ssl_cert_reqs: str = "required"
    ssl_check_hostname: bool = True
    ssl_min_version: str | None = None
    ssl_ciphers: str | None = None
    #: Sentinel (``redis+sentinel://``): the Sentinels to ask, in order, for
    #: the current primary of ``service_name``; host and port are then what
    #: they answer, not settings. ``sentinel_username``/``sentinel_password``
    #: authenticate to the Sentinels (username/password to the data nodes);
    #: TLS, when on, is used towards both.
    sentinels: tuple[tuple[str, int], ...] | None = None
    service_name: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    sentinel_socket_timeout: float | None = 0.5

    def __post_init__(self) -> None:
        """Validate and normalise (ints, float seconds, str socket path)."""
        _check_host(self.host, "host")
        normalised: dict[str, object] = {
            "port": _check_int(
                self.port, "port", 1, _MAX_PORT, "the Redis default is 6379"
            ),
            "db": _check_int(self.db, "db", 0, hint="Redis databases are numbered from 0"),
            "max_connections": _check_int(
                self.max_connections, "max_connections", 1,
                hint="a pool needs at least one connection",
            ),
            "unix_socket_path": _check_socket_path(self.unix_socket_path, "unix_socket_path"),
        }
        _check_optional_text(self.username, "username")
        _check_optional_text(self.password, "password", secret=True)
        _check_client_name(self.client_name, "client_name")
        for name in _TIMEOUT_FIELDS:
            normalised[name] = _check_timeout(getattr(self, name), name)
        normalised["connect_wait"] = _check_wait(self.connect_wait, "connect_wait")
        normalised.update(self._checked_tls())
        normalised.update(self._checked_sentinel())
        for name, value in normalised.items():
            object.__setattr__(self, name, value)

    def _checked_tls(self) -> dict[str, object]:
        checked: dict[str, object] = {
            "ssl": _check_bool(self.ssl, "ssl"),
            "ssl_cert_reqs": _check_cert_reqs(self.ssl_cert_reqs, "ssl_cert_reqs"),
            "ssl_check_hostname": _check_bool(self.ssl_check_hostname, "ssl_check_hostname"),
        }
        for name in ("ssl_ca_certs", "ssl_ca_path", "ssl_certfile", "ssl_keyfile"):
            checked[name] = _check_path_text(getattr(self, name), name)
        for name in ("ssl_ca_data", "ssl_ciphers"):
            checked[name] = _check_optional_text(getattr(self, name), name)
        _check_optional_text(self.ssl_password, "ssl_password", secret=True)
        if self.ssl_min_version is not None and self.ssl_min_version not in _TLS_VERSIONS:
            raise ConfigurationError(
                f"ssl_min_version must be one of {_TLS_VERSIONS} or None, got "
                f"{self.ssl_min_version!r}"
            )
        if not self.ssl:
            given = [name for name in _TLS_ONLY if getattr(self, name) is not None]
            if checked["ssl_cert_reqs"] != "required":
                given.append("ssl_cert_reqs")
            if not self.ssl_check_hostname:
                given.append("ssl_check_hostname")
            if given:
                raise ConfigurationError(
                    f"{given[0]} is set but TLS is off: use a rediss:// URL or ssl=True"
                )
        if self.ssl and self.unix_socket_path is not None:
            raise ConfigurationError(
                "TLS (ssl=True, rediss://) works over TCP only; Redis has no TLS on unix sockets"
            )
        return checked

    def _checked_sentinel(self) -> dict[str, object]:
        checked: dict[str, object] = {
            "sentinel_socket_timeout": _check_timeout(
                self.sentinel_socket_timeout, "sentinel_socket_timeout"
            ),
            "sentinels": _check_sentinels(self.sentinels),
        }
        _check_optional_text(self.sentinel_username, "sentinel_username")
        _check_optional_text(self.sentinel_password, "sentinel_password", secret=True)
        name = _check_optional_text(self.service_name, "service_name")
        if checked["sentinels"] is None:
            for given in ("service_name", "sentinel_username", "sentinel_password"):
                if getattr(self, given) is not None:
                    raise ConfigurationError(
                        f"{given} is set but no sentinels are: give sentinels=[(host, port), ...] "
                        "or a redis+sentinel:// URL"
                    )
        else:
            if name is None:
                raise ConfigurationError(
                    "sentinels are given but no service_name: the name the Sentinels monitor "
                    "the primary under (sentinel monitor <name> ...), e.g. 'mymaster'"
                )
            if self.unix_socket_path is not None:
                raise ConfigurationError("Sentinel finds TCP addresses: drop unix_socket_path")
        return checked

    @property
    def uses_sentinel(self) -> bool:
        return self.sentinels is not None

    def tls_settings(self) -> TLSSettings | None:
        """What the C core builds its TLS context from; None without TLS."""
        if not self.ssl:
            return None
        return TLSSettings(
            ca_certs=self.ssl_ca_certs,
            ca_path=self.ssl_ca_path,
            ca_data=self.ssl_ca_data,
            certfile=self.ssl_certfile,
            keyfile=self.ssl_keyfile,
            password=self.ssl_password,
            cert_reqs=self.ssl_cert_reqs,
            check_hostname=self.ssl_check_hostname,
            min_version=self.ssl_min_version,
            ciphers=self.ssl_ciphers,
        )

    def __repr__(self) -> str:
        """Show every field, but only whether a password is set, never its value."""
        parts = []
        for item in fields(self):
            value = getattr(self, item.name)
            secret = item.name in ("password", "ssl_password", "sentinel_password")
            shown = "'***'" if secret and value is not None else repr(value)
            parts.append(f"{item.name}={shown}")
        return f"{type(self).__name__}({', '.join(parts)})"

    def describe(self) -> str:
        """A URL-like description that is safe to log (the password is left out).

        Examples: ``redis://alice@localhost:6379/0``,
        ``unix:///tmp/redis.sock?db=2``.  It parses back with :func:`parse_url`.
        """
        user = f"{quote(self.username, safe='')}@" if self.username else ""
        if self.sentinels is not None:
            scheme = "rediss+sentinel" if self.ssl else "redis+sentinel"
            hosts = ",".join(
                f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for host, port in self.sentinels
            )
            return f"{scheme}://{user}{hosts}/{quote(self.service_name or '', safe='')}/{self.db}"
        if self.unix_socket_path is not None:
            return f"unix://{user}{quote(self.unix_socket_path, safe='/')}?db={self.db}"
        host = self.host
        if ":" in host:  # IPv6 literal; a zone id's '%' must be escaped as %25
            host = f"[{host.replace('%', '%25')}]"
        scheme = "rediss" if self.ssl else "redis"
        return f"{scheme}://{user}{host}:{self.port}/{self.db}"


# --------------------------------------------------------------------------
# URL parsing
# --------------------------------------------------------------------------

_URL_EXAMPLE = "redis://[[username]:password@]host[:port][/db][?option=value]"


def _url_error(part: str, problem: str) -> ConfigurationError:
    """Name the faulty part first so the user knows where to look."""
    return ConfigurationError(f"invalid Redis URL ({part}): {problem}")


def _decode(raw: str, part: str) -> str:
    """Percent-decode strictly.

    A stray ``%`` is refused rather than kept, because silently keeping it
    would make ``%25`` and ``%`` mean the same thing for some passwords only.
    """
    if _BAD_PERCENT_RE.search(raw):
        raise _url_error(
            part, "'%' must be followed by two hex digits; write a literal '%' as %25"
        )
    try:
        return unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise _url_error(part, "percent-escapes do not form valid UTF-8") from None


def _split_scheme(url: object) -> tuple[str, str]:
    """Return the lower-cased scheme and the text after ``://``."""
    if not isinstance(url, str):
        raise ConfigurationError(f"Redis URL must be a str, got {type(url).__name__}")
    text = url.strip()
    if not text:
        raise _url_error("scheme", f"the URL is empty; expected {_URL_EXAMPLE}")
    scheme, sep, rest = text.partition("://")
    if not sep or not _SCHEME_RE.match(scheme):
        raise _url_error(
            "scheme", f"the URL must start with redis:// or unix://, e.g. {_URL_EXAMPLE}"
        )
    scheme = scheme.lower()
    if scheme not in _SCHEMES:
        raise _url_error(
            "scheme",
            f"unsupported scheme {scheme!r}; use redis://, rediss:// (TLS), unix://, "
            "redis+sentinel:// or redis+cluster://",
        )
    return scheme, rest


_SCHEMES = (
    "redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster",
)


def _parse_sentinel_path(path: str) -> tuple[str, int | None]:
    """``/service_name[/db]`` of a Sentinel URL."""
    parts = path.split("/")
    if len(parts) < 2 or not parts[1] or len(parts) > 3:
        raise _url_error(
            "service name",
            "a Sentinel URL names the service after the Sentinels: "
            "redis+sentinel://host:26379,host2:26379/mymaster[/db]",
        )
    db = _parse_db_path("/" + parts[2]) if len(parts) == 3 else None
    return _decode(parts[1], "service name"), db


def _split_authority(rest: str) -> tuple[str, str, str]:
    """Split into (authority, path, query) the standard way.

    An ``@`` after the authority means credentials containing an unescaped
    ``/``, ``?`` or ``#`` were cut in two; refusing it here is what keeps
    password fragments out of later, value-quoting messages.
    """
    ends = [index for index in (rest.find(ch) for ch in "/?#") if index != -1]
    end = min(ends, default=len(rest))
    authority, remainder = rest[:end], rest[end:]
    if "@" in remainder:
        raise _url_error(
            "credentials",
            "'@' found after the host; in a username or password percent-encode "
            "'/' as %2F, '?' as %3F, '#' as %23 (and '@' elsewhere as %40)",
        )
    if "#" in remainder:
        raise _url_error("fragment", "'#...' is not supported; percent-encode '#' as %23")
    path, _, query = remainder.partition("?")
    return authority, path, query


def _parse_userinfo(authority: str) -> tuple[dict[str, object], str]:
    """Take ``[username][:password]@`` off the authority.

    The last ``@`` ends the user-info, so an unescaped ``@`` inside a
    password still works.  Empty username or password count as absent.
    """
    userinfo, at, hostport = authority.rpartition("@")
    credentials: dict[str, object] = {}
    if not at:
        return credentials, authority
    raw_user, _, raw_password = userinfo.partition(":")
    username = _decode(raw_user, "username")
    password = _decode(raw_password, "password")
    if username:
        credentials["username"] = username
    if password:
        credentials["password"] = password
    return credentials, hostport


def _parse_ipv6(text: str) -> str:
    """Validate a bracketed IPv6 literal (zone id written as %25) and normalise it."""
    decoded = _decode(text, "host")  # outside the try: ConfigurationError is a ValueError
    try:
        return str(ipaddress.IPv6Address(decoded))
    except ValueError:
        raise _url_error(
            "host", "the text inside [...] is not a valid IPv6 address"
        ) from None


def _parse_port(text: str) -> int:
    """The port text is never quoted: without an '@' it may be a password."""
    if not text:
        raise _url_error("port", "':' is not followed by a port number")
    port = _text_to_int(text, 1, _MAX_PORT)
    if port is None:
        raise _url_error(
            "port",
            f"must be {_int_expectation(1, _MAX_PORT)} (if this was 'user:password', "
            "add '@host' after it)",
        )
    return port


def _parse_hostport(hostport: str) -> dict[str, object]:
    """Parse ``host``, ``host:port``, ``[ipv6]`` or ``[ipv6]:port``."""
    port_text: str | None
    if hostport.startswith("["):
        close = hostport.find("]")
        if close == -1:
            raise _url_error("host", "an IPv6 address opened with '[' is never closed with ']'")
        host = _parse_ipv6(hostport[1:close])
        after = hostport[close + 1:]
        if after and not after.startswith(":"):
            raise _url_error("host", "only ':port' may follow ']'")
        port_text = after[1:] if after else None
    else:
        host, colon, port_text = hostport.partition(":")
        if ":" in port_text:
            raise _url_error(
                "host", "IPv6 addresses must be in brackets, e.g. redis://[::1]:6379/0"
            )
        if not colon:
            port_text = None
        if not host:
            raise _url_error("host", f"the host is missing; expected {_URL_EXAMPLE}")
        if not _HOSTNAME_RE.match(host):
            raise _url_error(
                "host", "a host name may only contain letters, digits, '.', '-' and '_'"
            )
    result: dict[str, object] = {"host": host}
    if port_text is not None:
        result["port"] = _parse_port(port_text)
    return result


def _parse_db_path(path: str) -> int | None:
    """``/3`` selects database 3; ``/`` or nothing leaves it unset."""
    if path in ("", "/"):
        return None
    db = _text_to_int(path[1:], 0, None)
    if db is None:
        raise _url_error(
            "db",
            f"the path must be /<db> with {_int_expectation(0, None)}, e.g. "
            "redis://localhost:6379/2",
        )
    return db


def _parse_socket_path(hostport: str, path: str) -> str:
    """A unix:// URL carries only a path; a host usually means two slashes, not three."""
    if hostport:
        raise _url_error(
            "host",
            "unix:// URLs take no host; write unix:///path/to/redis.sock (three slashes)",
        )
    socket_path = _decode(path, "socket path")
    if not socket_path or "\0" in socket_path:
        raise _url_error(
            "socket path", "expected an absolute path, e.g. unix:///var/run/redis.sock?db=0"
        )
    return socket_path


def _int_option(minimum: int) -> Callable[[str, str], object]:
    """Build a parser for an integer URL option with a lower bound."""

    def parse(text: str, part: str) -> object:
        number = _text_to_int(text, minimum, None)
        if number is None:
            raise _url_error(part, f"must be {_int_expectation(minimum, None)}, got {text!r}")
        return number

    return parse


def _seconds_option(text: str, part: str) -> object:
    """Parse a timeout option; the value is quoted because options are not secret."""
    seconds = _text_to_seconds(text)
    if seconds is None:
        raise _url_error(part, f"must be a positive number of seconds, got {text!r}")
    return seconds


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _parse_bool(text: str) -> bool | None:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    return None


def _bool_option(text: str, part: str) -> object:
    value = _parse_bool(text)
    if value is None:
        raise _url_error(part, f"must be true or false, got {text!r}")
    return value


def _text_option(text: str, part: str) -> object:
    if not text:
        raise _url_error(part, "must not be empty")
    return text


def _wait_option(text: str, part: str) -> object:
    """Parse a wait option: like a timeout, but 0 (do not wait) is allowed."""
    seconds = _text_to_seconds(text, allow_zero=True)
    if seconds is None:
        raise _url_error(part, f"must be a number of seconds >= 0, got {text!r}")
    return seconds


def _client_name_option(text: str, part: str) -> object:
    """Reuse the ConnectionSettings rule so both paths refuse the same names."""
    try:
        return _check_client_name(text, "client_name")
    except ConfigurationError as exc:
        raise _url_error(part, str(exc)) from None


_URL_OPTIONS: Mapping[str, Callable[[str, str], object]] = {
    "db": _int_option(0),
    "socket_timeout": _seconds_option,
    "socket_connect_timeout": _seconds_option,
    "max_connections": _int_option(1),
    "client_name": _client_name_option,
    "pool_timeout": _seconds_option,
    "connect_wait": _wait_option,
    "sentinel_username": _text_option,
    "sentinel_password": _text_option,
    "sentinel_socket_timeout": _seconds_option,
    "ssl_cert_reqs": _text_option,
    "ssl_check_hostname": _bool_option,
    "ssl_ca_certs": _text_option,
    "ssl_ca_path": _text_option,
    "ssl_certfile": _text_option,
    "ssl_keyfile": _text_option,
    "ssl_min_version": _text_option,
    "ssl_ciphers": _text_option,
}


def _parse_query(query: str) -> dict[str, object]:
    """Parse ``name=value&...``; unknown or repeated options are errors, not ignored.

    Ignoring a misspelt option would silently keep a default the user meant
    to change.  Values of unknown options are never quoted.
    """
    options: dict[str, object] = {}
    for item in query.split("&"):
        if not item:
            continue  # tolerate "a=1&&b=2" and a trailing '&'
        raw_name, equals, raw_value = item.partition("=")
        name = _decode(raw_name, "option name")
        part = f"option {name!r}"
        if name not in _URL_OPTIONS:
            known = ", ".join(_URL_OPTIONS)
            raise _url_error(part, f"unknown option; known options are: {known}")
        if name in options:
            raise _url_error(part, "given more than once")
        if not equals or not raw_value:
            raise _url_error(part, f"needs a value, written {name}=<value>")
        options[name] = _URL_OPTIONS[name](_decode(raw_value, part), part)
    return options


def _merge_db(path_db: int | None, options: dict[str, object]) -> None:
    """Allow db in the path or the query, but refuse two different answers."""
    if path_db is None:
        return
    query_db = options.setdefault("db", path_db)
    if query_db != path_db:
        raise _url_error(
            "db", f"the path says /{path_db} but the query says db={query_db}; give it once"
        )


def parse_url(url: str) -> dict[str, object]:
    """Parse a Redis URL into keyword arguments for :class:`ConnectionSettings`.

    Accepted forms::

        redis://[[username]:password@]host[:port][/db][?option=value&...]
        rediss://...   (the same, over TLS)
        redis+sentinel://[[username]:password@]host:port[,host:port...]/service_name[/db][?...]
        redis+cluster://[[username]:password@]host:port[,host:port...][?...]   (Redis Cluster)
        rediss+cluster://...   (Redis Cluster over TLS)
        rediss+sentinel://...   (Sentinel, TLS towards Sentinels and data nodes)
        unix://[[username]:password@]/path/to/redis.sock[?db=N&...]

    Hosts may be IPv6 literals in brackets (``redis://[::1]:6380/0``).
    Username, password, socket path and option values are percent-decoded.
    Options: db, socket_timeout, socket_connect_timeout, max_connections,
    client_name, pool_timeout, connect_wait, and for TLS ssl_cert_reqs,
    ssl_check_hostname, ssl_ca_certs, ssl_ca_path, ssl_certfile, ssl_keyfile,
    ssl_min_version, ssl_ciphers.  Only keys present in the URL are returned,
    so the result can be layered over defaults or other sources.

    Raises :class:`ConfigurationError` naming the faulty part; the message
    never contains the password.
    """
    scheme, rest = _split_scheme(url)
    authority, path, query = _split_authority(rest)
    settings, hostport = _parse_userinfo(authority)
    if scheme.endswith("+cluster"):
        nodes = []
        for item in hostport.split(","):
            parsed = _parse_hostport(item)
            nodes.append((parsed["host"], parsed.get("port", 6379)))
        settings["cluster_nodes"] = tuple(nodes)
        path_db = _parse_db_path(path)
        if path_db not in (None, 0):
            raise _url_error("path", f"a cluster has only database 0, not {path_db}")
        path_db = None
        if scheme.startswith("rediss"):
            settings["ssl"] = True
    elif scheme.endswith("+sentinel"):
        sentinels = []
        for item in hostport.split(","):
            parsed = _parse_hostport(item)
            sentinels.append((parsed["host"], parsed.get("port", 26379)))
        settings["sentinels"] = tuple(sentinels)
        settings["service_name"], path_db = _parse_sentinel_path(path)
        if scheme.startswith("rediss"):
            settings["ssl"] = True
    elif scheme in ("redis", "rediss"):
        settings.update(_parse_hostport(hostport))
        path_db = _parse_db_path(path)
        if scheme == "rediss":
            settings["ssl"] = True
    else:
        settings["unix_socket_path"] = _parse_socket_path(hostport, path)
        path_db = None
    options = _parse_query(query)
    _merge_db(path_db, options)
    settings.update(options)
    return settings


# --------------------------------------------------------------------------
# Environment variables
# --------------------------------------------------------------------------


def _env_int(minimum: int, maximum: int | None = None) -> Callable[[str, str], object]:
    """Build a converter for an integer variable; the value is quoted (not secret)."""

    def convert(text: str, variable: str) -> object:
        number = _text_to_int(text, minimum, maximum)
        if number is None:
            raise ConfigurationError(
                f"{variable} must be {_int_expectation(minimum, maximum)}, got {text!r}"
            )
        return number

    return convert


def _env_seconds(text: str, variable: str) -> object:
    """Convert a timeout variable (seconds, decimals allowed)."""
    seconds = _text_to_seconds(text)
    if seconds is None:
        raise ConfigurationError(
            f"{variable} must be a positive number of seconds, got {text!r}"
        )
    return seconds


def _env_wait(text: str, variable: str) -> object:
    """Convert a wait variable (seconds >= 0, decimals allowed)."""
    seconds = _text_to_seconds(text, allow_zero=True)
    if seconds is None:
        raise ConfigurationError(f"{variable} must be a number of seconds >= 0, got {text!r}")
    return seconds


def _env_bool(text: str, variable: str) -> object:
    value = _parse_bool(text)
    if value is None:
        raise ConfigurationError(f"{variable} must be true or false (or 1/0, yes/no), got {text!r}")
    return value


def _env_host(text: str, variable: str) -> object:
    """Check a host here, so that the message names the variable rather than
    the ``host`` setting; and catch a URL put into REDIS_HOST, a common mix-up."""
    if "://" in text:
        raise ConfigurationError(
            f"{variable} takes a bare host name such as 'localhost'; put URLs in REDIS_URL"
        )
    return _check_host(text, variable)


def _env_socket_path(text: str, variable: str) -> object:
    """Check a socket path here, so that the message names the variable."""
    return _check_socket_path(text, variable)


def _env_text(text: str, variable: str) -> object:
    """Keep the value as it is."""
    return text


# (variable, settings key, converter, strip surrounding whitespace).
# Credentials are not stripped: spaces may be part of a password.
_ENV_VARIABLES: tuple[tuple[str, str, Callable[[str, str], object], bool], ...] = (
    ("REDIS_HOST", "host", _env_host, True),
    ("REDIS_PORT", "port", _env_int(1, _MAX_PORT), True),
    ("REDIS_DB", "db", _env_int(0), True),
    ("REDIS_USERNAME", "username", _env_text, False),
    ("REDIS_PASSWORD", "password", _env_text, False),
    ("REDIS_SOCKET_PATH", "unix_socket_path", _env_socket_path, True),
    ("REDIS_MAX_CONNECTIONS", "max_connections", _env_int(1), True),
    ("REDIS_SOCKET_TIMEOUT", "socket_timeout", _env_seconds, True),
    ("REDIS_SOCKET_CONNECT_TIMEOUT", "socket_connect_timeout", _env_seconds, True),
    ("REDIS_CONNECT_WAIT", "connect_wait", _env_wait, True),
    ("REDIS_USE_SSL", "ssl", _env_bool, True),
    ("REDIS_SENTINEL_SERVICE_NAME", "service_name", _env_text, True),
    ("REDIS_SENTINEL_USERNAME", "sentinel_username", _env_text, False),
    ("REDIS_SENTINEL_PASSWORD", "sentinel_password", _env_text, False),
    ("REDIS_SENTINEL_SOCKET_TIMEOUT", "sentinel_socket_timeout", _env_seconds, True),
    ("REDIS_SSL_CA_CERTS", "ssl_ca_certs", _env_text, True),
    ("REDIS_SSL_CA_PATH", "ssl_ca_path", _env_text, True),
    ("REDIS_SSL_CA_DATA", "ssl_ca_data", _env_text, False),
    ("REDIS_SSL_CERTFILE", "ssl_certfile", _env_text, True),
    ("REDIS_SSL_KEYFILE", "ssl_keyfile", _env_text, True),
    ("REDIS_SSL_PASSWORD", "ssl_password", _env_text, False),
    ("REDIS_SSL_CERT_REQS", "ssl_cert_reqs", _env_text, True),
    ("REDIS_SSL_CHECK_HOSTNAME", "ssl_check_hostname", _env_bool, True),
    ("REDIS_SSL_MIN_VERSION", "ssl_min_version", _env_text, True),
    ("REDIS_SSL_CIPHERS", "ssl_ciphers", _env_text, True),
)


def settings_from_env(environ: Mapping[str, str] | None = None) -> dict[str, object]:
    """Read connection settings from environment variables.

    Order: ``REDIS_URL`` is parsed first (with :func:`parse_url`) as the base;
    then each of REDIS_HOST, REDIS_PORT, REDIS_DB, REDIS_USERNAME,
    REDIS_PASSWORD, REDIS_SOCKET_PATH, REDIS_MAX_CONNECTIONS,
    REDIS_SOCKET_TIMEOUT, REDIS_SOCKET_CONNECT_TIMEOUT, REDIS_CONNECT_WAIT,
    REDIS_USE_SSL and REDIS_SSL_* (CA_CERTS, CA_PATH, CA_DATA, CERTFILE,
    KEYFILE, PASSWORD, CERT_REQS, CHECK_HOSTNAME, MIN_VERSION, CIPHERS) that is set
    overrides its one field.  This lets a deployment keep a shared URL and
    change, say, only the password.

    Empty values count as unset (for everything but the credentials, so do
    whitespace-only values; surrounding whitespace is stripped from them).
    Note that ``ConnectionSettings`` prefers a socket path over host/port.
    Returns only the keys that were set; ``environ`` defaults to ``os.environ``.
    Raises :class:`ConfigurationError` naming the variable at fault.
    """
    env = os.environ if environ is None else environ
    settings: dict[str, object] = {}
    url = env.get("REDIS_URL", "")
    if url.strip():
        try:
            settings.update(parse_url(url))
        except ConfigurationError as exc:
            raise ConfigurationError(f"REDIS_URL: {exc}") from None
    for variable, key, convert, strip in _ENV_VARIABLES:
        raw = env.get(variable, "")
        text = raw.strip() if strip else raw
        if text:
            settings[key] = convert(text, variable)
    _sentinel_from_env(env, settings)
    _cluster_from_env(env, settings)
    return settings


def _env_addresses(
    env: Mapping[str, str], variable: str, switch: str, what: str, default_port: int
) -> tuple[tuple[str, int], ...]:
    """The ``host:port,host:port`` list in ``variable`` (ports default to
    ``default_port``), which ``switch`` being true makes required."""
    listed = env.get(variable, "").strip()
    if not listed:
        raise ConfigurationError(
            f"{switch} is true but {variable} is empty: give host:port,host:port of {what}"
        )
    addresses = []
    for item in listed.split(","):
        try:
            parsed = _parse_hostport(item.strip())
        except ConfigurationError as exc:
            raise ConfigurationError(f"{variable}: {exc}") from None
        addresses.append((str(parsed["host"]), int(parsed.get("port", default_port))))  # type: ignore[call-overload]
    return tuple(addresses)


def _cluster_from_env(env: Mapping[str, str], settings: dict[str, object]) -> None:
    """REDIS_USE_CLUSTERS=true with REDIS_CLUSTERS=host:port,host:port (and
    REDIS_CLUSTERS_PASSWORD): seed 003's layout for a Redis Cluster."""
    use = env.get("REDIS_USE_CLUSTERS", "").strip()
    if not (_env_bool(use, "REDIS_USE_CLUSTERS") if use else False):
        return
    settings["cluster_nodes"] = _env_addresses(
        env, "REDIS_CLUSTERS", "REDIS_USE_CLUSTERS", "some cluster nodes", 6379)
    for key in ("host", "port", "db", "unix_socket_path"):
        settings.pop(key, None)
    password = env.get("REDIS_CLUSTERS_PASSWORD", "")
    if password:
        settings["password"] = password


def _sentinel_from_env(env: Mapping[str, str], settings: dict[str, object]) -> None:
    """REDIS_USE_SENTINEL=true with REDIS_SENTINELS=host:port,host:port (and
    REDIS_SENTINEL_SERVICE_NAME): the layout of seed 003's modules. Without
    REDIS_USE_SENTINEL (or with it false) the REDIS_SENTINEL_* variables are
    left out, so that a deployment can keep them and switch Sentinel off."""
    use = env.get("REDIS_USE_SENTINEL", "").strip()
    enabled = _env_bool(use, "REDIS_USE_SENTINEL") if use else False
    if not enabled:
        for key in ("service_name", "sentinel_username", "sentinel_password",
                    "sentinel_socket_timeout"):
            if "sentinels" not in settings:
                settings.pop(key, None)
        return
    settings["sentinels"] = _env_addresses(
        env, "REDIS_SENTINELS", "REDIS_USE_SENTINEL", "the Sentinels", 26379)
    if "service_name" not in settings:
        raise ConfigurationError(
            "REDIS_USE_SENTINEL is true but REDIS_SENTINEL_SERVICE_NAME is not set: the name "
            "the Sentinels monitor the primary under (e.g. mymaster)"
        )
