"""A field read for a partner: the plain JSON value at a path, decoding only what is on the path.

Payloads and routing keys copy values out (`plain(value_at(document, path))`); they never need
the BSON types. Through a `LazyDocument`, `value_at` decodes the whole top-level field first
(all of `buyer` to read `buyer.id`), then `plain` turns the `ObjectId` back into its hex string.
`plain_at` walks the parsed JSON as it is and answers a leaf that is a scalar, an already
decoded value or a well-formed `{"$oid": ...}` directly, with the string `plain` would give.
Anything else (another wrapper, an object or array, a malformed `$oid`, a wrapper on the way)
is read the ordinary way, so its value, or its `ExtendedJSONError` naming the field, is the
same as before.

What this no longer checks: a malformed wrapper beside the path in the same top-level field
(`buyer.lastViewedAt` when only `buyer.id` is read) — the choice lazy decoding already made for
fields nobody reads, one level down.
"""

from __future__ import annotations

from typing import Any

from distiller.core.ejson import WRAPPER_KEYS, plain
from distiller.core.lazy_ejson import LazyDocument
from distiller.core.transitions import MISSING, split_path, value_at

#: Leaf types a JSON parser produces that are never wrappers: copied out by `plain` as they are.
_SCALARS = (str, int, float, bool, type(None))


def plain_at(document: Any, path: str) -> Any:
    """`plain(value_at(document, path))`, or `MISSING` where `value_at` answers `MISSING`."""
    return plain_parts(document, split_path(path), path)


def plain_parts(document: Any, parts: tuple[str, ...], path: str) -> Any:
    """`plain_at` with `path` already split into `parts` (`split_path(path)`): field tables compiled
    once (`payloads.FieldTable`, `routing.RoutingFields`) read without splitting or its cache."""
    if WRAPPER_KEYS is None:  # json_util's table unknown: no way to tell a wrapper on the way
        return _ordinary(document, path)
    current = document
    for part in parts:
        kind = type(current)
        if kind is LazyDocument:
            current = dict.get(current, part, MISSING)  # raw, or decoded by an earlier read
        elif kind is dict:
            if not WRAPPER_KEYS.isdisjoint(current):  # a raw wrapper on the way: the hook decides
                return _ordinary(document, path)
            current = current.get(part, MISSING)
        else:
            return _ordinary(document, path)  # lists, other mappings, a value where a path goes on
        if current is MISSING:
            return MISSING
    kind = type(current)
    if kind is str or current is None or kind is bool:
        return current  # what `plain` gives them
    if kind in _SCALARS:
        return plain(current)
    if kind is dict:
        text = oid_text(current)
        return text if text is not None else _ordinary(document, path)
    if kind is list:
        return _ordinary(document, path)
    return plain(current)  # decoded already (ObjectId, datetime, ...)


def oid_text(value: dict[str, Any]) -> str | None:
    """The text `plain` gives for a raw, well-formed `{"$oid": hex}` (lower-case hex), else None."""
    if len(value) == 1:
        text = value.get("$oid")
        if type(text) is str and len(text) == 24:
            try:
                raw = bytes.fromhex(text)
            except ValueError:
                return None
            if len(raw) == 12:  # what `ObjectId(text)` accepts; `str()` of it is lower-case hex
                return text.lower()
    return None


def _ordinary(document: Any, path: str) -> Any:
    value = value_at(document, path)
    return MISSING if value is MISSING else plain(value)
