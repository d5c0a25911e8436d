"""The distill path's common lines read straight into `ChangeEvent`s, in one pass over each change.

`sources.change_events_in_text(lazy=True)` used to parse a line into lazily decoded dicts
(`lazy_ejson.loads_change_line`, walking a table of shapes) and then validate those dicts
(`sources.change_event`): two generic passes over each change (plus a `"$` search that stopped
at every quote of a line without wrappers). `change_events_of_line` does both in one, ~1.5 µs
per event less in `make bench`, for the three shapes a stream is made of (a raw change
event, an EventBridge event, a DocumentDB batch), decoding exactly what the general route
decodes (each envelope member with `lazy_ejson`'s `_decode`, the documents left as
`LazyDocument`s, the unread members left as parsed).

It answers only when the whole line is well formed; anything else (a failed check, a malformed
wrapper, another shape, text orjson reads differently from `json`) answers None, and the caller
takes the general route, which gives that line's values or errors exactly as before.
`tests/unit/test_perf_change_line.py` compares the two routes line by line.
"""

from __future__ import annotations

from typing import Any

import orjson

from distiller.core.ejson import WRAPPER_KEYS, _object_id
from distiller.core.lazy_ejson import _DIGITS, _LONG_NUMBER, ExtendedJSONError, LazyDocument, _decode
from distiller.core.model import ChangeEvent, RecordError

#: The prefix of an Atlas trigger's EventBridge detail-type, before `<database>.<collection>`.
EVENTBRIDGE_DETAIL_TYPE_PREFIX = "MongoDB Database Trigger for "

#: Change-event members this reader handles by name; any other member holding an object or an
#: array is decoded whole, as the general route decodes it.
_READ: frozenset[str] = frozenset(("_id", "operationType", "ns", "documentKey", "updateDescription"))
_DOCUMENTS = ("fullDocument", "fullDocumentBeforeChange")
#: Left as parsed by the general route too (`lazy_ejson._CHANGE_READ`): never decoded.
_UNREAD = frozenset(("clusterTime", "wallTime", "lsid", "txnNumber"))
_KNOWN = _READ | _UNREAD | frozenset(_DOCUMENTS)
#: Keys whose presence sends a raw change the general way (shapes of their own there).
_OTHER_SHAPES = frozenset(("Records", "body", "eventSource", "events", "detail"))
_CONTAINERS = (dict, list)
_DOCUMENT_OPERATIONS_WITH_ID = frozenset(("insert", "update", "replace", "delete"))


_ABSENT = object()


class _Fallback(Exception):
    """The line is not one this reader vouches for: the general route reads it."""


def change_events_of_line(text: str | bytes, origin: str) -> list[ChangeEvent | RecordError] | None:
    """The change events of one line, or None when the line should take the general route."""
    data = text.encode("utf-8", "surrogatepass") if type(text) is str else bytes(text)
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if WRAPPER_KEYS is None or type(obj) is not dict or _LONG_NUMBER in data.translate(_DIGITS):
        return None
    # No `"$` anywhere: no wrapper to decode, and the general route leaves the documents plain dicts.
    # (`$` first: one memchr, where a search for `"$` steps through every quote of a plain line.)
    reader = _LAZY if b"$" in data and b'"$' in data else _PLAIN
    if reader.lazy and not WRAPPER_KEYS.isdisjoint(obj):
        return None
    try:
        if "operationType" in obj and _OTHER_SHAPES.isdisjoint(obj):
            return [reader.change(obj, origin, "change-stream", None)]
        if "detail" in obj and "detail-type" in obj and _OTHER_SHAPES.isdisjoint(obj.keys() - {"detail"}):
            return [reader.eventbridge(obj, origin)]
        if obj.get("eventSource") == "aws:docdb" and "Records" not in obj and "body" not in obj:
            return reader.docdb(obj, origin)
    except (_Fallback, ExtendedJSONError):  # a document's `_id` read as the id: the general route words it
        return None
    return None


class _Reader:
    """One line's reading: `lazy` when the line holds a `"$` (wrappers may be anywhere)."""

    __slots__ = ("lazy",)

    def __init__(self, lazy: bool) -> None:
        self.lazy = lazy

    def eventbridge(self, obj: dict[str, Any], origin: str) -> ChangeEvent:
        self.decode_others(obj, "detail")
        detail_type = obj["detail-type"]
        hint = None
        if type(detail_type) is str and detail_type.startswith(EVENTBRIDGE_DETAIL_TYPE_PREFIX):
            hint = detail_type[len(EVENTBRIDGE_DETAIL_TYPE_PREFIX) :].partition(".")[2] or None
        return self.change(self.envelope(obj["detail"]), origin, "eventbridge", hint)

    def docdb(self, obj: dict[str, Any], origin: str) -> list[ChangeEvent | RecordError]:
        events = obj.get("events")
        if type(events) is not list:
            raise _Fallback
        self.decode_others(obj, "events")
        changes: list[ChangeEvent | RecordError] = []
        for index, entry in enumerate(events):
            entry = self.envelope(entry)
            self.decode_others(entry, "event")
            event = self.envelope(entry.get("event"))
            changes.append(self.change(event, f"{origin} events[{index}]", "docdb", None))
        return changes

    def envelope(self, value: Any) -> dict[str, Any]:
        """An object the general route walks into (not a wrapper), else `_Fallback`."""
        if type(value) is not dict or (self.lazy and not WRAPPER_KEYS.isdisjoint(value)):  # type: ignore[union-attr]
            raise _Fallback
        return value  # type: ignore[no-any-return]

    def decode_others(self, obj: dict[str, Any], kept: str) -> None:
        """Decode every object or array member but `kept` in place, as the general route does."""
        if self.lazy:
            for key, value in obj.items():
                if value and key != kept and type(value) in _CONTAINERS:  # an empty one decodes to itself
                    obj[key] = _decoded(value)

    def document_key(self, key: dict[str, Any]) -> Any:
        """`documentKey._id` when it is text, a number or `{"$oid": text}` (else `_ABSENT`)."""
        value = key.get("_id", _ABSENT)
        kind = type(value)
        if kind is str or kind is int or value is None:
            return value
        if kind is dict and self.lazy and len(value) == 1 and type(value.get("$oid")) is str:
            try:
                return _object_id(value["$oid"])
            except Exception as exc:  # the general route reports it
                raise _Fallback from exc
        return _ABSENT

    def member(self, value: Any) -> Any:
        """An envelope member the general route decodes whole."""
        return _decoded(value) if self.lazy and type(value) in _CONTAINERS else value

    def document(self, value: Any, where: str) -> Any:
        """A document member as the general route leaves it: None, or an object (lazy if the line is)."""
        if value is None:
            return None
        if type(value) is not dict:
            raise _Fallback  # the general route rejects it, or decodes a wrapper there
        if not self.lazy:
            return value
        if not WRAPPER_KEYS.isdisjoint(value):  # type: ignore[union-attr]
            raise _Fallback
        return LazyDocument(value, where)

    def change(self, doc: dict[str, Any], origin: str, source: str, hint: str | None) -> ChangeEvent:
        """`sources.change_event` over a change decoded as `loads_change_line` decodes it; any check
        that would fail raises `_Fallback` (the general route words the error)."""
        if self.lazy and not _KNOWN.issuperset(doc):
            for key in doc.keys() - _KNOWN:
                doc[key] = self.member(doc[key])
        operation = doc.get("operationType")
        if type(operation) is not str or not operation:
            raise _Fallback
        # `_id`, `ns` and `documentKey` as Mongo writes them are read without `_decode`'s walk:
        # `{"_data": text}` and `{"db": text, "coll": text}` hold no wrapper, and a `{"$oid": text}`
        # id is what the hook builds from it (`_object_id`). Any other shape is decoded whole.
        holder = doc.get("_id")
        token = holder.get("_data") if type(holder) is dict and len(holder) == 1 else None
        if type(token) is not str:
            holder = self.member(holder)
            token = holder.get("_data") if type(holder) is dict else None
        if type(token) is not str or not token or not token.isascii() or not token.isprintable():
            raise _Fallback
        ns = doc.get("ns")
        collection = ns.get("coll") if type(ns) is dict and len(ns) == 2 else None
        if type(collection) is not str or type(ns.get("db")) is not str:  # type: ignore[union-attr]
            ns = self.member(ns)
            if isinstance(ns, dict) and type(ns) is not dict:
                raise _Fallback  # a mapping json_util built: the general route reads it
            collection = ns.get("coll") if type(ns) is dict else None
        collection = collection or hint
        if type(collection) is not str or not collection:
            raise _Fallback
        key = doc.get("documentKey")
        document_id = self.document_key(key) if type(key) is dict and len(key) == 1 else _ABSENT
        if document_id is _ABSENT:
            key = self.member(key)
            if isinstance(key, dict) and type(key) is not dict:
                raise _Fallback
            document_id = key.get("_id") if type(key) is dict else None
        full_document = doc.get("fullDocument")
        if full_document is not None:
            full_document = self.document(full_document, "fullDocument")
        before = doc.get("fullDocumentBeforeChange")
        if before is not None:
            before = self.document(before, "fullDocumentBeforeChange")
        if document_id is None and full_document is not None:
            document_id = full_document.get("_id")
        if document_id is None and operation in _DOCUMENT_OPERATIONS_WITH_ID:
            raise _Fallback
        updated: Any = {}
        removed: tuple[str, ...] = ()
        fields: Any = None
        description = doc.get("updateDescription")
        if operation == "update" or description is not None:
            if operation == "update" or type(description) is dict:
                description = self.envelope(description)
                self.decode_others(description, "updatedFields")
                fields = self.document(description.get("updatedFields"), "updateDescription.updatedFields")
            else:
                description = self.member(description)
        if operation == "update":
            updated = {} if fields is None else fields
            raw_removed = description.get("removedFields")
            if type(raw_removed) is list:
                if raw_removed and not all(type(path) is str for path in raw_removed):
                    raise _Fallback
                removed = tuple(raw_removed)
            elif raw_removed is not None:
                raise _Fallback
        # Positionally, in `ChangeEvent`'s field order (keywords cost more per event).
        return ChangeEvent(
            token, operation, collection, document_id, full_document, before, updated, removed, source, origin
        )


_LAZY, _PLAIN = _Reader(True), _Reader(False)


def _decoded(value: Any) -> Any:
    try:
        return _decode(value)
    except Exception as exc:  # the general route reports it
        raise _Fallback from exc
