"""Extended JSON decoded when a field is read, not when the line is parsed.

Most of a change event is never read: the reducers, router and payloads look at a dozen fields
of documents that carry a hundred, and decoding every `$oid`/`$date` wrapper with
`bson.json_util` cost more than parsing the text. `loads_lazy` parses with orjson, decodes the
small envelopes at once (the change event's `_id`, `ns`, `documentKey`, ..., the EventBridge and
DocumentDB wrappers), and leaves the documents (`fullDocument`, `fullDocumentBeforeChange`,
`updatedFields`) as `LazyDocument`s: the first read of a top-level field decodes that field's
whole subtree in place, with `ejson`'s hook (so exactly `json_util`'s values), once.

A wrapper nobody reads is never decoded, so a malformed one there no longer rejects the record;
one that is read raises `ExtendedJSONError` naming the field, which the pipeline turns into that
record's `RecordError`. `loads_change_line`, the distill path's reader, also leaves the envelope
members nothing reads (`clusterTime`, `wallTime`, `lsid`, `txnNumber`) as parsed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from distiller.core.ejson import WRAPPER_KEYS, loads, object_hook


class ExtendedJSONError(ValueError):
    """A field that is read holds an Extended JSON wrapper `bson.json_util` cannot decode."""


def _decode(value: Any) -> Any:
    """`value` (orjson's output) decoded bottom-up in place, as `json.loads(object_hook=...)` does."""
    kind = type(value)
    if kind is dict:
        for key, item in value.items():
            if type(item) is dict or type(item) is list:
                value[key] = _decode(item)  # same keys: safe while iterating
        if WRAPPER_KEYS is not None and WRAPPER_KEYS.isdisjoint(value):
            return value  # the hook's own first test, without the call: most objects are plain
        return object_hook(value)
    if kind is list:
        for index, item in enumerate(value):
            if type(item) is dict or type(item) is list:
                value[index] = _decode(item)
    return value


def decode_field(value: Any, where: str) -> Any:
    """`_decode`, with any decoder failure raised as `ExtendedJSONError` naming the field."""
    try:
        return _decode(value)
    except Exception as exc:
        raise _field_error(exc, where) from exc


def _field_error(exc: Exception, where: str) -> ExtendedJSONError:
    if isinstance(exc, RecursionError):
        return ExtendedJSONError(f"{where}: nesting too deep")
    # json_util raises whatever its type decoders raise (InvalidId, InvalidBSON, TypeError, ...).
    return ExtendedJSONError(f"{where}: invalid Extended JSON: {type(exc).__name__}: {exc}")


_ABSENT = object()


class LazyDocument(dict):  # type: ignore[type-arg]
    """A JSON object whose top-level fields are decoded on first read (`[]`, `get`, `items`, ...).

    Reads through the dict's own C fast paths (`dict(doc)`, `{**doc}`, `dict.__getitem__`) would
    see raw wrappers: call `decoded()` before handing the document to code that uses them.
    """

    __slots__ = ("_done", "_where")

    def __init__(self, raw: dict[str, Any], where: str) -> None:
        dict.__init__(self, raw)  # not `super()`: one object less per document
        self._done: set[str] = set()
        self._where = where

    def _read(self, key: Any, value: Any) -> Any:
        """The first read of object or array `key`: its value decoded, and stored in place of the raw one.

        Scalars are never wrappers, so they are returned as they are, with no bookkeeping.
        """
        try:
            value = _decode(value)  # `decode_field`, inlined: one call less on every first read
        except Exception as exc:
            raise _field_error(exc, f"{self._where}.{key}" if self._where else str(key)) from exc
        dict.__setitem__(self, key, value)
        self._done.add(key)
        return value

    def __getitem__(self, key: Any) -> Any:
        value = dict.__getitem__(self, key)
        kind = type(value)
        if (kind is dict or kind is list) and key not in self._done:
            return self._read(key, value)
        return value

    def get(self, key: Any, default: Any = None) -> Any:
        value = dict.get(self, key, _ABSENT)
        if value is _ABSENT:
            return default
        kind = type(value)
        if (kind is dict or kind is list) and key not in self._done:
            return self._read(key, value)
        return value

    def decoded(self) -> dict[str, Any]:
        """A plain dict holding every field decoded (nested lazy documents included)."""
        return {key: _plain_dict(self[key]) for key in dict.keys(self)}

    def items(self) -> Any:  # type: ignore[override]
        return self.decoded().items()

    def values(self) -> Any:  # type: ignore[override]
        return self.decoded().values()

    def __eq__(self, other: object) -> bool:
        return self.decoded() == (other.decoded() if isinstance(other, LazyDocument) else other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = None  # type: ignore[assignment]

    def copy(self) -> dict[str, Any]:
        return self.decoded()

    def __repr__(self) -> str:
        return f"LazyDocument({self.decoded()!r})"

    def __iter__(self) -> Iterator[Any]:
        return dict.__iter__(self)


def _plain_dict(value: Any) -> Any:
    if isinstance(value, LazyDocument):
        return value.decoded()
    if type(value) is list:
        return [_plain_dict(item) for item in value]
    return value


#: A change event's documents: left lazy (`LazyDocument`), each field decoded when first read.
DOCUMENT: dict[str, Any] = {}
#: An envelope member nothing reads, left as orjson parsed it (`loads_change_line`).
UNREAD: dict[str, Any] = {}
#: Where a line's documents sit: key → the shape of its value (`"[]"`: each item of a list). The
#: envelopes around them are small, read by `sources` field by field, and decoded at once.
_CHANGE: dict[str, Any] = {
    "fullDocument": DOCUMENT,
    "fullDocumentBeforeChange": DOCUMENT,
    "updateDescription": {"updatedFields": DOCUMENT},
}
_LINE: dict[str, Any] = {
    **_CHANGE,  # a raw change-stream event
    "detail": _CHANGE,  # EventBridge
    "events": {"[]": {"event": _CHANGE}},  # a DocumentDB batch
}
#: `_CHANGE` and `_LINE` for `loads_change_line`: the change-stream envelope members no ingest
#: path reads (`sources.change_event` keeps none of them) are not decoded. They carry a
#: `$timestamp` and a `$date` in every event: decoding them was ~2 µs of a ~21 µs parse.
_CHANGE_READ: dict[str, Any] = {**_CHANGE, **dict.fromkeys(("clusterTime", "wallTime", "lsid", "txnNumber"), UNREAD)}
_LINE_READ: dict[str, Any] = {
    **_CHANGE_READ,
    "detail": _CHANGE_READ,
    "events": {"[]": {"event": _CHANGE_READ}},
}


def _lazy(value: Any, shape: dict[str, Any], where: str) -> Any:
    """`value` decoded as `ejson.loads` would, except the documents `shape` names, left lazy.

    A wrapper (or anything not an object) where a document or envelope should be is decoded
    whole at once, failing the line as `ejson.loads` would.
    """
    kind = type(value)
    if kind is list and "[]" in shape:
        return [_lazy(item, shape["[]"], where) for item in value]
    assert WRAPPER_KEYS is not None  # `loads_lazy` goes the eager way without the table
    if kind is not dict or not WRAPPER_KEYS.isdisjoint(value):
        return _decode(value)
    if shape is DOCUMENT:
        return LazyDocument(value, where)
    for key, item in value.items():
        inner = shape.get(key)
        if inner is UNREAD:
            continue
        if inner is not None:
            # Paths in errors start at the change event (`fullDocument.buyer`), as `sources`' own do.
            value[key] = _lazy(item, inner, "" if inner is _CHANGE or inner is _CHANGE_READ else _join(where, key))
        elif type(item) is dict or type(item) is list:
            value[key] = _decode(item)
    return value  # not a wrapper (checked above): the hook would return it as it is


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


#: Digits → "0", everything else → " ": a run of 19 digits marks a possible integer beyond 64 bits.
_DIGITS = bytes(48 if 48 <= byte <= 57 else 32 for byte in range(256))
_LONG_NUMBER = b"0" * 19


def loads_lazy(text: str | bytes) -> Any:
    """Parse one JSON line like `ejson.loads`, leaving change-event documents lazily decoded.

    orjson turns an integer beyond 64 bits into a float (json keeps it exact) and rejects some
    text json accepts (NaN, lone surrogates, ...), with other messages: such lines, and any line
    orjson refuses, go through `ejson.loads`, so values and error messages stay json's.
    """
    return _loads(text, _LINE)


def loads_change_line(text: str | bytes) -> Any:
    """`loads_lazy`, except that the envelope members no ingest path reads (`clusterTime`,
    `wallTime`, `lsid`, `txnNumber`) are left as parsed: a malformed wrapper there no longer
    rejects the line. The distill path (`sources.change_events_in_text`) reads lines with it."""
    return _loads(text, _LINE_READ)


def _loads(text: str | bytes, shape: dict[str, Any]) -> Any:
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return loads(text)
    if _LONG_NUMBER in data.translate(_DIGITS):
        return loads(text)
    if WRAPPER_KEYS is None:
        return loads(text)
    if b"$" not in data or b'"$' not in data:  # `$` first: one memchr, not a stop at every quote
        return value  # no wrapper anywhere: orjson's value is json's
    return _lazy(value, shape, "")
