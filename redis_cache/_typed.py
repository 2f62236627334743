"""Typed reads: a decoded JSON value made an instance of the type asked for.

``cache.get(key, model=User)`` returns a ``User``; so do the decorators for a
function annotated ``-> User``. Pydantic models (v2) validate themselves;
when pydantic is installed, any other annotation goes through its
``TypeAdapter``. Without pydantic, dataclasses, enums, datetimes, UUIDs,
Decimals and the generic containers (``list[User]``, ``dict[str, User]``,
``User | None``) are rebuilt here from what the JSON encoder wrote.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import types
import typing
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from .errors import SerializationError

__all__ = ["convert"]

Converter = Callable[[Any], Any]

_converters: dict[Any, Converter] = {}


def convert(model: Any, value: Any) -> Any:
    """Returns value as an instance of model (a class or a typing annotation)."""
    converter = _converters.get(model)
    if converter is None:
        converter = _converters[model] = _converter_for(model)
    try:
        return converter(value)
    except SerializationError:
        raise
    except Exception as exc:
        raise SerializationError(
            f"the stored value does not fit {_name(model)}: {exc}"
        ) from exc


def _name(model: Any) -> str:
    return getattr(model, "__qualname__", None) or repr(model)


def _converter_for(model: Any) -> Converter:
    validate = getattr(model, "model_validate", None)
    if validate is not None:  # a pydantic model
        return validate  # type: ignore[no-any-return]
    adapter = _pydantic_adapter(model)
    if adapter is not None:
        return adapter
    return _plain_converter(model)


def _pydantic_adapter(model: Any) -> Converter | None:
    try:
        from pydantic import TypeAdapter
    except ImportError:
        return None
    try:
        return TypeAdapter(model).validate_python
    except Exception:  # not a type pydantic understands: do it by hand
        return None


def _identity(value: Any) -> Any:
    return value


def _plain_converter(model: Any) -> Converter:
    """A converter built from the annotation alone (no pydantic)."""
    if model is Any or model is object or model is None or model is type(None):
        return _identity
    origin = typing.get_origin(model)
    args = typing.get_args(model)
    if origin is typing.Union or origin is types.UnionType:
        return _union(args)
    if origin in (list, set, frozenset, tuple) or (
        origin is not None and origin.__module__ == "collections.abc"
    ):
        return _sequence(origin, args)
    if origin is dict:
        return _mapping(args)
    if origin is typing.Literal:
        return _identity
    if dataclasses.is_dataclass(model) and isinstance(model, type):
        return _dataclass(model)
    if isinstance(model, type):
        for base, build in _SCALARS:
            if issubclass(model, base):
                return build(model)
    return _identity


def _union(args: tuple[Any, ...]) -> Converter:
    options = [a for a in args if a is not type(None)]
    converters = [_plain_converter(a) for a in options]
    allows_none = len(options) != len(args)

    def convert_union(value: Any) -> Any:
        if value is None and allows_none:
            return None
        errors = []
        for converter in converters:
            try:
                return converter(value)
            except Exception as exc:  # try the next member of the union
                errors.append(exc)
        raise TypeError("; ".join(map(str, errors)) or "no member of the union fits")

    return convert_union


def _sequence(origin: Any, args: tuple[Any, ...]) -> Converter:
    if origin is tuple and args and args[-1] is not Ellipsis:
        items = [_plain_converter(a) for a in args]
        return lambda value: tuple(c(v) for c, v in zip(items, value, strict=True))
    item = _plain_converter(args[0]) if args else _identity
    build: Callable[[Any], Any] = origin if origin in (list, set, frozenset, tuple) else list
    return lambda value: build(item(v) for v in value)


def _mapping(args: tuple[Any, ...]) -> Converter:
    key = _plain_converter(args[0]) if args else _identity
    item = _plain_converter(args[1]) if len(args) > 1 else _identity
    return lambda value: {key(k): item(v) for k, v in value.items()}


def _dataclass(model: type) -> Converter:
    hints = typing.get_type_hints(model)
    fields = [
        (f.name, _plain_converter(hints.get(f.name, Any)))
        for f in dataclasses.fields(model)
        if f.init
    ]

    def build(value: Any) -> Any:
        if not isinstance(value, dict):
            raise TypeError(f"expected an object for {model.__qualname__}, got {value!r:.60}")
        return model(**{name: conv(value[name]) for name, conv in fields if name in value})

    return build


def _from_iso(cls: type) -> Converter:
    return lambda value: value if isinstance(value, cls) else cls.fromisoformat(value)  # type: ignore[attr-defined]


def _from_str(cls: type) -> Converter:
    return lambda value: value if isinstance(value, cls) else cls(str(value))


def _checked(cls: type) -> Converter:
    def check(value: Any) -> Any:
        if cls is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not isinstance(value, cls):
            raise TypeError(f"expected {cls.__name__}, got {type(value).__name__}")
        return value

    return check


_SCALARS: list[tuple[type, Callable[[type], Converter]]] = [
    (enum.Enum, lambda cls: cls),
    (bool, _checked),
    (dt.datetime, _from_iso),
    (dt.date, _from_iso),
    (dt.time, _from_iso),
    (uuid.UUID, _from_str),
    (Decimal, _from_str),
    (int, _checked),
    (float, _checked),
    (str, _checked),
]
