"""A trigger table compiled once into a lookup by the top-level fields its rows watch."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distiller.core.reducers.rules import Row


#: Distinct written-field tuples `rows_for` remembers; field names come from the data, so the
#: memo is bounded (a stream of ever-new field names just stops being remembered).
_SEEN_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class RowPlan:
    """A trigger table compiled once: which rows a write to each top-level field can fire.

    An update visits only the rows watching a field it wrote (plus rows any write may fire), in
    table order; the table itself stays the readable list of rows it was declared as.
    """

    by_field: dict[str, tuple[int, ...]]
    """Top-level field → indices of the rows that watch it."""
    any_write: tuple[int, ...]
    """Indices of rows with no watched field (any write may fire them)."""
    paths: tuple[tuple[str, ...] | None, ...] = ()
    """Per row, the field paths one of which an update must write or remove for the row to fire
    (`rules.needed_paths`; None: any write may)."""
    seen: dict[tuple[str, ...], tuple[int, ...]] = field(default_factory=dict, compare=False, repr=False)
    """`rows_for`'s answers by the written fields, in the order they were given (at most `_SEEN_LIMIT`)."""
    seen_paths: dict[tuple[str, ...], tuple[int, ...]] = field(default_factory=dict, compare=False, repr=False)
    """`rows_for_paths`'s answers by the written paths (at most `_SEEN_LIMIT`)."""

    @classmethod
    def of(cls, rows: tuple[Row, ...], paths: Iterable[tuple[str, ...] | None] = ()) -> RowPlan:
        by_field: dict[str, list[int]] = {}
        any_write = []
        for index, r in enumerate(rows):
            if r.watches is None:
                any_write.append(index)
            for name in r.watches or ():
                by_field.setdefault(name, []).append(index)
        return cls({name: tuple(indices) for name, indices in by_field.items()}, tuple(any_write), tuple(paths))

    def rows_for(self, written: Iterable[str]) -> list[int]:
        """Indices of the rows a change writing these top-level fields may fire, in table order.

        Remembered per set of written fields: a stream repeats a few update shapes endlessly.
        """
        names = tuple(written)
        known = self.seen.get(names)
        if known is None:
            indices = set(self.any_write)
            for name in names:
                indices.update(self.by_field.get(name, ()))
            known = tuple(sorted(indices))
            if len(self.seen) < _SEEN_LIMIT:
                self.seen[names] = known
        return list(known)

    def rows_for_paths(self, written: tuple[str, ...]) -> tuple[int, ...]:
        """`rows_for` the top-level fields of these written or removed paths, minus the rows none of
        whose `paths` any of them touches (a write to `dealState.buyer.status` cannot fire a row on
        `dealState.seller.status`: ~a third of the rows an update visited). Remembered per paths."""
        known = self.seen_paths.get(written)
        if known is None:
            tops = dict.fromkeys(path.partition(".")[0] for path in written)
            known = tuple(index for index in self.rows_for(tops) if self._touchable(index, written))
            if len(self.seen_paths) < _SEEN_LIMIT:
                self.seen_paths[written] = known
        return known

    def _touchable(self, index: int, written: tuple[str, ...]) -> bool:
        """Whether a write to `written` touches one of the row's paths (as `Transitions.touched` relates them)."""
        paths = self.paths[index] if index < len(self.paths) else None
        if paths is None:
            return True
        return any(w == p or p.startswith(w + ".") or w.startswith(p + ".") for p in paths for w in written)
