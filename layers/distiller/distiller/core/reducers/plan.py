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
    seen: dict[tuple[str, ...], tuple[int, ...]] = field(default_factory=dict, compare=False, repr=False)
    """`rows_for`'s answers by the written fields, in the order they were given (at most `_SEEN_LIMIT`)."""

    @classmethod
    def of(cls, rows: tuple[Row, ...]) -> RowPlan:
        by_field: dict[str, list[int]] = {}
        any_write = []
        for index, r in enumerate(rows):
            if r.watches is None:
                any_write.append(index)
            for name in r.watches or ():
                by_field.setdefault(name, []).append(index)
        return cls({name: tuple(indices) for name, indices in by_field.items()}, tuple(any_write))

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
