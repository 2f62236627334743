"""Cache keys for decorated functions.

A key is a readable prefix (the function's module and qualified name, or the
``namespace`` given to the decorator) and either a template the user wrote
(``"user:{user_id}"``) or a hash of the call's arguments. The arguments are
bound to the signature with defaults applied, so ``f(1)``, ``f(x=1)`` and a
default of 1 are the same call, and hashed through a canonical, type-tagged
encoding: ``1``, ``1.0``, ``True`` and ``"1"`` never share a key, and neither
do ``("a", "b")`` and ``("a,b",)``. No ``str()`` or ``repr()`` is involved: an
argument with no stable encoding (a database session, a lock) is refused at
call time with a message that says to give ``key=`` or exclude it.

Parameters that a framework injects and that say nothing about the result
are left out by default: ``self`` and ``cls``, FastAPI/Starlette ``Request``,
``Response``, ``BackgroundTasks``, ``WebSocket``, and anything declared with
``Depends(...)``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import hashlib
import inspect
import string
import typing
import uuid
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any

__all__ = ["KeyBuilder", "UnstableArgument", "canonical_digest"]

#: Parameter names left out of keys unless named in the template.
IMPLICIT_PARAMETERS = frozenset({"self", "cls"})

#: Classes (by module prefix and name) injected by web frameworks.
FRAMEWORK_TYPES = frozenset(
    {
        ("starlette", "Request"),
        ("starlette", "Response"),
        ("starlette", "BackgroundTasks"),
        ("starlette", "WebSocket"),
        ("starlette", "HTTPConnection"),
        ("fastapi", "Request"),
        ("fastapi", "Response"),
        ("fastapi", "BackgroundTasks"),
        ("fastapi", "WebSocket"),
        ("fastapi", "HTTPConnection"),
    }
)


class UnstableArgument(TypeError):
    """An argument has no stable encoding, so it cannot be part of a cache key."""


def _annotated_with(annotation: Any, types_: tuple[type, ...]) -> bool:
    """True when the annotation names one of types_ (also inside Optional,
    unions and Annotated)."""
    if not types_ or annotation is None:
        return False
    if isinstance(annotation, type):
        return issubclass(annotation, types_)
    return any(_annotated_with(arg, types_) for arg in typing.get_args(annotation))


def _is_framework_type(tp: Any) -> bool:
    if not isinstance(tp, type):
        return False
    for klass in tp.__mro__:
        root = klass.__module__.split(".", 1)[0]
        if (root, klass.__name__) in FRAMEWORK_TYPES:
            return True
    return False


def _is_depends(marker: Any) -> bool:
    """A FastAPI ``Depends(...)`` marker (checked by name: fastapi need not be installed)."""
    klass = type(marker)
    return klass.__name__ in ("Depends", "Security") and klass.__module__.startswith("fastapi")


def _injected(parameter: inspect.Parameter, hints: Mapping[str, Any]) -> bool:
    if _is_depends(parameter.default):
        return True
    annotation = hints.get(parameter.name, parameter.annotation)
    if typing.get_origin(annotation) is typing.Annotated:
        base, *metadata = typing.get_args(annotation)
        if any(_is_depends(m) for m in metadata):
            return True
        annotation = base
    return _is_framework_type(annotation)


class _Encoder:
    """Feeds a canonical, type-tagged encoding of values to a hash."""

    def __init__(self) -> None:
        self.hash = hashlib.blake2b(digest_size=16)

    def put(self, tag: bytes, data: bytes = b"") -> None:
        # Length-prefixed, so no two different sequences of parts write the same bytes.
        self.hash.update(tag + len(data).to_bytes(8, "little") + data)

    def value(self, value: Any, where: str) -> None:
        if value is None:
            self.put(b"N")
        elif value is True or value is False:
            self.put(b"B", b"1" if value else b"0")
        elif isinstance(value, enum.Enum):
            self.put(b"E", _qualified(type(value)).encode())
            self.value(value.value, where)
        elif isinstance(value, int):
            self.put(b"I", str(int(value)).encode())
        elif isinstance(value, float):
            self.put(b"F", float(value).hex().encode())
        elif isinstance(value, str):
            self.put(b"S", value.encode("utf-8", "surrogatepass"))
        elif isinstance(value, (bytes, bytearray, memoryview)):
            self.put(b"Y", bytes(value))
        elif isinstance(value, (list, tuple)):
            self.put(b"L" if isinstance(value, list) else b"T", str(len(value)).encode())
            for index, item in enumerate(value):
                self.value(item, f"{where}[{index}]")
        elif isinstance(value, Mapping):
            items = sorted(
                (canonical_digest(k, f"{where} key"), k, v) for k, v in value.items()
            )
            self.put(b"D", str(len(items)).encode())
            for digest, _, item in items:
                self.put(b"K", digest)
                self.value(item, f"{where}[...]")
        elif isinstance(value, (set, frozenset)):
            digests = sorted(canonical_digest(item, f"{where} item") for item in value)
            self.put(b"Z", b"".join(digests))
        elif isinstance(value, dt.datetime):
            self.put(b"t", value.isoformat().encode())
        elif isinstance(value, (dt.date, dt.time, dt.timedelta, uuid.UUID, Decimal)):
            self.put(b"V", f"{type(value).__name__}:{value}".encode())
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            self.put(b"C", _qualified(type(value)).encode())
            for field in dataclasses.fields(value):
                self.put(b"K", field.name.encode())
                self.value(getattr(value, field.name), f"{where}.{field.name}")
        elif hasattr(type(value), "model_dump_json") and hasattr(type(value), "__pydantic_fields__"):
            self.put(b"P", _qualified(type(value)).encode())
            self.put(b"J", value.model_dump_json().encode())
        else:
            raise UnstableArgument(
                f"{where} is a {type(value).__qualname__}, which has no stable encoding for a "
                "cache key; give the decorator key= (a template such as 'user:{user_id}') or "
                "leave the argument out with exclude=[...]"
            )


def _default_prefix(func: Callable[..., Any]) -> str:
    """Module and qualified name; lambdas and nested functions also get their
    line, since several of them can share one qualified name."""
    name = f"{func.__module__}.{func.__qualname__}"
    if "<lambda>" in name or "<locals>" in name:
        code = getattr(func, "__code__", None)
        if code is not None:
            name += f"@{code.co_firstlineno}"
    return name


def _closure_digest(func: Callable[..., Any]) -> str:
    """For a closure, a digest of the data it closes over: make_adder(1) and
    make_adder(10) must not share entries. Objects with no stable encoding
    (the cache itself, a session, an event) are left out, so closures made by
    an app factory in several workers still share their entries."""
    cells = getattr(func, "__closure__", None)
    if not cells:
        return ""
    encoder = _Encoder()
    for name, cell in zip(func.__code__.co_freevars, cells):
        try:
            value = cell.cell_contents
        except ValueError:  # not yet bound
            continue
        if isinstance(value, type) or callable(value):
            continue
        try:
            probe = _Encoder()
            probe.value(value, name)
        except UnstableArgument:
            continue
        encoder.put(b"A", name.encode())
        encoder.value(value, name)
    return encoder.hash.hexdigest()[:16]


def _qualified(klass: type) -> str:
    return f"{klass.__module__}.{klass.__qualname__}"


def canonical_digest(value: Any, where: str = "the value") -> bytes:
    """The 16-byte digest of value's canonical encoding."""
    encoder = _Encoder()
    encoder.value(value, where)
    return encoder.hash.digest()


class _GlobSafeFormatter(string.Formatter):
    def format_field(self, value: Any, format_spec: str) -> str:
        text = super().format_field(value, format_spec)
        return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class KeyBuilder:
    """Builds the cache key of each call of one function."""

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        key: str | Callable[..., str] | None = None,
        namespace: str | None = None,
        exclude: Iterable[str] = (),
        exclude_types: Iterable[type] = (),
    ) -> None:
        self.signature = inspect.signature(func)
        try:
            hints = typing.get_type_hints(func, include_extras=True)
        except Exception:  # unresolvable forward references: go by the raw annotations
            hints = {}
        self.namespace = namespace
        self.prefix = namespace or _default_prefix(func)
        self.closure = _closure_digest(func) if namespace is None else ""
        self.template = key if isinstance(key, str) else None
        self.key_function = key if callable(key) else None
        exclude = set(exclude)
        unknown = exclude - set(self.signature.parameters)
        if unknown:
            raise ValueError(
                f"exclude names {sorted(unknown)}, which {func.__qualname__} has no parameter for"
            )
        self.excluded_types = tuple(exclude_types)
        self.excluded = {
            name
            for name, parameter in self.signature.parameters.items()
            if name in exclude
            or name in IMPLICIT_PARAMETERS
            or _injected(parameter, hints)
            or _annotated_with(hints.get(name), self.excluded_types)
        }
        if self.template is not None:
            self._check_template(func, self.template)

    def _check_template(self, func: Callable[..., Any], template: str) -> None:
        """Refuses, at decoration time, a template naming something the function lacks."""
        try:
            fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
        except ValueError as exc:
            raise ValueError(f"bad key template {template!r}: {exc}") from None
        for name in fields:
            root = name.split(".", 1)[0].split("[", 1)[0]
            if root not in self.signature.parameters:
                raise ValueError(
                    f"key template {template!r} names {root!r}, which is not a parameter of "
                    f"{func.__qualname__}{self.signature}"
                )
            if not root:
                raise ValueError(
                    f"key template {template!r} has a positional field; name the parameter "
                    "instead (e.g. '{user_id}')"
                )

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> inspect.BoundArguments:
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return bound

    def key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        if self.key_function is not None:
            return f"{self.prefix}:{self.key_function(*args, **kwargs)}"
        bound = self.bind(args, kwargs)
        if self.template is not None:
            return self._scoped(self.template.format_map(bound.arguments))
        encoder = _Encoder()
        for name, value in bound.arguments.items():
            if name in self.excluded or (
                self.excluded_types and isinstance(value, self.excluded_types)
            ):
                continue
            encoder.put(b"A", name.encode())
            encoder.value(value, f"argument {name!r}")
        if self.closure:
            encoder.put(b"C", self.closure.encode())
        return f"{self.prefix}:{encoder.hash.hexdigest()}"

    def render(self, template: str, args: tuple[Any, ...], kwargs: dict[str, Any],
               *, pattern: bool = False) -> str:
        """A key template filled in with a call's bound arguments (for invalidate).
        For a pattern template, glob characters in the arguments are escaped:
        update_user("*") must not clear every user."""
        arguments = self.bind(args, kwargs).arguments
        formatter = _GlobSafeFormatter() if pattern else string.Formatter()
        return self._scoped(formatter.vformat(template, (), arguments))

    def _scoped(self, rendered: str) -> str:
        """A template's key: as written, inside the decorator's namespace if it has one."""
        return f"{self.namespace}:{rendered}" if self.namespace else rendered
