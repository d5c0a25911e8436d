"""The vocabulary of the spec's "Mongo trigger" column, one small class per kind of trigger.

A reducer is a table of `Row(event, trigger, ...)`; each trigger reads a `Transitions`. On an
insert only triggers marked `on_insert` fire (the spec names `deals insert`, `offers insert`,
... and `ownershipInfo.ownershipType` "also on insert"); every other trigger is a transition
of an existing document.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from distiller.transitions import MISSING, Transitions, top_field


class Trigger(Protocol):
    on_insert: bool

    @property
    def watches(self) -> str | None:
        """The top-level field this trigger reads, or None when any write may fire it."""
        ...

    def fires(self, t: Transitions) -> bool: ...

    def describe(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Inserted:
    """`<collection> insert`."""

    on_insert: bool = True
    watches: None = None

    def fires(self, t: Transitions) -> bool:
        return t.is_insert

    def describe(self) -> str:
        return "insert"


@dataclass(frozen=True, slots=True)
class Becomes:
    """`path → value`: written with `value`, and (given a pre-image) not already `value`."""

    path: str
    value: Any
    on_insert: bool = False

    def fires(self, t: Transitions) -> bool:
        return t.touched(self.path) and t.after(self.path) == self.value and t.before(self.path) != self.value

    @property
    def watches(self) -> str:
        return top_field(self.path)

    def describe(self) -> str:
        return f"{self.path} → {self.value}"


@dataclass(frozen=True, slots=True)
class BecomesTruthy:
    """`path set truthy` / `path set true`: written truthy, and (given a pre-image) not truthy before."""

    path: str
    on_insert: bool = False

    def fires(self, t: Transitions) -> bool:
        return t.touched(self.path) and bool(t.after(self.path)) and not t.before(self.path)

    @property
    def watches(self) -> str:
        return top_field(self.path)

    def describe(self) -> str:
        return f"{self.path} set truthy"


@dataclass(frozen=True, slots=True)
class IsSet:
    """`path set`: written with a non-null value that (given a pre-image) differs from the old one."""

    path: str
    on_insert: bool = False

    def fires(self, t: Transitions) -> bool:
        value = t.after(self.path)
        return value is not MISSING and value is not None and t.changed(self.path)

    @property
    def watches(self) -> str:
        return top_field(self.path)

    def describe(self) -> str:
        return f"{self.path} set" + (" (also on insert)" if self.on_insert else "")


@dataclass(frozen=True, slots=True)
class Updated:
    """`path updated on existing document`: a non-null value written by an update, never on insert."""

    path: str
    on_insert: bool = False

    def fires(self, t: Transitions) -> bool:
        value = t.after(self.path)
        return not t.is_insert and value is not MISSING and value is not None and t.changed(self.path)

    @property
    def watches(self) -> str:
        return top_field(self.path)

    def describe(self) -> str:
        return f"{self.path} updated on existing document (not on insert)"


@dataclass(frozen=True, slots=True)
class AnyOtherChange:
    """The catch-all: the update wrote some field other than pure bookkeeping ones."""

    ignored: frozenset[str] = frozenset()
    on_insert: bool = False
    watches: None = None

    def fires(self, t: Transitions) -> bool:
        if t.is_insert:
            return False
        return any(p.split(".", 1)[0] not in self.ignored and t.changed(p) for p in t.written_paths())

    def describe(self) -> str:
        ignored = ", ".join(sorted(self.ignored))
        return "update where no more specific row matches" + (f" (ignoring {ignored})" if ignored else "")


PayloadBuilder = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Row:
    """One row of a spec trigger table: the event fires when any of its triggers does."""

    event: str
    triggers: tuple[Trigger, ...]
    payload: PayloadBuilder | None = None
    """Overrides the collection's payload for this event (e.g. negative-equity flags)."""
    watches: frozenset[str] | None = None
    """Top-level fields the triggers read; None when any write may fire the row. Lets a reducer
    skip rows whose fields the change never wrote."""
    trigger_text: str = ""

    def fires(self, t: Transitions) -> bool:
        return any((trigger.on_insert or not t.is_insert) and trigger.fires(t) for trigger in self.triggers)

    def describe(self) -> str:
        return self.trigger_text


def row(event: str, *triggers: Trigger, payload: PayloadBuilder | None = None) -> Row:
    fields = [trigger.watches for trigger in triggers]
    watches = None if None in fields else frozenset(f for f in fields if f is not None)
    text = " OR ".join(trigger.describe() for trigger in triggers)
    return Row(event, tuple(triggers), payload, watches, text)


@dataclass(frozen=True, slots=True)
class Reducer:
    """A collection's trigger table. Row order is the emission order (and so part of each eventKey).

    `one_event_per_update`: on an update the first matching row wins (the listings rule:
    "one Mongo update produces at most one listing event").
    """

    collection: str
    entity_type: str
    rows: tuple[Row, ...]
    payload: PayloadBuilder
    one_event_per_update: bool = False

    def reduce(self, t: Transitions) -> list[Row]:
        """The rows this change fires, in table order."""
        written = t.written_fields()
        first_only = self.one_event_per_update and not t.is_insert
        fired = []
        for r in self.rows:
            if r.watches is not None and written.isdisjoint(r.watches):
                continue
            if r.fires(t):
                fired.append(r)
                if first_only:
                    break
        return fired
