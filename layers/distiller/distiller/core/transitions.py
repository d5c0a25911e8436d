"""What one change did to a document's fields, read the way Mongo really writes it.

`updateDescription.updatedFields` keys may be the exact field (`dealState.buyer.status`), a
parent set whole (`dealState: {...}`), a descendant (`manualSignatures.1.signedAt` when asking
about `manualSignatures`), or array positions; `removedFields` unsets paths. Inserts and
replaces carry the whole document instead. When a pre-image (`fullDocumentBeforeChange`) is
present, a field written with the value it already had is not a transition.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from typing import Any, Final

from bson import Decimal128

from distiller.core.lazy_ejson import LazyDocument
from distiller.core.model import ChangeEvent


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final = _Missing()
"""A field that is absent (distinct from an explicit `null`)."""


@lru_cache(maxsize=4096)
def split_path(path: str) -> tuple[str, ...]:
    return tuple(path.split("."))


def top_field(path: str) -> str:
    """`dealState` for `dealState.buyer.status`."""
    return split_path(path)[0]


def value_at(document: Any, path: str) -> Any:
    """The value at a dotted path, walking objects and array positions; `MISSING` if absent."""
    current = document
    for part in split_path(path):
        kind = type(current)
        if kind is dict or kind is LazyDocument:  # the common cases first: one lookup
            current = current.get(part, MISSING)
            if current is MISSING:
                return MISSING
        elif isinstance(current, dict):  # LazyDocument and other mappings: their own `[]`
            if part not in current:
                return MISSING
            current = current[part]
        elif isinstance(current, list) and part.isdigit():
            index = int(part)
            if index >= len(current):
                return MISSING
            current = current[index]
        else:
            return MISSING
    return current


class Transitions:
    """Answers "was this field written by the change, to what, and from what" for one change."""

    __slots__ = ("_document", "_removed_by_top", "_written_by_top", "change", "is_insert")

    def __init__(self, change: ChangeEvent, document: dict[str, Any] | None = None) -> None:
        self.change = change
        self.is_insert = change.operation_type == "insert"
        self._document = document if document is not None else change.full_document
        self._written_by_top: dict[str, list[str] | tuple[str]] = {}
        self._removed_by_top: dict[str, list[str] | tuple[str]] = {}
        if change.operation_type == "update":
            # `top_field(key)`, spelt out: one C call per written key instead of two Python ones.
            for key in change.updated_fields:
                self._written_by_top.setdefault(key.partition(".")[0], []).append(key)  # type: ignore[union-attr]
            for key in change.removed_fields:
                self._removed_by_top.setdefault(key.partition(".")[0], []).append(key)  # type: ignore[union-attr]
        else:
            # insert / replace: every top-level field of the new document (and, for a replace
            # with a pre-image, every field it dropped) counts as written.
            document = self._document or {}
            self._written_by_top = {key: (key,) for key in document}
            self._removed_by_top = {key: (key,) for key in change.before or {} if key not in document}

    @property
    def has_pre_image(self) -> bool:
        return self.change.before is not None

    def document_value(self, path: str) -> Any:
        """A field of the document as it is after the change (post-image)."""
        return value_at(self._document, path)

    def written_keys(self) -> list[str]:
        """The keys the change wrote (updatedFields keys; for inserts/replaces, top-level fields)."""
        return [key for keys in self._written_by_top.values() for key in keys]

    def written_fields(self) -> frozenset[str]:
        """Top-level fields the change wrote or removed (a cheap first filter for rules)."""
        return frozenset(self._written_by_top).union(self._removed_by_top)

    def written_tops(self) -> list[str]:
        """`written_fields`, as the two dicts' keys (no set built): the reducer plan's lookup keys."""
        return [*self._written_by_top, *self._removed_by_top]

    def written_paths(self) -> list[str]:
        """Every path the change wrote or removed, as Mongo reported it."""
        return [p for paths in self._written_by_top.values() for p in paths] + [
            p for paths in self._removed_by_top.values() for p in paths
        ]

    def touched(self, path: str) -> bool:
        """Whether the change wrote or removed this field, a parent of it, or something inside it."""
        top = path.partition(".")[0]  # `top_field(path)`, without its two calls
        for key in self._written_by_top.get(top, ()):
            if key == path or path.startswith(key + ".") or key.startswith(path + "."):  # `_related`, inlined
                return True
        removed = self._removed_by_top.get(top)
        return bool(removed) and any(_related(key, path) for key in removed)

    def after(self, path: str) -> Any:
        """The field's value as this change left it (`MISSING` if the change unset it or did not touch it)."""
        top = path.partition(".")[0]  # `top_field(path)`
        written = self._written_by_top.get(top)
        if self.change.operation_type != "update":
            return value_at(self._document, path) if written or self._removed_by_top.get(top) else MISSING
        descendant = False
        for key in written or ():
            if key == path:
                return self.change.updated_fields[key]
            if path.startswith(key + "."):
                return value_at(self.change.updated_fields[key], path[len(key) + 1 :])
            if key.startswith(path + "."):
                descendant = True
        for key in self._removed_by_top.get(top, ()):
            if key == path or path.startswith(key + "."):
                return MISSING
            if key.startswith(path + "."):
                descendant = True
        if descendant:
            if self.change.before is not None:
                # The pre-image plus this change's writes: exactly what this change left. The
                # post-image (updateLookup) may already hold later changes.
                return self._rebuilt(path)
            # Only part of the field was written; the post-image holds the whole of it.
            return value_at(self._document, path)
        return MISSING

    def _rebuilt(self, path: str) -> Any:
        value = copy.deepcopy(value_at(self.change.before, path))
        if value is MISSING:
            return value_at(self._document, path)
        prefix = path + "."
        for key, written in self.change.updated_fields.items():
            if key.startswith(prefix) and not _assign(value, split_path(key[len(prefix) :]), written):
                return value_at(self._document, path)  # a shape the pre-image cannot take: trust the post-image
        for key in self.change.removed_fields:
            if key.startswith(prefix):
                _unset(value, split_path(key[len(prefix) :]))
        return value

    def before(self, path: str) -> Any:
        """The field's value before the change: from the pre-image, `MISSING` on insert or without one."""
        if self.is_insert or self.change.before is None:
            return MISSING
        return value_at(self.change.before, path)

    def changed(self, path: str) -> bool:
        """Touched, and (when a pre-image says so) to a different value than it had."""
        if not self.touched(path):
            return False
        if self.has_pre_image:
            return comparable(self.after(path)) != comparable(self.before(path))
        return True


def _assign(target: Any, parts: tuple[str, ...], value: Any) -> bool:
    """Set `target[parts...] = value` like Mongo's $set (creating objects on the way); False if impossible."""
    for part in parts[:-1]:
        if isinstance(target, dict):
            target = target.setdefault(part, {})
        elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
            target = target[int(part)]
        else:
            return False
    last = parts[-1]
    if isinstance(target, dict):
        target[last] = value
        return True
    if isinstance(target, list) and last.isdigit():
        index = int(last)
        if index < len(target):
            target[index] = value
            return True
        if index == len(target):
            target.append(value)
            return True
    return False


def _unset(target: Any, parts: tuple[str, ...]) -> None:
    parent = value_at(target, ".".join(parts[:-1])) if len(parts) > 1 else target
    if isinstance(parent, dict):
        parent.pop(parts[-1], None)
    elif isinstance(parent, list) and parts[-1].isdigit() and int(parts[-1]) < len(parent):
        parent[int(parts[-1])] = None  # Mongo's $unset on an array element leaves null


def comparable(value: Any) -> Any:
    """A value as it compares by meaning: `Decimal128("18500")` equals `Decimal128("18500.00")`."""
    if isinstance(value, Decimal128):
        number = value.to_decimal()
        return number if number.is_finite() else str(number)  # NaN never equals itself
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value


def _related(written: str, path: str) -> bool:
    return written == path or path.startswith(written + ".") or written.startswith(path + ".")
