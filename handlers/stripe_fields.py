"""Typed reads of Stripe JSON values that name the offending field, and the ``PayloadError`` they raise.

Strict about what the reducer needs, tolerant of the rest: a field Stripe marks nullable or
expandable that comes in an unexpected shape (a list object without ``data``, an object that is
not one, metadata that is not a string map), or an enum value the worker does not know, is read as
well as it can be and noted as an ``Unexpected`` shape on the reader (the shell logs and counts
those). Only what the reducer cannot do without raises ``PayloadError``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

# JSON objects and arrays are dicts and lists: the concrete types first, so the common case
# skips the abstract-class check (a Python-level call each, ten per event).
MAPPINGS = (dict, Mapping)
_SEQUENCES = (list, tuple, Sequence)

NOT_A_STRIPE_EVENT = "not_a_stripe_event"
MALFORMED_EVENT = "malformed_event"

# Metadata keys the worker reads; other keys are the app's business and are not checked.
_METADATA_KEYS = ("workspace_id", "custom_contract", "price_id", "quantity")
# Latest unix time datetime can represent (9999-12-31T23:59:59Z); Stripe's are far below it.
MAX_TIMESTAMP = 253_402_300_799


class PayloadError(ValueError):
    """A payload the worker cannot use.

    ``code`` is machine-readable: ``not_a_stripe_event`` (the envelope is not a Stripe event) or
    ``malformed_event`` (a handled event whose object lacks or mistypes a field). ``field`` is
    the dotted path of the offending field, when there is one.
    """

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.field = field

    @property
    def message(self) -> str:
        return str(self)


@dataclass(frozen=True)
class Unexpected:
    """A shape the worker read around: the dotted path and what was odd about it."""

    path: str
    problem: str


def workspace_of(metadata: Mapping[str, str]) -> str | None:
    """The ``workspace_id`` in ``metadata``, or None if it is absent or empty."""
    value = metadata.get("workspace_id")
    return value if value else None


def malformed(field: str, problem: str) -> PayloadError:
    """The ``malformed_event`` error for ``field`` (a dotted path)."""
    return PayloadError(MALFORMED_EVENT, f"malformed event: `{field}` {problem}", field)


def timestamp(value: int, field: str) -> datetime:
    """The aware UTC datetime of a unix timestamp, or a ``malformed_event`` error naming ``field``."""
    if not 0 <= value <= MAX_TIMESTAMP:
        raise malformed(field, f"is out of range: {value}")
    return datetime.fromtimestamp(value, tz=UTC)


def json_type(value: object) -> str:
    """The JSON type of ``value`` as an error message names it (``"an object"``, ``"null"`` …)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, MAPPINGS):
        return "an object"
    if isinstance(value, _SEQUENCES):
        return "an array"
    return type(value).__name__


class FieldReader:
    """Typed access to one JSON object, naming the field's full path in every error."""

    __slots__ = ("_data", "_path", "unexpected")

    def __init__(
        self, data: Mapping[str, Any], path: str, unexpected: list[Unexpected] | None = None
    ) -> None:
        self._data = data
        self._path = path
        # Shared by the readers of nested objects: one list per payload read.
        self.unexpected: list[Unexpected] = [] if unexpected is None else unexpected

    def path(self, key: str) -> str:
        return f"{self._path}.{key}" if self._path else key

    def child(self, data: Mapping[str, Any], path: str) -> FieldReader:
        return FieldReader(data, path, self.unexpected)

    def note(self, path: str, problem: str) -> None:
        """Record a shape read around (``path`` is a full dotted path)."""
        self.unexpected.append(Unexpected(path, problem))

    def enum(self, key: str, known: frozenset[str]) -> str:
        """A required string of an enum: a value the worker does not know is kept as it came."""
        value = self.req_str(key)
        if value not in known:
            self.note(self.path(key), f"unknown value {value!r}")
        return value

    def expect_object(self, expected: str) -> None:
        kind = self._data.get("object")
        if kind is not None and kind != expected:
            raise malformed(self.path("object"), f"must be {expected!r} for this event type, got {kind!r}")

    def opt_raw(self, key: str) -> Any:
        """The value at ``key`` as it came (None when absent)."""
        return self._data.get(key)

    def req_str(self, key: str) -> str:
        value = self._data.get(key)
        if not isinstance(value, str) or not value:
            raise malformed(self.path(key), f"must be a non-empty string, got {json_type(value)}")
        return value

    def opt_str(self, key: str) -> str | None:
        value = self._data.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise malformed(self.path(key), f"must be a string or null, got {json_type(value)}")
        return value or None

    def req_int(self, key: str) -> int:
        value = self._data.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise malformed(self.path(key), f"must be an integer, got {json_type(value)}")
        return value

    def opt_int(self, key: str, minimum: int | None = None) -> int | None:
        value = self._data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise malformed(self.path(key), f"must be an integer or null, got {json_type(value)}")
        if minimum is not None and value < minimum:
            raise malformed(self.path(key), f"must be >= {minimum}, got {value}")
        return value

    def opt_bool(self, key: str) -> bool:
        value = self._data.get(key)
        if value is None:
            return False
        if not isinstance(value, bool):
            raise malformed(self.path(key), f"must be true or false, got {json_type(value)}")
        return value

    def req_ts(self, key: str) -> datetime:
        value = self.req_int(key)
        if 0 <= value <= MAX_TIMESTAMP:  # the field's path is only built for an error
            return datetime.fromtimestamp(value, tz=UTC)
        return timestamp(value, self.path(key))

    def opt_ts(self, key: str) -> datetime | None:
        value = self._data.get(key)
        if value.__class__ is int and 0 <= value <= MAX_TIMESTAMP:  # the usual case, checked first
            return datetime.fromtimestamp(value, tz=UTC)
        value = self.opt_int(key)
        return None if value is None else timestamp(value, self.path(key))

    def opt_id(self, key: str) -> str | None:
        """A reference: an id string, an expanded object with an ``id``, or null."""
        value = self._data.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            if not value:
                raise malformed(self.path(key), "must not be an empty string")
            return value
        if isinstance(value, MAPPINGS):
            return self.child(value, self.path(key)).req_str("id")
        raise malformed(self.path(key), f"must be an id or an expanded object, got {json_type(value)}")

    def req_id(self, key: str) -> str:
        value = self.opt_id(key)
        if value is None:
            raise malformed(self.path(key), "is required (an id or an expanded object)")
        return value

    def reader_or_none(self, key: str) -> FieldReader | None:
        """The nested object at ``key`` if it is an object (an id string or null gives None;
        anything else is noted and read as null)."""
        value = self._data.get(key)
        if isinstance(value, MAPPINGS):
            return self.child(value, self.path(key))
        if value is not None and not isinstance(value, str):
            self.note(self.path(key), f"expected an object, an id or null, got {json_type(value)}")
        return None

    def metadata(self, key: str) -> Mapping[str, str]:
        """The metadata keys the worker reads (Stripe metadata values are strings; a value that is
        not one is noted and left out)."""
        value = self._data.get(key)
        if value is None:
            return {}
        if not isinstance(value, MAPPINGS):
            self.note(self.path(key), f"expected an object or null, got {json_type(value)}")
            return {}
        out = {}
        for name in _METADATA_KEYS:
            item = value.get(name)
            if item is None:
                continue
            if not isinstance(item, str):
                self.note(f"{self.path(key)}.{name}", f"expected a string, got {json_type(item)}")
                continue
            out[name] = item
        return out

    def list_items(self, key: str, *, required: bool, list_object: bool = True) -> list[FieldReader]:
        """Elements of a Stripe list object (``{"object": "list", "data": [...]}``) or array.

        A ``required`` list is read strictly. An optional one is read around: a list object without
        ``data`` (``"lines": {}`` in some captured payloads), a bare array where a list object is
        usual, or an element that is not an object is noted and skipped."""
        value = self._data.get(key)
        path = self.path(key)
        if value is None:
            if required:
                raise malformed(path, "is required")
            return []
        if list_object:
            if isinstance(value, MAPPINGS):
                value, path = value.get("data"), f"{path}.data"
            elif required or not _is_array(value):
                return self._odd_list(path, required, f"must be a list object, got {json_type(value)}")
            else:
                self.note(path, "expected a list object, got an array")
        if not _is_array(value):
            return self._odd_list(path, required, f"must be an array, got {json_type(value)}")
        out = []
        for index, element in enumerate(value):
            if not isinstance(element, MAPPINGS):
                problem = f"must be an object, got {json_type(element)}"
                self._odd_list(f"{path}[{index}]", required, problem)
                continue
            out.append(self.child(element, f"{path}[{index}]"))
        return out

    def _odd_list(self, path: str, required: bool, problem: str) -> list[FieldReader]:
        if required:
            raise malformed(path, problem)
        self.note(path, problem.replace("must be", "expected", 1))
        return []


def _is_array(value: object) -> bool:
    return not isinstance(value, str | bytes) and isinstance(value, _SEQUENCES)


def short_repr(value: object) -> str:
    """A value as an error message quotes it: its repr, cut to 60 characters (never the payload)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# Stripe event ids are short; the inbox key and the logs refuse anything longer.
MAX_EVENT_ID_LENGTH = 255


def event_id_and_type(
    raw: Mapping[str, Any], fail: Callable[[str | None, str], PayloadError]
) -> tuple[str, str]:
    """The envelope's ``id`` (``evt_…``, bounded) and ``type`` (non-empty), for snapshot events and
    thin notifications alike; ``fail`` builds the error of the envelope being read."""
    event_id = raw.get("id")
    if not isinstance(event_id, str) or not event_id.startswith("evt_"):
        raise fail("id", f"must be a string starting with 'evt_', got {short_repr(event_id)}")
    if len(event_id) > MAX_EVENT_ID_LENGTH:
        raise fail("id", f"must be at most {MAX_EVENT_ID_LENGTH} characters, got {len(event_id)}")
    event_type = raw.get("type")
    if not isinstance(event_type, str) or not event_type.strip():
        raise fail("type", f"must be a non-empty string, got {short_repr(event_type)}")
    return event_id, event_type
