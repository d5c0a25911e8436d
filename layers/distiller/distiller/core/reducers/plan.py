"""A trigger table compiled once into a lookup by the top-level fields its rows watch."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distiller.core.reducers.rules import Row


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
        """Indices of the rows a change writing these top-level fields may fire, in table order."""
        indices = set(self.any_write)
        for name in written:
            indices.update(self.by_field.get(name, ()))
        return sorted(indices)
