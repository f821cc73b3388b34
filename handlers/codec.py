"""Dataclasses to and from JSON-able values (for jsonb columns, the audit log and the API).

Datetimes become ISO-8601 strings in UTC, frozensets sorted lists, tuples lists. ``from_jsonable``
rebuilds a dataclass from the same shape using its type hints.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import cache
from typing import Any, TypeVar

T = TypeVar("T")


@cache
def field_names(cls: type) -> tuple[str, ...]:
    """A dataclass's field names, looked up once per class (``dataclasses.fields`` is slow)."""
    return tuple(f.name for f in dataclasses.fields(cls))


_PLAIN = frozenset({str, int, bool, float, type(None)})


def to_jsonable(value: Any) -> Any:
    cls = type(value)
    if cls in _PLAIN:
        return value
    return _encoder(cls)(value)


@cache
def _encoder(cls: type) -> Callable[[Any], Any]:
    """How values of ``cls`` encode, decided once per type (every event encodes views and
    snapshots; dispatching on isinstance chains per value was the slow part)."""
    if dataclasses.is_dataclass(cls):
        names = field_names(cls)
        return lambda value: {name: to_jsonable(getattr(value, name)) for name in names}
    if issubclass(cls, datetime):
        return _iso_utc
    if issubclass(cls, frozenset | set):
        return lambda value: sorted(to_jsonable(v) for v in value)
    if issubclass(cls, list | tuple):
        return lambda value: [to_jsonable(v) for v in value]
    if issubclass(cls, Mapping):
        return lambda value: {str(k): to_jsonable(v) for k, v in value.items()}
    return _identity


def _iso_utc(value: datetime) -> str:
    """ISO 8601 in UTC with a ``Z`` (our datetimes are already UTC: no conversion for those)."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat().replace("+00:00", "Z")


def parse_datetime(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)  # Python 3.11 reads a trailing Z as UTC
    if parsed.tzinfo is UTC:
        return parsed
    if parsed.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: only aware UTC datetimes are stored")
    return parsed.astimezone(UTC)


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_jsonable(tp: Any, value: Any) -> Any:
    """Rebuild a value of type ``tp`` (a dataclass, tuple, optional, datetime …) from JSON."""
    return _decoder(tp)(value)


def _identity(value: Any) -> Any:
    return value


@cache
def _decoder(tp: Any) -> Callable[[Any], Any]:
    """A decoder for ``tp`` built once from its type hints (decoding runs for every stored row)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        inner = _decoder(next(a for a in typing.get_args(tp) if a is not type(None)))
        return lambda value: None if value is None else inner(value)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        hints = _hints(tp)
        fields = tuple((name, _decoder(hints[name])) for name in field_names(tp))
        cls = tp
        return lambda value: cls(**{name: dec(value[name]) for name, dec in fields if name in value})
    if tp is datetime:
        return parse_datetime
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            item = _decoder(args[0])
            return lambda value: tuple(item(v) for v in value)
        items = tuple(_decoder(a) for a in args)
        return lambda value: tuple(dec(v) for dec, v in zip(items, value, strict=True))
    if origin is frozenset:
        element = _decoder(typing.get_args(tp)[0])
        return lambda value: frozenset(element(v) for v in value)
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        args = typing.get_args(tp)
        inner = _decoder(args[1]) if args else _identity
        return lambda value: {k: inner(v) for k, v in value.items()}
    return _identity


def load(cls: type[T], value: Mapping[str, Any]) -> T:
    return from_jsonable(cls, value)


def json_int(value: Any) -> int | None:
    """A JSON number that is a whole number, as JSON Schema's ``integer`` counts them (``3`` and
    ``3.0`` alike; never a boolean), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None
